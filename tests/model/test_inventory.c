/*
 * test_inventory.c - the official tensor inventory against spec §6.1/§6.2: exact tensor
 * counts, bytes and element totals of Flash and Pro, sample shapes, and the filters.
 */
#include "hadal/config.h"
#include "hadal/inventory.h"
#include "hd_test.h"

#include <string.h>

static void expect_tensor(const hd_inv_t *inv, const char *name, hd_dtype_t dt, int64_t d0,
                          int64_t d1)
{
    const hd_inv_tensor_t *t = hd_inv_find(inv, name);
    HD_CHECK_MSG(t != NULL, "%s missing", name);
    if (t == NULL) {
        return;
    }
    HD_CHECK_MSG(t->dtype == dt, "%s dtype %s", name, hd_dtype_name(t->dtype));
    HD_CHECK_MSG(t->shape[0] == d0 && (d1 < 0 ? t->ndim == 1 : t->shape[1] == d1),
                 "%s shape [%lld, %lld]", name, (long long)t->shape[0], (long long)t->shape[1]);
}

HD_TEST(flash_totals)
{
    hd_model_config_t c;
    hd_inv_t inv;
    hd_config_preset("flash", &c);
    HD_CHECK_INT_EQ(hd_inv_init(&inv, &c, NULL), HD_OK);
    HD_CHECK_INT_EQ(inv.n, 69187);
    /* spec §6.1: index total_size */
    HD_CHECK_INT_EQ(hd_inv_total_bytes(&inv), 159609485896ull);
    expect_tensor(&inv, "embed.weight", HD_DT_BF16, 129280, 4096);
    expect_tensor(&inv, "hc_head_fn", HD_DT_F32, 4, 16384);
    expect_tensor(&inv, "hc_head_scale", HD_DT_F32, 1, -1);
    expect_tensor(&inv, "layers.0.hc_attn_fn", HD_DT_F32, 24, 16384);
    expect_tensor(&inv, "layers.0.hc_ffn_scale", HD_DT_F32, 3, -1);
    expect_tensor(&inv, "layers.0.attn.wq_a.scale", HD_DT_F8_E8M0, 8, 32);
    expect_tensor(&inv, "layers.0.attn.wq_b.weight", HD_DT_F8_E4M3, 32768, 1024);
    expect_tensor(&inv, "layers.0.attn.wq_b.scale", HD_DT_F8_E8M0, 256, 8);
    expect_tensor(&inv, "layers.0.attn.wo_a.weight", HD_DT_F8_E4M3, 8192, 4096);
    expect_tensor(&inv, "layers.0.attn.wo_b.scale", HD_DT_F8_E8M0, 32, 64);
    expect_tensor(&inv, "layers.0.ffn.gate.tid2eid", HD_DT_I64, 129280, 6);
    HD_CHECK_TRUE(hd_inv_find(&inv, "layers.0.ffn.gate.bias") == NULL);
    HD_CHECK_TRUE(hd_inv_find(&inv, "layers.0.attn.compressor.ape") == NULL);
    expect_tensor(&inv, "layers.3.ffn.gate.bias", HD_DT_F32, 256, -1);
    expect_tensor(&inv, "layers.2.attn.compressor.wkv.weight", HD_DT_BF16, 1024, 4096);
    expect_tensor(&inv, "layers.2.attn.compressor.ape", HD_DT_F32, 4, 1024);
    expect_tensor(&inv, "layers.2.attn.indexer.wq_b.scale", HD_DT_F8_E8M0, 64, 8);
    expect_tensor(&inv, "layers.2.attn.indexer.weights_proj.weight", HD_DT_BF16, 64, 4096);
    expect_tensor(&inv, "layers.2.attn.indexer.compressor.ape", HD_DT_F32, 4, 256);
    expect_tensor(&inv, "layers.2.attn.indexer.compressor.norm.weight", HD_DT_BF16, 128, -1);
    expect_tensor(&inv, "layers.3.attn.compressor.wgate.weight", HD_DT_BF16, 512, 4096);
    expect_tensor(&inv, "layers.3.attn.compressor.ape", HD_DT_F32, 128, 512);
    HD_CHECK_TRUE(hd_inv_find(&inv, "layers.3.attn.indexer.wq_b.weight") == NULL);
    expect_tensor(&inv, "layers.42.ffn.experts.255.w1.weight", HD_DT_I8, 2048, 2048);
    expect_tensor(&inv, "layers.42.ffn.experts.255.w1.scale", HD_DT_F8_E8M0, 2048, 128);
    expect_tensor(&inv, "layers.42.ffn.experts.0.w2.weight", HD_DT_I8, 4096, 1024);
    expect_tensor(&inv, "layers.42.ffn.experts.0.w2.scale", HD_DT_F8_E8M0, 4096, 64);
    expect_tensor(&inv, "layers.42.ffn.shared_experts.w2.scale", HD_DT_F8_E8M0, 32, 16);
    expect_tensor(&inv, "mtp.0.e_proj.scale", HD_DT_F8_E8M0, 32, 32);
    expect_tensor(&inv, "mtp.0.hnorm.weight", HD_DT_BF16, 4096, -1);
    expect_tensor(&inv, "mtp.0.hc_head_base", HD_DT_F32, 4, -1);
    expect_tensor(&inv, "mtp.0.ffn.gate.bias", HD_DT_F32, 256, -1);
    expect_tensor(&inv, "mtp.0.attn.attn_sink", HD_DT_F32, 64, -1);
    HD_CHECK_TRUE(hd_inv_find(&inv, "mtp.0.attn.compressor.wkv.weight") == NULL);
    HD_CHECK_TRUE(hd_inv_find(&inv, "mtp.0.embed.weight") == NULL);
    /* weight then scale, always adjacent */
    for (size_t i = 0; i < inv.n; i++) {
        if (inv.t[i].role == HD_INV_FP8_WEIGHT || inv.t[i].role == HD_INV_FP4_WEIGHT) {
            HD_CHECK_TRUE(i + 1 < inv.n && inv.t[i + 1].role == inv.t[i].role + 1);
        }
    }
    hd_inv_cleanup(&inv);
}

HD_TEST(pro_totals)
{
    hd_model_config_t c;
    hd_inv_t inv;
    uint64_t elems = 0;
    hd_config_preset("pro", &c);
    HD_CHECK_INT_EQ(hd_inv_init(&inv, &c, NULL), HD_OK);
    HD_CHECK_INT_EQ(inv.n, 145116);
    for (size_t i = 0; i < inv.n; i++) {
        elems += (uint64_t)inv.t[i].shape[0] * (inv.t[i].ndim > 1 ? inv.t[i].shape[1] : 1);
    }
    /* spec §6.1: stored elements (FP4 pairs count as one int8) */
    HD_CHECK_INT_EQ(elems, 861608274846ull);
    expect_tensor(&inv, "layers.0.attn.wq_a.scale", HD_DT_F8_E8M0, 12, 56);
    expect_tensor(&inv, "layers.0.attn.compressor.ape", HD_DT_F32, 128, 512);
    expect_tensor(&inv, "layers.1.attn.wo_a.scale", HD_DT_F8_E8M0, 128, 32);
    expect_tensor(&inv, "layers.60.attn.wo_b.scale", HD_DT_F8_E8M0, 56, 128);
    expect_tensor(&inv, "layers.60.attn.indexer.wq_b.scale", HD_DT_F8_E8M0, 64, 12);
    expect_tensor(&inv, "layers.5.ffn.experts.383.w1.weight", HD_DT_I8, 3072, 3584);
    expect_tensor(&inv, "layers.5.ffn.experts.383.w2.scale", HD_DT_F8_E8M0, 7168, 96);
    expect_tensor(&inv, "layers.5.ffn.shared_experts.w1.scale", HD_DT_F8_E8M0, 24, 56);
    expect_tensor(&inv, "mtp.0.h_proj.scale", HD_DT_F8_E8M0, 56, 56);
    expect_tensor(&inv, "mtp.0.hc_head_fn", HD_DT_F32, 4, 28672);
    hd_inv_cleanup(&inv);
}

HD_TEST(filters)
{
    hd_model_config_t c;
    hd_inv_t all, inv;
    bool experts[8] = {false, true, false, false, false, false, true, false};
    hd_inv_filter_t f;
    size_t per_expert = 6;
    hd_config_preset("tiny-a", &c);
    HD_CHECK_INT_EQ(hd_inv_init(&all, &c, NULL), HD_OK);
    /* tiny-a: 6 globals; per layer 21 + 2 + 48 + 6; CSA +11 (layers 2,4), HCA +4 (1,3);
       MTP = ratio-0 layer + 10 */
    HD_CHECK_INT_EQ(all.n, 6 + 6 * 77 + 2 * 11 + 2 * 4 + 77 + 10);
    /* middle blocks only: no globals */
    f = (hd_inv_filter_t){.layer_lo = 2, .layer_hi = 4, .globals = HD_INV_GLOBALS_AUTO};
    HD_CHECK_INT_EQ(hd_inv_init(&inv, &c, &f), HD_OK);
    HD_CHECK_INT_EQ(inv.n, 2 * 77 + 11 + 4);
    HD_CHECK_TRUE(hd_inv_find(&inv, "embed.weight") == NULL);
    HD_CHECK_TRUE(hd_inv_find(&inv, "layers.2.attn_norm.weight") != NULL);
    HD_CHECK_TRUE(hd_inv_find(&inv, "layers.4.attn_norm.weight") == NULL);
    hd_inv_cleanup(&inv);
    /* first stage: embed only */
    f = (hd_inv_filter_t){.layer_lo = 0, .layer_hi = 1, .globals = HD_INV_GLOBALS_AUTO};
    HD_CHECK_INT_EQ(hd_inv_init(&inv, &c, &f), HD_OK);
    HD_CHECK_TRUE(hd_inv_find(&inv, "embed.weight") != NULL);
    HD_CHECK_TRUE(hd_inv_find(&inv, "head.weight") == NULL);
    hd_inv_cleanup(&inv);
    /* last stage: norm, hc_head, head */
    f = (hd_inv_filter_t){.layer_lo = 5, .layer_hi = 6, .globals = HD_INV_GLOBALS_AUTO};
    HD_CHECK_INT_EQ(hd_inv_init(&inv, &c, &f), HD_OK);
    HD_CHECK_INT_EQ(inv.n, 77 + 5);
    HD_CHECK_TRUE(hd_inv_find(&inv, "embed.weight") == NULL);
    hd_inv_cleanup(&inv);
    /* MTP only: embed + head */
    f = (hd_inv_filter_t){.layer_lo = 6, .layer_hi = 7, .globals = HD_INV_GLOBALS_AUTO};
    HD_CHECK_INT_EQ(hd_inv_init(&inv, &c, &f), HD_OK);
    HD_CHECK_INT_EQ(inv.n, 87 + 2);
    HD_CHECK_TRUE(hd_inv_find(&inv, "mtp.0.e_proj.weight") != NULL);
    hd_inv_cleanup(&inv);
    /* expert subset, no globals */
    f = (hd_inv_filter_t){
        .layer_lo = 0, .layer_hi = 7, .globals = HD_INV_GLOBALS_NONE, .experts = experts};
    HD_CHECK_INT_EQ(hd_inv_init(&inv, &c, &f), HD_OK);
    HD_CHECK_INT_EQ(inv.n, all.n - 6 - 7 * 6 * per_expert);
    HD_CHECK_TRUE(hd_inv_find(&inv, "layers.0.ffn.experts.1.w2.scale") != NULL);
    HD_CHECK_TRUE(hd_inv_find(&inv, "layers.0.ffn.experts.2.w2.scale") == NULL);
    hd_inv_cleanup(&inv);
    /* bad ranges */
    f = (hd_inv_filter_t){.layer_lo = 3, .layer_hi = 2};
    HD_CHECK_INT_EQ(hd_inv_init(&inv, &c, &f), HD_ERR_INVALID_PARAM);
    f = (hd_inv_filter_t){.layer_lo = 0, .layer_hi = 8};
    HD_CHECK_INT_EQ(hd_inv_init(&inv, &c, &f), HD_ERR_INVALID_PARAM);
    hd_inv_cleanup(&all);
}

HD_TEST(expert_formats)
{
    hd_model_config_t c;
    hd_inv_t inv;
    hd_config_preset("tiny-a", &c);
    c.expert_dtype = HD_EXPERT_FP8;
    HD_CHECK_INT_EQ(hd_inv_init(&inv, &c, NULL), HD_OK);
    expect_tensor(&inv, "layers.0.ffn.experts.3.w1.weight", HD_DT_F8_E4M3, 128, 256);
    expect_tensor(&inv, "layers.0.ffn.experts.3.w1.scale", HD_DT_F8_E8M0, 1, 2);
    expect_tensor(&inv, "layers.0.ffn.experts.3.w2.scale", HD_DT_F8_E8M0, 2, 1);
    hd_inv_cleanup(&inv);
    c.expert_dtype = HD_EXPERT_BF16;
    HD_CHECK_INT_EQ(hd_inv_init(&inv, &c, NULL), HD_OK);
    expect_tensor(&inv, "layers.0.ffn.experts.3.w2.weight", HD_DT_BF16, 256, 128);
    HD_CHECK_TRUE(hd_inv_find(&inv, "layers.0.ffn.experts.3.w2.scale") == NULL);
    expect_tensor(&inv, "layers.0.ffn.shared_experts.w2.scale", HD_DT_F8_E8M0, 2, 1);
    hd_inv_cleanup(&inv);
}
