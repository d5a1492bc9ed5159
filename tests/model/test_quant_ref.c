/*
 * test_quant_ref.c - the quantisation primitives against vectors computed by ml_dtypes and
 * NumPy (tools/reference/make_quant_vectors.py; tests/golden/quant/): every e4m3, e2m1 and
 * e8m0 code decoded, encoding at every rounding boundary, the power-of-two ceiling scale,
 * the official FP8 / FP4 block quantisation and the Hadamard transform.
 */
#include "hd_test.h"
#include "hadal/quant.h"
#include "hadal/safetensors.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static hd_st_set_h vec;

static const hd_st_tensor_t *need(const char *name, hd_dtype_t dt)
{
    const hd_st_tensor_t *t = vec ? hd_st_find(vec, name) : NULL;
    HD_CHECK_MSG(t != NULL, "tensor %s missing from quant_vectors.safetensors", name);
    if (t != NULL) {
        HD_CHECK_INT_EQ(t->dtype, dt);
    }
    return t != NULL && t->dtype == dt ? t : NULL;
}

static bool same_bits(float a, float b)
{
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return ua == ub || (isnan(a) && isnan(b));
}

static void open_vectors(void)
{
    char path[1200], err[512] = "";
    const char *src = getenv("HD_SOURCE_DIR");
    if (vec != NULL) {
        return;
    }
    snprintf(path, sizeof(path), "%s/tests/golden/quant/quant_vectors.safetensors",
             src ? src : "../..");
    HD_CHECK_MSG(hd_st_open(path, &vec, err, sizeof(err)) == HD_OK, "%s: %s", path, err);
}

HD_TEST(decode_every_code)
{
    open_vectors();
    const hd_st_tensor_t *e4 = need("e4m3_dec", HD_DT_F32), *e2 = need("e2m1_dec", HD_DT_F32),
                         *e8 = need("e8m0_dec", HD_DT_F32);
    if (e4 == NULL || e2 == NULL || e8 == NULL) {
        return;
    }
    const float *r4 = e4->data, *r2 = e2->data, *r8 = e8->data;
    int bad = 0;
    for (int c = 0; c < 256; c++) {
        bad += !same_bits(hd_e4m3_table[c], r4[c]);
        bad += !same_bits(hd_e8m0_to_f32((uint8_t)c), r8[c]);
    }
    for (int c = 0; c < 16; c++) {
        bad += !same_bits(hd_e2m1_table[c], r2[c]);
    }
    HD_CHECK_INT_EQ(bad, 0);
}

static void check_encode(const char *in_name, const char *out_name, uint8_t (*enc)(float))
{
    const hd_st_tensor_t *ti = need(in_name, HD_DT_F32), *to = need(out_name, HD_DT_I32);
    if (ti == NULL || to == NULL) {
        return;
    }
    const float *x = ti->data;
    const int32_t *want = to->data;
    int64_t n = hd_st_numel(ti), bad = 0;
    HD_CHECK_INT_EQ(n, hd_st_numel(to));
    HD_CHECK_TRUE(n > 1000);
    for (int64_t i = 0; i < n; i++) {
        int got = enc(x[i]);
        if (got != want[i] && bad++ < 5) {
            HD_CHECK_MSG(0, "%s(%.9g) = 0x%02x, reference 0x%02x", in_name, (double)x[i], got,
                         want[i]);
        }
    }
    HD_CHECK_INT_EQ(bad, 0);
}

HD_TEST(encode_at_every_boundary)
{
    open_vectors();
    check_encode("e4m3_in", "e4m3_out", hd_f32_to_e4m3);
    check_encode("e2m1_in", "e2m1_out", hd_f32_to_e2m1);
    check_encode("e8m0c_in", "e8m0c_out", hd_f32_to_e8m0_ceil);
    /* beyond the ranges the reference covers: Hadal saturates (the official path clamps
       before casting, so these never reach a cast there) */
    HD_CHECK_INT_EQ(hd_f32_to_e4m3(1000.0f), 0x7E);
    HD_CHECK_INT_EQ(hd_f32_to_e4m3(-1000.0f), 0xFE);
    HD_CHECK_INT_EQ(hd_f32_to_e2m1(100.0f), 0x7);
    HD_CHECK_INT_EQ(hd_f32_to_e2m1(-100.0f), 0xF);
}

static void check_blocks(const char *in_name, const char *out_name, size_t block,
                         void (*sim)(float *, size_t, size_t))
{
    const hd_st_tensor_t *ti = need(in_name, HD_DT_F32), *to = need(out_name, HD_DT_F32);
    if (ti == NULL || to == NULL) {
        return;
    }
    int64_t n = hd_st_numel(ti), bad = 0;
    float *x = malloc(sizeof(float) * (size_t)n);
    const float *want = to->data;
    memcpy(x, ti->data, sizeof(float) * (size_t)n);
    HD_CHECK_INT_EQ(n % (int64_t)block, 0);
    sim(x, (size_t)n, block);
    for (int64_t i = 0; i < n; i++) {
        if (!same_bits(x[i], want[i]) && bad++ < 5) {
            HD_CHECK_MSG(0, "%s[%lld] (block %lld): %.9g, reference %.9g", in_name, (long long)i,
                         (long long)(i / (int64_t)block), (double)x[i], (double)want[i]);
        }
    }
    HD_CHECK_INT_EQ(bad, 0);
    free(x);
}

HD_TEST(block_quantisation_official)
{
    open_vectors();
    check_blocks("act_in", "act_out", 128, hd_fp8_sim_blocks);
    check_blocks("fp4_in", "fp4_out", 32, hd_fp4_sim_blocks);
}

HD_TEST(hadamard_against_matrix)
{
    open_vectors();
    const hd_st_tensor_t *ti = need("had_in", HD_DT_F32), *to = need("had_out", HD_DT_F32);
    if (ti == NULL || to == NULL) {
        return;
    }
    const float *in = ti->data, *want = to->data;
    double worst = 0;
    for (int r = 0; r < 8; r++) {
        float x[128];
        double amax = 0, dmax = 0;
        memcpy(x, in + r * 128, sizeof(x));
        hd_hadamard(x, 128);
        for (int i = 0; i < 128; i++) {
            amax = fmax(amax, fabs(want[r * 128 + i]));
            dmax = fmax(dmax, fabs((double)x[i] - want[r * 128 + i]));
        }
        worst = fmax(worst, dmax / amax);
    }
    /* float32 butterflies against a float64 matrix product: rounding only */
    HD_CHECK_MSG(worst < 2e-6, "Hadamard rel error %.3e", worst);
    hd_st_close(vec);
    vec = NULL;
}
