/*
 * cli_plan.c - `hadal plan`: the placement of a model on a cluster (model/plan.c,
 * docs/PLANNER.md) as a readable table or as JSON. The coordinator calls the same
 * hd_plan_make(); this command only parses the cluster description and prints.
 */
#include "cli.h"
#include "hadal/config.h"
#include "hadal/json.h"
#include "hadal/plan.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GIB (1024.0 * 1024.0 * 1024.0)
#define MB 1e6

static void plan_usage(FILE *f)
{
    fprintf(f,
            "usage: hadal plan (--preset NAME | --config FILE) CLUSTER [options] [--json]\n"
            "\n"
            "cluster (GPUs):\n"
            "  --nodes N             hosts (default 1)\n"
            "  --gpus-per-node N     GPUs per host (default 8)\n"
            "  --gpu-mem SIZE        memory per GPU: 80GiB, 141GB, ... (required)\n"
            "  --intra-bw RATE       per-GPU bandwidth inside a node (default 450GB/s)\n"
            "  --inter-bw RATE       per-GPU bandwidth between nodes (default 400Gbit/s)\n"
            "cluster (CPU worker processes on this host):\n"
            "  --cpu --workers N --mem SIZE   N workers with SIZE of memory each\n"
            "options:\n"
            "  --pp N, --ep N        fix the grid (stages x workers per stage); default: chosen\n"
            "  --context N           context the layer costs are evaluated at (GPU 65536, CPU "
            "4096)\n"
            "  --min-context N       every worker must hold one sequence this long (4096)\n"
            "  --kv-format F         packed (default) or bf16\n"
            "  --reserve SIZE        memory held back per worker (GPU 2GiB, CPU 256MiB)\n"
            "  --step-tokens N       tokens per worker per step, sizes buffers (GPU 2048, CPU "
            "256)\n"
            "  --ref-batch N         decode tokens per column per step in the cost model (64, 8)\n"
            "  --flops-per-byte X    machine balance of the cost model (GPU 300, CPU 10)\n"
            "  --json                print the plan as JSON (schema in docs/PLANNER.md)\n"
            "\n"
            "Exit status: 0 placed, 1 the model does not fit (the reason names the worker and\n"
            "the shortfall), 2 bad arguments.\n");
}

static int plan_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "hadal plan: %s '%s': expected an integer in [%ld, %ld]\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int plan_size(const char *opt, const char *s, uint64_t *out)
{
    if (hd_plan_parse_bytes(s, out) != HD_OK) {
        fprintf(stderr, "hadal plan: %s '%s': expected a size such as 80GiB, 141GB, 512MiB\n", opt,
                s);
        return -1;
    }
    return 0;
}

static int plan_rate(const char *opt, const char *s, double *out)
{
    if (hd_plan_parse_rate(s, out) != HD_OK) {
        fprintf(stderr, "hadal plan: %s '%s': expected a rate such as 450GB/s or 400Gbit/s\n", opt,
                s);
        return -1;
    }
    return 0;
}

/* "1048576" / "412k" style context. */
static void ctx_str(char *buf, size_t len, uint64_t v)
{
    if (v >= 10000 && v % 1024 == 0) {
        snprintf(buf, len, "%lluK", (unsigned long long)(v / 1024));
    } else {
        snprintf(buf, len, "%llu", (unsigned long long)v);
    }
}

/* Whether two workers of a stage print as one row (same memory, only experts/devices differ). */
static int same_row(const hd_plan_worker_t *a, const hd_plan_worker_t *b)
{
    return a->weights == b->weights && a->kv_budget == b->kv_budget &&
           a->expert_hi - a->expert_lo == b->expert_hi - b->expert_lo && a->node == b->node &&
           b->device == a->device + (b->column - a->column);
}

static void plan_print(const hd_plan_t *p)
{
    const hd_cluster_t *cl = &p->cluster;
    int cpu = cl->kind == HD_CLUSTER_CPU;
    double type_cost[3] = {0, 0, 0};
    int type_seen[3] = {0, 0, 0};
    char c1[32], c8[32], c64[32];
    double u = cl->dev_mem >= (16ull << 30) ? GIB : 1024.0 * 1024.0; /* table unit */
    const char *un = u == GIB ? "GiB" : "MiB";

    if (cpu) {
        printf("plan: %s on %d CPU worker processes of %.2f %s (%d workers)\n", p->model,
               cl->devs_per_node, cl->dev_mem / u, un, p->n_workers);
    } else {
        printf("plan: %s on %d node%s x %d GPUs of %.2f %s (%d workers)\n", p->model, cl->nodes,
               cl->nodes > 1 ? "s" : "", cl->devs_per_node, cl->dev_mem / u, un, p->n_workers);
    }
    printf("grid: PP %d x EP %d - %s%s\n", p->pp, p->ep, p->grid_why,
           p->ep_cross_node ? " [rows span nodes]" : "");

    for (int b = 0; b < p->n_layers; b++) {
        int t = p->ratio[b] == 0 ? 0 : p->ratio[b] == 4 ? 1 : 2;
        if (!type_seen[t]) {
            type_cost[t] = p->block_cost[b];
            type_seen[t] = 1;
        }
    }
    printf("\ncost model: one decode token at context %llu, %d tokens per column per step, "
           "%.0f FLOP/byte\n",
           (unsigned long long)p->ref_context, cl->ref_batch, cl->flops_per_byte);
    printf("  MB read per token (FLOPs as bytes):");
    for (int t = 0; t < 3; t++) {
        if (type_seen[t]) {
            printf(" %s %.2f", t == 0 ? "SWA" : t == 1 ? "CSA" : "HCA", type_cost[t] / MB);
        }
    }
    printf(", embed %.3f, head %.2f", p->embed_cost / MB, p->head_cost / MB);
    if (p->n_mtp > 0) {
        printf(", MTP %.2f", p->block_cost[p->n_layers] / MB);
    }
    printf("\n  stages: max %.1f, mean %.1f (+%.1f%%; bound mean + largest item %.1f)\n",
           p->cost_max / MB, p->cost_mean / MB, 100.0 * (p->cost_max / p->cost_mean - 1.0),
           (p->cost_mean + p->cost_item_max) / MB);

    printf("\n%-5s %-9s %4s %4s %4s  %-12s %9s\n", "stage", "layers", "CSA", "HCA", "SWA", "also",
           "cost MB");
    for (int s = 0; s < p->pp; s++) {
        const hd_plan_stage_t *sg = &p->stages[s];
        char layers[32], also[32] = "";
        snprintf(layers, sizeof(layers), "%d..%d", sg->layer_lo, sg->layer_hi - 1);
        if (sg->has_embed) {
            snprintf(also, sizeof(also), "embed");
        }
        if (sg->has_head) {
            size_t n = strlen(also);
            snprintf(also + n, sizeof(also) - n, "%shead%s", n ? ", " : "",
                     p->n_mtp > 0 ? ", MTP" : "");
        }
        printf("%-5d %-9s %4d %4d %4d  %-12s %9.1f\n", s, layers, sg->n_csa, sg->n_hca, sg->n_swa,
               also, sg->cost / MB);
    }

    printf("\nmemory per worker, %s (weights = dense + experts + globals; ctx = longest context "
           "of 1 / 8 / 64 sequences)\n",
           un);
    printf("%-5s %-7s %-5s %-9s %-14s %8s %7s %7s %7s %7s %7s %9s %22s\n", "stage", "columns",
           "node", cpu ? "workers" : "gpus", "experts", "weights", "dense", "experts", "globals",
           "buffers", "reserve", "KV budget", "ctx 1 / 8 / 64");
    for (int s = 0; s < p->pp; s++) {
        int c0 = 0;
        while (c0 < p->ep) {
            const hd_plan_worker_t *a = hd_plan_worker(p, s, c0), *z;
            int c1i = c0;
            char cols[24], devs[24], exps[48], ctx[112];
            while (c1i + 1 < p->ep && same_row(a, hd_plan_worker(p, s, c1i + 1))) {
                c1i++;
            }
            z = hd_plan_worker(p, s, c1i);
            if (c1i > c0) {
                snprintf(cols, sizeof(cols), "%d-%d", c0, c1i);
                snprintf(devs, sizeof(devs), "%d-%d", a->device, z->device);
                snprintf(exps, sizeof(exps), "%d..%d (%d each)", a->expert_lo, z->expert_hi - 1,
                         a->expert_hi - a->expert_lo);
            } else {
                snprintf(cols, sizeof(cols), "%d", c0);
                snprintf(devs, sizeof(devs), "%d", a->device);
                snprintf(exps, sizeof(exps), "%d..%d", a->expert_lo, a->expert_hi - 1);
            }
            ctx_str(c1, sizeof(c1), a->max_context[0]);
            ctx_str(c8, sizeof(c8), a->max_context[1]);
            ctx_str(c64, sizeof(c64), a->max_context[2]);
            snprintf(ctx, sizeof(ctx), "%s / %s / %s", c1, c8, c64);
            printf("%-5d %-7s %-5d %-9s %-14s %8.2f %7.2f %7.2f %7.2f %7.2f %7.2f %9.2f %22s\n", s,
                   cols, a->node, devs, exps, a->weights / u, a->weights_dense / u,
                   a->weights_experts / u, a->weights_globals / u, a->buffers.total / u,
                   a->reserve / u, a->kv_budget / u, ctx);
            c0 = c1i + 1;
        }
    }
    ctx_str(c1, sizeof(c1), p->max_context[0]);
    ctx_str(c8, sizeof(c8), p->max_context[1]);
    ctx_str(c64, sizeof(c64), p->max_context[2]);
    printf("\nevery column holds: 1 sequence of %s tokens, 8 of %s, 64 of %s; %llu sequences of "
           "%llu (max %llu; KV %s)\n",
           c1, c8, c64, (unsigned long long)p->max_seqs, (unsigned long long)p->min_context,
           (unsigned long long)p->max_pos, cl->kv_format == HD_KV_FMT_BF16 ? "bf16" : "packed");
    printf("comm per decode step (%d tokens per column): all-to-all %.2f MB per worker per MoE "
           "layer (%.0f%% leaves the node) %.1f us;",
           cl->ref_batch, p->comm.a2a_bytes / MB, 100.0 * p->comm.a2a_inter, p->comm.a2a_us);
    if (p->pp > 1) {
        printf(" stage boundary %.2f MB (%d of %d cross nodes) %.1f us;", p->comm.pp_bytes / MB,
               p->comm.pp_inter, p->pp - 1, p->comm.pp_us);
    }
    printf(" ~%.0f us per step\n", p->comm.step_us);
}

int hd_cli_plan(int argc, char **argv)
{
    const char *preset = NULL, *config = NULL;
    long nodes = 1, gpus = 8, workers = 0, pp = 0, ep = 0;
    uint64_t gpu_mem = 0, mem = 0;
    int cpu = 0, json = 0;
    hd_cluster_t cl;
    hd_model_config_t cfg;
    hd_plan_t plan;
    char err[1024];
    hd_status_t st;
    struct {
        int set_context, set_min, set_reserve, set_step, set_batch, set_fpb, set_intra, set_inter;
        long context, min_context, step, batch;
        uint64_t reserve;
        double fpb, intra, inter;
        int kv_bf16;
    } o;

    memset(&o, 0, sizeof(o));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            plan_usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
            takes = 0;
        } else if (strcmp(a, "--cpu") == 0) {
            cpu = 1;
            takes = 0;
        } else if (val == NULL) {
            fprintf(stderr, "hadal plan: unknown option or missing value: %s\n", a);
            plan_usage(stderr);
            return 2;
        } else if (strcmp(a, "--preset") == 0) {
            preset = val;
        } else if (strcmp(a, "--config") == 0) {
            config = val;
        } else if (strcmp(a, "--nodes") == 0) {
            if (plan_int(a, val, 1, 65536, &nodes) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--gpus-per-node") == 0) {
            if (plan_int(a, val, 1, 65536, &gpus) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--workers") == 0) {
            if (plan_int(a, val, 1, 65536, &workers) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--gpu-mem") == 0) {
            if (plan_size(a, val, &gpu_mem) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--mem") == 0) {
            if (plan_size(a, val, &mem) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--pp") == 0) {
            if (plan_int(a, val, 1, 65536, &pp) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--ep") == 0) {
            if (plan_int(a, val, 1, 65536, &ep) != 0) {
                return 2;
            }
        } else if (strcmp(a, "--context") == 0) {
            if (plan_int(a, val, 1, 1L << 40, &o.context) != 0) {
                return 2;
            }
            o.set_context = 1;
        } else if (strcmp(a, "--min-context") == 0) {
            if (plan_int(a, val, 0, 1L << 40, &o.min_context) != 0) {
                return 2;
            }
            o.set_min = 1;
        } else if (strcmp(a, "--step-tokens") == 0) {
            if (plan_int(a, val, 1, 1L << 24, &o.step) != 0) {
                return 2;
            }
            o.set_step = 1;
        } else if (strcmp(a, "--ref-batch") == 0) {
            if (plan_int(a, val, 1, 1L << 20, &o.batch) != 0) {
                return 2;
            }
            o.set_batch = 1;
        } else if (strcmp(a, "--reserve") == 0) {
            if (plan_size(a, val, &o.reserve) != 0) {
                return 2;
            }
            o.set_reserve = 1;
        } else if (strcmp(a, "--flops-per-byte") == 0) {
            char *end;
            o.fpb = strtod(val, &end);
            if (end == val || *end != '\0' || !(o.fpb > 0.0) || o.fpb > 1e9) {
                fprintf(stderr, "hadal plan: %s '%s': expected a number > 0\n", a, val);
                return 2;
            }
            o.set_fpb = 1;
        } else if (strcmp(a, "--intra-bw") == 0) {
            if (plan_rate(a, val, &o.intra) != 0) {
                return 2;
            }
            o.set_intra = 1;
        } else if (strcmp(a, "--inter-bw") == 0) {
            if (plan_rate(a, val, &o.inter) != 0) {
                return 2;
            }
            o.set_inter = 1;
        } else if (strcmp(a, "--kv-format") == 0) {
            if (strcmp(val, "packed") != 0 && strcmp(val, "bf16") != 0) {
                fprintf(stderr, "hadal plan: --kv-format '%s': expected packed or bf16\n", val);
                return 2;
            }
            o.kv_bf16 = strcmp(val, "bf16") == 0;
        } else {
            fprintf(stderr, "hadal plan: unknown option %s\n", a);
            plan_usage(stderr);
            return 2;
        }
        i += takes;
    }

    if ((preset == NULL) == (config == NULL)) {
        fprintf(stderr, "hadal plan: give exactly one of --preset NAME and --config FILE\n");
        return 2;
    }
    if (preset != NULL) {
        if (hd_config_preset(preset, &cfg) != HD_OK) {
            fprintf(stderr, "hadal plan: unknown preset '%s' (hadal info --presets lists them)\n",
                    preset);
            return 2;
        }
    } else if (hd_config_load(config, &cfg, err, sizeof(err)) != HD_OK) {
        fprintf(stderr, "hadal plan: %s\n", err);
        return 2;
    }

    hd_cluster_init(&cl, cpu ? HD_CLUSTER_CPU : HD_CLUSTER_GPU);
    if (cpu) {
        if (workers == 0 || mem == 0) {
            fprintf(stderr, "hadal plan: --cpu needs --workers N and --mem SIZE\n");
            return 2;
        }
        if (gpu_mem != 0 || nodes != 1) {
            fprintf(stderr, "hadal plan: --cpu takes --workers and --mem, not --nodes or "
                            "--gpu-mem\n");
            return 2;
        }
        cl.nodes = 1;
        cl.devs_per_node = (int)workers;
        cl.dev_mem = mem;
    } else {
        if (gpu_mem == 0) {
            fprintf(stderr, "hadal plan: --gpu-mem SIZE is required (or --cpu --workers N --mem "
                            "SIZE)\n");
            return 2;
        }
        if (workers != 0 || mem != 0) {
            fprintf(stderr, "hadal plan: --workers and --mem go with --cpu\n");
            return 2;
        }
        cl.nodes = (int)nodes;
        cl.devs_per_node = (int)gpus;
        cl.dev_mem = gpu_mem;
    }
    cl.pp = (int)pp;
    cl.ep = (int)ep;
    cl.kv_format = o.kv_bf16 ? HD_KV_FMT_BF16 : HD_KV_FMT_PACKED;
    if (o.set_context) {
        cl.ref_context = (uint64_t)o.context;
    }
    if (o.set_min) {
        cl.min_context = (uint64_t)o.min_context;
    }
    if (o.set_step) {
        cl.step_tokens = (uint64_t)o.step;
    }
    if (o.set_batch) {
        cl.ref_batch = (int)o.batch;
    }
    if (o.set_reserve) {
        cl.reserve = o.reserve;
    }
    if (o.set_fpb) {
        cl.flops_per_byte = o.fpb;
    }
    if (o.set_intra) {
        cl.intra_bw = o.intra;
    }
    if (o.set_inter) {
        cl.inter_bw = o.inter;
    }
    st = hd_plan_make(&cfg, &cl, &plan, err, sizeof(err));
    if (st != HD_OK) {
        fprintf(stderr, "hadal plan: refused: %s\n", err);
        if (json) {
            hd_buf_t b;
            hd_buf_init(&b);
            hd_buf_printf(&b, "{\"fits\":false,\"status\":\"%s\",\"error\":", hd_status_string(st));
            hd_buf_json_str(&b, err, strlen(err));
            hd_buf_puts(&b, "}\n");
            fputs(b.data != NULL ? b.data : "", stdout);
            hd_buf_cleanup(&b);
        }
        return st == HD_ERR_INVALID_PARAM ? 2 : 1;
    }
    if (json) {
        hd_buf_t b;
        hd_buf_init(&b);
        hd_plan_write_json(&plan, &b);
        hd_buf_puts(&b, "\n");
        if (b.failed) {
            fprintf(stderr, "hadal plan: out of memory\n");
            hd_buf_cleanup(&b);
            hd_plan_cleanup(&plan);
            return 1;
        }
        fputs(b.data, stdout);
        hd_buf_cleanup(&b);
    } else {
        plan_print(&plan);
    }
    hd_plan_cleanup(&plan);
    return 0;
}
