/*
 * multiproc_grid.c - real worker processes over loopback TCP: the coordinator runtime
 * (hd_cluster) drives grids of 1x1, 2x1, 1x2, 2x2 and 1x4 `hadal worker` processes with mixed
 * concurrent requests (prompts of 1..100 tokens, chunked prefill, greedy and seeded
 * sampling, a stop id, one cancelled mid-generation). Every request's tokens must equal those
 * of the request run alone on one engine holding the whole model; afterwards every worker has
 * freed every sequence and acknowledged the cancellation.
 */
#include "cluster_testutil.h"
#include "hadal/net.h"
#include "hadal/worker.h"

#define NREQ 9

static ct_req_t reqs[NREQ];

static void run_grid_on(const char *dir, int pp, int ep, const char *transport)
{
    ct_grid_t g = {.pp = pp, .ep = ep, .dir = dir, .transport = transport};
    double t0 = ct_now();
    hd_cluster_h c = ct_cluster(&g);
    if (c == NULL) {
        return;
    }
    double t_up = ct_now() - t0;
    /* the stages partition the layers (the planner's cost-balanced ranges) */
    for (int st = 0, prev = 0; st < pp; st++) {
        int lo, hi;
        hd_cluster_stage_layers(c, st, &lo, &hi);
        HD_CHECK_MSG(lo == prev && hi > lo, "stage %d: layers [%d, %d)", st, lo, hi);
        prev = hi;
        if (st == pp - 1) {
            HD_CHECK_INT_EQ(hi, hd_cluster_config(c)->n_layers);
        }
    }
    for (int i = 0; i < NREQ; i++) {
        HD_CHECK_INT_EQ(ct_submit(c, &reqs[i]), HD_OK);
    }
    /* an extra request, cancelled after its first token */
    ct_req_t extra = {.n_prompt = 20, .max_tokens = 24, .stop = -1}; /* cancelled after one */
    for (int j = 0; j < extra.n_prompt; j++) {
        extra.prompt[j] = 5 + j;
    }
    HD_CHECK_INT_EQ(ct_submit(c, &extra), HD_OK);
    bool cancelled = false;
    double t1 = ct_now();
    while (!cancelled && ct_now() - t1 < 30) {
        pthread_mutex_lock(&ct_lock);
        bool go = extra.n_got >= 1 || extra.n_final > 0;
        pthread_mutex_unlock(&ct_lock);
        if (go) {
            HD_CHECK_INT_EQ(hd_cluster_cancel(c, extra.id), HD_OK);
            cancelled = true;
        }
        usleep(1000);
    }
    /* with several stages, several micro-batches are in flight at once */
    int most_in_flight = 0;
    double t2 = ct_now();
    while (!ct_wait_all(reqs, NREQ, 0) && ct_now() - t2 < 60) {
        hd_cluster_stats_t fs;
        hd_cluster_stats(c, &fs);
        most_in_flight = fs.in_flight > most_in_flight ? fs.in_flight : most_in_flight;
        usleep(200);
    }
    HD_CHECK_MSG(pp == 1 || most_in_flight >= 2, "grid %dx%d: at most %d step in flight", pp,
                 ep, most_in_flight);
    HD_CHECK_MSG(most_in_flight <= pp, "grid %dx%d: %d steps in flight", pp, ep,
                 most_in_flight);
    HD_CHECK_MSG(ct_wait_all(reqs, NREQ, 60), "grid %dx%d: requests did not finish", pp, ep);
    HD_CHECK_TRUE(ct_wait_all(&extra, 1, 10));
    pthread_mutex_lock(&ct_lock);
    for (int i = 0; i < NREQ; i++) {
        ct_req_t *r = &reqs[i];
        HD_CHECK_INT_EQ(r->n_final, 1);
        HD_CHECK_MSG(r->finish == (r->stop >= 0 ? HD_FINISH_STOP : HD_FINISH_LENGTH),
                     "grid %dx%d request %d finish %d (%s)", pp, ep, i, r->finish, r->why);
        HD_CHECK_MSG(r->n_got == r->n_ref &&
                         memcmp(r->got, r->ref, sizeof(int32_t) * (size_t)r->n_ref) == 0,
                     "grid %dx%d request %d: %d tokens vs %d alone (first %d vs %d)", pp, ep, i,
                     r->n_got, r->n_ref, r->n_got ? r->got[0] : -1, r->ref[0]);
    }
    HD_CHECK_INT_EQ(extra.finish, HD_FINISH_CANCELLED);
    HD_CHECK_INT_EQ(extra.n_final, 1);
    pthread_mutex_unlock(&ct_lock);
    /* releases reach every worker; the cancel is acknowledged by all of them */
    HD_CHECK_MSG(ct_wait_stats(c, ct_pred_idle, 10), "grid %dx%d: workers still hold state", pp,
                 ep);
    hd_cluster_stats_t s;
    hd_cluster_stats(c, &s);
    HD_CHECK_INT_EQ(s.worker_failures, 0);
    HD_CHECK_INT_EQ(s.epoch, 1);
    printf("  grid %dx%d (%s): up in %.3f s, %llu steps, %llu tokens, %.3f s total, coordinator "
           "cpu %.3f s\n", pp, ep, transport ? transport : "tcp", t_up, (unsigned long long)s.steps,
           (unsigned long long)s.generated_tokens, ct_now() - t0, s.cpu_seconds);
    hd_cluster_destroy(c);
}

static void run_grid(const char *dir, int pp, int ep)
{
    run_grid_on(dir, pp, ep, NULL);
}

static void prepare(const char *preset, char *dir, size_t len)
{
    HD_CHECK_INT_EQ(tu_checkpoint(preset, 7, dir, len), 0);
    hd_engine_h full = ct_open_full(dir);
    if (full == NULL) {
        return;
    }
    ct_setup(full, reqs, NREQ, true);
    hd_engine_destroy(full);
    /* request 3 stops at its own 4th token: the grid must stop there too */
    reqs[3].stop = reqs[3].ref[3];
    full = ct_open_full(dir);
    ct_reference(full, &reqs[3]);
    hd_engine_destroy(full);
}

HD_TEST(tiny_a_process_grids_equal_single_engine)
{
    char dir[1200];
    prepare("tiny-a", dir, sizeof(dir));
    static const int grids[][2] = {{1, 1}, {2, 1}, {1, 2}, {2, 2}, {1, 4}};
    for (size_t i = 0; i < sizeof(grids) / sizeof(grids[0]); i++) {
        run_grid(dir, grids[i][0], grids[i][1]);
    }
    if (hd_net_transport_usable("ucx")) { /* the same over the UCX data plane */
        run_grid_on(dir, 2, 2, "ucx");
        run_grid_on(dir, 1, 4, "ucx");
    } else {
        printf("  ucx: not in this build (tcp only)\n");
    }
}

HD_TEST(tiny_b_process_grids_equal_single_engine)
{
    char dir[1200];
    prepare("tiny-b", dir, sizeof(dir));
    static const int grids[][2] = {{1, 1}, {2, 1}, {1, 2}, {2, 2}, {1, 4}};
    for (size_t i = 0; i < sizeof(grids) / sizeof(grids[0]); i++) {
        run_grid(dir, grids[i][0], grids[i][1]);
    }
}

/* ---- the API from several threads at once ---- */

#define NTHR 4
#define PER_THR 8

typedef struct {
    hd_cluster_h c;
    int t;
    ct_req_t r[PER_THR];
    bool cancelled[PER_THR];
} thr_t;

static void *submitter(void *arg)
{
    thr_t *x = arg;
    for (int i = 0; i < PER_THR; i++) {
        x->r[i] = reqs[(x->t * PER_THR + i) % NREQ];
        HD_CHECK_INT_EQ(ct_submit(x->c, &x->r[i]), HD_OK);
        if ((x->t + i) % 5 == 0) { /* some are cancelled at once, racing the cluster thread */
            hd_status_t st = hd_cluster_cancel(x->c, x->r[i].id);
            HD_CHECK_TRUE(st == HD_OK || st == HD_ERR_NOT_FOUND);
            x->cancelled[i] = true;
        }
        hd_cluster_stats_t s;
        hd_cluster_stats(x->c, &s);
    }
    return NULL;
}

HD_TEST(api_is_thread_safe)
{
    char dir[1200];
    prepare("tiny-a", dir, sizeof(dir));
    ct_grid_t g = {.pp = 2, .ep = 2, .dir = dir};
    hd_cluster_h c = ct_cluster(&g);
    static thr_t thr[NTHR];
    pthread_t th[NTHR];
    if (c == NULL) {
        return;
    }
    for (int t = 0; t < NTHR; t++) {
        memset(&thr[t], 0, sizeof(thr[t]));
        thr[t].c = c;
        thr[t].t = t;
        pthread_create(&th[t], NULL, submitter, &thr[t]);
    }
    for (int t = 0; t < NTHR; t++) {
        pthread_join(th[t], NULL);
    }
    for (int t = 0; t < NTHR; t++) {
        HD_CHECK_MSG(ct_wait_all(thr[t].r, PER_THR, 120), "thread %d: requests not finished", t);
    }
    pthread_mutex_lock(&ct_lock);
    for (int t = 0; t < NTHR; t++) {
        for (int i = 0; i < PER_THR; i++) {
            ct_req_t *r = &thr[t].r[i];
            HD_CHECK_INT_EQ(r->n_final, 1);
            if (r->finish == HD_FINISH_CANCELLED) {
                HD_CHECK_TRUE(thr[t].cancelled[i]);
                continue;
            }
            HD_CHECK_MSG(r->n_got == r->n_ref &&
                             memcmp(r->got, r->ref, sizeof(int32_t) * (size_t)r->n_ref) == 0,
                         "thread %d request %d: finish %d, %d tokens vs %d", t, i, r->finish,
                         r->n_got, r->n_ref);
        }
    }
    pthread_mutex_unlock(&ct_lock);
    HD_CHECK_MSG(ct_wait_stats(c, ct_pred_idle, 10), "workers still hold state");
    hd_cluster_destroy(c);
}

/* ---- log-probabilities travel with the tokens ---- */

typedef struct {
    ct_req_t r; /* first: the token callback's user is this struct too */
    hd_logprobs_t lp[CT_MAXTOK];
    int n_lp;
} lpreq_t;

static void lp_on_logprobs(void *user, hd_req_id_t id, const hd_logprobs_t *lp)
{
    lpreq_t *x = user;
    (void)id;
    pthread_mutex_lock(&ct_lock);
    if (x->n_lp < CT_MAXTOK) {
        x->lp[x->n_lp++] = *lp;
    }
    pthread_mutex_unlock(&ct_lock);
}

static hd_request_t lp_request(lpreq_t *x, int logprobs)
{
    hd_request_t rq = {.prompt = x->r.prompt, .n_prompt = x->r.n_prompt,
                       .max_tokens = x->r.max_tokens, .sampling = ct_sampling(&x->r),
                       .on_token = ct_on_token, .user = x, .logprobs = logprobs,
                       .on_logprobs = lp_on_logprobs};
    x->r.n_got = x->r.n_final = 0;
    x->n_lp = 0;
    return rq;
}

#define NLP 5

HD_TEST(logprobs_equal_in_process_grid)
{
    char dir[1200], err[512] = "";
    static lpreq_t ref[NLP], got[NLP];
    int32_t tokens[256];
    static hd_logprobs_t lps[256];
    prepare("tiny-a", dir, sizeof(dir));
    /* reference: the scheduler over the in-process 1x1 grid */
    hd_local_grid_h g = NULL;
    hd_local_grid_params_t gp = {.model_path = dir, .pp = 1, .ep = 1, .n_threads = 1,
                                 .err = err, .err_len = sizeof(err)};
    hd_sched_params_t sp = {.n_columns = 1, .max_running = 8, .max_waiting = 32,
                            .step_tokens = 64, .prefill_chunk = 16, .max_context = 256};
    hd_sched_h s = NULL;
    HD_CHECK_MSG(hd_local_grid_create(&gp, &g) == HD_OK, "%s", err);
    HD_CHECK_INT_EQ(hd_sched_create(&sp, &s), HD_OK);
    if (g == NULL || s == NULL) {
        hd_sched_destroy(s);
        hd_local_grid_destroy(g);
        return;
    }
    for (int i = 0; i < NLP; i++) {
        ref[i].r = reqs[i];
        ref[i].r.stop = -1;
        hd_request_t rq = lp_request(&ref[i], 1 + (i % 4)); /* top 0..3 */
        hd_req_id_t id;
        HD_CHECK_INT_EQ(hd_sched_submit(s, &rq, &id), HD_OK);
    }
    for (int n = 0; n < 2000; n++) {
        hd_step_t *st = NULL;
        if (hd_sched_next_step(s, &st) != HD_OK) {
            break;
        }
        HD_CHECK_INT_EQ(hd_local_grid_exec_lp(g, st, tokens, lps), HD_OK);
        HD_CHECK_INT_EQ(hd_sched_step_done_lp(s, st, tokens, lps, NULL), HD_OK);
    }
    hd_sched_destroy(s);
    hd_local_grid_destroy(g);
    /* the same requests on process grids */
    static const int grids[][2] = {{2, 2}, {1, 4}};
    for (int gi = 0; gi < 2; gi++) {
        ct_grid_t cg = {.pp = grids[gi][0], .ep = grids[gi][1], .dir = dir};
        hd_cluster_h c = ct_cluster(&cg);
        if (c == NULL) {
            return;
        }
        for (int i = 0; i < NLP; i++) {
            got[i].r = ref[i].r;
            hd_request_t rq = lp_request(&got[i], 1 + (i % 4));
            HD_CHECK_INT_EQ(hd_cluster_submit(c, &rq, &got[i].r.id), HD_OK);
        }
        for (int i = 0; i < NLP; i++) {
            HD_CHECK_TRUE(ct_wait_all(&got[i].r, 1, 60));
        }
        pthread_mutex_lock(&ct_lock);
        for (int i = 0; i < NLP; i++) {
            HD_CHECK_INT_EQ(got[i].r.n_got, ref[i].r.n_got);
            HD_CHECK_MSG(got[i].n_lp == ref[i].n_lp && ref[i].n_lp == ref[i].r.n_got,
                         "grid %dx%d request %d: %d logprobs vs %d", cg.pp, cg.ep, i,
                         got[i].n_lp, ref[i].n_lp);
            for (int t = 0; t < got[i].n_lp && t < ref[i].n_lp; t++) {
                const hd_logprobs_t *a = &got[i].lp[t], *b = &ref[i].lp[t];
                bool same = a->logprob == b->logprob && a->n_top == b->n_top &&
                            a->n_top == i % 4 &&
                            memcmp(a->top_ids, b->top_ids, sizeof(int32_t) * (size_t)a->n_top) == 0 &&
                            memcmp(a->top_logprobs, b->top_logprobs,
                                   sizeof(float) * (size_t)a->n_top) == 0;
                HD_CHECK_MSG(same, "grid %dx%d request %d token %d: logprob %.9g (top %d) vs "
                             "%.9g (top %d)", cg.pp, cg.ep, i, t, (double)a->logprob, a->n_top,
                             (double)b->logprob, b->n_top);
            }
        }
        pthread_mutex_unlock(&ct_lock);
        hd_cluster_destroy(c);
    }
}
