/*
 * matmul_avx2.c - the AVX2+FMA matmul kernels: vector decoders for every weight format,
 * fused decode+dot for one or two tokens (batch-1 decode is memory-bound: each weight byte
 * is touched once, in registers), a register-tiled 4 rows x 3 tokens kernel over rows
 * decoded once to f32 (prefill and batched decode), and the official act_quant.
 *
 * Every function carries target("avx2,fma"); matmul.c calls them only when dot.c says the
 * CPU has both. All paths realise the canonical reduction of matmul.c bit for bit: one
 * 8-lane accumulator per output, one FMA per 8 kernel-order columns in column order, then
 * hsum8. Decoded weights are exact (code value times a power of two, rounded once), so the
 * decoders below agree bitwise with cpu_mm_decode_ref whatever trick they use.
 */
#include "kernels_impl.h"
#include "hadal/quant.h"

#include <immintrin.h>
#include <string.h>

#define AVX2_FN __attribute__((target("avx2,fma")))
#define AVX2_INL static inline __attribute__((always_inline, target("avx2,fma")))

/* ---- decoders ---- */

/* bf16 high/low bytes of the e2m1 values, indexed by nibble, repeated for both lanes. */
static uint8_t mm_fp4_hi[32] __attribute__((aligned(32)));
static uint8_t mm_fp4_lo[32] __attribute__((aligned(32)));
/* mm_fp4_hi with code 8 (-0) as +0: the pattern fp4_dec32_pow2 needs (see there). */
static uint8_t mm_fp4_hiz[32] __attribute__((aligned(32)));
/*
 * For e8m0 bytes e in [MM_FP4_EMIN, 127]: (127 - e) << 7 in both halves of a 32-bit word,
 * the amount to take off a bf16 pattern's exponent field to multiply it by 2^(e-127).
 */
#define MM_FP4_EMIN 64
static uint32_t mm_fp4_off[256];
static int mm_fp4_ready;

static void mm_fp4_tables(void)
{
    if (__atomic_load_n(&mm_fp4_ready, __ATOMIC_ACQUIRE)) {
        return;
    }
    for (int i = 0; i < 32; i++) {
        uint32_t u;
        float v = hd_e2m1_table[i & 15];
        memcpy(&u, &v, 4); /* every e2m1 value is an exact bf16: the low 16 bits are zero */
        mm_fp4_hi[i] = (uint8_t)(u >> 24);
        mm_fp4_lo[i] = (uint8_t)(u >> 16);
        mm_fp4_hiz[i] = (i & 15) == 8 ? 0 : mm_fp4_hi[i];
    }
    for (int e = MM_FP4_EMIN; e <= 127; e++) {
        mm_fp4_off[e] = (uint32_t)(127 - e) << 7 | (uint32_t)(127 - e) << 23;
    }
    __atomic_store_n(&mm_fp4_ready, 1, __ATOMIC_RELEASE);
}

AVX2_INL float hsum8(__m256 v)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

AVX2_INL __m256 bf16_dec8(const uint8_t *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/*
 * e4m3 -> f32 by moving the 7 exponent+mantissa bits to f32 bits 20..26: the f32 read that
 * way is the e4m3 value times 2^-120 for normals and subnormals alike, so one multiply by
 * scale * 2^120 (= 2^(e-7) for an e8m0 byte e <= 134) gives value * scale with one rounding.
 * Codes 0x7F/0xFF (NaN in e4m3fn) come out NaN as in hd_e4m3_table.
 */
AVX2_INL __m256 fp8_dec8(const uint8_t *q, __m256 s, __m256 s2, bool two)
{
    __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q));
    __m256i t = _mm256_slli_epi32(v, 20);
    __m256i mag = _mm256_and_si256(t, _mm256_set1_epi32(0x07F00000));
    __m256i sm = _mm256_and_si256(t, _mm256_set1_epi32((int)0x87F00000u));
    /* fma(a, s, -0) rounds like a * s, bit for bit (a zero keeps its sign), but unlike a
       multiply it takes subnormal a (codes with exponent 0) without a slow microcode path */
    __m256 f = _mm256_fmadd_ps(_mm256_castsi256_ps(sm), s, _mm256_set1_ps(-0.0f));
    if (two) {
        f = _mm256_mul_ps(f, s2);
    }
    __m256i nan = _mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x07F00000));
    return _mm256_or_ps(f, _mm256_castsi256_ps(nan));
}

/* The multipliers of fp8_dec8 for e8m0 byte @e: returns whether two multiplies are needed. */
AVX2_INL bool fp8_scale(uint8_t e, __m256 *s, __m256 *s2)
{
    if (e <= 134) {
        *s = _mm256_castsi256_ps(_mm256_set1_epi32(((int)e + 120) << 23));
        *s2 = *s;
        return false;
    }
    *s = _mm256_set1_ps(0x1p120f); /* exact, then one rounded multiply by the scale */
    *s2 = _mm256_set1_ps(cpu_e8m0_f32[e]);
    return true;
}

/*
 * 16 bytes of e2m1 pairs (32 columns) -> 4 vectors of value * s in kernel order. One pshufb
 * per byte of the bf16 pattern turns nibbles into bf16 values (lane 0 from the low nibbles,
 * lane 1 from the high ones); interleaving the two bytes gives 16-bit words, and each 32-bit
 * word holds two of them: the even one becomes an f32 by a left shift, the odd one by
 * masking off the low half (an AND, which unlike a shuffle runs on every vector pipe).
 * Kernel order within each 16 columns is therefore 0,4,8,12,1,5,9,13 | 2,6,10,14,3,7,11,15
 * (mm_prepare_x in matmul.c puts the inputs in this order).
 */
AVX2_INL void fp4_words(const uint8_t *q, __m256i thi, __m256i tlo, __m256i *a, __m256i *c)
{
    __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)q));
    __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                                   _mm256_set1_epi8(0x0F));
    __m256i hb = _mm256_shuffle_epi8(thi, idx);
    __m256i lb = _mm256_shuffle_epi8(tlo, idx);
    *a = _mm256_unpacklo_epi8(lb, hb);
    *c = _mm256_unpackhi_epi8(lb, hb);
}

AVX2_INL void fp4_words_f32(__m256i a, __m256i c, __m256 out[4])
{
    const __m256i hi = _mm256_set1_epi32((int)0xFFFF0000u);
    out[0] = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
    out[1] = _mm256_castsi256_ps(_mm256_and_si256(a, hi));
    out[2] = _mm256_castsi256_ps(_mm256_slli_epi32(c, 16));
    out[3] = _mm256_castsi256_ps(_mm256_and_si256(c, hi));
}

AVX2_INL void fp4_dec32(const uint8_t *q, __m256 s, __m256i thi, __m256i tlo, __m256 out[4])
{
    __m256i a, c;
    fp4_words(q, thi, tlo, &a, &c);
    fp4_words_f32(a, c, out);
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        out[k] = _mm256_mul_ps(out[k], s);
    }
}

/*
 * fp4_dec32 for a block scale 2^(e-127) with MM_FP4_EMIN <= e <= 127, without a multiply:
 * @off (mm_fp4_off[e]) is subtracted from the exponent field of each bf16 pattern, with
 * unsigned saturation. A nonzero e2m1 value has exponent field >= 126 > 127 - e, so it
 * stays normal and is scaled exactly (the product fp4_dec32 rounds is exact here too);
 * a zero pattern saturates at 0, which is why @thi must map code 8 (-0) to +0
 * (mm_fp4_hiz). The sign of a zero weight never shows in a result: the accumulators start
 * at +0 and a round-to-nearest sum is -0 only when both terms are, so every FMA chain gives
 * the same bits with +0 or -0 weights.
 */
AVX2_INL void fp4_dec32_pow2(const uint8_t *q, __m256i off, __m256i thi, __m256i tlo,
                             __m256 out[4])
{
    __m256i a, c;
    fp4_words(q, thi, tlo, &a, &c);
    fp4_words_f32(_mm256_subs_epu16(a, off), _mm256_subs_epu16(c, off), out);
}

/*
 * Prefetch distance in bytes ahead on each weight row stream. A 4-row fused kernel reads
 * as little as 8 bytes per row per step (FP8), so the out-of-order window alone keeps only
 * about one cache line per stream in flight; explicit prefetches restore the parallelism.
 */
#ifndef MM_PF_BYTES
#define MM_PF_BYTES 768
#endif

AVX2_INL void mm_prefetch4(const uint8_t *const rp[4], int64_t off, int64_t end, size_t stride)
{
    int64_t o = off + MM_PF_BYTES;
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        /* past the end of a row, run ahead into the same lane of the next 4-row block, so a
           block starts with its lines on the way (prefetches never fault, even past the
           matrix) */
        const uint8_t *p = o < end ? rp[i] + o : rp[i] + 4 * stride + (o - end);
        _mm_prefetch((const char *)p, _MM_HINT_T0);
    }
}

/* Rows r + min(i, nr-1) for i < 4: duplicates of the last row are computed and dropped. */
AVX2_INL void mm_rows4(const hd_weight_t *w, int64_t r, int nr, const uint8_t *rp[4],
                       int64_t ri[4])
{
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        ri[i] = r + (i < nr ? i : nr - 1);
        rp[i] = (const uint8_t *)w->data + (size_t)ri[i] * w->row_bytes;
    }
}

/* ---- fused decode + dot for NT (1 or 2) tokens and 4 rows ---- */

/* acc += 4 rows x NT tokens over columns [c0, c1) of FP8 rows @rp, canonical decoding. */
AVX2_INL void fp8_block(const uint8_t *const rp[4], const __m256 s[4], const __m256 s2[4],
                        bool two, int64_t c0, int64_t c1, const float *xk, int64_t K8, int NT,
                        __m256 acc[4][2])
{
    for (int64_t c = c0; c < c1; c += 8) {
        __m256 x0 = _mm256_loadu_ps(xk + c);
        __m256 x1 = NT > 1 ? _mm256_loadu_ps(xk + K8 + c) : x0;
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            __m256 f = fp8_dec8(rp[i] + c, s[i], s2[i], two);
            acc[i][0] = _mm256_fmadd_ps(f, x0, acc[i][0]);
            if (NT > 1) {
                acc[i][1] = _mm256_fmadd_ps(f, x1, acc[i][1]);
            }
        }
    }
}

/* acc += the columns [cv, cols) past the last multiple of 8 (decoded by the reference). */
AVX2_INL void mm_tail4(const hd_weight_t *w, const int64_t ri[4], int64_t cv, const float *xk,
                       int64_t K8, int NT, __m256 acc[4][2])
{
    if (cv >= w->cols) {
        return;
    }
    __m256 x0 = _mm256_loadu_ps(xk + cv);
    __m256 x1 = NT > 1 ? _mm256_loadu_ps(xk + K8 + cv) : x0;
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        float t[8] __attribute__((aligned(32))) = {0};
        cpu_mm_decode_ref(w, ri[i], cv, w->cols, t);
        __m256 f = _mm256_load_ps(t);
        acc[i][0] = _mm256_fmadd_ps(f, x0, acc[i][0]);
        if (NT > 1) {
            acc[i][1] = _mm256_fmadd_ps(f, x1, acc[i][1]);
        }
    }
}

AVX2_INL void gemv_fp8(const hd_weight_t *w, int64_t r, int nr, const float *xk, int64_t K8,
                       int NT, __m256 acc[4][2])
{
    const uint8_t *rp[4], *sp[4];
    int64_t ri[4];
    int64_t cv = w->cols & ~(int64_t)7;
    mm_rows4(w, r, nr, rp, ri);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        sp[i] = w->scale + (size_t)((w->row0 + ri[i]) / 128) * (size_t)w->scale_stride;
    }
    for (int64_t c0 = 0; c0 < cv; c0 += 128) {
        int64_t c1 = c0 + 128 < cv ? c0 + 128 : cv;
        __m256 s[4], s2[4];
        bool two = false;
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            two |= fp8_scale(sp[i][c0 >> 7], &s[i], &s2[i]);
        }
        mm_prefetch4(rp, c0, w->cols, w->row_bytes);
        mm_prefetch4(rp, c0 + 64, w->cols, w->row_bytes);
        if (!two) {
            fp8_block(rp, s, s2, false, c0, c1, xk, K8, NT, acc);
        } else {
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) { /* two steps for all four rows: same values */
                s[i] = _mm256_set1_ps(0x1p120f);
                s2[i] = _mm256_set1_ps(cpu_e8m0_f32[sp[i][c0 >> 7]]);
            }
            fp8_block(rp, s, s2, true, c0, c1, xk, K8, NT, acc);
        }
    }
    mm_tail4(w, ri, cv, xk, K8, NT, acc);
}

/*
 * FP8 with the block scale moved to the inputs. fp8_dec8's bit move gives w * 2^-120
 * exactly; @xs holds x * 2^(e-7) for each 128-column block whose scale byte e the driver
 * found safe for these inputs (@ok[block]: every x * 2^(e-7) is zero or a normal float, so
 * it is exact, and e <= 246, so w * 2^(e-127) is exact too). Then fma(w * 2^-120, xs, acc)
 * rounds the same real number w * s * x + acc as the canonical fma(w * s, x, acc): the
 * same bits, for two vector operations per 8 weights fewer. A block with a NaN weight code
 * among the four rows, or not marked safe, runs the canonical decoder on @xk.
 */
AVX2_INL bool fp8_block_has_nan(const uint8_t *const rp[4], int64_t c0, int64_t c1)
{
    const __m256i top = _mm256_set1_epi8((char)0x80);
    __m256i m = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        int64_t c = c0;
        for (; c + 32 <= c1; c += 32) {
            m = _mm256_max_epu8(m, _mm256_or_si256(_mm256_loadu_si256((const __m256i *)(rp[i] + c)), top));
        }
        for (; c < c1; c += 8) { /* a code is NaN when its low 7 bits are all ones */
            __m256i v = _mm256_zextsi128_si256(_mm_loadl_epi64((const __m128i *)(rp[i] + c)));
            m = _mm256_max_epu8(m, _mm256_or_si256(v, top));
        }
    }
    return _mm256_movemask_epi8(_mm256_cmpeq_epi8(m, _mm256_set1_epi8((char)0xFF))) != 0;
}

AVX2_INL void gemv_fp8_pre(const hd_weight_t *w, int64_t r, int nr, const float *xk,
                           const float *xs, const uint8_t *ok, int64_t K8, int NT,
                           __m256 acc[4][2])
{
    const uint8_t *rp[4];
    int64_t ri[4];
    int64_t cv = w->cols & ~(int64_t)7;
    const uint8_t *sp;
    const __m256i keep = _mm256_set1_epi32((int)0x87F00000u);
    mm_rows4(w, r, nr, rp, ri);
    sp = w->scale + (size_t)((w->row0 + ri[0]) / 128) * (size_t)w->scale_stride;
    for (int64_t c0 = 0; c0 < cv; c0 += 128) {
        int64_t c1 = c0 + 128 < cv ? c0 + 128 : cv;
        mm_prefetch4(rp, c0, w->cols, w->row_bytes);
        mm_prefetch4(rp, c0 + 64, w->cols, w->row_bytes);
        if (ok[c0 >> 7] && !fp8_block_has_nan(rp, c0, c1)) {
            for (int64_t c = c0; c < c1; c += 8) {
                __m256 x0 = _mm256_loadu_ps(xs + c);
                __m256 x1 = NT > 1 ? _mm256_loadu_ps(xs + K8 + c) : x0;
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(rp[i] + c)));
                    __m256 f = _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(v, 20), keep));
                    acc[i][0] = _mm256_fmadd_ps(f, x0, acc[i][0]);
                    if (NT > 1) {
                        acc[i][1] = _mm256_fmadd_ps(f, x1, acc[i][1]);
                    }
                }
            }
            continue;
        }
        __m256 s[4], s2[4];
        bool two = fp8_scale(sp[c0 >> 7], &s[0], &s2[0]); /* one scale block for the 4 rows */
        s[1] = s[2] = s[3] = s[0];
        s2[1] = s2[2] = s2[3] = s2[0];
        if (two) {
            fp8_block(rp, s, s2, true, c0, c1, xk, K8, NT, acc);
        } else {
            fp8_block(rp, s, s2, false, c0, c1, xk, K8, NT, acc);
        }
    }
    mm_tail4(w, ri, cv, xk, K8, NT, acc);
}

/* d[i] = x[i] * f for i < n (a multiple of 8). */
AVX2_FN void cpu_mm_scale_avx2(float *d, const float *x, int64_t n, float f)
{
    __m256 vf = _mm256_set1_ps(f);
    for (int64_t i = 0; i < n; i += 8) {
        _mm256_storeu_ps(d + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vf));
    }
}

/* Largest |x| and smallest nonzero |x| of x[0 .. n) (n a multiple of 8); false if any x is
   NaN or infinite. */
AVX2_FN bool cpu_mm_abs_range_avx2(const float *x, int64_t n, float *amax, float *amin_nz)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 inf = _mm256_set1_ps(__builtin_inff());
    __m256 hi = _mm256_setzero_ps(), lo = inf, bad = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) {
        __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), absmask);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ)); /* NaN or inf */
        hi = _mm256_max_ps(hi, a);
        /* zeros become +inf so they never win the minimum */
        lo = _mm256_min_ps(lo, _mm256_blendv_ps(a, inf, _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_EQ_OQ)));
    }
    float h[8], l[8];
    _mm256_storeu_ps(h, hi);
    _mm256_storeu_ps(l, lo);
    *amax = 0;
    *amin_nz = __builtin_inff();
    for (int k = 0; k < 8; k++) {
        *amax = h[k] > *amax ? h[k] : *amax;
        *amin_nz = l[k] < *amin_nz ? l[k] : *amin_nz;
    }
    return _mm256_movemask_ps(bad) == 0;
}

AVX2_INL void gemv_fp4(const hd_weight_t *w, int64_t r, int nr, const float *xk, int64_t K8,
                       int NT, __m256 acc[4][2])
{
    const uint8_t *rp[4], *sp[4];
    int64_t ri[4];
    __m256i thi = _mm256_load_si256((const __m256i *)mm_fp4_hi);
    __m256i tlo = _mm256_load_si256((const __m256i *)mm_fp4_lo);
    __m256i thz = _mm256_load_si256((const __m256i *)mm_fp4_hiz);
    mm_rows4(w, r, nr, rp, ri);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        sp[i] = w->scale + (size_t)(w->row0 + ri[i]) * (size_t)w->scale_stride;
    }
    for (int64_t c = 0; c < w->cols; c += 32) {
        __m256 x0[4], x1[4];
        if ((c & 127) == 0) {
            mm_prefetch4(rp, c / 2, w->cols / 2, w->row_bytes);
        }
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            x0[k] = _mm256_loadu_ps(xk + c + 8 * k);
            x1[k] = NT > 1 ? _mm256_loadu_ps(xk + K8 + c + 8 * k) : x0[k];
        }
        int64_t cb = c >> 5;
        uint32_t eb[4] = {sp[0][cb], sp[1][cb], sp[2][cb], sp[3][cb]};
        /* every scale <= 1 and not tiny: scale by exponent arithmetic, else multiply */
        bool pow2 = ((eb[0] - MM_FP4_EMIN) | (eb[1] - MM_FP4_EMIN) | (eb[2] - MM_FP4_EMIN) |
                     (eb[3] - MM_FP4_EMIN)) < 128 - MM_FP4_EMIN;
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            __m256 f[4];
            if (pow2) {
                fp4_dec32_pow2(rp[i] + c / 2,
                               _mm256_castps_si256(_mm256_broadcast_ss((const float *)&mm_fp4_off[eb[i]])),
                               thz, tlo, f);
            } else {
                fp4_dec32(rp[i] + c / 2, _mm256_broadcast_ss(&cpu_e8m0_f32[eb[i]]), thi, tlo, f);
            }
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                acc[i][0] = _mm256_fmadd_ps(f[k], x0[k], acc[i][0]);
                if (NT > 1) {
                    acc[i][1] = _mm256_fmadd_ps(f[k], x1[k], acc[i][1]);
                }
            }
        }
    }
}

AVX2_INL void gemv_bf16_f32(const hd_weight_t *w, int64_t r, int nr, const float *xk, int64_t K8,
                            int NT, __m256 acc[4][2])
{
    const uint8_t *rp[4];
    int64_t ri[4];
    int64_t cv = w->cols & ~(int64_t)7;
    bool bf = w->fmt == HD_WFMT_BF16;
    mm_rows4(w, r, nr, rp, ri);
    int64_t esz = bf ? 2 : 4;
    for (int64_t c = 0; c < cv; c += 8) {
        __m256 x0 = _mm256_loadu_ps(xk + c);
        __m256 x1 = NT > 1 ? _mm256_loadu_ps(xk + K8 + c) : x0;
        if (((c * esz) & 63) == 0) {
            mm_prefetch4(rp, c * esz, w->cols * esz, w->row_bytes);
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            __m256 f = bf ? bf16_dec8(rp[i] + 2 * c) : _mm256_loadu_ps((const float *)rp[i] + c);
            acc[i][0] = _mm256_fmadd_ps(f, x0, acc[i][0]);
            if (NT > 1) {
                acc[i][1] = _mm256_fmadd_ps(f, x1, acc[i][1]);
            }
        }
    }
    mm_tail4(w, ri, cv, xk, K8, NT, acc);
}

AVX2_INL void gemv_nt(const hd_weight_t *w, int64_t r, int nr, const float *xk,
                      const float *xs, const uint8_t *ok, int64_t K8, int NT, float *y,
                      int64_t ldy)
{
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
    }
    switch (w->fmt) {
    case HD_WFMT_FP8:
        if (xs != NULL) {
            gemv_fp8_pre(w, r, nr, xk, xs, ok, K8, NT, acc);
        } else {
            gemv_fp8(w, r, nr, xk, K8, NT, acc);
        }
        break;
    case HD_WFMT_FP4: gemv_fp4(w, r, nr, xk, K8, NT, acc); break;
    default: gemv_bf16_f32(w, r, nr, xk, K8, NT, acc); break;
    }
#pragma GCC unroll 4
    for (int i = 0; i < nr; i++) {
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            y[t * ldy + i] = hsum8(acc[i][t]);
        }
    }
}

AVX2_FN void cpu_mm_gemv_avx2(const hd_weight_t *w, int64_t r, int nr, const float *xk,
                              const float *xs, const uint8_t *ok, int64_t K8, int nt, float *y,
                              int64_t ldy)
{
    mm_fp4_tables();
    if (nt == 1) {
        gemv_nt(w, r, nr, xk, xs, ok, K8, 1, y, ldy);
    } else {
        gemv_nt(w, r, nr, xk, xs, ok, K8, 2, y, ldy);
    }
}

/* ---- decode rows to f32 ---- */

AVX2_FN void cpu_mm_decode_avx2(const hd_weight_t *w, int64_t r, int nr, int64_t K8, float *dst)
{
    int64_t cols = w->cols, cv = cols & ~(int64_t)7;
    mm_fp4_tables();
#pragma GCC unroll 4
    for (int i = 0; i < nr; i++) {
        const uint8_t *row = (const uint8_t *)w->data + (size_t)(r + i) * w->row_bytes;
        float *d = dst + (size_t)i * (size_t)K8;
        switch (w->fmt) {
        case HD_WFMT_F32:
            memcpy(d, row, (size_t)cv * sizeof(float));
            break;
        case HD_WFMT_BF16:
            for (int64_t c = 0; c < cv; c += 8) {
                _mm256_storeu_ps(d + c, bf16_dec8(row + 2 * c));
            }
            break;
        case HD_WFMT_FP8: {
            const uint8_t *sp = w->scale + (size_t)((w->row0 + r + i) / 128) * (size_t)w->scale_stride;
            for (int64_t c0 = 0; c0 < cv; c0 += 128) {
                int64_t c1 = c0 + 128 < cv ? c0 + 128 : cv;
                __m256 s, s2;
                if (!fp8_scale(sp[c0 >> 7], &s, &s2)) {
                    for (int64_t c = c0; c < c1; c += 8) {
                        _mm256_storeu_ps(d + c, fp8_dec8(row + c, s, s2, false));
                    }
                } else {
                    for (int64_t c = c0; c < c1; c += 8) {
                        _mm256_storeu_ps(d + c, fp8_dec8(row + c, s, s2, true));
                    }
                }
            }
            break;
        }
        case HD_WFMT_FP4: {
            const uint8_t *sp = w->scale + (size_t)(w->row0 + r + i) * (size_t)w->scale_stride;
            __m256i thi = _mm256_load_si256((const __m256i *)mm_fp4_hi);
            __m256i tlo = _mm256_load_si256((const __m256i *)mm_fp4_lo);
            for (int64_t c = 0; c < cols; c += 32) {
                __m256 f[4];
                fp4_dec32(row + c / 2, _mm256_broadcast_ss(&cpu_e8m0_f32[sp[c >> 5]]), thi, tlo, f);
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    _mm256_storeu_ps(d + c + 8 * k, f[k]);
                }
            }
            break;
        }
        }
        if (cv < cols) {
            memset(d + cv, 0, (size_t)(K8 - cv) * sizeof(float));
            cpu_mm_decode_ref(w, r + i, cv, cols, d + cv);
        }
    }
}

/* ---- register-tiled kernel ---- */

/*
 * acc[(t * 4 + i) * 8 ..] += rows i < 4 of @w times tokens t < NT of @x over kernel columns
 * [k0, k1) (from zero when k0 == 0). The accumulators travel through memory between column
 * blocks unchanged, so the sequence of FMAs per output is exactly the fused kernel's.
 */
AVX2_INL void tile_4xn(const float *w, int64_t ldw, const float *x, int64_t ldx, int64_t k0,
                       int64_t k1, int NT, float *acc)
{
    __m256 a0[3], a1[3], a2[3], a3[3];
#pragma GCC unroll 4
    for (int t = 0; t < 3; t++) {
        a0[t] = a1[t] = a2[t] = a3[t] = _mm256_setzero_ps();
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT && k0 > 0; t++) { /* the first column block starts from zero */
        a0[t] = _mm256_load_ps(acc + (t * 4 + 0) * 8);
        a1[t] = _mm256_load_ps(acc + (t * 4 + 1) * 8);
        a2[t] = _mm256_load_ps(acc + (t * 4 + 2) * 8);
        a3[t] = _mm256_load_ps(acc + (t * 4 + 3) * 8);
    }
    const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
    for (int64_t k = k0; k < k1; k += 8) {
        __m256 x0 = _mm256_loadu_ps(x + k);
        __m256 x1 = NT > 1 ? _mm256_loadu_ps(x + ldx + k) : x0;
        __m256 x2 = NT > 2 ? _mm256_loadu_ps(x + 2 * ldx + k) : x0;
        __m256 v = _mm256_load_ps(w0 + k);
        a0[0] = _mm256_fmadd_ps(v, x0, a0[0]);
        if (NT > 1) a0[1] = _mm256_fmadd_ps(v, x1, a0[1]);
        if (NT > 2) a0[2] = _mm256_fmadd_ps(v, x2, a0[2]);
        v = _mm256_load_ps(w1 + k);
        a1[0] = _mm256_fmadd_ps(v, x0, a1[0]);
        if (NT > 1) a1[1] = _mm256_fmadd_ps(v, x1, a1[1]);
        if (NT > 2) a1[2] = _mm256_fmadd_ps(v, x2, a1[2]);
        v = _mm256_load_ps(w2 + k);
        a2[0] = _mm256_fmadd_ps(v, x0, a2[0]);
        if (NT > 1) a2[1] = _mm256_fmadd_ps(v, x1, a2[1]);
        if (NT > 2) a2[2] = _mm256_fmadd_ps(v, x2, a2[2]);
        v = _mm256_load_ps(w3 + k);
        a3[0] = _mm256_fmadd_ps(v, x0, a3[0]);
        if (NT > 1) a3[1] = _mm256_fmadd_ps(v, x1, a3[1]);
        if (NT > 2) a3[2] = _mm256_fmadd_ps(v, x2, a3[2]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        _mm256_store_ps(acc + (t * 4 + 0) * 8, a0[t]);
        _mm256_store_ps(acc + (t * 4 + 1) * 8, a1[t]);
        _mm256_store_ps(acc + (t * 4 + 2) * 8, a2[t]);
        _mm256_store_ps(acc + (t * 4 + 3) * 8, a3[t]);
    }
}

AVX2_FN void cpu_mm_tiles_avx2(const float *wb, int nrp, int nr, int64_t K8, const float *xk,
                               int64_t n, float *acc, float *y, int64_t ldy)
{
    int nq = nrp / 4;
    for (int64_t t0 = 0; t0 < n; t0 += CPU_MM_NB) {
        int64_t nb = n - t0 < CPU_MM_NB ? n - t0 : CPU_MM_NB;
        for (int64_t k0 = 0; k0 < K8; k0 += CPU_MM_KC) {
            int64_t k1 = k0 + CPU_MM_KC < K8 ? k0 + CPU_MM_KC : K8;
            /* rows outer, tokens inner: one 4-row slice of the block (4 KiB) stays in L1
               while every token's slice of x (nb KiB) streams past it */
            for (int q = 0; q < nq; q++) {
                const float *wq = wb + (size_t)q * 4 * (size_t)K8;
                for (int64_t t = 0; t < nb; t += 3) {
                    const float *xt = xk + (size_t)(t0 + t) * (size_t)K8;
                    int64_t left = nb - t;
                    float *aq = acc + ((size_t)q * CPU_MM_NB + (size_t)t) * 32;
                    if (left >= 3) {
                        tile_4xn(wq, K8, xt, K8, k0, k1, 3, aq);
                    } else if (left == 2) {
                        tile_4xn(wq, K8, xt, K8, k0, k1, 2, aq);
                    } else {
                        tile_4xn(wq, K8, xt, K8, k0, k1, 1, aq);
                    }
                }
            }
        }
        for (int q = 0; q < nq; q++) {
            for (int64_t t = 0; t < nb; t++) {
                const float *a = acc + ((size_t)q * CPU_MM_NB + (size_t)t) * 32;
                float *yt = y + (t0 + t) * ldy + q * 4;
                for (int i = 0; i < 4 && q * 4 + i < nr; i++) {
                    yt[i] = hsum8(_mm256_load_ps(a + i * 8));
                }
            }
        }
    }
}

/* ---- official act_quant ---- */

/*
 * Same values as hd_fp8_sim_blocks bit for bit: v = x / s clamped to +-448 (a NaN x
 * clamps to -448 there too), rounded to e4m3 (3 mantissa bits, ties to even; below 2^-6
 * to multiples of 2^-9) with its sign kept, times s.
 */
AVX2_FN void cpu_act_quant_avx2(float *x, int64_t cols)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 lo = _mm256_set1_ps(-448.0f), hi = _mm256_set1_ps(448.0f);
    const __m256 sub_lim = _mm256_set1_ps(0x1p-6f), magic = _mm256_set1_ps(24576.0f);
    for (int64_t b = 0; b < cols; b += 128) {
        int64_t m = cols - b < 128 ? cols - b : 128, mv = m & ~(int64_t)7;
        float *p = x + b;
        __m256 vmax = _mm256_setzero_ps();
        for (int64_t i = 0; i < mv; i += 8) {
            vmax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(p + i), absmask), vmax);
        }
        float t[8];
        _mm256_storeu_ps(t, vmax);
        float amax = 0.0f;
        for (int k = 0; k < 8; k++) {
            amax = t[k] > amax ? t[k] : amax;
        }
        for (int64_t i = mv; i < m; i++) {
            float a = p[i] < 0 ? -p[i] : p[i];
            amax = a > amax ? a : amax; /* a NaN is skipped, as fmaxf does */
        }
        float s = hd_pow2_scale_ceil(amax, 448.0f, 1e-4f);
        __m256 vs = _mm256_set1_ps(s);
        for (int64_t i = 0; i < mv; i += 8) {
            __m256 v = _mm256_div_ps(_mm256_loadu_ps(p + i), vs);
            v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
            __m256 a = _mm256_and_ps(v, absmask);
            __m256 sign = _mm256_andnot_ps(absmask, v);
            __m256i u = _mm256_castps_si256(a);
            u = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFFF),
                                 _mm256_and_si256(_mm256_srli_epi32(u, 20), _mm256_set1_epi32(1))));
            __m256 rn = _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32((int)0xFFF00000u)));
            __m256 rs = _mm256_sub_ps(_mm256_add_ps(a, magic), magic);
            __m256 r = _mm256_blendv_ps(rn, rs, _mm256_cmp_ps(a, sub_lim, _CMP_LT_OQ));
            _mm256_storeu_ps(p + i, _mm256_mul_ps(_mm256_or_ps(r, sign), vs));
        }
        if (mv < m) {
            for (int64_t i = mv; i < m; i++) {
                float v = p[i] / s;
                v = v > -448.0f ? v : -448.0f;
                v = v < 448.0f ? v : 448.0f;
                p[i] = hd_e4m3_table[hd_f32_to_e4m3(v)] * s;
            }
        }
    }
}
