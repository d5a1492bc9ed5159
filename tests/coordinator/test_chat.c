/*
 * test_chat.c - DeepSeek-V4 chat encoding and output parsing against the official code.
 *
 * tests/coordinator/data/chat/ holds conversations (cases/NAME.json) and what DeepSeek's own
 * encoding_dsv4.py produced for each in four modes (expected/NAME.MODE.txt: chat, think-high,
 * think-max, think-keep; "!error" where it raises), plus completions with the official
 * parser's results (parse_expected.json). All written by
 * tools/reference/tokenizer/make_chat_expected.py; see data/chat/PROVENANCE.md.
 * The prompts must match byte for byte; well-formed completions must parse to exactly the
 * official reasoning/content/tool calls; every completion must stream to the same result
 * however it is split, never leaking an open DSML block as content.
 */
#include "hd_test.h"

#include "hadal/alloc.h"
#include "hadal/chat.h"
#include "hadal/json.h"
#include "hadal/tokenizer.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char src_dir[1024];

__attribute__((constructor)) static void load_src_dir(void)
{
    const char *s = getenv("HD_SOURCE_DIR");
    snprintf(src_dir, sizeof(src_dir), "%s", s ? s : ".");
}

static char *read_data(const char *rel, size_t *len_p)
{
    char path[1400], *data = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/tests/coordinator/data/chat/%s", src_dir, rel);
    if (hd_file_read_all(path, 1u << 26, &data, &len) != HD_OK) {
        return NULL;
    }
    *len_p = len;
    return data;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names (without .json) of the conversation files. */
static size_t list_cases(char ***names_p)
{
    char path[1200];
    snprintf(path, sizeof(path), "%s/tests/coordinator/data/chat/cases", src_dir);
    DIR *d = opendir(path);
    char **names = NULL;
    size_t n = 0;
    HD_CHECK_MSG(d != NULL, "cannot open %s", path);
    if (d == NULL) {
        *names_p = NULL;
        return 0;
    }
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        size_t l = strlen(de->d_name);
        if (l > 5 && strcmp(de->d_name + l - 5, ".json") == 0) {
            names = realloc(names, (n + 1) * sizeof(*names));
            names[n++] = strndup(de->d_name, l - 5);
        }
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_str);
    *names_p = names;
    return n;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

/* ---- encoding ---- */

static const struct {
    const char *name;
    hd_chat_mode_t mode;
    hd_chat_effort_t effort;
    bool keep;
} modes[] = {
    {"chat", HD_CHAT_MODE_CHAT, HD_CHAT_EFFORT_DEFAULT, false},
    {"think-high", HD_CHAT_MODE_THINKING, HD_CHAT_EFFORT_HIGH, false},
    {"think-max", HD_CHAT_MODE_THINKING, HD_CHAT_EFFORT_MAX, false},
    {"think-keep", HD_CHAT_MODE_THINKING, HD_CHAT_EFFORT_DEFAULT, true},
};

/* Print where two byte strings first differ (a short window of each). */
static void show_diff(const char *what, const char *a, size_t na, const char *b, size_t nb)
{
    size_t k = 0;
    while (k < na && k < nb && a[k] == b[k]) {
        k++;
    }
    size_t from = k > 40 ? k - 40 : 0;
    fprintf(stderr, "  %s: differs at byte %zu (lengths %zu vs %zu)\n    got:  \"%.*s\"\n"
                    "    want: \"%.*s\"\n",
            what, k, na, nb, (int)((na - from) < 100 ? na - from : 100), a + from,
            (int)((nb - from) < 100 ? nb - from : 100), b + from);
}

HD_TEST(chat_encode_matches_official)
{
    char **names;
    size_t n = list_cases(&names), checked = 0, errors = 0, bad = 0;
    HD_CHECK_MSG(n >= 30, "only %zu conversations", n);
    for (size_t i = 0; i < n; i++) {
        char rel[600], err[256];
        size_t len = 0;
        snprintf(rel, sizeof(rel), "cases/%s.json", names[i]);
        char *text = read_data(rel, &len);
        hd_chat_numbers_t *nums = NULL;
        hd_json_t *doc = NULL;
        HD_CHECK_TRUE(text != NULL);
        HD_CHECK_TRUE(hd_chat_numbers_create(&nums) == HD_OK);
        HD_CHECK_MSG(text && hd_chat_json_parse(text, len, nums, &doc, err, sizeof(err)) == HD_OK,
                     "%s: %s", rel, err);
        for (size_t m = 0; doc != NULL && m < sizeof(modes) / sizeof(modes[0]); m++) {
            char erel[700];
            size_t elen = 0;
            snprintf(erel, sizeof(erel), "expected/%s.%s.txt", names[i], modes[m].name);
            char *want = read_data(erel, &elen);
            HD_CHECK_MSG(want != NULL, "missing %s", erel);
            if (want == NULL) {
                continue;
            }
            hd_chat_request_t req = {
                .messages = hd_json_get(doc, "messages"),
                .tools = hd_json_get(doc, "tools"),
                .response_format = hd_json_get(doc, "response_format"),
                .numbers = nums,
                .mode = modes[m].mode,
                .effort = modes[m].effort,
                .keep_reasoning = modes[m].keep,
            };
            hd_buf_t prompt;
            hd_buf_init(&prompt);
            err[0] = '\0';
            hd_status_t st = hd_chat_encode(&req, &prompt, err, sizeof(err));
            bool want_err = elen >= 6 && memcmp(want, "!error", 6) == 0;
            checked++;
            if (want_err) {
                errors++;
                HD_CHECK_MSG(st == HD_ERR_INVALID_PARAM, "%s: the official encoder refuses "
                             "this (%.*s) but hd_chat_encode returned %d", erel,
                             (int)elen - 1, want, (int)st);
                HD_CHECK_TRUE(st == HD_OK || err[0] != '\0');
            } else if (st != HD_OK) {
                bad++;
                HD_CHECK_MSG(false, "%s: hd_chat_encode failed: %s", erel, err);
            } else if (prompt.len != elen || memcmp(prompt.data, want, elen) != 0) {
                bad++;
                show_diff(erel, prompt.data, prompt.len, want, elen);
            }
            hd_buf_cleanup(&prompt);
            hd_free(want);
        }
        hd_json_free(doc);
        hd_chat_numbers_destroy(nums);
        hd_free(text);
    }
    HD_CHECK_MSG(bad == 0, "%zu of %zu prompts differ from encoding_dsv4.py", bad, checked);
    HD_CHECK_MSG(checked >= 120 && errors >= 4, "checked %zu prompts, %zu refusals", checked,
                 errors);
    printf("  %zu conversations, %zu prompts (%zu official refusals) byte-identical\n", n,
           checked, errors);
    free_names(names, n);
}

/* The template text next to the test data was written by the official module itself. */
HD_TEST(chat_tools_template_verbatim)
{
    size_t len = 0;
    char *want = read_data("tools_template.txt", &len);
    HD_CHECK_TRUE(want != NULL);
    if (want != NULL) {
        HD_CHECK_TRUE(len == strlen(hd_chat_tools_template) &&
                      memcmp(want, hd_chat_tools_template, len) == 0);
    }
    hd_free(want);
    /* spec §8.2: the think-max preamble: one \n after each of the first two sentences */
    const char *p = hd_chat_effort_max_preamble;
    HD_CHECK_TRUE(strncmp(p, "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n",
                          64) == 0);
    size_t n = strlen(p);
    HD_CHECK_TRUE(n > 2 && p[n - 1] == '\n' && p[n - 2] == '\n' && p[n - 3] == '.');
}

HD_TEST(chat_mode_names)
{
    hd_chat_mode_t m = HD_CHAT_MODE_CHAT;
    hd_chat_effort_t e = HD_CHAT_EFFORT_DEFAULT;
    HD_CHECK_TRUE(hd_chat_mode_parse("think-max", &m, &e) && m == HD_CHAT_MODE_THINKING &&
                  e == HD_CHAT_EFFORT_MAX);
    HD_CHECK_TRUE(hd_chat_mode_parse("non-think", &m, &e) && m == HD_CHAT_MODE_CHAT);
    HD_CHECK_TRUE(hd_chat_mode_parse("think-high", &m, &e) && m == HD_CHAT_MODE_THINKING);
    HD_CHECK_TRUE(!hd_chat_mode_parse("thonk", &m, &e));
    HD_CHECK_TRUE(hd_chat_effort_parse("high", &e) && e == HD_CHAT_EFFORT_HIGH);
    HD_CHECK_TRUE(hd_chat_effort_parse("none", &e) && e == HD_CHAT_EFFORT_DEFAULT);
    HD_CHECK_TRUE(!hd_chat_effort_parse("low", &e));
}

/* Spec §8.2 strings for "hello" in the three modes. */
HD_TEST(chat_spec_modes)
{
    const char *text = "[{\"role\": \"user\", \"content\": \"hello\"}]";
    hd_json_t *msgs = NULL;
    char err[128];
    HD_CHECK_TRUE(hd_chat_json_parse(text, strlen(text), NULL, &msgs, err, sizeof(err)) == HD_OK);
    struct {
        hd_chat_mode_t mode;
        hd_chat_effort_t effort;
        const char *want_tail;
    } t[] = {
        {HD_CHAT_MODE_CHAT, HD_CHAT_EFFORT_DEFAULT, HD_CHAT_USER "hello" HD_CHAT_ASSISTANT "</think>"},
        {HD_CHAT_MODE_THINKING, HD_CHAT_EFFORT_DEFAULT, HD_CHAT_USER "hello" HD_CHAT_ASSISTANT "<think>"},
        {HD_CHAT_MODE_THINKING, HD_CHAT_EFFORT_HIGH, HD_CHAT_USER "hello" HD_CHAT_ASSISTANT "<think>"},
        {HD_CHAT_MODE_CHAT, HD_CHAT_EFFORT_MAX, HD_CHAT_USER "hello" HD_CHAT_ASSISTANT "</think>"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        hd_chat_request_t req = {.messages = msgs, .mode = t[i].mode, .effort = t[i].effort};
        hd_buf_t out;
        hd_buf_init(&out);
        HD_CHECK_TRUE(hd_chat_encode(&req, &out, err, sizeof(err)) == HD_OK);
        hd_buf_t want;
        hd_buf_init(&want);
        hd_buf_puts(&want, HD_CHAT_BOS);
        hd_buf_puts(&want, t[i].want_tail);
        HD_CHECK_MSG(out.len == want.len && memcmp(out.data, want.data, out.len) == 0,
                     "mode %zu: \"%s\"", i, out.data);
        hd_buf_cleanup(&want);
        hd_buf_cleanup(&out);
    }
    /* think-max: the preamble right after BOS; --no-bos drops BOS only */
    hd_chat_request_t req = {.messages = msgs, .mode = HD_CHAT_MODE_THINKING,
                             .effort = HD_CHAT_EFFORT_MAX, .no_bos = true};
    hd_buf_t out;
    hd_buf_init(&out);
    HD_CHECK_TRUE(hd_chat_encode(&req, &out, err, sizeof(err)) == HD_OK);
    size_t pl = strlen(hd_chat_effort_max_preamble);
    HD_CHECK_TRUE(out.len > pl && memcmp(out.data, hd_chat_effort_max_preamble, pl) == 0);
    HD_CHECK_STR_EQ(out.data + pl, HD_CHAT_USER "hello" HD_CHAT_ASSISTANT "<think>");
    hd_buf_cleanup(&out);
    hd_json_free(msgs);
}

/* Requests the encoder must refuse with a message rather than crash. */
HD_TEST(chat_encode_refusals)
{
    static const char *bad[] = {
        "{}",
        "[1]",
        "[{\"content\": \"no role\"}]",
        "[{\"role\": 5}]",
        "[{\"role\": \"user\", \"content\": 5}]",
        "[{\"role\": \"user\", \"content\": [5]}]",
        "[{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": {\"not\": \"array\"}}]",
        "[{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"arguments\": \"{}\"}}]}]",
        "[{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"name\": \"f\"}}]}]",
        ("[{\"role\": \"assistant\", \"tool_calls\": [{\"function\": {\"name\": \"f\", "
         "\"arguments\": \"\\\"str\\\"\"}}]}]"),
        "[{\"role\": \"system\", \"tools\": {\"a\": 1}}]",
        "[{\"role\": \"system\", \"tools\": [{\"type\": \"function\"}]}]",
        "[{\"role\": \"tool\", \"tool_call_id\": 7, \"content\": \"x\"}]",
        "[{\"role\": \"user\", \"content\": \"x\", \"task\": 3}]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        hd_json_t *doc = NULL;
        char err[256];
        HD_CHECK_TRUE(hd_chat_json_parse(bad[i], strlen(bad[i]), NULL, &doc, err, sizeof(err)) ==
                      HD_OK);
        for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
            hd_chat_request_t req = {.messages = doc, .mode = modes[m].mode};
            hd_buf_t out;
            hd_buf_init(&out);
            err[0] = '\0';
            hd_status_t st = hd_chat_encode(&req, &out, err, sizeof(err));
            HD_CHECK_MSG(st == HD_ERR_INVALID_PARAM && err[0] != '\0',
                         "case %zu mode %s: status %d", i, modes[m].name, (int)st);
            hd_buf_cleanup(&out);
        }
        hd_json_free(doc);
    }
}

/* Every allocation failure inside the encoder is reported as HD_ERR_NO_MEMORY. */
HD_TEST(chat_encode_oom)
{
    size_t len = 0;
    char *text = read_data("cases/07_tool_call_values.json", &len), err[256];
    hd_chat_numbers_t *nums = NULL;
    hd_json_t *doc = NULL;
    HD_CHECK_TRUE(text != NULL);
    HD_CHECK_TRUE(hd_chat_numbers_create(&nums) == HD_OK);
    HD_CHECK_TRUE(text && hd_chat_json_parse(text, len, nums, &doc, err, sizeof(err)) == HD_OK);
    if (doc == NULL) {
        hd_chat_numbers_destroy(nums);
        hd_free(text);
        return;
    }
    hd_chat_request_t req = {.messages = hd_json_get(doc, "messages"), .numbers = nums,
                             .mode = HD_CHAT_MODE_THINKING};
    hd_buf_t ref;
    hd_buf_init(&ref);
    HD_CHECK_TRUE(hd_chat_encode(&req, &ref, err, sizeof(err)) == HD_OK);
    int n_oom = 0, n_ok = 0;
    for (long k = 0; k < 2000 && n_ok == 0; k++) {
        hd_buf_t out;
        hd_buf_init(&out);
        hd_alloc_fail_after(k);
        hd_status_t st = hd_chat_encode(&req, &out, err, sizeof(err));
        hd_alloc_fail_after(-1);
        HD_CHECK_MSG(st == HD_OK || st == HD_ERR_NO_MEMORY, "fail after %ld: status %d", k,
                     (int)st);
        /* success means the same prompt, never a silently different one */
        HD_CHECK_MSG(st != HD_OK || (out.len == ref.len && memcmp(out.data, ref.data,
                                                                   ref.len) == 0),
                     "fail after %ld: a different prompt", k);
        n_oom += st == HD_ERR_NO_MEMORY;
        n_ok += st == HD_OK;
        hd_buf_cleanup(&out);
    }
    HD_CHECK_TRUE(n_oom > 10 && n_ok == 1);
    hd_buf_cleanup(&ref);
    hd_json_free(doc);
    hd_chat_numbers_destroy(nums);
    hd_free(text);
}

/*
 * Numbers of a request print as Python prints what json.loads made of them: ints exact at
 * any size, floats as repr (shortest round trip, "1e+16", "1e-07", "100000.0"), overflow as
 * Infinity. numbers_expected.json: [literal, json.dumps(json.loads(literal))] from Python.
 */
HD_TEST(chat_json_numbers_like_python)
{
    size_t len = 0, bad = 0;
    char *text = read_data("numbers_expected.json", &len), err[128];
    hd_json_t *pairs = NULL;
    HD_CHECK_TRUE(text != NULL);
    HD_CHECK_TRUE(text && hd_json_parse(text, len, NULL, &pairs, err, sizeof(err)) == HD_OK);
    for (size_t i = 0; pairs != NULL && i < pairs->n; i++) {
        const hd_json_t *lit = pairs->kids[i]->kids[0], *want = pairs->kids[i]->kids[1];
        hd_chat_numbers_t *nums = NULL;
        hd_json_t *v = NULL;
        hd_buf_t doc, out;
        hd_buf_init(&doc);
        hd_buf_init(&out);
        hd_buf_printf(&doc, "{\"k\": [%s]}", lit->str);
        HD_CHECK_TRUE(hd_chat_numbers_create(&nums) == HD_OK);
        HD_CHECK_TRUE(hd_chat_json_parse(doc.data, doc.len, nums, &v, err, sizeof(err)) == HD_OK);
        if (v != NULL) {
            hd_chat_json_dump(v, nums, &out);
            hd_buf_t w;
            hd_buf_init(&w);
            hd_buf_printf(&w, "{\"k\": [%s]}", want->str);
            if (strcmp(out.data, w.data) != 0 && bad++ < 10) {
                fprintf(stderr, "  %s: got %s, Python %s\n", lit->str, out.data, want->str);
            }
            hd_buf_cleanup(&w);
        }
        hd_json_free(v);
        hd_chat_numbers_destroy(nums);
        hd_buf_cleanup(&doc);
        hd_buf_cleanup(&out);
    }
    HD_CHECK_MSG(bad == 0, "%zu numbers print differently from Python", bad);
    HD_CHECK_TRUE(pairs != NULL && pairs->n > 1500);
    hd_json_free(pairs);
    hd_free(text);
}

/* ---- parsing ---- */

typedef struct {
    hd_buf_t reasoning;
    hd_buf_t content;
    hd_buf_t calls; /* "name\x01args\x01complete\x02" per call */
    size_t n_starts;
    size_t n_ends;
    bool bad_order; /* a delta for the wrong call index, or args outside a call */
    bool in_call;
} deltas_t;

static void deltas_init(deltas_t *d)
{
    memset(d, 0, sizeof(*d));
    hd_buf_init(&d->reasoning);
    hd_buf_init(&d->content);
    hd_buf_init(&d->calls);
}

static void deltas_cleanup(deltas_t *d)
{
    hd_buf_cleanup(&d->reasoning);
    hd_buf_cleanup(&d->content);
    hd_buf_cleanup(&d->calls);
}

static void on_delta(const hd_chat_delta_t *d, void *user)
{
    deltas_t *x = user;
    switch (d->kind) {
    case HD_CHAT_DELTA_REASONING:
        hd_buf_append(&x->reasoning, d->text, d->len);
        x->bad_order |= x->content.len > 0 || x->n_starts > 0;
        break;
    case HD_CHAT_DELTA_CONTENT:
        hd_buf_append(&x->content, d->text, d->len);
        x->bad_order |= x->in_call;
        break;
    case HD_CHAT_DELTA_TOOL_START:
        x->bad_order |= x->in_call || d->tool_index != x->n_starts;
        x->n_starts++;
        x->in_call = true;
        hd_buf_append(&x->calls, d->text, d->len);
        hd_buf_puts(&x->calls, "\x01");
        break;
    case HD_CHAT_DELTA_TOOL_ARGS:
        x->bad_order |= !x->in_call || d->tool_index + 1 != x->n_starts;
        hd_buf_append(&x->calls, d->text, d->len);
        break;
    case HD_CHAT_DELTA_TOOL_END:
        x->bad_order |= !x->in_call || d->tool_index + 1 != x->n_starts;
        x->in_call = false;
        x->n_ends++;
        hd_buf_puts(&x->calls, d->complete ? "\x01" "1\x02" : "\x01" "0\x02");
        break;
    }
}

static bool same_buf(const hd_buf_t *a, const hd_buf_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static bool deltas_same(const deltas_t *a, const deltas_t *b)
{
    return same_buf(&a->reasoning, &b->reasoning) && same_buf(&a->content, &b->content) &&
           same_buf(&a->calls, &b->calls);
}

/* Feed @text split at @cuts (sorted offsets), then finish. */
static void parse_split(const char *text, size_t len, bool thinking, const size_t *cuts,
                        size_t n_cuts, bool finish, deltas_t *d)
{
    hd_chat_parser_h p = NULL;
    HD_CHECK_TRUE(hd_chat_parser_create(thinking, &p) == HD_OK);
    if (p == NULL) {
        return;
    }
    size_t at = 0;
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : len;
        HD_CHECK_TRUE(hd_chat_parser_feed(p, text + at, to - at, on_delta, d) == HD_OK);
        at = to;
    }
    if (finish) {
        HD_CHECK_TRUE(hd_chat_parser_finish(p, on_delta, d) == HD_OK);
    }
    hd_chat_parser_destroy(p);
}

typedef struct {
    const hd_json_t *all;
    size_t n;
} parse_data_t;

static hd_json_t *load_parse_data(char **text_p)
{
    size_t len = 0;
    char err[200];
    hd_json_t *root = NULL;
    *text_p = read_data("parse_expected.json", &len);
    HD_CHECK_TRUE(*text_p != NULL);
    if (*text_p == NULL) {
        return NULL;
    }
    HD_CHECK_MSG(hd_json_parse(*text_p, len, NULL, &root, err, sizeof(err)) == HD_OK, "%s", err);
    return root;
}

HD_TEST(chat_parse_matches_official)
{
    char *text = NULL;
    hd_json_t *root = load_parse_data(&text);
    size_t ok = 0, refused = 0, bad = 0, deviations = 0;
    for (size_t i = 0; root != NULL && i < root->n; i++) {
        const hd_json_t *c = root->kids[i], *exp = hd_json_get(c, "expect");
        const hd_json_t *t = hd_json_get(c, "text");
        const char *name = hd_json_get_str(c, "name");
        bool thinking = false;
        hd_json_get_bool(c, "thinking", &thinking);
        hd_chat_msg_t msg;
        HD_CHECK_TRUE(hd_chat_parse(t->str, t->str_len, thinking, &msg) == HD_OK);
        if (hd_json_get(exp, "error") != NULL) {
            /* the official parser raises. A ValueError is broken DSML (parse_tool_calls):
               ours must say so (malformed, an incomplete call, or no EOS: truncated). The
               AssertionErrors are checks we relax on purpose (docs/TOKENIZER.md): missing
               </think> or EOS, text after the block or after EOS, markers in content. */
            refused++;
            const char *why = hd_json_get_str(exp, "error");
            bool flagged = msg.malformed || !msg.eos;
            for (size_t k = 0; k < msg.n_tool_calls; k++) {
                flagged |= !msg.tool_calls[k].complete;
            }
            HD_CHECK_MSG(strncmp(why, "ValueError", 10) != 0 || flagged,
                         "%s (thinking %d): official %s, we parsed it cleanly", name, thinking,
                         why);
            for (size_t k = 0; k < msg.n_tool_calls; k++) {
                hd_json_t *a = NULL;
                char e2[64];
                const char *args = msg.tool_calls[k].arguments;
                HD_CHECK_MSG(args != NULL && hd_json_parse(args, strlen(args), NULL, &a, e2,
                                                           sizeof(e2)) == HD_OK,
                             "%s: arguments are not JSON: %s", name, args ? args : "(null)");
                hd_json_free(a);
            }
            hd_chat_msg_cleanup(&msg);
            continue;
        }
        const char *want_r = hd_json_get_str(exp, "reasoning_content");
        const char *want_c = hd_json_get_str(exp, "content");
        const hd_json_t *calls = hd_json_get(exp, "tool_calls");
        bool same = strcmp(msg.reasoning.data ? msg.reasoning.data : "", want_r) == 0 &&
                    strcmp(msg.content.data ? msg.content.data : "", want_c) == 0 &&
                    msg.n_tool_calls == calls->n && msg.eos && !msg.malformed &&
                    msg.reasoning_closed == thinking;
        for (size_t k = 0; same && k < calls->n; k++) {
            const char *want_a = hd_json_get_str(calls->kids[k], "arguments");
            hd_json_t *a = NULL;
            char e2[64];
            same = strcmp(msg.tool_calls[k].name, hd_json_get_str(calls->kids[k], "name")) == 0 &&
                   msg.tool_calls[k].complete;
            if (hd_json_parse(want_a, strlen(want_a), NULL, &a, e2, sizeof(e2)) == HD_OK) {
                same &= strcmp(msg.tool_calls[k].arguments, want_a) == 0;
            } else {
                /* string="false" with a non-JSON value: the official text is not JSON; ours
                   quotes the value so the arguments stay JSON */
                hd_json_t *b = NULL;
                same &= hd_json_parse(msg.tool_calls[k].arguments,
                                      strlen(msg.tool_calls[k].arguments), NULL, &b, e2,
                                      sizeof(e2)) == HD_OK;
                hd_json_free(b);
                deviations++;
            }
            hd_json_free(a);
        }
        if (!same) {
            bad++;
            fprintf(stderr, "  %s (thinking %d): reasoning \"%s\" content \"%s\" calls %zu "
                            "malformed %d eos %d\n",
                    name, thinking, msg.reasoning.data ? msg.reasoning.data : "",
                    msg.content.data ? msg.content.data : "", msg.n_tool_calls, msg.malformed,
                    msg.eos);
            for (size_t k = 0; k < msg.n_tool_calls; k++) {
                fprintf(stderr, "    call %s %s\n", msg.tool_calls[k].name,
                        msg.tool_calls[k].arguments ? msg.tool_calls[k].arguments : "(null)");
            }
        }
        ok++;
        hd_chat_msg_cleanup(&msg);
    }
    HD_CHECK_MSG(bad == 0, "%zu of %zu well-formed completions parse differently", bad, ok);
    HD_CHECK_MSG(ok >= 40 && refused >= 20, "%zu parsed, %zu refused", ok, refused);
    printf("  %zu completions equal to the official parse (%zu with non-JSON values quoted), "
           "%zu official refusals handled\n", ok, deviations, refused);
    hd_json_free(root);
    hd_free(text);
}

/*
 * Streaming: for every completion, a split at every byte offset (two feeds), byte-by-byte
 * feeding, and the whole text at once give the same deltas. Without finish(), a text cut
 * anywhere never shows DSML markup as content.
 */
HD_TEST(chat_parse_stream_every_split)
{
    char *text = NULL;
    hd_json_t *root = load_parse_data(&text);
    size_t n_runs = 0, bad = 0, leaks = 0, order = 0;
    for (size_t i = 0; root != NULL && i < root->n; i++) {
        const hd_json_t *c = root->kids[i];
        const hd_json_t *t = hd_json_get(c, "text");
        bool thinking = false;
        hd_json_get_bool(c, "thinking", &thinking);
        const char *s = t->str;
        size_t len = t->str_len;
        deltas_t whole;
        deltas_init(&whole);
        parse_split(s, len, thinking, NULL, 0, true, &whole);
        order += whole.bad_order || whole.n_starts != whole.n_ends;
        /* byte by byte */
        size_t *cuts = malloc((len + 1) * sizeof(size_t));
        for (size_t k = 0; k < len; k++) {
            cuts[k] = k + 1;
        }
        deltas_t bytes;
        deltas_init(&bytes);
        parse_split(s, len, thinking, cuts, len ? len - 1 : 0, true, &bytes);
        bad += !deltas_same(&whole, &bytes);
        order += bytes.bad_order;
        deltas_cleanup(&bytes);
        free(cuts);
        for (size_t k = 0; k <= len; k++) {
            deltas_t two, prefix;
            deltas_init(&two);
            parse_split(s, len, thinking, &k, 1, true, &two);
            n_runs++;
            if (!deltas_same(&whole, &two) && bad++ < 5) {
                fprintf(stderr, "  %s (thinking %d): split at %zu differs\n",
                        hd_json_get_str(c, "name"), thinking, k);
            }
            deltas_cleanup(&two);
            /* the prefix alone, unfinished: content so far is a prefix of the final content
               and never contains DSML markup */
            deltas_init(&prefix);
            parse_split(s, k, thinking, NULL, 0, false, &prefix);
            bool is_prefix = prefix.content.len <= whole.content.len &&
                             (prefix.content.len == 0 ||
                              memcmp(prefix.content.data, whole.content.data,
                                     prefix.content.len) == 0);
            bool dsml_leak = prefix.content.len > 0 &&
                             strstr(prefix.content.data, "｜DSML｜") != NULL &&
                             (whole.content.len == 0 ||
                              strstr(whole.content.data, "｜DSML｜") == NULL);
            if ((!is_prefix || dsml_leak) && leaks++ < 5) {
                fprintf(stderr, "  %s (thinking %d): prefix of %zu bytes emitted content that "
                                "is not final (%s)\n",
                        hd_json_get_str(c, "name"), thinking, k, prefix.content.data);
            }
            deltas_cleanup(&prefix);
        }
        deltas_cleanup(&whole);
    }
    HD_CHECK_MSG(bad == 0, "%zu splits differ from the whole-text parse", bad);
    HD_CHECK_MSG(leaks == 0, "%zu prefixes emitted content later retracted", leaks);
    HD_CHECK_MSG(order == 0, "%zu delta sequences out of order", order);
    printf("  %zu split parses\n", n_runs);
    hd_json_free(root);
    hd_free(text);
}

/* Render tool calls with the encoder's DSML writer, parse them back. */
HD_TEST(chat_tool_call_round_trip)
{
    const char *calls_json =
        "[{\"id\": \"1\", \"type\": \"function\", \"function\": {\"name\": \"search\", "
        "\"arguments\": \"{\\\"q\\\": \\\"caf\\u00e9 \\\\\\\"x\\\\\\\" \\\\n <b>\\\", "
        "\\\"k\\\": 3, \\\"w\\\": 0.5, \\\"on\\\": true, \\\"tags\\\": [\\\"a\\\", null], "
        "\\\"o\\\": {\\\"z\\\": 1.0}}\"}},"
        " {\"id\": \"2\", \"type\": \"function\", \"function\": {\"name\": \"noop\", "
        "\"arguments\": \"{}\"}}]";
    hd_chat_numbers_t *nums = NULL;
    hd_json_t *calls = NULL;
    char err[256];
    HD_CHECK_TRUE(hd_chat_numbers_create(&nums) == HD_OK);
    HD_CHECK_TRUE(hd_chat_json_parse(calls_json, strlen(calls_json), nums, &calls, err,
                                     sizeof(err)) == HD_OK);
    if (calls == NULL) {
        hd_chat_numbers_destroy(nums);
        return;
    }
    hd_buf_t out;
    hd_buf_init(&out);
    hd_buf_puts(&out, "why</think>Calling.");
    HD_CHECK_TRUE(hd_chat_render_tool_calls(calls, nums, &out, err, sizeof(err)) == HD_OK);
    hd_buf_puts(&out, HD_CHAT_EOS);
    hd_chat_msg_t msg;
    HD_CHECK_TRUE(hd_chat_parse(out.data, out.len, true, &msg) == HD_OK);
    HD_CHECK_STR_EQ(msg.reasoning.data, "why");
    HD_CHECK_STR_EQ(msg.content.data, "Calling.");
    HD_CHECK_INT_EQ(msg.n_tool_calls, 2);
    if (msg.n_tool_calls == 2) {
        HD_CHECK_STR_EQ(msg.tool_calls[0].name, "search");
        /* the official parser's JSON: string values re-escaped, others verbatim */
        HD_CHECK_STR_EQ(msg.tool_calls[0].arguments,
                        "{\"q\": \"café \\\"x\\\" \\n <b>\", \"k\": 3, \"w\": 0.5, \"on\": true, "
                        "\"tags\": [\"a\", null], \"o\": {\"z\": 1.0}}");
        HD_CHECK_TRUE(msg.tool_calls[0].complete && msg.tool_calls[1].complete);
        HD_CHECK_STR_EQ(msg.tool_calls[1].name, "noop");
        HD_CHECK_STR_EQ(msg.tool_calls[1].arguments, "{}");
        /* the arguments are JSON and hold the original values */
        hd_json_t *a = NULL;
        HD_CHECK_TRUE(hd_json_parse(msg.tool_calls[0].arguments,
                                    strlen(msg.tool_calls[0].arguments), NULL, &a, err,
                                    sizeof(err)) == HD_OK);
        HD_CHECK_STR_EQ(hd_json_get_str(a, "q"), "café \"x\" \n <b>");
        hd_json_free(a);
    }
    HD_CHECK_TRUE(msg.eos && !msg.malformed && msg.reasoning_closed);
    hd_chat_msg_cleanup(&msg);
    hd_buf_cleanup(&out);
    hd_json_free(calls);
    hd_chat_numbers_destroy(nums);
}

/* Truncated and malformed DSML: no crash, nothing lost, flags say what happened. */
HD_TEST(chat_parse_truncated_and_malformed)
{
    const char *tc = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n"
                     "<｜DSML｜parameter name=\"a\" string=\"true\">val</｜DSML｜parameter>\n"
                     "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    size_t n = strlen(tc);
    /* every truncation of a well-formed block (generation stopped mid-call): the markup
       never shows up as content, the call (once its name is complete) is returned with
       complete=false and JSON arguments; a cut inside the opening marker is plain text */
    size_t marker = strlen("\n\n<｜DSML｜tool_calls");
    for (size_t k = 0; k <= n; k++) {
        hd_buf_t t, want;
        hd_buf_init(&t);
        hd_buf_init(&want);
        hd_buf_puts(&t, "answer");
        hd_buf_append(&t, tc, k);
        hd_buf_puts(&want, "answer");
        if (k < marker) {
            hd_buf_append(&want, tc, k);
        }
        hd_chat_msg_t msg;
        HD_CHECK_TRUE(hd_chat_parse(t.data, t.len, false, &msg) == HD_OK);
        HD_CHECK_MSG(strcmp(msg.content.data, want.data) == 0, "cut %zu: content \"%s\"", k,
                     msg.content.data);
        HD_CHECK_TRUE(!msg.malformed && !msg.eos && msg.n_tool_calls <= 1);
        if (msg.n_tool_calls == 1) {
            hd_json_t *a = NULL;
            char e2[64];
            const char *args = msg.tool_calls[0].arguments;
            HD_CHECK_STR_EQ(msg.tool_calls[0].name, "f");
            HD_CHECK_MSG(args != NULL && hd_json_parse(args, strlen(args), NULL, &a, e2,
                                                       sizeof(e2)) == HD_OK,
                         "cut %zu: arguments %s", k, args ? args : "(null)");
            const char *v = hd_json_get_str(a, "a");
            HD_CHECK_MSG(v == NULL || strncmp(v, "val", strlen(v)) == 0, "cut %zu: value %s", k,
                         v);
            /* complete once </｜DSML｜invoke> is through */
            bool closed = k >= (size_t)(strstr(tc, "</｜DSML｜invoke") - tc) +
                                   strlen("</｜DSML｜invoke");
            HD_CHECK_MSG(msg.tool_calls[0].complete == closed, "cut %zu", k);
            hd_json_free(a);
        }
        hd_chat_msg_cleanup(&msg);
        hd_buf_cleanup(&t);
        hd_buf_cleanup(&want);
    }
    /* malformed before any call started: the whole block stays content */
    const char *bad = "x\n\n<｜DSML｜tool_calls>oops</｜DSML｜tool_calls>" HD_CHAT_EOS;
    hd_chat_msg_t msg;
    HD_CHECK_TRUE(hd_chat_parse(bad, strlen(bad), false, &msg) == HD_OK);
    HD_CHECK_STR_EQ(msg.content.data, "x\n\n<｜DSML｜tool_calls>oops</｜DSML｜tool_calls>");
    HD_CHECK_TRUE(msg.malformed && msg.eos && msg.n_tool_calls == 0);
    hd_chat_msg_cleanup(&msg);
    /* malformed after a call has started: that call closes incomplete, the text from the
       error on is content, later calls are not invented */
    const char *mid = "</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n"
                      "<｜DSML｜parameter name=\"a\" string=\"true\">1</｜DSML｜parameter>\n"
                      "<｜DSML｜parameter name=\"b\" string=\"maybe\">2</｜DSML｜parameter>\n"
                      "</｜DSML｜invoke>\n</｜DSML｜tool_calls>" HD_CHAT_EOS;
    HD_CHECK_TRUE(hd_chat_parse(mid, strlen(mid), true, &msg) == HD_OK);
    HD_CHECK_TRUE(msg.malformed && msg.eos && msg.n_tool_calls == 1);
    if (msg.n_tool_calls == 1) {
        HD_CHECK_STR_EQ(msg.tool_calls[0].arguments, "{\"a\": \"1\"}");
        HD_CHECK_TRUE(!msg.tool_calls[0].complete);
    }
    HD_CHECK_MSG(msg.content.data != NULL && strstr(msg.content.data, "string=\"maybe\">2") != NULL,
                 "content \"%s\"", msg.content.data);
    hd_chat_msg_cleanup(&msg);
    /* thinking mode without </think>: everything is reasoning, not closed */
    const char *open = "still thinking";
    HD_CHECK_TRUE(hd_chat_parse(open, strlen(open), true, &msg) == HD_OK);
    HD_CHECK_STR_EQ(msg.reasoning.data, "still thinking");
    HD_CHECK_TRUE(!msg.reasoning_closed && msg.content.len == 0);
    hd_chat_msg_cleanup(&msg);
    /* a partial marker at the very end is released at finish */
    const char *partial = "a</thi";
    HD_CHECK_TRUE(hd_chat_parse(partial, strlen(partial), true, &msg) == HD_OK);
    HD_CHECK_STR_EQ(msg.reasoning.data, "a</thi");
    hd_chat_msg_cleanup(&msg);
    /* binary garbage */
    char junk[512];
    unsigned x = 12345;
    for (size_t i = 0; i < sizeof(junk); i++) {
        x = x * 1103515245u + 12345u;
        junk[i] = (char)(x >> 16);
    }
    HD_CHECK_TRUE(hd_chat_parse(junk, sizeof(junk), true, &msg) == HD_OK);
    hd_chat_msg_cleanup(&msg);
}

/*
 * The serving path: ids -> streaming detokenizer -> streaming parser, one id at a time,
 * gives the same deltas as parsing the whole text, for every test completion encoded with
 * the V4 tokenizer.
 */
HD_TEST(chat_parse_from_token_stream)
{
    char path[1200], *text = NULL;
    hd_tok_h tok = NULL;
    snprintf(path, sizeof(path), "%s/coordinator/data/tokenizer-deepseek-v4/tokenizer.json",
             src_dir);
    HD_CHECK_TRUE(hd_tok_create(path, &tok) == HD_OK);
    hd_json_t *root = load_parse_data(&text);
    size_t bad = 0, n_ids = 0;
    for (size_t i = 0; tok != NULL && root != NULL && i < root->n; i++) {
        const hd_json_t *c = root->kids[i], *t = hd_json_get(c, "text");
        bool thinking = false;
        hd_json_get_bool(c, "thinking", &thinking);
        deltas_t whole, streamed;
        deltas_init(&whole);
        deltas_init(&streamed);
        parse_split(t->str, t->str_len, thinking, NULL, 0, true, &whole);
        hd_tok_ids_t ids;
        hd_tok_ids_init(&ids);
        HD_CHECK_TRUE(hd_tok_encode(tok, t->str, t->str_len, 0, &ids) == HD_OK);
        n_ids += ids.n;
        hd_chat_parser_h p = NULL;
        HD_CHECK_TRUE(hd_chat_parser_create(thinking, &p) == HD_OK);
        hd_tok_stream_t ts;
        hd_tok_stream_init(&ts, tok, 0);
        hd_buf_t piece;
        hd_buf_init(&piece);
        for (size_t k = 0; p != NULL && k <= ids.n; k++) {
            piece.len = 0;
            if (k < ids.n) {
                HD_CHECK_TRUE(hd_tok_stream_push(&ts, ids.ids[k], &piece) == HD_OK);
            } else {
                HD_CHECK_TRUE(hd_tok_stream_flush(&ts, &piece) == HD_OK);
            }
            HD_CHECK_TRUE(hd_chat_parser_feed(p, piece.data ? piece.data : "", piece.len,
                                              on_delta, &streamed) == HD_OK);
        }
        if (p != NULL) {
            HD_CHECK_TRUE(hd_chat_parser_finish(p, on_delta, &streamed) == HD_OK);
        }
        hd_chat_parser_destroy(p);
        if (!deltas_same(&whole, &streamed) && bad++ < 5) {
            fprintf(stderr, "  %s (thinking %d): token stream parses differently\n",
                    hd_json_get_str(c, "name"), thinking);
        }
        hd_buf_cleanup(&piece);
        hd_tok_ids_cleanup(&ids);
        deltas_cleanup(&whole);
        deltas_cleanup(&streamed);
    }
    HD_CHECK_MSG(bad == 0, "%zu token streams differ", bad);
    printf("  %zu completions, %zu tokens streamed\n", root ? root->n : 0, n_ids);
    hd_json_free(root);
    hd_free(text);
    hd_tok_destroy(tok);
}

/* Allocation failures while parsing: HD_ERR_NO_MEMORY, or success with the same result. */
HD_TEST(chat_parse_oom)
{
    const char *text = "why</think>Calling.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n"
                       "<｜DSML｜parameter name=\"a\" string=\"true\">x\"y</｜DSML｜parameter>\n"
                       "<｜DSML｜parameter name=\"n\" string=\"false\">[1, 2]</｜DSML｜parameter>\n"
                       "</｜DSML｜invoke>\n</｜DSML｜tool_calls>" HD_CHAT_EOS;
    hd_chat_msg_t ref, msg;
    HD_CHECK_TRUE(hd_chat_parse(text, strlen(text), true, &ref) == HD_OK);
    HD_CHECK_TRUE(ref.n_tool_calls == 1);
    int n_oom = 0, n_ok = 0;
    for (long k = 0; k < 2000 && n_ok == 0; k++) {
        hd_alloc_fail_after(k);
        hd_status_t st = hd_chat_parse(text, strlen(text), true, &msg);
        hd_alloc_fail_after(-1);
        HD_CHECK_MSG(st == HD_OK || st == HD_ERR_NO_MEMORY, "fail after %ld: %d", k, (int)st);
        if (st == HD_OK) {
            n_ok++;
            HD_CHECK_TRUE(msg.n_tool_calls == 1 && strcmp(msg.content.data, ref.content.data) == 0 &&
                          strcmp(msg.tool_calls[0].arguments, ref.tool_calls[0].arguments) == 0);
        } else {
            n_oom++;
        }
        hd_chat_msg_cleanup(&msg);
    }
    HD_CHECK_TRUE(n_oom > 3 && n_ok == 1);
    hd_chat_msg_cleanup(&ref);
}
