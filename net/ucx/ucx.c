/*
 * ucx.c - the UCX transport: one UCP worker per context, the tag API for messages, host
 * memory (device memory comes with the CUDA backend: UCX moves it unchanged once buffers
 * live there). A rank's address blob is a small header {magic, rank, n_ranks} and the UCP
 * worker address; hd_net_connect() creates the endpoint with peer error handling, so a dead
 * peer fails its requests (HD_ERR_REMOTE) instead of hanging them.
 *
 * The 64-bit UCP tag carries the source rank in its high half and the user tag in its low
 * half, so a receive from (peer, tag) matches with a full mask; UCP keeps per-sender order.
 * Completion callbacks only record status; endpoints of failed peers are closed and their
 * pending receives cancelled in progress, never inside a callback.
 */
#include "../net_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <sched.h>
#include <string.h>
#include <ucp/api/ucp.h>

#define UCX_BLOB_MAGIC 0x58554448u /* "HDUX" */
#define UCX_BLOB_HDR 12

typedef enum { UCX_REQ_SEND, UCX_REQ_RECV } ucx_req_kind_t;

typedef struct ucx_ctx ucx_ctx_t;

typedef struct ucx_req {
    struct ucx_req *prev, *next; /* receives: in the peer's pending list */
    ucx_ctx_t *ctx;
    ucx_req_kind_t kind;
    int peer;
    void *ucp_req;     /* UCX request while pending, else NULL */
    hd_status_t status;
    size_t len;        /* send: bytes; recv: bytes received */
    bool orphan;       /* the user freed it while pending: the callback frees it */
    bool linked;
} ucx_req_t;

typedef struct {
    ucp_ep_h ep;
    bool failed;
    hd_status_t fail_status;
    bool reap;          /* failed in a callback: close ep and cancel receives in progress */
    ucx_req_t *recvs;   /* pending receives from this peer */
    ucx_ctx_t *ctx;
    int rank;
} ucx_peer_t;

struct ucx_ctx {
    int rank;
    int n_ranks;
    ucp_context_h context;
    ucp_worker_h worker;
    uint8_t *blob;      /* header + worker address */
    size_t blob_len;
    ucx_peer_t *peers;  /* [n_ranks] */
    bool need_reap;
    bool peer_failure;  /* endpoints in UCP_ERR_HANDLING_MODE_PEER */
};

static hd_status_t ucx_status(ucs_status_t s)
{
    switch (s) {
    case UCS_OK: return HD_OK;
    case UCS_INPROGRESS: return HD_INPROGRESS;
    case UCS_ERR_NO_MEMORY: return HD_ERR_NO_MEMORY;
    case UCS_ERR_MESSAGE_TRUNCATED: return HD_ERR_PROTO;
    case UCS_ERR_TIMED_OUT: return HD_ERR_TIMEOUT;
    case UCS_ERR_CANCELED: return HD_ERR_REMOTE;
    default: return HD_ERR_REMOTE; /* unreachable, connection reset, endpoint timeout... */
    }
}

static void ucx_put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static uint32_t ucx_get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void ucx_recv_unlink(ucx_req_t *r)
{
    if (!r->linked) {
        return;
    }
    ucx_peer_t *p = &r->ctx->peers[r->peer];
    if (r->prev != NULL) {
        r->prev->next = r->next;
    } else {
        p->recvs = r->next;
    }
    if (r->next != NULL) {
        r->next->prev = r->prev;
    }
    r->prev = r->next = NULL;
    r->linked = false;
}

/* ---- callbacks: record, never free UCX objects other than the request ---- */

static void ucx_complete(ucx_req_t *r, void *request, ucs_status_t status, size_t len)
{
    r->status = ucx_status(status);
    if (status == UCS_ERR_MESSAGE_TRUNCATED) {
        hd_warn(HD_SUBSYS_NET, "ucx: rank %d: message from rank %d longer than the %zu byte buffer",
                r->ctx->rank, r->peer, r->len);
    }
    if (r->kind == UCX_REQ_RECV) {
        r->len = len;
        ucx_recv_unlink(r);
    }
    if (request != NULL) {
        ucp_request_free(request);
    }
    r->ucp_req = NULL;
    if (r->orphan) {
        hd_free(r);
    }
}

static void ucx_send_cb(void *request, ucs_status_t status, void *user_data)
{
    ucx_req_t *r = user_data;
    ucx_complete(r, request, status, r->len);
}

static void ucx_recv_cb(void *request, ucs_status_t status, const ucp_tag_recv_info_t *info,
                        void *user_data)
{
    ucx_complete(user_data, request, status, status == UCS_OK ? info->length : 0);
}

static void ucx_err_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    ucx_peer_t *p = arg;
    (void)ep;
    if (!p->failed) {
        hd_warn(HD_SUBSYS_NET, "ucx: rank %d: peer %d failed: %s", p->ctx->rank, p->rank,
                ucs_status_string(status));
    }
    p->failed = true;
    p->fail_status = HD_ERR_REMOTE;
    p->reap = true;
    p->ctx->need_reap = true;
}

/* Close failed endpoints and cancel their pending receives (outside callbacks). */
static void ucx_reap(ucx_ctx_t *c)
{
    c->need_reap = false;
    for (int i = 0; i < c->n_ranks; i++) {
        ucx_peer_t *p = &c->peers[i];
        if (!p->reap) {
            continue;
        }
        p->reap = false;
        for (ucx_req_t *r = p->recvs; r != NULL; r = r->next) {
            if (r->ucp_req != NULL) {
                ucp_request_cancel(c->worker, r->ucp_req);
            }
        }
        if (p->ep != NULL) {
            ucp_request_param_t prm = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                       .flags = UCP_EP_CLOSE_FLAG_FORCE};
            void *req = ucp_ep_close_nbx(p->ep, &prm);
            if (UCS_PTR_IS_PTR(req)) {
                ucp_request_free(req); /* completes on its own during progress */
            }
            p->ep = NULL;
        }
    }
}

/* ---- ops ---- */

static void ucx_cleanup(void *ctx);

static hd_status_t ucx_init(const hd_net_params_t *params, void **ctx_p)
{
    hd_status_t status = HD_ERR_IO;
    ucs_status_t us;
    ucp_config_t *config = NULL;
    ucx_ctx_t *c = hd_calloc(1, sizeof(*c), "ucx context");
    if (c == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    c->rank = params->rank;
    c->n_ranks = params->n_ranks;
    c->peer_failure = (params->required_caps & HD_NET_CAP_PEER_FAILURE) != 0;
    c->peers = hd_calloc((size_t)c->n_ranks, sizeof(*c->peers), "ucx peers");
    if (c->peers == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto err_cleanup;
    }
    for (int i = 0; i < c->n_ranks; i++) {
        c->peers[i].ctx = c;
        c->peers[i].rank = i;
    }
    us = ucp_config_read(NULL, NULL, &config);
    if (us != UCS_OK) {
        hd_error(HD_SUBSYS_NET, "ucx: reading the UCX configuration: %s", ucs_status_string(us));
        goto err_cleanup;
    }
    ucp_params_t up = {0};
    up.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
    up.features = UCP_FEATURE_TAG;
    up.mt_workers_shared = 0;
    us = ucp_init(&up, config, &c->context);
    ucp_config_release(config);
    if (us != UCS_OK) {
        hd_error(HD_SUBSYS_NET, "ucx: ucp_init: %s", ucs_status_string(us));
        goto err_cleanup;
    }
    ucp_worker_params_t wp = {0};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    us = ucp_worker_create(c->context, &wp, &c->worker);
    if (us != UCS_OK) {
        hd_error(HD_SUBSYS_NET, "ucx: ucp_worker_create: %s", ucs_status_string(us));
        goto err_cleanup;
    }
    ucp_address_t *addr;
    size_t addr_len;
    us = ucp_worker_get_address(c->worker, &addr, &addr_len);
    if (us != UCS_OK) {
        hd_error(HD_SUBSYS_NET, "ucx: ucp_worker_get_address: %s", ucs_status_string(us));
        goto err_cleanup;
    }
    c->blob_len = UCX_BLOB_HDR + addr_len;
    c->blob = hd_malloc(c->blob_len, "ucx address blob");
    if (c->blob == NULL) {
        ucp_worker_release_address(c->worker, addr);
        status = HD_ERR_NO_MEMORY;
        goto err_cleanup;
    }
    ucx_put32(c->blob, UCX_BLOB_MAGIC);
    ucx_put32(c->blob + 4, (uint32_t)c->rank);
    ucx_put32(c->blob + 8, (uint32_t)c->n_ranks);
    memcpy(c->blob + UCX_BLOB_HDR, addr, addr_len);
    ucp_worker_release_address(c->worker, addr);
    *ctx_p = c;
    return HD_OK;

err_cleanup:
    ucx_cleanup(c);
    return status;
}

static void ucx_cleanup(void *ctx)
{
    ucx_ctx_t *c = ctx;
    if (c->worker != NULL) {
        void *closing[64];
        int n_closing = 0;
        for (int i = 0; c->peers != NULL && i < c->n_ranks; i++) {
            ucx_peer_t *p = &c->peers[i];
            for (ucx_req_t *r = p->recvs; r != NULL; r = r->next) {
                if (r->ucp_req != NULL) {
                    ucp_request_cancel(c->worker, r->ucp_req);
                }
            }
            if (p->ep == NULL) {
                continue;
            }
            ucp_request_param_t prm = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                       .flags = UCP_EP_CLOSE_FLAG_FORCE};
            void *req = ucp_ep_close_nbx(p->ep, &prm);
            if (UCS_PTR_IS_PTR(req)) {
                if (n_closing < 64) {
                    closing[n_closing++] = req;
                } else {
                    ucp_request_free(req);
                }
            }
            p->ep = NULL;
        }
        /* let the force-closes and cancellations complete, within a deadline */
        int64_t deadline = hd_net_now_ms() + 2000;
        for (int i = 0; i < n_closing; i++) {
            while (ucp_request_check_status(closing[i]) == UCS_INPROGRESS &&
                   hd_net_now_ms() < deadline) {
                ucp_worker_progress(c->worker);
            }
            ucp_request_free(closing[i]);
        }
        ucp_worker_progress(c->worker);
        ucp_worker_destroy(c->worker);
    }
    if (c->context != NULL) {
        ucp_cleanup(c->context);
    }
    hd_free(c->blob);
    hd_free(c->peers);
    hd_free(c);
}

static hd_status_t ucx_address(void *ctx, const void **blob_p, size_t *len_p)
{
    ucx_ctx_t *c = ctx;
    *blob_p = c->blob;
    *len_p = c->blob_len;
    return HD_OK;
}

static hd_status_t ucx_ep_connect(void *ctx, int peer, const void *blob, size_t len)
{
    ucx_ctx_t *c = ctx;
    ucx_peer_t *p = &c->peers[peer];
    const uint8_t *b = blob;
    if (len <= UCX_BLOB_HDR || ucx_get32(b) != UCX_BLOB_MAGIC ||
        ucx_get32(b + 4) != (uint32_t)peer || ucx_get32(b + 8) != (uint32_t)c->n_ranks) {
        hd_error(HD_SUBSYS_NET, "ucx: the %zu byte address blob is not rank %d's of a world of %d",
                 len, peer, c->n_ranks);
        return HD_ERR_INVALID_PARAM;
    }
    if (p->ep != NULL) {
        return HD_OK;
    }
    ucp_ep_params_t ep = {0};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = (const ucp_address_t *)(b + UCX_BLOB_HDR);
    /* peer mode rules out UCX 1.13's shared-memory transports ("no peer failure handler"):
     * only when the caller asked for it; otherwise errors still reach ucx_err_cb */
    ep.err_mode = c->peer_failure ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    ep.err_handler.cb = ucx_err_cb;
    ep.err_handler.arg = p;
    ucs_status_t us = ucp_ep_create(c->worker, &ep, &p->ep);
    if (us != UCS_OK) {
        hd_error(HD_SUBSYS_NET, "ucx: rank %d: endpoint to rank %d: %s", c->rank, peer,
                 ucs_status_string(us));
        p->ep = NULL;
        return HD_ERR_IO;
    }
    p->failed = false;
    return HD_OK;
}

static ucp_tag_t ucx_tag(int src, uint32_t tag)
{
    return (ucp_tag_t)(uint32_t)src << 32 | tag;
}

static hd_status_t ucx_send(void *ctx, int peer, uint32_t tag, const void *buf, size_t len,
                            void **req_p)
{
    ucx_ctx_t *c = ctx;
    ucx_peer_t *p = &c->peers[peer];
    if (p->failed) {
        return p->fail_status;
    }
    if (p->ep == NULL) {
        hd_error(HD_SUBSYS_NET, "ucx: rank %d: send to rank %d before hd_net_connect", c->rank,
                 peer);
        return HD_ERR_INVALID_PARAM;
    }
    ucx_req_t *r = hd_calloc(1, sizeof(*r), "ucx send");
    if (r == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    r->ctx = c;
    r->kind = UCX_REQ_SEND;
    r->peer = peer;
    r->len = len;
    r->status = HD_INPROGRESS;
    ucp_request_param_t prm = {0};
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    prm.cb.send = ucx_send_cb;
    prm.user_data = r;
    void *req = ucp_tag_send_nbx(p->ep, buf, len, ucx_tag(c->rank, tag), &prm);
    if (req == NULL) {
        hd_free(r);
        return HD_OK;
    }
    if (UCS_PTR_IS_ERR(req)) {
        hd_status_t st = ucx_status(UCS_PTR_STATUS(req));
        hd_warn(HD_SUBSYS_NET, "ucx: rank %d: send to rank %d: %s", c->rank, peer,
                ucs_status_string(UCS_PTR_STATUS(req)));
        hd_free(r);
        return st;
    }
    if (r->status == HD_INPROGRESS) {
        r->ucp_req = req;
    }
    *req_p = r;
    return HD_INPROGRESS;
}

static hd_status_t ucx_recv(void *ctx, int peer, uint32_t tag, void *buf, size_t cap,
                            void **req_p)
{
    ucx_ctx_t *c = ctx;
    ucx_peer_t *p = &c->peers[peer];
    if (p->failed) {
        return p->fail_status;
    }
    ucx_req_t *r = hd_calloc(1, sizeof(*r), "ucx recv");
    if (r == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    r->ctx = c;
    r->kind = UCX_REQ_RECV;
    r->peer = peer;
    r->len = cap;
    r->status = HD_INPROGRESS;
    ucp_request_param_t prm = {0};
    /* no immediate completion: UCX 1.13 does not report the length of one through
     * recv_info, so every receive completes through the callback */
    prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                       UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
    prm.cb.recv = ucx_recv_cb;
    prm.user_data = r;
    /* link first: the callback may run inside the call and unlinks */
    r->next = p->recvs;
    if (p->recvs != NULL) {
        p->recvs->prev = r;
    }
    p->recvs = r;
    r->linked = true;
    void *req = ucp_tag_recv_nbx(c->worker, buf, cap, ucx_tag(peer, tag), (ucp_tag_t)-1, &prm);
    if (UCS_PTR_IS_ERR(req)) {
        ucx_recv_unlink(r);
        r->status = ucx_status(UCS_PTR_STATUS(req));
        if (UCS_PTR_STATUS(req) == UCS_ERR_MESSAGE_TRUNCATED) {
            hd_warn(HD_SUBSYS_NET,
                    "ucx: rank %d: message from rank %d longer than the %zu byte buffer",
                    c->rank, peer, cap);
        }
    } else if (r->status == HD_INPROGRESS) {
        r->ucp_req = req;
    }
    *req_p = r;
    return HD_INPROGRESS;
}

static hd_status_t ucx_test(void *ctx, void *req, size_t *len_p)
{
    ucx_req_t *r = req;
    (void)ctx;
    if (r->status == HD_OK && len_p != NULL) {
        *len_p = r->len;
    }
    return r->status;
}

static hd_status_t ucx_progress(void *ctx, int timeout_ms)
{
    ucx_ctx_t *c = ctx;
    unsigned n = ucp_worker_progress(c->worker);
    if (c->need_reap) {
        ucx_reap(c);
    }
    if (n == 0 && timeout_ms > 0) {
        sched_yield(); /* busy-polling, but give the cores to peers on the same host */
    }
    return n > 0 ? HD_OK : HD_INPROGRESS;
}

static void ucx_req_free(void *ctx, void *req)
{
    ucx_ctx_t *c = ctx;
    ucx_req_t *r = req;
    if (r->status == HD_INPROGRESS && r->ucp_req != NULL) {
        r->orphan = true;
        if (r->kind == UCX_REQ_RECV) {
            ucp_request_cancel(c->worker, r->ucp_req);
        }
        return; /* the callback frees it */
    }
    hd_free(r);
}

static hd_status_t ucx_peer_status(void *ctx, int peer)
{
    ucx_ctx_t *c = ctx;
    return c->peers[peer].failed ? c->peers[peer].fail_status : HD_OK;
}

static const hd_net_p2p_ops_t ucx_p2p_ops = {
    .init = ucx_init,
    .cleanup = ucx_cleanup,
    .world = NULL,
    .address = ucx_address,
    .ep_connect = ucx_ep_connect,
    .ep_ready = NULL,
    .send = ucx_send,
    .recv = ucx_recv,
    .test = ucx_test,
    .progress = ucx_progress,
    .req_free = ucx_req_free,
    .peer_status = ucx_peer_status,
};

static const hd_net_transport_t ucx_transport = {
    .info =
        {
            .name = "ucx",
            .caps = HD_NET_CAP_P2P | HD_NET_CAP_HOST_MEM | HD_NET_CAP_MULTI_NODE |
                    HD_NET_CAP_PEER_FAILURE,
            .max_msg_bytes = 1ull << 40,
            .doc = "UCX UCP tag API (shm, tcp, verbs), host memory",
        },
    .probe = NULL,
    .p2p = &ucx_p2p_ops,
    .coll = NULL,
};

const hd_net_transport_t *hd_net_ucx_transport(void)
{
    return &ucx_transport;
}
