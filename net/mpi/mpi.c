/*
 * mpi.c - the MPI transport, for processes launched by mpirun: ranks and world size come from
 * MPI_COMM_WORLD (a private duplicate with MPI_ERRORS_RETURN), messages are MPI_Isend /
 * MPI_Irecv of bytes, and the collectives are native (MPI_Ialltoallv / MPI_Iallgather on a
 * sub-communicator per group, polled against the deadline). MPI is initialised on first use
 * and finalised at exit when we initialised it. MPI itself aborts a job whose rank dies, so
 * this transport does not claim HD_NET_CAP_PEER_FAILURE; after a collective times out its
 * group's communicator must not be used again.
 */
#include "../net_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { MPI_REQ_SEND, MPI_REQ_RECV } mpi_req_kind_t;

typedef struct {
    MPI_Request req;
    mpi_req_kind_t kind;
    hd_status_t status; /* HD_INPROGRESS until MPI_Test says done */
    size_t len;         /* send: bytes; recv: bytes received */
} mpi_req_t;

typedef struct {
    MPI_Comm comm;      /* the group's communicator */
} mpi_grp_t;

typedef struct {
    int rank;
    int n_ranks;
    MPI_Comm comm;      /* duplicate of MPI_COMM_WORLD */
    int tag_ub;         /* largest tag this MPI accepts */
    char blob[32];
    size_t blob_len;
} mpi_ctx_t;

static void mpi_finalize_at_exit(void)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) {
        MPI_Finalize();
    }
}

static const char *mpi_err(int code, char *buf)
{
    int len = 0;
    if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) {
        snprintf(buf, MPI_MAX_ERROR_STRING, "MPI error %d", code);
    }
    return buf;
}

static hd_status_t mpi_status_of(int code, const char *what)
{
    char buf[MPI_MAX_ERROR_STRING];
    int cls = 0;
    if (code == MPI_SUCCESS) {
        return HD_OK;
    }
    MPI_Error_class(code, &cls);
    hd_warn(HD_SUBSYS_NET, "mpi: %s: %s", what, mpi_err(code, buf));
    return cls == MPI_ERR_TRUNCATE ? HD_ERR_PROTO : HD_ERR_REMOTE;
}

/* Launched by mpirun (or MPI already up in this process)? */
static bool mpi_probe(void)
{
    int init = 0;
    MPI_Initialized(&init);
    /* launcher environment, not configuration: Open MPI, PMI, PMIx */
    return init || getenv("OMPI_COMM_WORLD_SIZE") != NULL || getenv("PMI_SIZE") != NULL ||
           getenv("PMIX_RANK") != NULL;
}

static hd_status_t mpi_init(const hd_net_params_t *params, void **ctx_p)
{
    int init = 0, fin = 0, provided = 0, rc;
    MPI_Finalized(&fin);
    if (fin) {
        hd_error(HD_SUBSYS_NET, "mpi: MPI was already finalised in this process");
        return HD_ERR_UNSUPPORTED;
    }
    MPI_Initialized(&init);
    if (!init) {
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
        if (rc != MPI_SUCCESS) {
            hd_error(HD_SUBSYS_NET, "mpi: MPI_Init_thread failed (%d)", rc);
            return HD_ERR_IO;
        }
        atexit(mpi_finalize_at_exit);
    }
    mpi_ctx_t *c = hd_calloc(1, sizeof(*c), "mpi context");
    if (c == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->n_ranks);
    if ((params->rank >= 0 && params->rank != c->rank) ||
        (params->n_ranks > 0 && params->n_ranks != c->n_ranks)) {
        hd_error(HD_SUBSYS_NET, "mpi: asked for rank %d of %d, mpirun made this rank %d of %d",
                 params->rank, params->n_ranks, c->rank, c->n_ranks);
        hd_free(c);
        return HD_ERR_INVALID_PARAM;
    }
    rc = MPI_Comm_dup(MPI_COMM_WORLD, &c->comm);
    if (rc != MPI_SUCCESS) {
        hd_free(c);
        return mpi_status_of(rc, "MPI_Comm_dup");
    }
    MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
    int *ub = NULL, flag = 0;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag);
    c->tag_ub = flag && ub != NULL ? *ub : 32767;
    c->blob_len = (size_t)snprintf(c->blob, sizeof(c->blob), "hdmpi1 %d", c->rank) + 1;
    *ctx_p = c;
    return HD_OK;
}

static void mpi_cleanup(void *ctx)
{
    mpi_ctx_t *c = ctx;
    MPI_Comm_free(&c->comm);
    hd_free(c);
}

static void mpi_world(void *ctx, int *rank_p, int *n_ranks_p)
{
    mpi_ctx_t *c = ctx;
    *rank_p = c->rank;
    *n_ranks_p = c->n_ranks;
}

static hd_status_t mpi_address(void *ctx, const void **blob_p, size_t *len_p)
{
    mpi_ctx_t *c = ctx;
    *blob_p = c->blob;
    *len_p = c->blob_len;
    return HD_OK;
}

static hd_status_t mpi_ep_connect(void *ctx, int peer, const void *blob, size_t len)
{
    char text[32];
    int rank = -1;
    (void)ctx;
    if (len == 0 || len > sizeof(text)) {
        return HD_ERR_INVALID_PARAM;
    }
    memcpy(text, blob, len);
    text[len - 1] = '\0';
    if (sscanf(text, "hdmpi1 %d", &rank) != 1 || rank != peer) {
        hd_error(HD_SUBSYS_NET, "mpi: address '%s' is not rank %d's", text, peer);
        return HD_ERR_INVALID_PARAM;
    }
    return HD_OK; /* MPI is connected already */
}

static hd_status_t mpi_check(mpi_ctx_t *c, uint32_t tag, size_t len)
{
    if (len > INT_MAX) {
        hd_error(HD_SUBSYS_NET, "mpi: message of %zu bytes exceeds INT_MAX", len);
        return HD_ERR_UNSUPPORTED;
    }
    if (tag > (uint32_t)c->tag_ub) {
        hd_error(HD_SUBSYS_NET, "mpi: tag %u above this MPI's MPI_TAG_UB %d", tag, c->tag_ub);
        return HD_ERR_UNSUPPORTED;
    }
    return HD_OK;
}

static hd_status_t mpi_post(mpi_ctx_t *c, mpi_req_kind_t kind, int peer, uint32_t tag,
                            void *buf, size_t len, void **req_p)
{
    HD_CHECK(mpi_check(c, tag, len));
    mpi_req_t *r = hd_calloc(1, sizeof(*r), "mpi request");
    if (r == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    r->kind = kind;
    r->len = len;
    r->status = HD_INPROGRESS;
    int rc = kind == MPI_REQ_SEND
                 ? MPI_Isend(buf, (int)len, MPI_BYTE, peer, (int)tag, c->comm, &r->req)
                 : MPI_Irecv(buf, (int)len, MPI_BYTE, peer, (int)tag, c->comm, &r->req);
    if (rc != MPI_SUCCESS) {
        hd_free(r);
        return mpi_status_of(rc, kind == MPI_REQ_SEND ? "MPI_Isend" : "MPI_Irecv");
    }
    *req_p = r;
    return HD_INPROGRESS;
}

static hd_status_t mpi_send(void *ctx, int peer, uint32_t tag, const void *buf, size_t len,
                            void **req_p)
{
    return mpi_post(ctx, MPI_REQ_SEND, peer, tag, (void *)buf, len, req_p);
}

static hd_status_t mpi_recv(void *ctx, int peer, uint32_t tag, void *buf, size_t cap,
                            void **req_p)
{
    return mpi_post(ctx, MPI_REQ_RECV, peer, tag, buf, cap, req_p);
}

static hd_status_t mpi_test(void *ctx, void *req, size_t *len_p)
{
    mpi_req_t *r = req;
    (void)ctx;
    if (r->status == HD_INPROGRESS) {
        int flag = 0;
        MPI_Status st;
        int rc = MPI_Test(&r->req, &flag, &st);
        if (rc != MPI_SUCCESS) {
            r->status = mpi_status_of(rc == MPI_ERR_IN_STATUS ? st.MPI_ERROR : rc, "MPI_Test");
        } else if (flag) {
            if (r->kind == MPI_REQ_RECV) {
                int count = 0;
                MPI_Get_count(&st, MPI_BYTE, &count);
                r->len = (size_t)count;
            }
            r->status = HD_OK;
        }
    }
    if (r->status == HD_OK && len_p != NULL) {
        *len_p = r->len;
    }
    return r->status;
}

static hd_status_t mpi_progress(void *ctx, int timeout_ms)
{
    (void)ctx;
    if (timeout_ms > 0) {
        sched_yield(); /* MPI progresses inside MPI_Test */
    }
    return HD_INPROGRESS;
}

static void mpi_req_free(void *ctx, void *req)
{
    mpi_req_t *r = req;
    (void)ctx;
    if (r->status == HD_INPROGRESS && r->req != MPI_REQUEST_NULL) {
        if (r->kind == MPI_REQ_RECV) {
            MPI_Cancel(&r->req);
        }
        MPI_Request_free(&r->req);
    }
    hd_free(r);
}

/* ---- collectives ---- */

static hd_status_t mpi_group_create(void *ctx, const int *ranks, int n, void **tgrp_p)
{
    mpi_ctx_t *c = ctx;
    MPI_Group world, sub;
    mpi_grp_t *g = hd_calloc(1, sizeof(*g), "mpi group");
    if (g == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    MPI_Comm_group(c->comm, &world);
    MPI_Group_incl(world, n, ranks, &sub);
    int rc = MPI_Comm_create_group(c->comm, sub, 0, &g->comm);
    MPI_Group_free(&sub);
    MPI_Group_free(&world);
    if (rc != MPI_SUCCESS) {
        hd_free(g);
        return mpi_status_of(rc, "MPI_Comm_create_group");
    }
    MPI_Comm_set_errhandler(g->comm, MPI_ERRORS_RETURN);
    *tgrp_p = g;
    return HD_OK;
}

static void mpi_group_destroy(void *ctx, void *tgrp)
{
    mpi_grp_t *g = tgrp;
    (void)ctx;
    MPI_Comm_free(&g->comm);
    hd_free(g);
}

/* size_t counts -> int counts for MPI; HD_ERR_UNSUPPORTED past INT_MAX. */
static hd_status_t mpi_counts(int n, const size_t *a, int *out)
{
    for (int i = 0; i < n; i++) {
        if (a[i] > INT_MAX) {
            hd_error(HD_SUBSYS_NET, "mpi: count or displacement %zu exceeds INT_MAX", a[i]);
            return HD_ERR_UNSUPPORTED;
        }
        out[i] = (int)a[i];
    }
    return HD_OK;
}

static hd_status_t mpi_wait_coll(MPI_Request *req, int64_t deadline, const char *what)
{
    for (;;) {
        int flag = 0;
        int rc = MPI_Test(req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            return mpi_status_of(rc, what);
        }
        if (flag) {
            return HD_OK;
        }
        if (deadline >= 0 && hd_net_now_ms() >= deadline) {
            /* a pending collective can be neither cancelled nor freed (MPI-3 5.12) */
            hd_warn(HD_SUBSYS_NET, "mpi: %s timed out; the group is unusable now", what);
            return HD_ERR_TIMEOUT;
        }
        sched_yield();
    }
}

typedef struct {
    int *sc, *sd, *rc, *rd;
    int buf[4 * 16];
    int *heap;
} mpi_v_t;

static hd_status_t mpi_v_init(mpi_v_t *v, int n, const size_t *scounts, const size_t *sdispls,
                              const size_t *rcounts, const size_t *rdispls)
{
    int *base = v->buf;
    v->heap = NULL;
    if (n > 16) {
        v->heap = hd_calloc(4 * (size_t)n, sizeof(int), "mpi counts");
        if (v->heap == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        base = v->heap;
    }
    v->sc = base;
    v->sd = base + n;
    v->rc = base + 2 * n;
    v->rd = base + 3 * n;
    hd_status_t st = mpi_counts(n, scounts, v->sc);
    if (st == HD_OK) {
        st = mpi_counts(n, sdispls, v->sd);
    }
    if (st == HD_OK) {
        st = mpi_counts(n, rcounts, v->rc);
    }
    if (st == HD_OK) {
        st = mpi_counts(n, rdispls, v->rd);
    }
    if (st != HD_OK) {
        hd_free(v->heap);
    }
    return st;
}

static hd_status_t mpi_alltoallv(void *ctx, void *tgrp, const void *sendbuf,
                                 const size_t *scounts, const size_t *sdispls, void *recvbuf,
                                 const size_t *rcounts, const size_t *rdispls,
                                 int64_t deadline)
{
    mpi_grp_t *g = tgrp;
    mpi_v_t v;
    int n;
    (void)ctx;
    MPI_Comm_size(g->comm, &n);
    HD_CHECK(mpi_v_init(&v, n, scounts, sdispls, rcounts, rdispls));
    MPI_Request req;
    int rc = MPI_Ialltoallv(sendbuf, v.sc, v.sd, MPI_BYTE, recvbuf, v.rc, v.rd, MPI_BYTE,
                            g->comm, &req);
    hd_status_t st = rc == MPI_SUCCESS ? mpi_wait_coll(&req, deadline, "MPI_Ialltoallv")
                                       : mpi_status_of(rc, "MPI_Ialltoallv");
    hd_free(v.heap);
    return st;
}

static hd_status_t mpi_raw_alltoallv(void *ctx, void *tgrp, const void *sendbuf,
                                     const size_t *scounts, const size_t *sdispls,
                                     void *recvbuf, const size_t *rcounts,
                                     const size_t *rdispls)
{
    mpi_grp_t *g = tgrp;
    mpi_v_t v;
    int n;
    (void)ctx;
    MPI_Comm_size(g->comm, &n);
    HD_CHECK(mpi_v_init(&v, n, scounts, sdispls, rcounts, rdispls));
    int rc = MPI_Alltoallv(sendbuf, v.sc, v.sd, MPI_BYTE, recvbuf, v.rc, v.rd, MPI_BYTE,
                           g->comm);
    hd_free(v.heap);
    return mpi_status_of(rc, "MPI_Alltoallv");
}

static hd_status_t mpi_allgather(void *ctx, void *tgrp, const void *sendbuf, void *recvbuf,
                                 size_t block, int64_t deadline)
{
    mpi_grp_t *g = tgrp;
    (void)ctx;
    if (block > INT_MAX) {
        return HD_ERR_UNSUPPORTED;
    }
    MPI_Request req;
    int rc = MPI_Iallgather(sendbuf, (int)block, MPI_BYTE, recvbuf, (int)block, MPI_BYTE,
                            g->comm, &req);
    if (rc != MPI_SUCCESS) {
        return mpi_status_of(rc, "MPI_Iallgather");
    }
    return mpi_wait_coll(&req, deadline, "MPI_Iallgather");
}

static const hd_net_p2p_ops_t mpi_p2p_ops = {
    .init = mpi_init,
    .cleanup = mpi_cleanup,
    .world = mpi_world,
    .address = mpi_address,
    .ep_connect = mpi_ep_connect,
    .ep_ready = NULL,
    .send = mpi_send,
    .recv = mpi_recv,
    .test = mpi_test,
    .progress = mpi_progress,
    .req_free = mpi_req_free,
    .peer_status = NULL,
};

static const hd_net_coll_ops_t mpi_coll_ops = {
    .group_create = mpi_group_create,
    .group_destroy = mpi_group_destroy,
    .alltoallv = mpi_alltoallv,
    .allgather = mpi_allgather,
    .raw_alltoallv = mpi_raw_alltoallv,
};

static const hd_net_transport_t mpi_transport = {
    .info =
        {
            .name = "mpi",
            .caps = HD_NET_CAP_P2P | HD_NET_CAP_COLL | HD_NET_CAP_HOST_MEM |
                    HD_NET_CAP_NEEDS_MPI | HD_NET_CAP_MULTI_NODE,
            .max_msg_bytes = INT_MAX,
            .doc = "MPI point-to-point and collectives (under mpirun), host memory",
        },
    .probe = mpi_probe,
    .p2p = &mpi_p2p_ops,
    .coll = &mpi_coll_ops,
};

const hd_net_transport_t *hd_net_mpi_transport(void)
{
    return &mpi_transport;
}
