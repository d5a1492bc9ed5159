/*
 * test_kv_pack.c - the packed KV formats of official numerics: a stored 512-d entry is
 * 448 e4m3 + 7 e8m0 + 64 bf16 = 583 bytes and decodes to exactly the FP8 simulation of the
 * nope dims (blocks of 64, hd_fp8_sim_blocks) and bf16 of the rope dims; an indexer key is
 * 64 + 4 = 68 bytes and decodes to the FP4 simulation (blocks of 32). Plain numerics store fp32.
 */
#include "hd_test.h"
#include "../../model/engine_impl.h"
#include "hadal/quant.h"
#include "hadal/rng.h"

static void fill(float *v, int n, hd_rng_t *r, double scale)
{
    for (int i = 0; i < n; i++) {
        v[i] = (float)(hd_rng_normal(r) * scale * (1 + (i % 7)));
    }
}

HD_TEST(entry_pack_is_fp8_sim_and_bf16)
{
    hd_model_config_t c;
    HD_CHECK_INT_EQ(hd_config_preset("flash", &c), HD_OK);
    HD_CHECK_INT_EQ(kv_entry_bytes(&c, HD_NUMERICS_OFFICIAL), 583);
    HD_CHECK_INT_EQ(kv_ikey_bytes(&c, HD_NUMERICS_OFFICIAL), 68);
    HD_CHECK_INT_EQ(kv_entry_bytes(&c, HD_NUMERICS_PLAIN), 2048);
    hd_rng_t r;
    hd_rng_seed(&r, 5);
    for (int trial = 0; trial < 200; trial++) {
        float v[512], want[512], back[512];
        uint8_t buf[583];
        fill(v, 512, &r, trial % 2 ? 1e-3 : 3.0);
        if (trial == 7) {
            memset(v, 0, sizeof(v)); /* all-zero block: amax floor */
        }
        memcpy(want, v, sizeof(v));
        hd_fp8_sim_blocks(want, 448, 64);
        for (int i = 448; i < 512; i++) {
            want[i] = hd_round_bf16(want[i]);
        }
        kv_entry_store(&c, HD_NUMERICS_OFFICIAL, v, buf);
        kv_entry_load(&c, HD_NUMERICS_OFFICIAL, buf, back);
        HD_CHECK_TRUE(memcmp(v, want, sizeof(v)) == 0);    /* store rewrites with stored values */
        HD_CHECK_TRUE(memcmp(back, want, sizeof(v)) == 0); /* and they decode back exactly */
    }
}

HD_TEST(index_key_pack_is_fp4_sim)
{
    hd_model_config_t c;
    HD_CHECK_INT_EQ(hd_config_preset("pro", &c), HD_OK);
    hd_rng_t r;
    hd_rng_seed(&r, 9);
    for (int trial = 0; trial < 200; trial++) {
        float v[128], want[128], back[128];
        uint8_t buf[68];
        fill(v, 128, &r, trial % 3 ? 0.5 : 40.0);
        memcpy(want, v, sizeof(v));
        hd_fp4_sim_blocks(want, 128, 32);
        kv_ikey_store(&c, HD_NUMERICS_OFFICIAL, v, buf);
        kv_ikey_load(&c, HD_NUMERICS_OFFICIAL, buf, back);
        HD_CHECK_TRUE(memcmp(v, want, sizeof(v)) == 0);
        HD_CHECK_TRUE(memcmp(back, want, sizeof(v)) == 0);
    }
}

HD_TEST(plain_pack_is_identity)
{
    hd_model_config_t c;
    HD_CHECK_INT_EQ(hd_config_preset("tiny-a", &c), HD_OK);
    float v[128], back[128];
    uint8_t buf[512];
    for (int i = 0; i < 128; i++) {
        v[i] = (float)i * 0.37f - 11.0f;
    }
    kv_entry_store(&c, HD_NUMERICS_PLAIN, v, buf);
    kv_entry_load(&c, HD_NUMERICS_PLAIN, buf, back);
    HD_CHECK_TRUE(memcmp(v, back, sizeof(v)) == 0);
}
