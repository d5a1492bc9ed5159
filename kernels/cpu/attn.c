/*
 * attn.c - sparse attention with a per-head sink: for each query and head, one softmax over
 * the query's candidate keys (window entries and selected compressed entries, K = V shared
 * by all heads) plus a virtual sink key that only enlarges the denominator.
 *
 * Work items are (query, group of heads): each candidate row is loaded once per group and
 * stays in L1 while every head of the group uses it. Each head's arithmetic (dot order,
 * max, exp and sums in candidate order) is the same whatever the grouping, the batch or
 * the thread that runs it.
 */
#include "kernels_impl.h"
#include "hadal/alloc.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#define ATTN_HEADS_PER_ITEM 4

typedef struct {
    const hd_op_attn_t *op;
    int64_t groups;    /* head groups per query */
    int64_t n_items;   /* n_q * groups */
    atomic_long next;  /* next work item */
    float **ws;        /* per-worker scratch: ATTN_HEADS_PER_ITEM * max candidates floats */
} attn_job_t;

static void attn_item(const hd_op_attn_t *op, int64_t qi, int64_t h0, int64_t nh, float *s)
{
    int64_t D = op->head_dim;
    int64_t c0 = op->cand_off[qi], nc = op->cand_off[qi + 1] - c0;
    const int32_t *cand = op->cand + c0;
    float m[ATTN_HEADS_PER_ITEM], den[ATTN_HEADS_PER_ITEM];

    for (int64_t h = 0; h < nh; h++) {
        m[h] = -INFINITY;
        den[h] = 0.0f;
        memset(op->out + (qi * op->n_heads + h0 + h) * D, 0, (size_t)D * sizeof(float));
    }
    for (int64_t j = 0; j < nc; j++) {
        const float *kv = op->kv + (int64_t)cand[j] * D;
        for (int64_t h = 0; h < nh; h++) {
            const float *q = op->q + (qi * op->n_heads + h0 + h) * D;
            float v = op->scale * cpu_dot(q, kv, D);
            s[h * nc + j] = v;
            m[h] = fmaxf(m[h], v);
        }
    }
    for (int64_t h = 0; h < nh; h++) {
        float sink = op->sinks ? op->sinks[h0 + h] : -INFINITY;
        if (nc == 0) {
            m[h] = sink;
        }
    }
    for (int64_t j = 0; j < nc; j++) {
        const float *kv = op->kv + (int64_t)cand[j] * D;
        for (int64_t h = 0; h < nh; h++) {
            float p = expf(s[h * nc + j] - m[h]);
            den[h] += p;
            cpu_axpy(op->out + (qi * op->n_heads + h0 + h) * D, p, kv, D);
        }
    }
    for (int64_t h = 0; h < nh; h++) {
        float sink = op->sinks ? op->sinks[h0 + h] : -INFINITY;
        float *o = op->out + (qi * op->n_heads + h0 + h) * D;
        den[h] += expf(sink - m[h]);
        float inv = den[h] > 0.0f ? 1.0f / den[h] : 0.0f;
        for (int64_t d = 0; d < D; d++) {
            o[d] *= inv;
        }
    }
}

static void attn_worker(void *arg, int worker)
{
    attn_job_t *j = arg;
    const hd_op_attn_t *op = j->op;
    for (;;) {
        long it = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (it >= j->n_items) {
            break;
        }
        int64_t qi = it / j->groups, h0 = (it % j->groups) * ATTN_HEADS_PER_ITEM;
        int64_t nh = op->n_heads - h0 < ATTN_HEADS_PER_ITEM ? op->n_heads - h0
                                                             : ATTN_HEADS_PER_ITEM;
        attn_item(op, qi, h0, nh, j->ws[worker]);
    }
}

hd_status_t cpu_attn(cpu_ctx_t *ctx, const hd_op_attn_t *op)
{
    attn_job_t j = {.op = op};
    int64_t max_nc = 0;
    hd_status_t status;
    if (op->n_q < 0 || op->n_heads <= 0 || op->head_dim <= 0) {
        return op->n_q == 0 ? HD_OK : HD_ERR_INVALID_PARAM;
    }
    for (int64_t qi = 0; qi < op->n_q; qi++) {
        int64_t nc = op->cand_off[qi + 1] - op->cand_off[qi];
        if (nc < 0) {
            return HD_ERR_INVALID_PARAM;
        }
        max_nc = nc > max_nc ? nc : max_nc;
    }
    status = cpu_scratch_reserve(ctx, (size_t)(ATTN_HEADS_PER_ITEM * max_nc));
    if (status != HD_OK) {
        return status;
    }
    j.groups = (op->n_heads + ATTN_HEADS_PER_ITEM - 1) / ATTN_HEADS_PER_ITEM;
    j.n_items = op->n_q * j.groups;
    j.ws = ctx->ws;
    atomic_init(&j.next, 0);
    cpu_run_workers(ctx, attn_worker, &j);
    return HD_OK;
}
