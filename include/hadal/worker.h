/*
 * hadal/worker.h - what a worker does with a step: for its (stage, column) cell of the grid,
 * run the step's items pinned to its column through its engine (creating sequences on their
 * first tokens, freeing released ones), pass residual streams down the column, and sample on
 * the last stage. Transport-independent: the worker process (and the in-process grid used by
 * tests and `hadal run --pp/--ep`) move the streams and tokens.
 */
#ifndef HADAL_WORKER_H
#define HADAL_WORKER_H

#include "hadal/engine.h"
#include "hadal/sched.h"

typedef struct hd_wexec *hd_wexec_h;

/* @engine is borrowed (the caller destroys it after the executor). */
hd_status_t hd_wexec_create(hd_engine_h engine, int stage, int column, hd_wexec_h *w_p);
void hd_wexec_destroy(hd_wexec_h w);

/* Tokens of @step's items on this worker's column (the size of streams_in/out rows). */
int64_t hd_wexec_step_tokens(hd_wexec_h w, const hd_step_t *step);

/*
 * Execute @step: @streams_in / @streams_out hold [tokens of this column's items, N*d] in item
 * order (in: stages > 0; out: stages before the last). On the last stage @tokens_out[i] gets
 * item i's sampled id (items of other columns and non-sampled items are left untouched).
 * With no items for this column the engine still takes part in its row's exchanges.
 */
hd_status_t hd_wexec_step(hd_wexec_h w, const hd_step_t *step, const float *streams_in,
                          float *streams_out, int32_t *tokens_out);
/* The same; on the last stage also @lp_out[i] (when not NULL) for sampled items whose
 * logprobs > 0: log-softmax of the raw logits at the sampled id and the top logprobs - 1. */
hd_status_t hd_wexec_step_lp(hd_wexec_h w, const hd_step_t *step, const float *streams_in,
                             float *streams_out, int32_t *tokens_out, hd_logprobs_t *lp_out);

/* Sequences currently held. */
int hd_wexec_n_seqs(hd_wexec_h w);

/* Column owning routed expert @expert in a row of @ep workers: contiguous ranges of
 * ceil(n_experts / ep) experts (the planner assigns the same). */
int hd_grid_expert_owner(int n_experts, int ep, int expert);
/* Layers [lo, hi) of @stage when @pp stages split the model evenly by count. */
void hd_grid_layer_range(const hd_model_config_t *cfg, int pp, int stage, int *lo, int *hi);

/* Bytes of KV state held by this executor's sequences. */
size_t hd_wexec_kv_bytes(hd_wexec_h w);

/* ---- the worker process (`hadal worker`, worker/worker_main.c) ---- */
/*
 * A worker joins a coordinator over one TCP control connection (hadal/proto.h frames):
 * Hello, Register, then Placements (its grid cell, model and address table, with an epoch),
 * StepBatches (every step goes to every worker) and Heartbeats both ways. Its data plane
 * (hadal/net.h) carries residual streams down its column and its stage row's MoE exchange.
 * See docs/CLUSTER.md for the messages of a step and what happens on failures.
 */
typedef struct {
    const char *coordinator;  /* "host:port" of the coordinator's control port */
    const char *name;         /* (optional) worker name; NULL = "host:pid" */
    int requested_rank;       /* grid rank wanted, -1 = any (mpirun rank, StatefulSet ordinal) */
    int n_threads;            /* kernel threads; 0 = all online CPUs */
    int heartbeat_ms;         /* heartbeat period; 0 = 500 */
    int data_timeout_ms;      /* longest wait for a peer's streams or exchange; 0 = 10000 */
    int connect_timeout_ms;   /* keep trying to reach the coordinator this long; 0 = 30000 */
    int coordinator_timeout_ms; /* silence from the coordinator that counts as lost; 0 = 15000 */
    bool exit_on_disconnect;  /* leave when the coordinator goes away (else rejoin) */
    const char *bind_host;    /* data-plane listen address; NULL = this end of the control
                                 connection (reachable by whoever reached the coordinator) */
    const volatile int *stop; /* (optional) leave when it becomes non-zero */
} hd_worker_params_t;

/*
 * Run a worker until the coordinator tells it to exit, *@stop is set, or (with
 * exit_on_disconnect) the coordinator is lost. HD_OK on an orderly exit; HD_ERR_REMOTE when
 * the coordinator could not be reached or went away; HD_ERR_PROTO when it refused us.
 * Blocks the calling thread; runs a heartbeat thread of its own.
 */
hd_status_t hd_worker_run(const hd_worker_params_t *params);

/* ---- an in-process grid: PP x EP executors over one checkpoint ---- */
typedef struct hd_local_grid *hd_local_grid_h;
typedef struct {
    const char *model_path;
    int pp, ep;              /* stages x columns */
    hd_numerics_t numerics;
    int n_threads;           /* kernel threads per engine */
    bool load_mtp;
    char *err;               /* (optional) why creation failed */
    size_t err_len;
} hd_local_grid_params_t;

hd_status_t hd_local_grid_create(const hd_local_grid_params_t *p, hd_local_grid_h *g_p);
void hd_local_grid_destroy(hd_local_grid_h g);
const hd_model_config_t *hd_local_grid_config(hd_local_grid_h g);
/* Run @step through every stage; @tokens_out[i] = item i's sampled id (0 if not sampled). */
hd_status_t hd_local_grid_exec(hd_local_grid_h g, const hd_step_t *step, int32_t *tokens_out);
/* The same with log-probabilities (see hd_wexec_step_lp); @lp_out may be NULL. */
hd_status_t hd_local_grid_exec_lp(hd_local_grid_h g, const hd_step_t *step, int32_t *tokens_out,
                                  hd_logprobs_t *lp_out);

#endif /* HADAL_WORKER_H */
