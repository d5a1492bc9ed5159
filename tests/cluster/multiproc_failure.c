/*
 * multiproc_failure.c - failures with real worker processes: a worker killed with SIGKILL or
 * stopped with SIGSTOP mid-generation (the running requests end with a retryable error within
 * 5 s, the supervisor restarts the worker, it re-registers, the grid is re-placed under a new
 * epoch and queued and new requests get exactly the single-engine tokens); workers started by
 * hand that join, die and are replaced; garbage, truncated frames, a wrong protocol version
 * and unknown workers on the control port are refused without disturbing the grid.
 */
#include "cluster_testutil.h"
#include "hadal/proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#define NREF 4

static ct_req_t refs[NREF]; /* short requests with known tokens */
static char model_dir[1200];

static void prepare(void)
{
    static bool done;
    if (done) {
        return;
    }
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, model_dir, sizeof(model_dir)), 0);
    hd_engine_h full = ct_open_full(model_dir);
    if (full == NULL) {
        return;
    }
    ct_setup(full, refs, NREF, false);
    hd_engine_destroy(full);
    done = true;
}

/* Long greedy requests that are still generating when a worker goes away. */
static void long_requests(ct_req_t *longs, int n)
{
    for (int i = 0; i < n; i++) {
        memset(&longs[i], 0, sizeof(longs[i]));
        longs[i].n_prompt = 8 + i;
        longs[i].max_tokens = 240;
        longs[i].stop = -1;
        for (int j = 0; j < longs[i].n_prompt; j++) {
            longs[i].prompt[j] = 11 + 7 * j + i;
        }
    }
}

static int ct_tokens_seen(ct_req_t *r)
{
    pthread_mutex_lock(&ct_lock);
    int n = r->n_got;
    pthread_mutex_unlock(&ct_lock);
    return n;
}

/* The reference requests on @c give the single-engine tokens. */
static void check_refs(hd_cluster_h c, const char *when)
{
    for (int i = 0; i < NREF; i++) {
        HD_CHECK_INT_EQ(ct_submit(c, &refs[i]), HD_OK);
    }
    HD_CHECK_MSG(ct_wait_all(refs, NREF, 60), "%s: requests did not finish", when);
    pthread_mutex_lock(&ct_lock);
    for (int i = 0; i < NREF; i++) {
        ct_req_t *r = &refs[i];
        HD_CHECK_MSG(r->finish == HD_FINISH_LENGTH && r->n_got == r->n_ref &&
                         memcmp(r->got, r->ref, sizeof(int32_t) * (size_t)r->n_ref) == 0,
                     "%s: request %d finish %d (%s), %d tokens vs %d", when, i, r->finish, r->why,
                     r->n_got, r->n_ref);
    }
    pthread_mutex_unlock(&ct_lock);
}

/* Kill (or stop) the worker of @rank mid-generation and watch the grid recover. With
 * @deadline, heartbeats are not what notices: the step deadline (1.5 s) is. */
static void lose_worker_how(int pp, int ep, int rank, int sig, bool deadline)
{
    ct_grid_t g = {.pp = pp, .ep = ep, .dir = model_dir};
    if (deadline) {
        g.worker_timeout_ms = 60000;
        g.step_timeout_ms = 1500;
        g.placement_timeout_ms = 3000;
    }
    ct_req_t longs[3], queued;
    prepare();
    hd_cluster_h c = ct_cluster(&g);
    if (c == NULL) {
        return;
    }
    check_refs(c, "before");
    long_requests(longs, 3);
    for (int i = 0; i < 3; i++) {
        HD_CHECK_INT_EQ(ct_submit(c, &longs[i]), HD_OK);
    }
    double t0 = ct_now();
    while (ct_tokens_seen(&longs[0]) < 3 && ct_now() - t0 < 30) {
        usleep(1000);
    }
    pid_t victim = hd_cluster_worker_pid(c, rank);
    HD_CHECK_TRUE(victim > 0);
    HD_CHECK_MSG(ct_tokens_seen(&longs[0]) < 200, "requests ended before the failure");
    double t_kill = ct_now();
    kill(victim, sig);
    /* every running request ends, with a reason that says it may be retried */
    HD_CHECK_MSG(ct_wait_all(longs, 3, 5.0), "running requests not failed within 5 s");
    double t_fail = ct_now() - t_kill;
    pthread_mutex_lock(&ct_lock);
    for (int i = 0; i < 3; i++) {
        HD_CHECK_MSG(longs[i].finish == HD_FINISH_ERROR, "request %d finish %d", i,
                     longs[i].finish);
        HD_CHECK_MSG(strstr(longs[i].why, "retr") != NULL &&
                         strstr(longs[i].why, deadline ? "no result" : "rank") != NULL,
                     "why: %s", longs[i].why);
    }
    pthread_mutex_unlock(&ct_lock);
    /* a request submitted during the outage waits and is served after re-placement */
    queued = refs[1];
    HD_CHECK_INT_EQ(ct_submit(c, &queued), HD_OK);
    HD_CHECK_MSG(ct_wait_all(&queued, 1, 60), "queued request not served after recovery");
    pthread_mutex_lock(&ct_lock);
    HD_CHECK_MSG(queued.finish == HD_FINISH_LENGTH && queued.n_got == queued.n_ref &&
                     memcmp(queued.got, queued.ref, sizeof(int32_t) * (size_t)queued.n_ref) == 0,
                 "queued request: finish %d (%s)", queued.finish, queued.why);
    pthread_mutex_unlock(&ct_lock);
    double t_back = ct_now() - t_kill;
    hd_cluster_stats_t s;
    hd_cluster_stats(c, &s);
    HD_CHECK_MSG(s.epoch >= 2, "epoch %llu", (unsigned long long)s.epoch);
    HD_CHECK_TRUE(s.worker_failures >= 1);
    pid_t again = hd_cluster_worker_pid(c, rank);
    HD_CHECK_MSG(again > 0 && again != victim, "worker %d not restarted (pid %d, was %d)", rank,
                 (int)again, (int)victim);
    check_refs(c, "after");
    HD_CHECK_MSG(ct_wait_stats(c, ct_pred_idle, 10), "workers still hold state after recovery");
    printf("  %dx%d, signal %d to rank %d: requests failed after %.2f s, serving again after "
           "%.2f s (epoch %llu)\n", pp, ep, sig, rank, t_fail, t_back,
           (unsigned long long)s.epoch);
    if (sig == SIGSTOP) {
        kill(victim, SIGCONT); /* already killed by the coordinator; harmless */
    }
    hd_cluster_destroy(c);
}

static void lose_worker(int pp, int ep, int rank, int sig)
{
    lose_worker_how(pp, ep, rank, sig, false);
}

HD_TEST(kill9_worker_fails_requests_and_grid_recovers)
{
    lose_worker(2, 2, 3, SIGKILL); /* last stage, column 1 */
    lose_worker(2, 1, 0, SIGKILL); /* first stage of the only column */
}

HD_TEST(sigstop_hung_worker_detected_and_replaced)
{
    lose_worker(1, 2, 1, SIGSTOP);
}

/* Heartbeats set to a minute: the step deadline fails the requests; the re-placement round
 * times out for the stopped worker, which is then killed, restarted and placed. */
HD_TEST(step_deadline_catches_a_hang_heartbeats_miss)
{
    lose_worker_how(2, 1, 1, SIGSTOP, true);
}

/* ---- hand-started workers ---- */

static pid_t spawn_worker(int port, bool spare)
{
    char coord[64];
    snprintf(coord, sizeof(coord), "127.0.0.1:%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        if (spare) { /* keeps rejoining when refused or disconnected */
            execl(ct_hadal(), ct_hadal(), "worker", "--coordinator", coord, "--threads", "1",
                  (char *)NULL);
        } else {
            execl(ct_hadal(), ct_hadal(), "worker", "--coordinator", coord, "--threads", "1",
                  "--exit-on-disconnect", (char *)NULL);
        }
        _exit(127);
    }
    return pid;
}

static void reap(pid_t pid)
{
    int st;
    if (pid <= 0) {
        return;
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
}

HD_TEST(hand_started_workers_join_and_a_spare_replaces_a_dead_one)
{
    char err[800] = "";
    hd_cluster_h c = NULL;
    pid_t w[3] = {-1, -1, -1};
    prepare();
    hd_cluster_params_t p = {.pp = 1, .ep = 2, .model_dir = model_dir, .max_running = 4,
                             .max_waiting = 64, .step_tokens = 48, .prefill_chunk = 13,
                             .max_context = 256, .err = err, .err_len = sizeof(err)};
    HD_CHECK_MSG(hd_cluster_create(&p, &c) == HD_OK, "%s", err);
    if (c == NULL) {
        return;
    }
    HD_CHECK_INT_EQ(hd_cluster_wait_ready(c, 300), HD_ERR_TIMEOUT); /* nobody yet */
    w[0] = spawn_worker(hd_cluster_port(c), false);
    w[1] = spawn_worker(hd_cluster_port(c), false);
    HD_CHECK_INT_EQ(hd_cluster_wait_ready(c, 30000), HD_OK);
    /* a spare: refused while the grid is full, it keeps asking */
    w[2] = spawn_worker(hd_cluster_port(c), true);
    check_refs(c, "hand-started");
    usleep(300 * 1000);
    reap(w[0]); /* the spare takes the free cell */
    w[0] = -1;
    double t0 = ct_now();
    hd_cluster_stats_t s;
    do {
        usleep(20000);
        hd_cluster_stats(c, &s);
    } while ((s.epoch < 2 || !s.ready) && ct_now() - t0 < 30);
    HD_CHECK_MSG(s.ready && s.epoch >= 2, "not re-placed: epoch %llu ready %d",
                 (unsigned long long)s.epoch, (int)s.ready);
    check_refs(c, "replacement");
    hd_cluster_destroy(c); /* tells the workers to exit (Drain), the former spare too */
    for (int i = 0; i < 3; i++) {
        int st;
        if (w[i] <= 0) {
            continue;
        }
        double t1 = ct_now();
        while (waitpid(w[i], &st, WNOHANG) == 0 && ct_now() - t1 < 5) {
            usleep(10000);
        }
        HD_CHECK_MSG(kill(w[i], 0) != 0, "worker %d still running after the coordinator left",
                     (int)w[i]);
        reap(w[i]);
    }
}

/* Requests still queued when the cluster goes away get their final callback (an error). */
HD_TEST(destroy_ends_queued_requests)
{
    char err[800] = "";
    hd_cluster_h c = NULL;
    ct_req_t q[3];
    prepare();
    hd_cluster_params_t p = {.pp = 1, .ep = 2, .model_dir = model_dir, .err = err,
                             .err_len = sizeof(err)};
    HD_CHECK_MSG(hd_cluster_create(&p, &c) == HD_OK, "%s", err);
    if (c == NULL) {
        return;
    }
    for (int i = 0; i < 3; i++) {
        q[i] = refs[i];
        HD_CHECK_INT_EQ(ct_submit(c, &q[i]), HD_OK); /* no worker: they wait */
    }
    HD_CHECK_INT_EQ(hd_cluster_cancel(c, q[2].id), HD_OK);
    hd_cluster_destroy(c);
    for (int i = 0; i < 3; i++) {
        HD_CHECK_INT_EQ(q[i].n_final, 1);
        HD_CHECK_INT_EQ(q[i].finish, i == 2 ? HD_FINISH_CANCELLED : HD_FINISH_ERROR);
    }
    HD_CHECK_MSG(strstr(q[0].why, "shutting down") != NULL, "why: %s", q[0].why);
}

/* Workers that cannot load the model refuse their assignment; after three refused rounds
 * the cluster gives up and says why instead of restarting them forever. */
HD_TEST(unloadable_model_is_refused_not_retried_forever)
{
    char dir[1300], cfg[1400], cmd[3000], err[800] = "";
    const char *bd = getenv("HD_BUILD_DIR");
    hd_cluster_h c = NULL;
    prepare();
    snprintf(dir, sizeof(dir), "%s/testdata/config-only-%d", bd ? bd : ".", (int)getpid());
    snprintf(cfg, sizeof(cfg), "%s/config.json", model_dir);
    snprintf(cmd, sizeof(cmd), "mkdir -p %s && cp %s %s/", dir, cfg, dir);
    HD_CHECK_INT_EQ(system(cmd), 0);
    hd_cluster_params_t p = {.pp = 1, .ep = 2, .model_dir = dir, .worker_exe = ct_hadal(),
                             .worker_threads = 1, .err = err, .err_len = sizeof(err)};
    HD_CHECK_MSG(hd_cluster_create(&p, &c) == HD_OK, "%s", err); /* config.json is fine */
    if (c != NULL) {
        double t0 = ct_now();
        hd_status_t st = hd_cluster_wait_ready(c, 30000);
        HD_CHECK_MSG(st != HD_OK && st != HD_ERR_TIMEOUT, "wait_ready: %s",
                     hd_status_string(st));
        ct_req_t r = refs[0];
        HD_CHECK_INT_EQ(ct_submit(c, &r), HD_ERR_REMOTE);
        printf("  gave up after %.2f s: %s\n", ct_now() - t0, hd_status_string(st));
        hd_cluster_destroy(c);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    HD_CHECK_INT_EQ(system(cmd), 0);
}

/* ---- bad input on the control port ---- */

static int dial(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The coordinator closes @fd within @ms (reading and discarding what it says first). */
static bool closed_by_peer(int fd, int ms)
{
    double t0 = ct_now();
    char buf[4096];
    while (ct_now() - t0 < ms / 1000.0) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) > 0) {
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n <= 0) {
                return true;
            }
        }
    }
    return false;
}

static void send_msg(int fd, const hd_proto_msg_t *m)
{
    HD_CHECK_INT_EQ(hd_proto_fd_send(fd, m, 2000), HD_OK);
}

static int hello_as_worker(int port)
{
    char err[256];
    int fd = dial(port);
    HD_CHECK_TRUE(fd >= 0);
    HD_CHECK_INT_EQ(hd_proto_handshake_client(fd, HD_PROTO_ROLE_WORKER, "test", 2000, err,
                                              sizeof(err)), HD_OK);
    return fd;
}

HD_TEST(bad_input_on_control_port_is_refused)
{
    ct_grid_t g = {.pp = 1, .ep = 2, .dir = model_dir};
    prepare();
    hd_cluster_h c = ct_cluster(&g);
    if (c == NULL) {
        return;
    }
    int port = hd_cluster_port(c);
    /* 1. random garbage */
    int fd = dial(port);
    uint8_t junk[512];
    for (size_t i = 0; i < sizeof(junk); i++) {
        junk[i] = (uint8_t)(i * 131 + 17);
    }
    HD_CHECK_TRUE(write(fd, junk, sizeof(junk)) == (ssize_t)sizeof(junk));
    HD_CHECK_MSG(closed_by_peer(fd, 3000), "garbage: connection not closed");
    close(fd);
    /* 2. a frame header announcing a hello whose payload is not protobuf */
    fd = dial(port);
    uint8_t bad[6 + 8] = {8, 0, 0, 0, HD_PROTO_HELLO, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                          0xff};
    HD_CHECK_TRUE(write(fd, bad, sizeof(bad)) == (ssize_t)sizeof(bad));
    HD_CHECK_MSG(closed_by_peer(fd, 3000), "bad protobuf: connection not closed");
    close(fd);
    /* 3. a truncated frame, then silence: dropped after the hello deadline */
    fd = dial(port);
    HD_CHECK_TRUE(write(fd, bad, 9) == 9);
    HD_CHECK_MSG(closed_by_peer(fd, 8000), "truncated frame: connection not closed");
    close(fd);
    /* 4. a newer major version: refused with a reason */
    fd = dial(port);
    hd_proto_msg_t m = {.type = HD_PROTO_HELLO};
    hd_proto_hello_init(&m.hello, HD_PROTO_ROLE_WORKER, "future");
    m.hello.major = HD_PROTO_VERSION_MAJOR + 1;
    send_msg(fd, &m);
    hd_proto_msg_t *r = NULL;
    char err[256] = "";
    HD_CHECK_INT_EQ(hd_proto_fd_recv(fd, NULL, 3000, &r, err, sizeof(err)), HD_OK);
    if (r != NULL) {
        HD_CHECK_INT_EQ(r->type, HD_PROTO_HELLO_REPLY);
        HD_CHECK_TRUE(r->type == HD_PROTO_HELLO_REPLY && !r->hello_reply.accepted);
        HD_CHECK_TRUE(r->type == HD_PROTO_HELLO_REPLY && r->hello_reply.reason &&
                      strstr(r->hello_reply.reason, "protocol") != NULL);
        hd_proto_msg_destroy(r);
    }
    HD_CHECK_MSG(closed_by_peer(fd, 3000), "wrong version: connection not closed");
    close(fd);
    /* 5. an unknown worker: asks for a rank outside the grid */
    fd = hello_as_worker(port);
    hd_proto_msg_t reg = {.type = HD_PROTO_REGISTER};
    reg.reg = (hd_proto_register_t){.name = "intruder", .requested_rank = 99};
    send_msg(fd, &reg);
    HD_CHECK_MSG(closed_by_peer(fd, 3000), "unknown rank: connection not closed");
    close(fd);
    /* 6. a grid that is full has no cell for another worker */
    fd = hello_as_worker(port);
    reg.reg.requested_rank = -1;
    send_msg(fd, &reg);
    HD_CHECK_MSG(closed_by_peer(fd, 3000), "full grid: connection not closed");
    close(fd);
    /* 7. results signed by a rank the sender is not */
    fd = hello_as_worker(port);
    hd_proto_msg_t res = {.type = HD_PROTO_STEP_RESULT};
    res.step_result = (hd_proto_step_result_t){.step_id = 1, .rank = 1};
    send_msg(fd, &res);
    HD_CHECK_MSG(closed_by_peer(fd, 3000), "forged result: connection not closed");
    close(fd);
    /* 8. a heartbeat before the Register is fine (alive, registering); one claiming a rank
     *    the connection does not have is not */
    fd = hello_as_worker(port);
    hd_proto_msg_t hb = {.type = HD_PROTO_HEARTBEAT};
    hb.heartbeat = (hd_proto_heartbeat_t){.rank = -1, .seq = 1};
    send_msg(fd, &hb);
    HD_CHECK_MSG(!closed_by_peer(fd, 600), "early heartbeat: connection closed");
    hb.heartbeat.rank = 1;
    send_msg(fd, &hb);
    HD_CHECK_MSG(closed_by_peer(fd, 3000), "heartbeat for another rank: connection not closed");
    close(fd);
    /* the grid never noticed */
    check_refs(c, "after bad input");
    hd_cluster_stats_t s;
    hd_cluster_stats(c, &s);
    HD_CHECK_INT_EQ(s.worker_failures, 0);
    HD_CHECK_INT_EQ(s.epoch, 1);
    HD_CHECK_TRUE(s.ready);
    hd_cluster_destroy(c);
}

/* ---- bad input from a "coordinator": the worker process survives it ---- */

static int listen_any(int *port_p)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t sl = sizeof(sin);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 4) != 0) {
        return -1;
    }
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    *port_p = ntohs(sin.sin_port);
    return fd;
}

/* Exit status of @pid within @s seconds: >= 0 its code, -2 killed by a signal, -1 still up. */
static int exit_code(pid_t pid, double s)
{
    int st;
    double t0 = ct_now();
    while (ct_now() - t0 < s) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
            return WIFEXITED(st) ? WEXITSTATUS(st) : -2;
        }
        usleep(10000);
    }
    return -1;
}

HD_TEST(worker_survives_a_bad_coordinator)
{
    char err[256];
    int port = 0, lfd = listen_any(&port);
    HD_CHECK_TRUE(lfd >= 0);
    if (lfd < 0) {
        return;
    }
    /* 1. garbage after the handshake: the worker drops the connection and exits cleanly
     *    (it was started with --exit-on-disconnect; without, it would rejoin) */
    pid_t w = spawn_worker(port, false);
    int fd = accept(lfd, NULL, NULL);
    HD_CHECK_INT_EQ(hd_proto_handshake_server(fd, HD_PROTO_ROLE_COORDINATOR, "test", 5000, NULL,
                                              err, sizeof(err)), HD_OK);
    hd_proto_msg_t *m = NULL;
    HD_CHECK_INT_EQ(hd_proto_fd_recv(fd, NULL, 5000, &m, err, sizeof(err)), HD_OK);
    HD_CHECK_TRUE(m != NULL && m->type == HD_PROTO_REGISTER);
    hd_proto_msg_destroy(m);
    static const uint8_t junk[] = {12, 0, 0, 0, HD_PROTO_PLACEMENT, 0, 0xde, 0xad, 0xbe, 0xef,
                                   0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef};
    HD_CHECK_TRUE(write(fd, junk, sizeof(junk)) == (ssize_t)sizeof(junk));
    /* a whole frame whose payload is not a Placement: logged, the connection dropped */
    HD_CHECK_INT_EQ(exit_code(w, 10), 1);
    close(fd);
    /* 2. a well-formed placement that cannot be carried out: refused with an Error, worker up */
    w = spawn_worker(port, false);
    fd = accept(lfd, NULL, NULL);
    HD_CHECK_INT_EQ(hd_proto_handshake_server(fd, HD_PROTO_ROLE_COORDINATOR, "test", 5000, NULL,
                                              err, sizeof(err)), HD_OK);
    HD_CHECK_INT_EQ(hd_proto_fd_recv(fd, NULL, 5000, &m, err, sizeof(err)), HD_OK);
    hd_proto_msg_destroy(m);
    hd_proto_msg_t pl = {.type = HD_PROTO_PLACEMENT};
    pl.placement = (hd_proto_placement_t){.rank = 0, .pp = 1, .ep = 1, .layer_hi = 1,
                                          .model_dir = "/nonexistent", .epoch = 1};
    HD_CHECK_INT_EQ(hd_proto_fd_send(fd, &pl, 2000), HD_OK);
    m = NULL;
    HD_CHECK_INT_EQ(hd_proto_fd_recv(fd, NULL, 10000, &m, err, sizeof(err)), HD_OK);
    HD_CHECK_TRUE(m != NULL && m->type == HD_PROTO_ERROR);
    hd_proto_msg_destroy(m);
    HD_CHECK_INT_EQ(exit_code(w, 0.3), -1); /* still up */
    /* 3. a step batch for an epoch it does not serve is ignored; then a clean drain */
    hd_proto_msg_t sb = {.type = HD_PROTO_STEP_BATCH};
    int32_t tok = 1;
    hd_proto_step_item_t it = {.seq_id = 1, .n_tokens = 1, .tokens = &tok, .first = true};
    sb.step_batch = (hd_proto_step_batch_t){.step_id = 1, .epoch = 7, .n_items = 1, .items = &it};
    HD_CHECK_INT_EQ(hd_proto_fd_send(fd, &sb, 2000), HD_OK);
    hd_proto_msg_t d = {.type = HD_PROTO_DRAIN};
    d.drain = (hd_proto_drain_t){.exit_after = true};
    HD_CHECK_INT_EQ(hd_proto_fd_send(fd, &d, 2000), HD_OK);
    HD_CHECK_INT_EQ(exit_code(w, 10), 0);
    close(fd);
    /* 4. a coordinator of another major version: refused, the worker exits */
    w = spawn_worker(port, false);
    fd = accept(lfd, NULL, NULL);
    HD_CHECK_INT_EQ(hd_proto_fd_recv(fd, NULL, 5000, &m, err, sizeof(err)), HD_OK);
    hd_proto_msg_destroy(m);
    hd_proto_msg_t rep = {.type = HD_PROTO_HELLO_REPLY};
    rep.hello_reply = (hd_proto_hello_reply_t){.accepted = true, .major = 99};
    HD_CHECK_INT_EQ(hd_proto_fd_send(fd, &rep, 2000), HD_OK);
    HD_CHECK_INT_EQ(exit_code(w, 10), 1);
    close(fd);
    close(lfd);
    reap(w);
}
