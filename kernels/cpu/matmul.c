/*
 * matmul.c - y[i] = W x[i] for weights stored as f32, bf16, FP8 (e4m3 + 128x128 e8m0
 * blocks) or FP4 (e2m1 pairs + e8m0 per 32). Each weight row is decoded in column chunks
 * into a small stack buffer and dotted with every input row, so the packed weights are read
 * once per call whatever n is, and nothing is ever expanded into a full matrix.
 * Work is split over output rows; each y element's reduction order depends only on cols.
 */
#include "kernels_impl.h"
#include "hadal/alloc.h"
#include "hadal/quant.h"

#include <math.h>
#include <string.h>

#define MM_CHUNK 2048 /* columns decoded at a time; a multiple of 128 */
#define MM_ROWS_PER_TASK 4

static float mm_fp4_pairs[256][2];
static float mm_e8m0[256];
static int mm_tables_ready;

static void mm_tables_init(void)
{
    if (mm_tables_ready) {
        return;
    }
    for (int b = 0; b < 256; b++) {
        mm_fp4_pairs[b][0] = hd_e2m1_table[b & 15];
        mm_fp4_pairs[b][1] = hd_e2m1_table[b >> 4];
        mm_e8m0[b] = hd_e8m0_to_f32((uint8_t)b);
    }
    __atomic_store_n(&mm_tables_ready, 1, __ATOMIC_RELEASE);
}

/* Decode columns [c0, c0+len) of view row @r into @out. */
static void mm_decode(const hd_weight_t *w, int64_t r, int64_t c0, int64_t len, float *out)
{
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
    switch (w->fmt) {
    case HD_WFMT_F32:
        memcpy(out, (const float *)row + c0, (size_t)len * sizeof(float));
        break;
    case HD_WFMT_BF16: {
        const uint16_t *p = (const uint16_t *)row + c0;
        for (int64_t i = 0; i < len; i++) {
            uint32_t u = (uint32_t)p[i] << 16;
            memcpy(&out[i], &u, 4);
        }
        break;
    }
    case HD_WFMT_FP8: {
        const uint8_t *srow = w->scale + (size_t)((w->row0 + r) / 128) * (size_t)w->scale_stride;
        for (int64_t b = 0; b < len; b += 128) {
            int64_t m = len - b < 128 ? len - b : 128;
            float s = mm_e8m0[srow[(c0 + b) / 128]];
            const uint8_t *q = row + c0 + b;
            for (int64_t i = 0; i < m; i++) {
                out[b + i] = hd_e4m3_table[q[i]] * s;
            }
        }
        break;
    }
    case HD_WFMT_FP4: {
        const uint8_t *srow = w->scale + (size_t)(w->row0 + r) * (size_t)w->scale_stride;
        for (int64_t b = 0; b < len; b += 32) {
            float s = mm_e8m0[srow[(c0 + b) / 32]];
            const uint8_t *q = row + (c0 + b) / 2;
            for (int64_t i = 0; i < 16; i++) {
                out[b + 2 * i] = mm_fp4_pairs[q[i]][0] * s;
                out[b + 2 * i + 1] = mm_fp4_pairs[q[i]][1] * s;
            }
        }
        break;
    }
    }
}

void hd_kern_weight_row(const hd_weight_t *w, int64_t row, float *out)
{
    mm_tables_init();
    for (int64_t c = 0; c < w->cols; c += MM_CHUNK) {
        int64_t len = w->cols - c < MM_CHUNK ? w->cols - c : MM_CHUNK;
        mm_decode(w, row, c, len, out + c);
    }
}

typedef struct {
    const hd_op_matmul_t *op;
    const float *x;   /* possibly the quantised copy */
    int64_t x_stride;
} mm_task_t;

static void mm_rows(void *vctx, size_t task)
{
    const mm_task_t *t = vctx;
    const hd_op_matmul_t *op = t->op;
    const hd_weight_t *w = op->w;
    float buf[MM_CHUNK] __attribute__((aligned(32)));
    int64_t r0 = (int64_t)task * MM_ROWS_PER_TASK;
    int64_t r1 = r0 + MM_ROWS_PER_TASK < w->rows ? r0 + MM_ROWS_PER_TASK : w->rows;
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t c = 0; c < w->cols; c += MM_CHUNK) {
            int64_t len = w->cols - c < MM_CHUNK ? w->cols - c : MM_CHUNK;
            mm_decode(w, r, c, len, buf);
            for (int64_t i = 0; i < op->n; i++) {
                float d = cpu_dot(buf, t->x + i * t->x_stride + c, len);
                float *yp = op->y + i * op->y_stride + r;
                *yp = c == 0 ? d : *yp + d;
            }
        }
    }
}

/* Official act_quant: each row, per 128 columns, to e4m3 with a power-of-two scale. */
static void mm_act_quant(const float *x, int64_t x_stride, int64_t n, int64_t cols, float *xq)
{
    for (int64_t i = 0; i < n; i++) {
        memcpy(xq + i * cols, x + i * x_stride, (size_t)cols * sizeof(float));
        hd_fp8_sim_blocks(xq + i * cols, (size_t)cols, 128);
    }
}

hd_status_t cpu_matmul(cpu_ctx_t *ctx, const hd_op_matmul_t *op)
{
    mm_task_t t = {.op = op, .x = op->x, .x_stride = op->x_stride};
    float *xq = NULL;
    if (op->w->fmt == HD_WFMT_FP4 && (op->w->cols % 32) != 0) {
        return HD_ERR_INVALID_PARAM;
    }
    mm_tables_init();
    if (op->act_quant_fp8) {
        xq = hd_malloc((size_t)op->n * (size_t)op->w->cols * sizeof(float), "act quant");
        if (xq == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        mm_act_quant(op->x, op->x_stride, op->n, op->w->cols, xq);
        t.x = xq;
        t.x_stride = op->w->cols;
    }
    size_t tasks = (size_t)((op->w->rows + MM_ROWS_PER_TASK - 1) / MM_ROWS_PER_TASK);
    hd_pool_run(ctx->pool, tasks, mm_rows, &t);
    hd_free(xq);
    return HD_OK;
}
