/*
 * hadal/sched.h - the coordinator's scheduler: admission, continuous batching with chunked
 * prefill, sequences pinned to grid columns, micro-batches in flight, cancellation and
 * column failure. Transport-independent: a driver asks for the next step, executes it on the
 * grid (processes, or an in-process grid in tests) and hands back the sampled tokens.
 *
 * Ownership: the scheduler copies request prompts; a step's arrays belong to the scheduler
 * and stay valid until hd_sched_step_done() / hd_sched_step_failed() for that step.
 * Not thread-safe: one driver thread calls everything (callbacks run on that thread).
 */
#ifndef HADAL_SCHED_H
#define HADAL_SCHED_H

#include "hadal/sampling.h"
#include "hadal/status.h"

#include <stdbool.h>
#include <stdint.h>

typedef uint64_t hd_req_id_t; /* also the sequence id on workers; never reused */

typedef enum {
    HD_FINISH_NONE = 0,      /* still generating */
    HD_FINISH_STOP = 1,      /* a stop id (EOS) was generated */
    HD_FINISH_LENGTH = 2,    /* max_tokens reached */
    HD_FINISH_CANCELLED = 3, /* cancelled by the client */
    HD_FINISH_ERROR = 4,     /* failed (retryable when a worker died) */
} hd_finish_t;

/*
 * Called for every generated token (finish NONE), then once with the final reason
 * (token -1 unless the last token is delivered with it). @why is set for HD_FINISH_ERROR.
 */
typedef void (*hd_sched_token_func_t)(void *user, hd_req_id_t id, int32_t token,
                                      hd_finish_t finish, const char *why);

#define HD_LOGPROBS_MAX 20 /* most alternatives per token (OpenAI's top_logprobs bound) */

/* Log-probabilities of one sampled token: log-softmax of the model's raw logits. */
typedef struct {
    float logprob;                          /* of the sampled id */
    int n_top;                              /* entries below, most likely first */
    int32_t top_ids[HD_LOGPROBS_MAX];
    float top_logprobs[HD_LOGPROBS_MAX];
} hd_logprobs_t;

/* Called just before on_token for a sampled id whose log-probabilities were computed. */
typedef void (*hd_sched_logprobs_func_t)(void *user, hd_req_id_t id, const hd_logprobs_t *lp);

typedef struct {
    int n_columns;         /* grid columns (EP width); sequences are pinned to one */
    int max_running;       /* running sequences per column */
    int max_waiting;       /* admission queue bound (beyond it: HD_ERR_NO_MEMORY -> 429) */
    int step_tokens;       /* token budget of one step per column (decode + prefill) */
    int prefill_chunk;     /* most prompt tokens of one sequence in one step */
    int max_context;       /* prompt + generated tokens per sequence */
    int micro_batches;     /* (optional) > 1: a step takes at most 1/micro_batches of a
                              column's running sequences, so that many steps in flight share
                              them evenly and every pipeline stage has work; 0 or 1: a step
                              takes every ready sequence (within step_tokens) */
    int resume_failed;     /* (optional) > 0: a running request whose step or column fails
                              is re-run up to this many times instead of ending with an error:
                              its prompt and the tokens generated so far are prefilled again
                              in a new sequence (same id; the worker's old state is released)
                              and its sampler resumes after the draws it made, so the client
                              sees exactly the tokens of an uninterrupted run */
} hd_sched_params_t;

typedef struct {
    const int32_t *prompt;       /* prompt ids (copied) */
    int64_t n_prompt;            /* >= 1 */
    int max_tokens;              /* >= 1 */
    const int32_t *stop_ids;     /* ids that end generation (copied), e.g. EOS */
    int n_stop;
    hd_sampling_params_t sampling;
    hd_sched_token_func_t on_token; /* (optional) */
    void *user;
    int logprobs;                /* 0: none; k + 1: each sampled id's logprob and the top k */
    hd_sched_logprobs_func_t on_logprobs; /* (optional) gets them (same @user) */
} hd_request_t;

/* One sequence's share of a step. */
typedef struct {
    hd_req_id_t id;        /* sequence id */
    int column;            /* grid column holding its KV */
    const int32_t *tokens; /* ids to append */
    int64_t n_tokens;
    int64_t pos;           /* position of tokens[0] */
    bool first;            /* first tokens of the sequence: workers create it */
    bool sample;           /* the last token's output is sampled (prompt done) */
    hd_sampling_params_t sampling;
    int logprobs;          /* the request's logprobs: 0 none, k + 1 = sampled + top k */
} hd_step_item_t;

typedef struct {
    uint64_t step_id;          /* unique per step */
    int n_items;
    hd_step_item_t *items;
    int n_release;             /* sequences whose state every worker must free (ack = done) */
    hd_req_id_t *release;
} hd_step_t;

typedef struct hd_sched *hd_sched_h;

hd_status_t hd_sched_create(const hd_sched_params_t *params, hd_sched_h *sched_p);
void hd_sched_destroy(hd_sched_h sched);

/* Admit a request. HD_ERR_NO_MEMORY when the queue is full, HD_ERR_INVALID_PARAM when the
 * request cannot fit (prompt + max_tokens > max_context, empty prompt). */
hd_status_t hd_sched_submit(hd_sched_h sched, const hd_request_t *req, hd_req_id_t *id_p);
/* Cancel: the callback gets HD_FINISH_CANCELLED; workers release it in a later step. */
hd_status_t hd_sched_cancel(hd_sched_h sched, hd_req_id_t id);

/* The next step to run (HD_ERR_NOT_FOUND when there is nothing to do now). Sequences in a
 * step that is not done yet are not scheduled again, so up to PP steps can be in flight. */
hd_status_t hd_sched_next_step(hd_sched_h sched, hd_step_t **step_p);
/*
 * Results of @step: @tokens[i] is the sampled id of item i (any value >= 0 when !sample), or
 * HD_TOKEN_FAILED when item i's column failed: that sequence ends with a retryable error
 * (@why) and is released; the other items are done as usual.
 */
#define HD_TOKEN_FAILED (-1)
hd_status_t hd_sched_step_done(hd_sched_h sched, hd_step_t *step, const int32_t *tokens,
                               const char *why);
/* The same, with @lps[i] the log-probabilities of item i's sampled id (read for items whose
 * logprobs > 0; @lps may be NULL: none were computed). */
hd_status_t hd_sched_step_done_lp(hd_sched_h sched, hd_step_t *step, const int32_t *tokens,
                                  const hd_logprobs_t *lps, const char *why);
/* Every sequence pinned to @column ends with a retryable error (worker died); new requests
 * avoid the column until hd_sched_column_up(). */
void hd_sched_column_down(hd_sched_h sched, int column, const char *why);
void hd_sched_column_up(hd_sched_h sched, int column);

typedef struct {
    int waiting;   /* admitted, no token computed yet */
    int running;   /* being prefilled or decoded */
    int in_flight; /* steps handed out and not done */
    uint64_t prompt_tokens;     /* counters since creation */
    uint64_t generated_tokens;
} hd_sched_stats_t;
void hd_sched_stats(hd_sched_h sched, hd_sched_stats_t *stats);

#endif /* HADAL_SCHED_H */
