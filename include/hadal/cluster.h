/*
 * hadal/cluster.h - the coordinator runtime: a PP x EP grid of worker processes driven by one
 * coordinator thread (continuous batching through hadal/sched.h, several micro-batches in
 * flight, heartbeats, step deadlines, re-placement after failures), and the internal C API
 * the CLI and the HTTP servers submit requests through. Token ids in, token ids out.
 *
 * Workers either are started by the cluster itself (worker_exe set: `hadal serve`,
 * `hadal run --pp/--ep`; dead ones are restarted), or join on their own at the control port
 * (`hadal worker --coordinator HOST:PORT`, Kubernetes, mpirun), in which case the cluster
 * hands out ranks, the placement and the address table as they register.
 *
 * Threads. Every function here is thread-safe. Request callbacks (hd_request_t.on_token) run
 * on the cluster's own thread, in order per request, without any lock of the cluster held
 * (callers may hold their own lock around hd_cluster_submit); keep them short: the next
 * step waits for them. They may call any function here except hd_cluster_destroy.
 * Ownership: prompts and stop ids are copied at submission.
 *
 * Failures (docs/CLUSTER.md has the details). A worker that dies (its control connection
 * closes), hangs (no heartbeat for worker_timeout_ms), fails a step, or misses a step
 * deadline takes its grid cell down. Because every sequence passes through every stage row
 * and a row's experts are split over all its columns, the grid cannot run without that cell:
 * every running request ends with HD_FINISH_ERROR and a reason saying it may be retried;
 * waiting requests stay queued. When the cell is filled again (a restarted local worker, or
 * any worker registering), the cluster re-places the grid under a new epoch and serving
 * resumes.
 */
#ifndef HADAL_CLUSTER_H
#define HADAL_CLUSTER_H

#include "hadal/config.h"
#include "hadal/sched.h"
#include "hadal/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct hd_cluster *hd_cluster_h;

typedef struct {
    int pp, ep;                  /* grid: stages x expert-parallel columns (>= 1 each) */
    const char *model_dir;       /* checkpoint directory, as the workers see it */
    const char *preset;          /* (optional) with no model_dir: a preset (tiny-a, ...) with
                                    random weights, generated once (seed 1) into
                                    cache_dir/<preset>-s1, which the workers must see too */
    const char *cache_dir;       /* (with preset) where generated checkpoints live */
    int numerics;                /* hd_numerics_t: 0 official (default), 1 plain */
    const char *transport;       /* workers' data plane: "tcp" (default), "ucx", "mpi" */
    bool load_mtp;               /* last stage binds the MTP block */
    bool even_split;             /* stages get n_layers / pp layers each, not the planner's
                                    cost-balanced ranges (hadal/plan.h) */
    /* control port */
    const char *listen_host;     /* NULL = "127.0.0.1" (others are logged as a warning) */
    int listen_port;             /* 0 = any free port (hd_cluster_port) */
    /* local workers */
    const char *worker_exe;      /* (optional) hadal binary: start pp*ep `worker` processes */
    int worker_threads;          /* kernel threads per local worker; 0 = CPUs / workers */
    bool no_restart;             /* do not restart local workers that die */
    const char *worker_log_level; /* (optional) HD_LOG_LEVEL for local workers */
    /* scheduler (0 = default) */
    int max_running;             /* running sequences per column (64) */
    int max_waiting;             /* admission queue (256); beyond it submit says NO_MEMORY */
    int step_tokens;             /* tokens per column per step (256) */
    int prefill_chunk;           /* prompt tokens of one sequence per step (64) */
    int max_context;             /* prompt + generated per sequence (min(4096, max_pos)) */
    int max_in_flight;           /* micro-batches in flight (pp) */
    int resume_failed;           /* running requests hit by a lost worker are re-run (prefill of
                                    prompt + tokens so far, sampler resumed) up to this many
                                    times once the grid serves again, instead of ending with a
                                    retryable error; their tokens are exactly those of an
                                    uninterrupted run (0 = off, the default) */
    /* failure detection (0 = default) */
    int heartbeat_ms;            /* heartbeat period both ways (500) */
    int worker_timeout_ms;       /* worker silence that counts as a hang (3000) */
    int step_timeout_ms;         /* oldest step in flight older than this fails the grid (10000) */
    int placement_timeout_ms;    /* a re-placement round (model load + connect) (120000) */
    char *err;                   /* (optional) why creation failed */
    size_t err_len;
} hd_cluster_params_t;

typedef struct {
    int waiting;                 /* admitted, nothing computed yet */
    int running;                 /* being prefilled or decoded */
    int in_flight;               /* steps sent and not done */
    uint64_t prompt_tokens;      /* since creation */
    uint64_t generated_tokens;
    uint64_t steps;              /* steps completed */
    uint64_t kv_bytes;           /* KV state held by all workers (last heartbeats) */
    int n_workers;               /* pp * ep */
    int workers_connected;       /* registered control connections */
    bool ready;                  /* serving */
    uint64_t epoch;              /* placement generation */
    uint64_t worker_failures;    /* cells lost since creation */
    uint64_t cancel_acks_pending; /* CancelAcks not yet received */
    double cpu_seconds;          /* CPU time of the cluster thread */
} hd_cluster_stats_t;

/*
 * Start the coordinator: read the model's config.json (generating a preset's checkpoint
 * first when asked), listen on the control port, start local workers when asked, and return
 * at once (the grid becomes ready in the background: hd_cluster_wait_ready). Errors:
 * HD_ERR_INVALID_PARAM (bad grid for the model, no model, unknown preset), HD_ERR_IO (cannot
 * listen or write the preset), HD_ERR_NO_MEMORY; @params->err says why.
 */
hd_status_t hd_cluster_create(const hd_cluster_params_t *params, hd_cluster_h *cluster_p);

/* No other thread may call into @cluster once this starts (and no callback may call it).
 * Drain nothing: tell the workers to exit, stop local ones, free. Every request without its
 * final callback yet gets one, HD_FINISH_ERROR ("coordinator shutting down"), on the cluster
 * thread before this returns. */
void hd_cluster_destroy(hd_cluster_h cluster);

/* Serving now (every cell placed and connected)? */
bool hd_cluster_ready(hd_cluster_h cluster);

/* Wait until ready: HD_OK, HD_ERR_TIMEOUT, or the error that made the cluster give up (a
 * placement refused three times in a row, e.g. a model directory the workers cannot load). */
hd_status_t hd_cluster_wait_ready(hd_cluster_h cluster, int timeout_ms);

/*
 * Queue a request (copied). HD_ERR_NO_MEMORY when the admission queue is full (HTTP 429),
 * HD_ERR_INVALID_PARAM for an empty prompt, ids outside the vocabulary, or prompt +
 * max_tokens beyond max_context. Accepted also while the grid is not ready (it waits).
 */
hd_status_t hd_cluster_submit(hd_cluster_h cluster, const hd_request_t *req, hd_req_id_t *id_p);

/* Cancel: the callback gets HD_FINISH_CANCELLED (on the cluster thread, soon after); every
 * worker holding the sequence frees it with the next step (before any new sequence of that
 * step) and acknowledges it.
 * HD_ERR_NOT_FOUND when @id is not running or waiting. */
hd_status_t hd_cluster_cancel(hd_cluster_h cluster, hd_req_id_t id);

void hd_cluster_stats(hd_cluster_h cluster, hd_cluster_stats_t *stats);

/* The control port workers connect to. */
int hd_cluster_port(hd_cluster_h cluster);

/* The model configuration (valid until destroy). */
const hd_model_config_t *hd_cluster_config(hd_cluster_h cluster);

/* Process id of the local worker of grid @rank, or -1 (none running / not local). */
pid_t hd_cluster_worker_pid(hd_cluster_h cluster, int rank);

/* Main layers [*@lo_p, *@hi_p) of @stage in this cluster's placement. */
void hd_cluster_stage_layers(hd_cluster_h cluster, int stage, int *lo_p, int *hi_p);

#endif /* HADAL_CLUSTER_H */
