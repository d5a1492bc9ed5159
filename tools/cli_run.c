/* cli_run.c - placeholder until its module lands; reports that plainly. */
#include "cli.h"

#include <stdio.h>

int hd_cli_run(int argc, char **argv)
{
    (void)argc;
    fprintf(stderr, "hadal %s: not built yet in this revision\n", argv[0]);
    return 1;
}
