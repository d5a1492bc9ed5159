/*
 * test_kv_size.c - KV-cache arithmetic against the numbers of spec §7.1.
 */
#include "hadal/config.h"
#include "hadal/kv_size.h"
#include "hd_test.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

HD_TEST(entry_sizes)
{
    hd_model_config_t f, a;
    hd_config_preset("flash", &f);
    hd_config_preset("tiny-a", &a);
    HD_CHECK_INT_EQ(hd_kv_entry_bytes(&f, HD_KV_FMT_PACKED), 583);
    HD_CHECK_INT_EQ(hd_kv_index_key_bytes(&f, HD_KV_FMT_PACKED), 68);
    HD_CHECK_INT_EQ(hd_kv_entry_bytes(&f, HD_KV_FMT_BF16), 1024);
    HD_CHECK_INT_EQ(hd_kv_index_key_bytes(&f, HD_KV_FMT_BF16), 256);
    /* tiny-a: D = 128, R = 64: 64 e4m3 + 1 e8m0 + 128 bf16 bytes */
    HD_CHECK_INT_EQ(hd_kv_entry_bytes(&a, HD_KV_FMT_PACKED), 64 + 1 + 128);
    HD_CHECK_INT_EQ(hd_kv_state_bytes(&f, 4), 65536 + 16384);
    HD_CHECK_INT_EQ(hd_kv_state_bytes(&f, 128), 524288);
    HD_CHECK_INT_EQ(hd_kv_state_bytes(&f, 0), 0);
}

HD_TEST(per_token_asymptotic)
{
    hd_model_config_t f, p;
    hd_config_preset("flash", &f);
    hd_config_preset("pro", &p);
    HD_CHECK_NEAR(hd_kv_bytes_per_token(&f, HD_KV_FMT_PACKED, false), 3509, 0.5);
    HD_CHECK_NEAR(hd_kv_bytes_per_token(&p, HD_KV_FMT_PACKED, false), 5024, 0.5);
    HD_CHECK_NEAR(hd_kv_bytes_per_token(&f, HD_KV_FMT_BF16, false), 6880, 1e-9);
    HD_CHECK_NEAR(hd_kv_bytes_per_token(&p, HD_KV_FMT_BF16, false), 9848, 1e-9);
    /* the MTP block is a window-only layer: no per-token growth */
    HD_CHECK_NEAR(hd_kv_bytes_per_token(&f, HD_KV_FMT_PACKED, true),
                  hd_kv_bytes_per_token(&f, HD_KV_FMT_PACKED, false), 1e-9);
}

HD_TEST(one_million_tokens)
{
    hd_model_config_t f, p;
    hd_kv_bytes_t b;
    const uint64_t L = 1048576;
    hd_config_preset("flash", &f);
    hd_config_preset("pro", &p);
    hd_kv_seq_bytes(&f, L, HD_KV_FMT_PACKED, false, &b);
    HD_CHECK_NEAR((b.compressed + b.index_keys) / GIB, 3.43, 0.005);
    HD_CHECK_INT_EQ(b.compressed + b.index_keys,
                    21ull * (L / 4) * (583 + 68) + 20ull * (L / 128) * 583);
    HD_CHECK_INT_EQ(b.window, 43ull * 128 * 583); /* ~5.5 MiB (spec) */
    HD_CHECK_INT_EQ(b.state, 21ull * 81920 + 20ull * 524288);
    HD_CHECK_TRUE(b.total == b.window + b.compressed + b.index_keys + b.state);
    hd_kv_seq_bytes(&p, L, HD_KV_FMT_PACKED, false, &b);
    HD_CHECK_NEAR((b.compressed + b.index_keys) / GIB, 4.91, 0.005);
    HD_CHECK_NEAR(b.state / (1024.0 * 1024.0), 18.0, 0.5); /* ~18 MiB (spec) */
    hd_kv_seq_bytes(&f, L, HD_KV_FMT_BF16, false, &b);
    HD_CHECK_NEAR((b.compressed + b.index_keys) / GIB, 6.72, 0.005);
    hd_kv_seq_bytes(&p, L, HD_KV_FMT_BF16, false, &b);
    HD_CHECK_NEAR((b.compressed + b.index_keys) / GIB, 9.62, 0.005);
}

HD_TEST(short_context_and_layers)
{
    hd_model_config_t a;
    hd_kv_bytes_t b;
    hd_config_preset("tiny-a", &a); /* ratios 0,16,4,16,4,0 + MTP 0; window 8 */
    hd_kv_layer_bytes(&a, 0, 5, HD_KV_FMT_BF16, &b);
    HD_CHECK_INT_EQ(b.total, 5 * 256);
    hd_kv_layer_bytes(&a, 2, 97, HD_KV_FMT_BF16, &b);
    HD_CHECK_INT_EQ(b.window, 8 * 256);
    HD_CHECK_INT_EQ(b.compressed, 24 * 256);
    HD_CHECK_INT_EQ(b.index_keys, 24 * 256);
    hd_kv_layer_bytes(&a, 1, 97, HD_KV_FMT_BF16, &b);
    HD_CHECK_INT_EQ(b.compressed, 6 * 256);
    HD_CHECK_INT_EQ(b.index_keys, 0);
    HD_CHECK_INT_EQ(b.state, 2 * 16 * 128 * 4);
    hd_kv_layer_bytes(&a, 6, 97, HD_KV_FMT_BF16, &b); /* MTP */
    HD_CHECK_INT_EQ(b.total, 8 * 256);
}
