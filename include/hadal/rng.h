/*
 * hadal/rng.h - a small deterministic PRNG (xoshiro256** seeded by splitmix64).
 *
 * Same seed, same sequence, on every platform. One hd_rng_t per thread; not thread-safe.
 */
#ifndef HADAL_RNG_H
#define HADAL_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4]; /* generator state */
} hd_rng_t;

void hd_rng_seed(hd_rng_t *r, uint64_t seed);
uint64_t hd_rng_u64(hd_rng_t *r);
/* Uniform in [0, 1) with 24 bits (float) / 53 bits (double). */
float hd_rng_uniform(hd_rng_t *r);
double hd_rng_uniform_d(hd_rng_t *r);
/* Standard normal (Box-Muller, double precision, one value per call). */
double hd_rng_normal(hd_rng_t *r);
/* Uniform integer in [0, n). */
uint64_t hd_rng_below(hd_rng_t *r, uint64_t n);

#endif /* HADAL_RNG_H */
