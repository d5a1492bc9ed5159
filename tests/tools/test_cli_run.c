/*
 * test_cli_run.c - `hadal run --prompt TEXT`: the text is tokenized (BOS first, ids folded
 * into a tiny model's vocabulary), generation equals `--prompt-ids` with those ids, and the
 * second stdout line is the tokenizer's decoding of the generated ids.
 */
#include "hd_test.h"
#include "../model/model_testutil.h"
#include "hadal/json.h"
#include "hadal/tokenizer.h"

static int run_cmd(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    size_t n = 0;
    if (p == NULL) {
        return -1;
    }
    n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    return pclose(p);
}

HD_TEST(prompt_text_tokenized_and_completion_decoded)
{
    const char *bd = getenv("HD_BUILD_DIR"), *src = getenv("HD_SOURCE_DIR");
    char dir[1200], cmd[4096], out[8192], out2[8192], tpath[1400];
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    snprintf(tpath, sizeof(tpath), "%s/coordinator/data/tokenizer-deepseek-v4/tokenizer.json",
             src ? src : "../..");
    hd_tok_h tok = NULL;
    HD_CHECK_INT_EQ(hd_tok_create(tpath, &tok), HD_OK);
    if (tok == NULL) {
        return;
    }
    /* the ids --prompt must use: BOS, then the encoding, folded into 1024 ids */
    const char *text = "Hello, world: 12345";
    hd_tok_ids_t v;
    hd_tok_ids_init(&v);
    HD_CHECK_INT_EQ(hd_tok_encode(tok, text, strlen(text), 0, &v), HD_OK);
    char ids[1024];
    int off = snprintf(ids, sizeof(ids), "0");
    for (size_t i = 0; i < v.n; i++) {
        off += snprintf(ids + off, sizeof(ids) - (size_t)off, ",%d", v.ids[i] % 1024);
    }
    hd_tok_ids_cleanup(&v);
    snprintf(cmd, sizeof(cmd), "%s/tools/hadal run --model %s --prompt '%s' --max-tokens 6 "
             "--tokenizer %s 2>/dev/null", bd ? bd : "../..", dir, text, tpath);
    HD_CHECK_INT_EQ(run_cmd(cmd, out, sizeof(out)), 0);
    snprintf(cmd, sizeof(cmd), "%s/tools/hadal run --model %s --prompt-ids %s --max-tokens 6 "
             "2>/dev/null", bd ? bd : "../..", dir, ids);
    HD_CHECK_INT_EQ(run_cmd(cmd, out2, sizeof(out2)), 0);
    char *nl = strchr(out, '\n');
    HD_CHECK_TRUE(nl != NULL);
    if (nl == NULL) {
        hd_tok_destroy(tok);
        return;
    }
    *nl = '\0';
    /* same generation as the explicit ids */
    HD_CHECK_MSG(strncmp(out, out2, strlen(out)) == 0 && out2[strlen(out)] == '\n',
                 "--prompt gave '%s', --prompt-ids '%s'", out, out2);
    /* second line: the decoding of the generated ids */
    int32_t gen[16];
    int n = 0;
    for (char *p = out; *p != '\0' && n < 16;) {
        gen[n++] = (int32_t)strtol(p, &p, 10);
        while (*p == ' ') {
            p++;
        }
    }
    HD_CHECK_INT_EQ(n, 6);
    hd_buf_t want;
    hd_buf_init(&want);
    HD_CHECK_INT_EQ(hd_tok_decode(tok, gen, (size_t)n, 0, &want), HD_OK);
    char *line2 = nl + 1, *end = strrchr(line2, '\n');
    HD_CHECK_TRUE(end != NULL);
    if (end != NULL) {
        *end = '\0';
        HD_CHECK_MSG(strcmp(line2, want.data) == 0, "text line '%s' vs decode '%s'", line2,
                     want.data);
    }
    hd_buf_cleanup(&want);
    hd_tok_destroy(tok);
}
