/* Unit tests for common/json.c: valid documents, every class of error, and the writer. */
#include "hd_test.h"
#include "hadal/json.h"

static hd_status_t parse(const char *s, hd_json_t **r, char *err)
{
    return hd_json_parse(s, strlen(s), NULL, r, err, 128);
}

HD_TEST(json_valid_document)
{
    hd_json_t *r = NULL;
    char err[128];
    const char *doc = "{\"a\": [1, -2.5e3, true, false, null], \"s\": \"x\\u00e9\\ud83d\\ude00\\n\","
                      " \"big\": 9007199254740993, \"o\": {}}";
    HD_CHECK_INT_EQ(parse(doc, &r, err), HD_OK);
    if (r == NULL) {
        return;
    }
    const hd_json_t *a = hd_json_get(r, "a");
    HD_CHECK_TRUE(a != NULL && a->type == HD_JSON_ARRAY && a->n == 5);
    HD_CHECK_NEAR(hd_json_at(a, 1)->num, -2500.0, 0);
    HD_CHECK_TRUE(hd_json_at(a, 1)->is_int);
    HD_CHECK_INT_EQ(hd_json_at(a, 2)->type, HD_JSON_TRUE);
    HD_CHECK_STR_EQ(hd_json_get_str(r, "s"), "x\xc3\xa9\xf0\x9f\x98\x80\n");
    int64_t big = 0;
    HD_CHECK_TRUE(hd_json_get_i64(r, "big", &big));
    HD_CHECK_INT_EQ(big, 9007199254740993LL);
    HD_CHECK_TRUE(hd_json_get(r, "missing") == NULL);
    hd_json_free(r);
}

HD_TEST(json_rejects_malformed)
{
    static const char *const bad[] = {
        "", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "01", "1.", ".5", "\"abc", "\"\\x\"",
        "\"\\ud800\"", "\"\x01\"", "tru", "nul", "{\"a\":1,\"a\":2}", "[1] x", "\"\xc3\x28\"",
        "\"\xed\xa0\x80\"", "-", "1e", "{1:2}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        hd_json_t *r = NULL;
        char err[128] = "";
        hd_status_t st = parse(bad[i], &r, err);
        HD_CHECK_MSG(st == HD_ERR_FORMAT, "case %zu accepted", i);
        HD_CHECK_MSG(strncmp(err, "json: ", 6) == 0, "case %zu: no message", i);
        HD_CHECK_TRUE(r == NULL);
    }
}

HD_TEST(json_depth_limit)
{
    char deep[2000];
    hd_json_t *r = NULL;
    char err[128];
    memset(deep, '[', 1000);
    memset(deep + 1000, ']', 1000);
    HD_CHECK_INT_EQ(hd_json_parse(deep, 2000, NULL, &r, err, sizeof(err)), HD_ERR_FORMAT);
    HD_CHECK_TRUE(strstr(err, "too deep") != NULL);
    hd_json_opts_t o = {.max_depth = 2000};
    HD_CHECK_INT_EQ(hd_json_parse(deep, 2000, &o, &r, err, sizeof(err)), HD_OK);
    hd_json_free(r);
}

HD_TEST(json_writer_escapes)
{
    hd_buf_t b;
    hd_buf_init(&b);
    hd_buf_json_str(&b, "a\"b\\c\n\x01", 7);
    HD_CHECK_STR_EQ(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    hd_json_t *r = NULL;
    char err[128];
    HD_CHECK_INT_EQ(hd_json_parse(b.data, b.len, NULL, &r, err, sizeof(err)), HD_OK);
    HD_CHECK_TRUE(r && r->str_len == 7 && memcmp(r->str, "a\"b\\c\n\x01", 7) == 0);
    hd_json_free(r);
    hd_buf_cleanup(&b);
}
