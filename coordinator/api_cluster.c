/*
 * api_cluster.c - the process cluster (hadal/cluster.h) behind the serving layer's backend
 * interface (hadal/api.h): requests go to hd_cluster_submit, whose per-token callbacks (on
 * the cluster's thread) are forwarded as they are, each token with the log-probabilities the
 * cluster delivered just before it. Forced ids (the replay test mode) are not supported here;
 * `hadal serve --replay` uses the in-process backend.
 */
#include "hadal/api.h"
#include "hadal/alloc.h"
#include "hadal/cluster.h"

typedef struct {
    hd_cluster_h c;
    int max_context, max_waiting, kv_capacity, vocab;
} acl_t;

typedef struct {
    hd_api_token_func_t fn;
    void *user;
    bool has_lp;       /* lp belongs to the next token */
    hd_logprobs_t lp;
} acl_req_t;

static void acl_on_logprobs(void *user, hd_req_id_t id, const hd_logprobs_t *lp)
{
    acl_req_t *r = user;
    (void)id;
    r->lp = *lp;
    r->has_lp = true;
}

static void acl_on_token(void *user, hd_req_id_t id, int32_t token, hd_finish_t finish,
                         const char *why)
{
    acl_req_t *r = user;
    (void)id;
    if (token >= 0) {
        r->fn(r->user, token, r->has_lp ? &r->lp : NULL, HD_FINISH_NONE, NULL);
        r->has_lp = false;
    }
    if (finish != HD_FINISH_NONE) {
        r->fn(r->user, -1, NULL, finish, why);
        hd_free(r);
    }
}

static hd_status_t acl_submit(void *ctx, const hd_api_gen_t *g, uint64_t *id_p)
{
    acl_t *a = ctx;
    if (g->n_forced > 0) {
        return HD_ERR_UNSUPPORTED;
    }
    acl_req_t *r = hd_calloc(1, sizeof(*r), "api cluster request");
    if (r == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    r->fn = g->on_token;
    r->user = g->user;
    hd_request_t rq = {.prompt = g->prompt, .n_prompt = g->n_prompt, .max_tokens = g->max_tokens,
                       .stop_ids = g->stop_ids, .n_stop = g->n_stop, .sampling = g->sampling,
                       .on_token = acl_on_token, .user = r, .logprobs = g->logprobs,
                       .on_logprobs = g->logprobs > 0 ? acl_on_logprobs : NULL};
    hd_req_id_t id;
    hd_status_t st = hd_cluster_submit(a->c, &rq, &id);
    if (st != HD_OK) {
        hd_free(r);
        return st;
    }
    *id_p = id;
    return HD_OK;
}

static hd_status_t acl_cancel(void *ctx, uint64_t id)
{
    acl_t *a = ctx;
    return hd_cluster_cancel(a->c, id);
}

static void acl_stats(void *ctx, hd_api_stats_t *out)
{
    acl_t *a = ctx;
    hd_cluster_stats_t s;
    hd_cluster_stats(a->c, &s);
    *out = (hd_api_stats_t){.running = s.running, .waiting = s.waiting,
                            .prompt_tokens = s.prompt_tokens,
                            .generated_tokens = s.generated_tokens,
                            .kv_seqs = s.running, .kv_capacity = a->kv_capacity,
                            .kv_bytes = s.kv_bytes, .steps = s.steps};
}

static bool acl_ready(void *ctx)
{
    acl_t *a = ctx;
    return hd_cluster_ready(a->c);
}

static void acl_limits(void *ctx, hd_api_limits_t *out)
{
    acl_t *a = ctx;
    out->max_context = a->max_context;
    out->vocab_size = a->vocab;
    out->max_waiting = a->max_waiting;
}

static const hd_api_backend_ops_t acl_ops = {
    .name = "cluster",
    .submit = acl_submit,
    .cancel = acl_cancel,
    .stats = acl_stats,
    .ready = acl_ready,
    .limits = acl_limits,
};

hd_status_t hd_api_cluster_create(struct hd_cluster *cluster, int max_context, int max_waiting,
                                  int kv_capacity, hd_api_backend_t *backend_p)
{
    acl_t *a = hd_calloc(1, sizeof(*a), "api cluster backend");
    if (a == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    a->c = cluster;
    a->max_context = max_context;
    a->max_waiting = max_waiting;
    a->kv_capacity = kv_capacity;
    a->vocab = hd_cluster_config(cluster)->vocab_size;
    *backend_p = (hd_api_backend_t){.ops = &acl_ops, .ctx = a};
    return HD_OK;
}

void hd_api_cluster_destroy(hd_api_backend_t *backend)
{
    if (backend != NULL && backend->ops == &acl_ops) {
        hd_free(backend->ctx);
        backend->ctx = NULL;
    }
}
