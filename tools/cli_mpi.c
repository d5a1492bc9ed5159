/*
 * cli_mpi.c - the MPI bootstrap of `mpirun -np N hadal serve|run --mpi`: MPI is started here
 * (before any transport uses it), rank 0 becomes the coordinator and broadcasts its control
 * address to ranks 1..N-1, which become the workers of grid ranks 0..N-2. Built when Open MPI
 * (or another MPI) is found; cli_mpi_stub.c otherwise.
 */
#include "cli.h"

#include <mpi.h>
#include <stdio.h>
#include <string.h>

static int mpi_cli_started;

int hd_cli_mpi_init(int *rank_p, int *size_p)
{
    int init = 0, provided = 0;
    MPI_Initialized(&init);
    if (!init) {
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
            fprintf(stderr, "hadal: MPI_Init_thread failed\n");
            return -1;
        }
        mpi_cli_started = 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, rank_p);
    MPI_Comm_size(MPI_COMM_WORLD, size_p);
    return 0;
}

int hd_cli_mpi_bcast(char *buf, int len)
{
    return MPI_Bcast(buf, len, MPI_CHAR, 0, MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : -1;
}

void hd_cli_mpi_finalize(void)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (mpi_cli_started && !fin) {
        MPI_Finalize();
    }
}
