/*
 * hadal/inventory.h - the official DeepSeek-V4 checkpoint layout for a config: every tensor's
 * name, shape and dtype (spec §6.2), and a checker that a safetensors set holds them.
 *
 * The inventory is pure arithmetic on hd_model_config_t; it drives gen-model (what to write),
 * the checkpoint check (what must be present), and weight binding. Names carry no "model."
 * prefix: "embed.weight", "layers.{i}.attn.wq_a.weight", "mtp.{j}.e_proj.scale", ...
 * Blocks are numbered as in compress_ratio: main layers 0 .. n_layers-1, then MTP block j as
 * n_layers + j. Within a block the order is fixed (attention, then FFN); every quantised
 * weight is immediately followed by its ".scale" tensor.
 * Formats: FP8 linears are F8_E4M3 [out, in] + F8_E8M0 [ceil(out/128), ceil(in/128)];
 * FP4 routed experts are I8 [out, in/2] (two e2m1 per byte, low nibble first) + F8_E8M0
 * [out, in/32]; HD_EXPERT_BF16 experts are BF16 [out, in] without scale (non-expert linears
 * stay FP8 in every case). Thread-safe: no shared state.
 */
#ifndef HADAL_INVENTORY_H
#define HADAL_INVENTORY_H

#include "hadal/config.h"
#include "hadal/dtype.h"
#include "hadal/safetensors.h"
#include "hadal/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HD_INV_NAME_MAX 64

/* What a tensor is, for writers that must produce consistent weight/scale pairs. */
typedef enum {
    HD_INV_PLAIN = 0,      /* stored as is (bf16 / f32 / i64) */
    HD_INV_FP8_WEIGHT = 1, /* e4m3 codes of a [rows, cols] matrix */
    HD_INV_FP8_SCALE = 2,  /* its e8m0 128x128 block scales (follows the weight) */
    HD_INV_FP4_WEIGHT = 3, /* packed e2m1 pairs of a [rows, cols] matrix */
    HD_INV_FP4_SCALE = 4,  /* its e8m0 per-32 scales (follows the weight) */
} hd_inv_role_t;

/* How gen-model initialises a tensor (spec §9.3). */
typedef enum {
    HD_INV_INIT_WEIGHT = 0,    /* N(0, 0.02) */
    HD_INV_INIT_NORM = 1,      /* RMSNorm weight: 1 + N(0, 0.1) */
    HD_INV_INIT_APE = 2,       /* compressor position bias: N(0, 0.5) */
    HD_INV_INIT_SINK = 3,      /* attention sink logits: N(0, 1) */
    HD_INV_INIT_HC_BASE = 4,   /* mHC base: N(0, 0.5) */
    HD_INV_INIT_HC_SCALE = 5,  /* mHC scale: U(0.5, 1.5) */
    HD_INV_INIT_GATE_BIAS = 6, /* router bias: N(0, 0.1) */
    HD_INV_INIT_TID2EID = 7,   /* hash table: k distinct experts per row */
    HD_INV_INIT_SCALE = 8,     /* derived from the preceding weight */
} hd_inv_init_t;

typedef struct {
    char name[HD_INV_NAME_MAX]; /* official tensor name */
    hd_dtype_t dtype;           /* stored element type */
    int ndim;                   /* 1 or 2 */
    int64_t shape[2];           /* stored shape, outermost first */
    int layer;                  /* block index (MTP = n_layers + j); -1 for globals */
    int expert;                 /* routed expert id; -1 otherwise */
    hd_inv_role_t role;         /* plain / quantised weight / scale */
    hd_inv_init_t init;         /* gen-model initialisation */
    int64_t rows;               /* logical [rows, cols] matrix of a weight or scale */
    int64_t cols;
} hd_inv_tensor_t;

/* Which globals a filtered inventory carries. */
typedef enum {
    HD_INV_GLOBALS_AUTO = 0, /* those the block range needs: embed (block 0 or MTP), head (last
                                main layer or MTP), norm + hc_head_* (last main layer) */
    HD_INV_GLOBALS_ALL = 1,
    HD_INV_GLOBALS_NONE = 2,
} hd_inv_globals_t;

typedef struct {
    int layer_lo;             /* first block, 0 .. n_layers + n_mtp_layers */
    int layer_hi;             /* one past the last block */
    hd_inv_globals_t globals; /* which global tensors to include */
    const bool *experts;      /* NULL = every routed expert; else experts[e] (n_routed_experts
                                 entries) selects expert e */
} hd_inv_filter_t;

typedef struct {
    hd_inv_tensor_t *t; /* n tensors in checkpoint order */
    size_t n;
} hd_inv_t;

/*
 * Fill @inv with the tensors of @cfg selected by @filter (NULL = everything, globals
 * included). @cfg must be valid (hd_config_validate). Errors: HD_ERR_INVALID_PARAM (bad
 * range), HD_ERR_NO_MEMORY. Free with hd_inv_cleanup.
 */
hd_status_t hd_inv_init(hd_inv_t *inv, const hd_model_config_t *cfg, const hd_inv_filter_t *filter);
void hd_inv_cleanup(hd_inv_t *inv);

/* Bytes of one tensor, and of the whole list. */
uint64_t hd_inv_nbytes(const hd_inv_tensor_t *t);
uint64_t hd_inv_total_bytes(const hd_inv_t *inv);
/* The entry named @name, or NULL (linear search). */
const hd_inv_tensor_t *hd_inv_find(const hd_inv_t *inv, const char *name);

/*
 * Check that @set holds every tensor blocks [@layer_lo, @layer_hi) of @cfg need (globals
 * AUTO, all experts) with the right dtype and shape. Extra tensors are ignored. On failure
 * @err names the file and the first bad tensor ("<file>: tensor <name>: missing" / "dtype
 * F32, expected BF16" / "shape [..], expected [..]") and counts the other problems, each of
 * which is also logged. Errors: HD_ERR_NOT_FOUND (missing tensor), HD_ERR_FORMAT (wrong dtype
 * or shape), HD_ERR_INVALID_PARAM, HD_ERR_NO_MEMORY. Thread-safe.
 */
hd_status_t hd_ckpt_check(hd_st_set_h set, const hd_model_config_t *cfg, int layer_lo, int layer_hi,
                          char *err, size_t err_len);
/* Same, for an arbitrary filter (expert subsets, explicit globals). */
hd_status_t hd_ckpt_check_filter(hd_st_set_h set, const hd_model_config_t *cfg,
                                 const hd_inv_filter_t *filter, char *err, size_t err_len);

#endif /* HADAL_INVENTORY_H */
