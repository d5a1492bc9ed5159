/*
 * tok_utf8.c - UTF-8 validation, lossy repair, and the streaming detokenizer.
 *
 * One rule is used everywhere text crosses the tokenizer boundary: a maximal ill-formed
 * subpart (Unicode ch. 3, "U+FFFD substitution of maximal subparts") becomes one U+FFFD.
 * That is what Python's bytes.decode("utf-8", "replace") and Rust's from_utf8_lossy do, so
 * encode agrees with HF on lossy-decoded input and the streaming detokenizer's output,
 * concatenated, equals a one-shot decode.
 */
#include "tok_impl.h"
#include "hadal/alloc.h"

#include <string.h>

static const char utf8_replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

int tok_utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    uint8_t lo = 0x80, hi = 0xBF;
    int need;
    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c == 0xE0) {
        need = 2;
        lo = 0xA0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
        need = 2;
    } else if (c == 0xED) {
        need = 2;
        hi = 0x9F;
    } else if (c == 0xF0) {
        need = 3;
        lo = 0x90;
    } else if (c >= 0xF1 && c <= 0xF3) {
        need = 3;
    } else if (c == 0xF4) {
        need = 3;
        hi = 0x8F;
    } else {
        return -1;
    }
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n) {
            return 0;
        }
        if (s[i] < lo || s[i] > hi) {
            return -i;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

bool tok_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* skip ASCII eight bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) {
                break;
            }
            i += 8;
        }
        if (i >= n) {
            break;
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int k = tok_utf8_seq(s + i, n - i);
        if (k <= 0) {
            return false;
        }
        i += (size_t)k;
    }
    return true;
}

void tok_utf8_lossy(const uint8_t *s, size_t n, hd_buf_t *out)
{
    size_t i = 0, run = 0;
    if (n == 0) {
        return; /* s may be NULL */
    }
    while (i < n) {
        int k = tok_utf8_seq(s + i, n - i);
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        hd_buf_append(out, s + run, i - run);
        hd_buf_append(out, utf8_replacement, 3);
        /* an incomplete tail is one maximal subpart */
        i = k == 0 ? n : i + (size_t)(-k);
        run = i;
    }
    hd_buf_append(out, s + run, n - run);
}

/* ---- streaming detokenizer ---- */

void hd_tok_stream_init(hd_tok_stream_t *s, hd_tok_h tok, unsigned flags)
{
    memset(s, 0, sizeof(*s));
    s->tok = tok;
    s->flags = flags;
}

/* Emit the complete part of @b (@n bytes), keep an incomplete tail in the stream. */
static void stream_emit(hd_tok_stream_t *s, const uint8_t *b, size_t n, hd_buf_t *out)
{
    size_t i = 0, run = 0;
    while (i < n) {
        int k = tok_utf8_seq(b + i, n - i);
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        hd_buf_append(out, b + run, i - run);
        if (k == 0) {
            /* a proper prefix of a valid sequence: at most 3 bytes, wait for the rest */
            memcpy(s->pend, b + i, n - i);
            s->n_pend = (uint8_t)(n - i);
            return;
        }
        hd_buf_append(out, utf8_replacement, 3);
        i += (size_t)(-k);
        run = i;
    }
    hd_buf_append(out, b + run, n - run);
}

hd_status_t hd_tok_stream_push(hd_tok_stream_t *s, int32_t id, hd_buf_t *out)
{
    const struct hd_tok *t = s->tok;
    if (id < 0 || (size_t)id >= t->n_ids || !(t->id_flags[id] & TOK_ID_KNOWN)) {
        return HD_OK;
    }
    if ((s->flags & HD_TOK_DECODE_SKIP_SPECIAL) && (t->id_flags[id] & TOK_ID_SPECIAL)) {
        return HD_OK;
    }
    const uint8_t *b = t->dec + t->dec_off[id];
    size_t n = t->dec_off[id + 1] - t->dec_off[id];
    while (s->n_pend > 0 && n > 0) {
        /* finish (or reject) the held sequence with the first bytes of this token */
        uint8_t tmp[8];
        size_t have = s->n_pend, take = n < 4 ? n : 4;
        memcpy(tmp, s->pend, have);
        memcpy(tmp + have, b, take);
        int k = tok_utf8_seq(tmp, have + take);
        if (k == 0) {
            memcpy(s->pend + have, b, n);
            s->n_pend = (uint8_t)(have + n);
            return out->failed ? HD_ERR_NO_MEMORY : HD_OK;
        }
        size_t used = k > 0 ? (size_t)k : (size_t)(-k);
        if (k > 0) {
            hd_buf_append(out, tmp, used);
        } else {
            hd_buf_append(out, utf8_replacement, 3);
        }
        /* the held bytes are a valid prefix, so the sequence ends inside this token */
        size_t from_tok = used > have ? used - have : 0;
        s->n_pend = 0;
        b += from_tok;
        n -= from_tok;
    }
    stream_emit(s, b, n, out);
    return out->failed ? HD_ERR_NO_MEMORY : HD_OK;
}

hd_status_t hd_tok_stream_flush(hd_tok_stream_t *s, hd_buf_t *out)
{
    if (s->n_pend > 0) {
        hd_buf_append(out, utf8_replacement, 3);
        s->n_pend = 0;
    }
    return out->failed ? HD_ERR_NO_MEMORY : HD_OK;
}
