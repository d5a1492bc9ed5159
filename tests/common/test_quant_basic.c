/*
 * Basic checks of common/quant.c against the format definitions. The exhaustive comparison
 * with ml_dtypes lives in tests/model/test_quant_ref.c (committed reference vectors).
 */
#include "hd_test.h"
#include "hadal/quant.h"

HD_TEST(quant_e4m3_known_values)
{
    HD_CHECK_NEAR(hd_e4m3_table[0x7E], 448.0, 0);
    HD_CHECK_NEAR(hd_e4m3_table[0x01], 0.001953125, 0);
    HD_CHECK_NEAR(hd_e4m3_table[0x08], 0.015625, 0);
    HD_CHECK_NEAR(hd_e4m3_table[0x38], 1.0, 0);
    HD_CHECK_TRUE(isnan(hd_e4m3_table[0x7F]) && isnan(hd_e4m3_table[0xFF]));
    /* Every finite code round-trips through encode. */
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7F) == 0x7F) {
            continue;
        }
        uint8_t back = hd_f32_to_e4m3(hd_e4m3_table[c]);
        HD_CHECK_MSG(back == c || (c == 0x80 && back == 0x80), "code %d -> %d", c, back);
    }
    HD_CHECK_INT_EQ(hd_f32_to_e4m3(1000.0f), 0x7E);
    HD_CHECK_INT_EQ(hd_f32_to_e4m3(-1000.0f), 0xFE);
    /* tie 1.0625 between 1.0 (even) and 1.125 -> 1.0 */
    HD_CHECK_INT_EQ(hd_f32_to_e4m3(1.0625f), 0x38);
}

HD_TEST(quant_e2m1_rne)
{
    HD_CHECK_INT_EQ(hd_f32_to_e2m1(0.25f), 0);
    HD_CHECK_INT_EQ(hd_f32_to_e2m1(0.75f), 2);
    HD_CHECK_INT_EQ(hd_f32_to_e2m1(1.25f), 2);
    HD_CHECK_INT_EQ(hd_f32_to_e2m1(1.75f), 4);
    HD_CHECK_INT_EQ(hd_f32_to_e2m1(2.5f), 4);
    HD_CHECK_INT_EQ(hd_f32_to_e2m1(3.5f), 6);
    HD_CHECK_INT_EQ(hd_f32_to_e2m1(5.0f), 6);
    HD_CHECK_INT_EQ(hd_f32_to_e2m1(-7.0f), 15);
    for (int c = 0; c < 16; c++) {
        HD_CHECK_INT_EQ(hd_f32_to_e2m1(hd_e2m1_table[c]), c);
    }
}

HD_TEST(quant_bf16_and_scales)
{
    HD_CHECK_INT_EQ(hd_f32_to_bf16(1.0f), 0x3F80);
    HD_CHECK_INT_EQ(hd_f32_to_bf16(1.00390625f), 0x3F80); /* tie to even */
    HD_CHECK_INT_EQ(hd_f32_to_bf16(1.01171875f), 0x3F82); /* tie to even (up) */
    HD_CHECK_NEAR(hd_e8m0_to_f32(127), 1.0, 0);
    HD_CHECK_NEAR(hd_e8m0_to_f32(130), 8.0, 0);
    HD_CHECK_NEAR(hd_pow2_scale_ceil(448.0f, 448.0f, 1e-4f), 1.0, 0);
    HD_CHECK_NEAR(hd_pow2_scale_ceil(449.0f, 448.0f, 1e-4f), 2.0, 0);
    HD_CHECK_NEAR(hd_pow2_scale_ceil(0.0f, 6.0f, 6.0f * 1.17549435e-38f), 1.17549435e-38, 1e-45);
}

HD_TEST(quant_hadamard_orthonormal)
{
    float x[128], y[128];
    double n0 = 0, n1 = 0;
    for (int i = 0; i < 128; i++) {
        x[i] = y[i] = sinf((float)i * 0.37f) + 0.1f * (float)(i % 7);
        n0 += (double)x[i] * x[i];
    }
    hd_hadamard(y, 128);
    for (int i = 0; i < 128; i++) {
        n1 += (double)y[i] * y[i];
    }
    HD_CHECK_NEAR(n0, n1, 1e-3);
    hd_hadamard(y, 128); /* H is its own inverse when normalised */
    for (int i = 0; i < 128; i++) {
        HD_CHECK_NEAR(x[i], y[i], 1e-5);
    }
}
