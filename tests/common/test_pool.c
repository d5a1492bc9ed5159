/*
 * common/pool.c: every index of every round runs exactly once, whichever side wakes whom:
 * rounds back to back (workers still spinning), rounds after the spin window has passed
 * (workers asleep on the condition variable), spinning disabled, and a pool destroyed while
 * its workers sleep.
 */
#include "hd_test.h"
#include "hadal/pool.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
    atomic_int *hits;
    atomic_int calls;
} pool_round_t;

static void pool_hit(void *vctx, size_t i)
{
    pool_round_t *r = vctx;
    atomic_fetch_add(&r->hits[i], 1);
    atomic_fetch_add(&r->calls, 1);
}

static void pool_rounds(int threads, int rounds, long pause_us)
{
    hd_pool_h pool = NULL;
    HD_CHECK_INT_EQ(hd_pool_create(threads, &pool), HD_OK);
    HD_CHECK_INT_EQ(hd_pool_size(pool), threads);
    atomic_int *hits = calloc(4096, sizeof(*hits));
    unsigned seed = 12345;
    for (int k = 0; k < rounds; k++) {
        size_t n = (size_t)(rand_r(&seed) % 300);
        pool_round_t r = {.hits = hits};
        for (size_t i = 0; i < n; i++) {
            atomic_store(&hits[i], 0);
        }
        atomic_init(&r.calls, 0);
        hd_pool_run(pool, n, pool_hit, &r);
        int wrong = 0;
        for (size_t i = 0; i < n; i++) {
            wrong += atomic_load(&hits[i]) != 1;
        }
        HD_CHECK_MSG(wrong == 0 && atomic_load(&r.calls) == (int)n,
                     "threads %d round %d: %d of %zu indices not run exactly once (%d calls)",
                     threads, k, wrong, n, atomic_load(&r.calls));
        if (pause_us > 0) {
            struct timespec ts = {0, pause_us * 1000};
            nanosleep(&ts, NULL);
        }
    }
    free(hits);
    hd_pool_destroy(pool);
}

HD_TEST(pool_rounds_back_to_back)
{
    pool_rounds(3, 3000, 0);
    pool_rounds(2, 3000, 0);
}

HD_TEST(pool_rounds_after_workers_sleep)
{
    pool_rounds(3, 40, 1500); /* past the default 200 us spin: every round wakes sleepers */
}

HD_TEST(pool_rounds_without_spinning)
{
    setenv("HADAL_POOL_SPIN_US", "0", 1);
    pool_rounds(3, 500, 0);
    pool_rounds(2, 20, 300);
    setenv("HADAL_POOL_SPIN_US", "bogus", 1); /* warned about, default used */
    pool_rounds(2, 200, 0);
    unsetenv("HADAL_POOL_SPIN_US");
}

HD_TEST(pool_serial_and_destroy_idle)
{
    hd_pool_h pool = NULL;
    HD_CHECK_INT_EQ(hd_pool_create(1, &pool), HD_OK);
    HD_CHECK_INT_EQ(hd_pool_size(pool), 1);
    hd_pool_destroy(pool);
    HD_CHECK_INT_EQ(hd_pool_size(NULL), 1);
    atomic_int hits[5] = {0};
    pool_round_t r = {.hits = hits};
    atomic_init(&r.calls, 0);
    hd_pool_run(NULL, 5, pool_hit, &r); /* NULL pool: serial in the caller */
    HD_CHECK_INT_EQ(atomic_load(&r.calls), 5);
    HD_CHECK_INT_EQ(hd_pool_create(4, &pool), HD_OK);
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL); /* workers asleep */
    hd_pool_destroy(pool);
}
