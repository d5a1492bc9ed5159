/*
 * multiproc_grid.c - real worker processes over loopback TCP: the coordinator runtime
 * (hd_cluster) drives grids of 1x1, 2x1, 1x2, 2x2 and 1x4 `hadal worker` processes with mixed
 * concurrent requests (prompts of 1..100 tokens, chunked prefill, greedy and seeded
 * sampling, a stop id, one cancelled mid-generation). Every request's tokens must equal those
 * of the request run alone on one engine holding the whole model; afterwards every worker has
 * freed every sequence and acknowledged the cancellation.
 */
#include "cluster_testutil.h"

#define NREQ 9

static ct_req_t reqs[NREQ];

static void run_grid(const char *dir, int pp, int ep)
{
    ct_grid_t g = {.pp = pp, .ep = ep, .dir = dir};
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
    ct_req_t extra = {.n_prompt = 20, .max_tokens = CT_MAXTOK, .stop = -1};
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
    printf("  grid %dx%d: up in %.3f s, %llu steps, %llu tokens, %.3f s total, coordinator cpu "
           "%.3f s\n", pp, ep, t_up, (unsigned long long)s.steps,
           (unsigned long long)s.generated_tokens, ct_now() - t0, s.cpu_seconds);
    hd_cluster_destroy(c);
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
