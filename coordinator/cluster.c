/*
 * cluster.c - the coordinator runtime. One thread owns a listening control port, one TCP
 * connection per worker (hadal/proto.h frames, read without blocking into per-connection
 * buffers), the scheduler (hadal/sched.h) and, when asked, the local worker processes it
 * starts and restarts. The API functions (thread-safe) take the same lock; request callbacks
 * are queued under it and delivered by the cluster thread after it let go (cl_deliver).
 *
 * Placement rounds. When every grid cell has a registered worker, a round starts: epoch++,
 * each worker gets an assignment Placement (its cell, layers, experts, model, transport; no
 * address table) and answers with a Register carrying its data-plane address; then every
 * worker gets the full Placement (address table), connects to its neighbours and reports a
 * Heartbeat of the new epoch: the grid serves. Any loss during serving or a round fails the
 * running requests (retryable), waits for the cell to be filled again and starts a new round.
 *
 * Steps. While serving and fewer than max_in_flight steps are out, the scheduler's next step
 * is encoded once and written to every worker; the last stage of each column answers with a
 * StepResult for the items of its column; when all columns have answered the step is done.
 * Requests whose callbacks run here see their tokens in order.
 */
#define _GNU_SOURCE
#include "hadal/cluster.h"
#include "hadal/alloc.h"
#include "hadal/gen.h"
#include "hadal/log.h"
#include "hadal/plan.h"
#include "hadal/proto.h"

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
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CL_BUILD "hadal 0.1.0"
#define CL_HELLO_TIMEOUT_MS 5000
#define CL_SEND_TIMEOUT_MS 2000
#define CL_MAX_FAILED_ROUNDS 3

typedef enum { CONN_HELLO = 0, CONN_WORKER, CONN_OTHER } conn_state_t;

typedef struct {
    int fd;
    conn_state_t state;
    int rank;                  /* grid cell, -1 until assigned */
    char name[128];
    char peer[64];             /* ip:port of the remote end */
    uint8_t *rbuf;
    size_t rlen, rcap;
    int64_t opened_ms, last_heard_ms;
    const char *dead;          /* set: drop at the next reap (static reason) */
    char dead_why[200];
    bool hung;                 /* dropped for silence: kill the local process too */
    int assigns_sent, assigns_answered;
    uint8_t *addr;             /* data-plane address of the current epoch */
    size_t addr_len;
    char addr_transport[32];
    uint64_t addr_epoch;
    uint64_t ready_epoch;
    uint64_t host_memory;      /* from its first Register */
    uint64_t kv_bytes;         /* host_memory - the heartbeat's kv_free_bytes */
    uint32_t running;
} cl_conn_t;

typedef struct {
    hd_step_t *step;
    int32_t *tokens;           /* [n_items] */
    hd_logprobs_t *lps;        /* [n_items] when some item wants logprobs, else NULL */
    bool *col_done;            /* [ep] */
    int cols_left;
    int64_t sent_ms;
} cl_flight_t;

typedef enum {
    GRID_WAITING = 0,          /* cells missing */
    GRID_ASSIGNING,            /* assignments out, collecting addresses */
    GRID_CONNECTING,           /* address table out, collecting ready heartbeats */
    GRID_SERVING,
    GRID_FAILED,               /* gave up: placements keep failing */
} cl_grid_state_t;

/* A request's callback as the submitter gave it: every request gets exactly one final call,
 * also those still queued when the cluster is destroyed. */
typedef struct cl_req {
    struct cl_req *prev, *next; /* live requests */
    struct hd_cluster *c;
    hd_req_id_t id;
    hd_sched_token_func_t fn;
    hd_sched_logprobs_func_t lpfn;
    void *user;
    bool shutdown;             /* a cancellation at destroy: report it as an error */
} cl_req_t;

/* A callback to deliver: collected under the lock, delivered by the cluster thread without
 * it, so callbacks never run inside the cluster's lock (no lock-order trouble for callers
 * that hold their own lock while calling hd_cluster_submit). */
typedef struct {
    hd_sched_token_func_t fn;
    hd_sched_logprobs_func_t lpfn; /* set: a logprobs event (lp), else a token event */
    void *user;
    hd_req_id_t id;
    int32_t token;
    hd_finish_t finish;
    char *why;                 /* owned copy, or NULL */
    hd_logprobs_t lp;
} cl_event_t;

typedef struct {
    pid_t pid;
    int64_t restart_at_ms;     /* 0: no restart pending */
    int64_t started_ms;
    int backoff_ms;
} cl_local_t;

struct hd_cluster {
    hd_cluster_params_t p;     /* strings below are our copies */
    char *model_dir, *transport, *listen_host, *worker_exe, *worker_log_level;
    hd_model_config_t cfg;
    int n_ranks;
    int *layer_lo, *layer_hi; /* [pp]: the planner's stages, or the even split */
    char placement_how[256];
    pthread_mutex_t lock;      /* recursive: the out-of-memory path of cl_req_on_token calls
                                  back under it */
    pthread_cond_t ready_cond;
    pthread_t thread;
    bool stop;
    int wake_fd;               /* eventfd */
    int listen_fd, port;
    hd_sched_h sched;
    /* connections */
    cl_conn_t **conns;
    int n_conns, cap_conns;
    int *slot;                 /* [n_ranks] conn index, -1 = empty */
    cl_local_t *local;         /* [n_ranks] when worker_exe */
    /* grid */
    cl_grid_state_t state;
    uint64_t epoch;
    int64_t round_started_ms;
    int failed_rounds;
    char fail_why[512];
    hd_status_t fail_status;
    bool cols_down;
    /* steps in flight, oldest first */
    cl_flight_t *flight;       /* [max_in_flight] ring */
    int fl_head, fl_n;
    uint64_t steps_done;
    uint64_t failures;
    uint64_t cancel_acks_pending;
    hd_req_id_t *cancelled;    /* cancelled ids not yet released to workers */
    int n_cancelled, cap_cancelled;
    int64_t last_hb_ms;
    double cpu_seconds;
    cl_req_t live;             /* list head of requests without their final callback */
    cl_event_t *ev;            /* callbacks waiting for delivery, in order */
    int n_ev, cap_ev;
    /* encode scratch */
    hd_proto_step_item_t *pitems;
    int cap_pitems;
    uint64_t *prel, *pcan;
    int cap_prel;
};

static int64_t cl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void cl_wake(hd_cluster_h c)
{
    uint64_t one = 1;
    ssize_t n = write(c->wake_fd, &one, sizeof(one));
    (void)n;
}

static int cl_grow(void **arr, int *cap, int need, size_t elem, const char *tag)
{
    if (need <= *cap) {
        return 0;
    }
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need) {
        nc *= 2;
    }
    void *q = hd_realloc(*arr, (size_t)nc * elem, tag);
    if (q == NULL) {
        return -1;
    }
    *arr = q;
    *cap = nc;
    return 0;
}

/* Layers and experts of a cell: the stage ranges chosen at creation and the contiguous
 * expert ranges of hd_grid_expert_owner (worker.h), which the worker-side exchange assumes. */
static void cl_cell(const hd_cluster_h c, int rank, int *lo, int *hi, int *elo, int *ehi)
{
    int s = rank / c->p.ep, col = rank % c->p.ep, E = c->cfg.n_routed_experts;
    int per = (E + c->p.ep - 1) / c->p.ep;
    *lo = c->layer_lo[s];
    *hi = c->layer_hi[s];
    *elo = col * per < E ? col * per : E;
    *ehi = (col + 1) * per < E ? (col + 1) * per : E;
}

/*
 * Stage layer ranges: the planner's (hadal/plan.h: balanced by decode cost) for this host's
 * P x E CPU workers, unless asked for the even split or the planner refuses (then the even
 * split of hd_grid_layer_range, with a warning). Any split gives the same tokens.
 */
static hd_status_t cl_stages(hd_cluster_h c)
{
    int pp = c->p.pp;
    c->layer_lo = hd_calloc((size_t)pp, sizeof(int), "stage ranges");
    c->layer_hi = hd_calloc((size_t)pp, sizeof(int), "stage ranges");
    if (c->layer_lo == NULL || c->layer_hi == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    for (int s = 0; s < pp; s++) {
        c->layer_lo[s] = (int)((int64_t)s * c->cfg.n_layers / pp);
        c->layer_hi[s] = (int)((int64_t)(s + 1) * c->cfg.n_layers / pp);
    }
    snprintf(c->placement_how, sizeof(c->placement_how), "even split");
    if (c->p.even_split || pp == 1) {
        return HD_OK;
    }
    hd_cluster_t desc;
    hd_plan_t plan;
    char err[512] = "";
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    hd_cluster_init(&desc, HD_CLUSTER_CPU);
    desc.devs_per_node = c->n_ranks;
    desc.dev_mem = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz / (uint64_t)c->n_ranks
                                        : (uint64_t)1 << 34;
    desc.pp = pp;
    desc.ep = c->p.ep;
    if (hd_plan_make(&c->cfg, &desc, &plan, err, sizeof(err)) != HD_OK) {
        hd_warn(HD_SUBSYS_SCHED, "planner refused the %dx%d grid (%s); even layer split", pp,
                c->p.ep, err);
        return HD_OK;
    }
    for (int s = 0; s < pp; s++) {
        c->layer_lo[s] = plan.stages[s].layer_lo;
        c->layer_hi[s] = plan.stages[s].layer_hi;
    }
    int n = snprintf(c->placement_how, sizeof(c->placement_how), "planner (stage cost max "
                     "%.3g, mean %.3g):", plan.cost_max, plan.cost_mean);
    for (int st = 0; st < pp && n > 0 && (size_t)n < sizeof(c->placement_how); st++) {
        n += snprintf(c->placement_how + n, sizeof(c->placement_how) - (size_t)n, " [%d, %d)",
                      c->layer_lo[st], c->layer_hi[st]);
    }
    hd_plan_cleanup(&plan);
    return HD_OK;
}

/* ---- requests ---- */

/* The scheduler's callback (under the lock): queue the user's for delivery. */
static void cl_req_on_token(void *user, hd_req_id_t id, int32_t token, hd_finish_t finish,
                            const char *why)
{
    cl_req_t *r = user;
    hd_cluster_h c = r->c;
    if (finish == HD_FINISH_CANCELLED && r->shutdown) {
        finish = HD_FINISH_ERROR;
        why = "coordinator shutting down; the request may be retried";
    }
    if (r->fn != NULL) {
        cl_event_t e = {.fn = r->fn, .user = r->user, .id = id, .token = token,
                        .finish = finish, .why = why ? hd_strdup(why, "callback reason") : NULL};
        if (cl_grow((void **)&c->ev, &c->cap_ev, c->n_ev + 1, sizeof(*c->ev), "callbacks") == 0) {
            c->ev[c->n_ev++] = e;
        } else { /* out of memory: deliver now, under the lock, rather than lose it */
            r->fn(r->user, id, token, finish, why);
            hd_free(e.why);
        }
    }
    if (finish != HD_FINISH_NONE) {
        r->prev->next = r->next;
        r->next->prev = r->prev;
        hd_free(r);
    }
}

/* The scheduler's logprobs callback (under the lock): queued like the tokens, in order. */
static void cl_req_on_logprobs(void *user, hd_req_id_t id, const hd_logprobs_t *lp)
{
    cl_req_t *r = user;
    hd_cluster_h c = r->c;
    cl_event_t e = {.lpfn = r->lpfn, .user = r->user, .id = id, .lp = *lp};
    if (cl_grow((void **)&c->ev, &c->cap_ev, c->n_ev + 1, sizeof(*c->ev), "callbacks") == 0) {
        c->ev[c->n_ev++] = e;
    } else {
        r->lpfn(r->user, id, lp);
    }
}

/* Deliver queued callbacks without the lock (cluster thread only; called with it held). */
static void cl_deliver(hd_cluster_h c)
{
    while (c->n_ev > 0) {
        cl_event_t *ev = c->ev;
        int n = c->n_ev;
        c->ev = NULL;
        c->n_ev = c->cap_ev = 0;
        pthread_mutex_unlock(&c->lock);
        for (int i = 0; i < n; i++) {
            if (ev[i].lpfn != NULL) {
                ev[i].lpfn(ev[i].user, ev[i].id, &ev[i].lp);
            } else {
                ev[i].fn(ev[i].user, ev[i].id, ev[i].token, ev[i].finish, ev[i].why);
            }
            hd_free(ev[i].why);
        }
        hd_free(ev);
        pthread_mutex_lock(&c->lock);
    }
}

/* ---- connections ---- */

static void cl_conn_kill(cl_conn_t *k, const char *why, bool hung)
{
    if (k->dead == NULL) {
        snprintf(k->dead_why, sizeof(k->dead_why), "%s", why);
        k->dead = k->dead_why;
        k->hung = hung;
    }
}

/* Write a whole frame, waiting for the socket at most CL_SEND_TIMEOUT_MS. */
static hd_status_t cl_conn_write(cl_conn_t *k, const uint8_t *buf, size_t len)
{
    int64_t deadline = cl_now_ms() + CL_SEND_TIMEOUT_MS;
    if (k->dead) {
        return HD_ERR_REMOTE;
    }
    while (len > 0) {
        ssize_t n = send(k->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int left = (int)(deadline - cl_now_ms());
            struct pollfd pfd = {k->fd, POLLOUT, 0};
            if (left <= 0 || poll(&pfd, 1, left) <= 0) {
                cl_conn_kill(k, "control connection blocked (worker not reading)", true);
                return HD_ERR_TIMEOUT;
            }
            continue;
        }
        cl_conn_kill(k, "control connection closed", false);
        return HD_ERR_REMOTE;
    }
    return HD_OK;
}

static hd_status_t cl_conn_send(cl_conn_t *k, const hd_proto_msg_t *m)
{
    uint8_t *frame;
    size_t len;
    hd_status_t st = hd_proto_encode(m, &frame, &len);
    if (st != HD_OK) {
        hd_error(HD_SUBSYS_SCHED, "cannot encode %s: %s", hd_proto_type_name(m->type),
                 hd_status_string(st));
        return st;
    }
    st = cl_conn_write(k, frame, len);
    hd_free(frame);
    return st;
}

/* Tell a peer why we hang up, then mark it for closing. */
static void cl_conn_refuse(cl_conn_t *k, hd_status_t code, const char *why)
{
    hd_proto_msg_t m = {.type = HD_PROTO_ERROR};
    m.error = (hd_proto_error_t){.code = code, .message = why};
    hd_warn(HD_SUBSYS_SCHED, "connection %s (%s): %s; closing", k->peer,
            k->name[0] ? k->name : "no name", why);
    (void)cl_conn_send(k, &m);
    cl_conn_kill(k, why, false);
}

/* ---- grid failure and placement rounds ---- */

static void cl_flight_fail_all(hd_cluster_h c, const char *why)
{
    while (c->fl_n > 0) {
        cl_flight_t *f = &c->flight[c->fl_head];
        for (int i = 0; i < f->step->n_items; i++) {
            f->tokens[i] = HD_TOKEN_FAILED;
        }
        hd_sched_step_done(c->sched, f->step, f->tokens, why);
        hd_free(f->tokens);
        hd_free(f->lps);
        hd_free(f->col_done);
        memset(f, 0, sizeof(*f));
        c->fl_head = (c->fl_head + 1) % c->p.max_in_flight;
        c->fl_n--;
    }
}

/* The grid stops: running requests fail (retryable), waiting ones stay queued. */
static void cl_grid_fail(hd_cluster_h c, const char *why)
{
    char msg[600];
    snprintf(msg, sizeof(msg), "%s; the request may be retried", why);
    if (c->state == GRID_SERVING || c->fl_n > 0) {
        hd_warn(HD_SUBSYS_SCHED, "grid epoch %llu stops: %s", (unsigned long long)c->epoch, why);
    }
    cl_flight_fail_all(c, msg);
    for (int col = 0; col < c->p.ep; col++) {
        hd_sched_column_down(c->sched, col, msg);
    }
    c->cols_down = true;
    c->cancel_acks_pending = 0; /* a new epoch starts from empty workers */
    c->n_cancelled = 0;
    if (c->state != GRID_FAILED) {
        c->state = GRID_WAITING;
    }
}

static hd_status_t cl_send_placement(hd_cluster_h c, int rank, bool table)
{
    cl_conn_t *k = c->conns[c->slot[rank]];
    hd_proto_msg_t m = {.type = HD_PROTO_PLACEMENT};
    hd_proto_peer_t *peers = NULL;
    hd_proto_addr_t *addrs = NULL;
    int lo, hi, elo, ehi;
    cl_cell(c, rank, &lo, &hi, &elo, &ehi);
    m.placement = (hd_proto_placement_t){
        .rank = rank, .pp = c->p.pp, .ep = c->p.ep, .stage = rank / c->p.ep,
        .column = rank % c->p.ep, .layer_lo = lo, .layer_hi = hi, .expert_lo = elo,
        .expert_hi = ehi, .model_dir = c->model_dir, .numerics = c->p.numerics,
        .transport = c->transport, .epoch = c->epoch,
        .load_mtp = c->p.load_mtp && rank / c->p.ep == c->p.pp - 1};
    if (table) {
        peers = hd_calloc((size_t)c->n_ranks, sizeof(*peers), "placement peers");
        addrs = hd_calloc((size_t)c->n_ranks, sizeof(*addrs), "placement addresses");
        if (peers == NULL || addrs == NULL) {
            hd_free(peers);
            hd_free(addrs);
            return HD_ERR_NO_MEMORY;
        }
        for (int r = 0; r < c->n_ranks; r++) {
            cl_conn_t *q = c->conns[c->slot[r]];
            addrs[r] = (hd_proto_addr_t){q->addr_transport, q->addr, q->addr_len};
            peers[r] = (hd_proto_peer_t){r, r / c->p.ep, r % c->p.ep, 1, &addrs[r]};
        }
        m.placement.n_peers = c->n_ranks;
        m.placement.peers = peers;
    } else {
        k->assigns_sent++;
    }
    hd_status_t st = cl_conn_send(k, &m);
    hd_free(peers);
    hd_free(addrs);
    return st;
}

static bool cl_all_slots(hd_cluster_h c)
{
    for (int r = 0; r < c->n_ranks; r++) {
        if (c->slot[r] < 0 || c->conns[c->slot[r]]->dead) {
            return false;
        }
    }
    return true;
}

static void cl_round_start(hd_cluster_h c)
{
    c->epoch++;
    c->state = GRID_ASSIGNING;
    c->round_started_ms = cl_now_ms();
    hd_info(HD_SUBSYS_SCHED, "placing the %dx%d grid, epoch %llu", c->p.pp, c->p.ep,
            (unsigned long long)c->epoch);
    for (int r = 0; r < c->n_ranks; r++) {
        cl_conn_t *k = c->conns[c->slot[r]];
        k->ready_epoch = 0;
        k->addr_epoch = 0;
        (void)cl_send_placement(c, r, false);
    }
}

/* Advance the round when everything it waits for arrived. */
static void cl_round_advance(hd_cluster_h c)
{
    if (c->state == GRID_WAITING && cl_all_slots(c)) {
        cl_round_start(c);
    }
    if (c->state == GRID_ASSIGNING) {
        for (int r = 0; r < c->n_ranks; r++) {
            if (c->slot[r] < 0 || c->conns[c->slot[r]]->addr_epoch != c->epoch) {
                return;
            }
        }
        c->state = GRID_CONNECTING;
        for (int r = 0; r < c->n_ranks; r++) {
            (void)cl_send_placement(c, r, true);
        }
    }
    if (c->state == GRID_CONNECTING) {
        for (int r = 0; r < c->n_ranks; r++) {
            if (c->slot[r] < 0 || c->conns[c->slot[r]]->ready_epoch != c->epoch) {
                return;
            }
        }
        c->state = GRID_SERVING;
        c->failed_rounds = 0;
        if (c->cols_down) {
            for (int col = 0; col < c->p.ep; col++) {
                hd_sched_column_up(c->sched, col);
            }
            c->cols_down = false;
        }
        hd_info(HD_SUBSYS_SCHED, "grid %dx%d serving, epoch %llu", c->p.pp, c->p.ep,
                (unsigned long long)c->epoch);
        pthread_cond_broadcast(&c->ready_cond);
    }
}

/* A placement could not be carried out (worker error or round timeout). */
static void cl_round_failed(hd_cluster_h c, const char *why, hd_status_t st)
{
    cl_grid_fail(c, why);
    if (++c->failed_rounds >= CL_MAX_FAILED_ROUNDS) {
        hd_error(HD_SUBSYS_SCHED, "giving up after %d failed placements: %s", c->failed_rounds,
                 why);
        snprintf(c->fail_why, sizeof(c->fail_why), "%s", why);
        c->fail_status = st != HD_OK ? st : HD_ERR_REMOTE;
        c->state = GRID_FAILED;
        pthread_cond_broadcast(&c->ready_cond);
    }
}

/* ---- steps ---- */

static bool cl_is_cancelled(hd_cluster_h c, hd_req_id_t id, bool remove)
{
    for (int i = 0; i < c->n_cancelled; i++) {
        if (c->cancelled[i] == id) {
            if (remove) {
                c->cancelled[i] = c->cancelled[--c->n_cancelled];
            }
            return true;
        }
    }
    return false;
}

static hd_status_t cl_step_send(hd_cluster_h c, hd_step_t *st)
{
    hd_proto_msg_t m = {.type = HD_PROTO_STEP_BATCH};
    uint8_t *frame;
    size_t len;
    int n_rel = 0, n_can = 0;
    if (cl_grow((void **)&c->pitems, &c->cap_pitems, st->n_items + 1, sizeof(*c->pitems),
                "step items") != 0) {
        return HD_ERR_NO_MEMORY;
    }
    if (st->n_release + 1 > c->cap_prel) {
        int cap = st->n_release + 16;
        uint64_t *a = hd_realloc(c->prel, (size_t)cap * sizeof(*a), "step releases");
        if (a == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        c->prel = a;
        uint64_t *b = hd_realloc(c->pcan, (size_t)cap * sizeof(*b), "step cancels");
        if (b == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        c->pcan = b;
        c->cap_prel = cap;
    }
    for (int i = 0; i < st->n_items; i++) {
        const hd_step_item_t *it = &st->items[i];
        c->pitems[i] = (hd_proto_step_item_t){
            .seq_id = it->id, .column = it->column, .n_tokens = it->n_tokens,
            .tokens = it->tokens, .pos = it->pos, .first = it->first, .sample = it->sample,
            .sampling = it->sampling, .n_logprobs = it->logprobs};
    }
    for (int i = 0; i < st->n_release; i++) {
        if (cl_is_cancelled(c, st->release[i], true)) {
            c->pcan[n_can++] = st->release[i];
        } else {
            c->prel[n_rel++] = st->release[i];
        }
    }
    m.step_batch = (hd_proto_step_batch_t){
        .step_id = st->step_id, .micro_batch = (uint32_t)(st->step_id % (uint64_t)c->p.max_in_flight),
        .epoch = c->epoch, .n_items = st->n_items, .items = c->pitems, .n_release = n_rel,
        .release = c->prel, .n_cancel = n_can, .cancel = c->pcan};
    hd_status_t s = hd_proto_encode(&m, &frame, &len);
    if (s != HD_OK) {
        return s;
    }
    for (int r = 0; r < c->n_ranks; r++) {
        (void)cl_conn_write(c->conns[c->slot[r]], frame, len);
    }
    hd_free(frame);
    c->cancel_acks_pending += (uint64_t)n_can * (uint64_t)c->n_ranks;
    return HD_OK;
}

/* Keep up to max_in_flight steps out while serving. */
static void cl_pump(hd_cluster_h c)
{
    while (c->state == GRID_SERVING && c->fl_n < c->p.max_in_flight) {
        hd_step_t *st = NULL;
        hd_status_t s = hd_sched_next_step(c->sched, &st);
        if (s != HD_OK) {
            if (s != HD_ERR_NOT_FOUND) {
                hd_error(HD_SUBSYS_SCHED, "scheduler: %s", hd_status_string(s));
            }
            return;
        }
        cl_flight_t *f = &c->flight[(c->fl_head + c->fl_n) % c->p.max_in_flight];
        f->step = st;
        f->tokens = hd_calloc((size_t)st->n_items + 1, sizeof(*f->tokens), "step tokens");
        f->col_done = hd_calloc((size_t)c->p.ep, sizeof(*f->col_done), "step columns");
        f->cols_left = c->p.ep;
        bool want_lp = false;
        for (int i = 0; i < st->n_items; i++) {
            want_lp |= st->items[i].logprobs > 0 && st->items[i].sample;
        }
        f->lps = want_lp ? hd_calloc((size_t)st->n_items, sizeof(*f->lps), "step logprobs")
                         : NULL;
        f->sent_ms = cl_now_ms();
        c->fl_n++;
        if (f->tokens == NULL || f->col_done == NULL || (want_lp && f->lps == NULL)) {
            cl_grid_fail(c, "coordinator out of memory");
            return;
        }
        s = cl_step_send(c, st);
        if (s != HD_OK) {
            cl_grid_fail(c, "coordinator cannot encode a step");
            return;
        }
    }
}

/* Complete finished steps at the head of the flight ring, in order. */
static void cl_flight_retire(hd_cluster_h c)
{
    while (c->fl_n > 0 && c->flight[c->fl_head].cols_left == 0) {
        cl_flight_t *f = &c->flight[c->fl_head];
        hd_sched_step_done_lp(c->sched, f->step, f->tokens, f->lps, NULL);
        hd_free(f->tokens);
        hd_free(f->lps);
        hd_free(f->col_done);
        memset(f, 0, sizeof(*f));
        c->fl_head = (c->fl_head + 1) % c->p.max_in_flight;
        c->fl_n--;
        c->steps_done++;
    }
}

static void cl_on_step_result(hd_cluster_h c, cl_conn_t *k, const hd_proto_step_result_t *r)
{
    char why[400];
    cl_flight_t *f = NULL;
    int col = k->rank % c->p.ep;
    for (int i = 0; i < c->fl_n; i++) {
        cl_flight_t *g = &c->flight[(c->fl_head + i) % c->p.max_in_flight];
        if (g->step->step_id == r->step_id) {
            f = g;
        }
    }
    if (r->error != HD_OK) {
        snprintf(why, sizeof(why), "worker rank %d failed step %llu: %s", k->rank,
                 (unsigned long long)r->step_id,
                 r->message && r->message[0] ? r->message : hd_status_string(r->error));
        if (f != NULL && c->state == GRID_SERVING) {
            cl_grid_fail(c, why);
        }
        return;
    }
    if (f == NULL || c->state != GRID_SERVING) {
        return; /* a step of a failed epoch */
    }
    if (k->rank / c->p.ep != c->p.pp - 1 || f->col_done[col]) {
        snprintf(why, sizeof(why), "unexpected result of step %llu from rank %d",
                 (unsigned long long)r->step_id, k->rank);
        cl_conn_refuse(k, HD_ERR_PROTO, why);
        return;
    }
    int j = 0;
    for (int i = 0; i < f->step->n_items; i++) {
        const hd_step_item_t *it = &f->step->items[i];
        if (it->column != col) {
            continue;
        }
        if (j >= r->n_items || r->items[j].seq_id != it->id ||
            (it->sample && r->items[j].token < 0)) {
            snprintf(why, sizeof(why), "result of step %llu from rank %d does not match the step",
                     (unsigned long long)r->step_id, k->rank);
            cl_conn_refuse(k, HD_ERR_PROTO, why);
            return;
        }
        f->tokens[i] = it->sample ? r->items[j].token : 0;
        if (f->lps != NULL && it->sample && it->logprobs > 0) {
            const hd_proto_item_result_t *q = &r->items[j];
            if (!q->has_logprob || q->n_top > HD_LOGPROBS_MAX || q->n_top > it->logprobs - 1) {
                cl_conn_refuse(k, HD_ERR_PROTO, "step result without the logprobs asked for");
                return;
            }
            f->lps[i].logprob = q->logprob;
            f->lps[i].n_top = q->n_top;
            if (q->n_top > 0) { /* the decoder leaves the arrays NULL when empty */
                memcpy(f->lps[i].top_ids, q->top_ids, sizeof(int32_t) * (size_t)q->n_top);
                memcpy(f->lps[i].top_logprobs, q->top_logprobs,
                       sizeof(float) * (size_t)q->n_top);
            }
        }
        j++;
    }
    if (j != r->n_items) {
        cl_conn_refuse(k, HD_ERR_PROTO, "step result with extra items");
        return;
    }
    f->col_done[col] = true;
    f->cols_left--;
    cl_flight_retire(c);
}

/* ---- messages ---- */

static int cl_pick_rank(hd_cluster_h c, int want)
{
    if (want >= 0 && want < c->n_ranks && c->slot[want] < 0) {
        return want;
    }
    if (want >= 0 && c->local != NULL) {
        return -1; /* a local worker waits for its own cell */
    }
    for (int r = 0; r < c->n_ranks; r++) {
        if (c->slot[r] < 0 && (c->local == NULL || c->local[r].pid <= 0)) {
            return r;
        }
    }
    for (int r = 0; r < c->n_ranks; r++) {
        if (c->slot[r] < 0) {
            return r;
        }
    }
    return -1;
}

static void cl_on_register(hd_cluster_h c, int idx, cl_conn_t *k, const hd_proto_register_t *g)
{
    if (k->rank < 0) {
        int r = cl_pick_rank(c, g->requested_rank);
        snprintf(k->name, sizeof(k->name), "%s", g->name ? g->name : "");
        if (r < 0) {
            cl_conn_refuse(k, HD_ERR_NOT_FOUND, "no free grid cell for this worker");
            return;
        }
        k->rank = r;
        k->host_memory = g->host_memory;
        c->slot[r] = idx;
        hd_info(HD_SUBSYS_SCHED, "worker %s (%s) registered as rank %d (stage %d column %d)",
                k->name, k->peer, r, r / c->p.ep, r % c->p.ep);
        if (g->n_addrs > 0) {
            cl_conn_refuse(k, HD_ERR_PROTO, "address sent before an assignment");
        }
        return;
    }
    /* the answer to an assignment: the worker's data-plane address for that epoch */
    k->assigns_answered++;
    if (g->n_addrs < 1 || g->addrs[0].blob_len == 0 || g->addrs[0].blob_len > 4096) {
        cl_conn_refuse(k, HD_ERR_PROTO, "register without a data-plane address");
        return;
    }
    if (k->assigns_answered != k->assigns_sent || c->state != GRID_ASSIGNING) {
        return; /* answers an older round */
    }
    uint8_t *a = hd_malloc(g->addrs[0].blob_len, "worker address");
    if (a == NULL) {
        cl_conn_kill(k, "out of memory", false);
        return;
    }
    memcpy(a, g->addrs[0].blob, g->addrs[0].blob_len);
    hd_free(k->addr);
    k->addr = a;
    k->addr_len = g->addrs[0].blob_len;
    snprintf(k->addr_transport, sizeof(k->addr_transport), "%s",
             g->addrs[0].transport ? g->addrs[0].transport : "");
    k->addr_epoch = c->epoch;
}

static void cl_on_message(hd_cluster_h c, int idx, cl_conn_t *k, hd_proto_msg_t *m)
{
    char why[300];
    k->last_heard_ms = cl_now_ms();
    if (k->state == CONN_HELLO) {
        hd_proto_msg_t reply = {.type = HD_PROTO_HELLO_REPLY};
        char reason[256] = "";
        if (m->type != HD_PROTO_HELLO) {
            snprintf(why, sizeof(why), "first message is %s, not hello", hd_proto_type_name(m->type));
            cl_conn_refuse(k, HD_ERR_PROTO, why);
            return;
        }
        hd_proto_hello_reply_init(&reply.hello_reply, &m->hello, CL_BUILD, reason, sizeof(reason));
        (void)cl_conn_send(k, &reply);
        if (!reply.hello_reply.accepted) {
            hd_warn(HD_SUBSYS_SCHED, "connection %s refused: %s", k->peer, reason);
            cl_conn_kill(k, reason, false);
            return;
        }
        if (m->hello.role != HD_PROTO_ROLE_WORKER) {
            cl_conn_refuse(k, HD_ERR_UNSUPPORTED, "only workers talk to this port");
            return;
        }
        k->state = CONN_WORKER;
        return;
    }
    switch (m->type) {
    case HD_PROTO_REGISTER:
        cl_on_register(c, idx, k, &m->reg);
        return;
    case HD_PROTO_HEARTBEAT:
        if (k->rank < 0 && m->heartbeat.rank == -1) {
            return; /* alive, not registered yet (its Register is on the way) */
        }
        if (k->rank < 0 || (m->heartbeat.rank != -1 && m->heartbeat.rank != k->rank)) {
            snprintf(why, sizeof(why), "heartbeat of rank %d from a worker that is rank %d",
                     m->heartbeat.rank, k->rank);
            cl_conn_refuse(k, HD_ERR_PROTO, why);
            return;
        }
        k->kv_bytes = k->host_memory > m->heartbeat.kv_free_bytes
                          ? k->host_memory - m->heartbeat.kv_free_bytes : 0;
        k->running = m->heartbeat.running;
        if (m->heartbeat.epoch == c->epoch && c->state == GRID_CONNECTING) {
            k->ready_epoch = c->epoch;
        }
        return;
    case HD_PROTO_STEP_RESULT:
        if (k->rank < 0 || m->step_result.rank != k->rank) {
            snprintf(why, sizeof(why), "step result signed rank %d from a worker that is rank %d",
                     m->step_result.rank, k->rank);
            cl_conn_refuse(k, HD_ERR_PROTO, why);
            return;
        }
        cl_on_step_result(c, k, &m->step_result);
        return;
    case HD_PROTO_CANCEL_ACK:
        if (k->rank < 0 || m->cancel_ack.rank != k->rank) {
            cl_conn_refuse(k, HD_ERR_PROTO, "cancel ack from an unknown worker");
            return;
        }
        c->cancel_acks_pending -= (uint64_t)m->cancel_ack.n_seq_ids <= c->cancel_acks_pending
                                      ? (uint64_t)m->cancel_ack.n_seq_ids
                                      : c->cancel_acks_pending;
        return;
    case HD_PROTO_ERROR:
        snprintf(why, sizeof(why), "worker rank %d (%s): %s", k->rank, k->name,
                 m->error.message ? m->error.message : "error");
        hd_error(HD_SUBSYS_SCHED, "%s", why);
        if (k->rank >= 0 && c->state == GRID_ASSIGNING && k->assigns_answered < k->assigns_sent) {
            /* the assignment was refused (model, memory): three in a row and we give up */
            k->assigns_answered++;
            cl_round_failed(c, why, (hd_status_t)m->error.code);
        } else if (k->rank >= 0 && (c->state == GRID_CONNECTING || c->state == GRID_SERVING)) {
            cl_grid_fail(c, why); /* peers unreachable or a step failed: place again */
        }
        return;
    case HD_PROTO_DRAIN:
        return;
    default:
        snprintf(why, sizeof(why), "unexpected %s from a worker", hd_proto_type_name(m->type));
        cl_conn_refuse(k, HD_ERR_PROTO, why);
        return;
    }
}

/* Read what arrived and handle every complete frame. */
static void cl_conn_read(hd_cluster_h c, int idx)
{
    cl_conn_t *k = c->conns[idx];
    hd_proto_limits_t lim = {.n_ranks = c->n_ranks, .vocab = c->cfg.vocab_size};
    for (;;) {
        if (k->rcap - k->rlen < 4096) {
            size_t nc = k->rcap ? k->rcap * 2 : 16384;
            uint8_t *b = hd_realloc(k->rbuf, nc, "control read buffer");
            if (b == NULL) {
                cl_conn_kill(k, "out of memory", false);
                return;
            }
            k->rbuf = b;
            k->rcap = nc;
        }
        ssize_t n = recv(k->fd, k->rbuf + k->rlen, k->rcap - k->rlen, MSG_DONTWAIT);
        if (n > 0) {
            k->rlen += (size_t)n;
            if (k->rlen < k->rcap) {
                break;
            }
            continue;
        }
        if (n == 0) {
            cl_conn_kill(k, "connection closed", false);
            break;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            cl_conn_kill(k, "connection reset", false);
        }
        break;
    }
    size_t off = 0;
    while (!k->dead) {
        int type;
        size_t flen;
        char err[256] = "";
        hd_status_t st = hd_proto_frame_header(k->rbuf + off, k->rlen - off, 0, &type, &flen);
        if (st == HD_INPROGRESS || (st == HD_OK && k->rlen - off < flen)) {
            break;
        }
        hd_proto_msg_t *m = NULL;
        if (st == HD_OK) {
            st = hd_proto_decode(k->rbuf + off, flen, &lim, &m, err, sizeof(err));
        } else {
            snprintf(err, sizeof(err), "frame header announces more than the frame limit");
        }
        if (st == HD_ERR_UNSUPPORTED) {
            hd_warn(HD_SUBSYS_SCHED, "connection %s: skipped a frame of unknown type %d", k->peer,
                    type);
            off += flen;
            continue;
        }
        if (st != HD_OK) {
            char why[400];
            snprintf(why, sizeof(why), "bad frame: %s", err[0] ? err : hd_status_string(st));
            cl_conn_refuse(k, HD_ERR_PROTO, why);
            break;
        }
        off += flen;
        cl_on_message(c, idx, k, m);
        hd_proto_msg_destroy(m);
    }
    if (off > 0) {
        memmove(k->rbuf, k->rbuf + off, k->rlen - off);
        k->rlen -= off;
    }
}

static void cl_accept(hd_cluster_h c)
{
    for (;;) {
        struct sockaddr_in sin;
        socklen_t sl = sizeof(sin);
        int fd = accept4(c->listen_fd, (struct sockaddr *)&sin, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return;
        }
        cl_conn_t *k = hd_calloc(1, sizeof(*k), "control connection");
        if (k == NULL || cl_grow((void **)&c->conns, &c->cap_conns, c->n_conns + 1,
                                 sizeof(*c->conns), "connections") != 0) {
            hd_free(k);
            close(fd);
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        k->fd = fd;
        k->rank = -1;
        k->opened_ms = k->last_heard_ms = cl_now_ms();
        char ip[INET_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET, &sin.sin_addr, ip, sizeof(ip));
        snprintf(k->peer, sizeof(k->peer), "%s:%d", ip, ntohs(sin.sin_port));
        c->conns[c->n_conns++] = k;
    }
}

/* Close connections marked dead; a lost cell stops the grid. */
static void cl_reap(hd_cluster_h c)
{
    int j = 0;
    bool lost = false;
    char why[400] = "";
    for (int i = 0; i < c->n_conns; i++) {
        cl_conn_t *k = c->conns[i];
        if (k->dead == NULL) {
            if (k->rank >= 0) {
                c->slot[k->rank] = j;
            }
            c->conns[j++] = k;
            continue;
        }
        if (k->rank >= 0) {
            int r = k->rank;
            snprintf(why, sizeof(why), "worker rank %d (stage %d column %d, %s) lost: %s", r,
                     r / c->p.ep, r % c->p.ep, k->name, k->dead);
            hd_warn(HD_SUBSYS_SCHED, "%s", why);
            c->slot[r] = -1;
            c->failures++;
            lost = true;
            if (k->hung && c->local != NULL && c->local[r].pid > 0) {
                kill(c->local[r].pid, SIGKILL); /* hung: the supervisor restarts it */
            }
        }
        close(k->fd);
        hd_free(k->rbuf);
        hd_free(k->addr);
        hd_free(k);
    }
    c->n_conns = j;
    if (lost) {
        cl_grid_fail(c, why);
    }
}

/* ---- timers and local workers ---- */

static void cl_timers(hd_cluster_h c)
{
    int64_t now = cl_now_ms();
    char why[200];
    for (int i = 0; i < c->n_conns; i++) {
        cl_conn_t *k = c->conns[i];
        if (k->state == CONN_HELLO && now - k->opened_ms > CL_HELLO_TIMEOUT_MS) {
            cl_conn_refuse(k, HD_ERR_TIMEOUT, "no hello within 5 s");
        } else if (k->state == CONN_WORKER && now - k->last_heard_ms > c->p.worker_timeout_ms) {
            snprintf(why, sizeof(why), "no heartbeat for %lld ms (hung?)",
                     (long long)(now - k->last_heard_ms));
            cl_conn_kill(k, why, true);
        }
    }
    if (now - c->last_hb_ms >= c->p.heartbeat_ms) {
        hd_proto_msg_t m = {.type = HD_PROTO_HEARTBEAT};
        m.heartbeat = (hd_proto_heartbeat_t){.rank = -1, .time_ns = (uint64_t)now * 1000000ull,
                                             .epoch = c->epoch};
        for (int i = 0; i < c->n_conns; i++) {
            if (c->conns[i]->state == CONN_WORKER) {
                (void)cl_conn_send(c->conns[i], &m);
            }
        }
        c->last_hb_ms = now;
    }
    if (c->fl_n > 0 && now - c->flight[c->fl_head].sent_ms > c->p.step_timeout_ms) {
        snprintf(why, sizeof(why), "step %llu got no result within %d ms",
                 (unsigned long long)c->flight[c->fl_head].step->step_id, c->p.step_timeout_ms);
        cl_grid_fail(c, why);
    }
    if ((c->state == GRID_ASSIGNING || c->state == GRID_CONNECTING) &&
        now - c->round_started_ms > c->p.placement_timeout_ms) {
        snprintf(why, sizeof(why), "placement epoch %llu not done within %d ms",
                 (unsigned long long)c->epoch, c->p.placement_timeout_ms);
        for (int r = 0; r < c->n_ranks; r++) { /* whoever did not answer is stuck */
            cl_conn_t *k = c->slot[r] >= 0 ? c->conns[c->slot[r]] : NULL;
            if (k != NULL && k->addr_epoch != c->epoch && c->state == GRID_ASSIGNING) {
                cl_conn_kill(k, "did not answer its placement", true);
            } else if (k != NULL && k->ready_epoch != c->epoch && c->state == GRID_CONNECTING) {
                cl_conn_kill(k, "did not connect to its peers", true);
            }
        }
        cl_round_failed(c, why, HD_ERR_TIMEOUT);
    }
}

static void cl_spawn(hd_cluster_h c, int rank)
{
    char coord[64], rk[16], th[16], hb[16], to[16];
    int threads = c->p.worker_threads;
    if (threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > c->n_ranks ? (int)(cpus / c->n_ranks) : 1;
    }
    snprintf(coord, sizeof(coord), "%s:%d",
             strcmp(c->listen_host, "0.0.0.0") == 0 ? "127.0.0.1" : c->listen_host, c->port);
    snprintf(rk, sizeof(rk), "%d", rank);
    snprintf(th, sizeof(th), "%d", threads);
    snprintf(hb, sizeof(hb), "%d", c->p.heartbeat_ms);
    snprintf(to, sizeof(to), "%d", c->p.step_timeout_ms);
    char *argv[] = {c->worker_exe, "worker", "--coordinator", coord, "--rank", rk, "--threads",
                    th, "--heartbeat-ms", hb, "--data-timeout-ms", to, "--exit-on-disconnect",
                    NULL};
    char lvl[64];
    snprintf(lvl, sizeof(lvl), "HD_LOG_LEVEL=%s",
             c->worker_log_level ? c->worker_log_level : "");
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(1);
        }
        if (c->worker_log_level != NULL) {
            putenv(lvl);
        }
        execv(c->worker_exe, argv);
        _exit(127);
    }
    if (pid < 0) {
        hd_error(HD_SUBSYS_SCHED, "cannot start worker %d: %m", rank);
        c->local[rank].restart_at_ms = cl_now_ms() + 1000;
        return;
    }
    hd_info(HD_SUBSYS_SCHED, "started local worker rank %d, pid %d", rank, (int)pid);
    c->local[rank].pid = pid;
    c->local[rank].started_ms = cl_now_ms();
    c->local[rank].restart_at_ms = 0;
}

static void cl_supervise(hd_cluster_h c)
{
    int64_t now = cl_now_ms();
    for (int r = 0; c->local != NULL && r < c->n_ranks; r++) {
        cl_local_t *l = &c->local[r];
        int status;
        if (l->pid > 0 && waitpid(l->pid, &status, WNOHANG) == l->pid) {
            if (WIFSIGNALED(status)) {
                hd_warn(HD_SUBSYS_SCHED, "local worker rank %d (pid %d) killed by signal %d", r,
                        (int)l->pid, WTERMSIG(status));
            } else {
                hd_warn(HD_SUBSYS_SCHED, "local worker rank %d (pid %d) exited with %d", r,
                        (int)l->pid, WEXITSTATUS(status));
            }
            l->pid = 0;
            /* quick deaths back off: 100 ms doubling to 5 s */
            l->backoff_ms = now - l->started_ms < 5000
                                ? (l->backoff_ms ? (l->backoff_ms * 2 > 5000 ? 5000 : l->backoff_ms * 2) : 100)
                                : 100;
            l->restart_at_ms = c->p.no_restart ? 0 : now + l->backoff_ms;
        }
        if (l->pid <= 0 && l->restart_at_ms > 0 && now >= l->restart_at_ms &&
            c->state != GRID_FAILED) {
            cl_spawn(c, r);
        }
    }
}

/* ---- the cluster thread ---- */

static void *cl_main(void *arg)
{
    hd_cluster_h c = arg;
    struct pollfd *pfd = NULL;
    int cap_pfd = 0;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&c->lock);
    for (int r = 0; c->local != NULL && r < c->n_ranks; r++) {
        cl_spawn(c, r);
    }
    while (!c->stop) {
        if (cl_grow((void **)&pfd, &cap_pfd, c->n_conns + 2, sizeof(*pfd), "poll fds") != 0) {
            break;
        }
        int n = 0;
        pfd[n++] = (struct pollfd){c->wake_fd, POLLIN, 0};
        pfd[n++] = (struct pollfd){c->listen_fd, POLLIN, 0};
        for (int i = 0; i < c->n_conns; i++) {
            pfd[n++] = (struct pollfd){c->conns[i]->fd, POLLIN, 0};
        }
        int n_conns = c->n_conns;
        pthread_mutex_unlock(&c->lock);
        int rc = poll(pfd, (nfds_t)n, 50);
        pthread_mutex_lock(&c->lock);
        if (rc > 0 && (pfd[0].revents & POLLIN)) {
            uint64_t v;
            ssize_t got = read(c->wake_fd, &v, sizeof(v));
            (void)got;
        }
        if (rc > 0 && (pfd[1].revents & POLLIN)) {
            cl_accept(c);
        }
        for (int i = 0; rc > 0 && i < n_conns; i++) {
            if (pfd[2 + i].revents & (POLLIN | POLLHUP | POLLERR)) {
                cl_conn_read(c, i);
            }
        }
        cl_timers(c);
        cl_reap(c);
        cl_supervise(c);
        if (c->state != GRID_FAILED) {
            cl_round_advance(c);
        }
        cl_pump(c);
        cl_reap(c);
        cl_deliver(c);
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        c->cpu_seconds = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    /* shutdown: running requests end, workers are told to exit */
    cl_flight_fail_all(c, "coordinator shutting down");
    for (int col = 0; col < c->p.ep; col++) {
        hd_sched_column_down(c->sched, col, "coordinator shutting down");
    }
    while (c->live.next != &c->live) { /* still queued: a final callback each */
        cl_req_t *r = c->live.next;
        r->shutdown = true;
        if (hd_sched_cancel(c->sched, r->id) != HD_OK) {
            cl_req_on_token(r, r->id, -1, HD_FINISH_ERROR, "coordinator shutting down");
        }
    }
    hd_proto_msg_t d = {.type = HD_PROTO_DRAIN};
    d.drain = (hd_proto_drain_t){.reason = "coordinator shutting down", .exit_after = true};
    for (int i = 0; i < c->n_conns; i++) {
        if (c->conns[i]->state == CONN_WORKER) {
            (void)cl_conn_send(c->conns[i], &d);
        }
    }
    cl_deliver(c);
    pthread_mutex_unlock(&c->lock);
    hd_free(pfd);
    return NULL;
}

/* ---- API ---- */

static char *cl_strdup(const char *s)
{
    return s ? hd_strdup(s, "cluster string") : NULL;
}

static hd_status_t cl_listen(hd_cluster_h c, char *err, size_t err_len)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->p.listen_port)};
    if (inet_pton(AF_INET, c->listen_host, &sin.sin_addr) != 1) {
        snprintf(err, err_len, "listen address '%s' is not an IPv4 address", c->listen_host);
        return HD_ERR_INVALID_PARAM;
    }
    c->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (c->listen_fd < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        return HD_ERR_IO;
    }
    setsockopt(c->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(c->listen_fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        listen(c->listen_fd, 128) != 0) {
        snprintf(err, err_len, "listen on %s:%d: %s", c->listen_host, c->p.listen_port,
                 strerror(errno));
        return HD_ERR_IO;
    }
    socklen_t sl = sizeof(sin);
    getsockname(c->listen_fd, (struct sockaddr *)&sin, &sl);
    c->port = ntohs(sin.sin_port);
    if ((ntohl(sin.sin_addr.s_addr) >> 24) != 127) {
        hd_warn(HD_SUBSYS_SCHED, "control port listens on the non-loopback address %s:%d",
                c->listen_host, c->port);
    }
    return HD_OK;
}

/*
 * The checkpoint of a preset with random weights (seed 1), generated once into
 * cache_dir/<preset>-s1 (a temporary name renamed into place, so concurrent creators and the
 * workers never see half a model).
 */
static hd_status_t cl_preset_dir(const hd_cluster_params_t *p, char **dir_p, char *err,
                                 size_t err_len)
{
    hd_model_config_t cfg;
    char dir[4096], probe[4200], tmp[4200];
    struct stat sb;
    if (p->cache_dir == NULL) {
        snprintf(err, err_len, "preset %s needs a cache directory", p->preset);
        return HD_ERR_INVALID_PARAM;
    }
    if (hd_config_preset(p->preset, &cfg) != HD_OK) {
        snprintf(err, err_len, "unknown preset '%s'", p->preset);
        return HD_ERR_INVALID_PARAM;
    }
    snprintf(dir, sizeof(dir), "%s/%s-s1", p->cache_dir, p->preset);
    snprintf(probe, sizeof(probe), "%s/model.safetensors.index.json", dir);
    if (stat(probe, &sb) != 0) {
        hd_gen_params_t gp = {.seed = 1, .out_dir = tmp, .n_threads = 1};
        snprintf(tmp, sizeof(tmp), "%s.tmp%d", dir, (int)getpid());
        hd_info(HD_SUBSYS_SCHED, "generating preset %s (seed 1) into %s", p->preset, dir);
        hd_status_t st = hd_gen_model(&cfg, &gp, err, err_len);
        if (st != HD_OK) {
            return st;
        }
        if (rename(tmp, dir) != 0 && stat(probe, &sb) != 0) {
            snprintf(err, err_len, "cannot move the generated %s into place: %s", p->preset,
                     strerror(errno));
            return HD_ERR_IO;
        }
    }
    *dir_p = cl_strdup(dir);
    return *dir_p != NULL ? HD_OK : HD_ERR_NO_MEMORY;
}

static void cl_free(hd_cluster_h c)
{
    while (c->live.next != NULL && c->live.next != &c->live) {
        cl_req_t *r = c->live.next;
        c->live.next = r->next;
        hd_free(r);
    }
    for (int i = 0; i < c->n_ev; i++) {
        hd_free(c->ev[i].why);
    }
    hd_free(c->ev);
    if (c->listen_fd >= 0) {
        close(c->listen_fd);
    }
    if (c->wake_fd >= 0) {
        close(c->wake_fd);
    }
    for (int i = 0; i < c->n_conns; i++) {
        close(c->conns[i]->fd);
        hd_free(c->conns[i]->rbuf);
        hd_free(c->conns[i]->addr);
        hd_free(c->conns[i]);
    }
    hd_sched_destroy(c->sched);
    hd_free(c->conns);
    hd_free(c->slot);
    hd_free(c->layer_lo);
    hd_free(c->layer_hi);
    hd_free(c->local);
    hd_free(c->flight);
    hd_free(c->cancelled);
    hd_free(c->pitems);
    hd_free(c->prel);
    hd_free(c->pcan);
    hd_free(c->model_dir);
    hd_free(c->transport);
    hd_free(c->listen_host);
    hd_free(c->worker_exe);
    hd_free(c->worker_log_level);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->ready_cond);
    hd_free(c);
}

hd_status_t hd_cluster_create(const hd_cluster_params_t *params, hd_cluster_h *cluster_p)
{
    char err[600] = "", path[4200];
    hd_status_t st;
    pthread_mutexattr_t ma;
    hd_cluster_h c = hd_calloc(1, sizeof(*c), "cluster");
    if (c == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    c->p = *params;
    c->listen_fd = c->wake_fd = -1;
    c->live.next = c->live.prev = &c->live;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&c->lock, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_cond_init(&c->ready_cond, NULL);
    if (params->model_dir == NULL && params->preset != NULL) {
        st = cl_preset_dir(params, &c->model_dir, err, sizeof(err));
        if (st != HD_OK) {
            goto fail;
        }
    } else {
        c->model_dir = cl_strdup(params->model_dir);
    }
    c->transport = cl_strdup(params->transport ? params->transport : "tcp");
    c->listen_host = cl_strdup(params->listen_host ? params->listen_host : "127.0.0.1");
    c->worker_exe = cl_strdup(params->worker_exe);
    c->worker_log_level = cl_strdup(params->worker_log_level);
    if (c->model_dir == NULL) {
        snprintf(err, sizeof(err), "no model directory (or preset)");
        st = HD_ERR_INVALID_PARAM;
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/config.json", c->model_dir);
    st = hd_config_load(path, &c->cfg, err, sizeof(err));
    if (st != HD_OK) {
        goto fail;
    }
    if (params->pp < 1 || params->ep < 1 || params->pp > c->cfg.n_layers ||
        params->ep > c->cfg.n_routed_experts || params->pp * params->ep > 4096) {
        snprintf(err, sizeof(err), "grid %dx%d: need 1 <= pp <= %d layers and 1 <= ep <= %d "
                 "routed experts", params->pp, params->ep, c->cfg.n_layers,
                 c->cfg.n_routed_experts);
        st = HD_ERR_INVALID_PARAM;
        goto fail;
    }
    c->n_ranks = params->pp * params->ep;
    st = cl_stages(c);
    if (st != HD_OK) {
        goto fail;
    }
#define CL_DEF(f, v) c->p.f = c->p.f > 0 ? c->p.f : (v)
    CL_DEF(max_running, 64);
    CL_DEF(max_waiting, 256);
    CL_DEF(step_tokens, 256);
    CL_DEF(prefill_chunk, 64);
    CL_DEF(max_context, c->cfg.max_pos < 4096 ? c->cfg.max_pos : 4096);
    CL_DEF(max_in_flight, params->pp);
    CL_DEF(heartbeat_ms, 500);
    CL_DEF(worker_timeout_ms, 3000);
    CL_DEF(step_timeout_ms, 10000);
    CL_DEF(placement_timeout_ms, 120000);
#undef CL_DEF
    hd_sched_params_t sp = {.n_columns = params->ep, .max_running = c->p.max_running,
                            .max_waiting = c->p.max_waiting, .step_tokens = c->p.step_tokens,
                            .prefill_chunk = c->p.prefill_chunk, .max_context = c->p.max_context,
                            .micro_batches = c->p.max_in_flight,
                            .resume_failed = c->p.resume_failed < 0 ? 0 : c->p.resume_failed};
    st = hd_sched_create(&sp, &c->sched);
    if (st != HD_OK) {
        snprintf(err, sizeof(err), "scheduler parameters refused");
        goto fail;
    }
    c->slot = hd_calloc((size_t)c->n_ranks, sizeof(*c->slot), "grid slots");
    c->flight = hd_calloc((size_t)c->p.max_in_flight, sizeof(*c->flight), "steps in flight");
    c->local = c->worker_exe ? hd_calloc((size_t)c->n_ranks, sizeof(*c->local), "local workers")
                             : NULL;
    c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->slot == NULL || c->flight == NULL || (c->worker_exe && c->local == NULL) ||
        c->wake_fd < 0 || c->model_dir == NULL || c->transport == NULL ||
        c->listen_host == NULL) {
        st = HD_ERR_NO_MEMORY;
        goto fail;
    }
    for (int r = 0; r < c->n_ranks; r++) {
        c->slot[r] = -1;
    }
    /* until the grid serves, requests wait */
    for (int col = 0; col < params->ep; col++) {
        hd_sched_column_down(c->sched, col, NULL);
    }
    c->cols_down = true;
    st = cl_listen(c, err, sizeof(err));
    if (st != HD_OK) {
        goto fail;
    }
    if (pthread_create(&c->thread, NULL, cl_main, c) != 0) {
        snprintf(err, sizeof(err), "cannot start the cluster thread");
        st = HD_ERR_NO_MEMORY;
        goto fail;
    }
    hd_info(HD_SUBSYS_SCHED, "coordinator for a %dx%d grid on %s:%d, layers by %s", params->pp,
            params->ep, c->listen_host, c->port, c->placement_how);
    *cluster_p = c;
    return HD_OK;
fail:
    if (params->err != NULL) {
        snprintf(params->err, params->err_len, "%s", err[0] ? err : hd_status_string(st));
    }
    cl_free(c);
    return st;
}

void hd_cluster_destroy(hd_cluster_h c)
{
    if (c == NULL) {
        return;
    }
    pthread_mutex_lock(&c->lock);
    c->stop = true;
    pthread_mutex_unlock(&c->lock);
    cl_wake(c);
    pthread_join(c->thread, NULL);
    /* local workers got a Drain; give them a moment, then make sure */
    for (int r = 0; c->local != NULL && r < c->n_ranks; r++) {
        pid_t pid = c->local[r].pid;
        if (pid <= 0) {
            continue;
        }
        int status;
        for (int t = 0; t < 40 && waitpid(pid, &status, WNOHANG) == 0; t++) {
            usleep(25 * 1000);
            if (t == 20) {
                kill(pid, SIGTERM);
            }
        }
        if (waitpid(pid, &status, WNOHANG) == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
    }
    cl_free(c);
}

bool hd_cluster_ready(hd_cluster_h c)
{
    pthread_mutex_lock(&c->lock);
    bool r = c->state == GRID_SERVING;
    pthread_mutex_unlock(&c->lock);
    return r;
}

hd_status_t hd_cluster_wait_ready(hd_cluster_h c, int timeout_ms)
{
    struct timespec ts;
    hd_status_t st = HD_OK;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&c->lock);
    while (c->state != GRID_SERVING && c->state != GRID_FAILED) {
        if (pthread_cond_timedwait(&c->ready_cond, &c->lock, &ts) != 0) {
            st = HD_ERR_TIMEOUT;
            break;
        }
    }
    if (c->state == GRID_FAILED) {
        hd_error(HD_SUBSYS_SCHED, "cluster gave up: %s", c->fail_why);
        st = c->fail_status;
    }
    pthread_mutex_unlock(&c->lock);
    return st;
}

hd_status_t hd_cluster_submit(hd_cluster_h c, const hd_request_t *req, hd_req_id_t *id_p)
{
    if (req->prompt == NULL || req->n_prompt < 1) {
        return HD_ERR_INVALID_PARAM;
    }
    for (int64_t i = 0; i < req->n_prompt; i++) {
        if (req->prompt[i] < 0 || req->prompt[i] >= c->cfg.vocab_size) {
            return HD_ERR_INVALID_PARAM;
        }
    }
    cl_req_t *r = hd_calloc(1, sizeof(*r), "cluster request");
    if (r == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    hd_request_t q = *req;
    r->fn = req->on_token;
    r->lpfn = req->on_logprobs;
    r->user = req->user;
    r->c = c;
    q.on_token = cl_req_on_token;
    q.on_logprobs = req->on_logprobs != NULL ? cl_req_on_logprobs : NULL;
    q.user = r;
    pthread_mutex_lock(&c->lock);
    hd_status_t st = c->state == GRID_FAILED || c->stop ? HD_ERR_REMOTE
                                                        : hd_sched_submit(c->sched, &q, &r->id);
    if (st == HD_OK) {
        r->next = &c->live;
        r->prev = c->live.prev;
        c->live.prev->next = r;
        c->live.prev = r;
        *id_p = r->id;
    } else {
        hd_free(r);
    }
    pthread_mutex_unlock(&c->lock);
    if (st == HD_OK) {
        cl_wake(c);
    }
    return st;
}

hd_status_t hd_cluster_cancel(hd_cluster_h c, hd_req_id_t id)
{
    pthread_mutex_lock(&c->lock);
    hd_status_t st = hd_sched_cancel(c->sched, id);
    if (st == HD_OK && cl_grow((void **)&c->cancelled, &c->cap_cancelled, c->n_cancelled + 1,
                               sizeof(*c->cancelled), "cancelled ids") == 0) {
        c->cancelled[c->n_cancelled++] = id;
    }
    pthread_mutex_unlock(&c->lock);
    cl_wake(c);
    return st;
}

void hd_cluster_stats(hd_cluster_h c, hd_cluster_stats_t *s)
{
    hd_sched_stats_t ss;
    memset(s, 0, sizeof(*s));
    pthread_mutex_lock(&c->lock);
    hd_sched_stats(c->sched, &ss);
    s->waiting = ss.waiting;
    s->running = ss.running;
    s->in_flight = c->fl_n;
    s->prompt_tokens = ss.prompt_tokens;
    s->generated_tokens = ss.generated_tokens;
    s->steps = c->steps_done;
    s->n_workers = c->n_ranks;
    for (int i = 0; i < c->n_conns; i++) {
        if (c->conns[i]->rank >= 0) {
            s->workers_connected++;
            s->kv_bytes += c->conns[i]->kv_bytes;
        }
    }
    s->ready = c->state == GRID_SERVING;
    s->epoch = c->epoch;
    s->worker_failures = c->failures;
    s->cancel_acks_pending = c->cancel_acks_pending;
    s->cpu_seconds = c->cpu_seconds;
    pthread_mutex_unlock(&c->lock);
}

int hd_cluster_port(hd_cluster_h c)
{
    return c->port;
}

const hd_model_config_t *hd_cluster_config(hd_cluster_h c)
{
    return &c->cfg;
}

pid_t hd_cluster_worker_pid(hd_cluster_h c, int rank)
{
    pid_t pid = -1;
    pthread_mutex_lock(&c->lock);
    if (c->local != NULL && rank >= 0 && rank < c->n_ranks && c->local[rank].pid > 0) {
        pid = c->local[rank].pid;
    }
    pthread_mutex_unlock(&c->lock);
    return pid;
}

void hd_cluster_stage_layers(hd_cluster_h c, int stage, int *lo_p, int *hi_p)
{
    *lo_p = stage >= 0 && stage < c->p.pp ? c->layer_lo[stage] : 0;
    *hi_p = stage >= 0 && stage < c->p.pp ? c->layer_hi[stage] : 0;
}
