/*
 * safetensors.c - the safetensors reader (single file, index.json-sharded set, or a
 * directory) and writer.
 *
 * Reader: every file is mmap'ed read-only and its header validated in full before any tensor
 * is handed out (hd_st_parse_header, shared with the fuzzer). Tensor bytes are never copied,
 * so opening a 160 GB checkpoint costs only its headers; a set is immutable afterwards.
 * Writer: buffered (hd_st_writer_add copies data) or streaming (declare, then write bytes in
 * order), always through <path>.tmp and an atomic rename.
 */
#include "hadal/safetensors.h"
#include "hadal/alloc.h"
#include "hadal/json.h"
#include "hadal/log.h"
#include "st_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_MAX_INDEX_BYTES (512u << 20)

static void st_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void st_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || err_len == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* Add " (listed in <index>)" to a shard's message so both files are named. */
static void st_err_append(char *err, size_t err_len, const char *index_path)
{
    size_t n;
    if (err == NULL || err_len == 0) {
        return;
    }
    n = strlen(err);
    if (n + 1 < err_len) {
        snprintf(err + n, err_len - n, " (listed in %s)", index_path);
    }
}

/* ---- one file: header parsing ---- */

typedef struct {
    uint64_t begin;
    uint64_t end;
    size_t idx;
} st_range_t;

static int st_range_cmp(const void *a, const void *b)
{
    const st_range_t *x = a, *y = b;
    if (x->begin != y->begin) {
        return x->begin < y->begin ? -1 : 1;
    }
    if (x->end != y->end) {
        return x->end < y->end ? -1 : 1;
    }
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

void hd_st_file_cleanup(hd_st_file_t *f)
{
    if (f == NULL) {
        return;
    }
    for (size_t i = 0; i < f->n; i++) {
        hd_free((void *)f->tensors[i].name);
    }
    hd_free(f->tensors);
    hd_free(f->path);
    if (f->map != NULL) {
        munmap(f->map, f->map_len);
    }
    memset(f, 0, sizeof(*f));
}

/* Validate one tensor entry @e named @name and fill @t; offsets go to @r. */
static hd_status_t st_parse_entry(const hd_st_file_t *f, const char *name, const hd_json_t *e,
                                  hd_st_tensor_t *t, st_range_t *r, char *err, size_t err_len)
{
    const hd_json_t *dt, *shape, *offs;
    uint64_t numel = 1, nbytes, b, en;
    int dtype;

    if (e->type != HD_JSON_OBJECT) {
        st_err(err, err_len, "%s: tensor %s: entry is %s, not an object", f->path, name,
               hd_json_type_name(e->type));
        return HD_ERR_FORMAT;
    }
    for (size_t i = 0; i < e->n; i++) {
        const char *k = e->kids[i]->key;
        if (strcmp(k, "dtype") != 0 && strcmp(k, "shape") != 0 && strcmp(k, "data_offsets") != 0) {
            st_err(err, err_len, "%s: tensor %s: unknown key \"%s\"", f->path, name, k);
            return HD_ERR_FORMAT;
        }
    }
    dt = hd_json_get(e, "dtype");
    shape = hd_json_get(e, "shape");
    offs = hd_json_get(e, "data_offsets");
    if (dt == NULL || shape == NULL || offs == NULL) {
        st_err(err, err_len, "%s: tensor %s: missing %s", f->path, name,
               dt == NULL      ? "dtype"
               : shape == NULL ? "shape"
                               : "data_offsets");
        return HD_ERR_FORMAT;
    }
    if (dt->type != HD_JSON_STRING) {
        st_err(err, err_len, "%s: tensor %s: dtype is %s, not a string", f->path, name,
               hd_json_type_name(dt->type));
        return HD_ERR_FORMAT;
    }
    dtype = strlen(dt->str) == dt->str_len ? hd_dtype_from_name(dt->str) : -1;
    if (dtype < 0) {
        st_err(err, err_len, "%s: tensor %s: unknown dtype \"%.32s\"", f->path, name, dt->str);
        return HD_ERR_FORMAT;
    }
    if (shape->type != HD_JSON_ARRAY) {
        st_err(err, err_len, "%s: tensor %s: shape is %s, not a list", f->path, name,
               hd_json_type_name(shape->type));
        return HD_ERR_FORMAT;
    }
    if (shape->n > HD_ST_MAX_DIMS) {
        st_err(err, err_len, "%s: tensor %s: %zu dimensions, at most %d supported", f->path, name,
               shape->n, HD_ST_MAX_DIMS);
        return HD_ERR_FORMAT;
    }
    memset(t, 0, sizeof(*t));
    for (size_t i = 0; i < shape->n; i++) {
        const hd_json_t *d = shape->kids[i];
        if (d->type != HD_JSON_NUMBER || !d->is_int || d->i64 < 0) {
            st_err(err, err_len, "%s: tensor %s: shape[%zu] is not a non-negative integer", f->path,
                   name, i);
            return HD_ERR_FORMAT;
        }
        if (__builtin_mul_overflow(numel, (uint64_t)d->i64, &numel)) {
            st_err(err, err_len, "%s: tensor %s: element count overflows", f->path, name);
            return HD_ERR_FORMAT;
        }
        t->shape[i] = d->i64;
    }
    if (__builtin_mul_overflow(numel, (uint64_t)hd_dtype_size((hd_dtype_t)dtype), &nbytes)) {
        st_err(err, err_len, "%s: tensor %s: byte size overflows", f->path, name);
        return HD_ERR_FORMAT;
    }
    if (offs->type != HD_JSON_ARRAY || offs->n != 2 || offs->kids[0]->type != HD_JSON_NUMBER ||
        !offs->kids[0]->is_int || offs->kids[1]->type != HD_JSON_NUMBER || !offs->kids[1]->is_int ||
        offs->kids[0]->i64 < 0 || offs->kids[1]->i64 < 0) {
        st_err(err, err_len, "%s: tensor %s: data_offsets is not a pair of non-negative integers",
               f->path, name);
        return HD_ERR_FORMAT;
    }
    b = (uint64_t)offs->kids[0]->i64;
    en = (uint64_t)offs->kids[1]->i64;
    if (b > en) {
        st_err(err, err_len, "%s: tensor %s: data_offsets [%llu, %llu] run backwards", f->path,
               name, (unsigned long long)b, (unsigned long long)en);
        return HD_ERR_FORMAT;
    }
    if (en > f->data_len) {
        st_err(err, err_len,
               "%s: tensor %s: data_offsets [%llu, %llu] point past the end of the data section "
               "(%zu bytes)",
               f->path, name, (unsigned long long)b, (unsigned long long)en, f->data_len);
        return HD_ERR_FORMAT;
    }
    if (en - b != nbytes) {
        st_err(err, err_len,
               "%s: tensor %s: shape and dtype %s need %llu bytes but data_offsets span %llu",
               f->path, name, hd_dtype_name((hd_dtype_t)dtype), (unsigned long long)nbytes,
               (unsigned long long)(en - b));
        return HD_ERR_FORMAT;
    }
    t->dtype = (hd_dtype_t)dtype;
    t->ndim = (int)shape->n;
    t->nbytes = (size_t)nbytes;
    t->file = f->path;
    r->begin = b;
    r->end = en;
    return HD_OK;
}

static hd_status_t st_parse_metadata(const hd_st_file_t *f, const hd_json_t *m, char *err,
                                     size_t err_len)
{
    if (m->type != HD_JSON_OBJECT) {
        st_err(err, err_len, "%s: __metadata__ is %s, not an object", f->path,
               hd_json_type_name(m->type));
        return HD_ERR_FORMAT;
    }
    for (size_t i = 0; i < m->n; i++) {
        if (m->kids[i]->type != HD_JSON_STRING) {
            st_err(err, err_len, "%s: __metadata__ value \"%s\" is %s, not a string", f->path,
                   m->kids[i]->key, hd_json_type_name(m->kids[i]->type));
            return HD_ERR_FORMAT;
        }
    }
    return HD_OK;
}

hd_status_t hd_st_parse_header(const uint8_t *buf, size_t len, const char *file, hd_st_file_t *f,
                               char *err, size_t err_len)
{
    hd_json_opts_t opts = {.max_depth = 8};
    hd_json_t *root = NULL;
    st_range_t *ranges = NULL;
    const uint8_t *data;
    uint64_t hlen = 0;
    char jerr[160];
    hd_status_t status;
    size_t nt = 0;

    memset(f, 0, sizeof(*f));
    if (file == NULL) {
        file = "(memory)";
    }
    f->path = hd_strdup(file, "st path");
    if (f->path == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    if (buf == NULL || len < 8) {
        st_err(err, err_len, "%s: truncated: %zu bytes, a safetensors file needs at least 8", file,
               buf == NULL ? 0 : len);
        status = HD_ERR_FORMAT;
        goto err_free;
    }
    for (int i = 7; i >= 0; i--) {
        hlen = (hlen << 8) | buf[i];
    }
    if (hlen > len - 8) {
        st_err(err, err_len,
               "%s: header length %llu runs past the end of the file (%zu bytes): truncated or "
               "not a safetensors file",
               file, (unsigned long long)hlen, len);
        status = HD_ERR_FORMAT;
        goto err_free;
    }
    if (hlen > HD_ST_MAX_HEADER) {
        st_err(err, err_len, "%s: header length %llu exceeds the %u-byte limit", file,
               (unsigned long long)hlen, HD_ST_MAX_HEADER);
        status = HD_ERR_FORMAT;
        goto err_free;
    }
    if (hlen < 2 || buf[8] != '{') {
        st_err(err, err_len, "%s: header does not start with a JSON object", file);
        status = HD_ERR_FORMAT;
        goto err_free;
    }
    data = buf + 8 + hlen;
    f->data_len = len - 8 - (size_t)hlen;
    status = hd_json_parse((const char *)buf + 8, (size_t)hlen, &opts, &root, jerr, sizeof(jerr));
    if (status != HD_OK) {
        st_err(err, err_len, "%s: header is not valid JSON: %s", file, jerr);
        status = status == HD_ERR_NO_MEMORY ? status : HD_ERR_FORMAT;
        goto err_free;
    }
    if (root->type != HD_JSON_OBJECT) {
        st_err(err, err_len, "%s: header is not a JSON object", file);
        status = HD_ERR_FORMAT;
        goto err_free_json;
    }
    if (root->n > 0) {
        f->tensors = hd_calloc(root->n, sizeof(*f->tensors), "st tensors");
        ranges = hd_calloc(root->n, sizeof(*ranges), "st ranges");
        if (f->tensors == NULL || ranges == NULL) {
            status = HD_ERR_NO_MEMORY;
            goto err_free_json;
        }
    }
    for (size_t i = 0; i < root->n; i++) {
        const hd_json_t *e = root->kids[i];
        if (strlen(e->key) != e->key_len) {
            st_err(err, err_len, "%s: a tensor name holds a NUL byte", file);
            status = HD_ERR_FORMAT;
            goto err_free_json;
        }
        if (strcmp(e->key, "__metadata__") == 0) {
            HD_CHECK_GOTO(st_parse_metadata(f, e, err, err_len), status, err_free_json);
            continue;
        }
        if (e->key_len == 0) {
            st_err(err, err_len, "%s: a tensor has an empty name", file);
            status = HD_ERR_FORMAT;
            goto err_free_json;
        }
        HD_CHECK_GOTO(st_parse_entry(f, e->key, e, &f->tensors[nt], &ranges[nt], err, err_len),
                      status, err_free_json);
        f->tensors[nt].name = hd_strdup(e->key, "st tensor name");
        if (f->tensors[nt].name == NULL) {
            status = HD_ERR_NO_MEMORY;
            goto err_free_json;
        }
        f->tensors[nt].data = data + ranges[nt].begin;
        ranges[nt].idx = nt;
        nt++;
        f->n = nt;
    }
    /* no two byte ranges may overlap (zero-length tensors overlap nothing) */
    if (nt > 1) {
        const st_range_t *last = NULL; /* the non-empty range reaching furthest so far */
        qsort(ranges, nt, sizeof(*ranges), st_range_cmp);
        for (size_t i = 0; i < nt; i++) {
            const st_range_t *b = &ranges[i];
            if (b->end == b->begin) {
                continue;
            }
            if (last != NULL && b->begin < last->end) {
                st_err(err, err_len,
                       "%s: tensor %s: data_offsets [%llu, %llu] overlap tensor %s [%llu, %llu]",
                       file, f->tensors[b->idx].name, (unsigned long long)b->begin,
                       (unsigned long long)b->end, f->tensors[last->idx].name,
                       (unsigned long long)last->begin, (unsigned long long)last->end);
                status = HD_ERR_FORMAT;
                goto err_free_json;
            }
            if (last == NULL || b->end > last->end) {
                last = b;
            }
        }
    }
    hd_free(ranges);
    hd_json_free(root);
    return HD_OK;

err_free_json:
    hd_json_free(root);
err_free:
    hd_free(ranges);
    hd_st_file_cleanup(f);
    return status;
}

/* mmap @path read-only and parse it into @f. */
static hd_status_t st_file_open(const char *path, hd_st_file_t *f, char *err, size_t err_len)
{
    struct stat st;
    void *map;
    hd_status_t status;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        int e = errno;
        st_err(err, err_len, "%s: cannot open: %s", path, strerror(e));
        return e == ENOENT ? HD_ERR_NOT_FOUND : HD_ERR_IO;
    }
    if (fstat(fd, &st) != 0) {
        st_err(err, err_len, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return HD_ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        st_err(err, err_len, "%s: not a regular file", path);
        close(fd);
        return HD_ERR_IO;
    }
    if (st.st_size < 8) {
        close(fd);
        st_err(err, err_len, "%s: truncated: %lld bytes, a safetensors file needs at least 8", path,
               (long long)st.st_size);
        return HD_ERR_FORMAT;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        st_err(err, err_len, "%s: mmap failed: %s", path, strerror(errno));
        return HD_ERR_IO;
    }
    status = hd_st_parse_header(map, (size_t)st.st_size, path, f, err, err_len);
    if (status != HD_OK) {
        munmap(map, (size_t)st.st_size);
        return status;
    }
    f->map = map;
    f->map_len = (size_t)st.st_size;
    return HD_OK;
}

/* ---- the set: files + a name index ---- */

struct hd_st_set {
    char *path;          /* as given to hd_st_open */
    hd_st_file_t *files; /* n_files parsed shards */
    size_t n_files;
    const hd_st_tensor_t **by_idx; /* all tensors, file order then header order */
    size_t n;
    uint32_t *slots; /* open-addressing table of by_idx positions + 1 */
    size_t n_slots;  /* power of two */
};

static uint64_t st_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    }
    return h;
}

const hd_st_tensor_t *hd_st_find(hd_st_set_h set, const char *name)
{
    size_t mask, i;
    if (set == NULL || name == NULL || set->n_slots == 0) {
        return NULL;
    }
    mask = set->n_slots - 1;
    for (i = st_hash(name) & mask;; i = (i + 1) & mask) {
        uint32_t s = set->slots[i];
        if (s == 0) {
            return NULL;
        }
        if (strcmp(set->by_idx[s - 1]->name, name) == 0) {
            return set->by_idx[s - 1];
        }
    }
}

size_t hd_st_count(hd_st_set_h set)
{
    return set ? set->n : 0;
}

const hd_st_tensor_t *hd_st_at(hd_st_set_h set, size_t i)
{
    return set && i < set->n ? set->by_idx[i] : NULL;
}

int64_t hd_st_numel(const hd_st_tensor_t *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        n *= t->shape[i];
    }
    return n;
}

const char *hd_st_path(hd_st_set_h set)
{
    return set ? set->path : NULL;
}

size_t hd_st_file_count(hd_st_set_h set)
{
    return set ? set->n_files : 0;
}

void hd_st_close(hd_st_set_h set)
{
    if (set == NULL) {
        return;
    }
    for (size_t i = 0; i < set->n_files; i++) {
        hd_st_file_cleanup(&set->files[i]);
    }
    hd_free(set->files);
    hd_free(set->by_idx);
    hd_free(set->slots);
    hd_free(set->path);
    hd_free(set);
}

/* Build by_idx and the name table over all files; a name held twice is an error. */
static hd_status_t st_set_index(hd_st_set_h set, char *err, size_t err_len)
{
    size_t n = 0, k = 0, mask;
    for (size_t f = 0; f < set->n_files; f++) {
        n += set->files[f].n;
    }
    if (n >= UINT32_MAX / 4) {
        st_err(err, err_len, "%s: %zu tensors is too many", set->path, n);
        return HD_ERR_FORMAT;
    }
    set->n_slots = 16;
    while (set->n_slots < 2 * n) {
        set->n_slots *= 2;
    }
    set->by_idx = hd_calloc(n ? n : 1, sizeof(*set->by_idx), "st index");
    set->slots = hd_calloc(set->n_slots, sizeof(*set->slots), "st slots");
    if (set->by_idx == NULL || set->slots == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    mask = set->n_slots - 1;
    for (size_t f = 0; f < set->n_files; f++) {
        for (size_t j = 0; j < set->files[f].n; j++) {
            const hd_st_tensor_t *t = &set->files[f].tensors[j];
            size_t i;
            for (i = st_hash(t->name) & mask; set->slots[i] != 0; i = (i + 1) & mask) {
                const hd_st_tensor_t *o = set->by_idx[set->slots[i] - 1];
                if (strcmp(o->name, t->name) == 0) {
                    st_err(err, err_len, "%s: tensor %s: also present in %s", t->file, t->name,
                           o->file);
                    return HD_ERR_FORMAT;
                }
            }
            set->by_idx[k] = t;
            set->slots[i] = (uint32_t)(k + 1);
            k++;
        }
    }
    set->n = n;
    return HD_OK;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Directory part of @path ("." when none) into @dir. */
static void st_dirname(const char *path, char *dir, size_t len)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(dir, len, ".");
    } else if (slash == path) {
        snprintf(dir, len, "/");
    } else {
        snprintf(dir, len, "%.*s", (int)(slash - path), path);
    }
}

/* Open the shards named by index.json @index_path; check weight_map against them. */
static hd_status_t st_open_index(hd_st_set_h set, const char *index_path, char *err, size_t err_len)
{
    hd_json_opts_t opts = {.max_depth = 16};
    char dir[4096], shard[8192], jerr[160];
    const hd_json_t *wm, *md;
    hd_json_t *root = NULL;
    const char **names = NULL; /* distinct shard names, first-seen order */
    size_t n_names = 0, len = 0;
    char *text = NULL;
    hd_status_t status;

    status = hd_file_read_all(index_path, ST_MAX_INDEX_BYTES, &text, &len);
    if (status != HD_OK) {
        st_err(err, err_len, "%s: cannot read index: %s", index_path, hd_status_string(status));
        return status;
    }
    status = hd_json_parse(text, len, &opts, &root, jerr, sizeof(jerr));
    if (status != HD_OK) {
        st_err(err, err_len, "%s: index is not valid JSON: %s", index_path, jerr);
        status = status == HD_ERR_NO_MEMORY ? status : HD_ERR_FORMAT;
        goto out;
    }
    wm = hd_json_get(root, "weight_map");
    if (wm == NULL || wm->type != HD_JSON_OBJECT) {
        st_err(err, err_len, "%s: index has no \"weight_map\" object", index_path);
        status = HD_ERR_FORMAT;
        goto out;
    }
    md = hd_json_get(root, "metadata");
    if (md != NULL && md->type != HD_JSON_OBJECT && md->type != HD_JSON_NULL) {
        st_err(err, err_len, "%s: index \"metadata\" is not an object", index_path);
        status = HD_ERR_FORMAT;
        goto out;
    }
    names = hd_calloc(wm->n ? wm->n : 1, sizeof(*names), "st shard names");
    if (names == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto out;
    }
    for (size_t i = 0; i < wm->n; i++) {
        const hd_json_t *v = wm->kids[i];
        size_t j;
        if (v->type != HD_JSON_STRING || v->str_len == 0 || strlen(v->str) != v->str_len) {
            st_err(err, err_len, "%s: index: tensor %s: shard name is not a string", index_path,
                   v->key);
            status = HD_ERR_FORMAT;
            goto out;
        }
        if (v->str[0] == '/' || strstr(v->str, "..") != NULL) {
            st_err(err, err_len, "%s: index: tensor %s: shard \"%s\" is not a plain relative name",
                   index_path, v->key, v->str);
            status = HD_ERR_FORMAT;
            goto out;
        }
        /* shards are usually listed in runs: test the last one first */
        if (n_names > 0 && strcmp(names[n_names - 1], v->str) == 0) {
            continue;
        }
        for (j = 0; j < n_names && strcmp(names[j], v->str) != 0; j++) {
        }
        if (j == n_names) {
            names[n_names++] = v->str;
        }
    }
    set->files = hd_calloc(n_names ? n_names : 1, sizeof(*set->files), "st files");
    if (set->files == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto out;
    }
    st_dirname(index_path, dir, sizeof(dir));
    for (size_t j = 0; j < n_names; j++) {
        snprintf(shard, sizeof(shard), "%s/%s", dir, names[j]);
        status = st_file_open(shard, &set->files[j], err, err_len);
        if (status != HD_OK) {
            st_err_append(err, err_len, index_path);
            goto out;
        }
        set->n_files = j + 1;
    }
    status = st_set_index(set, err, err_len);
    if (status != HD_OK) {
        st_err_append(err, err_len, index_path);
        goto out;
    }
    /* every mapped tensor must live in the shard the index names */
    for (size_t i = 0; i < wm->n; i++) {
        const hd_json_t *v = wm->kids[i];
        const hd_st_tensor_t *t = hd_st_find(set, v->key);
        if (t == NULL || !has_suffix(t->file, v->str) ||
            t->file[strlen(t->file) - v->str_len - 1] != '/') {
            st_err(err, err_len, "%s: index: tensor %s: not found in shard %s", index_path, v->key,
                   v->str);
            status = HD_ERR_FORMAT;
            goto out;
        }
    }
    if (set->n != wm->n) {
        hd_debug(HD_SUBSYS_MODEL, "%s: shards hold %zu tensors, weight_map lists %zu", index_path,
                 set->n, wm->n);
    }
    {
        int64_t total;
        uint64_t sum = 0;
        if (md != NULL && hd_json_get_i64(md, "total_size", &total)) {
            for (size_t i = 0; i < set->n; i++) {
                sum += set->by_idx[i]->nbytes;
            }
            if ((uint64_t)total != sum) {
                hd_warn(HD_SUBSYS_MODEL, "%s: metadata total_size %lld, tensors hold %llu bytes",
                        index_path, (long long)total, (unsigned long long)sum);
            }
        }
    }
out:
    hd_free(names);
    hd_json_free(root);
    hd_free(text);
    return status;
}

/* A directory: its index.json, else its single *.safetensors file. */
static hd_status_t st_open_dir(hd_st_set_h set, const char *path, char *err, size_t err_len)
{
    char buf[8192], found[8192];
    struct stat st;
    struct dirent *de;
    int n_found = 0;
    DIR *d;

    snprintf(buf, sizeof(buf), "%s/%s", path, ST_INDEX_NAME);
    if (stat(buf, &st) == 0) {
        return st_open_index(set, buf, err, err_len);
    }
    d = opendir(path);
    if (d == NULL) {
        st_err(err, err_len, "%s: cannot list directory: %s", path, strerror(errno));
        return HD_ERR_IO;
    }
    while ((de = readdir(d)) != NULL) {
        if (has_suffix(de->d_name, ".safetensors")) {
            if (n_found == 0) {
                snprintf(found, sizeof(found), "%s/%s", path, de->d_name);
            }
            n_found++;
        }
    }
    closedir(d);
    if (n_found == 0) {
        st_err(err, err_len, "%s: no %s and no .safetensors file", path, ST_INDEX_NAME);
        return HD_ERR_NOT_FOUND;
    }
    if (n_found > 1) {
        st_err(err, err_len, "%s: %d .safetensors files but no %s to say which tensors are where",
               path, n_found, ST_INDEX_NAME);
        return HD_ERR_FORMAT;
    }
    set->files = hd_calloc(1, sizeof(*set->files), "st files");
    if (set->files == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    HD_CHECK(st_file_open(found, &set->files[0], err, err_len));
    set->n_files = 1;
    return st_set_index(set, err, err_len);
}

hd_status_t hd_st_open(const char *path, hd_st_set_h *set_p, char *err, size_t err_len)
{
    struct stat st;
    hd_st_set_h set;
    hd_status_t status;

    if (err != NULL && err_len > 0) {
        err[0] = '\0';
    }
    if (path == NULL || set_p == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    if (stat(path, &st) != 0) {
        int e = errno;
        st_err(err, err_len, "%s: %s", path, strerror(e));
        return e == ENOENT ? HD_ERR_NOT_FOUND : HD_ERR_IO;
    }
    set = hd_calloc(1, sizeof(*set), "st set");
    if (set == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    set->path = hd_strdup(path, "st set path");
    if (set->path == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto err_close;
    }
    if (S_ISDIR(st.st_mode)) {
        status = st_open_dir(set, path, err, err_len);
    } else if (has_suffix(path, ".json")) {
        status = st_open_index(set, path, err, err_len);
    } else {
        set->files = hd_calloc(1, sizeof(*set->files), "st files");
        if (set->files == NULL) {
            status = HD_ERR_NO_MEMORY;
            goto err_close;
        }
        status = st_file_open(path, &set->files[0], err, err_len);
        if (status == HD_OK) {
            set->n_files = 1;
            status = st_set_index(set, err, err_len);
        }
    }
    if (status != HD_OK) {
        goto err_close;
    }
    hd_debug(HD_SUBSYS_MODEL, "%s: %zu tensors in %zu files", path, set->n, set->n_files);
    *set_p = set;
    return HD_OK;

err_close:
    if (status == HD_ERR_NO_MEMORY && err != NULL && err_len > 0 && err[0] == '\0') {
        st_err(err, err_len, "%s: out of memory", path);
    }
    hd_st_close(set);
    return status;
}

/* ---- writer ---- */

typedef struct {
    char *name;
    hd_dtype_t dtype;
    int ndim;
    int64_t shape[HD_ST_MAX_DIMS];
    uint64_t nbytes;
    void *data; /* buffered mode: owned copy */
} st_wentry_t;

typedef enum {
    ST_WMODE_NONE = 0,
    ST_WMODE_BUFFERED,
    ST_WMODE_STREAM,
} st_wmode_t;

struct hd_st_writer {
    char *path; /* final name */
    char *tmp;  /* <path>.tmp while writing */
    FILE *f;
    st_wentry_t *e; /* tensors in file order */
    size_t n, cap;
    st_wmode_t mode;
    bool header_done; /* streaming: header written */
    size_t cur;       /* streaming: entry receiving bytes */
    uint64_t cur_off; /* streaming: bytes of e[cur] received */
    hd_buf_t header;  /* built once, when all tensors are known */
};

hd_status_t hd_st_writer_create(const char *path, hd_st_writer_h *w_p)
{
    hd_st_writer_h w;
    size_t len;
    hd_status_t status;

    if (path == NULL || w_p == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    w = hd_calloc(1, sizeof(*w), "st writer");
    if (w == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    len = strlen(path);
    w->path = hd_strdup(path, "st writer path");
    w->tmp = hd_malloc(len + 5, "st writer tmp");
    if (w->path == NULL || w->tmp == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto err_free;
    }
    memcpy(w->tmp, path, len);
    memcpy(w->tmp + len, ".tmp", 5);
    w->f = fopen(w->tmp, "wb");
    if (w->f == NULL) {
        hd_error(HD_SUBSYS_MODEL, "cannot create %s: %m", w->tmp);
        status = HD_ERR_IO;
        goto err_free;
    }
    hd_buf_init(&w->header);
    *w_p = w;
    return HD_OK;

err_free:
    hd_free(w->tmp);
    hd_free(w->path);
    hd_free(w);
    return status;
}

void hd_st_writer_abort(hd_st_writer_h w)
{
    if (w == NULL) {
        return;
    }
    if (w->f != NULL) {
        fclose(w->f);
        unlink(w->tmp);
    }
    for (size_t i = 0; i < w->n; i++) {
        hd_free(w->e[i].name);
        hd_free(w->e[i].data);
    }
    hd_free(w->e);
    hd_buf_cleanup(&w->header);
    hd_free(w->tmp);
    hd_free(w->path);
    hd_free(w);
}

static hd_status_t st_writer_push(hd_st_writer_h w, const char *name, hd_dtype_t dtype, int ndim,
                                  const int64_t *shape, uint64_t *nbytes_p)
{
    uint64_t numel = 1, nbytes;
    st_wentry_t *e;

    if (name == NULL || name[0] == '\0' || strcmp(name, "__metadata__") == 0 ||
        (unsigned)dtype >= HD_DT_COUNT || ndim < 0 || ndim > HD_ST_MAX_DIMS ||
        (ndim > 0 && shape == NULL)) {
        hd_error(HD_SUBSYS_MODEL, "%s: bad tensor declaration %s", w->path, name ? name : "(null)");
        return HD_ERR_INVALID_PARAM;
    }
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(numel, (uint64_t)shape[i], &numel)) {
            hd_error(HD_SUBSYS_MODEL, "%s: tensor %s: bad shape", w->path, name);
            return HD_ERR_INVALID_PARAM;
        }
    }
    if (__builtin_mul_overflow(numel, (uint64_t)hd_dtype_size(dtype), &nbytes)) {
        return HD_ERR_INVALID_PARAM;
    }
    for (size_t i = 0; i < w->n; i++) {
        if (strcmp(w->e[i].name, name) == 0) {
            hd_error(HD_SUBSYS_MODEL, "%s: tensor %s added twice", w->path, name);
            return HD_ERR_INVALID_PARAM;
        }
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        st_wentry_t *ne = hd_realloc(w->e, cap * sizeof(*ne), "st writer entries");
        if (ne == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        w->e = ne;
        w->cap = cap;
    }
    e = &w->e[w->n];
    memset(e, 0, sizeof(*e));
    e->name = hd_strdup(name, "st writer name");
    if (e->name == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = shape[i];
    }
    e->nbytes = nbytes;
    w->n++;
    *nbytes_p = nbytes;
    return HD_OK;
}

hd_status_t hd_st_writer_add(hd_st_writer_h w, const char *name, hd_dtype_t dtype, int ndim,
                             const int64_t *shape, const void *data, size_t nbytes)
{
    uint64_t need;
    hd_status_t status;

    if (w == NULL || w->mode == ST_WMODE_STREAM || (data == NULL && nbytes > 0)) {
        return HD_ERR_INVALID_PARAM;
    }
    status = st_writer_push(w, name, dtype, ndim, shape, &need);
    if (status != HD_OK) {
        return status;
    }
    if (need != nbytes) {
        hd_error(HD_SUBSYS_MODEL, "%s: tensor %s: %zu bytes given, shape needs %llu", w->path, name,
                 nbytes, (unsigned long long)need);
        w->n--;
        hd_free(w->e[w->n].name);
        return HD_ERR_INVALID_PARAM;
    }
    w->mode = ST_WMODE_BUFFERED;
    if (nbytes > 0) {
        w->e[w->n - 1].data = hd_malloc(nbytes, "st writer data");
        if (w->e[w->n - 1].data == NULL) {
            w->n--;
            hd_free(w->e[w->n].name);
            return HD_ERR_NO_MEMORY;
        }
        memcpy(w->e[w->n - 1].data, data, nbytes);
    }
    return HD_OK;
}

hd_status_t hd_st_writer_declare(hd_st_writer_h w, const char *name, hd_dtype_t dtype, int ndim,
                                 const int64_t *shape)
{
    uint64_t need;
    if (w == NULL || w->mode == ST_WMODE_BUFFERED || w->header_done) {
        return HD_ERR_INVALID_PARAM;
    }
    HD_CHECK(st_writer_push(w, name, dtype, ndim, shape, &need));
    w->mode = ST_WMODE_STREAM;
    return HD_OK;
}

/* Build the JSON header (insertion order), space-padded so the data starts 8-aligned. */
static hd_status_t st_writer_build_header(hd_st_writer_h w)
{
    uint64_t off = 0;
    hd_buf_t *b = &w->header;

    b->len = 0;
    hd_buf_puts(b, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < w->n; i++) {
        const st_wentry_t *e = &w->e[i];
        hd_buf_puts(b, ",");
        hd_buf_json_str(b, e->name, strlen(e->name));
        hd_buf_printf(b, ":{\"dtype\":\"%s\",\"shape\":[", hd_dtype_name(e->dtype));
        for (int d = 0; d < e->ndim; d++) {
            hd_buf_printf(b, "%s%lld", d ? "," : "", (long long)e->shape[d]);
        }
        hd_buf_printf(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                      (unsigned long long)(off + e->nbytes));
        off += e->nbytes;
    }
    hd_buf_puts(b, "}");
    while ((8 + b->len) % 8 != 0) {
        hd_buf_puts(b, " ");
    }
    return b->failed ? HD_ERR_NO_MEMORY : HD_OK;
}

uint64_t hd_st_writer_file_size(hd_st_writer_h w)
{
    uint64_t total = 0;
    if (w == NULL || st_writer_build_header(w) != HD_OK) {
        return 0;
    }
    for (size_t i = 0; i < w->n; i++) {
        total += w->e[i].nbytes;
    }
    return 8 + w->header.len + total;
}

static hd_status_t st_writer_put(hd_st_writer_h w, const void *data, size_t n)
{
    if (n > 0 && fwrite(data, 1, n, w->f) != n) {
        hd_error(HD_SUBSYS_MODEL, "write %s failed: %m", w->tmp);
        return HD_ERR_IO;
    }
    return HD_OK;
}

static hd_status_t st_writer_put_header(hd_st_writer_h w)
{
    uint8_t lenb[8];
    uint64_t hl;
    HD_CHECK(st_writer_build_header(w));
    hl = w->header.len;
    for (int i = 0; i < 8; i++) {
        lenb[i] = (uint8_t)(hl >> (8 * i));
    }
    HD_CHECK(st_writer_put(w, lenb, 8));
    HD_CHECK(st_writer_put(w, w->header.data, w->header.len));
    w->header_done = true;
    return HD_OK;
}

static void st_writer_skip_empty(hd_st_writer_h w)
{
    while (w->cur < w->n && w->cur_off == w->e[w->cur].nbytes) {
        w->cur++;
        w->cur_off = 0;
    }
}

hd_status_t hd_st_writer_write(hd_st_writer_h w, const void *data, size_t nbytes)
{
    const uint8_t *p = data;
    if (w == NULL || w->mode != ST_WMODE_STREAM || (data == NULL && nbytes > 0)) {
        return HD_ERR_INVALID_PARAM;
    }
    if (!w->header_done) {
        HD_CHECK(st_writer_put_header(w));
    }
    while (nbytes > 0) {
        uint64_t room;
        size_t k;
        st_writer_skip_empty(w);
        if (w->cur >= w->n) {
            hd_error(HD_SUBSYS_MODEL, "%s: %zu bytes written past the declared tensors", w->path,
                     nbytes);
            return HD_ERR_INVALID_PARAM;
        }
        room = w->e[w->cur].nbytes - w->cur_off;
        k = nbytes < room ? nbytes : (size_t)room;
        HD_CHECK(st_writer_put(w, p, k));
        w->cur_off += k;
        p += k;
        nbytes -= k;
    }
    return HD_OK;
}

hd_status_t hd_st_writer_finish(hd_st_writer_h w)
{
    hd_status_t status = HD_OK;
    if (w == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    if (w->mode != ST_WMODE_STREAM) {
        HD_CHECK_GOTO(st_writer_put_header(w), status, err_abort);
        for (size_t i = 0; i < w->n; i++) {
            HD_CHECK_GOTO(st_writer_put(w, w->e[i].data, w->e[i].nbytes), status, err_abort);
        }
    } else {
        if (!w->header_done) {
            HD_CHECK_GOTO(st_writer_put_header(w), status, err_abort);
        }
        st_writer_skip_empty(w);
        if (w->cur < w->n) {
            hd_error(HD_SUBSYS_MODEL, "%s: tensor %s: only %llu of %llu bytes written", w->path,
                     w->e[w->cur].name, (unsigned long long)w->cur_off,
                     (unsigned long long)w->e[w->cur].nbytes);
            status = HD_ERR_INVALID_PARAM;
            goto err_abort;
        }
    }
    if (fclose(w->f) != 0) {
        w->f = NULL;
        hd_error(HD_SUBSYS_MODEL, "close %s failed: %m", w->tmp);
        unlink(w->tmp);
        status = HD_ERR_IO;
        goto err_abort;
    }
    w->f = NULL;
    if (rename(w->tmp, w->path) != 0) {
        hd_error(HD_SUBSYS_MODEL, "rename %s -> %s failed: %m", w->tmp, w->path);
        unlink(w->tmp);
        status = HD_ERR_IO;
        goto err_abort;
    }
    hd_st_writer_abort(w); /* frees; the file is already in place */
    return HD_OK;

err_abort:
    hd_st_writer_abort(w);
    return status;
}
