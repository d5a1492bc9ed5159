/*
 * cli_info.c - `hadal info`: the built-in presets, every field of a config, and the KV-cache
 * arithmetic of spec §7.1 for a context length (model/kv_size.c, the same functions the KV
 * allocator reports with).
 */
#include "cli.h"
#include "hadal/config.h"
#include "hadal/inventory.h"
#include "hadal/kv_size.h"
#include "hadal/net.h"
#include "hadal/safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GIB (1024.0 * 1024.0 * 1024.0)

static void info_usage(FILE *f)
{
    fprintf(f, "usage: hadal info --presets\n"
               "       hadal info --transports\n"
               "       hadal info --check DIR [--config PRESET_OR_PATH]\n"
               "       hadal info --config PRESET_OR_PATH\n"
               "       hadal info --kv --config PRESET_OR_PATH --context TOKENS "
               "[--format packed|bf16|both]\n"
               "\n"
               "--presets   list the built-in model presets with their sizes\n"
               "--transports list the data-plane transports of this build, what each can do and\n"
               "            whether it is usable here\n"
               "--config    print every field of a preset or a config.json (file or directory)\n"
               "--kv        KV-cache bytes of one sequence per layer type and in total\n"
               "--check DIR open the checkpoint in DIR (or --config's) and verify every tensor\n"
               "            of the official layout: name, dtype, shape (hd_ckpt_check)\n");
}

static const char *expert_dtype_str(hd_expert_dtype_t t)
{
    return t == HD_EXPERT_FP4 ? "fp4" : t == HD_EXPERT_FP8 ? "fp8" : "bf16";
}

/* Load a preset by name, else a config file/directory. */
static int info_load(const char *what, hd_model_config_t *cfg)
{
    char err[1024];
    if (hd_config_preset(what, cfg) == HD_OK) {
        return 0;
    }
    if (hd_config_load(what, cfg, err, sizeof(err)) != HD_OK) {
        fprintf(stderr, "hadal info: '%s' is not a preset and cannot be loaded: %s\n", what, err);
        return 1;
    }
    return 0;
}

/* Logical parameters (scales excluded) and stored bytes of the whole checkpoint. */
static int info_sizes(const hd_model_config_t *c, uint64_t *params, uint64_t *bytes,
                      size_t *n_tensors, uint64_t *params_mtp)
{
    hd_inv_t inv;
    if (hd_inv_init(&inv, c, NULL) != HD_OK) {
        return -1;
    }
    *params = 0;
    *params_mtp = 0;
    for (size_t i = 0; i < inv.n; i++) {
        const hd_inv_tensor_t *t = &inv.t[i];
        uint64_t n;
        if (t->role == HD_INV_FP8_SCALE || t->role == HD_INV_FP4_SCALE) {
            continue;
        }
        n = t->role == HD_INV_PLAIN ? (uint64_t)t->shape[0] * (t->ndim > 1 ? t->shape[1] : 1)
                                    : (uint64_t)t->rows * (uint64_t)t->cols;
        *params += n;
        if (t->layer >= c->n_layers) {
            *params_mtp += n;
        }
    }
    *bytes = hd_inv_total_bytes(&inv);
    *n_tensors = inv.n;
    hd_inv_cleanup(&inv);
    return 0;
}

/* 284.3B / 9.40M style. */
static void human_count(char *buf, size_t len, double v)
{
    if (v >= 1e9) {
        snprintf(buf, len, "%.1fB", v / 1e9);
    } else if (v >= 1e6) {
        snprintf(buf, len, "%.2fM", v / 1e6);
    } else {
        snprintf(buf, len, "%.0f", v);
    }
}

static int info_presets(void)
{
    printf("%-13s %6s %7s %6s %8s %7s %8s %9s %14s %9s\n", "preset", "dim", "layers", "heads",
           "experts", "top-k", "experts", "params", "checkpoint", "tensors");
    for (const char *const *n = hd_config_preset_names(); *n; n++) {
        hd_model_config_t c;
        uint64_t params, bytes, pm;
        size_t nt;
        char layers[32], pstr[32];
        hd_config_preset(*n, &c);
        if (info_sizes(&c, &params, &bytes, &nt, &pm) != 0) {
            fprintf(stderr, "hadal info: out of memory\n");
            return 1;
        }
        snprintf(layers, sizeof(layers), "%d+%d", c.n_layers, c.n_mtp_layers);
        human_count(pstr, sizeof(pstr), (double)params);
        printf("%-13s %6d %7s %6d %8d %7d %8s %9s %11.3f GB %9zu\n", *n, c.dim, layers, c.n_heads,
               c.n_routed_experts, c.n_experts_per_tok, expert_dtype_str(c.expert_dtype), pstr,
               bytes / 1e9, nt);
    }
    printf("\n(layers = main + MTP; params count every weight once, scales excluded; "
           "checkpoint = bytes of all tensors)\n");
    return 0;
}

static int info_config(const hd_model_config_t *c)
{
    uint64_t params, bytes, pm;
    size_t nt;
    int n_all = c->n_layers + c->n_mtp_layers;
    printf("name                      %s\n", c->name);
    printf("vocab_size                %d\n", c->vocab_size);
    printf("hidden_size (dim)         %d\n", c->dim);
    printf("num_hidden_layers         %d\n", c->n_layers);
    printf("num_nextn_predict_layers  %d\n", c->n_mtp_layers);
    printf("num_attention_heads       %d\n", c->n_heads);
    printf("head_dim                  %d\n", c->head_dim);
    printf("qk_rope_head_dim          %d\n", c->rope_dim);
    printf("q_lora_rank               %d\n", c->q_lora_rank);
    printf("o_lora_rank               %d\n", c->o_lora_rank);
    printf("o_groups                  %d\n", c->o_groups);
    printf("sliding_window            %d\n", c->window);
    printf("rope_theta                %g\n", c->rope_theta);
    printf("compress_rope_theta       %g\n", c->compress_rope_theta);
    printf("rope_factor (yarn)        %g\n", c->rope_factor);
    printf("rope_orig_max_pos (yarn)  %d\n", c->rope_orig_max_pos);
    printf("beta_fast / beta_slow     %g / %g\n", c->beta_fast, c->beta_slow);
    printf("max_position_embeddings   %d\n", c->max_pos);
    printf("compress_ratios           [");
    for (int i = 0; i < n_all; i++) {
        printf("%s%d", i ? ", " : "", c->compress_ratio[i]);
    }
    printf("]  (last %d = MTP)\n", c->n_mtp_layers);
    printf("index_n_heads             %d\n", c->index_n_heads);
    printf("index_head_dim            %d\n", c->index_head_dim);
    printf("index_topk                %d\n", c->index_topk);
    printf("n_routed_experts          %d\n", c->n_routed_experts);
    printf("n_shared_experts          %d\n", c->n_shared_experts);
    printf("num_experts_per_tok       %d\n", c->n_experts_per_tok);
    printf("moe_intermediate_size     %d\n", c->moe_inter);
    printf("num_hash_layers           %d\n", c->n_hash_layers);
    printf("routed_scaling_factor     %g\n", c->routed_scale);
    printf("swiglu_limit              %g\n", c->swiglu_limit);
    printf("norm_topk_prob            %s\n", c->norm_topk_prob ? "true" : "false");
    printf("hc_mult                   %d\n", c->hc_mult);
    printf("hc_sinkhorn_iters         %d\n", c->hc_sinkhorn_iters);
    printf("hc_eps                    %g\n", c->hc_eps);
    printf("rms_norm_eps              %g\n", c->norm_eps);
    printf("bos_token_id              %d\n", c->bos_id);
    printf("eos_token_id              %d\n", c->eos_id);
    printf("expert_dtype              %s\n", expert_dtype_str(c->expert_dtype));
    if (info_sizes(c, &params, &bytes, &nt, &pm) == 0) {
        printf("parameters                %llu (%llu without MTP)\n", (unsigned long long)params,
               (unsigned long long)(params - pm));
        printf("checkpoint                %zu tensors, %llu bytes (%.3f GB)\n", nt,
               (unsigned long long)bytes, bytes / 1e9);
    }
    return 0;
}

static void kv_row(const char *label, int ratio, int count, const hd_kv_bytes_t *b)
{
    printf("  %-9s %6d %6d %14llu %14llu %14llu %10llu %15llu %17llu\n", label, ratio, count,
           (unsigned long long)b->window, (unsigned long long)b->compressed,
           (unsigned long long)b->index_keys, (unsigned long long)b->state,
           (unsigned long long)b->total, (unsigned long long)(b->total * (uint64_t)count));
}

static void info_kv_format(const hd_model_config_t *c, uint64_t len, hd_kv_format_t fmt)
{
    hd_kv_bytes_t all, mtp_b;
    int seen[HD_MAX_LAYERS];
    int n_seen = 0;
    printf("\nformat %s: Be = %zu B per %d-d entry, Bi = %zu B per %d-d indexer key\n",
           fmt == HD_KV_FMT_PACKED ? "packed (e4m3 nope + e8m0/64 + bf16 rope; e2m1 keys + e8m0/32)"
                                   : "bf16",
           hd_kv_entry_bytes(c, fmt), c->head_dim, hd_kv_index_key_bytes(c, fmt),
           c->index_head_dim);
    printf("  %-9s %6s %6s %14s %14s %14s %10s %15s %17s\n", "type", "ratio", "layers", "window",
           "compressed", "index_keys", "state", "per layer", "all such layers");
    /* one row per distinct ratio among the main layers, in first-seen order */
    for (int i = 0; i < c->n_layers; i++) {
        int r = c->compress_ratio[i], count = 0, dup = 0;
        hd_kv_bytes_t b;
        for (int j = 0; j < n_seen; j++) {
            dup |= seen[j] == r;
        }
        if (dup) {
            continue;
        }
        seen[n_seen++] = r;
        for (int j = 0; j < c->n_layers; j++) {
            count += c->compress_ratio[j] == r;
        }
        hd_kv_layer_bytes(c, i, len, fmt, &b);
        kv_row(r == 0 ? "SWA" : r == 4 ? "CSA" : "HCA", r, count, &b);
    }
    for (int j = 0; j < c->n_mtp_layers; j++) {
        hd_kv_layer_bytes(c, c->n_layers + j, len, fmt, &mtp_b);
        kv_row("MTP", c->compress_ratio[c->n_layers + j], 1, &mtp_b);
    }
    hd_kv_seq_bytes(c, len, fmt, false, &all);
    printf("  main layers: %llu bytes = %.3f GiB (compressed + index keys %.3f GiB, window "
           "%.2f MiB, state %.2f MiB)\n",
           (unsigned long long)all.total, all.total / GIB, (all.compressed + all.index_keys) / GIB,
           all.window / 1048576.0, all.state / 1048576.0);
    hd_kv_seq_bytes(c, len, fmt, true, &all);
    printf("  with MTP:    %llu bytes = %.3f GiB\n", (unsigned long long)all.total,
           all.total / GIB);
    printf("  asymptotic:  %.1f bytes per token (main layers; window and state excluded)\n",
           hd_kv_bytes_per_token(c, fmt, false));
}

/* Open @dir as a safetensors set and check it against @cfg, all blocks. */
static int info_check(const char *dir, const hd_model_config_t *cfg)
{
    char err[1024];
    hd_st_set_h set;
    hd_status_t st = hd_st_open(dir, &set, err, sizeof(err));
    if (st != HD_OK) {
        fprintf(stderr, "hadal info: %s\n", err);
        return 1;
    }
    st = hd_ckpt_check(set, cfg, 0, cfg->n_layers + cfg->n_mtp_layers, err, sizeof(err));
    if (st != HD_OK) {
        fprintf(stderr, "hadal info: %s\n", err);
    } else {
        printf("%s: %zu tensors in %zu files match the %s layout\n", dir, hd_st_count(set),
               hd_st_file_count(set), cfg->name);
    }
    hd_st_close(set);
    return st == HD_OK ? 0 : 1;
}

/* The compiled-in data-plane transports with their declared capabilities (net.h). */
static int info_transports(void)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } caps[] = {
        {HD_NET_CAP_P2P, "p2p"},           {HD_NET_CAP_COLL, "native-collectives"},
        {HD_NET_CAP_HOST_MEM, "host-mem"}, {HD_NET_CAP_DEVICE_MEM, "device-mem"},
        {HD_NET_CAP_NEEDS_MPI, "needs-mpi"}, {HD_NET_CAP_MULTI_NODE, "multi-node"},
        {HD_NET_CAP_PEER_FAILURE, "peer-failure"},
    };
    const char *const *names = hd_net_transport_names();
    printf("%-6s %-7s %-12s %s\n", "name", "usable", "max msg", "capabilities / what it is");
    for (int i = 0; names[i] != NULL; i++) {
        hd_net_transport_info_t ti;
        if (hd_net_transport_info(names[i], &ti) != HD_OK) {
            continue;
        }
        printf("%-6s %-7s %-12llu", ti.name, hd_net_transport_usable(ti.name) ? "yes" : "no",
               (unsigned long long)ti.max_msg_bytes);
        for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++) {
            if (ti.caps & caps[k].bit) {
                printf(" %s", caps[k].name);
            }
        }
        printf("\n       %s\n", ti.doc ? ti.doc : "");
    }
    return 0;
}

int hd_cli_info(int argc, char **argv)
{
    const char *config = NULL, *format = "both", *check = NULL;
    bool presets = false, kv = false;
    unsigned long long context = 0;
    hd_model_config_t cfg;

    if (argc <= 1) {
        info_usage(stdout);
        printf("\n");
        return info_presets();
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            info_usage(stdout);
            return 0;
        } else if (strcmp(a, "--presets") == 0) {
            presets = true;
        } else if (strcmp(a, "--transports") == 0) {
            return info_transports();
        } else if (strcmp(a, "--kv") == 0) {
            kv = true;
        } else if (strcmp(a, "--check") == 0 && i + 1 < argc) {
            check = argv[++i];
        } else if (strcmp(a, "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(a, "--format") == 0 && i + 1 < argc) {
            format = argv[++i];
        } else if (strcmp(a, "--context") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            context = strtoull(argv[++i], &end, 0);
            if (errno != 0 || *end != '\0' || argv[i][0] == '-' || context == 0) {
                fprintf(stderr, "hadal info: bad --context %s\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "hadal info: unknown option %s\n", a);
            info_usage(stderr);
            return 2;
        }
    }
    if (presets) {
        return info_presets();
    }
    if (check != NULL && config == NULL) {
        config = check; /* its config.json */
    }
    if (config == NULL) {
        fprintf(stderr, "hadal info: --config is required\n");
        info_usage(stderr);
        return 2;
    }
    if (info_load(config, &cfg) != 0) {
        return 1;
    }
    if (check != NULL) {
        return info_check(check, &cfg);
    }
    if (!kv) {
        return info_config(&cfg);
    }
    if (context == 0) {
        fprintf(stderr, "hadal info: --kv needs --context TOKENS\n");
        return 2;
    }
    if (strcmp(format, "packed") != 0 && strcmp(format, "bf16") != 0 &&
        strcmp(format, "both") != 0) {
        fprintf(stderr, "hadal info: --format must be packed, bf16 or both\n");
        return 2;
    }
    printf("KV cache of %s for one sequence of %llu tokens (window %d)\n", cfg.name, context,
           cfg.window);
    if (strcmp(format, "bf16") != 0) {
        info_kv_format(&cfg, context, HD_KV_FMT_PACKED);
    }
    if (strcmp(format, "packed") != 0) {
        info_kv_format(&cfg, context, HD_KV_FMT_BF16);
    }
    return 0;
}
