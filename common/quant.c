/*
 * quant.c - encode/decode of bf16, e4m3fn, e2m1 and e8m0, the official pow2 block-scale rule,
 * and the Hadamard transform. Decoding tables are built from the format definitions
 * (sign, exponent, mantissa, bias), not copied from anywhere.
 */
#include "hadal/quant.h"

#include <math.h>
#include <string.h>

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#define E4M3(c)                                                                                    \
    ((((c)&0x7F) == 0x7F) ? NAN                                                                    \
     : (((c) >> 3 & 0xF) == 0)                                                                     \
         ? (((c)&0x80) ? -1.0f : 1.0f) * (float)((c)&7) * 0.001953125f                            \
         : (((c)&0x80) ? -1.0f : 1.0f) * (1.0f + (float)((c)&7) / 8.0f) *                          \
               (float)(1u << ((c) >> 3 & 0xF)) / 128.0f)
#define E4M3_8(c) E4M3(c), E4M3(c + 1), E4M3(c + 2), E4M3(c + 3), E4M3(c + 4), E4M3(c + 5),        \
                  E4M3(c + 6), E4M3(c + 7)
#define E4M3_32(c) E4M3_8(c), E4M3_8(c + 8), E4M3_8(c + 16), E4M3_8(c + 24)

/* e4m3fn: bias 7; normal 2^(e-7)*(1+m/8); subnormal 2^-6*m/8 = m*2^-9; 0x7F/0xFF NaN. */
const float hd_e4m3_table[256] = {E4M3_32(0),   E4M3_32(32),  E4M3_32(64),  E4M3_32(96),
                                  E4M3_32(128), E4M3_32(160), E4M3_32(192), E4M3_32(224)};

const float hd_e2m1_table[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                 -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

float hd_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t hd_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    }
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

uint8_t hd_f32_to_e4m3(float f)
{
    uint8_t sign = (f32_bits(f) >> 31) ? 0x80 : 0x00;
    float a = fabsf(f);
    if (isnan(f)) {
        return 0x7F;
    }
    if (a >= 448.0f) {
        return sign | 0x7E;
    }
    if (a < 0.015625f) {
        /* subnormal range: multiples of 2^-9; rint() rounds half to even */
        float q = rintf(a * 512.0f);
        return sign | (uint8_t)q; /* q == 8 is the smallest normal, code 0x08 */
    }
    int e;
    frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    int ex = e - 1; /* a in [2^ex, 2^(ex+1)) */
    float step = ldexpf(1.0f, ex - 3);
    float q = rintf(a / step); /* 8..16 */
    if (q >= 16.0f) {
        q = 8.0f;
        ex += 1;
    }
    if (ex > 8 || (ex == 8 && q > 14.0f)) {
        return sign | 0x7E;
    }
    return sign | (uint8_t)(((ex + 7) << 3) | ((int)q - 8));
}

uint8_t hd_f32_to_e2m1(float f)
{
    uint8_t sign = (f32_bits(f) >> 31) ? 0x8 : 0x0;
    float a = fabsf(f);
    uint8_t best = 0;
    if (isnan(f)) {
        return 0x7; /* no NaN in e2m1: saturate */
    }
    if (a >= 6.0f) {
        return sign | 0x7;
    }
    for (uint8_t c = 1; c < 8; c++) {
        float lo = hd_e2m1_table[c - 1], hi = hd_e2m1_table[c];
        if (a >= hi) {
            best = c;
            continue;
        }
        if (a > lo) {
            float mid = 0.5f * (lo + hi);
            if (a > mid || (a == mid && (c & 1) == 0)) {
                best = c;
            }
        }
        break;
    }
    return sign | best;
}

float hd_e8m0_to_f32(uint8_t e)
{
    if (e == 255) {
        return NAN;
    }
    if (e == 0) {
        return ldexpf(1.0f, -127);
    }
    return bits_f32((uint32_t)e << 23);
}

uint8_t hd_f32_to_e8m0_ceil(float f)
{
    uint32_t u = f32_bits(f);
    int e = (int)((u >> 23) & 0xFF);
    if ((u & 0x7FFFFFu) != 0) {
        e += 1;
    }
    if (e > 254) {
        e = 254;
    }
    return (uint8_t)e;
}

float hd_pow2_scale_ceil(float amax, float qmax, float amax_floor)
{
    float a = amax > amax_floor ? amax : amax_floor;
    float r = a * (1.0f / qmax);
    uint32_t u = f32_bits(r);
    uint32_t e = (u >> 23) & 0xFF;
    if ((u & 0x7FFFFFu) != 0) {
        e += 1;
    }
    return bits_f32(e << 23);
}

void hd_fp8_sim_blocks(float *x, size_t n, size_t block)
{
    for (size_t b = 0; b < n; b += block) {
        size_t m = n - b < block ? n - b : block;
        float amax = 0.0f;
        for (size_t i = 0; i < m; i++) {
            amax = fmaxf(amax, fabsf(x[b + i]));
        }
        float s = hd_pow2_scale_ceil(amax, 448.0f, 1e-4f);
        for (size_t i = 0; i < m; i++) {
            float v = x[b + i] / s;
            v = fminf(fmaxf(v, -448.0f), 448.0f);
            x[b + i] = hd_e4m3_table[hd_f32_to_e4m3(v)] * s;
        }
    }
}

void hd_fp4_sim_blocks(float *x, size_t n, size_t block)
{
    const float floor4 = 6.0f * 1.17549435e-38f; /* 6 * 2^-126 */
    for (size_t b = 0; b < n; b += block) {
        size_t m = n - b < block ? n - b : block;
        float amax = 0.0f;
        for (size_t i = 0; i < m; i++) {
            amax = fmaxf(amax, fabsf(x[b + i]));
        }
        float s = hd_pow2_scale_ceil(amax, 6.0f, floor4);
        for (size_t i = 0; i < m; i++) {
            float v = x[b + i] / s;
            v = fminf(fmaxf(v, -6.0f), 6.0f);
            x[b + i] = hd_e2m1_table[hd_f32_to_e2m1(v)] * s;
        }
    }
}

void hd_hadamard(float *x, size_t n)
{
    for (size_t h = 1; h < n; h *= 2) {
        for (size_t i = 0; i < n; i += 2 * h) {
            for (size_t j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
    }
    float s = 1.0f / sqrtf((float)n);
    for (size_t i = 0; i < n; i++) {
        x[i] *= s;
    }
}
