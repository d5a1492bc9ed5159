/*
 * test_sample.c - the sampler: greedy picks the argmax (lowest id on ties); temperature
 * draws follow softmax(logits / T); top-k, top-p and min-p never return a filtered id and
 * keep the renormalised proportions; the same seed gives the same draws; bad parameters are
 * refused.
 */
#include "hd_test.h"
#include "hadal/engine.h"

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
