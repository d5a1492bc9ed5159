/*
 * cli_serve.c - the process grid from the command line:
 *   hadal worker       join a coordinator (hadal-worker)
 *   hadal coordinator  a coordinator whose workers join by themselves (hadal-coordinator)
 *   hadal serve        a coordinator plus its PP x EP local worker processes, supervised
 *   hadal run --pp --ep  (cli_run.c) one prompt on a local process grid: hd_cli_run_grid
 * The runtime is coordinator/cluster.c (hadal/cluster.h) and worker/worker_main.c; this file
 * parses options, finds or generates the model, and prints tokens. `serve` then answers the
 * HTTP API (cli_http.c, coordinator/http.c) on 127.0.0.1:8000 until SIGINT/SIGTERM;
 * `serve --stdin` reads requests (comma-separated prompt ids, one per line) from stdin instead.
 */
#define _GNU_SOURCE
#include "cli.h"
#include "hadal/alloc.h"
#include "hadal/cluster.h"
#include "hadal/config.h"
#include "hadal/gen.h"
#include "hadal/log.h"
#include "hadal/net.h"
#include "hadal/worker.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t serve_stop_flag;
static volatile int serve_stop_int;

static void serve_on_signal(int sig)
{
    (void)sig;
    serve_stop_flag = 1;
    serve_stop_int = 1;
}

static void serve_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = serve_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static double serve_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- hadal worker ---- */

int hd_cli_worker(int argc, char **argv)
{
    static const struct option opts[] = {
        {"coordinator", required_argument, 0, 'c'}, {"rank", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 'j'},     {"name", required_argument, 0, 'n'},
        {"heartbeat-ms", required_argument, 0, 'H'}, {"data-timeout-ms", required_argument, 0, 'D'},
        {"connect-timeout-ms", required_argument, 0, 'C'}, {"bind", required_argument, 0, 'b'},
        {"exit-on-disconnect", no_argument, 0, 'x'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    hd_worker_params_t p = {.requested_rank = -1};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': p.coordinator = optarg; break;
        case 'r': p.requested_rank = (int)strtol(optarg, NULL, 10); break;
        case 'j': p.n_threads = (int)strtol(optarg, NULL, 10); break;
        case 'n': p.name = optarg; break;
        case 'H': p.heartbeat_ms = (int)strtol(optarg, NULL, 10); break;
        case 'D': p.data_timeout_ms = (int)strtol(optarg, NULL, 10); break;
        case 'C': p.connect_timeout_ms = (int)strtol(optarg, NULL, 10); break;
        case 'b': p.bind_host = optarg; break;
        case 'x': p.exit_on_disconnect = true; break;
        case 'h':
        default:
            fprintf(opt == 'h' ? stdout : stderr,
                    "usage: hadal worker --coordinator HOST:PORT [options]\n"
                    "  --rank R               grid rank wanted (default: any free cell)\n"
                    "  --threads N            kernel threads (default: all CPUs)\n"
                    "  --name NAME            worker name (default host:pid)\n"
                    "  --bind HOST            data-plane address (default: our end of the\n"
                    "                         control connection)\n"
                    "  --heartbeat-ms N       heartbeat period (default 500)\n"
                    "  --data-timeout-ms N    longest wait for a peer (default 10000)\n"
                    "  --connect-timeout-ms N keep trying to reach the coordinator (default 30000)\n"
                    "  --exit-on-disconnect   exit when the coordinator goes away (else rejoin)\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (p.coordinator == NULL) {
        fprintf(stderr, "hadal worker: --coordinator HOST:PORT is required\n");
        return 2;
    }
    hd_log_init("worker", p.requested_rank);
    serve_signals();
    p.stop = &serve_stop_int;
    hd_status_t st = hd_worker_run(&p);
    if (st != HD_OK && st != HD_ERR_REMOTE) {
        fprintf(stderr, "hadal worker: %s\n", hd_status_string(st));
    }
    return st == HD_OK ? 0 : 1;
}

/* ---- shared by serve / coordinator / run ---- */

typedef struct {
    int pp, ep;
    const char *model;
    const char *cache;
    const char *listen;
    const char *transport;
    int numerics;
    int threads;
    bool no_restart;
    bool read_stdin;
    int max_tokens;
    int ready_timeout_s;
    int max_running, step_tokens, prefill_chunk, max_in_flight;
    int resume_failed;     /* re-runs of a request hit by a lost worker (0: fail it) */
    bool mpi;              /* launched by mpirun */
    bool grid_given;       /* --pp or --ep on the command line */
    hd_cli_http_opts_t http; /* the HTTP API (cli_http.c) */
} serve_opts_t;

static char serve_model_dir[PATH_MAX]; /* the model serve_start resolved */

/* ---- mpirun: rank 0 coordinates, ranks 1..N-1 are grid ranks 0..N-2 ---- */

static hd_net_h serve_mpi_net; /* rank 0's share of the mpi transport's world communicator */

/*
 * Start MPI and, on ranks > 0, run the worker of grid rank (MPI rank - 1) once rank 0 has
 * broadcast its control address. True when this process was a worker (*@rc_p: exit code).
 */
static bool serve_mpi_worker(serve_opts_t *o, int *rc_p)
{
    int rank = 0, size = 0;
    char addr[256] = "";
    if (hd_cli_mpi_init(&rank, &size) != 0) {
        *rc_p = 1;
        return true;
    }
    if (!o->grid_given) {
        o->pp = 1;
        o->ep = size - 1;
    }
    if (size < 2 || o->pp * o->ep != size - 1) {
        if (rank == 0) {
            fprintf(stderr, "hadal: mpirun -np %d gives %d workers; the grid %dx%d needs %d "
                    "(plus rank 0, the coordinator)\n", size, size - 1, o->pp, o->ep,
                    o->pp * o->ep);
        }
        hd_cli_mpi_finalize();
        *rc_p = 2;
        return true;
    }
    if (rank == 0) {
        return false;
    }
    if (hd_cli_mpi_bcast(addr, sizeof(addr)) != 0 || addr[0] == '\0') {
        hd_cli_mpi_finalize();
        *rc_p = 1; /* the coordinator could not start; it said why */
        return true;
    }
    hd_log_init("worker", rank - 1);
    hd_worker_params_t wp = {.coordinator = addr, .requested_rank = rank - 1,
                             .n_threads = o->threads, .exit_on_disconnect = true,
                             .stop = &serve_stop_int};
    hd_status_t st = hd_worker_run(&wp);
    hd_net_destroy(serve_mpi_net);
    hd_cli_mpi_finalize();
    *rc_p = st == HD_OK ? 0 : 1;
    return true;
}

/* Rank 0, after the coordinator started (or failed: @c NULL): tell the workers where it is. */
static int serve_mpi_publish(hd_cluster_h c, const char *host, const serve_opts_t *o)
{
    char addr[256] = "";
    if (c != NULL) {
        snprintf(addr, sizeof(addr), "%s:%d", host, hd_cluster_port(c));
    }
    if (hd_cli_mpi_bcast(addr, sizeof(addr)) != 0) {
        return -1;
    }
    if (c != NULL && o->transport != NULL && strcmp(o->transport, "mpi") == 0) {
        /* the transport's communicator is created collectively by every rank, us included */
        hd_net_params_t np = {.transport = "mpi", .rank = -1, .n_ranks = 0};
        if (hd_net_create(&np, &serve_mpi_net) != HD_OK) {
            return -1;
        }
    }
    return 0;
}

static void serve_mpi_done(void)
{
    hd_net_destroy(serve_mpi_net);
    serve_mpi_net = NULL;
    hd_cli_mpi_finalize();
}

static void serve_mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0755);
            *p = '/';
        }
    }
    mkdir(tmp, 0755);
}

/* The built-in model: tiny-a, seed 1, generated once into the cache directory. */
static int serve_default_model(const char *cache, char *dir, size_t len)
{
    char base[PATH_MAX / 2], probe[PATH_MAX + 64], err[512] = "";
    struct stat sb;
    hd_model_config_t cfg;
    if (cache != NULL) {
        snprintf(base, sizeof(base), "%s", cache);
    } else {
        const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        if (xdg != NULL && xdg[0] != '\0') {
            snprintf(base, sizeof(base), "%s/hadal", xdg);
        } else {
            snprintf(base, sizeof(base), "%s/.cache/hadal", home ? home : "/tmp");
        }
    }
    serve_mkdirs(base);
    snprintf(dir, len, "%s/tiny-a-s1", base);
    snprintf(probe, sizeof(probe), "%s/model.safetensors.index.json", dir);
    if (stat(probe, &sb) == 0) {
        return 0;
    }
    if (hd_config_preset("tiny-a", &cfg) != HD_OK) {
        return 1;
    }
    fprintf(stderr, "hadal: generating the built-in tiny-a model (seed 1) in %s\n", dir);
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", dir, (int)getpid());
    hd_gen_params_t gp = {.seed = 1, .out_dir = tmp, .n_threads = 1};
    if (hd_gen_model(&cfg, &gp, err, sizeof(err)) != HD_OK) {
        fprintf(stderr, "hadal: gen-model tiny-a: %s\n", err);
        return 1;
    }
    if (rename(tmp, dir) != 0 && stat(probe, &sb) != 0) {
        fprintf(stderr, "hadal: cannot move %s to %s: %s\n", tmp, dir, strerror(errno));
        return 1;
    }
    return 0;
}

static int serve_self_exe(char *buf, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n <= 0) {
        return -1;
    }
    buf[n] = '\0';
    return 0;
}

static hd_status_t serve_start(const serve_opts_t *o, bool local, hd_cluster_h *c_p)
{
    char model[PATH_MAX], exe[PATH_MAX], host[256] = "127.0.0.1", err[1024] = "";
    char adv[256] = "127.0.0.1";
    int port = 0;
    hd_status_t st = HD_ERR_IO;
    if (o->mpi) {
        /* workers on other nodes need a routable address (launcher environment) */
        const char *ls = getenv("OMPI_COMM_WORLD_LOCAL_SIZE"), *ws = getenv("OMPI_COMM_WORLD_SIZE");
        if (ls != NULL && ws != NULL && strcmp(ls, ws) != 0) {
            snprintf(host, sizeof(host), "0.0.0.0");
            gethostname(adv, sizeof(adv) - 1);
        }
        local = false;
    }
    if (o->model != NULL) {
        snprintf(model, sizeof(model), "%s", o->model);
    } else if (serve_default_model(o->cache, model, sizeof(model)) != 0) {
        goto fail;
    }
    snprintf(serve_model_dir, sizeof(serve_model_dir), "%s", model);
    if (o->listen != NULL) {
        const char *colon = strrchr(o->listen, ':');
        if (colon == NULL) {
            port = (int)strtol(o->listen, NULL, 10);
        } else {
            snprintf(host, sizeof(host), "%.*s", (int)(colon - o->listen), o->listen);
            port = (int)strtol(colon + 1, NULL, 10);
        }
        snprintf(adv, sizeof(adv), "%s", host);
    }
    if (local && serve_self_exe(exe, sizeof(exe)) != 0) {
        fprintf(stderr, "hadal: cannot find my own executable\n");
        goto fail;
    }
    hd_cluster_params_t cp = {
        .pp = o->pp, .ep = o->ep, .model_dir = model, .numerics = o->numerics,
        .transport = o->transport, .listen_host = host, .listen_port = port,
        .worker_exe = local ? exe : NULL, .worker_threads = o->threads,
        .no_restart = o->no_restart, .max_running = o->max_running,
        .step_tokens = o->step_tokens, .prefill_chunk = o->prefill_chunk,
        .max_in_flight = o->max_in_flight, .max_waiting = o->http.max_waiting,
        .resume_failed = o->resume_failed,
        .max_context = o->http.max_context, .err = err, .err_len = sizeof(err)};
    st = hd_cluster_create(&cp, c_p);
    if (st != HD_OK) {
        fprintf(stderr, "hadal: %s\n", err);
        goto fail;
    }
    fprintf(stderr, "hadal: coordinator on %s:%d, grid %dx%d, model %s%s\n", host,
            hd_cluster_port(*c_p), o->pp, o->ep, model,
            local ? "" : o->mpi ? " (mpirun ranks 1..N-1 work)" : " (waiting for workers)");
    if (o->mpi && serve_mpi_publish(*c_p, adv, o) != 0) {
        fprintf(stderr, "hadal: MPI bootstrap failed\n");
        hd_cluster_destroy(*c_p);
        *c_p = NULL;
        return HD_ERR_IO;
    }
    return HD_OK;
fail:
    if (o->mpi) {
        (void)serve_mpi_publish(NULL, adv, o); /* the workers learn there is nothing to join */
    }
    return st;
}

/* ---- requests from stdin (serve --stdin) ---- */

typedef struct {
    int line;
    int32_t *tok;
    int n, cap;
} serve_req_t;

static pthread_mutex_t serve_out_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t serve_out_cond = PTHREAD_COND_INITIALIZER;
static int serve_open;

static const char *serve_finish_name(hd_finish_t f)
{
    switch (f) {
    case HD_FINISH_STOP: return "stop";
    case HD_FINISH_LENGTH: return "length";
    case HD_FINISH_CANCELLED: return "cancelled";
    case HD_FINISH_ERROR: return "error";
    default: return "none";
    }
}

static void serve_on_token(void *user, hd_req_id_t id, int32_t token, hd_finish_t finish,
                           const char *why)
{
    serve_req_t *r = user;
    (void)id;
    if (token >= 0 && r->n < r->cap) {
        r->tok[r->n++] = token;
    }
    if (finish == HD_FINISH_NONE) {
        return;
    }
    pthread_mutex_lock(&serve_out_lock);
    printf("%d:", r->line);
    for (int i = 0; i < r->n; i++) {
        printf(" %d", r->tok[i]);
    }
    printf(" [%s%s%s]\n", serve_finish_name(finish), why ? ": " : "", why ? why : "");
    fflush(stdout);
    hd_free(r->tok);
    hd_free(r);
    serve_open--;
    pthread_cond_broadcast(&serve_out_cond);
    pthread_mutex_unlock(&serve_out_lock);
}

static int serve_parse_ids(const char *s, int32_t *ids, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) {
            s++;
            continue;
        }
        ids[n++] = (int32_t)v;
        s = end;
    }
    return n;
}

static void serve_stdin(hd_cluster_h c, const serve_opts_t *o)
{
    char line[65536];
    static int32_t ids[16384];
    int lineno = 0;
    const hd_model_config_t *cfg = hd_cluster_config(c);
    while (!serve_stop_flag && fgets(line, sizeof(line), stdin) != NULL) {
        int n = serve_parse_ids(line, ids, (int)(sizeof(ids) / sizeof(ids[0])));
        lineno++;
        if (n == 0) {
            continue;
        }
        serve_req_t *r = hd_calloc(1, sizeof(*r), "serve request");
        r->line = lineno;
        r->cap = o->max_tokens;
        r->tok = hd_calloc((size_t)o->max_tokens, sizeof(int32_t), "serve tokens");
        hd_request_t rq = {.prompt = ids, .n_prompt = n, .max_tokens = o->max_tokens,
                           .stop_ids = &cfg->eos_id, .n_stop = 1,
                           .sampling = {.temperature = 0.0f, .top_p = 1.0f},
                           .on_token = serve_on_token, .user = r};
        hd_req_id_t id;
        pthread_mutex_lock(&serve_out_lock);
        serve_open++;
        pthread_mutex_unlock(&serve_out_lock);
        hd_status_t st = hd_cluster_submit(c, &rq, &id);
        if (st != HD_OK) {
            pthread_mutex_lock(&serve_out_lock);
            serve_open--;
            printf("%d: [refused: %s]\n", lineno,
                   st == HD_ERR_NO_MEMORY ? "queue full, retry later" : hd_status_string(st));
            fflush(stdout);
            pthread_mutex_unlock(&serve_out_lock);
            hd_free(r->tok);
            hd_free(r);
        }
    }
    pthread_mutex_lock(&serve_out_lock);
    while (serve_open > 0 && !serve_stop_flag) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&serve_out_cond, &serve_out_lock, &ts);
    }
    pthread_mutex_unlock(&serve_out_lock);
}

static void serve_usage(FILE *f, const char *cmd)
{
    fprintf(f,
            "usage: hadal %s [options]\n"
            "  --pp P --ep E          grid: stages x expert-parallel columns (default 1 x 2)\n"
            "  --model DIR            checkpoint (default: the built-in tiny-a model, seed 1,\n"
            "                         generated once under --cache)\n"
            "  --cache DIR            cache for the built-in model (default ~/.cache/hadal)\n"
            "  --listen HOST:PORT     control port for workers (default 127.0.0.1:0 = any)\n"
            "  --transport T          workers' data plane: tcp (default), ucx, mpi\n"
            "  --numerics official|plain\n"
            "  --threads N            kernel threads per local worker (default CPUs / workers)\n"
            "  --no-restart           do not restart local workers that die\n"
            "  --stdin                read requests from stdin: prompt ids per line; print\n"
            "                         'LINE: tokens [finish]' when each ends\n"
            "  --max-tokens N         tokens per stdin request (default 16)\n"
            "  --max-running N --step-tokens N --prefill-chunk N --in-flight N   scheduler\n"
            "  --resume-failed N      re-run a request hit by a lost worker up to N times\n"
            "                         (exactly the tokens of an uninterrupted run) instead of\n"
            "                         ending it with a retryable error (default 2; 0 = fail)\n"
            "  --mpi                  under mpirun: rank 0 coordinates, ranks 1..N-1 are the\n"
            "                         workers (grid default 1 x N-1; --transport mpi for data)\n"
            "%s%s",
            cmd, hd_cli_http_usage,
            strcmp(cmd, "coordinator") == 0
                ? "Workers join with: hadal worker --coordinator HOST:PORT [--rank R]\n"
                : "Starts a coordinator and P x E `hadal worker` processes on this host.\n");
}

static int serve_parse(int argc, char **argv, serve_opts_t *o, const char *cmd)
{
    static const struct option opts[] = {
        {"pp", required_argument, 0, 'P'},        {"ep", required_argument, 0, 'E'},
        {"model", required_argument, 0, 'm'},     {"cache", required_argument, 0, 'c'},
        {"listen", required_argument, 0, 'l'},    {"transport", required_argument, 0, 't'},
        {"numerics", required_argument, 0, 'u'},  {"threads", required_argument, 0, 'j'},
        {"no-restart", no_argument, 0, 'R'},      {"stdin", no_argument, 0, 'i'},
        {"max-tokens", required_argument, 0, 'n'}, {"max-running", required_argument, 0, 'r'},
        {"step-tokens", required_argument, 0, 's'}, {"prefill-chunk", required_argument, 0, 'k'},
        {"in-flight", required_argument, 0, 'f'}, {"help", no_argument, 0, 'h'},
        {"resume-failed", required_argument, 0, 'F'},
        {"mpi", no_argument, 0, 'M'}, HD_CLI_HTTP_OPTIONS,
        {0, 0, 0, 0}};
    int opt;
    *o = (serve_opts_t){.pp = 1, .ep = 2, .max_tokens = 16, .ready_timeout_s = 600,
                        .resume_failed = 2, .http = {.port = 8000}};
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'P': o->pp = (int)strtol(optarg, NULL, 10); o->grid_given = true; break;
        case 'E': o->ep = (int)strtol(optarg, NULL, 10); o->grid_given = true; break;
        case 'M': o->mpi = true; break;
        case 'm': o->model = optarg; break;
        case 'c': o->cache = optarg; break;
        case 'l': o->listen = optarg; break;
        case 't': o->transport = optarg; break;
        case 'j': o->threads = (int)strtol(optarg, NULL, 10); break;
        case 'R': o->no_restart = true; break;
        case 'i': o->read_stdin = true; break;
        case 'n': o->max_tokens = (int)strtol(optarg, NULL, 10); break;
        case 'r': o->max_running = (int)strtol(optarg, NULL, 10); break;
        case 's': o->step_tokens = (int)strtol(optarg, NULL, 10); break;
        case 'k': o->prefill_chunk = (int)strtol(optarg, NULL, 10); break;
        case 'f': o->max_in_flight = (int)strtol(optarg, NULL, 10); break;
        case 'F': o->resume_failed = (int)strtol(optarg, NULL, 10); break;
        case 'u':
            if (strcmp(optarg, "plain") == 0) {
                o->numerics = 1;
            } else if (strcmp(optarg, "official") == 0) {
                o->numerics = 0;
            } else {
                fprintf(stderr, "hadal %s: --numerics must be official or plain\n", cmd);
                return 2;
            }
            break;
        case 'h': serve_usage(stdout, cmd); return 1;
        default:
            if (hd_cli_http_opt(opt, optarg, &o->http)) {
                break;
            }
            serve_usage(stderr, cmd);
            return 2;
        }
    }
    if (o->pp < 1 || o->ep < 1 || o->max_tokens < 1) {
        serve_usage(stderr, cmd);
        return 2;
    }
    return 0;
}

static int serve_common(int argc, char **argv, const char *cmd, bool local)
{
    serve_opts_t o;
    hd_cluster_h c = NULL;
    int rc = serve_parse(argc, argv, &o, cmd);
    if (rc != 0) {
        return rc == 1 ? 0 : rc;
    }
    serve_signals();
    if (o.mpi && serve_mpi_worker(&o, &rc)) {
        return rc;
    }
    if (o.http.replay_file != NULL || o.http.in_process) {
        /* the in-process backend: the grid in this process, or no model at all (replay) */
        char model[PATH_MAX] = "";
        if (o.http.replay_file == NULL && o.model == NULL &&
            serve_default_model(o.cache, model, sizeof(model)) != 0) {
            return 1;
        }
        hd_sched_params_t sp = {.max_running = o.max_running > 0 ? o.max_running : 64,
                                .max_waiting = o.http.max_waiting > 0 ? o.http.max_waiting : 256,
                                .step_tokens = o.step_tokens > 0 ? o.step_tokens : 256,
                                .prefill_chunk = o.prefill_chunk > 0 ? o.prefill_chunk : 64};
        return hd_cli_http_local(&o.http, o.model ? o.model : model, o.pp, o.ep, o.threads, &sp,
                                 &serve_stop_int);
    }
    if (serve_start(&o, local, &c) != HD_OK) {
        if (o.mpi) {
            serve_mpi_done();
        }
        return 1;
    }
    double t0 = serve_now();
    /* the HTTP server starts at once and answers 503 until the grid is ready */
    while (o.read_stdin && !serve_stop_flag) {
        hd_status_t st = hd_cluster_wait_ready(c, 200);
        if (st == HD_OK) {
            fprintf(stderr, "hadal: grid ready in %.1f s\n", serve_now() - t0);
            break;
        }
        if (st != HD_ERR_TIMEOUT) {
            fprintf(stderr, "hadal: the grid cannot be placed: %s\n", hd_status_string(st));
            hd_cluster_destroy(c);
            if (o.mpi) {
                serve_mpi_done();
            }
            return 1;
        }
    }
    if (o.read_stdin) {
        serve_stdin(c, &o);
    } else if (!serve_stop_flag) {
        rc = hd_cli_http_cluster(&o.http, c, serve_model_dir, o.max_running, o.ep,
                                 &serve_stop_int);
    }
    hd_cluster_stats_t s;
    hd_cluster_stats(c, &s);
    fprintf(stderr, "hadal: %llu steps, %llu prompt + %llu generated tokens, %llu worker "
            "failures, epoch %llu\n", (unsigned long long)s.steps,
            (unsigned long long)s.prompt_tokens, (unsigned long long)s.generated_tokens,
            (unsigned long long)s.worker_failures, (unsigned long long)s.epoch);
    hd_cluster_destroy(c);
    if (o.mpi) {
        serve_mpi_done();
    }
    return rc;
}

int hd_cli_serve(int argc, char **argv)
{
    return serve_common(argc, argv, "serve", true);
}

int hd_cli_coordinator(int argc, char **argv)
{
    return serve_common(argc, argv, "coordinator", false);
}

/* ---- hadal run --pp P --ep E ---- */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    long generated;
    hd_finish_t finish;
    char why[512];
    bool done;
} run_grid_state_t;

static void run_grid_on_token(void *user, hd_req_id_t id, int32_t token, hd_finish_t finish,
                              const char *why)
{
    run_grid_state_t *s = user;
    (void)id;
    pthread_mutex_lock(&s->lock);
    if (token >= 0) {
        printf(s->generated++ ? " %d" : "%d", token);
        fflush(stdout);
    }
    if (finish != HD_FINISH_NONE) {
        s->finish = finish;
        snprintf(s->why, sizeof(s->why), "%s", why ? why : "");
        s->done = true;
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
}

int hd_cli_run_grid(const hd_cli_run_grid_t *a)
{
    serve_opts_t o = {.pp = a->pp, .ep = a->ep, .model = a->model, .numerics = a->numerics,
                      .threads = a->threads, .transport = a->transport, .no_restart = true,
                      .prefill_chunk = a->chunk, .max_in_flight = 0, .mpi = a->mpi,
                      .resume_failed = 2,
                      .grid_given = a->pp > 0 && a->ep > 0};
    hd_cluster_h c = NULL;
    run_grid_state_t s = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
    double t0 = serve_now();
    int rc = 1;
    if (o.mpi && serve_mpi_worker(&o, &rc)) {
        return rc;
    }
    if (serve_start(&o, true, &c) != HD_OK) {
        if (o.mpi) {
            serve_mpi_done();
        }
        return 1;
    }
    hd_status_t st = hd_cluster_wait_ready(c, 600 * 1000);
    if (st != HD_OK) {
        fprintf(stderr, "hadal run: the %dx%d grid did not come up: %s\n", o.pp, o.ep,
                hd_status_string(st));
        hd_cluster_destroy(c);
        if (o.mpi) {
            serve_mpi_done();
        }
        return 1;
    }
    double t_load = serve_now() - t0, t1 = serve_now();
    const hd_model_config_t *cfg = hd_cluster_config(c);
    hd_request_t rq = {.prompt = a->ids, .n_prompt = a->n_ids, .max_tokens = (int)a->max_tokens,
                       .stop_ids = a->ignore_eos ? NULL : &cfg->eos_id, .n_stop = !a->ignore_eos,
                       .sampling = a->sampling, .on_token = run_grid_on_token, .user = &s};
    hd_req_id_t id;
    st = hd_cluster_submit(c, &rq, &id);
    if (st != HD_OK) {
        fprintf(stderr, "hadal run: request refused: %s\n", hd_status_string(st));
        hd_cluster_destroy(c);
        if (o.mpi) {
            serve_mpi_done();
        }
        return st == HD_ERR_INVALID_PARAM ? 2 : 1;
    }
    pthread_mutex_lock(&s.lock);
    while (!s.done && !serve_stop_flag) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&s.cond, &s.lock, &ts);
    }
    pthread_mutex_unlock(&s.lock);
    printf("\n");
    double t_gen = serve_now() - t1;
    hd_cluster_stats_t cs;
    hd_cluster_stats(c, &cs);
    if (s.finish == HD_FINISH_ERROR) {
        fprintf(stderr, "hadal run: %s\n", s.why);
    } else if (s.done) {
        rc = 0;
    }
    fprintf(stderr, "grid %dx%d up in %.3f s; %lld prompt + %ld generated tokens in %.3f s "
            "(%.1f tok/s, %llu steps); coordinator cpu %.3f s\n", o.pp, o.ep, t_load,
            (long long)a->n_ids, s.generated, t_gen, (double)s.generated / (t_gen > 0 ? t_gen : 1),
            (unsigned long long)cs.steps, cs.cpu_seconds);
    hd_cluster_destroy(c);
    if (o.mpi) {
        serve_mpi_done();
    }
    return rc;
}
