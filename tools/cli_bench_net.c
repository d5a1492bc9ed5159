/*
 * cli_bench_net.c - `hadal bench alltoall`: the MoE dispatch + combine of one stage row over
 * each transport, against the raw floor measured in the same run.
 *
 * N local ranks (mpirun; the command re-launches itself under mpirun when started plainly)
 * each hold T tokens of `hidden` bf16 values and route every token to top-k of E experts
 * spread evenly over the ranks (a fixed pseudo-random routing). Dispatch sends each token
 * once to every rank owning one of its experts; combine sends one row back per received row.
 * "ours" times the hd_net path the engine uses: an alltoall of the counts, the dispatch
 * alltoallv, the combine alltoallv. The floor is a plain MPI_Alltoallv of exactly the same
 * bytes (dispatch + combine, counts known in advance), timed alternately with ours. The
 * launcher runs mpirun twice: ucx and mpi against Open MPI's default path (shared memory),
 * tcp against Open MPI forced onto TCP, so each meets the floor of its own kind of link. Per
 * iteration the slowest rank's time counts; medians over iterations are reported. With ucx in the list and ucx_perftest on
 * PATH, rank 0 also reports ucx_perftest tag_bw between two processes for the same per-peer
 * message size, as UCX's own point-to-point ceiling on this machine.
 */
#include "cli.h"
#include "hadal/alloc.h"
#include "hadal/net.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#define BN_TIMEOUT_MS 120000
#define BN_MAX_RANKS 64

typedef struct {
    int np;               /* ranks to launch */
    int hidden;           /* values per token row */
    int elem;             /* bytes per value (2: bf16) */
    int topk;             /* experts per token */
    int n_experts;        /* routed experts of the row */
    int tokens[4];        /* batch sizes per rank */
    int n_tokens;
    int iters_small;      /* iterations for batches <= 256 tokens */
    int iters_large;
    char transports[128]; /* comma list */
} bn_opts_t;

typedef struct {
    size_t sc[BN_MAX_RANKS], sd[BN_MAX_RANKS], rc[BN_MAX_RANKS], rd[BN_MAX_RANKS];
    size_t send_bytes;    /* total of sc */
    size_t recv_bytes;
    size_t remote_bytes;  /* dispatch bytes to other ranks */
    uint8_t *disp_send, *disp_recv, *comb_recv;
} bn_layout_t;

static double bn_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t bn_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* Rows rank @from sends to rank @to for a batch of @T tokens (deterministic routing). */
static size_t bn_rows(const bn_opts_t *o, int n, int from, int to, int T)
{
    size_t rows = 0;
    int per = o->n_experts / n;
    for (int t = 0; t < T; t++) {
        bool hit = false;
        for (int s = 0; s < o->topk && !hit; s++) {
            /* distinct experts per token: step through a token-specific permutation */
            uint64_t h = bn_mix(((uint64_t)from << 40) ^ ((uint64_t)t << 8) ^ 0x5bd1e995u);
            int e = (int)((h + (uint64_t)s * (2 * (h >> 32) + 1)) % (uint64_t)o->n_experts);
            hit = e / per == to;
        }
        rows += hit;
    }
    return rows;
}

static int bn_layout(const bn_opts_t *o, int n, int me, int T, bn_layout_t *L)
{
    size_t row = (size_t)o->hidden * (size_t)o->elem;
    memset(L, 0, sizeof(*L));
    for (int j = 0; j < n; j++) {
        L->sc[j] = bn_rows(o, n, me, j, T) * row;
        L->rc[j] = bn_rows(o, n, j, me, T) * row;
        L->sd[j] = L->send_bytes;
        L->rd[j] = L->recv_bytes;
        L->send_bytes += L->sc[j];
        L->recv_bytes += L->rc[j];
        if (j != me) {
            L->remote_bytes += L->sc[j];
        }
    }
    L->disp_send = hd_malloc(L->send_bytes + 1, "bench dispatch send");
    L->disp_recv = hd_malloc(L->recv_bytes + 1, "bench dispatch recv");
    L->comb_recv = hd_malloc(L->send_bytes + 1, "bench combine recv");
    if (L->disp_send == NULL || L->disp_recv == NULL || L->comb_recv == NULL) {
        return -1;
    }
    memset(L->disp_send, 0x3c, L->send_bytes + 1);
    memset(L->disp_recv, 0, L->recv_bytes + 1);
    memset(L->comb_recv, 0, L->send_bytes + 1);
    return 0;
}

static void bn_layout_free(bn_layout_t *L)
{
    hd_free(L->disp_send);
    hd_free(L->disp_recv);
    hd_free(L->comb_recv);
}

/* One dispatch + combine; @raw: the floor (no counts exchange, the library's collective). */
static hd_status_t bn_exchange(hd_net_h net, hd_net_group_h grp, bn_layout_t *L, bool raw)
{
    int n = hd_net_group_size(grp), me = hd_net_group_index(grp);
    hd_status_t st;
    if (raw) {
        st = hd_net_raw_alltoallv(net, grp, L->disp_send, L->sc, L->sd, L->disp_recv, L->rc,
                                  L->rd, BN_TIMEOUT_MS);
        if (st == HD_OK) {
            st = hd_net_raw_alltoallv(net, grp, L->disp_recv, L->rc, L->rd, L->comb_recv, L->sc,
                                      L->sd, BN_TIMEOUT_MS);
        }
        return st;
    }
    /* the engine's path: counts first (receivers do not know them), then the payloads */
    uint64_t cnt_out[BN_MAX_RANKS], cnt_in[BN_MAX_RANKS];
    for (int j = 0; j < n; j++) {
        cnt_out[j] = L->sc[j];
    }
    st = hd_net_alltoall(net, grp, cnt_out, cnt_in, sizeof(uint64_t), BN_TIMEOUT_MS);
    if (st != HD_OK) {
        return st;
    }
    for (int j = 0; j < n; j++) {
        if (cnt_in[j] != L->rc[j]) {
            fprintf(stderr, "bench: rank %d expected %zu bytes from %d, told %llu\n", me, L->rc[j],
                    j, (unsigned long long)cnt_in[j]);
            return HD_ERR_PROTO;
        }
    }
    st = hd_net_alltoallv(net, grp, L->disp_send, L->sc, L->sd, L->disp_recv, L->rc, L->rd,
                          BN_TIMEOUT_MS);
    if (st != HD_OK) {
        return st;
    }
    return hd_net_alltoallv(net, grp, L->disp_recv, L->rc, L->rd, L->comb_recv, L->sc, L->sd,
                            BN_TIMEOUT_MS);
}

static int bn_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double ours;  /* median over iterations of the slowest rank's seconds */
    double floor; /* the same for the raw floor */
    double ratio; /* median of the per-iteration ratios ours / floor */
} bn_result_t;

/* Median of @v[0..n) (sorts it). */
static double bn_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), bn_cmp);
    return v[n / 2];
}

/*
 * Time @iters pairs of exchanges (after warm-up): the floor over the mpi context @boot, then
 * ours over @net/@grp, back to back so both see the same background load of a shared host.
 * Barriers on @boot before each. Returns 0, or -1 when an exchange failed.
 */
static int bn_time(hd_net_h boot, hd_net_group_h bgrp, hd_net_h net, hd_net_group_h grp,
                   bn_layout_t *L, int iters, bn_result_t *res)
{
    int n = hd_net_group_size(bgrp);
    int warm = iters >= 20 ? 5 : 2;
    double *mine = hd_calloc(2 * (size_t)iters, sizeof(double), "bench times");
    double *all = hd_calloc(2 * (size_t)iters * (size_t)n, sizeof(double), "bench times");
    double *ratio = hd_calloc((size_t)iters, sizeof(double), "bench ratios");
    int rc = -1;
    if (mine == NULL || all == NULL || ratio == NULL) {
        goto out;
    }
    for (int it = -warm; it < iters; it++) {
        for (int which = 0; which < 2; which++) {
            if (hd_net_barrier(boot, bgrp, BN_TIMEOUT_MS) != HD_OK) {
                goto out;
            }
            double t0 = bn_now();
            hd_status_t st = which == 0 ? bn_exchange(boot, bgrp, L, true)
                                        : bn_exchange(net, grp, L, false);
            double t1 = bn_now();
            if (st != HD_OK) {
                fprintf(stderr, "bench: %s exchange failed: %s\n",
                        which == 0 ? "floor" : hd_net_name(net), hd_status_string(st));
                goto out;
            }
            if (it >= 0) {
                mine[2 * it + which] = t1 - t0;
            }
        }
    }
    if (hd_net_allgather(boot, bgrp, mine, all, sizeof(double) * 2 * (size_t)iters,
                         BN_TIMEOUT_MS) != HD_OK) {
        goto out;
    }
    for (int it = 0; it < iters; it++) {
        double mx[2] = {0, 0};
        for (int r = 0; r < n; r++) {
            for (int w = 0; w < 2; w++) {
                double t = all[(size_t)r * 2 * (size_t)iters + 2 * (size_t)it + (size_t)w];
                mx[w] = t > mx[w] ? t : mx[w];
            }
        }
        mine[it] = mx[1];
        mine[iters + it] = mx[0];
        ratio[it] = mx[0] > 0 ? mx[1] / mx[0] : 0;
    }
    res->ours = bn_median(mine, iters);
    res->floor = bn_median(mine + iters, iters);
    res->ratio = bn_median(ratio, iters);
    rc = 0;
out:
    hd_free(mine);
    hd_free(all);
    hd_free(ratio);
    return rc;
}

/* Open @name on every rank with addresses exchanged through the mpi context. */
static hd_status_t bn_open(hd_net_h boot, hd_net_group_h bgrp, const char *name, hd_net_h *net_p)
{
    int me = hd_net_rank(boot), n = hd_net_n_ranks(boot);
    hd_net_params_t p = {.transport = name, .rank = me, .n_ranks = n};
    hd_net_h net = NULL;
    hd_status_t st = hd_net_create(&p, &net);
    /* every rank must reach the allgather even when its own open failed */
    enum { SLOT = 4096 };
    uint8_t *mine = hd_calloc(1, SLOT, "bench blob");
    uint8_t *table = hd_calloc((size_t)n, SLOT, "bench blobs");
    if (mine == NULL || table == NULL) {
        hd_free(mine);
        hd_free(table);
        return HD_ERR_NO_MEMORY;
    }
    uint32_t len = 0;
    if (st == HD_OK) {
        const void *blob;
        size_t l;
        hd_net_address(net, &blob, &l);
        if (l + 4 <= SLOT) {
            len = (uint32_t)l;
            memcpy(mine + 4, blob, l);
        }
    }
    memcpy(mine, &len, 4);
    hd_status_t gst = hd_net_allgather(boot, bgrp, mine, table, SLOT, BN_TIMEOUT_MS);
    bool all_ok = gst == HD_OK;
    for (int r = 0; r < n && all_ok; r++) {
        uint32_t l;
        memcpy(&l, table + (size_t)r * SLOT, 4);
        all_ok = l > 0;
    }
    if (all_ok && st == HD_OK) {
        for (int r = 0; r < n && st == HD_OK; r++) {
            uint32_t l;
            memcpy(&l, table + (size_t)r * SLOT, 4);
            if (r != me) {
                st = hd_net_connect(net, r, table + (size_t)r * SLOT + 4, l);
            }
        }
        if (st == HD_OK) {
            st = hd_net_connect_wait(net, BN_TIMEOUT_MS);
        }
    }
    hd_free(mine);
    hd_free(table);
    if (!all_ok && st == HD_OK) {
        st = HD_ERR_REMOTE;
    }
    if (st != HD_OK) {
        hd_net_destroy(net); /* NULL when the open itself failed */
        return st;
    }
    *net_p = net;
    return HD_OK;
}

/* Rank 0 only: ucx_perftest tag_bw between two fresh processes for @bytes messages (MB/s). */
static double bn_perftest(size_t bytes, int iters)
{
    char cmd[512];
    int port = 20000 + (int)(getpid() % 20000);
    snprintf(cmd, sizeof(cmd),
             "command -v ucx_perftest >/dev/null 2>&1 || exit 0; "
             "ucx_perftest -p %d >/dev/null 2>&1 & srv=$!; "
             "for i in $(seq 100); do "
             "  out=$(ucx_perftest 127.0.0.1 -p %d -t tag_bw -s %zu -n %d 2>/dev/null) && break; "
             "  sleep 0.05; "
             "done; kill $srv 2>/dev/null; wait $srv 2>/dev/null; "
             "echo \"$out\" | awk '/^Final:/ {print $7}'",
             port, port, bytes, iters);
    FILE *f = popen(cmd, "r");
    double mbs = -1.0;
    if (f == NULL) {
        return -1.0;
    }
    if (fscanf(f, "%lf", &mbs) != 1) {
        mbs = -1.0;
    }
    pclose(f);
    return mbs;
}

static int bn_child(const bn_opts_t *o)
{
    hd_net_params_t bp = {.transport = "mpi", .rank = -1};
    hd_net_h boot;
    if (hd_net_create(&bp, &boot) != HD_OK) {
        fprintf(stderr, "bench alltoall: cannot open the mpi bootstrap\n");
        return 1;
    }
    int me = hd_net_rank(boot), n = hd_net_n_ranks(boot);
    if (n > BN_MAX_RANKS || o->n_experts % n != 0) {
        if (me == 0) {
            fprintf(stderr, "bench alltoall: %d ranks must divide %d experts (<= %d ranks)\n", n,
                    o->n_experts, BN_MAX_RANKS);
        }
        hd_net_destroy(boot);
        return 2;
    }
    int world[BN_MAX_RANKS];
    for (int r = 0; r < n; r++) {
        world[r] = r;
    }
    hd_net_group_h bgrp;
    if (hd_net_group_create(boot, world, n, &bgrp) != HD_OK) {
        hd_net_destroy(boot);
        return 1;
    }
    if (me == 0) {
        char host[128] = "?";
        gethostname(host, sizeof(host));
        printf("hadal bench alltoall: %d ranks on %s (%ld online CPUs), hidden %d x %d bytes, "
               "top-%d of %d experts\n",
               n, host, sysconf(_SC_NPROCESSORS_ONLN), o->hidden, o->elem, o->topk,
               o->n_experts);
        printf("ours = counts alltoall + dispatch alltoallv + combine alltoallv through hd_net;\n"
               "floor = plain MPI_Alltoallv of the same dispatch + combine bytes, timed in "
               "alternation;\nmedians of the slowest rank; ratio = median of per-iteration "
               "ours/floor\n\n");
        const char *btl = getenv("OMPI_MCA_btl");
        printf("MPI floor transport: %s\n\n",
               btl != NULL && strstr(btl, "tcp") != NULL && strstr(btl, "vader") == NULL
                   ? "TCP loopback (OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,tcp)"
                   : "Open MPI default (shared memory on one host)");
        printf("%-5s %7s %12s %12s %12s %7s %10s\n", "net", "tokens", "bytes/rank", "ours us",
               "floor us", "ratio", "ours GB/s");
    }
    int rc = 0;
    for (int b = 0; b < o->n_tokens; b++) {
        int T = o->tokens[b];
        int iters = T <= 256 ? o->iters_small : o->iters_large;
        bn_layout_t L;
        if (bn_layout(o, n, me, T, &L) != 0) {
            fprintf(stderr, "bench alltoall: out of memory for %d tokens\n", T);
            rc = 1;
            break;
        }
        /* per-rank remote bytes moved (dispatch + combine, both directions sent) */
        double remote = 0;
        for (int j = 0; j < n; j++) {
            remote += j != me ? (double)(L.sc[j] + L.rc[j]) : 0.0;
        }
        char list[128];
        snprintf(list, sizeof(list), "%s", o->transports);
        for (char *save = NULL, *name = strtok_r(list, ",", &save); name != NULL;
             name = strtok_r(NULL, ",", &save)) {
            hd_net_h net = NULL;
            bool own = strcmp(name, "mpi") != 0;
            hd_status_t st = own ? bn_open(boot, bgrp, name, &net) : HD_OK;
            if (!own) {
                net = boot;
            }
            if (st != HD_OK) {
                if (me == 0) {
                    printf("%-5s %7d   unavailable: %s\n", name, T, hd_status_string(st));
                }
                continue;
            }
            hd_net_group_h grp = bgrp;
            if (own && hd_net_group_create(net, world, n, &grp) != HD_OK) {
                hd_net_destroy(net);
                rc = 1;
                continue;
            }
            bn_result_t r = {0, 0, 0};
            if (bn_time(boot, bgrp, net, grp, &L, iters, &r) != 0) {
                rc = 1;
            }
            if (me == 0) {
                printf("%-5s %7d %12.0f %12.1f %12.1f %7.2f %10.2f\n", name, T, remote,
                       r.ours * 1e6, r.floor * 1e6, r.ratio,
                       r.ours > 0 ? remote / r.ours / 1e9 : 0);
                fflush(stdout);
            }
            if (own) {
                hd_net_barrier(boot, bgrp, BN_TIMEOUT_MS);
                hd_net_group_destroy(net, grp);
                hd_net_destroy(net);
            }
        }
        if (me == 0 && strstr(o->transports, "ucx") != NULL) {
            size_t per_peer = 0;
            for (int j = 0; j < n; j++) {
                per_peer = j != me && L.sc[j] > per_peer ? L.sc[j] : per_peer;
            }
            double mbs = bn_perftest(per_peer, T <= 256 ? 200 : 10);
            if (mbs > 0) {
                printf("      ucx_perftest tag_bw, 2 processes, %zu byte messages: %.0f MB/s\n",
                       per_peer, mbs);
            }
        }
        hd_net_barrier(boot, bgrp, BN_TIMEOUT_MS);
        bn_layout_free(&L);
    }
    hd_net_group_destroy(boot, bgrp);
    hd_net_destroy(boot);
    return rc;
}

static void bn_usage(FILE *f)
{
    fprintf(f,
            "usage: hadal bench alltoall [--np N] [--transports tcp,ucx,mpi] [--hidden H]\n"
            "                            [--tokens 64,4096] [--topk K] [--experts E]\n"
            "                            [--iters N] [--iters-large N]\n"
            "MoE dispatch+combine latency and bandwidth of one stage row of N local ranks per\n"
            "transport, against a plain MPI_Alltoallv of the same bytes (and ucx_perftest).\n"
            "Starts itself under mpirun -np N (default 4) unless already launched by mpirun.\n");
}

int hd_cli_bench_alltoall(int argc, char **argv)
{
    bn_opts_t o = {.np = 4, .hidden = 7168, .elem = 2, .topk = 8, .n_experts = 256,
                   .tokens = {64, 4096}, .n_tokens = 2, .iters_small = 50, .iters_large = 8};
    snprintf(o.transports, sizeof(o.transports), "tcp,ucx,mpi");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            bn_usage(stdout);
            return 0;
        }
        if (v == NULL) {
            bn_usage(stderr);
            return 2;
        }
        i++;
        if (strcmp(a, "--np") == 0) {
            o.np = atoi(v);
        } else if (strcmp(a, "--transports") == 0) {
            snprintf(o.transports, sizeof(o.transports), "%s", v);
        } else if (strcmp(a, "--hidden") == 0) {
            o.hidden = atoi(v);
        } else if (strcmp(a, "--topk") == 0) {
            o.topk = atoi(v);
        } else if (strcmp(a, "--experts") == 0) {
            o.n_experts = atoi(v);
        } else if (strcmp(a, "--iters") == 0) {
            o.iters_small = atoi(v);
        } else if (strcmp(a, "--iters-large") == 0) {
            o.iters_large = atoi(v);
        } else if (strcmp(a, "--tokens") == 0) {
            o.n_tokens = 0;
            char buf[128];
            snprintf(buf, sizeof(buf), "%s", v);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t != NULL && o.n_tokens < 4;
                 t = strtok_r(NULL, ",", &save)) {
                o.tokens[o.n_tokens++] = atoi(t);
            }
        } else {
            bn_usage(stderr);
            return 2;
        }
    }
    if (o.np < 2 || o.np > BN_MAX_RANKS || o.hidden < 1 || o.topk < 1 ||
        o.topk > o.n_experts || o.n_tokens < 1 || o.iters_small < 1 || o.iters_large < 1) {
        bn_usage(stderr);
        return 2;
    }
    for (int b = 0; b < o.n_tokens; b++) {
        if (o.tokens[b] < 1) {
            bn_usage(stderr);
            return 2;
        }
    }
    if (hd_net_transport_usable("mpi")) {
        return bn_child(&o);
    }
    hd_net_transport_info_t info;
    if (hd_net_transport_info("mpi", &info) != HD_OK) {
        fprintf(stderr, "hadal bench alltoall: needs the mpi transport (Open MPI) in this build "
                        "for its bootstrap and floor\n");
        return 1;
    }
    /* re-launch under mpirun: tcp against MPI over TCP, the rest against MPI's default
     * (shared memory), so every transport meets the floor of the same kind of link */
    char self[PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (l <= 0) {
        fprintf(stderr, "hadal bench alltoall: cannot find its own executable\n");
        return 1;
    }
    self[l] = '\0';
    char tcp_list[128] = "", other_list[128] = "";
    char list[128];
    snprintf(list, sizeof(list), "%s", o.transports);
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t != NULL;
         t = strtok_r(NULL, ",", &save)) {
        char *dst = strcmp(t, "tcp") == 0 ? tcp_list : other_list;
        size_t used = strlen(dst);
        snprintf(dst + used, sizeof(tcp_list) - used, "%s%s", used ? "," : "", t);
    }
    int rc = 0;
    for (int run = 0; run < 2; run++) {
        const char *which = run == 0 ? other_list : tcp_list;
        if (which[0] == '\0') {
            continue;
        }
        char np[16];
        snprintf(np, sizeof(np), "%d", o.np);
        char *args[80];
        int k = 0;
        args[k++] = "mpirun";
        args[k++] = "-np";
        args[k++] = np;
        args[k++] = "--oversubscribe";
        if (geteuid() == 0) {
            args[k++] = "--allow-run-as-root";
        }
        if (run == 1) {
            args[k++] = "-x";
            args[k++] = "OMPI_MCA_pml=ob1";
            args[k++] = "-x";
            args[k++] = "OMPI_MCA_btl=self,tcp";
        }
        args[k++] = self;
        args[k++] = "bench";
        for (int i = 0; i < argc && k < 76; i++) {
            if (strcmp(argv[i], "--transports") == 0 && i + 1 < argc) {
                i++;
                continue;
            }
            args[k++] = argv[i];
        }
        args[k++] = "--transports";
        args[k++] = (char *)which;
        args[k] = NULL;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            execvp("mpirun", args);
            perror("hadal bench alltoall: mpirun");
            _exit(127);
        }
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0) {
            rc = 1;
        }
        if (run == 0 && tcp_list[0] != '\0') {
            printf("\n");
        }
    }
    return rc;
}
