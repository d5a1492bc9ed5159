/*
 * hadal/net.h - the data plane: tagged point-to-point messages between grid ranks
 * (activations down a column, stage s -> s+1) and the all-to-all of each stage row (MoE
 * dispatch/combine), over a transport chosen by name: "tcp" (always built; tests, fallback),
 * "ucx" (UCP tag API, host memory), "mpi" (under mpirun). Transports are compiled in when
 * their library is found and declare what they can do (hd_net_transport_info_t).
 *
 * Model. Every process of the grid opens one context (hd_net_h) per transport with its rank
 * in a world of n_ranks. hd_net_address() gives an opaque blob describing how to reach this
 * rank; blobs travel out of band (the coordinator's Placement address table, or MPI) and
 * hd_net_connect() is called with each peer's blob that this rank will talk to (both sides
 * must call it). Connections complete in the background, driven by progress.
 *
 * Messages. hd_net_send()/hd_net_recv() are non-blocking. A send returns HD_OK (complete
 * now, *req_p = NULL), HD_INPROGRESS (*req_p set: finish with hd_net_test()/hd_net_wait(),
 * then hd_net_req_free()), or an error. A receive always returns HD_INPROGRESS with a
 * request (even when the message is already there, so its length can be read) or an error. Buffers belong to the caller and must stay valid and
 * untouched until the request completes. A receive matches the oldest unmatched message from
 * @peer with @tag; messages between two ranks with the same tag arrive in send order. A
 * message longer than the receive buffer fails the receive with HD_ERR_PROTO. User tags are
 * below HD_NET_TAG_USER_MAX; the rest are reserved for collectives.
 *
 * Failures. A peer that dies or closes fails its pending and future requests with
 * HD_ERR_REMOTE; garbage or a handshake from an unknown rank on the wire is logged and the
 * connection dropped (HD_ERR_PROTO for that peer's requests); the process stays up. Every
 * blocking call takes a timeout in milliseconds (< 0 means none) and returns HD_ERR_TIMEOUT
 * when it passes; the timed-out request is still pending and may be waited for again or freed.
 *
 * Threads. A context is driven by one thread at a time (the worker's communication thread);
 * different contexts are independent. Nothing here aborts on remote input.
 */
#ifndef HADAL_NET_H
#define HADAL_NET_H

#include "hadal/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hd_net *hd_net_h;             /* one transport context of this process */
typedef struct hd_net_req *hd_net_req_h;     /* a pending send or receive */
typedef struct hd_net_group *hd_net_group_h; /* an ordered set of ranks (a stage row) */

/* What a transport can do (hd_net_transport_info_t.caps). */
typedef enum {
    HD_NET_CAP_P2P = 1u << 0,           /* tagged send/recv */
    HD_NET_CAP_COLL = 1u << 1,          /* native collectives (else built from p2p in net.c) */
    HD_NET_CAP_HOST_MEM = 1u << 2,      /* buffers in host memory */
    HD_NET_CAP_DEVICE_MEM = 1u << 3,    /* buffers in device (CUDA) memory */
    HD_NET_CAP_NEEDS_MPI = 1u << 4,     /* only under mpirun: ranks come from MPI */
    HD_NET_CAP_MULTI_NODE = 1u << 5,    /* reaches other hosts */
    HD_NET_CAP_PEER_FAILURE = 1u << 6,  /* a dead peer fails requests instead of the job */
} hd_net_cap_t;

typedef struct {
    const char *name;       /* "tcp", "ucx", "mpi" */
    uint32_t caps;          /* HD_NET_CAP_* */
    uint64_t max_msg_bytes; /* largest single message (and alltoallv buffer for mpi) */
    const char *doc;        /* one line for hadal info */
} hd_net_transport_info_t;

/* Tags at or above this are reserved for collectives. */
#define HD_NET_TAG_USER_MAX (1u << 30)

typedef struct {
    const char *transport;  /* "tcp", "ucx", "mpi"; NULL or "auto": the first usable one
                               with required_caps in the order ucx, mpi, tcp (mpi is usable
                               only when launched by mpirun) */
    int rank;               /* this process, [0, n_ranks); -1 with mpi: MPI_COMM_WORLD rank */
    int n_ranks;            /* world size; 0 with mpi: MPI_COMM_WORLD size */
    const char *bind_host;  /* tcp: address to listen on; NULL = "127.0.0.1" (a public
                               address is allowed and logged as a warning) */
    int bind_port;          /* tcp: 0 = any free port */
    uint64_t max_msg_bytes; /* incoming messages above this are refused; 0 = transport max */
    uint32_t required_caps; /* HD_NET_CAP_* the chosen transport must have ("auto" skips
                               others; a named one without them is HD_ERR_UNSUPPORTED).
                               ucx: PEER_FAILURE switches its endpoints to UCX's peer error
                               mode, which UCX 1.13 offers over TCP only (no shared memory);
                               without it a dead peer may only show as HD_ERR_TIMEOUT */
} hd_net_params_t;

/* ---- transports ---- */

/* Names of compiled-in transports, NULL-terminated, in order of preference. */
const char *const *hd_net_transport_names(void);

/* What @name can do; HD_ERR_NOT_FOUND when not compiled in. */
hd_status_t hd_net_transport_info(const char *name, hd_net_transport_info_t *info);

/* Can @name run in this process now (library present, mpirun present for mpi)? */
bool hd_net_transport_usable(const char *name);

/* ---- context ---- */

/*
 * Open a context (listening endpoint) for @params. HD_ERR_UNSUPPORTED: no such transport in
 * this build, not usable here, or lacking required_caps; HD_ERR_INVALID_PARAM; HD_ERR_IO.
 */
hd_status_t hd_net_create(const hd_net_params_t *params, hd_net_h *net_p);

/* Close every connection, drop in-flight requests (they must not be waited on after) and
 * free the context. NULL is fine. */
void hd_net_destroy(hd_net_h net);

const char *hd_net_name(hd_net_h net);
int hd_net_rank(hd_net_h net);
int hd_net_n_ranks(hd_net_h net);
uint32_t hd_net_caps(hd_net_h net);

/* This rank's address blob (valid until hd_net_destroy). */
hd_status_t hd_net_address(hd_net_h net, const void **blob_p, size_t *len_p);

/*
 * Start a connection to @peer described by @blob (copied). Both ranks of a pair call it;
 * it returns at once (HD_OK) and the connection completes during progress. Messages to a
 * peer may be posted before it is connected. HD_ERR_INVALID_PARAM for a bad rank or a blob
 * that does not parse, HD_ERR_IO when the peer cannot be reached at all.
 */
hd_status_t hd_net_connect(hd_net_h net, int peer, const void *blob, size_t len);

/* Wait until every peer passed to hd_net_connect() is connected (or failed: HD_ERR_REMOTE). */
hd_status_t hd_net_connect_wait(hd_net_h net, int timeout_ms);

/*
 * Failures noticed in the background (STYLE 2.3): HD_OK while every peer is usable (or still
 * connecting), else the status of the lowest failed peer (HD_ERR_REMOTE: died or closed;
 * HD_ERR_PROTO: sent garbage) with its rank in *@peer_p (optional). Drives no progress:
 * call it between progress calls. Transports that cannot lose a peer alone (mpi) say HD_OK.
 */
hd_status_t hd_net_get_async_error(hd_net_h net, int *peer_p);

/* ---- point to point ---- */

hd_status_t hd_net_send(hd_net_h net, int peer, uint32_t tag, const void *buf, size_t len,
                        hd_net_req_h *req_p);
hd_status_t hd_net_recv(hd_net_h net, int peer, uint32_t tag, void *buf, size_t cap,
                        hd_net_req_h *req_p);

/*
 * Drive progress once without blocking (ready sockets, connections, completions). Returns
 * HD_OK or an error of the context itself (not of a peer).
 */
hd_status_t hd_net_progress(hd_net_h net);

/* HD_INPROGRESS while pending, HD_OK when done (*len_p: bytes sent/received, optional), or
 * the request's error. Drives progress once. */
hd_status_t hd_net_test(hd_net_h net, hd_net_req_h req, size_t *len_p);

/* Block (driving progress) until @req completes or @timeout_ms passes. */
hd_status_t hd_net_wait(hd_net_h net, hd_net_req_h req, size_t *len_p, int timeout_ms);

/* Wait for all of @reqs (NULL entries are skipped); returns the first error seen. */
hd_status_t hd_net_wait_all(hd_net_h net, hd_net_req_h *reqs, int n, int timeout_ms);

/* Free a request. A pending receive is cancelled; a pending send that has started on a byte
 * stream aborts that connection (its peer then sees HD_ERR_REMOTE). NULL is fine. */
void hd_net_req_free(hd_net_h net, hd_net_req_h req);

/* Blocking conveniences: post, wait, free. */
hd_status_t hd_net_send_sync(hd_net_h net, int peer, uint32_t tag, const void *buf, size_t len,
                             int timeout_ms);
hd_status_t hd_net_recv_sync(hd_net_h net, int peer, uint32_t tag, void *buf, size_t cap,
                             size_t *len_p, int timeout_ms);

/* ---- groups and collectives (a stage row) ---- */

/*
 * A group of @n distinct ranks (@ranks copied, order defines group indices) that includes
 * this rank. Every member creates the same group in the same order relative to its other
 * groups (mpi builds a sub-communicator; collective over the members).
 */
hd_status_t hd_net_group_create(hd_net_h net, const int *ranks, int n, hd_net_group_h *grp_p);
void hd_net_group_destroy(hd_net_h net, hd_net_group_h grp);
int hd_net_group_size(hd_net_group_h grp);
int hd_net_group_index(hd_net_group_h grp); /* this rank's index in the group */

/*
 * All-to-all with per-peer byte counts (the MoE dispatch and combine): member i sends
 * @send_counts[j] bytes from @sendbuf + @send_displs[j] to member j, which receives them at
 * @recvbuf + @recv_displs[i], exactly @recv_counts[i] bytes. Both sides must agree: on tcp and
 * ucx a mismatch is HD_ERR_PROTO (or HD_ERR_TIMEOUT on tcp when only one side expects a block
 * of 64 KiB or more); mpi reports a block larger than expected and does not notice a smaller
 * one. Counts may be zero. Blocks until done or @timeout_ms. Arrays are indexed by group
 * index. Collective: every member calls it, in the same order. @sendbuf and @recvbuf must not
 * overlap.
 */
hd_status_t hd_net_alltoallv(hd_net_h net, hd_net_group_h grp, const void *sendbuf,
                             const size_t *send_counts, const size_t *send_displs,
                             void *recvbuf, const size_t *recv_counts,
                             const size_t *recv_displs, int timeout_ms);

/* All-to-all of @block bytes per member (e.g. counts before an alltoallv): block j of
 * @sendbuf goes to member j, block i of @recvbuf comes from member i. */
hd_status_t hd_net_alltoall(hd_net_h net, hd_net_group_h grp, const void *sendbuf,
                            void *recvbuf, size_t block, int timeout_ms);

/* Every member contributes @block bytes; @recvbuf gets them in group order. */
hd_status_t hd_net_allgather(hd_net_h net, hd_net_group_h grp, const void *sendbuf,
                             void *recvbuf, size_t block, int timeout_ms);

hd_status_t hd_net_barrier(hd_net_h net, hd_net_group_h grp, int timeout_ms);

/*
 * The transport's own all-to-all with none of hd_net's bookkeeping: the floor that
 * `hadal bench alltoall` compares against (mpi: one MPI_Alltoallv on the group's
 * communicator). HD_ERR_UNSUPPORTED for transports without a native collective.
 */
hd_status_t hd_net_raw_alltoallv(hd_net_h net, hd_net_group_h grp, const void *sendbuf,
                                 const size_t *send_counts, const size_t *send_displs,
                                 void *recvbuf, const size_t *recv_counts,
                                 const size_t *recv_displs, int timeout_ms);

#endif /* HADAL_NET_H */
