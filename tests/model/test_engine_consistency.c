/*
 * test_engine_consistency.c - the engine agrees with itself (issue "Engine core"):
 * prefill of n then decode equals prefill of n+k; any chunking equals one-shot prefill; a
 * batch equals each sequence alone; thread count changes nothing; same seed, same output;
 * an MTP draft leaves the sequence untouched. All bitwise (the kernels keep a fixed reduction
 * order), in official numerics (packed KV) and plain numerics, on a generated tiny-a and tiny-b.
 */
#include "hd_test.h"
#include "model_testutil.h"
#include "hadal/engine.h"
#include "hadal/rng.h"

#define NTOK 75

static int32_t prompt[NTOK];

static hd_engine_h make_engine(const char *preset, hd_numerics_t num, int threads, bool mtp)
{
    char dir[1200], err[512] = "";
    hd_engine_h e = NULL;
    if (tu_checkpoint(preset, 7, dir, sizeof(dir)) != 0) {
        return NULL;
    }
    hd_engine_params_t p = {.model_path = dir, .numerics = num, .n_threads = threads,
                            .load_mtp = mtp, .err = err, .err_len = sizeof(err)};
    HD_CHECK_MSG(hd_engine_create(&p, &e) == HD_OK, "engine: %s", err);
    if (prompt[0] == 0) {
        hd_rng_t r;
        hd_rng_seed(&r, 99);
        for (int i = 0; i < NTOK; i++) {
            prompt[i] = 2 + (int32_t)hd_rng_below(&r, 1000);
        }
    }
    return e;
}

/* Logits of every position for the prompt fed in the given chunk sizes (0-terminated; the
 * last size repeats until @total tokens are in). */
static float *logits_chunked(hd_engine_h e, const int *chunks, int total)
{
    int V = hd_engine_config(e)->vocab_size;
    float *lg = calloc((size_t)total * V, sizeof(float));
    hd_seq_h s = NULL;
    HD_CHECK_INT_EQ(hd_seq_create(e, &s), HD_OK);
    int off = 0;
    for (int i = 0; off < total; i += chunks[i + 1] != 0) {
        int n = chunks[i] < total - off ? chunks[i] : total - off;
        hd_batch_item_t it = {.seq = s, .tokens = prompt + off, .n_tokens = n,
                              .logits = HD_LOGITS_ALL, .logits_out = lg + (size_t)off * V};
        HD_CHECK_INT_EQ(hd_engine_step(e, &it, 1), HD_OK);
        off += n;
    }
    HD_CHECK_INT_EQ(hd_seq_len(s), total);
    hd_seq_destroy(s);
    return lg;
}

static void check_same(const char *what, const float *a, const float *b, size_t n)
{
    double rel = tu_rel_err(a, b, (long)n);
    HD_CHECK_MSG(memcmp(a, b, n * sizeof(float)) == 0, "%s: not bitwise equal (rel %.3e)", what,
                 rel);
}

static void chunking_cases(const char *preset, hd_numerics_t num)
{
    hd_engine_h e = make_engine(preset, num, 2, false);
    if (e == NULL) {
        return;
    }
    int V = hd_engine_config(e)->vocab_size;
    static const int one[] = {NTOK, 0};
    static const int odd[] = {13, 50, 34, 0};
    static const int ones[] = {1, 0};
    static const int mixed[] = {5, 1, 1, 9, 3, 17, 2, 30, 7, 0};
    static const int decode_after[] = {40, 1, 0};
    float *ref = logits_chunked(e, one, NTOK);
    float *a = logits_chunked(e, odd, NTOK);
    float *b = logits_chunked(e, mixed, NTOK);
    float *c = logits_chunked(e, decode_after, NTOK);
    float *d = logits_chunked(e, ones, 33); /* token-by-token decode from the start */
    check_same("chunks 13+50+12", a, ref, (size_t)NTOK * V);
    check_same("chunks 5+1+1+9+...", b, ref, (size_t)NTOK * V);
    check_same("prefill 40 + 35 decode steps", c, ref, (size_t)NTOK * V);
    check_same("33 single-token steps", d, ref, (size_t)33 * V);
    free(ref);
    free(a);
    free(b);
    free(c);
    free(d);
    hd_engine_destroy(e);
}

HD_TEST(chunking_official_tiny_a)
{
    chunking_cases("tiny-a", HD_NUMERICS_OFFICIAL);
}

HD_TEST(chunking_plain_tiny_a)
{
    chunking_cases("tiny-a", HD_NUMERICS_PLAIN);
}

HD_TEST(chunking_official_tiny_b)
{
    chunking_cases("tiny-b", HD_NUMERICS_OFFICIAL);
}

HD_TEST(batch_equals_alone_and_threads)
{
    hd_engine_h e2 = make_engine("tiny-a", HD_NUMERICS_OFFICIAL, 2, false);
    hd_engine_h e1 = make_engine("tiny-a", HD_NUMERICS_OFFICIAL, 1, false);
    if (e1 == NULL || e2 == NULL) {
        hd_engine_destroy(e1);
        hd_engine_destroy(e2);
        return;
    }
    int V = hd_engine_config(e2)->vocab_size;
    static const int one[] = {NTOK, 0};
    float *ref = logits_chunked(e2, one, NTOK);
    float *ref1 = logits_chunked(e1, one, NTOK);
    check_same("1 thread vs 2 threads", ref1, ref, (size_t)NTOK * V);
    /* three sequences of different lengths: prefill chunks and decode tokens in one step */
    hd_seq_h s[3];
    int lens[3] = {NTOK, 20, 1};
    float *out[3];
    for (int i = 0; i < 3; i++) {
        HD_CHECK_INT_EQ(hd_seq_create(e2, &s[i]), HD_OK);
        out[i] = calloc((size_t)NTOK * V, sizeof(float));
    }
    /* step 1: seq0 gets 30 tokens, seq1 20, seq2 1; step 2: seq0 the rest, seq2 one more */
    hd_batch_item_t b1[3] = {
        {.seq = s[0], .tokens = prompt, .n_tokens = 30, .logits = HD_LOGITS_ALL, .logits_out = out[0]},
        {.seq = s[1], .tokens = prompt, .n_tokens = 20, .logits = HD_LOGITS_ALL, .logits_out = out[1]},
        {.seq = s[2], .tokens = prompt, .n_tokens = 1, .logits = HD_LOGITS_ALL, .logits_out = out[2]},
    };
    HD_CHECK_INT_EQ(hd_engine_step(e2, b1, 3), HD_OK);
    hd_batch_item_t b2[2] = {
        {.seq = s[2], .tokens = prompt + 1, .n_tokens = 1, .logits = HD_LOGITS_ALL,
         .logits_out = out[2] + V},
        {.seq = s[0], .tokens = prompt + 30, .n_tokens = NTOK - 30, .logits = HD_LOGITS_ALL,
         .logits_out = out[0] + (size_t)30 * V},
    };
    HD_CHECK_INT_EQ(hd_engine_step(e2, b2, 2), HD_OK);
    lens[2] = 2;
    for (int i = 0; i < 3; i++) {
        char what[64];
        snprintf(what, sizeof(what), "batched sequence %d", i);
        check_same(what, out[i], ref, (size_t)lens[i] * V);
        hd_seq_destroy(s[i]);
        free(out[i]);
    }
    free(ref);
    free(ref1);
    hd_engine_destroy(e1);
    hd_engine_destroy(e2);
}

static void generate(hd_engine_h e, uint64_t seed, int32_t *toks, int n)
{
    int V = hd_engine_config(e)->vocab_size;
    float *lg = calloc((size_t)V, sizeof(float));
    hd_seq_h s = NULL;
    hd_sampler_h sm = NULL;
    hd_sampling_params_t sp = {.temperature = 1.0f, .top_p = 0.95f, .top_k = 50, .min_p = 0.01f,
                               .seed = seed};
    HD_CHECK_INT_EQ(hd_sampler_create(&sp, V, &sm), HD_OK);
    HD_CHECK_INT_EQ(hd_seq_create(e, &s), HD_OK);
    hd_batch_item_t it = {.seq = s, .tokens = prompt, .n_tokens = 10, .logits = HD_LOGITS_LAST,
                          .logits_out = lg};
    HD_CHECK_INT_EQ(hd_engine_step(e, &it, 1), HD_OK);
    for (int i = 0; i < n; i++) {
        toks[i] = hd_sampler_sample(sm, lg);
        it = (hd_batch_item_t){.seq = s, .tokens = &toks[i], .n_tokens = 1,
                               .logits = HD_LOGITS_LAST, .logits_out = lg};
        HD_CHECK_INT_EQ(hd_engine_step(e, &it, 1), HD_OK);
    }
    hd_seq_destroy(s);
    hd_sampler_destroy(sm);
    free(lg);
}

HD_TEST(same_seed_same_output)
{
    hd_engine_h e = make_engine("tiny-a", HD_NUMERICS_OFFICIAL, 2, false);
    if (e == NULL) {
        return;
    }
    int32_t a[20], b[20], c[20];
    generate(e, 1234, a, 20);
    generate(e, 1234, b, 20);
    generate(e, 99, c, 20);
    HD_CHECK_TRUE(memcmp(a, b, sizeof(a)) == 0);
    HD_CHECK_MSG(memcmp(a, c, sizeof(a)) != 0, "different seeds gave identical samples");
    hd_engine_destroy(e);
}

HD_TEST(mtp_draft_is_pure_and_reproducible)
{
    hd_engine_h e = make_engine("tiny-a", HD_NUMERICS_OFFICIAL, 2, true);
    hd_engine_h e0 = make_engine("tiny-a", HD_NUMERICS_OFFICIAL, 2, false);
    if (e == NULL || e0 == NULL) {
        hd_engine_destroy(e);
        hd_engine_destroy(e0);
        return;
    }
    int V = hd_engine_config(e)->vocab_size;
    float *d1 = calloc((size_t)V, sizeof(float)), *d2 = calloc((size_t)V, sizeof(float));
    float *l1 = calloc((size_t)V, sizeof(float)), *l2 = calloc((size_t)V, sizeof(float));
    hd_seq_h s = NULL, r = NULL, t = NULL;
    HD_CHECK_INT_EQ(hd_seq_create(e, &s), HD_OK);
    HD_CHECK_INT_EQ(hd_seq_create(e0, &r), HD_OK);
    HD_CHECK_INT_EQ(hd_seq_create(e, &t), HD_OK);
    hd_batch_item_t a = {.seq = s, .tokens = prompt, .n_tokens = 30, .logits = HD_LOGITS_LAST,
                         .logits_out = l1};
    hd_batch_item_t b = {.seq = r, .tokens = prompt, .n_tokens = 30, .logits = HD_LOGITS_LAST,
                         .logits_out = l2};
    HD_CHECK_INT_EQ(hd_engine_step(e, &a, 1), HD_OK);
    HD_CHECK_INT_EQ(hd_engine_step(e0, &b, 1), HD_OK);
    check_same("main logits with and without MTP", l1, l2, (size_t)V);
    HD_CHECK_INT_EQ(hd_engine_mtp_draft(e, s, prompt[30], d1), HD_OK);
    HD_CHECK_INT_EQ(hd_engine_mtp_draft(e, s, prompt[30], d2), HD_OK);
    check_same("draft twice", d1, d2, (size_t)V);
    HD_CHECK_INT_EQ(hd_engine_mtp_draft(e0, r, prompt[30], d2), HD_ERR_UNSUPPORTED);
    /* a sequence fed the same tokens in other chunks gives the same draft */
    for (int off = 0; off < 30; off += 7) {
        int n = 30 - off < 7 ? 30 - off : 7;
        hd_batch_item_t c = {.seq = t, .tokens = prompt + off, .n_tokens = n};
        HD_CHECK_INT_EQ(hd_engine_step(e, &c, 1), HD_OK);
    }
    HD_CHECK_INT_EQ(hd_engine_mtp_draft(e, t, prompt[30], d2), HD_OK);
    check_same("draft after other chunking", d1, d2, (size_t)V);
    double mx = 0;
    for (int i = 0; i < V; i++) {
        mx = fabs(d1[i]) > mx ? fabs(d1[i]) : mx;
    }
    HD_CHECK_MSG(mx > 0 && isfinite(mx), "draft logits degenerate");
    /* after drafting, stepping still matches the engine without MTP */
    a = (hd_batch_item_t){.seq = s, .tokens = prompt + 30, .n_tokens = 1, .logits = HD_LOGITS_LAST,
                          .logits_out = l1};
    b = (hd_batch_item_t){.seq = r, .tokens = prompt + 30, .n_tokens = 1, .logits = HD_LOGITS_LAST,
                          .logits_out = l2};
    HD_CHECK_INT_EQ(hd_engine_step(e, &a, 1), HD_OK);
    HD_CHECK_INT_EQ(hd_engine_step(e0, &b, 1), HD_OK);
    check_same("main logits after a draft", l1, l2, (size_t)V);
    hd_seq_destroy(s);
    hd_seq_destroy(r);
    hd_seq_destroy(t);
    free(d1);
    free(d2);
    free(l1);
    free(l2);
    hd_engine_destroy(e);
    hd_engine_destroy(e0);
}

HD_TEST(bad_steps_are_refused)
{
    hd_engine_h e = make_engine("tiny-a", HD_NUMERICS_OFFICIAL, 1, false);
    if (e == NULL) {
        return;
    }
    const hd_model_config_t *c = hd_engine_config(e);
    hd_seq_h s = NULL;
    int32_t badtok = c->vocab_size;
    HD_CHECK_INT_EQ(hd_seq_create(e, &s), HD_OK);
    hd_batch_item_t it = {.seq = s, .tokens = &badtok, .n_tokens = 1};
    HD_CHECK_INT_EQ(hd_engine_step(e, &it, 1), HD_ERR_INVALID_PARAM);
    HD_CHECK_TRUE(strstr(hd_engine_last_error(e), "token id") != NULL);
    it.tokens = prompt;
    it.n_tokens = 0;
    HD_CHECK_INT_EQ(hd_engine_step(e, &it, 1), HD_ERR_INVALID_PARAM);
    hd_batch_item_t two[2] = {{.seq = s, .tokens = prompt, .n_tokens = 1},
                              {.seq = s, .tokens = prompt, .n_tokens = 1}};
    HD_CHECK_INT_EQ(hd_engine_step(e, two, 2), HD_ERR_INVALID_PARAM);
    int32_t *many = calloc((size_t)c->max_pos + 1, sizeof(int32_t));
    it = (hd_batch_item_t){.seq = s, .tokens = many, .n_tokens = c->max_pos + 1};
    HD_CHECK_INT_EQ(hd_engine_step(e, &it, 1), HD_ERR_INVALID_PARAM);
    HD_CHECK_TRUE(strstr(hd_engine_last_error(e), "context") != NULL);
    HD_CHECK_INT_EQ(hd_seq_len(s), 0); /* refused steps change nothing */
    it = (hd_batch_item_t){.seq = s, .tokens = prompt, .n_tokens = 3};
    HD_CHECK_INT_EQ(hd_engine_step(e, &it, 1), HD_OK);
    HD_CHECK_INT_EQ(hd_seq_len(s), 3);
    free(many);
    hd_seq_destroy(s);
    hd_engine_destroy(e);
}

/* The bytes a sequence holds equal the spec 7.1 arithmetic (packed format) exactly. */
#include "hadal/kv_size.h"

static void kv_matches_spec(const char *preset, int64_t len)
{
    hd_engine_h e = make_engine(preset, HD_NUMERICS_OFFICIAL, 2, false);
    if (e == NULL) {
        return;
    }
    const hd_model_config_t *c = hd_engine_config(e);
    int32_t *ids = calloc((size_t)len, sizeof(int32_t));
    for (int64_t i = 0; i < len; i++) {
        ids[i] = prompt[i % NTOK];
    }
    hd_seq_h s = NULL;
    HD_CHECK_INT_EQ(hd_seq_create(e, &s), HD_OK);
    hd_batch_item_t it = {.seq = s, .tokens = ids, .n_tokens = len};
    HD_CHECK_INT_EQ(hd_engine_step(e, &it, 1), HD_OK);
    hd_seq_kv_parts_t p;
    hd_kv_bytes_t want;
    hd_seq_kv_parts(s, &p);
    hd_kv_seq_bytes(c, (uint64_t)len, HD_KV_FMT_PACKED, false, &want);
    printf("  %s L=%lld: window %llu compressed %llu index %llu (spec: %llu %llu %llu)\n", preset,
           (long long)len, (unsigned long long)p.window, (unsigned long long)p.compressed,
           (unsigned long long)p.index_keys, (unsigned long long)want.window,
           (unsigned long long)want.compressed, (unsigned long long)want.index_keys);
    HD_CHECK_INT_EQ(p.window, want.window);
    HD_CHECK_INT_EQ(p.compressed, want.compressed);
    HD_CHECK_INT_EQ(p.index_keys, want.index_keys);
    HD_CHECK_INT_EQ(hd_seq_kv_bytes(s), p.window + p.compressed + p.index_keys + p.state);
    hd_seq_destroy(s);
    free(ids);
    hd_engine_destroy(e);
}

HD_TEST(kv_bytes_match_spec_arithmetic)
{
    kv_matches_spec("tiny-a", 97);
    kv_matches_spec("tiny-b", 700);
}

/*
 * Official numerics is plain numerics plus quantisation simulations. After one layer the
 * residual streams must differ (the simulations run) by about what e4m3's 3-bit mantissa
 * allows (a broken FP8 path shows up as a large or NaN difference). End logits of a random
 * tiny model are not a useful bound: errors compound over layers and flip indexer top-k picks.
 */
static float *hidden_of(hd_engine_h e, int n)
{
    const hd_model_config_t *c = hd_engine_config(e);
    size_t per = (size_t)n * c->hc_mult * c->dim;
    float *h = calloc(per * c->n_layers, sizeof(float));
    hd_seq_h s = NULL;
    HD_CHECK_INT_EQ(hd_seq_create(e, &s), HD_OK);
    hd_batch_item_t it = {.seq = s, .tokens = prompt, .n_tokens = n, .hidden_out = h};
    HD_CHECK_INT_EQ(hd_engine_step(e, &it, 1), HD_OK);
    hd_seq_destroy(s);
    return h;
}

HD_TEST(official_is_a_small_perturbation_of_plain)
{
    hd_engine_h eo = make_engine("tiny-a", HD_NUMERICS_OFFICIAL, 2, false);
    hd_engine_h ep = make_engine("tiny-a", HD_NUMERICS_PLAIN, 2, false);
    if (eo == NULL || ep == NULL) {
        hd_engine_destroy(eo);
        hd_engine_destroy(ep);
        return;
    }
    const hd_model_config_t *c = hd_engine_config(eo);
    long per = (long)NTOK * c->hc_mult * c->dim;
    float *a = hidden_of(eo, NTOK), *b = hidden_of(ep, NTOK);
    for (int l = 0; l < c->n_layers; l++) {
        printf("  layer %d streams: official vs plain rel %.4f\n", l,
               tu_rel_err(a + l * per, b + l * per, per));
    }
    double rel0 = tu_rel_err(a, b, per);
    HD_CHECK_MSG(rel0 > 1e-5, "official numerics did not change layer 0 (rel %.3e)", rel0);
    HD_CHECK_MSG(rel0 < 0.15, "official numerics too far from plain after layer 0 (rel %.3e)",
                 rel0);
    for (long i = 0; i < per * c->n_layers; i++) {
        if (!isfinite(a[i])) {
            HD_CHECK_MSG(0, "non-finite official stream value at %ld", i);
            break;
        }
    }
    free(a);
    free(b);
    hd_engine_destroy(eo);
    hd_engine_destroy(ep);
}
