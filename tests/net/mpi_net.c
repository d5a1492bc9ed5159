/*
 * mpi_net.c - the data plane under a real `mpirun -np 4` (CTest multiproc_mpi_net): the mpi
 * transport's p2p ordering, native alltoallv with uneven/zero counts (whole world and 2x2
 * stage rows) checked byte for byte and against the raw MPI_Alltoallv, allgather; then the
 * bootstrap the architecture describes: tcp and ucx endpoints whose addresses are exchanged
 * through MPI, running the same alltoallv.
 */
#include "hd_test.h"
#include "hadal/net.h"

#include <stdlib.h>
#include <string.h>

#define T_TIMEOUT 20000

static hd_net_h mpi_net;

static hd_net_h world(void)
{
    if (mpi_net == NULL) {
        hd_net_params_t p = {.transport = "mpi", .rank = -1};
        if (hd_net_create(&p, &mpi_net) != HD_OK) {
            mpi_net = NULL;
        }
    }
    return mpi_net;
}

static uint8_t pat(uint64_t a, uint64_t b, uint64_t k)
{
    uint64_t x = a * 0x9e3779b97f4a7c15ull ^ b * 0xc2b2ae3d27d4eb4full ^ k * 0x165667b19e3779f9ull;
    x ^= x >> 29;
    return (uint8_t)(x * 0x94d049bb133111ebull >> 56);
}

static size_t count_of(int from, int to, int round)
{
    static const size_t sizes[] = {0, 1, 7, 4096, 0, 100000, 3, 65536, 0};
    return sizes[(size_t)(from * 5 + to * 3 + round * 7) % (sizeof(sizes) / sizeof(sizes[0]))];
}

/* One uneven alltoallv over @grp, checked; with @raw also through the raw floor path. */
static void a2a_check(hd_net_h net, hd_net_group_h grp, const int *members, int round, bool raw)
{
    int n = hd_net_group_size(grp), me = hd_net_group_index(grp), my = members[me];
    size_t sc[16], sd[16], rc[16], rd[16], stot = 0, rtot = 0;
    for (int j = 0; j < n; j++) {
        sc[j] = count_of(my, members[j], round);
        sd[j] = stot;
        stot += sc[j] + 5;
        rc[j] = count_of(members[j], my, round);
        rd[j] = rtot + 3;
        rtot += rc[j] + 3;
    }
    uint8_t *s = malloc(stot + 1), *r = malloc(rtot + 1);
    for (int j = 0; j < n; j++) {
        for (size_t k = 0; k < sc[j]; k++) {
            s[sd[j] + k] = pat((uint64_t)my, (uint64_t)members[j], k + (size_t)round);
        }
    }
    for (int pass = 0; pass < (raw ? 2 : 1); pass++) {
        memset(r, 0xEE, rtot + 1);
        hd_status_t st = pass == 0
                             ? hd_net_alltoallv(net, grp, s, sc, sd, r, rc, rd, T_TIMEOUT)
                             : hd_net_raw_alltoallv(net, grp, s, sc, sd, r, rc, rd, T_TIMEOUT);
        HD_CHECK_INT_EQ(st, HD_OK);
        size_t bad = 0;
        for (int j = 0; j < n; j++) {
            for (size_t k = 0; k < rc[j]; k++) {
                bad += r[rd[j] + k] != pat((uint64_t)members[j], (uint64_t)my, k + (size_t)round);
            }
            bad += r[rd[j] - 1] != 0xEE;
        }
        HD_CHECK_MSG(bad == 0, "%s round %d rank %d pass %d: %zu wrong bytes", hd_net_name(net),
                     round, my, pass, bad);
    }
    free(s);
    free(r);
}

HD_TEST(mpi_world_and_caps)
{
    hd_net_h net = world();
    HD_CHECK_TRUE(net != NULL);
    if (net == NULL) {
        return;
    }
    HD_CHECK_INT_EQ(hd_net_n_ranks(net), 4);
    HD_CHECK_TRUE(hd_net_caps(net) & HD_NET_CAP_COLL);
    HD_CHECK_TRUE(hd_net_caps(net) & HD_NET_CAP_NEEDS_MPI);
    HD_CHECK_TRUE(hd_net_transport_usable("mpi"));
}

HD_TEST(mpi_p2p_ordered)
{
    hd_net_h net = world();
    if (net == NULL) {
        HD_SKIP("no mpi context");
    }
    int me = hd_net_rank(net), n = hd_net_n_ranks(net);
    int to = (me + 1) % n, from = (me + n - 1) % n;
    uint32_t out[200], in[200];
    hd_net_req_h sr[200], rr[200];
    for (int i = 0; i < 200; i++) {
        out[i] = (uint32_t)(me * 1000 + i);
        HD_CHECK_INT_EQ(hd_net_recv(net, from, 3, &in[i], sizeof(in[i]), &rr[i]), HD_INPROGRESS);
    }
    for (int i = 0; i < 200; i++) {
        hd_status_t st = hd_net_send(net, to, 3, &out[i], sizeof(out[i]), &sr[i]);
        HD_CHECK_TRUE(st == HD_OK || st == HD_INPROGRESS);
        if (st == HD_OK) {
            sr[i] = NULL;
        }
    }
    HD_CHECK_INT_EQ(hd_net_wait_all(net, sr, 200, T_TIMEOUT), HD_OK);
    for (int i = 0; i < 200; i++) {
        size_t len = 0;
        HD_CHECK_INT_EQ(hd_net_wait(net, rr[i], &len, T_TIMEOUT), HD_OK);
        HD_CHECK_INT_EQ(len, 4);
        HD_CHECK_INT_EQ(in[i], from * 1000 + i);
        hd_net_req_free(net, rr[i]);
        hd_net_req_free(net, sr[i]);
    }
}

HD_TEST(mpi_alltoallv_uneven)
{
    hd_net_h net = world();
    if (net == NULL) {
        HD_SKIP("no mpi context");
    }
    int all[4] = {0, 1, 2, 3};
    hd_net_group_h grp, row;
    HD_CHECK_INT_EQ(hd_net_group_create(net, all, 4, &grp), HD_OK);
    for (int round = 0; round < 4; round++) {
        a2a_check(net, grp, all, round, true);
    }
    int me = hd_net_rank(net);
    int members[2] = {me % 2, me % 2 + 2};
    HD_CHECK_INT_EQ(hd_net_group_create(net, members, 2, &row), HD_OK);
    a2a_check(net, row, members, 5, true);
    uint32_t mine = (uint32_t)(me * 7 + 1), got[4];
    HD_CHECK_INT_EQ(hd_net_allgather(net, grp, &mine, got, sizeof(mine), T_TIMEOUT), HD_OK);
    for (int j = 0; j < 4; j++) {
        HD_CHECK_INT_EQ(got[j], j * 7 + 1);
    }
    HD_CHECK_INT_EQ(hd_net_barrier(net, grp, T_TIMEOUT), HD_OK);
    hd_net_group_destroy(net, row);
    hd_net_group_destroy(net, grp);
}

/* Open @name on every rank, exchange addresses through MPI, connect, run the alltoallv. */
static void bootstrap_and_exchange(const char *name)
{
    hd_net_h net = world();
    if (net == NULL) {
        HD_SKIP("no mpi context");
    }
    if (!hd_net_transport_usable(name)) {
        HD_SKIP("transport %s not in this build", name);
    }
    int me = hd_net_rank(net), n = hd_net_n_ranks(net);
    int all[4] = {0, 1, 2, 3};
    hd_net_group_h wg;
    HD_CHECK_INT_EQ(hd_net_group_create(net, all, 4, &wg), HD_OK);
    hd_net_params_t p = {.transport = name, .rank = me, .n_ranks = n};
    hd_net_h t;
    HD_CHECK_INT_EQ(hd_net_create(&p, &t), HD_OK);
    const void *blob;
    size_t len;
    hd_net_address(t, &blob, &len);
    enum { SLOT = 4096 };
    static uint8_t mine[SLOT], table[4 * SLOT];
    HD_CHECK_TRUE(len + 4 <= SLOT);
    uint32_t l32 = (uint32_t)len;
    memcpy(mine, &l32, 4);
    memcpy(mine + 4, blob, len);
    HD_CHECK_INT_EQ(hd_net_allgather(net, wg, mine, table, SLOT, T_TIMEOUT), HD_OK);
    for (int r = 0; r < n; r++) {
        if (r != me) {
            memcpy(&l32, table + (size_t)r * SLOT, 4);
            HD_CHECK_INT_EQ(hd_net_connect(t, r, table + (size_t)r * SLOT + 4, l32), HD_OK);
        }
    }
    HD_CHECK_INT_EQ(hd_net_connect_wait(t, T_TIMEOUT), HD_OK);
    hd_net_group_h grp;
    HD_CHECK_INT_EQ(hd_net_group_create(t, all, 4, &grp), HD_OK);
    for (int round = 0; round < 3; round++) {
        a2a_check(t, grp, all, round, false);
    }
    HD_CHECK_INT_EQ(hd_net_barrier(t, grp, T_TIMEOUT), HD_OK);
    HD_CHECK_INT_EQ(hd_net_barrier(net, wg, T_TIMEOUT), HD_OK); /* all done before closing */
    hd_net_group_destroy(t, grp);
    hd_net_destroy(t);
    hd_net_group_destroy(net, wg);
}

HD_TEST(mpi_bootstrap_tcp) { bootstrap_and_exchange("tcp"); }
HD_TEST(mpi_bootstrap_ucx) { bootstrap_and_exchange("ucx"); }

HD_TEST(zz_close)
{
    hd_net_destroy(mpi_net);
    mpi_net = NULL;
}
