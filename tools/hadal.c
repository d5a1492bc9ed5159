/*
 * hadal.c - entry point of the hadal CLI: dispatches to the subcommand files (cli_*.c).
 */
#include "cli.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *doc;
} commands[] = {
    {"run", hd_cli_run, "generate tokens for a prompt with the single-process engine"},
    {"gen-model", hd_cli_gen_model, "write a random-weight checkpoint for a preset"},
    {"info", hd_cli_info, "print presets, a config, or KV-cache arithmetic"},
    {"plan", hd_cli_plan, "place a model on a cluster: stages, experts, memory per worker"},
    {"bench", hd_cli_bench, "run a benchmark (decode, prefill, stream)"},
    {"tokenize", hd_cli_tokenize, "text on stdin -> token ids on stdout"},
    {"detokenize", hd_cli_detokenize, "token ids on stdin -> text on stdout"},
    {"chat-template", hd_cli_chat_template, "print the prompt for a JSON messages file"},
    {"serve", hd_cli_serve, "coordinator + P x E local worker processes (default: tiny model)"},
    {"coordinator", hd_cli_coordinator, "coordinator whose workers join it (hadal-coordinator)"},
    {"worker", hd_cli_worker, "a worker process joining a coordinator (hadal-worker)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: hadal <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].doc);
    }
    fprintf(f, "\n'hadal <command> --help' describes each command.\n");
}

int main(int argc, char **argv)
{
    hd_log_init("hadal", -1);
    hd_alloc_init();
    /* installed as hadal-worker / hadal-coordinator: the name is the command */
    const char *base = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    for (size_t i = 0; strncmp(base, "hadal-", 6) == 0 && i < sizeof(commands) / sizeof(commands[0]);
         i++) {
        if (strcmp(base + 6, commands[i].name) == 0) {
            return commands[i].fn(argc, argv);
        }
    }
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            return commands[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "hadal: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
