/*
 * net.c - the transport registry and the public hd_net_* wrappers.
 *
 * The registry is a static list of compiled-in transports in order of preference (ucx, mpi,
 * tcp); "auto" takes the first whose probe accepts and whose capabilities cover the caller's
 * needs. Blocking waits are built here on top of each transport's test/progress pair, with a
 * deadline on every loop. Collectives use the transport's native ones when it has them (mpi)
 * and are otherwise built from tagged point-to-point messages on a per-group tag, relying on
 * the per-(peer, tag) ordering every transport guarantees.
 */
#include "net_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <time.h>

struct hd_net {
    const hd_net_transport_t *t; /* the transport's descriptor */
    void *ctx;                   /* the transport's context */
    int rank;                    /* this process */
    int n_ranks;                 /* world size */
};

struct hd_net_group {
    int n;         /* members */
    int me;        /* this rank's index */
    int *ranks;    /* [n] world ranks in group order */
    uint32_t tag;  /* collective tag (>= HD_NET_TAG_USER_MAX) */
    void *tgrp;    /* transport group (coll transports), else NULL */
};

/* The longest a blocking loop sleeps in one progress call (a bound on deadline overshoot). */
#define NET_POLL_SLICE_MS 50
/* A waiting loop polls without sleeping (yielding the CPU) while the transport had work in
 * the last NET_SPIN_MS, and sleeps in the transport's progress only once it has been idle
 * that long: sleeping on every socket-buffer's worth of a large transfer costs up to 2x on
 * oversubscribed hosts, spinning for seconds on an idle link wastes a core. */
#define NET_SPIN_MS 2

typedef struct {
    int64_t active_ms; /* last time progress found work */
} net_spin_t;

/* One progress step of a wait loop; see NET_SPIN_MS. */
static hd_status_t net_wait_step(hd_net_h net, net_spin_t *spin, int64_t deadline)
{
    hd_status_t st = net->t->p2p->progress(net->ctx, 0);
    int64_t now = hd_net_now_ms();
    if (st == HD_OK) {
        spin->active_ms = now;
        return HD_OK;
    }
    if (st != HD_INPROGRESS) {
        return st;
    }
    if (now - spin->active_ms < NET_SPIN_MS) {
        sched_yield();
        return HD_OK;
    }
    st = net->t->p2p->progress(net->ctx, hd_net_left_ms(deadline, NET_POLL_SLICE_MS));
    if (st == HD_OK) {
        spin->active_ms = hd_net_now_ms();
    }
    return st == HD_INPROGRESS ? HD_OK : st;
}

int64_t hd_net_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- registry ---- */

static const hd_net_transport_t *net_transports[4];
static const char *net_names[4];
static int net_n_transports;
static pthread_once_t net_registry_once = PTHREAD_ONCE_INIT;

static void net_registry_build(void)
{
    const hd_net_transport_t *all[] = {hd_net_ucx_transport(), hd_net_mpi_transport(),
                                       hd_net_tcp_transport()};
    int n = 0;
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (all[i] != NULL) {
            net_transports[n] = all[i];
            net_names[n] = all[i]->info.name;
            n++;
        }
    }
    net_names[n] = NULL;
    net_n_transports = n;
}

static void net_registry_init(void)
{
    pthread_once(&net_registry_once, net_registry_build);
}

static const hd_net_transport_t *net_find(const char *name)
{
    net_registry_init();
    for (int i = 0; i < net_n_transports; i++) {
        if (strcmp(net_transports[i]->info.name, name) == 0) {
            return net_transports[i];
        }
    }
    return NULL;
}

const char *const *hd_net_transport_names(void)
{
    net_registry_init();
    return net_names;
}

hd_status_t hd_net_transport_info(const char *name, hd_net_transport_info_t *info)
{
    const hd_net_transport_t *t = net_find(name);
    if (t == NULL) {
        return HD_ERR_NOT_FOUND;
    }
    *info = t->info;
    return HD_OK;
}

bool hd_net_transport_usable(const char *name)
{
    const hd_net_transport_t *t = net_find(name);
    return t != NULL && (t->probe == NULL || t->probe());
}

/* ---- context ---- */

hd_status_t hd_net_create(const hd_net_params_t *params, hd_net_h *net_p)
{
    const hd_net_transport_t *t = NULL;
    hd_status_t status;
    const char *want = params->transport;
    net_registry_init();
    if (want == NULL || strcmp(want, "auto") == 0) {
        for (int i = 0; i < net_n_transports; i++) {
            const hd_net_transport_t *c = net_transports[i];
            if ((c->info.caps & params->required_caps) == params->required_caps &&
                (c->probe == NULL || c->probe())) {
                t = c;
                break;
            }
        }
        if (t == NULL) {
            hd_error(HD_SUBSYS_NET, "no usable transport has capabilities 0x%x",
                     params->required_caps);
            return HD_ERR_UNSUPPORTED;
        }
    } else {
        t = net_find(want);
        if (t == NULL) {
            hd_error(HD_SUBSYS_NET, "no transport named '%s' in this build", want);
            return HD_ERR_UNSUPPORTED;
        }
        if ((t->info.caps & params->required_caps) != params->required_caps) {
            hd_error(HD_SUBSYS_NET, "transport %s lacks capabilities 0x%x", want,
                     params->required_caps & ~t->info.caps);
            return HD_ERR_UNSUPPORTED;
        }
        if (t->probe != NULL && !t->probe()) {
            hd_error(HD_SUBSYS_NET, "transport %s cannot run in this process%s", want,
                     (t->info.caps & HD_NET_CAP_NEEDS_MPI) ? " (not launched by mpirun)" : "");
            return HD_ERR_UNSUPPORTED;
        }
    }
    bool own_world = t->p2p->world != NULL;
    if (!own_world && (params->n_ranks < 1 || params->rank < 0 ||
                       params->rank >= params->n_ranks)) {
        hd_error(HD_SUBSYS_NET, "%s: rank %d of %d is not a valid grid position",
                 t->info.name, params->rank, params->n_ranks);
        return HD_ERR_INVALID_PARAM;
    }
    hd_net_h net = hd_calloc(1, sizeof(*net), "net context");
    if (net == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    net->t = t;
    HD_CHECK_GOTO(t->p2p->init(params, &net->ctx), status, err_free_net);
    net->rank = params->rank;
    net->n_ranks = params->n_ranks;
    if (own_world) {
        t->p2p->world(net->ctx, &net->rank, &net->n_ranks);
    }
    hd_debug(HD_SUBSYS_NET, "%s: rank %d of %d open", t->info.name, net->rank, net->n_ranks);
    *net_p = net;
    return HD_OK;

err_free_net:
    hd_free(net);
    return status;
}

void hd_net_destroy(hd_net_h net)
{
    if (net == NULL) {
        return;
    }
    net->t->p2p->cleanup(net->ctx);
    hd_free(net);
}

const char *hd_net_name(hd_net_h net)
{
    return net->t->info.name;
}

int hd_net_rank(hd_net_h net)
{
    return net->rank;
}

int hd_net_n_ranks(hd_net_h net)
{
    return net->n_ranks;
}

uint32_t hd_net_caps(hd_net_h net)
{
    return net->t->info.caps;
}

hd_status_t hd_net_address(hd_net_h net, const void **blob_p, size_t *len_p)
{
    return net->t->p2p->address(net->ctx, blob_p, len_p);
}

static bool net_peer_ok(hd_net_h net, int peer, const char *what)
{
    if (peer < 0 || peer >= net->n_ranks || peer == net->rank) {
        hd_error(HD_SUBSYS_NET, "%s: %s to rank %d (this is rank %d of %d)", net->t->info.name,
                 what, peer, net->rank, net->n_ranks);
        return false;
    }
    return true;
}

hd_status_t hd_net_connect(hd_net_h net, int peer, const void *blob, size_t len)
{
    if (!net_peer_ok(net, peer, "connect")) {
        return HD_ERR_INVALID_PARAM;
    }
    return net->t->p2p->ep_connect(net->ctx, peer, blob, len);
}

hd_status_t hd_net_connect_wait(hd_net_h net, int timeout_ms)
{
    int64_t deadline = hd_net_deadline(timeout_ms);
    if (net->t->p2p->ep_ready == NULL) {
        return HD_OK;
    }
    for (;;) {
        hd_status_t st = net->t->p2p->ep_ready(net->ctx);
        if (st != HD_INPROGRESS) {
            return st;
        }
        int left = hd_net_left_ms(deadline, NET_POLL_SLICE_MS);
        if (deadline >= 0 && left == 0) {
            hd_warn(HD_SUBSYS_NET, "%s: connections not up after %d ms", net->t->info.name,
                    timeout_ms);
            return HD_ERR_TIMEOUT;
        }
        hd_status_t pst = net->t->p2p->progress(net->ctx, left);
        if (pst != HD_OK && pst != HD_INPROGRESS) {
            return pst;
        }
    }
}

hd_status_t hd_net_get_async_error(hd_net_h net, int *peer_p)
{
    if (net->t->p2p->peer_status == NULL) {
        return HD_OK;
    }
    for (int r = 0; r < net->n_ranks; r++) {
        if (r == net->rank) {
            continue;
        }
        hd_status_t st = net->t->p2p->peer_status(net->ctx, r);
        if (st != HD_OK) {
            if (peer_p != NULL) {
                *peer_p = r;
            }
            return st;
        }
    }
    return HD_OK;
}

/* ---- point to point ---- */

hd_status_t hd_net_send(hd_net_h net, int peer, uint32_t tag, const void *buf, size_t len,
                        hd_net_req_h *req_p)
{
    void *req = NULL;
    if (!net_peer_ok(net, peer, "send")) {
        return HD_ERR_INVALID_PARAM;
    }
    hd_status_t st = net->t->p2p->send(net->ctx, peer, tag, buf, len, &req);
    *req_p = st == HD_INPROGRESS ? (hd_net_req_h)req : NULL;
    return st;
}

hd_status_t hd_net_recv(hd_net_h net, int peer, uint32_t tag, void *buf, size_t cap,
                        hd_net_req_h *req_p)
{
    void *req = NULL;
    if (!net_peer_ok(net, peer, "recv")) {
        return HD_ERR_INVALID_PARAM;
    }
    hd_status_t st = net->t->p2p->recv(net->ctx, peer, tag, buf, cap, &req);
    *req_p = st == HD_INPROGRESS ? (hd_net_req_h)req : NULL;
    return st;
}

hd_status_t hd_net_progress(hd_net_h net)
{
    hd_status_t st = net->t->p2p->progress(net->ctx, 0);
    return st == HD_INPROGRESS ? HD_OK : st;
}

hd_status_t hd_net_test(hd_net_h net, hd_net_req_h req, size_t *len_p)
{
    size_t len = 0;
    hd_status_t st = net->t->p2p->test(net->ctx, req, &len);
    if (st == HD_INPROGRESS) {
        hd_status_t pst = net->t->p2p->progress(net->ctx, 0);
        if (pst != HD_OK && pst != HD_INPROGRESS) {
            return pst;
        }
        st = net->t->p2p->test(net->ctx, req, &len);
    }
    if (st == HD_OK && len_p != NULL) {
        *len_p = len;
    }
    return st;
}

hd_status_t hd_net_wait(hd_net_h net, hd_net_req_h req, size_t *len_p, int timeout_ms)
{
    int64_t deadline = hd_net_deadline(timeout_ms);
    net_spin_t spin = {hd_net_now_ms()};
    for (;;) {
        size_t len = 0;
        hd_status_t st = net->t->p2p->test(net->ctx, req, &len);
        if (st != HD_INPROGRESS) {
            if (st == HD_OK && len_p != NULL) {
                *len_p = len;
            }
            return st;
        }
        if (deadline >= 0 && hd_net_now_ms() >= deadline) {
            return HD_ERR_TIMEOUT;
        }
        HD_CHECK(net_wait_step(net, &spin, deadline));
    }
}

hd_status_t hd_net_wait_all(hd_net_h net, hd_net_req_h *reqs, int n, int timeout_ms)
{
    int64_t deadline = hd_net_deadline(timeout_ms);
    hd_status_t first_err = HD_OK;
    for (int i = 0; i < n; i++) {
        if (reqs[i] == NULL) {
            continue;
        }
        int left = deadline < 0 ? -1 : hd_net_left_ms(deadline, 1 << 30);
        hd_status_t st = hd_net_wait(net, reqs[i], NULL, left);
        if (st == HD_ERR_TIMEOUT) {
            return st;
        }
        if (st != HD_OK && first_err == HD_OK) {
            first_err = st;
        }
    }
    return first_err;
}

void hd_net_req_free(hd_net_h net, hd_net_req_h req)
{
    if (req != NULL) {
        net->t->p2p->req_free(net->ctx, req);
    }
}

hd_status_t hd_net_send_sync(hd_net_h net, int peer, uint32_t tag, const void *buf, size_t len,
                             int timeout_ms)
{
    hd_net_req_h req;
    hd_status_t st = hd_net_send(net, peer, tag, buf, len, &req);
    if (st != HD_INPROGRESS) {
        return st;
    }
    st = hd_net_wait(net, req, NULL, timeout_ms);
    hd_net_req_free(net, req);
    return st;
}

hd_status_t hd_net_recv_sync(hd_net_h net, int peer, uint32_t tag, void *buf, size_t cap,
                             size_t *len_p, int timeout_ms)
{
    hd_net_req_h req;
    hd_status_t st = hd_net_recv(net, peer, tag, buf, cap, &req);
    if (st != HD_INPROGRESS) {
        return st;
    }
    st = hd_net_wait(net, req, len_p, timeout_ms);
    hd_net_req_free(net, req);
    return st;
}

/* ---- groups and collectives ---- */

hd_status_t hd_net_group_create(hd_net_h net, const int *ranks, int n, hd_net_group_h *grp_p)
{
    hd_status_t status;
    int me = -1;
    if (n < 1 || n > net->n_ranks) {
        hd_error(HD_SUBSYS_NET, "group of %d ranks in a world of %d", n, net->n_ranks);
        return HD_ERR_INVALID_PARAM;
    }
    uint32_t h = 2166136261u;
    for (int i = 0; i < n; i++) {
        if (ranks[i] < 0 || ranks[i] >= net->n_ranks) {
            hd_error(HD_SUBSYS_NET, "group member %d is not a rank of the world of %d", ranks[i],
                     net->n_ranks);
            return HD_ERR_INVALID_PARAM;
        }
        for (int j = 0; j < i; j++) {
            if (ranks[j] == ranks[i]) {
                hd_error(HD_SUBSYS_NET, "rank %d appears twice in a group", ranks[i]);
                return HD_ERR_INVALID_PARAM;
            }
        }
        if (ranks[i] == net->rank) {
            me = i;
        }
        h = (h ^ (uint32_t)ranks[i]) * 16777619u;
    }
    if (me < 0) {
        hd_error(HD_SUBSYS_NET, "rank %d is not a member of the group it creates", net->rank);
        return HD_ERR_INVALID_PARAM;
    }
    hd_net_group_h grp = hd_calloc(1, sizeof(*grp), "net group");
    if (grp == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    grp->ranks = hd_calloc((size_t)n, sizeof(*grp->ranks), "net group ranks");
    if (grp->ranks == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto err_free_grp;
    }
    memcpy(grp->ranks, ranks, sizeof(*ranks) * (size_t)n);
    grp->n = n;
    grp->me = me;
    grp->tag = HD_NET_TAG_USER_MAX + (h % (HD_NET_TAG_USER_MAX / 2));
    if (net->t->coll != NULL) {
        HD_CHECK_GOTO(net->t->coll->group_create(net->ctx, ranks, n, &grp->tgrp), status,
                      err_free_ranks);
    }
    *grp_p = grp;
    return HD_OK;

err_free_ranks:
    hd_free(grp->ranks);
err_free_grp:
    hd_free(grp);
    return status;
}

void hd_net_group_destroy(hd_net_h net, hd_net_group_h grp)
{
    if (grp == NULL) {
        return;
    }
    if (grp->tgrp != NULL) {
        net->t->coll->group_destroy(net->ctx, grp->tgrp);
    }
    hd_free(grp->ranks);
    hd_free(grp);
}

int hd_net_group_size(hd_net_group_h grp)
{
    return grp->n;
}

int hd_net_group_index(hd_net_group_h grp)
{
    return grp->me;
}

/* Cancel and free whatever is left in @reqs after a failed collective. */
static void net_reqs_drop(hd_net_h net, void **reqs, int n)
{
    for (int i = 0; i < n; i++) {
        if (reqs[i] != NULL) {
            net->t->p2p->req_free(net->ctx, reqs[i]);
            reqs[i] = NULL;
        }
    }
}

/* Blocks of at least this many bytes wait for the receiver's "posted" token on transports
 * that send everything eagerly (coll_rendezvous): an early block would otherwise be buffered
 * and copied once more on arrival, which costs ~1.5x on prefill-sized exchanges. */
#define NET_RNDV_BYTES (64u << 10)

/*
 * The p2p all-to-all: post every receive, then every send (zero-byte ones too, so a count
 * mismatch shows up as a wrong length instead of a hang), copy our own block, wait. With
 * coll_rendezvous, large blocks go out only after their receiver's zero-byte ready token
 * (both sides know every count, so both know which blocks are large).
 * Request slots: [0, n) data receives, [n, 2n) data sends, [2n, 3n) ready receives,
 * [3n, 4n) ready sends.
 */
static hd_status_t net_p2p_alltoallv(hd_net_h net, hd_net_group_h grp, const void *sendbuf,
                                     const size_t *scounts, const size_t *sdispls,
                                     void *recvbuf, const size_t *rcounts,
                                     const size_t *rdispls, int64_t deadline)
{
    int n = grp->n, me = grp->me;
    hd_status_t status = HD_OK;
    void *stack_reqs[4 * 16];
    size_t stack_lens[16];
    void **reqs = stack_reqs;
    size_t *lens = stack_lens;
    uint32_t rtag = grp->tag + HD_NET_TAG_USER_MAX / 2;
    bool rndv = net->t->coll_rendezvous;
    uint8_t token = 0;
    if (n > 16) {
        reqs = hd_calloc(4 * (size_t)n, sizeof(*reqs), "alltoallv reqs");
        lens = hd_calloc((size_t)n, sizeof(*lens), "alltoallv lens");
        if (reqs == NULL || lens == NULL) {
            status = HD_ERR_NO_MEMORY;
            goto out;
        }
    }
    for (int i = 0; i < 4 * n; i++) {
        reqs[i] = NULL;
    }
    for (int j = 0; j < n; j++) {
        lens[j] = (size_t)-1;
    }
    /* receives from the members after us first, so every pair posts in a consistent order */
    for (int k = 1; k < n && status == HD_OK; k++) {
        int j = (me + n - k) % n;
        status = net->t->p2p->recv(net->ctx, grp->ranks[j], grp->tag,
                                   (char *)recvbuf + rdispls[j], rcounts[j], &reqs[j]);
        status = status == HD_INPROGRESS ? HD_OK : status;
        if (status == HD_OK && rndv && rcounts[j] >= NET_RNDV_BYTES) {
            status = net->t->p2p->send(net->ctx, grp->ranks[j], rtag, &token, 0,
                                       &reqs[3 * n + j]);
            status = status == HD_INPROGRESS ? HD_OK : status;
        }
    }
    for (int k = 1; k < n && status == HD_OK; k++) {
        int j = (me + k) % n;
        if (rndv && scounts[j] >= NET_RNDV_BYTES) {
            status = net->t->p2p->recv(net->ctx, grp->ranks[j], rtag, &token, 0,
                                       &reqs[2 * n + j]);
        } else {
            status = net->t->p2p->send(net->ctx, grp->ranks[j], grp->tag,
                                       (const char *)sendbuf + sdispls[j], scounts[j],
                                       &reqs[n + j]);
        }
        status = status == HD_INPROGRESS ? HD_OK : status;
    }
    if (status == HD_OK) {
        if (scounts[me] != rcounts[me]) {
            hd_error(HD_SUBSYS_NET, "alltoallv: self block of %zu bytes into %zu", scounts[me],
                     rcounts[me]);
            status = HD_ERR_INVALID_PARAM;
        } else if (scounts[me] > 0) {
            memmove((char *)recvbuf + rdispls[me], (const char *)sendbuf + sdispls[me],
                    scounts[me]);
        }
    }
    net_spin_t spin = {hd_net_now_ms()};
    while (status == HD_OK) {
        int pending = 0;
        for (int i = 0; i < 4 * n && status == HD_OK; i++) {
            if (reqs[i] == NULL) {
                continue;
            }
            size_t len = 0;
            hd_status_t st = net->t->p2p->test(net->ctx, reqs[i], &len);
            if (st == HD_INPROGRESS) {
                pending++;
                continue;
            }
            net->t->p2p->req_free(net->ctx, reqs[i]);
            reqs[i] = NULL;
            if (st != HD_OK) {
                status = st;
                break;
            }
            if (i < n) {
                lens[i] = len;
            } else if (i >= 2 * n && i < 3 * n) {
                /* member j posted its receive: its large block can go */
                int j = i - 2 * n;
                st = net->t->p2p->send(net->ctx, grp->ranks[j], grp->tag,
                                       (const char *)sendbuf + sdispls[j], scounts[j],
                                       &reqs[n + j]);
                if (st == HD_INPROGRESS) {
                    pending++;
                } else if (st != HD_OK) {
                    status = st;
                }
            }
        }
        if (status != HD_OK || pending == 0) {
            break;
        }
        if (deadline >= 0 && hd_net_now_ms() >= deadline) {
            status = HD_ERR_TIMEOUT;
            break;
        }
        status = net_wait_step(net, &spin, deadline);
    }
    if (status == HD_OK) {
        for (int j = 0; j < n; j++) {
            if (j != me && lens[j] != rcounts[j]) {
                hd_error(HD_SUBSYS_NET,
                         "alltoallv: rank %d sent %zu bytes, rank %d expected %zu",
                         grp->ranks[j], lens[j], net->rank, rcounts[j]);
                status = HD_ERR_PROTO;
            }
        }
    } else if (status == HD_ERR_TIMEOUT) {
        hd_warn(HD_SUBSYS_NET, "%s: alltoallv over %d ranks timed out", net->t->info.name, n);
    }
    net_reqs_drop(net, reqs, 4 * n);
out:
    if (reqs != stack_reqs) {
        hd_free(reqs);
        hd_free(lens);
    }
    return status;
}

hd_status_t hd_net_alltoallv(hd_net_h net, hd_net_group_h grp, const void *sendbuf,
                             const size_t *send_counts, const size_t *send_displs,
                             void *recvbuf, const size_t *recv_counts,
                             const size_t *recv_displs, int timeout_ms)
{
    int64_t deadline = hd_net_deadline(timeout_ms);
    if (grp->tgrp != NULL && net->t->coll->alltoallv != NULL) {
        return net->t->coll->alltoallv(net->ctx, grp->tgrp, sendbuf, send_counts, send_displs,
                                       recvbuf, recv_counts, recv_displs, deadline);
    }
    return net_p2p_alltoallv(net, grp, sendbuf, send_counts, send_displs, recvbuf, recv_counts,
                             recv_displs, deadline);
}

/* Fixed-block all-to-all / allgather through the alltoallv path. */
static hd_status_t net_blocks(hd_net_h net, hd_net_group_h grp, const void *sendbuf,
                              void *recvbuf, size_t block, bool gather, int timeout_ms)
{
    int n = grp->n;
    size_t stack[4 * 16];
    size_t *c = stack;
    if (n > 16) {
        c = hd_calloc(4 * (size_t)n, sizeof(*c), "collective counts");
        if (c == NULL) {
            return HD_ERR_NO_MEMORY;
        }
    }
    size_t *sc = c, *sd = c + n, *rc = c + 2 * n, *rd = c + 3 * n;
    for (int j = 0; j < n; j++) {
        sc[j] = block;
        sd[j] = gather ? 0 : (size_t)j * block;
        rc[j] = block;
        rd[j] = (size_t)j * block;
    }
    hd_status_t st = hd_net_alltoallv(net, grp, sendbuf, sc, sd, recvbuf, rc, rd, timeout_ms);
    if (c != stack) {
        hd_free(c);
    }
    return st;
}

hd_status_t hd_net_alltoall(hd_net_h net, hd_net_group_h grp, const void *sendbuf,
                            void *recvbuf, size_t block, int timeout_ms)
{
    return net_blocks(net, grp, sendbuf, recvbuf, block, false, timeout_ms);
}

hd_status_t hd_net_allgather(hd_net_h net, hd_net_group_h grp, const void *sendbuf,
                             void *recvbuf, size_t block, int timeout_ms)
{
    if (grp->tgrp != NULL && net->t->coll->allgather != NULL) {
        return net->t->coll->allgather(net->ctx, grp->tgrp, sendbuf, recvbuf, block,
                                       hd_net_deadline(timeout_ms));
    }
    return net_blocks(net, grp, sendbuf, recvbuf, block, true, timeout_ms);
}

hd_status_t hd_net_barrier(hd_net_h net, hd_net_group_h grp, int timeout_ms)
{
    uint8_t one = 1;
    uint8_t stack[64];
    uint8_t *all = stack;
    if (grp->n > (int)sizeof(stack)) {
        all = hd_calloc((size_t)grp->n, 1, "barrier");
        if (all == NULL) {
            return HD_ERR_NO_MEMORY;
        }
    }
    hd_status_t st = hd_net_allgather(net, grp, &one, all, 1, timeout_ms);
    if (all != stack) {
        hd_free(all);
    }
    return st;
}

hd_status_t hd_net_raw_alltoallv(hd_net_h net, hd_net_group_h grp, const void *sendbuf,
                                 const size_t *send_counts, const size_t *send_displs,
                                 void *recvbuf, const size_t *recv_counts,
                                 const size_t *recv_displs, int timeout_ms)
{
    (void)timeout_ms;
    if (grp->tgrp == NULL || net->t->coll->raw_alltoallv == NULL) {
        return HD_ERR_UNSUPPORTED;
    }
    return net->t->coll->raw_alltoallv(net->ctx, grp->tgrp, sendbuf, send_counts, send_displs,
                                       recvbuf, recv_counts, recv_displs);
}
