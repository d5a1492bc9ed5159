/*
 * multiproc_netns.c - "multi-host" on one machine: each worker of a 2x2 grid runs in a
 * network namespace of its own, joined to the coordinator's (the test's) namespace by a veth
 * pair on a bridge, so control and data planes cross real interfaces with distinct IPs (the
 * namespaces have no other route to each other). Over TCP, then over UCX restricted to its
 * tcp transport (when UCX is built): tokens equal the single engine's, and a worker killed
 * in its namespace is replaced by a new one there. Needs root and `ip netns`; SKIPPED
 * otherwise. Interfaces and namespaces carry the test's pid and are removed at the end.
 */
#include "cluster_testutil.h"
#include "hadal/net.h"

#include <stdarg.h>

#define NW 4

static char ns_name[NW][32];
static char br_name[32], veth_host[NW][32];
static char bridge_ip[32], subnet[32];
static bool net_up;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void net_down(void)
{
    for (int i = 0; i < NW; i++) {
        sh("ip netns del %s > /dev/null 2>&1", ns_name[i]);
        sh("ip link del %s > /dev/null 2>&1", veth_host[i]);
    }
    sh("ip link del %s > /dev/null 2>&1", br_name);
    net_up = false;
}

/* A bridge with the coordinator's address and one namespace per worker on it. */
static bool net_setup(void)
{
    int id = (int)(getpid() % 100000), oct = 20 + (int)(getpid() % 200);
    snprintf(br_name, sizeof(br_name), "hdbr%d", id);
    snprintf(bridge_ip, sizeof(bridge_ip), "10.%d.0.1", oct);
    snprintf(subnet, sizeof(subnet), "10.%d.0", oct);
    for (int i = 0; i < NW; i++) {
        snprintf(ns_name[i], sizeof(ns_name[i]), "hdns%d_%d", id, i);
        snprintf(veth_host[i], sizeof(veth_host[i]), "hv%d_%dh", id, i);
    }
    atexit(net_down);
    net_up = true;
    if (sh("ip link add %s type bridge", br_name) != 0 ||
        sh("ip addr add %s/24 dev %s", bridge_ip, br_name) != 0 ||
        sh("ip link set %s up", br_name) != 0) {
        return false;
    }
    for (int i = 0; i < NW; i++) {
        char peer[32];
        snprintf(peer, sizeof(peer), "hv%d_%dn", (int)(getpid() % 100000), i);
        if (sh("ip netns add %s", ns_name[i]) != 0 ||
            sh("ip link add %s type veth peer name %s", veth_host[i], peer) != 0 ||
            sh("ip link set %s master %s up", veth_host[i], br_name) != 0 ||
            sh("ip link set %s netns %s", peer, ns_name[i]) != 0 ||
            sh("ip -n %s addr add %s.%d/24 dev %s", ns_name[i], subnet, 10 + i, peer) != 0 ||
            sh("ip -n %s link set %s up", ns_name[i], peer) != 0 ||
            sh("ip -n %s link set lo up", ns_name[i]) != 0) {
            return false;
        }
    }
    return true;
}

static pid_t spawn_in_ns(int i, int port, int rank, const char *ucx_tls)
{
    char coord[64], rk[16];
    snprintf(coord, sizeof(coord), "%s:%d", bridge_ip, port);
    snprintf(rk, sizeof(rk), "%d", rank);
    pid_t pid = fork();
    if (pid == 0) {
        if (ucx_tls != NULL) {
            setenv("UCX_TLS", ucx_tls, 1);
        }
        setenv("HD_LOG_LEVEL", "error", 1);
        execlp("ip", "ip", "netns", "exec", ns_name[i], ct_hadal(), "worker", "--coordinator",
               coord, "--rank", rk, "--threads", "1", "--exit-on-disconnect", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void reap(pid_t pid)
{
    int st;
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
}

static ct_req_t refs[4];

static void check_refs(hd_cluster_h c, const char *when)
{
    for (int i = 0; i < 4; i++) {
        HD_CHECK_INT_EQ(ct_submit(c, &refs[i]), HD_OK);
    }
    HD_CHECK_MSG(ct_wait_all(refs, 4, 60), "%s: requests did not finish", when);
    pthread_mutex_lock(&ct_lock);
    for (int i = 0; i < 4; i++) {
        ct_req_t *r = &refs[i];
        HD_CHECK_MSG(r->finish == HD_FINISH_LENGTH && r->n_got == r->n_ref &&
                         memcmp(r->got, r->ref, sizeof(int32_t) * (size_t)r->n_ref) == 0,
                     "%s: request %d finish %d (%s), %d tokens vs %d", when, i, r->finish, r->why,
                     r->n_got, r->n_ref);
    }
    pthread_mutex_unlock(&ct_lock);
}

static void grid_across_namespaces(const char *dir, const char *transport, const char *ucx_tls)
{
    char err[800] = "";
    hd_cluster_h c = NULL;
    pid_t w[NW];
    hd_cluster_params_t p = {.pp = 2, .ep = 2, .model_dir = dir, .transport = transport,
                             .listen_host = bridge_ip, .max_running = 4, .max_waiting = 64,
                             .step_tokens = 48, .prefill_chunk = 13, .max_context = 256,
                             .err = err, .err_len = sizeof(err)};
    HD_CHECK_MSG(hd_cluster_create(&p, &c) == HD_OK, "%s", err);
    if (c == NULL) {
        return;
    }
    for (int i = 0; i < NW; i++) {
        w[i] = spawn_in_ns(i, hd_cluster_port(c), i, ucx_tls);
    }
    hd_status_t st = hd_cluster_wait_ready(c, 30000);
    HD_CHECK_MSG(st == HD_OK, "%s grid across namespaces not ready: %s", transport,
                 hd_status_string(st));
    if (st == HD_OK) {
        check_refs(c, transport);
        /* the worker of rank 2 dies in its namespace; a new one there takes its cell */
        reap(w[2]);
        w[2] = spawn_in_ns(2, hd_cluster_port(c), 2, ucx_tls);
        double t0 = ct_now();
        hd_cluster_stats_t s;
        do {
            usleep(20000);
            hd_cluster_stats(c, &s);
        } while ((s.epoch < 2 || !s.ready) && ct_now() - t0 < 30);
        HD_CHECK_MSG(s.ready && s.epoch >= 2, "%s: not re-placed (epoch %llu)", transport,
                     (unsigned long long)s.epoch);
        check_refs(c, transport);
        printf("  %s across 4 namespaces: equal to one engine, worker replaced (epoch %llu)\n",
               transport, (unsigned long long)s.epoch);
    }
    hd_cluster_destroy(c);
    for (int i = 0; i < NW; i++) {
        reap(w[i]);
    }
}

HD_TEST(grid_across_network_namespaces)
{
    char dir[1200];
    if (geteuid() != 0) {
        HD_SKIP("network namespaces need root");
    }
    if (sh("command -v ip > /dev/null 2>&1") != 0) {
        HD_SKIP("no ip(8) command");
    }
    if (!net_setup()) {
        net_down();
        HD_SKIP("cannot create network namespaces / veth pairs / a bridge here");
    }
    HD_CHECK_INT_EQ(tu_checkpoint("tiny-a", 7, dir, sizeof(dir)), 0);
    hd_engine_h full = ct_open_full(dir);
    if (full != NULL) {
        ct_setup(full, refs, 4, true);
        hd_engine_destroy(full);
        grid_across_namespaces(dir, "tcp", NULL);
        if (hd_net_transport_usable("ucx")) {
            grid_across_namespaces(dir, "ucx", "tcp,self");
        } else {
            printf("  ucx: not in this build, only tcp crossed the namespaces\n");
        }
    }
    net_down();
}
