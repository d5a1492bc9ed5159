/*
 * tok_encode.c - text -> ids: added tokens, pre-tokenizer stages, byte-level BPE.
 *
 * The pipeline mirrors HF tokenizers' encode: (1) split out non-normalized added tokens,
 * (2) split out normalized ones in the remaining text, (3) run each remaining piece through
 * the pre-tokenizer stages depth-first (each Split sees only its parent's piece, as HF's
 * PreTokenizedString does), (4) BPE each leaf piece on byte ids, merging the lowest-ranked
 * adjacent pair (leftmost on ties) until none applies. Leaves are looked up in a per-scratch
 * word cache first; most words repeat, so BPE rarely runs.
 */
#include "tok_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <string.h>

#define TOK_CACHE_SLOTS (1u << 16)     /* entries in one word cache */
#define TOK_CACHE_ARENA (4u << 20)     /* bytes of keys + ids in one word cache */
#define TOK_CACHE_MAX_KEY 96           /* longer pieces are not cached */

static size_t bpe_heap_threshold = 48;

void tok_bpe_set_heap_threshold(size_t n)
{
    bpe_heap_threshold = n;
}

/* ---- scratch ---- */

static hd_status_t scratch_ready(tok_scratch_t *sc)
{
    if (sc->ready) {
        return HD_OK;
    }
    sc->entries = hd_calloc(TOK_CACHE_SLOTS, sizeof(*sc->entries), "tok cache");
    sc->arena = hd_malloc(TOK_CACHE_ARENA, "tok cache arena");
    sc->md = pcre2_match_data_create(1, NULL);
    if (sc->entries == NULL || sc->arena == NULL || sc->md == NULL) {
        tok_scratch_cleanup(sc);
        return HD_ERR_NO_MEMORY;
    }
    sc->ready = true;
    return HD_OK;
}

void tok_scratch_cleanup(tok_scratch_t *sc)
{
    hd_free(sc->entries);
    hd_free(sc->arena);
    if (sc->md != NULL) {
        pcre2_match_data_free(sc->md);
    }
    hd_free(sc->syms);
    hd_free(sc->ranks);
    hd_free(sc->links);
    hd_free(sc->heap);
    hd_free(sc->tmp);
    sc->entries = NULL;
    sc->arena = NULL;
    sc->md = NULL;
    sc->syms = NULL;
    sc->ranks = NULL;
    sc->links = NULL;
    sc->heap = NULL;
    sc->tmp = NULL;
    sc->work_cap = sc->tmp_cap = 0;
    sc->n_entries = sc->arena_used = 0;
    sc->ready = false;
}

static hd_status_t scratch_work(tok_scratch_t *sc, size_t n)
{
    if (n <= sc->work_cap) {
        return HD_OK;
    }
    size_t cap = n < 256 ? 256 : n * 2;
    int32_t *syms = hd_realloc(sc->syms, cap * sizeof(*syms), "bpe syms");
    if (syms == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    sc->syms = syms;
    uint32_t *ranks = hd_realloc(sc->ranks, cap * sizeof(*ranks), "bpe ranks");
    if (ranks == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    sc->ranks = ranks;
    int32_t *links = hd_realloc(sc->links, 3 * cap * sizeof(*links), "bpe links");
    if (links == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    sc->links = links;
    uint64_t *heap = hd_realloc(sc->heap, 3 * cap * sizeof(*heap), "bpe heap");
    if (heap == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    sc->heap = heap;
    sc->work_cap = cap;
    return HD_OK;
}

/* ---- word cache ---- */

static inline uint32_t cache_hash(const uint8_t *s, size_t n)
{
    uint64_t h = 0xCBF29CE484222325ull ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001B3ull * 0x9E3779B1u;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    }
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    uint32_t r = (uint32_t)h;
    return r ? r : 1;
}

static const tok_cache_entry_t *cache_find(const tok_scratch_t *sc, const uint8_t *s, size_t n,
                                           uint32_t h)
{
    size_t i = h & (TOK_CACHE_SLOTS - 1);
    for (;;) {
        const tok_cache_entry_t *e = &sc->entries[i];
        if (e->hash == 0) {
            return NULL;
        }
        if (e->hash == h && e->key_len == n && memcmp(sc->arena + e->key_off, s, n) == 0) {
            return e;
        }
        i = (i + 1) & (TOK_CACHE_SLOTS - 1);
    }
}

static void cache_put(tok_scratch_t *sc, const uint8_t *s, size_t n, uint32_t h, const int32_t *ids,
                      size_t n_ids)
{
    size_t key_off = (sc->arena_used + 3) & ~(size_t)3;
    size_t need = key_off + ((n + 3) & ~(size_t)3) + n_ids * sizeof(int32_t);
    if (n_ids > UINT16_MAX) {
        return;
    }
    if (need > TOK_CACHE_ARENA || sc->n_entries >= TOK_CACHE_SLOTS / 2) {
        /* full: start over (cheap, and the working set refills quickly) */
        memset(sc->entries, 0, TOK_CACHE_SLOTS * sizeof(*sc->entries));
        sc->n_entries = 0;
        sc->arena_used = 0;
        key_off = 0;
        need = ((n + 3) & ~(size_t)3) + n_ids * sizeof(int32_t);
    }
    size_t ids_off = key_off + ((n + 3) & ~(size_t)3);
    memcpy(sc->arena + key_off, s, n);
    memcpy(sc->arena + ids_off, ids, n_ids * sizeof(int32_t));
    sc->arena_used = need;
    size_t i = h & (TOK_CACHE_SLOTS - 1);
    while (sc->entries[i].hash != 0) {
        i = (i + 1) & (TOK_CACHE_SLOTS - 1);
    }
    tok_cache_entry_t *e = &sc->entries[i];
    e->hash = h;
    e->key_off = (uint32_t)key_off;
    e->key_len = (uint16_t)n;
    e->n_ids = (uint16_t)n_ids;
    e->ids_off = (uint32_t)ids_off;
    sc->n_entries++;
}

static hd_status_t ids_append(hd_tok_ids_t *ids, const int32_t *src, size_t n)
{
    if (ids->n + n > ids->cap) {
        size_t cap = ids->cap ? ids->cap : 64;
        while (cap < ids->n + n) {
            cap *= 2;
        }
        int32_t *p = hd_realloc(ids->ids, cap * sizeof(*p), "tok ids");
        if (p == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        ids->ids = p;
        ids->cap = cap;
    }
    memcpy(ids->ids + ids->n, src, n * sizeof(*src));
    ids->n += n;
    return HD_OK;
}

/* ---- BPE ---- */

/* Small words: keep symbols contiguous, rescan the pair ranks for the minimum each step. */
static size_t bpe_array(const struct hd_tok *t, int32_t *syms, uint32_t *ranks, int32_t *nid,
                        size_t m)
{
    for (size_t i = 0; i + 1 < m; i++) {
        ranks[i] = tok_merge_find(t, syms[i], syms[i + 1], &nid[i]);
    }
    while (m > 1) {
        uint32_t best = UINT32_MAX;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            if (ranks[i] < best) {
                best = ranks[i];
                bi = i;
            }
        }
        if (best == UINT32_MAX) {
            break;
        }
        syms[bi] = nid[bi];
        /* drop symbol bi+1 and pair bi+1 */
        memmove(syms + bi + 1, syms + bi + 2, (m - bi - 2) * sizeof(*syms));
        if (bi + 3 <= m) {
            memmove(ranks + bi + 1, ranks + bi + 2, (m - bi - 3) * sizeof(*ranks));
            memmove(nid + bi + 1, nid + bi + 2, (m - bi - 3) * sizeof(*nid));
        }
        m--;
        if (bi > 0) {
            ranks[bi - 1] = tok_merge_find(t, syms[bi - 1], syms[bi], &nid[bi - 1]);
        }
        if (bi + 1 < m) {
            ranks[bi] = tok_merge_find(t, syms[bi], syms[bi + 1], &nid[bi]);
        }
    }
    return m;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v) {
            break;
        }
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], v = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) {
            break;
        }
        if (c + 1 < *n && h[c + 1] < h[c]) {
            c++;
        }
        if (v <= h[c]) {
            break;
        }
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) {
        h[i] = v;
    }
    return top;
}

/*
 * Long words: linked symbols and a min-heap of (rank, position) as HF's Word::merge_all.
 * Popping (rank, pos) in order merges the lowest rank, leftmost first; entries whose pair
 * changed since they were pushed are skipped. Returns the symbols left, in order, in syms.
 */
static size_t bpe_heap(const struct hd_tok *t, int32_t *syms, int32_t *links, uint64_t *heap,
                       size_t m)
{
    int32_t *prev = links, *next = links + m;
    uint8_t *alive = (uint8_t *)(links + 2 * m);
    size_t hn = 0, out = 0;
    int32_t nid;
    for (size_t i = 0; i < m; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < m ? (int32_t)i + 1 : -1;
        alive[i] = 1;
    }
    for (size_t i = 0; i + 1 < m; i++) {
        uint32_t r = tok_merge_find(t, syms[i], syms[i + 1], &nid);
        if (r != UINT32_MAX) {
            heap_push(heap, &hn, ((uint64_t)r << 32) | i);
        }
    }
    while (hn > 0) {
        uint64_t top = heap_pop(heap, &hn);
        uint32_t r = (uint32_t)(top >> 32);
        size_t pos = (size_t)(uint32_t)top;
        if (!alive[pos] || next[pos] < 0) {
            continue;
        }
        int32_t nx = next[pos];
        if (tok_merge_find(t, syms[pos], syms[nx], &nid) != r) {
            continue;
        }
        syms[pos] = nid;
        alive[nx] = 0;
        next[pos] = next[nx];
        if (next[nx] >= 0) {
            prev[next[nx]] = (int32_t)pos;
        }
        if (prev[pos] >= 0) {
            int32_t pv = prev[pos];
            uint32_t r2 = tok_merge_find(t, syms[pv], syms[pos], &nid);
            if (r2 != UINT32_MAX) {
                heap_push(heap, &hn, ((uint64_t)r2 << 32) | (uint32_t)pv);
            }
        }
        if (next[pos] >= 0) {
            uint32_t r2 = tok_merge_find(t, syms[pos], syms[next[pos]], &nid);
            if (r2 != UINT32_MAX) {
                heap_push(heap, &hn, ((uint64_t)r2 << 32) | pos);
            }
        }
    }
    for (int32_t i = 0; i >= 0; i = next[i]) {
        syms[out++] = syms[i];
    }
    return out;
}

/* With ignore_merges, a piece that is itself a token maps straight to it. */
static int32_t bpe_whole(const struct hd_tok *t, const uint8_t *s, size_t n)
{
    uint8_t buf[2 * TOK_CACHE_MAX_KEY];
    size_t k = 0;
    if (n > TOK_CACHE_MAX_KEY) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        /* the byte's token string is its byte-level character (1 or 2 UTF-8 bytes) */
        int32_t id = t->byte_id[s[i]];
        size_t len = t->raw_off[id + 1] - t->raw_off[id];
        if (k + len > sizeof(buf)) {
            return -1;
        }
        memcpy(buf + k, t->raw + t->raw_off[id], len);
        k += len;
    }
    return hd_tok_token_id((hd_tok_h)t, (const char *)buf, k);
}

hd_status_t tok_bpe_piece(struct hd_tok *t, tok_scratch_t *sc, const uint8_t *s, size_t n,
                          hd_tok_ids_t *ids)
{
    uint32_t h = 0;
    size_t m;
    hd_status_t status;

    if (n == 0) {
        return HD_OK;
    }
    if (n == 1) {
        return tok_ids_push(ids, t->byte_id[s[0]]);
    }
    if (sc->entries != NULL && n <= TOK_CACHE_MAX_KEY) {
        h = cache_hash(s, n);
        const tok_cache_entry_t *e = cache_find(sc, s, n, h);
        if (e != NULL) {
            return ids_append(ids, (const int32_t *)(sc->arena + e->ids_off), e->n_ids);
        }
    }
    if (t->ignore_merges) {
        int32_t whole = bpe_whole(t, s, n);
        if (whole >= 0) {
            return tok_ids_push(ids, whole);
        }
    }
    status = scratch_work(sc, n);
    if (status != HD_OK) {
        return status;
    }
    for (size_t i = 0; i < n; i++) {
        sc->syms[i] = t->byte_id[s[i]];
    }
    if (n <= bpe_heap_threshold) {
        m = bpe_array(t, sc->syms, sc->ranks, sc->links, n);
    } else {
        m = bpe_heap(t, sc->syms, sc->links, sc->heap, n);
    }
    if (h != 0) {
        cache_put(sc, s, n, h, sc->syms, m);
    }
    return ids_append(ids, sc->syms, m);
}

/* ---- pre-tokenizer stages ---- */

typedef struct {
    struct hd_tok *t;    /* tokenizer */
    tok_scratch_t *sc;   /* scratch of this call */
    hd_tok_ids_t *ids;   /* output */
    unsigned flags;      /* HD_TOK_ENCODE_* */
} enc_t;

static hd_status_t stage_run(enc_t *e, size_t level, const uint8_t *s, size_t n);

static inline hd_status_t stage_piece(enc_t *e, size_t level, const uint8_t *s, size_t n,
                                      bool keep)
{
    if (!keep || n == 0) {
        return HD_OK;
    }
    return stage_run(e, level + 1, s, n);
}

static hd_status_t stage_run(enc_t *e, size_t level, const uint8_t *s, size_t n)
{
    struct hd_tok *t = e->t;
    if (n == 0) {
        return HD_OK;
    }
    if (level == t->n_splits) {
        return tok_bpe_piece(t, e->sc, s, n, e->ids);
    }
    const tok_split_t *sp = &t->splits[level];
    if (sp->prefix_space) {
        if (s[0] == ' ') {
            return stage_run(e, level + 1, s, n);
        }
        tok_scratch_t *sc = e->sc;
        if (sc->tmp_cap < n + 1) {
            uint8_t *tmp = hd_realloc(sc->tmp, n + 1, "tok prefix space");
            if (tmp == NULL) {
                return HD_ERR_NO_MEMORY;
            }
            sc->tmp = tmp;
            sc->tmp_cap = n + 1;
        }
        sc->tmp[0] = ' ';
        memcpy(sc->tmp + 1, s, n);
        return stage_run(e, level + 1, sc->tmp, n + 1);
    }
    /* which of gaps / matches survive */
    bool keep_match = sp->behavior == TOK_SPLIT_ISOLATED || sp->invert;
    bool keep_gap = sp->behavior == TOK_SPLIT_ISOLATED || !sp->invert;
    pcre2_match_data *md = e->sc->md;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    size_t prev = 0, pos = 0;
    hd_status_t status;
    while (pos < n) {
        int rc = sp->jit ? pcre2_jit_match(sp->code, s, n, pos, 0, md, NULL)
                         : pcre2_match(sp->code, s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) {
            break;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(rc, msg, sizeof(msg));
            hd_error(HD_SUBSYS_TOK, "tokenizer %s: pre-tokenizer regex failed: %s", t->path,
                     (const char *)msg);
            return HD_ERR_INVALID_PARAM;
        }
        size_t ms = ov[0], me = ov[1];
        if (ms > prev) {
            status = stage_piece(e, level, s + prev, ms - prev, keep_gap);
            if (status != HD_OK) {
                return status;
            }
        }
        if (me == ms) {
            /* an empty match only splits; step over one character */
            prev = ms;
            int k = tok_utf8_seq(s + ms, n - ms);
            pos = ms + (size_t)(k > 0 ? k : 1);
            continue;
        }
        status = stage_piece(e, level, s + ms, me - ms, keep_match);
        if (status != HD_OK) {
            return status;
        }
        prev = pos = me;
    }
    if (prev < n) {
        return stage_piece(e, level, s + prev, n - prev, keep_gap);
    }
    return HD_OK;
}

/* ---- added tokens ---- */

static bool is_white(uint32_t cp)
{
    const tok_uniset_t *u = &tok_unicode_white_space;
    for (size_t i = 0; i < u->n; i++) {
        if (cp >= u->ranges[i][0] && cp <= u->ranges[i][1]) {
            return true;
        }
    }
    return false;
}

static uint32_t cp_at(const uint8_t *s, int k)
{
    switch (k) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

/* Leftmost-longest match of @trie in s[from, n). */
static bool added_next(const tok_trie_t *trie, const uint8_t *s, size_t n, size_t from,
                       size_t *start_p, size_t *end_p, int32_t *tok_p)
{
    const tok_trie_node_t *nodes = trie->nodes;
    for (size_t i = from; i < n; i++) {
        if (!trie->first[s[i]]) {
            continue;
        }
        int32_t cur = 0, best = -1;
        size_t best_end = 0;
        for (size_t j = i; j < n; j++) {
            int32_t k = nodes[cur].child;
            while (k >= 0 && nodes[k].byte != s[j]) {
                k = nodes[k].sibling;
            }
            if (k < 0) {
                break;
            }
            cur = k;
            if (nodes[cur].token >= 0) {
                best = nodes[cur].token;
                best_end = j + 1;
            }
        }
        if (best >= 0) {
            *start_p = i;
            *end_p = best_end;
            *tok_p = best;
            return true;
        }
    }
    return false;
}

static hd_status_t added_pass(enc_t *e, int pass, const uint8_t *s, size_t n)
{
    struct hd_tok *t = e->t;
    size_t start_offset = 0, from = 0, ms, me;
    int32_t ti;
    hd_status_t status;

    if (n == 0) {
        return HD_OK;
    }
    if (pass == 2) {
        return stage_run(e, 0, s, n);
    }
    const tok_trie_t *trie = &t->trie[pass];
    if (trie->n == 0) {
        return added_pass(e, pass + 1, s, n);
    }
    while (from < n && added_next(trie, s, n, from, &ms, &me, &ti)) {
        const tok_added_t *a = &t->added[ti];
        size_t start = ms, stop = me;
        from = me;
        if ((e->flags & HD_TOK_ENCODE_SPECIAL_AS_TEXT) && a->special) {
            continue;
        }
        if (a->lstrip) {
            /* back over whitespace characters, never before the previous split */
            size_t p = start;
            while (p > start_offset) {
                size_t q = p - 1;
                while (q > 0 && (s[q] & 0xC0) == 0x80) {
                    q--;
                }
                if (!is_white(cp_at(s + q, (int)(p - q)))) {
                    break;
                }
                p = q;
            }
            start = p;
        }
        if (a->rstrip) {
            while (stop < n) {
                int k = tok_utf8_seq(s + stop, n - stop);
                if (k <= 0 || !is_white(cp_at(s + stop, k))) {
                    break;
                }
                stop += (size_t)k;
            }
        }
        if (start_offset < start) {
            status = added_pass(e, pass + 1, s + start_offset, start - start_offset);
            if (status != HD_OK) {
                return status;
            }
        }
        status = tok_ids_push(e->ids, a->id);
        if (status != HD_OK) {
            return status;
        }
        start_offset = stop;
    }
    if (start_offset < n) {
        return added_pass(e, pass + 1, s + start_offset, n - start_offset);
    }
    return HD_OK;
}

hd_status_t hd_tok_encode(hd_tok_h t, const char *text, size_t len, unsigned flags,
                          hd_tok_ids_t *ids)
{
    tok_scratch_t *sc = NULL, own;
    hd_buf_t fixed;
    const uint8_t *s = (const uint8_t *)text;
    hd_status_t status;

    for (int i = 0; i < TOK_N_SCRATCH; i++) {
        if (!atomic_flag_test_and_set_explicit(&t->scratch[i].busy, memory_order_acquire)) {
            sc = &t->scratch[i];
            break;
        }
    }
    if (sc == NULL) {
        /* every cache is busy: run without one */
        memset(&own, 0, sizeof(own));
        own.md = pcre2_match_data_create(1, NULL);
        if (own.md == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        sc = &own;
    } else {
        status = scratch_ready(sc);
        if (status != HD_OK) {
            atomic_flag_clear_explicit(&sc->busy, memory_order_release);
            return status;
        }
    }
    hd_buf_init(&fixed);
    if (!tok_utf8_valid(s, len)) {
        tok_utf8_lossy(s, len, &fixed);
        if (fixed.failed) {
            status = HD_ERR_NO_MEMORY;
            goto out;
        }
        s = (const uint8_t *)fixed.data;
        len = fixed.len;
    }
    enc_t e = {.t = t, .sc = sc, .ids = ids, .flags = flags};
    status = added_pass(&e, 0, s, len);
out:
    hd_buf_cleanup(&fixed);
    if (sc == &own) {
        tok_scratch_cleanup(&own);
    } else {
        atomic_flag_clear_explicit(&sc->busy, memory_order_release);
    }
    return status;
}
