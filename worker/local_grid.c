/*
 * local_grid.c - a whole PP x EP grid inside one process: one engine and executor per cell,
 * residual streams handed down each column in memory, and the MoE exchange of a stage row
 * done by calling the owning engine directly. Columns of a row run one after another, so
 * the exchange needs no collective: when column c's engine asks for its slots, the other
 * engines of the row are idle and can compute them. Results are bitwise those of the
 * process grid and of one engine holding everything (same kernels, same reduction order).
 *
 * Used by tests and by `hadal run --pp P --ep E`; the worker processes use the executor
 * (exec.c) the same way, with the net/ transports in place of the memory hand-offs.
 */
#include "hadal/worker.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    struct hd_local_grid *g;
    int stage;
} grid_row_t;

struct hd_local_grid {
    hd_model_config_t cfg;
    int pp, ep;
    hd_engine_h *eng;     /* [pp * ep], row-major */
    hd_wexec_h *ex;       /* [pp * ep] */
    grid_row_t *rows;     /* [pp]: the exchange hooks' user data */
    uint8_t *masks;       /* [ep * n_routed_experts] */
    float *buf[2];        /* ping-pong stream buffers [ep][cap * N*d] */
    int64_t cap;          /* tokens per column the buffers hold */
    /* exchange scratch (one row at a time) */
    float *xx, *xo, *xw;
    int32_t *xe;
    int64_t *xback;
    int64_t xcap;
};

int hd_grid_expert_owner(int n_experts, int ep, int expert)
{
    int per = (n_experts + ep - 1) / ep;
    return expert / per;
}

void hd_grid_layer_range(const hd_model_config_t *cfg, int pp, int stage, int *lo, int *hi)
{
    *lo = (int)((int64_t)stage * cfg->n_layers / pp);
    *hi = (int)((int64_t)(stage + 1) * cfg->n_layers / pp);
}

static hd_status_t grid_xgrow(struct hd_local_grid *g, int64_t rows)
{
    int64_t d = g->cfg.dim;
    if (rows <= g->xcap) {
        return HD_OK;
    }
    hd_free(g->xx);
    hd_free(g->xo);
    hd_free(g->xw);
    hd_free(g->xe);
    hd_free(g->xback);
    g->xx = hd_malloc((size_t)(rows * d) * sizeof(float), "grid exchange x");
    g->xo = hd_malloc((size_t)(rows * d) * sizeof(float), "grid exchange out");
    g->xw = hd_malloc((size_t)rows * sizeof(float), "grid exchange weights");
    g->xe = hd_malloc((size_t)rows * sizeof(int32_t), "grid exchange experts");
    g->xback = hd_malloc((size_t)rows * sizeof(int64_t), "grid exchange map");
    if (g->xx == NULL || g->xo == NULL || g->xw == NULL || g->xe == NULL || g->xback == NULL) {
        g->xcap = 0;
        return HD_ERR_NO_MEMORY;
    }
    g->xcap = rows;
    return HD_OK;
}

/* The row's dispatch and combine: each owner computes the (token, slot) rows of its experts. */
static hd_status_t grid_exchange(void *user, int layer, int64_t T, const float *x,
                                 const int32_t *sel, const float *wts, float *slot_out)
{
    grid_row_t *row = user;
    struct hd_local_grid *g = row->g;
    int k = g->cfg.n_experts_per_tok, E = g->cfg.n_routed_experts;
    int64_t d = g->cfg.dim;
    hd_status_t st = grid_xgrow(g, T * k);
    for (int w = 0; w < g->ep && st == HD_OK; w++) {
        int64_t n = 0;
        for (int64_t i = 0; i < T * k; i++) {
            if (hd_grid_expert_owner(E, g->ep, sel[i]) == w) {
                memcpy(g->xx + n * d, x + (i / k) * d, sizeof(float) * (size_t)d);
                g->xe[n] = sel[i];
                g->xw[n] = wts[i];
                g->xback[n++] = i;
            }
        }
        if (n == 0) {
            continue;
        }
        st = hd_engine_moe_local(g->eng[row->stage * g->ep + w], layer, n, g->xx, g->xe, g->xw,
                                 g->xo);
        for (int64_t j = 0; j < n && st == HD_OK; j++) {
            memcpy(slot_out + g->xback[j] * d, g->xo + j * d, sizeof(float) * (size_t)d);
        }
    }
    return st;
}

hd_status_t hd_local_grid_create(const hd_local_grid_params_t *p, hd_local_grid_h *g_p)
{
    struct hd_local_grid *g;
    hd_status_t st;
    char err[768] = "", path[4096];
    int E;
    g = hd_calloc(1, sizeof(*g), "local grid");
    if (g == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    g->pp = p->pp;
    g->ep = p->ep;
    snprintf(path, sizeof(path), "%s/config.json", p->model_path);
    st = hd_config_load(path, &g->cfg, err, sizeof(err));
    if (st != HD_OK) {
        goto fail;
    }
    E = g->cfg.n_routed_experts;
    if (p->pp < 1 || p->ep < 1 || p->pp > g->cfg.n_layers || p->ep > E) {
        snprintf(err, sizeof(err), "grid %dx%d: need 1 <= pp <= %d layers and 1 <= ep <= %d "
                 "routed experts", p->pp, p->ep, g->cfg.n_layers, E);
        st = HD_ERR_INVALID_PARAM;
        goto fail;
    }
    g->eng = hd_calloc((size_t)(p->pp * p->ep), sizeof(*g->eng), "grid engines");
    g->ex = hd_calloc((size_t)(p->pp * p->ep), sizeof(*g->ex), "grid executors");
    g->rows = hd_calloc((size_t)p->pp, sizeof(*g->rows), "grid rows");
    g->masks = p->ep > 1 ? hd_calloc((size_t)(p->ep * E), 1, "grid expert masks") : NULL;
    if (g->eng == NULL || g->ex == NULL || g->rows == NULL || (p->ep > 1 && g->masks == NULL)) {
        st = HD_ERR_NO_MEMORY;
        goto fail;
    }
    for (int w = 0; w < p->ep && g->masks != NULL; w++) {
        for (int x = 0; x < E; x++) {
            g->masks[(size_t)w * E + x] = hd_grid_expert_owner(E, p->ep, x) == w;
        }
    }
    for (int s = 0; s < p->pp; s++) {
        g->rows[s] = (grid_row_t){.g = g, .stage = s};
        for (int c = 0; c < p->ep; c++) {
            hd_engine_params_t ep = {.model_path = p->model_path, .numerics = p->numerics,
                                     .n_threads = p->n_threads,
                                     .load_mtp = p->load_mtp && s == p->pp - 1,
                                     .err = err, .err_len = sizeof(err)};
            hd_grid_layer_range(&g->cfg, p->pp, s, &ep.layer_lo, &ep.layer_hi);
            if (g->masks != NULL) {
                ep.expert_mask = g->masks + (size_t)c * E;
                ep.moe_exchange = grid_exchange;
                ep.moe_user = &g->rows[s];
            }
            st = hd_engine_create(&ep, &g->eng[s * p->ep + c]);
            if (st == HD_OK) {
                st = hd_wexec_create(g->eng[s * p->ep + c], s, c, &g->ex[s * p->ep + c]);
            }
            if (st != HD_OK) {
                goto fail;
            }
        }
    }
    *g_p = g;
    return HD_OK;
fail:
    if (p->err) {
        snprintf(p->err, p->err_len, "%s", err[0] ? err : hd_status_string(st));
    }
    hd_local_grid_destroy(g);
    return st;
}

void hd_local_grid_destroy(hd_local_grid_h g)
{
    if (g == NULL) {
        return;
    }
    for (int i = 0; g->ex != NULL && i < g->pp * g->ep; i++) {
        hd_wexec_destroy(g->ex[i]);
    }
    for (int i = 0; g->eng != NULL && i < g->pp * g->ep; i++) {
        hd_engine_destroy(g->eng[i]);
    }
    hd_free(g->eng);
    hd_free(g->ex);
    hd_free(g->rows);
    hd_free(g->masks);
    hd_free(g->buf[0]);
    hd_free(g->buf[1]);
    hd_free(g->xx);
    hd_free(g->xo);
    hd_free(g->xw);
    hd_free(g->xe);
    hd_free(g->xback);
    hd_free(g);
}

const hd_model_config_t *hd_local_grid_config(hd_local_grid_h g)
{
    return &g->cfg;
}

hd_status_t hd_local_grid_exec(hd_local_grid_h g, const hd_step_t *step, int32_t *tokens_out)
{
    return hd_local_grid_exec_lp(g, step, tokens_out, NULL);
}

hd_status_t hd_local_grid_exec_lp(hd_local_grid_h g, const hd_step_t *step, int32_t *tokens_out,
                                  hd_logprobs_t *lp_out)
{
    int64_t Nd = (int64_t)g->cfg.hc_mult * g->cfg.dim, most = 1;
    hd_status_t st = HD_OK;
    for (int c = 0; c < g->ep; c++) {
        int64_t n = hd_wexec_step_tokens(g->ex[c], step);
        most = n > most ? n : most;
    }
    if (g->pp > 1 && most > g->cap) {
        for (int b = 0; b < 2; b++) {
            hd_free(g->buf[b]);
            g->buf[b] = hd_malloc((size_t)(most * Nd * g->ep) * sizeof(float), "grid streams");
        }
        if (g->buf[0] == NULL || g->buf[1] == NULL) {
            g->cap = 0;
            return HD_ERR_NO_MEMORY;
        }
        g->cap = most;
    }
    for (int i = 0; i < step->n_items; i++) {
        tokens_out[i] = 0;
    }
    for (int s = 0; s < g->pp && st == HD_OK; s++) {
        for (int c = 0; c < g->ep && st == HD_OK; c++) {
            const float *in = s > 0 ? g->buf[(s - 1) & 1] + (size_t)(c * g->cap * Nd) : NULL;
            float *out = s < g->pp - 1 ? g->buf[s & 1] + (size_t)(c * g->cap * Nd) : NULL;
            st = hd_wexec_step_lp(g->ex[s * g->ep + c], step, in, out, tokens_out, lp_out);
        }
    }
    return st;
}
