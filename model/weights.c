/*
 * weights.c - binds checkpoint tensors to the engine's per-layer weight views.
 *
 * Tensors are looked up by their official (Hub) names; when the checkpoint was saved by
 * transformers the same weights are found under the HF module names (spec 6.6), with the
 * routed experts fused into [E, 2I, d] / [E, d, I] tensors. Matrices stay in their stored
 * format (views into the mmap); only small vectors (norm weights, biases, sinks, ape) are
 * converted to fp32 copies. Every tensor's dtype and shape is checked against the config;
 * errors name the file and the tensor.
 */
#include "engine_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"
#include "hadal/quant.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *off; /* official suffix */
    const char *hf;  /* transformers suffix */
} name_map_t;

static const name_map_t layer_names[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"hc_attn_fn", "attn_hc.fn"},
    {"hc_attn_base", "attn_hc.base"},
    {"hc_attn_scale", "attn_hc.scale"},
    {"hc_ffn_fn", "ffn_hc.fn"},
    {"hc_ffn_base", "ffn_hc.base"},
    {"hc_ffn_scale", "ffn_hc.scale"},
    {"attn.attn_sink", "self_attn.sinks"},
    {"attn.wq_a.weight", "self_attn.q_a_proj.weight"},
    {"attn.q_norm.weight", "self_attn.q_a_norm.weight"},
    {"attn.wq_b.weight", "self_attn.q_b_proj.weight"},
    {"attn.wkv.weight", "self_attn.kv_proj.weight"},
    {"attn.kv_norm.weight", "self_attn.kv_norm.weight"},
    {"attn.wo_a.weight", "self_attn.o_a_proj.weight"},
    {"attn.wo_b.weight", "self_attn.o_b_proj.weight"},
    {"attn.compressor.wkv.weight", "self_attn.compressor.kv_proj.weight"},
    {"attn.compressor.wgate.weight", "self_attn.compressor.gate_proj.weight"},
    {"attn.compressor.ape", "self_attn.compressor.position_bias"},
    {"attn.compressor.norm.weight", "self_attn.compressor.kv_norm.weight"},
    {"attn.indexer.compressor.wkv.weight", "self_attn.compressor.indexer.kv_proj.weight"},
    {"attn.indexer.compressor.wgate.weight", "self_attn.compressor.indexer.gate_proj.weight"},
    {"attn.indexer.compressor.ape", "self_attn.compressor.indexer.position_bias"},
    {"attn.indexer.compressor.norm.weight", "self_attn.compressor.indexer.kv_norm.weight"},
    {"attn.indexer.wq_b.weight", "self_attn.compressor.indexer.q_b_proj.weight"},
    {"attn.indexer.weights_proj.weight", "self_attn.compressor.indexer.scorer.weights_proj.weight"},
    {"ffn.gate.weight", "mlp.gate.weight"},
    {"ffn.gate.bias", "mlp.gate.e_score_correction_bias"},
    {"ffn.gate.tid2eid", "mlp.gate.tid2eid"},
    {"ffn.shared_experts.w1.weight", "mlp.shared_experts.gate_proj.weight"},
    {"ffn.shared_experts.w3.weight", "mlp.shared_experts.up_proj.weight"},
    {"ffn.shared_experts.w2.weight", "mlp.shared_experts.down_proj.weight"},
};

static const name_map_t global_names[] = {
    {"embed.weight", "model.embed_tokens.weight"},
    {"head.weight", "lm_head.weight"},
    {"norm.weight", "model.norm.weight"},
    {"hc_head_fn", "model.hc_head.hc_fn"},
    {"hc_head_base", "model.hc_head.hc_base"},
    {"hc_head_scale", "model.hc_head.hc_scale"},
};

typedef struct {
    hd_engine_h e;
    char prefix[48];    /* official prefix: "layers.3." / "mtp.0." / "" */
    char hf_prefix[48]; /* transformers prefix: "model.layers.3." / "" */
    bool global;
} bind_ctx_t;

static const char *bind_hf_suffix(const bind_ctx_t *b, const char *off)
{
    const name_map_t *tab = b->global ? global_names : layer_names;
    size_t n = b->global ? sizeof(global_names) / sizeof(global_names[0])
                         : sizeof(layer_names) / sizeof(layer_names[0]);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(tab[i].off, off) == 0) {
            return tab[i].hf;
        }
    }
    return NULL;
}

bool hd_engine_hf_name(const char *official, char *hf, size_t len)
{
    bind_ctx_t b = {.global = true};
    const char *m;
    int li, n = 0;
    if (sscanf(official, "layers.%d.%n", &li, &n) == 1 && n > 0) {
        b.global = false;
        m = bind_hf_suffix(&b, official + n);
        if (m == NULL) {
            return false;
        }
        snprintf(hf, len, "model.layers.%d.%s", li, m);
        return true;
    }
    m = bind_hf_suffix(&b, official);
    if (m == NULL) {
        return false;
    }
    snprintf(hf, len, "%s", m);
    return true;
}

static const char *st_file(hd_engine_h e)
{
    return hd_st_count(e->st) > 0 ? hd_st_at(e->st, 0)->file : "checkpoint";
}

static hd_status_t bind_fail(hd_engine_h e, const hd_st_tensor_t *t, const char *name,
                             const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static hd_status_t bind_fail(hd_engine_h e, const hd_st_tensor_t *t, const char *name,
                             const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    snprintf(e->err, sizeof(e->err), "%s: tensor %s: %s", t ? t->file : st_file(e), name, why);
    hd_error(HD_SUBSYS_MODEL, "%s", e->err);
    return HD_ERR_FORMAT;
}

/* Find the tensor for official suffix @off; *name_p receives the name found. */
static const hd_st_tensor_t *bind_find(const bind_ctx_t *b, const char *off, char *name,
                                       size_t name_len)
{
    const hd_st_tensor_t *t;
    snprintf(name, name_len, "%s%s", b->prefix, off);
    t = hd_st_find(b->e->st, name);
    if (t != NULL || !b->e->hf_names) {
        return t;
    }
    const char *hf = bind_hf_suffix(b, off);
    if (hf == NULL) {
        return NULL;
    }
    char hname[256];
    snprintf(hname, sizeof(hname), "%s%s", b->hf_prefix, hf);
    t = hd_st_find(b->e->st, hname);
    if (t != NULL) {
        snprintf(name, name_len, "%s", hname);
    }
    return t;
}

static bool shape_is(const hd_st_tensor_t *t, int ndim, int64_t a, int64_t b)
{
    if (t->ndim != ndim) {
        return false;
    }
    return (ndim < 1 || t->shape[0] == a) && (ndim < 2 || t->shape[1] == b);
}

/* Build a weight view from tensor @t (whole tensor, [rows, cols] logical). */
static hd_status_t bind_view(const bind_ctx_t *b, const hd_st_tensor_t *t, const char *name,
                             int64_t rows, int64_t cols, hd_weight_t *w)
{
    hd_engine_h e = b->e;
    memset(w, 0, sizeof(*w));
    w->rows = rows;
    w->cols = cols;
    w->data = t->data;
    switch (t->dtype) {
    case HD_DT_F32:
    case HD_DT_BF16:
        if (!shape_is(t, 2, rows, cols)) {
            return bind_fail(e, t, name, "expected shape [%lld, %lld]", (long long)rows, (long long)cols);
        }
        w->fmt = t->dtype == HD_DT_F32 ? HD_WFMT_F32 : HD_WFMT_BF16;
        w->row_bytes = (size_t)cols * hd_dtype_size(t->dtype);
        return HD_OK;
    case HD_DT_F8_E4M3:
    case HD_DT_I8: {
        bool fp4 = t->dtype == HD_DT_I8;
        char sname[256];
        const hd_st_tensor_t *s;
        size_t nl = strlen(name);
        if (fp4 ? !shape_is(t, 2, rows, cols / 2) || cols % 32 : !shape_is(t, 2, rows, cols)) {
            return bind_fail(e, t, name, "%sexpected shape [%lld, %lld]", fp4 ? "packed FP4: " : "",
                             (long long)rows, (long long)(fp4 ? cols / 2 : cols));
        }
        if (nl < 7 || strcmp(name + nl - 7, ".weight") != 0) {
            return bind_fail(e, t, name, "quantised tensor without a .weight name");
        }
        snprintf(sname, sizeof(sname), "%.*s.scale", (int)(nl - 7), name);
        s = hd_st_find(e->st, sname);
        int64_t sr = fp4 ? rows : (rows + 127) / 128;
        int64_t sc = fp4 ? cols / 32 : (cols + 127) / 128;
        if (s == NULL) {
            return bind_fail(e, t, sname, "missing (scale of a quantised weight)");
        }
        if (s->dtype != HD_DT_F8_E8M0 || !shape_is(s, 2, sr, sc)) {
            return bind_fail(e, s, sname, "expected F8_E8M0 of shape [%lld, %lld]", (long long)sr, (long long)sc);
        }
        w->fmt = fp4 ? HD_WFMT_FP4 : HD_WFMT_FP8;
        w->row_bytes = fp4 ? (size_t)cols / 2 : (size_t)cols;
        w->scale = s->data;
        w->scale_stride = sc;
        w->row0 = 0;
        return HD_OK;
    }
    default:
        return bind_fail(e, t, name, "unsupported dtype %s for a matrix", hd_dtype_name(t->dtype));
    }
}

static hd_status_t bind_matrix(const bind_ctx_t *b, const char *off, int64_t rows, int64_t cols,
                               hd_weight_t *w)
{
    char name[256];
    const hd_st_tensor_t *t = bind_find(b, off, name, sizeof(name));
    if (t == NULL) {
        return bind_fail(b->e, NULL, name, "missing");
    }
    hd_status_t st = bind_view(b, t, name, rows, cols, w);
    if (st == HD_OK) {
        b->e->weight_bytes += t->nbytes;
    }
    return st;
}

/* Convert a small tensor of @n elements (any float dtype) to a fresh fp32 array. */
static hd_status_t bind_vec_into(const bind_ctx_t *b, const char *off, int64_t n, float *out)
{
    char name[256];
    const hd_st_tensor_t *t = bind_find(b, off, name, sizeof(name));
    if (t == NULL) {
        return bind_fail(b->e, NULL, name, "missing");
    }
    if (hd_st_numel(t) != n) {
        return bind_fail(b->e, t, name, "expected %lld elements, found %lld", (long long)n,
                         (long long)hd_st_numel(t));
    }
    for (int64_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case HD_DT_F32: memcpy(&out[i], (const float *)t->data + i, 4); break;
        case HD_DT_BF16: {
            uint16_t h;
            memcpy(&h, (const uint16_t *)t->data + i, 2);
            out[i] = hd_bf16_to_f32(h);
            break;
        }
        default:
            return bind_fail(b->e, t, name, "unsupported dtype %s for a vector", hd_dtype_name(t->dtype));
        }
    }
    return HD_OK;
}

static hd_status_t bind_vec(const bind_ctx_t *b, const char *off, int64_t n, float **out_p)
{
    float *v = hd_calloc((size_t)n, sizeof(float), "weight vector");
    hd_status_t st;
    if (v == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    st = bind_vec_into(b, off, n, v);
    if (st != HD_OK) {
        hd_free(v);
        return st;
    }
    *out_p = v;
    return HD_OK;
}

static hd_status_t bind_tid2eid(const bind_ctx_t *b, layer_w_t *L)
{
    const hd_model_config_t *c = &b->e->cfg;
    char name[256];
    const hd_st_tensor_t *t = bind_find(b, "ffn.gate.tid2eid", name, sizeof(name));
    int k = c->n_experts_per_tok;
    if (t == NULL) {
        return bind_fail(b->e, NULL, name, "missing (hash-routed layer)");
    }
    if ((t->dtype != HD_DT_I64 && t->dtype != HD_DT_I32) || !shape_is(t, 2, c->vocab_size, k)) {
        return bind_fail(b->e, t, name, "expected I64 of shape [%lld, %lld]", (long long)c->vocab_size,
                         (long long)k);
    }
    L->tid2eid = hd_calloc((size_t)c->vocab_size * (size_t)k, sizeof(int32_t), "tid2eid");
    if (L->tid2eid == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    for (int64_t i = 0; i < (int64_t)c->vocab_size * k; i++) {
        int64_t v;
        if (t->dtype == HD_DT_I64) {
            memcpy(&v, (const int64_t *)t->data + i, 8);
        } else {
            int32_t v32;
            memcpy(&v32, (const int32_t *)t->data + i, 4);
            v = v32;
        }
        if (v < 0 || v >= c->n_routed_experts) {
            return bind_fail(b->e, t, name, "expert id %lld out of range at element %lld", (long long)v,
                                 (long long)i);
        }
        L->tid2eid[i] = (int32_t)v;
    }
    return HD_OK;
}

/* Routed experts: official per-expert tensors, or transformers' fused 3-D tensors. */
static hd_status_t bind_experts(const bind_ctx_t *b, layer_w_t *L, const uint8_t *mask)
{
    const hd_model_config_t *c = &b->e->cfg;
    int E = c->n_routed_experts, I = c->moe_inter, d = c->dim;
    char off[128];
    L->w1 = hd_calloc((size_t)E, sizeof(hd_weight_t), "experts w1");
    L->w3 = hd_calloc((size_t)E, sizeof(hd_weight_t), "experts w3");
    L->w2 = hd_calloc((size_t)E, sizeof(hd_weight_t), "experts w2");
    if (L->w1 == NULL || L->w3 == NULL || L->w2 == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    snprintf(off, sizeof(off), "%sffn.experts.0.w1.weight", b->prefix);
    if (b->e->hf_names && hd_st_find(b->e->st, off) == NULL) {
        char gu[256], dn[256];
        snprintf(gu, sizeof(gu), "%smlp.experts.gate_up_proj", b->hf_prefix);
        snprintf(dn, sizeof(dn), "%smlp.experts.down_proj", b->hf_prefix);
        const hd_st_tensor_t *tg = hd_st_find(b->e->st, gu), *td = hd_st_find(b->e->st, dn);
        if (tg == NULL || td == NULL) {
            return bind_fail(b->e, NULL, tg ? dn : gu, "missing");
        }
        if ((tg->dtype != HD_DT_F32 && tg->dtype != HD_DT_BF16) || tg->ndim != 3 ||
            tg->shape[0] != E || tg->shape[1] != 2 * I || tg->shape[2] != d) {
            return bind_fail(b->e, tg, gu, "expected F32/BF16 of shape [E, %lld, %lld]",
                             (long long)2 * I, (long long)d);
        }
        if (td->dtype != tg->dtype || td->ndim != 3 || td->shape[0] != E || td->shape[1] != d ||
            td->shape[2] != I) {
            return bind_fail(b->e, td, dn, "expected shape [E, %lld, %lld]", (long long)d, (long long)I);
        }
        size_t es = hd_dtype_size(tg->dtype);
        hd_wfmt_t fmt = tg->dtype == HD_DT_F32 ? HD_WFMT_F32 : HD_WFMT_BF16;
        for (int x = 0; x < E; x++) {
            if (mask != NULL && !mask[x]) {
                continue;
            }
            const uint8_t *g = (const uint8_t *)tg->data + (size_t)x * 2 * I * d * es;
            L->w1[x] = (hd_weight_t){.fmt = fmt, .rows = I, .cols = d, .data = g,
                                     .row_bytes = (size_t)d * es};
            L->w3[x] = L->w1[x];
            L->w3[x].data = g + (size_t)I * d * es;
            L->w2[x] = (hd_weight_t){.fmt = fmt, .rows = d, .cols = I,
                                     .data = (const uint8_t *)td->data + (size_t)x * d * I * es,
                                     .row_bytes = (size_t)I * es};
        }
        b->e->weight_bytes += tg->nbytes + td->nbytes;
        return HD_OK;
    }
    for (int x = 0; x < E; x++) {
        if (mask != NULL && !mask[x]) {
            continue;
        }
        snprintf(off, sizeof(off), "ffn.experts.%d.w1.weight", x);
        HD_CHECK(bind_matrix(b, off, I, d, &L->w1[x]));
        snprintf(off, sizeof(off), "ffn.experts.%d.w3.weight", x);
        HD_CHECK(bind_matrix(b, off, I, d, &L->w3[x]));
        snprintf(off, sizeof(off), "ffn.experts.%d.w2.weight", x);
        HD_CHECK(bind_matrix(b, off, d, I, &L->w2[x]));
    }
    return HD_OK;
}

static hd_status_t bind_comp(const bind_ctx_t *b, const char *pre, int ratio, int width, int coff,
                             comp_w_t *cw)
{
    const hd_model_config_t *c = &b->e->cfg;
    char off[128];
    cw->ratio = ratio;
    cw->width = width;
    cw->coff = coff;
    snprintf(off, sizeof(off), "%swkv.weight", pre);
    HD_CHECK(bind_matrix(b, off, (int64_t)coff * width, c->dim, &cw->wkv));
    snprintf(off, sizeof(off), "%swgate.weight", pre);
    HD_CHECK(bind_matrix(b, off, (int64_t)coff * width, c->dim, &cw->wgate));
    snprintf(off, sizeof(off), "%sape", pre);
    HD_CHECK(bind_vec(b, off, (int64_t)ratio * coff * width, &cw->ape));
    snprintf(off, sizeof(off), "%snorm.weight", pre);
    return bind_vec(b, off, width, &cw->norm);
}

static hd_status_t bind_layer(hd_engine_h e, int li, const uint8_t *mask)
{
    const hd_model_config_t *c = &e->cfg;
    layer_w_t *L = &e->layers[li];
    bind_ctx_t b = {.e = e};
    bool mtp = li >= c->n_layers;
    int N = c->hc_mult, d = c->dim, H = c->n_heads, D = c->head_dim, G = c->o_groups;
    int mix = (2 + N) * N;

    if (mtp) {
        snprintf(b.prefix, sizeof(b.prefix), "mtp.%d.", li - c->n_layers);
        snprintf(b.hf_prefix, sizeof(b.hf_prefix), "mtp.%d.", li - c->n_layers);
    } else {
        snprintf(b.prefix, sizeof(b.prefix), "layers.%d.", li);
        snprintf(b.hf_prefix, sizeof(b.hf_prefix), "model.layers.%d.", li);
    }
    L->index = li;
    L->ratio = c->compress_ratio[li];
    L->hash = !mtp && hd_config_is_hash(c, li);
    L->loaded = true;
    HD_CHECK(bind_matrix(&b, "hc_attn_fn", mix, (int64_t)N * d, &L->hc_attn_fn));
    HD_CHECK(bind_vec_into(&b, "hc_attn_base", mix, L->hc_attn_base));
    HD_CHECK(bind_vec_into(&b, "hc_attn_scale", 3, L->hc_attn_scale));
    HD_CHECK(bind_matrix(&b, "hc_ffn_fn", mix, (int64_t)N * d, &L->hc_ffn_fn));
    HD_CHECK(bind_vec_into(&b, "hc_ffn_base", mix, L->hc_ffn_base));
    HD_CHECK(bind_vec_into(&b, "hc_ffn_scale", 3, L->hc_ffn_scale));
    HD_CHECK(bind_vec(&b, "attn_norm.weight", d, &L->attn_norm));
    HD_CHECK(bind_vec(&b, "ffn_norm.weight", d, &L->ffn_norm));
    HD_CHECK(bind_vec(&b, "attn.attn_sink", H, &L->sinks));
    HD_CHECK(bind_matrix(&b, "attn.wq_a.weight", c->q_lora_rank, d, &L->wq_a));
    HD_CHECK(bind_vec(&b, "attn.q_norm.weight", c->q_lora_rank, &L->q_norm));
    HD_CHECK(bind_matrix(&b, "attn.wq_b.weight", (int64_t)H * D, c->q_lora_rank, &L->wq_b));
    HD_CHECK(bind_matrix(&b, "attn.wkv.weight", D, d, &L->wkv));
    HD_CHECK(bind_vec(&b, "attn.kv_norm.weight", D, &L->kv_norm));
    HD_CHECK(bind_matrix(&b, "attn.wo_a.weight", (int64_t)G * c->o_lora_rank, (int64_t)H * D / G,
                         &L->wo_a));
    HD_CHECK(bind_matrix(&b, "attn.wo_b.weight", d, (int64_t)G * c->o_lora_rank, &L->wo_b));
    if (L->ratio != 0) {
        bool csa = L->ratio == 4;
        HD_CHECK(bind_comp(&b, "attn.compressor.", L->ratio, D, csa ? 2 : 1, &L->comp));
        if (csa) {
            int Di = c->index_head_dim, nI = c->index_n_heads;
            HD_CHECK(bind_comp(&b, "attn.indexer.compressor.", 4, Di, 2, &L->icomp));
            HD_CHECK(bind_matrix(&b, "attn.indexer.wq_b.weight", (int64_t)nI * Di, c->q_lora_rank,
                                 &L->i_wq_b));
            HD_CHECK(bind_matrix(&b, "attn.indexer.weights_proj.weight", nI, d, &L->i_wproj));
        }
    }
    HD_CHECK(bind_matrix(&b, "ffn.gate.weight", c->n_routed_experts, d, &L->gate));
    if (L->hash) {
        HD_CHECK(bind_tid2eid(&b, L));
    } else {
        HD_CHECK(bind_vec(&b, "ffn.gate.bias", c->n_routed_experts, &L->gate_bias));
    }
    HD_CHECK(bind_experts(&b, L, mask));
    HD_CHECK(bind_matrix(&b, "ffn.shared_experts.w1.weight", c->moe_inter, d, &L->sh_w1));
    HD_CHECK(bind_matrix(&b, "ffn.shared_experts.w3.weight", c->moe_inter, d, &L->sh_w3));
    HD_CHECK(bind_matrix(&b, "ffn.shared_experts.w2.weight", d, c->moe_inter, &L->sh_w2));
    if (mtp) {
        HD_CHECK(bind_matrix(&b, "e_proj.weight", d, d, &L->e_proj));
        HD_CHECK(bind_matrix(&b, "h_proj.weight", d, d, &L->h_proj));
        HD_CHECK(bind_vec(&b, "enorm.weight", d, &L->enorm));
        HD_CHECK(bind_vec(&b, "hnorm.weight", d, &L->hnorm));
        HD_CHECK(bind_vec(&b, "norm.weight", d, &L->mnorm));
        HD_CHECK(bind_matrix(&b, "hc_head_fn", N, (int64_t)N * d, &L->hc_head_fn));
        HD_CHECK(bind_vec_into(&b, "hc_head_base", N, L->hc_head_base));
        HD_CHECK(bind_vec_into(&b, "hc_head_scale", 1, &L->hc_head_scale));
    }
    return HD_OK;
}

/* Bytes one matmul over @w reads: the kernels' own count (0 for a view this stage left unbound). */
static size_t weight_view_bytes(const hd_weight_t *w)
{
    return w->data != NULL ? (size_t)hd_kern_weight_view_bytes(w) : 0;
}

/* Bytes a decode token reads: every non-expert matrix of the layers, top-k average experts. */
static size_t active_bytes(hd_engine_h e)
{
    const hd_model_config_t *c = &e->cfg;
    size_t sum = weight_view_bytes(&e->head) + weight_view_bytes(&e->hc_head_fn);
    if (e->embed.data != NULL) {
        sum += weight_view_bytes(&e->embed) / (size_t)c->vocab_size; /* one embedding row */
    }
    for (int li = e->layer_lo; li < e->layer_hi; li++) {
        const layer_w_t *L = &e->layers[li];
        const hd_weight_t *ws[] = {&L->hc_attn_fn, &L->hc_ffn_fn, &L->wq_a, &L->wq_b, &L->wkv,
                                   &L->wo_a, &L->wo_b, &L->comp.wkv, &L->comp.wgate,
                                   &L->icomp.wkv, &L->icomp.wgate, &L->i_wq_b, &L->i_wproj,
                                   &L->gate, &L->sh_w1, &L->sh_w3, &L->sh_w2};
        for (size_t i = 0; i < sizeof(ws) / sizeof(ws[0]); i++) {
            sum += weight_view_bytes(ws[i]);
        }
        for (int x = 0; x < c->n_routed_experts; x++) {
            if (L->w1[x].data != NULL) {
                size_t eb = weight_view_bytes(&L->w1[x]) + weight_view_bytes(&L->w3[x]) +
                            weight_view_bytes(&L->w2[x]);
                sum += eb * (size_t)c->n_experts_per_tok / (size_t)c->n_routed_experts;
            }
        }
    }
    return sum;
}

hd_status_t engine_bind_weights(hd_engine_h e, const hd_engine_params_t *p)
{
    const hd_model_config_t *c = &e->cfg;
    bind_ctx_t g = {.e = e, .global = true};
    int n_total = c->n_layers + c->n_mtp_layers;

    e->hf_names = hd_st_find(e->st, "model.embed_tokens.weight") != NULL;
    e->layers = hd_calloc((size_t)n_total, sizeof(layer_w_t), "layer weights");
    if (e->layers == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    e->layer_lo = p->layer_lo;
    e->layer_hi = p->layer_hi > 0 ? p->layer_hi : c->n_layers;
    if (e->layer_lo < 0 || e->layer_hi > c->n_layers || e->layer_lo >= e->layer_hi) {
        snprintf(e->err, sizeof(e->err), "layer range [%d, %d) outside the model's %d layers",
                 e->layer_lo, e->layer_hi, c->n_layers);
        return HD_ERR_INVALID_PARAM;
    }
    /* a stage binds only what it runs: the embedding on the first stage (and on the last
       when its MTP block embeds drafted tokens), the final norm and head on the last */
    bool last = e->layer_hi == c->n_layers;
    bool mtp = p->load_mtp && c->n_mtp_layers > 0 && last;
    if (e->layer_lo == 0 || mtp) {
        HD_CHECK(bind_matrix(&g, "embed.weight", c->vocab_size, c->dim, &e->embed));
    }
    if (last) {
        HD_CHECK(bind_matrix(&g, "head.weight", c->vocab_size, c->dim, &e->head));
        HD_CHECK(bind_vec(&g, "norm.weight", c->dim, &e->norm));
        HD_CHECK(bind_matrix(&g, "hc_head_fn", c->hc_mult, (int64_t)c->hc_mult * c->dim,
                             &e->hc_head_fn));
        HD_CHECK(bind_vec_into(&g, "hc_head_base", c->hc_mult, e->hc_head_base));
        HD_CHECK(bind_vec_into(&g, "hc_head_scale", 1, &e->hc_head_scale));
    }
    for (int li = e->layer_lo; li < e->layer_hi; li++) {
        HD_CHECK(bind_layer(e, li, p->expert_mask));
    }
    e->has_mtp = false;
    if (mtp) {
        char probe[64];
        snprintf(probe, sizeof(probe), "mtp.0.e_proj.weight");
        if (hd_st_find(e->st, probe) != NULL) {
            HD_CHECK(bind_layer(e, c->n_layers, p->expert_mask));
            e->has_mtp = true;
        } else {
            hd_info(HD_SUBSYS_MODEL, "checkpoint has no MTP block; drafting disabled");
        }
    }
    e->active_bytes = active_bytes(e);
    return HD_OK;
}

void engine_free_weights(hd_engine_h e)
{
    if (e->layers == NULL) {
        return;
    }
    for (int li = 0; li < e->cfg.n_layers + e->cfg.n_mtp_layers; li++) {
        layer_w_t *L = &e->layers[li];
        float *vecs[] = {L->attn_norm, L->ffn_norm, L->q_norm, L->kv_norm, L->sinks,
                         L->comp.ape, L->comp.norm, L->icomp.ape, L->icomp.norm, L->gate_bias,
                         L->enorm, L->hnorm, L->mnorm};
        for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
            hd_free(vecs[i]);
        }
        hd_free(L->tid2eid);
        hd_free(L->w1);
        hd_free(L->w2);
        hd_free(L->w3);
    }
    hd_free(e->layers);
    hd_free(e->norm);
    e->layers = NULL;
}
