/*
 * hadal/quant.h - the number formats of DeepSeek-V4 checkpoints and numerics.
 *
 * bf16, float8_e4m3fn (weights, activations, KV nope dims), float4_e2m1 (experts, indexer),
 * float8_e8m0fnu (power-of-two scales), the block scale rules of the official act_quant,
 * and the normalised 128-point Walsh-Hadamard transform. Pure functions, thread-safe.
 * Rounding is round-to-nearest-even everywhere.
 */
#ifndef HADAL_QUANT_H
#define HADAL_QUANT_H

#include <stddef.h>
#include <stdint.h>

extern const float hd_e4m3_table[256]; /* code -> value (NaN for 0x7F/0xFF) */
extern const float hd_e2m1_table[16];  /* code -> value (code 8 = -0) */

float hd_bf16_to_f32(uint16_t h);
uint16_t hd_f32_to_bf16(float f); /* RNE; NaN stays NaN */
static inline float hd_round_bf16(float f);

uint8_t hd_f32_to_e4m3(float f); /* RNE, saturating to +-448; NaN -> 0x7F */
uint8_t hd_f32_to_e2m1(float f); /* RNE (ties to even code), saturating to +-6 */
float hd_e8m0_to_f32(uint8_t e); /* 2^(e-127); 255 -> NaN */
/* Exponent byte of @f when @f is a power of two in range; otherwise of 2^ceil(log2 f). */
uint8_t hd_f32_to_e8m0_ceil(float f);

/*
 * Official act_quant scale for one block: amax floored at @amax_floor, then
 * 2^ceil(log2(amax * (1/@qmax))) computed on the fp32 product's bits.
 * FP8: qmax 448, floor 1e-4. FP4: qmax 6, floor 6*2^-126.
 */
float hd_pow2_scale_ceil(float amax, float qmax, float amax_floor);

/* In-place: x[i] <- e4m3(clamp(x[i]/s, +-448))*s per block of @block (FP8 simulation). */
void hd_fp8_sim_blocks(float *x, size_t n, size_t block);
/* In-place FP4 simulation per block of @block (e2m1, pow2 scale, amax floor 6*2^-126). */
void hd_fp4_sim_blocks(float *x, size_t n, size_t block);
/* In-place normalised Walsh-Hadamard transform (Sylvester order); @n a power of two. */
void hd_hadamard(float *x, size_t n);

static inline float hd_round_bf16(float f)
{
    return hd_bf16_to_f32(hd_f32_to_bf16(f));
}

#endif /* HADAL_QUANT_H */
