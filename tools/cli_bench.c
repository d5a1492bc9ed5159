/*
 * cli_bench.c - `hadal bench`: speed measured against this machine's own ceilings, taken in
 * the same run. Every figure is printed next to the ceiling it should be judged by:
 *
 *   stream   memory bandwidth (read, copy, triad over arrays far larger than the caches)
 *   flops    peak fp32 FMA throughput (register-resident FMA chains, no memory traffic)
 *   gemm     the matmul kernel on one weight format, against both of the above
 *   decode   engine decode tokens/s at several batch sizes; weight bytes read per token
 *            (counted by the kernel backend) over the step time, against stream bandwidth
 *   prefill  engine prefill tokens/s; matmul FLOPs per token over time, against flops
 *
 * Results go to stdout as aligned text; --json prints one JSON object instead.
 */
#include "cli.h"
#include "hadal/alloc.h"
#include "hadal/config.h"
#include "hadal/engine.h"
#include "hadal/gen.h"
#include "hadal/json.h"
#include "hadal/kernels.h"
#include "hadal/pool.h"
#include "hadal/rng.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BENCH_X86 1
#endif

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Resident set size of this process in bytes (VmRSS), 0 when unknown. */
static uint64_t bench_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    uint64_t kb = 0;
    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtoull(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb * 1024;
}

static int bench_threads(int requested)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (requested > 0) {
        return requested;
    }
    return n > 0 ? (int)n : 1;
}

/* ---------------------------------------------------------------- stream */

typedef struct {
    float *a, *b, *c;
    size_t n, chunk;
    int kind; /* 0 init, 1 read, 2 copy, 3 triad */
    double *partial;
} stream_job_t;

#ifdef BENCH_X86
/* Vector loops for read and triad: scalar C at -O2 is bound by its adds, not by memory. */
__attribute__((target("avx2,fma"))) static float stream_read_avx2(const float *a, size_t lo,
                                                                  size_t hi)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    float out[8], sum = 0;
    size_t k = lo;
    for (; k + 32 <= hi; k += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a + k));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(a + k + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(a + k + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(a + k + 24));
    }
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (int i = 0; i < 8; i++) {
        sum += out[i];
    }
    for (; k < hi; k++) {
        sum += a[k];
    }
    return sum;
}

__attribute__((target("avx2,fma"))) static void stream_triad_avx2(float *a, const float *b,
                                                                  const float *c, size_t lo,
                                                                  size_t hi)
{
    __m256 three = _mm256_set1_ps(3.0f);
    size_t k = lo;
    for (; k + 8 <= hi; k += 8) {
        _mm256_storeu_ps(a + k, _mm256_fmadd_ps(three, _mm256_loadu_ps(c + k),
                                                _mm256_loadu_ps(b + k)));
    }
    for (; k < hi; k++) {
        a[k] = b[k] + 3.0f * c[k];
    }
}
#endif

static void stream_part(void *vctx, size_t i)
{
    stream_job_t *j = vctx;
    size_t lo = i * j->chunk, hi = lo + j->chunk > j->n ? j->n : lo + j->chunk;
    float *restrict a = j->a, *restrict b = j->b, *restrict c = j->c;
    bool avx2 = strcmp(hd_kern_cpu_isa(), "avx2+fma") == 0;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    switch (j->kind) {
    case 0:
        for (size_t k = lo; k < hi; k++) {
            a[k] = 1.0f;
            b[k] = 2.0f;
            c[k] = 0.5f;
        }
        break;
    case 1:
#ifdef BENCH_X86
        if (avx2) {
            j->partial[i] = (double)stream_read_avx2(a, lo, hi);
            break;
        }
#endif
        for (size_t k = lo; k + 4 <= hi; k += 4) {
            s0 += a[k];
            s1 += a[k + 1];
            s2 += a[k + 2];
            s3 += a[k + 3];
        }
        j->partial[i] = (double)(s0 + s1 + s2 + s3);
        break;
    case 2:
        memcpy(c + lo, a + lo, (hi - lo) * sizeof(float));
        break;
    default:
#ifdef BENCH_X86
        if (avx2) {
            stream_triad_avx2(a, b, c, lo, hi);
            break;
        }
#endif
        for (size_t k = lo; k < hi; k++) {
            a[k] = b[k] + 3.0f * c[k];
        }
        break;
    }
    (void)avx2;
}

typedef struct {
    double read_gbs, copy_gbs, triad_gbs; /* best of the repetitions, 1e9 bytes/s */
    size_t bytes_per_array;
    int threads;
} stream_result_t;

/* STREAM-style bandwidth with @threads threads over three arrays of @mib MiB each. */
static int bench_stream_run(int threads, size_t mib, stream_result_t *r)
{
    hd_pool_h pool = NULL;
    stream_job_t j = {0};
    double best[4] = {0, 0, 0, 0};
    size_t parts;
    j.n = mib * 1024 * 1024 / sizeof(float);
    j.a = hd_aligned_calloc(j.n, sizeof(float), "stream a");
    j.b = hd_aligned_calloc(j.n, sizeof(float), "stream b");
    j.c = hd_aligned_calloc(j.n, sizeof(float), "stream c");
    parts = (size_t)threads * 16;
    j.chunk = ((j.n + parts - 1) / parts + 15) & ~(size_t)15;
    parts = (j.n + j.chunk - 1) / j.chunk;
    j.partial = calloc(parts, sizeof(double));
    if (j.a == NULL || j.b == NULL || j.c == NULL || j.partial == NULL ||
        hd_pool_create(threads, &pool) != HD_OK) {
        fprintf(stderr, "hadal bench stream: cannot allocate 3 x %zu MiB\n", mib);
        hd_free(j.a);
        hd_free(j.b);
        hd_free(j.c);
        free(j.partial);
        return 1;
    }
    j.kind = 0; /* first touch by the threads that later stream the same pages */
    hd_pool_run(pool, parts, stream_part, &j);
    for (int rep = 0; rep < 6; rep++) {
        for (int kind = 1; kind <= 3; kind++) {
            double t0 = bench_now(), dt, bytes;
            j.kind = kind;
            hd_pool_run(pool, parts, stream_part, &j);
            dt = bench_now() - t0;
            bytes = (double)j.n * sizeof(float) * (kind == 1 ? 1 : kind == 2 ? 2 : 3);
            if (rep > 0 && bytes / dt > best[kind]) { /* rep 0 warms up */
                best[kind] = bytes / dt;
            }
        }
    }
    r->read_gbs = best[1] / 1e9;
    r->copy_gbs = best[2] / 1e9;
    r->triad_gbs = best[3] / 1e9;
    r->bytes_per_array = j.n * sizeof(float);
    r->threads = threads;
    hd_pool_destroy(pool);
    hd_free(j.a);
    hd_free(j.b);
    hd_free(j.c);
    free(j.partial);
    return 0;
}

static void bench_stream_print(const stream_result_t *r)
{
    printf("stream: %d threads, 3 arrays of %zu MiB: read %.2f GB/s, copy %.2f GB/s, "
           "triad %.2f GB/s (copy counts read+write bytes)\n",
           r->threads, r->bytes_per_array >> 20, r->read_gbs, r->copy_gbs, r->triad_gbs);
}

/* ---------------------------------------------------------------- flops */

typedef struct {
    long iters;
    double *sink;
} flops_job_t;

#ifdef BENCH_X86
__attribute__((target("avx2,fma"))) static double flops_avx2(long iters)
{
    /* 10 independent chains in named registers (an array was kept in memory by the
       compiler, which measured store forwarding instead of the FMA pipes): enough to cover
       FMA latency x pipes on current x86 cores (4-5 cycles x 2 pipes) */
    const __m256 m = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
    __m256 a0 = _mm256_set1_ps(0.0f), a1 = _mm256_set1_ps(1.0f), a2 = _mm256_set1_ps(2.0f),
           a3 = _mm256_set1_ps(3.0f), a4 = _mm256_set1_ps(4.0f), a5 = _mm256_set1_ps(5.0f),
           a6 = _mm256_set1_ps(6.0f), a7 = _mm256_set1_ps(7.0f), a8 = _mm256_set1_ps(8.0f),
           a9 = _mm256_set1_ps(9.0f);
    float out[8];
    double s = 0;
    for (long it = 0; it < iters; it++) {
        a0 = _mm256_fmadd_ps(a0, m, add);
        a1 = _mm256_fmadd_ps(a1, m, add);
        a2 = _mm256_fmadd_ps(a2, m, add);
        a3 = _mm256_fmadd_ps(a3, m, add);
        a4 = _mm256_fmadd_ps(a4, m, add);
        a5 = _mm256_fmadd_ps(a5, m, add);
        a6 = _mm256_fmadd_ps(a6, m, add);
        a7 = _mm256_fmadd_ps(a7, m, add);
        a8 = _mm256_fmadd_ps(a8, m, add);
        a9 = _mm256_fmadd_ps(a9, m, add);
    }
    a0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                       _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    a0 = _mm256_add_ps(a0, _mm256_add_ps(a8, a9));
    _mm256_storeu_ps(out, a0);
    for (int i = 0; i < 8; i++) {
        s += out[i];
    }
    return s;
}
#endif

static double flops_portable(long iters)
{
    float acc[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    double s = 0;
    for (long it = 0; it < iters; it++) {
        for (int i = 0; i < 8; i++) {
            acc[i] = acc[i] * 0.999999f + 1e-7f;
        }
    }
    for (int i = 0; i < 8; i++) {
        s += acc[i];
    }
    return s;
}

static void flops_part(void *vctx, size_t i)
{
    flops_job_t *j = vctx;
    bool avx2 = strcmp(hd_kern_cpu_isa(), "avx2+fma") == 0;
#ifdef BENCH_X86
    j->sink[i] = avx2 ? flops_avx2(j->iters) : flops_portable(j->iters);
#else
    (void)avx2;
    j->sink[i] = flops_portable(j->iters);
#endif
}

/* Peak fp32 FLOP/s of @threads threads (FMA = 2 FLOPs), best of 3. */
static double bench_flops_run(int threads)
{
    hd_pool_h pool = NULL;
    double best = 0, *sink = calloc((size_t)threads, sizeof(double));
    bool avx2 = strcmp(hd_kern_cpu_isa(), "avx2+fma") == 0;
    double per_iter = avx2 ? 10.0 * 8 * 2 : 8.0 * 2;
    flops_job_t j = {.iters = avx2 ? 20000000 : 20000000, .sink = sink};
    if (sink == NULL || hd_pool_create(threads, &pool) != HD_OK) {
        free(sink);
        return 0;
    }
    for (int rep = 0; rep < 3; rep++) {
        double t0 = bench_now(), dt;
        hd_pool_run(pool, (size_t)threads, flops_part, &j);
        dt = bench_now() - t0;
        if (per_iter * (double)j.iters * threads / dt > best) {
            best = per_iter * (double)j.iters * threads / dt;
        }
    }
    hd_pool_destroy(pool);
    free(sink);
    return best;
}

/* ---------------------------------------------------------------- gemm */

static const char *const fmt_names[] = {"f32", "bf16", "fp8", "fp4"};

static int bench_parse_fmt(const char *s, hd_wfmt_t *fmt)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, fmt_names[i]) == 0) {
            *fmt = (hd_wfmt_t)i;
            return 0;
        }
    }
    return -1;
}

/* A random weight of @fmt with finite values (no e4m3 NaN codes, scales near 1). */
static int bench_make_weight(hd_wfmt_t fmt, int64_t rows, int64_t cols, hd_weight_t *w,
                             void **mem, size_t *bytes_p)
{
    hd_rng_t rng;
    size_t elem_bytes, scale_bytes = 0;
    uint8_t *p;
    hd_rng_seed(&rng, 42);
    memset(w, 0, sizeof(*w));
    w->fmt = fmt;
    w->rows = rows;
    w->cols = cols;
    switch (fmt) {
    case HD_WFMT_F32:
        w->row_bytes = (size_t)cols * 4;
        break;
    case HD_WFMT_BF16:
        w->row_bytes = (size_t)cols * 2;
        break;
    case HD_WFMT_FP8:
        w->row_bytes = (size_t)cols;
        w->scale_stride = (cols + 127) / 128;
        scale_bytes = (size_t)(((rows + 127) / 128) * w->scale_stride);
        break;
    case HD_WFMT_FP4:
        w->row_bytes = (size_t)cols / 2;
        w->scale_stride = cols / 32;
        scale_bytes = (size_t)(rows * w->scale_stride);
        break;
    }
    elem_bytes = w->row_bytes * (size_t)rows;
    p = hd_aligned_calloc(elem_bytes + scale_bytes + 64, 1, "bench weight");
    if (p == NULL) {
        return -1;
    }
    for (size_t i = 0; i < elem_bytes; i++) {
        uint8_t v = (uint8_t)hd_rng_u64(&rng);
        if (fmt == HD_WFMT_FP8 && (v & 0x7f) == 0x7f) {
            v &= 0xfe; /* e4m3fn NaN -> 448 */
        }
        if (fmt == HD_WFMT_BF16 && (i & 1)) {
            v = (uint8_t)(0x3c + (v & 3)); /* high byte: sign 0, exponent near 1 */
        }
        if (fmt == HD_WFMT_F32 && (i & 3) == 3) {
            v = 0x3f;
        }
        p[i] = v;
    }
    for (size_t i = 0; i < scale_bytes; i++) {
        p[elem_bytes + i] = (uint8_t)(124 + (hd_rng_u64(&rng) & 3));
    }
    w->data = p;
    w->scale = scale_bytes ? p + elem_bytes : NULL;
    *mem = p;
    *bytes_p = elem_bytes + scale_bytes; /* elements, then scales */
    return 0;
}

/* Move the @len bytes of @w (elements, then scales) into an unlinked temporary file and point
   @w at a read-only mapping of it. */
static int bench_map_weight(hd_weight_t *w, size_t len, void **map_p)
{
    char path[] = "/tmp/hadal-bench-XXXXXX";
    const uint8_t *base = w->data;
    size_t off = 0;
    int fd = mkstemp(path);
    void *map;
    if (fd < 0) {
        return -1;
    }
    unlink(path);
    while (off < len) {
        ssize_t k = write(fd, base + off, len - off);
        if (k <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)k;
    }
    map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        return -1;
    }
    if (w->scale != NULL) {
        w->scale = (const uint8_t *)map + (w->scale - base);
    }
    w->data = map;
    *map_p = map;
    return 0;
}

static int bench_gemm(int argc, char **argv)
{
    static const struct option opts[] = {
        {"rows", required_argument, NULL, 'r'},   {"cols", required_argument, NULL, 'c'},
        {"tokens", required_argument, NULL, 'n'}, {"fmt", required_argument, NULL, 'f'},
        {"threads", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
        {"mmap", no_argument, NULL, 'M'},          {"count", required_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    int64_t rows = 4096, cols = 4096, n = 256;
    bool use_mmap = false;
    enum { GEMM_MAX_COUNT = 1024 };
    void *map[GEMM_MAX_COUNT] = {NULL};
    size_t map_len = 0;
    int threads = 0, opt, reps, count = 1, made = 0;
    hd_wfmt_t fmt = HD_WFMT_F32;
    hd_weight_t w[GEMM_MAX_COUNT];
    void *mem[GEMM_MAX_COUNT] = {NULL};
    int rc = 0;
    float *x, *y;
    hd_kern_backend_t *be = NULL;
    double best = 1e30, peak;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'r':
            rows = atoll(optarg);
            break;
        case 'c':
            cols = atoll(optarg);
            break;
        case 'n':
            n = atoll(optarg);
            break;
        case 't':
            threads = atoi(optarg);
            break;
        case 'M':
            use_mmap = true;
            break;
        case 'k':
            count = atoi(optarg);
            break;
        case 'f':
            if (bench_parse_fmt(optarg, &fmt) != 0) {
                fprintf(stderr, "hadal bench gemm: --fmt is one of f32, bf16, fp8, fp4\n");
                return 2;
            }
            break;
        default:
            fprintf(opt == 'h' ? stdout : stderr,
                    "usage: hadal bench gemm [--rows R] [--cols C] [--tokens N] "
                    "[--fmt f32|bf16|fp8|fp4] [--threads N] [--mmap] [--count K]\n"
                    "  --mmap     read the weight from a mapped file (page cache, 4 KiB pages),\n"
                    "             as the engine does, instead of anonymous memory\n"
                    "  --count K  K separate weights of this shape, multiplied in turn (as a\n"
                    "             decode step runs one expert matrix after another): with K\n"
                    "             times the size beyond the last-level cache, each call reads\n"
                    "             from memory and pays its own start-up; time is per call\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (rows < 1 || cols < 32 || cols % 32 != 0 || n < 1 || count < 1 || count > GEMM_MAX_COUNT) {
        fprintf(stderr, "hadal bench gemm: need rows >= 1, cols a multiple of 32, tokens >= 1, "
                        "1 <= count <= %d\n", GEMM_MAX_COUNT);
        return 2;
    }
    threads = bench_threads(threads);
    peak = bench_flops_run(threads);
    x = hd_aligned_calloc((size_t)(n * cols), sizeof(float), "bench x");
    y = hd_aligned_calloc((size_t)(n * rows), sizeof(float), "bench y");
    if (x == NULL || y == NULL || hd_kern_backend_create("cpu", threads, &be) != HD_OK) {
        fprintf(stderr, "hadal bench gemm: out of memory\n");
        rc = 1;
        goto out;
    }
    for (made = 0; made < count; made++) {
        if (bench_make_weight(fmt, rows, cols, &w[made], &mem[made], &map_len) != 0) {
            fprintf(stderr, "hadal bench gemm: out of memory\n");
            rc = 1;
            goto out;
        }
        if (use_mmap && bench_map_weight(&w[made], map_len, &map[made]) != 0) {
            fprintf(stderr, "hadal bench gemm: cannot write and map a temporary weight file\n");
            hd_free(mem[made]);
            mem[made] = NULL;
            rc = 1;
            goto out;
        }
        if (use_mmap) { /* the file's page cache holds it now */
            hd_free(mem[made]);
            mem[made] = NULL;
        }
    }
    for (int64_t i = 0; i < n * cols; i++) {
        x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    }
    reps = (int)(2e10 / (2.0 * (double)rows * (double)cols * (double)n * count)) + 2;
    if (reps > 200) {
        reps = 200;
    }
    for (int rep = 0; rep < reps; rep++) {
        double t0 = bench_now(), dt;
        for (int k = 0; k < count; k++) {
            if (hd_kern_matmul(be, &w[k], x, cols, y, rows, n, false) != HD_OK) {
                fprintf(stderr, "hadal bench gemm: matmul failed\n");
                rc = 1;
                goto out;
            }
        }
        dt = (bench_now() - t0) / count;
        if (rep > 0 && dt < best) {
            best = dt;
        }
    }
    {
        double flops = 2.0 * (double)rows * (double)cols * (double)n / best;
        double bytes = (double)hd_kern_weight_view_bytes(&w[0]) / best;
        printf("gemm %s [%lld x %lld]%s x %lld tokens, %d threads (%s): %.3f ms, %.2f GFLOP/s = "
               "%.1f%% of peak %.2f GFLOP/s; weight stream %.2f GB/s\n",
               fmt_names[fmt], (long long)rows, (long long)cols, count > 1 ? " (rotating)" : "",
               (long long)n, threads,
               hd_kern_cpu_isa(), best * 1e3, flops / 1e9, 100.0 * flops / peak, peak / 1e9,
               bytes / 1e9);
    }
out:
    for (int k = 0; k < made; k++) {
        if (map[k] != NULL) {
            munmap(map[k], map_len);
        }
        hd_free(mem[k]);
    }
    hd_kern_backend_destroy(be);
    hd_free(x);
    hd_free(y);
    return rc;
}

/* ---------------------------------------------------------------- engine benchmarks */

typedef struct {
    const char *preset;
    const char *model;
    const char *cache;
    const char *numerics;
    const char *batches;
    int threads;
    int tokens;
    int prompt;
    int warmup;
    size_t stream_mib;
    bool json;
} engine_opts_t;

static int bench_engine_opts(int argc, char **argv, const char *what, engine_opts_t *o)
{
    static const struct option opts[] = {
        {"preset", required_argument, NULL, 'p'},   {"model", required_argument, NULL, 'm'},
        {"cache", required_argument, NULL, 'c'},    {"numerics", required_argument, NULL, 'u'},
        {"batch", required_argument, NULL, 'b'},    {"threads", required_argument, NULL, 't'},
        {"tokens", required_argument, NULL, 'n'},   {"prompt", required_argument, NULL, 'P'},
        {"stream-mib", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
        {"warmup", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            o->preset = optarg;
            break;
        case 'm':
            o->model = optarg;
            break;
        case 'c':
            o->cache = optarg;
            break;
        case 'u':
            o->numerics = optarg;
            break;
        case 'b':
            o->batches = optarg;
            break;
        case 't':
            o->threads = atoi(optarg);
            break;
        case 'n':
            o->tokens = atoi(optarg);
            break;
        case 'P':
            o->prompt = atoi(optarg);
            break;
        case 's':
            o->stream_mib = (size_t)atol(optarg);
            break;
        case 'j':
            o->json = true;
            break;
        case 'w':
            o->warmup = atoi(optarg);
            break;
        default:
            fprintf(opt == 'h' ? stdout : stderr,
                    "usage: hadal bench %s [--preset NAME | --model DIR] [options]\n"
                    "  --preset NAME    generate (once) and use a random checkpoint of a preset\n"
                    "                   (default medium), cached under --cache DIR\n"
                    "  --cache DIR      where generated checkpoints live (default\n"
                    "                   $XDG_CACHE_HOME/hadal/bench or ~/.cache/hadal/bench)\n"
                    "  --model DIR      use this checkpoint instead\n"
                    "  --numerics official|plain (default official)\n"
                    "  --batch LIST     decode batch sizes (default 1,8)\n"
                    "  --tokens N       decode steps (default 16) / prefill tokens (default 256)\n"
                    "  --prompt N       decode: prompt tokens per sequence (default 32)\n"
                    "  --warmup N       decode: untimed steps first (default 8)\n"
                    "  --threads N      kernel threads (default all CPUs)\n"
                    "  --stream-mib M   bandwidth test array size (default 512)\n"
                    "  --json           one JSON object on stdout\n",
                    what);
            return opt == 'h' ? 0 : 2;
        }
    }
    return -1;
}

/* Resolve the checkpoint: --model, or a cached generated preset (generated when missing). */
static int bench_model_dir(const engine_opts_t *o, char *dir, size_t len)
{
    char cfg_path[PATH_MAX + 32];
    struct stat st;
    hd_model_config_t cfg;
    char err[512] = "";
    if (o->model != NULL) {
        snprintf(dir, len, "%s", o->model);
        return 0;
    }
    if (hd_config_preset(o->preset, &cfg) != HD_OK) {
        fprintf(stderr, "hadal bench: unknown preset '%s' (see hadal info --presets)\n", o->preset);
        return 2;
    }
    if (o->cache != NULL) {
        mkdir(o->cache, 0755); /* one level, like gen-model's own out_dir */
        snprintf(dir, len, "%s/%s-seed1", o->cache, o->preset);
    } else {
        const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        char base[PATH_MAX / 2];
        if (xdg != NULL && xdg[0] != '\0') {
            snprintf(base, sizeof(base), "%s/hadal", xdg);
        } else {
            snprintf(base, sizeof(base), "%s/.cache", home ? home : "/tmp");
            mkdir(base, 0755);
            snprintf(base, sizeof(base), "%s/.cache/hadal", home ? home : "/tmp");
        }
        mkdir(base, 0755);
        snprintf(dir, len, "%s/bench", base);
        mkdir(dir, 0755);
        snprintf(dir, len, "%s/bench/%s-seed1", base, o->preset);
    }
    snprintf(cfg_path, sizeof(cfg_path), "%s/model.safetensors.index.json", dir);
    if (stat(cfg_path, &st) == 0) {
        return 0;
    }
    fprintf(stderr, "hadal bench: generating the %s checkpoint (seed 1) in %s ...\n", o->preset,
            dir);
    {
        hd_gen_params_t gp = {.seed = 1, .out_dir = dir};
        double t0 = bench_now();
        if (hd_gen_model(&cfg, &gp, err, sizeof(err)) != HD_OK) {
            fprintf(stderr, "hadal bench: gen-model failed: %s\n", err);
            return 1;
        }
        fprintf(stderr, "hadal bench: generated in %.1f s\n", bench_now() - t0);
    }
    return 0;
}

static int bench_open_engine(const engine_opts_t *o, const char *dir, hd_engine_h *e_p,
                             double *load_s)
{
    char err[1024] = "";
    hd_engine_params_t ep = {.model_path = dir, .n_threads = o->threads, .err = err,
                             .err_len = sizeof(err)};
    double t0;
    if (strcmp(o->numerics, "plain") == 0) {
        ep.numerics = HD_NUMERICS_PLAIN;
    } else if (strcmp(o->numerics, "official") != 0) {
        fprintf(stderr, "hadal bench: --numerics is official or plain\n");
        return 2;
    }
    t0 = bench_now();
    if (hd_engine_create(&ep, e_p) != HD_OK) {
        fprintf(stderr, "hadal bench: cannot load %s: %s\n", dir, err);
        return 1;
    }
    *load_s = bench_now() - t0;
    return 0;
}

static int32_t bench_argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++) {
        if (x[i] > x[best]) {
            best = i;
        }
    }
    return (int32_t)best;
}

static int bench_decode(int argc, char **argv)
{
    engine_opts_t o = {.preset = "medium", .numerics = "official", .batches = "1,8",
                       .tokens = 16, .prompt = 32, .warmup = 8, .stream_mib = 512};
    char dir[PATH_MAX];
    int rc = bench_engine_opts(argc, argv, "decode", &o), threads;
    hd_engine_h e = NULL;
    double load_s, peak;
    uint64_t rss0, rss_load;
    stream_result_t sr;
    hd_buf_t js;
    const char *p;
    if (rc >= 0) {
        return rc;
    }
    if (o.tokens < 1 || o.prompt < 1 || o.warmup < 0) {
        fprintf(stderr, "hadal bench decode: --tokens and --prompt must be >= 1, --warmup >= 0\n");
        return 2;
    }
    threads = bench_threads(o.threads);
    o.threads = threads;
    rc = bench_model_dir(&o, dir, sizeof(dir));
    if (rc != 0) {
        return rc;
    }
    if (bench_stream_run(threads, o.stream_mib, &sr) != 0) {
        return 1;
    }
    peak = bench_flops_run(threads);
    rss0 = bench_rss();
    rc = bench_open_engine(&o, dir, &e, &load_s);
    if (rc != 0) {
        return rc;
    }
    rss_load = bench_rss();
    {
        /* bandwidth again after loading: on a shared machine it moves; the larger of the two
           measurements is the ceiling (the conservative choice for the ratios below) */
        stream_result_t sr2;
        if (bench_stream_run(threads, o.stream_mib, &sr2) == 0) {
            sr.read_gbs = sr2.read_gbs > sr.read_gbs ? sr2.read_gbs : sr.read_gbs;
            sr.copy_gbs = sr2.copy_gbs > sr.copy_gbs ? sr2.copy_gbs : sr.copy_gbs;
            sr.triad_gbs = sr2.triad_gbs > sr.triad_gbs ? sr2.triad_gbs : sr.triad_gbs;
        }
    }
    const hd_model_config_t *cfg = hd_engine_config(e);
    int64_t vocab = cfg->vocab_size;
    hd_buf_init(&js);
    hd_buf_printf(&js, "{\"bench\":\"decode\",\"model\":\"%s\",\"threads\":%d,\"isa\":\"%s\","
                       "\"stream_read_gbs\":%.3f,\"stream_copy_gbs\":%.3f,\"stream_triad_gbs\":%.3f,"
                       "\"peak_gflops\":%.3f,\"weight_bytes\":%zu,\"active_bytes_per_token\":%zu,"
                       "\"load_s\":%.3f,\"rss_before_load\":%llu,\"rss_after_load\":%llu,\"runs\":[",
                  dir, threads, hd_kern_cpu_isa(), sr.read_gbs, sr.copy_gbs, sr.triad_gbs,
                  peak / 1e9, hd_engine_weight_bytes(e), hd_engine_active_bytes_per_token(e),
                  load_s, (unsigned long long)rss0, (unsigned long long)rss_load);
    if (!o.json) {
        printf("machine: %d threads, %s; best of two ", threads, hd_kern_cpu_isa());
        bench_stream_print(&sr);
        printf("peak fp32: %.2f GFLOP/s\n", peak / 1e9);
        printf("model %s: %.2f GB of weights mapped, %.1f MB active per token (attention, shared "
               "and top-k experts, head); load %.2f s; RSS %.0f MB before load, %.0f MB after\n",
               dir, (double)hd_engine_weight_bytes(e) / 1e9,
               (double)hd_engine_active_bytes_per_token(e) / 1e6, load_s, (double)rss0 / 1e6,
               (double)rss_load / 1e6);
    }
    p = o.batches;
    for (int run = 0; *p != '\0'; run++) {
        char *end;
        long B = strtol(p, &end, 10);
        hd_seq_h *seqs;
        hd_batch_item_t *items;
        int32_t *toks;
        float *logits;
        double t0 = 0, dt;
        hd_kern_stats_t st;
        if (end == p || B < 1 || B > 256) {
            fprintf(stderr, "hadal bench decode: bad --batch list '%s'\n", o.batches);
            rc = 2;
            break;
        }
        p = *end == ',' ? end + 1 : end;
        seqs = calloc((size_t)B, sizeof(*seqs));
        items = calloc((size_t)B, sizeof(*items));
        toks = calloc((size_t)(B * o.prompt), sizeof(*toks));
        logits = hd_aligned_calloc((size_t)(B * vocab), sizeof(float), "bench logits");
        if (seqs == NULL || items == NULL || toks == NULL || logits == NULL) {
            rc = 1;
        }
        for (long b = 0; rc == 0 && b < B; b++) {
            if (hd_seq_create(e, &seqs[b]) != HD_OK) {
                rc = 1;
                break;
            }
            for (int i = 0; i < o.prompt; i++) { /* distinct prompts: routing differs */
                toks[b * o.prompt + i] = (int32_t)((b * 7919 + i * 104729 + 17) % (vocab - 3));
            }
            items[b] = (hd_batch_item_t){.seq = seqs[b], .tokens = toks + b * o.prompt,
                                         .n_tokens = o.prompt, .logits = HD_LOGITS_LAST,
                                         .logits_out = logits + b * vocab};
        }
        if (rc == 0 && hd_engine_step(e, items, (int)B) != HD_OK) {
            fprintf(stderr, "hadal bench decode: prefill failed: %s\n", hd_engine_last_error(e));
            rc = 1;
        }
        /* untimed warm-up steps fault in the mmap'ed weights (and settle the caches) */
        for (int s = 0; rc == 0 && s < o.warmup + o.tokens; s++) {
            if (s == o.warmup) {
                hd_engine_kern_stats(e, NULL, true);
                t0 = bench_now();
            }
            for (long b = 0; b < B; b++) {
                toks[b] = bench_argmax(logits + b * vocab, vocab);
                items[b].tokens = toks + b;
                items[b].n_tokens = 1;
            }
            if (hd_engine_step(e, items, (int)B) != HD_OK) {
                fprintf(stderr, "hadal bench decode: step failed: %s\n", hd_engine_last_error(e));
                rc = 1;
            }
        }
        dt = bench_now() - t0;
        hd_engine_kern_stats(e, &st, true);
        if (rc == 0) {
            double step_s = dt / o.tokens, tps = (double)B / step_s;
            double bytes_step = (double)st.weight_bytes / o.tokens;
            double gbs = bytes_step / step_s / 1e9;
            uint64_t rss = bench_rss();
            if (!o.json) {
                printf("decode batch %ld: %.2f tokens/s (%.1f ms/step); weights read %.1f MB/step "
                       "= %.1f MB/token; %.2f GB/s = %.0f%% of stream copy, %.0f%% of stream read; "
                       "RSS %.0f MB\n",
                       B, tps, step_s * 1e3, bytes_step / 1e6, bytes_step / 1e6 / (double)B, gbs,
                       100.0 * gbs / sr.copy_gbs, 100.0 * gbs / sr.read_gbs, (double)rss / 1e6);
                printf("  per step: ");
                for (int f = 0; f < 4; f++) {
                    if (st.fmt_calls[f] == 0) {
                        continue;
                    }
                    printf("%s %.0f calls %.1f MB %.1f ms (%.2f GB/s); ", fmt_names[f],
                           (double)st.fmt_calls[f] / o.tokens, st.fmt_bytes[f] / 1e6 / o.tokens,
                           st.fmt_ns[f] / 1e6 / o.tokens,
                           st.fmt_ns[f] ? (double)st.fmt_bytes[f] / (double)st.fmt_ns[f] : 0.0);
                }
                printf("attention %.1f ms; other %.1f ms\n", st.attn_ns / 1e6 / o.tokens,
                       step_s * 1e3 - (double)(st.fmt_ns[0] + st.fmt_ns[1] + st.fmt_ns[2] +
                                               st.fmt_ns[3] + st.attn_ns) / 1e6 / o.tokens);
            }
            hd_buf_printf(&js, "%s{\"batch\":%ld,\"tokens_per_s\":%.4f,\"step_ms\":%.4f,"
                               "\"weight_bytes_per_step\":%.0f,\"gbs\":%.4f,"
                               "\"frac_of_copy\":%.4f,\"frac_of_read\":%.4f,\"rss\":%llu}",
                          run ? "," : "", B, tps, step_s * 1e3, bytes_step, gbs,
                          gbs / sr.copy_gbs, gbs / sr.read_gbs, (unsigned long long)rss);
        }
        for (long b = 0; b < B; b++) {
            hd_seq_destroy(seqs[b]);
        }
        free(seqs);
        free(items);
        free(toks);
        hd_free(logits);
        if (rc != 0) {
            break;
        }
    }
    hd_buf_printf(&js, "]}\n");
    if (o.json && rc == 0) {
        fputs(js.data, stdout);
    }
    hd_buf_cleanup(&js);
    hd_engine_destroy(e);
    return rc;
}

static int bench_prefill(int argc, char **argv)
{
    engine_opts_t o = {.preset = "medium", .numerics = "official", .batches = "1",
                       .tokens = 256, .prompt = 0, .stream_mib = 512};
    char dir[PATH_MAX];
    int rc = bench_engine_opts(argc, argv, "prefill", &o), threads;
    hd_engine_h e = NULL;
    hd_seq_h seq = NULL;
    double load_s, peak, best = 1e30;
    hd_kern_stats_t st = {0};
    int32_t *toks;
    float *logits;
    if (rc >= 0) {
        return rc;
    }
    if (o.tokens < 1) {
        fprintf(stderr, "hadal bench prefill: --tokens must be >= 1\n");
        return 2;
    }
    threads = bench_threads(o.threads);
    o.threads = threads;
    rc = bench_model_dir(&o, dir, sizeof(dir));
    if (rc != 0) {
        return rc;
    }
    peak = bench_flops_run(threads);
    rc = bench_open_engine(&o, dir, &e, &load_s);
    if (rc != 0) {
        return rc;
    }
    int64_t vocab = hd_engine_config(e)->vocab_size;
    toks = calloc((size_t)o.tokens, sizeof(*toks));
    logits = hd_aligned_calloc((size_t)vocab, sizeof(float), "bench logits");
    for (int i = 0; toks != NULL && i < o.tokens; i++) {
        toks[i] = (int32_t)((i * 104729 + 17) % (vocab - 3));
    }
    for (int rep = 0; rc == 0 && rep < 2; rep++) { /* rep 0 faults the weights in */
        hd_batch_item_t it = {.tokens = toks, .n_tokens = o.tokens, .logits = HD_LOGITS_LAST,
                              .logits_out = logits};
        double t0, dt;
        if (toks == NULL || logits == NULL || hd_seq_create(e, &seq) != HD_OK) {
            rc = 1;
            break;
        }
        it.seq = seq;
        hd_engine_kern_stats(e, NULL, true);
        t0 = bench_now();
        if (hd_engine_step(e, &it, 1) != HD_OK) {
            fprintf(stderr, "hadal bench prefill: %s\n", hd_engine_last_error(e));
            rc = 1;
        }
        dt = bench_now() - t0;
        hd_engine_kern_stats(e, &st, false);
        if (rep > 0 && dt < best) {
            best = dt;
        }
        hd_seq_destroy(seq);
    }
    if (rc == 0) {
        double tps = o.tokens / best, flops = (double)st.matmul_flops / best;
        if (o.json) {
            printf("{\"bench\":\"prefill\",\"model\":\"%s\",\"threads\":%d,\"isa\":\"%s\","
                   "\"tokens\":%d,\"seconds\":%.4f,\"tokens_per_s\":%.3f,\"matmul_gflops\":%.3f,"
                   "\"peak_gflops\":%.3f,\"frac_of_peak\":%.4f}\n",
                   dir, threads, hd_kern_cpu_isa(), o.tokens, best, tps, flops / 1e9,
                   peak / 1e9, flops / peak);
        } else {
            printf("machine: %d threads, %s; peak fp32 %.2f GFLOP/s\n", threads,
                   hd_kern_cpu_isa(), peak / 1e9);
            printf("prefill %d tokens (%s): %.3f s = %.1f tokens/s; matmul %.1f GFLOP/token, "
                   "%.2f GFLOP/s = %.0f%% of peak\n",
                   o.tokens, dir, best, tps, (double)st.matmul_flops / o.tokens / 1e9,
                   flops / 1e9, 100.0 * flops / peak);
        }
    }
    free(toks);
    hd_free(logits);
    hd_engine_destroy(e);
    return rc;
}

static int bench_stream(int argc, char **argv)
{
    int threads = 0;
    size_t mib = 512;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc) {
            mib = (size_t)atol(argv[++i]);
        } else {
            fprintf(stderr, "usage: hadal bench stream [--threads N] [--mib M]\n");
            return 2;
        }
    }
    stream_result_t r;
    if (mib < 1 || bench_stream_run(bench_threads(threads), mib, &r) != 0) {
        return 1;
    }
    bench_stream_print(&r);
    return 0;
}

static int bench_flops(int argc, char **argv)
{
    int threads = argc > 2 && strcmp(argv[1], "--threads") == 0 ? atoi(argv[2]) : 0;
    threads = bench_threads(threads);
    printf("peak fp32 (%d threads, %s FMA chains): %.2f GFLOP/s\n", threads, hd_kern_cpu_isa(),
           bench_flops_run(threads) / 1e9);
    return 0;
}

int hd_cli_bench(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
        const char *help;
    } subs[] = {
        {"stream", bench_stream, "memory bandwidth (read, copy, triad)"},
        {"flops", bench_flops, "peak fp32 FMA throughput"},
        {"gemm", bench_gemm, "one matmul kernel against peak FLOP/s and bandwidth"},
        {"decode", bench_decode, "engine decode tokens/s against memory bandwidth"},
        {"prefill", bench_prefill, "engine prefill tokens/s against peak FLOP/s"},
        {"alltoall", hd_cli_bench_alltoall, "MoE dispatch+combine per transport against MPI"},
        {"cluster", hd_cli_bench_cluster, "process grid vs one engine; coordinator CPU/step"},
        {"tokenize", hd_cli_bench_tok, "tokenizer tokens/s: whole text, per line, N threads"},
    };
    size_t n = sizeof(subs) / sizeof(subs[0]);
    if (argc >= 2) {
        for (size_t i = 0; i < n; i++) {
            if (strcmp(argv[1], subs[i].name) == 0) {
                return subs[i].fn(argc - 1, argv + 1);
            }
        }
    }
    fprintf(argc >= 2 && strcmp(argv[1], "--help") != 0 ? stderr : stdout,
            "usage: hadal bench WHAT [options]   (hadal bench WHAT --help)\n");
    for (size_t i = 0; i < n; i++) {
        printf("  %-8s %s\n", subs[i].name, subs[i].help);
    }
    return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
}
