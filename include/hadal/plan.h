/*
 * hadal/plan.h - the placement planner: a pure function from (model config, cluster
 * description) to a placement on a grid of PP pipeline stages x EP expert-parallel workers
 * (docs/ARCHITECTURE.md §2, docs/PLANNER.md).
 *
 * A placement gives every stage a contiguous range of layers, balanced by a per-layer decode
 * cost (FLOPs and bytes read per token at a reference context); the embedding sits on the
 * first stage, the final norm, head and MTP block on the last. Inside a stage every worker
 * holds the attention, mHC, norms, router and shared expert of the stage's layers and a
 * contiguous range of the routed experts. For each worker the planner adds up weights (exact
 * checkpoint bytes from the inventory), activation/communication buffers and a runtime
 * reserve, gives the rest to the KV cache, and derives the longest context it can hold at
 * batch 1, 8 and 64 (hadal/kv_size.h). A placement in which some worker cannot hold one
 * sequence of min_context tokens is refused with the worker and the shortfall in bytes.
 *
 * Everything here is pure arithmetic: no I/O, no global state, thread-safe. The planner lives
 * in hd_model for now (it needs config, inventory and kv_size, which live there).
 */
#ifndef HADAL_PLAN_H
#define HADAL_PLAN_H

#include "hadal/config.h"
#include "hadal/json.h"
#include "hadal/kv_size.h"
#include "hadal/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- cluster description ---- */

typedef enum {
    HD_CLUSTER_GPU = 0, /* nodes x GPUs; NVLink inside a node, a network between nodes */
    HD_CLUSTER_CPU = 1, /* worker processes on this host, each with a memory budget */
} hd_cluster_kind_t;

typedef struct {
    hd_cluster_kind_t kind;   /* GPU grid or local CPU workers */
    int nodes;                /* hosts, >= 1 (CPU: must be 1) */
    int devs_per_node;        /* GPUs per node (CPU: worker processes), >= 1 */
    uint64_t dev_mem;         /* bytes of memory per GPU (CPU: budget per worker process) */
    double intra_bw;          /* bytes/s one device sends inside its node (NVLink / shm) */
    double inter_bw;          /* bytes/s one device sends to other nodes (its NIC share) */
    int pp;                   /* pipeline stages; 0 = choose */
    int ep;                   /* expert-parallel workers per stage; 0 = choose */
    hd_kv_format_t kv_format; /* KV cache storage the budget is counted in */
    uint64_t reserve;         /* bytes per worker held back: runtime context, collective
                                 channels, allocator slack */
    uint64_t step_tokens;     /* tokens one worker processes per step (prefill chunk +
                                 decode); sizes the activation buffers */
    uint64_t min_context;     /* every worker must hold one sequence this long (clipped to
                                 max_position_embeddings) */
    uint64_t ref_context;     /* context length the layer costs are evaluated at */
    int ref_batch;            /* decode tokens per worker (column) per step in the cost and
                                 comm models: weight reads are shared by that many tokens */
    double flops_per_byte;    /* machine balance: FLOPs that cost as much as one byte read */
} hd_cluster_t;

/*
 * Fill @cl with the defaults of @kind (docs/PLANNER.md lists them) and zero sizes: the caller
 * sets nodes, devs_per_node and dev_mem, and may override any other field.
 */
void hd_cluster_init(hd_cluster_t *cl, hd_cluster_kind_t kind);

/*
 * Parse a byte size: a non-negative decimal number and a unit, "80GiB", "141GB", "512MiB",
 * "1.5TiB", "4096B", or a plain integer of bytes. Units: B, KB/MB/GB/TB (powers of 1000),
 * KiB/MiB/GiB/TiB (powers of 1024), case-insensitive. Errors (HD_ERR_INVALID_PARAM): empty,
 * negative, unknown unit, trailing junk, a fraction of a byte, overflow of 2^64.
 */
hd_status_t hd_plan_parse_bytes(const char *s, uint64_t *bytes_p);
/*
 * Parse a bandwidth: a byte size per second ("450GB/s", "50GiB/s"; "/s" optional) or bits
 * ("400Gbit/s", "100Mbit/s", powers of 1000). Result in bytes per second, > 0.
 */
hd_status_t hd_plan_parse_rate(const char *s, double *bytes_per_s_p);

/* ---- the placement ---- */

#define HD_PLAN_N_BATCH 3 /* the batch sizes max_context is reported for: 1, 8, 64 */

/* Activation and communication buffers of one worker (an estimate, docs/PLANNER.md). */
typedef struct {
    uint64_t residual;  /* mHC streams into and out of a sub-layer, fp32 */
    uint64_t attention; /* q, attention output, grouped low-rank output, compressor scratch */
    uint64_t indexer;   /* CSA index scores of one step at the reference context (0 if the
                           stage has no CSA layer) */
    uint64_t moe;       /* dispatch/combine buffers and routed-expert hidden states */
    uint64_t pipeline;  /* activations to/from neighbour stages, double-buffered */
    uint64_t logits;    /* last stage: head output rows */
    uint64_t total;     /* sum of the above */
} hd_plan_buffers_t;

typedef struct {
    int stage;     /* grid row */
    int column;    /* grid column: its sequences are pinned here */
    int node;      /* host index */
    int device;    /* GPU (CPU: worker) index within the node */
    int expert_lo; /* routed experts [expert_lo, expert_hi) of every layer */
    int expert_hi;
    uint64_t weights_dense;    /* attention, mHC, norms, router, shared expert of the stage's
                                  blocks (MTP included on the last stage), replicated per row */
    uint64_t weights_experts;  /* its routed experts in those blocks */
    uint64_t weights_globals;  /* embed (first stage; last stage for MTP), final norm and
                                  hc_head, head (last stage) */
    uint64_t weights;          /* sum of the three: exact checkpoint bytes */
    hd_plan_buffers_t buffers; /* activation/communication estimate */
    uint64_t reserve;          /* runtime reserve (cluster->reserve) */
    uint64_t kv_budget;        /* dev_mem - weights - buffers - reserve */
    uint64_t kv_min_seq;       /* KV bytes of one min_context sequence in this stage */
    uint64_t max_seqs;         /* min_context sequences the KV budget holds */
    uint64_t max_context[HD_PLAN_N_BATCH]; /* longest context of that many sequences that fits
                                              the KV budget (<= max_pos) */
} hd_plan_worker_t;

typedef struct {
    int layer_lo; /* main layers [layer_lo, layer_hi) */
    int layer_hi;
    bool has_embed; /* stage 0 */
    bool has_head;  /* last stage: final norm, hc_head, head and the MTP blocks */
    int n_csa;      /* main layers of each type in the range */
    int n_hca;
    int n_swa;
    double cost; /* sum of its blocks' costs, embed/head/MTP included (byte-equivalents
                    per decode token) */
} hd_plan_stage_t;

/* Communication per decode step at the reference batch (an estimate, docs/PLANNER.md). */
typedef struct {
    uint64_t a2a_bytes; /* bytes one worker sends per MoE layer (dispatch + combine) */
    double a2a_inter;   /* fraction of them that leaves the node */
    double a2a_us;      /* microseconds per MoE layer */
    uint64_t pp_bytes;  /* bytes one column sends across one stage boundary */
    int pp_inter;       /* stage boundaries that cross nodes */
    double pp_us;       /* microseconds for one boundary (the slowest) */
    double step_us;     /* a2a over the deepest stage's MoE layers + all boundaries */
} hd_plan_comm_t;

typedef struct {
    char model[64];                       /* config name */
    hd_cluster_t cluster;                 /* the description the plan was made for */
    int pp;                               /* stages (rows) */
    int ep;                               /* workers per stage (columns) */
    int n_workers;                        /* pp * ep = nodes * devs_per_node */
    bool grid_auto;                       /* PP x EP chosen by the planner */
    bool ep_cross_node;                   /* a stage row spans several nodes */
    char grid_why[256];                   /* how the grid was chosen */
    int n_layers;                         /* main layers */
    int n_mtp;                            /* MTP blocks (on the last stage) */
    int ratio[HD_MAX_LAYERS];             /* compress ratio per block (main + MTP) */
    double block_cost[HD_MAX_LAYERS];     /* cost per block (main + MTP; the MTP entries
                                             include the MTP head pass) */
    uint64_t block_dense[HD_MAX_LAYERS];  /* checkpoint bytes of a block without its routed
                                             experts (inventory) */
    uint64_t block_expert[HD_MAX_LAYERS]; /* checkpoint bytes of one routed expert of it */
    uint64_t embed_bytes;                 /* embed.weight */
    uint64_t head_bytes;                  /* norm.weight + hc_head_* + head.weight */
    double embed_cost;                    /* embedding lookup (stage 0) */
    double head_cost;                     /* final norm + hc_head + head (last stage) */
    double cost_max;                      /* the most expensive stage */
    double cost_mean;                     /* total / pp */
    double cost_item_max;       /* the most expensive partition item: a main block, with the
                                   embed folded into block 0 and the head and MTP blocks into
                                   the last; cost_max <= cost_mean + cost_item_max holds */
    uint64_t max_pos;           /* max_position_embeddings */
    uint64_t min_context;       /* resolved cluster->min_context */
    uint64_t ref_context;       /* resolved cluster->ref_context */
    int batch[HD_PLAN_N_BATCH]; /* 1, 8, 64 */
    uint64_t max_seqs; /* min_context sequences every column holds (minimum over workers) */
    uint64_t max_context[HD_PLAN_N_BATCH]; /* what every column holds: the minimum over all
                                              workers (a column's sequences need KV in
                                              each stage) */
    hd_plan_comm_t comm;                   /* communication estimate */
    hd_plan_stage_t *stages;               /* pp entries */
    hd_plan_worker_t *workers;             /* pp * ep entries, row-major: [stage * ep + column] */
} hd_plan_t;

/*
 * Make the placement of @cfg on @cl into @plan (free with hd_plan_cleanup). With cl->pp and
 * cl->ep both 0 the grid is chosen: EP = devices per node and PP = nodes when that fits,
 * else more stages inside a node, else rows spanning nodes; one of them given fixes the
 * other (pp * ep must equal every device). Errors, each with a message in @err:
 * HD_ERR_INVALID_PARAM - bad config or cluster (0 nodes or memory, CPU kind with nodes != 1,
 * pp * ep not the device count, EP neither dividing nor a multiple of the devices per node,
 * more EP workers than experts, a column left without experts by the contiguous split
 * owner(x) = x / ceil(E / ep) that the engine uses, more stages than layers);
 * HD_ERR_NO_MEMORY - the placement does not fit: @err names the worst worker, what it needs
 * and by how many bytes it is over (with the grid chosen, that of the candidate grid that
 * came closest); also on allocation failure, "out of memory". @plan is written only on
 * success. Pure and thread-safe.
 */
hd_status_t hd_plan_make(const hd_model_config_t *cfg, const hd_cluster_t *cl, hd_plan_t *plan,
                         char *err, size_t err_len);
void hd_plan_cleanup(hd_plan_t *plan);

/* The worker in row @stage, column @column. */
static inline const hd_plan_worker_t *hd_plan_worker(const hd_plan_t *p, int stage, int column)
{
    return &p->workers[stage * p->ep + column];
}

/*
 * What worker @w hands the engine (hd_engine_params_t): main layers [stage layer_lo,
 * layer_hi), load_mtp on the last stage, and this expert mask: @mask (@n_experts bytes) gets 1
 * for the experts the worker owns, 0 for the others.
 */
static inline void hd_plan_worker_expert_mask(const hd_plan_worker_t *w, int n_experts,
                                              uint8_t *mask)
{
    for (int x = 0; x < n_experts; x++) {
        mask[x] = x >= w->expert_lo && x < w->expert_hi;
    }
}

/* "SWA", "CSA" or "HCA" for a compress ratio (0, 4, other). */
const char *hd_plan_layer_type(int ratio);

/*
 * Append @plan as one JSON object to @b (schema in docs/PLANNER.md): model, cluster, grid,
 * cost model, per-block costs, stages with their workers and memory, max contexts, comm.
 * Byte counts are exact integers.
 */
void hd_plan_write_json(const hd_plan_t *plan, hd_buf_t *b);

#endif /* HADAL_PLAN_H */
