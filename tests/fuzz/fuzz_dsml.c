/*
 * fuzz_dsml.c - libFuzzer target for the DeepSeek-V4 output parser (reasoning, content, DSML
 * tool calls) and the chat encoder. Byte 0 picks the mode: bit 0 thinking, bit 1 encode the
 * rest as a JSON request instead of parsing it. Parsing: any text parses without error;
 * every tool call's arguments are JSON; feeding the text in pieces (cut points drawn from
 * the input) gives exactly the deltas of feeding it whole; an unfinished feed never shows
 * content that the whole parse does not start with. Encoding: a request is accepted or
 * refused with a message, never anything else.
 */
#include "fuzz_common.h"
#include "hadal/chat.h"
#include "hadal/json.h"
#include "hadal/log.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    hd_buf_t reasoning;
    hd_buf_t content;
    hd_buf_t calls; /* name \1 args \1 complete \2 per call */
} acc_t;

static void on_delta(const hd_chat_delta_t *d, void *user)
{
    acc_t *a = user;
    switch (d->kind) {
    case HD_CHAT_DELTA_REASONING:
        hd_buf_append(&a->reasoning, d->text, d->len);
        break;
    case HD_CHAT_DELTA_CONTENT:
        hd_buf_append(&a->content, d->text, d->len);
        break;
    case HD_CHAT_DELTA_TOOL_START:
        hd_buf_append(&a->calls, d->text, d->len);
        hd_buf_puts(&a->calls, "\1");
        break;
    case HD_CHAT_DELTA_TOOL_ARGS:
        hd_buf_append(&a->calls, d->text, d->len);
        break;
    case HD_CHAT_DELTA_TOOL_END:
        hd_buf_puts(&a->calls, d->complete ? "\1" "1\2" : "\1" "0\2");
        break;
    }
}

static bool buf_eq(const hd_buf_t *a, const hd_buf_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static bool buf_prefix(const hd_buf_t *a, const hd_buf_t *b)
{
    return a->len <= b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static void acc_init(acc_t *a)
{
    hd_buf_init(&a->reasoning);
    hd_buf_init(&a->content);
    hd_buf_init(&a->calls);
}

static void acc_cleanup(acc_t *a)
{
    hd_buf_cleanup(&a->reasoning);
    hd_buf_cleanup(&a->content);
    hd_buf_cleanup(&a->calls);
}

static void parse_pieces(const char *s, size_t n, bool thinking, uint32_t seed, bool finish,
                         acc_t *a)
{
    hd_chat_parser_h p;
    if (hd_chat_parser_create(thinking, &p) != HD_OK) {
        abort();
    }
    size_t at = 0;
    while (at < n) {
        size_t step = seed ? 1 + (seed % 7) : n - at;
        seed = seed * 1103515245u + 12345u;
        if (step > n - at) {
            step = n - at;
        }
        if (hd_chat_parser_feed(p, s + at, step, on_delta, a) != HD_OK) {
            abort();
        }
        at += step;
    }
    if (finish && hd_chat_parser_finish(p, on_delta, a) != HD_OK) {
        abort();
    }
    hd_chat_parser_destroy(p);
}

static void fuzz_parse(const char *s, size_t n, bool thinking, uint32_t seed)
{
    hd_chat_msg_t msg;
    if (hd_chat_parse(s, n, thinking, &msg) != HD_OK) {
        abort();
    }
    /* arguments are JSON whenever the text is UTF-8 (the detokenizer's output always is) */
    for (size_t i = 0; utf8_valid((const uint8_t *)s, n) && i < msg.n_tool_calls; i++) {
        hd_json_t *j = NULL;
        char err[64];
        const char *args = msg.tool_calls[i].arguments;
        if (args == NULL || hd_json_parse(args, strlen(args), NULL, &j, err, sizeof(err)) != HD_OK ||
            j->type != HD_JSON_OBJECT) {
            fprintf(stderr, "fuzz_dsml: arguments not a JSON object: %s\n", args ? args : "(null)");
            abort();
        }
        hd_json_free(j);
    }
    acc_t whole, pieces, prefix;
    acc_init(&whole);
    acc_init(&pieces);
    acc_init(&prefix);
    parse_pieces(s, n, thinking, 0, true, &whole);
    parse_pieces(s, n, thinking, seed | 1, true, &pieces);
    if (!buf_eq(&whole.reasoning, &pieces.reasoning) || !buf_eq(&whole.content, &pieces.content) ||
        !buf_eq(&whole.calls, &pieces.calls) || !buf_eq(&whole.content, &msg.content) ||
        !buf_eq(&whole.reasoning, &msg.reasoning)) {
        abort();
    }
    /* an unfinished prefix: what it emitted is final */
    size_t cut = n ? seed % (n + 1) : 0;
    parse_pieces(s, cut, thinking, seed, false, &prefix);
    if (!buf_prefix(&prefix.content, &whole.content) ||
        !buf_prefix(&prefix.reasoning, &whole.reasoning)) {
        abort();
    }
    acc_cleanup(&whole);
    acc_cleanup(&pieces);
    acc_cleanup(&prefix);
    hd_chat_msg_cleanup(&msg);
}

static void fuzz_encode(const char *s, size_t n, bool thinking, uint8_t flags)
{
    hd_chat_numbers_t *nums = NULL;
    hd_json_t *doc = NULL;
    char err[256];
    if (hd_chat_numbers_create(&nums) != HD_OK) {
        abort();
    }
    if (hd_chat_json_parse(s, n, nums, &doc, err, sizeof(err)) == HD_OK) {
        hd_chat_request_t req = {
            .messages = doc->type == HD_JSON_OBJECT ? hd_json_get(doc, "messages") : doc,
            .tools = hd_json_get(doc, "tools"),
            .response_format = hd_json_get(doc, "response_format"),
            .numbers = nums,
            .mode = thinking ? HD_CHAT_MODE_THINKING : HD_CHAT_MODE_CHAT,
            .effort = (flags >> 2) % 3,
            .keep_reasoning = (flags >> 4) & 1,
            .no_bos = (flags >> 5) & 1,
        };
        hd_buf_t out;
        hd_buf_init(&out);
        err[0] = '\0';
        hd_status_t st = hd_chat_encode(&req, &out, err, sizeof(err));
        if (st != HD_OK && (st != HD_ERR_INVALID_PARAM || err[0] == '\0')) {
            abort();
        }
        hd_buf_cleanup(&out);
        hd_json_free(doc);
    }
    hd_chat_numbers_destroy(nums);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        hd_log_set(fuzz_quiet, NULL);
        init = 1;
    }
    if (size == 0) {
        return 0;
    }
    uint8_t flags = data[0];
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < n && i < 64; i++) {
        seed = (seed ^ (uint8_t)s[i]) * 16777619u;
    }
    if (flags & 2) {
        fuzz_encode(s, n, flags & 1, flags);
    } else {
        fuzz_parse(s, n, flags & 1, seed);
    }
    return 0;
}
