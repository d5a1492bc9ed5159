/*
 * test_sample.c - the sampler: greedy picks the argmax (lowest id on ties); temperature
 * draws follow softmax(logits / T); top-k, top-p and min-p never return a filtered id and
 * keep the renormalised proportions; the same seed gives the same draws; bad parameters are
 * refused.
 */
#include "hd_test.h"
#include "hadal/engine.h"
#include "hadal/rng.h"

#include <stdlib.h>

#define V 8
static const float logits[V] = {1.0f, 3.0f, 2.5f, -1.0f, 3.0f, 0.0f, 2.0f, -5.0f};

static void draw(hd_sampling_params_t p, int n, long *counts)
{
    hd_sampler_h s = NULL;
    memset(counts, 0, sizeof(long) * V);
    HD_CHECK_INT_EQ(hd_sampler_create(&p, V, &s), HD_OK);
    for (int i = 0; s && i < n; i++) {
        int32_t t = hd_sampler_sample(s, logits);
        HD_CHECK_TRUE(t >= 0 && t < V);
        counts[t]++;
    }
    hd_sampler_destroy(s);
}

static void softmax(float temp, const int *keep, double *p)
{
    double sum = 0;
    for (int i = 0; i < V; i++) {
        p[i] = keep[i] ? exp(logits[i] / temp) : 0.0;
        sum += p[i];
    }
    for (int i = 0; i < V; i++) {
        p[i] /= sum;
    }
}

static void check_freq(const long *counts, const double *p, int n, const char *what)
{
    for (int i = 0; i < V; i++) {
        double f = (double)counts[i] / n, sd = sqrt(p[i] * (1 - p[i]) / n);
        HD_CHECK_MSG(fabs(f - p[i]) <= 5 * sd + 1e-9, "%s: id %d freq %.4f want %.4f", what, i, f,
                     p[i]);
    }
}

HD_TEST(greedy_and_ties)
{
    long c[V];
    draw((hd_sampling_params_t){.temperature = 0, .top_p = 1}, 50, c);
    HD_CHECK_INT_EQ(c[1], 50); /* ids 1 and 4 tie at 3.0: the lower id wins */
    draw((hd_sampling_params_t){.temperature = 0.7f, .top_p = 1, .top_k = 1, .seed = 3}, 50, c);
    HD_CHECK_INT_EQ(c[1], 50);
}

HD_TEST(temperature_follows_softmax)
{
    long c[V];
    double p[V];
    int all[V] = {1, 1, 1, 1, 1, 1, 1, 1};
    int n = 200000;
    draw((hd_sampling_params_t){.temperature = 0.8f, .top_p = 1, .seed = 11}, n, c);
    softmax(0.8f, all, p);
    check_freq(c, p, n, "T=0.8");
    draw((hd_sampling_params_t){.temperature = 2.0f, .top_p = 1, .seed = 12}, n, c);
    softmax(2.0f, all, p);
    check_freq(c, p, n, "T=2");
}

HD_TEST(top_k_top_p_min_p)
{
    long c[V];
    double p[V];
    int n = 100000;
    int k3[V] = {0, 1, 1, 0, 1, 0, 0, 0}; /* the three largest logits */
    draw((hd_sampling_params_t){.temperature = 1, .top_p = 1, .top_k = 3, .seed = 5}, n, c);
    softmax(1, k3, p);
    check_freq(c, p, n, "top-k 3");
    /* top-p: sorted probabilities 1,4 (0.315 each), 2 (0.191), 6 (0.116): 0.7 keeps 1,4,2 */
    draw((hd_sampling_params_t){.temperature = 1, .top_p = 0.7f, .seed = 6}, n, c);
    check_freq(c, p, n, "top-p 0.7");
    /* min-p 0.5: keep ids with prob >= 0.5 * max: exp(l - 3) >= 0.5 -> l >= 2.307: 1, 4, 2 */
    draw((hd_sampling_params_t){.temperature = 1, .top_p = 1, .min_p = 0.5f, .seed = 7}, n, c);
    check_freq(c, p, n, "min-p 0.5");
}

HD_TEST(seeded_and_refusals)
{
    hd_sampler_h a = NULL, b = NULL;
    hd_sampling_params_t p = {.temperature = 1, .top_p = 0.9f, .seed = 42};
    HD_CHECK_INT_EQ(hd_sampler_create(&p, V, &a), HD_OK);
    HD_CHECK_INT_EQ(hd_sampler_create(&p, V, &b), HD_OK);
    for (int i = 0; a && b && i < 1000; i++) {
        HD_CHECK_INT_EQ(hd_sampler_sample(a, logits), hd_sampler_sample(b, logits));
    }
    hd_sampler_destroy(a);
    hd_sampler_destroy(b);
    hd_sampler_h s = NULL;
    hd_sampling_params_t bad[] = {{.temperature = -1, .top_p = 1}, {.temperature = 1, .top_p = 0},
                                  {.temperature = 1, .top_p = 1.5f},
                                  {.temperature = 1, .top_p = 1, .top_k = -2},
                                  {.temperature = 1, .top_p = 1, .min_p = 2}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        HD_CHECK_INT_EQ(hd_sampler_create(&bad[i], V, &s), HD_ERR_INVALID_PARAM);
    }
}

HD_TEST(skip_resumes_the_draws)
{
    /* a sampler created with skip = k continues exactly where one that drew k samples is */
    hd_sampling_params_t p = {.temperature = 0.8f, .top_p = 0.95f, .seed = 42};
    hd_sampler_h a = NULL, b = NULL;
    HD_CHECK_INT_EQ(hd_sampler_create(&p, V, &a), HD_OK);
    for (int i = 0; i < 37; i++) {
        (void)hd_sampler_sample(a, logits);
    }
    p.skip = hd_sampling_draws(&p, 37);
    HD_CHECK_INT_EQ((int)p.skip, 37);
    HD_CHECK_INT_EQ(hd_sampler_create(&p, V, &b), HD_OK);
    int diff = 0;
    for (int i = 0; i < 200; i++) {
        diff += hd_sampler_sample(a, logits) != hd_sampler_sample(b, logits);
    }
    HD_CHECK_INT_EQ(diff, 0);
    hd_sampler_destroy(a);
    hd_sampler_destroy(b);
    /* greedy and top_k = 1 draw nothing */
    hd_sampling_params_t g = {.temperature = 0.0f, .top_p = 1.0f};
    HD_CHECK_INT_EQ((int)hd_sampling_draws(&g, 37), 0);
    g.temperature = 1.0f;
    g.top_k = 1;
    HD_CHECK_INT_EQ((int)hd_sampling_draws(&g, 37), 0);
}

/* The filters as a plain definition: sort the whole vocabulary (descending probability,
   ties by id), cut by top_k, top_p, min_p, draw over the kept prefix in that order. */
static const float *ref_prob;

static int ref_cmp(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (ref_prob[x] != ref_prob[y]) {
        return ref_prob[x] > ref_prob[y] ? -1 : 1;
    }
    return x < y ? -1 : x > y;
}

static int32_t ref_sample(const hd_sampling_params_t *p, const float *lg, int nv, hd_rng_t *rng,
                          float *prob, int32_t *idx)
{
    int32_t best = 0;
    for (int i = 1; i < nv; i++) {
        best = lg[i] > lg[best] ? i : best;
    }
    float inv_t = 1.0f / p->temperature, mx = lg[best] * inv_t;
    double sum = 0.0;
    for (int i = 0; i < nv; i++) {
        prob[i] = expf(lg[i] * inv_t - mx);
        sum += prob[i];
        idx[i] = i;
    }
    for (int i = 0; i < nv; i++) {
        prob[i] = (float)(prob[i] / sum);
    }
    ref_prob = prob;
    qsort(idx, (size_t)nv, sizeof(int32_t), ref_cmp);
    int n = nv;
    if (p->top_k > 0 && p->top_k < n) {
        n = p->top_k;
    }
    if (p->top_p < 1.0f) {
        double cum = 0.0;
        for (int i = 0; i < n; i++) {
            cum += prob[idx[i]];
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        float floor_p = p->min_p * prob[idx[0]];
        int m = 1;
        while (m < n && prob[idx[m]] >= floor_p) {
            m++;
        }
        n = m;
    }
    double total = 0.0, acc = 0.0;
    for (int i = 0; i < n; i++) {
        total += prob[idx[i]];
    }
    double r = hd_rng_uniform_d(rng) * total;
    for (int i = 0; i < n; i++) {
        acc += prob[idx[i]];
        if (r < acc) {
            return idx[i];
        }
    }
    return idx[n - 1];
}

HD_TEST(filters_equal_a_full_sort)
{
    /* large vocabularies, peaked and flat logits, many ties: the sampler sorts only the
       candidates that can be kept, and must pick exactly what sorting everything picks */
    enum { NV = 20000 };
    static float lg[NV], prob[NV];
    static int32_t idx[NV];
    static const hd_sampling_params_t cases[] = {
        {.temperature = 0.7f, .top_p = 0.9f},
        {.temperature = 1.0f, .top_p = 0.999f},
        {.temperature = 1.3f, .top_p = 1.0f, .top_k = 40},
        {.temperature = 0.9f, .top_p = 0.5f, .top_k = 5},
        {.temperature = 1.0f, .top_p = 1.0f, .min_p = 0.05f},
        {.temperature = 2.0f, .top_p = 0.95f, .min_p = 0.01f, .top_k = 200},
        {.temperature = 1.0f, .top_p = 1.0f, .top_k = NV + 5},
    };
    hd_rng_t lrng;
    hd_rng_seed(&lrng, 5);
    int mismatches = 0, calls = 0;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        for (int shape = 0; shape < 3; shape++) {
            for (int i = 0; i < NV; i++) {
                float u = hd_rng_uniform(&lrng);
                lg[i] = shape == 0 ? 8.0f * (float)hd_rng_normal(&lrng)   /* peaked */
                        : shape == 1 ? 0.1f * u                          /* flat */
                                     : (float)((int)(u * 6.0f));          /* heavy ties */
            }
            hd_sampling_params_t p = cases[c];
            p.seed = 100 + c * 3 + (uint64_t)shape;
            hd_sampler_h s = NULL;
            hd_rng_t rr;
            HD_CHECK_INT_EQ(hd_sampler_create(&p, NV, &s), HD_OK);
            hd_rng_seed(&rr, p.seed);
            for (int k = 0; s != NULL && k < 12; k++) {
                int32_t got = hd_sampler_sample(s, lg), want = ref_sample(&p, lg, NV, &rr, prob, idx);
                mismatches += got != want;
                calls++;
            }
            hd_sampler_destroy(s);
        }
    }
    HD_CHECK_INT_EQ(calls, 7 * 3 * 12);
    HD_CHECK_MSG(mismatches == 0, "%d of %d draws differ from the full sort", mismatches, calls);
}
