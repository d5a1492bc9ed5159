/*
 * inventory.c - the official checkpoint layout (spec §6.2) computed from a config, and the
 * check that a safetensors set matches it.
 *
 * One walk (inv_walk) emits every tensor of the model in checkpoint order; filters drop
 * blocks, experts or globals. gen-model writes exactly this list, the checker verifies it,
 * and the unit test pins the Flash/Pro totals (69,187 / 145,116 tensors).
 */
#include "hadal/inventory.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const hd_model_config_t *cfg;
    const hd_inv_filter_t *filter;
    hd_inv_tensor_t *t; /* NULL while counting */
    size_t n;
    int layer;          /* block being emitted, -1 for globals */
    int expert;         /* routed expert being emitted, -1 otherwise */
    const char *prefix; /* "layers.3." / "mtp.0." / "" */
} inv_walk_t;

static void inv_emit(inv_walk_t *w, hd_dtype_t dt, int ndim, int64_t d0, int64_t d1,
                     hd_inv_role_t role, hd_inv_init_t init, int64_t rows, int64_t cols,
                     const char *fmt, ...) __attribute__((format(printf, 10, 11)));

static void inv_emit(inv_walk_t *w, hd_dtype_t dt, int ndim, int64_t d0, int64_t d1,
                     hd_inv_role_t role, hd_inv_init_t init, int64_t rows, int64_t cols,
                     const char *fmt, ...)
{
    if (w->t != NULL) {
        hd_inv_tensor_t *t = &w->t[w->n];
        va_list ap;
        int k = snprintf(t->name, sizeof(t->name), "%s", w->prefix);
        va_start(ap, fmt);
        vsnprintf(t->name + k, sizeof(t->name) - (size_t)k, fmt, ap);
        va_end(ap);
        t->dtype = dt;
        t->ndim = ndim;
        t->shape[0] = d0;
        t->shape[1] = ndim > 1 ? d1 : 0;
        t->layer = w->layer;
        t->expert = w->expert;
        t->role = role;
        t->init = init;
        t->rows = rows;
        t->cols = cols;
    }
    w->n++;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* An FP8 linear [out, in]: e4m3 weight + e8m0 128x128 block scales. */
static void inv_fp8(inv_walk_t *w, const char *base, int64_t out, int64_t in)
{
    inv_emit(w, HD_DT_F8_E4M3, 2, out, in, HD_INV_FP8_WEIGHT, HD_INV_INIT_WEIGHT, out, in,
             "%s.weight", base);
    inv_emit(w, HD_DT_F8_E8M0, 2, ceil_div(out, 128), ceil_div(in, 128), HD_INV_FP8_SCALE,
             HD_INV_INIT_SCALE, out, in, "%s.scale", base);
}

static void inv_plain(inv_walk_t *w, const char *name, hd_dtype_t dt, int ndim, int64_t d0,
                      int64_t d1, hd_inv_init_t init)
{
    inv_emit(w, dt, ndim, d0, d1, HD_INV_PLAIN, init, d0, ndim > 1 ? d1 : 1, "%s", name);
}

/* A routed-expert linear [out, in] in the config's expert format. */
static void inv_expert(inv_walk_t *w, int e, const char *wn, int64_t out, int64_t in)
{
    char base[48];
    snprintf(base, sizeof(base), "ffn.experts.%d.%s", e, wn);
    switch (w->cfg->expert_dtype) {
    case HD_EXPERT_FP4:
        inv_emit(w, HD_DT_I8, 2, out, in / 2, HD_INV_FP4_WEIGHT, HD_INV_INIT_WEIGHT, out, in,
                 "%s.weight", base);
        inv_emit(w, HD_DT_F8_E8M0, 2, out, in / 32, HD_INV_FP4_SCALE, HD_INV_INIT_SCALE, out, in,
                 "%s.scale", base);
        break;
    case HD_EXPERT_FP8:
        inv_fp8(w, base, out, in);
        break;
    default:
        inv_emit(w, HD_DT_BF16, 2, out, in, HD_INV_PLAIN, HD_INV_INIT_WEIGHT, out, in, "%s.weight",
                 base);
        break;
    }
}

static void inv_hc(inv_walk_t *w, const char *which, int mix)
{
    const hd_model_config_t *c = w->cfg;
    int64_t nd = (int64_t)c->hc_mult * c->dim;
    char n[48];
    snprintf(n, sizeof(n), "%s_fn", which);
    inv_plain(w, n, HD_DT_F32, 2, mix, nd, HD_INV_INIT_WEIGHT);
    snprintf(n, sizeof(n), "%s_base", which);
    inv_plain(w, n, HD_DT_F32, 1, mix, 0, HD_INV_INIT_HC_BASE);
    snprintf(n, sizeof(n), "%s_scale", which);
    inv_plain(w, n, HD_DT_F32, 1, mix == c->hc_mult ? 1 : 3, 0, HD_INV_INIT_HC_SCALE);
}

/* The compressor of a CSA (overlap, c = 2) or HCA (c = 1) layer, head width @hd. */
static void inv_compressor(inv_walk_t *w, const char *base, int ratio, int hd)
{
    const hd_model_config_t *c = w->cfg;
    int64_t width = (ratio == 4 ? 2 : 1) * (int64_t)hd;
    char n[64];
    snprintf(n, sizeof(n), "%s.wkv.weight", base);
    inv_plain(w, n, HD_DT_BF16, 2, width, c->dim, HD_INV_INIT_WEIGHT);
    snprintf(n, sizeof(n), "%s.wgate.weight", base);
    inv_plain(w, n, HD_DT_BF16, 2, width, c->dim, HD_INV_INIT_WEIGHT);
    snprintf(n, sizeof(n), "%s.ape", base);
    inv_plain(w, n, HD_DT_F32, 2, ratio, width, HD_INV_INIT_APE);
    snprintf(n, sizeof(n), "%s.norm.weight", base);
    inv_plain(w, n, HD_DT_BF16, 1, hd, 0, HD_INV_INIT_NORM);
}

static bool inv_want_expert(const inv_walk_t *w, int e)
{
    return w->filter == NULL || w->filter->experts == NULL || w->filter->experts[e];
}

/* One decoder block: main layer @b, or MTP block (b >= n_layers) with its extra tensors. */
static void inv_block(inv_walk_t *w, int b)
{
    const hd_model_config_t *c = w->cfg;
    char prefix[32];
    int ratio = c->compress_ratio[b];
    int64_t d = c->dim, hdim = c->head_dim, inter = c->moe_inter;
    int mix = (2 + c->hc_mult) * c->hc_mult;

    if (b < c->n_layers) {
        snprintf(prefix, sizeof(prefix), "layers.%d.", b);
    } else {
        snprintf(prefix, sizeof(prefix), "mtp.%d.", b - c->n_layers);
    }
    w->prefix = prefix;
    w->layer = b;
    w->expert = -1;
    if (b >= c->n_layers) {
        inv_fp8(w, "e_proj", d, d);
        inv_fp8(w, "h_proj", d, d);
        inv_plain(w, "enorm.weight", HD_DT_BF16, 1, d, 0, HD_INV_INIT_NORM);
        inv_plain(w, "hnorm.weight", HD_DT_BF16, 1, d, 0, HD_INV_INIT_NORM);
        inv_plain(w, "norm.weight", HD_DT_BF16, 1, d, 0, HD_INV_INIT_NORM);
        inv_hc(w, "hc_head", c->hc_mult);
    }
    /* attention */
    inv_plain(w, "attn_norm.weight", HD_DT_BF16, 1, d, 0, HD_INV_INIT_NORM);
    inv_hc(w, "hc_attn", mix);
    inv_plain(w, "attn.attn_sink", HD_DT_F32, 1, c->n_heads, 0, HD_INV_INIT_SINK);
    inv_fp8(w, "attn.wq_a", c->q_lora_rank, d);
    inv_plain(w, "attn.q_norm.weight", HD_DT_BF16, 1, c->q_lora_rank, 0, HD_INV_INIT_NORM);
    inv_fp8(w, "attn.wq_b", (int64_t)c->n_heads * hdim, c->q_lora_rank);
    inv_fp8(w, "attn.wkv", hdim, d);
    inv_plain(w, "attn.kv_norm.weight", HD_DT_BF16, 1, hdim, 0, HD_INV_INIT_NORM);
    inv_fp8(w, "attn.wo_a", (int64_t)c->o_groups * c->o_lora_rank,
            (int64_t)(c->n_heads / c->o_groups) * hdim);
    inv_fp8(w, "attn.wo_b", d, (int64_t)c->o_groups * c->o_lora_rank);
    if (ratio != 0) {
        inv_compressor(w, "attn.compressor", ratio, c->head_dim);
    }
    if (ratio == 4) {
        inv_fp8(w, "attn.indexer.wq_b", (int64_t)c->index_n_heads * c->index_head_dim,
                c->q_lora_rank);
        inv_plain(w, "attn.indexer.weights_proj.weight", HD_DT_BF16, 2, c->index_n_heads, d,
                  HD_INV_INIT_WEIGHT);
        inv_compressor(w, "attn.indexer.compressor", 4, c->index_head_dim);
    }
    /* feed-forward */
    inv_plain(w, "ffn_norm.weight", HD_DT_BF16, 1, d, 0, HD_INV_INIT_NORM);
    inv_hc(w, "hc_ffn", mix);
    inv_plain(w, "ffn.gate.weight", HD_DT_BF16, 2, c->n_routed_experts, d, HD_INV_INIT_WEIGHT);
    if (hd_config_is_hash(c, b)) {
        inv_plain(w, "ffn.gate.tid2eid", HD_DT_I64, 2, c->vocab_size, c->n_experts_per_tok,
                  HD_INV_INIT_TID2EID);
    } else {
        inv_plain(w, "ffn.gate.bias", HD_DT_F32, 1, c->n_routed_experts, 0, HD_INV_INIT_GATE_BIAS);
    }
    for (int e = 0; e < c->n_routed_experts; e++) {
        if (!inv_want_expert(w, e)) {
            continue;
        }
        w->expert = e;
        inv_expert(w, e, "w1", inter, d);
        inv_expert(w, e, "w3", inter, d);
        inv_expert(w, e, "w2", d, inter);
    }
    w->expert = -1;
    inv_fp8(w, "ffn.shared_experts.w1", inter, d);
    inv_fp8(w, "ffn.shared_experts.w3", inter, d);
    inv_fp8(w, "ffn.shared_experts.w2", d, inter);
}

static void inv_walk(inv_walk_t *w, int lo, int hi, hd_inv_globals_t globals)
{
    const hd_model_config_t *c = w->cfg;
    int n_all = c->n_layers + c->n_mtp_layers;
    bool has_last = lo <= c->n_layers - 1 && c->n_layers - 1 < hi;
    bool has_mtp = hi > c->n_layers && lo < n_all;
    bool all = globals == HD_INV_GLOBALS_ALL, none = globals == HD_INV_GLOBALS_NONE;
    int64_t d = c->dim;

    w->prefix = "";
    w->layer = -1;
    w->expert = -1;
    if (all || (!none && (lo == 0 || has_mtp))) {
        inv_plain(w, "embed.weight", HD_DT_BF16, 2, c->vocab_size, d, HD_INV_INIT_WEIGHT);
    }
    for (int b = lo; b < hi && b < c->n_layers; b++) {
        inv_block(w, b);
    }
    w->prefix = "";
    w->layer = -1;
    w->expert = -1;
    if (all || (!none && has_last)) {
        inv_plain(w, "norm.weight", HD_DT_BF16, 1, d, 0, HD_INV_INIT_NORM);
        inv_hc(w, "hc_head", c->hc_mult);
    }
    if (all || (!none && (has_last || has_mtp))) {
        inv_plain(w, "head.weight", HD_DT_BF16, 2, c->vocab_size, d, HD_INV_INIT_WEIGHT);
    }
    for (int b = lo > c->n_layers ? lo : c->n_layers; b < hi && b < n_all; b++) {
        inv_block(w, b);
    }
}

hd_status_t hd_inv_init(hd_inv_t *inv, const hd_model_config_t *cfg, const hd_inv_filter_t *filter)
{
    inv_walk_t w;
    int lo = 0, hi, n_all;
    hd_inv_globals_t g = HD_INV_GLOBALS_ALL;

    if (inv == NULL || cfg == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    memset(inv, 0, sizeof(*inv));
    n_all = cfg->n_layers + cfg->n_mtp_layers;
    if (cfg->n_layers < 1 || cfg->n_mtp_layers < 0 || n_all > HD_MAX_LAYERS) {
        return HD_ERR_INVALID_PARAM;
    }
    hi = n_all;
    if (filter != NULL) {
        lo = filter->layer_lo;
        hi = filter->layer_hi;
        g = filter->globals;
        if (lo < 0 || hi < lo || hi > n_all || (unsigned)g > HD_INV_GLOBALS_NONE) {
            hd_error(HD_SUBSYS_MODEL, "inventory: bad block range [%d, %d) of %d", lo, hi, n_all);
            return HD_ERR_INVALID_PARAM;
        }
    }
    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    w.filter = filter;
    inv_walk(&w, lo, hi, g); /* count */
    if (w.n > 0) {
        w.t = hd_calloc(w.n, sizeof(*w.t), "inventory");
        if (w.t == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        w.n = 0;
        inv_walk(&w, lo, hi, g);
    }
    inv->t = w.t;
    inv->n = w.n;
    return HD_OK;
}

void hd_inv_cleanup(hd_inv_t *inv)
{
    if (inv == NULL) {
        return;
    }
    hd_free(inv->t);
    inv->t = NULL;
    inv->n = 0;
}

uint64_t hd_inv_nbytes(const hd_inv_tensor_t *t)
{
    uint64_t n = (uint64_t)t->shape[0];
    if (t->ndim > 1) {
        n *= (uint64_t)t->shape[1];
    }
    return n * hd_dtype_size(t->dtype);
}

uint64_t hd_inv_total_bytes(const hd_inv_t *inv)
{
    uint64_t s = 0;
    for (size_t i = 0; i < inv->n; i++) {
        s += hd_inv_nbytes(&inv->t[i]);
    }
    return s;
}

const hd_inv_tensor_t *hd_inv_find(const hd_inv_t *inv, const char *name)
{
    for (size_t i = 0; i < inv->n; i++) {
        if (strcmp(inv->t[i].name, name) == 0) {
            return &inv->t[i];
        }
    }
    return NULL;
}

/* ---- checkpoint check ---- */

static void shape_str(char *buf, size_t len, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && k < len; i++) {
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    }
    if (k < len) {
        snprintf(buf + k, len - k, "]");
    }
}

hd_status_t hd_ckpt_check_filter(hd_st_set_h set, const hd_model_config_t *cfg,
                                 const hd_inv_filter_t *filter, char *err, size_t err_len)
{
    hd_inv_t inv;
    hd_status_t status, first = HD_OK;
    size_t n_bad = 0;
    char msg[512];

    if (err != NULL && err_len > 0) {
        err[0] = '\0';
    }
    if (set == NULL || cfg == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    status = hd_inv_init(&inv, cfg, filter);
    if (status != HD_OK) {
        if (err != NULL && err_len > 0) {
            snprintf(err, err_len, "%s: cannot build the tensor inventory: %s", hd_st_path(set),
                     hd_status_string(status));
        }
        return status;
    }
    for (size_t i = 0; i < inv.n; i++) {
        const hd_inv_tensor_t *want = &inv.t[i];
        const hd_st_tensor_t *t = hd_st_find(set, want->name);
        hd_status_t st = HD_OK;
        if (t == NULL) {
            snprintf(msg, sizeof(msg), "%s: tensor %s: missing", hd_st_path(set), want->name);
            st = HD_ERR_NOT_FOUND;
        } else if (t->dtype != want->dtype) {
            snprintf(msg, sizeof(msg), "%s: tensor %s: dtype %s, expected %s", t->file, want->name,
                     hd_dtype_name(t->dtype), hd_dtype_name(want->dtype));
            st = HD_ERR_FORMAT;
        } else if (t->ndim != want->ndim || t->shape[0] != want->shape[0] ||
                   (want->ndim > 1 && t->shape[1] != want->shape[1])) {
            char got[160], exp[64];
            shape_str(got, sizeof(got), t->ndim, t->shape);
            shape_str(exp, sizeof(exp), want->ndim, want->shape);
            snprintf(msg, sizeof(msg), "%s: tensor %s: shape %s, expected %s", t->file, want->name,
                     got, exp);
            st = HD_ERR_FORMAT;
        }
        if (st != HD_OK) {
            if (n_bad < 20) {
                hd_error(HD_SUBSYS_MODEL, "%s", msg);
            }
            if (n_bad == 0) {
                first = st;
                if (err != NULL && err_len > 0) {
                    snprintf(err, err_len, "%s", msg);
                }
            }
            n_bad++;
        }
    }
    if (n_bad > 1 && err != NULL && err_len > 0) {
        size_t k = strlen(err);
        if (k + 1 < err_len) {
            snprintf(err + k, err_len - k, " (and %zu more problem%s)", n_bad - 1,
                     n_bad > 2 ? "s" : "");
        }
    }
    hd_inv_cleanup(&inv);
    return first;
}

hd_status_t hd_ckpt_check(hd_st_set_h set, const hd_model_config_t *cfg, int layer_lo, int layer_hi,
                          char *err, size_t err_len)
{
    hd_inv_filter_t f = {
        .layer_lo = layer_lo,
        .layer_hi = layer_hi,
        .globals = HD_INV_GLOBALS_AUTO,
        .experts = NULL,
    };
    return hd_ckpt_check_filter(set, cfg, &f, err, err_len);
}
