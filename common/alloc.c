/*
 * alloc.c - tagged allocation with an optional fault-injection counter.
 */
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static atomic_long alloc_fail_countdown = -1;

void hd_alloc_init(void)
{
    const char *s = getenv("HD_FAULT_ALLOC_AFTER");
    if (s != NULL && *s != '\0') {
        hd_alloc_fail_after(strtol(s, NULL, 10));
    }
}

void hd_alloc_fail_after(long n)
{
    atomic_store(&alloc_fail_countdown, n);
}

static int alloc_should_fail(void)
{
    long v = atomic_load(&alloc_fail_countdown);
    while (v >= 0) {
        if (v == 0) {
            return 1;
        }
        if (atomic_compare_exchange_weak(&alloc_fail_countdown, &v, v - 1)) {
            return 0;
        }
    }
    return 0;
}

static void *alloc_check(void *p, size_t size, const char *tag)
{
    if (p == NULL && size != 0) {
        hd_error(HD_SUBSYS_CORE, "out of memory allocating %zu bytes for %s", size,
                 tag ? tag : "?");
    }
    return p;
}

void *hd_malloc(size_t size, const char *tag)
{
    if (alloc_should_fail()) {
        return alloc_check(NULL, size ? size : 1, tag);
    }
    return alloc_check(malloc(size ? size : 1), size, tag);
}

void *hd_calloc(size_t n, size_t size, const char *tag)
{
    if (size != 0 && n > SIZE_MAX / size) {
        hd_error(HD_SUBSYS_CORE, "allocation size overflow for %s", tag ? tag : "?");
        return NULL;
    }
    if (alloc_should_fail()) {
        return alloc_check(NULL, (n * size) != 0 ? n * size : 1, tag);
    }
    return alloc_check(calloc(n ? n : 1, size ? size : 1), n * size, tag);
}

void *hd_realloc(void *ptr, size_t size, const char *tag)
{
    if (alloc_should_fail()) {
        return alloc_check(NULL, size ? size : 1, tag);
    }
    return alloc_check(realloc(ptr, size ? size : 1), size, tag);
}

void *hd_aligned_calloc(size_t n, size_t size, const char *tag)
{
    void *p = NULL;
    size_t bytes;
    if (size != 0 && n > SIZE_MAX / size) {
        hd_error(HD_SUBSYS_CORE, "allocation size overflow for %s", tag ? tag : "?");
        return NULL;
    }
    bytes = n * size;
    bytes = (bytes + 63) & ~(size_t)63;
    if (bytes == 0) {
        bytes = 64;
    }
    if (alloc_should_fail() || posix_memalign(&p, 64, bytes) != 0) {
        return alloc_check(NULL, bytes, tag);
    }
    memset(p, 0, bytes);
    return p;
}

char *hd_strndup(const char *s, size_t n, const char *tag)
{
    char *p = hd_malloc(n + 1, tag);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

char *hd_strdup(const char *s, const char *tag)
{
    return hd_strndup(s, strlen(s), tag);
}

void hd_free(void *ptr)
{
    free(ptr);
}
