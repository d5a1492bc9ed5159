/*
 * engine_impl.h - private structures of the model engine: bound weights per layer, the
 * per-sequence KV state, and the scratch buffers of a step. Shared by weights.c (binding),
 * kv.c (sequence state), forward.c (the step) and mtp.c.
 */
#ifndef HADAL_MODEL_ENGINE_IMPL_H
#define HADAL_MODEL_ENGINE_IMPL_H

#include "hadal/config.h"
#include "hadal/engine.h"
#include "hadal/kernels.h"
#include "hadal/safetensors.h"

#include <stdbool.h>
#include <stdint.h>

/* Compressor weights (main: head_dim wide; indexer: index_head_dim wide). */
typedef struct {
    int ratio;          /* m: tokens per compressed entry (4 = CSA with overlap) */
    int width;          /* entry width (D or Di) */
    int coff;           /* c = 2 with overlap (CSA), 1 without (HCA) */
    hd_weight_t wkv;    /* [c*width, d] */
    hd_weight_t wgate;  /* [c*width, d] */
    float *ape;         /* [m, c*width] learned gate bias by offset in window */
    float *norm;        /* [width] RMSNorm weight */
} comp_w_t;

typedef struct {
    int index;             /* layer index (n_layers for the MTP block) */
    int ratio;             /* 0 SWA, 4 CSA, else HCA */
    bool hash;             /* tid2eid routing */
    bool loaded;           /* in the loaded layer range */
    /* mHC */
    hd_weight_t hc_attn_fn, hc_ffn_fn; /* [(2+N)N, N*d] */
    float hc_attn_base[24], hc_attn_scale[3];
    float hc_ffn_base[24], hc_ffn_scale[3];
    float *attn_norm, *ffn_norm; /* [d] */
    /* attention */
    hd_weight_t wq_a;   /* [q_lora, d] */
    float *q_norm;      /* [q_lora] */
    hd_weight_t wq_b;   /* [H*D, q_lora] */
    hd_weight_t wkv;    /* [D, d] */
    float *kv_norm;     /* [D] */
    hd_weight_t wo_a;   /* [G*o_lora, H*D/G] */
    hd_weight_t wo_b;   /* [d, G*o_lora] */
    float *sinks;       /* [H] */
    comp_w_t comp;      /* ratio > 0 */
    /* lightning indexer (CSA) */
    hd_weight_t i_wq_b;  /* [nI*Di, q_lora] */
    hd_weight_t i_wproj; /* [nI, d] */
    comp_w_t icomp;      /* ratio 4, width Di */
    /* MoE */
    hd_weight_t gate;    /* [E, d] */
    float *gate_bias;    /* [E] (non-hash) */
    int32_t *tid2eid;    /* [vocab, k] (hash) */
    hd_weight_t *w1, *w3, *w2; /* [E]: [I,d], [I,d], [d,I]; data NULL when not loaded */
    hd_weight_t sh_w1, sh_w3, sh_w2;
    /* MTP extras (index == n_layers) */
    hd_weight_t e_proj, h_proj; /* [d, d] */
    float *enorm, *hnorm, *mnorm; /* [d] */
    hd_weight_t hc_head_fn;       /* [N, N*d] */
    float hc_head_base[4], hc_head_scale;
} layer_w_t;

struct hd_engine {
    hd_model_config_t cfg;
    hd_numerics_t numerics;
    hd_kern_backend_t *be;
    hd_st_set_h st;
    bool hf_names;          /* checkpoint uses transformers names */
    int layer_lo, layer_hi; /* loaded main-layer range */
    bool has_mtp;
    hd_weight_t embed;      /* [V, d] */
    hd_weight_t head;       /* [V, d] */
    float *norm;            /* [d] */
    hd_weight_t hc_head_fn; /* [N, N*d] */
    float hc_head_base[4];
    float hc_head_scale;
    layer_w_t *layers;      /* n_layers + n_mtp */
    float *inv_freq_main;   /* [R/2] theta = rope_theta, no YaRN */
    float *inv_freq_comp;   /* [R/2] theta = compress_rope_theta with YaRN */
    hd_moe_exchange_func_t moe_exchange; /* expert-parallel hook, or NULL */
    void *moe_user;
    size_t weight_bytes;
    size_t active_bytes;
    char err[512];
};

/* Per-layer KV state of one sequence. */
typedef struct {
    uint8_t *ring;      /* window ring: W entries of entry_bytes */
    uint8_t *comp;      /* compressed entries (entry_bytes each) */
    uint8_t *ikeys;     /* indexer keys (ikey_bytes each), CSA only */
    int64_t n_comp;     /* compressed entries emitted */
    int64_t cap_comp;   /* capacity of comp / ikeys */
    /* compressor rolling state (fp32): current window rows and previous window's Ca half */
    float *cu, *cz;     /* [m, c*width] */
    float *pu, *pz;     /* [m, width] (CSA) */
    float *icu, *icz, *ipu, *ipz; /* indexer compressor, same layout at Di */
} layer_kv_t;

struct hd_seq {
    hd_engine_h eng;
    int64_t len;          /* tokens processed */
    bool broken;          /* a failed step left the state inconsistent */
    layer_kv_t *layers;   /* n_layers + n_mtp */
    float *last_streams;  /* [N*d] final residual streams of the last token (for MTP) */
    int64_t mtp_len;      /* positions already fed to the MTP block */
};

/* Bytes of one stored 512-d (head_dim) entry and one indexer key under @num. */
size_t kv_entry_bytes(const hd_model_config_t *c, hd_numerics_t num);
size_t kv_ikey_bytes(const hd_model_config_t *c, hd_numerics_t num);
/* Store @v (head_dim floats) as an entry; rewrites @v with the stored (decoded) values. */
void kv_entry_store(const hd_model_config_t *c, hd_numerics_t num, float *v, uint8_t *dst);
void kv_entry_load(const hd_model_config_t *c, hd_numerics_t num, const uint8_t *src, float *v);
void kv_ikey_store(const hd_model_config_t *c, hd_numerics_t num, float *v, uint8_t *dst);
void kv_ikey_load(const hd_model_config_t *c, hd_numerics_t num, const uint8_t *src, float *v);
hd_status_t kv_comp_reserve(hd_seq_h s, int layer, int64_t n);

hd_status_t engine_bind_weights(hd_engine_h e, const hd_engine_params_t *p);
void engine_free_weights(hd_engine_h e);

#endif /* HADAL_MODEL_ENGINE_IMPL_H */
