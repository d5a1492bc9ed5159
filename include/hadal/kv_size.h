/*
 * hadal/kv_size.h - KV-cache byte arithmetic for one sequence (spec §7.1), generalised to
 * any head_dim / rope_dim / index_head_dim / window / ratios.
 *
 * Per layer at context length L (Be = bytes per head_dim entry, Bi = per indexer key):
 *   every layer:  window      min(L, W) * Be
 *   CSA (ratio 4): compressed floor(L/4) * Be, index keys floor(L/4) * Bi
 *   HCA (ratio m): compressed floor(L/m) * Be
 *   CSA/HCA:       constant compressor state (the official fp32 buffers, any format).
 * Formats: PACKED stores the nope channels as e4m3 + one e8m0 per 64, the rope channels as
 * bf16 (583 B for D = 512, R = 64) and indexer keys as e2m1 + one e8m0 per 32 (68 B for 128);
 * BF16 stores everything as bf16 (1024 B / 256 B). Lossless either way: the official model
 * FP8/FP4-simulates those values before caching. The KV allocator reports its real usage
 * with these same functions. Pure functions, thread-safe.
 */
#ifndef HADAL_KV_SIZE_H
#define HADAL_KV_SIZE_H

#include "hadal/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    HD_KV_FMT_PACKED = 0, /* fp8 nope + e8m0/64 + bf16 rope; fp4 indexer keys + e8m0/32 */
    HD_KV_FMT_BF16 = 1,   /* the official bf16 buffers */
} hd_kv_format_t;

typedef struct {
    uint64_t window;     /* min(L, W) entries * Be */
    uint64_t compressed; /* floor(L / ratio) entries * Be (CSA and HCA) */
    uint64_t index_keys; /* CSA: floor(L / 4) keys * Bi */
    uint64_t state;      /* compressor state, constant in L */
    uint64_t total;      /* sum of the above */
} hd_kv_bytes_t;

/* Be: bytes of one head_dim-wide KV entry. */
size_t hd_kv_entry_bytes(const hd_model_config_t *cfg, hd_kv_format_t fmt);
/* Bi: bytes of one index_head_dim-wide indexer key. */
size_t hd_kv_index_key_bytes(const hd_model_config_t *cfg, hd_kv_format_t fmt);
/*
 * Compressor state of a layer of @ratio (fp32 kv + score buffers as the official code lays
 * them out): CSA 2*8*(2D)*4 main + 2*8*(2Di)*4 indexer; HCA 2*m*D*4; SWA 0.
 */
uint64_t hd_kv_state_bytes(const hd_model_config_t *cfg, int ratio);
/* Bytes of block @layer (MTP blocks included) for a sequence of @len tokens. */
void hd_kv_layer_bytes(const hd_model_config_t *cfg, int layer, uint64_t len, hd_kv_format_t fmt,
                       hd_kv_bytes_t *out);
/* Sum over the main layers, plus the MTP blocks when @include_mtp. */
void hd_kv_seq_bytes(const hd_model_config_t *cfg, uint64_t len, hd_kv_format_t fmt,
                     bool include_mtp, hd_kv_bytes_t *out);
/* Asymptotic bytes per token (window and state excluded): sum of (Be+Bi)/4 and Be/m. */
double hd_kv_bytes_per_token(const hd_model_config_t *cfg, hd_kv_format_t fmt, bool include_mtp);

#endif /* HADAL_KV_SIZE_H */
