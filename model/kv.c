/*
 * kv.c - per-sequence KV state: the sliding-window ring, the compressed entries and indexer
 * keys (growable), and the compressors' rolling fp32 state, for every layer and the MTP block.
 *
 * Official numerics store entries packed, losslessly for the values the model computes:
 * nope dims as e4m3 with one e8m0 scale per 64, rope dims as bf16 (583 B per 512-d entry);
 * indexer keys as e2m1 pairs with one e8m0 scale per 32 (68 B per 128-d key). Plain
 * numerics store fp32. Storing rewrites the caller's vector with the stored values, so fresh
 * and cached entries are always identical (chunking never changes results).
 */
#include "engine_impl.h"
#include "hadal/alloc.h"
#include "hadal/quant.h"

#include <math.h>
#include <string.h>

size_t kv_entry_bytes(const hd_model_config_t *c, hd_numerics_t num)
{
    int nope = c->head_dim - c->rope_dim;
    if (num == HD_NUMERICS_PLAIN) {
        return (size_t)c->head_dim * sizeof(float);
    }
    return (size_t)nope + (size_t)(nope + 63) / 64 + (size_t)c->rope_dim * 2;
}

size_t kv_ikey_bytes(const hd_model_config_t *c, hd_numerics_t num)
{
    if (num == HD_NUMERICS_PLAIN) {
        return (size_t)c->index_head_dim * sizeof(float);
    }
    return (size_t)c->index_head_dim / 2 + (size_t)c->index_head_dim / 32;
}

void kv_entry_store(const hd_model_config_t *c, hd_numerics_t num, float *v, uint8_t *dst)
{
    int nope = c->head_dim - c->rope_dim;
    if (num == HD_NUMERICS_PLAIN) {
        memcpy(dst, v, (size_t)c->head_dim * sizeof(float));
        return;
    }
    uint8_t *codes = dst, *scales = dst + nope;
    uint8_t *rope = scales + (nope + 63) / 64;
    for (int b = 0, bi = 0; b < nope; b += 64, bi++) {
        int m = nope - b < 64 ? nope - b : 64;
        float amax = 0.0f;
        for (int i = 0; i < m; i++) {
            amax = fmaxf(amax, fabsf(v[b + i]));
        }
        float s = hd_pow2_scale_ceil(amax, 448.0f, 1e-4f);
        scales[bi] = hd_f32_to_e8m0_ceil(s);
        for (int i = 0; i < m; i++) {
            float q = fminf(fmaxf(v[b + i] / s, -448.0f), 448.0f);
            codes[b + i] = hd_f32_to_e4m3(q);
            v[b + i] = hd_e4m3_table[codes[b + i]] * s;
        }
    }
    for (int i = 0; i < c->rope_dim; i++) {
        uint16_t h = hd_f32_to_bf16(v[nope + i]);
        memcpy(rope + 2 * i, &h, 2);
        v[nope + i] = hd_bf16_to_f32(h);
    }
}

void kv_entry_load(const hd_model_config_t *c, hd_numerics_t num, const uint8_t *src, float *v)
{
    int nope = c->head_dim - c->rope_dim;
    if (num == HD_NUMERICS_PLAIN) {
        memcpy(v, src, (size_t)c->head_dim * sizeof(float));
        return;
    }
    const uint8_t *scales = src + nope, *rope = scales + (nope + 63) / 64;
    for (int i = 0; i < nope; i++) {
        v[i] = hd_e4m3_table[src[i]] * hd_e8m0_to_f32(scales[i / 64]);
    }
    for (int i = 0; i < c->rope_dim; i++) {
        uint16_t h;
        memcpy(&h, rope + 2 * i, 2);
        v[nope + i] = hd_bf16_to_f32(h);
    }
}

void kv_ikey_store(const hd_model_config_t *c, hd_numerics_t num, float *v, uint8_t *dst)
{
    int Di = c->index_head_dim;
    if (num == HD_NUMERICS_PLAIN) {
        memcpy(dst, v, (size_t)Di * sizeof(float));
        return;
    }
    uint8_t *codes = dst, *scales = dst + Di / 2;
    const float floor4 = 6.0f * 1.17549435e-38f;
    for (int b = 0; b < Di; b += 32) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) {
            amax = fmaxf(amax, fabsf(v[b + i]));
        }
        float s = hd_pow2_scale_ceil(amax, 6.0f, floor4);
        scales[b / 32] = hd_f32_to_e8m0_ceil(s);
        for (int i = 0; i < 32; i += 2) {
            uint8_t lo = hd_f32_to_e2m1(fminf(fmaxf(v[b + i] / s, -6.0f), 6.0f));
            uint8_t hi = hd_f32_to_e2m1(fminf(fmaxf(v[b + i + 1] / s, -6.0f), 6.0f));
            codes[(b + i) / 2] = (uint8_t)(lo | (hi << 4));
            v[b + i] = hd_e2m1_table[lo] * s;
            v[b + i + 1] = hd_e2m1_table[hi] * s;
        }
    }
}

void kv_ikey_load(const hd_model_config_t *c, hd_numerics_t num, const uint8_t *src, float *v)
{
    int Di = c->index_head_dim;
    if (num == HD_NUMERICS_PLAIN) {
        memcpy(v, src, (size_t)Di * sizeof(float));
        return;
    }
    const uint8_t *scales = src + Di / 2;
    for (int i = 0; i < Di; i += 2) {
        float s = hd_e8m0_to_f32(scales[i / 32]);
        v[i] = hd_e2m1_table[src[i / 2] & 15] * s;
        v[i + 1] = hd_e2m1_table[src[i / 2] >> 4] * s;
    }
}

hd_status_t kv_comp_reserve(hd_seq_h s, int layer, int64_t n)
{
    layer_kv_t *K = &s->layers[layer];
    const hd_model_config_t *c = &s->eng->cfg;
    hd_numerics_t num = s->eng->numerics;
    if (n <= K->cap_comp) {
        return HD_OK;
    }
    int64_t cap = K->cap_comp ? K->cap_comp : 16;
    while (cap < n) {
        cap *= 2;
    }
    uint8_t *comp = hd_realloc(K->comp, (size_t)cap * kv_entry_bytes(c, num), "kv compressed");
    if (comp == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    K->comp = comp;
    if (c->compress_ratio[layer] == 4) {
        uint8_t *ik = hd_realloc(K->ikeys, (size_t)cap * kv_ikey_bytes(c, num), "kv indexer keys");
        if (ik == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        K->ikeys = ik;
    }
    K->cap_comp = cap;
    return HD_OK;
}

static void kv_layer_free(layer_kv_t *K)
{
    void *p[] = {K->ring, K->comp, K->ikeys, K->cu, K->cz, K->pu, K->pz,
                 K->icu, K->icz, K->ipu, K->ipz};
    for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++) {
        hd_free(p[i]);
    }
}

static hd_status_t kv_layer_init(hd_seq_h s, int li)
{
    const hd_model_config_t *c = &s->eng->cfg;
    layer_kv_t *K = &s->layers[li];
    int m = c->compress_ratio[li], D = c->head_dim, Di = c->index_head_dim;
    K->ring = hd_calloc((size_t)c->window, kv_entry_bytes(c, s->eng->numerics), "kv window");
    if (K->ring == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    if (m == 0) {
        return HD_OK;
    }
    int coff = m == 4 ? 2 : 1;
    K->cu = hd_calloc((size_t)m * coff * D, sizeof(float), "compressor state");
    K->cz = hd_calloc((size_t)m * coff * D, sizeof(float), "compressor state");
    if (K->cu == NULL || K->cz == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    if (m == 4) {
        K->pu = hd_calloc((size_t)m * D, sizeof(float), "compressor state");
        K->pz = hd_calloc((size_t)m * D, sizeof(float), "compressor state");
        K->icu = hd_calloc((size_t)m * 2 * Di, sizeof(float), "indexer state");
        K->icz = hd_calloc((size_t)m * 2 * Di, sizeof(float), "indexer state");
        K->ipu = hd_calloc((size_t)m * Di, sizeof(float), "indexer state");
        K->ipz = hd_calloc((size_t)m * Di, sizeof(float), "indexer state");
        if (!K->pu || !K->pz || !K->icu || !K->icz || !K->ipu || !K->ipz) {
            return HD_ERR_NO_MEMORY;
        }
    }
    return HD_OK;
}

hd_status_t hd_seq_create(hd_engine_h e, hd_seq_h *seq_p)
{
    const hd_model_config_t *c = &e->cfg;
    int n_total = c->n_layers + c->n_mtp_layers;
    hd_status_t status = HD_ERR_NO_MEMORY;
    hd_seq_h s = hd_calloc(1, sizeof(*s), "sequence");
    if (s == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    s->eng = e;
    s->layers = hd_calloc((size_t)n_total, sizeof(layer_kv_t), "sequence layers");
    s->last_streams = hd_calloc((size_t)c->hc_mult * c->dim, sizeof(float), "sequence streams");
    if (s->layers == NULL || s->last_streams == NULL) {
        goto err_free;
    }
    for (int li = 0; li < n_total; li++) {
        if (li < c->n_layers ? e->layers[li].loaded : e->has_mtp) {
            HD_CHECK_GOTO(kv_layer_init(s, li), status, err_free);
        }
    }
    *seq_p = s;
    return HD_OK;

err_free:
    hd_seq_destroy(s);
    return status;
}

void hd_seq_destroy(hd_seq_h s)
{
    if (s == NULL) {
        return;
    }
    if (s->layers != NULL) {
        for (int li = 0; li < s->eng->cfg.n_layers + s->eng->cfg.n_mtp_layers; li++) {
            kv_layer_free(&s->layers[li]);
        }
    }
    hd_free(s->layers);
    hd_free(s->last_streams);
    hd_free(s);
}

int64_t hd_seq_len(hd_seq_h s)
{
    return s->len;
}

void hd_seq_kv_parts(hd_seq_h s, hd_seq_kv_parts_t *parts)
{
    const hd_model_config_t *c = &s->eng->cfg;
    hd_numerics_t num = s->eng->numerics;
    size_t eb = kv_entry_bytes(c, num), ib = kv_ikey_bytes(c, num);
    memset(parts, 0, sizeof(*parts));
    for (int li = 0; li < c->n_layers + c->n_mtp_layers; li++) {
        const layer_kv_t *K = &s->layers[li];
        int m = c->compress_ratio[li];
        if (K->ring == NULL) {
            continue;
        }
        int64_t seen = li < c->n_layers ? s->len : (s->mtp_len > 1 ? s->mtp_len - 1 : 0);
        parts->window += (uint64_t)(seen < c->window ? seen : c->window) * eb;
        if (m == 0) {
            continue;
        }
        parts->compressed += (uint64_t)K->n_comp * eb;
        /* what kv_layer_init allocates: current window (u, z), and for CSA the previous
         * window's Ca half plus the indexer compressor's two */
        uint64_t st = (uint64_t)m * (m == 4 ? 2 : 1) * c->head_dim * 2 * sizeof(float);
        if (m == 4) {
            parts->index_keys += (uint64_t)K->n_comp * ib;
            st += (uint64_t)m * c->head_dim * 2 * sizeof(float);
            st += (uint64_t)m * 3 * c->index_head_dim * 2 * sizeof(float);
        }
        parts->state += st;
    }
}

size_t hd_seq_kv_bytes(hd_seq_h s)
{
    hd_seq_kv_parts_t p;
    hd_seq_kv_parts(s, &p);
    return (size_t)(p.window + p.compressed + p.index_keys + p.state);
}
