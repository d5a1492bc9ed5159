/*
 * test_tok_cli.c - `hadal tokenize`, `hadal detokenize` and `hadal chat-template` end to end:
 * the spec §8.1 vector through both directions (whole and --stream), the escaped corpus
 * against the HF ids, and a test conversation's prompt against the official encoder's output.
 * Runs the built binary (HD_BUILD_DIR/tools/hadal); skips when it has not been built.
 */
#include "hd_test.h"

#include "hadal/alloc.h"
#include "hadal/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char src_dir[1024], hadal[1200];

__attribute__((constructor)) static void load_dirs(void)
{
    const char *s = getenv("HD_SOURCE_DIR"), *b = getenv("HD_BUILD_DIR");
    snprintf(src_dir, sizeof(src_dir), "%s", s ? s : ".");
    snprintf(hadal, sizeof(hadal), "%s/tools/hadal", b ? b : "build");
}

/* Run @cmd with the shell; its stdout into @out. Returns the exit status. */
static int run(const char *cmd, hd_buf_t *out)
{
    FILE *p = popen(cmd, "r");
    char buf[65536];
    size_t n;
    if (p == NULL) {
        return -1;
    }
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) {
        hd_buf_append(out, buf, n);
    }
    return pclose(p);
}

#define NEED_HADAL()                                                                          \
    do {                                                                                       \
        if (access(hadal, X_OK) != 0) {                                                        \
            HD_SKIP("%s not built", hadal);                                                    \
        }                                                                                      \
    } while (0)

HD_TEST(cli_tokenize_detokenize)
{
    NEED_HADAL();
    char cmd[4096];
    hd_buf_t out;
    hd_buf_init(&out);
    snprintf(cmd, sizeof(cmd), "printf '%%s' 'Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ' | %s tokenize",
             hadal);
    HD_CHECK_INT_EQ(run(cmd, &out), 0);
    HD_CHECK_STR_EQ(out.data, "19923 3 223 5464 5008 1175 19 940 223 19 438 223 20 6113 257 "
                              "76589 131 100 76032 1628 76589 131 108 76589 131 98\n");
    const char *modes[] = {"", "--stream"};
    for (int m = 0; m < 2; m++) {
        out.len = 0;
        snprintf(cmd, sizeof(cmd),
                 "echo '[128803, 30594, 128804, 128821, 36101, 128822, 7624, 1]' | %s "
                 "detokenize %s",
                 hadal, modes[m]);
        HD_CHECK_INT_EQ(run(cmd, &out), 0);
        HD_CHECK_STR_EQ(out.data,
                        "<｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>");
        out.len = 0;
        snprintf(cmd, sizeof(cmd), "echo '128803 30594 1' | %s detokenize --skip-special %s",
                 hadal, modes[m]);
        HD_CHECK_INT_EQ(run(cmd, &out), 0);
        /* as in HF: <｜User｜> is an added token but not "special" in the V4 file */
        HD_CHECK_STR_EQ(out.data, "<｜User｜>你好");
    }
    hd_buf_cleanup(&out);
}

/* --escaped: one line of ids per corpus case, equal to tok_expected_v4.txt (minus header). */
HD_TEST(cli_tokenize_corpus)
{
    NEED_HADAL();
    char cmd[4096], path[1200], *want = NULL;
    size_t len = 0;
    hd_buf_t out;
    hd_buf_init(&out);
    snprintf(cmd, sizeof(cmd), "%s tokenize --escaped < %s/tests/coordinator/data/tok_corpus.txt",
             hadal, src_dir);
    HD_CHECK_INT_EQ(run(cmd, &out), 0);
    snprintf(path, sizeof(path), "%s/tests/coordinator/data/tok_expected_v4.txt", src_dir);
    HD_CHECK_TRUE(hd_file_read_all(path, 1u << 26, &want, &len) == HD_OK);
    if (want != NULL) {
        const char *body = strchr(want, '\n') + 1;
        HD_CHECK_MSG(strcmp(out.data ? out.data : "", body) == 0, "CLI ids differ from HF");
    }
    hd_free(want);
    hd_buf_cleanup(&out);
}

HD_TEST(cli_chat_template)
{
    NEED_HADAL();
    static const struct {
        const char *args;
        const char *mode;
    } t[] = {
        {"--mode chat", "chat"},
        {"--mode think-max", "think-max"},
        {"--mode thinking --effort high", "think-high"},
        {"--mode thinking --keep-reasoning", "think-keep"},
    };
    const char *cases[] = {"04_tools_weather", "13_multi_round_tools",
                           "a2_request_tools_and_format_with_system"};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
            char cmd[4096], path[1400], *want = NULL;
            size_t len = 0;
            hd_buf_t out;
            hd_buf_init(&out);
            snprintf(cmd, sizeof(cmd),
                     "%s chat-template %s/tests/coordinator/data/chat/cases/%s.json %s", hadal,
                     src_dir, cases[c], t[i].args);
            HD_CHECK_INT_EQ(run(cmd, &out), 0);
            snprintf(path, sizeof(path), "%s/tests/coordinator/data/chat/expected/%s.%s.txt",
                     src_dir, cases[c], t[i].mode);
            HD_CHECK_TRUE(hd_file_read_all(path, 1u << 24, &want, &len) == HD_OK);
            HD_CHECK_MSG(want != NULL && out.len == len && memcmp(out.data, want, len) == 0,
                         "%s %s differs from the official prompt", cases[c], t[i].mode);
            hd_free(want);
            hd_buf_cleanup(&out);
        }
    }
    /* --ids: the prompt's ids start with BOS and end with <think> */
    char cmd[4096];
    hd_buf_t out;
    hd_buf_init(&out);
    snprintf(cmd, sizeof(cmd),
             "echo '[{\"role\": \"user\", \"content\": \"hello\"}]' | %s chat-template --mode "
             "thinking --ids",
             hadal);
    HD_CHECK_INT_EQ(run(cmd, &out), 0);
    HD_CHECK_TRUE(out.data != NULL && strncmp(out.data, "0 128803 ", 9) == 0);
    HD_CHECK_TRUE(out.data != NULL && strstr(out.data, " 128804 128821\n") != NULL);
    /* a refused request exits non-zero with a message */
    out.len = 0;
    snprintf(cmd, sizeof(cmd),
             "echo '[{\"role\": \"narrator\", \"content\": \"x\"}]' | %s chat-template 2>/dev/null",
             hadal);
    HD_CHECK_TRUE(run(cmd, &out) != 0);
    hd_buf_cleanup(&out);
}

HD_TEST(cli_bench_tokenize)
{
    NEED_HADAL();
    char cmd[4096];
    hd_buf_t out;
    hd_buf_init(&out);
    snprintf(cmd, sizeof(cmd),
             "%s bench tokenize --file %s/tests/coordinator/data/tok_corpus.txt --runs 1 "
             "--threads 3",
             hadal, src_dir);
    HD_CHECK_INT_EQ(run(cmd, &out), 0);
    HD_CHECK_MSG(out.data != NULL && strstr(out.data, "whole text, 1 thread:") != NULL &&
                     strstr(out.data, "per line, 3 threads:") != NULL,
                 "%s", out.data ? out.data : "(no output)");
    hd_buf_cleanup(&out);
}
