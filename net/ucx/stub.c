/*
 * stub.c - built instead of ucx.c when the UCX library is not found: the transport is
 * absent from the registry, so asking for "ucx" reports HD_ERR_UNSUPPORTED.
 */
#include "../net_impl.h"

const hd_net_transport_t *hd_net_ucx_transport(void)
{
    return NULL;
}
