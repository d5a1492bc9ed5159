/*
 * pool.c - fork/join thread pool: a generation counter wakes the workers, an atomic index
 * hands out work items, and a countdown tells the caller when every worker is idle again.
 */
#include "hadal/pool.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

struct hd_pool {
    int n_threads;            /* including the caller */
    pthread_t *threads;       /* n_threads - 1 workers */
    pthread_mutex_t mu;
    pthread_cond_t cv_work;   /* workers wait for a new generation */
    pthread_cond_t cv_done;   /* caller waits for active == 0 */
    unsigned long generation; /* bumped per hd_pool_run */
    int active;               /* workers still inside the current generation */
    bool stop;
    hd_pool_func_t fn;
    void *ctx;
    size_t n;
    atomic_size_t next;
};

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
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) {
            pthread_cond_wait(&p->cv_work, &p->mu);
        }
        if (p->stop) {
            break;
        }
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        pool_drain(p);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) {
            pthread_cond_signal(&p->cv_done);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

hd_status_t hd_pool_create(int n_threads, hd_pool_h *pool_p)
{
    struct hd_pool *p;
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    p = hd_calloc(1, sizeof(*p), "thread pool");
    if (p == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
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
    p->stop = true;
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
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    atomic_store(&p->next, 0);
    p->active = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    pool_drain(p);
    pthread_mutex_lock(&p->mu);
    while (p->active > 0) {
        pthread_cond_wait(&p->cv_done, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
}
