/*
 * pool.c - fork/join thread pool: a generation counter starts a round, an atomic index hands
 * out work items, and a countdown tells the caller when every worker is done.
 *
 * Both sides spin briefly before sleeping. A decode step issues a few hundred short rounds
 * back to back (one per matmul, 0.05-0.5 ms each); sleeping on a condition variable between
 * them cost a futex wake-up per round on each side, tens of microseconds on a VM, which was
 * a third of a small expert matmul. A worker polls for the next round for up to spin_us
 * (HADAL_POOL_SPIN_US, default 200; 0 never spins) and then sleeps, so an idle pool costs
 * nothing. Spinning calls sched_yield() every so often, so on an oversubscribed machine a
 * runnable thread of another process still gets the core.
 */
#include "hadal/pool.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define POOL_PAUSE() _mm_pause()
#else
#define POOL_PAUSE() ((void)0)
#endif

#define POOL_SPIN_US_DEFAULT 200

struct hd_pool {
    int n_threads;              /* including the caller */
    pthread_t *threads;         /* n_threads - 1 workers */
    int64_t spin_ns;            /* how long either side polls before it sleeps */
    pthread_mutex_t mu;
    pthread_cond_t cv_work;     /* sleeping workers wait for a new generation */
    pthread_cond_t cv_done;     /* a sleeping caller waits for active == 0 */
    atomic_ulong generation;    /* bumped per hd_pool_run */
    atomic_int active;          /* workers still inside the current generation */
    atomic_int sleepers;        /* workers blocked (or about to block) on cv_work */
    atomic_bool caller_waiting; /* the caller is blocked (or about to block) on cv_done */
    atomic_bool stop;
    hd_pool_func_t fn;
    void *ctx;
    size_t n;
    atomic_size_t next;
};

static int64_t pool_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Poll @done(p) for up to p->spin_ns; true once it holds. */
static bool pool_spin(struct hd_pool *p, bool (*done)(struct hd_pool *, unsigned long),
                      unsigned long arg)
{
    int64_t t0 = 0;
    if (p->spin_ns <= 0) {
        return done(p, arg);
    }
    for (unsigned i = 0;; i++) {
        if (done(p, arg)) {
            return true;
        }
        POOL_PAUSE();
        if ((i & 255) == 255) {
            int64_t t = pool_now_ns();
            if (t0 == 0) {
                t0 = t;
            } else if (t - t0 > p->spin_ns) {
                return done(p, arg);
            }
            if ((i & 4095) == 4095) {
                sched_yield();
            }
        }
    }
}

static bool pool_has_work(struct hd_pool *p, unsigned long seen)
{
    return atomic_load(&p->stop) || atomic_load(&p->generation) != seen;
}

static bool pool_all_done(struct hd_pool *p, unsigned long unused)
{
    (void)unused;
    return atomic_load(&p->active) == 0;
}

static void pool_drain(struct hd_pool *p)
{
    for (;;) {
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n) {
            break;
        }
        p->fn(p->ctx, i);
    }
}

static void *pool_main(void *arg)
{
    struct hd_pool *p = arg;
    unsigned long seen = 0;
    for (;;) {
        if (!pool_spin(p, pool_has_work, seen)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            /* seq_cst: either hd_pool_run sees sleepers > 0 and broadcasts under the mutex,
               or this thread sees its new generation here */
            while (!pool_has_work(p, seen)) {
                pthread_cond_wait(&p->cv_work, &p->mu);
            }
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) {
            break;
        }
        seen = atomic_load(&p->generation);
        pool_drain(p);
        if (atomic_fetch_sub(&p->active, 1) == 1 && atomic_load(&p->caller_waiting)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

hd_status_t hd_pool_create(int n_threads, hd_pool_h *pool_p)
{
    struct hd_pool *p;
    const char *spin = getenv("HADAL_POOL_SPIN_US");
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    p = hd_calloc(1, sizeof(*p), "thread pool");
    if (p == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    p->n_threads = n_threads;
    p->spin_ns = (int64_t)POOL_SPIN_US_DEFAULT * 1000;
    if (spin != NULL && *spin != '\0') {
        char *end;
        long us = strtol(spin, &end, 10);
        if (*end == '\0' && us >= 0 && us <= 1000000) {
            p->spin_ns = (int64_t)us * 1000;
        } else {
            hd_warn(HD_SUBSYS_CORE, "HADAL_POOL_SPIN_US=%s is not 0..1000000; using %d", spin,
                    POOL_SPIN_US_DEFAULT);
        }
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->active, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->caller_waiting, false);
    atomic_init(&p->stop, false);
    atomic_init(&p->next, 0);
    if (n_threads > 1) {
        p->threads = hd_calloc((size_t)n_threads - 1, sizeof(*p->threads), "pool threads");
        if (p->threads == NULL) {
            hd_free(p);
            return HD_ERR_NO_MEMORY;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            if (pthread_create(&p->threads[i], NULL, pool_main, p) != 0) {
                hd_error(HD_SUBSYS_CORE, "pthread_create failed: %m");
                p->n_threads = i + 1;
                break;
            }
        }
    }
    *pool_p = p;
    return HD_OK;
}

void hd_pool_destroy(hd_pool_h p)
{
    if (p == NULL) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads - 1; i++) {
        pthread_join(p->threads[i], NULL);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    hd_free(p->threads);
    hd_free(p);
}

int hd_pool_size(hd_pool_h p)
{
    return p ? p->n_threads : 1;
}

void hd_pool_run(hd_pool_h p, size_t n, hd_pool_func_t fn, void *ctx)
{
    if (p == NULL || p->n_threads <= 1 || n <= 1) {
        for (size_t i = 0; i < n; i++) {
            fn(ctx, i);
        }
        return;
    }
    /* every worker finished the previous round (active reached 0), so none reads these */
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    atomic_store(&p->next, 0);
    atomic_store(&p->active, p->n_threads - 1);
    atomic_fetch_add(&p->generation, 1); /* release: the fields above are visible first */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv_work);
        pthread_mutex_unlock(&p->mu);
    }
    pool_drain(p);
    if (!pool_spin(p, pool_all_done, 0)) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->caller_waiting, true);
        while (atomic_load(&p->active) > 0) {
            pthread_cond_wait(&p->cv_done, &p->mu);
        }
        atomic_store(&p->caller_waiting, false);
        pthread_mutex_unlock(&p->mu);
    }
}
