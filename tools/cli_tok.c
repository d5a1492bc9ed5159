/* cli_tok.c - placeholder until the tokenizer lands; reports that plainly. */
#include "cli.h"

#include <stdio.h>

static int tok_missing(char **argv)
{
    fprintf(stderr, "hadal %s: not built yet in this revision\n", argv[0]);
    return 1;
}
int hd_cli_tokenize(int argc, char **argv) { (void)argc; return tok_missing(argv); }
int hd_cli_detokenize(int argc, char **argv) { (void)argc; return tok_missing(argv); }
int hd_cli_chat_template(int argc, char **argv) { (void)argc; return tok_missing(argv); }
