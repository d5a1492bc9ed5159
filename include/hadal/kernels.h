/*
 * hadal/kernels.h - the op interface every compute backend implements.
 *
 * A backend is { const hd_kern_ops_t *ops; void *ctx; }. The model engine describes each
 * heavy operation as an hd_op_t and hands it to hd_kern_run(); the CPU backend (always
 * built) is the reference, a CUDA backend implements the same ops later and is tested
 * against it op by op. No CUDA types appear here.
 *
 * Determinism contract (CPU): every output element is produced by one thread with a fixed
 * reduction order that depends only on the shapes of that element's inputs, so results are
 * bitwise independent of the thread count and of how many rows/queries share a call. For
 * HD_OP_MATMUL the order depends on cols (and the weight format) only: y[i][r] is the same
 * bits whether row i of x is sent alone (n = 1, decode) or among hundreds (prefill), and
 * whatever the view's row offset. The contract holds per code path: the AVX2+FMA path and
 * the portable path agree to rounding, not bitwise (see hd_kern_cpu_set_isa).
 */
#ifndef HADAL_KERNELS_H
#define HADAL_KERNELS_H

#include "hadal/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Storage format of a weight matrix, read directly by the kernels (never expanded). */
typedef enum {
    HD_WFMT_F32 = 0,  /* float32 elements */
    HD_WFMT_BF16 = 1, /* bfloat16 elements */
    HD_WFMT_FP8 = 2,  /* e4m3fn elements, e8m0 scale per 128x128 block */
    HD_WFMT_FP4 = 3,  /* e2m1 pairs (low nibble = even column), e8m0 scale per 32 columns */
} hd_wfmt_t;

/* A read-only view of a logical [rows, cols] weight (y = W x). */
typedef struct {
    hd_wfmt_t fmt;          /* storage format */
    int64_t rows;           /* output features of this view */
    int64_t cols;           /* input features */
    const void *data;       /* element of (view row 0, col 0) */
    size_t row_bytes;       /* bytes between consecutive rows */
    const uint8_t *scale;   /* FP8: [ceil(R/128), ceil(C/128)] of the whole tensor; FP4: [R, C/32] */
    int64_t scale_stride;   /* scale bytes per scale row */
    int64_t row0;           /* FP8/FP4: index of view row 0 inside the whole tensor (for scales) */
} hd_weight_t;

typedef enum {
    HD_OP_MATMUL = 0, /* y[i] = W x[i] for n rows */
    HD_OP_ATTN = 1,   /* sparse attention with per-head sink over candidate lists */
    HD_OP_MATMUL_GROUP = 2, /* independent matmuls in one launch (grouped GEMM, MoE experts) */
    HD_OP_COUNT
} hd_op_type_t;

typedef struct {
    const hd_weight_t *w; /* [rows, cols] */
    const float *x;       /* [n, x_stride], first cols used */
    float *y;             /* [n, y_stride], first rows written */
    int64_t n;            /* number of input rows (tokens) */
    int64_t x_stride;     /* floats between input rows */
    int64_t y_stride;     /* floats between output rows */
    bool act_quant_fp8;   /* quantise each x row to e4m3 per 128 columns first (official) */
} hd_op_matmul_t;

typedef struct {
    const float *q;          /* [n_q, n_heads, head_dim] */
    int64_t n_q;             /* queries */
    int64_t n_heads;         /* H */
    int64_t head_dim;        /* D */
    const float *kv;         /* [n_kv, head_dim]: keys = values (shared K=V) */
    const int32_t *cand;     /* candidate kv row ids, concatenated over queries */
    const int64_t *cand_off; /* [n_q + 1] offsets into cand */
    const float *sinks;      /* [n_heads] sink logits (denominator only) */
    float scale;             /* softmax scale (1/sqrt(D)) */
    float *out;              /* [n_q, n_heads, head_dim] */
} hd_op_attn_t;

/*
 * @count matmuls with no data dependency between them (no op reads another's y), run as
 * one launch. Each y is exactly what the op would give alone (the determinism contract is
 * per output row), so grouping is only a matter of speed.
 */
typedef struct {
    const hd_op_matmul_t *ops;
    int count;
} hd_op_matmul_group_t;

typedef struct {
    hd_op_type_t type;
    union {
        hd_op_matmul_t matmul;
        hd_op_attn_t attn;
        hd_op_matmul_group_t matmul_group;
    };
} hd_op_t;

typedef struct hd_kern_ops {
    const char *name;
    hd_status_t (*init)(int n_threads, void **ctx_p);
    void (*cleanup)(void *ctx);
    bool (*supports_op)(void *ctx, const hd_op_t *op);
    hd_status_t (*run_op)(void *ctx, const hd_op_t *op);
    /* (optional) device buffers; NULL means host memory is used directly */
    void *(*buf_alloc)(void *ctx, size_t bytes);
    void (*buf_free)(void *ctx, void *buf);
    /* (optional) NULL means run_op is synchronous */
    hd_status_t (*synchronize)(void *ctx);
} hd_kern_ops_t;

/* What the ops run through one backend have done (for benchmarks; summed over hd_kern_run). */
typedef struct hd_kern_stats {
    uint64_t matmul_calls;   /* HD_OP_MATMUL ops run */
    uint64_t weight_bytes;   /* weight bytes those matmuls read (elements + scales of the views) */
    uint64_t matmul_flops;   /* 2 * rows * cols * n summed */
    uint64_t attn_calls;     /* HD_OP_ATTN ops run */
    uint64_t fmt_ns[4];      /* matmul wall time by weight format (hd_wfmt_t) */
    uint64_t fmt_bytes[4];   /* matmul weight bytes by format */
    uint64_t fmt_calls[4];   /* matmul calls by format */
    uint64_t attn_ns;        /* attention wall time */
} hd_kern_stats_t;

typedef struct {
    const hd_kern_ops_t *ops; /* backend vtable */
    void *ctx;                /* backend state */
    hd_kern_stats_t stats;    /* counters; only the thread running ops updates them */
} hd_kern_backend_t;

/* Create the backend named @name ("cpu"); @n_threads 0 means all online CPUs. */
hd_status_t hd_kern_backend_create(const char *name, int n_threads, hd_kern_backend_t **be_p);
void hd_kern_backend_destroy(hd_kern_backend_t *be);
/* Names of compiled-in backends, NULL-terminated. */
const char *const *hd_kern_backend_names(void);
hd_status_t hd_kern_run(hd_kern_backend_t *be, const hd_op_t *op);
hd_status_t hd_kern_synchronize(hd_kern_backend_t *be);
/* Bytes one matmul over @w reads from the weight (elements plus its share of scales). */
uint64_t hd_kern_weight_view_bytes(const hd_weight_t *w);
/* The CPU backend's worker pool (NULL for other backends): for model-side loops. */
struct hd_pool *hd_kern_cpu_pool(hd_kern_backend_t *be);
/* Which CPU code path is in use ("avx2+fma" or "portable"). */
const char *hd_kern_cpu_isa(void);
/*
 * Force the CPU code path of this process: "avx2+fma" (HD_ERR_UNSUPPORTED when the CPU lacks
 * AVX2 or FMA), "portable", or NULL for the detected default. HD_ERR_INVALID_PARAM for any
 * other name. For tests and benchmarks: call it while no op is running.
 */
hd_status_t hd_kern_cpu_set_isa(const char *isa);

/* Convenience wrappers that build and run one op. */
hd_status_t hd_kern_matmul(hd_kern_backend_t *be, const hd_weight_t *w, const float *x,
                           int64_t x_stride, float *y, int64_t y_stride, int64_t n,
                           bool act_quant_fp8);

/* @count independent matmuls as one HD_OP_MATMUL_GROUP (same results as one by one). */
hd_status_t hd_kern_matmul_group(hd_kern_backend_t *be, const hd_op_matmul_t *ops, int count);

/*
 * Decode one weight row into @out (cols floats, natural column order): exactly the values
 * the matmul multiplies (e4m3/e2m1 value times its e8m0 scale, one rounding). Exposed for
 * tests and embedding lookups. Thread-safe.
 */
void hd_kern_weight_row(const hd_weight_t *w, int64_t row, float *out);

#endif /* HADAL_KERNELS_H */
