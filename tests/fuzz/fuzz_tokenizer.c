/*
 * fuzz_tokenizer.c - libFuzzer target for the byte-level BPE tokenizer (the vendored
 * DeepSeek-V4 tokenizer.json, found next to this source file). For any bytes x: every id is
 * in range, decode(encode(x)) is valid UTF-8 and equals x when x is valid UTF-8, encoding that
 * text again gives the same ids, the streaming detokenizer (one id at a time) produces the
 * same text and never a split character, and the same holds with special tokens as text.
 * The input read as little-endian int32 ids must decode (whole and streamed) the same way.
 */
#include "hadal/json.h"
#include "hadal/log.h"
#include "hadal/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fuzz_quiet(hd_log_level_t level, const char *line, void *user)
{
}

static bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t k;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            k = 1, cp = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            k = 2, cp = b & 0x0F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            k = 3, cp = b & 0x07;
        } else {
            return false;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += k + 1;
    }
    return true;
}

static hd_tok_h fuzz_tok(void)
{
    static hd_tok_h tok;
    if (tok == NULL) {
        char path[4096];
        const char *env = getenv("HD_TOKENIZER");
        hd_log_set(fuzz_quiet, NULL);
        if (env != NULL) {
            snprintf(path, sizeof(path), "%s", env);
        } else {
            /* __FILE__ is tests/fuzz/fuzz_tokenizer.c under the source tree */
            snprintf(path, sizeof(path), "%s", __FILE__);
            char *cut = strstr(path, "tests/fuzz/fuzz_tokenizer.c");
            if (cut == NULL) {
                abort();
            }
            snprintf(cut, sizeof(path) - (size_t)(cut - path), "coordinator/data/%s",
                     HD_TOK_DEFAULT_REL);
        }
        if (hd_tok_create(path, &tok) != HD_OK) {
            fprintf(stderr, "fuzz_tokenizer: cannot load %s\n", path);
            abort();
        }
    }
    return tok;
}

/* Decode @ids whole and streamed; they must agree and be valid UTF-8. Returns the text. */
static void decode_check(hd_tok_h tok, const int32_t *ids, size_t n, unsigned flags,
                         hd_buf_t *whole)
{
    hd_buf_t chunk, streamed;
    hd_tok_stream_t s;
    whole->len = 0;
    if (hd_tok_decode(tok, ids, n, flags, whole) != HD_OK) {
        abort();
    }
    if (!utf8_valid((const uint8_t *)whole->data, whole->len)) {
        abort();
    }
    hd_buf_init(&chunk);
    hd_buf_init(&streamed);
    hd_tok_stream_init(&s, tok, flags);
    for (size_t i = 0; i < n; i++) {
        chunk.len = 0;
        if (hd_tok_stream_push(&s, ids[i], &chunk) != HD_OK ||
            !utf8_valid((const uint8_t *)chunk.data, chunk.len)) {
            abort();
        }
        if (chunk.len > 0) {
            hd_buf_append(&streamed, chunk.data, chunk.len);
        }
    }
    chunk.len = 0;
    if (hd_tok_stream_flush(&s, &chunk) != HD_OK) {
        abort();
    }
    if (chunk.len > 0) {
        hd_buf_append(&streamed, chunk.data, chunk.len);
    }
    if (streamed.len != whole->len ||
        (whole->len > 0 && memcmp(streamed.data, whole->data, whole->len) != 0)) {
        abort();
    }
    hd_buf_cleanup(&chunk);
    hd_buf_cleanup(&streamed);
}

static void encode_check(hd_tok_h tok, const uint8_t *data, size_t size, unsigned flags)
{
    hd_tok_ids_t ids, again;
    hd_buf_t text;
    size_t n_ids = hd_tok_n_ids(tok);
    hd_tok_ids_init(&ids);
    hd_tok_ids_init(&again);
    hd_buf_init(&text);
    if (hd_tok_encode(tok, (const char *)data, size, flags, &ids) != HD_OK) {
        abort();
    }
    for (size_t i = 0; i < ids.n; i++) {
        if (ids.ids[i] < 0 || (size_t)ids.ids[i] >= n_ids) {
            abort();
        }
    }
    decode_check(tok, ids.ids, ids.n, 0, &text);
    if (utf8_valid(data, size) &&
        (text.len != size || (size > 0 && memcmp(text.data, data, size) != 0))) {
        abort();
    }
    /* the lossy text encodes to the same ids */
    if (hd_tok_encode(tok, text.data ? text.data : "", text.len, flags, &again) != HD_OK ||
        again.n != ids.n || (ids.n > 0 && memcmp(again.ids, ids.ids, ids.n * sizeof(int32_t)))) {
        abort();
    }
    hd_buf_cleanup(&text);
    hd_tok_ids_cleanup(&ids);
    hd_tok_ids_cleanup(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hd_tok_h tok = fuzz_tok();
    hd_buf_t text;
    encode_check(tok, data, size, 0);
    encode_check(tok, data, size, HD_TOK_ENCODE_SPECIAL_AS_TEXT);
    /* the bytes as ids (any value, unknown ones skipped) */
    size_t n = size / 4;
    int32_t *ids = malloc(n * sizeof(int32_t) + 1);
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)data[4 * i] | (uint32_t)data[4 * i + 1] << 8 |
                     (uint32_t)data[4 * i + 2] << 16 | (uint32_t)data[4 * i + 3] << 24;
        /* mostly in range, so real tokens get exercised */
        ids[i] = (v & 0x80000000u) ? (int32_t)v : (int32_t)(v % 129290u);
    }
    hd_buf_init(&text);
    decode_check(tok, ids, n, 0, &text);
    decode_check(tok, ids, n, HD_TOK_DECODE_SKIP_SPECIAL, &text);
    hd_buf_cleanup(&text);
    free(ids);
    return 0;
}
