/*
 * tokenizer.c - load a Hugging Face tokenizer.json; decode; token lookups; file discovery.
 *
 * Loading validates every field the tokenizer depends on and turns the JSON tree into flat
 * tables: token strings and decoded bytes per id, a token->id hash, the BPE merge hash keyed
 * by the id pair, the added-token tries and the compiled pre-tokenizer stages. The JSON tree
 * is dropped afterwards. Encoding lives in tok_encode.c.
 */
#include "tok_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOK_MAX_FILE_BYTES (1u << 30)
#define TOK_MAX_ID (1 << 24)

/* ---- byte-level alphabet (GPT-2 bytes_to_unicode) ---- */

static uint16_t byte_cp[256];
static int16_t cp_byte[324];
static pthread_once_t byte_tables_once = PTHREAD_ONCE_INIT;

static void tok_byte_tables_init(void)
{
    int n = 0;
    for (int i = 0; i < 324; i++) {
        cp_byte[i] = -1;
    }
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        byte_cp[b] = printable ? (uint16_t)b : (uint16_t)(256 + n++);
        cp_byte[byte_cp[b]] = (int16_t)b;
    }
}

int tok_cp_to_byte(uint32_t cp)
{
    return cp < 324 ? cp_byte[cp] : -1;
}

/* Append the UTF-8 of the byte-level character for byte @b. */
static size_t tok_byte_char(uint8_t b, uint8_t *o)
{
    uint16_t cp = byte_cp[b];
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    o[0] = (uint8_t)(0xC0 | (cp >> 6));
    o[1] = (uint8_t)(0x80 | (cp & 0x3F));
    return 2;
}

/* ---- hashing ---- */

static uint64_t tok_hash(const uint8_t *s, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    }
    h ^= h >> 32;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    return h;
}

static int32_t map_lookup(const struct hd_tok *t, const uint8_t *s, size_t n)
{
    size_t i = (size_t)tok_hash(s, n) & t->map_mask;
    for (;;) {
        uint32_t v = t->map[i];
        if (v == 0) {
            return -1;
        }
        int32_t id = (int32_t)(v - 1);
        uint32_t len = t->raw_off[id + 1] - t->raw_off[id];
        if (len == n && memcmp(t->raw + t->raw_off[id], s, n) == 0) {
            return id;
        }
        i = (i + 1) & t->map_mask;
    }
}

/* ---- load ---- */

typedef struct {
    const char *str; /* token string (not NUL-terminated for our purposes) */
    size_t len;      /* bytes */
    int32_t id;      /* token id */
} tok_vocab_entry_t;

typedef struct {
    const char *file;          /* for messages */
    tok_vocab_entry_t *vocab;  /* model.vocab in document order */
    size_t n_vocab;            /* entries */
    const tok_vocab_entry_t **vstr; /* n_ids: vocab entry per id (NULL if none) */
    const hd_json_t **content; /* n_ids: added token content per id (NULL if none) */
    const tok_added_t **by_id; /* n_ids: first added token per id */
} tok_load_t;

static hd_status_t load_fail(const tok_load_t *ld, hd_status_t st, const char *what)
{
    hd_error(HD_SUBSYS_TOK, "tokenizer %s: %s", ld->file, what);
    return st;
}

static bool json_is(const hd_json_t *v, hd_json_type_t type)
{
    return v != NULL && v->type == type;
}

static bool json_str_eq(const hd_json_t *v, const char *s)
{
    return json_is(v, HD_JSON_STRING) && strcmp(v->str, s) == 0;
}

/* A JSON value that is absent, null, false, or an empty string. */
static bool json_unset(const hd_json_t *v)
{
    return v == NULL || v->type == HD_JSON_NULL || v->type == HD_JSON_FALSE ||
           (v->type == HD_JSON_STRING && v->str_len == 0);
}

static bool json_flag(const hd_json_t *obj, const char *key)
{
    const hd_json_t *v = hd_json_get(obj, key);
    return v != NULL && v->type == HD_JSON_TRUE;
}

static hd_status_t load_model_checks(const tok_load_t *ld, const hd_json_t *model,
                                     struct hd_tok *t)
{
    const hd_json_t *type = hd_json_get(model, "type");
    char msg[256];
    if (type != NULL && !json_str_eq(type, "BPE")) {
        snprintf(msg, sizeof(msg), "model type %s is not supported (only BPE)",
                 json_is(type, HD_JSON_STRING) ? type->str : "?");
        return load_fail(ld, HD_ERR_UNSUPPORTED, msg);
    }
    const hd_json_t *dropout = hd_json_get(model, "dropout");
    if (dropout != NULL && dropout->type != HD_JSON_NULL &&
        !(dropout->type == HD_JSON_NUMBER && dropout->num == 0.0)) {
        return load_fail(ld, HD_ERR_UNSUPPORTED, "BPE dropout is not supported");
    }
    if (json_flag(model, "byte_fallback")) {
        return load_fail(ld, HD_ERR_UNSUPPORTED, "BPE byte_fallback is not supported");
    }
    if (!json_unset(hd_json_get(model, "continuing_subword_prefix")) ||
        !json_unset(hd_json_get(model, "end_of_word_suffix"))) {
        return load_fail(ld, HD_ERR_UNSUPPORTED,
                         "BPE continuing_subword_prefix/end_of_word_suffix are not supported");
    }
    t->ignore_merges = json_flag(model, "ignore_merges");
    return HD_OK;
}

static hd_status_t load_normalizer(const tok_load_t *ld, const hd_json_t *norm)
{
    if (norm == NULL || norm->type == HD_JSON_NULL) {
        return HD_OK;
    }
    if (json_str_eq(hd_json_get(norm, "type"), "Sequence")) {
        const hd_json_t *list = hd_json_get(norm, "normalizers");
        if (json_is(list, HD_JSON_ARRAY) && list->n == 0) {
            return HD_OK;
        }
    }
    return load_fail(ld, HD_ERR_UNSUPPORTED,
                     "normalizers are not supported (only null or an empty Sequence)");
}

static hd_status_t stage_push(struct hd_tok *t, tok_split_t **stage_p)
{
    tok_split_t *s = hd_realloc(t->splits, (t->n_splits + 1) * sizeof(*s), "tok stages");
    if (s == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    t->splits = s;
    memset(&s[t->n_splits], 0, sizeof(s[0]));
    *stage_p = &s[t->n_splits++];
    return HD_OK;
}

/* GPT-2's pattern, used by ByteLevel when use_regex is true. */
static const char byte_level_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static hd_status_t load_pretok_one(const tok_load_t *ld, const hd_json_t *pt, struct hd_tok *t,
                                   bool *byte_level)
{
    const hd_json_t *type = hd_json_get(pt, "type");
    tok_split_t *st;
    hd_status_t status;
    char msg[256];
    if (*byte_level) {
        return load_fail(ld, HD_ERR_UNSUPPORTED, "pre-tokenizers after ByteLevel are not supported");
    }
    if (json_str_eq(type, "Split")) {
        const hd_json_t *pat = hd_json_get(pt, "pattern");
        const hd_json_t *re = hd_json_get(pat, "Regex");
        const hd_json_t *lit = hd_json_get(pat, "String");
        const hd_json_t *beh = hd_json_get(pt, "behavior");
        const hd_json_t *use = json_is(re, HD_JSON_STRING) ? re : lit;
        if (!json_is(use, HD_JSON_STRING)) {
            return load_fail(ld, HD_ERR_FORMAT, "Split pre-tokenizer without a Regex/String pattern");
        }
        HD_CHECK(stage_push(t, &st));
        if (json_str_eq(beh, "Isolated")) {
            st->behavior = TOK_SPLIT_ISOLATED;
        } else if (json_str_eq(beh, "Removed")) {
            st->behavior = TOK_SPLIT_REMOVED;
        } else {
            snprintf(msg, sizeof(msg), "Split behavior %s is not supported (Isolated, Removed)",
                     json_is(beh, HD_JSON_STRING) ? beh->str : "?");
            return load_fail(ld, HD_ERR_UNSUPPORTED, msg);
        }
        st->invert = json_flag(pt, "invert");
        return tok_split_compile(st, use->str, use->str_len, use == lit, ld->file);
    }
    if (json_str_eq(type, "ByteLevel")) {
        *byte_level = true;
        if (json_flag(pt, "add_prefix_space")) {
            HD_CHECK(stage_push(t, &st));
            st->prefix_space = true;
        }
        const hd_json_t *use_regex = hd_json_get(pt, "use_regex");
        if (use_regex == NULL || use_regex->type == HD_JSON_TRUE) {
            HD_CHECK(stage_push(t, &st));
            st->behavior = TOK_SPLIT_ISOLATED;
            status = tok_split_compile(st, byte_level_regex, sizeof(byte_level_regex) - 1, false,
                                       ld->file);
            return status;
        }
        return HD_OK;
    }
    snprintf(msg, sizeof(msg), "pre-tokenizer type %s is not supported (Split, ByteLevel)",
             json_is(type, HD_JSON_STRING) ? type->str : "?");
    return load_fail(ld, HD_ERR_UNSUPPORTED, msg);
}

static hd_status_t load_pretok(const tok_load_t *ld, const hd_json_t *pt, struct hd_tok *t)
{
    bool byte_level = false;
    if (pt == NULL || pt->type == HD_JSON_NULL) {
        return load_fail(ld, HD_ERR_UNSUPPORTED, "no ByteLevel pre-tokenizer (only byte-level BPE is supported)");
    }
    if (json_str_eq(hd_json_get(pt, "type"), "Sequence")) {
        const hd_json_t *list = hd_json_get(pt, "pretokenizers");
        if (!json_is(list, HD_JSON_ARRAY)) {
            return load_fail(ld, HD_ERR_FORMAT, "Sequence pre-tokenizer without a pretokenizers list");
        }
        for (size_t i = 0; i < list->n; i++) {
            HD_CHECK(load_pretok_one(ld, list->kids[i], t, &byte_level));
        }
    } else {
        HD_CHECK(load_pretok_one(ld, pt, t, &byte_level));
    }
    if (!byte_level) {
        return load_fail(ld, HD_ERR_UNSUPPORTED, "no ByteLevel pre-tokenizer (only byte-level BPE is supported)");
    }
    return HD_OK;
}

static hd_status_t load_added(const tok_load_t *ld, const hd_json_t *list, struct hd_tok *t,
                              int32_t *max_id)
{
    if (list == NULL || list->type == HD_JSON_NULL) {
        return HD_OK;
    }
    if (list->type != HD_JSON_ARRAY) {
        return load_fail(ld, HD_ERR_FORMAT, "added_tokens is not an array");
    }
    t->added = hd_calloc(list->n ? list->n : 1, sizeof(*t->added), "tok added");
    if (t->added == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < list->n; i++) {
        const hd_json_t *e = list->kids[i];
        const hd_json_t *content = hd_json_get(e, "content");
        int64_t id;
        char msg[160];
        if (!hd_json_get_i64(e, "id", &id) || id < 0 || id >= TOK_MAX_ID ||
            !json_is(content, HD_JSON_STRING)) {
            snprintf(msg, sizeof(msg), "added_tokens[%zu] needs an id in [0, %d) and a content string",
                     i, TOK_MAX_ID);
            return load_fail(ld, HD_ERR_FORMAT, msg);
        }
        tok_added_t *a = &t->added[t->n_added++];
        a->id = (int32_t)id;
        a->special = json_flag(e, "special");
        a->normalized = json_flag(e, "normalized");
        a->lstrip = json_flag(e, "lstrip");
        a->rstrip = json_flag(e, "rstrip");
        a->single_word = json_flag(e, "single_word");
        if (a->single_word) {
            snprintf(msg, sizeof(msg), "added token %s uses single_word (not supported)", content->str);
            return load_fail(ld, HD_ERR_UNSUPPORTED, msg);
        }
        t->any_strip |= a->lstrip || a->rstrip;
        if (a->id > *max_id) {
            *max_id = a->id;
        }
    }
    return HD_OK;
}

/* Bytes token string @s decodes to: byte-level characters map back to bytes; a token with
 * any other character (added tokens such as "<｜User｜>") is taken verbatim, as HF does. */
static size_t decode_token(const uint8_t *s, size_t n, uint8_t *o)
{
    size_t i = 0, k = 0;
    while (i < n) {
        uint32_t cp;
        int len = tok_utf8_seq(s + i, n - i);
        if (len <= 0) {
            break;
        }
        if (len == 1) {
            cp = s[i];
        } else if (len == 2) {
            cp = ((uint32_t)(s[i] & 0x1F) << 6) | (s[i + 1] & 0x3F);
        } else {
            break;
        }
        int b = tok_cp_to_byte(cp);
        if (b < 0) {
            break;
        }
        o[k++] = (uint8_t)b;
        i += (size_t)len;
    }
    if (i == n) {
        return k;
    }
    memcpy(o, s, n);
    return n;
}

static hd_status_t load_merges(tok_load_t *ld, const hd_json_t *model, struct hd_tok *t)
{
    const hd_json_t *merges = hd_json_get(model, "merges");
    size_t slots = 1;
    unsigned bits = 0;
    char *cat = NULL;
    size_t cat_cap = 0;
    hd_status_t status = HD_OK;
    char msg[200];

    if (merges == NULL || merges->type == HD_JSON_NULL) {
        merges = NULL;
    } else if (merges->type != HD_JSON_ARRAY) {
        return load_fail(ld, HD_ERR_FORMAT, "model.merges is not an array");
    }
    t->n_merges = merges ? merges->n : 0;
    while (slots < 2 * t->n_merges + 16) {
        slots *= 2;
        bits++;
    }
    t->merges = hd_malloc(slots * sizeof(*t->merges), "tok merges");
    if (t->merges == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < slots; i++) {
        t->merges[i].key = UINT64_MAX;
    }
    t->merges_mask = slots - 1;
    t->merges_shift = 64 - bits;
    for (size_t r = 0; r < t->n_merges; r++) {
        const hd_json_t *m = merges->kids[r];
        const char *a, *b;
        size_t al, bl;
        if (m->type == HD_JSON_STRING) {
            const char *sp = memchr(m->str, ' ', m->str_len);
            if (sp == NULL || memchr(sp + 1, ' ', m->str_len - (size_t)(sp + 1 - m->str)) != NULL) {
                snprintf(msg, sizeof(msg), "merges[%zu] is not \"left right\"", r);
                status = load_fail(ld, HD_ERR_FORMAT, msg);
                goto out;
            }
            a = m->str;
            al = (size_t)(sp - m->str);
            b = sp + 1;
            bl = m->str_len - al - 1;
        } else if (m->type == HD_JSON_ARRAY && m->n == 2 && m->kids[0]->type == HD_JSON_STRING &&
                   m->kids[1]->type == HD_JSON_STRING) {
            a = m->kids[0]->str;
            al = m->kids[0]->str_len;
            b = m->kids[1]->str;
            bl = m->kids[1]->str_len;
        } else {
            snprintf(msg, sizeof(msg), "merges[%zu] is neither a string nor a pair", r);
            status = load_fail(ld, HD_ERR_FORMAT, msg);
            goto out;
        }
        if (al + bl > cat_cap) {
            cat_cap = (al + bl) * 2 + 64;
            char *c2 = hd_realloc(cat, cat_cap, "tok merge tmp");
            if (c2 == NULL) {
                status = HD_ERR_NO_MEMORY;
                goto out;
            }
            cat = c2;
        }
        memcpy(cat, a, al);
        memcpy(cat + al, b, bl);
        int32_t ia = map_lookup(t, (const uint8_t *)a, al);
        int32_t ib = map_lookup(t, (const uint8_t *)b, bl);
        int32_t ic = map_lookup(t, (const uint8_t *)cat, al + bl);
        if (ia < 0 || ib < 0 || ic < 0) {
            snprintf(msg, sizeof(msg), "merges[%zu] uses a token missing from the vocab", r);
            status = load_fail(ld, HD_ERR_FORMAT, msg);
            goto out;
        }
        uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> t->merges_shift);
        while (t->merges[i].key != UINT64_MAX && t->merges[i].key != key) {
            i = (i + 1) & t->merges_mask;
        }
        /* a repeated pair keeps its last rank, like HF's HashMap collect */
        t->merges[i].key = key;
        t->merges[i].rank = (uint32_t)r;
        t->merges[i].new_id = ic;
    }
out:
    hd_free(cat);
    return status;
}

static hd_status_t load_byte_ids(tok_load_t *ld, struct hd_tok *t)
{
    for (int b = 0; b < 256; b++) {
        uint8_t s[2];
        size_t n = tok_byte_char((uint8_t)b, s);
        t->byte_id[b] = map_lookup(t, s, n);
        if (t->byte_id[b] < 0) {
            char msg[96];
            snprintf(msg, sizeof(msg), "vocab lacks the byte-level token for byte 0x%02X", b);
            return load_fail(ld, HD_ERR_FORMAT, msg);
        }
    }
    return HD_OK;
}

/* Token string of every id (added content wins over the vocab string) and its flags. */
static hd_status_t load_strings(tok_load_t *ld, const hd_json_t *added, struct hd_tok *t)
{
    size_t raw_len = 0, off = 0;
    for (size_t i = 0; i < ld->n_vocab; i++) {
        ld->vstr[ld->vocab[i].id] = &ld->vocab[i];
    }
    for (size_t i = 0; i < t->n_added; i++) {
        if (ld->by_id[t->added[i].id] == NULL) {
            ld->by_id[t->added[i].id] = &t->added[i];
            ld->content[t->added[i].id] = hd_json_get(added->kids[i], "content");
        }
    }
    for (size_t id = 0; id < t->n_ids; id++) {
        if (ld->content[id] != NULL) {
            raw_len += ld->content[id]->str_len;
        } else if (ld->vstr[id] != NULL) {
            raw_len += ld->vstr[id]->len;
        }
    }
    if (raw_len >= UINT32_MAX) {
        return load_fail(ld, HD_ERR_FORMAT, "token strings exceed 4 GiB");
    }
    t->raw_off = hd_calloc(t->n_ids + 1, sizeof(*t->raw_off), "tok raw off");
    t->dec_off = hd_calloc(t->n_ids + 1, sizeof(*t->dec_off), "tok dec off");
    t->id_flags = hd_calloc(t->n_ids, 1, "tok id flags");
    t->raw = hd_malloc(raw_len + 1, "tok raw");
    t->dec = hd_malloc(raw_len + 1, "tok dec");
    if (t->raw_off == NULL || t->dec_off == NULL || t->id_flags == NULL || t->raw == NULL ||
        t->dec == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    for (size_t id = 0; id < t->n_ids; id++) {
        t->raw_off[id] = (uint32_t)off;
        if (ld->content[id] != NULL) {
            memcpy(t->raw + off, ld->content[id]->str, ld->content[id]->str_len);
            off += ld->content[id]->str_len;
            t->id_flags[id] = TOK_ID_KNOWN | TOK_ID_ADDED |
                              (ld->by_id[id]->special ? TOK_ID_SPECIAL : 0);
        } else if (ld->vstr[id] != NULL) {
            memcpy(t->raw + off, ld->vstr[id]->str, ld->vstr[id]->len);
            off += ld->vstr[id]->len;
            t->id_flags[id] = TOK_ID_KNOWN;
        }
    }
    t->raw_off[t->n_ids] = (uint32_t)off;
    /* each added token reads its content from its id's string (the first token of an id
     * defines it) */
    for (size_t i = 0; i < t->n_added; i++) {
        int32_t id = t->added[i].id;
        t->added[i].off = t->raw_off[id];
        t->added[i].len = t->raw_off[id + 1] - t->raw_off[id];
    }
    off = 0;
    for (size_t id = 0; id < t->n_ids; id++) {
        t->dec_off[id] = (uint32_t)off;
        off += decode_token(t->raw + t->raw_off[id], t->raw_off[id + 1] - t->raw_off[id],
                            t->dec + off);
    }
    t->dec_off[t->n_ids] = (uint32_t)off;
    return HD_OK;
}

/* Token string -> id hash; added contents first so they win, as in HF token_to_id. */
static hd_status_t load_map(tok_load_t *ld, struct hd_tok *t)
{
    size_t slots = 16;
    char msg[200];
    while (slots < 2 * t->n_ids + 16) {
        slots *= 2;
    }
    t->map = hd_calloc(slots, sizeof(*t->map), "tok map");
    if (t->map == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    t->map_mask = slots - 1;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t id = 0; id < t->n_ids; id++) {
            bool is_added = (t->id_flags[id] & TOK_ID_ADDED) != 0;
            if (!(t->id_flags[id] & TOK_ID_KNOWN) || is_added != (pass == 0)) {
                continue;
            }
            const uint8_t *s = t->raw + t->raw_off[id];
            size_t n = t->raw_off[id + 1] - t->raw_off[id];
            if (map_lookup(t, s, n) >= 0) {
                continue;
            }
            size_t i = (size_t)tok_hash(s, n) & t->map_mask;
            while (t->map[i] != 0) {
                i = (i + 1) & t->map_mask;
            }
            t->map[i] = (uint32_t)id + 1;
        }
    }
    /* merges look strings up through this map: an added id spelled differently in the
     * vocab would be unreachable */
    for (size_t i = 0; i < ld->n_vocab; i++) {
        const tok_vocab_entry_t *v = &ld->vocab[i];
        if ((t->id_flags[v->id] & TOK_ID_ADDED) &&
            map_lookup(t, (const uint8_t *)v->str, v->len) != v->id) {
            snprintf(msg, sizeof(msg),
                     "vocab token \"%.*s\" (id %d) differs from the added token with that id "
                     "(not supported)",
                     (int)(v->len < 60 ? v->len : 60), v->str, v->id);
            return load_fail(ld, HD_ERR_UNSUPPORTED, msg);
        }
    }
    return HD_OK;
}

static hd_status_t load_doc(tok_load_t *ld, const hd_json_t *root, struct hd_tok *t)
{
    const hd_json_t *model = hd_json_get(root, "model");
    const hd_json_t *vocab = hd_json_get(model, "vocab");
    const hd_json_t *added = hd_json_get(root, "added_tokens");
    int32_t max_id = -1;
    char msg[200];

    if (!json_is(root, HD_JSON_OBJECT) || !json_is(model, HD_JSON_OBJECT)) {
        return load_fail(ld, HD_ERR_FORMAT, "no \"model\" object");
    }
    if (!json_is(vocab, HD_JSON_OBJECT) && !json_is(vocab, HD_JSON_ARRAY)) {
        return load_fail(ld, HD_ERR_FORMAT, "model.vocab is not an object");
    }
    HD_CHECK(load_model_checks(ld, model, t));
    HD_CHECK(load_normalizer(ld, hd_json_get(root, "normalizer")));
    HD_CHECK(load_pretok(ld, hd_json_get(root, "pre_tokenizer"), t));
    const hd_json_t *dec = hd_json_get(root, "decoder");
    if (dec != NULL && dec->type != HD_JSON_NULL &&
        !json_str_eq(hd_json_get(dec, "type"), "ByteLevel")) {
        hd_warn(HD_SUBSYS_TOK, "tokenizer %s: decoder is not ByteLevel; decoding as byte-level",
                ld->file);
    }
    /* vocab is an object, or the name/id array tok_vocab_to_array() made of it */
    bool pairs = vocab->type == HD_JSON_ARRAY;
    if (pairs && vocab->n % 2 != 0) {
        return load_fail(ld, HD_ERR_FORMAT, "model.vocab is malformed");
    }
    ld->n_vocab = pairs ? vocab->n / 2 : vocab->n;
    ld->vocab = hd_calloc(ld->n_vocab ? ld->n_vocab : 1, sizeof(*ld->vocab), "tok load");
    if (ld->vocab == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < ld->n_vocab; i++) {
        const hd_json_t *name = pairs ? vocab->kids[2 * i] : NULL;
        const hd_json_t *v = pairs ? vocab->kids[2 * i + 1] : vocab->kids[i];
        if ((pairs && name->type != HD_JSON_STRING) || v->type != HD_JSON_NUMBER || !v->is_int ||
            v->i64 < 0 || v->i64 >= TOK_MAX_ID) {
            snprintf(msg, sizeof(msg), "model.vocab entry %zu is not a token with an id in [0, %d)",
                     i, TOK_MAX_ID);
            return load_fail(ld, HD_ERR_FORMAT, msg);
        }
        ld->vocab[i].str = pairs ? name->str : v->key;
        ld->vocab[i].len = pairs ? name->str_len : v->key_len;
        ld->vocab[i].id = (int32_t)v->i64;
        if (ld->vocab[i].id > max_id) {
            max_id = ld->vocab[i].id;
        }
    }
    HD_CHECK(load_added(ld, added, t, &max_id));
    if (max_id < 0) {
        return load_fail(ld, HD_ERR_FORMAT, "empty vocabulary");
    }
    t->n_ids = (size_t)max_id + 1;
    ld->vstr = hd_calloc(t->n_ids, sizeof(*ld->vstr), "tok load");
    ld->content = hd_calloc(t->n_ids, sizeof(*ld->content), "tok load");
    ld->by_id = hd_calloc(t->n_ids, sizeof(*ld->by_id), "tok load");
    if (ld->vstr == NULL || ld->content == NULL || ld->by_id == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    HD_CHECK(load_strings(ld, added, t));
    HD_CHECK(load_map(ld, t));
    HD_CHECK(load_byte_ids(ld, t));
    HD_CHECK(load_merges(ld, model, t));
    /* added-token tries: non-normalized first pass, normalized second (no-op normalizer) */
    for (size_t i = 0; i < t->n_added; i++) {
        const tok_added_t *a = &t->added[i];
        HD_CHECK(tok_trie_add(&t->trie[a->normalized ? 1 : 0], t->raw + a->off, a->len,
                              (int32_t)i));
    }
    return HD_OK;
}

/*
 * hd_json_parse() checks every object member against all earlier ones, which is quadratic
 * in the 128K-member model.vocab object. Rewrite that one object in place into an array of
 * alternating name/id values ('{' -> '[', ':' -> ',', '}' -> ']'), which parses in linear
 * time; load_doc() accepts either shape. Strings are skipped with their escapes, so bytes
 * inside token strings are never touched.
 */
static void tok_vocab_to_array(char *s, size_t n)
{
    size_t depth = 0, vocab_depth = 0;
    const char *last = NULL, *key1 = NULL, *key2 = NULL;
    size_t last_len = 0, key1_len = 0, key2_len = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < n && s[j] != '"') {
                j += s[j] == '\\' ? 2 : 1;
            }
            last = s + i + 1;
            last_len = j - i - 1;
            i = j;
        } else if (c == ':') {
            if (depth == 1) {
                key1 = last;
                key1_len = last_len;
            } else if (depth == 2) {
                key2 = last;
                key2_len = last_len;
            } else if (vocab_depth != 0 && depth == vocab_depth) {
                s[i] = ',';
            }
        } else if (c == '{' || c == '[') {
            depth++;
            if (c == '{' && depth == 3 && vocab_depth == 0 && key1 != NULL && key2 != NULL &&
                key1_len == 5 && memcmp(key1, "model", 5) == 0 && key2_len == 5 &&
                memcmp(key2, "vocab", 5) == 0) {
                s[i] = '[';
                vocab_depth = depth;
            }
        } else if (c == '}' || c == ']') {
            if (vocab_depth != 0 && depth == vocab_depth) {
                s[i] = ']';
                vocab_depth = (size_t)-1; /* done; never matches a depth again */
            }
            if (depth == 0) {
                return;
            }
            depth--;
        }
    }
}

hd_status_t hd_tok_create(const char *path, hd_tok_h *tok_p)
{
    struct hd_tok *t;
    char *text = NULL;
    size_t len = 0;
    hd_json_t *root = NULL;
    char err[160];
    tok_load_t ld = {.file = path};
    hd_status_t status;

    pthread_once(&byte_tables_once, tok_byte_tables_init);
    status = hd_file_read_all(path, TOK_MAX_FILE_BYTES, &text, &len);
    if (status != HD_OK) {
        hd_error(HD_SUBSYS_TOK, "tokenizer %s: %s", path,
                 status == HD_ERR_NOT_FOUND ? "no such file" : "cannot read (or larger than 1 GiB)");
        return status;
    }
    tok_vocab_to_array(text, len);
    status = hd_json_parse(text, len, NULL, &root, err, sizeof(err));
    hd_free(text);
    if (status != HD_OK) {
        hd_error(HD_SUBSYS_TOK, "tokenizer %s: not valid JSON: %s", path, err);
        return status;
    }
    t = hd_calloc(1, sizeof(*t), "tokenizer");
    if (t == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto err_free_root;
    }
    t->path = hd_strdup(path, "tok path");
    if (t->path == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto err_destroy;
    }
    status = load_doc(&ld, root, t);
    if (status != HD_OK) {
        if (status == HD_ERR_NO_MEMORY) {
            hd_error(HD_SUBSYS_TOK, "tokenizer %s: out of memory while loading", path);
        }
        goto err_destroy;
    }
    hd_free(ld.vocab);
    hd_free(ld.vstr);
    hd_free(ld.content);
    hd_free(ld.by_id);
    hd_json_free(root);
    hd_debug(HD_SUBSYS_TOK, "tokenizer %s: %zu ids, %zu merges, %zu added, %zu stages", path,
             t->n_ids, t->n_merges, t->n_added, t->n_splits);
    *tok_p = t;
    return HD_OK;

err_destroy:
    hd_free(ld.vocab);
    hd_free(ld.vstr);
    hd_free(ld.content);
    hd_free(ld.by_id);
    hd_tok_destroy(t);
err_free_root:
    hd_json_free(root);
    return status;
}

void hd_tok_destroy(hd_tok_h t)
{
    if (t == NULL) {
        return;
    }
    for (size_t i = 0; i < t->n_splits; i++) {
        tok_split_cleanup(&t->splits[i]);
    }
    for (int i = 0; i < TOK_N_SCRATCH; i++) {
        tok_scratch_cleanup(&t->scratch[i]);
    }
    tok_trie_cleanup(&t->trie[0]);
    tok_trie_cleanup(&t->trie[1]);
    hd_free(t->splits);
    hd_free(t->merges);
    hd_free(t->map);
    hd_free(t->added);
    hd_free(t->raw_off);
    hd_free(t->raw);
    hd_free(t->dec_off);
    hd_free(t->dec);
    hd_free(t->id_flags);
    hd_free(t->path);
    hd_free(t);
}

/* ---- ids ---- */

void hd_tok_ids_init(hd_tok_ids_t *v)
{
    memset(v, 0, sizeof(*v));
}

void hd_tok_ids_cleanup(hd_tok_ids_t *v)
{
    hd_free(v->ids);
    memset(v, 0, sizeof(*v));
}

hd_status_t tok_ids_push(hd_tok_ids_t *v, int32_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *ids = hd_realloc(v->ids, cap * sizeof(*ids), "tok ids");
        if (ids == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        v->ids = ids;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return HD_OK;
}

/* ---- decode and lookups ---- */

hd_status_t hd_tok_decode(hd_tok_h t, const int32_t *ids, size_t n, unsigned flags, hd_buf_t *out)
{
    hd_buf_t raw;
    hd_buf_init(&raw);
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= t->n_ids || !(t->id_flags[id] & TOK_ID_KNOWN)) {
            continue;
        }
        if ((flags & HD_TOK_DECODE_SKIP_SPECIAL) && (t->id_flags[id] & TOK_ID_SPECIAL)) {
            continue;
        }
        hd_buf_append(&raw, t->dec + t->dec_off[id], t->dec_off[id + 1] - t->dec_off[id]);
    }
    if (raw.failed) {
        hd_buf_cleanup(&raw);
        return HD_ERR_NO_MEMORY;
    }
    if (raw.len == 0) {
        /* nothing (raw.data may be NULL) */
    } else if (tok_utf8_valid((const uint8_t *)raw.data, raw.len)) {
        hd_buf_append(out, raw.data, raw.len);
    } else {
        tok_utf8_lossy((const uint8_t *)raw.data, raw.len, out);
    }
    hd_buf_cleanup(&raw);
    return out->failed ? HD_ERR_NO_MEMORY : HD_OK;
}

size_t hd_tok_n_ids(hd_tok_h t)
{
    return t->n_ids;
}

int32_t hd_tok_token_id(hd_tok_h t, const char *s, size_t len)
{
    return map_lookup(t, (const uint8_t *)s, len);
}

const char *hd_tok_token_str(hd_tok_h t, int32_t id, size_t *len_p)
{
    if (id < 0 || (size_t)id >= t->n_ids || !(t->id_flags[id] & TOK_ID_KNOWN)) {
        return NULL;
    }
    *len_p = t->raw_off[id + 1] - t->raw_off[id];
    return (const char *)t->raw + t->raw_off[id];
}

bool hd_tok_is_special(hd_tok_h t, int32_t id)
{
    return id >= 0 && (size_t)id < t->n_ids && (t->id_flags[id] & TOK_ID_SPECIAL);
}

const char *hd_tok_path(hd_tok_h t)
{
    return t->path;
}

/* ---- locating the tokenizer ---- */

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Add "a + b + c" to the candidate list unless it does not fit. */
static void cand_add(char (*cand)[PATH_MAX], size_t *n, const char *a, const char *b,
                     const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    if (la + lb + lc >= PATH_MAX) {
        return;
    }
    memcpy(cand[*n], a, la);
    memcpy(cand[*n] + la, b, lb);
    memcpy(cand[*n] + la + lb, c, lc + 1);
    (*n)++;
}

hd_status_t hd_tok_find(const hd_tok_search_t *w, char *path, size_t path_len)
{
    char cand[8][PATH_MAX];
    size_t n = 0;

    if (w->explicit_path != NULL) {
        if (!file_exists(w->explicit_path)) {
            hd_error(HD_SUBSYS_TOK, "tokenizer file %s not found", w->explicit_path);
            return HD_ERR_INVALID_PARAM;
        }
        snprintf(path, path_len, "%s", w->explicit_path);
        return HD_OK;
    }
    if (w->model_dir != NULL) {
        cand_add(cand, &n, w->model_dir, "/tokenizer.json", "");
    }
    if (w->env_path != NULL && w->env_path[0] != '\0') {
        if (!file_exists(w->env_path)) {
            hd_error(HD_SUBSYS_TOK, "HD_TOKENIZER=%s: no such file", w->env_path);
            return HD_ERR_INVALID_PARAM;
        }
        if (w->model_dir == NULL || n == 0 || !file_exists(cand[0])) {
            snprintf(path, path_len, "%s", w->env_path);
            return HD_OK;
        }
    }
    if (w->exe_path != NULL) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", w->exe_path);
        char *slash = strrchr(dir, '/');
        if (slash != NULL) {
            *slash = '\0';
            cand_add(cand, &n, dir, "/../share/hadal/", HD_TOK_DEFAULT_REL);
            cand_add(cand, &n, dir, "/../../coordinator/data/", HD_TOK_DEFAULT_REL);
            cand_add(cand, &n, dir, "/../coordinator/data/", HD_TOK_DEFAULT_REL);
        }
    }
    if (w->source_dir != NULL) {
        cand_add(cand, &n, w->source_dir, "/coordinator/data/", HD_TOK_DEFAULT_REL);
    }
    for (size_t i = 0; i < n; i++) {
        if (file_exists(cand[i])) {
            char *real = realpath(cand[i], NULL);
            snprintf(path, path_len, "%s", real != NULL ? real : cand[i]);
            free(real);
            return HD_OK;
        }
    }
    hd_error(HD_SUBSYS_TOK, "no tokenizer.json found (use --tokenizer FILE or HD_TOKENIZER); tried:");
    for (size_t i = 0; i < n; i++) {
        hd_error(HD_SUBSYS_TOK, "  %s", cand[i]);
    }
    return HD_ERR_NOT_FOUND;
}
