/*
 * tcp.c - the TCP transport: tagged messages over one stream socket per pair of ranks.
 * Always built; the unit tests' transport and the fallback when UCX is absent.
 *
 * Each context listens on bind_host:port. Of a pair, the higher rank connects and opens with
 * a 20-byte hello {magic, version, n_ranks, from, to}; the lower rank accepts it only when it
 * names this world and this rank and comes from a rank above us that is not connected yet
 * (anything else is an unknown worker: logged, closed). Messages are a 16-byte header
 * {magic, tag, u64 length} and the payload. Receives posted before a message arrives get the
 * payload straight into the user buffer; earlier arrivals are buffered (unexpected queue).
 * Everything is non-blocking and driven by tcp_progress() (one poll() over all sockets).
 */
#define _GNU_SOURCE /* accept4 */
#include "../net_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define TCP_MAGIC_HELLO 0x4e544448u /* "HDTN" little-endian */
#define TCP_MAGIC_MSG 0x4d534448u   /* "HDSM" */
#define TCP_VERSION 1u
#define TCP_HELLO_BYTES 20
#define TCP_HDR_BYTES 16
#define TCP_MAX_PENDING 64
#define TCP_PENDING_TIMEOUT_MS 10000
#define TCP_DEFAULT_MAX_MSG (1ull << 32)

typedef enum { TCP_REQ_SEND, TCP_REQ_RECV } tcp_req_kind_t;

typedef struct tcp_req {
    struct tcp_req *next;  /* in the peer's send or receive queue */
    tcp_req_kind_t kind;
    int peer;
    uint32_t tag;
    uint8_t *buf;          /* user buffer */
    size_t len;            /* send: bytes; recv: capacity */
    size_t done;           /* payload bytes moved so far */
    size_t msg_len;        /* recv: length of the matched message */
    uint8_t hdr[TCP_HDR_BYTES];
    size_t hdr_done;       /* send: header bytes written */
    hd_status_t status;    /* HD_INPROGRESS until complete */
    bool queued;           /* linked into a peer queue */
} tcp_req_t;

typedef struct tcp_umsg {
    struct tcp_umsg *next;
    uint32_t tag;
    size_t len;            /* payload bytes */
    size_t done;           /* received so far */
    uint8_t *data;         /* [len] */
    tcp_req_t *claim;      /* a receive posted while the payload was still arriving */
} tcp_umsg_t;

typedef enum {
    TCP_PEER_IDLE = 0,     /* no socket yet */
    TCP_PEER_CONNECTING,   /* non-blocking connect() in flight (we are the higher rank) */
    TCP_PEER_UP,           /* hello sent or accepted: messages flow */
    TCP_PEER_FAILED,       /* closed; requests fail with fail_status */
} tcp_peer_state_t;

typedef enum { TCP_RX_HDR, TCP_RX_BODY } tcp_rx_state_t;

typedef struct {
    tcp_peer_state_t state;
    hd_status_t fail_status;
    int fd;
    bool expected;          /* hd_net_connect() was called for it */
    uint8_t hello[TCP_HELLO_BYTES];
    size_t hello_done;      /* initiator: hello bytes written */
    tcp_req_t *sq_head, *sq_tail; /* sends in order */
    tcp_req_t *rq_head, *rq_tail; /* posted receives in order */
    tcp_umsg_t *uq_head, *uq_tail; /* unexpected messages in arrival order */
    tcp_rx_state_t rx_state;
    uint8_t rx_hdr[TCP_HDR_BYTES];
    size_t rx_hdr_done;
    size_t rx_len;          /* payload bytes of the message being received */
    size_t rx_done;
    tcp_req_t *rx_req;      /* destination: a posted receive ... */
    tcp_umsg_t *rx_umsg;    /* ... or an unexpected buffer, or neither: discard */
} tcp_peer_t;

typedef struct {
    int fd;
    uint8_t hello[TCP_HELLO_BYTES];
    size_t done;
    int64_t deadline;
} tcp_pending_t;

typedef struct {
    int rank;
    int n_ranks;
    int listen_fd;
    char blob[160];         /* "hdtcp1 <rank> <host> <port>" + NUL */
    size_t blob_len;
    uint64_t max_msg;
    tcp_peer_t *peers;      /* [n_ranks] */
    tcp_pending_t pend[TCP_MAX_PENDING];
    int n_pend;
    struct pollfd *pfds;    /* [n_ranks + TCP_MAX_PENDING + 1] scratch */
    int *pfd_owner;         /* peer rank, or -1 - pending index, or INT_MIN listen */
    uint64_t n_unexpected;  /* messages that arrived before their receive (buffered) */
    uint64_t unexpected_bytes;
    uint8_t scratch[65536]; /* payload of discarded messages */
} tcp_ctx_t;

static void tcp_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t tcp_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void tcp_put64(uint8_t *p, uint64_t v)
{
    tcp_put32(p, (uint32_t)v);
    tcp_put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t tcp_get64(const uint8_t *p)
{
    return (uint64_t)tcp_get32(p) | (uint64_t)tcp_get32(p + 4) << 32;
}

static void tcp_sock_tune(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* socket buffers stay autotuned: fixed 4 MiB buffers measured no faster on loopback */
}

/* ---- request queues ---- */

static void tcp_q_push(tcp_req_t **head, tcp_req_t **tail, tcp_req_t *r)
{
    r->next = NULL;
    if (*tail != NULL) {
        (*tail)->next = r;
    } else {
        *head = r;
    }
    *tail = r;
    r->queued = true;
}

static bool tcp_q_remove(tcp_req_t **head, tcp_req_t **tail, tcp_req_t *r)
{
    tcp_req_t *prev = NULL;
    for (tcp_req_t *q = *head; q != NULL; prev = q, q = q->next) {
        if (q != r) {
            continue;
        }
        if (prev != NULL) {
            prev->next = q->next;
        } else {
            *head = q->next;
        }
        if (*tail == q) {
            *tail = prev;
        }
        r->next = NULL;
        r->queued = false;
        return true;
    }
    return false;
}

static void tcp_umsg_remove(tcp_peer_t *p, tcp_umsg_t *u)
{
    tcp_umsg_t *prev = NULL;
    for (tcp_umsg_t *q = p->uq_head; q != NULL; prev = q, q = q->next) {
        if (q != u) {
            continue;
        }
        if (prev != NULL) {
            prev->next = q->next;
        } else {
            p->uq_head = q->next;
        }
        if (p->uq_tail == q) {
            p->uq_tail = prev;
        }
        return;
    }
}

/* ---- failure ---- */

/* Close @peer's connection and fail everything pending on it with @status. Complete
 * unexpected messages stay receivable. */
static void tcp_peer_fail(tcp_ctx_t *c, int peer, hd_status_t status, const char *why)
{
    tcp_peer_t *p = &c->peers[peer];
    if (p->state == TCP_PEER_FAILED) {
        return;
    }
    hd_warn(HD_SUBSYS_NET, "tcp: rank %d: peer %d failed: %s", c->rank, peer, why);
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    p->state = TCP_PEER_FAILED;
    p->fail_status = status;
    while (p->sq_head != NULL) {
        tcp_req_t *r = p->sq_head;
        tcp_q_remove(&p->sq_head, &p->sq_tail, r);
        r->status = status;
    }
    while (p->rq_head != NULL) {
        tcp_req_t *r = p->rq_head;
        tcp_q_remove(&p->rq_head, &p->rq_tail, r);
        r->status = status;
    }
    if (p->rx_req != NULL) {
        p->rx_req->status = status;
        p->rx_req = NULL;
    }
    if (p->rx_umsg != NULL) {
        if (p->rx_umsg->claim != NULL) {
            p->rx_umsg->claim->status = status;
        }
        tcp_umsg_remove(p, p->rx_umsg);
        hd_free(p->rx_umsg->data);
        hd_free(p->rx_umsg);
        p->rx_umsg = NULL;
    }
}

/* ---- send side ---- */

/* Write as much of @peer's send queue as the socket takes. */
static void tcp_peer_tx(tcp_ctx_t *c, int peer)
{
    tcp_peer_t *p = &c->peers[peer];
    if (p->state != TCP_PEER_UP) {
        return;
    }
    while (p->hello_done < TCP_HELLO_BYTES) {
        ssize_t n = send(p->fd, p->hello + p->hello_done, TCP_HELLO_BYTES - p->hello_done,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p->hello_done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        tcp_peer_fail(c, peer, HD_ERR_REMOTE, "connection lost while sending the hello");
        return;
    }
    while (p->sq_head != NULL) {
        tcp_req_t *r = p->sq_head;
        struct iovec iov[2];
        int niov = 0;
        if (r->hdr_done < TCP_HDR_BYTES) {
            iov[niov].iov_base = r->hdr + r->hdr_done;
            iov[niov].iov_len = TCP_HDR_BYTES - r->hdr_done;
            niov++;
        }
        if (r->done < r->len) {
            iov[niov].iov_base = r->buf + r->done;
            iov[niov].iov_len = r->len - r->done;
            niov++;
        }
        if (niov > 0) {
            struct msghdr mh = {0};
            mh.msg_iov = iov;
            mh.msg_iovlen = (size_t)niov;
            ssize_t n = sendmsg(p->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    return;
                }
                char why[96];
                snprintf(why, sizeof(why), "send: %s", strerror(errno));
                tcp_peer_fail(c, peer, HD_ERR_REMOTE, why);
                return;
            }
            size_t m = (size_t)n;
            size_t h = TCP_HDR_BYTES - r->hdr_done;
            if (m < h) {
                r->hdr_done += m;
                continue;
            }
            r->hdr_done = TCP_HDR_BYTES;
            r->done += m - h;
            if (r->done < r->len) {
                continue;
            }
        }
        tcp_q_remove(&p->sq_head, &p->sq_tail, r);
        r->status = HD_OK;
    }
}

/* ---- receive side ---- */

/* A complete message in @u meets its receive @r. */
static void tcp_umsg_deliver(tcp_umsg_t *u, tcp_req_t *r, int peer)
{
    r->msg_len = u->len;
    if (u->len > r->len) {
        hd_warn(HD_SUBSYS_NET, "tcp: message of %zu bytes (tag %u) from rank %d into a %zu byte buffer",
                u->len, u->tag, peer, r->len);
        r->status = HD_ERR_PROTO;
        return;
    }
    if (u->len > 0) {
        memcpy(r->buf, u->data, u->len);
    }
    r->done = u->len;
    r->status = HD_OK;
}

/* A message header arrived: find where its payload goes. */
static hd_status_t tcp_rx_header(tcp_ctx_t *c, int peer)
{
    tcp_peer_t *p = &c->peers[peer];
    uint32_t magic = tcp_get32(p->rx_hdr);
    uint32_t tag = tcp_get32(p->rx_hdr + 4);
    uint64_t len = tcp_get64(p->rx_hdr + 8);
    char why[128];
    if (magic != TCP_MAGIC_MSG) {
        snprintf(why, sizeof(why), "garbage on the wire (header magic 0x%08x)", magic);
        tcp_peer_fail(c, peer, HD_ERR_PROTO, why);
        return HD_ERR_PROTO;
    }
    if (len > c->max_msg) {
        snprintf(why, sizeof(why), "message of %llu bytes exceeds the %llu byte limit",
                 (unsigned long long)len, (unsigned long long)c->max_msg);
        tcp_peer_fail(c, peer, HD_ERR_PROTO, why);
        return HD_ERR_PROTO;
    }
    p->rx_len = (size_t)len;
    p->rx_done = 0;
    p->rx_req = NULL;
    p->rx_umsg = NULL;
    for (tcp_req_t *r = p->rq_head; r != NULL; r = r->next) {
        if (r->tag != tag) {
            continue;
        }
        tcp_q_remove(&p->rq_head, &p->rq_tail, r);
        r->msg_len = p->rx_len;
        if (p->rx_len > r->len) {
            hd_warn(HD_SUBSYS_NET,
                    "tcp: message of %zu bytes (tag %u) from rank %d into a %zu byte buffer",
                    p->rx_len, tag, peer, r->len);
            r->status = HD_ERR_PROTO; /* payload discarded, stream stays in sync */
        } else {
            p->rx_req = r;
        }
        return HD_OK;
    }
    tcp_umsg_t *u = hd_calloc(1, sizeof(*u), "tcp unexpected msg");
    if (u == NULL) {
        tcp_peer_fail(c, peer, HD_ERR_NO_MEMORY, "no memory for an unexpected message");
        return HD_ERR_NO_MEMORY;
    }
    u->tag = tag;
    u->len = p->rx_len;
    c->n_unexpected++;
    c->unexpected_bytes += u->len;
    u->data = hd_malloc(u->len > 0 ? u->len : 1, "tcp unexpected payload");
    if (u->data == NULL) {
        hd_free(u);
        tcp_peer_fail(c, peer, HD_ERR_NO_MEMORY, "no memory for an unexpected message");
        return HD_ERR_NO_MEMORY;
    }
    if (p->uq_tail != NULL) {
        p->uq_tail->next = u;
    } else {
        p->uq_head = u;
    }
    p->uq_tail = u;
    p->rx_umsg = u;
    return HD_OK;
}

static void tcp_rx_complete(tcp_ctx_t *c, int peer)
{
    tcp_peer_t *p = &c->peers[peer];
    if (p->rx_req != NULL) {
        p->rx_req->done = p->rx_len;
        p->rx_req->status = HD_OK;
    } else if (p->rx_umsg != NULL) {
        tcp_umsg_t *u = p->rx_umsg;
        u->done = u->len;
        if (u->claim != NULL) {
            tcp_umsg_deliver(u, u->claim, peer);
            tcp_umsg_remove(p, u);
            hd_free(u->data);
            hd_free(u);
        }
    }
    p->rx_req = NULL;
    p->rx_umsg = NULL;
    p->rx_state = TCP_RX_HDR;
    p->rx_hdr_done = 0;
}

/* Read everything the socket has for @peer. */
static void tcp_peer_rx(tcp_ctx_t *c, int peer)
{
    tcp_peer_t *p = &c->peers[peer];
    while (p->state == TCP_PEER_UP) {
        uint8_t *dst;
        size_t want;
        if (p->rx_state == TCP_RX_HDR) {
            dst = p->rx_hdr + p->rx_hdr_done;
            want = TCP_HDR_BYTES - p->rx_hdr_done;
        } else if (p->rx_req != NULL) {
            dst = p->rx_req->buf + p->rx_done;
            want = p->rx_len - p->rx_done;
        } else if (p->rx_umsg != NULL) {
            dst = p->rx_umsg->data + p->rx_done;
            want = p->rx_len - p->rx_done;
        } else {
            dst = c->scratch;
            want = p->rx_len - p->rx_done;
            if (want > sizeof(c->scratch)) {
                want = sizeof(c->scratch);
            }
        }
        ssize_t n = want > 0 ? recv(p->fd, dst, want, MSG_DONTWAIT) : 0;
        if (want > 0 && n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                return;
            }
            char why[96];
            snprintf(why, sizeof(why), "%s", n == 0 ? "connection closed" : strerror(errno));
            tcp_peer_fail(c, peer, HD_ERR_REMOTE, why);
            return;
        }
        if (p->rx_state == TCP_RX_HDR) {
            p->rx_hdr_done += (size_t)n;
            if (p->rx_hdr_done < TCP_HDR_BYTES) {
                continue;
            }
            if (tcp_rx_header(c, peer) != HD_OK) {
                return;
            }
            p->rx_state = TCP_RX_BODY;
            if (p->rx_len == 0) {
                tcp_rx_complete(c, peer);
            }
            continue;
        }
        p->rx_done += (size_t)n;
        if (p->rx_umsg != NULL) {
            p->rx_umsg->done = p->rx_done;
        }
        if (p->rx_done == p->rx_len) {
            tcp_rx_complete(c, peer);
        }
    }
}

/* ---- connections ---- */

static void tcp_pending_drop(tcp_ctx_t *c, int i)
{
    close(c->pend[i].fd);
    c->pend[i] = c->pend[c->n_pend - 1];
    c->n_pend--;
}

/* Read an accepted socket's hello; admit it as a peer or refuse it. */
static void tcp_pending_rx(tcp_ctx_t *c, int i)
{
    tcp_pending_t *q = &c->pend[i];
    for (;;) {
        ssize_t n = recv(q->fd, q->hello + q->done, TCP_HELLO_BYTES - q->done, MSG_DONTWAIT);
        if (n > 0) {
            q->done += (size_t)n;
            if (q->done == TCP_HELLO_BYTES) {
                break;
            }
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        hd_warn(HD_SUBSYS_NET, "tcp: rank %d: incoming connection closed before its hello",
                c->rank);
        tcp_pending_drop(c, i);
        return;
    }
    uint32_t magic = tcp_get32(q->hello), version = tcp_get32(q->hello + 4);
    uint32_t n_ranks = tcp_get32(q->hello + 8), from = tcp_get32(q->hello + 12);
    uint32_t to = tcp_get32(q->hello + 16);
    const char *why = NULL;
    if (magic != TCP_MAGIC_HELLO) {
        why = "garbage instead of a hello";
    } else if (version != TCP_VERSION) {
        why = "different transport version";
    } else if (n_ranks != (uint32_t)c->n_ranks || to != (uint32_t)c->rank) {
        why = "hello for another world or rank";
    } else if (from >= (uint32_t)c->n_ranks || (int)from <= c->rank) {
        why = "unknown worker rank";
    } else if (c->peers[from].state != TCP_PEER_IDLE) {
        why = "rank already connected";
    }
    if (why != NULL) {
        hd_warn(HD_SUBSYS_NET,
                "tcp: rank %d: refused connection (%s: magic 0x%08x version %u world %u from %u "
                "to %u)",
                c->rank, why, magic, version, n_ranks, from, to);
        tcp_pending_drop(c, i);
        return;
    }
    tcp_peer_t *p = &c->peers[from];
    p->fd = q->fd;
    p->state = TCP_PEER_UP;
    p->hello_done = TCP_HELLO_BYTES; /* the acceptor sends no hello */
    c->pend[i] = c->pend[c->n_pend - 1];
    c->n_pend--;
    hd_debug(HD_SUBSYS_NET, "tcp: rank %d: peer %d connected", c->rank, (int)from);
    tcp_peer_tx(c, (int)from);
    tcp_peer_rx(c, (int)from);
}

static void tcp_accept(tcp_ctx_t *c)
{
    for (;;) {
        int fd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                hd_warn(HD_SUBSYS_NET, "tcp: accept: %m");
            }
            return;
        }
        if (c->n_pend == TCP_MAX_PENDING) {
            hd_warn(HD_SUBSYS_NET, "tcp: rank %d: %d connections without a hello; refusing",
                    c->rank, TCP_MAX_PENDING);
            close(fd);
            continue;
        }
        tcp_sock_tune(fd);
        c->pend[c->n_pend] = (tcp_pending_t){fd, {0}, 0, hd_net_now_ms() + TCP_PENDING_TIMEOUT_MS};
        c->n_pend++;
    }
}

/* A non-blocking connect() finished (POLLOUT): up, or failed. */
static void tcp_connect_done(tcp_ctx_t *c, int peer)
{
    tcp_peer_t *p = &c->peers[peer];
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        err = errno;
    }
    if (err != 0) {
        char why[96];
        snprintf(why, sizeof(why), "connect: %s", strerror(err));
        tcp_peer_fail(c, peer, HD_ERR_REMOTE, why);
        return;
    }
    p->state = TCP_PEER_UP;
    hd_debug(HD_SUBSYS_NET, "tcp: rank %d: connected to peer %d", c->rank, peer);
    tcp_peer_tx(c, peer);
}

/* ---- ops ---- */

static hd_status_t tcp_listen(tcp_ctx_t *c, const hd_net_params_t *params)
{
    const char *host = params->bind_host != NULL ? params->bind_host : "127.0.0.1";
    struct addrinfo hints = {0}, *ai = NULL;
    char port[16];
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(port, sizeof(port), "%d", params->bind_port);
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        hd_error(HD_SUBSYS_NET, "tcp: cannot resolve bind address %s: %s", host,
                 gai_strerror(rc));
        return HD_ERR_INVALID_PARAM;
    }
    struct sockaddr_in sin;
    memcpy(&sin, ai->ai_addr, sizeof(sin));
    freeaddrinfo(ai);
    c->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->listen_fd < 0) {
        hd_error(HD_SUBSYS_NET, "tcp: socket: %m");
        return HD_ERR_IO;
    }
    int one = 1;
    (void)setsockopt(c->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(c->listen_fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        listen(c->listen_fd, 128) < 0) {
        hd_error(HD_SUBSYS_NET, "tcp: listen on %s:%d: %m", host, params->bind_port);
        return HD_ERR_IO;
    }
    socklen_t sl = sizeof(sin);
    getsockname(c->listen_fd, (struct sockaddr *)&sin, &sl);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sin.sin_addr, ip, sizeof(ip));
    bool loopback = (ntohl(sin.sin_addr.s_addr) >> 24) == 127;
    char adv[96];
    snprintf(adv, sizeof(adv), "%s", ip);
    if (sin.sin_addr.s_addr == htonl(INADDR_ANY)) {
        /* peers need a name they can reach: our host name */
        if (gethostname(adv, sizeof(adv)) != 0) {
            snprintf(adv, sizeof(adv), "127.0.0.1");
        }
        adv[sizeof(adv) - 1] = '\0';
    }
    if (!loopback) {
        hd_warn(HD_SUBSYS_NET, "tcp: rank %d listens on the non-loopback address %s:%d",
                c->rank, ip, ntohs(sin.sin_port));
    }
    int n = snprintf(c->blob, sizeof(c->blob), "hdtcp1 %d %s %d", c->rank, adv,
                     ntohs(sin.sin_port));
    c->blob_len = (size_t)n + 1;
    return HD_OK;
}

static void tcp_cleanup(void *ctx);

static hd_status_t tcp_init(const hd_net_params_t *params, void **ctx_p)
{
    hd_status_t status;
    tcp_ctx_t *c = hd_calloc(1, sizeof(*c), "tcp context");
    if (c == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    c->rank = params->rank;
    c->n_ranks = params->n_ranks;
    c->listen_fd = -1;
    c->max_msg = params->max_msg_bytes ? params->max_msg_bytes : TCP_DEFAULT_MAX_MSG;
    c->peers = hd_calloc((size_t)c->n_ranks, sizeof(*c->peers), "tcp peers");
    size_t npfd = (size_t)c->n_ranks + TCP_MAX_PENDING + 1;
    c->pfds = hd_calloc(npfd, sizeof(*c->pfds), "tcp pollfds");
    c->pfd_owner = hd_calloc(npfd, sizeof(*c->pfd_owner), "tcp pollfd owners");
    if (c->peers == NULL || c->pfds == NULL || c->pfd_owner == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto err_cleanup;
    }
    for (int i = 0; i < c->n_ranks; i++) {
        c->peers[i].fd = -1;
    }
    HD_CHECK_GOTO(tcp_listen(c, params), status, err_cleanup);
    *ctx_p = c;
    return HD_OK;

err_cleanup:
    tcp_cleanup(c);
    return status;
}

static void tcp_cleanup(void *ctx)
{
    tcp_ctx_t *c = ctx;
    hd_debug(HD_SUBSYS_NET, "tcp: rank %d: %llu messages (%llu bytes) arrived before their receive",
             c->rank, (unsigned long long)c->n_unexpected,
             (unsigned long long)c->unexpected_bytes);
    for (int i = 0; c->peers != NULL && i < c->n_ranks; i++) {
        tcp_peer_t *p = &c->peers[i];
        if (p->fd >= 0) {
            close(p->fd);
        }
        tcp_umsg_t *u = p->uq_head;
        while (u != NULL) {
            tcp_umsg_t *next = u->next;
            hd_free(u->data);
            hd_free(u);
            u = next;
        }
    }
    for (int i = 0; i < c->n_pend; i++) {
        close(c->pend[i].fd);
    }
    if (c->listen_fd >= 0) {
        close(c->listen_fd);
    }
    hd_free(c->peers);
    hd_free(c->pfds);
    hd_free(c->pfd_owner);
    hd_free(c);
}

static hd_status_t tcp_address(void *ctx, const void **blob_p, size_t *len_p)
{
    tcp_ctx_t *c = ctx;
    *blob_p = c->blob;
    *len_p = c->blob_len;
    return HD_OK;
}

static hd_status_t tcp_ep_connect(void *ctx, int peer, const void *blob, size_t len)
{
    tcp_ctx_t *c = ctx;
    tcp_peer_t *p = &c->peers[peer];
    char text[160], host[100];
    int rank, port;
    if (len == 0 || len > sizeof(text)) {
        hd_error(HD_SUBSYS_NET, "tcp: address blob of %zu bytes for rank %d", len, peer);
        return HD_ERR_INVALID_PARAM;
    }
    memcpy(text, blob, len);
    text[len - 1] = '\0';
    if (sscanf(text, "hdtcp1 %d %99s %d", &rank, host, &port) != 3 || rank != peer ||
        port <= 0 || port > 65535) {
        hd_error(HD_SUBSYS_NET, "tcp: address '%s' is not rank %d's", text, peer);
        return HD_ERR_INVALID_PARAM;
    }
    p->expected = true;
    if (peer < c->rank && p->state == TCP_PEER_IDLE) {
        /* we are the higher rank: we connect */
        struct addrinfo hints = {0}, *ai = NULL;
        char ps[16];
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        snprintf(ps, sizeof(ps), "%d", port);
        int rc = getaddrinfo(host, ps, &hints, &ai);
        if (rc != 0) {
            hd_error(HD_SUBSYS_NET, "tcp: cannot resolve rank %d's host %s: %s", peer, host,
                     gai_strerror(rc));
            return HD_ERR_IO;
        }
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            freeaddrinfo(ai);
            hd_error(HD_SUBSYS_NET, "tcp: socket: %m");
            return HD_ERR_IO;
        }
        tcp_sock_tune(fd);
        rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        freeaddrinfo(ai);
        tcp_put32(p->hello, TCP_MAGIC_HELLO);
        tcp_put32(p->hello + 4, TCP_VERSION);
        tcp_put32(p->hello + 8, (uint32_t)c->n_ranks);
        tcp_put32(p->hello + 12, (uint32_t)c->rank);
        tcp_put32(p->hello + 16, (uint32_t)peer);
        p->hello_done = 0;
        p->fd = fd;
        if (rc == 0) {
            p->state = TCP_PEER_UP;
            tcp_peer_tx(c, peer);
        } else if (errno == EINPROGRESS) {
            p->state = TCP_PEER_CONNECTING;
        } else {
            char why[256];
            snprintf(why, sizeof(why), "connect to %s:%d: %s", host, port, strerror(errno));
            tcp_peer_fail(c, peer, HD_ERR_REMOTE, why);
        }
    }
    return HD_OK;
}

static hd_status_t tcp_progress(void *ctx, int timeout_ms);

static hd_status_t tcp_ep_ready(void *ctx)
{
    tcp_ctx_t *c = ctx;
    hd_status_t st = HD_OK;
    for (int i = 0; i < c->n_ranks; i++) {
        tcp_peer_t *p = &c->peers[i];
        if (!p->expected) {
            continue;
        }
        if (p->state == TCP_PEER_FAILED) {
            return p->fail_status;
        }
        if (p->state != TCP_PEER_UP || p->hello_done < TCP_HELLO_BYTES) {
            st = HD_INPROGRESS;
        }
    }
    return st;
}

static hd_status_t tcp_send(void *ctx, int peer, uint32_t tag, const void *buf, size_t len,
                            void **req_p)
{
    tcp_ctx_t *c = ctx;
    tcp_peer_t *p = &c->peers[peer];
    if (p->state == TCP_PEER_FAILED) {
        return p->fail_status;
    }
    tcp_req_t *r = hd_calloc(1, sizeof(*r), "tcp send");
    if (r == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    r->kind = TCP_REQ_SEND;
    r->peer = peer;
    r->tag = tag;
    r->buf = (uint8_t *)buf;
    r->len = len;
    r->status = HD_INPROGRESS;
    tcp_put32(r->hdr, TCP_MAGIC_MSG);
    tcp_put32(r->hdr + 4, tag);
    tcp_put64(r->hdr + 8, len);
    bool was_empty = p->sq_head == NULL;
    tcp_q_push(&p->sq_head, &p->sq_tail, r);
    if (was_empty) {
        tcp_peer_tx(c, peer);
    }
    if (r->status == HD_OK) {
        hd_free(r);
        return HD_OK;
    }
    if (r->status != HD_INPROGRESS) {
        hd_status_t st = r->status;
        hd_free(r);
        return st;
    }
    *req_p = r;
    return HD_INPROGRESS;
}

static hd_status_t tcp_recv(void *ctx, int peer, uint32_t tag, void *buf, size_t cap,
                            void **req_p)
{
    tcp_ctx_t *c = ctx;
    tcp_peer_t *p = &c->peers[peer];
    tcp_req_t *r = hd_calloc(1, sizeof(*r), "tcp recv");
    if (r == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    r->kind = TCP_REQ_RECV;
    r->peer = peer;
    r->tag = tag;
    r->buf = buf;
    r->len = cap;
    r->status = HD_INPROGRESS;
    for (tcp_umsg_t *u = p->uq_head; u != NULL; u = u->next) {
        if (u->tag != tag || u->claim != NULL) {
            continue;
        }
        if (u == p->rx_umsg) {
            u->claim = r; /* still arriving: delivered when complete */
        } else {
            tcp_umsg_deliver(u, r, peer);
            tcp_umsg_remove(p, u);
            hd_free(u->data);
            hd_free(u);
        }
        *req_p = r;
        return HD_INPROGRESS;
    }
    if (p->state == TCP_PEER_FAILED) {
        hd_status_t st = p->fail_status;
        hd_free(r);
        return st;
    }
    tcp_q_push(&p->rq_head, &p->rq_tail, r);
    *req_p = r;
    return HD_INPROGRESS;
}

static hd_status_t tcp_test(void *ctx, void *req, size_t *len_p)
{
    tcp_req_t *r = req;
    (void)ctx;
    if (r->status == HD_OK && len_p != NULL) {
        *len_p = r->kind == TCP_REQ_RECV ? r->msg_len : r->len;
    }
    return r->status;
}

static void tcp_req_free(void *ctx, void *req)
{
    tcp_ctx_t *c = ctx;
    tcp_req_t *r = req;
    if (r->status == HD_INPROGRESS) {
        tcp_peer_t *p = &c->peers[r->peer];
        if (r->kind == TCP_REQ_RECV) {
            if (!tcp_q_remove(&p->rq_head, &p->rq_tail, r)) {
                if (p->rx_req == r) {
                    p->rx_req = NULL; /* rest of the payload is discarded */
                }
                for (tcp_umsg_t *u = p->uq_head; u != NULL; u = u->next) {
                    if (u->claim == r) {
                        u->claim = NULL;
                    }
                }
            }
        } else if (r->hdr_done == 0) {
            tcp_q_remove(&p->sq_head, &p->sq_tail, r);
        } else {
            tcp_q_remove(&p->sq_head, &p->sq_tail, r);
            tcp_peer_fail(c, r->peer, HD_ERR_REMOTE, "a partly sent message was abandoned");
        }
    }
    hd_free(r);
}

static hd_status_t tcp_progress(void *ctx, int timeout_ms)
{
    tcp_ctx_t *c = ctx;
    int n = 0;
    c->pfds[n] = (struct pollfd){c->listen_fd, POLLIN, 0};
    c->pfd_owner[n++] = -1000000;
    int64_t now = hd_net_now_ms();
    for (int i = 0; i < c->n_pend; i++) {
        if (now > c->pend[i].deadline) {
            hd_warn(HD_SUBSYS_NET, "tcp: rank %d: incoming connection sent no hello in %d ms",
                    c->rank, TCP_PENDING_TIMEOUT_MS);
            tcp_pending_drop(c, i);
            i--;
            continue;
        }
    }
    for (int i = 0; i < c->n_pend; i++) {
        c->pfds[n] = (struct pollfd){c->pend[i].fd, POLLIN, 0};
        c->pfd_owner[n++] = -1 - i;
    }
    for (int i = 0; i < c->n_ranks; i++) {
        tcp_peer_t *p = &c->peers[i];
        if (p->fd < 0) {
            continue;
        }
        short ev = 0;
        if (p->state == TCP_PEER_CONNECTING) {
            ev = POLLOUT;
        } else if (p->state == TCP_PEER_UP) {
            ev = POLLIN;
            if (p->sq_head != NULL || p->hello_done < TCP_HELLO_BYTES) {
                ev |= POLLOUT;
            }
        }
        c->pfds[n] = (struct pollfd){p->fd, ev, 0};
        c->pfd_owner[n++] = i;
    }
    int rc = poll(c->pfds, (nfds_t)n, timeout_ms);
    if (rc < 0) {
        if (errno == EINTR) {
            return HD_INPROGRESS;
        }
        hd_error(HD_SUBSYS_NET, "tcp: poll: %m");
        return HD_ERR_IO;
    }
    if (rc == 0) {
        return HD_INPROGRESS;
    }
    /* peers first (their indices do not move), then pending (from the end), then accept */
    for (int k = n - 1; k >= 0; k--) {
        short re = c->pfds[k].revents;
        int owner = c->pfd_owner[k];
        if (re == 0) {
            continue;
        }
        if (owner >= 0) {
            tcp_peer_t *p = &c->peers[owner];
            if (p->state == TCP_PEER_CONNECTING) {
                tcp_connect_done(c, owner);
                continue;
            }
            if (p->state != TCP_PEER_UP) {
                continue;
            }
            if (re & (POLLIN | POLLERR | POLLHUP)) {
                tcp_peer_rx(c, owner);
            }
            if ((re & POLLOUT) && p->state == TCP_PEER_UP) {
                tcp_peer_tx(c, owner);
            }
        } else if (owner > -1000000) {
            tcp_pending_rx(c, -1 - owner);
        } else {
            tcp_accept(c);
        }
    }
    return HD_OK;
}

static hd_status_t tcp_peer_status(void *ctx, int peer)
{
    tcp_ctx_t *c = ctx;
    return c->peers[peer].state == TCP_PEER_FAILED ? c->peers[peer].fail_status : HD_OK;
}

static const hd_net_p2p_ops_t tcp_p2p_ops = {
    .init = tcp_init,
    .cleanup = tcp_cleanup,
    .world = NULL,
    .address = tcp_address,
    .ep_connect = tcp_ep_connect,
    .ep_ready = tcp_ep_ready,
    .send = tcp_send,
    .recv = tcp_recv,
    .test = tcp_test,
    .progress = tcp_progress,
    .req_free = tcp_req_free,
    .peer_status = tcp_peer_status,
};

static const hd_net_transport_t tcp_transport = {
    .info =
        {
            .name = "tcp",
            .caps = HD_NET_CAP_P2P | HD_NET_CAP_HOST_MEM | HD_NET_CAP_MULTI_NODE |
                    HD_NET_CAP_PEER_FAILURE,
            .max_msg_bytes = TCP_DEFAULT_MAX_MSG,
            .doc = "TCP sockets, host memory; tests and fallback",
        },
    .probe = NULL,
    .p2p = &tcp_p2p_ops,
    .coll = NULL,
    .coll_rendezvous = true,
};

const hd_net_transport_t *hd_net_tcp_transport(void)
{
    return &tcp_transport;
}
