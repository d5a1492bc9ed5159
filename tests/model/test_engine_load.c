/*
 * test_engine_load.c - the engine loads what it should and refuses what it should not.
 *
 * 1. A generated official-layout checkpoint converted to transformers names (fp32, experts
 *    fused as HF stores them) has exactly the parameter names and shapes of transformers'
 *    DeepseekV4ForCausalLM (tests/model/data/hf_state_keys_tiny-a.json, recorded from
 *    transformers by tools/reference/hf_state_keys.py), and gives bitwise the same logits.
 * 2. Broken checkpoints (missing tensor, wrong shape, wrong dtype, bad expert id, truncated
 *    file, missing scale) are refused with a message naming the file and the tensor.
 */
#include "hd_test.h"
#include "model_testutil.h"
#include "hadal/engine.h"
#include "hadal/json.h"
#include "hadal/kernels.h"
#include "hadal/safetensors.h"

#include <fcntl.h>

static char src_dir[1200];

/* Logits of a 40-token prompt, plain numerics. NULL (and @err filled) if creation fails. */
static float *run_prompt(const char *dir, char *err, size_t err_len)
{
    hd_engine_h e = NULL;
    hd_engine_params_t p = {.model_path = dir, .numerics = HD_NUMERICS_PLAIN, .n_threads = 2,
                            .err = err, .err_len = err_len};
    if (hd_engine_create(&p, &e) != HD_OK) {
        return NULL;
    }
    int V = hd_engine_config(e)->vocab_size;
    int32_t ids[40];
    for (int i = 0; i < 40; i++) {
        ids[i] = 2 + (i * 37) % 1000;
    }
    float *lg = calloc((size_t)40 * V, sizeof(float));
    hd_seq_h s = NULL;
    HD_CHECK_INT_EQ(hd_seq_create(e, &s), HD_OK);
    hd_batch_item_t it = {.seq = s, .tokens = ids, .n_tokens = 40, .logits = HD_LOGITS_ALL,
                          .logits_out = lg};
    HD_CHECK_INT_EQ(hd_engine_step(e, &it, 1), HD_OK);
    hd_seq_destroy(s);
    hd_engine_destroy(e);
    return lg;
}

/* fp32 copy of official tensor @t (dequantising FP8/FP4/bf16 through the kernels' decoder). */
static float *to_f32(hd_st_set_h st, const hd_st_tensor_t *t, int64_t *rows_p, int64_t *cols_p)
{
    int64_t rows = t->ndim >= 1 ? t->shape[0] : 1, cols = t->ndim >= 2 ? t->shape[1] : 1;
    hd_weight_t w = {.rows = rows, .data = t->data};
    char sname[256];
    const hd_st_tensor_t *s;
    if (t->ndim == 1 && t->dtype != HD_DT_F32 && t->dtype != HD_DT_BF16) {
        return NULL;
    }
    if (t->ndim == 1) {
        cols = rows;
        rows = 1;
        w.rows = 1;
    }
    switch (t->dtype) {
    case HD_DT_F32: w.fmt = HD_WFMT_F32; w.cols = cols; w.row_bytes = (size_t)cols * 4; break;
    case HD_DT_BF16: w.fmt = HD_WFMT_BF16; w.cols = cols; w.row_bytes = (size_t)cols * 2; break;
    case HD_DT_F8_E4M3:
    case HD_DT_I8:
        snprintf(sname, sizeof(sname), "%.*s.scale", (int)strlen(t->name) - 7, t->name);
        s = hd_st_find(st, sname);
        if (s == NULL) {
            return NULL;
        }
        w.fmt = t->dtype == HD_DT_I8 ? HD_WFMT_FP4 : HD_WFMT_FP8;
        w.cols = t->dtype == HD_DT_I8 ? cols * 2 : cols;
        w.row_bytes = (size_t)cols;
        w.scale = s->data;
        w.scale_stride = s->shape[1];
        break;
    default: return NULL;
    }
    float *out = calloc((size_t)(w.rows * w.cols), sizeof(float));
    for (int64_t r = 0; r < w.rows; r++) {
        hd_kern_weight_row(&w, r, out + r * w.cols);
    }
    *rows_p = w.rows;
    *cols_p = w.cols;
    return out;
}

static int convert_to_hf(const char *off_dir, const char *hf_dir, hd_json_t *keys)
{
    char err[512], path[1300];
    hd_st_set_h st = NULL;
    hd_st_writer_h w = NULL;
    const hd_model_config_t *c;
    hd_model_config_t cfg;
    int ok = 1;
    size_t written = 0;
    mkdir(hf_dir, 0755);
    HD_CHECK_INT_EQ(hd_config_load(off_dir, &cfg, err, sizeof(err)), HD_OK);
    c = &cfg;
    HD_CHECK_INT_EQ(hd_st_open(off_dir, &st, err, sizeof(err)), HD_OK);
    snprintf(path, sizeof(path), "%s/model.safetensors", hf_dir);
    HD_CHECK_INT_EQ(hd_st_writer_create(path, &w), HD_OK);
    if (st == NULL || w == NULL) {
        return 0;
    }
    for (size_t i = 0; i < hd_st_count(st); i++) {
        const hd_st_tensor_t *t = hd_st_at(st, i);
        char hf[256];
        int64_t rows, cols;
        if (!hd_engine_hf_name(t->name, hf, sizeof(hf))) {
            continue;
        }
        const hd_json_t *want = hd_json_get(hd_json_get(keys, "keys"), hf);
        HD_CHECK_MSG(want != NULL, "%s maps to %s, which transformers does not have", t->name, hf);
        if (t->dtype == HD_DT_I64) { /* tid2eid: copied as is */
            HD_CHECK_INT_EQ(hd_st_writer_add(w, hf, t->dtype, t->ndim, t->shape, t->data,
                                             t->nbytes), HD_OK);
            written++;
            continue;
        }
        float *f = to_f32(st, t, &rows, &cols);
        HD_CHECK_MSG(f != NULL, "cannot dequantise %s", t->name);
        if (f == NULL) {
            ok = 0;
            continue;
        }
        int64_t shape[2] = {rows, cols};
        int nd = t->ndim == 1 ? 1 : 2;
        if (nd == 1) {
            shape[0] = cols;
        }
        HD_CHECK_INT_EQ(hd_st_writer_add(w, hf, HD_DT_F32, nd, shape, f,
                                         (size_t)(rows * cols) * sizeof(float)), HD_OK);
        free(f);
        written++;
    }
    /* routed experts, fused as transformers stores them */
    int E = c->n_routed_experts, I = c->moe_inter, d = c->dim;
    for (int li = 0; li < c->n_layers; li++) {
        float *gu = calloc((size_t)E * 2 * I * d, sizeof(float));
        float *dn = calloc((size_t)E * d * I, sizeof(float));
        for (int x = 0; x < E; x++) {
            const char *which[3] = {"w1", "w3", "w2"};
            for (int k = 0; k < 3; k++) {
                char name[128];
                int64_t rows, cols;
                snprintf(name, sizeof(name), "layers.%d.ffn.experts.%d.%s.weight", li, x, which[k]);
                const hd_st_tensor_t *t = hd_st_find(st, name);
                float *f = t ? to_f32(st, t, &rows, &cols) : NULL;
                HD_CHECK_MSG(f != NULL, "expert tensor %s", name);
                if (f == NULL) {
                    continue;
                }
                float *dst = k == 2 ? dn + (size_t)x * d * I
                                    : gu + (size_t)x * 2 * I * d + (k == 1 ? (size_t)I * d : 0);
                memcpy(dst, f, (size_t)(rows * cols) * sizeof(float));
                free(f);
            }
        }
        char n1[128], n2[128];
        int64_t s1[3] = {E, 2 * I, d}, s2[3] = {E, d, I};
        snprintf(n1, sizeof(n1), "model.layers.%d.mlp.experts.gate_up_proj", li);
        snprintf(n2, sizeof(n2), "model.layers.%d.mlp.experts.down_proj", li);
        HD_CHECK_INT_EQ(hd_st_writer_add(w, n1, HD_DT_F32, 3, s1, gu, sizeof(float) * E * 2 * I * d),
                        HD_OK);
        HD_CHECK_INT_EQ(hd_st_writer_add(w, n2, HD_DT_F32, 3, s2, dn, sizeof(float) * E * d * I),
                        HD_OK);
        written += 2;
        free(gu);
        free(dn);
    }
    HD_CHECK_INT_EQ(hd_st_writer_finish(w), HD_OK);
    hd_st_close(st);
    /* the written set is exactly transformers' parameter set */
    HD_CHECK_INT_EQ(written, hd_json_get(keys, "keys")->n);
    hd_st_set_h hs = NULL;
    HD_CHECK_INT_EQ(hd_st_open(path, &hs, err, sizeof(err)), HD_OK);
    for (size_t i = 0; hs && i < hd_json_get(keys, "keys")->n; i++) {
        const hd_json_t *k = hd_json_get(keys, "keys")->kids[i];
        const hd_st_tensor_t *t = hd_st_find(hs, k->key);
        HD_CHECK_MSG(t != NULL, "transformers parameter %s not produced", k->key);
        if (t == NULL) {
            ok = 0;
            continue;
        }
        HD_CHECK_INT_EQ(t->ndim, (int)k->n);
        for (size_t j = 0; j < k->n && (int)j < t->ndim; j++) {
            HD_CHECK_INT_EQ(t->shape[j], k->kids[j]->i64);
        }
    }
    if (hs) {
        hd_st_close(hs);
    }
    char cmd[2800];
    snprintf(cmd, sizeof(cmd), "cp '%s/config.json' '%s/config.json'", off_dir, hf_dir);
    HD_CHECK_INT_EQ(system(cmd), 0);
    return ok;
}

HD_TEST(transformers_names_load_equal)
{
    char dir[1200], hf_dir[1300], err[512] = "", kp[1400];
    char *text = NULL;
    size_t len;
    hd_json_t *keys = NULL;
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    snprintf(kp, sizeof(kp), "%s/tests/model/data/hf_state_keys_tiny-a.json", src_dir);
    HD_CHECK_INT_EQ(hd_file_read_all(kp, 1 << 22, &text, &len), HD_OK);
    if (text == NULL) {
        return;
    }
    HD_CHECK_INT_EQ(hd_json_parse(text, len, NULL, &keys, err, sizeof(err)), HD_OK);
    snprintf(hf_dir, sizeof(hf_dir), "%s-hf", dir);
    if (keys == NULL || !convert_to_hf(dir, hf_dir, keys)) {
        hd_json_free(keys);
        free(text);
        return;
    }
    float *a = run_prompt(dir, err, sizeof(err));
    HD_CHECK_MSG(a != NULL, "official: %s", err);
    float *b = run_prompt(hf_dir, err, sizeof(err));
    HD_CHECK_MSG(b != NULL, "transformers names: %s", err);
    if (a && b) {
        /*
         * The converted checkpoint holds the same values in other formats (bf16/fp32 instead
         * of packed FP8/FP4), and the kernels' reduction order is fixed per format, not across
         * formats (kernels.h): equal to rounding, same argmax at every position.
         */
        double rel = tu_rel_err(a, b, 40 * 1024);
        HD_CHECK_MSG(rel <= 1e-6, "logits differ (rel %.3e)", rel);
        for (int p = 0; p < 40; p++) {
            HD_CHECK_INT_EQ(tu_argmax(a + (size_t)p * 1024, 1024), tu_argmax(b + (size_t)p * 1024, 1024));
        }
    }
    free(a);
    free(b);
    hd_json_free(keys);
    free(text);
}

/* Copy the official checkpoint, letting @edit drop or replace one tensor. */
typedef int (*edit_func_t)(hd_st_writer_h w, const hd_st_tensor_t *t);

static void broken_copy(const char *dir, const char *out, edit_func_t edit)
{
    char err[512], path[1300], cmd[2800];
    hd_st_set_h st = NULL;
    hd_st_writer_h w = NULL;
    mkdir(out, 0755);
    HD_CHECK_INT_EQ(hd_st_open(dir, &st, err, sizeof(err)), HD_OK);
    snprintf(path, sizeof(path), "%s/model.safetensors", out);
    HD_CHECK_INT_EQ(hd_st_writer_create(path, &w), HD_OK);
    for (size_t i = 0; st && w && i < hd_st_count(st); i++) {
        const hd_st_tensor_t *t = hd_st_at(st, i);
        if (edit(w, t)) {
            continue;
        }
        HD_CHECK_INT_EQ(hd_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data,
                                         t->nbytes), HD_OK);
    }
    HD_CHECK_INT_EQ(hd_st_writer_finish(w), HD_OK);
    hd_st_close(st);
    snprintf(cmd, sizeof(cmd), "cp '%s/config.json' '%s/config.json'", dir, out);
    HD_CHECK_INT_EQ(system(cmd), 0);
}

static int drop_wkv(hd_st_writer_h w, const hd_st_tensor_t *t)
{
    return strcmp(t->name, "layers.2.attn.wkv.weight") == 0;
}

static int drop_scale(hd_st_writer_h w, const hd_st_tensor_t *t)
{
    return strcmp(t->name, "layers.4.ffn.experts.3.w2.scale") == 0;
}

static int bad_shape(hd_st_writer_h w, const hd_st_tensor_t *t)
{
    if (strcmp(t->name, "layers.1.attn.kv_norm.weight") != 0) {
        return 0;
    }
    int64_t sh[1] = {t->shape[0] / 2};
    hd_st_writer_add(w, t->name, t->dtype, 1, sh, t->data, t->nbytes / 2);
    return 1;
}

static int bad_dtype(hd_st_writer_h w, const hd_st_tensor_t *t)
{
    if (strcmp(t->name, "layers.0.attn.wq_a.weight") != 0) {
        return 0;
    }
    int64_t sh[2] = {t->shape[0], t->shape[1] / 2};
    hd_st_writer_add(w, t->name, HD_DT_I16, 2, sh, t->data, t->nbytes);
    return 1;
}

static int bad_expert_id(hd_st_writer_h w, const hd_st_tensor_t *t)
{
    if (strcmp(t->name, "layers.1.ffn.gate.tid2eid") != 0) {
        return 0;
    }
    int64_t *v = malloc(t->nbytes);
    memcpy(v, t->data, t->nbytes);
    v[5] = 1000;
    hd_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, v, t->nbytes);
    free(v);
    return 1;
}

static void expect_refusal(const char *dir, const char *tag, edit_func_t edit, const char *what1,
                           const char *what2)
{
    char out[1300], err[512] = "";
    snprintf(out, sizeof(out), "%s-%s", dir, tag);
    broken_copy(dir, out, edit);
    float *lg = run_prompt(out, err, sizeof(err));
    HD_CHECK_MSG(lg == NULL, "%s: broken checkpoint was accepted", tag);
    free(lg);
    HD_CHECK_MSG(strstr(err, "model.safetensors") != NULL, "%s: no file named in '%s'", tag, err);
    HD_CHECK_MSG(strstr(err, what1) != NULL && strstr(err, what2) != NULL,
                 "%s: message '%s' lacks '%s' / '%s'", tag, err, what1, what2);
    printf("  %-10s -> %s\n", tag, err);
}

HD_TEST(broken_checkpoints_are_refused)
{
    char dir[1200];
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    expect_refusal(dir, "nowkv", drop_wkv, "layers.2.attn.wkv.weight", "missing");
    expect_refusal(dir, "noscale", drop_scale, "layers.4.ffn.experts.3.w2.scale", "missing");
    expect_refusal(dir, "shape", bad_shape, "layers.1.attn.kv_norm.weight", "expected");
    expect_refusal(dir, "dtype", bad_dtype, "layers.0.attn.wq_a.weight", "dtype");
    expect_refusal(dir, "eid", bad_expert_id, "layers.1.ffn.gate.tid2eid", "out of range");
}

HD_TEST(truncated_checkpoint_is_refused)
{
    char dir[1200], out[1300], cmd[2800], err[512] = "";
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    snprintf(out, sizeof(out), "%s-trunc", dir);
    snprintf(cmd, sizeof(cmd),
             "mkdir -p '%s' && cp '%s/config.json' '%s/' && head -c 3000000 \"$(ls '%s'/*.safetensors "
             "| head -n 1)\" > '%s/model.safetensors'",
             out, dir, out, dir, out);
    HD_CHECK_INT_EQ(system(cmd), 0);
    float *lg = run_prompt(out, err, sizeof(err));
    HD_CHECK_TRUE(lg == NULL);
    free(lg);
    HD_CHECK_MSG(strstr(err, "model.safetensors") != NULL, "message '%s'", err);
    printf("  truncated -> %s\n", err);
}

__attribute__((constructor)) static void load_src_dir(void)
{
    const char *s = getenv("HD_SOURCE_DIR");
    snprintf(src_dir, sizeof(src_dir), "%s", s ? s : ".");
}
