/*
 * hadal/pool.h - a persistent thread pool for data-parallel loops.
 *
 * hd_pool_run() calls fn(ctx, i) for every i in [0, n) across the pool's threads and the
 * caller, and returns when all have finished. Which thread runs which index is not fixed, so
 * callers must make each index's work independent (every kernel here writes disjoint
 * outputs with a fixed reduction order, which keeps results bitwise independent of the
 * thread count). One caller at a time per pool.
 */
#ifndef HADAL_POOL_H
#define HADAL_POOL_H

#include "hadal/status.h"

#include <stddef.h>

typedef struct hd_pool *hd_pool_h;
typedef void (*hd_pool_func_t)(void *ctx, size_t i);

/* @n_threads total workers including the caller; 0 means the number of online CPUs. */
hd_status_t hd_pool_create(int n_threads, hd_pool_h *pool_p);
void hd_pool_destroy(hd_pool_h pool);
int hd_pool_size(hd_pool_h pool);
/* NULL pool runs serially in the caller. */
void hd_pool_run(hd_pool_h pool, size_t n, hd_pool_func_t fn, void *ctx);

#endif /* HADAL_POOL_H */
