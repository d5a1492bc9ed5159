/*
 * hadal/alloc.h - allocation with name tags.
 *
 * hd_calloc(n, sizeof(*p), "kv block") ties the size to the variable; the tag appears in the
 * log when an allocation fails. HD_FAULT_ALLOC_AFTER=N (read by hd_alloc_init) makes the N-th
 * and later allocations fail, so tests can drive every cleanup path.
 */
#ifndef HADAL_ALLOC_H
#define HADAL_ALLOC_H

#include <stddef.h>

void hd_alloc_init(void);
void *hd_malloc(size_t size, const char *tag);
void *hd_calloc(size_t n, size_t size, const char *tag);
void *hd_realloc(void *ptr, size_t size, const char *tag);
/* 64-byte aligned, zeroed; free with hd_free. */
void *hd_aligned_calloc(size_t n, size_t size, const char *tag);
char *hd_strdup(const char *s, const char *tag);
char *hd_strndup(const char *s, size_t n, const char *tag);
void hd_free(void *ptr);
/* Testing hook: fail every allocation after @n more successful ones (-1 disables). */
void hd_alloc_fail_after(long n);

#endif /* HADAL_ALLOC_H */
