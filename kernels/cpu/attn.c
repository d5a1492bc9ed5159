/*
 * attn.c - sparse attention with a per-head sink: for each query and head, one softmax over
 * the query's candidate keys (window entries and selected compressed entries, K = V) plus a
 * virtual sink key that only enlarges the denominator. Work is split over (query, head).
 */
#include "kernels_impl.h"
#include "hadal/alloc.h"

#include <math.h>
#include <string.h>

typedef struct {
    const hd_op_attn_t *op;
} attn_task_t;

static void attn_one(void *vctx, size_t task)
{
    const hd_op_attn_t *op = ((const attn_task_t *)vctx)->op;
    int64_t qi = (int64_t)task / op->n_heads;
    int64_t h = (int64_t)task % op->n_heads;
    int64_t D = op->head_dim;
    const float *q = op->q + (qi * op->n_heads + h) * D;
    float *o = op->out + (qi * op->n_heads + h) * D;
    int64_t c0 = op->cand_off[qi], c1 = op->cand_off[qi + 1];
    int64_t nc = c1 - c0;
    float stack_scores[512];
    float *s = nc <= 512 ? stack_scores : hd_malloc((size_t)nc * sizeof(float), "attn scores");
    float m = -INFINITY, den = 0.0f;

    memset(o, 0, (size_t)D * sizeof(float));
    if (s == NULL) {
        for (int64_t d = 0; d < D; d++) {
            o[d] = NAN; /* allocation failure is visible, never silently wrong */
        }
        return;
    }
    for (int64_t j = 0; j < nc; j++) {
        s[j] = op->scale * cpu_dot(q, op->kv + (int64_t)op->cand[c0 + j] * D, D);
        m = fmaxf(m, s[j]);
    }
    float sink = op->sinks ? op->sinks[h] : -INFINITY;
    if (nc == 0) {
        m = sink;
    }
    for (int64_t j = 0; j < nc; j++) {
        float p = expf(s[j] - m);
        den += p;
        cpu_axpy(o, p, op->kv + (int64_t)op->cand[c0 + j] * D, D);
    }
    den += expf(sink - m);
    float inv = den > 0.0f ? 1.0f / den : 0.0f;
    for (int64_t d = 0; d < D; d++) {
        o[d] *= inv;
    }
    if (s != stack_scores) {
        hd_free(s);
    }
}

hd_status_t cpu_attn(cpu_ctx_t *ctx, const hd_op_attn_t *op)
{
    attn_task_t t = {.op = op};
    hd_pool_run(ctx->pool, (size_t)(op->n_q * op->n_heads), attn_one, &t);
    return HD_OK;
}
