/*
 * rng.c - xoshiro256** (Blackman & Vigna's published algorithm) with splitmix64 seeding.
 */
#include "hadal/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void hd_rng_seed(hd_rng_t *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        r->s[i] = splitmix64(&x);
    }
}

uint64_t hd_rng_u64(hd_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float hd_rng_uniform(hd_rng_t *r)
{
    return (float)(hd_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

double hd_rng_uniform_d(hd_rng_t *r)
{
    return (double)(hd_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

double hd_rng_normal(hd_rng_t *r)
{
    double u1 = hd_rng_uniform_d(r);
    double u2 = hd_rng_uniform_d(r);
    if (u1 < 1e-300) {
        u1 = 1e-300;
    }
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t hd_rng_below(hd_rng_t *r, uint64_t n)
{
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do {
        v = hd_rng_u64(r);
    } while (v >= lim);
    return v % n;
}
