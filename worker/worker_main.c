/*
 * worker_main.c - the hadal-worker process: one grid cell (stage, column) driven by the
 * coordinator over a TCP control connection (hadal/proto.h), with residual streams and the
 * row's MoE exchange on the data plane (hadal/net.h).
 *
 * Life of a worker: connect + Hello + Register (no address yet); an assignment Placement (no
 * address table) for epoch E makes it drop every sequence, load or keep its engine, open a
 * fresh data-plane context for its rank and answer with a Register carrying that address;
 * the full Placement (address table) makes it connect to its row and column neighbours and
 * report ready with a Heartbeat of epoch E. Then each StepBatch of epoch E runs: receive the
 * streams of (stage-1, column), hd_wexec_step, send streams to (stage+1, column) or, on the
 * last stage, the sampled tokens to the coordinator. A heartbeat thread reports liveness on
 * the same connection (one sender at a time). Any step failure is reported and leaves the
 * worker waiting for the next placement; a lost coordinator makes it rejoin (or exit).
 */
#define _GNU_SOURCE
#include "worker_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"
#include "hadal/net.h"
#include "hadal/proto.h"
#include "hadal/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WK_TAG_STREAM 1u   /* residual streams down a column */
#define WK_STREAM_HDR 16   /* u64 step id + i64 status of the sending stage */
#define WK_MAX_SENDS 16
#define WK_BUILD "hadal " "0.1.0"

typedef struct {
    hd_net_req_h req;
    uint8_t *buf;
} wk_send_t;

typedef struct {
    const hd_worker_params_t *p;
    int heartbeat_ms, data_timeout_ms, connect_timeout_ms, coord_timeout_ms;
    char name[160];
    /* control connection */
    int fd;
    pthread_mutex_t tx;        /* one sender on fd at a time; guards the hb_* fields */
    pthread_cond_t tx_cond;
    char local_host[64];       /* this end of the control connection */
    int64_t last_heard_ms;
    /* shared with the heartbeat thread (under tx) */
    uint64_t hb_seq, hb_epoch;
    int32_t hb_rank;
    uint32_t hb_running;
    uint64_t hb_kv_bytes;      /* KV state held by our sequences */
    uint64_t host_memory;      /* what Register reported; heartbeats send it minus KV */
    bool hb_stop;
    pthread_t hb_thread;
    /* placement */
    int rank, pp, ep, stage, column;
    int last_rank;             /* the cell of the previous session (asked for again), -1 */
    uint64_t epoch;
    char transport[32];
    bool placed;               /* assignment of the current epoch received, net open */
    bool ready;                /* connected: steps of the current epoch run */
    /* engine (kept across epochs while the cell does not change) */
    char eng_key[4400];
    hd_engine_h eng;
    hd_wxchg_h xchg;
    hd_wexec_h ex;
    int64_t Nd;                /* floats per token of the residual streams */
    /* data plane */
    hd_net_h net;
    int net_base;              /* net rank of grid rank 0 (1 under mpirun: rank 0 coordinates) */
    hd_net_group_h row;
    wk_send_t sends[WK_MAX_SENDS];
    int n_sends;
    /* step scratch */
    uint8_t *inbuf;
    size_t in_cap;
    int32_t *tok;
    hd_step_item_t *items;
    hd_req_id_t *rel;
    int cap_items, cap_rel, cap_tok, cap_res, cap_lp;
    hd_proto_item_result_t *res;
    hd_logprobs_t *lp;         /* [n_items] last stage: logprobs of sampled items */
} wk_t;

static int64_t wk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t wk_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- control connection ---- */

static hd_status_t wk_send(wk_t *w, const hd_proto_msg_t *m)
{
    hd_status_t st = HD_ERR_REMOTE;
    pthread_mutex_lock(&w->tx);
    if (w->fd >= 0) {
        st = hd_proto_fd_send(w->fd, m, 5000);
    }
    pthread_mutex_unlock(&w->tx);
    if (st != HD_OK) {
        hd_warn(HD_SUBSYS_CORE, "worker %s: sending %s to the coordinator: %s", w->name,
                hd_proto_type_name(m->type), hd_status_string(st));
    }
    return st;
}

static void wk_heartbeat_now(wk_t *w)
{
    hd_proto_msg_t m = {.type = HD_PROTO_HEARTBEAT};
    pthread_mutex_lock(&w->tx);
    m.heartbeat = (hd_proto_heartbeat_t){.rank = w->hb_rank, .seq = ++w->hb_seq,
                                         .time_ns = wk_now_ns(), .running = w->hb_running,
                                         .kv_free_bytes = w->host_memory > w->hb_kv_bytes
                                                              ? w->host_memory - w->hb_kv_bytes : 0, .epoch = w->hb_epoch};
    if (w->fd >= 0) {
        (void)hd_proto_fd_send(w->fd, &m, w->heartbeat_ms * 2 + 100);
    }
    pthread_mutex_unlock(&w->tx);
}

/* Heartbeats every heartbeat_ms, also while the main thread computes a long step. */
static void *wk_heartbeat_main(void *arg)
{
    wk_t *w = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&w->tx);
    while (!w->hb_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(w->heartbeat_ms % 1000) * 1000000L;
        ts.tv_sec += w->heartbeat_ms / 1000 + ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&w->tx_cond, &w->tx, &ts);
        if (w->hb_stop) {
            break;
        }
        pthread_mutex_unlock(&w->tx);
        wk_heartbeat_now(w);
        pthread_mutex_lock(&w->tx);
    }
    pthread_mutex_unlock(&w->tx);
    return NULL;
}

static void wk_hb_update(wk_t *w)
{
    pthread_mutex_lock(&w->tx);
    w->hb_epoch = w->ready ? w->epoch : 0;
    w->hb_rank = w->placed ? w->rank : -1;
    w->hb_running = w->ex ? (uint32_t)hd_wexec_n_seqs(w->ex) : 0;
    w->hb_kv_bytes = w->ex ? (uint64_t)hd_wexec_kv_bytes(w->ex) : 0;
    pthread_mutex_unlock(&w->tx);
}

static hd_status_t wk_register(wk_t *w, const hd_proto_addr_t *addr)
{
    hd_proto_msg_t m = {.type = HD_PROTO_REGISTER};
    uint64_t host = w->host_memory;
    m.reg = (hd_proto_register_t){
        .name = w->name, .n_addrs = addr ? 1 : 0, .addrs = addr, .device_memory = host,
        .host_memory = host, .device = "cpu", .caps = 0,
        .requested_rank = addr ? w->rank : w->p->requested_rank >= 0 ? w->p->requested_rank
                                                                     : w->last_rank};
    return wk_send(w, &m);
}

/* Connect to host:port and say hello, retrying until connect_timeout_ms. */
static hd_status_t wk_connect(wk_t *w)
{
    char host[256];
    const char *colon = strrchr(w->p->coordinator, ':');
    int64_t deadline = wk_now_ms() + w->connect_timeout_ms;
    bool warned = false;
    if (colon == NULL || colon == w->p->coordinator ||
        (size_t)(colon - w->p->coordinator) >= sizeof(host)) {
        hd_error(HD_SUBSYS_CORE, "coordinator address '%s' is not host:port", w->p->coordinator);
        return HD_ERR_INVALID_PARAM;
    }
    memcpy(host, w->p->coordinator, (size_t)(colon - w->p->coordinator));
    host[colon - w->p->coordinator] = '\0';
    for (;;) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
        int fd = -1;
        if (getaddrinfo(host, colon + 1, &hints, &ai) == 0) {
            fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
                close(fd);
                fd = -1;
            }
            freeaddrinfo(ai);
        }
        if (fd >= 0) {
            char err[256] = "";
            int one = 1;
            struct sockaddr_in sin;
            socklen_t sl = sizeof(sin);
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            if (getsockname(fd, (struct sockaddr *)&sin, &sl) == 0) {
                inet_ntop(AF_INET, &sin.sin_addr, w->local_host, sizeof(w->local_host));
            }
            hd_status_t st = hd_proto_handshake_client(fd, HD_PROTO_ROLE_WORKER, WK_BUILD, 5000,
                                                       err, sizeof(err));
            if (st == HD_OK) {
                pthread_mutex_lock(&w->tx);
                w->fd = fd;
                pthread_mutex_unlock(&w->tx);
                w->last_heard_ms = wk_now_ms();
                hd_info(HD_SUBSYS_CORE, "worker %s: joined coordinator %s", w->name,
                        w->p->coordinator);
                return wk_register(w, NULL);
            }
            close(fd);
            hd_error(HD_SUBSYS_CORE, "worker %s: coordinator %s: %s", w->name,
                     w->p->coordinator, err[0] ? err : hd_status_string(st));
            if (st == HD_ERR_PROTO) {
                return st;
            }
        } else if (!warned) {
            hd_info(HD_SUBSYS_CORE, "worker %s: waiting for coordinator %s", w->name,
                    w->p->coordinator);
            warned = true;
        }
        if (wk_now_ms() > deadline || (w->p->stop && *w->p->stop)) {
            hd_error(HD_SUBSYS_CORE, "worker %s: cannot reach coordinator %s", w->name,
                     w->p->coordinator);
            return HD_ERR_REMOTE;
        }
        usleep(100 * 1000);
    }
}

/* ---- data plane ---- */

static void wk_sends_drop(wk_t *w)
{
    for (int i = 0; i < w->n_sends; i++) {
        hd_net_req_free(w->net, w->sends[i].req);
        hd_free(w->sends[i].buf);
    }
    w->n_sends = 0;
}

/* Drop the epoch's connections; with @keep_ctx the context itself stays (mpi: creating one
 * is collective over the whole MPI world, coordinator included, so it is made once). */
static void wk_net_reset(wk_t *w, bool keep_ctx)
{
    wk_sends_drop(w);
    if (w->xchg != NULL) {
        hd_wxchg_set_group(w->xchg, NULL, NULL, w->data_timeout_ms);
    }
    if (w->net != NULL) {
        hd_net_group_destroy(w->net, w->row);
    }
    w->row = NULL;
    if (!keep_ctx) {
        hd_net_destroy(w->net);
        w->net = NULL;
    }
}

static void wk_net_close(wk_t *w)
{
    wk_net_reset(w, false);
}

/* Complete finished stream sends; with @wait, block for the oldest one. */
static hd_status_t wk_sends_progress(wk_t *w, bool wait)
{
    hd_status_t bad = HD_OK;
    int j = 0;
    for (int i = 0; i < w->n_sends; i++) {
        hd_status_t st = wait && i == 0 ? hd_net_wait(w->net, w->sends[i].req, NULL,
                                                      w->data_timeout_ms)
                                        : hd_net_test(w->net, w->sends[i].req, NULL);
        if (st == HD_INPROGRESS) {
            w->sends[j++] = w->sends[i];
            continue;
        }
        if (st != HD_OK) {
            hd_error(HD_SUBSYS_NET, "worker rank %d: streams to rank %d: %s", w->rank,
                     w->rank + w->ep, hd_status_string(st));
            bad = st;
        }
        hd_net_req_free(w->net, w->sends[i].req);
        hd_free(w->sends[i].buf);
    }
    w->n_sends = j;
    return bad;
}

/* Send @buf (taken over) to @peer without waiting for it to be read. */
static hd_status_t wk_send_streams(wk_t *w, int peer, uint8_t *buf, size_t len)
{
    hd_net_req_h req = NULL;
    hd_status_t st;
    if (w->n_sends == WK_MAX_SENDS) {
        st = wk_sends_progress(w, true);
        if (st != HD_OK || w->n_sends == WK_MAX_SENDS) {
            hd_free(buf);
            return st != HD_OK ? st : HD_ERR_TIMEOUT;
        }
    }
    st = hd_net_send(w->net, peer, WK_TAG_STREAM, buf, len, &req);
    if (st == HD_INPROGRESS) {
        w->sends[w->n_sends++] = (wk_send_t){req, buf};
        return HD_OK;
    }
    hd_free(buf);
    return st;
}

/* ---- placement ---- */

static void wk_engine_drop(wk_t *w)
{
    hd_wexec_destroy(w->ex);
    w->ex = NULL;
    hd_engine_destroy(w->eng);
    w->eng = NULL;
    hd_wxchg_destroy(w->xchg);
    w->xchg = NULL;
    w->eng_key[0] = '\0';
}

static hd_status_t wk_engine_load(wk_t *w, const hd_proto_placement_t *pl, char *err,
                                  size_t err_len)
{
    char key[sizeof(w->eng_key)], path[4200];
    hd_model_config_t cfg;
    hd_status_t st;
    uint8_t *mask = NULL;
    snprintf(key, sizeof(key), "%s|%d|%d|%d|%d|%d|%d|%d|%d|%d", pl->model_dir ? pl->model_dir : "",
             pl->layer_lo, pl->layer_hi, pl->expert_lo, pl->expert_hi, pl->n_experts, pl->ep,
             pl->numerics, (int)pl->load_mtp, pl->stage == pl->pp - 1);
    if (w->eng != NULL && strcmp(key, w->eng_key) == 0 && pl->n_experts == 0) {
        return HD_OK;
    }
    wk_engine_drop(w);
    if (pl->model_dir == NULL || pl->model_dir[0] == '\0') {
        snprintf(err, err_len, "placement names no model directory (presets need one)");
        return HD_ERR_INVALID_PARAM;
    }
    snprintf(path, sizeof(path), "%s/config.json", pl->model_dir);
    st = hd_config_load(path, &cfg, err, err_len);
    if (st != HD_OK) {
        return st;
    }
    hd_engine_params_t ep = {.model_path = pl->model_dir, .numerics = (hd_numerics_t)pl->numerics,
                             .n_threads = w->p->n_threads, .layer_lo = pl->layer_lo,
                             .layer_hi = pl->layer_hi, .load_mtp = pl->load_mtp,
                             .err = err, .err_len = err_len};
    if (pl->ep > 1) {
        int E = cfg.n_routed_experts;
        mask = hd_calloc((size_t)E, 1, "worker expert mask");
        if (mask == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        if (pl->n_experts > 0) {
            for (int i = 0; i < pl->n_experts; i++) {
                if (pl->experts[i] < (uint32_t)E) {
                    mask[pl->experts[i]] = 1;
                }
            }
        } else {
            for (int e = pl->expert_lo; e < pl->expert_hi && e < E; e++) {
                mask[e] = 1;
            }
        }
        st = hd_wxchg_create(pl->ep, E, cfg.n_experts_per_tok, cfg.dim, &w->xchg);
        if (st != HD_OK) {
            hd_free(mask);
            return st;
        }
        ep.expert_mask = mask;
        ep.moe_exchange = hd_wxchg_moe;
        ep.moe_user = w->xchg;
    }
    st = hd_engine_create(&ep, &w->eng);
    hd_free(mask);
    if (st != HD_OK) {
        hd_wxchg_destroy(w->xchg);
        w->xchg = NULL;
        return st;
    }
    if (w->xchg != NULL) {
        hd_wxchg_set_engine(w->xchg, w->eng);
    }
    w->Nd = (int64_t)cfg.hc_mult * cfg.dim;
    snprintf(w->eng_key, sizeof(w->eng_key), "%s", key);
    return HD_OK;
}

/* An assignment (no address table): a new epoch; reset, load, open the data plane. */
static hd_status_t wk_assign(wk_t *w, const hd_proto_placement_t *pl, char *err, size_t err_len)
{
    const void *blob;
    size_t blob_len;
    hd_status_t st;
    const char *tname = pl->transport && pl->transport[0] ? pl->transport : "tcp";
    bool keep = w->net != NULL && strcmp(tname, "mpi") == 0 &&
                strcmp(hd_net_name(w->net), "mpi") == 0;
    wk_net_reset(w, keep);
    w->ready = false;
    w->placed = false;
    hd_wexec_destroy(w->ex); /* every sequence of the old epoch is gone */
    w->ex = NULL;
    wk_hb_update(w);
    st = wk_engine_load(w, pl, err, err_len);
    if (st != HD_OK) {
        return st;
    }
    st = hd_wexec_create(w->eng, pl->stage, pl->column, &w->ex);
    if (st != HD_OK) {
        return st;
    }
    bool mpi = strcmp(tname, "mpi") == 0;
    hd_net_params_t np = {.transport = tname, .rank = mpi ? -1 : pl->rank,
                          .n_ranks = mpi ? 0 : pl->pp * pl->ep,
                          .bind_host = w->p->bind_host ? w->p->bind_host : w->local_host};
    if (!keep) {
        st = hd_net_create(&np, &w->net);
        if (st != HD_OK) {
            snprintf(err, err_len, "cannot open the %s data plane", np.transport);
            return st;
        }
    }
    /* mpi: grid rank r is MPI rank r + 1 (the coordinator is rank 0) */
    w->net_base = hd_net_rank(w->net) - pl->rank;
    if (w->net_base < 0 || hd_net_n_ranks(w->net) < w->net_base + pl->pp * pl->ep) {
        snprintf(err, err_len, "%s rank %d of %d cannot hold grid rank %d of %d", tname,
                 hd_net_rank(w->net), hd_net_n_ranks(w->net), pl->rank, pl->pp * pl->ep);
        return HD_ERR_INVALID_PARAM;
    }
    HD_CHECK(hd_net_address(w->net, &blob, &blob_len));
    w->rank = pl->rank;
    w->pp = pl->pp;
    w->ep = pl->ep;
    w->stage = pl->stage;
    w->column = pl->column;
    w->epoch = pl->epoch;
    snprintf(w->transport, sizeof(w->transport), "%s", hd_net_name(w->net));
    w->placed = true;
    hd_info(HD_SUBSYS_CORE, "worker %s: epoch %llu rank %d (stage %d column %d) layers [%d, %d)",
            w->name, (unsigned long long)pl->epoch, pl->rank, pl->stage, pl->column,
            pl->layer_lo, pl->layer_hi);
    hd_proto_addr_t addr = {.transport = w->transport, .blob = blob, .blob_len = blob_len};
    return wk_register(w, &addr);
}

static const hd_proto_addr_t *wk_peer_addr(const wk_t *w, const hd_proto_peer_t *q)
{
    for (int i = 0; i < q->n_addrs; i++) {
        if (q->addrs[i].transport && strcmp(q->addrs[i].transport, w->transport) == 0) {
            return &q->addrs[i];
        }
    }
    return NULL;
}

/* The address table: connect to the row and the column neighbours, then report ready. */
static hd_status_t wk_connect_peers(wk_t *w, const hd_proto_placement_t *pl, char *err,
                                    size_t err_len)
{
    hd_status_t st;
    if (!w->placed || pl->epoch != w->epoch || pl->rank != w->rank) {
        snprintf(err, err_len, "address table for epoch %llu rank %d, assigned epoch %llu rank %d",
                 (unsigned long long)pl->epoch, pl->rank, (unsigned long long)w->epoch, w->rank);
        return HD_ERR_PROTO;
    }
    for (int i = 0; i < pl->n_peers; i++) {
        const hd_proto_peer_t *q = &pl->peers[i];
        bool row = q->stage == w->stage, col = q->column == w->column &&
                                                (q->stage == w->stage - 1 || q->stage == w->stage + 1);
        if (q->rank == w->rank || (!row && !col)) {
            continue;
        }
        const hd_proto_addr_t *a = wk_peer_addr(w, q);
        if (a == NULL) {
            snprintf(err, err_len, "rank %d has no %s address", q->rank, w->transport);
            return HD_ERR_PROTO;
        }
        st = hd_net_connect(w->net, w->net_base + q->rank, a->blob, a->blob_len);
        if (st != HD_OK) {
            snprintf(err, err_len, "connecting to rank %d: %s", q->rank, hd_status_string(st));
            return st;
        }
    }
    st = hd_net_connect_wait(w->net, w->data_timeout_ms);
    if (st != HD_OK) {
        snprintf(err, err_len, "peers did not connect: %s", hd_status_string(st));
        return st;
    }
    if (w->ep > 1) {
        int ranks[w->ep];
        for (int j = 0; j < w->ep; j++) {
            ranks[j] = w->net_base + w->stage * w->ep + j;
        }
        st = hd_net_group_create(w->net, ranks, w->ep, &w->row);
        if (st != HD_OK) {
            snprintf(err, err_len, "row group: %s", hd_status_string(st));
            return st;
        }
        hd_wxchg_set_group(w->xchg, w->net, w->row, w->data_timeout_ms);
    }
    w->ready = true;
    wk_hb_update(w);
    wk_heartbeat_now(w);
    hd_info(HD_SUBSYS_CORE, "worker %s: rank %d ready for epoch %llu", w->name, w->rank,
            (unsigned long long)w->epoch);
    return HD_OK;
}

/* ---- steps ---- */

static hd_status_t wk_grow(void **p, int *cap, int need, size_t elem, const char *tag)
{
    if (need <= *cap) {
        return HD_OK;
    }
    int nc = need + need / 2 + 16;
    void *q = hd_realloc(*p, (size_t)nc * elem, tag);
    if (q == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    *p = q;
    *cap = nc;
    return HD_OK;
}

static hd_status_t wk_step_report(wk_t *w, const hd_proto_step_batch_t *sb, hd_status_t st,
                                  const char *why)
{
    hd_proto_msg_t m = {.type = HD_PROTO_STEP_RESULT};
    int n = 0;
    if (st == HD_OK) {
        for (int i = 0; i < sb->n_items; i++) {
            const hd_proto_step_item_t *it = &sb->items[i];
            if (it->column == w->column) {
                hd_proto_item_result_t *q = &w->res[n++];
                *q = (hd_proto_item_result_t){.seq_id = it->seq_id,
                                              .token = it->sample ? w->tok[i] : -1};
                if (it->sample && it->n_logprobs > 0) {
                    q->has_logprob = true;
                    q->logprob = w->lp[i].logprob;
                    q->n_top = w->lp[i].n_top;
                    q->top_ids = w->lp[i].top_ids;
                    q->top_logprobs = w->lp[i].top_logprobs;
                }
            }
        }
    }
    m.step_result = (hd_proto_step_result_t){.step_id = sb->step_id,
                                             .micro_batch = sb->micro_batch, .rank = w->rank,
                                             .error = st, .message = why, .n_items = n,
                                             .items = w->res};
    return wk_send(w, &m);
}

static hd_status_t wk_step(wk_t *w, const hd_proto_step_batch_t *sb)
{
    hd_status_t st;
    char why[256] = "";
    int n_rel = sb->n_release + sb->n_cancel;
    bool last = w->stage == w->pp - 1;
    uint8_t *obuf = NULL;
    const float *in = NULL;
    float *out = NULL;
    if (wk_grow((void **)&w->items, &w->cap_items, sb->n_items + 1, sizeof(*w->items),
                "worker step items") != HD_OK ||
        wk_grow((void **)&w->tok, &w->cap_tok, sb->n_items + 1, sizeof(*w->tok),
                "worker tokens") != HD_OK ||
        wk_grow((void **)&w->res, &w->cap_res, sb->n_items + 1, sizeof(*w->res),
                "worker results") != HD_OK ||
        wk_grow((void **)&w->lp, &w->cap_lp, sb->n_items + 1, sizeof(*w->lp),
                "worker logprobs") != HD_OK ||
        wk_grow((void **)&w->rel, &w->cap_rel, n_rel + 1, sizeof(*w->rel), "worker releases") !=
            HD_OK) {
        return HD_ERR_NO_MEMORY;
    }
    for (int i = 0; i < sb->n_items; i++) {
        const hd_proto_step_item_t *it = &sb->items[i];
        w->items[i] = (hd_step_item_t){.id = it->seq_id, .column = it->column,
                                       .tokens = it->tokens, .n_tokens = it->n_tokens,
                                       .pos = it->pos, .first = it->first, .sample = it->sample,
                                       .sampling = it->sampling,
                                       .logprobs = it->n_logprobs < HD_LOGPROBS_MAX + 1
                                                       ? it->n_logprobs : HD_LOGPROBS_MAX + 1};
        w->tok[i] = -1;
    }
    for (int i = 0; i < sb->n_release; i++) {
        w->rel[i] = sb->release[i];
    }
    for (int i = 0; i < sb->n_cancel; i++) {
        w->rel[sb->n_release + i] = sb->cancel[i];
    }
    hd_step_t step = {.step_id = sb->step_id, .n_items = sb->n_items, .items = w->items,
                      .n_release = n_rel, .release = w->rel};
    int64_t ntok = hd_wexec_step_tokens(w->ex, &step);
    size_t body = (size_t)ntok * (size_t)w->Nd * sizeof(float);
    if (w->stage > 0) {
        size_t len = 0;
        if (w->in_cap < WK_STREAM_HDR + body) {
            hd_free(w->inbuf);
            w->in_cap = WK_STREAM_HDR + body + body / 2;
            w->inbuf = hd_malloc(w->in_cap, "worker streams in");
            if (w->inbuf == NULL) {
                w->in_cap = 0;
                return HD_ERR_NO_MEMORY;
            }
        }
        st = hd_net_recv_sync(w->net, w->net_base + w->rank - w->ep, WK_TAG_STREAM, w->inbuf,
                              w->in_cap, &len, w->data_timeout_ms);
        if (st == HD_OK) {
            uint64_t sid;
            int64_t ust;
            memcpy(&sid, w->inbuf, 8);
            memcpy(&ust, w->inbuf + 8, 8);
            if (sid != sb->step_id) {
                snprintf(why, sizeof(why), "streams of step %llu arrived for step %llu",
                         (unsigned long long)sid, (unsigned long long)sb->step_id);
                st = HD_ERR_PROTO;
            } else if (ust != HD_OK) {
                snprintf(why, sizeof(why), "stage %d failed this step: %s", w->stage - 1,
                         hd_status_string((hd_status_t)ust));
                st = HD_ERR_REMOTE;
            } else if (len != WK_STREAM_HDR + body) {
                snprintf(why, sizeof(why), "%zu bytes of streams for %lld tokens", len,
                         (long long)ntok);
                st = HD_ERR_PROTO;
            }
        } else {
            snprintf(why, sizeof(why), "streams from rank %d: %s", w->rank - w->ep,
                     hd_status_string(st));
        }
        in = (const float *)(w->inbuf + WK_STREAM_HDR);
    } else {
        st = HD_OK;
    }
    if (!last) {
        obuf = hd_malloc(WK_STREAM_HDR + body + 1, "worker streams out");
        if (obuf == NULL && st == HD_OK) {
            st = HD_ERR_NO_MEMORY;
        }
        out = obuf ? (float *)(obuf + WK_STREAM_HDR) : NULL;
    }
    if (st == HD_OK) {
        st = hd_wexec_step_lp(w->ex, &step, in, out, w->tok, last ? w->lp : NULL);
        if (st != HD_OK) {
            snprintf(why, sizeof(why), "rank %d step %llu: %s", w->rank,
                     (unsigned long long)sb->step_id, hd_status_string(st));
        }
    }
    if (!last && obuf != NULL) {
        uint64_t sid = sb->step_id;
        int64_t ust = st;
        memcpy(obuf, &sid, 8);
        memcpy(obuf + 8, &ust, 8);
        hd_status_t s2 = wk_send_streams(w, w->net_base + w->rank + w->ep, obuf,
                                         WK_STREAM_HDR + (st == HD_OK ? body : 0));
        if (s2 != HD_OK && st == HD_OK) {
            st = s2;
            snprintf(why, sizeof(why), "streams to rank %d: %s", w->rank + w->ep,
                     hd_status_string(s2));
        }
    }
    if (last || st != HD_OK) {
        if (st != HD_OK) {
            hd_error(HD_SUBSYS_CORE, "worker rank %d: %s", w->rank, why);
        }
        (void)wk_step_report(w, sb, st, why);
    }
    if (sb->n_cancel > 0) {
        hd_proto_msg_t m = {.type = HD_PROTO_CANCEL_ACK};
        m.cancel_ack = (hd_proto_cancel_ack_t){.rank = w->rank, .n_seq_ids = sb->n_cancel,
                                               .seq_ids = sb->cancel};
        (void)wk_send(w, &m);
    }
    if (st != HD_OK) {
        w->ready = false; /* until the coordinator re-places the grid */
    }
    wk_hb_update(w);
    return st;
}

/* ---- session ---- */

static hd_status_t wk_session(wk_t *w)
{
    hd_proto_limits_t lim = {0};
    for (;;) {
        struct pollfd pfd = {w->fd, POLLIN, 0};
        char err[512] = "";
        if (w->p->stop && *w->p->stop) {
            return HD_OK;
        }
        int rc = poll(&pfd, 1, w->n_sends > 0 ? 1 : 50);
        if (w->n_sends > 0) {
            (void)wk_sends_progress(w, false);
        }
        if (w->net != NULL) {
            (void)hd_net_progress(w->net);
        }
        if (rc <= 0) {
            if (wk_now_ms() - w->last_heard_ms > w->coord_timeout_ms) {
                hd_warn(HD_SUBSYS_CORE, "worker %s: coordinator silent for %d ms", w->name,
                        w->coord_timeout_ms);
                return HD_ERR_REMOTE;
            }
            continue;
        }
        hd_proto_msg_t *m = NULL;
        hd_status_t st = hd_proto_fd_recv(w->fd, &lim, 10000, &m, err, sizeof(err));
        if (st == HD_ERR_UNSUPPORTED) {
            hd_warn(HD_SUBSYS_CORE, "worker %s: skipped a message of unknown type", w->name);
            continue;
        }
        if (st != HD_OK) {
            if (st == HD_ERR_PROTO) {
                hd_error(HD_SUBSYS_CORE, "worker %s: bad frame from the coordinator: %s",
                         w->name, err);
            } else {
                hd_warn(HD_SUBSYS_CORE, "worker %s: coordinator connection: %s", w->name,
                        hd_status_string(st));
            }
            return HD_ERR_REMOTE;
        }
        w->last_heard_ms = wk_now_ms();
        switch (m->type) {
        case HD_PROTO_PLACEMENT:
            st = m->placement.n_peers == 0 ? wk_assign(w, &m->placement, err, sizeof(err))
                                           : wk_connect_peers(w, &m->placement, err, sizeof(err));
            if (st != HD_OK) {
                hd_proto_msg_t e = {.type = HD_PROTO_ERROR};
                hd_error(HD_SUBSYS_CORE, "worker %s: placement epoch %llu: %s", w->name,
                         (unsigned long long)m->placement.epoch, err);
                e.error = (hd_proto_error_t){.code = st, .message = err};
                (void)wk_send(w, &e);
                w->ready = false;
                wk_hb_update(w);
            }
            break;
        case HD_PROTO_STEP_BATCH:
            if (w->ready && m->step_batch.epoch == w->epoch) {
                (void)wk_step(w, &m->step_batch);
            } else {
                hd_debug(HD_SUBSYS_CORE, "worker %s: step %llu of epoch %llu ignored", w->name,
                         (unsigned long long)m->step_batch.step_id,
                         (unsigned long long)m->step_batch.epoch);
            }
            break;
        case HD_PROTO_DRAIN:
            if (m->drain.exit_after) {
                hd_proto_msg_t d = {.type = HD_PROTO_DRAIN};
                d.drain = (hd_proto_drain_t){.done = true, .rank = w->placed ? w->rank : 0};
                pthread_mutex_lock(&w->tx); /* best effort: the coordinator may be gone */
                (void)hd_proto_fd_send(w->fd, &d, 1000);
                pthread_mutex_unlock(&w->tx);
                hd_proto_msg_destroy(m);
                return HD_OK;
            }
            break;
        case HD_PROTO_ERROR:
            hd_warn(HD_SUBSYS_CORE, "worker %s: coordinator says: %s (%s)", w->name,
                    m->error.message ? m->error.message : "",
                    hd_status_string((hd_status_t)m->error.code));
            if (m->error.code == HD_ERR_PROTO || m->error.code == HD_ERR_INVALID_PARAM) {
                hd_proto_msg_destroy(m);
                return HD_ERR_PROTO;
            }
            if (m->error.code == HD_ERR_NOT_FOUND) { /* no free cell: stand by, ask again */
                hd_proto_msg_destroy(m);
                return HD_ERR_NOT_FOUND;
            }
            break;
        case HD_PROTO_HEARTBEAT:
            break;
        default:
            hd_warn(HD_SUBSYS_CORE, "worker %s: unexpected %s from the coordinator", w->name,
                    hd_proto_type_name(m->type));
            break;
        }
        hd_proto_msg_destroy(m);
    }
}

hd_status_t hd_worker_run(const hd_worker_params_t *p)
{
    wk_t *w = hd_calloc(1, sizeof(*w), "worker");
    hd_status_t st;
    char host[100] = "localhost";
    if (w == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    if (p->coordinator == NULL) {
        hd_free(w);
        return HD_ERR_INVALID_PARAM;
    }
    w->p = p;
    w->fd = -1;
    w->hb_rank = -1;
    w->last_rank = -1;
    w->heartbeat_ms = p->heartbeat_ms > 0 ? p->heartbeat_ms : 500;
    w->data_timeout_ms = p->data_timeout_ms > 0 ? p->data_timeout_ms : 10000;
    w->connect_timeout_ms = p->connect_timeout_ms > 0 ? p->connect_timeout_ms : 30000;
    w->coord_timeout_ms = p->coordinator_timeout_ms > 0 ? p->coordinator_timeout_ms : 15000;
    gethostname(host, sizeof(host) - 1);
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    w->host_memory = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 1;
    if (p->name != NULL) {
        snprintf(w->name, sizeof(w->name), "%s", p->name);
    } else {
        snprintf(w->name, sizeof(w->name), "%s:%d", host, (int)getpid());
    }
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&w->tx, NULL);
    pthread_cond_init(&w->tx_cond, NULL);
    if (pthread_create(&w->hb_thread, NULL, wk_heartbeat_main, w) != 0) {
        st = HD_ERR_NO_MEMORY;
        goto out_free;
    }
    for (;;) {
        st = wk_connect(w);
        if (st != HD_OK) {
            break;
        }
        st = wk_session(w);
        /* the coordinator is gone or done with us: nothing of this session survives */
        wk_net_close(w);
        hd_wexec_destroy(w->ex);
        w->ex = NULL;
        w->ready = false;
        if (w->placed) {
            w->last_rank = w->rank;
        }
        w->placed = false; /* heartbeats of the next session say -1 until placed */
        wk_hb_update(w);
        pthread_mutex_lock(&w->tx);
        close(w->fd);
        w->fd = -1;
        pthread_mutex_unlock(&w->tx);
        if (st == HD_ERR_NOT_FOUND && !p->exit_on_disconnect) {
            sleep(1); /* a spare: the grid is full, ask again later */
            continue;
        }
        if (st != HD_ERR_REMOTE || p->exit_on_disconnect || (p->stop && *p->stop)) {
            break;
        }
        hd_info(HD_SUBSYS_CORE, "worker %s: rejoining", w->name);
    }
    pthread_mutex_lock(&w->tx);
    w->hb_stop = true;
    pthread_cond_signal(&w->tx_cond);
    pthread_mutex_unlock(&w->tx);
    pthread_join(w->hb_thread, NULL);
out_free:
    wk_engine_drop(w);
    hd_free(w->inbuf);
    hd_free(w->tok);
    hd_free(w->items);
    hd_free(w->rel);
    hd_free(w->res);
    hd_free(w->lp);
    pthread_mutex_destroy(&w->tx);
    pthread_cond_destroy(&w->tx_cond);
    hd_free(w);
    return st;
}
