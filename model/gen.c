/*
 * gen.c - gen-model: random-weight checkpoints in the official layout and formats.
 *
 * The inventory (inventory.c) says what to write; this file says how each tensor's bytes
 * are made. Work is cut into 128-row bands (one FP8 block row), each seeded from (seed,
 * tensor name, band), generated in parallel on the thread pool and written in order through
 * the streaming safetensors writer, so output bytes never depend on threads or sharding and
 * memory stays at one batch of bands however large the model is.
 */
#include "hadal/gen.h"
#include "hadal/alloc.h"
#include "hadal/json.h"
#include "hadal/log.h"
#include "hadal/pool.h"
#include "hadal/quant.h"
#include "hadal/rng.h"
#include "hadal/safetensors.h"
#include "gen_impl.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gen.c writes safetensors (little-endian) by copying host values"
#endif

#define GEN_BAND_ROWS 128
#define GEN_BATCH_BYTES (256u << 20) /* weight bytes generated per parallel batch */
#define GEN_BATCH_JOBS 4096

/* ---- seeding ---- */

static uint64_t gen_mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The seed of tensor @name: a function of the root seed and the name only. */
static uint64_t gen_tensor_seed(uint64_t seed, const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = name; *p; p++) {
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    }
    return gen_mix(seed ^ gen_mix(h));
}

/* ---- geometry of a weight (or plain tensor) in 128-row bands ---- */

typedef struct {
    int64_t rows;         /* logical rows */
    int64_t cols;         /* logical columns */
    uint64_t row_bytes;   /* stored bytes per row of the weight */
    uint64_t scale_bytes; /* bytes of the scale tensor (0 for plain) */
    int64_t n_bands;
} gen_geom_t;

static void gen_geom(const hd_inv_tensor_t *w, gen_geom_t *g)
{
    if (w->role == HD_INV_PLAIN) {
        g->rows = w->shape[0];
        g->cols = w->ndim > 1 ? w->shape[1] : 1;
        g->row_bytes = (uint64_t)g->cols * hd_dtype_size(w->dtype);
        g->scale_bytes = 0;
    } else {
        g->rows = w->rows;
        g->cols = w->cols;
        if (w->role == HD_INV_FP8_WEIGHT) {
            g->row_bytes = (uint64_t)g->cols;
            g->scale_bytes = (uint64_t)((g->rows + 127) / 128) * (uint64_t)((g->cols + 127) / 128);
        } else {
            g->row_bytes = (uint64_t)g->cols / 2;
            g->scale_bytes = (uint64_t)g->rows * (uint64_t)(g->cols / 32);
        }
    }
    g->n_bands = (g->rows + GEN_BAND_ROWS - 1) / GEN_BAND_ROWS;
}

/* Rows in band @b, and where its scales start inside the scale tensor. */
static int64_t gen_band_rows(const gen_geom_t *g, int64_t b)
{
    int64_t r = g->rows - b * GEN_BAND_ROWS;
    return r < GEN_BAND_ROWS ? r : GEN_BAND_ROWS;
}

static uint64_t gen_band_scale_off(const hd_inv_tensor_t *w, const gen_geom_t *g, int64_t b)
{
    if (w->role == HD_INV_FP8_WEIGHT) {
        return (uint64_t)b * (uint64_t)((g->cols + 127) / 128);
    }
    return (uint64_t)b * GEN_BAND_ROWS * (uint64_t)(g->cols / 32);
}

/* ---- values ---- */

/* @n normals N(@mean, @std) by Marsaglia's polar method, both outputs used. */
static void gen_normals(hd_rng_t *r, float *x, size_t n, double mean, double std)
{
    size_t i = 0;
    while (i < n) {
        double u = 2.0 * hd_rng_uniform_d(r) - 1.0;
        double v = 2.0 * hd_rng_uniform_d(r) - 1.0;
        double s = u * u + v * v, m;
        if (s >= 1.0 || s == 0.0) {
            continue;
        }
        m = std * sqrt(-2.0 * log(s) / s);
        x[i++] = (float)(mean + u * m);
        if (i < n) {
            x[i++] = (float)(mean + v * m);
        }
    }
}

static void gen_values(hd_rng_t *r, hd_inv_init_t init, float *x, size_t n)
{
    switch (init) {
    case HD_INV_INIT_NORM:
        gen_normals(r, x, n, 1.0, 0.1);
        break;
    case HD_INV_INIT_APE:
    case HD_INV_INIT_HC_BASE:
        gen_normals(r, x, n, 0.0, 0.5);
        break;
    case HD_INV_INIT_SINK:
        gen_normals(r, x, n, 0.0, 1.0);
        break;
    case HD_INV_INIT_HC_SCALE:
        for (size_t i = 0; i < n; i++) {
            x[i] = (float)(0.5 + hd_rng_uniform_d(r));
        }
        break;
    case HD_INV_INIT_GATE_BIAS:
        gen_normals(r, x, n, 0.0, 0.1);
        break;
    default:
        gen_normals(r, x, n, 0.0, 0.02);
        break;
    }
}

/* One row of tid2eid: @k distinct experts in [0, @e), in draw order. */
static void gen_tid2eid_row(hd_rng_t *r, int64_t *row, int k, int e)
{
    for (int i = 0; i < k; i++) {
        int64_t v;
        bool dup;
        do {
            v = (int64_t)hd_rng_below(r, (uint64_t)e);
            dup = false;
            for (int j = 0; j < i; j++) {
                dup |= row[j] == v;
            }
        } while (dup);
        row[i] = v;
    }
}

/* Quantise a band of FP8 rows: e4m3 codes into @q, one e8m0 byte per 128x128 block. */
static void gen_quant_fp8(const float *x, int64_t rows, int64_t cols, uint8_t *q, uint8_t *s)
{
    const float floor8 = 448.0f * 1.17549435e-38f;
    for (int64_t c0 = 0, bj = 0; c0 < cols; c0 += 128, bj++) {
        int64_t c1 = c0 + 128 < cols ? c0 + 128 : cols;
        float amax = 0.0f, sc, inv;
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c = c0; c < c1; c++) {
                float a = fabsf(x[r * cols + c]);
                amax = a > amax ? a : amax;
            }
        }
        sc = hd_pow2_scale_ceil(amax, 448.0f, floor8);
        inv = 1.0f / sc; /* exact: a power of two */
        s[bj] = hd_f32_to_e8m0_ceil(sc);
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c = c0; c < c1; c++) {
                q[r * cols + c] = hd_gen_e4m3(x[r * cols + c] * inv);
            }
        }
    }
}

/* Quantise a band of FP4 rows: packed e2m1 pairs (low nibble first), e8m0 per 32 inputs. */
static void gen_quant_fp4(const float *x, int64_t rows, int64_t cols, uint8_t *q, uint8_t *s)
{
    const float floor4 = 6.0f * 1.17549435e-38f;
    int64_t groups = cols / 32;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        for (int64_t g = 0; g < groups; g++) {
            float amax = 0.0f, sc, inv;
            for (int i = 0; i < 32; i++) {
                float a = fabsf(xr[g * 32 + i]);
                amax = a > amax ? a : amax;
            }
            sc = hd_pow2_scale_ceil(amax, 6.0f, floor4);
            inv = 1.0f / sc;
            s[r * groups + g] = hd_f32_to_e8m0_ceil(sc);
            for (int i = 0; i < 32; i += 2) {
                uint8_t lo = hd_gen_e2m1(xr[g * 32 + i] * inv);
                uint8_t hi = hd_gen_e2m1(xr[g * 32 + i + 1] * inv);
                q[r * (cols / 2) + (g * 32 + i) / 2] = (uint8_t)(lo | (hi << 4));
            }
        }
    }
}

/*
 * Generate band @b of weight/plain tensor @w: stored weight bytes into @wout, this band's
 * scales (if any) into @sout. Returns false on allocation failure.
 */
static bool gen_band(const hd_model_config_t *cfg, uint64_t tseed, const hd_inv_tensor_t *w,
                     const gen_geom_t *g, int64_t b, uint8_t *wout, uint8_t *sout)
{
    int64_t rows = gen_band_rows(g, b);
    size_t n = (size_t)(rows * g->cols);
    hd_rng_t r;
    float *x;

    hd_rng_seed(&r, tseed + (uint64_t)b * 0xD1B54A32D192ED03ull);
    if (w->init == HD_INV_INIT_TID2EID) {
        int64_t *out = (int64_t *)(void *)wout;
        for (int64_t i = 0; i < rows; i++) {
            gen_tid2eid_row(&r, out + i * g->cols, (int)g->cols, cfg->n_routed_experts);
        }
        return true;
    }
    x = hd_malloc(n * sizeof(*x), "gen band");
    if (x == NULL) {
        return false;
    }
    gen_values(&r, w->init, x, n);
    switch (w->role) {
    case HD_INV_FP8_WEIGHT:
        gen_quant_fp8(x, rows, g->cols, wout, sout);
        break;
    case HD_INV_FP4_WEIGHT:
        gen_quant_fp4(x, rows, g->cols, wout, sout);
        break;
    default:
        if (w->dtype == HD_DT_BF16) {
            uint16_t *o = (uint16_t *)(void *)wout;
            for (size_t i = 0; i < n; i++) {
                o[i] = hd_f32_to_bf16(x[i]);
            }
        } else {
            hd_assert(w->dtype == HD_DT_F32);
            memcpy(wout, x, n * sizeof(*x));
        }
        break;
    }
    hd_free(x);
    return true;
}

/* ---- single tensor ---- */

hd_status_t hd_gen_tensor(const hd_model_config_t *cfg, uint64_t seed, const hd_inv_tensor_t *t,
                          void *out)
{
    hd_inv_tensor_t w;
    gen_geom_t g;
    uint8_t *wbuf = NULL, *sbuf = NULL;
    uint64_t tseed;
    bool is_scale;
    hd_status_t status = HD_OK;

    if (cfg == NULL || t == NULL || out == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    w = *t;
    is_scale = t->role == HD_INV_FP8_SCALE || t->role == HD_INV_FP4_SCALE;
    if (is_scale) {
        size_t len = strlen(w.name);
        if (len < 6 || strcmp(w.name + len - 6, ".scale") != 0 || len + 1 >= sizeof(w.name)) {
            return HD_ERR_INVALID_PARAM;
        }
        memcpy(w.name + len - 6, ".weight", 8);
        w.role = t->role == HD_INV_FP8_SCALE ? HD_INV_FP8_WEIGHT : HD_INV_FP4_WEIGHT;
        w.init = HD_INV_INIT_WEIGHT;
    }
    gen_geom(&w, &g);
    tseed = gen_tensor_seed(seed, w.name);
    if (is_scale) {
        wbuf = hd_malloc((size_t)(g.row_bytes * GEN_BAND_ROWS), "gen weight band");
        sbuf = out;
    } else {
        wbuf = out;
        if (g.scale_bytes > 0) {
            sbuf = hd_malloc((size_t)g.scale_bytes, "gen scales");
        }
    }
    if (wbuf == NULL || (g.scale_bytes > 0 && sbuf == NULL)) {
        status = HD_ERR_NO_MEMORY;
        goto out;
    }
    for (int64_t b = 0; b < g.n_bands; b++) {
        uint8_t *wo = is_scale ? wbuf : wbuf + (uint64_t)b * GEN_BAND_ROWS * g.row_bytes;
        uint8_t *so = sbuf ? sbuf + gen_band_scale_off(&w, &g, b) : NULL;
        if (!gen_band(cfg, tseed, &w, &g, b, wo, so)) {
            status = HD_ERR_NO_MEMORY;
            goto out;
        }
    }
out:
    if (is_scale) {
        hd_free(wbuf);
    } else if (sbuf != out) {
        hd_free(sbuf);
    }
    return status;
}

/* ---- whole model ---- */

typedef struct {
    const hd_inv_tensor_t *w; /* weight or plain tensor */
    const hd_inv_tensor_t *s; /* its scale tensor, or NULL */
    gen_geom_t g;
    uint64_t tseed;
    uint64_t bytes; /* stored bytes of w and s */
    int shard;      /* 0-based shard index */
    uint8_t *sbuf;  /* scales while its bands are in flight */
} gen_unit_t;

typedef struct {
    gen_unit_t *u;
    int64_t band;
    uint8_t *wout;
} gen_job_t;

typedef struct {
    const hd_model_config_t *cfg;
    gen_job_t *jobs;
    int failed; /* set (atomically) when a job could not allocate */
} gen_batch_t;

static void gen_job_run(void *ctx, size_t i)
{
    gen_batch_t *bt = ctx;
    gen_job_t *j = &bt->jobs[i];
    uint8_t *so = j->u->sbuf ? j->u->sbuf + gen_band_scale_off(j->u->w, &j->u->g, j->band) : NULL;
    if (!gen_band(bt->cfg, j->u->tseed, j->u->w, &j->u->g, j->band, j->wout, so)) {
        __atomic_store_n(&bt->failed, 1, __ATOMIC_RELAXED);
    }
}

typedef struct {
    const hd_model_config_t *cfg;
    const hd_gen_params_t *p;
    hd_pool_h pool;
    gen_unit_t *units;
    size_t n_units;
    int n_shards;
    uint8_t *arena; /* batch output */
    size_t arena_len;
    gen_job_t *jobs;
    char *err;
    size_t err_len;
} gen_ctx_t;

static hd_status_t gen_fail(gen_ctx_t *c, hd_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static hd_status_t gen_fail(gen_ctx_t *c, hd_status_t st, const char *fmt, ...)
{
    va_list ap;
    if (c->err != NULL && c->err_len > 0) {
        va_start(ap, fmt);
        vsnprintf(c->err, c->err_len, fmt, ap);
        va_end(ap);
    }
    return st;
}

static void shard_name(const gen_ctx_t *c, int s, char *buf, size_t len)
{
    snprintf(buf, len, "model-%05d-of-%05d.safetensors", s + 1, c->n_shards);
}

/* Write the bands of units [@u0, @u1) (all in one shard) through @w, batch by batch. */
static hd_status_t gen_write_units(gen_ctx_t *c, hd_st_writer_h w, size_t u0, size_t u1)
{
    size_t u = u0;
    int64_t band = 0;
    hd_status_t status = HD_OK;

    while (u < u1) {
        size_t nj = 0, used = 0;
        gen_batch_t bt = {.cfg = c->cfg, .jobs = c->jobs, .failed = 0};
        /* fill a batch with the next bands, in file order */
        while (u < u1 && nj < GEN_BATCH_JOBS) {
            gen_unit_t *un = &c->units[u];
            /* bands start 64-byte aligned: tid2eid / f32 / bf16 bands are stored typed */
            uint64_t need = ((uint64_t)gen_band_rows(&un->g, band) * un->g.row_bytes + 63) & ~63ull;
            if (nj > 0 && used + need > c->arena_len) {
                break;
            }
            if (band == 0 && un->g.scale_bytes > 0) {
                un->sbuf = hd_malloc((size_t)un->g.scale_bytes, "gen scales");
                if (un->sbuf == NULL) {
                    status = HD_ERR_NO_MEMORY;
                    goto out;
                }
            }
            c->jobs[nj].u = un;
            c->jobs[nj].band = band;
            c->jobs[nj].wout = c->arena + used;
            used += (size_t)need;
            nj++;
            if (++band == un->g.n_bands) {
                band = 0;
                u++;
            }
        }
        hd_pool_run(c->pool, nj, gen_job_run, &bt);
        if (bt.failed) {
            status = HD_ERR_NO_MEMORY;
            goto out;
        }
        for (size_t j = 0; j < nj; j++) {
            gen_job_t *jb = &c->jobs[j];
            uint64_t nb = (uint64_t)gen_band_rows(&jb->u->g, jb->band) * jb->u->g.row_bytes;
            HD_CHECK_GOTO(hd_st_writer_write(w, jb->wout, (size_t)nb), status, out);
            if (jb->band == jb->u->g.n_bands - 1 && jb->u->sbuf != NULL) {
                HD_CHECK_GOTO(hd_st_writer_write(w, jb->u->sbuf, (size_t)jb->u->g.scale_bytes),
                              status, out);
                hd_free(jb->u->sbuf);
                jb->u->sbuf = NULL;
            }
        }
    }
out:
    for (size_t i = u0; i < u1; i++) {
        hd_free(c->units[i].sbuf);
        c->units[i].sbuf = NULL;
    }
    return status;
}

static hd_status_t gen_write_shard(gen_ctx_t *c, int s, size_t u0, size_t u1)
{
    char name[64], path[4096];
    hd_st_writer_h w;
    hd_status_t status;
    uint64_t size;

    shard_name(c, s, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", c->p->out_dir, name);
    status = hd_st_writer_create(path, &w);
    if (status != HD_OK) {
        return gen_fail(c, status, "%s: cannot create: %s", path, hd_status_string(status));
    }
    for (size_t i = u0; i < u1; i++) {
        const gen_unit_t *un = &c->units[i];
        HD_CHECK_GOTO(hd_st_writer_declare(w, un->w->name, un->w->dtype, un->w->ndim, un->w->shape),
                      status, err_abort);
        if (un->s != NULL) {
            HD_CHECK_GOTO(
                hd_st_writer_declare(w, un->s->name, un->s->dtype, un->s->ndim, un->s->shape),
                status, err_abort);
        }
    }
    size = hd_st_writer_file_size(w);
    HD_CHECK_GOTO(gen_write_units(c, w, u0, u1), status, err_abort);
    status = hd_st_writer_finish(w);
    if (status != HD_OK) {
        return gen_fail(c, status, "%s: write failed: %s", path, hd_status_string(status));
    }
    if (c->p->on_file != NULL) {
        c->p->on_file(path, size, c->p->user);
    }
    return HD_OK;

err_abort:
    hd_st_writer_abort(w);
    return gen_fail(c, status, "%s: write failed: %s", path, hd_status_string(status));
}

static hd_status_t gen_write_text(gen_ctx_t *c, const char *name, const char *text, size_t len)
{
    char path[4096], tmp[4200];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s", c->p->out_dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (f == NULL) {
        return gen_fail(c, HD_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    }
    if (fwrite(text, 1, len, f) != len || fclose(f) != 0) {
        unlink(tmp);
        return gen_fail(c, HD_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return gen_fail(c, HD_ERR_IO, "%s: rename failed: %s", path, strerror(errno));
    }
    if (c->p->on_file != NULL) {
        c->p->on_file(path, len, c->p->user);
    }
    return HD_OK;
}

static hd_status_t gen_write_index(gen_ctx_t *c, uint64_t total)
{
    hd_buf_t b;
    char name[64];
    hd_status_t status;

    hd_buf_init(&b);
    hd_buf_printf(&b, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {",
                  (unsigned long long)total);
    for (size_t i = 0; i < c->n_units; i++) {
        const gen_unit_t *un = &c->units[i];
        shard_name(c, un->shard, name, sizeof(name));
        for (int k = 0; k < 2; k++) {
            const hd_inv_tensor_t *t = k ? un->s : un->w;
            if (t == NULL) {
                continue;
            }
            hd_buf_puts(&b, i == 0 && k == 0 ? "\n    " : ",\n    ");
            hd_buf_json_str(&b, t->name, strlen(t->name));
            hd_buf_printf(&b, ": \"%s\"", name);
        }
    }
    hd_buf_puts(&b, "\n  }\n}\n");
    status = b.failed ? gen_fail(c, HD_ERR_NO_MEMORY, "out of memory building the index")
                      : gen_write_text(c, "model.safetensors.index.json", b.data, b.len);
    hd_buf_cleanup(&b);
    return status;
}

static hd_status_t gen_write_config(gen_ctx_t *c)
{
    char *text = NULL;
    size_t len = 0;
    hd_status_t status;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL) {
        return gen_fail(c, HD_ERR_NO_MEMORY, "out of memory writing config.json");
    }
    status = hd_config_write_hub(c->cfg, f);
    fclose(f);
    if (status == HD_OK) {
        status = gen_write_text(c, "config.json", text, len);
    } else {
        gen_fail(c, status, "cannot format config.json");
    }
    free(text); /* open_memstream's buffer comes from malloc */
    return status;
}

/*
 * Within each shard, order tensors by element size (8, 4, 2, 1 bytes; stable otherwise) so
 * that, packed back to back after the 8-aligned header, every tensor starts aligned to its
 * element type. Readers may then use the mapped data in place. The file order is free.
 */
static hd_status_t gen_align_units(gen_ctx_t *c)
{
    static const size_t sizes[] = {8, 4, 2, 1};
    gen_unit_t *tmp;
    size_t k = 0;
    if (c->n_units == 0) {
        return HD_OK;
    }
    tmp = hd_calloc(c->n_units, sizeof(*tmp), "gen units sorted");
    if (tmp == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < c->n_units;) {
        size_t j = i;
        while (j < c->n_units && c->units[j].shard == c->units[i].shard) {
            j++;
        }
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            for (size_t u = i; u < j; u++) {
                if (hd_dtype_size(c->units[u].w->dtype) == sizes[s]) {
                    tmp[k++] = c->units[u];
                }
            }
        }
        i = j;
    }
    hd_assert(k == c->n_units);
    memcpy(c->units, tmp, k * sizeof(*tmp));
    hd_free(tmp);
    return HD_OK;
}

hd_status_t hd_gen_model(const hd_model_config_t *cfg, const hd_gen_params_t *params, char *err,
                         size_t err_len)
{
    gen_ctx_t c;
    hd_inv_t inv;
    struct stat st;
    uint64_t shard_bytes, cur = 0, total = 0, max_band = 0;
    hd_status_t status;
    size_t nu = 0;

    memset(&c, 0, sizeof(c));
    c.err = err;
    c.err_len = err_len;
    if (err != NULL && err_len > 0) {
        err[0] = '\0';
    }
    if (cfg == NULL || params == NULL || params->out_dir == NULL) {
        return HD_ERR_INVALID_PARAM;
    }
    c.cfg = cfg;
    c.p = params;
    status = hd_config_validate(cfg, err, err_len);
    if (status != HD_OK) {
        return status;
    }
    if (stat(params->out_dir, &st) != 0) {
        if (mkdir(params->out_dir, 0755) != 0) {
            return gen_fail(&c, HD_ERR_IO, "%s: cannot create directory: %s", params->out_dir,
                            strerror(errno));
        }
    } else if (!S_ISDIR(st.st_mode)) {
        return gen_fail(&c, HD_ERR_IO, "%s: not a directory", params->out_dir);
    }
    status = hd_inv_init(&inv, cfg, params->filter);
    if (status != HD_OK) {
        return gen_fail(&c, status, "cannot build the tensor inventory: %s",
                        hd_status_string(status));
    }
    c.units = hd_calloc(inv.n ? inv.n : 1, sizeof(*c.units), "gen units");
    if (c.units == NULL) {
        status = gen_fail(&c, HD_ERR_NO_MEMORY, "out of memory");
        goto out_inv;
    }
    /* plan: pair each weight with its scale, cut shards at the byte limit */
    shard_bytes = params->shard_bytes ? params->shard_bytes : HD_GEN_DEFAULT_SHARD_BYTES;
    for (size_t i = 0; i < inv.n; i++) {
        gen_unit_t *un = &c.units[nu];
        un->w = &inv.t[i];
        if (inv.t[i].role == HD_INV_FP8_WEIGHT || inv.t[i].role == HD_INV_FP4_WEIGHT) {
            hd_assert(i + 1 < inv.n && inv.t[i + 1].role == inv.t[i].role + 1);
            un->s = &inv.t[++i];
        }
        gen_geom(un->w, &un->g);
        un->tseed = gen_tensor_seed(params->seed, un->w->name);
        un->bytes = hd_inv_nbytes(un->w) + (un->s ? hd_inv_nbytes(un->s) : 0);
        if (cur > 0 && cur + un->bytes > shard_bytes) {
            c.n_shards++;
            cur = 0;
        }
        un->shard = c.n_shards;
        cur += un->bytes;
        total += un->bytes;
        if (un->g.row_bytes * GEN_BAND_ROWS > max_band) {
            max_band = un->g.row_bytes * GEN_BAND_ROWS;
        }
        nu++;
    }
    c.n_units = nu;
    c.n_shards += nu > 0;
    status = gen_align_units(&c);
    if (status != HD_OK) {
        gen_fail(&c, status, "out of memory");
        goto out_free;
    }
    /* the batch arena: big enough to keep the pool busy, never more than the model needs */
    c.arena_len = total < GEN_BATCH_BYTES ? (size_t)total : GEN_BATCH_BYTES;
    if (c.arena_len < max_band + 64) {
        c.arena_len = (size_t)max_band + 64;
    }
    c.arena = hd_aligned_calloc(1, c.arena_len, "gen arena");
    c.jobs = hd_calloc(GEN_BATCH_JOBS, sizeof(*c.jobs), "gen jobs");
    if (c.arena == NULL || c.jobs == NULL) {
        status = gen_fail(&c, HD_ERR_NO_MEMORY, "out of memory for the generation batch");
        goto out_free;
    }
    if (params->n_threads != 1) {
        status = hd_pool_create(params->n_threads, &c.pool);
        if (status != HD_OK) {
            gen_fail(&c, status, "cannot start the thread pool");
            goto out_free;
        }
    }
    for (size_t i = 0; i < nu;) {
        size_t j = i;
        while (j < nu && c.units[j].shard == c.units[i].shard) {
            j++;
        }
        HD_CHECK_GOTO(gen_write_shard(&c, c.units[i].shard, i, j), status, out_pool);
        i = j;
    }
    HD_CHECK_GOTO(gen_write_index(&c, total), status, out_pool);
    HD_CHECK_GOTO(gen_write_config(&c), status, out_pool);
    hd_info(HD_SUBSYS_MODEL, "gen-model: %s: %zu tensors, %llu bytes in %d shards", params->out_dir,
            inv.n, (unsigned long long)total, c.n_shards);

out_pool:
    if (c.pool != NULL) {
        hd_pool_destroy(c.pool);
    }
out_free:
    hd_free(c.jobs);
    hd_free(c.arena);
    hd_free(c.units);
out_inv:
    hd_inv_cleanup(&inv);
    return status;
}
