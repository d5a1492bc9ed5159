/*
 * cluster_testutil.h - shared by the process-grid tests: the built hadal binary, reference
 * tokens from one engine holding the whole model, a cluster of real worker processes, and
 * requests whose callbacks (on the cluster thread) record tokens under a lock. Every wait
 * has a deadline; the cluster kills its workers when destroyed, also after a failed check.
 */
#ifndef HD_CLUSTER_TESTUTIL_H
#define HD_CLUSTER_TESTUTIL_H

#include "hd_test.h"
#include "../model/model_testutil.h"
#include "hadal/cluster.h"
#include "hadal/engine.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CT_MAXTOK 256

typedef struct {
    int n_prompt;
    int max_tokens;
    float temperature;
    uint64_t seed;
    int32_t prompt[128];
    int32_t ref[CT_MAXTOK]; /* single-engine tokens */
    int n_ref;
    int32_t stop;           /* -1: none */
    /* cluster run (written on the cluster thread under ct_lock) */
    hd_req_id_t id;
    int32_t got[CT_MAXTOK];
    int n_got;
    hd_finish_t finish;
    int n_final;
    char why[256];
} ct_req_t;

static pthread_mutex_t ct_lock = PTHREAD_MUTEX_INITIALIZER;

static inline double ct_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* $HD_BUILD_DIR/tools/hadal */
static inline const char *ct_hadal(void)
{
    static char path[1200];
    const char *bd = getenv("HD_BUILD_DIR");
    snprintf(path, sizeof(path), "%s/tools/hadal", bd ? bd : "..");
    return path;
}

static inline hd_sampling_params_t ct_sampling(const ct_req_t *r)
{
    hd_sampling_params_t sp = {.temperature = r->temperature, .top_p = 1.0f, .seed = r->seed};
    return sp;
}

static inline hd_engine_h ct_open_full(const char *dir)
{
    char err[512] = "";
    hd_engine_h e = NULL;
    hd_engine_params_t p = {.model_path = dir, .numerics = HD_NUMERICS_OFFICIAL, .n_threads = 1,
                            .err = err, .err_len = sizeof(err)};
    HD_CHECK_MSG(hd_engine_create(&p, &e) == HD_OK, "%s", err);
    return e;
}

/* Tokens of @r alone on @eng (prompt in one step, then decode), honouring its stop id. */
static inline void ct_reference(hd_engine_h eng, ct_req_t *r)
{
    const hd_model_config_t *c = hd_engine_config(eng);
    hd_seq_h seq = NULL;
    hd_sampler_h smp = NULL;
    hd_sampling_params_t sp = ct_sampling(r);
    float *logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    HD_CHECK_INT_EQ(hd_seq_create(eng, &seq), HD_OK);
    HD_CHECK_INT_EQ(hd_sampler_create(&sp, c->vocab_size, &smp), HD_OK);
    hd_batch_item_t it = {.seq = seq, .tokens = r->prompt, .n_tokens = r->n_prompt,
                          .logits = HD_LOGITS_LAST, .logits_out = logits};
    r->n_ref = 0;
    for (int i = 0; i < r->max_tokens; i++) {
        HD_CHECK_INT_EQ(hd_engine_step(eng, &it, 1), HD_OK);
        int32_t tok = hd_sampler_sample(smp, logits);
        r->ref[r->n_ref++] = tok;
        if (tok == r->stop) {
            break;
        }
        it.tokens = &r->ref[r->n_ref - 1];
        it.n_tokens = 1;
    }
    hd_sampler_destroy(smp);
    hd_seq_destroy(seq);
    free(logits);
}

/* @n requests of mixed prompt lengths and budgets; every third samples with a seed. */
static inline void ct_setup(hd_engine_h full, ct_req_t *reqs, int n, bool sampled)
{
    static const int lens[] = {1, 5, 17, 40, 70, 33, 9, 100, 3, 61, 24, 12};
    static const int maxt[] = {8, 12, 6, 10, 5, 9, 16, 7, 11, 4, 13, 20};
    const hd_model_config_t *c = hd_engine_config(full);
    for (int i = 0; i < n; i++) {
        ct_req_t *r = &reqs[i];
        memset(r, 0, sizeof(*r));
        r->n_prompt = lens[i % 12];
        r->max_tokens = maxt[i % 12];
        r->temperature = sampled && (i % 3 == 1) ? 0.9f : 0.0f;
        r->seed = 1000 + (uint64_t)i;
        r->stop = -1;
        for (int j = 0; j < r->n_prompt; j++) {
            r->prompt[j] = (int32_t)(3 + (i * 131 + j * 71) % (c->vocab_size - 3));
        }
        ct_reference(full, r);
    }
}

static inline void ct_on_token(void *user, hd_req_id_t id, int32_t token, hd_finish_t finish,
                               const char *why)
{
    ct_req_t *r = user;
    (void)id;
    pthread_mutex_lock(&ct_lock);
    if (token >= 0 && r->n_got < CT_MAXTOK) {
        r->got[r->n_got++] = token;
    }
    if (finish != HD_FINISH_NONE) {
        r->finish = finish;
        r->n_final++;
        snprintf(r->why, sizeof(r->why), "%s", why ? why : "");
    }
    pthread_mutex_unlock(&ct_lock);
}

static inline hd_status_t ct_submit(hd_cluster_h c, ct_req_t *r)
{
    pthread_mutex_lock(&ct_lock);
    r->n_got = r->n_final = 0;
    r->finish = HD_FINISH_NONE;
    r->why[0] = '\0';
    pthread_mutex_unlock(&ct_lock);
    hd_request_t rq = {.prompt = r->prompt, .n_prompt = r->n_prompt, .max_tokens = r->max_tokens,
                       .stop_ids = r->stop >= 0 ? &r->stop : NULL, .n_stop = r->stop >= 0,
                       .sampling = ct_sampling(r), .on_token = ct_on_token, .user = r};
    return hd_cluster_submit(c, &rq, &r->id);
}

/* Wait until every request of @reqs has its final callback, or @timeout_s passes. */
static inline bool ct_wait_all(ct_req_t *reqs, int n, double timeout_s)
{
    double t0 = ct_now();
    for (;;) {
        int done = 0;
        pthread_mutex_lock(&ct_lock);
        for (int i = 0; i < n; i++) {
            done += reqs[i].n_final > 0;
        }
        pthread_mutex_unlock(&ct_lock);
        if (done == n) {
            return true;
        }
        if (ct_now() - t0 > timeout_s) {
            return false;
        }
        usleep(5000);
    }
}

typedef struct {
    int pp, ep;
    const char *dir;
    int threads;
    int heartbeat_ms, worker_timeout_ms, step_timeout_ms, placement_timeout_ms;
    bool no_restart;
    const char *transport;
    int resume_failed;      /* hd_cluster_params_t.resume_failed */
} ct_grid_t;

static inline hd_cluster_h ct_cluster(const ct_grid_t *g)
{
    char err[800] = "";
    hd_cluster_h c = NULL;
    hd_cluster_params_t p = {.pp = g->pp, .ep = g->ep, .model_dir = g->dir,
                             .worker_exe = ct_hadal(), .worker_threads = g->threads ? g->threads : 1,
                             .transport = g->transport, .no_restart = g->no_restart,
                             .max_running = 4, .max_waiting = 64, .step_tokens = 48,
                             .prefill_chunk = 13, .max_context = 256,
                             .heartbeat_ms = g->heartbeat_ms,
                             .worker_timeout_ms = g->worker_timeout_ms,
                             .step_timeout_ms = g->step_timeout_ms,
                             .placement_timeout_ms = g->placement_timeout_ms
                                                         ? g->placement_timeout_ms : 60000,
                             .resume_failed = g->resume_failed,
                             .err = err, .err_len = sizeof(err)};
    hd_status_t st = hd_cluster_create(&p, &c);
    HD_CHECK_MSG(st == HD_OK, "cluster %dx%d: %s", g->pp, g->ep, err);
    if (st != HD_OK) {
        return NULL;
    }
    st = hd_cluster_wait_ready(c, 60000);
    HD_CHECK_MSG(st == HD_OK, "cluster %dx%d not ready: %s", g->pp, g->ep, hd_status_string(st));
    if (st != HD_OK) {
        hd_cluster_destroy(c);
        return NULL;
    }
    return c;
}

/* Wait for @pred over the cluster's stats. */
static inline bool ct_wait_stats(hd_cluster_h c, bool (*pred)(const hd_cluster_stats_t *),
                                 double timeout_s)
{
    double t0 = ct_now();
    hd_cluster_stats_t s;
    for (;;) {
        hd_cluster_stats(c, &s);
        if (pred(&s)) {
            return true;
        }
        if (ct_now() - t0 > timeout_s) {
            return false;
        }
        usleep(10000);
    }
}

static inline bool ct_pred_idle(const hd_cluster_stats_t *s)
{
    return s->running == 0 && s->waiting == 0 && s->in_flight == 0 && s->kv_bytes == 0 &&
           s->cancel_acks_pending == 0;
}

static inline bool ct_pred_ready(const hd_cluster_stats_t *s)
{
    return s->ready;
}

#endif /* HD_CLUSTER_TESTUTIL_H */
