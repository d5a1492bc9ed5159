/*
 * sample.c - token sampling: greedy, temperature, top-k, top-p (nucleus) and min-p, with a
 * seeded PRNG so the same seed and logits give the same tokens. Filters apply in the order
 * temperature -> top-k -> top-p -> min-p over the softmax probabilities.
 */
#define _GNU_SOURCE /* qsort_r */
#include "hadal/engine.h"
#include "hadal/alloc.h"
#include "hadal/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct hd_sampler {
    hd_sampling_params_t p;
    int vocab;
    hd_rng_t rng;
    float *prob;  /* [vocab] */
    int32_t *idx; /* [vocab] */
};

hd_status_t hd_sampler_create(const hd_sampling_params_t *params, int vocab, hd_sampler_h *s_p)
{
    hd_sampler_h s;
    if (vocab <= 0 || params->temperature < 0.0f || !(params->top_p > 0.0f) ||
        params->top_p > 1.0f || params->top_k < 0 || params->min_p < 0.0f ||
        params->min_p > 1.0f || isnan(params->temperature)) {
        return HD_ERR_INVALID_PARAM;
    }
    s = hd_calloc(1, sizeof(*s), "sampler");
    if (s == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    s->p = *params;
    s->vocab = vocab;
    hd_rng_seed(&s->rng, params->seed);
    for (uint64_t i = 0; i < params->skip; i++) {
        (void)hd_rng_uniform_d(&s->rng);
    }
    s->prob = hd_calloc((size_t)vocab, sizeof(float), "sampler probs");
    s->idx = hd_calloc((size_t)vocab, sizeof(int32_t), "sampler index");
    if (s->prob == NULL || s->idx == NULL) {
        hd_sampler_destroy(s);
        return HD_ERR_NO_MEMORY;
    }
    *s_p = s;
    return HD_OK;
}

void hd_sampler_destroy(hd_sampler_h s)
{
    if (s == NULL) {
        return;
    }
    hd_free(s->prob);
    hd_free(s->idx);
    hd_free(s);
}

/* Descending probability, ties by ascending id; @ctx is the probability array (qsort_r, so
   samplers on different threads never share state). */
static int sample_cmp(const void *a, const void *b, void *ctx)
{
    const float *prob = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    float px = prob[x], py = prob[y];
    if (px != py) {
        return px > py ? -1 : 1;
    }
    return x < y ? -1 : x > y;
}

int32_t hd_sampler_sample(hd_sampler_h s, const float *logits)
{
    int V = s->vocab;
    int32_t best = 0;
    for (int i = 1; i < V; i++) {
        if (logits[i] > logits[best]) {
            best = i;
        }
    }
    if (s->p.temperature == 0.0f || s->p.top_k == 1) {
        return best;
    }
    float inv_t = 1.0f / s->p.temperature, mx = logits[best] * inv_t;
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        s->prob[i] = expf(logits[i] * inv_t - mx);
        sum += s->prob[i];
    }
    for (int i = 0; i < V; i++) {
        s->prob[i] = (float)(s->prob[i] / sum);
    }
    bool filtered = s->p.top_k > 0 || s->p.top_p < 1.0f || s->p.min_p > 0.0f;
    if (!filtered) { /* plain temperature: draw over the ids in order, no sort needed */
        double total = 0.0, acc = 0.0, r;
        for (int i = 0; i < V; i++) {
            total += s->prob[i];
        }
        r = hd_rng_uniform_d(&s->rng) * total;
        for (int i = 0; i < V; i++) {
            acc += s->prob[i];
            if (r < acc) {
                return i;
            }
        }
        return V - 1;
    }
    /*
     * The filters keep a prefix of the ids sorted by descending probability (ties: lower id
     * first). Only that prefix is sorted: the candidates are every id whose probability is at
     * least a threshold, which makes them exactly the first c ids of the full order, and the
     * threshold is lowered until they surely hold the kept prefix (top_k of them, or a
     * probability sum past top_p with a margin over rounding, or all ids above min_p's floor).
     * The result is the same as sorting the whole vocabulary.
     */
    float pmax = s->prob[best], base = s->p.min_p > 0.0f ? s->p.min_p * pmax : 0.0f;
    int V0 = V;
    for (float try_thr = pmax * 0.0625f;; try_thr *= 0.0625f) {
        float thr = try_thr > base ? try_thr : base;
        bool last = thr == base || try_thr < 1e-30f;
        double csum = 0.0;
        int c = 0;
        if (last && base == 0.0f) {
            thr = -1.0f; /* everything */
        }
        for (int i = 0; i < V0; i++) {
            if (s->prob[i] >= thr) {
                s->idx[c++] = i;
                csum += s->prob[i];
            }
        }
        if (last || (s->p.top_k > 0 && c >= s->p.top_k) ||
            (s->p.top_p < 1.0f && csum >= (double)s->p.top_p + 1e-6)) {
            V = c;
            break;
        }
    }
    qsort_r(s->idx, (size_t)V, sizeof(int32_t), sample_cmp, s->prob);
    int n = V;
    if (s->p.top_k > 0 && s->p.top_k < n) {
        n = s->p.top_k;
    }
    if (s->p.top_p < 1.0f) {
        double cum = 0.0;
        for (int i = 0; i < n; i++) {
            cum += s->prob[s->idx[i]];
            if (cum >= s->p.top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (s->p.min_p > 0.0f) {
        float floor_p = s->p.min_p * s->prob[s->idx[0]];
        int m = 1;
        while (m < n && s->prob[s->idx[m]] >= floor_p) {
            m++;
        }
        n = m;
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        total += s->prob[s->idx[i]];
    }
    double r = hd_rng_uniform_d(&s->rng) * total, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += s->prob[s->idx[i]];
        if (r < acc) {
            return s->idx[i];
        }
    }
    return s->idx[n - 1];
}
