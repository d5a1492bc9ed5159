/*
 * net_exchange.c - a stage row's MoE dispatch and combine between worker processes. Each
 * (token, slot) row goes to the column owning its expert (hd_grid_expert_owner, contiguous
 * ranges), is computed there by hd_engine_moe_local, and comes back to the same slot, so the
 * engine's ascending-expert-id sum sees exactly the values of one engine holding every expert
 * (and of the in-process grid, local_grid.c). Three collectives per MoE layer over the row's
 * net group: an all-to-all of row counts, an all-to-all-v of the rows (x, expert id, weight)
 * and an all-to-all-v of the outputs. Every row member joins every layer's exchange, also
 * with no tokens (hd_engine_idle_step), so the collectives line up.
 */
#include "worker_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"
#include "hadal/worker.h"

#include <string.h>

struct hd_wxchg {
    int ep, n_experts, k, dim;
    hd_engine_h eng;      /* borrowed */
    hd_net_h net;         /* borrowed */
    hd_net_group_h row;   /* borrowed */
    int timeout_ms;
    int64_t *cnt;         /* [2 * ep]: rows to each member, rows from each member */
    size_t *cv;           /* [4 * ep]: send counts/displs, recv counts/displs (bytes) */
    /* scratch grown on demand */
    uint8_t *sbuf, *rbuf; /* packed rows out / in */
    float *xx, *xo, *ret; /* received x, their outputs, returned outputs */
    float *xw;
    int32_t *xe;
    int64_t *xback;       /* packed row -> (token, slot) index */
    int64_t cap_out, cap_in;
};

hd_status_t hd_wxchg_create(int ep, int n_experts, int top_k, int dim, hd_wxchg_h *x_p)
{
    hd_wxchg_h x = hd_calloc(1, sizeof(*x), "moe exchange");
    if (x == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    x->ep = ep;
    x->n_experts = n_experts;
    x->k = top_k;
    x->dim = dim;
    x->timeout_ms = 10000;
    x->cnt = hd_calloc(2 * (size_t)ep, sizeof(*x->cnt), "moe exchange counts");
    x->cv = hd_calloc(4 * (size_t)ep, sizeof(*x->cv), "moe exchange displs");
    if (x->cnt == NULL || x->cv == NULL) {
        hd_wxchg_destroy(x);
        return HD_ERR_NO_MEMORY;
    }
    *x_p = x;
    return HD_OK;
}

void hd_wxchg_destroy(hd_wxchg_h x)
{
    if (x == NULL) {
        return;
    }
    hd_free(x->cnt);
    hd_free(x->cv);
    hd_free(x->sbuf);
    hd_free(x->rbuf);
    hd_free(x->xx);
    hd_free(x->xo);
    hd_free(x->ret);
    hd_free(x->xw);
    hd_free(x->xe);
    hd_free(x->xback);
    hd_free(x);
}

void hd_wxchg_set_engine(hd_wxchg_h x, hd_engine_h eng)
{
    x->eng = eng;
}

void hd_wxchg_set_group(hd_wxchg_h x, hd_net_h net, hd_net_group_h row, int timeout_ms)
{
    x->net = net;
    x->row = row;
    x->timeout_ms = timeout_ms;
}

static size_t wxchg_row_bytes(const struct hd_wxchg *x)
{
    return ((size_t)x->dim + 2) * sizeof(float); /* x row, expert id, weight */
}

/* Scratch for @n_out rows sent and @n_in rows received. */
static hd_status_t wxchg_grow(struct hd_wxchg *x, int64_t n_out, int64_t n_in)
{
    size_t rb = wxchg_row_bytes(x), d = (size_t)x->dim;
    if (n_out > x->cap_out) {
        int64_t c = n_out + n_out / 2 + 16;
        hd_free(x->sbuf);
        hd_free(x->ret);
        hd_free(x->xback);
        x->sbuf = hd_malloc((size_t)c * rb, "moe exchange rows out");
        x->ret = hd_malloc((size_t)c * d * sizeof(float), "moe exchange outputs back");
        x->xback = hd_malloc((size_t)c * sizeof(int64_t), "moe exchange row map");
        x->cap_out = (x->sbuf && x->ret && x->xback) ? c : 0;
        if (x->cap_out == 0) {
            return HD_ERR_NO_MEMORY;
        }
    }
    if (n_in > x->cap_in) {
        int64_t c = n_in + n_in / 2 + 16;
        hd_free(x->rbuf);
        hd_free(x->xx);
        hd_free(x->xo);
        hd_free(x->xw);
        hd_free(x->xe);
        x->rbuf = hd_malloc((size_t)c * rb, "moe exchange rows in");
        x->xx = hd_malloc((size_t)c * d * sizeof(float), "moe exchange x");
        x->xo = hd_malloc((size_t)c * d * sizeof(float), "moe exchange out");
        x->xw = hd_malloc((size_t)c * sizeof(float), "moe exchange weights");
        x->xe = hd_malloc((size_t)c * sizeof(int32_t), "moe exchange experts");
        x->cap_in = (x->rbuf && x->xx && x->xo && x->xw && x->xe) ? c : 0;
        if (x->cap_in == 0) {
            return HD_ERR_NO_MEMORY;
        }
    }
    return HD_OK;
}

hd_status_t hd_wxchg_moe(void *user, int layer, int64_t T, const float *xin, const int32_t *sel,
                         const float *wts, float *slot_out)
{
    struct hd_wxchg *x = user;
    int ep = x->ep, k = x->k;
    size_t d = (size_t)x->dim, rb = wxchg_row_bytes(x);
    int64_t *to = x->cnt, *from = x->cnt + ep;
    size_t *sc = x->cv, *sd = x->cv + ep, *rc = x->cv + 2 * ep, *rd = x->cv + 3 * ep;
    int64_t n_out = T * k, n_in = 0;
    hd_status_t st;
    if (x->net == NULL || x->row == NULL || x->eng == NULL) {
        hd_error(HD_SUBSYS_NET, "moe exchange of layer %d with no row connected", layer);
        return HD_ERR_REMOTE;
    }
    /* counts per owner, then everyone learns what it will receive */
    memset(to, 0, sizeof(*to) * (size_t)ep);
    for (int64_t i = 0; i < n_out; i++) {
        if (sel[i] < 0 || sel[i] >= x->n_experts) {
            return HD_ERR_INVALID_PARAM;
        }
        to[hd_grid_expert_owner(x->n_experts, ep, sel[i])]++;
    }
    st = hd_net_alltoall(x->net, x->row, to, from, sizeof(int64_t), x->timeout_ms);
    if (st != HD_OK) {
        hd_error(HD_SUBSYS_NET, "moe layer %d: counts exchange: %s", layer, hd_status_string(st));
        return st;
    }
    for (int j = 0; j < ep; j++) {
        if (from[j] < 0 || from[j] > (int64_t)1 << 32) {
            hd_error(HD_SUBSYS_NET, "moe layer %d: member %d announces %lld rows", layer, j,
                     (long long)from[j]);
            return HD_ERR_PROTO;
        }
        n_in += from[j];
    }
    st = wxchg_grow(x, n_out, n_in);
    if (st != HD_OK) {
        return st;
    }
    /* dispatch: rows packed by owner, (token, slot) order within an owner */
    int64_t off = 0;
    for (int j = 0; j < ep; j++) {
        sd[j] = (size_t)off * rb;
        sc[j] = (size_t)to[j] * rb;
        rd[j] = j == 0 ? 0 : rd[j - 1] + rc[j - 1];
        rc[j] = (size_t)from[j] * rb;
        for (int64_t i = 0; i < n_out; i++) {
            if (hd_grid_expert_owner(x->n_experts, ep, sel[i]) != j) {
                continue;
            }
            uint8_t *row = x->sbuf + (size_t)off * rb;
            memcpy(row, xin + (size_t)(i / k) * d, d * sizeof(float));
            memcpy(row + d * sizeof(float), &sel[i], sizeof(int32_t));
            memcpy(row + (d + 1) * sizeof(float), &wts[i], sizeof(float));
            x->xback[off++] = i;
        }
    }
    st = hd_net_alltoallv(x->net, x->row, x->sbuf, sc, sd, x->rbuf, rc, rd, x->timeout_ms);
    if (st != HD_OK) {
        hd_error(HD_SUBSYS_NET, "moe layer %d: dispatch: %s", layer, hd_status_string(st));
        return st;
    }
    for (int64_t r = 0; r < n_in; r++) {
        const uint8_t *row = x->rbuf + (size_t)r * rb;
        memcpy(x->xx + (size_t)r * d, row, d * sizeof(float));
        memcpy(&x->xe[r], row + d * sizeof(float), sizeof(int32_t));
        memcpy(&x->xw[r], row + (d + 1) * sizeof(float), sizeof(float));
    }
    if (n_in > 0) {
        st = hd_engine_moe_local(x->eng, layer, n_in, x->xx, x->xe, x->xw, x->xo);
        if (st != HD_OK) {
            hd_error(HD_SUBSYS_NET, "moe layer %d: %lld rows dispatched here: %s", layer,
                     (long long)n_in, hd_status_string(st));
            return st;
        }
    }
    /* combine: outputs go back the way the rows came */
    for (int j = 0; j < ep; j++) {
        sc[j] = (size_t)from[j] * d * sizeof(float);
        sd[j] = j == 0 ? 0 : sd[j - 1] + sc[j - 1];
        rc[j] = (size_t)to[j] * d * sizeof(float);
        rd[j] = j == 0 ? 0 : rd[j - 1] + rc[j - 1];
    }
    st = hd_net_alltoallv(x->net, x->row, x->xo, sc, sd, x->ret, rc, rd, x->timeout_ms);
    if (st != HD_OK) {
        hd_error(HD_SUBSYS_NET, "moe layer %d: combine: %s", layer, hd_status_string(st));
        return st;
    }
    for (int64_t r = 0; r < n_out; r++) {
        memcpy(slot_out + (size_t)x->xback[r] * d, x->ret + (size_t)r * d, d * sizeof(float));
    }
    return HD_OK;
}
