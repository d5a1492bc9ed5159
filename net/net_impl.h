/*
 * net_impl.h - what a transport implements. Two ops tables, because a collective library is
 * not a send/recv library: p2p (tcp, ucx, mpi) and coll (mpi only; net.c builds collectives
 * from p2p for the rest). Each transport exports one descriptor through a function that
 * returns NULL when its library is absent from this build (net/<t>/stub.c).
 * Requests are the transport's own objects; net.c passes them through as hd_net_req_h.
 */
#ifndef HADAL_NET_IMPL_H
#define HADAL_NET_IMPL_H

#include "hadal/net.h"

#include <stdint.h>

typedef struct hd_net_p2p_ops {
    /* Open a context for @params (rank/n_ranks already resolved unless the transport owns
     * them: mpi). */
    hd_status_t (*init)(const hd_net_params_t *params, void **ctx_p);
    void (*cleanup)(void *ctx);
    /* (optional) rank and size decided by the transport itself; NULL: the params' values */
    void (*world)(void *ctx, int *rank_p, int *n_ranks_p);
    hd_status_t (*address)(void *ctx, const void **blob_p, size_t *len_p);
    hd_status_t (*ep_connect)(void *ctx, int peer, const void *blob, size_t len);
    /* (optional) HD_INPROGRESS while a connection started by ep_connect is not up yet;
     * NULL: connections are usable at once */
    hd_status_t (*ep_ready)(void *ctx);
    hd_status_t (*send)(void *ctx, int peer, uint32_t tag, const void *buf, size_t len,
                        void **req_p);
    /* always HD_INPROGRESS with a request (or an error) */
    hd_status_t (*recv)(void *ctx, int peer, uint32_t tag, void *buf, size_t cap,
                        void **req_p);
    /* HD_INPROGRESS, HD_OK (+ bytes), or the request's error; does not progress */
    hd_status_t (*test)(void *ctx, void *req, size_t *len_p);
    /* Make progress; may block up to @timeout_ms (0: never) waiting for something to do.
     * HD_OK: something happened; HD_INPROGRESS: nothing was ready; else a context error. */
    hd_status_t (*progress)(void *ctx, int timeout_ms);
    void (*req_free)(void *ctx, void *req);
    /* (optional) HD_OK while @peer is usable, else its failure; NULL: always HD_OK */
    hd_status_t (*peer_status)(void *ctx, int peer);
} hd_net_p2p_ops_t;

/* Native collectives over a transport-side group object. */
typedef struct hd_net_coll_ops {
    hd_status_t (*group_create)(void *ctx, const int *ranks, int n, void **tgrp_p);
    void (*group_destroy)(void *ctx, void *tgrp);
    hd_status_t (*alltoallv)(void *ctx, void *tgrp, const void *sendbuf, const size_t *scounts,
                             const size_t *sdispls, void *recvbuf, const size_t *rcounts,
                             const size_t *rdispls, int64_t deadline_ms);
    hd_status_t (*allgather)(void *ctx, void *tgrp, const void *sendbuf, void *recvbuf,
                             size_t block, int64_t deadline_ms);
    /* (optional) the library's blocking all-to-all with no deadline (benchmark floor) */
    hd_status_t (*raw_alltoallv)(void *ctx, void *tgrp, const void *sendbuf,
                                 const size_t *scounts, const size_t *sdispls, void *recvbuf,
                                 const size_t *rcounts, const size_t *rdispls);
} hd_net_coll_ops_t;

typedef struct hd_net_transport {
    hd_net_transport_info_t info;
    /* Can this transport run in this process (e.g. mpi: launched by mpirun)? */
    bool (*probe)(void);
    const hd_net_p2p_ops_t *p2p;
    const hd_net_coll_ops_t *coll; /* (optional) NULL: collectives built from p2p */
    /* p2p-built collectives hold large blocks until the receiver has posted (transports that
     * send everything eagerly and would buffer early arrivals: tcp) */
    bool coll_rendezvous;
} hd_net_transport_t;

/* Descriptors; NULL when the library is not in this build. */
const hd_net_transport_t *hd_net_tcp_transport(void);
const hd_net_transport_t *hd_net_ucx_transport(void);
const hd_net_transport_t *hd_net_mpi_transport(void);

/* Milliseconds of CLOCK_MONOTONIC; deadlines are absolute values of it (< 0: none). */
int64_t hd_net_now_ms(void);
static inline int64_t hd_net_deadline(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : hd_net_now_ms() + timeout_ms;
}
/* Milliseconds left before @deadline, clamped to [0, cap]; cap when there is no deadline. */
static inline int hd_net_left_ms(int64_t deadline, int cap)
{
    if (deadline < 0) {
        return cap;
    }
    int64_t left = deadline - hd_net_now_ms();
    return left <= 0 ? 0 : left > cap ? cap : (int)left;
}

#endif /* HADAL_NET_IMPL_H */
