/*
 * matmul.c - y[i] = W x[i] on the CPU for weights stored as f32, bf16, FP8 (e4m3 + 128x128
 * e8m0 blocks) or FP4 (e2m1 pairs + e8m0 per 32 columns), read in place, never expanded.
 *
 * The driver prepares the inputs once per call (official act_quant, zero padding to K8 =
 * cols rounded up to 8, the decoders' column order), then workers pull blocks of output
 * rows. With AVX2 (matmul_avx2.c), n <= 2 runs fused decode+dot kernels that touch each
 * weight byte once; larger n decodes a block of rows to f32 once and runs a register-tiled
 * kernel over all tokens, so prefill reuses the decoded rows from cache. A group of
 * independent matmuls (HD_OP_MATMUL_GROUP) runs as one pool round over all their rows;
 * neighbours with the same input share one prepared copy.
 *
 * Canonical reduction (the determinism contract): y[t][r] = hsum8(acc), where lane l of acc
 * accumulates w*x of the kernel-order columns 8v+l for v = 0, 1, ... in order (one FMA each;
 * a multiply then an add on the portable path), zero-padded past cols, and hsum8(a) =
 * ((a0+a4)+(a2+a6))+((a1+a5)+(a3+a7)). Each path of an ISA computes exactly this, so the
 * bits of y[t][r] depend on cols only, not on n, the row block or the thread count.
 */
#include "kernels_impl.h"
#include "hadal/alloc.h"
#include "hadal/quant.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define MM_GEMV_MAX_N 2         /* n up to this runs the fused kernels */
#define MM_GEMV_ITEM_BYTES 32768 /* weight bytes per work item of the fused kernels */

float cpu_e8m0_f32[256];
static float mm_fp4_pairs[256][2];
static pthread_once_t mm_tables_once = PTHREAD_ONCE_INIT;

static void mm_tables_build(void)
{
    for (int b = 0; b < 256; b++) {
        mm_fp4_pairs[b][0] = hd_e2m1_table[b & 15];
        mm_fp4_pairs[b][1] = hd_e2m1_table[b >> 4];
        cpu_e8m0_f32[b] = hd_e8m0_to_f32((uint8_t)b);
    }
}

void cpu_mm_tables_init(void)
{
    pthread_once(&mm_tables_once, mm_tables_build);
}

void cpu_mm_decode_ref(const hd_weight_t *w, int64_t r, int64_t c0, int64_t c1, float *out)
{
    const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
    switch (w->fmt) {
    case HD_WFMT_F32:
        memcpy(out, (const float *)row + c0, (size_t)(c1 - c0) * sizeof(float));
        break;
    case HD_WFMT_BF16: {
        const uint16_t *p = (const uint16_t *)row;
        for (int64_t c = c0; c < c1; c++) {
            uint32_t u = (uint32_t)p[c] << 16;
            memcpy(&out[c - c0], &u, 4);
        }
        break;
    }
    case HD_WFMT_FP8: {
        const uint8_t *sp = w->scale + (size_t)((w->row0 + r) / 128) * (size_t)w->scale_stride;
        for (int64_t c = c0; c < c1; c++) {
            out[c - c0] = hd_e4m3_table[row[c]] * cpu_e8m0_f32[sp[c / 128]];
        }
        break;
    }
    case HD_WFMT_FP4: {
        const uint8_t *sp = w->scale + (size_t)(w->row0 + r) * (size_t)w->scale_stride;
        for (int64_t c = c0; c < c1; c++) {
            out[c - c0] = mm_fp4_pairs[row[c / 2]][c & 1] * cpu_e8m0_f32[sp[c / 32]];
        }
        break;
    }
    }
}

void hd_kern_weight_row(const hd_weight_t *w, int64_t row, float *out)
{
    cpu_mm_tables_init();
    cpu_mm_decode_ref(w, row, 0, w->cols, out);
}

/* ---- portable path ---- */

/* The canonical reduction in plain C. noinline: one copy of the code serves every n. */
__attribute__((noinline)) static float mm_dot_portable(const float *w, const float *x, int64_t K8)
{
    float p[8] = {0};
    for (int64_t k = 0; k < K8; k += 8) {
        for (int l = 0; l < 8; l++) {
            p[l] += w[k + l] * x[k + l];
        }
    }
    return ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
}

/* ---- driver ---- */

typedef enum {
    MM_MODE_GEMV = 0,     /* AVX2 fused decode+dot, n <= MM_GEMV_MAX_N */
    MM_MODE_TILED = 1,    /* AVX2 decode a row block, tiled kernel over all tokens */
    MM_MODE_PORTABLE = 2, /* decode one row, portable dot per token */
} mm_mode_t;

typedef struct {
    const hd_weight_t *w;
    const float *xk;     /* [n, K8] prepared inputs */
    int64_t n;           /* tokens */
    int64_t K8;          /* cols rounded up to 8 */
    float *y;            /* [n, ldy] */
    int64_t ldy;         /* floats between output rows */
    mm_mode_t mode;
    int64_t rows_per_item; /* rows per work item (a multiple of 4) */
    int64_t n_items;
    int64_t item0;       /* index of this job's first item in its group */
    /* FP8 gemv with prescaled inputs (cpu_mm_gemv_avx2's xs): scale bytes in
       [fp8_emin, fp8_emax] scale these inputs exactly; fp8_pre false when not in use */
    bool fp8_pre;
    int fp8_emin, fp8_emax;
    int64_t n_cb;        /* 128-column blocks */
} mm_job_t;

/*
 * Fill @xs ([n, K8]) with the inputs times 2^(e-7) for each column block of FP8 scale row
 * @sr whose byte e is in the job's safe range, and ok[block] with whether it is.
 */
static void mm_fp8_prescale(const mm_job_t *j, int64_t sr, float *xs, uint8_t *ok)
{
    const hd_weight_t *w = j->w;
    const uint8_t *sp = w->scale + (size_t)sr * (size_t)w->scale_stride;
    for (int64_t cb = 0; cb < j->n_cb; cb++) {
        int e = sp[cb];
        int64_t c0 = cb * 128, c1 = c0 + 128 < j->K8 ? c0 + 128 : j->K8;
        ok[cb] = e >= j->fp8_emin && e <= j->fp8_emax;
        if (!ok[cb]) {
            continue;
        }
        uint32_t bits = (uint32_t)(e + 120) << 23; /* 2^(e-7), e <= 134 */
        float f;
        memcpy(&f, &bits, sizeof(f));
        for (int64_t t = 0; t < j->n; t++) {
            cpu_mm_scale_avx2(xs + t * j->K8 + c0, j->xk + t * j->K8 + c0, c1 - c0, f);
        }
    }
}

/* Work item @it of job @j (rows it * rows_per_item ..) with per-worker scratch @ws. */
static void mm_item(const mm_job_t *j, int64_t it, float *ws, int64_t *cached_sr)
{
    const hd_weight_t *w = j->w;
    int64_t r0 = it * j->rows_per_item;
    int64_t r1 = r0 + j->rows_per_item < w->rows ? r0 + j->rows_per_item : w->rows;
    switch (j->mode) {
    case MM_MODE_GEMV:
        for (int64_t r = r0; r < r1;) { /* 4 rows at a time, FP8 ones within a scale block */
            int64_t e = r + 4 < r1 ? r + 4 : r1;
            const float *xs = NULL;
            const uint8_t *ok = NULL;
            if (j->fp8_pre) {
                int64_t sr = (w->row0 + r) / 128, next = sr * 128 + 128 - w->row0;
                e = e < next ? e : next;
                if (sr != *cached_sr) {
                    mm_fp8_prescale(j, sr, ws, (uint8_t *)(ws + j->n * j->K8));
                    *cached_sr = sr;
                }
                xs = ws;
                ok = (const uint8_t *)(ws + j->n * j->K8);
            }
            cpu_mm_gemv_avx2(w, r, (int)(e - r), j->xk, xs, ok, j->K8, (int)j->n, j->y + r,
                             j->ldy);
            r = e;
        }
        break;
    case MM_MODE_TILED: {
        int nr = (int)(r1 - r0), nrp = (nr + 3) & ~3;
        cpu_mm_decode_avx2(w, r0, nr, j->K8, ws);
        memset(ws + (size_t)nr * (size_t)j->K8, 0,
               (size_t)(nrp - nr) * (size_t)j->K8 * sizeof(float));
        cpu_mm_tiles_avx2(ws, nrp, nr, j->K8, j->xk, j->n, ws + (size_t)nrp * (size_t)j->K8,
                          j->y + r0, j->ldy);
        break;
    }
    case MM_MODE_PORTABLE:
        for (int64_t r = r0; r < r1; r++) {
            memset(ws, 0, (size_t)j->K8 * sizeof(float));
            cpu_mm_decode_ref(w, r, 0, w->cols, ws);
            for (int64_t t = 0; t < j->n; t++) {
                j->y[t * j->ldy + r] = mm_dot_portable(ws, j->xk + t * j->K8, j->K8);
            }
        }
        break;
    }
}

/* The jobs of one pool round: items numbered across all jobs, in job order. */
typedef struct {
    mm_job_t *jobs;
    int count;
    int64_t n_items;     /* all jobs' items */
    atomic_long next;    /* next work item */
    float **ws;          /* per-worker scratch */
} mm_group_t;

static void mm_worker(void *arg, int worker)
{
    mm_group_t *g = arg;
    float *ws = g->ws[worker];
    int cur = 0;            /* job of the last item: items only grow, per worker */
    int64_t cached_sr = -1; /* FP8 scale row of job cur whose prescaled inputs ws holds */
    for (;;) {
        long it = atomic_fetch_add_explicit(&g->next, 1, memory_order_relaxed);
        if (it >= g->n_items) {
            break;
        }
        while (it >= g->jobs[cur].item0 + g->jobs[cur].n_items) {
            cur++;
            cached_sr = -1;
        }
        mm_item(&g->jobs[cur], it - g->jobs[cur].item0, ws, &cached_sr);
    }
}

/* Rows per tiled work item: the decoded block (rows x K8 floats) stays within ~256 KiB of L2. */
static int64_t mm_tiled_rows(int64_t K8)
{
    int64_t rb = (65536 / K8) & ~(int64_t)3;
    return rb < 8 ? 8 : rb > 32 ? 32 : rb;
}

/* Copy x into ctx->xk as the kernels read it: act_quant, zero padding, kernel column order. */
static void mm_prepare_x(const hd_op_matmul_t *op, bool avx2, int64_t K8, float *xk)
{
    int64_t cols = op->w->cols;
    bool perm = avx2 && op->w->fmt == HD_WFMT_FP4;
    for (int64_t t = 0; t < op->n; t++) {
        float *d = xk + t * K8;
        memcpy(d, op->x + t * op->x_stride, (size_t)cols * sizeof(float));
        memset(d + cols, 0, (size_t)(K8 - cols) * sizeof(float));
        if (op->act_quant_fp8) {
            if (avx2) {
                cpu_act_quant_avx2(d, cols);
            } else {
                hd_fp8_sim_blocks(d, (size_t)cols, 128);
            }
        }
        if (perm) { /* the FP4 decoders' column order within each group of 16 */
            static const uint8_t col[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
            for (int64_t g = 0; g < K8; g += 16) {
                float v[16];
                memcpy(v, d + g, sizeof(v));
                for (int k = 0; k < 16; k++) {
                    d[g + k] = v[col[k]];
                }
            }
        }
    }
}

/*
 * The FP8 scale bytes e for which x * 2^(e-7) is exact for every prepared input of @j
 * (zero or a normal float: 2^-126 <= |x| 2^(e-7) < 2^128) and one multiply does it
 * (e <= 134). Inputs with a NaN or an infinity use the canonical path throughout.
 */
static void mm_fp8_range(mm_job_t *j)
{
    int emin = 0, emax = 134;
    for (int64_t t = 0; t < j->n; t++) {
        float amax, amin;
        int kmax, kmin;
        if (!cpu_mm_abs_range_avx2(j->xk + t * j->K8, j->K8, &amax, &amin)) {
            j->fp8_pre = false;
            return;
        }
        if (amax == 0) {
            continue;
        }
        frexpf(amax, &kmax); /* amax < 2^kmax */
        frexpf(amin, &kmin); /* amin >= 2^(kmin-1) */
        emax = 135 - kmax < emax ? 135 - kmax : emax;
        emin = -118 - kmin > emin ? -118 - kmin : emin;
    }
    j->fp8_emin = emin;
    j->fp8_emax = emax;
    j->fp8_pre = emin <= emax;
}

static hd_status_t mm_check_op(const hd_op_matmul_t *op)
{
    const hd_weight_t *w = op->w;
    if (w->cols <= 0 || w->rows < 0 || op->n < 0 ||
        (w->fmt == HD_WFMT_FP4 && (w->cols % 32) != 0)) {
        return HD_ERR_INVALID_PARAM;
    }
    return HD_OK;
}

/* Whether op @b reads exactly the prepared inputs of op @a (same x, columns, tokens, act_quant
   and column order): the grouped MoE projections w1 and w3 share their input. */
static bool mm_same_input(const hd_op_matmul_t *a, const hd_op_matmul_t *b, bool avx2)
{
    return a->x == b->x && a->w->cols == b->w->cols && a->n == b->n &&
           a->x_stride == b->x_stride && a->act_quant_fp8 == b->act_quant_fp8 &&
           (!avx2 || (a->w->fmt == HD_WFMT_FP4) == (b->w->fmt == HD_WFMT_FP4));
}

/* Fill @j (all but item0) for @op whose prepared inputs are at @xk; returns its scratch. */
static size_t mm_plan(cpu_ctx_t *ctx, const hd_op_matmul_t *op, bool avx2, float *xk, mm_job_t *j)
{
    const hd_weight_t *w = op->w;
    int64_t K8 = (w->cols + 7) & ~(int64_t)7;
    size_t scratch;
    *j = (mm_job_t){.w = w, .xk = xk, .n = op->n, .K8 = K8, .y = op->y, .ldy = op->y_stride};
    if (avx2 && op->n <= MM_GEMV_MAX_N) {
        size_t row_bytes = w->fmt == HD_WFMT_FP4 ? (size_t)w->cols / 2 : w->row_bytes;
        int64_t rb = (int64_t)(MM_GEMV_ITEM_BYTES / (row_bytes > 0 ? row_bytes : 1)) & ~(int64_t)3;
        int64_t fair = ((w->rows + 4 * ctx->n_workers - 1) / (4 * ctx->n_workers) + 3) & ~(int64_t)3;
        j->mode = MM_MODE_GEMV;
        j->rows_per_item = rb < 4 ? 4 : rb > fair ? (fair < 4 ? 4 : fair) : rb;
        scratch = 0;
        if (w->fmt == HD_WFMT_FP8) {
            mm_fp8_range(j);
            j->n_cb = (K8 + 127) / 128;
            scratch = (size_t)(op->n * K8) + (size_t)(j->n_cb + 3) / 4;
        }
    } else if (avx2) {
        j->mode = MM_MODE_TILED;
        j->rows_per_item = mm_tiled_rows(K8);
        scratch = (size_t)j->rows_per_item * ((size_t)K8 + CPU_MM_NB * 8);
    } else {
        j->mode = MM_MODE_PORTABLE;
        j->rows_per_item = 8;
        scratch = (size_t)K8;
    }
    j->n_items = (w->rows + j->rows_per_item - 1) / j->rows_per_item;
    return scratch;
}

/*
 * @count independent matmuls in one pool round (the grouped GEMM of a MoE layer): each
 * output is computed exactly as cpu_matmul would, so results do not depend on grouping.
 * One round instead of one per matrix saves the wake-up and join of every small expert
 * matrix, and the workers stream from one matrix into the next.
 */
hd_status_t cpu_matmul_group(cpu_ctx_t *ctx, const hd_op_matmul_t *ops, int count)
{
    bool avx2 = cpu_have_avx2();
    size_t xk_need = 0, scratch = 0;
    mm_job_t stack_jobs[32], *jobs = stack_jobs;
    mm_group_t g = {.count = 0};
    hd_status_t status;

    for (int i = 0, last = -2; i < count; i++) { /* last: the previous op that runs */
        status = mm_check_op(&ops[i]);
        if (status != HD_OK) {
            return status;
        }
        if (ops[i].n == 0 || ops[i].w->rows == 0) {
            continue;
        }
        if (!(last == i - 1 && mm_same_input(&ops[last], &ops[i], avx2))) {
            xk_need += (size_t)(ops[i].n * ((ops[i].w->cols + 7) & ~(int64_t)7));
        }
        last = i;
    }
    if (xk_need == 0) {
        return HD_OK;
    }
    cpu_mm_tables_init();
    if (xk_need > ctx->xk_cap) {
        hd_free(ctx->xk);
        ctx->xk_cap = xk_need;
        ctx->xk = hd_aligned_calloc(ctx->xk_cap, sizeof(float), "matmul inputs");
        if (ctx->xk == NULL) {
            ctx->xk_cap = 0;
            return HD_ERR_NO_MEMORY;
        }
    }
    if (count > (int)(sizeof(stack_jobs) / sizeof(stack_jobs[0]))) {
        jobs = hd_calloc((size_t)count, sizeof(*jobs), "matmul group");
        if (jobs == NULL) {
            return HD_ERR_NO_MEMORY;
        }
    }
    float *xk = ctx->xk, *prev_xk = NULL;
    const hd_op_matmul_t *prev = NULL;
    for (int i = 0; i < count; i++) {
        const hd_op_matmul_t *op = &ops[i];
        if (op->n == 0 || op->w->rows == 0) {
            continue;
        }
        int64_t K8 = (op->w->cols + 7) & ~(int64_t)7;
        float *mine = xk;
        if (prev != NULL && prev == op - 1 && mm_same_input(prev, op, avx2)) {
            mine = prev_xk;
        } else {
            mm_prepare_x(op, avx2, K8, xk);
            xk += op->n * K8;
        }
        size_t need = mm_plan(ctx, op, avx2, mine, &jobs[g.count]);
        scratch = need > scratch ? need : scratch;
        jobs[g.count].item0 = g.n_items;
        g.n_items += jobs[g.count].n_items;
        g.count++;
        prev = op;
        prev_xk = mine;
    }
    status = cpu_scratch_reserve(ctx, scratch);
    if (status == HD_OK) {
        g.jobs = jobs;
        g.ws = ctx->ws;
        atomic_init(&g.next, 0);
        cpu_run_workers(ctx, mm_worker, &g);
    }
    if (jobs != stack_jobs) {
        hd_free(jobs);
    }
    return status;
}

hd_status_t cpu_matmul(cpu_ctx_t *ctx, const hd_op_matmul_t *op)
{
    return cpu_matmul_group(ctx, op, 1);
}
