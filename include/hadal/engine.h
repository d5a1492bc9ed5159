/*
 * hadal/engine.h - the single-process DeepSeek-V4 engine: weights bound from a checkpoint,
 * sequences with their KV state, and batched forward steps.
 *
 * An engine owns the mmap'ed weights (read-only, shared by all sequences) and a kernel
 * backend. A sequence owns its KV state: the sliding-window ring, the compressed entries,
 * the indexer keys and the compressor's rolling state for every layer (and the MTP block),
 * stored packed in official numerics (583 B per 512-d entry, 68 B per 128-d indexer key) and
 * as fp32 in plain numerics. hd_engine_step() appends any number of tokens to any number of
 * sequences in one call (prefill chunks of any size, decode tokens, or a mix); results do not
 * depend on how tokens are chunked or batched. One thread drives an engine at a time; the
 * kernels use the backend's own threads.
 */
#ifndef HADAL_ENGINE_H
#define HADAL_ENGINE_H

#include "hadal/config.h"
#include "hadal/sampling.h"
#include "hadal/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hd_engine *hd_engine_h;
typedef struct hd_seq *hd_seq_h;

typedef enum {
    HD_NUMERICS_OFFICIAL = 0, /* FP8 act quant, FP8-simulated KV, Hadamard+FP4 indexer, fp32 head */
    HD_NUMERICS_PLAIN = 1,    /* fp32 everywhere, no simulation (what transformers computes) */
} hd_numerics_t;

/*
 * Expert-parallel exchange for one MoE layer (set by workers whose stage row splits the
 * routed experts). Called with the step's @T tokens: their normalised MoE inputs @x [T, d],
 * selected experts @sel [T, k] and routing weights @wts [T, k]; it must fill @slot_out
 * [T*k, d] with each (token, slot)'s expert output exactly as hd_engine_moe_local computes it
 * (for local experts it may call hd_engine_moe_local itself). The engine then sums each
 * token's slots in ascending expert id, the same order as a single process, so results are
 * bitwise those of one engine holding every expert.
 */
typedef hd_status_t (*hd_moe_exchange_func_t)(void *user, int layer, int64_t T, const float *x,
                                              const int32_t *sel, const float *wts,
                                              float *slot_out);

typedef struct {
    const char *model_path;   /* checkpoint directory (config.json + safetensors) */
    const char *config_path;  /* (optional) config to use instead of model_path/config.json */
    hd_numerics_t numerics;   /* default official */
    int n_threads;            /* kernel threads; 0 = all online CPUs */
    int layer_lo, layer_hi;   /* (optional) layers [lo, hi) only (a pipeline stage); 0,0 = all.
                                 The embedding runs on the stage with lo == 0, the head and
                                 MTP on the stage with hi == n_layers. */
    bool load_mtp;            /* bind the MTP block when the checkpoint has it (last stage) */
    const uint8_t *expert_mask; /* (optional) [n_routed_experts]: bind only experts with 1 */
    hd_moe_exchange_func_t moe_exchange; /* (optional) expert-parallel dispatch/combine */
    void *moe_user;           /* passed to moe_exchange */
    char *err;                /* (optional) receives why creation failed: file, tensor, field */
    size_t err_len;           /* bytes of err */
} hd_engine_params_t;

hd_status_t hd_engine_create(const hd_engine_params_t *params, hd_engine_h *engine_p);
void hd_engine_destroy(hd_engine_h engine);
const hd_model_config_t *hd_engine_config(hd_engine_h engine);
/* Whether this engine's layers end the model (it runs the head, samples, and MTP). */
bool hd_engine_last_stage(hd_engine_h engine);
hd_numerics_t hd_engine_numerics(hd_engine_h engine);
/* Bytes of weights mapped (what a decode step reads at most). */
size_t hd_engine_weight_bytes(hd_engine_h engine);
/* Bytes of weights one decode token reads (attention + shared + top-k routed experts + head). */
size_t hd_engine_active_bytes_per_token(hd_engine_h engine);
/* Counters of the engine's kernel backend since creation or the last reset (benchmarks). */
struct hd_kern_stats;
void hd_engine_kern_stats(hd_engine_h engine, struct hd_kern_stats *stats, bool reset);
/* Last error message of this engine (load errors name file and tensor). */
const char *hd_engine_last_error(hd_engine_h engine);

/*
 * The transformers (HF) name of an official tensor name ("layers.3.attn.wq_a.weight" ->
 * "model.layers.3.self_attn.q_a_proj.weight"). False for names with no one-to-one HF tensor
 * (routed experts, which HF fuses into mlp.experts.gate_up_proj / down_proj, scales, mtp.*).
 */
bool hd_engine_hf_name(const char *official, char *hf, size_t len);

hd_status_t hd_seq_create(hd_engine_h engine, hd_seq_h *seq_p);
void hd_seq_destroy(hd_seq_h seq);
/* Tokens processed so far (the next token's position). */
int64_t hd_seq_len(hd_seq_h seq);
/* Bytes of KV state currently held (window, compressed entries, indexer keys, state). */
size_t hd_seq_kv_bytes(hd_seq_h seq);
/* The same, by part (main layers; MTP window when loaded counts in @window). */
typedef struct {
    uint64_t window;     /* stored window entries */
    uint64_t compressed; /* CSA and HCA compressed entries */
    uint64_t index_keys; /* CSA lightning-indexer keys */
    uint64_t state;      /* compressors' rolling fp32 state */
} hd_seq_kv_parts_t;
void hd_seq_kv_parts(hd_seq_h seq, hd_seq_kv_parts_t *parts);

typedef enum {
    HD_LOGITS_NONE = 0,
    HD_LOGITS_LAST = 1, /* logits of the last token of the item: [1, vocab] */
    HD_LOGITS_ALL = 2,  /* logits of every token of the item: [n_tokens, vocab] */
} hd_logits_mode_t;

typedef struct {
    hd_seq_h seq;                /* sequence to extend */
    const int32_t *tokens;       /* ids to append, in order */
    int64_t n_tokens;            /* >= 1 */
    hd_logits_mode_t logits;     /* which logits to produce */
    float *logits_out;           /* caller buffer for them (vocab floats per row) */
    float *hidden_out;           /* (optional) per layer streams [n_layers, n_tokens, N, d] */
    const float *streams_in;     /* stage > 0: residual streams entering layer_lo [n_tokens, N*d] */
    float *streams_out;          /* stage < last: streams leaving layer_hi - 1 [n_tokens, N*d] */
} hd_batch_item_t;

/*
 * Run one forward step over @n items (each a different sequence). Every item's tokens are
 * appended to its sequence. On error no sequence is changed... except that a failure inside
 * the layers (out of memory) leaves the affected sequences unusable: they report
 * HD_ERR_INVALID_PARAM on later steps and must be destroyed.
 */
hd_status_t hd_engine_step(hd_engine_h engine, hd_batch_item_t *items, int n);

/*
 * A step with no tokens for this engine: only takes part in its row's MoE exchanges (one call
 * of the hook per MoE layer, T = 0), as every engine of an expert-parallel row must per step.
 */
hd_status_t hd_engine_idle_step(hd_engine_h engine);

/*
 * Expert outputs for @n rows dispatched to this engine: row i is input @x[i] (d floats) for
 * expert @eid[i] with routing weight @w[i]; @out[i] receives that slot's output (weighted as
 * the numerics mode does). HD_ERR_UNSUPPORTED if an expert is not bound here.
 */
hd_status_t hd_engine_moe_local(hd_engine_h engine, int layer, int64_t n, const float *x,
                                const int32_t *eid, const float *w, float *out);

/*
 * MTP draft: logits for the token after @next_token, from the sequence's last hidden state
 * and @next_token (the token just sampled for the next position). Does not change the
 * sequence. HD_ERR_UNSUPPORTED when the MTP block is not loaded.
 */
hd_status_t hd_engine_mtp_draft(hd_engine_h engine, hd_seq_h seq, int32_t next_token,
                                float *logits_out);

/* ---- sampling ---- */
/* hd_sampling_params_t: see hadal/sampling.h */

typedef struct hd_sampler *hd_sampler_h;
hd_status_t hd_sampler_create(const hd_sampling_params_t *params, int vocab, hd_sampler_h *s_p);
void hd_sampler_destroy(hd_sampler_h s);
/* Sample one id from @logits (vocab floats; not modified). Greedy ties pick the lowest id. */
int32_t hd_sampler_sample(hd_sampler_h s, const float *logits);

#endif /* HADAL_ENGINE_H */
