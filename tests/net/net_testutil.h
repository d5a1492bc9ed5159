/*
 * net_testutil.h - forked peers for the transport tests.
 *
 * tu_spawn() forks n children that each run fn(oob, arg) as one rank and exit with the
 * number of failed checks. The parent relays out-of-band allgathers between them over
 * socketpairs (what the coordinator's address table does in production) and enforces one
 * deadline on the whole group: children still running then are killed and reported. A child
 * that exits early (the peer-death tests) is left out of later allgather rounds.
 */
#ifndef HD_NET_TESTUTIL_H
#define HD_NET_TESTUTIL_H

#include "hd_test.h"
#include "hadal/net.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TU_MAX 16
#define TU_DEAD UINT32_MAX

typedef struct {
    int fd;   /* socket to the parent */
    int rank; /* this child's rank */
    int n;    /* children */
} tu_oob_t;

static inline int64_t tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int tu_io(int fd, void *buf, size_t len, bool wr, int64_t deadline)
{
    uint8_t *p = buf;
    while (len > 0) {
        int left = (int)(deadline - tu_now_ms());
        if (left <= 0) {
            return -1;
        }
        struct pollfd pfd = {fd, wr ? POLLOUT : POLLIN, 0};
        if (poll(&pfd, 1, left) <= 0) {
            continue;
        }
        ssize_t n = wr ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Out-of-band allgather through the parent: @all gets n slots of @slot bytes; lens[r] =
 * bytes of rank r (TU_DEAD when that rank exited). Returns 0 on success. */
static inline int tu_allgather(tu_oob_t *oob, const void *data, uint32_t len, void *all,
                               size_t slot, uint32_t *lens)
{
    int64_t deadline = tu_now_ms() + 20000;
    if (tu_io(oob->fd, &len, 4, true, deadline) || tu_io(oob->fd, (void *)data, len, true, deadline)) {
        return -1;
    }
    for (int r = 0; r < oob->n; r++) {
        uint32_t l;
        if (tu_io(oob->fd, &l, 4, false, deadline)) {
            return -1;
        }
        lens[r] = l;
        if (l != TU_DEAD) {
            if (l > slot || tu_io(oob->fd, (uint8_t *)all + (size_t)r * slot, l, false, deadline)) {
                return -1;
            }
        }
    }
    return 0;
}

static inline int tu_barrier(tu_oob_t *oob)
{
    uint8_t all[TU_MAX];
    uint32_t lens[TU_MAX];
    uint8_t one = 1;
    return tu_allgather(oob, &one, 1, all, 1, lens);
}

/* Open @transport (needing @caps) for this rank and connect it to every other rank. */
static inline hd_status_t tu_net_open_caps(tu_oob_t *oob, const char *transport, uint32_t caps,
                                           hd_net_h *net_p)
{
    hd_net_params_t params = {.transport = transport, .rank = oob->rank, .n_ranks = oob->n,
                              .required_caps = caps};
    hd_net_h net;
    const void *blob;
    size_t len;
    static uint8_t all[TU_MAX * 4096];
    uint32_t lens[TU_MAX];
    hd_status_t st = hd_net_create(&params, &net);
    if (st != HD_OK) {
        return st;
    }
    hd_net_address(net, &blob, &len);
    if (len > 4096 || tu_allgather(oob, blob, (uint32_t)len, all, 4096, lens)) {
        hd_net_destroy(net);
        return HD_ERR_IO;
    }
    for (int r = 0; r < oob->n; r++) {
        if (r != oob->rank) {
            st = hd_net_connect(net, r, all + (size_t)r * 4096, lens[r]);
            if (st != HD_OK) {
                hd_net_destroy(net);
                return st;
            }
        }
    }
    st = hd_net_connect_wait(net, 10000);
    if (st != HD_OK) {
        hd_net_destroy(net);
        return st;
    }
    *net_p = net;
    return HD_OK;
}

static inline hd_status_t tu_net_open(tu_oob_t *oob, const char *transport, hd_net_h *net_p)
{
    return tu_net_open_caps(oob, transport, 0, net_p);
}

typedef void (*tu_child_func_t)(tu_oob_t *oob, void *arg);

/* Relay one allgather round among the live children. Returns -1 on deadline. */
static inline int tu_parent_loop(int n, int *fds, bool *live, int64_t deadline)
{
    uint8_t *buf[TU_MAX] = {0};
    uint32_t got[TU_MAX];
    bool have[TU_MAX] = {0};
    for (;;) {
        int need = 0;
        for (int r = 0; r < n; r++) {
            need += live[r] && !have[r];
        }
        int any_live = 0;
        for (int r = 0; r < n; r++) {
            any_live += live[r];
        }
        if (any_live == 0) {
            return 0;
        }
        if (need == 0) {
            for (int r = 0; r < n; r++) {
                if (!live[r]) {
                    continue;
                }
                for (int s = 0; s < n; s++) {
                    uint32_t l = live[s] && have[s] ? got[s] : TU_DEAD;
                    if (tu_io(fds[r], &l, 4, true, deadline) ||
                        (l != TU_DEAD && tu_io(fds[r], buf[s], l, true, deadline))) {
                        live[r] = false;
                        break;
                    }
                }
            }
            for (int r = 0; r < n; r++) {
                free(buf[r]);
                buf[r] = NULL;
                have[r] = false;
            }
            continue;
        }
        struct pollfd pfds[TU_MAX];
        int idx[TU_MAX], k = 0;
        for (int r = 0; r < n; r++) {
            if (live[r] && !have[r]) {
                pfds[k] = (struct pollfd){fds[r], POLLIN, 0};
                idx[k++] = r;
            }
        }
        int left = (int)(deadline - tu_now_ms());
        if (left <= 0) {
            return -1;
        }
        if (poll(pfds, (nfds_t)k, left) <= 0) {
            continue;
        }
        for (int i = 0; i < k; i++) {
            int r = idx[i];
            if (pfds[i].revents == 0) {
                continue;
            }
            uint32_t l;
            if (tu_io(fds[r], &l, 4, false, deadline) || l > (64u << 20)) {
                live[r] = false; /* exited (or broken): out of the rounds */
                continue;
            }
            buf[r] = malloc(l ? l : 1);
            if (buf[r] == NULL || tu_io(fds[r], buf[r], l, false, deadline)) {
                live[r] = false;
                continue;
            }
            got[r] = l;
            have[r] = true;
        }
    }
}

/*
 * Fork @n children running @fn; relay their allgathers; wait for all within @timeout_ms.
 * Returns the number of children that failed (non-zero exit, signal, or still running at
 * the deadline); each failure is reported as a test failure.
 */
static inline int tu_spawn(int n, int timeout_ms, tu_child_func_t fn, void *arg)
{
    int fds[TU_MAX];
    pid_t pids[TU_MAX];
    bool live[TU_MAX];
    int64_t deadline = tu_now_ms() + timeout_ms;
    fflush(stdout);
    fflush(stderr);
    for (int r = 0; r < n; r++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
            HD_CHECK_MSG(0, "socketpair failed");
            return n;
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(sv[0]);
            for (int q = 0; q < r; q++) {
                close(fds[q]);
            }
            tu_oob_t oob = {sv[1], r, n};
            hd_test_failures = 0;
            fn(&oob, arg);
            fflush(stdout);
            fflush(stderr);
            exit(hd_test_failures ? 1 : 0); /* exit, not _exit: leak checkers see the child */
        }
        close(sv[1]);
        fds[r] = sv[0];
        pids[r] = pid;
        live[r] = true;
    }
    int loop_rc = tu_parent_loop(n, fds, live, deadline);
    int failed = 0;
    for (int r = 0; r < n; r++) {
        int status = 0;
        pid_t got = 0;
        while ((got = waitpid(pids[r], &status, WNOHANG)) == 0 && tu_now_ms() < deadline) {
            struct pollfd pfd = {fds[r], POLLIN, 0};
            (void)poll(&pfd, 1, 20); /* a child closing its socket wakes us early */
        }
        if (got == 0) {
            kill(pids[r], SIGKILL);
            waitpid(pids[r], &status, 0);
            HD_CHECK_MSG(0, "rank %d still running at the %d ms deadline (killed)", r, timeout_ms);
            failed++;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            HD_CHECK_MSG(0, "rank %d failed (status 0x%x)", r, status);
            failed++;
        }
        close(fds[r]);
    }
    HD_CHECK_MSG(loop_rc == 0, "out-of-band relay hit the deadline");
    return failed;
}

#endif /* HD_NET_TESTUTIL_H */
