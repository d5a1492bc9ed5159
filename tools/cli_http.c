/*
 * cli_http.c - the HTTP side of `hadal serve`: its options (--host, --port, --api-key-file,
 * --max-waiting, ...), the tokenizer, API keys, and the server loop over either backend:
 * the process cluster that cli_serve.c started (the default), or the in-process backend
 * (--in-process: the PP x EP grid inside this process; --replay FILE: no model at all, the
 * "sampler" replays fixed completions, for end-to-end tests with known output).
 */
#include "cli.h"
#include "hadal/alloc.h"
#include "hadal/api.h"
#include "hadal/cluster.h"
#include "hadal/http.h"
#include "hadal/log.h"
#include "hadal/tokenizer.h"
#include "hadal/worker.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

bool hd_cli_http_opt(int code, const char *arg, hd_cli_http_opts_t *o)
{
    switch (code) {
    case HD_CLI_HTTP_HOST: o->host = arg; return true;
    case HD_CLI_HTTP_PORT: o->port = (int)strtol(arg, NULL, 10); return true;
    case HD_CLI_HTTP_KEYS: o->api_key_file = arg; return true;
    case HD_CLI_HTTP_WAIT: o->max_waiting = (int)strtol(arg, NULL, 10); return true;
    case HD_CLI_HTTP_NAME: o->model_name = arg; return true;
    case HD_CLI_HTTP_TOK: o->tokenizer = arg; return true;
    case HD_CLI_HTTP_TIMEOUT: o->timeout_s = (int)strtol(arg, NULL, 10); return true;
    case HD_CLI_HTTP_BODY: o->max_body = (size_t)strtoull(arg, NULL, 10); return true;
    case HD_CLI_HTTP_REPLAY: o->replay_file = arg; return true;
    case HD_CLI_HTTP_REPLAY_MS: o->replay_step_ms = (int)strtol(arg, NULL, 10); return true;
    case HD_CLI_HTTP_INPROC: o->in_process = true; return true;
    case HD_CLI_HTTP_CONTEXT: o->max_context = (int)strtol(arg, NULL, 10); return true;
    case HD_CLI_HTTP_MAXTOK: o->max_tokens_default = (int)strtol(arg, NULL, 10); return true;
    default: return false;
    }
}

const char hd_cli_http_usage[] =
    "HTTP API (OpenAI + Anthropic, see docs/API.md):\n"
    "  --host ADDR            bind address (default 127.0.0.1)\n"
    "  --port N               port (default 8000; 0 = any free port, printed on stderr)\n"
    "  --served-model-name S  the model id clients use (default: the model directory name)\n"
    "  --api-key-file FILE    accepted API keys, one per line (also $HADAL_API_KEY);\n"
    "                         without either, no key is needed\n"
    "  --max-waiting N        admission queue; beyond it 429 (default 256)\n"
    "  --max-context N        prompt + generated tokens per request (default min(4096, model))\n"
    "  --default-max-tokens N when a request does not say (default: up to the context)\n"
    "  --http-timeout S       read/write timeout of a connection in seconds (default 30)\n"
    "  --max-body BYTES       request body limit (default 8 MiB; larger: 413)\n"
    "  --tokenizer FILE       tokenizer.json (default: the model's, else the vendored V4 one)\n"
    "  --in-process           run the grid inside this process instead of worker processes\n"
    "  --replay FILE          test mode, no model: JSON {\"name\": \"completion text\", ...};\n"
    "                         every request produces that text (header X-Hadal-Replay: name\n"
    "                         picks one; default the first)\n"
    "  --replay-step-ms N     test mode: sleep N ms per scheduler step\n";

/* ---- tokenizer, keys, replay scripts ---- */

static hd_tok_h http_tok_open(const char *explicit_path, const char *model_dir)
{
    hd_tok_h tok = NULL;
    if (hd_cli_tok_open(explicit_path, model_dir, &tok) != 0) {
        fprintf(stderr, "hadal serve: cannot load a tokenizer (see the log above)\n");
        return NULL;
    }
    return tok;
}

typedef struct {
    char *data;          /* key file contents (keys point into it) */
    const char *keys[64];
    int n;
} http_keys_t;

static int http_keys_load(const char *file, http_keys_t *k)
{
    memset(k, 0, sizeof(*k));
    const char *env = getenv("HADAL_API_KEY");
    if (env != NULL && env[0] != '\0') {
        k->keys[k->n++] = env;
    }
    if (file == NULL) {
        return 0;
    }
    size_t len;
    if (hd_file_read_all(file, 1 << 20, &k->data, &len) != HD_OK) {
        fprintf(stderr, "hadal serve: cannot read --api-key-file %s\n", file);
        return -1;
    }
    for (char *save = NULL, *line = strtok_r(k->data, "\r\n", &save); line != NULL;
         line = strtok_r(NULL, "\r\n", &save)) {
        while (*line == ' ' || *line == '\t') {
            line++;
        }
        size_t l = strlen(line);
        while (l > 0 && (line[l - 1] == ' ' || line[l - 1] == '\t')) {
            line[--l] = '\0';
        }
        if (l == 0 || line[0] == '#') {
            continue;
        }
        if (k->n == 64) {
            fprintf(stderr, "hadal serve: at most 64 API keys\n");
            return -1;
        }
        k->keys[k->n++] = line;
    }
    if (k->n == 0) {
        fprintf(stderr, "hadal serve: %s holds no API key\n", file);
        return -1;
    }
    return 0;
}

typedef struct {
    hd_json_t *root;
    hd_http_replay_t *scripts;
    int n;
} http_replay_t;

static int http_replay_load(const char *file, http_replay_t *rp)
{
    char *data = NULL, err[256];
    size_t len;
    memset(rp, 0, sizeof(*rp));
    if (hd_file_read_all(file, 64 << 20, &data, &len) != HD_OK) {
        fprintf(stderr, "hadal serve: cannot read --replay %s\n", file);
        return -1;
    }
    hd_status_t st = hd_json_parse(data, len, NULL, &rp->root, err, sizeof(err));
    hd_free(data);
    if (st != HD_OK || rp->root->type != HD_JSON_OBJECT || rp->root->n == 0) {
        fprintf(stderr, "hadal serve: --replay %s must be a JSON object of name -> text%s%s\n",
                file, st != HD_OK ? ": " : "", st != HD_OK ? err : "");
        return -1;
    }
    rp->scripts = hd_calloc(rp->root->n, sizeof(*rp->scripts), "replay scripts");
    if (rp->scripts == NULL) {
        return -1;
    }
    for (size_t i = 0; i < rp->root->n; i++) {
        const hd_json_t *v = rp->root->kids[i];
        if (v->type != HD_JSON_STRING) {
            fprintf(stderr, "hadal serve: --replay %s: %s is not a string\n", file, v->key);
            return -1;
        }
        rp->scripts[i] = (hd_http_replay_t){.name = v->key, .text = v->str};
    }
    rp->n = (int)rp->root->n;
    return 0;
}

static void http_replay_free(http_replay_t *rp)
{
    hd_free(rp->scripts);
    hd_json_free(rp->root);
}

/* ---- the server loop ---- */

static int http_serve(const hd_cli_http_opts_t *o, hd_api_backend_t be, const char *model_dir,
                      const volatile int *stop)
{
    http_keys_t keys;
    http_replay_t rp = {0};
    hd_http_h srv = NULL;
    char name[256];
    int rc = 1;
    hd_tok_h tok = http_tok_open(o->tokenizer, model_dir);
    if (tok == NULL || http_keys_load(o->api_key_file, &keys) != 0) {
        hd_tok_destroy(tok);
        return 1;
    }
    if (o->replay_file != NULL && http_replay_load(o->replay_file, &rp) != 0) {
        goto out;
    }
    if (o->model_name != NULL) {
        snprintf(name, sizeof(name), "%s", o->model_name);
    } else if (model_dir != NULL) {
        const char *b = strrchr(model_dir, '/');
        snprintf(name, sizeof(name), "%s", b && b[1] ? b + 1 : model_dir);
    } else {
        snprintf(name, sizeof(name), "hadal-replay");
    }
    hd_http_params_t hp = {.host = o->host, .port = o->port, .model_name = name, .tok = tok,
                           .backend = be, .max_body_bytes = o->max_body,
                           .timeout_s = o->timeout_s, .max_tokens_default = o->max_tokens_default,
                           .api_keys = keys.keys, .n_api_keys = keys.n, .replay = rp.scripts,
                           .n_replay = rp.n, .stop = stop};
    if (hd_http_create(&hp, &srv) != HD_OK) {
        fprintf(stderr, "hadal serve: cannot listen on %s:%d\n", o->host ? o->host : "127.0.0.1",
                o->port);
        goto out;
    }
    fprintf(stderr, "hadal: serving %s on http://%s:%d (%s backend%s)\n", name,
            o->host ? o->host : "127.0.0.1", hd_http_port(srv), be.ops->name,
            keys.n ? ", API keys required" : "");
    rc = hd_http_run(srv) == HD_OK ? 0 : 1;
out:
    /* before the backend: cancels what is in flight (see hadal/http.h) */
    hd_http_destroy(srv);
    http_replay_free(&rp);
    hd_free(keys.data);
    hd_tok_destroy(tok);
    return rc;
}

/* The HTTP server starts before the grid is ready (/health answers, /ready and requests say
 * 503 until then); this thread reports readiness, and stops the server when the caller asks
 * or when the grid cannot be placed at all. */
typedef struct {
    struct hd_cluster *c;
    const volatile int *ext_stop;
    volatile int stop;          /* the server's stop flag */
    volatile int quit;          /* set when the server loop has ended */
    int fatal;
} http_watch_t;

static void *http_watch_main(void *arg)
{
    http_watch_t *w = arg;
    bool ready = false;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!w->quit) {
        if (*w->ext_stop) {
            w->stop = 1;
            break;
        }
        if (ready) {
            usleep(50 * 1000);
            continue;
        }
        hd_status_t st = hd_cluster_wait_ready(w->c, 50);
        if (st == HD_OK) {
            struct timespec t1;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            fprintf(stderr, "hadal: grid ready in %.1f s\n",
                    (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
            ready = true;
        } else if (st != HD_ERR_TIMEOUT) {
            fprintf(stderr, "hadal: the grid cannot be placed: %s\n", hd_status_string(st));
            w->fatal = 1;
            w->stop = 1;
            break;
        }
    }
    return NULL;
}

int hd_cli_http_cluster(const hd_cli_http_opts_t *o, struct hd_cluster *c, const char *model_dir,
                        int max_running, int ep, const volatile int *stop)
{
    const hd_model_config_t *cfg = hd_cluster_config(c);
    hd_api_backend_t be;
    int ctx = o->max_context > 0 ? o->max_context : (cfg->max_pos < 4096 ? cfg->max_pos : 4096);
    /* sequences are pinned to one of the ep columns, max_running each */
    int cap = (max_running > 0 ? max_running : 64) * (ep > 0 ? ep : 1);
    if (hd_api_cluster_create(c, ctx, o->max_waiting > 0 ? o->max_waiting : 256, cap, &be) !=
        HD_OK) {
        return 1;
    }
    http_watch_t w = {.c = c, .ext_stop = stop};
    pthread_t th;
    if (pthread_create(&th, NULL, http_watch_main, &w) != 0) {
        hd_api_cluster_destroy(&be);
        return 1;
    }
    int rc = http_serve(o, be, model_dir, &w.stop);
    w.quit = 1;
    pthread_join(th, NULL);
    hd_api_cluster_destroy(&be);
    return rc != 0 || w.fatal ? 1 : 0;
}

static hd_status_t http_grid_exec(void *user, const hd_step_t *step, int32_t *tokens_out,
                                  hd_logprobs_t *lp_out)
{
    return hd_local_grid_exec_lp(user, step, tokens_out, lp_out);
}

int hd_cli_http_local(const hd_cli_http_opts_t *o, const char *model_dir, int pp, int ep,
                      int threads, const hd_sched_params_t *sp_in, const volatile int *stop)
{
    hd_local_grid_h g = NULL;
    hd_api_local_h l = NULL;
    hd_sched_params_t sp = *sp_in;
    char err[768] = "";
    int vocab = 0;
    if (o->replay_file == NULL) {
        hd_local_grid_params_t gp = {.model_path = model_dir, .pp = pp, .ep = ep,
                                     .numerics = HD_NUMERICS_OFFICIAL, .n_threads = threads,
                                     .err = err, .err_len = sizeof(err)};
        if (hd_local_grid_create(&gp, &g) != HD_OK) {
            fprintf(stderr, "hadal serve: %s\n", err);
            return 1;
        }
        const hd_model_config_t *cfg = hd_local_grid_config(g);
        vocab = cfg->vocab_size;
        if (sp.max_context <= 0) {
            sp.max_context = cfg->max_pos < 4096 ? cfg->max_pos : 4096;
        }
        sp.n_columns = ep;
    } else {
        vocab = 1 << 30; /* replayed ids are tokenizer ids: no folding */
        model_dir = NULL;
        sp.n_columns = 1;
        if (sp.max_context <= 0) {
            sp.max_context = 4096;
        }
    }
    if (o->max_context > 0) {
        sp.max_context = o->max_context;
    }
    hd_api_local_params_t lp = {.sched = sp, .exec = g ? http_grid_exec : NULL, .exec_user = g,
                                .vocab_size = vocab, .step_delay_us = o->replay_step_ms * 1000};
    if (hd_api_local_create(&lp, &l) != HD_OK) {
        fprintf(stderr, "hadal serve: bad scheduler parameters\n");
        hd_local_grid_destroy(g);
        return 1;
    }
    int rc = http_serve(o, hd_api_local_backend(l), model_dir, stop);
    hd_api_local_destroy(l);
    hd_local_grid_destroy(g);
    return rc;
}
