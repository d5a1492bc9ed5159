/*
 * test_local_grid.c - the scheduler driving real engines on in-process grids (1x1, 2x1, 1x2,
 * 2x2, 1x4): mixed concurrent requests of different lengths, chunked prefill, greedy and
 * seeded sampling, a stop id, a cancellation. Every request's tokens must equal those of the
 * request run alone on one engine holding the whole model.
 */
#include "hd_test.h"
#include "../model/model_testutil.h"
#include "hadal/engine.h"
#include "hadal/sched.h"
#include "hadal/worker.h"

#define NREQ 7
#define MAXTOK 16

typedef struct {
    int n_prompt;
    int max_tokens;
    float temperature;
    uint64_t seed;
    int32_t prompt[96];
    int32_t ref[MAXTOK]; /* single-engine tokens */
    int n_ref;
    int32_t stop;        /* -1: none */
    /* grid run */
    int32_t got[MAXTOK];
    int n_got;
    hd_finish_t finish;
    int n_final;
} req_t;

static req_t reqs[NREQ];

static hd_sampling_params_t req_sampling(const req_t *r)
{
    hd_sampling_params_t sp = {.temperature = r->temperature, .top_p = 1.0f, .top_k = 0,
                               .min_p = 0.0f, .seed = r->seed};
    return sp;
}

/* Tokens of @r alone on @eng (prompt in one step, then decode), honouring its stop id. */
static void reference(hd_engine_h eng, req_t *r)
{
    const hd_model_config_t *c = hd_engine_config(eng);
    hd_seq_h seq = NULL;
    hd_sampler_h smp = NULL;
    hd_sampling_params_t sp = req_sampling(r);
    float *logits = malloc(sizeof(float) * c->vocab_size);
    int32_t tok;
    HD_CHECK_INT_EQ(hd_seq_create(eng, &seq), HD_OK);
    HD_CHECK_INT_EQ(hd_sampler_create(&sp, c->vocab_size, &smp), HD_OK);
    hd_batch_item_t it = {.seq = seq, .tokens = r->prompt, .n_tokens = r->n_prompt,
                          .logits = HD_LOGITS_LAST, .logits_out = logits};
    r->n_ref = 0;
    for (int i = 0; i < r->max_tokens; i++) {
        HD_CHECK_INT_EQ(hd_engine_step(eng, &it, 1), HD_OK);
        tok = hd_sampler_sample(smp, logits);
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

static void on_token(void *user, hd_req_id_t id, int32_t token, hd_finish_t finish,
                     const char *why)
{
    req_t *r = user;
    (void)id;
    (void)why;
    if (token >= 0 && r->n_got < MAXTOK) {
        r->got[r->n_got++] = token;
    }
    if (finish != HD_FINISH_NONE) {
        r->finish = finish;
        r->n_final++;
    }
}

static void setup_requests(hd_engine_h full)
{
    static const int lens[NREQ] = {1, 5, 17, 40, 70, 33, 9};
    static const int maxt[NREQ] = {8, 12, 6, 10, 5, 9, 16};
    const hd_model_config_t *c = hd_engine_config(full);
    for (int i = 0; i < NREQ; i++) {
        req_t *r = &reqs[i];
        memset(r, 0, sizeof(*r));
        r->n_prompt = lens[i];
        r->max_tokens = maxt[i];
        r->temperature = (i % 3 == 1) ? 0.9f : 0.0f;
        r->seed = 1000 + (uint64_t)i;
        r->stop = -1;
        for (int j = 0; j < r->n_prompt; j++) {
            r->prompt[j] = (int32_t)(3 + (i * 131 + j * 71) % (c->vocab_size - 3));
        }
        reference(full, r);
    }
    /* request 3 stops at its own 4th token: the grid must stop there too */
    reqs[3].stop = reqs[3].ref[3];
    reference(full, &reqs[3]);
    HD_CHECK_INT_EQ(reqs[3].n_ref <= 4, 1);
}

static void run_grid(const char *dir, int pp, int ep)
{
    char err[768] = "";
    hd_local_grid_h g = NULL;
    hd_local_grid_params_t gp = {.model_path = dir, .pp = pp, .ep = ep,
                                 .numerics = HD_NUMERICS_OFFICIAL, .n_threads = 1,
                                 .load_mtp = true, .err = err, .err_len = sizeof(err)};
    hd_sched_params_t sp = {.n_columns = ep, .max_running = 4, .max_waiting = 32,
                            .step_tokens = 48, .prefill_chunk = 13, .max_context = 256};
    hd_sched_h s = NULL;
    hd_req_id_t ids[NREQ + 1];
    int32_t tokens[256];
    int steps = 0;
    HD_CHECK_MSG(hd_local_grid_create(&gp, &g) == HD_OK, "grid %dx%d: %s", pp, ep, err);
    HD_CHECK_INT_EQ(hd_sched_create(&sp, &s), HD_OK);
    if (g == NULL || s == NULL) {
        hd_sched_destroy(s);
        hd_local_grid_destroy(g);
        return;
    }
    for (int i = 0; i < NREQ; i++) {
        req_t *r = &reqs[i];
        r->n_got = r->n_final = 0;
        r->finish = HD_FINISH_NONE;
        hd_request_t rq = {.prompt = r->prompt, .n_prompt = r->n_prompt,
                           .max_tokens = r->max_tokens, .stop_ids = r->stop >= 0 ? &r->stop : NULL,
                           .n_stop = r->stop >= 0, .sampling = req_sampling(r),
                           .on_token = on_token, .user = r};
        HD_CHECK_INT_EQ(hd_sched_submit(s, &rq, &ids[i]), HD_OK);
    }
    /* an extra request cancelled after its first token: its sequence must be released */
    req_t extra = {.n_prompt = 20, .max_tokens = MAXTOK, .stop = -1};
    for (int j = 0; j < extra.n_prompt; j++) {
        extra.prompt[j] = 5 + j;
    }
    hd_request_t rq = {.prompt = extra.prompt, .n_prompt = extra.n_prompt,
                       .max_tokens = extra.max_tokens, .sampling = req_sampling(&extra),
                       .on_token = on_token, .user = &extra};
    HD_CHECK_INT_EQ(hd_sched_submit(s, &rq, &ids[NREQ]), HD_OK);
    for (;;) {
        hd_step_t *st = NULL;
        hd_status_t rc = hd_sched_next_step(s, &st);
        if (rc == HD_ERR_NOT_FOUND) {
            break;
        }
        HD_CHECK_INT_EQ(rc, HD_OK);
        HD_CHECK_TRUE(st->n_items <= 256);
        if (rc != HD_OK || st->n_items > 256) {
            break;
        }
        rc = hd_local_grid_exec(g, st, tokens);
        HD_CHECK_MSG(rc == HD_OK, "grid %dx%d step %d: %s", pp, ep, steps, hd_status_string(rc));
        HD_CHECK_INT_EQ(hd_sched_step_done(s, st, tokens, NULL), HD_OK);
        if (extra.n_got == 1 && extra.finish == HD_FINISH_NONE) {
            HD_CHECK_INT_EQ(hd_sched_cancel(s, ids[NREQ]), HD_OK);
        }
        if (rc != HD_OK || ++steps > 2000) {
            break;
        }
    }
    for (int i = 0; i < NREQ; i++) {
        req_t *r = &reqs[i];
        HD_CHECK_INT_EQ(r->n_final, 1);
        HD_CHECK_INT_EQ(r->finish, r->stop >= 0 ? HD_FINISH_STOP : HD_FINISH_LENGTH);
        HD_CHECK_MSG(r->n_got == r->n_ref && memcmp(r->got, r->ref, sizeof(int32_t) * r->n_ref) == 0,
                     "grid %dx%d request %d: %d tokens vs %d alone (first %d vs %d)", pp, ep, i,
                     r->n_got, r->n_ref, r->n_got ? r->got[0] : -1, r->ref[0]);
    }
    HD_CHECK_INT_EQ(extra.finish, HD_FINISH_CANCELLED);
    HD_CHECK_INT_EQ(extra.n_final, 1);
    hd_sched_stats_t ss;
    hd_sched_stats(s, &ss);
    HD_CHECK_INT_EQ(ss.running + ss.waiting + ss.in_flight, 0);
    hd_sched_destroy(s);
    hd_local_grid_destroy(g);
}

static hd_engine_h open_full(const char *dir)
{
    char err[512] = "";
    hd_engine_h e = NULL;
    hd_engine_params_t p = {.model_path = dir, .numerics = HD_NUMERICS_OFFICIAL, .n_threads = 1,
                            .load_mtp = true, .err = err, .err_len = sizeof(err)};
    HD_CHECK_MSG(hd_engine_create(&p, &e) == HD_OK, "%s", err);
    return e;
}

HD_TEST(tiny_a_grids_equal_single_engine)
{
    char dir[1200];
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    hd_engine_h full = open_full(dir);
    if (full == NULL) {
        return;
    }
    setup_requests(full);
    hd_engine_destroy(full);
    static const int grids[][2] = {{1, 1}, {2, 1}, {1, 2}, {2, 2}, {1, 4}};
    for (size_t i = 0; i < sizeof(grids) / sizeof(grids[0]); i++) {
        run_grid(dir, grids[i][0], grids[i][1]);
    }
}

HD_TEST(tiny_b_grids_equal_single_engine)
{
    char dir[1200];
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-b", 7, dir, sizeof(dir)), 0);
    hd_engine_h full = open_full(dir);
    if (full == NULL) {
        return;
    }
    setup_requests(full);
    hd_engine_destroy(full);
    run_grid(dir, 2, 2);
    run_grid(dir, 1, 4);
}

HD_TEST(bad_grids_refused)
{
    char dir[1200], err[512] = "";
    hd_local_grid_h g = NULL;
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    hd_local_grid_params_t gp = {.model_path = dir, .pp = 99, .ep = 1, .err = err,
                                 .err_len = sizeof(err)};
    HD_CHECK_INT_EQ(hd_local_grid_create(&gp, &g), HD_ERR_INVALID_PARAM);
    HD_CHECK_MSG(strstr(err, "layers") != NULL, "error says why: %s", err);
    gp.pp = 1;
    gp.ep = 0;
    HD_CHECK_INT_EQ(hd_local_grid_create(&gp, &g), HD_ERR_INVALID_PARAM);
    gp.ep = 1;
    gp.model_path = "/nonexistent/model";
    HD_CHECK_TRUE(hd_local_grid_create(&gp, &g) != HD_OK);
    HD_CHECK_TRUE(err[0] != '\0');
}
