/*
 * config.c - the DeepSeek-V4 model configuration: built-in presets, the config.json parser
 * (Hub form with official key names, and the form transformers saves for DeepseekV4Config),
 * validation of every field and their relations, and the Hub-form writer.
 *
 * Everything that reads a model (weights binding, gen-model, the KV allocator, hadal info)
 * starts from one hd_model_config_t filled here; values are validated once, at parse time.
 */
#include "hadal/config.h"
#include "hadal/alloc.h"
#include "hadal/json.h"
#include "hadal/log.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#define CFG_MAX_BYTES (4u << 20) /* a config.json is a few KiB; refuse anything huge */

/* ---- presets ---- */

static const char *const preset_names[] = {"flash",  "pro",    "tiny-a", "tiny-a-clamp",
                                           "tiny-b", "medium", NULL};

const char *const *hd_config_preset_names(void)
{
    return preset_names;
}

/* Fields shared by every preset: the V4 constants of spec §1.1. */
static void preset_common(hd_model_config_t *c)
{
    memset(c, 0, sizeof(*c));
    c->vocab_size = 129280;
    c->head_dim = 512;
    c->rope_dim = 64;
    c->window = 128;
    c->rope_theta = 10000.0;
    c->compress_rope_theta = 160000.0;
    c->rope_factor = 16.0;
    c->rope_orig_max_pos = 65536;
    c->beta_fast = 32.0;
    c->beta_slow = 1.0;
    c->max_pos = 1048576;
    c->n_mtp_layers = 1;
    c->index_n_heads = 64;
    c->index_head_dim = 128;
    c->n_shared_experts = 1;
    c->n_experts_per_tok = 6;
    c->n_hash_layers = 3;
    c->swiglu_limit = 10.0;
    c->norm_topk_prob = true;
    c->hc_mult = 4;
    c->hc_sinkhorn_iters = 20;
    c->hc_eps = 1e-6;
    c->norm_eps = 1e-6;
    c->bos_id = 0;
    c->eos_id = 1;
    c->expert_dtype = HD_EXPERT_FP4;
}

static void preset_flash(hd_model_config_t *c)
{
    preset_common(c);
    c->dim = 4096;
    c->n_layers = 43;
    c->n_heads = 64;
    c->q_lora_rank = 1024;
    c->o_lora_rank = 1024;
    c->o_groups = 8;
    c->index_topk = 512;
    c->n_routed_experts = 256;
    c->moe_inter = 2048;
    c->routed_scale = 1.5;
    /* [0, 0, 4, 128, 4, 128, ..., 4, 0(MTP)] */
    for (int i = 0; i < c->n_layers; i++) {
        c->compress_ratio[i] = i < 2 ? 0 : (i % 2 == 0 ? 4 : 128);
    }
    c->compress_ratio[c->n_layers] = 0;
}

static void preset_pro(hd_model_config_t *c)
{
    preset_common(c);
    c->dim = 7168;
    c->n_layers = 61;
    c->n_heads = 128;
    c->q_lora_rank = 1536;
    c->o_lora_rank = 1024;
    c->o_groups = 16;
    c->index_topk = 1024;
    c->n_routed_experts = 384;
    c->moe_inter = 3072;
    c->routed_scale = 2.5;
    /* [128, 128, 4, 128, 4, ..., 4, 0(MTP)] */
    for (int i = 0; i < c->n_layers; i++) {
        c->compress_ratio[i] = i < 2 ? 128 : (i % 2 == 0 ? 4 : 128);
    }
    c->compress_ratio[c->n_layers] = 0;
}

/* Spec §9.1. */
static void preset_tiny_a(hd_model_config_t *c)
{
    static const int ratios[] = {0, 16, 4, 16, 4, 0, 0};
    preset_common(c);
    c->vocab_size = 1024;
    c->dim = 256;
    c->n_layers = 6;
    c->n_heads = 4;
    c->head_dim = 128;
    c->q_lora_rank = 128;
    c->o_groups = 2;
    c->o_lora_rank = 64;
    c->window = 8;
    c->index_n_heads = 4;
    c->index_topk = 4;
    c->n_routed_experts = 8;
    c->n_experts_per_tok = 2;
    c->moe_inter = 128;
    c->routed_scale = 1.5;
    c->max_pos = 4096;
    memcpy(c->compress_ratio, ratios, sizeof(ratios));
}

/*
 * medium: a synthetic mid-size model (about 3.3 GB with FP4 experts, see model/README.md)
 * that exercises the real head_dim 512 / vocab 129280 shapes, all three layer types and
 * hash routing on each of them, on one GPU.
 */
static void preset_medium(hd_model_config_t *c)
{
    static const int ratios[] = {0, 4, 128, 4, 128, 4, 128, 4, 0};
    preset_common(c);
    c->dim = 2048;
    c->n_layers = 8;
    c->n_heads = 16;
    c->q_lora_rank = 512;
    c->o_groups = 4;
    c->o_lora_rank = 512;
    c->index_n_heads = 16;
    c->index_topk = 512;
    c->n_routed_experts = 64;
    c->moe_inter = 1024;
    c->routed_scale = 1.5;
    memcpy(c->compress_ratio, ratios, sizeof(ratios));
}

hd_status_t hd_config_preset(const char *name, hd_model_config_t *cfg)
{
    hd_model_config_t c;
    if (name == NULL || cfg == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    if (strcmp(name, "flash") == 0) {
        preset_flash(&c);
    } else if (strcmp(name, "pro") == 0) {
        preset_pro(&c);
    } else if (strcmp(name, "tiny-a") == 0) {
        preset_tiny_a(&c);
    } else if (strcmp(name, "tiny-a-clamp") == 0) {
        preset_tiny_a(&c);
        c.swiglu_limit = 0.25;
    } else if (strcmp(name, "tiny-b") == 0) {
        preset_tiny_a(&c);
        c.window = 128;
        c.index_topk = 16;
        c.compress_ratio[1] = 128;
        c.compress_ratio[3] = 128;
    } else if (strcmp(name, "medium") == 0) {
        preset_medium(&c);
    } else {
        return HD_ERR_NOT_FOUND;
    }
    snprintf(c.name, sizeof(c.name), "%s", name);
    *cfg = c;
    return HD_OK;
}

/* ---- validation ---- */

static hd_status_t cfg_fail(char *err, size_t err_len, const char *origin, const char *field,
                            const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static hd_status_t cfg_fail(char *err, size_t err_len, const char *origin, const char *field,
                            const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (err != NULL && err_len > 0) {
        snprintf(err, err_len, "%s: field %s: %s", origin, field, why);
    }
    return HD_ERR_FORMAT;
}

static bool is_pow2(long v)
{
    return v > 0 && (v & (v - 1)) == 0;
}

/* Checks @v in [lo, hi]; on failure fills @err and returns false. */
#define CHECK_RANGE(field, v, lo, hi)                                                              \
    do {                                                                                           \
        if ((long)(v) < (long)(lo) || (long)(v) > (long)(hi)) {                                    \
            return cfg_fail(err, err_len, origin, field, "%ld out of range [%ld, %ld]", (long)(v), \
                            (long)(lo), (long)(hi));                                               \
        }                                                                                          \
    } while (0)

#define CHECK_POS_REAL(field, v)                                                                   \
    do {                                                                                           \
        if (!isfinite(v) || !((v) > 0.0)) {                                                        \
            return cfg_fail(err, err_len, origin, field, "%g must be a finite number > 0",         \
                            (double)(v));                                                          \
        }                                                                                          \
    } while (0)

/* Validate with @origin naming the source in messages ("<origin>: field <name>: <why>"). */
static hd_status_t config_validate_origin(const hd_model_config_t *c, const char *origin, char *err,
                                          size_t err_len)
{
    int n_blocks;
    bool any_csa = false;

    CHECK_RANGE("vocab_size", c->vocab_size, 2, 1 << 24);
    CHECK_RANGE("hidden_size", c->dim, 128, 1 << 16);
    if (c->dim % 128 != 0) {
        return cfg_fail(err, err_len, origin, "hidden_size",
                        "%d is not a multiple of 128 (FP8 weight/activation blocks)", c->dim);
    }
    CHECK_RANGE("num_hidden_layers", c->n_layers, 1, HD_MAX_LAYERS);
    CHECK_RANGE("num_nextn_predict_layers", c->n_mtp_layers, 0, 4);
    n_blocks = c->n_layers + c->n_mtp_layers;
    if (n_blocks > HD_MAX_LAYERS) {
        return cfg_fail(err, err_len, origin, "num_nextn_predict_layers",
                        "num_hidden_layers + num_nextn_predict_layers = %d exceeds %d", n_blocks,
                        HD_MAX_LAYERS);
    }
    CHECK_RANGE("num_attention_heads", c->n_heads, 1, 4096);
    CHECK_RANGE("head_dim", c->head_dim, 2, 8192);
    CHECK_RANGE("qk_rope_head_dim", c->rope_dim, 2, 8192);
    if (c->rope_dim % 2 != 0) {
        return cfg_fail(err, err_len, origin, "qk_rope_head_dim",
                        "%d is odd (RoPE rotates channel pairs)", c->rope_dim);
    }
    if (c->head_dim % 2 != 0) {
        return cfg_fail(err, err_len, origin, "head_dim", "%d is odd", c->head_dim);
    }
    if (c->rope_dim >= c->head_dim) {
        return cfg_fail(err, err_len, origin, "qk_rope_head_dim",
                        "%d must be smaller than head_dim %d", c->rope_dim, c->head_dim);
    }
    if ((c->head_dim - c->rope_dim) % 64 != 0) {
        return cfg_fail(err, err_len, origin, "head_dim",
                        "nope width head_dim - qk_rope_head_dim = %d is not a multiple of 64 "
                        "(FP8 KV blocks)",
                        c->head_dim - c->rope_dim);
    }
    CHECK_RANGE("q_lora_rank", c->q_lora_rank, 128, 1 << 16);
    if (c->q_lora_rank % 128 != 0) {
        return cfg_fail(err, err_len, origin, "q_lora_rank",
                        "%d is not a multiple of 128 (FP8 activation blocks)", c->q_lora_rank);
    }
    CHECK_RANGE("o_groups", c->o_groups, 1, c->n_heads);
    if (c->n_heads % c->o_groups != 0) {
        return cfg_fail(err, err_len, origin, "o_groups",
                        "%d does not divide num_attention_heads %d", c->o_groups, c->n_heads);
    }
    CHECK_RANGE("o_lora_rank", c->o_lora_rank, 1, 1 << 16);
    if ((long)c->o_groups * c->o_lora_rank % 128 != 0) {
        return cfg_fail(err, err_len, origin, "o_lora_rank",
                        "o_groups * o_lora_rank = %ld is not a multiple of 128 (FP8 activation "
                        "blocks of wo_b)",
                        (long)c->o_groups * c->o_lora_rank);
    }
    CHECK_RANGE("sliding_window", c->window, 1, 1 << 20);
    CHECK_POS_REAL("rope_theta", c->rope_theta);
    CHECK_POS_REAL("compress_rope_theta", c->compress_rope_theta);
    CHECK_POS_REAL("rope_scaling.factor", c->rope_factor);
    if (c->rope_factor < 1.0) {
        return cfg_fail(err, err_len, origin, "rope_scaling.factor", "%g is below 1",
                        c->rope_factor);
    }
    CHECK_RANGE("rope_scaling.original_max_position_embeddings", c->rope_orig_max_pos, 1,
                INT32_MAX);
    CHECK_POS_REAL("rope_scaling.beta_fast", c->beta_fast);
    CHECK_POS_REAL("rope_scaling.beta_slow", c->beta_slow);
    if (!(c->beta_fast > c->beta_slow)) {
        return cfg_fail(err, err_len, origin, "rope_scaling.beta_fast",
                        "%g must be greater than beta_slow %g", c->beta_fast, c->beta_slow);
    }
    CHECK_RANGE("max_position_embeddings", c->max_pos, 1, INT32_MAX);

    for (int i = 0; i < n_blocks; i++) {
        int r = c->compress_ratio[i];
        if (!(r == 0 || r == 4 || (r >= 8 && r <= 65536))) {
            char field[48];
            snprintf(field, sizeof(field), "compress_ratios[%d]", i);
            return cfg_fail(err, err_len, origin, field,
                            "%d is not 0 (SWA), 4 (CSA) or an HCA ratio in [8, 65536]", r);
        }
        any_csa |= r == 4;
    }
    for (int i = n_blocks; i < HD_MAX_LAYERS; i++) {
        if (c->compress_ratio[i] != 0) {
            return cfg_fail(err, err_len, origin, "compress_ratios",
                            "entry %d set beyond num_hidden_layers + num_nextn_predict_layers", i);
        }
    }
    CHECK_RANGE("index_n_heads", c->index_n_heads, 1, 4096);
    if (!is_pow2(c->index_head_dim) || c->index_head_dim % 32 != 0 || c->index_head_dim > 8192) {
        return cfg_fail(err, err_len, origin, "index_head_dim",
                        "%d must be a power of two, a multiple of 32 (FP4 blocks) and <= 8192 "
                        "(Hadamard)",
                        c->index_head_dim);
    }
    if (c->index_head_dim <= c->rope_dim) {
        return cfg_fail(err, err_len, origin, "index_head_dim",
                        "%d must be larger than qk_rope_head_dim %d", c->index_head_dim,
                        c->rope_dim);
    }
    CHECK_RANGE("index_topk", c->index_topk, 1, 1 << 24);
    (void)any_csa;

    CHECK_RANGE("n_routed_experts", c->n_routed_experts, 1, 1 << 16);
    if (c->n_shared_experts != 1) {
        return cfg_fail(err, err_len, origin, "n_shared_experts",
                        "%d; DeepSeek-V4 has exactly 1 shared expert", c->n_shared_experts);
    }
    CHECK_RANGE("num_experts_per_tok", c->n_experts_per_tok, 1, c->n_routed_experts);
    CHECK_RANGE("moe_intermediate_size", c->moe_inter, 128, 1 << 20);
    if (c->moe_inter % 128 != 0) {
        return cfg_fail(err, err_len, origin, "moe_intermediate_size",
                        "%d is not a multiple of 128 (FP8 activation blocks)", c->moe_inter);
    }
    CHECK_RANGE("num_hash_layers", c->n_hash_layers, 0, c->n_layers);
    if (!isfinite(c->routed_scale) || !(c->routed_scale > 0.0)) {
        return cfg_fail(err, err_len, origin, "routed_scaling_factor",
                        "%g must be a finite number > 0", c->routed_scale);
    }
    if (!isfinite(c->swiglu_limit) || c->swiglu_limit < 0.0) {
        return cfg_fail(err, err_len, origin, "swiglu_limit",
                        "%g must be finite and >= 0 (0 disables the clamp)", c->swiglu_limit);
    }
    if (!c->norm_topk_prob) {
        return cfg_fail(err, err_len, origin, "norm_topk_prob",
                        "false; DeepSeek-V4 normalises the top-k weights");
    }
    if (c->hc_mult != 4) {
        return cfg_fail(err, err_len, origin, "hc_mult",
                        "%d; only 4 residual streams are supported", c->hc_mult);
    }
    CHECK_RANGE("hc_sinkhorn_iters", c->hc_sinkhorn_iters, 1, 1000);
    CHECK_POS_REAL("hc_eps", c->hc_eps);
    CHECK_POS_REAL("rms_norm_eps", c->norm_eps);
    if (c->hc_eps >= 1.0 || c->norm_eps >= 1.0) {
        return cfg_fail(err, err_len, origin, c->hc_eps >= 1.0 ? "hc_eps" : "rms_norm_eps",
                        "must be below 1");
    }
    CHECK_RANGE("bos_token_id", c->bos_id, -1, c->vocab_size - 1);
    CHECK_RANGE("eos_token_id", c->eos_id, -1, c->vocab_size - 1);
    if ((unsigned)c->expert_dtype > HD_EXPERT_BF16) {
        return cfg_fail(err, err_len, origin, "expert_dtype", "unknown value %d",
                        (int)c->expert_dtype);
    }
    if (memchr(c->name, '\0', sizeof(c->name)) == NULL) {
        return cfg_fail(err, err_len, origin, "name", "not NUL-terminated");
    }
    return HD_OK;
}

hd_status_t hd_config_validate(const hd_model_config_t *cfg, char *err, size_t err_len)
{
    const char *origin;
    if (cfg == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    origin =
        memchr(cfg->name, '\0', sizeof(cfg->name)) != NULL && cfg->name[0] ? cfg->name : "config";
    return config_validate_origin(cfg, origin, err, err_len);
}

/* ---- parsing ---- */

typedef struct {
    const hd_json_t *root;
    const char *origin;
    char *err;
    size_t err_len;
} cfg_parser_t;

/* Keys we read (either form) or knowingly ignore; anything else is logged at debug. */
static const char *const known_keys[] = {
    "architectures", "model_type", "vocab_size", "hidden_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "qk_rope_head_dim", "q_lora_rank",
    "o_lora_rank", "o_groups", "sliding_window", "compress_rope_theta", "rope_theta",
    "rope_scaling", "max_position_embeddings", "compress_ratios", "index_n_heads", "index_head_dim",
    "index_topk", "n_routed_experts", "n_shared_experts", "num_experts_per_tok",
    "moe_intermediate_size", "num_hash_layers", "scoring_func", "topk_method", "norm_topk_prob",
    "routed_scaling_factor", "swiglu_limit", "hc_mult", "hc_sinkhorn_iters", "hc_eps",
    "rms_norm_eps", "num_nextn_predict_layers", "hidden_act", "attention_bias", "attention_dropout",
    "bos_token_id", "eos_token_id", "tie_word_embeddings", "initializer_range", "use_cache",
    "torch_dtype", "dtype", "transformers_version", "expert_dtype", "quantization_config",
    /* transformers form */
    "layer_types", "compress_rates", "mlp_layer_types", "rope_parameters", "partial_rotary_factor",
    "compress_rate_csa", "compress_rate_hca", "mlp_bias", "output_router_logits",
    "router_aux_loss_coef", "router_jitter_noise", "pad_token_id", NULL};

static hd_status_t pfail(cfg_parser_t *p, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static hd_status_t pfail(cfg_parser_t *p, const char *field, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return cfg_fail(p->err, p->err_len, p->origin, field, "%s", why);
}

/*
 * Read integer @key of object @obj into *out. Absent: *out = @def when @required is false,
 * else an error. Present but not an integer in int range: an error.
 */
static hd_status_t get_int(cfg_parser_t *p, const hd_json_t *obj, const char *key,
                           const char *field, bool required, int def, int *out)
{
    const hd_json_t *v = hd_json_get(obj, key);
    if (v == NULL) {
        if (required) {
            return pfail(p, field, "missing");
        }
        hd_debug(HD_SUBSYS_MODEL, "%s: %s absent, default %d", p->origin, field, def);
        *out = def;
        return HD_OK;
    }
    if (v->type != HD_JSON_NUMBER || !v->is_int) {
        return pfail(p, field, "expected an integer, got %s",
                     v->type == HD_JSON_NUMBER ? "a fraction" : hd_json_type_name(v->type));
    }
    if (v->i64 < INT32_MIN || v->i64 > INT32_MAX) {
        return pfail(p, field, "%lld does not fit a 32-bit integer", (long long)v->i64);
    }
    *out = (int)v->i64;
    return HD_OK;
}

static hd_status_t get_real(cfg_parser_t *p, const hd_json_t *obj, const char *key,
                            const char *field, bool required, double def, double *out)
{
    const hd_json_t *v = hd_json_get(obj, key);
    if (v == NULL) {
        if (required) {
            return pfail(p, field, "missing");
        }
        hd_debug(HD_SUBSYS_MODEL, "%s: %s absent, default %g", p->origin, field, def);
        *out = def;
        return HD_OK;
    }
    if (v->type != HD_JSON_NUMBER) {
        return pfail(p, field, "expected a number, got %s", hd_json_type_name(v->type));
    }
    *out = v->num;
    return HD_OK;
}

static hd_status_t get_bool(cfg_parser_t *p, const hd_json_t *obj, const char *key,
                            const char *field, bool def, bool *out)
{
    const hd_json_t *v = hd_json_get(obj, key);
    if (v == NULL) {
        *out = def;
        return HD_OK;
    }
    if (v->type != HD_JSON_TRUE && v->type != HD_JSON_FALSE) {
        return pfail(p, field, "expected true or false, got %s", hd_json_type_name(v->type));
    }
    *out = v->type == HD_JSON_TRUE;
    return HD_OK;
}

/* Optional string key that, when present, must equal @want. */
static hd_status_t expect_str(cfg_parser_t *p, const hd_json_t *obj, const char *key,
                              const char *field, const char *want, bool required)
{
    const hd_json_t *v = hd_json_get(obj, key);
    if (v == NULL) {
        return required ? pfail(p, field, "missing") : HD_OK;
    }
    if (v->type != HD_JSON_STRING) {
        return pfail(p, field, "expected a string, got %s", hd_json_type_name(v->type));
    }
    if (strcmp(v->str, want) != 0) {
        return pfail(p, field, "\"%s\" is not supported (expected \"%s\")", v->str, want);
    }
    return HD_OK;
}

/* Token ids: integer, null (-1), or (transformers) a list whose first element is used. */
static hd_status_t get_token_id(cfg_parser_t *p, const char *key, int def, int *out)
{
    const hd_json_t *v = hd_json_get(p->root, key);
    if (v == NULL) {
        *out = def;
        return HD_OK;
    }
    if (v->type == HD_JSON_NULL) {
        *out = -1;
        return HD_OK;
    }
    if (v->type == HD_JSON_ARRAY) {
        if (v->n == 0) {
            return pfail(p, key, "empty list");
        }
        v = v->kids[0];
    }
    if (v->type != HD_JSON_NUMBER || !v->is_int || v->i64 < -1 || v->i64 > INT32_MAX) {
        return pfail(p, key, "expected a token id");
    }
    *out = (int)v->i64;
    return HD_OK;
}

/* Hub rope_scaling, or the "compress" entry (or flat dict) of transformers rope_parameters. */
static hd_status_t parse_yarn(cfg_parser_t *p, const hd_json_t *rs, const char *field,
                              hd_model_config_t *c)
{
    char f[96];
    const char *type;
    hd_status_t status;
    double orig;

    c->rope_factor = 1.0;
    c->rope_orig_max_pos = c->max_pos;
    c->beta_fast = 32.0;
    c->beta_slow = 1.0;
    if (rs == NULL || rs->type == HD_JSON_NULL) {
        return HD_OK; /* no YaRN: factor 1 leaves every frequency unchanged */
    }
    if (rs->type != HD_JSON_OBJECT) {
        return pfail(p, field, "expected an object, got %s", hd_json_type_name(rs->type));
    }
    type = hd_json_get_str(rs, "rope_type");
    if (type == NULL) {
        type = hd_json_get_str(rs, "type");
    }
    if (type == NULL && (hd_json_get(rs, "rope_type") || hd_json_get(rs, "type"))) {
        return pfail(p, field, "type is not a string");
    }
    if (type == NULL || strcmp(type, "default") == 0) {
        return HD_OK;
    }
    if (strcmp(type, "yarn") != 0) {
        snprintf(f, sizeof(f), "%s.type", field);
        return pfail(p, f, "\"%s\" is not supported (expected \"yarn\")", type);
    }
    snprintf(f, sizeof(f), "%s.factor", field);
    HD_CHECK(get_real(p, rs, "factor", f, true, 1.0, &c->rope_factor));
    snprintf(f, sizeof(f), "%s.original_max_position_embeddings", field);
    HD_CHECK(get_real(p, rs, "original_max_position_embeddings", f, true, 0, &orig));
    if (!(orig >= 1.0 && orig <= INT32_MAX) || orig != floor(orig)) {
        return pfail(p, f, "%g is not a positive integer", orig);
    }
    c->rope_orig_max_pos = (int)orig;
    snprintf(f, sizeof(f), "%s.beta_fast", field);
    HD_CHECK(get_real(p, rs, "beta_fast", f, false, 32.0, &c->beta_fast));
    snprintf(f, sizeof(f), "%s.beta_slow", field);
    HD_CHECK(get_real(p, rs, "beta_slow", f, false, 1.0, &c->beta_slow));
    /* V4 never scales cos/sin magnitude; a config asking for it describes another model. */
    {
        double af = 1.0;
        snprintf(f, sizeof(f), "%s.attention_factor", field);
        status = get_real(p, rs, "attention_factor", f, false, 1.0, &af);
        if (status != HD_OK) {
            return status;
        }
        if (af != 1.0) {
            return pfail(p, f, "%g; DeepSeek-V4 uses 1.0 (no YaRN magnitude scaling)", af);
        }
    }
    {
        const hd_json_t *ms = hd_json_get(rs, "mscale");
        const hd_json_t *msa = hd_json_get(rs, "mscale_all_dim");
        if ((ms && ms->type != HD_JSON_NULL) || (msa && msa->type != HD_JSON_NULL)) {
            snprintf(f, sizeof(f), "%s.mscale", field);
            return pfail(p, f, "present; DeepSeek-V4 has no YaRN mscale");
        }
    }
    return HD_OK;
}

/* Layer schedule: transformers layer_types + compress_rates, or Hub compress_ratios. */
static hd_status_t parse_ratios(cfg_parser_t *p, hd_model_config_t *c)
{
    const hd_json_t *lt = hd_json_get(p->root, "layer_types");
    const hd_json_t *cr = hd_json_get(p->root, "compress_ratios");
    int n = c->n_layers, n_all = c->n_layers + c->n_mtp_layers;

    memset(c->compress_ratio, 0, sizeof(c->compress_ratio));
    if (lt != NULL && lt->type != HD_JSON_NULL) {
        int csa = 4, hca = 128;
        const hd_json_t *rates = hd_json_get(p->root, "compress_rates");
        if (lt->type != HD_JSON_ARRAY) {
            return pfail(p, "layer_types", "expected a list, got %s", hd_json_type_name(lt->type));
        }
        if (rates != NULL && rates->type != HD_JSON_NULL) {
            if (rates->type != HD_JSON_OBJECT) {
                return pfail(p, "compress_rates", "expected an object, got %s",
                             hd_json_type_name(rates->type));
            }
            HD_CHECK(get_int(p, rates, "compressed_sparse_attention",
                             "compress_rates.compressed_sparse_attention", false, 4, &csa));
            HD_CHECK(get_int(p, rates, "heavily_compressed_attention",
                             "compress_rates.heavily_compressed_attention", false, 128, &hca));
        }
        /* Legacy scalar overrides, folded in the way transformers does. */
        HD_CHECK(get_int(p, p->root, "compress_rate_csa", "compress_rate_csa", false, csa, &csa));
        HD_CHECK(get_int(p, p->root, "compress_rate_hca", "compress_rate_hca", false, hca, &hca));
        if (csa != 4) {
            return pfail(p, "compress_rates.compressed_sparse_attention",
                         "%d; the overlapping CSA compressor is defined for ratio 4 only", csa);
        }
        if (hca < 8) {
            return pfail(p, "compress_rates.heavily_compressed_attention",
                         "%d; HCA ratios must be >= 8", hca);
        }
        if ((int)lt->n != n) {
            return pfail(p, "layer_types", "%zu entries, num_hidden_layers is %d", lt->n, n);
        }
        for (int i = 0; i < n; i++) {
            const hd_json_t *e = lt->kids[i];
            if (e->type != HD_JSON_STRING) {
                return pfail(p, "layer_types", "entry %d is not a string", i);
            }
            if (strcmp(e->str, "sliding_attention") == 0) {
                c->compress_ratio[i] = 0;
            } else if (strcmp(e->str, "compressed_sparse_attention") == 0) {
                c->compress_ratio[i] = csa;
            } else if (strcmp(e->str, "heavily_compressed_attention") == 0) {
                c->compress_ratio[i] = hca;
            } else {
                return pfail(p, "layer_types", "entry %d \"%s\" is not a DeepSeek-V4 layer type", i,
                             e->str);
            }
        }
        /* MTP blocks are pure sliding-window layers; transformers does not list them. */
        return HD_OK;
    }
    if (cr == NULL || cr->type == HD_JSON_NULL) {
        return pfail(p, "compress_ratios", "missing (and no layer_types)");
    }
    if (cr->type != HD_JSON_ARRAY) {
        return pfail(p, "compress_ratios", "expected a list, got %s", hd_json_type_name(cr->type));
    }
    if ((int)cr->n != n_all && (int)cr->n != n) {
        return pfail(p, "compress_ratios",
                     "%zu entries, expected num_hidden_layers + num_nextn_predict_layers = %d",
                     cr->n, n_all);
    }
    for (size_t i = 0; i < cr->n; i++) {
        const hd_json_t *e = cr->kids[i];
        if (e->type != HD_JSON_NUMBER || !e->is_int || e->i64 < 0 || e->i64 > 65536) {
            char f[48];
            snprintf(f, sizeof(f), "compress_ratios[%zu]", i);
            return pfail(p, f, "expected an integer ratio in [0, 65536]");
        }
        c->compress_ratio[i] = (int)e->i64;
    }
    return HD_OK;
}

/* Hash layers: transformers mlp_layer_types (hash_moe prefix) or Hub num_hash_layers. */
static hd_status_t parse_hash(cfg_parser_t *p, hd_model_config_t *c)
{
    const hd_json_t *mt = hd_json_get(p->root, "mlp_layer_types");
    if (mt == NULL || mt->type == HD_JSON_NULL) {
        return get_int(p, p->root, "num_hash_layers", "num_hash_layers", false, 3,
                       &c->n_hash_layers);
    }
    if (mt->type != HD_JSON_ARRAY) {
        return pfail(p, "mlp_layer_types", "expected a list, got %s", hd_json_type_name(mt->type));
    }
    if ((int)mt->n != c->n_layers) {
        return pfail(p, "mlp_layer_types", "%zu entries, num_hidden_layers is %d", mt->n,
                     c->n_layers);
    }
    c->n_hash_layers = 0;
    for (size_t i = 0; i < mt->n; i++) {
        const hd_json_t *e = mt->kids[i];
        if (e->type != HD_JSON_STRING ||
            (strcmp(e->str, "hash_moe") != 0 && strcmp(e->str, "moe") != 0)) {
            return pfail(p, "mlp_layer_types", "entry %zu is not \"hash_moe\" or \"moe\"", i);
        }
        if (strcmp(e->str, "hash_moe") == 0) {
            if ((int)i != c->n_hash_layers) {
                return pfail(p, "mlp_layer_types",
                             "hash_moe at layer %zu after a moe layer; hash layers must come first",
                             i);
            }
            c->n_hash_layers++;
        }
    }
    {
        int legacy;
        const hd_json_t *nh = hd_json_get(p->root, "num_hash_layers");
        if (nh != NULL) {
            HD_CHECK(get_int(p, p->root, "num_hash_layers", "num_hash_layers", true, 0, &legacy));
            if (legacy != c->n_hash_layers) {
                return pfail(p, "num_hash_layers", "%d disagrees with mlp_layer_types (%d)", legacy,
                             c->n_hash_layers);
            }
        }
    }
    return HD_OK;
}

/* RoPE: transformers rope_parameters {main, compress} (or flat), or Hub rope_scaling. */
static hd_status_t parse_rope(cfg_parser_t *p, hd_model_config_t *c)
{
    const hd_json_t *rp = hd_json_get(p->root, "rope_parameters");
    const hd_json_t *rs = hd_json_get(p->root, "rope_scaling");
    const hd_json_t *main_p, *comp_p;
    double pr = 0;
    int rope_dim = -1;

    HD_CHECK(get_real(p, p->root, "rope_theta", "rope_theta", false, 10000.0, &c->rope_theta));
    HD_CHECK(get_real(p, p->root, "compress_rope_theta", "compress_rope_theta", false, 160000.0,
                      &c->compress_rope_theta));

    /* rope width: qk_rope_head_dim and/or partial_rotary_factor * head_dim */
    if (hd_json_get(p->root, "qk_rope_head_dim") != NULL) {
        HD_CHECK(get_int(p, p->root, "qk_rope_head_dim", "qk_rope_head_dim", true, 0, &rope_dim));
    }
    if (hd_json_get(p->root, "partial_rotary_factor") != NULL &&
        hd_json_get(p->root, "partial_rotary_factor")->type != HD_JSON_NULL) {
        double r;
        HD_CHECK(
            get_real(p, p->root, "partial_rotary_factor", "partial_rotary_factor", true, 0, &pr));
        r = pr * c->head_dim;
        if (!(pr > 0.0 && pr < 1.0) || r != floor(r)) {
            return pfail(p, "partial_rotary_factor",
                         "%g * head_dim %d is not a whole number of channels in (0, head_dim)", pr,
                         c->head_dim);
        }
        if (rope_dim >= 0 && rope_dim != (int)r) {
            return pfail(p, "qk_rope_head_dim", "%d disagrees with partial_rotary_factor (%d)",
                         rope_dim, (int)r);
        }
        rope_dim = (int)r;
    }
    if (rope_dim < 0) {
        return pfail(p, "qk_rope_head_dim", "missing (and no partial_rotary_factor)");
    }
    c->rope_dim = rope_dim;

    if (rp == NULL || rp->type == HD_JSON_NULL) {
        return parse_yarn(p, rs, "rope_scaling", c);
    }
    if (rp->type != HD_JSON_OBJECT) {
        return pfail(p, "rope_parameters", "expected an object, got %s",
                     hd_json_type_name(rp->type));
    }
    main_p = hd_json_get(rp, "main");
    comp_p = hd_json_get(rp, "compress");
    if (main_p == NULL && comp_p == NULL) {
        /* flat form: the YaRN parameters of the compressed layers */
        return parse_yarn(p, rp, "rope_parameters", c);
    }
    if (main_p == NULL || main_p->type != HD_JSON_OBJECT || comp_p == NULL ||
        comp_p->type != HD_JSON_OBJECT) {
        return pfail(p, "rope_parameters", "expected both \"main\" and \"compress\" objects");
    }
    {
        const char *mt = hd_json_get_str(main_p, "rope_type");
        if (mt == NULL) {
            mt = hd_json_get_str(main_p, "type");
        }
        if (mt != NULL && strcmp(mt, "default") != 0) {
            return pfail(p, "rope_parameters.main.rope_type",
                         "\"%s\"; the sliding-window layers use plain RoPE", mt);
        }
        HD_CHECK(get_real(p, main_p, "rope_theta", "rope_parameters.main.rope_theta", false,
                          c->rope_theta, &c->rope_theta));
        HD_CHECK(get_real(p, comp_p, "rope_theta", "rope_parameters.compress.rope_theta", false,
                          c->compress_rope_theta, &c->compress_rope_theta));
        for (int k = 0; k < 2; k++) {
            const hd_json_t *sub = k ? comp_p : main_p;
            double f;
            if (hd_json_get(sub, "partial_rotary_factor") == NULL) {
                continue;
            }
            HD_CHECK(get_real(p, sub, "partial_rotary_factor",
                              k ? "rope_parameters.compress.partial_rotary_factor"
                                : "rope_parameters.main.partial_rotary_factor",
                              true, 0, &f));
            if (f * c->head_dim != (double)c->rope_dim) {
                return pfail(p,
                             k ? "rope_parameters.compress.partial_rotary_factor"
                               : "rope_parameters.main.partial_rotary_factor",
                             "%g disagrees with the rope width %d", f, c->rope_dim);
            }
        }
    }
    return parse_yarn(p, comp_p, "rope_parameters.compress", c);
}

static hd_status_t parse_expert_dtype_str(cfg_parser_t *p, const hd_json_t *v, const char *field,
                                          hd_model_config_t *c)
{
    if (v->type == HD_JSON_NULL) {
        c->expert_dtype = HD_EXPERT_BF16;
        return HD_OK;
    }
    if (v->type != HD_JSON_STRING) {
        return pfail(p, field, "expected a string, got %s", hd_json_type_name(v->type));
    }
    if (strcmp(v->str, "fp4") == 0) {
        c->expert_dtype = HD_EXPERT_FP4;
    } else if (strcmp(v->str, "fp8") == 0) {
        c->expert_dtype = HD_EXPERT_FP8;
    } else if (strcmp(v->str, "bf16") == 0 || strcmp(v->str, "bfloat16") == 0) {
        c->expert_dtype = HD_EXPERT_BF16;
    } else {
        return pfail(p, field, "\"%s\" is not fp4, fp8 or bf16", v->str);
    }
    return HD_OK;
}

/*
 * Expert format: expert_dtype (top level, or inside quantization_config as transformers
 * moves it). Absent: FP4 when the checkpoint is quantised (quantization_config present, as
 * on the Hub), else unquantised.
 */
static hd_status_t parse_quant(cfg_parser_t *p, hd_model_config_t *c)
{
    const hd_json_t *qc = hd_json_get(p->root, "quantization_config");
    const hd_json_t *ed = hd_json_get(p->root, "expert_dtype");
    bool have_qc = qc != NULL && qc->type != HD_JSON_NULL;

    if (have_qc) {
        const hd_json_t *wbs;
        if (qc->type != HD_JSON_OBJECT) {
            return pfail(p, "quantization_config", "expected an object, got %s",
                         hd_json_type_name(qc->type));
        }
        HD_CHECK(
            expect_str(p, qc, "quant_method", "quantization_config.quant_method", "fp8", false));
        HD_CHECK(expect_str(p, qc, "fmt", "quantization_config.fmt", "e4m3", false));
        HD_CHECK(expect_str(p, qc, "scale_fmt", "quantization_config.scale_fmt", "ue8m0", false));
        wbs = hd_json_get(qc, "weight_block_size");
        if (wbs != NULL) {
            const hd_json_t *a = hd_json_at(wbs, 0), *b = hd_json_at(wbs, 1);
            if (wbs->type != HD_JSON_ARRAY || wbs->n != 2 || a->type != HD_JSON_NUMBER ||
                b->type != HD_JSON_NUMBER || a->num != 128 || b->num != 128) {
                return pfail(p, "quantization_config.weight_block_size",
                             "only [128, 128] is supported");
            }
        }
        if (ed == NULL) {
            ed = hd_json_get(qc, "expert_dtype");
            if (ed != NULL) {
                return parse_expert_dtype_str(p, ed, "quantization_config.expert_dtype", c);
            }
        }
    }
    if (ed != NULL) {
        return parse_expert_dtype_str(p, ed, "expert_dtype", c);
    }
    c->expert_dtype = have_qc ? HD_EXPERT_FP4 : HD_EXPERT_BF16;
    return HD_OK;
}

static hd_status_t config_from_json(cfg_parser_t *p, hd_model_config_t *c)
{
    const hd_json_t *r = p->root;
    int kv_heads;
    bool b;

    memset(c, 0, sizeof(*c));
    if (r->type != HD_JSON_OBJECT) {
        return pfail(p, "(root)", "expected a JSON object, got %s", hd_json_type_name(r->type));
    }
    for (size_t i = 0; i < r->n; i++) {
        bool known = false;
        for (const char *const *k = known_keys; *k != NULL; k++) {
            if (strlen(*k) == r->kids[i]->key_len && strcmp(*k, r->kids[i]->key) == 0) {
                known = true;
                break;
            }
        }
        if (!known) {
            hd_debug(HD_SUBSYS_MODEL, "%s: ignoring unknown key \"%s\"", p->origin,
                     r->kids[i]->key);
        }
    }
    HD_CHECK(expect_str(p, r, "model_type", "model_type", "deepseek_v4", true));
    HD_CHECK(get_int(p, r, "vocab_size", "vocab_size", true, 0, &c->vocab_size));
    HD_CHECK(get_int(p, r, "hidden_size", "hidden_size", true, 0, &c->dim));
    HD_CHECK(get_int(p, r, "num_hidden_layers", "num_hidden_layers", true, 0, &c->n_layers));
    HD_CHECK(get_int(p, r, "num_nextn_predict_layers", "num_nextn_predict_layers", false, 1,
                     &c->n_mtp_layers));
    /* bound the counts before they size the ratio table */
    if (c->n_layers < 1 || c->n_layers > HD_MAX_LAYERS) {
        return pfail(p, "num_hidden_layers", "%d out of range [1, %d]", c->n_layers, HD_MAX_LAYERS);
    }
    if (c->n_mtp_layers < 0 || c->n_mtp_layers > 4 ||
        c->n_layers + c->n_mtp_layers > HD_MAX_LAYERS) {
        return pfail(p, "num_nextn_predict_layers",
                     "%d out of range (0..4, and num_hidden_layers + it <= %d)", c->n_mtp_layers,
                     HD_MAX_LAYERS);
    }
    HD_CHECK(get_int(p, r, "num_attention_heads", "num_attention_heads", true, 0, &c->n_heads));
    HD_CHECK(get_int(p, r, "num_key_value_heads", "num_key_value_heads", false, 1, &kv_heads));
    if (kv_heads != 1) {
        return pfail(p, "num_key_value_heads", "%d; DeepSeek-V4 has one shared K=V head", kv_heads);
    }
    HD_CHECK(get_int(p, r, "head_dim", "head_dim", true, 0, &c->head_dim));
    HD_CHECK(get_int(p, r, "q_lora_rank", "q_lora_rank", true, 0, &c->q_lora_rank));
    HD_CHECK(get_int(p, r, "o_lora_rank", "o_lora_rank", true, 0, &c->o_lora_rank));
    HD_CHECK(get_int(p, r, "o_groups", "o_groups", true, 0, &c->o_groups));
    HD_CHECK(get_int(p, r, "sliding_window", "sliding_window", true, 0, &c->window));
    HD_CHECK(
        get_int(p, r, "max_position_embeddings", "max_position_embeddings", true, 0, &c->max_pos));
    HD_CHECK(parse_rope(p, c));
    HD_CHECK(parse_ratios(p, c));
    HD_CHECK(get_int(p, r, "index_n_heads", "index_n_heads", true, 0, &c->index_n_heads));
    HD_CHECK(get_int(p, r, "index_head_dim", "index_head_dim", true, 0, &c->index_head_dim));
    HD_CHECK(get_int(p, r, "index_topk", "index_topk", true, 0, &c->index_topk));
    HD_CHECK(get_int(p, r, "n_routed_experts", "n_routed_experts", true, 0, &c->n_routed_experts));
    HD_CHECK(get_int(p, r, "n_shared_experts", "n_shared_experts", false, 1, &c->n_shared_experts));
    HD_CHECK(get_int(p, r, "num_experts_per_tok", "num_experts_per_tok", true, 0,
                     &c->n_experts_per_tok));
    HD_CHECK(
        get_int(p, r, "moe_intermediate_size", "moe_intermediate_size", true, 0, &c->moe_inter));
    HD_CHECK(parse_hash(p, c));
    HD_CHECK(expect_str(p, r, "scoring_func", "scoring_func", "sqrtsoftplus", false));
    HD_CHECK(expect_str(p, r, "topk_method", "topk_method", "noaux_tc", false));
    HD_CHECK(expect_str(p, r, "hidden_act", "hidden_act", "silu", false));
    HD_CHECK(get_bool(p, r, "norm_topk_prob", "norm_topk_prob", true, &c->norm_topk_prob));
    HD_CHECK(get_real(p, r, "routed_scaling_factor", "routed_scaling_factor", true, 0,
                      &c->routed_scale));
    HD_CHECK(get_real(p, r, "swiglu_limit", "swiglu_limit", false, 10.0, &c->swiglu_limit));
    HD_CHECK(get_int(p, r, "hc_mult", "hc_mult", false, 4, &c->hc_mult));
    HD_CHECK(
        get_int(p, r, "hc_sinkhorn_iters", "hc_sinkhorn_iters", false, 20, &c->hc_sinkhorn_iters));
    HD_CHECK(get_real(p, r, "hc_eps", "hc_eps", false, 1e-6, &c->hc_eps));
    HD_CHECK(get_real(p, r, "rms_norm_eps", "rms_norm_eps", false, 1e-6, &c->norm_eps));
    HD_CHECK(get_token_id(p, "bos_token_id", 0, &c->bos_id));
    HD_CHECK(get_token_id(p, "eos_token_id", 1, &c->eos_id));
    HD_CHECK(get_bool(p, r, "attention_bias", "attention_bias", false, &b));
    if (b) {
        return pfail(p, "attention_bias", "true; DeepSeek-V4 projections have no bias");
    }
    HD_CHECK(get_bool(p, r, "mlp_bias", "mlp_bias", false, &b));
    if (b) {
        return pfail(p, "mlp_bias", "true; DeepSeek-V4 experts have no bias");
    }
    HD_CHECK(get_bool(p, r, "tie_word_embeddings", "tie_word_embeddings", false, &b));
    if (b) {
        return pfail(p, "tie_word_embeddings", "true; DeepSeek-V4 has separate embed and head");
    }
    HD_CHECK(parse_quant(p, c));
    snprintf(c->name, sizeof(c->name), "config.json");
    return HD_OK;
}

hd_status_t hd_config_parse(const char *text, size_t len, const char *origin,
                            hd_model_config_t *cfg, char *err, size_t err_len)
{
    hd_json_t *root = NULL;
    hd_model_config_t c;
    cfg_parser_t p;
    char jerr[200];
    hd_status_t status;

    if (origin == NULL) {
        origin = "config";
    }
    if (err != NULL && err_len > 0) {
        err[0] = '\0';
    }
    if (text == NULL || cfg == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    status = hd_json_parse(text, len, NULL, &root, jerr, sizeof(jerr));
    if (status != HD_OK) {
        if (err != NULL && err_len > 0) {
            snprintf(err, err_len, "%s: invalid JSON: %s", origin, jerr);
        }
        return status == HD_ERR_NO_MEMORY ? status : HD_ERR_FORMAT;
    }
    p.root = root;
    p.origin = origin;
    p.err = err;
    p.err_len = err_len;
    HD_CHECK_GOTO(config_from_json(&p, &c), status, out);
    HD_CHECK_GOTO(config_validate_origin(&c, origin, err, err_len), status, out);
    *cfg = c;
out:
    hd_json_free(root);
    return status;
}

hd_status_t hd_config_load(const char *path, hd_model_config_t *cfg, char *err, size_t err_len)
{
    char file[4096];
    struct stat st;
    char *text = NULL;
    size_t len = 0;
    hd_status_t status;

    if (path == NULL || cfg == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(file, sizeof(file), "%s/config.json", path);
    } else {
        snprintf(file, sizeof(file), "%s", path);
    }
    status = hd_file_read_all(file, CFG_MAX_BYTES, &text, &len);
    if (status != HD_OK) {
        if (err != NULL && err_len > 0) {
            snprintf(err, err_len, "%s: cannot read: %s", file, hd_status_string(status));
        }
        return status;
    }
    status = hd_config_parse(text, len, file, cfg, err, err_len);
    hd_free(text);
    return status;
}

/* ---- writer ---- */

static const char *expert_dtype_name(hd_expert_dtype_t t)
{
    switch (t) {
    case HD_EXPERT_FP4:
        return "fp4";
    case HD_EXPERT_FP8:
        return "fp8";
    default:
        return NULL;
    }
}

hd_status_t hd_config_write_hub(const hd_model_config_t *c, FILE *f)
{
    hd_buf_t b;
    const char *ed;
    int n_all;
    hd_status_t status = HD_OK;

    if (c == NULL || f == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    n_all = c->n_layers + c->n_mtp_layers;
    if (n_all > HD_MAX_LAYERS || n_all < 0) {
        return HD_ERR_INVALID_PARAM;
    }
    ed = expert_dtype_name(c->expert_dtype);
    hd_buf_init(&b);
    hd_buf_puts(&b, "{\n  \"architectures\": [\"DeepseekV4ForCausalLM\"],\n");
    hd_buf_puts(&b, "  \"model_type\": \"deepseek_v4\",\n");
    hd_buf_printf(&b, "  \"vocab_size\": %d,\n", c->vocab_size);
    hd_buf_printf(&b, "  \"hidden_size\": %d,\n", c->dim);
    hd_buf_printf(&b, "  \"num_hidden_layers\": %d,\n", c->n_layers);
    hd_buf_printf(&b, "  \"num_attention_heads\": %d,\n", c->n_heads);
    hd_buf_puts(&b, "  \"num_key_value_heads\": 1,\n");
    hd_buf_printf(&b, "  \"head_dim\": %d,\n", c->head_dim);
    hd_buf_printf(&b, "  \"qk_rope_head_dim\": %d,\n", c->rope_dim);
    hd_buf_printf(&b, "  \"q_lora_rank\": %d,\n", c->q_lora_rank);
    hd_buf_printf(&b, "  \"o_lora_rank\": %d,\n", c->o_lora_rank);
    hd_buf_printf(&b, "  \"o_groups\": %d,\n", c->o_groups);
    hd_buf_printf(&b, "  \"sliding_window\": %d,\n", c->window);
    hd_buf_printf(&b, "  \"compress_rope_theta\": %.17g,\n", c->compress_rope_theta);
    hd_buf_printf(&b, "  \"rope_theta\": %.17g,\n", c->rope_theta);
    hd_buf_printf(&b,
                  "  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": %.17g, "
                  "\"original_max_position_embeddings\": %d, \"beta_fast\": %.17g, "
                  "\"beta_slow\": %.17g},\n",
                  c->rope_factor, c->rope_orig_max_pos, c->beta_fast, c->beta_slow);
    hd_buf_printf(&b, "  \"max_position_embeddings\": %d,\n", c->max_pos);
    hd_buf_puts(&b, "  \"compress_ratios\": [");
    for (int i = 0; i < n_all; i++) {
        hd_buf_printf(&b, "%s%d", i ? ", " : "", c->compress_ratio[i]);
    }
    hd_buf_puts(&b, "],\n");
    hd_buf_printf(&b, "  \"index_n_heads\": %d,\n", c->index_n_heads);
    hd_buf_printf(&b, "  \"index_head_dim\": %d,\n", c->index_head_dim);
    hd_buf_printf(&b, "  \"index_topk\": %d,\n", c->index_topk);
    hd_buf_printf(&b, "  \"n_routed_experts\": %d,\n", c->n_routed_experts);
    hd_buf_printf(&b, "  \"n_shared_experts\": %d,\n", c->n_shared_experts);
    hd_buf_printf(&b, "  \"num_experts_per_tok\": %d,\n", c->n_experts_per_tok);
    hd_buf_printf(&b, "  \"moe_intermediate_size\": %d,\n", c->moe_inter);
    hd_buf_printf(&b, "  \"num_hash_layers\": %d,\n", c->n_hash_layers);
    hd_buf_puts(&b, "  \"scoring_func\": \"sqrtsoftplus\",\n");
    hd_buf_puts(&b, "  \"topk_method\": \"noaux_tc\",\n");
    hd_buf_printf(&b, "  \"norm_topk_prob\": %s,\n", c->norm_topk_prob ? "true" : "false");
    hd_buf_printf(&b, "  \"routed_scaling_factor\": %.17g,\n", c->routed_scale);
    hd_buf_printf(&b, "  \"swiglu_limit\": %.17g,\n", c->swiglu_limit);
    hd_buf_printf(&b, "  \"hc_mult\": %d,\n", c->hc_mult);
    hd_buf_printf(&b, "  \"hc_sinkhorn_iters\": %d,\n", c->hc_sinkhorn_iters);
    hd_buf_printf(&b, "  \"hc_eps\": %.17g,\n", c->hc_eps);
    hd_buf_printf(&b, "  \"rms_norm_eps\": %.17g,\n", c->norm_eps);
    hd_buf_printf(&b, "  \"num_nextn_predict_layers\": %d,\n", c->n_mtp_layers);
    hd_buf_puts(&b, "  \"hidden_act\": \"silu\",\n");
    hd_buf_puts(&b, "  \"attention_bias\": false,\n");
    hd_buf_puts(&b, "  \"attention_dropout\": 0.0,\n");
    if (c->bos_id >= 0) {
        hd_buf_printf(&b, "  \"bos_token_id\": %d,\n", c->bos_id);
    } else {
        hd_buf_puts(&b, "  \"bos_token_id\": null,\n");
    }
    if (c->eos_id >= 0) {
        hd_buf_printf(&b, "  \"eos_token_id\": %d,\n", c->eos_id);
    } else {
        hd_buf_puts(&b, "  \"eos_token_id\": null,\n");
    }
    hd_buf_puts(&b, "  \"tie_word_embeddings\": false,\n");
    hd_buf_puts(&b, "  \"initializer_range\": 0.02,\n");
    hd_buf_puts(&b, "  \"use_cache\": true,\n");
    hd_buf_puts(&b, "  \"torch_dtype\": \"bfloat16\",\n");
    if (ed != NULL) {
        hd_buf_printf(&b, "  \"expert_dtype\": \"%s\",\n", ed);
        hd_buf_puts(&b, "  \"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", "
                        "\"activation_scheme\": \"dynamic\", \"scale_fmt\": \"ue8m0\", "
                        "\"weight_block_size\": [128, 128]}\n");
    } else {
        hd_buf_puts(&b, "  \"expert_dtype\": null\n");
    }
    hd_buf_puts(&b, "}\n");
    if (b.failed) {
        status = HD_ERR_NO_MEMORY;
    } else if (fwrite(b.data, 1, b.len, f) != b.len) {
        hd_error(HD_SUBSYS_MODEL, "config write failed: %m");
        status = HD_ERR_IO;
    }
    hd_buf_cleanup(&b);
    return status;
}
