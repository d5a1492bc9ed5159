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
} hd_sampling_params_t;

#endif /* HADAL_SAMPLING_H */
