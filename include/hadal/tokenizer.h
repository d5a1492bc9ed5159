/*
 * hadal/tokenizer.h - byte-level BPE tokenizer read from a Hugging Face tokenizer.json.
 *
 * Supports what DeepSeek's tokenizers use: BPE with merges by rank over the byte-level
 * alphabet, a Sequence of `Split` pre-tokenizers whose Oniguruma regexes run on PCRE2 (UTF +
 * UCP, JIT when available), a ByteLevel pre-tokenizer/decoder, and added/special tokens that
 * are matched atomically (leftmost-longest, non-normalized tokens first, as HF does). Token
 * ids equal those of HF `tokenizers` 0.23.3 `Tokenizer.encode(text).ids` (no BOS is added:
 * the chat encoder writes BOS itself). Anything else in a tokenizer.json (other normalizers,
 * models, pre-tokenizers) is refused with HD_ERR_UNSUPPORTED and a message naming the file.
 *
 * Invalid UTF-8: encode treats its input as UTF-8 and replaces every maximal ill-formed
 * subpart with U+FFFD first (Python's bytes.decode("utf-8", "replace")), so the ids equal
 * HF's for the lossy-decoded string. Decode produces bytes and replaces ill-formed output
 * the same way (Rust's String::from_utf8_lossy, which HF uses).
 *
 * Threading: a loaded tokenizer is read-only; encode/decode/lookups may run concurrently
 * from any number of threads (encode uses one of a few internal word caches, or none).
 */
#ifndef HADAL_TOKENIZER_H
#define HADAL_TOKENIZER_H

#include "hadal/json.h"
#include "hadal/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hd_tok *hd_tok_h;

/* A growable array of token ids; zero-initialise or hd_tok_ids_init(). */
typedef struct {
    int32_t *ids; /* token ids */
    size_t n;     /* ids used */
    size_t cap;   /* ids allocated */
} hd_tok_ids_t;

void hd_tok_ids_init(hd_tok_ids_t *v);
void hd_tok_ids_cleanup(hd_tok_ids_t *v);

/*
 * Load @path (a tokenizer.json). Errors: HD_ERR_NOT_FOUND / HD_ERR_IO (file), HD_ERR_FORMAT
 * (not JSON or a required field is missing/wrong), HD_ERR_UNSUPPORTED (a component we do
 * not implement). Each failure is logged once with the file name and the cause.
 */
hd_status_t hd_tok_create(const char *path, hd_tok_h *tok_p);
void hd_tok_destroy(hd_tok_h tok);

/* Encode flags. */
#define HD_TOK_ENCODE_SPECIAL_AS_TEXT 1u /* like HF encode_special_tokens=True: tokens with
                                            "special": true are not matched, BPE'd as text */

/*
 * Append the ids of @len bytes of @text to @ids (see the invalid-UTF-8 rule above).
 * Returns HD_ERR_NO_MEMORY, or HD_ERR_INVALID_PARAM if PCRE2 fails (logged). On failure
 * @ids may hold a partial result.
 */
hd_status_t hd_tok_encode(hd_tok_h tok, const char *text, size_t len, unsigned flags,
                          hd_tok_ids_t *ids);

/* Decode flags. */
#define HD_TOK_DECODE_SKIP_SPECIAL 1u /* drop tokens with "special": true (HF's
                                         skip_special_tokens) */

/*
 * Append the text of @n ids to @out. Unknown ids are skipped (as HF does); the output is
 * valid UTF-8 (ill-formed byte runs become U+FFFD). Returns HD_ERR_NO_MEMORY only.
 */
hd_status_t hd_tok_decode(hd_tok_h tok, const int32_t *ids, size_t n, unsigned flags,
                          hd_buf_t *out);

/* Number of ids (largest id + 1). */
size_t hd_tok_n_ids(hd_tok_h tok);
/* Id of the token spelled @s (@len bytes, as in tokenizer.json), or -1. */
int32_t hd_tok_token_id(hd_tok_h tok, const char *s, size_t len);
/* Token string of @id as in tokenizer.json (NOT NUL-terminated), or NULL; *len_p set. */
const char *hd_tok_token_str(hd_tok_h tok, int32_t id, size_t *len_p);
/* True if @id is an added token marked "special". */
bool hd_tok_is_special(hd_tok_h tok, int32_t id);
/* Path the tokenizer was loaded from. */
const char *hd_tok_path(hd_tok_h tok);

/* ---- streaming detokenizer ---- */

/*
 * Turns ids into text one at a time without ever splitting a UTF-8 character: bytes of an
 * incomplete sequence (byte-level tokens often carry half a character) are held until the
 * sequence completes; a run that can never become valid is emitted as one U+FFFD per
 * maximal ill-formed subpart. The concatenation of everything pushed and flushed equals
 * hd_tok_decode() of all ids. Embedded object: no allocation, one per stream, not
 * thread-safe per stream.
 */
typedef struct {
    hd_tok_h tok;     /* tokenizer (not owned) */
    unsigned flags;   /* HD_TOK_DECODE_* */
    uint8_t pend[4];  /* held bytes of an incomplete sequence */
    uint8_t n_pend;   /* bytes held (0..3) */
} hd_tok_stream_t;

void hd_tok_stream_init(hd_tok_stream_t *s, hd_tok_h tok, unsigned flags);
/* Append the text that @id completes to @out (possibly nothing). HD_ERR_NO_MEMORY only. */
hd_status_t hd_tok_stream_push(hd_tok_stream_t *s, int32_t id, hd_buf_t *out);
/* End of stream: held bytes become U+FFFD. The stream may be reused afterwards. */
hd_status_t hd_tok_stream_flush(hd_tok_stream_t *s, hd_buf_t *out);

/* ---- locating the tokenizer ---- */

/* Where hd_tok_find() looks, in this order; NULL fields are skipped. */
typedef struct {
    const char *explicit_path; /* --tokenizer FILE: used as is */
    const char *model_dir;     /* a model directory: DIR/tokenizer.json wins when present */
    const char *env_path;      /* value of HD_TOKENIZER (the caller reads the environment) */
    const char *exe_path;      /* the running executable: EXE_DIR/../share/hadal/... and the
                                  build-tree layout EXE_DIR/../../coordinator/data/... */
    const char *source_dir;    /* a compiled-in source tree: DIR/coordinator/data/... */
} hd_tok_search_t;

/* Relative location of the vendored default tokenizer (DeepSeek-V4). */
#define HD_TOK_DEFAULT_REL "tokenizer-deepseek-v4/tokenizer.json"

/*
 * Write the first existing candidate into @path (@path_len bytes). HD_ERR_NOT_FOUND (and an
 * error log listing every place tried) when none exists; HD_ERR_INVALID_PARAM when
 * explicit_path is set but missing.
 */
hd_status_t hd_tok_find(const hd_tok_search_t *where, char *path, size_t path_len);

#endif /* HADAL_TOKENIZER_H */
