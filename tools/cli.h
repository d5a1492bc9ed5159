/*
 * cli.h - the subcommands of the hadal CLI. Each lives in its own tools/cli_*.c file and
 * returns a process exit code (0 success, 1 runtime failure, 2 usage error).
 */
#ifndef HADAL_TOOLS_CLI_H
#define HADAL_TOOLS_CLI_H

int hd_cli_run(int argc, char **argv);          /* cli_run.c: generate from prompt ids */
int hd_cli_gen_model(int argc, char **argv);    /* cli_gen.c: write a random checkpoint */
int hd_cli_info(int argc, char **argv);         /* cli_info.c: config, presets, KV bytes */
int hd_cli_plan(int argc, char **argv);         /* cli_plan.c: placement on a cluster */
int hd_cli_bench(int argc, char **argv);        /* cli_bench.c: benchmarks */
int hd_cli_tokenize(int argc, char **argv);     /* cli_tok.c: text -> ids */
int hd_cli_detokenize(int argc, char **argv);   /* cli_tok.c: ids -> text */
int hd_cli_chat_template(int argc, char **argv); /* cli_tok.c: messages JSON -> prompt */

#endif /* HADAL_TOOLS_CLI_H */
