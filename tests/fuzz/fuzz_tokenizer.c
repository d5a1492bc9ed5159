/*
 * fuzz_tokenizer.c - libFuzzer target for the byte-level BPE tokenizer (the vendored
 * DeepSeek-V4 tokenizer.json, found next to this source file). For any bytes x: every id is
 * in range, decode(encode(x)) is valid UTF-8 and equals x when x is valid UTF-8, encoding that
 * text again gives the same ids, the streaming detokenizer (one id at a time) produces the
 * same text and never a split character, and the same holds with special tokens as text.
 * The input read as little-endian int32 ids must decode (whole and streamed) the same way.
 */
#include "fuzz_common.h"
#include "hadal/json.h"
#include "hadal/log.h"
#include "hadal/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
