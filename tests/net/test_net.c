/*
 * test_net.c - the transport suite, defined once and run for every p2p transport usable in
 * this build (tcp always; ucx when compiled in), with forked processes as peers over
 * loopback: ordered delivery (pre-posted and unexpected), large messages, alltoallv with
 * uneven and zero counts (whole world and a sub-group), truncation, deadlines, peer death.
 * TCP-only tests speak raw bytes to a context: garbage frames and unknown ranks are refused
 * and the context keeps working.
 */
#include "hd_test.h"
#include "net_testutil.h"
#include "hadal/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_TIMEOUT 8000

static const char *cur_transport;

static bool suite_skip(const char *name)
{
    if (!hd_net_transport_usable(name)) {
        printf("  SKIPPED: transport %s is not in this build\n", name);
        hd_test_skipped_flag = 1;
        return true;
    }
    return false;
}

static uint8_t pat(uint64_t a, uint64_t b, uint64_t k)
{
    uint64_t x = a * 0x9e3779b97f4a7c15ull ^ b * 0xc2b2ae3d27d4eb4full ^ k * 0x165667b19e3779f9ull;
    x ^= x >> 29;
    return (uint8_t)(x * 0x94d049bb133111ebull >> 56);
}

/* ---- ordered delivery ---- */

#define ORD_N 600

static void child_ordered(tu_oob_t *oob, void *arg)
{
    hd_net_h net;
    hd_status_t st = tu_net_open(oob, cur_transport, &net);
    HD_CHECK_INT_EQ(st, HD_OK);
    if (st != HD_OK) {
        return;
    }
    if (oob->rank == 1) {
        /* tag 7: sizes cycle through 0..4096; tag 9 interleaved */
        static uint8_t bufs[ORD_N][512];
        hd_net_req_h reqs[2 * ORD_N];
        int nr = 0;
        for (int i = 0; i < ORD_N; i++) {
            size_t len = (size_t)(i * 37) % 512;
            for (size_t k = 0; k < len; k++) {
                bufs[i][k] = pat(1, (uint64_t)i, k);
            }
            hd_net_req_h r = NULL;
            st = hd_net_send(net, 0, 7, bufs[i], len, &r);
            HD_CHECK_TRUE(st == HD_OK || st == HD_INPROGRESS);
            reqs[nr++] = r;
            if (i % 3 == 0) {
                static uint32_t seq[ORD_N];
                seq[i] = (uint32_t)i;
                r = NULL;
                st = hd_net_send(net, 0, 9, &seq[i], sizeof(seq[i]), &r);
                HD_CHECK_TRUE(st == HD_OK || st == HD_INPROGRESS);
                reqs[nr++] = r;
            }
        }
        HD_CHECK_INT_EQ(hd_net_wait_all(net, reqs, nr, T_TIMEOUT), HD_OK);
        for (int i = 0; i < nr; i++) {
            hd_net_req_free(net, reqs[i]);
        }
    } else {
        /* pre-post the first 100 receives of tag 7, let the rest arrive unexpected */
        static uint8_t rbuf[ORD_N][512];
        hd_net_req_h reqs[ORD_N];
        for (int i = 0; i < 100; i++) {
            HD_CHECK_INT_EQ(hd_net_recv(net, 1, 7, rbuf[i], 512, &reqs[i]), HD_INPROGRESS);
        }
        /* tag 9 messages in order, drained first (everything on tag 7 queues meanwhile) */
        for (int i = 0; i < ORD_N; i += 3) {
            uint32_t v = 0;
            size_t len = 0;
            st = hd_net_recv_sync(net, 1, 9, &v, sizeof(v), &len, T_TIMEOUT);
            HD_CHECK_INT_EQ(st, HD_OK);
            HD_CHECK_INT_EQ(len, sizeof(v));
            HD_CHECK_INT_EQ(v, i);
        }
        for (int i = 100; i < ORD_N; i++) {
            HD_CHECK_INT_EQ(hd_net_recv(net, 1, 7, rbuf[i], 512, &reqs[i]), HD_INPROGRESS);
        }
        int bad = 0;
        for (int i = 0; i < ORD_N; i++) {
            size_t len = 0;
            st = hd_net_wait(net, reqs[i], &len, T_TIMEOUT);
            HD_CHECK_INT_EQ(st, HD_OK);
            size_t want = (size_t)(i * 37) % 512;
            HD_CHECK_INT_EQ(len, want);
            for (size_t k = 0; k < want && k < len; k++) {
                bad += rbuf[i][k] != pat(1, (uint64_t)i, k);
            }
            hd_net_req_free(net, reqs[i]);
        }
        HD_CHECK_INT_EQ(bad, 0);
    }
    HD_CHECK_INT_EQ(tu_barrier(oob), 0);
    hd_net_destroy(net);
}

static void run_ordered(const char *t)
{
    if (suite_skip(t)) {
        return;
    }
    cur_transport = t;
    HD_CHECK_INT_EQ(tu_spawn(2, 20000, child_ordered, NULL), 0);
}

HD_TEST(tcp_ordered_delivery) { run_ordered("tcp"); }
HD_TEST(ucx_ordered_delivery) { run_ordered("ucx"); }

/* ---- large messages both ways at once ---- */

#define BIG (40u << 20)

static void child_large(tu_oob_t *oob, void *arg)
{
    hd_net_h net;
    hd_status_t st = tu_net_open(oob, cur_transport, &net);
    HD_CHECK_INT_EQ(st, HD_OK);
    if (st != HD_OK) {
        return;
    }
    int peer = 1 - oob->rank;
    uint8_t *s = malloc(BIG), *r = malloc(BIG + 64);
    for (size_t k = 0; k < BIG; k++) {
        s[k] = (uint8_t)(k * 131 + (size_t)oob->rank * 7 + (k >> 20));
    }
    hd_net_req_h rr, sr = NULL;
    HD_CHECK_INT_EQ(hd_net_recv(net, peer, 3, r, BIG + 64, &rr), HD_INPROGRESS);
    st = hd_net_send(net, peer, 3, s, BIG, &sr);
    HD_CHECK_TRUE(st == HD_OK || st == HD_INPROGRESS);
    size_t len = 0;
    HD_CHECK_INT_EQ(hd_net_wait(net, rr, &len, 15000), HD_OK);
    HD_CHECK_INT_EQ(len, BIG);
    if (sr != NULL) {
        HD_CHECK_INT_EQ(hd_net_wait(net, sr, NULL, 15000), HD_OK);
    }
    hd_net_req_free(net, rr);
    hd_net_req_free(net, sr);
    size_t bad = 0;
    for (size_t k = 0; k < BIG; k++) {
        bad += r[k] != (uint8_t)(k * 131 + (size_t)peer * 7 + (k >> 20));
    }
    HD_CHECK_INT_EQ(bad, 0);
    /* a second one arriving before its receive is posted (unexpected path): rank 1 first
     * waits for the small tag-5 message sent after it, so tag 4 lands unclaimed */
    if (oob->rank == 0) {
        hd_net_req_h big = NULL;
        uint32_t done = 5;
        st = hd_net_send(net, 1, 4, s, BIG / 2, &big);
        HD_CHECK_TRUE(st == HD_OK || st == HD_INPROGRESS);
        HD_CHECK_INT_EQ(hd_net_send_sync(net, 1, 5, &done, sizeof(done), 15000), HD_OK);
        if (big != NULL) {
            HD_CHECK_INT_EQ(hd_net_wait(net, big, NULL, 15000), HD_OK);
            hd_net_req_free(net, big);
        }
    } else {
        uint32_t done = 0;
        HD_CHECK_INT_EQ(hd_net_recv_sync(net, 0, 5, &done, sizeof(done), &len, 15000), HD_OK);
        HD_CHECK_INT_EQ(done, 5);
        memset(r, 0, BIG);
        HD_CHECK_INT_EQ(hd_net_recv_sync(net, 0, 4, r, BIG, &len, 15000), HD_OK);
        HD_CHECK_INT_EQ(len, BIG / 2);
        bad = 0;
        for (size_t k = 0; k < BIG / 2; k++) {
            bad += r[k] != (uint8_t)(k * 131 + (k >> 20));
        }
        HD_CHECK_INT_EQ(bad, 0);
    }
    HD_CHECK_INT_EQ(tu_barrier(oob), 0);
    free(s);
    free(r);
    hd_net_destroy(net);
}

static void run_large(const char *t)
{
    if (suite_skip(t)) {
        return;
    }
    cur_transport = t;
    HD_CHECK_INT_EQ(tu_spawn(2, 25000, child_large, NULL), 0);
}

HD_TEST(tcp_large_messages) { run_large("tcp"); }
HD_TEST(ucx_large_messages) { run_large("ucx"); }

/* ---- alltoallv with uneven counts including zeros ---- */

#define A2A_N 4

static size_t a2a_count(int from, int to, int round)
{
    static const size_t sizes[] = {0, 1, 7, 4096, 0, 100000, 3, 65536, 0};
    return sizes[(size_t)(from * 5 + to * 3 + round * 7) % (sizeof(sizes) / sizeof(sizes[0]))];
}

static void a2a_check(hd_net_h net, hd_net_group_h grp, const int *members, int round)
{
    int n = hd_net_group_size(grp), me = hd_net_group_index(grp);
    int my = members[me];
    size_t sc[A2A_N], sd[A2A_N], rc[A2A_N], rd[A2A_N], stot = 0, rtot = 0;
    for (int j = 0; j < n; j++) {
        sc[j] = a2a_count(my, members[j], round);
        sd[j] = stot + 5; /* gaps between blocks */
        stot += sc[j] + 5;
        rc[j] = a2a_count(members[j], my, round);
        rd[j] = rtot + 3;
        rtot += rc[j] + 3;
    }
    uint8_t *s = malloc(stot + 1), *r = malloc(rtot + 1);
    memset(r, 0xEE, rtot + 1);
    for (int j = 0; j < n; j++) {
        for (size_t k = 0; k < sc[j]; k++) {
            s[sd[j] + k] = pat((uint64_t)my, (uint64_t)members[j], k + (size_t)round);
        }
    }
    hd_status_t st = hd_net_alltoallv(net, grp, s, sc, sd, r, rc, rd, T_TIMEOUT);
    HD_CHECK_INT_EQ(st, HD_OK);
    size_t bad = 0, gaps = 0;
    for (int j = 0; j < n; j++) {
        for (size_t k = 0; k < rc[j]; k++) {
            bad += r[rd[j] + k] != pat((uint64_t)members[j], (uint64_t)my, k + (size_t)round);
        }
        gaps += r[rd[j] - 1] != 0xEE;
    }
    HD_CHECK_MSG(bad == 0, "round %d rank %d: %zu wrong bytes", round, my, bad);
    HD_CHECK_MSG(gaps == 0, "round %d rank %d: wrote outside its blocks", round, my);
    free(s);
    free(r);
}

static void child_alltoallv(tu_oob_t *oob, void *arg)
{
    hd_net_h net;
    hd_status_t st = tu_net_open(oob, cur_transport, &net);
    HD_CHECK_INT_EQ(st, HD_OK);
    if (st != HD_OK) {
        return;
    }
    int all[A2A_N] = {0, 1, 2, 3};
    hd_net_group_h grp;
    HD_CHECK_INT_EQ(hd_net_get_async_error(net, NULL), HD_OK);
    HD_CHECK_INT_EQ(hd_net_group_create(net, all, A2A_N, &grp), HD_OK);
    for (int round = 0; round < 4; round++) {
        a2a_check(net, grp, all, round);
    }
    /* fixed-size all-to-all of counts, as the MoE dispatch does first */
    uint32_t cs[A2A_N], cr[A2A_N];
    for (int j = 0; j < A2A_N; j++) {
        cs[j] = (uint32_t)(oob->rank * 10 + j);
    }
    HD_CHECK_INT_EQ(hd_net_alltoall(net, grp, cs, cr, sizeof(uint32_t), T_TIMEOUT), HD_OK);
    for (int j = 0; j < A2A_N; j++) {
        HD_CHECK_INT_EQ(cr[j], j * 10 + oob->rank);
    }
    /* a stage row in a 2x2 grid: ranks {1,3} and {0,2} exchange concurrently */
    int row[2] = {oob->rank % 2, oob->rank % 2 + 2};
    hd_net_group_h rg;
    HD_CHECK_INT_EQ(hd_net_group_create(net, row, 2, &rg), HD_OK);
    a2a_check(net, rg, row, 5);
    HD_CHECK_INT_EQ(hd_net_barrier(net, grp, T_TIMEOUT), HD_OK);
    /* counts that disagree are a protocol error, not a hang */
    if (oob->rank < 2) {
        int pair[2] = {0, 1};
        hd_net_group_h pg;
        HD_CHECK_INT_EQ(hd_net_group_create(net, pair, 2, &pg), HD_OK);
        uint8_t sb[16] = {0}, rb[16];
        size_t sc[2] = {4, 4}, rc[2] = {4, 4}, d[2] = {0, 8};
        if (oob->rank == 1) {
            sc[0] = 6; /* rank 0 expects 4 */
        }
        st = hd_net_alltoallv(net, pg, sb, sc, d, rb, rc, d, T_TIMEOUT);
        HD_CHECK_INT_EQ(st, oob->rank == 0 ? HD_ERR_PROTO : HD_OK);
        hd_net_group_destroy(net, pg);
    }
    HD_CHECK_INT_EQ(hd_net_barrier(net, grp, T_TIMEOUT), HD_OK);
    hd_net_group_destroy(net, rg);
    hd_net_group_destroy(net, grp);
    hd_net_destroy(net);
}

static void run_alltoallv(const char *t)
{
    if (suite_skip(t)) {
        return;
    }
    cur_transport = t;
    HD_CHECK_INT_EQ(tu_spawn(A2A_N, 25000, child_alltoallv, NULL), 0);
}

HD_TEST(tcp_alltoallv_uneven) { run_alltoallv("tcp"); }
HD_TEST(ucx_alltoallv_uneven) { run_alltoallv("ucx"); }

/* ---- many back-to-back alltoallvs with random counts (eager and rendezvous mixed) ---- */

#define STRESS_N 6
#define STRESS_ROUNDS 24

static size_t stress_count(int from, int to, int round)
{
    uint64_t x = (uint64_t)(from * 131 + to * 17 + round * 7919) * 0x9e3779b97f4a7c15ull;
    x ^= x >> 31;
    switch (x % 5) {
    case 0: return 0;
    case 1: return (size_t)(x >> 40) % 300;
    case 2: return (64u << 10) - 1 + (size_t)(x >> 40) % 3; /* around the threshold */
    case 3: return (size_t)(x >> 40) % (200u << 10);
    default: return (size_t)(x >> 40) % 4096;
    }
}

static void child_stress(tu_oob_t *oob, void *arg)
{
    hd_net_h net;
    hd_status_t st = tu_net_open(oob, cur_transport, &net);
    HD_CHECK_INT_EQ(st, HD_OK);
    if (st != HD_OK) {
        return;
    }
    int all[STRESS_N] = {0, 1, 2, 3, 4, 5}, me = oob->rank;
    hd_net_group_h grp;
    HD_CHECK_INT_EQ(hd_net_group_create(net, all, STRESS_N, &grp), HD_OK);
    size_t bad = 0;
    for (int round = 0; round < STRESS_ROUNDS && hd_test_failures == 0; round++) {
        size_t sc[STRESS_N], sd[STRESS_N], rc[STRESS_N], rd[STRESS_N], st_ = 0, rt = 0;
        for (int j = 0; j < STRESS_N; j++) {
            sc[j] = stress_count(me, j, round);
            rc[j] = stress_count(j, me, round);
            sd[j] = st_;
            rd[j] = rt;
            st_ += sc[j];
            rt += rc[j];
        }
        uint8_t *s = malloc(st_ + 1), *r = malloc(rt + 1);
        for (int j = 0; j < STRESS_N; j++) {
            for (size_t k = 0; k < sc[j]; k++) {
                s[sd[j] + k] = pat((uint64_t)me, (uint64_t)j, k * 3 + (size_t)round);
            }
        }
        HD_CHECK_INT_EQ(hd_net_alltoallv(net, grp, s, sc, sd, r, rc, rd, T_TIMEOUT), HD_OK);
        for (int j = 0; j < STRESS_N; j++) {
            for (size_t k = 0; k < rc[j]; k++) {
                bad += r[rd[j] + k] != pat((uint64_t)j, (uint64_t)me, k * 3 + (size_t)round);
            }
        }
        free(s);
        free(r);
    }
    HD_CHECK_INT_EQ(bad, 0);
    HD_CHECK_INT_EQ(hd_net_barrier(net, grp, T_TIMEOUT), HD_OK);
    hd_net_group_destroy(net, grp);
    hd_net_destroy(net);
}

static void run_stress(const char *t)
{
    if (suite_skip(t)) {
        return;
    }
    cur_transport = t;
    HD_CHECK_INT_EQ(tu_spawn(STRESS_N, 25000, child_stress, NULL), 0);
}

HD_TEST(tcp_alltoallv_stress) { run_stress("tcp"); }
HD_TEST(ucx_alltoallv_stress) { run_stress("ucx"); }

/* ---- truncation and deadlines ---- */

static void child_trunc(tu_oob_t *oob, void *arg)
{
    hd_net_h net;
    hd_status_t st = tu_net_open(oob, cur_transport, &net);
    HD_CHECK_INT_EQ(st, HD_OK);
    if (st != HD_OK) {
        return;
    }
    if (oob->rank == 1) {
        uint8_t big[1000] = {1};
        uint32_t after = 0xabcd;
        HD_CHECK_INT_EQ(hd_net_send_sync(net, 0, 5, big, sizeof(big), T_TIMEOUT), HD_OK);
        HD_CHECK_INT_EQ(hd_net_send_sync(net, 0, 5, &after, sizeof(after), T_TIMEOUT), HD_OK);
    } else {
        uint8_t small[100];
        uint32_t v = 0;
        size_t len = 0;
        /* nothing on tag 6: the deadline passes, then the request can be freed */
        hd_net_req_h req;
        HD_CHECK_INT_EQ(hd_net_recv(net, 1, 6, small, sizeof(small), &req), HD_INPROGRESS);
        int64_t t0 = tu_now_ms();
        HD_CHECK_INT_EQ(hd_net_wait(net, req, NULL, 300), HD_ERR_TIMEOUT);
        int64_t dt = tu_now_ms() - t0;
        HD_CHECK_MSG(dt >= 290 && dt < 1500, "timed out after %lld ms", (long long)dt);
        hd_net_req_free(net, req);
        /* a message longer than the buffer fails its receive; the next one still arrives */
        st = hd_net_recv_sync(net, 1, 5, small, sizeof(small), &len, T_TIMEOUT);
        HD_CHECK_INT_EQ(st, HD_ERR_PROTO);
        st = hd_net_recv_sync(net, 1, 5, &v, sizeof(v), &len, T_TIMEOUT);
        HD_CHECK_INT_EQ(st, HD_OK);
        HD_CHECK_INT_EQ(v, 0xabcd);
    }
    HD_CHECK_INT_EQ(tu_barrier(oob), 0);
    hd_net_destroy(net);
}

static void run_trunc(const char *t)
{
    if (suite_skip(t)) {
        return;
    }
    cur_transport = t;
    HD_CHECK_INT_EQ(tu_spawn(2, 20000, child_trunc, NULL), 0);
}

HD_TEST(tcp_truncation_and_deadline) { run_trunc("tcp"); }
HD_TEST(ucx_truncation_and_deadline) { run_trunc("ucx"); }

/* ---- cancelled receives; an abandoned half-sent message ---- */

static void child_cancel(tu_oob_t *oob, void *arg)
{
    hd_net_h net;
    hd_status_t st = tu_net_open(oob, cur_transport, &net);
    HD_CHECK_INT_EQ(st, HD_OK);
    if (st != HD_OK) {
        return;
    }
    if (oob->rank == 0) {
        /* a receive freed before anything arrived takes nothing away from the next one */
        uint32_t a = 0, b = 0;
        hd_net_req_h r1, r2;
        HD_CHECK_INT_EQ(hd_net_recv(net, 1, 8, &a, sizeof(a), &r1), HD_INPROGRESS);
        hd_net_req_free(net, r1);
        HD_CHECK_INT_EQ(hd_net_recv(net, 1, 8, &b, sizeof(b), &r2), HD_INPROGRESS);
        HD_CHECK_INT_EQ(tu_barrier(oob), 0); /* rank 1 sends after this */
        HD_CHECK_INT_EQ(hd_net_wait(net, r2, NULL, T_TIMEOUT), HD_OK);
        HD_CHECK_INT_EQ(b, 0x5eed);
        HD_CHECK_INT_EQ(a, 0);
        hd_net_req_free(net, r2);
    } else {
        uint32_t v = 0x5eed;
        HD_CHECK_INT_EQ(tu_barrier(oob), 0);
        HD_CHECK_INT_EQ(hd_net_send_sync(net, 0, 8, &v, sizeof(v), T_TIMEOUT), HD_OK);
    }
    HD_CHECK_INT_EQ(tu_barrier(oob), 0);
    if (strcmp(cur_transport, "tcp") == 0) {
        /* tcp: freeing a send that is partly on the wire aborts the connection, so the
         * receiver sees an error instead of a stream that is out of step */
        static uint8_t big[64 << 20];
        if (oob->rank == 1) {
            /* rank 0 reads nothing until we are done (it waits in the barrier), so 64 MB
             * cannot all fit the socket buffers */
            hd_net_req_h req = NULL;
            st = hd_net_send(net, 0, 9, big, sizeof(big), &req);
            HD_CHECK_INT_EQ(st, HD_INPROGRESS);
            hd_net_req_free(net, req);
            HD_CHECK_INT_EQ(hd_net_send_sync(net, 0, 9, big, 4, T_TIMEOUT), HD_ERR_REMOTE);
            HD_CHECK_INT_EQ(tu_barrier(oob), 0);
        } else {
            HD_CHECK_INT_EQ(tu_barrier(oob), 0);
            size_t len = 0;
            st = hd_net_recv_sync(net, 1, 9, big, sizeof(big), &len, T_TIMEOUT);
            HD_CHECK_INT_EQ(st, HD_ERR_REMOTE);
        }
    }
    hd_net_destroy(net);
}

static void run_cancel(const char *t)
{
    if (suite_skip(t)) {
        return;
    }
    cur_transport = t;
    HD_CHECK_INT_EQ(tu_spawn(2, 20000, child_cancel, NULL), 0);
}

HD_TEST(tcp_cancel_and_abandon) { run_cancel("tcp"); }
HD_TEST(ucx_cancel_and_abandon) { run_cancel("ucx"); }

/* ---- peer death: an error, never a hang ---- */

static void child_death(tu_oob_t *oob, void *arg)
{
    hd_net_h net;
    hd_status_t st = tu_net_open_caps(oob, cur_transport, *(const uint32_t *)arg, &net);
    HD_CHECK_INT_EQ(st, HD_OK);
    if (st != HD_OK) {
        return;
    }
    uint32_t v = 1;
    HD_CHECK_INT_EQ(hd_net_send_sync(net, 1 - oob->rank, 1, &v, sizeof(v), T_TIMEOUT), HD_OK);
    size_t len;
    HD_CHECK_INT_EQ(hd_net_recv_sync(net, 1 - oob->rank, 1, &v, sizeof(v), &len, T_TIMEOUT),
                    HD_OK);
    if (oob->rank == 1) {
        _exit(hd_test_failures ? 1 : 0); /* dies without closing anything */
    }
    /* a receive pending when the peer dies, and sends after it */
    int64_t t0 = tu_now_ms();
    st = hd_net_recv_sync(net, 1, 2, &v, sizeof(v), &len, 2000);
    int64_t dt = tu_now_ms() - t0;
    HD_CHECK_MSG(st == HD_ERR_REMOTE || st == HD_ERR_TIMEOUT, "recv from a dead peer: %s",
                 hd_status_string(st));
    if (strcmp(cur_transport, "tcp") == 0 || *(const uint32_t *)arg != 0) {
        HD_CHECK_INT_EQ(st, HD_ERR_REMOTE); /* a closed socket / UCX peer mode report it */
        HD_CHECK_MSG(dt < 1500, "noticed after %lld ms", (long long)dt);
    }
    static uint8_t blk[1 << 20];
    hd_status_t sst = HD_OK;
    for (int i = 0; i < 64 && sst == HD_OK; i++) {
        sst = hd_net_send_sync(net, 1, 2, blk, sizeof(blk), 2000);
    }
    HD_CHECK_MSG(sst != HD_OK, "64 MB sent to a dead peer without an error");
    int bad_peer = -1;
    HD_CHECK_INT_EQ(hd_net_get_async_error(net, &bad_peer), HD_ERR_REMOTE);
    HD_CHECK_INT_EQ(bad_peer, 1);
    hd_net_destroy(net);
}

static void run_death(const char *t, uint32_t caps)
{
    if (suite_skip(t)) {
        return;
    }
    cur_transport = t;
    HD_CHECK_INT_EQ(tu_spawn(2, 25000, child_death, &caps), 0);
}

HD_TEST(tcp_peer_death) { run_death("tcp", 0); }
/* default endpoints (shared memory allowed): an error or the deadline, never a hang */
HD_TEST(ucx_peer_death) { run_death("ucx", 0); }
/* peer error handling asked for: UCX fails the requests itself */
HD_TEST(ucx_peer_death_peer_mode) { run_death("ucx", HD_NET_CAP_PEER_FAILURE); }

/* ---- registry ---- */

HD_TEST(registry_and_caps)
{
    hd_net_transport_info_t info;
    HD_CHECK_INT_EQ(hd_net_transport_info("tcp", &info), HD_OK);
    HD_CHECK_TRUE(info.caps & HD_NET_CAP_P2P);
    HD_CHECK_TRUE(info.caps & HD_NET_CAP_HOST_MEM);
    HD_CHECK_TRUE(!(info.caps & HD_NET_CAP_DEVICE_MEM));
    HD_CHECK_TRUE(info.max_msg_bytes >= (1u << 30));
    HD_CHECK_INT_EQ(hd_net_transport_info("carrier-pigeon", &info), HD_ERR_NOT_FOUND);
    bool has_tcp = false;
    for (const char *const *n = hd_net_transport_names(); *n != NULL; n++) {
        has_tcp |= strcmp(*n, "tcp") == 0;
        HD_CHECK_INT_EQ(hd_net_transport_info(*n, &info), HD_OK);
    }
    HD_CHECK_TRUE(has_tcp);
    hd_net_params_t p = {.transport = "carrier-pigeon", .rank = 0, .n_ranks = 1};
    hd_net_h net = NULL;
    HD_CHECK_INT_EQ(hd_net_create(&p, &net), HD_ERR_UNSUPPORTED);
    p.transport = "tcp";
    p.required_caps = HD_NET_CAP_DEVICE_MEM;
    HD_CHECK_INT_EQ(hd_net_create(&p, &net), HD_ERR_UNSUPPORTED);
    p.required_caps = 0;
    p.rank = 2; /* outside the world */
    HD_CHECK_INT_EQ(hd_net_create(&p, &net), HD_ERR_INVALID_PARAM);
    if (!hd_net_transport_usable("mpi")) {
        p.transport = "mpi";
        p.rank = -1;
        HD_CHECK_INT_EQ(hd_net_create(&p, &net), HD_ERR_UNSUPPORTED); /* not under mpirun */
    }
    p.transport = "auto";
    p.rank = 0;
    HD_CHECK_INT_EQ(hd_net_create(&p, &net), HD_OK);
    HD_CHECK_TRUE(net != NULL && hd_net_n_ranks(net) == 1);
    /* preference order: ucx when built, else tcp (mpi only under mpirun) */
    HD_CHECK_STR_EQ(hd_net_name(net), hd_net_transport_usable("ucx") ? "ucx" : "tcp");
    hd_net_destroy(net);
    p.required_caps = HD_NET_CAP_COLL; /* only mpi collectives are native */
    if (!hd_net_transport_usable("mpi")) {
        HD_CHECK_INT_EQ(hd_net_create(&p, &net), HD_ERR_UNSUPPORTED);
    }
}

/* ---- tcp: garbage and unknown ranks on the wire ---- */

static int raw_connect(hd_net_h net)
{
    const void *blob;
    size_t len;
    int rank, port;
    char host[100];
    hd_net_address(net, &blob, &len);
    if (sscanf(blob, "hdtcp1 %d %99s %d", &rank, host, &port) != 3) {
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &sin.sin_addr);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4); /* the tests run little-endian */
}

/* Drive @net until @fd is closed by it (or 3 s pass); true when it was closed. */
static bool closed_by_peer(hd_net_h net, int fd)
{
    int64_t deadline = tu_now_ms() + 3000;
    while (tu_now_ms() < deadline) {
        hd_net_progress(net);
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 10) > 0) {
            char b[64];
            ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) {
                return true;
            }
        }
    }
    return false;
}

HD_TEST(tcp_garbage_and_unknown_ranks)
{
    hd_net_params_t p = {.transport = "tcp", .rank = 0, .n_ranks = 3};
    hd_net_h net;
    HD_CHECK_INT_EQ(hd_net_create(&p, &net), HD_OK);
    uint8_t hello[20];
    /* 1: garbage instead of a hello */
    int fd = raw_connect(net);
    HD_CHECK_TRUE(fd >= 0);
    HD_CHECK_INT_EQ(send(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, MSG_NOSIGNAL), 27);
    HD_CHECK_TRUE(closed_by_peer(net, fd));
    close(fd);
    /* 2: a well-formed hello from an unknown rank (7 in a world of 3) */
    put32(hello, 0x4e544448u);
    put32(hello + 4, 1);
    put32(hello + 8, 3);
    put32(hello + 12, 7);
    put32(hello + 16, 0);
    fd = raw_connect(net);
    HD_CHECK_INT_EQ(send(fd, hello, 20, MSG_NOSIGNAL), 20);
    HD_CHECK_TRUE(closed_by_peer(net, fd));
    close(fd);
    /* 3: a hello for another world size */
    put32(hello + 8, 5);
    put32(hello + 12, 1);
    fd = raw_connect(net);
    HD_CHECK_INT_EQ(send(fd, hello, 20, MSG_NOSIGNAL), 20);
    HD_CHECK_TRUE(closed_by_peer(net, fd));
    close(fd);
    /* 4: rank 1 connects properly, sends one good message, then a garbage header */
    put32(hello + 8, 3);
    fd = raw_connect(net);
    HD_CHECK_INT_EQ(send(fd, hello, 20, MSG_NOSIGNAL), 20);
    uint8_t msg[16 + 4];
    put32(msg, 0x4d534448u);
    put32(msg + 4, 11);
    uint64_t len64 = 4;
    memcpy(msg + 8, &len64, 8);
    put32(msg + 16, 0x12345678);
    HD_CHECK_INT_EQ(send(fd, msg, sizeof(msg), MSG_NOSIGNAL), (ssize_t)sizeof(msg));
    uint32_t v = 0;
    size_t len = 0;
    HD_CHECK_INT_EQ(hd_net_recv_sync(net, 1, 11, &v, sizeof(v), &len, 3000), HD_OK);
    HD_CHECK_INT_EQ(v, 0x12345678);
    hd_net_req_h pending;
    HD_CHECK_INT_EQ(hd_net_recv(net, 1, 11, &v, sizeof(v), &pending), HD_INPROGRESS);
    HD_CHECK_INT_EQ(send(fd, "\xde\xad\xbe\xef garbage garbage", 20, MSG_NOSIGNAL), 20);
    HD_CHECK_INT_EQ(hd_net_wait(net, pending, NULL, 3000), HD_ERR_PROTO);
    hd_net_req_free(net, pending);
    HD_CHECK_TRUE(closed_by_peer(net, fd));
    close(fd);
    /* 5: an oversized length is refused before any allocation */
    put32(hello + 12, 2);
    fd = raw_connect(net);
    HD_CHECK_INT_EQ(send(fd, hello, 20, MSG_NOSIGNAL), 20);
    len64 = 1ull << 60;
    memcpy(msg + 8, &len64, 8);
    HD_CHECK_INT_EQ(send(fd, msg, 16, MSG_NOSIGNAL), 16);
    HD_CHECK_TRUE(closed_by_peer(net, fd));
    close(fd);
    HD_CHECK_INT_EQ(hd_net_recv_sync(net, 2, 11, &v, sizeof(v), &len, 100), HD_ERR_PROTO);
    int bad_peer = -1;
    HD_CHECK_INT_EQ(hd_net_get_async_error(net, &bad_peer), HD_ERR_PROTO); /* rank 1 first */
    HD_CHECK_INT_EQ(bad_peer, 1);
    /* the context itself is still fine: a fresh context talks to it */
    hd_net_destroy(net);
}

HD_TEST(tcp_connect_refused_is_error)
{
    /* rank 1 connects to a port nobody listens on: connect_wait fails, never hangs */
    hd_net_params_t p = {.transport = "tcp", .rank = 1, .n_ranks = 2};
    hd_net_h net;
    HD_CHECK_INT_EQ(hd_net_create(&p, &net), HD_OK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sin, sizeof(sin));
    socklen_t sl = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    char blob[64];
    int n = snprintf(blob, sizeof(blob), "hdtcp1 0 127.0.0.1 %d", ntohs(sin.sin_port));
    close(fd); /* bound, never listening, now closed: connection refused */
    HD_CHECK_INT_EQ(hd_net_connect(net, 0, blob, (size_t)n + 1), HD_OK);
    int64_t t0 = tu_now_ms();
    HD_CHECK_INT_EQ(hd_net_connect_wait(net, 3000), HD_ERR_REMOTE);
    HD_CHECK_TRUE(tu_now_ms() - t0 < 2000);
    uint32_t v = 0;
    HD_CHECK_INT_EQ(hd_net_send_sync(net, 0, 1, &v, 4, 100), HD_ERR_REMOTE);
    HD_CHECK_INT_EQ(hd_net_connect(net, 0, "garbage", 8), HD_ERR_INVALID_PARAM);
    HD_CHECK_INT_EQ(hd_net_connect(net, 1, blob, (size_t)n + 1), HD_ERR_INVALID_PARAM);
    hd_net_destroy(net);
}
