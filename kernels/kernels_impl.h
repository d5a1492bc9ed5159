/*
 * kernels_impl.h - private declarations shared by the op registry and the backends.
 */
#ifndef HADAL_KERNELS_IMPL_H
#define HADAL_KERNELS_IMPL_H

#include "hadal/kernels.h"
#include "hadal/pool.h"

extern const hd_kern_ops_t hd_kern_cpu_ops;

/* CPU backend state. */
typedef struct {
    hd_pool_h pool; /* worker threads (the caller participates) */
} cpu_ctx_t;

/* cpu/dot.c: dot product of two float vectors with a fixed reduction order. */
float cpu_dot(const float *a, const float *b, int64_t n);
/* cpu/dot.c: y += a * x (n floats). */
void cpu_axpy(float *y, float a, const float *x, int64_t n);
bool cpu_have_avx2(void);

hd_status_t cpu_matmul(cpu_ctx_t *ctx, const hd_op_matmul_t *op);
hd_status_t cpu_attn(cpu_ctx_t *ctx, const hd_op_attn_t *op);

#endif /* HADAL_KERNELS_IMPL_H */
