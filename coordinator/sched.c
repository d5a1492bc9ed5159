/*
 * sched.c - the scheduler: a FIFO admission queue, the running set pinned to grid columns,
 * and step building. Each step takes, per column and within its token budget, one decode
 * token from every running sequence that is not already in flight, then prefill chunks of
 * sequences still reading their prompt, then admits new sequences. Finished, cancelled and
 * failed sequences that workers hold are listed for release in the next step.
 */
#include "hadal/sched.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <string.h>

typedef struct sched_req {
    hd_req_id_t id;
    int column;              /* -1 while waiting */
    int32_t *tok;            /* prompt then generated ids */
    int64_t n_tok, cap_tok;
    int64_t n_prompt;
    int64_t n_sent;          /* tokens handed to workers (computed or in flight) */
    int generated, max_tokens;
    int32_t *stop;
    int n_stop;
    hd_sampling_params_t sampling;
    hd_sched_token_func_t on_token;
    void *user;
    int logprobs;
    hd_sched_logprobs_func_t on_logprobs;
    bool started;            /* workers hold state for it */
    int resumes;             /* times re-run after a failure (hd_sched_params_t.resume_failed) */
    uint64_t base_skip;      /* the client's own sampling.skip */
    bool in_flight;
    bool finished;           /* final callback delivered; drop when no longer in flight */
} sched_req_t;

typedef struct {
    hd_step_t pub;
    sched_req_t **reqs;      /* [n_items] */
} sched_step_t;

struct hd_sched {
    hd_sched_params_t p;
    hd_req_id_t next_id;
    uint64_t next_step;
    sched_req_t **wait;      /* FIFO */
    int n_wait, cap_wait;
    sched_req_t **run;       /* admitted, not dropped */
    int n_run, cap_run;
    hd_req_id_t *rel;        /* pending releases */
    int n_rel, cap_rel;
    bool *col_down;          /* [n_columns] */
    int in_flight;
    uint64_t prompt_tokens, generated_tokens;
};

static int grow(void **arr, int *cap, int need, size_t elem)
{
    if (need <= *cap) {
        return 0;
    }
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need) {
        nc *= 2;
    }
    void *p = hd_realloc(*arr, (size_t)nc * elem, "scheduler array");
    if (p == NULL) {
        return -1;
    }
    *arr = p;
    *cap = nc;
    return 0;
}

hd_status_t hd_sched_create(const hd_sched_params_t *params, hd_sched_h *sched_p)
{
    hd_sched_h s;
    if (params->n_columns < 1 || params->max_running < 1 || params->max_waiting < 0 ||
        params->step_tokens < 1 || params->prefill_chunk < 1 || params->max_context < 2 ||
        params->micro_batches < 0 || params->resume_failed < 0) {
        return HD_ERR_INVALID_PARAM;
    }
    s = hd_calloc(1, sizeof(*s), "scheduler");
    if (s == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    s->p = *params;
    s->next_id = 1;
    s->col_down = hd_calloc((size_t)params->n_columns, sizeof(bool), "scheduler columns");
    if (s->col_down == NULL) {
        hd_free(s);
        return HD_ERR_NO_MEMORY;
    }
    *sched_p = s;
    return HD_OK;
}

static void req_free(sched_req_t *r)
{
    if (r != NULL) {
        hd_free(r->tok);
        hd_free(r->stop);
        hd_free(r);
    }
}

void hd_sched_destroy(hd_sched_h s)
{
    if (s == NULL) {
        return;
    }
    for (int i = 0; i < s->n_wait; i++) {
        req_free(s->wait[i]);
    }
    for (int i = 0; i < s->n_run; i++) {
        req_free(s->run[i]);
    }
    hd_free(s->wait);
    hd_free(s->run);
    hd_free(s->rel);
    hd_free(s->col_down);
    hd_free(s);
}

hd_status_t hd_sched_submit(hd_sched_h s, const hd_request_t *q, hd_req_id_t *id_p)
{
    sched_req_t *r;
    if (q->prompt == NULL || q->n_prompt < 1 || q->max_tokens < 1 || q->n_stop < 0 ||
        q->n_prompt + q->max_tokens > s->p.max_context) {
        return HD_ERR_INVALID_PARAM;
    }
    if (s->n_wait >= s->p.max_waiting) {
        return HD_ERR_NO_MEMORY;
    }
    if (grow((void **)&s->wait, &s->cap_wait, s->n_wait + 1, sizeof(*s->wait)) != 0) {
        return HD_ERR_NO_MEMORY;
    }
    r = hd_calloc(1, sizeof(*r), "request");
    if (r == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    r->cap_tok = q->n_prompt + q->max_tokens;
    r->tok = hd_calloc((size_t)r->cap_tok, sizeof(int32_t), "request tokens");
    r->stop = hd_calloc((size_t)q->n_stop + 1, sizeof(int32_t), "request stop ids");
    if (r->tok == NULL || r->stop == NULL) {
        req_free(r);
        return HD_ERR_NO_MEMORY;
    }
    memcpy(r->tok, q->prompt, (size_t)q->n_prompt * sizeof(int32_t));
    if (q->n_stop > 0) {
        memcpy(r->stop, q->stop_ids, (size_t)q->n_stop * sizeof(int32_t));
    }
    r->id = s->next_id++;
    r->column = -1;
    r->n_tok = r->n_prompt = q->n_prompt;
    r->max_tokens = q->max_tokens;
    r->n_stop = q->n_stop;
    r->sampling = q->sampling;
    r->base_skip = q->sampling.skip;
    r->on_token = q->on_token;
    r->user = q->user;
    r->logprobs = q->logprobs < 0 ? 0 : (q->logprobs > HD_LOGPROBS_MAX + 1 ? HD_LOGPROBS_MAX + 1
                                                                          : q->logprobs);
    r->on_logprobs = q->on_logprobs;
    s->wait[s->n_wait++] = r;
    *id_p = r->id;
    return HD_OK;
}

static void req_emit(sched_req_t *r, int32_t tok, hd_finish_t f, const char *why)
{
    if (r->on_token != NULL) {
        r->on_token(r->user, r->id, tok, f, why);
    }
}

/* Final callback, release listing, and removal once no step holds the request. */
static void req_finish(hd_sched_h s, sched_req_t *r, hd_finish_t f, const char *why)
{
    if (!r->finished) {
        r->finished = true;
        req_emit(r, -1, f, why);
    }
}

/* List @id for release in the next step; -1 when out of memory. */
static int sched_release(hd_sched_h s, hd_req_id_t id)
{
    if (grow((void **)&s->rel, &s->cap_rel, s->n_rel + 1, sizeof(*s->rel)) != 0) {
        return -1;
    }
    s->rel[s->n_rel++] = id;
    return 0;
}

static void sched_reap(hd_sched_h s)
{
    int j = 0;
    for (int i = 0; i < s->n_run; i++) {
        sched_req_t *r = s->run[i];
        if (r->finished && !r->in_flight) {
            if (r->started) {
                (void)sched_release(s, r->id);
            }
            req_free(r);
            continue;
        }
        s->run[j++] = r;
    }
    s->n_run = j;
}

/*
 * A failure reached @r: re-run it (when the scheduler resumes failed requests and @r has
 * resumes left) or end it with a retryable error. A re-run feeds the prompt and every token
 * generated so far as a new prompt from position 0, with the sampler skipping the draws it
 * made; the old worker state is released first (the release goes out in the next step, and
 * workers apply releases before creating a step's new sequences).
 */
static void req_failed(hd_sched_h s, sched_req_t *r, const char *why)
{
    if (r->finished) {
        return;
    }
    if (r->resumes >= s->p.resume_failed) {
        req_finish(s, r, HD_FINISH_ERROR, why ? why : "worker failed; retry");
        return;
    }
    if (r->started && sched_release(s, r->id) != 0) {
        req_finish(s, r, HD_FINISH_ERROR, "out of memory while re-running after a failure");
        return;
    }
    r->resumes++;
    r->started = false;
    r->n_sent = 0;
    r->n_prompt = r->n_tok; /* the last generated token is fed, then the next one sampled */
    r->sampling.skip = r->base_skip + hd_sampling_draws(&r->sampling, (uint64_t)r->generated);
    hd_info(HD_SUBSYS_SCHED, "request %llu re-run after a failure (%d of %d): %lld tokens to "
            "prefill again (%s)", (unsigned long long)r->id, r->resumes, s->p.resume_failed,
            (long long)r->n_tok, why ? why : "worker failed");
}

hd_status_t hd_sched_cancel(hd_sched_h s, hd_req_id_t id)
{
    for (int i = 0; i < s->n_wait; i++) {
        if (s->wait[i]->id == id) {
            sched_req_t *r = s->wait[i];
            memmove(&s->wait[i], &s->wait[i + 1], (size_t)(s->n_wait - i - 1) * sizeof(*s->wait));
            s->n_wait--;
            req_emit(r, -1, HD_FINISH_CANCELLED, NULL);
            req_free(r);
            return HD_OK;
        }
    }
    for (int i = 0; i < s->n_run; i++) {
        if (s->run[i]->id == id && !s->run[i]->finished) {
            req_finish(s, s->run[i], HD_FINISH_CANCELLED, NULL);
            sched_reap(s);
            return HD_OK;
        }
    }
    return HD_ERR_NOT_FOUND;
}

static int column_load(hd_sched_h s, int c)
{
    int n = 0;
    for (int i = 0; i < s->n_run; i++) {
        n += s->run[i]->column == c && !s->run[i]->finished;
    }
    return n;
}

/* Admit waiting requests (FIFO) to the least-loaded live column with room. */
static void sched_admit(hd_sched_h s)
{
    while (s->n_wait > 0) {
        int best = -1, best_load = 0;
        for (int c = 0; c < s->p.n_columns; c++) {
            int load = column_load(s, c);
            if (!s->col_down[c] && load < s->p.max_running && (best < 0 || load < best_load)) {
                best = c;
                best_load = load;
            }
        }
        if (best < 0 || grow((void **)&s->run, &s->cap_run, s->n_run + 1, sizeof(*s->run)) != 0) {
            return;
        }
        sched_req_t *r = s->wait[0];
        memmove(&s->wait[0], &s->wait[1], (size_t)(s->n_wait - 1) * sizeof(*s->wait));
        s->n_wait--;
        r->column = best;
        s->run[s->n_run++] = r;
    }
}

static int sched_add_item(sched_step_t *st, int *cap, sched_req_t *r, int64_t n)
{
    if (grow((void **)&st->pub.items, cap, st->pub.n_items + 1, sizeof(hd_step_item_t)) != 0) {
        return -1;
    }
    int c2 = *cap;
    void *p = hd_realloc(st->reqs, (size_t)c2 * sizeof(*st->reqs), "step requests");
    if (p == NULL) {
        return -1;
    }
    st->reqs = p;
    hd_step_item_t *it = &st->pub.items[st->pub.n_items];
    it->id = r->id;
    it->column = r->column;
    it->tokens = r->tok + r->n_sent;
    it->n_tokens = n;
    it->pos = r->n_sent;
    it->first = !r->started;
    it->sample = r->n_sent + n == r->n_tok;
    it->sampling = r->sampling;
    it->logprobs = r->logprobs;
    st->reqs[st->pub.n_items++] = r;
    r->started = true;
    r->in_flight = true;
    r->n_sent += n;
    return 0;
}

hd_status_t hd_sched_next_step(hd_sched_h s, hd_step_t **step_p)
{
    sched_step_t *st;
    int cap = 0;
    sched_admit(s);
    st = hd_calloc(1, sizeof(*st), "step");
    if (st == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    for (int c = 0; c < s->p.n_columns; c++) {
        int budget = s->p.step_tokens;
        int quota = INT32_MAX; /* sequences of this column in this step */
        if (s->col_down[c]) {
            continue;
        }
        if (s->p.micro_batches > 1) { /* an even share of the column per micro-batch */
            int n_col = column_load(s, c);
            quota = (n_col + s->p.micro_batches - 1) / s->p.micro_batches;
        }
        /* decode tokens first: latency of running sequences */
        for (int i = 0; i < s->n_run && budget > 0 && quota > 0; i++) {
            sched_req_t *r = s->run[i];
            if (r->column == c && !r->in_flight && !r->finished && r->n_sent >= r->n_prompt &&
                r->n_sent < r->n_tok) {
                if (sched_add_item(st, &cap, r, 1) != 0) {
                    goto oom;
                }
                budget--;
                quota--;
            }
        }
        /* then prefill chunks, oldest first */
        for (int i = 0; i < s->n_run && budget > 0 && quota > 0; i++) {
            sched_req_t *r = s->run[i];
            if (r->column == c && !r->in_flight && !r->finished && r->n_sent < r->n_prompt) {
                int64_t n = r->n_prompt - r->n_sent;
                n = n < s->p.prefill_chunk ? n : s->p.prefill_chunk;
                n = n < budget ? n : budget;
                if (sched_add_item(st, &cap, r, n) != 0) {
                    goto oom;
                }
                budget -= (int)n;
                quota--;
            }
        }
    }
    if (s->n_rel > 0) {
        st->pub.release = s->rel;
        st->pub.n_release = s->n_rel;
        s->rel = NULL;
        s->n_rel = s->cap_rel = 0;
    }
    if (st->pub.n_items == 0 && st->pub.n_release == 0) {
        hd_free(st->pub.items);
        hd_free(st->reqs);
        hd_free(st);
        return HD_ERR_NOT_FOUND;
    }
    st->pub.step_id = ++s->next_step;
    s->in_flight++;
    for (int i = 0; i < st->pub.n_items; i++) {
        if (st->pub.items[i].first && st->reqs[i]->resumes == 0) {
            s->prompt_tokens += (uint64_t)st->reqs[i]->n_prompt;
        }
    }
    *step_p = &st->pub;
    return HD_OK;
oom:
    for (int i = 0; i < st->pub.n_items; i++) { /* undo: nothing was handed out */
        st->reqs[i]->in_flight = false;
        st->reqs[i]->n_sent -= st->pub.items[i].n_tokens;
        if (st->pub.items[i].first) {
            st->reqs[i]->started = false;
        }
    }
    hd_free(st->pub.items);
    hd_free(st->reqs);
    hd_free(st);
    return HD_ERR_NO_MEMORY;
}

static void step_free(hd_sched_h s, sched_step_t *st)
{
    s->in_flight--;
    hd_free(st->pub.items);
    hd_free(st->pub.release);
    hd_free(st->reqs);
    hd_free(st);
}

hd_status_t hd_sched_step_done(hd_sched_h s, hd_step_t *step, const int32_t *tokens,
                               const char *why)
{
    return hd_sched_step_done_lp(s, step, tokens, NULL, why);
}

hd_status_t hd_sched_step_done_lp(hd_sched_h s, hd_step_t *step, const int32_t *tokens,
                                  const hd_logprobs_t *lps, const char *why)
{
    sched_step_t *st = (sched_step_t *)step;
    for (int i = 0; i < step->n_items; i++) {
        sched_req_t *r = st->reqs[i];
        r->in_flight = false;
        if (tokens[i] < 0) {
            req_failed(s, r, why);
            continue;
        }
        if (r->finished || !step->items[i].sample) {
            continue;
        }
        int32_t t = tokens[i];
        r->tok[r->n_tok++] = t;
        r->generated++;
        s->generated_tokens++;
        if (lps != NULL && r->logprobs > 0 && r->on_logprobs != NULL) {
            r->on_logprobs(r->user, r->id, &lps[i]);
        }
        req_emit(r, t, HD_FINISH_NONE, NULL);
        bool stop = false;
        for (int k = 0; k < r->n_stop; k++) {
            stop |= r->stop[k] == t;
        }
        if (stop) {
            req_finish(s, r, HD_FINISH_STOP, NULL);
        } else if (r->generated >= r->max_tokens || r->n_tok >= s->p.max_context) {
            req_finish(s, r, HD_FINISH_LENGTH, NULL);
        }
    }
    step_free(s, st);
    sched_reap(s);
    return HD_OK;
}

void hd_sched_column_down(hd_sched_h s, int column, const char *why)
{
    if (column < 0 || column >= s->p.n_columns) {
        return;
    }
    s->col_down[column] = true;
    for (int i = 0; i < s->n_run; i++) {
        sched_req_t *r = s->run[i];
        /* in-flight ones fail with their step (hd_sched_step_done); one that holds no worker
           state (admitted, not started, or already set to re-run) has nothing to lose */
        if (r->column == column && !r->in_flight && r->started) {
            req_failed(s, r, why);
        }
    }
    sched_reap(s);
}

void hd_sched_column_up(hd_sched_h s, int column)
{
    if (column >= 0 && column < s->p.n_columns) {
        s->col_down[column] = false;
    }
}

void hd_sched_stats(hd_sched_h s, hd_sched_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->waiting = s->n_wait;
    for (int i = 0; i < s->n_run; i++) {
        if (!s->run[i]->finished) {
            if (s->run[i]->n_sent == 0) {
                out->waiting++;
            } else {
                out->running++;
            }
        }
    }
    out->in_flight = s->in_flight;
    out->prompt_tokens = s->prompt_tokens;
    out->generated_tokens = s->generated_tokens;
}
