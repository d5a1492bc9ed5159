/*
 * dot.c - which CPU code path runs (AVX2+FMA when the CPU has it, else portable C, or what
 * hd_kern_cpu_set_isa forced), and the inner products attention reduces with. The AVX2/FMA
 * dot keeps four 8-lane accumulators and a fixed horizontal sum; the portable one keeps 8
 * partial sums in the same lane pattern. Either way the order depends only on n.
 */
#include "kernels_impl.h"

#include <immintrin.h>
#include <string.h>

static int dot_cpu_has = -1;   /* -1 unknown, 0 no, 1 the CPU has AVX2 and FMA */
static int dot_isa_forced = -1; /* -1 detected default, 0 portable, 1 avx2+fma */

static bool dot_cpu_has_avx2(void)
{
    int has = __atomic_load_n(&dot_cpu_has, __ATOMIC_ACQUIRE);
    if (has < 0) {
        __builtin_cpu_init();
        has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        __atomic_store_n(&dot_cpu_has, has, __ATOMIC_RELEASE);
    }
    return has == 1;
}

bool cpu_have_avx2(void)
{
    int forced = __atomic_load_n(&dot_isa_forced, __ATOMIC_RELAXED);
    return forced >= 0 ? forced == 1 : dot_cpu_has_avx2();
}

hd_status_t hd_kern_cpu_set_isa(const char *isa)
{
    if (isa == NULL) {
        __atomic_store_n(&dot_isa_forced, -1, __ATOMIC_RELAXED);
        return HD_OK;
    }
    if (strcmp(isa, "portable") == 0) {
        __atomic_store_n(&dot_isa_forced, 0, __ATOMIC_RELAXED);
        return HD_OK;
    }
    if (strcmp(isa, "avx2+fma") == 0 || strcmp(isa, "avx2") == 0) {
        if (!dot_cpu_has_avx2()) {
            return HD_ERR_UNSUPPORTED;
        }
        __atomic_store_n(&dot_isa_forced, 1, __ATOMIC_RELAXED);
        return HD_OK;
    }
    return HD_ERR_INVALID_PARAM;
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b,
                                                          int64_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    }
    s0 = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float s = _mm_cvtss_f32(h);
    for (; i < n; i++) {
        s += a[i] * b[i];
    }
    return s;
}

static float dot_portable(const float *a, const float *b, int64_t n)
{
    float p[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) {
            p[k] += a[i + k] * b[i + k];
        }
    }
    float s = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
    for (; i < n; i++) {
        s += a[i] * b[i];
    }
    return s;
}

float cpu_dot(const float *a, const float *b, int64_t n)
{
    return cpu_have_avx2() ? dot_avx2(a, b, n) : dot_portable(a, b, n);
}

__attribute__((target("avx2,fma"))) static void axpy_avx2(float *y, float a, const float *x,
                                                          int64_t n)
{
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    }
    for (; i < n; i++) {
        y[i] += a * x[i];
    }
}

void cpu_axpy(float *y, float a, const float *x, int64_t n)
{
    if (cpu_have_avx2()) {
        axpy_avx2(y, a, x, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        y[i] += a * x[i];
    }
}
