/*
 * hadal/sampling.h - sampling parameters, shared by the coordinator (which receives them from
 * clients and puts them in step batches) and the engine (whose sampler applies them).
 */
#ifndef HADAL_SAMPLING_H
#define HADAL_SAMPLING_H

#include <stdint.h>

typedef struct {
    float temperature; /* 0 = greedy */
    float top_p;       /* 1 = off */
    int top_k;         /* 0 = off */
    float min_p;       /* 0 = off */
    uint64_t seed;     /* the sampler's PRNG seed */
    uint64_t skip;     /* PRNG draws already made: a sequence re-run after a failure resumes
                          its sampler where it stopped (one draw per non-greedy sample) */
} hd_sampling_params_t;

/* PRNG draws @n samples with @p make (the sampler draws once unless greedy or top_k == 1). */
static inline uint64_t hd_sampling_draws(const hd_sampling_params_t *p, uint64_t n)
{
    return p->temperature == 0.0f || p->top_k == 1 ? 0 : n;
}

#endif /* HADAL_SAMPLING_H */
