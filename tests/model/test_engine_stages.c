/*
 * test_engine_stages.c - the engine split the way workers split it: pipeline stages (layer
 * ranges passing residual streams) and expert parallelism (each engine of a stage row binds
 * part of the routed experts; an exchange hook sends each (token, slot) to its owner). Grids
 * 2x1, 1x2 and 2x2 give bitwise the logits (and MTP drafts) of one engine holding everything.
 */
#include "hd_test.h"
#include "model_testutil.h"
#include "hadal/engine.h"

#define PP_MAX 2
#define EP_MAX 2

typedef struct {
    hd_engine_h eng[EP_MAX]; /* the engines of one stage row */
    int ep;                  /* workers in the row */
    int n_experts;
} row_t;

/* owner of expert x in a row of @ep workers: contiguous ranges */
static int owner(const row_t *r, int x)
{
    return x / ((r->n_experts + r->ep - 1) / r->ep);
}

static hd_status_t exchange(void *user, int layer, int64_t T, const float *x, const int32_t *sel,
                            const float *wts, float *slot_out)
{
    row_t *r = user;
    int k = 2, d = 256;
    hd_status_t st = HD_OK;
    for (int w = 0; w < r->ep && st == HD_OK; w++) {
        int64_t n = 0;
        float *rx = malloc(sizeof(float) * T * k * d), *ro = malloc(sizeof(float) * T * k * d);
        int32_t *re = malloc(sizeof(int32_t) * T * k);
        float *rw = malloc(sizeof(float) * T * k);
        int64_t *back = malloc(sizeof(int64_t) * T * k);
        for (int64_t i = 0; i < T * k; i++) { /* "dispatch": the rows this owner computes */
            if (owner(r, sel[i]) == w) {
                memcpy(rx + n * d, x + (i / k) * d, sizeof(float) * d);
                re[n] = sel[i];
                rw[n] = wts[i];
                back[n++] = i;
            }
        }
        if (n > 0) {
            st = hd_engine_moe_local(r->eng[w], layer, n, rx, re, rw, ro);
        }
        for (int64_t j = 0; j < n && st == HD_OK; j++) { /* "combine" */
            memcpy(slot_out + back[j] * d, ro + j * d, sizeof(float) * d);
        }
        free(rx);
        free(ro);
        free(re);
        free(rw);
        free(back);
    }
    return st;
}

static hd_engine_h make(const char *dir, int lo, int hi, const uint8_t *mask, row_t *row)
{
    char err[512] = "";
    hd_engine_h e = NULL;
    hd_engine_params_t p = {.model_path = dir, .numerics = HD_NUMERICS_OFFICIAL, .n_threads = 1,
                            .layer_lo = lo, .layer_hi = hi, .load_mtp = true,
                            .expert_mask = mask, .moe_exchange = row ? exchange : NULL,
                            .moe_user = row, .err = err, .err_len = sizeof(err)};
    HD_CHECK_MSG(hd_engine_create(&p, &e) == HD_OK, "engine [%d,%d): %s", lo, hi, err);
    return e;
}

static void grid(int PP, int EP)
{
    char dir[1200];
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    hd_engine_h full = make(dir, 0, 0, NULL, NULL);
    if (full == NULL) {
        return;
    }
    const hd_model_config_t *c = hd_engine_config(full);
    int L = c->n_layers, E = c->n_routed_experts, V = c->vocab_size;
    long Nd = (long)c->hc_mult * c->dim;
    row_t rows[PP_MAX];
    uint8_t masks[EP_MAX][64];
    for (int s = 0; s < PP; s++) {
        rows[s].ep = EP;
        rows[s].n_experts = E;
        for (int w = 0; w < EP; w++) {
            for (int x = 0; x < E; x++) {
                masks[w][x] = owner(&rows[s], x) == w;
            }
            int lo = s * L / PP, hi = (s + 1) * L / PP;
            rows[s].eng[w] = make(dir, lo, hi, EP > 1 ? masks[w] : NULL, EP > 1 ? &rows[s] : NULL);
            if (rows[s].eng[w] == NULL) {
                return;
            }
        }
    }
    if (PP == 2 && EP == 1) {
        /* each stage binds only what it runs: the layers split, the embedding on both ends
           (the last stage's MTP block embeds drafted tokens), the head on the last only */
        size_t embed = (size_t)V * (size_t)c->dim * 2; /* bf16 */
        HD_CHECK_INT_EQ(hd_engine_weight_bytes(rows[0].eng[0]) +
                            hd_engine_weight_bytes(rows[1].eng[0]),
                        hd_engine_weight_bytes(full) + embed);
        HD_CHECK_TRUE(hd_engine_weight_bytes(rows[0].eng[0]) <
                      hd_engine_weight_bytes(full) - embed);
    }
    int32_t ids[40];
    for (int i = 0; i < 40; i++) {
        ids[i] = 2 + (i * 53) % 1000;
    }
    /* the sequence lives in column 0 of every stage */
    hd_seq_h fs = NULL, ss[PP_MAX];
    HD_CHECK_INT_EQ(hd_seq_create(full, &fs), HD_OK);
    for (int s = 0; s < PP; s++) {
        HD_CHECK_INT_EQ(hd_seq_create(rows[s].eng[0], &ss[s]), HD_OK);
    }
    float *a = malloc(sizeof(float) * 40 * V), *b = malloc(sizeof(float) * 40 * V);
    float *st_in = malloc(sizeof(float) * 40 * Nd), *st_out = malloc(sizeof(float) * 40 * Nd);
    int chunks[] = {17, 11, 1, 1, 10};
    int off = 0;
    for (int ci = 0; ci < 5; ci++) {
        int n = chunks[ci];
        hd_batch_item_t fi = {.seq = fs, .tokens = ids + off, .n_tokens = n,
                              .logits = HD_LOGITS_ALL, .logits_out = a + (long)off * V};
        HD_CHECK_INT_EQ(hd_engine_step(full, &fi, 1), HD_OK);
        for (int s = 0; s < PP; s++) {
            bool last = s == PP - 1;
            hd_batch_item_t it = {.seq = ss[s], .tokens = ids + off, .n_tokens = n,
                                  .logits = last ? HD_LOGITS_ALL : HD_LOGITS_NONE,
                                  .logits_out = last ? b + (long)off * V : NULL,
                                  .streams_in = s > 0 ? st_in : NULL,
                                  .streams_out = last ? NULL : st_out};
            HD_CHECK_INT_EQ(hd_engine_step(rows[s].eng[0], &it, 1), HD_OK);
            memcpy(st_in, st_out, sizeof(float) * n * Nd); /* "send down the column" */
        }
        off += n;
    }
    HD_CHECK_MSG(memcmp(a, b, sizeof(float) * 40 * V) == 0, "grid %dx%d: logits differ (rel %.3e)",
                 PP, EP, tu_rel_err(b, a, 40L * V));
    float *da = malloc(sizeof(float) * V), *db = malloc(sizeof(float) * V);
    HD_CHECK_INT_EQ(hd_engine_mtp_draft(full, fs, 77, da), HD_OK);
    HD_CHECK_INT_EQ(hd_engine_mtp_draft(rows[PP - 1].eng[0], ss[PP - 1], 77, db), HD_OK);
    HD_CHECK_MSG(memcmp(da, db, sizeof(float) * V) == 0, "grid %dx%d: MTP drafts differ", PP, EP);
    printf("  grid %dx%d: 40 positions and the MTP draft bitwise equal to one engine\n", PP, EP);
    free(da);
    free(db);
    free(a);
    free(b);
    free(st_in);
    free(st_out);
    hd_seq_destroy(fs);
    for (int s = 0; s < PP; s++) {
        hd_seq_destroy(ss[s]);
        for (int w = 0; w < EP; w++) {
            hd_engine_destroy(rows[s].eng[w]);
        }
    }
    hd_engine_destroy(full);
}

HD_TEST(grid_2x1)
{
    grid(2, 1);
}

HD_TEST(grid_1x2)
{
    grid(1, 2);
}

HD_TEST(grid_2x2)
{
    grid(2, 2);
}

HD_TEST(stage_steps_check_their_inputs)
{
    char dir[1200], err[512];
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    hd_engine_h s1 = make(dir, 3, 6, NULL, NULL), s0 = make(dir, 0, 3, NULL, NULL);
    uint8_t half[8] = {1, 1, 1, 1, 0, 0, 0, 0};
    hd_engine_h part = make(dir, 0, 0, half, NULL);
    if (!s0 || !s1 || !part) {
        return;
    }
    hd_seq_h a = NULL, b = NULL, c = NULL;
    int32_t ids[20];
    float lg[1024];
    for (int i = 0; i < 20; i++) {
        ids[i] = 100 + i;
    }
    HD_CHECK_INT_EQ(hd_seq_create(s1, &a), HD_OK);
    HD_CHECK_INT_EQ(hd_seq_create(s0, &b), HD_OK);
    HD_CHECK_INT_EQ(hd_seq_create(part, &c), HD_OK);
    hd_batch_item_t it = {.seq = a, .tokens = ids, .n_tokens = 3, .logits = HD_LOGITS_LAST,
                          .logits_out = lg};
    HD_CHECK_INT_EQ(hd_engine_step(s1, &it, 1), HD_ERR_INVALID_PARAM); /* no streams_in */
    it.seq = b;
    HD_CHECK_INT_EQ(hd_engine_step(s0, &it, 1), HD_ERR_INVALID_PARAM); /* logits mid-pipeline */
    /* an engine with half the experts and no exchange hook cannot run a routed layer */
    it = (hd_batch_item_t){.seq = c, .tokens = ids, .n_tokens = 20, .logits = HD_LOGITS_LAST,
                           .logits_out = lg};
    HD_CHECK_INT_EQ(hd_engine_step(part, &it, 1), HD_ERR_UNSUPPORTED);
    HD_CHECK_TRUE(strstr(hd_engine_last_error(part), "not loaded") != NULL);
    hd_engine_params_t bad = {.model_path = dir, .layer_lo = 4, .layer_hi = 2, .err = err,
                              .err_len = sizeof(err)};
    hd_engine_h x = NULL;
    HD_CHECK_TRUE(hd_engine_create(&bad, &x) != HD_OK);
    hd_seq_destroy(a);
    hd_seq_destroy(b);
    hd_seq_destroy(c);
    hd_engine_destroy(s0);
    hd_engine_destroy(s1);
    hd_engine_destroy(part);
}
