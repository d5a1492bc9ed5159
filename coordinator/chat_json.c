/*
 * chat_json.c - json.dumps(ensure_ascii=False) for JSON trees, numbers included.
 *
 * The official DeepSeek-V4 encoder embeds tool schemas, response formats and tool-call
 * arguments in the prompt through Python's json.loads/json.dumps, so the prompt depends on
 * how Python prints numbers: integers exactly as written (arbitrary size), floats via
 * repr() (shortest round-trip digits, exponent form below 1e-4 and from 1e16). hd_json_t keeps
 * values only, so a numbers table maps each number node to its literal; it is built by
 * lexing the source text in document order alongside a depth-first walk of the tree.
 */
#include "chat_impl.h"
#include "hadal/alloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const hd_json_t *node; /* number node */
    uint32_t off;          /* literal in the arena */
    uint32_t len;          /* literal bytes */
} num_entry_t;

struct hd_chat_numbers {
    num_entry_t *e;  /* sorted by node pointer */
    size_t n;        /* entries */
    size_t cap;      /* entries allocated */
    char *arena;     /* literals */
    size_t used;     /* arena bytes used */
    size_t arena_cap; /* arena bytes allocated */
};

hd_status_t hd_chat_numbers_create(hd_chat_numbers_t **nums_p)
{
    hd_chat_numbers_t *n = hd_calloc(1, sizeof(*n), "chat numbers");
    if (n == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    *nums_p = n;
    return HD_OK;
}

void hd_chat_numbers_destroy(hd_chat_numbers_t *nums)
{
    if (nums == NULL) {
        return;
    }
    hd_free(nums->e);
    hd_free(nums->arena);
    hd_free(nums);
}

/* Number nodes of @v in document order. */
static void numbers_walk(const hd_json_t *v, const hd_json_t ***out, size_t *n, size_t *cap,
                         bool *oom)
{
    if (*oom) {
        return;
    }
    if (v->type == HD_JSON_NUMBER) {
        if (*n == *cap) {
            size_t c = *cap ? *cap * 2 : 32;
            const hd_json_t **p = hd_realloc((void *)*out, c * sizeof(*p), "chat numbers");
            if (p == NULL) {
                *oom = true;
                return;
            }
            *out = p;
            *cap = c;
        }
        (*out)[(*n)++] = v;
        return;
    }
    if (v->type == HD_JSON_ARRAY || v->type == HD_JSON_OBJECT) {
        for (size_t i = 0; i < v->n; i++) {
            numbers_walk(v->kids[i], out, n, cap, oom);
        }
    }
}

static int numbers_cmp(const void *a, const void *b)
{
    const hd_json_t *x = ((const num_entry_t *)a)->node, *y = ((const num_entry_t *)b)->node;
    return x < y ? -1 : x > y;
}

hd_status_t hd_chat_numbers_add(hd_chat_numbers_t *nums, const char *text, size_t len,
                                const hd_json_t *root)
{
    const hd_json_t **nodes = NULL;
    size_t n_nodes = 0, cap = 0, k = 0, used0 = nums->used;
    bool oom = false;
    hd_status_t status = HD_OK;

    numbers_walk(root, &nodes, &n_nodes, &cap, &oom);
    if (oom) {
        hd_free((void *)nodes);
        return HD_ERR_NO_MEMORY;
    }
    if (n_nodes == 0) {
        return HD_OK;
    }
    if (nums->n + n_nodes > nums->cap) {
        size_t c = nums->cap ? nums->cap : 32;
        while (c < nums->n + n_nodes) {
            c *= 2;
        }
        num_entry_t *e = hd_realloc(nums->e, c * sizeof(*e), "chat numbers");
        if (e == NULL) {
            status = HD_ERR_NO_MEMORY;
            goto out;
        }
        nums->e = e;
        nums->cap = c;
    }
    if (nums->used + len > nums->arena_cap) {
        size_t c = nums->arena_cap ? nums->arena_cap : 256;
        while (c < nums->used + len) {
            c *= 2;
        }
        char *a = hd_realloc(nums->arena, c, "chat numbers");
        if (a == NULL) {
            status = HD_ERR_NO_MEMORY;
            goto out;
        }
        nums->arena = a;
        nums->arena_cap = c;
    }
    /* lex: number tokens outside strings, in order (the text is valid JSON) */
    for (size_t i = 0; i < len && k < n_nodes;) {
        char c = text[i];
        if (c == '"') {
            i++;
            while (i < len && text[i] != '"') {
                i += text[i] == '\\' ? 2 : 1;
            }
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i + 1;
            while (j < len && (text[j] == '.' || text[j] == 'e' || text[j] == 'E' ||
                               text[j] == '+' || text[j] == '-' || (text[j] >= '0' && text[j] <= '9'))) {
                j++;
            }
            num_entry_t *e = &nums->e[nums->n + k++];
            e->node = nodes[k - 1];
            e->off = (uint32_t)nums->used;
            e->len = (uint32_t)(j - i);
            memcpy(nums->arena + nums->used, text + i, j - i);
            nums->used += j - i;
            i = j;
        } else {
            i++;
        }
    }
    if (k != n_nodes) {
        /* not the text of this tree: keep nothing from it */
        nums->used = used0;
        status = HD_ERR_INVALID_PARAM;
        goto out;
    }
    nums->n += n_nodes;
    qsort(nums->e, nums->n, sizeof(*nums->e), numbers_cmp);
out:
    hd_free((void *)nodes);
    return status;
}

static const num_entry_t *numbers_find(const hd_chat_numbers_t *nums, const hd_json_t *v)
{
    if (nums == NULL || nums->n == 0) {
        return NULL;
    }
    num_entry_t key = {.node = v};
    return bsearch(&key, nums->e, nums->n, sizeof(*nums->e), numbers_cmp);
}

hd_status_t hd_chat_json_parse(const char *text, size_t len, hd_chat_numbers_t *nums,
                               hd_json_t **root_p, char *err, size_t err_len)
{
    hd_json_t *root = NULL;
    hd_status_t status = hd_json_parse(text, len, NULL, &root, err, err_len);
    if (status != HD_OK) {
        return status;
    }
    if (nums != NULL) {
        status = hd_chat_numbers_add(nums, text, len, root);
        if (status != HD_OK) {
            hd_json_free(root);
            if (err != NULL && err_len > 0) {
                snprintf(err, err_len, "out of memory");
            }
            return status;
        }
    }
    *root_p = root;
    return HD_OK;
}

/* ---- Python float repr ---- */

void chat_py_float_repr(double d, hd_buf_t *out)
{
    char buf[40], digits[24];
    int nd = 0, exp10 = 0;
    if (isnan(d)) {
        hd_buf_puts(out, "NaN");
        return;
    }
    if (isinf(d)) {
        hd_buf_puts(out, d < 0 ? "-Infinity" : "Infinity");
        return;
    }
    if (signbit(d)) {
        hd_buf_puts(out, "-");
        d = -d;
    }
    if (d == 0) {
        hd_buf_puts(out, "0.0");
        return;
    }
    /* shortest %.*e that reads back exactly */
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof(buf), "%.*e", p - 1, d);
        if (strtod(buf, NULL) == d) {
            break;
        }
    }
    for (const char *c = buf; *c && *c != 'e'; c++) {
        if (*c >= '0' && *c <= '9') {
            digits[nd++] = *c;
        }
    }
    while (nd > 1 && digits[nd - 1] == '0') {
        nd--;
    }
    digits[nd] = '\0';
    exp10 = atoi(strchr(buf, 'e') + 1);
    int decpt = exp10 + 1; /* value = 0.DIGITS * 10^decpt */
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            hd_buf_puts(out, "0.");
            for (int i = 0; i < -decpt; i++) {
                hd_buf_puts(out, "0");
            }
            hd_buf_append(out, digits, (size_t)nd);
        } else if (decpt >= nd) {
            hd_buf_append(out, digits, (size_t)nd);
            for (int i = nd; i < decpt; i++) {
                hd_buf_puts(out, "0");
            }
            hd_buf_puts(out, ".0");
        } else {
            hd_buf_append(out, digits, (size_t)decpt);
            hd_buf_puts(out, ".");
            hd_buf_append(out, digits + decpt, (size_t)(nd - decpt));
        }
        return;
    }
    hd_buf_append(out, digits, 1);
    if (nd > 1) {
        hd_buf_puts(out, ".");
        hd_buf_append(out, digits + 1, (size_t)(nd - 1));
    }
    hd_buf_printf(out, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
}

static void dump_number(const hd_json_t *v, const hd_chat_numbers_t *nums, hd_buf_t *out)
{
    const num_entry_t *e = numbers_find(nums, v);
    if (e != NULL) {
        const char *lit = nums->arena + e->off;
        bool is_float = memchr(lit, '.', e->len) || memchr(lit, 'e', e->len) ||
                        memchr(lit, 'E', e->len);
        if (!is_float) {
            /* Python int(): the literal, except that -0 is 0 */
            if (e->len == 2 && lit[0] == '-' && lit[1] == '0') {
                hd_buf_puts(out, "0");
            } else {
                hd_buf_append(out, lit, e->len);
            }
            return;
        }
        char tmp[512];
        double d;
        if (e->len < sizeof(tmp)) {
            memcpy(tmp, lit, e->len);
            tmp[e->len] = '\0';
            d = strtod(tmp, NULL);
        } else {
            d = v->num;
        }
        chat_py_float_repr(d, out);
        return;
    }
    if (v->is_int) {
        hd_buf_printf(out, "%lld", (long long)v->i64);
    } else {
        chat_py_float_repr(v->num, out);
    }
}

void hd_chat_json_dump(const hd_json_t *v, const hd_chat_numbers_t *nums, hd_buf_t *out)
{
    switch (v->type) {
    case HD_JSON_NULL:
        hd_buf_puts(out, "null");
        break;
    case HD_JSON_FALSE:
        hd_buf_puts(out, "false");
        break;
    case HD_JSON_TRUE:
        hd_buf_puts(out, "true");
        break;
    case HD_JSON_NUMBER:
        dump_number(v, nums, out);
        break;
    case HD_JSON_STRING:
        hd_buf_json_str(out, v->str, v->str_len);
        break;
    case HD_JSON_ARRAY:
        hd_buf_puts(out, "[");
        for (size_t i = 0; i < v->n; i++) {
            if (i) {
                hd_buf_puts(out, ", ");
            }
            hd_chat_json_dump(v->kids[i], nums, out);
        }
        hd_buf_puts(out, "]");
        break;
    case HD_JSON_OBJECT:
        hd_buf_puts(out, "{");
        for (size_t i = 0; i < v->n; i++) {
            if (i) {
                hd_buf_puts(out, ", ");
            }
            hd_buf_json_str(out, v->kids[i]->key, v->kids[i]->key_len);
            hd_buf_puts(out, ": ");
            hd_chat_json_dump(v->kids[i], nums, out);
        }
        hd_buf_puts(out, "}");
        break;
    }
}

bool chat_py_truthy(const hd_json_t *v)
{
    if (v == NULL) {
        return false;
    }
    switch (v->type) {
    case HD_JSON_NULL:
    case HD_JSON_FALSE:
        return false;
    case HD_JSON_TRUE:
        return true;
    case HD_JSON_NUMBER:
        return v->num != 0;
    case HD_JSON_STRING:
        return v->str_len > 0;
    default:
        return v->n > 0;
    }
}
