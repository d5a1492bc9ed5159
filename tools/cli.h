/*
 * cli.h - the subcommands of the hadal CLI. Each lives in its own tools/cli_*.c file and
 * returns a process exit code (0 success, 1 runtime failure, 2 usage error).
 */
#ifndef HADAL_TOOLS_CLI_H
#define HADAL_TOOLS_CLI_H

#include "hadal/sampling.h"

#include <stdbool.h>
#include <stdint.h>

int hd_cli_run(int argc, char **argv);          /* cli_run.c: generate from prompt ids */
int hd_cli_gen_model(int argc, char **argv);    /* cli_gen.c: write a random checkpoint */
int hd_cli_info(int argc, char **argv);         /* cli_info.c: config, presets, KV bytes */
int hd_cli_plan(int argc, char **argv);         /* cli_plan.c: placement on a cluster */
int hd_cli_bench(int argc, char **argv);        /* cli_bench.c: benchmarks */
int hd_cli_bench_alltoall(int argc, char **argv); /* cli_bench_net.c: MoE all-to-all */
int hd_cli_tokenize(int argc, char **argv);     /* cli_tok.c: text -> ids */
int hd_cli_detokenize(int argc, char **argv);   /* cli_tok.c: ids -> text */
int hd_cli_chat_template(int argc, char **argv); /* cli_tok.c: messages JSON -> prompt */
struct hd_tok;
/* cli_tok.c: open the tokenizer hd_tok_find() picks (@explicit_path, then @model_dir's, then
   $HD_TOKENIZER, then the vendored V4 one); 0 on success. */
int hd_cli_tok_open(const char *explicit_path, const char *model_dir, struct hd_tok **tok_p);
int hd_cli_bench_tok(int argc, char **argv);     /* cli_tok.c: tokenizer tokens/s */
int hd_cli_serve(int argc, char **argv);        /* cli_serve.c: coordinator + local workers */
int hd_cli_coordinator(int argc, char **argv);  /* cli_serve.c: coordinator alone */
int hd_cli_worker(int argc, char **argv);       /* cli_serve.c: one worker process */
int hd_cli_bench_cluster(int argc, char **argv); /* cli_bench_cluster.c: grid vs engine */

/* `hadal run --pp P --ep E`: the prompt on a local process grid (cli_serve.c). */
typedef struct {
    const char *model;
    const int32_t *ids;
    int64_t n_ids;
    long max_tokens;
    hd_sampling_params_t sampling;
    int numerics;          /* hd_numerics_t */
    int threads;           /* per worker; 0 = CPUs / workers */
    long chunk;            /* prefill chunk; 0 = default */
    bool ignore_eos;
    int pp, ep;
    const char *transport; /* NULL = tcp */
    bool mpi;              /* launched by mpirun: rank 0 coordinates, the others work */
} hd_cli_run_grid_t;
int hd_cli_run_grid(const hd_cli_run_grid_t *args);

/* MPI bootstrap (cli_mpi.c, or cli_mpi_stub.c without MPI: init fails with a message). */
int hd_cli_mpi_init(int *rank_p, int *size_p);
int hd_cli_mpi_bcast(char *buf, int len); /* rank 0's @len bytes to every rank */
void hd_cli_mpi_finalize(void);

/* ---- the HTTP API of `hadal serve` (cli_http.c) ---- */
#include <stdbool.h>
#include <stddef.h>
typedef struct {
    const char *host;         /* NULL = 127.0.0.1 */
    int port;                 /* set to 8000 by the caller's defaults */
    const char *api_key_file;
    int max_waiting;          /* 0 = 256 */
    int max_context;          /* 0 = min(4096, model) */
    int max_tokens_default;   /* 0 = up to the context */
    const char *model_name;   /* NULL = the model directory's name */
    const char *tokenizer;
    int timeout_s;
    size_t max_body;
    const char *replay_file;  /* test mode: no model, replayed completions */
    int replay_step_ms;
    bool in_process;          /* the grid in this process instead of worker processes */
} hd_cli_http_opts_t;
enum {
    HD_CLI_HTTP_HOST = 1000, HD_CLI_HTTP_PORT, HD_CLI_HTTP_KEYS, HD_CLI_HTTP_WAIT,
    HD_CLI_HTTP_NAME, HD_CLI_HTTP_TOK, HD_CLI_HTTP_TIMEOUT, HD_CLI_HTTP_BODY,
    HD_CLI_HTTP_REPLAY, HD_CLI_HTTP_REPLAY_MS, HD_CLI_HTTP_INPROC, HD_CLI_HTTP_CONTEXT,
    HD_CLI_HTTP_MAXTOK,
};
/* getopt_long entries of the HTTP options (codes HD_CLI_HTTP_*). */
#define HD_CLI_HTTP_OPTIONS                                                                        \
    {"host", required_argument, 0, HD_CLI_HTTP_HOST},                                              \
    {"port", required_argument, 0, HD_CLI_HTTP_PORT},                                              \
    {"api-key-file", required_argument, 0, HD_CLI_HTTP_KEYS},                                      \
    {"max-waiting", required_argument, 0, HD_CLI_HTTP_WAIT},                                       \
    {"served-model-name", required_argument, 0, HD_CLI_HTTP_NAME},                                 \
    {"tokenizer", required_argument, 0, HD_CLI_HTTP_TOK},                                          \
    {"http-timeout", required_argument, 0, HD_CLI_HTTP_TIMEOUT},                                   \
    {"max-body", required_argument, 0, HD_CLI_HTTP_BODY},                                          \
    {"replay", required_argument, 0, HD_CLI_HTTP_REPLAY},                                          \
    {"replay-step-ms", required_argument, 0, HD_CLI_HTTP_REPLAY_MS},                               \
    {"in-process", no_argument, 0, HD_CLI_HTTP_INPROC},                                            \
    {"max-context", required_argument, 0, HD_CLI_HTTP_CONTEXT},                                    \
    {"default-max-tokens", required_argument, 0, HD_CLI_HTTP_MAXTOK}
/* Handle option @code (false: not an HTTP option). */
bool hd_cli_http_opt(int code, const char *arg, hd_cli_http_opts_t *o);
extern const char hd_cli_http_usage[];
struct hd_cluster;
/* Serve the HTTP API over a started cluster until *@stop; the cluster outlives the call. */
int hd_cli_http_cluster(const hd_cli_http_opts_t *o, struct hd_cluster *c, const char *model_dir,
                        int max_running, int ep, const volatile int *stop);
/* Serve over the in-process backend: a PP x EP grid of @model_dir, or (o->replay_file) none. */
#include "hadal/sched.h"
int hd_cli_http_local(const hd_cli_http_opts_t *o, const char *model_dir, int pp, int ep,
                      int threads, const hd_sched_params_t *sp, const volatile int *stop);

#endif /* HADAL_TOOLS_CLI_H */
