/*
 * hadal/api.h - what the HTTP serving layer needs from a generation backend, and the
 * in-process backend (scheduler + a step executor on a thread of its own).
 *
 * A backend takes token ids with sampling parameters and calls back once per generated token
 * and once more with the finish reason, on a thread of its own. The HTTP server (hadal/http.h)
 * hands those calls over to its event loop. Two backends exist: the in-process one below
 * (coordinator/api_local.c: an hd_sched driven by one thread that runs each step through an
 * executor function, e.g. hd_local_grid_exec) and the process cluster (hadal/cluster.h,
 * adapted in coordinator/api_cluster.c when present).
 */
#ifndef HADAL_API_H
#define HADAL_API_H

#include "hadal/sampling.h"
#include "hadal/sched.h"
#include "hadal/status.h"

#include <stdbool.h>
#include <stdint.h>

/*
 * Called for every generated token (finish HD_FINISH_NONE; @lp its log-probabilities when the
 * generation asked for them, else NULL), then exactly once with the final reason (token -1).
 * @why is set for HD_FINISH_ERROR. Runs on the backend's thread; must not call back into the
 * backend. No call follows the final one.
 */
typedef void (*hd_api_token_func_t)(void *user, int32_t token, const hd_logprobs_t *lp,
                                    hd_finish_t finish, const char *why);

/* One generation. Everything is copied by submit. */
typedef struct {
    const int32_t *prompt;          /* prompt ids, in the model's vocabulary */
    int64_t n_prompt;               /* >= 1 */
    int max_tokens;                 /* >= 1 */
    const int32_t *stop_ids;        /* ids that end generation (EOS) */
    int n_stop;
    hd_sampling_params_t sampling;
    int logprobs;                   /* 0: none; k + 1: logprob of each token and the top k
                                       (HD_ERR_UNSUPPORTED where the backend cannot) */
    const int32_t *forced;          /* (optional, test mode) ids emitted instead of sampled
                                       ones, in order; after the last, the first stop id */
    int n_forced;
    hd_api_token_func_t on_token;   /* required */
    void *user;
} hd_api_gen_t;

typedef struct {
    int running;                /* sequences being prefilled or decoded */
    int waiting;                /* admitted, no token yet */
    uint64_t prompt_tokens;     /* counters since creation */
    uint64_t generated_tokens;
    int kv_seqs;                /* sequences whose KV the workers hold (created, not released) */
    int kv_capacity;            /* sequences the workers can hold at once */
    uint64_t kv_bytes;          /* KV bytes the workers hold (0 = not reported) */
    uint64_t steps;             /* steps executed */
    uint64_t prefix_queries;    /* prompt tokens looked up in the prefix cache */
    uint64_t prefix_hits;       /* of which found */
} hd_api_stats_t;

typedef struct {
    int max_context;            /* prompt + generated tokens per sequence */
    int vocab_size;             /* the model's vocabulary (prompt ids are folded into it) */
    int max_waiting;            /* admission queue bound */
} hd_api_limits_t;

/* A backend's operations. All are thread-safe. */
typedef struct {
    const char *name;
    /* Admit @gen. HD_ERR_NO_MEMORY when the queue is full (-> 429), HD_ERR_INVALID_PARAM when
     * it cannot fit, HD_ERR_UNSUPPORTED while not ready. On success on_token will be called. */
    hd_status_t (*submit)(void *ctx, const hd_api_gen_t *gen, uint64_t *id_p);
    /* Cancel: the final call comes with HD_FINISH_CANCELLED (unless already finishing);
     * workers release the sequence's state. HD_ERR_NOT_FOUND when it has finished. */
    hd_status_t (*cancel)(void *ctx, uint64_t id);
    void (*stats)(void *ctx, hd_api_stats_t *stats);
    /* Placement loaded and every worker ready. */
    bool (*ready)(void *ctx);
    void (*limits)(void *ctx, hd_api_limits_t *limits);
} hd_api_backend_ops_t;

typedef struct {
    const hd_api_backend_ops_t *ops;
    void *ctx;
} hd_api_backend_t;

/* ---- the in-process backend ---- */

/*
 * Run @step (see hadal/sched.h) and write item i's sampled id into @tokens_out[i] for items
 * with sample set, and its log-probabilities into @lp_out[i] when the item's logprobs > 0;
 * HD_TOKEN_FAILED marks an item whose column failed. Called on the backend's thread only.
 */
typedef hd_status_t (*hd_api_exec_func_t)(void *user, const hd_step_t *step,
                                          int32_t *tokens_out, hd_logprobs_t *lp_out);

typedef struct {
    hd_sched_params_t sched;    /* scheduler shape (columns, batch, queue, context) */
    hd_api_exec_func_t exec;    /* (optional) NULL: no model; only forced ids are emitted
                                   (the replay test mode), the stop id otherwise */
    void *exec_user;
    int vocab_size;             /* reported in limits */
    int step_delay_us;          /* (test mode) sleep this long per step; 0 = none */
} hd_api_local_params_t;

typedef struct hd_api_local *hd_api_local_h;

/* Start the driver thread. HD_ERR_INVALID_PARAM for bad scheduler parameters. */
hd_status_t hd_api_local_create(const hd_api_local_params_t *params, hd_api_local_h *local_p);
/* Stop the thread; pending requests end with HD_FINISH_ERROR. */
void hd_api_local_destroy(hd_api_local_h local);
hd_api_backend_t hd_api_local_backend(hd_api_local_h local);

/* ---- the process cluster (hadal/cluster.h) as a backend ---- */

struct hd_cluster;
/* @cluster is borrowed; @max_context and @max_waiting are what it was created with;
 * @kv_capacity the sequences its workers hold at most (columns x max_running). Free with
 * hd_api_cluster_destroy() after the server and before the cluster. */
hd_status_t hd_api_cluster_create(struct hd_cluster *cluster, int max_context, int max_waiting,
                                  int kv_capacity, hd_api_backend_t *backend_p);
void hd_api_cluster_destroy(hd_api_backend_t *backend);

#endif /* HADAL_API_H */
