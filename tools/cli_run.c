/*
 * cli_run.c - `hadal run`: load a checkpoint into the single-process engine, prefill the
 * prompt (in chunks if asked), decode up to --max-tokens, print the generated ids on stdout
 * (one line, space separated) and timings on stderr.
 */
#include "cli.h"
#include "hadal/engine.h"
#include "hadal/alloc.h"
#include "hadal/config.h"
#include "hadal/json.h"
#include "hadal/tokenizer.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double run_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void run_usage(FILE *f)
{
    fprintf(f,
            "usage: hadal run --model DIR (--prompt-ids 1,2,3 | --prompt TEXT) [options]\n"
            "  --model DIR          checkpoint directory (config.json + safetensors)\n"
            "  --prompt-ids LIST    comma-separated token ids\n"
            "  --prompt TEXT        text, tokenized (the model's tokenizer.json, else the vendored\n"
            "                       DeepSeek-V4 one; BOS first); implies --text\n"
            "  --text               after the ids line, print the generated text on a second line\n"
            "  --tokenizer FILE     tokenizer.json to use\n"
            "  --max-tokens N       tokens to generate (default 16)\n"
            "  --temperature T      0 = greedy (default 0)\n"
            "  --top-p P --top-k K --min-p M --seed S   sampling filters and PRNG seed\n"
            "  --numerics official|plain   (default official)\n"
            "  --threads N          kernel threads (default: all CPUs)\n"
            "  --chunk N            prefill in chunks of N tokens (default: one chunk)\n"
            "  --ignore-eos         keep generating after the end-of-sentence id\n"
            "  --mtp                also report how often the MTP draft predicted the next token\n"
            "  --pp P --ep E        run on a local grid of P x E worker processes (cluster)\n"
            "  --transport T        their data plane: tcp (default), ucx, mpi\n"
            "  --mpi                under mpirun: rank 0 coordinates, ranks 1..N-1 are the grid\n");
}

static int run_parse_ids(const char *s, int32_t **ids_p, int64_t *n_p)
{
    int64_t cap = 16, n = 0;
    int32_t *ids = hd_malloc((size_t)cap * sizeof(int32_t), "prompt ids");
    const char *p = s;
    if (ids == NULL) {
        return -1;
    }
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno != 0 || v < 0 || v > INT32_MAX) {
            hd_free(ids);
            return -1;
        }
        if (n == cap) {
            cap *= 2;
            int32_t *ni = hd_realloc(ids, (size_t)cap * sizeof(int32_t), "prompt ids");
            if (ni == NULL) {
                hd_free(ids);
                return -1;
            }
            ids = ni;
        }
        ids[n++] = (int32_t)v;
        p = end;
        while (*p == ',' || *p == ' ') {
            p++;
        }
    }
    if (n == 0) {
        hd_free(ids);
        return -1;
    }
    *ids_p = ids;
    *n_p = n;
    return 0;
}

int hd_cli_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},       {"prompt-ids", required_argument, 0, 'p'},
        {"max-tokens", required_argument, 0, 'n'},  {"temperature", required_argument, 0, 't'},
        {"top-p", required_argument, 0, 'P'},       {"top-k", required_argument, 0, 'K'},
        {"min-p", required_argument, 0, 'M'},       {"seed", required_argument, 0, 's'},
        {"numerics", required_argument, 0, 'u'},    {"threads", required_argument, 0, 'j'},
        {"chunk", required_argument, 0, 'c'},       {"ignore-eos", no_argument, 0, 'e'},
        {"mtp", no_argument, 0, 'D'},               {"help", no_argument, 0, 'h'},
        {"pp", required_argument, 0, 'G'},          {"ep", required_argument, 0, 'X'},
        {"transport", required_argument, 0, 'T'},   {"mpi", no_argument, 0, 'I'},
        {"prompt", required_argument, 0, 'Q'},      {"text", no_argument, 0, 'W'},
        {"tokenizer", required_argument, 0, 'Z'},   {0, 0, 0, 0}};
    hd_engine_params_t ep = {.numerics = HD_NUMERICS_OFFICIAL};
    hd_sampling_params_t sp = {.temperature = 0.0f, .top_p = 1.0f};
    const char *ids_arg = NULL, *prompt_text = NULL, *tok_path = NULL;
    bool want_text = false;
    hd_tok_h tok = NULL;
    int32_t *gen = NULL;
    long max_tokens = 16, chunk = 0;
    int ignore_eos = 0, want_mtp = 0, opt, rc = 1, grid_pp = 0, grid_ep = 0;
    const char *transport = NULL;
    bool grid_mpi = false;
    char err[512] = "";
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    hd_engine_h eng = NULL;
    hd_seq_h seq = NULL;
    hd_sampler_h smp = NULL;
    float *logits = NULL, *draft = NULL;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': ep.model_path = optarg; break;
        case 'p': ids_arg = optarg; break;
        case 'n': max_tokens = strtol(optarg, NULL, 10); break;
        case 't': sp.temperature = strtof(optarg, NULL); break;
        case 'P': sp.top_p = strtof(optarg, NULL); break;
        case 'K': sp.top_k = (int)strtol(optarg, NULL, 10); break;
        case 'M': sp.min_p = strtof(optarg, NULL); break;
        case 's': sp.seed = strtoull(optarg, NULL, 10); break;
        case 'j': ep.n_threads = (int)strtol(optarg, NULL, 10); break;
        case 'c': chunk = strtol(optarg, NULL, 10); break;
        case 'e': ignore_eos = 1; break;
        case 'D': want_mtp = 1; break;
        case 'G': grid_pp = (int)strtol(optarg, NULL, 10); break;
        case 'X': grid_ep = (int)strtol(optarg, NULL, 10); break;
        case 'T': transport = optarg; break;
        case 'I': grid_mpi = true; break;
        case 'Q': prompt_text = optarg; want_text = true; break;
        case 'W': want_text = true; break;
        case 'Z': tok_path = optarg; break;
        case 'u':
            if (strcmp(optarg, "plain") == 0) {
                ep.numerics = HD_NUMERICS_PLAIN;
            } else if (strcmp(optarg, "official") == 0) {
                ep.numerics = HD_NUMERICS_OFFICIAL;
            } else {
                fprintf(stderr, "hadal run: --numerics must be official or plain\n");
                return 2;
            }
            break;
        case 'h': run_usage(stdout); return 0;
        default: run_usage(stderr); return 2;
        }
    }
    if (ep.model_path == NULL || (ids_arg == NULL) == (prompt_text == NULL) || max_tokens < 0 ||
        chunk < 0) {
        run_usage(stderr);
        return 2;
    }
    if (want_text && hd_cli_tok_open(tok_path, ep.model_path, &tok) != 0) {
        fprintf(stderr, "hadal run: no tokenizer for --prompt / --text\n");
        return 1;
    }
    if (prompt_text != NULL) {
        hd_model_config_t pc;
        char cpath[4200], cerr[256];
        hd_tok_ids_t v;
        snprintf(cpath, sizeof(cpath), "%s/config.json", ep.model_path);
        if (hd_config_load(cpath, &pc, cerr, sizeof(cerr)) != HD_OK) {
            fprintf(stderr, "hadal run: %s\n", cerr);
            hd_tok_destroy(tok);
            return 1;
        }
        hd_tok_ids_init(&v);
        if (hd_tok_encode(tok, prompt_text, strlen(prompt_text), 0, &v) != HD_OK ||
            (ids = hd_malloc((v.n + 1) * sizeof(int32_t), "prompt ids")) == NULL) {
            fprintf(stderr, "hadal run: cannot tokenize --prompt\n");
            hd_tok_ids_cleanup(&v);
            hd_tok_destroy(tok);
            return 1;
        }
        ids[0] = pc.bos_id;
        memcpy(ids + 1, v.ids, v.n * sizeof(int32_t));
        n_ids = (int64_t)v.n + 1;
        hd_tok_ids_cleanup(&v);
        long folded = 0;
        for (int64_t i = 0; i < n_ids; i++) { /* a tiny test model has a smaller vocabulary */
            if (ids[i] >= pc.vocab_size) {
                ids[i] %= pc.vocab_size;
                folded++;
            }
        }
        if (folded > 0) {
            fprintf(stderr, "hadal run: %ld prompt ids folded into the model's %d-token "
                    "vocabulary (as hadal serve does for the tiny models)\n", folded,
                    pc.vocab_size);
        }
    } else if (run_parse_ids(ids_arg, &ids, &n_ids) != 0) {
        fprintf(stderr, "hadal run: --prompt-ids must be a comma-separated list of ids >= 0\n");
        hd_tok_destroy(tok);
        return 2;
    }
    if (grid_pp > 0 || grid_ep > 0 || grid_mpi) {
        hd_cli_run_grid_t ga = {.model = ep.model_path, .ids = ids, .n_ids = n_ids,
                                .max_tokens = max_tokens, .sampling = sp,
                                .numerics = (int)ep.numerics, .threads = ep.n_threads,
                                .chunk = chunk, .ignore_eos = ignore_eos != 0,
                                .pp = grid_pp > 0 ? grid_pp : 1, .ep = grid_ep > 0 ? grid_ep : 1,
                                .transport = transport, .mpi = grid_mpi};
        if (grid_mpi && grid_pp <= 0 && grid_ep <= 0) {
            ga.pp = ga.ep = 0; /* 1 x (N-1) from mpirun -np N */
        }
        if (want_text && prompt_text == NULL) {
            fprintf(stderr, "hadal run: --text prints text for single-process runs only\n");
        }
        rc = hd_cli_run_grid(&ga);
        hd_free(ids);
        hd_tok_destroy(tok);
        return rc;
    }
    ep.load_mtp = want_mtp != 0;
    ep.err = err;
    ep.err_len = sizeof(err);
    double t0 = run_now();
    if (hd_engine_create(&ep, &eng) != HD_OK) {
        fprintf(stderr, "hadal run: %s\n", err);
        goto out;
    }
    const hd_model_config_t *cfg = hd_engine_config(eng);
    double t_load = run_now() - t0;
    if (hd_sampler_create(&sp, cfg->vocab_size, &smp) != HD_OK) {
        fprintf(stderr, "hadal run: invalid sampling parameters\n");
        rc = 2;
        goto out;
    }
    gen = hd_malloc((size_t)(max_tokens + 1) * sizeof(int32_t), "generated ids");
    logits = hd_malloc((size_t)cfg->vocab_size * sizeof(float), "logits");
    draft = hd_malloc((size_t)cfg->vocab_size * sizeof(float), "draft logits");
    if (gen == NULL || logits == NULL || draft == NULL || hd_seq_create(eng, &seq) != HD_OK) {
        fprintf(stderr, "hadal run: out of memory\n");
        goto out;
    }
    double t1 = run_now();
    for (int64_t off = 0; off < n_ids;) {
        int64_t n = chunk > 0 && n_ids - off > chunk ? chunk : n_ids - off;
        hd_batch_item_t it = {.seq = seq, .tokens = ids + off, .n_tokens = n,
                              .logits = off + n == n_ids ? HD_LOGITS_LAST : HD_LOGITS_NONE,
                              .logits_out = logits};
        if (hd_engine_step(eng, &it, 1) != HD_OK) {
            fprintf(stderr, "hadal run: %s\n", hd_engine_last_error(eng));
            goto out;
        }
        off += n;
    }
    double t_prefill = run_now() - t1, t2 = run_now();
    long generated = 0, drafted = 0, accepted = 0;
    int32_t predicted = -1;
    for (long i = 0; i < max_tokens; i++) {
        int32_t next = hd_sampler_sample(smp, logits);
        if (predicted >= 0) {
            drafted++;
            accepted += predicted == next;
        }
        printf(i ? " %d" : "%d", next);
        fflush(stdout);
        gen[generated++] = next;
        if (next == cfg->eos_id && !ignore_eos) {
            break;
        }
        if (i + 1 == max_tokens) {
            break;
        }
        if (want_mtp && hd_engine_mtp_draft(eng, seq, next, draft) == HD_OK) {
            predicted = 0;
            for (int v = 1; v < cfg->vocab_size; v++) {
                if (draft[v] > draft[predicted]) {
                    predicted = v;
                }
            }
        }
        hd_batch_item_t it = {.seq = seq, .tokens = &next, .n_tokens = 1,
                              .logits = HD_LOGITS_LAST, .logits_out = logits};
        if (hd_engine_step(eng, &it, 1) != HD_OK) {
            fprintf(stderr, "\nhadal run: %s\n", hd_engine_last_error(eng));
            goto out;
        }
    }
    printf("\n");
    if (want_text) { /* the completion as text, special tokens included, on its own line */
        hd_buf_t text;
        hd_buf_init(&text);
        if (hd_tok_decode(tok, gen, (size_t)generated, 0, &text) == HD_OK) {
            printf("%s\n", text.data);
        }
        hd_buf_cleanup(&text);
    }
    double t_dec = run_now() - t2;
    fprintf(stderr,
            "load %.3f s; prefill %lld tokens in %.3f s (%.1f tok/s); decode %ld tokens in "
            "%.3f s (%.1f tok/s); kv %zu bytes\n",
            t_load, (long long)n_ids, t_prefill, (double)n_ids / (t_prefill > 0 ? t_prefill : 1),
            generated, t_dec, (double)generated / (t_dec > 0 ? t_dec : 1), hd_seq_kv_bytes(seq));
    if (want_mtp) {
        fprintf(stderr, "mtp: %ld of %ld drafts matched the sampled token\n", accepted, drafted);
    }
    rc = 0;
out:
    hd_free(ids);
    hd_free(gen);
    hd_tok_destroy(tok);
    hd_free(logits);
    hd_free(draft);
    hd_seq_destroy(seq);
    hd_sampler_destroy(smp);
    hd_engine_destroy(eng);
    return rc;
}
