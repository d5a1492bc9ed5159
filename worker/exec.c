/*
 * exec.c - a worker's share of a step: the items pinned to its column go through its engine
 * in one batched hd_engine_step; sequences are created on their first tokens and freed when
 * the coordinator releases them; the last stage samples with one seeded sampler per sequence.
 */
#include "hadal/worker.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <math.h>
#include <string.h>

typedef struct {
    hd_req_id_t id;
    hd_seq_h seq;
    hd_sampler_h smp; /* last stage only */
} wseq_t;

struct hd_wexec {
    hd_engine_h eng;
    int stage, column;
    wseq_t *seqs;
    int n_seqs, cap_seqs;
};

hd_status_t hd_wexec_create(hd_engine_h eng, int stage, int column, hd_wexec_h *w_p)
{
    hd_wexec_h w = hd_calloc(1, sizeof(*w), "worker executor");
    if (w == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    w->eng = eng;
    w->stage = stage;
    w->column = column;
    *w_p = w;
    return HD_OK;
}

static void wseq_drop(wseq_t *q)
{
    hd_seq_destroy(q->seq);
    hd_sampler_destroy(q->smp);
}

void hd_wexec_destroy(hd_wexec_h w)
{
    if (w == NULL) {
        return;
    }
    for (int i = 0; i < w->n_seqs; i++) {
        wseq_drop(&w->seqs[i]);
    }
    hd_free(w->seqs);
    hd_free(w);
}

int hd_wexec_n_seqs(hd_wexec_h w)
{
    return w->n_seqs;
}

static int hd_wexec_grow(hd_wexec_h w)
{
    if (w->n_seqs < w->cap_seqs) {
        return 0;
    }
    int nc = w->cap_seqs ? w->cap_seqs * 2 : 16;
    wseq_t *p = hd_realloc(w->seqs, (size_t)nc * sizeof(*p), "worker sequences");
    if (p == NULL) {
        return -1;
    }
    w->seqs = p;
    w->cap_seqs = nc;
    return 0;
}

static wseq_t *wexec_find(hd_wexec_h w, hd_req_id_t id)
{
    for (int i = 0; i < w->n_seqs; i++) {
        if (w->seqs[i].id == id) {
            return &w->seqs[i];
        }
    }
    return NULL;
}

int64_t hd_wexec_step_tokens(hd_wexec_h w, const hd_step_t *step)
{
    int64_t n = 0;
    for (int i = 0; i < step->n_items; i++) {
        if (step->items[i].column == w->column) {
            n += step->items[i].n_tokens;
        }
    }
    return n;
}

/* Log-softmax of @logits at @tok, and the @k most likely ids (k <= HD_LOGPROBS_MAX). */
static void wexec_logprobs(const float *logits, int vocab, int32_t tok, int k, hd_logprobs_t *lp)
{
    float mx = -INFINITY;
    double sum = 0.0;
    for (int v = 0; v < vocab; v++) {
        mx = logits[v] > mx ? logits[v] : mx;
    }
    for (int v = 0; v < vocab; v++) {
        sum += exp((double)(logits[v] - mx));
    }
    float lse = mx + (float)log(sum);
    k = k < 0 ? 0 : (k > HD_LOGPROBS_MAX ? HD_LOGPROBS_MAX : k);
    lp->logprob = logits[tok] - lse;
    lp->n_top = 0;
    for (int v = 0; v < vocab; v++) {
        int n = lp->n_top;
        if (n == k && (k == 0 || logits[v] <= logits[lp->top_ids[n - 1]])) {
            continue;
        }
        int p = n < k ? n : k - 1; /* insertion point, ties keep the lower id first */
        while (p > 0 && logits[lp->top_ids[p - 1]] < logits[v]) {
            lp->top_ids[p] = lp->top_ids[p - 1];
            p--;
        }
        lp->top_ids[p] = v;
        lp->n_top = n < k ? n + 1 : k;
    }
    for (int i = 0; i < lp->n_top; i++) {
        lp->top_logprobs[i] = logits[lp->top_ids[i]] - lse;
    }
}

hd_status_t hd_wexec_step(hd_wexec_h w, const hd_step_t *step, const float *streams_in,
                          float *streams_out, int32_t *tokens_out)
{
    return hd_wexec_step_lp(w, step, streams_in, streams_out, tokens_out, NULL);
}

hd_status_t hd_wexec_step_lp(hd_wexec_h w, const hd_step_t *step, const float *streams_in,
                             float *streams_out, int32_t *tokens_out, hd_logprobs_t *lp_out)
{
    const hd_model_config_t *c = hd_engine_config(w->eng);
    int64_t Nd = (int64_t)c->hc_mult * c->dim;
    hd_status_t st = HD_OK;
    hd_batch_item_t *items = NULL;
    int *map = NULL;
    float *logits = NULL;
    int n = 0;
    bool last = hd_engine_last_stage(w->eng);

    /* releases first: their KV may be reused by this step's new sequences */
    for (int i = 0; i < step->n_release; i++) {
        wseq_t *q = wexec_find(w, step->release[i]);
        if (q != NULL) {
            wseq_drop(q);
            *q = w->seqs[--w->n_seqs];
        }
    }
    for (int i = 0; i < step->n_items; i++) {
        n += step->items[i].column == w->column;
    }
    if (n == 0) {
        return hd_engine_idle_step(w->eng);
    }
    items = hd_calloc((size_t)n, sizeof(*items), "worker items");
    map = hd_calloc((size_t)n, sizeof(*map), "worker item map");
    logits = last ? hd_malloc((size_t)n * c->vocab_size * sizeof(float), "worker logits") : NULL;
    if (items == NULL || map == NULL || (last && logits == NULL)) {
        st = HD_ERR_NO_MEMORY;
        goto out;
    }
    int k = 0;
    int64_t off = 0;
    for (int i = 0; i < step->n_items; i++) {
        const hd_step_item_t *it = &step->items[i];
        if (it->column != w->column) {
            continue;
        }
        wseq_t *q = wexec_find(w, it->id);
        if (it->first) {
            if (q != NULL || hd_wexec_grow(w) != 0) {
                hd_error(HD_SUBSYS_SCHED, "sequence %llu: %s", (unsigned long long)it->id,
                         q ? "created twice" : "out of memory");
                st = q ? HD_ERR_INVALID_PARAM : HD_ERR_NO_MEMORY;
                goto out;
            }
            q = &w->seqs[w->n_seqs];
            memset(q, 0, sizeof(*q));
            q->id = it->id;
            HD_CHECK_GOTO(hd_seq_create(w->eng, &q->seq), st, out);
            if (last) {
                st = hd_sampler_create(&it->sampling, c->vocab_size, &q->smp);
                if (st != HD_OK) {
                    hd_seq_destroy(q->seq);
                    goto out;
                }
            }
            w->n_seqs++;
        }
        if (q == NULL || hd_seq_len(q->seq) != it->pos) {
            hd_error(HD_SUBSYS_SCHED, "sequence %llu: %s", (unsigned long long)it->id,
                     q ? "position out of step with the coordinator" : "unknown sequence");
            st = HD_ERR_INVALID_PARAM;
            goto out;
        }
        items[k] = (hd_batch_item_t){
            .seq = q->seq, .tokens = it->tokens, .n_tokens = it->n_tokens,
            .logits = last && it->sample ? HD_LOGITS_LAST : HD_LOGITS_NONE,
            .logits_out = last ? logits + (size_t)k * c->vocab_size : NULL,
            .streams_in = streams_in ? streams_in + off * Nd : NULL,
            .streams_out = streams_out ? streams_out + off * Nd : NULL};
        map[k++] = i;
        off += it->n_tokens;
    }
    st = hd_engine_step(w->eng, items, n);
    if (st != HD_OK) {
        goto out;
    }
    for (int j = 0; last && j < n; j++) {
        const hd_step_item_t *it = &step->items[map[j]];
        if (it->sample) {
            tokens_out[map[j]] = hd_sampler_sample(wexec_find(w, it->id)->smp, items[j].logits_out);
            if (lp_out != NULL && it->logprobs > 0) {
                wexec_logprobs(items[j].logits_out, c->vocab_size, tokens_out[map[j]],
                               it->logprobs - 1, &lp_out[map[j]]);
            }
        }
    }
out:
    hd_free(items);
    hd_free(map);
    hd_free(logits);
    return st;
}

size_t hd_wexec_kv_bytes(hd_wexec_h w)
{
    size_t n = 0;
    for (int i = 0; i < w->n_seqs; i++) {
        n += hd_seq_kv_bytes(w->seqs[i].seq);
    }
    return n;
}
