/*
 * tok_impl.h - private structures of the tokenizer (coordinator/tok_*.c, tokenizer.c).
 *
 * The tokenizer is split by stage: tokenizer.c loads tokenizer.json and decodes,
 * tok_added.c matches added/special tokens, tok_regex.c turns the Oniguruma patterns of a
 * Hugging Face `Split` pre-tokenizer into PCRE2 ones, tok_encode.c runs pre-tokenization
 * and byte-level BPE with a word cache, tok_utf8.c holds the UTF-8 helpers shared by
 * encode (lossy input) and the streaming detokenizer.
 */
#ifndef HD_COORDINATOR_TOK_IMPL_H
#define HD_COORDINATOR_TOK_IMPL_H

#include "hadal/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Unicode data (tok_unicode.c, generated) ---- */

typedef struct {
    char name;                 /* 'L', 'M', 'N', 'P', 'S' or 's' (White_Space) */
    const uint32_t (*ranges)[2]; /* inclusive code point ranges, ascending */
    size_t n;                  /* number of ranges */
} tok_uniset_t;

extern const tok_uniset_t tok_unicode_delta[]; /* terminated by name 0 */
extern const tok_uniset_t tok_unicode_white_space;

/* ---- UTF-8 (tok_utf8.c) ---- */

/*
 * Length of the well-formed UTF-8 sequence at @s (1..4), 0 when the bytes at @s are a
 * proper prefix of a well-formed sequence cut off by @n, or -k when the first k bytes are a
 * maximal ill-formed subpart (replace them with one U+FFFD, as Python's errors="replace" and
 * Rust's from_utf8_lossy do). @n must be > 0.
 */
int tok_utf8_seq(const uint8_t *s, size_t n);
/* True when all @n bytes are well-formed UTF-8. */
bool tok_utf8_valid(const uint8_t *s, size_t n);
/* Append @s to @out with every maximal ill-formed subpart replaced by U+FFFD. */
void tok_utf8_lossy(const uint8_t *s, size_t n, hd_buf_t *out);

/* ---- added tokens (tok_added.c) ---- */

typedef struct {
    int32_t id;       /* token id */
    uint32_t off;     /* content offset in hd_tok.raw */
    uint32_t len;     /* content bytes */
    bool special;     /* "special": true (skipped by SKIP_SPECIAL decode) */
    bool normalized;  /* matched on normalized text (second pass) */
    bool lstrip;      /* swallow whitespace on the left */
    bool rstrip;      /* swallow whitespace on the right */
    bool single_word; /* only match as a whole word */
} tok_added_t;

typedef struct {
    int32_t child;   /* first child node, -1 if none */
    int32_t sibling; /* next sibling node, -1 if none */
    int32_t token;   /* index into hd_tok.added when a pattern ends here, else -1 */
    uint8_t byte;    /* edge label */
} tok_trie_node_t;

typedef struct {
    tok_trie_node_t *nodes; /* node 0 is the root */
    size_t n;               /* nodes used */
    size_t cap;             /* nodes allocated */
    bool first[256];        /* bytes that start some pattern */
} tok_trie_t;

/* One match found by tok_trie_next(). */
typedef struct {
    size_t start; /* byte offset of the (stripped) match */
    size_t end;   /* one past the last byte */
    int32_t id;   /* token id */
} tok_match_t;

hd_status_t tok_trie_add(tok_trie_t *t, const uint8_t *s, size_t n, int32_t token);
void tok_trie_cleanup(tok_trie_t *t);

/* ---- pre-tokenizer regexes (tok_regex.c) ---- */

typedef enum {
    TOK_SPLIT_ISOLATED, /* every match and every gap becomes a piece */
    TOK_SPLIT_REMOVED,  /* matches are dropped, gaps become pieces */
} tok_split_behavior_t;

typedef struct {
    bool prefix_space;             /* stage only prepends ' ' (ByteLevel add_prefix_space) */
    pcre2_code *code;              /* compiled pattern (JIT-compiled when available) */
    bool jit;                      /* pcre2_jit_compile succeeded */
    tok_split_behavior_t behavior; /* what happens to matches */
    bool invert;                   /* the gaps are the "matches" */
} tok_split_t;

/*
 * Translate an Oniguruma (HF tokenizers) pattern into a PCRE2 pattern with the same meaning
 * under Unicode 16.0 (see tok_unicode.c) and compile it. @literal compiles @pat as a literal
 * string. Errors name @file.
 */
hd_status_t tok_split_compile(tok_split_t *sp, const char *pat, size_t len, bool literal,
                              const char *file);
void tok_split_cleanup(tok_split_t *sp);
/* The PCRE2 source tok_split_compile() would compile (for tests); caller frees data. */
hd_status_t tok_regex_translate(const char *pat, size_t len, hd_buf_t *out);

/* ---- BPE merges and the word cache (tok_encode.c) ---- */

typedef struct {
    uint64_t key;   /* (left id << 32) | right id; UINT64_MAX marks an empty slot */
    uint32_t rank;  /* position in the merges list (lower merges first) */
    int32_t new_id; /* id of the merged token */
} tok_merge_t;

typedef struct {
    uint32_t hash;    /* 0 marks an empty slot */
    uint32_t key_off; /* piece bytes in arena */
    uint16_t key_len; /* piece length */
    uint16_t n_ids;   /* ids in the cached encoding */
    uint32_t ids_off; /* int32 ids in arena (4-byte aligned) */
} tok_cache_entry_t;

/* Per-thread scratch: word cache, PCRE2 match data, BPE work arrays. */
typedef struct {
    atomic_flag busy;           /* claimed by one encode call at a time */
    bool ready;                 /* allocated */
    tok_cache_entry_t *entries; /* open addressing, TOK_CACHE_SLOTS */
    size_t n_entries;           /* entries in use */
    uint8_t *arena;             /* keys and ids */
    size_t arena_used;          /* bytes of arena in use */
    pcre2_match_data *md;       /* ovector for the splits */
    int32_t *syms;              /* BPE symbols */
    uint32_t *ranks;            /* BPE pair ranks */
    int32_t *links;             /* BPE heap path: prev/next links */
    uint64_t *heap;             /* BPE heap path: (rank << 32 | pos) */
    size_t work_cap;            /* elements allocated in the work arrays */
    uint8_t *tmp;               /* prefix-space copy */
    size_t tmp_cap;             /* bytes allocated in tmp */
} tok_scratch_t;

#define TOK_N_SCRATCH 4

/* ---- the tokenizer ---- */

struct hd_tok {
    char *path;          /* file it was loaded from */
    size_t n_ids;        /* max id + 1 */
    uint32_t *raw_off;   /* n_ids + 1: token string (as in tokenizer.json) offsets in raw */
    uint8_t *raw;        /* all token strings */
    uint32_t *dec_off;   /* n_ids + 1: decoded bytes offsets in dec */
    uint8_t *dec;        /* bytes each id decodes to */
    uint8_t *id_flags;   /* TOK_ID_* per id */
    /* token string -> id */
    uint32_t *map;       /* open addressing: id + 1, 0 empty */
    size_t map_mask;     /* slots - 1 */
    /* added tokens */
    tok_added_t *added;  /* n_added entries */
    size_t n_added;      /* added tokens */
    tok_trie_t trie[2];  /* 0: non-normalized tokens, 1: normalized tokens */
    bool any_strip;      /* some added token uses lstrip/rstrip/single_word */
    /* pre-tokenizer */
    tok_split_t *splits; /* pre-tokenizer stages, applied in order */
    size_t n_splits;     /* number of stages */
    /* BPE */
    int32_t byte_id[256]; /* id of each single byte */
    tok_merge_t *merges;  /* open addressing */
    size_t merges_mask;   /* slots - 1 */
    unsigned merges_shift; /* 64 - log2(slots) */
    size_t n_merges;      /* merge rules */
    bool ignore_merges;   /* a piece that is itself a vocab token maps to it directly */
    tok_scratch_t scratch[TOK_N_SCRATCH];
};

#define TOK_ID_KNOWN 1u   /* the id has a token */
#define TOK_ID_SPECIAL 2u /* added token with "special": true */
#define TOK_ID_ADDED 4u   /* added token */

/* Merge lookup: rank, or UINT32_MAX when the pair has no merge. */
static inline uint32_t tok_merge_find(const struct hd_tok *t, int32_t a, int32_t b, int32_t *id)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> t->merges_shift);
    for (;;) {
        const tok_merge_t *m = &t->merges[i];
        if (m->key == key) {
            *id = m->new_id;
            return m->rank;
        }
        if (m->key == UINT64_MAX) {
            return UINT32_MAX;
        }
        i = (i + 1) & t->merges_mask;
    }
}

/* Encode one pre-tokenized piece with BPE (through the cache); appends to @ids. */
hd_status_t tok_bpe_piece(struct hd_tok *t, tok_scratch_t *sc, const uint8_t *s, size_t n,
                          hd_tok_ids_t *ids);
void tok_scratch_cleanup(tok_scratch_t *sc);
/* Testing hook: pieces longer than @n symbols use the heap merge path (default 48). */
void tok_bpe_set_heap_threshold(size_t n);
/* Append @id to @ids. */
hd_status_t tok_ids_push(hd_tok_ids_t *ids, int32_t id);

/* Byte-level alphabet: code point -> byte (-1 where none). */
int tok_cp_to_byte(uint32_t cp);

#endif /* HD_COORDINATOR_TOK_IMPL_H */
