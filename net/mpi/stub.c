/*
 * stub.c - built instead of mpi.c when the MPI library is not found: the transport is
 * absent from the registry, so asking for "mpi" reports HD_ERR_UNSUPPORTED.
 */
#include "../net_impl.h"

const hd_net_transport_t *hd_net_mpi_transport(void)
{
    return NULL;
}
