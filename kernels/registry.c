/*
 * registry.c - the static list of compiled-in kernel backends and the public wrappers that
 * dispatch an op to a backend's vtable. The CPU backend is always present.
 */
#include "kernels_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <string.h>
#include <time.h>

static uint64_t kern_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const hd_kern_ops_t *const kern_backends[] = {
    &hd_kern_cpu_ops,
};
static const char *const kern_backend_names[] = {"cpu", NULL};

const char *const *hd_kern_backend_names(void)
{
    return kern_backend_names;
}

hd_status_t hd_kern_backend_create(const char *name, int n_threads, hd_kern_backend_t **be_p)
{
    hd_kern_backend_t *be;
    hd_status_t status;
    for (size_t i = 0; i < sizeof(kern_backends) / sizeof(kern_backends[0]); i++) {
        if (strcmp(kern_backends[i]->name, name) != 0) {
            continue;
        }
        be = hd_calloc(1, sizeof(*be), "kernel backend");
        if (be == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        be->ops = kern_backends[i];
        status = be->ops->init(n_threads, &be->ctx);
        if (status != HD_OK) {
            hd_free(be);
            return status;
        }
        *be_p = be;
        return HD_OK;
    }
    hd_error(HD_SUBSYS_KERN, "no kernel backend named '%s' in this build", name);
    return HD_ERR_UNSUPPORTED;
}

void hd_kern_backend_destroy(hd_kern_backend_t *be)
{
    if (be == NULL) {
        return;
    }
    be->ops->cleanup(be->ctx);
    hd_free(be);
}

hd_status_t hd_kern_run(hd_kern_backend_t *be, const hd_op_t *op)
{
    if (!be->ops->supports_op(be->ctx, op)) {
        hd_error(HD_SUBSYS_KERN, "backend %s does not support op %d", be->ops->name, op->type);
        return HD_ERR_UNSUPPORTED;
    }
    uint64_t t0 = kern_now_ns();
    hd_status_t st = be->ops->run_op(be->ctx, op);
    uint64_t dt = kern_now_ns() - t0;
    if (op->type == HD_OP_MATMUL || op->type == HD_OP_MATMUL_GROUP) {
        const hd_op_matmul_t *ms = op->type == HD_OP_MATMUL ? &op->matmul : op->matmul_group.ops;
        int count = op->type == HD_OP_MATMUL ? 1 : op->matmul_group.count;
        uint64_t total = 0;
        for (int i = 0; i < count; i++) {
            total += hd_kern_weight_view_bytes(ms[i].w);
        }
        for (int i = 0; i < count; i++) { /* a group's time is shared out by bytes read */
            const hd_op_matmul_t *m = &ms[i];
            uint64_t bytes = hd_kern_weight_view_bytes(m->w);
            unsigned f = (unsigned)m->w->fmt & 3u;
            be->stats.matmul_calls++;
            be->stats.weight_bytes += bytes;
            be->stats.matmul_flops +=
                2u * (uint64_t)m->w->rows * (uint64_t)m->w->cols * (uint64_t)m->n;
            be->stats.fmt_ns[f] += total > 0 ? (uint64_t)((double)dt * (double)bytes / (double)total)
                                             : dt / (uint64_t)count;
            be->stats.fmt_bytes[f] += bytes;
            be->stats.fmt_calls[f]++;
        }
    } else if (op->type == HD_OP_ATTN) {
        be->stats.attn_calls++;
        be->stats.attn_ns += dt;
    }
    return st;
}

uint64_t hd_kern_weight_view_bytes(const hd_weight_t *w)
{
    uint64_t rows = (uint64_t)(w->rows > 0 ? w->rows : 0), cols = (uint64_t)w->cols;
    switch (w->fmt) {
    case HD_WFMT_F32:
        return rows * cols * 4;
    case HD_WFMT_BF16:
        return rows * cols * 2;
    case HD_WFMT_FP8: /* one e8m0 byte per 128x128 block */
        return rows * cols + ((rows + 127) / 128) * ((cols + 127) / 128);
    case HD_WFMT_FP4: /* two elements per byte, one e8m0 byte per 32 */
        return rows * (cols / 2) + rows * (cols / 32);
    }
    return 0;
}

hd_status_t hd_kern_synchronize(hd_kern_backend_t *be)
{
    return be->ops->synchronize ? be->ops->synchronize(be->ctx) : HD_OK;
}

struct hd_pool *hd_kern_cpu_pool(hd_kern_backend_t *be)
{
    if (be->ops != &hd_kern_cpu_ops) {
        return NULL;
    }
    return ((cpu_ctx_t *)be->ctx)->pool;
}

hd_status_t hd_kern_matmul(hd_kern_backend_t *be, const hd_weight_t *w, const float *x,
                           int64_t x_stride, float *y, int64_t y_stride, int64_t n,
                           bool act_quant_fp8)
{
    hd_op_t op = {.type = HD_OP_MATMUL};
    op.matmul = (hd_op_matmul_t){.w = w, .x = x, .y = y, .n = n, .x_stride = x_stride,
                                 .y_stride = y_stride, .act_quant_fp8 = act_quant_fp8};
    return hd_kern_run(be, &op);
}

hd_status_t hd_kern_matmul_group(hd_kern_backend_t *be, const hd_op_matmul_t *ops, int count)
{
    hd_op_t op = {.type = HD_OP_MATMUL_GROUP};
    if (count < 0 || (count > 0 && ops == NULL)) {
        return HD_ERR_INVALID_PARAM;
    }
    if (count == 0) {
        return HD_OK;
    }
    op.matmul_group = (hd_op_matmul_group_t){.ops = ops, .count = count};
    return hd_kern_run(be, &op);
}
