/*
 * gen_impl.h - model-private fast encoders used by gen.c for the bulk of a checkpoint.
 * They equal hd_f32_to_e4m3 / hd_f32_to_e2m1 (quant.h) on the inputs gen.c feeds them
 * (|x| <= 448 resp. <= 6, no NaN); tests/model/test_gen.c checks that equality.
 */
#ifndef HADAL_MODEL_GEN_IMPL_H
#define HADAL_MODEL_GEN_IMPL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* e4m3fn code of @x, round-to-nearest-even, saturating at 448. */
static inline uint8_t hd_gen_e4m3(float x)
{
    uint32_t u, code;
    uint8_t sign;
    float a;
    memcpy(&u, &x, 4);
    sign = (uint8_t)((u >> 24) & 0x80);
    u &= 0x7FFFFFFFu;
    memcpy(&a, &u, 4);
    if (a < 0.015625f) {
        return sign | (uint8_t)rintf(a * 512.0f); /* subnormals: multiples of 2^-9 */
    }
    u += 0x7FFFFu + ((u >> 20) & 1u); /* RNE to 3 mantissa bits */
    code = (u >> 20) - ((127u - 7u) << 3);
    return sign | (uint8_t)(code > 0x7Eu ? 0x7Eu : code);
}

/* e2m1 code of @x, round-to-nearest with ties to the even code, saturating at 6. */
static inline uint8_t hd_gen_e2m1(float x)
{
    float a = fabsf(x);
    uint8_t code = (uint8_t)((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) +
                             (a >= 3.5f) + (a > 5.0f));
    return code | (signbit(x) ? 0x8 : 0x0);
}

#endif /* HADAL_MODEL_GEN_IMPL_H */
