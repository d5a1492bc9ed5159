/*
 * hadal/json.h - a strict JSON (RFC 8259) parser into a read-only tree, and a small writer.
 *
 * hd_json_parse() validates the whole text (UTF-8 included), bounds the nesting depth, and
 * reports the byte offset and cause of the first error. The tree owns copies of all strings;
 * one hd_json_free() releases it. Object members keep their order; duplicate keys are
 * rejected. Numbers keep both a double and, when integral and in range, an exact int64.
 * Not thread-safe per tree while being built; a finished tree may be read from any thread.
 */
#ifndef HADAL_JSON_H
#define HADAL_JSON_H

#include "hadal/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    HD_JSON_NULL,
    HD_JSON_FALSE,
    HD_JSON_TRUE,
    HD_JSON_NUMBER,
    HD_JSON_STRING,
    HD_JSON_ARRAY,
    HD_JSON_OBJECT,
} hd_json_type_t;

typedef struct hd_json hd_json_t;
struct hd_json {
    hd_json_type_t type;
    char *key;        /* member name when inside an object, else NULL */
    size_t key_len;   /* bytes of key (may hold NUL) */
    char *str;        /* STRING: NUL-terminated UTF-8 */
    size_t str_len;   /* STRING: bytes, excluding the terminator */
    double num;       /* NUMBER */
    int64_t i64;      /* NUMBER: exact value when is_int */
    bool is_int;      /* NUMBER: integral and fits int64 */
    size_t n;         /* ARRAY/OBJECT: number of children */
    hd_json_t **kids; /* ARRAY/OBJECT: children in document order */
};

typedef struct {
    size_t max_depth; /* 0 means 256 */
} hd_json_opts_t;

/* Parse @len bytes of @text. On failure writes a message with the byte offset into @err. */
hd_status_t hd_json_parse(const char *text, size_t len, const hd_json_opts_t *opts,
                          hd_json_t **root_p, char *err, size_t err_len);
void hd_json_free(hd_json_t *root);

/* Member @key of object @obj, or NULL (also NULL when @obj is not an object). */
const hd_json_t *hd_json_get(const hd_json_t *obj, const char *key);
/* Element @i of array @arr, or NULL. */
const hd_json_t *hd_json_at(const hd_json_t *arr, size_t i);
const char *hd_json_type_name(hd_json_type_t t);

/* Typed getters: return false (and leave *out alone) if absent or of the wrong type. */
bool hd_json_get_i64(const hd_json_t *obj, const char *key, int64_t *out);
bool hd_json_get_num(const hd_json_t *obj, const char *key, double *out);
bool hd_json_get_bool(const hd_json_t *obj, const char *key, bool *out);
const char *hd_json_get_str(const hd_json_t *obj, const char *key);

/* ---- writer: a growable buffer ---- */
typedef struct {
    char *data;  /* NUL-terminated */
    size_t len;  /* bytes used */
    size_t cap;  /* bytes allocated */
    bool failed; /* an allocation failed; contents are truncated */
} hd_buf_t;

void hd_buf_init(hd_buf_t *b);
void hd_buf_cleanup(hd_buf_t *b);
void hd_buf_append(hd_buf_t *b, const void *data, size_t len);
void hd_buf_puts(hd_buf_t *b, const char *s);
void hd_buf_printf(hd_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append @s (@len bytes) as a quoted JSON string, escaping as RFC 8259 requires. */
void hd_buf_json_str(hd_buf_t *b, const char *s, size_t len);

/* Read a whole file into a NUL-terminated heap buffer. */
hd_status_t hd_file_read_all(const char *path, size_t max_bytes, char **data_p, size_t *len_p);

#endif /* HADAL_JSON_H */
