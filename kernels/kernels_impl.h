/*
 * kernels_impl.h - private declarations shared by the op registry and the backends.
 *
 * The CPU backend is split by op family (matmul.c, attn.c) and by instruction set: the
 * portable C paths live in the op files, the AVX2+FMA paths in matmul_avx2.c and attn.c
 * (compiled with per-function target attributes, so the binary runs on any x86-64 and
 * dot.c picks the path at runtime).
 */
#ifndef HADAL_KERNELS_IMPL_H
#define HADAL_KERNELS_IMPL_H

#include "hadal/kernels.h"
#include "hadal/pool.h"

extern const hd_kern_ops_t hd_kern_cpu_ops;

/* CPU backend state. Only the thread that runs ops touches the scratch fields. */
typedef struct {
    hd_pool_h pool;     /* worker threads (the caller participates) */
    int n_workers;      /* hd_pool_size(pool): one scratch slot each */
    float *xk;          /* prepared matmul inputs [n, K8] (act_quant, padding, column order) */
    size_t xk_cap;      /* floats allocated at xk */
    float **ws;         /* [n_workers] per-worker scratch (decoded rows, accumulators, scores) */
    size_t ws_cap;      /* floats allocated at each ws[i] */
} cpu_ctx_t;

/* ---- dot.c: instruction set selection and the vector helpers of attention ---- */

/* True when the AVX2+FMA paths are in use (detected once; see hd_kern_cpu_set_isa). */
bool cpu_have_avx2(void);
/* Dot product of two float vectors with a fixed reduction order (depends on n only). */
float cpu_dot(const float *a, const float *b, int64_t n);
/* y += a * x (n floats). */
void cpu_axpy(float *y, float a, const float *x, int64_t n);

/*
 * Run fn(arg, worker) once per worker slot of @ctx (worker < ctx->n_workers), in parallel.
 * Each call pulls its share of work from a counter in @arg, so a slot id is a scratch
 * index, never a work assignment: results cannot depend on which thread ran what.
 */
void cpu_run_workers(cpu_ctx_t *ctx, void (*fn)(void *arg, int worker), void *arg);
/* Make every ctx->ws[i] hold at least @floats floats. */
hd_status_t cpu_scratch_reserve(cpu_ctx_t *ctx, size_t floats);

/* ---- matmul.c / matmul_avx2.c ---- */

#define CPU_MM_KC 1024 /* columns per cache block of the tiled kernel (multiple of 8): 4 rows of it
                          (16 KiB) and 3 tokens of it (12 KiB) fit L1 together */
#define CPU_MM_NB 96  /* tokens per accumulator block of the tiled kernel (multiple of 3) */

/* e8m0 byte -> float (2^(e-127); 255 NaN), shared by every decoder. */
extern float cpu_e8m0_f32[256];
/* Build the decode tables once (thread-safe). */
void cpu_mm_tables_init(void);
/* Decode columns [c0, c1) of view row @r, natural order, into out[0 .. c1-c0). */
void cpu_mm_decode_ref(const hd_weight_t *w, int64_t r, int64_t c0, int64_t c1, float *out);

/*
 * AVX2 matmul pieces. "Kernel order" is the column order the decoders produce: natural for
 * f32/bf16/FP8; for FP4, within each group of 16 columns, 0,4,8,12,1,5,9,13,2,6,10,14,3,7,11,15
 * (what fp4_dec32 in matmul_avx2.c produces). Inputs given to
 * these functions are already in kernel order and zero-padded to K8 = cols rounded up to 8.
 */
/*
 * y[t * ldy + i] for t < nt (1 or 2), i < nr (1..4): rows r .. r+nr-1, decode fused. For FP8
 * rows in one 128-row scale block, @xs may hold @xk times 2^(e-7) per 128-column block for
 * that block's scale byte e wherever @ok[block] (the driver checked that this scaling is
 * exact): the same bits, cheaper. NULL @xs: the canonical decoder throughout.
 */
void cpu_mm_gemv_avx2(const hd_weight_t *w, int64_t r, int nr, const float *xk, const float *xs,
                      const uint8_t *ok, int64_t K8, int nt, float *y, int64_t ldy);
/* d[i] = x[i] * f for i < n, n a multiple of 8. */
void cpu_mm_scale_avx2(float *d, const float *x, int64_t n, float f);
/* Largest |x| and smallest nonzero |x| over x[0 .. n), n a multiple of 8; false if any x
   is NaN or infinite. */
bool cpu_mm_abs_range_avx2(const float *x, int64_t n, float *amax, float *amin_nz);
/* Decode rows r .. r+nr-1 to dst[i * K8 + k] in kernel order, zero-padded to K8. */
void cpu_mm_decode_avx2(const hd_weight_t *w, int64_t r, int nr, int64_t K8, float *dst);
/*
 * Tiled kernel: rows of @wb ([nrp, K8], nrp a multiple of 4) times @n tokens of @xk
 * ([n, K8]) into y[t * ldy + i] for i < nr. @acc is scratch of nrp * CPU_MM_NB * 8 floats.
 */
void cpu_mm_tiles_avx2(const float *wb, int nrp, int nr, int64_t K8, const float *xk, int64_t n,
                       float *acc, float *y, int64_t ldy);
/* Official act_quant of one row in place (e4m3, pow2 scale per 128), = hd_fp8_sim_blocks. */
void cpu_act_quant_avx2(float *x, int64_t cols);

hd_status_t cpu_matmul(cpu_ctx_t *ctx, const hd_op_matmul_t *op);
hd_status_t cpu_matmul_group(cpu_ctx_t *ctx, const hd_op_matmul_t *ops, int count);
hd_status_t cpu_attn(cpu_ctx_t *ctx, const hd_op_attn_t *op);

#endif /* HADAL_KERNELS_IMPL_H */
