/*
 * cli_bench_cluster.c - `hadal bench cluster`: what the process grid costs. The same batch of
 * greedy requests (B sequences, P prompt tokens, T generated each) runs (1) on one engine in
 * this process, decoded as one batch per step, and (2) through the coordinator runtime on a
 * PP x EP grid of local worker processes (and on a 1x1 process grid, where every step holds
 * the whole batch), and on a PP x 1 grid with one and with PP micro-batches in flight (the
 * pipeline overlap). Reported: tokens/s end to end, steps, and the coordinator thread's CPU
 * time per step and per generated token (hd_cluster_stats.cpu_seconds).
 */
#define _GNU_SOURCE
#include "cli.h"
#include "hadal/alloc.h"
#include "hadal/cluster.h"
#include "hadal/engine.h"
#include "hadal/gen.h"

#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double bc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    const char *model;
    int batch, prompt, tokens, threads;
    int pp, ep;
} bc_opts_t;

static int32_t bc_prompt_id(int seq, int j, int vocab)
{
    return (int32_t)(3 + (seq * 131 + j * 71) % (vocab - 3));
}

/* The batch on one engine: prefill all, then T-1 decode steps of B rows. */
static int bc_single(const bc_opts_t *o, double *tok_s, double *total_s)
{
    char err[512] = "";
    hd_engine_h eng = NULL;
    hd_engine_params_t ep = {.model_path = o->model, .n_threads = o->threads, .err = err,
                             .err_len = sizeof(err)};
    if (hd_engine_create(&ep, &eng) != HD_OK) {
        fprintf(stderr, "hadal bench cluster: %s\n", err);
        return 1;
    }
    const hd_model_config_t *c = hd_engine_config(eng);
    int B = o->batch;
    hd_seq_h *seqs = hd_calloc((size_t)B, sizeof(*seqs), "bench seqs");
    hd_batch_item_t *items = hd_calloc((size_t)B, sizeof(*items), "bench items");
    int32_t *prompt = hd_calloc((size_t)B * (size_t)o->prompt, sizeof(int32_t), "bench prompt");
    int32_t *next = hd_calloc((size_t)B, sizeof(int32_t), "bench next");
    float *logits = hd_malloc((size_t)B * (size_t)c->vocab_size * sizeof(float), "bench logits");
    int rc = 1;
    if (!seqs || !items || !prompt || !next || !logits) {
        goto out;
    }
    double t0 = bc_now();
    for (int i = 0; i < B; i++) {
        if (hd_seq_create(eng, &seqs[i]) != HD_OK) {
            goto out;
        }
        for (int j = 0; j < o->prompt; j++) {
            prompt[(size_t)i * o->prompt + j] = bc_prompt_id(i, j, c->vocab_size);
        }
        items[i] = (hd_batch_item_t){.seq = seqs[i], .tokens = prompt + (size_t)i * o->prompt,
                                     .n_tokens = o->prompt, .logits = HD_LOGITS_LAST,
                                     .logits_out = logits + (size_t)i * c->vocab_size};
    }
    double t_dec = 0;
    for (int t = 0; t < o->tokens; t++) {
        double ts = bc_now();
        if (hd_engine_step(eng, items, B) != HD_OK) {
            fprintf(stderr, "hadal bench cluster: %s\n", hd_engine_last_error(eng));
            goto out;
        }
        for (int i = 0; i < B; i++) {
            const float *l = logits + (size_t)i * c->vocab_size;
            int32_t best = 0;
            for (int v = 1; v < c->vocab_size; v++) {
                best = l[v] > l[best] ? v : best;
            }
            next[i] = best;
            items[i].tokens = &next[i];
            items[i].n_tokens = 1;
        }
        if (t > 0) {
            t_dec += bc_now() - ts;
        }
    }
    *total_s = bc_now() - t0;
    *tok_s = o->tokens > 1 ? (double)B * (o->tokens - 1) / t_dec : 0;
    rc = 0;
out:
    for (int i = 0; seqs && i < B; i++) {
        hd_seq_destroy(seqs[i]);
    }
    hd_free(seqs);
    hd_free(items);
    hd_free(prompt);
    hd_free(next);
    hd_free(logits);
    hd_engine_destroy(eng);
    return rc;
}

typedef struct {
    pthread_mutex_t lock;
    int finished, errors;
    double first_token;  /* time of the first generated token */
} bc_state_t;

static void bc_on_token(void *user, hd_req_id_t id, int32_t token, hd_finish_t finish,
                        const char *why)
{
    bc_state_t *s = user;
    (void)id;
    (void)token;
    (void)why;
    pthread_mutex_lock(&s->lock);
    if (token >= 0 && s->first_token == 0) {
        s->first_token = bc_now();
    }
    if (finish != HD_FINISH_NONE) {
        s->finished++;
        s->errors += finish == HD_FINISH_ERROR;
    }
    pthread_mutex_unlock(&s->lock);
}

/* The batch through the coordinator on a PP x EP grid of local worker processes. */
static int bc_grid(const bc_opts_t *o, int pp, int ep, int in_flight, const char *exe)
{
    char err[800] = "";
    hd_cluster_h c = NULL;
    int per = o->threads / (pp * ep) > 0 ? o->threads / (pp * ep) : 1;
    hd_cluster_params_t p = {.pp = pp, .ep = ep, .model_dir = o->model, .worker_exe = exe,
                             .worker_threads = per, .max_running = o->batch,
                             .max_waiting = o->batch, .step_tokens = o->batch * o->prompt,
                             .prefill_chunk = o->prompt, .max_in_flight = in_flight,
                             .err = err, .err_len = sizeof(err)};
    if (hd_cluster_create(&p, &c) != HD_OK) {
        fprintf(stderr, "hadal bench cluster: %s\n", err);
        return 1;
    }
    if (hd_cluster_wait_ready(c, 120000) != HD_OK) {
        fprintf(stderr, "hadal bench cluster: grid %dx%d did not come up\n", pp, ep);
        hd_cluster_destroy(c);
        return 1;
    }
    const hd_model_config_t *cfg = hd_cluster_config(c);
    bc_state_t s = {.lock = PTHREAD_MUTEX_INITIALIZER};
    int32_t *prompt = hd_calloc((size_t)o->prompt, sizeof(int32_t), "bench prompt");
    hd_cluster_stats_t s0, s1;
    hd_cluster_stats(c, &s0);
    double t0 = bc_now();
    for (int i = 0; i < o->batch; i++) {
        for (int j = 0; j < o->prompt; j++) {
            prompt[j] = bc_prompt_id(i, j, cfg->vocab_size);
        }
        hd_request_t rq = {.prompt = prompt, .n_prompt = o->prompt, .max_tokens = o->tokens,
                           .sampling = {.temperature = 0.0f, .top_p = 1.0f},
                           .on_token = bc_on_token, .user = &s};
        hd_req_id_t id;
        if (hd_cluster_submit(c, &rq, &id) != HD_OK) {
            fprintf(stderr, "hadal bench cluster: submit refused\n");
        }
    }
    for (;;) {
        pthread_mutex_lock(&s.lock);
        int done = s.finished;
        pthread_mutex_unlock(&s.lock);
        if (done >= o->batch || bc_now() - t0 > 600) {
            break;
        }
        usleep(1000);
    }
    double total = bc_now() - t0;
    hd_cluster_stats(c, &s1);
    double cpu = s1.cpu_seconds - s0.cpu_seconds;
    uint64_t steps = s1.steps - s0.steps, gen = s1.generated_tokens - s0.generated_tokens;
    double decode_s = total - (s.first_token > 0 ? s.first_token - t0 : 0);
    printf("grid %dx%d (%d in flight, %d thread%s/worker): %llu tokens in %.3f s = %.1f tok/s "
           "(after the first token: %.1f tok/s); %llu steps; coordinator cpu %.3f s = %.1f us "
           "per step, %.2f us per token%s\n",
           pp, ep, in_flight, per, per > 1 ? "s" : "", (unsigned long long)gen, total,
           (double)gen / total,
           decode_s > 0 ? (double)(gen - (uint64_t)o->batch) / decode_s : 0,
           (unsigned long long)steps, cpu, steps ? 1e6 * cpu / (double)steps : 0,
           gen ? 1e6 * cpu / (double)gen : 0, s.errors ? " (ERRORS)" : "");
    fflush(stdout);
    hd_free(prompt);
    hd_cluster_destroy(c);
    return s.errors ? 1 : 0;
}

int hd_cli_bench_cluster(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"batch", required_argument, 0, 'b'},
        {"prompt", required_argument, 0, 'p'}, {"tokens", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 'j'}, {"pp", required_argument, 0, 'P'},
        {"ep", required_argument, 0, 'E'},     {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    bc_opts_t o = {.batch = 64, .prompt = 16, .tokens = 64, .threads = (int)cpus, .pp = 2,
                   .ep = 2};
    char exe[PATH_MAX], model[PATH_MAX];
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': o.model = optarg; break;
        case 'b': o.batch = atoi(optarg); break;
        case 'p': o.prompt = atoi(optarg); break;
        case 'n': o.tokens = atoi(optarg); break;
        case 'j': o.threads = atoi(optarg); break;
        case 'P': o.pp = atoi(optarg); break;
        case 'E': o.ep = atoi(optarg); break;
        default:
            fprintf(opt == 'h' ? stdout : stderr,
                    "usage: hadal bench cluster --model DIR [--batch 64] [--prompt 16] "
                    "[--tokens 64] [--threads N] [--pp 2 --ep 2]\n"
                    "  the same greedy batch on one engine in this process, then through the\n"
                    "  coordinator on a 1x1 and a PP x EP grid of local worker processes\n"
                    "  (--threads kernel threads in all, split over the workers)\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (o.model == NULL || o.batch < 1 || o.prompt < 1 || o.tokens < 2 || o.threads < 1) {
        fprintf(stderr, "hadal bench cluster: --model DIR is required (e.g. a tiny-a from "
                "hadal gen-model)\n");
        return 2;
    }
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        return 1;
    }
    exe[n] = '\0';
    snprintf(model, sizeof(model), "%s", o.model);
    o.model = model;
    double tok_s = 0, total = 0;
    printf("batch %d x (%d prompt + %d generated) greedy, %d kernel threads, %ld CPUs\n",
           o.batch, o.prompt, o.tokens, o.threads, cpus);
    if (bc_single(&o, &tok_s, &total) != 0) {
        return 1;
    }
    printf("single engine: %d tokens in %.3f s = %.1f tok/s (decode steps alone: %.1f tok/s)\n",
           o.batch * o.tokens, total, (double)o.batch * o.tokens / total, tok_s);
    fflush(stdout);
    int rc = bc_grid(&o, 1, 1, 1, exe);
    rc |= bc_grid(&o, o.pp, o.ep, o.pp, exe);
    if (o.pp > 1) { /* the pipeline: all stages busy only with micro-batches in flight */
        rc |= bc_grid(&o, o.pp, 1, 1, exe);
        rc |= bc_grid(&o, o.pp, 1, o.pp, exe);
    }
    return rc;
}
