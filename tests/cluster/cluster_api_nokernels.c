/*
 * cluster_api_nokernels.c - the coordinator runtime's API without any worker, linked against
 * hd_coordinator alone (no hd_worker, hd_model or hd_kernels: the link itself checks that the
 * coordinator never needs kernels): parameter checks with their messages, requests refused
 * for bad ids, length and a full queue (429), waiting while no worker is there, stats, cancel,
 * and the final callbacks at destroy.
 */
#include "hd_test.h"
#include "../model/model_testutil.h"
#include "hadal/cluster.h"

#include <sys/stat.h>

static int finals, errors, cancelled;

static void on_token(void *user, hd_req_id_t id, int32_t token, hd_finish_t finish,
                     const char *why)
{
    (void)user;
    (void)id;
    (void)token;
    (void)why;
    if (finish != HD_FINISH_NONE) {
        finals++; /* runs on the cluster thread; read only after destroy */
        errors += finish == HD_FINISH_ERROR;
        cancelled += finish == HD_FINISH_CANCELLED;
    }
}

HD_TEST(parameters_are_checked)
{
    char dir[1200], err[800] = "";
    hd_cluster_h c = NULL;
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    hd_cluster_params_t p = {.pp = 1, .ep = 1, .model_dir = "/nonexistent", .err = err,
                             .err_len = sizeof(err)};
    HD_CHECK_TRUE(hd_cluster_create(&p, &c) != HD_OK);
    HD_CHECK_MSG(strstr(err, "/nonexistent") != NULL, "err: %s", err);
    p.model_dir = dir;
    p.pp = 99;
    HD_CHECK_INT_EQ(hd_cluster_create(&p, &c), HD_ERR_INVALID_PARAM);
    HD_CHECK_MSG(strstr(err, "layers") != NULL, "err: %s", err);
    p.pp = 1;
    p.ep = 0;
    HD_CHECK_INT_EQ(hd_cluster_create(&p, &c), HD_ERR_INVALID_PARAM);
    p.ep = 1;
    p.listen_host = "not-an-ip";
    HD_CHECK_INT_EQ(hd_cluster_create(&p, &c), HD_ERR_INVALID_PARAM);
    HD_CHECK_MSG(strstr(err, "not-an-ip") != NULL, "err: %s", err);
}

HD_TEST(requests_wait_for_workers_and_end_at_destroy)
{
    char dir[1200], err[800] = "";
    hd_cluster_h c = NULL;
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    hd_cluster_params_t p = {.pp = 2, .ep = 2, .model_dir = dir, .max_waiting = 3,
                             .max_context = 64, .err = err, .err_len = sizeof(err)};
    HD_CHECK_MSG(hd_cluster_create(&p, &c) == HD_OK, "%s", err);
    if (c == NULL) {
        return;
    }
    HD_CHECK_TRUE(hd_cluster_port(c) > 0);
    HD_CHECK_INT_EQ(hd_cluster_wait_ready(c, 100), HD_ERR_TIMEOUT);
    HD_CHECK_TRUE(!hd_cluster_ready(c));
    int32_t prompt[4] = {1, 2, 3, 4}, bad[2] = {1, 1 << 30};
    hd_req_id_t id[4];
    hd_request_t rq = {.prompt = prompt, .n_prompt = 4, .max_tokens = 8,
                       .sampling = {.top_p = 1.0f}, .on_token = on_token};
    hd_request_t rb = rq;
    rb.prompt = bad;
    rb.n_prompt = 2;
    HD_CHECK_INT_EQ(hd_cluster_submit(c, &rb, &id[0]), HD_ERR_INVALID_PARAM); /* id range */
    rb = rq;
    rb.max_tokens = 100;
    HD_CHECK_INT_EQ(hd_cluster_submit(c, &rb, &id[0]), HD_ERR_INVALID_PARAM); /* > context */
    rb.n_prompt = 0;
    HD_CHECK_INT_EQ(hd_cluster_submit(c, &rb, &id[0]), HD_ERR_INVALID_PARAM);
    for (int i = 0; i < 3; i++) {
        HD_CHECK_INT_EQ(hd_cluster_submit(c, &rq, &id[i]), HD_OK);
    }
    HD_CHECK_INT_EQ(hd_cluster_submit(c, &rq, &id[3]), HD_ERR_NO_MEMORY); /* 429 */
    hd_cluster_stats_t s;
    hd_cluster_stats(c, &s);
    HD_CHECK_INT_EQ(s.waiting, 3);
    HD_CHECK_INT_EQ(s.running, 0);
    HD_CHECK_INT_EQ(s.n_workers, 4);
    HD_CHECK_INT_EQ(s.workers_connected, 0);
    HD_CHECK_TRUE(!s.ready);
    HD_CHECK_INT_EQ(hd_cluster_cancel(c, id[1]), HD_OK);
    HD_CHECK_INT_EQ(hd_cluster_cancel(c, 999999), HD_ERR_NOT_FOUND);
    int lo, hi, prev = 0;
    for (int st = 0; st < 2; st++) {
        hd_cluster_stage_layers(c, st, &lo, &hi);
        HD_CHECK_INT_EQ(lo, prev);
        HD_CHECK_TRUE(hi > lo);
        prev = hi;
    }
    HD_CHECK_INT_EQ(prev, hd_cluster_config(c)->n_layers);
    HD_CHECK_INT_EQ(hd_cluster_worker_pid(c, 0), -1);
    hd_cluster_destroy(c);
    HD_CHECK_INT_EQ(finals, 3);
    HD_CHECK_INT_EQ(cancelled, 1);
    HD_CHECK_INT_EQ(errors, 2);
}

HD_TEST(preset_is_generated_once_into_the_cache)
{
    char cache[1300], probe[1400], err[800] = "";
    const char *bd = getenv("HD_BUILD_DIR");
    hd_cluster_h c = NULL;
    snprintf(cache, sizeof(cache), "%s/testdata/preset-cache", bd ? bd : ".");
    mkdir(cache, 0755);
    hd_cluster_params_t p = {.pp = 1, .ep = 2, .preset = "tiny-b", .cache_dir = cache,
                             .err = err, .err_len = sizeof(err)};
    for (int round = 0; round < 2; round++) { /* the second finds it */
        HD_CHECK_MSG(hd_cluster_create(&p, &c) == HD_OK, "%s", err);
        if (c == NULL) {
            return;
        }
        HD_CHECK_INT_EQ(hd_cluster_config(c)->n_layers > 0, 1);
        hd_cluster_destroy(c);
        c = NULL;
    }
    snprintf(probe, sizeof(probe), "%s/tiny-b-s1/model.safetensors.index.json", cache);
    struct stat sb;
    HD_CHECK_INT_EQ(stat(probe, &sb), 0);
    p.preset = "no-such-preset";
    HD_CHECK_INT_EQ(hd_cluster_create(&p, &c), HD_ERR_INVALID_PARAM);
    HD_CHECK_MSG(strstr(err, "no-such-preset") != NULL, "err: %s", err);
    p.preset = "tiny-b";
    p.cache_dir = NULL;
    HD_CHECK_INT_EQ(hd_cluster_create(&p, &c), HD_ERR_INVALID_PARAM);
}
