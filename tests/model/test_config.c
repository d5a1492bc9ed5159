/*
 * test_config.c - presets, Hub and transformers config.json parsing, validation messages,
 * and the Hub writer round trip.
 */
#include "hadal/alloc.h"
#include "hadal/config.h"
#include "hadal/json.h"
#include "hd_test.h"

#include <stdlib.h>
#include <string.h>

static const char *data_path(const char *name, char *buf, size_t len)
{
    const char *src = getenv("HD_SOURCE_DIR");
    snprintf(buf, len, "%s/tests/model/data/%s", src ? src : ".", name);
    return buf;
}

static int cfg_equal(const hd_model_config_t *a, const hd_model_config_t *b)
{
    hd_model_config_t x = *a, y = *b;
    memset(x.name, 0, sizeof(x.name));
    memset(y.name, 0, sizeof(y.name));
    return memcmp(&x, &y, sizeof(x)) == 0;
}

HD_TEST(presets_valid)
{
    char err[256];
    for (const char *const *n = hd_config_preset_names(); *n; n++) {
        hd_model_config_t c;
        HD_CHECK_INT_EQ(hd_config_preset(*n, &c), HD_OK);
        HD_CHECK_STR_EQ(c.name, *n);
        HD_CHECK_MSG(hd_config_validate(&c, err, sizeof(err)) == HD_OK, "%s: %s", *n, err);
    }
    {
        hd_model_config_t c;
        HD_CHECK_INT_EQ(hd_config_preset("nope", &c), HD_ERR_NOT_FOUND);
    }
}

HD_TEST(preset_values)
{
    hd_model_config_t f, p, a, ac, b, m;
    hd_config_preset("flash", &f);
    hd_config_preset("pro", &p);
    hd_config_preset("tiny-a", &a);
    hd_config_preset("tiny-a-clamp", &ac);
    hd_config_preset("tiny-b", &b);
    hd_config_preset("medium", &m);
    HD_CHECK_INT_EQ(f.dim, 4096);
    HD_CHECK_INT_EQ(f.n_layers, 43);
    HD_CHECK_INT_EQ(f.compress_ratio[0], 0);
    HD_CHECK_INT_EQ(f.compress_ratio[1], 0);
    HD_CHECK_INT_EQ(f.compress_ratio[2], 4);
    HD_CHECK_INT_EQ(f.compress_ratio[3], 128);
    HD_CHECK_INT_EQ(f.compress_ratio[42], 4);
    HD_CHECK_INT_EQ(f.compress_ratio[43], 0);
    HD_CHECK_NEAR(f.routed_scale, 1.5, 0);
    HD_CHECK_INT_EQ(p.dim, 7168);
    HD_CHECK_INT_EQ(p.n_layers, 61);
    HD_CHECK_INT_EQ(p.n_heads, 128);
    HD_CHECK_INT_EQ(p.q_lora_rank, 1536);
    HD_CHECK_INT_EQ(p.o_groups, 16);
    HD_CHECK_INT_EQ(p.index_topk, 1024);
    HD_CHECK_INT_EQ(p.n_routed_experts, 384);
    HD_CHECK_INT_EQ(p.moe_inter, 3072);
    HD_CHECK_NEAR(p.routed_scale, 2.5, 0);
    HD_CHECK_INT_EQ(p.compress_ratio[0], 128);
    HD_CHECK_INT_EQ(p.compress_ratio[1], 128);
    HD_CHECK_INT_EQ(p.compress_ratio[60], 4);
    HD_CHECK_INT_EQ(p.compress_ratio[61], 0);
    {
        int csa = 0, hca = 0;
        for (int i = 0; i < p.n_layers; i++) {
            csa += p.compress_ratio[i] == 4;
            hca += p.compress_ratio[i] == 128;
        }
        HD_CHECK_INT_EQ(csa, 30);
        HD_CHECK_INT_EQ(hca, 31);
    }
    {
        static const int ra[] = {0, 16, 4, 16, 4, 0, 0}, rb[] = {0, 128, 4, 128, 4, 0, 0};
        for (int i = 0; i < 7; i++) {
            HD_CHECK_INT_EQ(a.compress_ratio[i], ra[i]);
            HD_CHECK_INT_EQ(b.compress_ratio[i], rb[i]);
        }
    }
    HD_CHECK_INT_EQ(a.vocab_size, 1024);
    HD_CHECK_INT_EQ(a.window, 8);
    HD_CHECK_INT_EQ(a.index_topk, 4);
    HD_CHECK_NEAR(a.swiglu_limit, 10.0, 0);
    HD_CHECK_NEAR(ac.swiglu_limit, 0.25, 0);
    HD_CHECK_INT_EQ(b.window, 128);
    HD_CHECK_INT_EQ(b.index_topk, 16);
    HD_CHECK_INT_EQ(m.dim, 2048);
    HD_CHECK_INT_EQ(m.expert_dtype, HD_EXPERT_FP4);
    HD_CHECK_TRUE(hd_config_is_hash(&a, 2));
    HD_CHECK_TRUE(!hd_config_is_hash(&a, 3));
    HD_CHECK_TRUE(!hd_config_is_hash(&a, 6));
}

static void check_load_eq(const char *file, const char *preset, hd_expert_dtype_t ed)
{
    char path[1024], err[256];
    hd_model_config_t c, want;
    hd_status_t st = hd_config_load(data_path(file, path, sizeof(path)), &c, err, sizeof(err));
    HD_CHECK_MSG(st == HD_OK, "%s: %s", file, err);
    hd_config_preset(preset, &want);
    want.expert_dtype = ed;
    HD_CHECK_MSG(cfg_equal(&c, &want), "%s differs from preset %s", file, preset);
}

HD_TEST(parse_hub_and_transformers_fixtures)
{
    check_load_eq("hub_flash_config.json", "flash", HD_EXPERT_FP4);
    check_load_eq("hub_pro_config.json", "pro", HD_EXPERT_FP4); /* no expert_dtype: FP4 */
    check_load_eq("hf_tiny_a_config.json", "tiny-a", HD_EXPERT_BF16);
    check_load_eq("hf_flash_legacy_config.json", "flash", HD_EXPERT_BF16);
}

HD_TEST(write_hub_roundtrip)
{
    for (const char *const *n = hd_config_preset_names(); *n; n++) {
        hd_model_config_t c, back;
        char *text = NULL;
        size_t len = 0;
        char err[256];
        FILE *f = open_memstream(&text, &len);
        hd_config_preset(*n, &c);
        HD_CHECK_INT_EQ(hd_config_write_hub(&c, f), HD_OK);
        fclose(f);
        HD_CHECK_MSG(hd_config_parse(text, len, *n, &back, err, sizeof(err)) == HD_OK, "%s: %s", *n,
                     err);
        HD_CHECK_MSG(cfg_equal(&c, &back), "%s round trip differs", *n);
        free(text);
    }
    {
        hd_model_config_t c, back;
        char *text = NULL;
        size_t len = 0;
        char err[256];
        FILE *f = open_memstream(&text, &len);
        hd_config_preset("tiny-a", &c);
        c.expert_dtype = HD_EXPERT_FP8;
        hd_config_write_hub(&c, f);
        fclose(f);
        HD_CHECK_INT_EQ(hd_config_parse(text, len, "x", &back, err, sizeof(err)), HD_OK);
        HD_CHECK_INT_EQ(back.expert_dtype, HD_EXPERT_FP8);
        free(text);
    }
}

/* A Hub config text for tiny-a with key @key replaced by raw JSON @val (NULL deletes). */
static char *hub_with(const char *key, const char *val)
{
    hd_model_config_t c;
    char *text = NULL, *out;
    size_t len = 0;
    hd_buf_t b;
    char pat[128];
    const char *p, *e;
    FILE *f = open_memstream(&text, &len);
    hd_config_preset("tiny-a", &c);
    hd_config_write_hub(&c, f);
    fclose(f);
    snprintf(pat, sizeof(pat), "\n  \"%s\": ", key);
    p = strstr(text, pat);
    hd_buf_init(&b);
    if (p == NULL) {
        /* add it after the opening brace */
        hd_buf_puts(&b, "{\n");
        if (val) {
            hd_buf_printf(&b, "  \"%s\": %s,", key, val);
        }
        hd_buf_puts(&b, text + 1);
    } else {
        /* value ends at the ",\n" or "\n}" that closes the line */
        e = strchr(p + 1, '\n');
        hd_buf_append(&b, text, (size_t)(p - text));
        if (val) {
            hd_buf_printf(&b, "\n  \"%s\": %s%s", key, val, e[-1] == ',' ? "," : "");
            hd_buf_puts(&b, e);
        } else {
            if (e[-1] != ',') {
                /* last member: drop the preceding comma */
                b.len--;
                b.data[b.len] = '\0';
            }
            hd_buf_puts(&b, e);
        }
    }
    free(text);
    out = strdup(b.data);
    hd_buf_cleanup(&b);
    return out;
}

static void expect_bad(const char *key, const char *val, const char *field_word,
                       const char *why_word)
{
    char *text = hub_with(key, val);
    hd_model_config_t c;
    char err[512];
    hd_status_t st = hd_config_parse(text, strlen(text), "bad.json", &c, err, sizeof(err));
    HD_CHECK_MSG(st != HD_OK, "%s=%s accepted", key, val ? val : "(deleted)");
    HD_CHECK_MSG(strstr(err, "bad.json: field ") == err, "message \"%s\"", err);
    HD_CHECK_MSG(strstr(err, field_word) != NULL, "message \"%s\" lacks \"%s\"", err, field_word);
    if (why_word) {
        HD_CHECK_MSG(strstr(err, why_word) != NULL, "message \"%s\" lacks \"%s\"", err, why_word);
    }
    free(text);
}

HD_TEST(hub_with_self_check)
{
    char *t = hub_with("vocab_size", "1024");
    hd_model_config_t c;
    char err[256];
    HD_CHECK_MSG(hd_config_parse(t, strlen(t), "x", &c, err, sizeof(err)) == HD_OK, "%s", err);
    free(t);
    t = hub_with("some_future_key", "{\"a\": [1, 2]}");
    HD_CHECK_MSG(hd_config_parse(t, strlen(t), "x", &c, err, sizeof(err)) == HD_OK, "%s", err);
    free(t);
    t = hub_with("swiglu_limit", NULL);
    HD_CHECK_MSG(hd_config_parse(t, strlen(t), "x", &c, err, sizeof(err)) == HD_OK, "%s", err);
    free(t);
}

HD_TEST(bad_fields)
{
    expect_bad("model_type", "\"deepseek_v3\"", "model_type", "not supported");
    expect_bad("model_type", NULL, "model_type", "missing");
    expect_bad("vocab_size", "\"1024\"", "vocab_size", "integer");
    expect_bad("vocab_size", "1.5", "vocab_size", "fraction");
    expect_bad("vocab_size", "0", "vocab_size", "range");
    expect_bad("vocab_size", "99999999999", "vocab_size", "32-bit");
    expect_bad("hidden_size", "200", "hidden_size", "128");
    expect_bad("hidden_size", NULL, "hidden_size", "missing");
    expect_bad("num_hidden_layers", "-3", "num_hidden_layers", "range");
    expect_bad("num_hidden_layers", "200", "num_hidden_layers", "range");
    expect_bad("num_attention_heads", "3", "o_groups", "divide");
    expect_bad("o_groups", "3", "o_groups", "divide");
    expect_bad("num_key_value_heads", "2", "num_key_value_heads", NULL);
    expect_bad("qk_rope_head_dim", "63", "qk_rope_head_dim", "odd");
    expect_bad("qk_rope_head_dim", "128", "qk_rope_head_dim", "smaller");
    expect_bad("qk_rope_head_dim", NULL, "qk_rope_head_dim", "missing");
    expect_bad("head_dim", "160", "head_dim", "64");
    expect_bad("index_head_dim", "96", "index_head_dim", "power of two");
    expect_bad("index_head_dim", "64", "index_head_dim", "larger");
    expect_bad("index_head_dim", "16", "index_head_dim", "multiple of 32");
    expect_bad("num_experts_per_tok", "9", "num_experts_per_tok", "range");
    expect_bad("n_shared_experts", "2", "n_shared_experts", NULL);
    expect_bad("compress_ratios", "[0, 16, 4, 16, 4, 0, 2]", "compress_ratios[6]", "HCA");
    expect_bad("compress_ratios", "[0, 16, 4]", "compress_ratios", "entries");
    expect_bad("compress_ratios", "\"x\"", "compress_ratios", "list");
    expect_bad("compress_ratios", "[0, 16, 4, 16, 4, 0, -4]", "compress_ratios[6]", NULL);
    expect_bad("compress_ratios", NULL, "compress_ratios", "missing");
    expect_bad("num_nextn_predict_layers", "200", "num_nextn_predict_layers", NULL);
    expect_bad("norm_topk_prob", "false", "norm_topk_prob", NULL);
    expect_bad("norm_topk_prob", "1", "norm_topk_prob", "true or false");
    expect_bad("scoring_func", "\"softmax\"", "scoring_func", "sqrtsoftplus");
    expect_bad("topk_method", "\"greedy\"", "topk_method", NULL);
    expect_bad("hc_mult", "2", "hc_mult", NULL);
    expect_bad("hc_eps", "0", "hc_eps", NULL);
    expect_bad("rms_norm_eps", "-1e-6", "rms_norm_eps", NULL);
    expect_bad("routed_scaling_factor", "0", "routed_scaling_factor", NULL);
    expect_bad("swiglu_limit", "-1", "swiglu_limit", NULL);
    expect_bad("num_hash_layers", "7", "num_hash_layers", "range");
    expect_bad("sliding_window", "0", "sliding_window", NULL);
    expect_bad("moe_intermediate_size", "100", "moe_intermediate_size", "128");
    expect_bad("q_lora_rank", "200", "q_lora_rank", "128");
    expect_bad("rope_scaling", "{\"type\": \"linear\", \"factor\": 2}", "rope_scaling.type",
               "yarn");
    expect_bad("rope_scaling", "{\"type\": \"yarn\"}", "rope_scaling.factor", "missing");
    expect_bad("rope_scaling",
               "{\"type\": \"yarn\", \"factor\": 16, \"original_max_position_embeddings\": 65536, "
               "\"mscale\": 1.0}",
               "rope_scaling.mscale", NULL);
    expect_bad("rope_scaling",
               "{\"type\": \"yarn\", \"factor\": 16, \"original_max_position_embeddings\": 65536, "
               "\"beta_fast\": 1, \"beta_slow\": 32}",
               "beta_fast", NULL);
    expect_bad("rope_theta", "\"big\"", "rope_theta", "number");
    expect_bad("expert_dtype", "\"int4\"", "expert_dtype", NULL);
    expect_bad("quantization_config", "{\"quant_method\": \"awq\"}", "quant_method", NULL);
    expect_bad("quantization_config", "{\"weight_block_size\": [64, 64]}", "weight_block_size",
               NULL);
    expect_bad("tie_word_embeddings", "true", "tie_word_embeddings", NULL);
    expect_bad("attention_bias", "true", "attention_bias", NULL);
    expect_bad("eos_token_id", "5000", "eos_token_id", "range");
    expect_bad("layer_types", "[\"sliding_attention\"]", "layer_types", "entries");
    expect_bad("layer_types",
               "[\"sliding_attention\", \"sliding_attention\", \"sliding_attention\", "
               "\"sliding_attention\", \"sliding_attention\", \"full_attention\"]",
               "layer_types", "full_attention");
    expect_bad("mlp_layer_types", "[\"moe\", \"hash_moe\", \"moe\", \"moe\", \"moe\", \"moe\"]",
               "mlp_layer_types", "first");
    expect_bad("partial_rotary_factor", "0.3", "partial_rotary_factor", NULL);
}

HD_TEST(bad_json_and_root)
{
    hd_model_config_t c;
    char err[256];
    const char *dup = "{\"model_type\": \"deepseek_v4\", \"model_type\": \"deepseek_v4\"}";
    HD_CHECK_INT_EQ(hd_config_parse("{", 1, "g.json", &c, err, sizeof(err)), HD_ERR_FORMAT);
    HD_CHECK_MSG(strstr(err, "g.json: invalid JSON") != NULL, "%s", err);
    HD_CHECK_INT_EQ(hd_config_parse("[]", 2, "g.json", &c, err, sizeof(err)), HD_ERR_FORMAT);
    HD_CHECK_MSG(strstr(err, "g.json: field (root)") != NULL, "%s", err);
    HD_CHECK_INT_EQ(hd_config_parse(dup, strlen(dup), "d.json", &c, err, sizeof(err)),
                    HD_ERR_FORMAT);
    HD_CHECK_MSG(strstr(err, "d.json") != NULL && strstr(err, "uplicate") != NULL, "%s", err);
    HD_CHECK_INT_EQ(hd_config_load("/nonexistent/dir/x.json", &c, err, sizeof(err)),
                    HD_ERR_NOT_FOUND);
    HD_CHECK_MSG(strstr(err, "/nonexistent/dir/x.json") != NULL, "%s", err);
}

HD_TEST(transformers_variants)
{
    char path[1024], err[256];
    char *text = NULL;
    size_t len = 0;
    hd_model_config_t c;
    /* nested rope_parameters with a non-V4 attention_factor is refused */
    HD_CHECK_INT_EQ(hd_file_read_all(data_path("hf_tiny_a_config.json", path, sizeof(path)),
                                     1 << 20, &text, &len),
                    HD_OK);
    {
        char *p = strstr(text, "\"attention_factor\": 1.0");
        HD_CHECK_TRUE(p != NULL);
        if (p) {
            memcpy(p, "\"attention_factor\": 1.2", strlen("\"attention_factor\": 1.2"));
            HD_CHECK_INT_EQ(hd_config_parse(text, len, "hf.json", &c, err, sizeof(err)),
                            HD_ERR_FORMAT);
            HD_CHECK_MSG(strstr(err, "hf.json: field rope_parameters.compress.attention_factor") !=
                             NULL,
                         "%s", err);
            memcpy(p, "\"attention_factor\": 1.0", strlen("\"attention_factor\": 1.0"));
        }
    }
    {
        char *p = strstr(text, "\"heavily_compressed_attention\": 16");
        HD_CHECK_TRUE(p != NULL);
        if (p) {
            memcpy(p, "\"heavily_compressed_attention\": 32", 34);
            HD_CHECK_INT_EQ(hd_config_parse(text, len, "hf.json", &c, err, sizeof(err)), HD_OK);
            HD_CHECK_INT_EQ(c.compress_ratio[1], 32);
            HD_CHECK_INT_EQ(c.compress_ratio[2], 4);
            HD_CHECK_INT_EQ(c.compress_ratio[6], 0);
            memcpy(p, "\"heavily_compressed_attention\": 02", 34);
            HD_CHECK_INT_EQ(hd_config_parse(text, len, "hf.json", &c, err, sizeof(err)),
                            HD_ERR_FORMAT);
        }
    }
    hd_free(text);
}
