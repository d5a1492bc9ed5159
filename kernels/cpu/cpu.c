/*
 * cpu.c - the CPU backend's vtable: a thread pool with one scratch slot per thread, and the
 * dispatch to the ops (matmul.c, attn.c), vectorised with AVX2/FMA when the CPU has it
 * (dot.c chooses). Workers pull work from per-op counters; a slot id only picks scratch.
 */
#include "kernels_impl.h"
#include "hadal/alloc.h"

static hd_status_t cpu_init(int n_threads, void **ctx_p)
{
    cpu_ctx_t *ctx = hd_calloc(1, sizeof(*ctx), "cpu backend");
    hd_status_t status;
    if (ctx == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    status = hd_pool_create(n_threads, &ctx->pool);
    if (status != HD_OK) {
        goto err_free_ctx;
    }
    ctx->n_workers = hd_pool_size(ctx->pool);
    ctx->ws = hd_calloc((size_t)ctx->n_workers, sizeof(*ctx->ws), "cpu scratch slots");
    if (ctx->ws == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto err_destroy_pool;
    }
    cpu_mm_tables_init();
    *ctx_p = ctx;
    return HD_OK;

err_destroy_pool:
    hd_pool_destroy(ctx->pool);
err_free_ctx:
    hd_free(ctx);
    return status;
}

static void cpu_cleanup(void *vctx)
{
    cpu_ctx_t *ctx = vctx;
    hd_pool_destroy(ctx->pool);
    for (int i = 0; i < ctx->n_workers; i++) {
        hd_free(ctx->ws[i]);
    }
    hd_free(ctx->ws);
    hd_free(ctx->xk);
    hd_free(ctx);
}

hd_status_t cpu_scratch_reserve(cpu_ctx_t *ctx, size_t floats)
{
    if (floats <= ctx->ws_cap) {
        return HD_OK;
    }
    floats += floats / 4; /* grow geometrically: shapes vary from call to call */
    for (int i = 0; i < ctx->n_workers; i++) {
        hd_free(ctx->ws[i]);
        ctx->ws[i] = hd_aligned_calloc(floats, sizeof(float), "cpu worker scratch");
        if (ctx->ws[i] == NULL) {
            ctx->ws_cap = 0;
            return HD_ERR_NO_MEMORY;
        }
    }
    ctx->ws_cap = floats;
    return HD_OK;
}

typedef struct {
    void (*fn)(void *arg, int worker);
    void *arg;
} cpu_workers_t;

static void cpu_worker_main(void *vctx, size_t i)
{
    const cpu_workers_t *w = vctx;
    w->fn(w->arg, (int)i);
}

void cpu_run_workers(cpu_ctx_t *ctx, void (*fn)(void *arg, int worker), void *arg)
{
    cpu_workers_t w = {.fn = fn, .arg = arg};
    hd_pool_run(ctx->pool, (size_t)ctx->n_workers, cpu_worker_main, &w);
}

static bool cpu_supports_op(void *ctx, const hd_op_t *op)
{
    return op->type == HD_OP_MATMUL || op->type == HD_OP_MATMUL_GROUP || op->type == HD_OP_ATTN;
}

static hd_status_t cpu_run_op(void *vctx, const hd_op_t *op)
{
    cpu_ctx_t *ctx = vctx;
    switch (op->type) {
    case HD_OP_MATMUL: return cpu_matmul(ctx, &op->matmul);
    case HD_OP_MATMUL_GROUP:
        return cpu_matmul_group(ctx, op->matmul_group.ops, op->matmul_group.count);
    case HD_OP_ATTN: return cpu_attn(ctx, &op->attn);
    default: return HD_ERR_UNSUPPORTED;
    }
}

const hd_kern_ops_t hd_kern_cpu_ops = {
    .name = "cpu",
    .init = cpu_init,
    .cleanup = cpu_cleanup,
    .supports_op = cpu_supports_op,
    .run_op = cpu_run_op,
    .buf_alloc = NULL,   /* host memory is used directly */
    .buf_free = NULL,
    .synchronize = NULL, /* ops complete before run_op returns */
};

const char *hd_kern_cpu_isa(void)
{
    return cpu_have_avx2() ? "avx2+fma" : "portable";
}
