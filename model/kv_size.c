/*
 * kv_size.c - KV-cache bytes per sequence and layer (spec §7.1) for any config and for the
 * packed or bf16 cache formats. Used by `hadal info --kv` and by the KV allocator to report
 * what it holds, so the printed arithmetic and the real allocation cannot drift apart.
 */
#include "hadal/kv_size.h"

size_t hd_kv_entry_bytes(const hd_model_config_t *cfg, hd_kv_format_t fmt)
{
    size_t nope = (size_t)(cfg->head_dim - cfg->rope_dim);
    if (fmt == HD_KV_FMT_BF16) {
        return 2 * (size_t)cfg->head_dim;
    }
    /* e4m3 nope + one e8m0 per 64 nope channels + bf16 rope */
    return nope + (nope + 63) / 64 + 2 * (size_t)cfg->rope_dim;
}

size_t hd_kv_index_key_bytes(const hd_model_config_t *cfg, hd_kv_format_t fmt)
{
    size_t di = (size_t)cfg->index_head_dim;
    if (fmt == HD_KV_FMT_BF16) {
        return 2 * di;
    }
    /* e2m1 pairs + one e8m0 per 32 */
    return (di + 1) / 2 + (di + 31) / 32;
}

uint64_t hd_kv_state_bytes(const hd_model_config_t *cfg, int ratio)
{
    uint64_t d = (uint64_t)cfg->head_dim, di = (uint64_t)cfg->index_head_dim;
    if (ratio == 0) {
        return 0;
    }
    if (ratio == 4) {
        /* overlap (c = 2): kv + score buffers of [c*m, c*D] fp32, main and indexer */
        return 2 * 8 * (2 * d) * 4 + 2 * 8 * (2 * di) * 4;
    }
    return 2 * (uint64_t)ratio * d * 4;
}

void hd_kv_layer_bytes(const hd_model_config_t *cfg, int layer, uint64_t len, hd_kv_format_t fmt,
                       hd_kv_bytes_t *out)
{
    int ratio = cfg->compress_ratio[layer];
    uint64_t be = hd_kv_entry_bytes(cfg, fmt), bi = hd_kv_index_key_bytes(cfg, fmt);
    uint64_t w = (uint64_t)cfg->window;

    out->window = (len < w ? len : w) * be;
    out->compressed = ratio ? len / (uint64_t)ratio * be : 0;
    out->index_keys = ratio == 4 ? len / 4 * bi : 0;
    out->state = hd_kv_state_bytes(cfg, ratio);
    out->total = out->window + out->compressed + out->index_keys + out->state;
}

void hd_kv_seq_bytes(const hd_model_config_t *cfg, uint64_t len, hd_kv_format_t fmt,
                     bool include_mtp, hd_kv_bytes_t *out)
{
    int n = cfg->n_layers + (include_mtp ? cfg->n_mtp_layers : 0);
    *out = (hd_kv_bytes_t){0};
    for (int i = 0; i < n; i++) {
        hd_kv_bytes_t l;
        hd_kv_layer_bytes(cfg, i, len, fmt, &l);
        out->window += l.window;
        out->compressed += l.compressed;
        out->index_keys += l.index_keys;
        out->state += l.state;
        out->total += l.total;
    }
}

double hd_kv_bytes_per_token(const hd_model_config_t *cfg, hd_kv_format_t fmt, bool include_mtp)
{
    int n = cfg->n_layers + (include_mtp ? cfg->n_mtp_layers : 0);
    double be = (double)hd_kv_entry_bytes(cfg, fmt), bi = (double)hd_kv_index_key_bytes(cfg, fmt);
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        int r = cfg->compress_ratio[i];
        if (r == 4) {
            s += (be + bi) / 4.0;
        } else if (r != 0) {
            s += be / r;
        }
    }
    return s;
}
