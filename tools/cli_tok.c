/*
 * cli_tok.c - `hadal tokenize`, `hadal detokenize`, `hadal chat-template`.
 *
 * Thin front ends over coordinator/: hd_tok_* (include/hadal/tokenizer.h) and hd_chat_*
 * (include/hadal/chat.h). The tokenizer is found by hd_tok_find(): --tokenizer FILE, then
 * --model DIR/tokenizer.json, then $HD_TOKENIZER, then the vendored DeepSeek-V4 file next to
 * the executable (install or build tree), then in the source tree this binary was built from
 * (its path is taken from __FILE__ at compile time). See docs/TOKENIZER.md.
 */
#include "cli.h"
#include "hadal/alloc.h"
#include "hadal/chat.h"
#include "hadal/json.h"
#include "hadal/log.h"
#include "hadal/tokenizer.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CLI_MAX_INPUT ((size_t)1 << 31)

typedef struct {
    const char *tokenizer; /* --tokenizer FILE */
    const char *model_dir; /* --model DIR */
} tok_cli_opts_t;

/* The source tree this file was compiled from: __FILE__ minus "/tools/cli_tok.c". */
static void cli_source_dir(char *out, size_t n)
{
    const char *f = __FILE__;
    const char *suffix = "/tools/cli_tok.c";
    size_t lf = strlen(f), ls = strlen(suffix);
    out[0] = '\0';
    if (f[0] == '/' && lf > ls && strcmp(f + lf - ls, suffix) == 0 && lf - ls < n) {
        memcpy(out, f, lf - ls);
        out[lf - ls] = '\0';
    }
}

int hd_cli_tok_open(const char *explicit_path, const char *model_dir, hd_tok_h *tok_p)
{
    char exe[PATH_MAX], src[PATH_MAX], path[PATH_MAX];
    ssize_t r = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    hd_tok_search_t where = {0};
    exe[r > 0 ? r : 0] = '\0';
    cli_source_dir(src, sizeof(src));
    where.explicit_path = explicit_path;
    where.model_dir = model_dir;
    where.env_path = getenv("HD_TOKENIZER");
    where.exe_path = r > 0 ? exe : NULL;
    where.source_dir = src[0] ? src : NULL;
    if (hd_tok_find(&where, path, sizeof(path)) != HD_OK) {
        return 1;
    }
    if (hd_tok_create(path, tok_p) != HD_OK) {
        fprintf(stderr, "hadal: cannot load tokenizer %s (see the log above)\n", path);
        return 1;
    }
    return 0;
}

static int cli_tok_open(const tok_cli_opts_t *o, hd_tok_h *tok_p)
{
    return hd_cli_tok_open(o->tokenizer, o->model_dir, tok_p);
}

/* Read all of @f into a NUL-terminated heap buffer. */
static int cli_read_all(FILE *f, char **data_p, size_t *len_p)
{
    size_t cap = 1 << 16, len = 0;
    char *data = hd_malloc(cap + 1, "cli input");
    if (data == NULL) {
        return 1;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= CLI_MAX_INPUT) {
                hd_free(data);
                fprintf(stderr, "hadal: input larger than 2 GiB\n");
                return 1;
            }
            char *d2 = hd_realloc(data, cap * 2 + 1, "cli input");
            if (d2 == NULL) {
                hd_free(data);
                return 1;
            }
            data = d2;
            cap *= 2;
        }
        size_t r = fread(data + len, 1, cap - len, f);
        len += r;
        if (r == 0) {
            break;
        }
    }
    if (ferror(f)) {
        hd_free(data);
        fprintf(stderr, "hadal: read error: %s\n", strerror(errno));
        return 1;
    }
    data[len] = '\0';
    *data_p = data;
    *len_p = len;
    return 0;
}

/* Undo the corpus escaping (\\ \n \r \t \xHH) in place; returns the new length. */
static size_t cli_unescape(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char d = s[i + 1];
            if (d == '\\' || d == 'n' || d == 'r' || d == 't') {
                s[o++] = d == 'n' ? '\n' : d == 'r' ? '\r' : d == 't' ? '\t' : '\\';
                i++;
                continue;
            }
            if (d == 'x' && i + 3 < n) {
                char hex[3] = {s[i + 2], s[i + 3], 0};
                s[o++] = (char)strtol(hex, NULL, 16);
                i += 3;
                continue;
            }
        }
        s[o++] = s[i];
    }
    return o;
}

static double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void cli_print_ids(const hd_tok_ids_t *ids, bool json, FILE *out)
{
    fputs(json ? "[" : "", out);
    for (size_t i = 0; i < ids->n; i++) {
        fprintf(out, i ? (json ? ", %d" : " %d") : "%d", ids->ids[i]);
    }
    fputs(json ? "]\n" : "\n", out);
}

/* Parse the shared --tokenizer/--model options; returns 1 if argv[*i] was consumed. */
static int cli_tok_opt(tok_cli_opts_t *o, int argc, char **argv, int *i)
{
    if ((strcmp(argv[*i], "--tokenizer") == 0 || strcmp(argv[*i], "--model") == 0) &&
        *i + 1 < argc) {
        if (argv[*i][2] == 't') {
            o->tokenizer = argv[*i + 1];
        } else {
            o->model_dir = argv[*i + 1];
        }
        (*i)++;
        return 1;
    }
    return 0;
}

static const char tokenize_usage[] =
    "usage: hadal tokenize [--tokenizer FILE | --model DIR] [--lines | --escaped] [--json]\n"
    "                      [--special-as-text] [--count] [--bench]\n"
    "Reads text on stdin, prints token ids (space-separated) on stdout.\n"
    "  --lines            encode each input line separately (newline excluded), one output line each\n"
    "  --escaped          like --lines, lines use \\\\ \\n \\r \\t \\xHH escapes, '#' lines skipped\n"
    "  --json             print ids as a JSON array\n"
    "  --special-as-text  do not match tokens marked special (HF encode_special_tokens=True)\n"
    "  --count            print only the number of tokens\n"
    "  --bench            print tokens, seconds and tokens/s of the encode calls to stderr\n"
    "Default tokenizer: the vendored DeepSeek-V4 tokenizer.json (see docs/TOKENIZER.md).\n";

int hd_cli_tokenize(int argc, char **argv)
{
    tok_cli_opts_t o = {0};
    bool lines = false, escaped = false, json = false, count = false, bench = false;
    unsigned flags = 0;
    hd_tok_h tok = NULL;
    char *data = NULL;
    size_t len = 0, total = 0;
    double t_enc = 0;
    hd_tok_ids_t ids;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        if (cli_tok_opt(&o, argc, argv, &i)) {
            continue;
        } else if (strcmp(argv[i], "--lines") == 0) {
            lines = true;
        } else if (strcmp(argv[i], "--escaped") == 0) {
            lines = escaped = true;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--count") == 0) {
            count = true;
        } else if (strcmp(argv[i], "--bench") == 0) {
            bench = true;
        } else if (strcmp(argv[i], "--special-as-text") == 0) {
            flags |= HD_TOK_ENCODE_SPECIAL_AS_TEXT;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(tokenize_usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "hadal tokenize: unknown option '%s'\n%s", argv[i], tokenize_usage);
            return 2;
        }
    }
    if (cli_tok_open(&o, &tok) != 0) {
        return 1;
    }
    if (cli_read_all(stdin, &data, &len) != 0) {
        goto out;
    }
    hd_tok_ids_init(&ids);
    if (!lines) {
        double t0 = cli_now();
        if (hd_tok_encode(tok, data, len, flags, &ids) != HD_OK) {
            goto out_ids;
        }
        t_enc += cli_now() - t0;
        total = ids.n;
        if (!count) {
            cli_print_ids(&ids, json, stdout);
        }
    } else {
        size_t pos = 0;
        while (pos < len) {
            char *nl = memchr(data + pos, '\n', len - pos);
            size_t end = nl ? (size_t)(nl - data) : len;
            char *line = data + pos;
            size_t n = end - pos;
            pos = end + 1;
            if (escaped) {
                if (n > 0 && line[0] == '#') {
                    continue;
                }
                n = cli_unescape(line, n);
            }
            ids.n = 0;
            double t0 = cli_now();
            if (hd_tok_encode(tok, line, n, flags, &ids) != HD_OK) {
                goto out_ids;
            }
            t_enc += cli_now() - t0;
            total += ids.n;
            if (!count) {
                cli_print_ids(&ids, json, stdout);
            }
        }
    }
    if (count) {
        printf("%zu\n", total);
    }
    if (bench) {
        fprintf(stderr, "hadal tokenize: %zu bytes, %zu tokens, %.3f s, %.0f tokens/s\n", len,
                total, t_enc, t_enc > 0 ? total / t_enc : 0.0);
    }
    rc = fflush(stdout) == 0 ? 0 : 1;
out_ids:
    hd_tok_ids_cleanup(&ids);
out:
    hd_free(data);
    hd_tok_destroy(tok);
    return rc;
}

static const char detokenize_usage[] =
    "usage: hadal detokenize [--tokenizer FILE | --model DIR] [--skip-special] [--stream]\n"
    "Reads token ids on stdin (separated by spaces, commas, newlines; [ ] ignored) and writes\n"
    "their text to stdout.\n"
    "  --skip-special  drop tokens marked special (HF skip_special_tokens=True)\n"
    "  --stream        decode id by id with the streaming detokenizer, flushing after each id\n";

int hd_cli_detokenize(int argc, char **argv)
{
    tok_cli_opts_t o = {0};
    unsigned flags = 0;
    bool stream = false;
    hd_tok_h tok = NULL;
    hd_tok_stream_t st;
    hd_buf_t out;
    int rc = 1, c;
    long long v = 0;
    bool have = false, neg = false;

    for (int i = 1; i < argc; i++) {
        if (cli_tok_opt(&o, argc, argv, &i)) {
            continue;
        } else if (strcmp(argv[i], "--skip-special") == 0) {
            flags |= HD_TOK_DECODE_SKIP_SPECIAL;
        } else if (strcmp(argv[i], "--stream") == 0) {
            stream = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(detokenize_usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "hadal detokenize: unknown option '%s'\n%s", argv[i], detokenize_usage);
            return 2;
        }
    }
    if (cli_tok_open(&o, &tok) != 0) {
        return 1;
    }
    hd_buf_init(&out);
    hd_tok_stream_init(&st, tok, flags);
    /* ids are decoded as they arrive, so a pipe from a generator streams */
    while ((c = getchar()) != EOF || have) {
        if (c >= '0' && c <= '9') {
            if (v > INT32_MAX) {
                fprintf(stderr, "hadal detokenize: id out of range\n");
                goto out;
            }
            v = v * 10 + (c - '0');
            have = true;
            continue;
        }
        if (c == '-' && !have) {
            neg = true;
            continue;
        }
        if (have) {
            int32_t id = (int32_t)(neg ? -v : v);
            if (hd_tok_stream_push(&st, id, &out) != HD_OK) {
                goto out;
            }
            if (stream && out.len > 0) {
                fwrite(out.data, 1, out.len, stdout);
                fflush(stdout);
                out.len = 0;
            }
            v = 0;
            have = neg = false;
        } else if (neg) {
            fprintf(stderr, "hadal detokenize: stray '-' in input\n");
            goto out;
        }
        if (c == EOF) {
            break;
        }
        if (!(c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == '[' || c == ']')) {
            fprintf(stderr, "hadal detokenize: unexpected character '%c' in input\n", c);
            goto out;
        }
    }
    if (hd_tok_stream_flush(&st, &out) != HD_OK) {
        goto out;
    }
    fwrite(out.data, 1, out.len, stdout);
    rc = fflush(stdout) == 0 ? 0 : 1;
out:
    hd_buf_cleanup(&out);
    hd_tok_destroy(tok);
    return rc;
}

static const char chat_usage[] =
    "usage: hadal chat-template [FILE] [--mode chat|thinking|think-high|think-max]\n"
    "                           [--effort high|max|none] [--tools FILE] [--response-format FILE]\n"
    "                           [--keep-reasoning] [--no-bos] [--ids [--tokenizer FILE | --model DIR]]\n"
    "Prints the DeepSeek-V4 prompt for a conversation (encoding_dsv4.py rules).\n"
    "FILE (default stdin) holds either a JSON array of messages (OpenAI shape) or an object\n"
    "{\"messages\": [...], \"tools\": [...], \"response_format\": {...}, \"thinking_mode\":\n"
    "\"chat\"|\"thinking\", \"reasoning_effort\": \"high\"|\"max\"|null, \"drop_thinking\": bool,\n"
    "\"add_bos\": bool}; options on the command line override the file.\n"
    "  --mode            chat (non-think, default), thinking (= think-high), think-max\n"
    "  --effort          reasoning effort in thinking mode (max adds the fixed preamble)\n"
    "  --tools FILE      OpenAI tools array, attached to the first system message\n"
    "  --response-format FILE  JSON value rendered as a \"## Response Format\" section\n"
    "  --keep-reasoning  keep reasoning of earlier turns (official drop_thinking=False)\n"
    "  --no-bos          omit <｜begin▁of▁sentence｜>\n"
    "  --ids             print token ids of the prompt instead of its text\n";

/* Parse @path ("-" = stdin) into @root, recording number literals in @nums. */
static int cli_json_file(const char *path, hd_chat_numbers_t *nums, hd_json_t **root, char **text_p)
{
    char *text = NULL, err[160];
    size_t len = 0;
    if (strcmp(path, "-") == 0) {
        if (cli_read_all(stdin, &text, &len) != 0) {
            return 1;
        }
    } else if (hd_file_read_all(path, CLI_MAX_INPUT, &text, &len) != HD_OK) {
        fprintf(stderr, "hadal chat-template: cannot read %s\n", path);
        return 1;
    }
    if (hd_chat_json_parse(text, len, nums, root, err, sizeof(err)) != HD_OK) {
        fprintf(stderr, "hadal chat-template: %s: %s\n", path, err);
        hd_free(text);
        return 1;
    }
    *text_p = text;
    return 0;
}

int hd_cli_chat_template(int argc, char **argv)
{
    tok_cli_opts_t o = {0};
    const char *file = "-", *tools_file = NULL, *rf_file = NULL, *mode_s = NULL, *effort_s = NULL;
    bool keep = false, no_bos = false, ids_out = false;
    hd_chat_numbers_t *nums = NULL;
    hd_json_t *doc = NULL, *tools_doc = NULL, *rf_doc = NULL;
    char *doc_text = NULL, *tools_text = NULL, *rf_text = NULL, err[256];
    hd_chat_request_t req = {0};
    hd_buf_t prompt;
    hd_tok_h tok = NULL;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        bool has_val = i + 1 < argc;
        if (cli_tok_opt(&o, argc, argv, &i)) {
            continue;
        } else if (strcmp(argv[i], "--mode") == 0 && has_val) {
            mode_s = argv[++i];
        } else if (strcmp(argv[i], "--effort") == 0 && has_val) {
            effort_s = argv[++i];
        } else if (strcmp(argv[i], "--tools") == 0 && has_val) {
            tools_file = argv[++i];
        } else if (strcmp(argv[i], "--response-format") == 0 && has_val) {
            rf_file = argv[++i];
        } else if (strcmp(argv[i], "--keep-reasoning") == 0) {
            keep = true;
        } else if (strcmp(argv[i], "--no-bos") == 0) {
            no_bos = true;
        } else if (strcmp(argv[i], "--ids") == 0) {
            ids_out = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(chat_usage, stdout);
            return 0;
        } else if (argv[i][0] != '-' || strcmp(argv[i], "-") == 0) {
            file = argv[i];
        } else {
            fprintf(stderr, "hadal chat-template: unknown option '%s'\n%s", argv[i], chat_usage);
            return 2;
        }
    }
    hd_buf_init(&prompt);
    if (hd_chat_numbers_create(&nums) != HD_OK || cli_json_file(file, nums, &doc, &doc_text) != 0) {
        goto out;
    }
    /* the file: a messages array, or an object with messages and options */
    req.mode = HD_CHAT_MODE_CHAT;
    if (doc->type == HD_JSON_ARRAY) {
        req.messages = doc;
    } else if (doc->type == HD_JSON_OBJECT) {
        const char *s;
        bool b;
        req.messages = hd_json_get(doc, "messages");
        req.tools = hd_json_get(doc, "tools");
        req.response_format = hd_json_get(doc, "response_format");
        if ((s = hd_json_get_str(doc, "thinking_mode")) != NULL &&
            !hd_chat_mode_parse(s, &req.mode, &req.effort)) {
            fprintf(stderr, "hadal chat-template: bad thinking_mode '%s'\n", s);
            goto out;
        }
        if (hd_json_get_bool(doc, "thinking", &b)) {
            req.mode = b ? HD_CHAT_MODE_THINKING : HD_CHAT_MODE_CHAT;
        }
        if ((s = hd_json_get_str(doc, "reasoning_effort")) != NULL &&
            !hd_chat_effort_parse(s, &req.effort)) {
            fprintf(stderr, "hadal chat-template: bad reasoning_effort '%s'\n", s);
            goto out;
        }
        if (hd_json_get_bool(doc, "drop_thinking", &b)) {
            req.keep_reasoning = !b;
        }
        if (hd_json_get_bool(doc, "add_bos", &b)) {
            req.no_bos = !b;
        }
    }
    if (mode_s != NULL && !hd_chat_mode_parse(mode_s, &req.mode, &req.effort)) {
        fprintf(stderr, "hadal chat-template: bad --mode '%s'\n%s", mode_s, chat_usage);
        rc = 2;
        goto out;
    }
    if (effort_s != NULL && !hd_chat_effort_parse(effort_s, &req.effort)) {
        fprintf(stderr, "hadal chat-template: bad --effort '%s'\n%s", effort_s, chat_usage);
        rc = 2;
        goto out;
    }
    if (tools_file != NULL) {
        if (cli_json_file(tools_file, nums, &tools_doc, &tools_text) != 0) {
            goto out;
        }
        req.tools = tools_doc;
    }
    if (rf_file != NULL) {
        if (cli_json_file(rf_file, nums, &rf_doc, &rf_text) != 0) {
            goto out;
        }
        req.response_format = rf_doc;
    }
    req.keep_reasoning |= keep;
    req.no_bos |= no_bos;
    req.numbers = nums;
    if (hd_chat_encode(&req, &prompt, err, sizeof(err)) != HD_OK) {
        fprintf(stderr, "hadal chat-template: %s\n", err);
        goto out;
    }
    if (ids_out) {
        hd_tok_ids_t ids;
        if (cli_tok_open(&o, &tok) != 0) {
            goto out;
        }
        hd_tok_ids_init(&ids);
        if (hd_tok_encode(tok, prompt.data, prompt.len, 0, &ids) != HD_OK) {
            hd_tok_ids_cleanup(&ids);
            goto out;
        }
        cli_print_ids(&ids, false, stdout);
        hd_tok_ids_cleanup(&ids);
    } else {
        fwrite(prompt.data, 1, prompt.len, stdout);
    }
    rc = fflush(stdout) == 0 ? 0 : 1;
out:
    hd_tok_destroy(tok);
    hd_buf_cleanup(&prompt);
    hd_json_free(doc);
    hd_json_free(tools_doc);
    hd_json_free(rf_doc);
    hd_free(doc_text);
    hd_free(tools_text);
    hd_free(rf_text);
    hd_chat_numbers_destroy(nums);
    return rc;
}

/* ---- hadal bench tokenize ---- */

static const char bench_tok_usage[] =
    "usage: hadal bench tokenize [--tokenizer FILE | --model DIR] [--file FILE] [--runs N]\n"
    "                            [--threads N]\n"
    "Encode a text (FILE, default stdin) with the C tokenizer and print tokens/s: the whole\n"
    "text as one call, each line as its own call, and the lines shared out over N threads\n"
    "(one tokenizer, as a server uses it). Best of N runs (default 3). For the comparison\n"
    "with Hugging Face tokenizers on the standard corpus see bench/tokenizer_bench.sh.\n";

typedef struct {
    hd_tok_h tok;
    const char *data; /* the text */
    size_t from, to;  /* byte range of whole lines this worker encodes */
    size_t tokens;    /* ids produced */
    int failed;
} bench_tok_job_t;

static void *bench_tok_lines(void *arg)
{
    bench_tok_job_t *j = arg;
    hd_tok_ids_t ids;
    size_t pos = j->from;
    hd_tok_ids_init(&ids);
    while (pos < j->to) {
        const char *nl = memchr(j->data + pos, '\n', j->to - pos);
        size_t end = nl ? (size_t)(nl - j->data) : j->to;
        ids.n = 0;
        if (hd_tok_encode(j->tok, j->data + pos, end - pos, 0, &ids) != HD_OK) {
            j->failed = 1;
            break;
        }
        j->tokens += ids.n;
        pos = end + 1;
    }
    hd_tok_ids_cleanup(&ids);
    return NULL;
}

/* Lines of @data over @n_threads threads; returns seconds, total tokens in *tokens_p. */
static double bench_tok_threads(hd_tok_h tok, const char *data, size_t len, int n_threads,
                                size_t *tokens_p, int *failed_p)
{
    bench_tok_job_t jobs[64];
    pthread_t th[64];
    size_t from = 0;
    for (int i = 0; i < n_threads; i++) {
        size_t to = i + 1 == n_threads ? len : len / (size_t)n_threads * (size_t)(i + 1);
        const char *nl = to < len ? memchr(data + to, '\n', len - to) : NULL;
        to = to < len ? (nl ? (size_t)(nl - data) + 1 : len) : len;
        if (to < from) {
            to = from;
        }
        jobs[i] = (bench_tok_job_t){.tok = tok, .data = data, .from = from, .to = to};
        from = to;
    }
    double t0 = cli_now();
    int started = 0;
    for (int i = 0; i < n_threads; i++) {
        if (pthread_create(&th[i], NULL, bench_tok_lines, &jobs[i]) != 0) {
            jobs[i].failed = 1;
            break;
        }
        started++;
    }
    *tokens_p = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
    }
    double dt = cli_now() - t0;
    for (int i = 0; i < n_threads; i++) {
        *tokens_p += jobs[i].tokens;
        *failed_p |= jobs[i].failed;
    }
    return dt;
}

int hd_cli_bench_tok(int argc, char **argv)
{
    tok_cli_opts_t o = {0};
    const char *file = NULL;
    int runs = 3, threads = 1, failed = 0, rc = 1;
    char *data = NULL;
    size_t len = 0;
    hd_tok_h tok = NULL;
    hd_tok_ids_t ids;

    for (int i = 1; i < argc; i++) {
        bool has_val = i + 1 < argc;
        if (cli_tok_opt(&o, argc, argv, &i)) {
            continue;
        } else if (strcmp(argv[i], "--file") == 0 && has_val) {
            file = argv[++i];
        } else if (strcmp(argv[i], "--runs") == 0 && has_val) {
            runs = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--threads") == 0 && has_val) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(bench_tok_usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "hadal bench tokenize: unknown option '%s'\n%s", argv[i],
                    bench_tok_usage);
            return 2;
        }
    }
    if (runs < 1 || threads < 1 || threads > 64) {
        fprintf(stderr, "hadal bench tokenize: --runs >= 1, --threads 1..64\n");
        return 2;
    }
    if (file != NULL) {
        if (hd_file_read_all(file, CLI_MAX_INPUT, &data, &len) != HD_OK) {
            fprintf(stderr, "hadal bench tokenize: cannot read %s\n", file);
            return 1;
        }
    } else if (cli_read_all(stdin, &data, &len) != 0) {
        return 1;
    }
    double t0 = cli_now();
    if (cli_tok_open(&o, &tok) != 0) {
        goto out;
    }
    printf("tokenizer %s loaded in %.3f s; text %zu bytes\n", hd_tok_path(tok), cli_now() - t0,
           len);
    hd_tok_ids_init(&ids);
    double best = 0;
    for (int r = 0; r < runs; r++) {
        ids.n = 0;
        t0 = cli_now();
        if (hd_tok_encode(tok, data, len, 0, &ids) != HD_OK) {
            hd_tok_ids_cleanup(&ids);
            goto out;
        }
        double dt = cli_now() - t0;
        best = r == 0 || dt < best ? dt : best;
    }
    printf("whole text, 1 thread:  %zu tokens in %.3f s: %.0f tokens/s, %.1f MB/s\n", ids.n,
           best, ids.n / best, len / best / 1e6);
    hd_tok_ids_cleanup(&ids);
    int counts[2] = {1, threads};
    for (int c = 0; c < (threads > 1 ? 2 : 1); c++) {
        size_t tokens = 0;
        best = 0;
        for (int r = 0; r < runs; r++) {
            double dt = bench_tok_threads(tok, data, len, counts[c], &tokens, &failed);
            best = r == 0 || dt < best ? dt : best;
        }
        printf("per line, %d thread%s %zu tokens in %.3f s: %.0f tokens/s, %.1f MB/s\n",
               counts[c], counts[c] == 1 ? ": " : "s:", tokens, best, tokens / best,
               len / best / 1e6);
    }
    rc = failed ? 1 : 0;
out:
    hd_tok_destroy(tok);
    hd_free(data);
    return rc;
}
