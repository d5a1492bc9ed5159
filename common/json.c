/*
 * json.c - strict recursive-descent JSON parser and writer helpers.
 *
 * The parser is used on untrusted input (safetensors headers, config files, HTTP bodies),
 * so it validates everything, bounds recursion, and never reads past @len.
 */
#include "hadal/json.h"
#include "hadal/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const char *p;
    const char *end;
    const char *start;
    size_t depth;
    size_t max_depth;
    char *err;
    size_t err_len;
    hd_status_t status;
} json_parser_t;

static void json_fail(json_parser_t *ps, const char *what)
{
    if (ps->status == HD_OK) {
        ps->status = HD_ERR_FORMAT;
        if (ps->err != NULL && ps->err_len > 0) {
            snprintf(ps->err, ps->err_len, "json: %s at byte %zu", what,
                     (size_t)(ps->p - ps->start));
        }
    }
}

static void json_oom(json_parser_t *ps)
{
    if (ps->status == HD_OK) {
        ps->status = HD_ERR_NO_MEMORY;
        if (ps->err != NULL && ps->err_len > 0) {
            snprintf(ps->err, ps->err_len, "json: out of memory");
        }
    }
}

static void json_skip_ws(json_parser_t *ps)
{
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) {
        ps->p++;
    }
}

void hd_json_free(hd_json_t *v)
{
    if (v == NULL) {
        return;
    }
    for (size_t i = 0; i < v->n; i++) {
        hd_json_free(v->kids[i]);
    }
    hd_free(v->kids);
    hd_free(v->key);
    hd_free(v->str);
    hd_free(v);
}

static int json_hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= (unsigned)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            v |= (unsigned)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            v |= (unsigned)(c - 'A' + 10);
        } else {
            return -1;
        }
    }
    *out = v;
    return 0;
}

static size_t json_put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at p (< end), or 0 if invalid. */
static size_t json_utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n;
    unsigned cp;
    if (c < 0x80) {
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
        return 0;
    }
    return n;
}

static char *json_parse_string(json_parser_t *ps, size_t *len_p)
{
    const char *q;
    char *out, *o;
    size_t cap = 0;
    /* ps->p is at the opening quote. First pass: find the end and an upper bound. */
    q = ps->p + 1;
    while (q < ps->end && *q != '"') {
        if (*q == '\\') {
            q++;
        }
        q++;
    }
    if (q >= ps->end) {
        json_fail(ps, "unterminated string");
        return NULL;
    }
    cap = (size_t)(q - ps->p) + 1;
    out = hd_malloc(cap, "json string");
    if (out == NULL) {
        json_oom(ps);
        return NULL;
    }
    o = out;
    ps->p++;
    while (ps->p < ps->end && *ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20) {
            json_fail(ps, "control character in string");
            goto err;
        }
        if (c == '\\') {
            char e;
            ps->p++;
            if (ps->p >= ps->end) {
                json_fail(ps, "bad escape");
                goto err;
            }
            e = *ps->p++;
            switch (e) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '/': *o++ = '/'; break;
            case 'b': *o++ = '\b'; break;
            case 'f': *o++ = '\f'; break;
            case 'n': *o++ = '\n'; break;
            case 'r': *o++ = '\r'; break;
            case 't': *o++ = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (ps->end - ps->p < 4 || json_hex4(ps->p, &cp) != 0) {
                    json_fail(ps, "bad \\u escape");
                    goto err;
                }
                ps->p += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' ||
                        json_hex4(ps->p + 2, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF) {
                        json_fail(ps, "unpaired surrogate");
                        goto err;
                    }
                    ps->p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    json_fail(ps, "unpaired surrogate");
                    goto err;
                }
                o += json_put_utf8(o, cp);
                break;
            }
            default:
                json_fail(ps, "bad escape");
                goto err;
            }
        } else {
            size_t n = json_utf8_len((const unsigned char *)ps->p, (const unsigned char *)ps->end);
            if (n == 0) {
                json_fail(ps, "invalid utf-8 in string");
                goto err;
            }
            memcpy(o, ps->p, n);
            o += n;
            ps->p += n;
        }
    }
    ps->p++; /* closing quote */
    *o = '\0';
    *len_p = (size_t)(o - out);
    return out;
err:
    hd_free(out);
    return NULL;
}

static hd_json_t *json_parse_value(json_parser_t *ps);

static int json_push(json_parser_t *ps, hd_json_t *parent, size_t *cap, hd_json_t *kid)
{
    if (parent->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        hd_json_t **k = hd_realloc(parent->kids, nc * sizeof(*k), "json children");
        if (k == NULL) {
            json_oom(ps);
            return -1;
        }
        parent->kids = k;
        *cap = nc;
    }
    parent->kids[parent->n++] = kid;
    return 0;
}

static hd_json_t *json_parse_container(json_parser_t *ps, hd_json_t *v, int is_obj)
{
    size_t cap = 0;
    char close = is_obj ? '}' : ']';
    if (++ps->depth > ps->max_depth) {
        json_fail(ps, "nesting too deep");
        return v;
    }
    ps->p++;
    json_skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return v;
    }
    for (;;) {
        char *key = NULL;
        size_t key_len = 0;
        hd_json_t *kid;
        json_skip_ws(ps);
        if (is_obj) {
            if (ps->p >= ps->end || *ps->p != '"') {
                json_fail(ps, "expected member name");
                return v;
            }
            key = json_parse_string(ps, &key_len);
            if (key == NULL) {
                return v;
            }
            for (size_t i = 0; i < v->n; i++) {
                if (v->kids[i]->key_len == key_len && memcmp(v->kids[i]->key, key, key_len) == 0) {
                    hd_free(key);
                    json_fail(ps, "duplicate member name");
                    return v;
                }
            }
            json_skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                hd_free(key);
                json_fail(ps, "expected ':'");
                return v;
            }
            ps->p++;
        }
        kid = json_parse_value(ps);
        if (kid == NULL) {
            hd_free(key);
            return v;
        }
        kid->key = key;
        kid->key_len = key_len;
        if (json_push(ps, v, &cap, kid) != 0) {
            hd_json_free(kid);
            return v;
        }
        if (ps->status != HD_OK) {
            return v;
        }
        json_skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            ps->depth--;
            return v;
        }
        json_fail(ps, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
        return v;
    }
}

static int json_parse_number(json_parser_t *ps, hd_json_t *v)
{
    const char *s = ps->p;
    const char *q = s;
    char buf[128];
    int is_int = 1;
    if (q < ps->end && *q == '-') {
        q++;
    }
    if (q >= ps->end || !(*q >= '0' && *q <= '9')) {
        return -1;
    }
    if (*q == '0') {
        q++;
    } else {
        while (q < ps->end && *q >= '0' && *q <= '9') {
            q++;
        }
    }
    if (q < ps->end && *q == '.') {
        is_int = 0;
        q++;
        if (q >= ps->end || !(*q >= '0' && *q <= '9')) {
            return -1;
        }
        while (q < ps->end && *q >= '0' && *q <= '9') {
            q++;
        }
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        is_int = 0;
        q++;
        if (q < ps->end && (*q == '+' || *q == '-')) {
            q++;
        }
        if (q >= ps->end || !(*q >= '0' && *q <= '9')) {
            return -1;
        }
        while (q < ps->end && *q >= '0' && *q <= '9') {
            q++;
        }
    }
    if ((size_t)(q - s) >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, s, (size_t)(q - s));
    buf[q - s] = '\0';
    v->num = strtod(buf, NULL);
    if (is_int) {
        errno = 0;
        long long ll = strtoll(buf, NULL, 10);
        if (errno == 0) {
            v->i64 = ll;
            v->is_int = true;
        }
    } else if (isfinite(v->num) && v->num == floor(v->num) && fabs(v->num) < 9.2e18) {
        v->i64 = (int64_t)v->num;
        v->is_int = true;
    }
    ps->p = q;
    return 0;
}

static hd_json_t *json_parse_value(json_parser_t *ps)
{
    hd_json_t *v;
    json_skip_ws(ps);
    if (ps->p >= ps->end) {
        json_fail(ps, "unexpected end of input");
        return NULL;
    }
    v = hd_calloc(1, sizeof(*v), "json node");
    if (v == NULL) {
        json_oom(ps);
        return NULL;
    }
    switch (*ps->p) {
    case '{':
        v->type = HD_JSON_OBJECT;
        return json_parse_container(ps, v, 1);
    case '[':
        v->type = HD_JSON_ARRAY;
        return json_parse_container(ps, v, 0);
    case '"':
        v->type = HD_JSON_STRING;
        v->str = json_parse_string(ps, &v->str_len);
        if (v->str == NULL) {
            hd_free(v);
            return NULL;
        }
        return v;
    case 't':
        if (ps->end - ps->p >= 4 && memcmp(ps->p, "true", 4) == 0) {
            v->type = HD_JSON_TRUE;
            ps->p += 4;
            return v;
        }
        break;
    case 'f':
        if (ps->end - ps->p >= 5 && memcmp(ps->p, "false", 5) == 0) {
            v->type = HD_JSON_FALSE;
            ps->p += 5;
            return v;
        }
        break;
    case 'n':
        if (ps->end - ps->p >= 4 && memcmp(ps->p, "null", 4) == 0) {
            v->type = HD_JSON_NULL;
            ps->p += 4;
            return v;
        }
        break;
    default:
        v->type = HD_JSON_NUMBER;
        if (json_parse_number(ps, v) == 0) {
            return v;
        }
        break;
    }
    hd_free(v);
    json_fail(ps, "unexpected character");
    return NULL;
}

hd_status_t hd_json_parse(const char *text, size_t len, const hd_json_opts_t *opts,
                          hd_json_t **root_p, char *err, size_t err_len)
{
    json_parser_t ps = {.p = text, .end = text + len, .start = text, .err = err,
                        .err_len = err_len, .status = HD_OK};
    hd_json_t *root;
    ps.max_depth = (opts != NULL && opts->max_depth) ? opts->max_depth : 256;
    if (err != NULL && err_len > 0) {
        err[0] = '\0';
    }
    root = json_parse_value(&ps);
    if (ps.status == HD_OK) {
        json_skip_ws(&ps);
        if (ps.p != ps.end) {
            json_fail(&ps, "trailing characters");
        }
    }
    if (ps.status != HD_OK) {
        hd_json_free(root);
        return ps.status;
    }
    *root_p = root;
    return HD_OK;
}

const hd_json_t *hd_json_get(const hd_json_t *obj, const char *key)
{
    size_t kl;
    if (obj == NULL || obj->type != HD_JSON_OBJECT) {
        return NULL;
    }
    kl = strlen(key);
    for (size_t i = 0; i < obj->n; i++) {
        if (obj->kids[i]->key_len == kl && memcmp(obj->kids[i]->key, key, kl) == 0) {
            return obj->kids[i];
        }
    }
    return NULL;
}

const hd_json_t *hd_json_at(const hd_json_t *arr, size_t i)
{
    if (arr == NULL || arr->type != HD_JSON_ARRAY || i >= arr->n) {
        return NULL;
    }
    return arr->kids[i];
}

const char *hd_json_type_name(hd_json_type_t t)
{
    static const char *const names[] = {"null", "boolean", "boolean", "number",
                                        "string", "array", "object"};
    return (unsigned)t < 7 ? names[t] : "?";
}

bool hd_json_get_i64(const hd_json_t *obj, const char *key, int64_t *out)
{
    const hd_json_t *v = hd_json_get(obj, key);
    if (v == NULL || v->type != HD_JSON_NUMBER || !v->is_int) {
        return false;
    }
    *out = v->i64;
    return true;
}

bool hd_json_get_num(const hd_json_t *obj, const char *key, double *out)
{
    const hd_json_t *v = hd_json_get(obj, key);
    if (v == NULL || v->type != HD_JSON_NUMBER) {
        return false;
    }
    *out = v->num;
    return true;
}

bool hd_json_get_bool(const hd_json_t *obj, const char *key, bool *out)
{
    const hd_json_t *v = hd_json_get(obj, key);
    if (v == NULL || (v->type != HD_JSON_TRUE && v->type != HD_JSON_FALSE)) {
        return false;
    }
    *out = v->type == HD_JSON_TRUE;
    return true;
}

const char *hd_json_get_str(const hd_json_t *obj, const char *key)
{
    const hd_json_t *v = hd_json_get(obj, key);
    return (v != NULL && v->type == HD_JSON_STRING) ? v->str : NULL;
}

/* ---- writer ---- */

void hd_buf_init(hd_buf_t *b)
{
    memset(b, 0, sizeof(*b));
}

void hd_buf_cleanup(hd_buf_t *b)
{
    hd_free(b->data);
    memset(b, 0, sizeof(*b));
}

static int buf_reserve(hd_buf_t *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (b->failed) {
        return -1;
    }
    if (need > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < need) {
            nc *= 2;
        }
        char *d = hd_realloc(b->data, nc, "buffer");
        if (d == NULL) {
            b->failed = true;
            return -1;
        }
        b->data = d;
        b->cap = nc;
    }
    return 0;
}

void hd_buf_append(hd_buf_t *b, const void *data, size_t len)
{
    if (buf_reserve(b, len) != 0) {
        return;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void hd_buf_puts(hd_buf_t *b, const char *s)
{
    hd_buf_append(b, s, strlen(s));
}

void hd_buf_printf(hd_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n) != 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void hd_buf_json_str(hd_buf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    hd_buf_append(b, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': hd_buf_append(b, "\\\"", 2); break;
        case '\\': hd_buf_append(b, "\\\\", 2); break;
        case '\n': hd_buf_append(b, "\\n", 2); break;
        case '\r': hd_buf_append(b, "\\r", 2); break;
        case '\t': hd_buf_append(b, "\\t", 2); break;
        case '\b': hd_buf_append(b, "\\b", 2); break;
        case '\f': hd_buf_append(b, "\\f", 2); break;
        default:
            if (c < 0x20) {
                char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                hd_buf_append(b, e, 6);
            } else {
                hd_buf_append(b, &s[i], 1);
            }
        }
    }
    hd_buf_append(b, "\"", 1);
}

hd_status_t hd_file_read_all(const char *path, size_t max_bytes, char **data_p, size_t *len_p)
{
    struct stat st;
    char *data;
    size_t off = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? HD_ERR_NOT_FOUND : HD_ERR_IO;
    }
    if (fstat(fd, &st) != 0 || (size_t)st.st_size > max_bytes) {
        close(fd);
        return HD_ERR_IO;
    }
    data = hd_malloc((size_t)st.st_size + 1, "file contents");
    if (data == NULL) {
        close(fd);
        return HD_ERR_NO_MEMORY;
    }
    while (off < (size_t)st.st_size) {
        ssize_t r = read(fd, data + off, (size_t)st.st_size - off);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        off += (size_t)r;
    }
    close(fd);
    data[off] = '\0';
    *data_p = data;
    *len_p = off;
    return HD_OK;
}
