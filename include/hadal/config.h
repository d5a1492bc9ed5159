/*
 * hadal/config.h - the DeepSeek-V4 model configuration.
 *
 * One struct, filled from a Hub config.json (official key names), from a config.json saved by
 * transformers (layer_types / compress_rates / mlp_layer_types / rope_parameters), or from a
 * built-in preset (flash, pro, tiny-a, tiny-a-clamp, tiny-b, medium). Every field is validated
 * when parsed; a bad one is refused with a message naming the field.
 */
#ifndef HADAL_CONFIG_H
#define HADAL_CONFIG_H

#include "hadal/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define HD_MAX_LAYERS 128 /* main layers + MTP layers */

typedef enum {
    HD_EXPERT_FP4 = 0,  /* routed experts packed e2m1, e8m0 scale per 32 inputs */
    HD_EXPERT_FP8 = 1,  /* routed experts e4m3 with 128x128 e8m0 block scales */
    HD_EXPERT_BF16 = 2, /* unquantised (transformers-saved checkpoints: F32/BF16) */
} hd_expert_dtype_t;

typedef struct hd_model_config {
    char name[64];              /* preset name or "config.json" */
    int vocab_size;             /* embedding / head rows (129280) */
    int dim;                    /* hidden_size d */
    int n_layers;               /* main blocks, MTP excluded */
    int n_heads;                /* attention heads H */
    int head_dim;               /* D = 512 (128 in tiny configs) */
    int rope_dim;               /* R = 64: rope slice is the last R of every D-vector */
    int q_lora_rank;            /* wq_a output width */
    int o_lora_rank;            /* per-group rank of wo_a */
    int o_groups;               /* G */
    int window;                 /* sliding window incl. the current token (128) */
    double rope_theta;          /* theta for ratio-0 layers and MTP, no YaRN */
    double compress_rope_theta; /* theta for CSA/HCA layers, with YaRN */
    double rope_factor;         /* YaRN factor s (16) */
    int rope_orig_max_pos;      /* YaRN original length L0 (65536) */
    double beta_fast;           /* YaRN beta_fast (32) */
    double beta_slow;           /* YaRN beta_slow (1) */
    int max_pos;                /* max_position_embeddings */
    int n_mtp_layers;           /* num_nextn_predict_layers (0 or 1) */
    int compress_ratio[HD_MAX_LAYERS]; /* per layer, n_layers + n_mtp_layers entries:
                                          0 = SWA, 4 = CSA, other = HCA ratio */
    int index_n_heads;          /* lightning indexer heads (64) */
    int index_head_dim;         /* lightning indexer head dim (128) */
    int index_topk;             /* compressed entries selected per query */
    int n_routed_experts;       /* E */
    int n_shared_experts;       /* 1 */
    int n_experts_per_tok;      /* k = 6 */
    int moe_inter;              /* moe_intermediate_size I (routed and shared) */
    int n_hash_layers;          /* first layers routed by tid2eid */
    double routed_scale;        /* routed_scaling_factor */
    double swiglu_limit;        /* clamp; 0 disables */
    bool norm_topk_prob;        /* must be true for V4 */
    int hc_mult;                /* N = 4 residual streams */
    int hc_sinkhorn_iters;      /* 20 */
    double hc_eps;              /* 1e-6 */
    double norm_eps;            /* rms_norm_eps 1e-6 */
    int bos_id;                 /* 0 */
    int eos_id;                 /* 1 */
    hd_expert_dtype_t expert_dtype; /* format of routed expert weights */
} hd_model_config_t;

/* Fill @cfg from a built-in preset. HD_ERR_NOT_FOUND for an unknown name. */
hd_status_t hd_config_preset(const char *name, hd_model_config_t *cfg);
/* Names of all presets, NULL-terminated. */
const char *const *hd_config_preset_names(void);

/*
 * Parse config JSON text (Hub or transformers form) and validate it. @origin names the
 * source in messages. On failure writes "<origin>: field <name>: <why>" into @err.
 */
hd_status_t hd_config_parse(const char *text, size_t len, const char *origin,
                            hd_model_config_t *cfg, char *err, size_t err_len);
/* Read and parse @path (a file, or a directory holding config.json). */
hd_status_t hd_config_load(const char *path, hd_model_config_t *cfg, char *err, size_t err_len);
/* Check every field and their relations (e.g. o_groups divides n_heads). */
hd_status_t hd_config_validate(const hd_model_config_t *cfg, char *err, size_t err_len);
/* Write @cfg as a Hub-style config.json (official key names) to @f. */
hd_status_t hd_config_write_hub(const hd_model_config_t *cfg, FILE *f);

/* Helpers derived from the config. */
static inline int hd_config_ratio(const hd_model_config_t *c, int layer)
{
    return c->compress_ratio[layer];
}
static inline bool hd_config_is_hash(const hd_model_config_t *c, int layer)
{
    return layer < c->n_hash_layers; /* MTP (layer index >= n_layers) is never hashed */
}

#endif /* HADAL_CONFIG_H */
