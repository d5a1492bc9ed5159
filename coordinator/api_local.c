/*
 * api_local.c - the in-process generation backend: an hd_sched driven by one thread of its
 * own that runs each step through an executor function (hd_local_grid_exec in `hadal serve`,
 * nothing at all in the replay test mode). Submissions and cancellations from other threads
 * take the same mutex as the driver, so the scheduler stays single-threaded in effect.
 * The driver tracks which sequences workers hold (created by a first item, freed by a
 * release), which is what /metrics reports as KV usage.
 */
#include "hadal/api.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    hd_req_id_t id;
    int32_t *forced;            /* replay ids (owned), or NULL */
    int n_forced;
    int n_out;                  /* tokens sampled so far */
    int32_t stop0;              /* first stop id, or -1 */
    const hd_logprobs_t *lp;    /* of the token being delivered (set by local_on_logprobs) */
    hd_api_token_func_t on_token;
    void *user;
} lreq_t;

struct hd_api_local {
    hd_api_local_params_t p;
    hd_sched_h sched;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool stop;
    lreq_t **reqs;              /* live requests (final callback not yet delivered) */
    int n_reqs, cap_reqs;
    hd_req_id_t *held;          /* sequences the workers hold */
    int n_held, cap_held;
    uint64_t steps;
    int32_t *tokens;            /* [max items of a step] */
    hd_logprobs_t *lps;
    int cap_items;
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
    void *p = hd_realloc(*arr, (size_t)nc * elem, "api local array");
    if (p == NULL) {
        return -1;
    }
    *arr = p;
    *cap = nc;
    return 0;
}

static lreq_t *local_req_find(hd_api_local_h l, hd_req_id_t id, int *idx_p)
{
    for (int i = 0; i < l->n_reqs; i++) {
        if (l->reqs[i]->id == id) {
            if (idx_p != NULL) {
                *idx_p = i;
            }
            return l->reqs[i];
        }
    }
    return NULL;
}

/* Scheduler callback (under l->mu): forward, and forget the request after its final call. */
static void local_on_token(void *user, hd_req_id_t id, int32_t token, hd_finish_t finish,
                           const char *why)
{
    lreq_t *r = user;
    (void)id;
    if (token >= 0) {
        r->on_token(r->user, token, r->lp, HD_FINISH_NONE, NULL);
        r->lp = NULL;
    }
    if (finish == HD_FINISH_NONE) {
        return;
    }
    r->on_token(r->user, -1, NULL, finish, why);
    r->on_token = NULL;
    /* the owner removes it from l->reqs (see local_reap) */
}

static void local_on_logprobs(void *user, hd_req_id_t id, const hd_logprobs_t *lp)
{
    lreq_t *r = user;
    (void)id;
    r->lp = lp;
}

static void local_reap(hd_api_local_h l)
{
    int j = 0;
    for (int i = 0; i < l->n_reqs; i++) {
        lreq_t *r = l->reqs[i];
        if (r->on_token == NULL) {
            hd_free(r->forced);
            hd_free(r);
            continue;
        }
        l->reqs[j++] = r;
    }
    l->n_reqs = j;
}

static void local_track(hd_api_local_h l, const hd_step_t *st)
{
    for (int i = 0; i < st->n_release; i++) {
        for (int k = 0; k < l->n_held; k++) {
            if (l->held[k] == st->release[i]) {
                l->held[k] = l->held[--l->n_held];
                break;
            }
        }
    }
    for (int i = 0; i < st->n_items; i++) {
        if (st->items[i].first && grow((void **)&l->held, &l->cap_held, l->n_held + 1,
                                       sizeof(*l->held)) == 0) {
            l->held[l->n_held++] = st->items[i].id;
        }
    }
}

static void *local_main(void *arg)
{
    hd_api_local_h l = arg;
    int32_t *tokens = l->tokens;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        hd_step_t *st = NULL;
        hd_status_t rc = hd_sched_next_step(l->sched, &st);
        if (rc == HD_ERR_NOT_FOUND) {
            local_reap(l);
            pthread_cond_wait(&l->cv, &l->mu);
            continue;
        }
        if (rc != HD_OK) {
            hd_error(HD_SUBSYS_API, "scheduler: %s", hd_status_string(rc));
            pthread_cond_wait(&l->cv, &l->mu);
            continue;
        }
        local_track(l, st);
        hd_assert(st->n_items <= l->cap_items);
        pthread_mutex_unlock(&l->mu);
        for (int i = 0; i < st->n_items; i++) {
            tokens[i] = 0;
        }
        rc = l->p.exec != NULL ? l->p.exec(l->p.exec_user, st, tokens, l->lps) : HD_OK;
        if (l->p.step_delay_us > 0) {
            usleep((useconds_t)l->p.step_delay_us);
        }
        pthread_mutex_lock(&l->mu);
        const char *why = NULL;
        for (int i = 0; i < st->n_items; i++) {
            if (rc != HD_OK) {
                tokens[i] = HD_TOKEN_FAILED;
                why = "executor failed; retry";
                continue;
            }
            if (!st->items[i].sample) {
                continue;
            }
            lreq_t *r = local_req_find(l, st->items[i].id, NULL);
            if (r == NULL) {
                continue;
            }
            if (r->forced != NULL || l->p.exec == NULL) {
                tokens[i] = r->n_out < r->n_forced ? r->forced[r->n_out]
                                                   : (r->stop0 >= 0 ? r->stop0 : 0);
            }
            r->n_out++;
        }
        if (rc != HD_OK) {
            hd_error(HD_SUBSYS_API, "step %llu: %s", (unsigned long long)st->step_id,
                     hd_status_string(rc));
        }
        hd_sched_step_done_lp(l->sched, st, tokens, l->p.exec != NULL ? l->lps : NULL, why);
        l->steps++;
        local_reap(l);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---- backend operations ---- */

static hd_status_t local_submit(void *ctx, const hd_api_gen_t *g, uint64_t *id_p)
{
    hd_api_local_h l = ctx;
    hd_status_t st;
    lreq_t *r = hd_calloc(1, sizeof(*r), "api local request");
    if (r == NULL || g->on_token == NULL) {
        hd_free(r);
        return r == NULL ? HD_ERR_NO_MEMORY : HD_ERR_INVALID_PARAM;
    }
    if (g->logprobs > 0 && l->p.exec == NULL) {
        hd_free(r);
        return HD_ERR_UNSUPPORTED; /* replayed ids have no model behind them */
    }
    if (g->n_forced > 0) {
        r->forced = hd_malloc((size_t)g->n_forced * sizeof(int32_t), "api forced ids");
        if (r->forced == NULL) {
            hd_free(r);
            return HD_ERR_NO_MEMORY;
        }
        memcpy(r->forced, g->forced, (size_t)g->n_forced * sizeof(int32_t));
        r->n_forced = g->n_forced;
    }
    r->stop0 = g->n_stop > 0 ? g->stop_ids[0] : -1;
    r->on_token = g->on_token;
    r->user = g->user;
    hd_request_t rq = {.prompt = g->prompt, .n_prompt = g->n_prompt, .max_tokens = g->max_tokens,
                       .stop_ids = g->stop_ids, .n_stop = g->n_stop, .sampling = g->sampling,
                       .on_token = local_on_token, .user = r, .logprobs = g->logprobs,
                       .on_logprobs = local_on_logprobs};
    pthread_mutex_lock(&l->mu);
    if (grow((void **)&l->reqs, &l->cap_reqs, l->n_reqs + 1, sizeof(*l->reqs)) != 0) {
        st = HD_ERR_NO_MEMORY;
        goto err_unlock;
    }
    HD_CHECK_GOTO(hd_sched_submit(l->sched, &rq, &r->id), st, err_unlock);
    l->reqs[l->n_reqs++] = r;
    *id_p = r->id;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return HD_OK;

err_unlock:
    pthread_mutex_unlock(&l->mu);
    hd_free(r->forced);
    hd_free(r);
    return st;
}

static hd_status_t local_cancel(void *ctx, uint64_t id)
{
    hd_api_local_h l = ctx;
    pthread_mutex_lock(&l->mu);
    hd_status_t st = hd_sched_cancel(l->sched, id);
    /* the release goes to workers with the next step */
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return st;
}

static void local_stats(void *ctx, hd_api_stats_t *out)
{
    hd_api_local_h l = ctx;
    hd_sched_stats_t ss;
    pthread_mutex_lock(&l->mu);
    hd_sched_stats(l->sched, &ss);
    memset(out, 0, sizeof(*out));
    out->running = ss.running;
    out->waiting = ss.waiting;
    out->prompt_tokens = ss.prompt_tokens;
    out->generated_tokens = ss.generated_tokens;
    out->kv_seqs = l->n_held;
    out->kv_capacity = l->p.sched.n_columns * l->p.sched.max_running;
    out->steps = l->steps;
    pthread_mutex_unlock(&l->mu);
}

static bool local_ready(void *ctx)
{
    hd_api_local_h l = ctx;
    return !l->stop;
}

static void local_limits(void *ctx, hd_api_limits_t *out)
{
    hd_api_local_h l = ctx;
    out->max_context = l->p.sched.max_context;
    out->vocab_size = l->p.vocab_size;
    out->max_waiting = l->p.sched.max_waiting;
}

static const hd_api_backend_ops_t local_ops = {
    .name = "local",
    .submit = local_submit,
    .cancel = local_cancel,
    .stats = local_stats,
    .ready = local_ready,
    .limits = local_limits,
};

hd_api_backend_t hd_api_local_backend(hd_api_local_h l)
{
    return (hd_api_backend_t){.ops = &local_ops, .ctx = l};
}

hd_status_t hd_api_local_create(const hd_api_local_params_t *params, hd_api_local_h *local_p)
{
    hd_status_t st;
    hd_api_local_h l = hd_calloc(1, sizeof(*l), "api local backend");
    if (l == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    l->p = *params;
    /* a step holds at most one item per running sequence */
    l->cap_items = l->p.sched.n_columns * l->p.sched.max_running + 1;
    l->tokens = hd_calloc((size_t)l->cap_items, sizeof(*l->tokens), "api local tokens");
    l->lps = hd_calloc((size_t)l->cap_items, sizeof(*l->lps), "api local logprobs");
    if (l->tokens == NULL || l->lps == NULL) {
        st = HD_ERR_NO_MEMORY;
        goto err_free;
    }
    HD_CHECK_GOTO(hd_sched_create(&l->p.sched, &l->sched), st, err_free);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->thread, NULL, local_main, l) != 0) {
        hd_error(HD_SUBSYS_API, "cannot start the backend thread: %m");
        st = HD_ERR_NO_MEMORY;
        goto err_sched;
    }
    *local_p = l;
    return HD_OK;

err_sched:
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    hd_sched_destroy(l->sched);
err_free:
    hd_free(l->tokens);
    hd_free(l->lps);
    hd_free(l);
    return st;
}

void hd_api_local_destroy(hd_api_local_h l)
{
    if (l == NULL) {
        return;
    }
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    for (int i = 0; i < l->n_reqs; i++) {
        lreq_t *r = l->reqs[i];
        if (r->on_token != NULL) {
            r->on_token(r->user, -1, NULL, HD_FINISH_ERROR, "server shutting down");
        }
        hd_free(r->forced);
        hd_free(r);
    }
    hd_free(l->reqs);
    hd_free(l->held);
    hd_free(l->tokens);
    hd_free(l->lps);
    hd_sched_destroy(l->sched);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    hd_free(l);
}
