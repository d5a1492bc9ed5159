/*
 * test_gen.c - gen-model: byte determinism (threads, sharding, subsets), the official
 * formats and scale rules, the §9.3 value distributions, and hd_ckpt_check on good and
 * broken checkpoints.
 */
#define _GNU_SOURCE /* nftw */
#include "hadal/alloc.h"
#include "hadal/config.h"
#include "hadal/gen.h"
#include "hadal/inventory.h"
#include "hadal/json.h"
#include "hadal/log.h"
#include "hadal/quant.h"
#include "hadal/rng.h"
#include "hadal/safetensors.h"
#include "hd_test.h"
#include "../../model/gen_impl.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[256];

static const char *dir_for(const char *name, char *buf, size_t len)
{
    if (root[0] == '\0') {
        snprintf(root, sizeof(root), "/tmp/hd_test_gen_XXXXXX");
        if (mkdtemp(root) == NULL) {
            abort();
        }
    }
    snprintf(buf, len, "%s/%s", root, name);
    return buf;
}

static hd_status_t gen(const char *preset, const char *dir, int threads, uint64_t shard,
                       const hd_inv_filter_t *filter)
{
    hd_model_config_t c;
    hd_gen_params_t p = {
        .seed = 1, .out_dir = dir, .shard_bytes = shard, .filter = filter, .n_threads = threads};
    char err[512];
    hd_status_t st;
    hd_config_preset(preset, &c);
    st = hd_gen_model(&c, &p, err, sizeof(err));
    HD_CHECK_MSG(st == HD_OK, "%s", err);
    return st;
}

static int files_equal(const char *a, const char *b)
{
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int eq;
    if (hd_file_read_all(a, 1u << 30, &x, &nx) != HD_OK ||
        hd_file_read_all(b, 1u << 30, &y, &ny) != HD_OK) {
        hd_free(x);
        return 0;
    }
    eq = nx == ny && memcmp(x, y, nx) == 0;
    hd_free(x);
    hd_free(y);
    return eq;
}

/* Every tensor of @a is in @b with identical bytes. */
static void same_tensors(hd_st_set_h a, hd_st_set_h b)
{
    for (size_t i = 0; i < hd_st_count(a); i++) {
        const hd_st_tensor_t *t = hd_st_at(a, i), *u = hd_st_find(b, t->name);
        HD_CHECK_MSG(u != NULL, "%s missing", t->name);
        if (u != NULL) {
            HD_CHECK_MSG(u->nbytes == t->nbytes && memcmp(u->data, t->data, t->nbytes) == 0,
                         "%s differs", t->name);
        }
    }
}

static void quiet_sink(hd_log_level_t level, const char *line, void *user)
{
}

static hd_st_set_h open_set(const char *dir)
{
    hd_st_set_h s = NULL;
    char err[512];
    HD_CHECK_MSG(hd_st_open(dir, &s, err, sizeof(err)) == HD_OK, "%s", err);
    return s;
}

HD_TEST(fast_encoders_match_quant)
{
    /* every e4m3 / e2m1 value, every midpoint (ties) and its neighbours, plus random inputs */
    hd_rng_t r;
    int bad4 = 0, bad8 = 0;
    for (int c = 0; c < 127; c++) {
        for (int k = 0; k < 2; k++) {
            float lo = hd_e4m3_table[c], hi = hd_e4m3_table[c + 1];
            float mid = 0.5f * (lo + hi),
                  pts[5] = {lo, mid, nextafterf(mid, 0), nextafterf(mid, 1e9f), hi};
            for (int i = 0; i < 5; i++) {
                float v = k ? -pts[i] : pts[i];
                if (fabsf(v) <= 448.0f) {
                    bad8 += hd_gen_e4m3(v) != hd_f32_to_e4m3(v);
                }
            }
        }
    }
    for (int c = 0; c < 7; c++) {
        for (int k = 0; k < 2; k++) {
            float lo = hd_e2m1_table[c], hi = hd_e2m1_table[c + 1];
            float mid = 0.5f * (lo + hi),
                  pts[5] = {lo, mid, nextafterf(mid, 0), nextafterf(mid, 9), hi};
            for (int i = 0; i < 5; i++) {
                float v = k ? -pts[i] : pts[i];
                bad4 += hd_gen_e2m1(v) != hd_f32_to_e2m1(v);
            }
        }
    }
    hd_rng_seed(&r, 5);
    for (int i = 0; i < 500000; i++) {
        float u = hd_rng_uniform(&r) * 2.0f - 1.0f;
        float e = ldexpf(1.0f, (int)hd_rng_below(&r, 30) - 24);
        float v8 = u * 448.0f * (i & 1 ? e : 1.0f), v4 = u * 6.0f * (i & 2 ? e : 1.0f);
        bad8 += hd_gen_e4m3(v8) != hd_f32_to_e4m3(v8);
        bad4 += hd_gen_e2m1(v4) != hd_f32_to_e2m1(v4);
    }
    HD_CHECK_INT_EQ(bad8, 0);
    HD_CHECK_INT_EQ(bad4, 0);
    HD_CHECK_INT_EQ(hd_gen_e4m3(-0.0f), hd_f32_to_e4m3(-0.0f));
    HD_CHECK_INT_EQ(hd_gen_e2m1(-0.0f), hd_f32_to_e2m1(-0.0f));
}

HD_TEST(deterministic_bytes)
{
    char d1[300], d2[300], f1[400], f2[400];
    const char *files[] = {"config.json", "model.safetensors.index.json",
                           "model-00001-of-00001.safetensors"};
    dir_for("a1", d1, sizeof(d1));
    dir_for("a2", d2, sizeof(d2));
    if (gen("tiny-a", d1, 1, 0, NULL) != HD_OK || gen("tiny-a", d2, 3, 0, NULL) != HD_OK) {
        return;
    }
    for (int i = 0; i < 3; i++) {
        snprintf(f1, sizeof(f1), "%s/%s", d1, files[i]);
        snprintf(f2, sizeof(f2), "%s/%s", d2, files[i]);
        HD_CHECK_MSG(files_equal(f1, f2), "%s differs between runs", files[i]);
    }
    {
        /* a different seed gives different weights */
        hd_model_config_t c;
        hd_inv_t inv;
        uint8_t a[128 * 256], b[128 * 256];
        const hd_inv_tensor_t *t;
        hd_config_preset("tiny-a", &c);
        hd_inv_init(&inv, &c, NULL);
        t = hd_inv_find(&inv, "layers.1.attn.wq_a.weight");
        HD_CHECK_INT_EQ(hd_inv_nbytes(t), sizeof(a));
        HD_CHECK_INT_EQ(hd_gen_tensor(&c, 1, t, a), HD_OK);
        HD_CHECK_INT_EQ(hd_gen_tensor(&c, 2, t, b), HD_OK);
        HD_CHECK_TRUE(memcmp(a, b, sizeof(a)) != 0);
        hd_inv_cleanup(&inv);
    }
}

HD_TEST(checkpoint_is_valid_and_complete)
{
    char d[300], err[512];
    hd_model_config_t c, back;
    hd_st_set_h s;
    hd_inv_t inv;
    dir_for("a1", d, sizeof(d));
    if (access(d, F_OK) != 0 && gen("tiny-a", d, 2, 0, NULL) != HD_OK) {
        return;
    }
    hd_config_preset("tiny-a", &c);
    HD_CHECK_MSG(hd_config_load(d, &back, err, sizeof(err)) == HD_OK, "%s", err);
    HD_CHECK_INT_EQ(back.n_layers, 6);
    s = open_set(d);
    if (s == NULL) {
        return;
    }
    hd_inv_init(&inv, &c, NULL);
    HD_CHECK_INT_EQ(hd_st_count(s), inv.n);
    /* gen-model orders each shard so every tensor is aligned to its element size */
    for (size_t i = 0; i < hd_st_count(s); i++) {
        const hd_st_tensor_t *t = hd_st_at(s, i);
        HD_CHECK_MSG((uintptr_t)t->data % hd_dtype_size(t->dtype) == 0, "%s misaligned", t->name);
    }
    HD_CHECK_MSG(hd_ckpt_check(s, &c, 0, 7, err, sizeof(err)) == HD_OK, "%s", err);
    HD_CHECK_MSG(hd_ckpt_check(s, &c, 2, 3, err, sizeof(err)) == HD_OK, "%s", err);
    /* hd_gen_tensor reproduces the file bytes, scales included */
    {
        const char *names[] = {"layers.4.attn.wq_b.weight",
                               "layers.4.attn.wq_b.scale",
                               "layers.3.ffn.experts.5.w2.weight",
                               "layers.3.ffn.experts.5.w2.scale",
                               "mtp.0.hc_head_scale",
                               "layers.1.ffn.gate.tid2eid",
                               "embed.weight"};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            const hd_inv_tensor_t *t = hd_inv_find(&inv, names[i]);
            const hd_st_tensor_t *f = hd_st_find(s, names[i]);
            void *buf;
            HD_CHECK_MSG(t != NULL && f != NULL, "%s", names[i]);
            if (t == NULL || f == NULL) {
                continue;
            }
            buf = malloc(hd_inv_nbytes(t));
            HD_CHECK_INT_EQ(hd_gen_tensor(&c, 1, t, buf), HD_OK);
            HD_CHECK_MSG(memcmp(buf, f->data, f->nbytes) == 0, "%s differs", names[i]);
            free(buf);
        }
    }
    hd_inv_cleanup(&inv);
    hd_st_close(s);
}

HD_TEST(shards_and_subsets_keep_values)
{
    char d1[300], d3[300], d4[300];
    hd_st_set_h a, b;
    hd_inv_filter_t f = {.layer_lo = 2, .layer_hi = 4, .globals = HD_INV_GLOBALS_AUTO};
    hd_model_config_t c;
    char err[512];
    int n_shards = 0;
    DIR *dd;
    struct dirent *de;
    hd_config_preset("tiny-a", &c);
    dir_for("a1", d1, sizeof(d1));
    dir_for("sharded", d3, sizeof(d3));
    dir_for("subset", d4, sizeof(d4));
    if (access(d1, F_OK) != 0 && gen("tiny-a", d1, 2, 0, NULL) != HD_OK) {
        return;
    }
    if (gen("tiny-a", d3, 2, 400000, NULL) != HD_OK || gen("tiny-a", d4, 2, 0, &f) != HD_OK) {
        return;
    }
    dd = opendir(d3);
    while ((de = readdir(dd)) != NULL) {
        n_shards +=
            strstr(de->d_name, ".safetensors") != NULL && strstr(de->d_name, ".json") == NULL;
    }
    closedir(dd);
    HD_CHECK_MSG(n_shards > 5, "only %d shards", n_shards);
    a = open_set(d1);
    b = open_set(d3);
    if (a && b) {
        HD_CHECK_INT_EQ(hd_st_count(a), hd_st_count(b));
        HD_CHECK_INT_EQ(hd_st_file_count(b), n_shards);
        same_tensors(a, b);
        for (size_t i = 0; i < hd_st_file_count(b); i++) {
            /* no shard beyond the limit unless it holds a single big tensor pair */
        }
    }
    hd_st_close(b);
    b = open_set(d4);
    if (a && b) {
        same_tensors(b, a);
        HD_CHECK_MSG(hd_ckpt_check(b, &c, 2, 4, err, sizeof(err)) == HD_OK, "%s", err);
        hd_log_set(quiet_sink, NULL);
        HD_CHECK_INT_EQ(hd_ckpt_check(b, &c, 0, 7, err, sizeof(err)), HD_ERR_NOT_FOUND);
        hd_log_set(NULL, NULL);
        HD_CHECK_MSG(strstr(err, "tensor embed.weight: missing") != NULL, "%s", err);
    }
    hd_st_close(b);
    hd_st_close(a);
}

static double mean_of(const float *x, size_t n, double *sd)
{
    double s = 0, q = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
    }
    s /= (double)n;
    for (size_t i = 0; i < n; i++) {
        q += (x[i] - s) * (x[i] - s);
    }
    *sd = sqrt(q / (double)n);
    return s;
}

static float *decode(const hd_st_tensor_t *t)
{
    size_t n = (size_t)hd_st_numel(t);
    float *x = malloc(n * sizeof(*x));
    for (size_t i = 0; i < n; i++) {
        if (t->dtype == HD_DT_BF16) {
            x[i] = hd_bf16_to_f32(((const uint16_t *)t->data)[i]);
        } else {
            x[i] = ((const float *)t->data)[i];
        }
    }
    return x;
}

HD_TEST(formats_and_distributions)
{
    char d[300];
    hd_st_set_h s;
    hd_model_config_t c;
    const hd_st_tensor_t *w, *sc, *t;
    double sd, m;
    float *x;
    hd_config_preset("tiny-a", &c);
    dir_for("a1", d, sizeof(d));
    if (access(d, F_OK) != 0 && gen("tiny-a", d, 2, 0, NULL) != HD_OK) {
        return;
    }
    s = open_set(d);
    if (s == NULL) {
        return;
    }
    /* FP8 weight [512, 128] (wq_b): every 128x128 block's amax/scale lands in (224, 448] */
    w = hd_st_find(s, "layers.0.attn.wq_b.weight");
    sc = hd_st_find(s, "layers.0.attn.wq_b.scale");
    HD_CHECK_TRUE(w && sc && w->dtype == HD_DT_F8_E4M3 && sc->shape[0] == 4 && sc->shape[1] == 1);
    if (w && sc) {
        const uint8_t *q = w->data, *e = sc->data;
        double sum2 = 0;
        for (int bi = 0; bi < 4; bi++) {
            float qmax = 0;
            for (int r = 0; r < 128; r++) {
                for (int col = 0; col < 128; col++) {
                    float v = hd_e4m3_table[q[(bi * 128 + r) * 128 + col]];
                    float deq = v * hd_e8m0_to_f32(e[bi]);
                    qmax = fabsf(v) > qmax ? fabsf(v) : qmax;
                    sum2 += (double)deq * deq;
                }
            }
            HD_CHECK_MSG(qmax > 224 && qmax <= 448, "block %d max code %g", bi, qmax);
        }
        HD_CHECK_NEAR(sqrt(sum2 / (512.0 * 128)), 0.02, 0.002);
    }
    /* FP4 routed expert w1 [128, 256] -> I8 [128, 128] + E8M0 [128, 8] */
    w = hd_st_find(s, "layers.3.ffn.experts.7.w1.weight");
    sc = hd_st_find(s, "layers.3.ffn.experts.7.w1.scale");
    HD_CHECK_TRUE(w && sc && w->dtype == HD_DT_I8 && w->shape[1] == 128 && sc->shape[1] == 8);
    if (w && sc) {
        const uint8_t *q = w->data, *e = sc->data;
        double sum2 = 0;
        for (int r = 0; r < 128; r++) {
            for (int g = 0; g < 8; g++) {
                float qmax = 0;
                for (int i = 0; i < 16; i++) {
                    uint8_t byte = q[r * 128 + g * 16 + i];
                    float lo = hd_e2m1_table[byte & 15], hi = hd_e2m1_table[byte >> 4];
                    float sv = hd_e8m0_to_f32(e[r * 8 + g]);
                    qmax = fmaxf(qmax, fmaxf(fabsf(lo), fabsf(hi)));
                    sum2 += (double)lo * sv * lo * sv + (double)hi * sv * hi * sv;
                }
                HD_CHECK_MSG(qmax >= 3 && qmax <= 6, "row %d group %d max code %g", r, g, qmax);
            }
        }
        HD_CHECK_NEAR(sqrt(sum2 / (128.0 * 256)), 0.02, 0.003);
    }
    /* bf16 weights N(0, 0.02) */
    t = hd_st_find(s, "embed.weight");
    x = decode(t);
    m = mean_of(x, (size_t)hd_st_numel(t), &sd);
    HD_CHECK_NEAR(m, 0, 0.001);
    HD_CHECK_NEAR(sd, 0.02, 0.0005);
    free(x);
    /* norms 1 + N(0, 0.1) */
    t = hd_st_find(s, "layers.1.attn.q_norm.weight");
    x = decode(t);
    m = mean_of(x, (size_t)hd_st_numel(t), &sd);
    HD_CHECK_NEAR(m, 1.0, 0.03);
    HD_CHECK_NEAR(sd, 0.1, 0.02);
    free(x);
    /* ape N(0, 0.5), sink N(0, 1), gate bias N(0, 0.1), hc base N(0, 0.5) */
    t = hd_st_find(s, "layers.1.attn.compressor.ape");
    HD_CHECK_TRUE(t->dtype == HD_DT_F32 && t->shape[0] == 16 && t->shape[1] == 128);
    x = decode(t);
    mean_of(x, (size_t)hd_st_numel(t), &sd);
    HD_CHECK_NEAR(sd, 0.5, 0.05);
    free(x);
    t = hd_st_find(s, "layers.3.ffn.gate.bias");
    x = decode(t);
    HD_CHECK_TRUE(t->dtype == HD_DT_F32 && fabsf(x[0]) < 1.0f && x[0] != 0.0f);
    free(x);
    t = hd_st_find(s, "layers.2.attn.attn_sink");
    HD_CHECK_TRUE(t->dtype == HD_DT_F32 && hd_st_numel(t) == 4);
    t = hd_st_find(s, "layers.2.hc_ffn_base");
    x = decode(t);
    mean_of(x, 24, &sd);
    HD_CHECK_TRUE(sd > 0.2 && sd < 0.9);
    free(x);
    /* hc scale U(0.5, 1.5) */
    t = hd_st_find(s, "hc_head_scale");
    HD_CHECK_TRUE(t->dtype == HD_DT_F32 && hd_st_numel(t) == 1);
    x = decode(t);
    HD_CHECK_TRUE(x[0] >= 0.5f && x[0] < 1.5f);
    free(x);
    /* tid2eid: k distinct experts per row, all in range, all experts used */
    t = hd_st_find(s, "layers.0.ffn.gate.tid2eid");
    HD_CHECK_TRUE(t->dtype == HD_DT_I64 && t->shape[0] == 1024 && t->shape[1] == 2);
    {
        const int64_t *v = t->data;
        int used[8] = {0}, bad = 0;
        for (int r = 0; r < 1024; r++) {
            bad += v[2 * r] == v[2 * r + 1] || v[2 * r] < 0 || v[2 * r] > 7 || v[2 * r + 1] < 0 ||
                   v[2 * r + 1] > 7;
            used[v[2 * r] & 7] = 1;
        }
        HD_CHECK_INT_EQ(bad, 0);
        for (int e = 0; e < 8; e++) {
            HD_CHECK_TRUE(used[e]);
        }
    }
    hd_st_close(s);
}

HD_TEST(ckpt_check_reports_bad_tensors)
{
    char d[300], bad[300], path[400], err[512];
    hd_st_set_h s, b;
    hd_st_writer_h w;
    hd_model_config_t c;
    hd_config_preset("tiny-a", &c);
    dir_for("a1", d, sizeof(d));
    if (access(d, F_OK) != 0 && gen("tiny-a", d, 2, 0, NULL) != HD_OK) {
        return;
    }
    s = open_set(d);
    if (s == NULL) {
        return;
    }
    dir_for("broken", bad, sizeof(bad));
    mkdir(bad, 0755);
    snprintf(path, sizeof(path), "%s/model.safetensors", bad);
    HD_CHECK_INT_EQ(hd_st_writer_create(path, &w), HD_OK);
    for (size_t i = 0; i < hd_st_count(s); i++) {
        const hd_st_tensor_t *t = hd_st_at(s, i);
        if (strcmp(t->name, "layers.3.ffn.gate.bias") == 0) {
            continue; /* missing */
        }
        if (strcmp(t->name, "layers.0.attn_norm.weight") == 0) {
            float z[256] = {0};
            hd_st_writer_add(w, t->name, HD_DT_F32, t->ndim, t->shape, z, sizeof(z));
            continue; /* wrong dtype */
        }
        if (strcmp(t->name, "layers.2.attn.compressor.ape") == 0) {
            int64_t sh[2] = {8, 128};
            hd_st_writer_add(w, t->name, t->dtype, 2, sh, t->data, t->nbytes);
            continue; /* wrong shape, same bytes */
        }
        hd_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes);
    }
    HD_CHECK_INT_EQ(hd_st_writer_finish(w), HD_OK);
    b = open_set(bad);
    if (b != NULL) {
        hd_log_set(quiet_sink, NULL);
        /* layer 0 only: the dtype problem */
        HD_CHECK_INT_EQ(hd_ckpt_check(b, &c, 0, 1, err, sizeof(err)), HD_ERR_FORMAT);
        HD_CHECK_MSG(strstr(err, "model.safetensors: tensor layers.0.attn_norm.weight: dtype F32, "
                                 "expected BF16") != NULL,
                     "%s", err);
        HD_CHECK_INT_EQ(hd_ckpt_check(b, &c, 2, 3, err, sizeof(err)), HD_ERR_FORMAT);
        HD_CHECK_MSG(strstr(err, "tensor layers.2.attn.compressor.ape: shape [8, 128], expected "
                                 "[4, 256]") != NULL,
                     "%s", err);
        HD_CHECK_INT_EQ(hd_ckpt_check(b, &c, 3, 4, err, sizeof(err)), HD_ERR_NOT_FOUND);
        HD_CHECK_MSG(strstr(err, "broken: tensor layers.3.ffn.gate.bias: missing") != NULL, "%s",
                     err);
        HD_CHECK_INT_EQ(hd_ckpt_check(b, &c, 0, 7, err, sizeof(err)), HD_ERR_FORMAT);
        HD_CHECK_MSG(strstr(err, "(and 2 more problems)") != NULL, "%s", err);
        HD_CHECK_INT_EQ(hd_ckpt_check(b, &c, 4, 7, err, sizeof(err)), HD_OK);
        /* a config that does not match the checkpoint */
        c.moe_inter = 256;
        HD_CHECK_INT_EQ(hd_ckpt_check(b, &c, 4, 5, err, sizeof(err)), HD_ERR_FORMAT);
        HD_CHECK_MSG(strstr(err, "shape") != NULL, "%s", err);
        hd_log_set(NULL, NULL);
        hd_st_close(b);
    }
    hd_st_close(s);
}

HD_TEST(gen_other_presets_and_formats)
{
    char d[300], err[512];
    hd_model_config_t c;
    hd_st_set_h s;
    hd_gen_params_t p = {.seed = 7, .n_threads = 2};
    /* tiny-b with FP8 experts */
    hd_config_preset("tiny-b", &c);
    c.expert_dtype = HD_EXPERT_FP8;
    p.out_dir = dir_for("b_fp8", d, sizeof(d));
    HD_CHECK_MSG(hd_gen_model(&c, &p, err, sizeof(err)) == HD_OK, "%s", err);
    s = open_set(d);
    if (s) {
        hd_model_config_t back;
        HD_CHECK_MSG(hd_ckpt_check(s, &c, 0, 7, err, sizeof(err)) == HD_OK, "%s", err);
        HD_CHECK_INT_EQ(hd_config_load(d, &back, err, sizeof(err)), HD_OK);
        HD_CHECK_INT_EQ(back.expert_dtype, HD_EXPERT_FP8);
        HD_CHECK_INT_EQ(hd_st_find(s, "layers.1.ffn.experts.0.w2.weight")->dtype, HD_DT_F8_E4M3);
        hd_st_close(s);
    }
    /* bad config and bad directory are refused with a message */
    c.o_groups = 3;
    HD_CHECK_INT_EQ(hd_gen_model(&c, &p, err, sizeof(err)), HD_ERR_FORMAT);
    HD_CHECK_MSG(strstr(err, "o_groups") != NULL, "%s", err);
    hd_config_preset("tiny-a", &c);
    p.out_dir = "/proc/nonexistent/x";
    HD_CHECK_TRUE(hd_gen_model(&c, &p, err, sizeof(err)) != HD_OK);
    HD_CHECK_MSG(strstr(err, "/proc/nonexistent/x") != NULL, "%s", err);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* Last test: remove the scratch directory (kept when an earlier test failed). */
HD_TEST(zz_remove_scratch)
{
    if (root[0] != '\0' && hd_test_failures == 0) {
        HD_CHECK_INT_EQ(nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
    }
}
