/*
 * cli_gen.c - `hadal gen-model`: write a random-weight checkpoint (config.json, index,
 * shards) for a preset or a config file, in the official layout and formats. The work is
 * model/gen.c's; this file parses options and reports what was written.
 */
#include "cli.h"
#include "hadal/config.h"
#include "hadal/gen.h"
#include "hadal/inventory.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void gen_usage(FILE *f)
{
    fprintf(f,
            "usage: hadal gen-model (--preset NAME | --config PATH) --out DIR [options]\n"
            "\n"
            "Writes DIR/config.json (Hub form), DIR/model.safetensors.index.json and\n"
            "DIR/model-NNNNN-of-MMMMM.safetensors with random weights in the official\n"
            "DeepSeek-V4 layout (FP8 e4m3 + e8m0 128x128 scales, FP4 e2m1 experts + e8m0/32).\n"
            "The bytes depend only on the config, the seed and the tensor names.\n"
            "\n"
            "options:\n"
            "  --preset NAME          flash, pro, tiny-a, tiny-a-clamp, tiny-b, medium\n"
            "  --config PATH          a config.json (Hub or transformers form) or its directory\n"
            "  --out DIR              output directory (created if missing)\n"
            "  --seed N               root seed (default 1)\n"
            "  --experts-dtype T      fp4 | fp8 | bf16 routed experts (default: the config's)\n"
            "  --n-layers N           keep only the first N main layers (MTP kept)\n"
            "  --layers LO:HI         write only blocks [LO, HI) and the globals they need\n"
            "                         (MTP block j is block n_layers + j)\n"
            "  --shard-size BYTES     max bytes per shard (default 2000000000)\n"
            "  --threads N            worker threads (default: all CPUs)\n"
            "  --quiet                print nothing on success\n");
}

static void gen_report(const char *path, uint64_t bytes, void *user)
{
    if (user != NULL) {
        printf("wrote %s (%llu bytes)\n", path, (unsigned long long)bytes);
        fflush(stdout);
    }
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
        return -1;
    }
    *out = v;
    return 0;
}

/* Keep the first @n main layers of @c; the MTP entries follow them. */
static void truncate_layers(hd_model_config_t *c, int n)
{
    int mtp[HD_MAX_LAYERS];
    for (int j = 0; j < c->n_mtp_layers; j++) {
        mtp[j] = c->compress_ratio[c->n_layers + j];
    }
    for (int i = n; i < HD_MAX_LAYERS; i++) {
        c->compress_ratio[i] = 0;
    }
    for (int j = 0; j < c->n_mtp_layers; j++) {
        c->compress_ratio[n + j] = mtp[j];
    }
    c->n_layers = n;
    if (c->n_hash_layers > n) {
        c->n_hash_layers = n;
    }
}

int hd_cli_gen_model(int argc, char **argv)
{
    const char *preset = NULL, *config = NULL, *out = NULL, *edt = NULL, *layers = NULL;
    uint64_t seed = 1, shard = 0, n_layers = 0, threads = 0;
    bool quiet = false;
    hd_model_config_t cfg;
    hd_inv_filter_t filter;
    hd_gen_params_t p;
    char err[1024];
    hd_status_t st;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            gen_usage(stdout);
            return 0;
        }
        if (strcmp(a, "--quiet") == 0) {
            quiet = true;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "hadal gen-model: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--preset") == 0) {
            preset = v;
        } else if (strcmp(a, "--config") == 0) {
            config = v;
        } else if (strcmp(a, "--out") == 0) {
            out = v;
        } else if (strcmp(a, "--experts-dtype") == 0) {
            edt = v;
        } else if (strcmp(a, "--layers") == 0) {
            layers = v;
        } else if (strcmp(a, "--seed") == 0 && parse_u64(v, &seed) == 0) {
        } else if (strcmp(a, "--shard-size") == 0 && parse_u64(v, &shard) == 0 && shard > 0) {
        } else if (strcmp(a, "--n-layers") == 0 && parse_u64(v, &n_layers) == 0 && n_layers > 0) {
        } else if (strcmp(a, "--threads") == 0 && parse_u64(v, &threads) == 0 && threads <= 4096) {
        } else {
            fprintf(stderr, "hadal gen-model: bad option %s %s\n", a, v);
            gen_usage(stderr);
            return 2;
        }
    }
    if ((preset == NULL) == (config == NULL) || out == NULL) {
        fprintf(stderr, "hadal gen-model: need exactly one of --preset/--config, and --out\n");
        gen_usage(stderr);
        return 2;
    }
    if (preset != NULL) {
        st = hd_config_preset(preset, &cfg);
        if (st != HD_OK) {
            fprintf(stderr, "hadal gen-model: unknown preset '%s'\n", preset);
            return 2;
        }
    } else {
        st = hd_config_load(config, &cfg, err, sizeof(err));
        if (st != HD_OK) {
            fprintf(stderr, "hadal gen-model: %s\n", err);
            return 1;
        }
    }
    if (edt != NULL) {
        if (strcmp(edt, "fp4") == 0) {
            cfg.expert_dtype = HD_EXPERT_FP4;
        } else if (strcmp(edt, "fp8") == 0) {
            cfg.expert_dtype = HD_EXPERT_FP8;
        } else if (strcmp(edt, "bf16") == 0) {
            cfg.expert_dtype = HD_EXPERT_BF16;
        } else {
            fprintf(stderr, "hadal gen-model: --experts-dtype must be fp4, fp8 or bf16\n");
            return 2;
        }
    }
    if (n_layers > 0) {
        if (n_layers > (uint64_t)cfg.n_layers) {
            fprintf(stderr, "hadal gen-model: --n-layers %llu exceeds the config's %d\n",
                    (unsigned long long)n_layers, cfg.n_layers);
            return 2;
        }
        truncate_layers(&cfg, (int)n_layers);
    }
    if (hd_config_validate(&cfg, err, sizeof(err)) != HD_OK) {
        fprintf(stderr, "hadal gen-model: %s\n", err);
        return 1;
    }
    memset(&p, 0, sizeof(p));
    if (layers != NULL) {
        int lo, hi, n_all = cfg.n_layers + cfg.n_mtp_layers;
        char tail;
        if (sscanf(layers, "%d:%d%c", &lo, &hi, &tail) != 2 || lo < 0 || hi <= lo || hi > n_all) {
            fprintf(stderr, "hadal gen-model: --layers wants LO:HI with 0 <= LO < HI <= %d\n",
                    n_all);
            return 2;
        }
        filter = (hd_inv_filter_t){
            .layer_lo = lo, .layer_hi = hi, .globals = HD_INV_GLOBALS_AUTO, .experts = NULL};
        p.filter = &filter;
    }
    p.seed = seed;
    p.out_dir = out;
    p.shard_bytes = shard;
    p.n_threads = (int)threads;
    p.on_file = gen_report;
    p.user = quiet ? NULL : (void *)&p;
    st = hd_gen_model(&cfg, &p, err, sizeof(err));
    if (st != HD_OK) {
        fprintf(stderr, "hadal gen-model: %s\n", err[0] ? err : hd_status_string(st));
        return 1;
    }
    return 0;
}
