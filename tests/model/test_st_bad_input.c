/*
 * test_st_bad_input.c - the safetensors reader on malformed files: each case must fail with
 * a clear status and a message naming the file (and the tensor, where one is at fault),
 * without crashing. Also the writer round trip, the streaming writer, sharded sets and the
 * parse-from-memory entry.
 */
#define _GNU_SOURCE /* nftw */
#include "hadal/alloc.h"
#include "hadal/log.h"
#include "hadal/safetensors.h"
#include "hd_test.h"
#include "../../model/st_impl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static const char *tmp_dir(void)
{
    if (tmpdir[0] == '\0') {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/hd_test_st_XXXXXX");
        if (mkdtemp(tmpdir) == NULL) {
            abort();
        }
    }
    return tmpdir;
}

/* Write a raw file: 8-byte LE @hlen (header length field), @header, then @ndata bytes. */
static const char *write_raw(const char *name, uint64_t hlen, const char *header, size_t ndata)
{
    static char path[512];
    FILE *f;
    uint8_t lb[8];
    snprintf(path, sizeof(path), "%s/%s", tmp_dir(), name);
    f = fopen(path, "wb");
    for (int i = 0; i < 8; i++) {
        lb[i] = (uint8_t)(hlen >> (8 * i));
    }
    fwrite(lb, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < ndata; i++) {
        fputc((int)(i & 0xff), f);
    }
    fclose(f);
    return path;
}

static const char *write_hdr(const char *name, const char *header, size_t ndata)
{
    return write_raw(name, strlen(header), header, ndata);
}

static void expect_fail(const char *path, hd_status_t want, const char *w1, const char *w2)
{
    hd_st_set_h set = NULL;
    char err[512] = "";
    hd_status_t st = hd_st_open(path, &set, err, sizeof(err));
    HD_CHECK_MSG(st == want, "%s: status %d (%s), want %d; msg %s", path, st, hd_status_string(st),
                 want, err);
    HD_CHECK_MSG(set == NULL || st == HD_OK, "set returned on failure");
    HD_CHECK_MSG(strstr(err, path) != NULL || strstr(err, strrchr(path, '/') + 1) != NULL,
                 "message \"%s\" does not name the file", err);
    if (w1) {
        HD_CHECK_MSG(strstr(err, w1) != NULL, "message \"%s\" lacks \"%s\"", err, w1);
    }
    if (w2) {
        HD_CHECK_MSG(strstr(err, w2) != NULL, "message \"%s\" lacks \"%s\"", err, w2);
    }
    if (st == HD_OK) {
        hd_st_close(set);
    }
}

HD_TEST(truncated_files)
{
    const char *p;
    char path[512];
    FILE *f;
    snprintf(path, sizeof(path), "%s/empty.safetensors", tmp_dir());
    f = fopen(path, "wb");
    fclose(f);
    expect_fail(path, HD_ERR_FORMAT, "truncated", NULL);
    snprintf(path, sizeof(path), "%s/short.safetensors", tmp_dir());
    f = fopen(path, "wb");
    fwrite("\x10\0\0", 1, 3, f);
    fclose(f);
    expect_fail(path, HD_ERR_FORMAT, "truncated", NULL);
    /* header length past the end of the file */
    p = write_raw("hlen_past.safetensors", 4096, "{}", 0);
    expect_fail(p, HD_ERR_FORMAT, "header length 4096", "past the end");
    /* huge header length */
    p = write_raw("hlen_huge.safetensors", UINT64_MAX - 3, "{}", 0);
    expect_fail(p, HD_ERR_FORMAT, "header length", "past the end");
}

HD_TEST(huge_header_limit)
{
    /* a header larger than 100 MiB that does fit in the buffer: parse from memory */
    size_t len = 8 + (100u << 20) + 16;
    uint8_t *buf = calloc(1, len);
    hd_st_file_t f;
    char err[256];
    uint64_t hl = (100u << 20) + 8;
    for (int i = 0; i < 8; i++) {
        buf[i] = (uint8_t)(hl >> (8 * i));
    }
    buf[8] = '{';
    HD_CHECK_INT_EQ(hd_st_parse_header(buf, len, "big.safetensors", &f, err, sizeof(err)),
                    HD_ERR_FORMAT);
    HD_CHECK_MSG(strstr(err, "big.safetensors: header length") && strstr(err, "limit"), "%s", err);
    free(buf);
}

HD_TEST(bad_headers)
{
    const char *p;
    p = write_hdr("garbage.safetensors", "{\"a\": [1,", 8);
    expect_fail(p, HD_ERR_FORMAT, "not valid JSON", NULL);
    p = write_hdr("notobj.safetensors", "[1, 2, 3]", 0);
    expect_fail(p, HD_ERR_FORMAT, "JSON object", NULL);
    p = write_hdr("dupkey.safetensors",
                  "{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                  "\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}",
                  4);
    expect_fail(p, HD_ERR_FORMAT, "uplicate", NULL);
    p = write_hdr("dtype.safetensors",
                  "{\"layers.0.w\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2);
    expect_fail(p, HD_ERR_FORMAT, "tensor layers.0.w", "unknown dtype \"F12\"");
    p = write_hdr("dtype_type.safetensors",
                  "{\"w\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,2]}}", 2);
    expect_fail(p, HD_ERR_FORMAT, "tensor w", "dtype");
    p = write_hdr("negdim.safetensors",
                  "{\"neg\":{\"dtype\":\"U8\",\"shape\":[-2],\"data_offsets\":[0,2]}}", 2);
    expect_fail(p, HD_ERR_FORMAT, "tensor neg", "shape[0]");
    p = write_hdr("fracdim.safetensors",
                  "{\"frac\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,2]}}", 2);
    expect_fail(p, HD_ERR_FORMAT, "tensor frac", "shape[0]");
    p = write_hdr("mismatch.safetensors",
                  "{\"m\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20);
    expect_fail(p, HD_ERR_FORMAT, "tensor m", "need 24 bytes");
    p = write_hdr("pastend.safetensors",
                  "{\"pe\":{\"dtype\":\"U8\",\"shape\":[64],\"data_offsets\":[0,64]}}", 16);
    expect_fail(p, HD_ERR_FORMAT, "tensor pe", "past the end");
    p = write_hdr("backwards.safetensors",
                  "{\"bw\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", 16);
    expect_fail(p, HD_ERR_FORMAT, "tensor bw", "backwards");
    p = write_hdr("overlap.safetensors",
                  "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}",
                  16);
    expect_fail(p, HD_ERR_FORMAT, "overlap", "tensor b");
    /* overlap hidden behind a zero-length tensor in sorted order */
    p = write_hdr("overlap0.safetensors",
                  "{\"a\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[0,10]},"
                  "\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[5,5]},"
                  "\"c\":{\"dtype\":\"U8\",\"shape\":[6],\"data_offsets\":[6,12]}}",
                  16);
    expect_fail(p, HD_ERR_FORMAT, "overlap", "tensor c");
    p = write_hdr("overflow.safetensors",
                  "{\"o\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,16],"
                  "\"data_offsets\":[0,8]}}",
                  8);
    expect_fail(p, HD_ERR_FORMAT, "tensor o", "overflow");
    p = write_hdr("offs.safetensors",
                  "{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1);
    expect_fail(p, HD_ERR_FORMAT, "tensor x", "data_offsets");
    p = write_hdr("noshape.safetensors", "{\"x\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1);
    expect_fail(p, HD_ERR_FORMAT, "tensor x", "missing shape");
    p = write_hdr("extra.safetensors",
                  "{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"y\":1}}", 1);
    expect_fail(p, HD_ERR_FORMAT, "tensor x", "unknown key");
    p = write_hdr("dims.safetensors",
                  "{\"x\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
                  1);
    expect_fail(p, HD_ERR_FORMAT, "tensor x", "dimensions");
    p = write_hdr("meta.safetensors", "{\"__metadata__\":{\"format\":1}}", 0);
    expect_fail(p, HD_ERR_FORMAT, "__metadata__", NULL);
    p = write_hdr("deep.safetensors", "{\"x\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}", 0);
    expect_fail(p, HD_ERR_FORMAT, "JSON", NULL);
    expect_fail("/nonexistent/model.safetensors", HD_ERR_NOT_FOUND, NULL, NULL);
}

HD_TEST(valid_raw_file)
{
    hd_st_set_h set;
    char err[256];
    const hd_st_tensor_t *t;
    /* space padding, metadata, a scalar and an empty tensor, header order != data order */
    const char *p =
        write_hdr("ok.safetensors",
                  "{\"__metadata__\":{\"format\":\"pt\"},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]},"
                  "\"e\":{\"dtype\":\"BF16\",\"shape\":[0,4],\"data_offsets\":[12,12]},"
                  "\"a\":{\"dtype\":\"I16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}   ",
                  12);
    HD_CHECK_MSG(hd_st_open(p, &set, err, sizeof(err)) == HD_OK, "%s", err);
    if (set == NULL) {
        return;
    }
    HD_CHECK_INT_EQ(hd_st_count(set), 3);
    t = hd_st_find(set, "a");
    HD_CHECK_TRUE(t != NULL && t->ndim == 2 && t->shape[1] == 2 && t->nbytes == 8 &&
                  t->dtype == HD_DT_I16 && ((const uint8_t *)t->data)[1] == 1);
    t = hd_st_find(set, "b");
    HD_CHECK_TRUE(t != NULL && t->ndim == 0 && hd_st_numel(t) == 1 &&
                  ((const uint8_t *)t->data)[0] == 8);
    t = hd_st_find(set, "e");
    HD_CHECK_TRUE(t != NULL && hd_st_numel(t) == 0 && t->nbytes == 0);
    HD_CHECK_TRUE(hd_st_find(set, "zz") == NULL);
    HD_CHECK_TRUE(strcmp(hd_st_at(set, 0)->file, p) == 0);
    hd_st_close(set);
}

static void write_small(const char *path, int base, int n)
{
    hd_st_writer_h w;
    HD_CHECK_INT_EQ(hd_st_writer_create(path, &w), HD_OK);
    for (int i = 0; i < n; i++) {
        char name[64];
        float v[6];
        int64_t shape[2] = {2, 3};
        for (int j = 0; j < 6; j++) {
            v[j] = (float)(base + i * 10 + j);
        }
        snprintf(name, sizeof(name), "t.%d", base + i);
        HD_CHECK_INT_EQ(hd_st_writer_add(w, name, HD_DT_F32, 2, shape, v, sizeof(v)), HD_OK);
    }
    HD_CHECK_INT_EQ(hd_st_writer_finish(w), HD_OK);
}

HD_TEST(writer_roundtrip)
{
    char path[512], err[256];
    hd_st_set_h set;
    struct stat st;
    hd_st_writer_h w;
    int64_t shape[2] = {2, 3};
    float v[6] = {0};
    snprintf(path, sizeof(path), "%s/w.safetensors", tmp_dir());
    write_small(path, 0, 5);
    HD_CHECK_INT_EQ(stat(path, &st), 0);
    {
        /* header length field keeps the data 8-byte aligned */
        FILE *f = fopen(path, "rb");
        uint8_t lb[8];
        uint64_t hl = 0;
        HD_CHECK_INT_EQ(fread(lb, 1, 8, f), 8);
        fclose(f);
        for (int i = 7; i >= 0; i--) {
            hl = (hl << 8) | lb[i];
        }
        HD_CHECK_INT_EQ(hl % 8, 0);
        HD_CHECK_INT_EQ((uint64_t)st.st_size, 8 + hl + 5 * 24);
    }
    HD_CHECK_MSG(hd_st_open(path, &set, err, sizeof(err)) == HD_OK, "%s", err);
    if (set) {
        const hd_st_tensor_t *t = hd_st_find(set, "t.3");
        HD_CHECK_INT_EQ(hd_st_count(set), 5);
        HD_CHECK_TRUE(t != NULL && ((const float *)t->data)[2] == 32.0f);
        HD_CHECK_STR_EQ(hd_st_at(set, 0)->name, "t.0");
        hd_st_close(set);
    }
    /* writer misuse */
    HD_CHECK_INT_EQ(hd_st_writer_create(path, &w), HD_OK);
    HD_CHECK_INT_EQ(hd_st_writer_add(w, "a", HD_DT_F32, 2, shape, v, 20), HD_ERR_INVALID_PARAM);
    HD_CHECK_INT_EQ(hd_st_writer_add(w, "a", HD_DT_F32, 2, shape, v, 24), HD_OK);
    HD_CHECK_INT_EQ(hd_st_writer_add(w, "a", HD_DT_F32, 2, shape, v, 24), HD_ERR_INVALID_PARAM);
    HD_CHECK_INT_EQ(hd_st_writer_declare(w, "b", HD_DT_F32, 2, shape), HD_ERR_INVALID_PARAM);
    hd_st_writer_abort(w);
    /* the aborted writer left the finished file alone */
    HD_CHECK_INT_EQ(hd_st_open(path, &set, err, sizeof(err)), HD_OK);
    hd_st_close(set);
}

HD_TEST(writer_streaming)
{
    char path[512], err[256];
    hd_st_writer_h w;
    hd_st_set_h set;
    int64_t s1[1] = {10}, s2[2] = {3, 3}, s0[1] = {0};
    uint8_t bytes[19];
    for (int i = 0; i < 19; i++) {
        bytes[i] = (uint8_t)(100 + i);
    }
    snprintf(path, sizeof(path), "%s/s.safetensors", tmp_dir());
    HD_CHECK_INT_EQ(hd_st_writer_create(path, &w), HD_OK);
    HD_CHECK_INT_EQ(hd_st_writer_declare(w, "x", HD_DT_U8, 1, s1), HD_OK);
    HD_CHECK_INT_EQ(hd_st_writer_declare(w, "empty", HD_DT_F32, 1, s0), HD_OK);
    HD_CHECK_INT_EQ(hd_st_writer_declare(w, "y", HD_DT_I8, 2, s2), HD_OK);
    HD_CHECK_TRUE(hd_st_writer_file_size(w) % 8 == 19 % 8);
    HD_CHECK_INT_EQ(hd_st_writer_write(w, bytes, 7), HD_OK);
    HD_CHECK_INT_EQ(hd_st_writer_write(w, bytes + 7, 12), HD_OK);
    HD_CHECK_INT_EQ(hd_st_writer_write(w, bytes, 1), HD_ERR_INVALID_PARAM);
    HD_CHECK_INT_EQ(hd_st_writer_finish(w), HD_OK);
    HD_CHECK_MSG(hd_st_open(path, &set, err, sizeof(err)) == HD_OK, "%s", err);
    if (set) {
        const hd_st_tensor_t *y = hd_st_find(set, "y");
        HD_CHECK_TRUE(y != NULL && ((const uint8_t *)y->data)[0] == 110);
        hd_st_close(set);
    }
    /* short stream: finish refuses and leaves no file */
    snprintf(path, sizeof(path), "%s/short_stream.safetensors", tmp_dir());
    HD_CHECK_INT_EQ(hd_st_writer_create(path, &w), HD_OK);
    HD_CHECK_INT_EQ(hd_st_writer_declare(w, "x", HD_DT_U8, 1, s1), HD_OK);
    HD_CHECK_INT_EQ(hd_st_writer_write(w, bytes, 3), HD_OK);
    HD_CHECK_INT_EQ(hd_st_writer_finish(w), HD_ERR_INVALID_PARAM);
    HD_CHECK_TRUE(access(path, F_OK) != 0);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

HD_TEST(sharded_sets)
{
    char dir[512], p[600], err[512];
    hd_st_set_h set;
    snprintf(dir, sizeof(dir), "%s/sharded", tmp_dir());
    mkdir(dir, 0755);
    snprintf(p, sizeof(p), "%s/a.safetensors", dir);
    write_small(p, 0, 3);
    snprintf(p, sizeof(p), "%s/b.safetensors", dir);
    write_small(p, 3, 2);
    /* two files, no index: refused */
    expect_fail(dir, HD_ERR_FORMAT, "index", NULL);
    snprintf(p, sizeof(p), "%s/model.safetensors.index.json", dir);
    write_text(p, "{\"metadata\":{\"total_size\":120},\"weight_map\":{\"t.0\":\"a.safetensors\","
                  "\"t.1\":\"a.safetensors\",\"t.2\":\"a.safetensors\",\"t.3\":\"b.safetensors\","
                  "\"t.4\":\"b.safetensors\"}}");
    HD_CHECK_MSG(hd_st_open(dir, &set, err, sizeof(err)) == HD_OK, "%s", err);
    if (set) {
        const hd_st_tensor_t *t = hd_st_find(set, "t.4");
        HD_CHECK_INT_EQ(hd_st_count(set), 5);
        HD_CHECK_INT_EQ(hd_st_file_count(set), 2);
        HD_CHECK_TRUE(t != NULL && strstr(t->file, "b.safetensors") != NULL &&
                      ((const float *)t->data)[0] == 13.0f);
        hd_st_close(set);
    }
    HD_CHECK_MSG(hd_st_open(p, &set, err, sizeof(err)) == HD_OK, "%s", err);
    hd_st_close(set);
    /* index naming the wrong shard */
    write_text(p, "{\"weight_map\":{\"t.0\":\"b.safetensors\"}}");
    expect_fail(p, HD_ERR_FORMAT, "tensor t.0", "b.safetensors");
    /* index naming a missing shard */
    write_text(p, "{\"weight_map\":{\"t.0\":\"c.safetensors\"}}");
    expect_fail(p, HD_ERR_NOT_FOUND, "c.safetensors", NULL);
    /* a tensor in two shards */
    {
        char c[600];
        snprintf(c, sizeof(c), "%s/c.safetensors", dir);
        write_small(c, 2, 1);
        write_text(p, "{\"weight_map\":{\"t.0\":\"a.safetensors\",\"t.2\":\"c.safetensors\"}}");
        expect_fail(p, HD_ERR_FORMAT, "tensor t.2", "also present");
    }
    write_text(p, "{\"weight_map\":{\"t.0\":\"../a.safetensors\"}}");
    expect_fail(p, HD_ERR_FORMAT, "tensor t.0", "relative");
    write_text(p, "{\"weight_map\":[]}");
    expect_fail(p, HD_ERR_FORMAT, "weight_map", NULL);
    write_text(p, "{\"weight_map\":{\"t.0\":\"a.safetensors\",");
    expect_fail(p, HD_ERR_FORMAT, "not valid JSON", NULL);
}

HD_TEST(parse_from_memory)
{
    static const char hdr[] = "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}";
    uint8_t buf[256];
    size_t hl = sizeof(hdr) - 1;
    hd_st_file_t f;
    char err[256];
    memset(buf, 0, sizeof(buf));
    buf[0] = (uint8_t)hl;
    memcpy(buf + 8, hdr, hl);
    memcpy(buf + 8 + hl, "abcd", 4);
    HD_CHECK_INT_EQ(hd_st_parse_header(buf, 8 + hl + 4, "mem", &f, err, sizeof(err)), HD_OK);
    HD_CHECK_INT_EQ(f.n, 1);
    HD_CHECK_TRUE(memcmp(f.tensors[0].data, "abcd", 4) == 0);
    hd_st_file_cleanup(&f);
    /* every truncation of a valid file fails cleanly */
    for (size_t n = 0; n < 8 + hl + 4; n++) {
        hd_status_t st = hd_st_parse_header(buf, n, "mem", &f, err, sizeof(err));
        HD_CHECK_MSG(st == HD_ERR_FORMAT, "len %zu: %d", n, st);
        HD_CHECK_MSG(strncmp(err, "mem: ", 5) == 0, "%s", err);
    }
}

static void quiet_sink(hd_log_level_t level, const char *line, void *user)
{
}

HD_TEST(alloc_failures)
{
    /* every allocation failure inside open is reported, not crashed on */
    char path[512], err[256];
    snprintf(path, sizeof(path), "%s/fa.safetensors", tmp_dir());
    write_small(path, 0, 4);
    hd_log_set(quiet_sink, NULL);
    for (long k = 0; k < 40; k++) {
        hd_st_set_h set = NULL;
        hd_status_t st;
        hd_alloc_fail_after(k);
        st = hd_st_open(path, &set, err, sizeof(err));
        hd_alloc_fail_after(-1);
        HD_CHECK_MSG(st == HD_OK || st == HD_ERR_NO_MEMORY, "k %ld: %d %s", k, st, err);
        if (st == HD_OK) {
            hd_st_close(set);
        }
    }
    hd_log_set(NULL, NULL);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* Last test: remove the scratch directory (kept when an earlier test failed). */
HD_TEST(zz_remove_scratch)
{
    if (tmpdir[0] != '\0' && hd_test_failures == 0) {
        HD_CHECK_INT_EQ(nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
    }
}
