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

#endif /* HADAL_TOOLS_CLI_H */
