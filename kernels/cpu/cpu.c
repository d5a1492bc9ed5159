/*
 * cpu.c - the CPU backend's vtable: a thread pool and the reference implementations of
 * every op (matmul.c, attn.c), vectorised with AVX2/FMA when the CPU has it (dot.c).
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
        hd_free(ctx);
        return status;
    }
    *ctx_p = ctx;
    return HD_OK;
}

static void cpu_cleanup(void *vctx)
{
    cpu_ctx_t *ctx = vctx;
    hd_pool_destroy(ctx->pool);
    hd_free(ctx);
}

static bool cpu_supports_op(void *ctx, const hd_op_t *op)
{
    return op->type == HD_OP_MATMUL || op->type == HD_OP_ATTN;
}

static hd_status_t cpu_run_op(void *vctx, const hd_op_t *op)
{
    cpu_ctx_t *ctx = vctx;
    switch (op->type) {
    case HD_OP_MATMUL: return cpu_matmul(ctx, &op->matmul);
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
