/*
 * cli_mpi_stub.c - built instead of cli_mpi.c when MPI is not found: --mpi is refused.
 */
#include "cli.h"

#include <stdio.h>

int hd_cli_mpi_init(int *rank_p, int *size_p)
{
    (void)rank_p;
    (void)size_p;
    fprintf(stderr, "hadal: this build has no MPI (install Open MPI and reconfigure)\n");
    return -1;
}

int hd_cli_mpi_bcast(char *buf, int len)
{
    (void)buf;
    (void)len;
    return -1;
}

void hd_cli_mpi_finalize(void)
{
}
