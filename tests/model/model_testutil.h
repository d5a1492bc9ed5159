/*
 * model_testutil.h - helpers shared by the engine tests: a cached generated checkpoint per
 * (preset, seed) under the build tree, and tensor comparison metrics.
 */
#ifndef HD_MODEL_TESTUTIL_H
#define HD_MODEL_TESTUTIL_H

#include "hadal/config.h"
#include "hadal/gen.h"

#pragma GCC diagnostic ignored "-Wformat-truncation"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Directory of a generated checkpoint for @preset/@seed (generated on first use). */
static inline int tu_checkpoint(const char *preset, unsigned long seed, char *dir, size_t len)
{
    const char *bd = getenv("HD_BUILD_DIR");
    char probe[1300], err[512];
    struct stat sb;
    hd_model_config_t cfg;
    snprintf(dir, len, "%s/testdata/%s-s%lu", bd ? bd : ".", preset, seed);
    snprintf(probe, sizeof(probe), "%s/config.json", dir);
    if (stat(probe, &sb) == 0) {
        return 0;
    }
    char parent[1100];
    snprintf(parent, sizeof(parent), "%s/testdata", bd ? bd : ".");
    mkdir(parent, 0755);
    if (hd_config_preset(preset, &cfg) != HD_OK) {
        fprintf(stderr, "unknown preset %s\n", preset);
        return -1;
    }
    /* generate into a temporary name, then rename: concurrent tests never see half a model */
    char tmp[1300];
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", dir, (int)getpid());
    hd_gen_params_t gp = {.seed = seed, .out_dir = tmp, .n_threads = 1};
    if (hd_gen_model(&cfg, &gp, err, sizeof(err)) != HD_OK) {
        fprintf(stderr, "gen-model %s: %s\n", preset, err);
        return -1;
    }
    if (rename(tmp, dir) != 0 && stat(probe, &sb) != 0) {
        fprintf(stderr, "rename %s -> %s failed\n", tmp, dir);
        return -1;
    }
    return 0;
}

/* max|a-b| / max|b| over n floats; *argmax_mismatch counts rows of width w whose argmax differ. */
static inline double tu_rel_err(const float *a, const float *b, long n)
{
    double md = 0.0, mb = 0.0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md)) {
            md = d; /* NaN propagates as a failure */
        }
        if (fabs((double)b[i]) > mb) {
            mb = fabs((double)b[i]);
        }
    }
    return mb > 0 ? md / mb : md;
}

static inline long tu_argmax(const float *x, long n)
{
    long best = 0;
    for (long i = 1; i < n; i++) {
        if (x[i] > x[best]) {
            best = i;
        }
    }
    return best;
}

static inline long tu_argmax_mismatches(const float *a, const float *b, long rows, long w)
{
    long bad = 0;
    for (long r = 0; r < rows; r++) {
        bad += tu_argmax(a + r * w, w) != tu_argmax(b + r * w, w);
    }
    return bad;
}

#endif /* HD_MODEL_TESTUTIL_H */
