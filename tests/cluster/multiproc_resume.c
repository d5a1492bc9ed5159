/*
 * multiproc_resume.c - with resume_failed, a worker killed (SIGKILL) or hung (SIGSTOP) in the
 * middle of long generations does not end them: once the restarted worker re-registers and
 * the grid is re-placed, each running request is prefilled again with its prompt and the
 * tokens it already produced, its sampler resumes after the draws it made, and the client
 * receives exactly the tokens of an uninterrupted single-engine run (greedy and seeded
 * sampling), with no error and no token twice.
 */
#include "cluster_testutil.h"

#define NLONG 3

static char model_dir[1200];
static ct_req_t longs[NLONG];

static void prepare(void)
{
    static bool done;
    if (done) {
        return;
    }
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, model_dir, sizeof(model_dir)), 0);
    hd_engine_h full = ct_open_full(model_dir);
    if (full == NULL) {
        return;
    }
    for (int i = 0; i < NLONG; i++) {
        ct_req_t *r = &longs[i];
        memset(r, 0, sizeof(*r));
        r->n_prompt = 9 + 5 * i;
        r->max_tokens = 200;
        r->temperature = i == 1 ? 0.9f : 0.0f; /* one sampled request: its sampler resumes */
        r->seed = 77 + (uint64_t)i;
        r->stop = -1;
        for (int j = 0; j < r->n_prompt; j++) {
            r->prompt[j] = 13 + 11 * j + 3 * i;
        }
        ct_reference(full, r);
    }
    hd_engine_destroy(full);
    done = true;
}

static int seen(ct_req_t *r)
{
    pthread_mutex_lock(&ct_lock);
    int n = r->n_got;
    pthread_mutex_unlock(&ct_lock);
    return n;
}

static void resume_after(int pp, int ep, int rank, int sig)
{
    ct_grid_t g = {.pp = pp, .ep = ep, .dir = model_dir, .resume_failed = 2};
    prepare();
    hd_cluster_h c = ct_cluster(&g);
    if (c == NULL) {
        return;
    }
    for (int i = 0; i < NLONG; i++) {
        HD_CHECK_INT_EQ(ct_submit(c, &longs[i]), HD_OK);
    }
    double t0 = ct_now();
    while (seen(&longs[0]) < 5 && ct_now() - t0 < 30) {
        usleep(1000);
    }
    int before = seen(&longs[0]);
    pid_t victim = hd_cluster_worker_pid(c, rank);
    HD_CHECK_TRUE(victim > 0);
    kill(victim, sig);
    HD_CHECK_MSG(ct_wait_all(longs, NLONG, 90), "requests did not finish after the failure");
    hd_cluster_stats_t s;
    hd_cluster_stats(c, &s);
    pthread_mutex_lock(&ct_lock);
    for (int i = 0; i < NLONG; i++) {
        ct_req_t *r = &longs[i];
        HD_CHECK_MSG(r->finish == HD_FINISH_LENGTH && r->n_final == 1,
                     "%dx%d request %d: finish %d (%s), %d finals", pp, ep, i, r->finish, r->why,
                     r->n_final);
        HD_CHECK_MSG(r->n_got == r->n_ref &&
                         memcmp(r->got, r->ref, sizeof(int32_t) * (size_t)r->n_ref) == 0,
                     "%dx%d request %d: %d tokens vs %d uninterrupted", pp, ep, i, r->n_got,
                     r->n_ref);
    }
    pthread_mutex_unlock(&ct_lock);
    /* the failure happened mid-generation and the grid was re-placed */
    HD_CHECK_MSG(before < longs[0].n_ref, "request 0 had finished before the failure");
    HD_CHECK_MSG(s.epoch >= 2 && s.worker_failures >= 1, "epoch %llu failures %llu",
                 (unsigned long long)s.epoch, (unsigned long long)s.worker_failures);
    HD_CHECK_MSG(ct_wait_stats(c, ct_pred_idle, 10), "workers still hold state afterwards");
    printf("  %dx%d, signal %d to rank %d after %d tokens: %d requests re-run, exact tokens "
           "(epoch %llu)\n", pp, ep, sig, rank, before, NLONG, (unsigned long long)s.epoch);
    if (sig == SIGSTOP) {
        kill(victim, SIGCONT);
    }
    hd_cluster_destroy(c);
}

HD_TEST(kill9_mid_generation_resumes_with_exact_tokens)
{
    resume_after(2, 2, 3, SIGKILL);
}

HD_TEST(sigstop_mid_generation_resumes_with_exact_tokens)
{
    resume_after(1, 2, 1, SIGSTOP);
}
