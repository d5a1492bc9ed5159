/*
 * http.c - the coordinator's HTTP/1.1 server on libevent's evhttp: routing, limits, API keys,
 * admission, and the life of a generation job. A job is one API request: n backend
 * generations ("choices") whose tokens arrive on the backend's thread, are queued to the event
 * loop (inbox), detokenized, checked against stop strings, parsed into reasoning / content /
 * tool-call deltas (hadal/chat.h) and written as SSE events or one JSON body. A client that
 * goes away cancels every choice; the job is freed once every choice has had its final
 * callback. /metrics renders vLLM-compatible Prometheus text from counters kept here.
 */
#define _GNU_SOURCE /* memmem */
#include "hadal/http.h"
#include "api_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- metrics ---- */

typedef struct {
    const double *le;  /* upper bounds, ascending */
    int n;             /* bounds */
    uint64_t cnt[32];  /* per bucket (non-cumulative); [n] = +Inf */
    double sum;
    uint64_t count;
} hist_t;

static const double ttft_le[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0};
static const double itl_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0};
static const double e2e_le[] = {0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0,
                                15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0};

static void hist_add(hist_t *h, double v)
{
    int i = 0;
    while (i < h->n && v > h->le[i]) {
        i++;
    }
    h->cnt[i]++;
    h->sum += v;
    h->count++;
}

enum { FIN_STOP, FIN_LENGTH, FIN_TOOL, FIN_ABORT, FIN_ERROR, FIN_N };
static const char *const fin_names[FIN_N] = {"stop", "length", "tool_calls", "abort", "error"};
static const int http_codes[] = {200, 400, 401, 404, 405, 413, 422, 429, 500, 503};
#define N_CODES ((int)(sizeof(http_codes) / sizeof(http_codes[0])))

typedef struct {
    hist_t ttft, itl, e2e;
    uint64_t fin[FIN_N];
    uint64_t codes[N_CODES];
    uint64_t prompt_tokens, generation_tokens; /* of finished and running API requests */
    uint64_t aborted_disconnect;
    int jobs;                                  /* live jobs */
} metrics_t;

/* ---- jobs ---- */

typedef struct {
    char *name;
    char *args;
    size_t args_len;
    bool complete;
} tool_t;

typedef struct api_job api_job_t;

typedef struct {
    api_job_t *job;
    int index;
    uint64_t bid;               /* backend id */
    bool live;                  /* submitted, final not yet received */
    hd_tok_stream_t detok;
    hd_chat_parser_h parser;    /* chat APIs */
    hd_buf_t hold;              /* text held back while it may begin a stop string */
    bool stopped;               /* a stop string matched: the rest is dropped */
    int stop_idx;
    int n_tokens;
    hd_finish_t finish;
    char why[128];
    double t_last;              /* time of the previous token */
    /* whole-body answers */
    hd_buf_t reasoning, content;
    tool_t *tools;
    int n_tools;
    hd_buf_t lp;                /* whole-body answers: logprobs entries so far (JSON) */
    hd_buf_t lp_tokens, lp_values, lp_tops, lp_offsets; /* the same, completions layout */
    size_t lp_text_off;         /* completions: text offset of the next token */
    int n_lp;
    /* Anthropic stream: the open content block */
    int blk_kind;               /* 0 none, 1 thinking, 2 text, 3 tool_use */
    int n_blocks;
} api_choice_t;

struct api_job {
    hd_http_h srv;
    struct evhttp_request *req; /* NULL once answered */
    struct evhttp_connection *conn; /* NULL once closed */
    struct event *watch;        /* readable socket while we generate: EOF = client gone */
    bool closed;                /* the client went away */
    bool started;               /* stream headers sent */
    api_request_t r;
    char id[48];
    long long created;
    double t_start, t_first;
    api_choice_t *ch;
    int n_done;
    api_job_t *next, *prev;
};

typedef struct {
    api_choice_t *c;
    int32_t token;
    hd_finish_t finish;
    bool has_lp;
    hd_logprobs_t lp;
    char why[96];
} inbox_msg_t;

static void lp_completion_json(const api_choice_t *c, hd_buf_t *b);
static void guard_mark(hd_http_h s, struct evhttp_connection *conn, bool busy);

/*
 * Slow clients. evhttp's timeout only bounds inactivity, so a client trickling one header byte
 * at a time would hold its connection forever. Each connection is guarded: one that has not
 * delivered a whole request within --http-timeout seconds of being accepted (or of its last
 * answer) is shut down.
 */
typedef struct conn_guard {
    hd_http_h srv;
    struct bufferevent *bev;    /* the connection's bufferevent (we hold a reference) */
    double since;               /* accepted, or the last request answered */
    bool busy;                  /* a request is being answered */
    bool shut;                  /* we shut the socket down */
    struct conn_guard *next, *prev;
} conn_guard_t;

struct hd_http {
    hd_http_params_t p;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    struct event *inbox_ev, *stop_ev;
    pthread_mutex_t mu;         /* inbox */
    inbox_msg_t *inbox, *spare;
    int n_inbox, cap_inbox, cap_spare;
    hd_api_limits_t lim;
    int32_t eos_id;             /* tokenizer id of the end-of-sentence marker */
    int32_t model_eos;          /* the same in the model's vocabulary */
    int32_t **replay_ids;       /* per script */
    int *n_replay_ids;
    api_job_t *jobs;            /* live jobs */
    uint64_t next_job;
    metrics_t m;
    struct evbuffer *scratch;
    conn_guard_t *guards;       /* live connections */
    struct event *sweep_ev;
    uint64_t slow_closed;       /* connections closed for reading a request too slowly */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void count_code(hd_http_h s, int code)
{
    for (int i = 0; i < N_CODES; i++) {
        if (http_codes[i] == code) {
            s->m.codes[i]++;
        }
    }
}

/* ---- replies ---- */

static const char *openai_err_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 429:
        return "rate_limit_error";
    case 500:
        return "server_error";
    case 503:
        return "service_unavailable_error";
    default:
        return "invalid_request_error";
    }
}

static const char *anth_err_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 503:
        return "overloaded_error";
    case 400:
    case 405:
    case 422:
        return "invalid_request_error";
    default:
        return "api_error";
    }
}

static void err_json(hd_buf_t *b, bool anth, const api_err_t *e)
{
    if (anth) {
        hd_buf_printf(b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":",
                      e->type ? e->type : anth_err_type(e->status));
        hd_buf_json_str(b, e->msg, strlen(e->msg));
        hd_buf_puts(b, "}}");
        return;
    }
    hd_buf_puts(b, "{\"error\":{\"message\":");
    hd_buf_json_str(b, e->msg, strlen(e->msg));
    hd_buf_printf(b, ",\"type\":\"%s\",\"param\":", e->type ? e->type : openai_err_type(e->status));
    if (e->param[0]) {
        hd_buf_json_str(b, e->param, strlen(e->param));
    } else {
        hd_buf_puts(b, "null");
    }
    hd_buf_puts(b, ",\"code\":");
    if (e->code) {
        hd_buf_json_str(b, e->code, strlen(e->code));
    } else {
        hd_buf_puts(b, "null");
    }
    hd_buf_puts(b, "}}");
}

static void reply_body(hd_http_h s, struct evhttp_request *req, int code, const char *ctype,
                       const char *body, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    evbuffer_add(s->scratch, body, len);
    count_code(s, code);
    evhttp_send_reply(req, code, NULL, s->scratch);
    evbuffer_drain(s->scratch, evbuffer_get_length(s->scratch));
}

static void reply_json(hd_http_h s, struct evhttp_request *req, int code, const hd_buf_t *b)
{
    if (b->failed) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                  "\"server_error\",\"param\":null,\"code\":null}}";
        reply_body(s, req, 500, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    reply_body(s, req, code, "application/json", b->data ? b->data : "", b->len);
}

static void reply_err(hd_http_h s, struct evhttp_request *req, bool anth, const api_err_t *e)
{
    hd_buf_t b;
    hd_buf_init(&b);
    err_json(&b, anth, e);
    if (e->status == 429 || e->status == 503) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", s->p.retry_after_s);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", ra);
    }
    reply_json(s, req, e->status, &b);
    hd_buf_cleanup(&b);
}

/* Write @b as one chunk of the streamed answer (nothing once the client is gone). */
static void job_write(api_job_t *j, const hd_buf_t *b)
{
    if (j->req == NULL || j->closed || b->len == 0) {
        return;
    }
    evbuffer_add(j->srv->scratch, b->data, b->len);
    evhttp_send_reply_chunk(j->req, j->srv->scratch);
    evbuffer_drain(j->srv->scratch, evbuffer_get_length(j->srv->scratch));
}

/* ---- streaming events ---- */

static bool is_anth(const api_job_t *j)
{
    return j->r.api == HD_HTTP_API_MESSAGES;
}

/* "data: {<chunk head>,\"choices\":[{\"index\":i," ... caller closes. */
static void oa_chunk_head(api_job_t *j, hd_buf_t *b, int index)
{
    bool chat = j->r.api == HD_HTTP_API_CHAT;
    hd_buf_printf(b, "data: {\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", j->id,
                  chat ? "chat.completion.chunk" : "text_completion", j->created);
    hd_buf_json_str(b, j->r.model, strlen(j->r.model));
    hd_buf_printf(b, ",\"choices\":[{\"index\":%d,", index);
}

static void oa_chunk_tail(api_job_t *j, hd_buf_t *b, const char *finish)
{
    hd_buf_puts(b, "\"logprobs\":null,\"finish_reason\":");
    if (finish) {
        hd_buf_printf(b, "\"%s\"", finish);
    } else {
        hd_buf_puts(b, "null");
    }
    hd_buf_puts(b, "}]");
    if (j->r.include_usage) {
        hd_buf_puts(b, ",\"usage\":null");
    }
    hd_buf_puts(b, "}\n\n");
}

static void anth_event(api_job_t *j, const char *type, const hd_buf_t *data)
{
    hd_buf_t b;
    hd_buf_init(&b);
    hd_buf_printf(&b, "event: %s\ndata: %s\n\n", type, data->data ? data->data : "{}");
    job_write(j, &b);
    hd_buf_cleanup(&b);
}

static void anth_block_stop(api_choice_t *c)
{
    if (c->blk_kind == 0) {
        return;
    }
    hd_buf_t d;
    hd_buf_init(&d);
    if (c->blk_kind == 1) {
        hd_buf_printf(&d, "{\"type\":\"content_block_delta\",\"index\":%d,\"delta\":{\"type\":"
                      "\"signature_delta\",\"signature\":\"\"}}", c->n_blocks - 1);
        anth_event(c->job, "content_block_delta", &d);
        d.len = 0;
    }
    hd_buf_printf(&d, "{\"type\":\"content_block_stop\",\"index\":%d}", c->n_blocks - 1);
    anth_event(c->job, "content_block_stop", &d);
    hd_buf_cleanup(&d);
    c->blk_kind = 0;
}

static void anth_block_start(api_choice_t *c, int kind, const char *name, size_t name_len,
                             size_t tool_index)
{
    hd_buf_t d;
    anth_block_stop(c);
    hd_buf_init(&d);
    hd_buf_printf(&d, "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":",
                  c->n_blocks);
    if (kind == 1) {
        hd_buf_puts(&d, "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}");
    } else if (kind == 2) {
        hd_buf_puts(&d, "{\"type\":\"text\",\"text\":\"\"}}");
    } else {
        hd_buf_printf(&d, "{\"type\":\"tool_use\",\"id\":\"toolu_%s_%zu\",\"name\":", c->job->id,
                      tool_index);
        hd_buf_json_str(&d, name, name_len);
        hd_buf_puts(&d, ",\"input\":{}}}");
    }
    anth_event(c->job, "content_block_start", &d);
    hd_buf_cleanup(&d);
    c->blk_kind = kind;
    c->n_blocks++;
}

static void anth_delta(api_choice_t *c, const char *dtype, const char *field, const char *text,
                       size_t len)
{
    hd_buf_t d;
    hd_buf_init(&d);
    hd_buf_printf(&d, "{\"type\":\"content_block_delta\",\"index\":%d,\"delta\":{\"type\":\"%s\","
                  "\"%s\":", c->n_blocks - 1, dtype, field);
    hd_buf_json_str(&d, text, len);
    hd_buf_puts(&d, "}}");
    anth_event(c->job, "content_block_delta", &d);
    hd_buf_cleanup(&d);
}

/* ---- deltas from the output parser (or raw text for completions) ---- */

static tool_t *choice_tool(api_choice_t *c, size_t idx)
{
    if (idx < (size_t)c->n_tools) {
        return &c->tools[idx];
    }
    tool_t *t = hd_realloc(c->tools, (idx + 1) * sizeof(*t), "api tool calls");
    if (t == NULL) {
        return NULL;
    }
    c->tools = t;
    for (size_t i = (size_t)c->n_tools; i <= idx; i++) {
        memset(&c->tools[i], 0, sizeof(c->tools[i]));
    }
    c->n_tools = (int)idx + 1;
    return &c->tools[idx];
}

static void choice_delta(const hd_chat_delta_t *d, void *user)
{
    api_choice_t *c = user;
    api_job_t *j = c->job;
    hd_buf_t b;
    if (d->kind == HD_CHAT_DELTA_TOOL_START || d->kind == HD_CHAT_DELTA_TOOL_ARGS ||
        d->kind == HD_CHAT_DELTA_TOOL_END) {
        tool_t *t = choice_tool(c, d->tool_index);
        if (t == NULL) {
            return;
        }
        if (d->kind == HD_CHAT_DELTA_TOOL_START) {
            hd_free(t->name);
            t->name = hd_strndup(d->text, d->len, "api tool name");
        } else if (d->kind == HD_CHAT_DELTA_TOOL_ARGS) {
            char *a = hd_realloc(t->args, t->args_len + d->len + 1, "api tool args");
            if (a != NULL) {
                memcpy(a + t->args_len, d->text, d->len);
                t->args_len += d->len;
                a[t->args_len] = '\0';
                t->args = a;
            }
        } else {
            t->complete = d->complete;
        }
    } else if (!j->r.stream) {
        hd_buf_append(d->kind == HD_CHAT_DELTA_REASONING ? &c->reasoning : &c->content, d->text,
                      d->len);
    }
    if (!j->r.stream) {
        return;
    }
    if (is_anth(j)) {
        switch (d->kind) {
        case HD_CHAT_DELTA_REASONING:
            if (c->blk_kind != 1) {
                anth_block_start(c, 1, NULL, 0, 0);
            }
            anth_delta(c, "thinking_delta", "thinking", d->text, d->len);
            break;
        case HD_CHAT_DELTA_CONTENT:
            if (c->blk_kind != 2) {
                anth_block_start(c, 2, NULL, 0, 0);
            }
            anth_delta(c, "text_delta", "text", d->text, d->len);
            break;
        case HD_CHAT_DELTA_TOOL_START:
            anth_block_start(c, 3, d->text, d->len, d->tool_index);
            break;
        case HD_CHAT_DELTA_TOOL_ARGS:
            anth_delta(c, "input_json_delta", "partial_json", d->text, d->len);
            break;
        case HD_CHAT_DELTA_TOOL_END:
            anth_block_stop(c);
            break;
        }
        return;
    }
    hd_buf_init(&b);
    oa_chunk_head(j, &b, c->index);
    if (j->r.api == HD_HTTP_API_COMPLETION) {
        hd_buf_puts(&b, "\"text\":");
        hd_buf_json_str(&b, d->text, d->len);
        hd_buf_puts(&b, ",");
    } else {
        switch (d->kind) {
        case HD_CHAT_DELTA_REASONING:
        case HD_CHAT_DELTA_CONTENT:
            hd_buf_printf(&b, "\"delta\":{\"%s\":",
                          d->kind == HD_CHAT_DELTA_REASONING ? "reasoning_content" : "content");
            hd_buf_json_str(&b, d->text, d->len);
            hd_buf_puts(&b, "},");
            break;
        case HD_CHAT_DELTA_TOOL_START:
            hd_buf_printf(&b, "\"delta\":{\"tool_calls\":[{\"index\":%zu,\"id\":\"call_%s_%zu\","
                          "\"type\":\"function\",\"function\":{\"name\":",
                          d->tool_index, j->id, d->tool_index);
            hd_buf_json_str(&b, d->text, d->len);
            hd_buf_puts(&b, ",\"arguments\":\"\"}}]},");
            break;
        case HD_CHAT_DELTA_TOOL_ARGS:
            hd_buf_printf(&b, "\"delta\":{\"tool_calls\":[{\"index\":%zu,\"function\":"
                          "{\"arguments\":", d->tool_index);
            hd_buf_json_str(&b, d->text, d->len);
            hd_buf_puts(&b, "}}]},");
            break;
        case HD_CHAT_DELTA_TOOL_END:
            hd_buf_cleanup(&b);
            return;
        }
    }
    oa_chunk_tail(j, &b, NULL);
    job_write(j, &b);
    hd_buf_cleanup(&b);
}

static void choice_emit(api_choice_t *c, const char *text, size_t len)
{
    if (len == 0) {
        return;
    }
    if (c->parser != NULL) {
        hd_chat_parser_feed(c->parser, text, len, choice_delta, c);
        return;
    }
    hd_chat_delta_t d = {.kind = HD_CHAT_DELTA_CONTENT, .text = text, .len = len};
    choice_delta(&d, c);
}

/* Bytes at the end of @s (@n bytes) that could start a stop string. */
static size_t stop_prefix_len(const api_request_t *r, const char *s, size_t n)
{
    size_t best = 0;
    for (int k = 0; k < r->n_stops; k++) {
        size_t sl = strlen(r->stops[k]);
        for (size_t l = sl - 1 < n ? sl - 1 : n; l > best; l--) {
            if (memcmp(s + n - l, r->stops[k], l) == 0) {
                best = l;
                break;
            }
        }
    }
    return best;
}

static void job_cancel_choice(api_choice_t *c)
{
    hd_api_backend_t *be = &c->job->srv->p.backend;
    if (c->live) {
        be->ops->cancel(be->ctx, c->bid);
    }
}

/* New text of choice @c: stop strings first, then the parser. */
static void choice_text(api_choice_t *c, const char *text, size_t len, bool final)
{
    const api_request_t *r = &c->job->r;
    if (c->stopped) {
        return;
    }
    if (r->n_stops == 0) {
        choice_emit(c, text, len);
        return;
    }
    hd_buf_append(&c->hold, text, len);
    const char *h = c->hold.data ? c->hold.data : "";
    size_t first = SIZE_MAX;
    for (int k = 0; k < r->n_stops; k++) {
        const char *p = c->hold.len ? memmem(h, c->hold.len, r->stops[k], strlen(r->stops[k]))
                                    : NULL;
        if (p != NULL && (size_t)(p - h) < first) {
            first = (size_t)(p - h);
            c->stop_idx = k;
        }
    }
    if (first != SIZE_MAX) {
        choice_emit(c, h, first);
        c->stopped = true;
        c->hold.len = 0;
        job_cancel_choice(c);
        return;
    }
    size_t keep = final ? 0 : stop_prefix_len(r, h, c->hold.len);
    size_t out = c->hold.len - keep;
    while (out > 0 && out < c->hold.len && ((unsigned char)h[out] & 0xC0) == 0x80) {
        out--; /* never split a UTF-8 character */
    }
    choice_emit(c, h, out);
    memmove(c->hold.data, h + out, c->hold.len - out);
    c->hold.len -= out;
}

/* ---- finishing ---- */

static int choice_fin(const api_choice_t *c)
{
    if (c->stopped) {
        return FIN_STOP;
    }
    switch (c->finish) {
    case HD_FINISH_STOP:
        return c->n_tools > 0 ? FIN_TOOL : FIN_STOP;
    case HD_FINISH_LENGTH:
        return FIN_LENGTH;
    case HD_FINISH_CANCELLED:
        return FIN_ABORT;
    default:
        return FIN_ERROR;
    }
}

static const char *anth_stop_reason(int fin)
{
    switch (fin) {
    case FIN_LENGTH:
        return "max_tokens";
    case FIN_TOOL:
        return "tool_use";
    default:
        return "end_turn";
    }
}

static int job_completion_tokens(const api_job_t *j)
{
    int n = 0;
    for (int i = 0; i < j->r.n; i++) {
        n += j->ch[i].n_tokens;
    }
    return n;
}

static void usage_json(const api_job_t *j, hd_buf_t *b)
{
    int np = (int)j->r.prompt.n, nc = job_completion_tokens(j);
    if (is_anth(j)) {
        hd_buf_printf(b, "{\"input_tokens\":%d,\"output_tokens\":%d,\"cache_read_input_tokens\":0,"
                      "\"cache_creation_input_tokens\":0}", np, nc);
        return;
    }
    hd_buf_printf(b, "{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,"
                  "\"prompt_tokens_details\":{\"cached_tokens\":0}}", np, nc, np + nc);
}

/* The final stream events of one choice. */
static void choice_stream_end(api_choice_t *c)
{
    api_job_t *j = c->job;
    int fin = choice_fin(c);
    hd_buf_t b;
    hd_buf_init(&b);
    if (fin == FIN_ERROR) {
        api_err_t e;
        api_err_set(&e, 500, NULL, NULL, NULL, "generation failed: %s", c->why);
        if (is_anth(j)) {
            err_json(&b, true, &e);
            anth_event(j, "error", &b);
        } else {
            hd_buf_puts(&b, "data: ");
            err_json(&b, false, &e);
            hd_buf_puts(&b, "\n\n");
            job_write(j, &b);
        }
    } else if (is_anth(j)) {
        anth_block_stop(c);
        hd_buf_printf(&b, "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\","
                      "\"stop_sequence\":", c->stopped ? "stop_sequence" : anth_stop_reason(fin));
        if (c->stopped) {
            hd_buf_json_str(&b, j->r.stops[c->stop_idx], strlen(j->r.stops[c->stop_idx]));
        } else {
            hd_buf_puts(&b, "null");
        }
        hd_buf_puts(&b, "},\"usage\":");
        usage_json(j, &b);
        hd_buf_puts(&b, "}");
        anth_event(j, "message_delta", &b);
        b.len = 0;
        hd_buf_puts(&b, "{\"type\":\"message_stop\"}");
        anth_event(j, "message_stop", &b);
    } else {
        oa_chunk_head(j, &b, c->index);
        if (j->r.api == HD_HTTP_API_CHAT) {
            hd_buf_puts(&b, "\"delta\":{},");
        } else {
            hd_buf_puts(&b, "\"text\":\"\",");
        }
        oa_chunk_tail(j, &b, fin_names[fin == FIN_ABORT ? FIN_STOP : fin]);
        job_write(j, &b);
    }
    hd_buf_cleanup(&b);
}

static void tool_args_json(hd_buf_t *b, const tool_t *t)
{
    hd_json_t *v = NULL;
    char err[8];
    if (t->args != NULL && hd_json_parse(t->args, t->args_len, NULL, &v, err, sizeof(err)) == HD_OK &&
        v->type == HD_JSON_OBJECT) {
        hd_buf_append(b, t->args, t->args_len);
    } else {
        hd_buf_puts(b, "{}");
    }
    hd_json_free(v);
}

static void job_body(api_job_t *j, hd_buf_t *b)
{
    if (is_anth(j)) {
        api_choice_t *c = &j->ch[0];
        int fin = choice_fin(c);
        hd_buf_printf(b, "{\"id\":\"msg_%s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":",
                      j->id);
        hd_buf_json_str(b, j->r.model, strlen(j->r.model));
        hd_buf_puts(b, ",\"content\":[");
        int nb = 0;
        if (j->r.thinking) {
            hd_buf_puts(b, "{\"type\":\"thinking\",\"thinking\":");
            hd_buf_json_str(b, c->reasoning.data ? c->reasoning.data : "", c->reasoning.len);
            hd_buf_puts(b, ",\"signature\":\"\"}");
            nb++;
        }
        if (c->content.len > 0 || c->n_tools == 0) {
            hd_buf_printf(b, "%s{\"type\":\"text\",\"text\":", nb++ ? "," : "");
            hd_buf_json_str(b, c->content.data ? c->content.data : "", c->content.len);
            hd_buf_puts(b, "}");
        }
        for (int t = 0; t < c->n_tools; t++) {
            const char *name = c->tools[t].name ? c->tools[t].name : "";
            hd_buf_printf(b, "%s{\"type\":\"tool_use\",\"id\":\"toolu_%s_%d\",\"name\":",
                          nb++ ? "," : "", j->id, t);
            hd_buf_json_str(b, name, strlen(name));
            hd_buf_puts(b, ",\"input\":");
            tool_args_json(b, &c->tools[t]);
            hd_buf_puts(b, "}");
        }
        hd_buf_printf(b, "],\"stop_reason\":\"%s\",\"stop_sequence\":",
                      c->stopped ? "stop_sequence" : anth_stop_reason(fin));
        if (c->stopped) {
            hd_buf_json_str(b, j->r.stops[c->stop_idx], strlen(j->r.stops[c->stop_idx]));
        } else {
            hd_buf_puts(b, "null");
        }
        hd_buf_puts(b, ",\"usage\":");
        usage_json(j, b);
        hd_buf_puts(b, "}");
        return;
    }
    bool chat = j->r.api == HD_HTTP_API_CHAT;
    hd_buf_printf(b, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", j->id,
                  chat ? "chat.completion" : "text_completion", j->created);
    hd_buf_json_str(b, j->r.model, strlen(j->r.model));
    hd_buf_puts(b, ",\"choices\":[");
    for (int i = 0; i < j->r.n; i++) {
        api_choice_t *c = &j->ch[i];
        int fin = choice_fin(c);
        hd_buf_printf(b, "%s{\"index\":%d,", i ? "," : "", i);
        if (!chat) {
            hd_buf_puts(b, "\"text\":");
            hd_buf_json_str(b, c->content.data ? c->content.data : "", c->content.len);
        } else {
            hd_buf_puts(b, "\"message\":{\"role\":\"assistant\",\"content\":");
            if (c->content.len == 0 && c->n_tools > 0) {
                hd_buf_puts(b, "null");
            } else {
                hd_buf_json_str(b, c->content.data ? c->content.data : "", c->content.len);
            }
            if (j->r.thinking || c->reasoning.len > 0) {
                hd_buf_puts(b, ",\"reasoning_content\":");
                hd_buf_json_str(b, c->reasoning.data ? c->reasoning.data : "", c->reasoning.len);
            }
            if (c->n_tools > 0) {
                hd_buf_puts(b, ",\"tool_calls\":[");
                for (int t = 0; t < c->n_tools; t++) {
                    const char *name = c->tools[t].name ? c->tools[t].name : "";
                    hd_buf_printf(b, "%s{\"id\":\"call_%s_%d\",\"type\":\"function\",\"function\":"
                                  "{\"name\":", t ? "," : "", j->id, t);
                    hd_buf_json_str(b, name, strlen(name));
                    hd_buf_puts(b, ",\"arguments\":");
                    hd_buf_json_str(b, c->tools[t].args ? c->tools[t].args : "{}",
                                    c->tools[t].args ? c->tools[t].args_len : 2);
                    hd_buf_puts(b, "}}");
                }
                hd_buf_puts(b, "]");
            }
            hd_buf_puts(b, "}");
        }
        hd_buf_puts(b, ",\"logprobs\":");
        if (!j->r.logprobs) {
            hd_buf_puts(b, "null");
        } else if (chat) {
            hd_buf_printf(b, "{\"content\":[%s]}", c->lp.data ? c->lp.data : "");
        } else {
            lp_completion_json(c, b);
        }
        hd_buf_printf(b, ",\"finish_reason\":\"%s\"}", fin_names[fin == FIN_ABORT ? FIN_STOP : fin]);
    }
    hd_buf_puts(b, "],\"usage\":");
    usage_json(j, b);
    hd_buf_puts(b, "}");
}

static void job_unwatch(api_job_t *j)
{
    if (j->watch != NULL) {
        event_free(j->watch);
        j->watch = NULL;
    }
}

static void job_free(api_job_t *j)
{
    hd_http_h s = j->srv;
    job_unwatch(j);
    if (j->prev) {
        j->prev->next = j->next;
    } else if (s->jobs == j) {
        s->jobs = j->next;
    }
    if (j->next) {
        j->next->prev = j->prev;
    }
    for (int i = 0; j->ch != NULL && i < j->r.n; i++) {
        api_choice_t *c = &j->ch[i];
        hd_chat_parser_destroy(c->parser);
        hd_buf_cleanup(&c->hold);
        hd_buf_cleanup(&c->reasoning);
        hd_buf_cleanup(&c->content);
        hd_buf_cleanup(&c->lp);
        hd_buf_cleanup(&c->lp_tokens);
        hd_buf_cleanup(&c->lp_values);
        hd_buf_cleanup(&c->lp_tops);
        hd_buf_cleanup(&c->lp_offsets);
        for (int t = 0; t < c->n_tools; t++) {
            hd_free(c->tools[t].name);
            hd_free(c->tools[t].args);
        }
        hd_free(c->tools);
    }
    hd_free(j->ch);
    api_request_cleanup(&j->r);
    s->m.jobs--;
    hd_free(j);
}

/* Every choice has finished: answer (unless already answered) and free. */
static void job_complete(api_job_t *j)
{
    hd_http_h s = j->srv;
    bool failed = false;
    for (int i = 0; i < j->r.n; i++) {
        int fin = choice_fin(&j->ch[i]);
        failed |= fin == FIN_ERROR;
        s->m.fin[j->closed ? FIN_ABORT : fin]++;
    }
    s->m.generation_tokens += (uint64_t)job_completion_tokens(j);
    hist_add(&s->m.e2e, now_s() - j->t_start);
    job_unwatch(j);
    if (j->req != NULL) {
        if (j->conn != NULL) {
            struct timeval tv = {s->p.timeout_s, 0};
            evhttp_connection_set_closecb(j->conn, NULL, NULL);
            guard_mark(s, j->conn, false);
            bufferevent_set_timeouts(evhttp_connection_get_bufferevent(j->conn), &tv, &tv);
        }
        if (j->r.stream) {
            if (!is_anth(j) && !j->closed) {
                hd_buf_t b;
                hd_buf_init(&b);
                if (j->r.include_usage) {
                    hd_buf_printf(&b, "data: {\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,"
                                  "\"model\":", j->id, j->r.api == HD_HTTP_API_CHAT ?
                                  "chat.completion.chunk" : "text_completion", j->created);
                    hd_buf_json_str(&b, j->r.model, strlen(j->r.model));
                    hd_buf_puts(&b, ",\"choices\":[],\"usage\":");
                    usage_json(j, &b);
                    hd_buf_puts(&b, "}\n\n");
                }
                hd_buf_puts(&b, "data: [DONE]\n\n");
                job_write(j, &b);
                hd_buf_cleanup(&b);
            }
            evhttp_send_reply_end(j->req);
        } else if (failed) {
            api_err_t e;
            for (int i = 0; i < j->r.n; i++) {
                if (choice_fin(&j->ch[i]) == FIN_ERROR) {
                    api_err_set(&e, 500, NULL, NULL, NULL, "generation failed: %s", j->ch[i].why);
                }
            }
            reply_err(s, j->req, is_anth(j), &e);
        } else {
            hd_buf_t b;
            hd_buf_init(&b);
            job_body(j, &b);
            reply_json(s, j->req, 200, &b);
            hd_buf_cleanup(&b);
        }
        j->req = NULL;
    }
    job_free(j);
}

/* ---- logprobs ---- */

static void lp_num(hd_buf_t *b, float v)
{
    hd_buf_printf(b, "%.6g", isfinite(v) ? (double)v : -9999.0);
}

/* "token" (its text) and "bytes" of @id. */
static void lp_token(hd_http_h s, hd_buf_t *b, int32_t id, bool bytes)
{
    hd_buf_t t;
    hd_buf_init(&t);
    hd_tok_decode(s->p.tok, &id, 1, 0, &t);
    hd_buf_json_str(b, t.data ? t.data : "", t.len);
    if (bytes) {
        hd_buf_puts(b, ",\"bytes\":[");
        for (size_t i = 0; i < t.len; i++) {
            hd_buf_printf(b, "%s%u", i ? "," : "", (unsigned)(unsigned char)t.data[i]);
        }
        hd_buf_puts(b, "]");
    }
    hd_buf_cleanup(&t);
}

/* One chat logprobs.content entry. */
static void lp_chat_entry(hd_http_h s, hd_buf_t *b, int32_t token, const hd_logprobs_t *lp,
                          int top)
{
    hd_buf_puts(b, "{\"token\":");
    lp_token(s, b, token, true);
    hd_buf_puts(b, ",\"logprob\":");
    lp_num(b, lp->logprob);
    hd_buf_puts(b, ",\"top_logprobs\":[");
    for (int i = 0; i < lp->n_top && i < top; i++) {
        hd_buf_puts(b, i ? ",{\"token\":" : "{\"token\":");
        lp_token(s, b, lp->top_ids[i], true);
        hd_buf_puts(b, ",\"logprob\":");
        lp_num(b, lp->top_logprobs[i]);
        hd_buf_puts(b, "}");
    }
    hd_buf_puts(b, "]}");
}

/* Completions layout pieces of one token, appended to the four arrays' contents. */
static void lp_completion_entry(api_choice_t *c, int32_t token, const hd_logprobs_t *lp)
{
    hd_http_h s = c->job->srv;
    const char *sep = c->n_lp ? "," : "";
    hd_buf_puts(&c->lp_tokens, sep);
    lp_token(s, &c->lp_tokens, token, false);
    hd_buf_puts(&c->lp_values, sep);
    lp_num(&c->lp_values, lp->logprob);
    hd_buf_printf(&c->lp_tops, "%s{", sep);
    for (int i = 0; i < lp->n_top && i < c->job->r.top_logprobs; i++) {
        if (i) {
            hd_buf_puts(&c->lp_tops, ",");
        }
        lp_token(s, &c->lp_tops, lp->top_ids[i], false);
        hd_buf_puts(&c->lp_tops, ":");
        lp_num(&c->lp_tops, lp->top_logprobs[i]);
    }
    hd_buf_puts(&c->lp_tops, "}");
    hd_buf_printf(&c->lp_offsets, "%s%zu", sep, c->lp_text_off);
    hd_buf_t t;
    hd_buf_init(&t);
    hd_tok_decode(s->p.tok, &token, 1, 0, &t);
    c->lp_text_off += t.len;
    hd_buf_cleanup(&t);
}

static void lp_completion_json(const api_choice_t *c, hd_buf_t *b)
{
    hd_buf_printf(b, "{\"tokens\":[%s],\"token_logprobs\":[%s],\"top_logprobs\":[%s],"
                  "\"text_offset\":[%s]}", c->lp_tokens.data ? c->lp_tokens.data : "",
                  c->lp_values.data ? c->lp_values.data : "",
                  c->lp_tops.data ? c->lp_tops.data : "",
                  c->lp_offsets.data ? c->lp_offsets.data : "");
}

/* The log-probabilities of one token: kept for the body, or streamed as their own chunk. */
static void choice_logprobs(api_choice_t *c, int32_t token, const hd_logprobs_t *lp)
{
    api_job_t *j = c->job;
    bool chat = j->r.api == HD_HTTP_API_CHAT;
    if (!j->r.stream) {
        if (chat) {
            hd_buf_puts(&c->lp, c->n_lp ? "," : "");
            lp_chat_entry(j->srv, &c->lp, token, lp, j->r.top_logprobs);
        } else {
            lp_completion_entry(c, token, lp);
        }
        c->n_lp++;
        return;
    }
    hd_buf_t b;
    hd_buf_init(&b);
    oa_chunk_head(j, &b, c->index);
    if (chat) {
        hd_buf_puts(&b, "\"delta\":{},\"logprobs\":{\"content\":[");
        lp_chat_entry(j->srv, &b, token, lp, j->r.top_logprobs);
        hd_buf_puts(&b, "]},");
    } else {
        hd_buf_t saved[4] = {c->lp_tokens, c->lp_values, c->lp_tops, c->lp_offsets};
        int n = c->n_lp;
        hd_buf_init(&c->lp_tokens);
        hd_buf_init(&c->lp_values);
        hd_buf_init(&c->lp_tops);
        hd_buf_init(&c->lp_offsets);
        c->n_lp = 0;
        lp_completion_entry(c, token, lp);
        hd_buf_puts(&b, "\"text\":\"\",\"logprobs\":");
        lp_completion_json(c, &b);
        hd_buf_puts(&b, ",");
        hd_buf_cleanup(&c->lp_tokens);
        hd_buf_cleanup(&c->lp_values);
        hd_buf_cleanup(&c->lp_tops);
        hd_buf_cleanup(&c->lp_offsets);
        c->lp_tokens = saved[0];
        c->lp_values = saved[1];
        c->lp_tops = saved[2];
        c->lp_offsets = saved[3];
        c->n_lp = n + 1;
    }
    /* the chunk tail writes "logprobs":null, so close the object by hand */
    hd_buf_puts(&b, "\"finish_reason\":null}]");
    if (j->r.include_usage) {
        hd_buf_puts(&b, ",\"usage\":null");
    }
    hd_buf_puts(&b, "}\n\n");
    job_write(j, &b);
    hd_buf_cleanup(&b);
}

/* A token or the final call of choice @c, on the loop thread. */
static void choice_on_msg(api_choice_t *c, int32_t token, const hd_logprobs_t *lp,
                          hd_finish_t finish, const char *why)
{
    api_job_t *j = c->job;
    hd_http_h s = j->srv;
    double t = now_s();
    if (token >= 0 && !c->stopped) {
        c->n_tokens++;
        if (j->t_first == 0.0) {
            j->t_first = t;
            hist_add(&s->m.ttft, t - j->t_start);
        } else if (c->t_last > 0.0) {
            hist_add(&s->m.itl, t - c->t_last);
        }
        c->t_last = t;
        if (lp != NULL && j->r.logprobs) {
            choice_logprobs(c, token, lp);
        }
        if (token != s->model_eos) {
            hd_buf_t piece;
            hd_buf_init(&piece);
            hd_tok_stream_push(&c->detok, token, &piece);
            choice_text(c, piece.data, piece.len, false);
            hd_buf_cleanup(&piece);
        }
    }
    if (finish == HD_FINISH_NONE) {
        return;
    }
    c->live = false;
    c->finish = finish;
    snprintf(c->why, sizeof(c->why), "%s", why ? why : "");
    hd_buf_t piece;
    hd_buf_init(&piece);
    hd_tok_stream_flush(&c->detok, &piece);
    choice_text(c, piece.data, piece.len, true);
    hd_buf_cleanup(&piece);
    if (c->parser != NULL) {
        hd_chat_parser_finish(c->parser, choice_delta, c);
    }
    if (j->r.stream && !j->closed && j->req != NULL) {
        choice_stream_end(c);
    }
    if (++j->n_done == j->r.n) {
        job_complete(j);
    }
}

/* ---- the inbox: backend thread -> loop thread ---- */

static void backend_on_token(void *user, int32_t token, const hd_logprobs_t *lp,
                             hd_finish_t finish, const char *why)
{
    api_choice_t *c = user;
    hd_http_h s = c->job->srv;
    pthread_mutex_lock(&s->mu);
    if (s->n_inbox == s->cap_inbox) {
        int nc = s->cap_inbox ? s->cap_inbox * 2 : 256;
        inbox_msg_t *p = hd_realloc(s->inbox, (size_t)nc * sizeof(*p), "http inbox");
        if (p == NULL) {
            /* cannot happen in practice; a lost token would be wrong output, so abort */
            hd_error(HD_SUBSYS_API, "inbox allocation failed");
            abort();
        }
        s->inbox = p;
        s->cap_inbox = nc;
    }
    inbox_msg_t *m = &s->inbox[s->n_inbox++];
    m->c = c;
    m->token = token;
    m->finish = finish;
    m->has_lp = lp != NULL;
    if (lp != NULL) {
        m->lp = *lp;
    }
    snprintf(m->why, sizeof(m->why), "%s", why ? why : "");
    bool first = s->n_inbox == 1;
    pthread_mutex_unlock(&s->mu);
    if (first) {
        event_active(s->inbox_ev, EV_READ, 0);
    }
}

static void inbox_drain(evutil_socket_t fd, short what, void *arg)
{
    hd_http_h s = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&s->mu);
    inbox_msg_t *msgs = s->inbox;
    int n = s->n_inbox, cap = s->cap_inbox;
    s->inbox = s->spare;
    s->cap_inbox = s->cap_spare;
    s->n_inbox = 0;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) {
        choice_on_msg(msgs[i].c, msgs[i].token, msgs[i].has_lp ? &msgs[i].lp : NULL,
                      msgs[i].finish, msgs[i].why);
    }
    s->spare = msgs;
    s->cap_spare = cap;
}

/* ---- request handling ---- */

static void job_client_gone(api_job_t *j)
{
    job_unwatch(j);
    if (j->closed) {
        return;
    }
    j->closed = true;
    j->srv->m.aborted_disconnect++;
    hd_debug(HD_SUBSYS_API, "%s: client went away; cancelling", j->id);
    for (int i = 0; i < j->r.n; i++) {
        job_cancel_choice(&j->ch[i]);
    }
}

/* libevent frees the connection (write error, timeout): the request itself stays ours. */
static void job_conn_closed(struct evhttp_connection *conn, void *arg)
{
    api_job_t *j = arg;
    (void)conn;
    j->conn = NULL;
    job_client_gone(j);
}

/* evhttp does not read while a request is being answered: peek at the socket ourselves so a
 * client that hangs up is noticed before the next write (or at all, for whole-body answers). */
static void job_watch_cb(evutil_socket_t fd, short what, void *arg)
{
    api_job_t *j = arg;
    char b;
    (void)what;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        job_client_gone(j);
    } else if (n > 0) {
        job_unwatch(j); /* a pipelined request: nothing more to learn here */
    }
}

static bool ct_equal(const char *a, size_t la, const char *b, size_t lb)
{
    size_t n = la > lb ? la : lb;
    unsigned char d = la != lb;
    for (size_t i = 0; i < n; i++) {
        d |= (unsigned char)((i < la ? a[i] : 0) ^ (i < lb ? b[i] : 0));
    }
    return d == 0;
}

static bool authorized(hd_http_h s, struct evhttp_request *req)
{
    if (s->p.n_api_keys == 0) {
        return true;
    }
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *key = evhttp_find_header(h, "x-api-key");
    const char *auth = evhttp_find_header(h, "Authorization");
    if (key == NULL && auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0) {
        key = auth + 7;
    }
    if (key == NULL) {
        return false;
    }
    bool ok = false;
    size_t kl = strlen(key);
    for (int i = 0; i < s->p.n_api_keys; i++) {
        ok |= ct_equal(key, kl, s->p.api_keys[i], strlen(s->p.api_keys[i]));
    }
    return ok;
}

static void job_id(hd_http_h s, hd_http_api_t api, char *out, size_t len)
{
    static const char *const pre[] = {"chatcmpl-", "cmpl-", ""};
    snprintf(out, len, "%s%08llx%04llx", pre[api], (unsigned long long)time(NULL),
             (unsigned long long)(++s->next_job & 0xffff));
}

/* The replay script a request asks for (test mode); false for a name that does not exist. */
static bool replay_for(hd_http_h s, struct evhttp_request *req, const int32_t **ids_p, int *n_p)
{
    *ids_p = NULL;
    *n_p = 0;
    if (s->p.n_replay == 0) {
        return true;
    }
    const char *name = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Hadal-Replay");
    for (int i = 0; i < s->p.n_replay; i++) {
        if (name == NULL || strcmp(name, s->p.replay[i].name) == 0) {
            *n_p = s->n_replay_ids[i];
            *ids_p = s->replay_ids[i];
            return true;
        }
    }
    return false;
}

static void handle_generate(hd_http_h s, struct evhttp_request *req, hd_http_api_t api)
{
    bool anth = api == HD_HTTP_API_MESSAGES;
    api_err_t e = {0};
    hd_api_backend_t *be = &s->p.backend;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > s->p.max_body_bytes) {
        api_err_set(&e, 413, NULL, NULL, NULL, "request body of %zu bytes exceeds the limit of "
                    "%zu bytes", len, s->p.max_body_bytes);
        reply_err(s, req, anth, &e);
        return;
    }
    if (!be->ops->ready(be->ctx)) {
        api_err_set(&e, 503, NULL, NULL, NULL, "the server is not ready yet");
        reply_err(s, req, anth, &e);
        return;
    }
    api_job_t *j = hd_calloc(1, sizeof(*j), "api job");
    if (j == NULL) {
        api_err_set(&e, 500, NULL, NULL, NULL, "out of memory");
        reply_err(s, req, anth, &e);
        return;
    }
    j->srv = s;
    j->t_start = now_s();
    j->created = (long long)time(NULL);
    s->m.jobs++;
    j->next = s->jobs;
    if (s->jobs) {
        s->jobs->prev = j;
    }
    s->jobs = j;
    api_request_init(&j->r);
    const char *body = (const char *)evbuffer_pullup(in, -1);
    if (!api_request_parse(api, body ? body : "", len, s->p.tok, s->p.model_name,
                           s->lim.max_context, s->p.max_n, &j->r, &e)) {
        reply_err(s, req, anth, &e);
        job_free(j);
        return;
    }
    api_request_t *r = &j->r;
    job_id(s, api, j->id, sizeof(j->id));
    /* prompt ids into the model's vocabulary (the tiny model's is smaller than the tokenizer's) */
    for (size_t i = 0; i < r->prompt.n; i++) {
        if (r->prompt.ids[i] >= s->lim.vocab_size) {
            r->prompt.ids[i] %= s->lim.vocab_size;
        }
    }
    int room = s->lim.max_context - (int)r->prompt.n;
    int max_tokens = r->max_tokens > 0 ? r->max_tokens : room;
    if (r->max_tokens == 0 && s->p.max_tokens_default > 0 && s->p.max_tokens_default < room) {
        max_tokens = s->p.max_tokens_default;
    }
    j->ch = hd_calloc((size_t)r->n, sizeof(*j->ch), "api choices");
    if (j->ch == NULL) {
        api_err_set(&e, 500, NULL, NULL, NULL, "out of memory");
        reply_err(s, req, anth, &e);
        job_free(j);
        return;
    }
    int n_forced = 0;
    const int32_t *forced = NULL;
    if (!replay_for(s, req, &forced, &n_forced)) {
        api_err_set(&e, 400, NULL, NULL, NULL, "no replay script named by X-Hadal-Replay");
        reply_err(s, req, anth, &e);
        job_free(j);
        return;
    }
    uint64_t seed0 = r->seed_set ? r->sampling.seed
                                 : ((uint64_t)time(NULL) << 20) ^ (s->next_job * 0x9E3779B97F4A7C15ull);
    hd_status_t st = HD_OK;
    for (int i = 0; i < r->n; i++) {
        api_choice_t *c = &j->ch[i];
        c->job = j;
        c->index = i;
        hd_tok_stream_init(&c->detok, s->p.tok, 0);
        if (r->chat && hd_chat_parser_create(r->thinking, &c->parser) != HD_OK) {
            st = HD_ERR_NO_MEMORY;
            break;
        }
    }
    for (int i = 0; i < r->n && st == HD_OK; i++) {
        api_choice_t *c = &j->ch[i];
        hd_api_gen_t g = {.prompt = r->prompt.ids, .n_prompt = (int64_t)r->prompt.n,
                          .max_tokens = max_tokens, .stop_ids = &s->model_eos,
                          .n_stop = r->ignore_eos ? 0 : 1,
                          .sampling = r->sampling, .forced = forced, .n_forced = n_forced,
                          .logprobs = r->logprobs ? r->top_logprobs + 1 : 0,
                          .on_token = backend_on_token, .user = c};
        g.sampling.seed = seed0 + (uint64_t)i;
        st = be->ops->submit(be->ctx, &g, &c->bid);
        if (st == HD_OK) {
            c->live = true;
        }
    }
    if (st != HD_OK) {
        if (st == HD_ERR_NO_MEMORY) {
            api_err_set(&e, 429, NULL, NULL, NULL, "too many requests are waiting; retry later");
        } else if (st == HD_ERR_UNSUPPORTED && r->logprobs) {
            api_err_set(&e, 400, NULL, "unsupported_parameter", "logprobs",
                        "logprobs are not available from the %s backend (no model in the "
                        "replay test mode)", be->ops->name);
        } else if (st == HD_ERR_UNSUPPORTED) {
            api_err_set(&e, 503, NULL, NULL, NULL, "the server is not ready yet");
        } else {
            api_err_set(&e, 400, NULL, NULL, NULL, "the request cannot be scheduled: %s",
                        hd_status_string(st));
        }
        reply_err(s, req, anth, &e);
        int live = 0;
        for (int i = 0; i < r->n; i++) {
            job_cancel_choice(&j->ch[i]);
            live += j->ch[i].live;
        }
        if (live == 0) {
            job_free(j);
        } else {
            /* the cancelled choices still call back: the job is freed after their finals */
            j->req = NULL;
            j->closed = true;
            j->n_done = r->n - live;
        }
        return;
    }
    s->m.prompt_tokens += r->prompt.n * (uint64_t)r->n;
    j->req = req;
    j->conn = evhttp_request_get_connection(req);
    evhttp_connection_set_closecb(j->conn, job_conn_closed, j);
    guard_mark(s, j->conn, true);
    /* evhttp's read timeout would end a request that waits in the queue or between tokens
     * longer than --http-timeout; while we answer, only writes that stall time out (a client
     * that stops reading), and job_watch_cb notices clients that hang up */
    struct timeval wtv = {s->p.timeout_s, 0};
    bufferevent_set_timeouts(evhttp_connection_get_bufferevent(j->conn), NULL, &wtv);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(j->conn);
    evutil_socket_t fd = bev != NULL ? bufferevent_getfd(bev) : -1;
    if (fd >= 0) {
        /* tokens are small writes: without this, Nagle + delayed ACK add ~40 ms */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        j->watch = event_new(s->base, fd, EV_READ | EV_PERSIST, job_watch_cb, j);
        if (j->watch != NULL) {
            event_add(j->watch, NULL);
        }
    }
    if (r->stream) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        evhttp_add_header(h, "Content-Type", "text/event-stream");
        evhttp_add_header(h, "Cache-Control", "no-cache");
        count_code(s, 200);
        evhttp_send_reply_start(req, 200, "OK");
        j->started = true;
        hd_buf_t b;
        hd_buf_init(&b);
        if (anth) {
            hd_buf_printf(&b, "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_%s\",\"type\":"
                          "\"message\",\"role\":\"assistant\",\"model\":", j->id);
            hd_buf_json_str(&b, r->model, strlen(r->model));
            hd_buf_printf(&b, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
                          "\"usage\":{\"input_tokens\":%zu,\"output_tokens\":0}}}", r->prompt.n);
            anth_event(j, "message_start", &b);
        } else if (api == HD_HTTP_API_CHAT) {
            for (int i = 0; i < r->n; i++) {
                b.len = 0;
                oa_chunk_head(j, &b, i);
                hd_buf_puts(&b, "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},");
                oa_chunk_tail(j, &b, NULL);
                job_write(j, &b);
            }
        }
        hd_buf_cleanup(&b);
    }
}

static void handle_models(hd_http_h s, struct evhttp_request *req)
{
    hd_buf_t b;
    hd_buf_init(&b);
    hd_buf_puts(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
    hd_buf_json_str(&b, s->p.model_name, strlen(s->p.model_name));
    hd_buf_printf(&b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"hadal\","
                  "\"max_model_len\":%d}]}", (long long)time(NULL), s->lim.max_context);
    reply_json(s, req, 200, &b);
    hd_buf_cleanup(&b);
}

static void metric_head(hd_buf_t *b, const char *name, const char *type, const char *help)
{
    hd_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric_hist(hd_buf_t *b, const char *name, const char *help, const hist_t *h,
                        const char *lbl)
{
    uint64_t cum = 0;
    metric_head(b, name, "histogram", help);
    for (int i = 0; i < h->n; i++) {
        cum += h->cnt[i];
        hd_buf_printf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, lbl, h->le[i],
                      (unsigned long long)cum);
    }
    cum += h->cnt[h->n];
    hd_buf_printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, lbl, (unsigned long long)cum);
    hd_buf_printf(b, "%s_sum{%s} %.9g\n", name, lbl, h->sum);
    hd_buf_printf(b, "%s_count{%s} %llu\n", name, lbl, (unsigned long long)h->count);
}

static void handle_metrics(hd_http_h s, struct evhttp_request *req)
{
    hd_api_stats_t st;
    hd_api_backend_t *be = &s->p.backend;
    be->ops->stats(be->ctx, &st);
    hd_buf_t b;
    char lbl[200];
    snprintf(lbl, sizeof(lbl), "model_name=\"%s\"", s->p.model_name);
    hd_buf_init(&b);
    metric_head(&b, "vllm:num_requests_running", "gauge", "Sequences in the running batch.");
    hd_buf_printf(&b, "vllm:num_requests_running{%s} %d\n", lbl, st.running);
    metric_head(&b, "vllm:num_requests_waiting", "gauge", "Sequences waiting to be scheduled.");
    hd_buf_printf(&b, "vllm:num_requests_waiting{%s} %d\n", lbl, st.waiting);
    double usage = st.kv_capacity > 0 ? (double)st.kv_seqs / st.kv_capacity : 0.0;
    metric_head(&b, "vllm:kv_cache_usage_perc", "gauge",
                "KV-cache usage: 1 means full (sequences held / sequences the workers can hold).");
    hd_buf_printf(&b, "vllm:kv_cache_usage_perc{%s} %g\n", lbl, usage);
    metric_head(&b, "vllm:gpu_cache_usage_perc", "gauge", "Old name of vllm:kv_cache_usage_perc.");
    hd_buf_printf(&b, "vllm:gpu_cache_usage_perc{%s} %g\n", lbl, usage);
    metric_head(&b, "hadal:kv_sequences", "gauge", "Sequences whose KV state workers hold.");
    hd_buf_printf(&b, "hadal:kv_sequences{%s} %d\n", lbl, st.kv_seqs);
    metric_head(&b, "hadal:kv_bytes", "gauge",
                "KV bytes the workers report holding (cluster: last heartbeats; 0 = not reported).");
    hd_buf_printf(&b, "hadal:kv_bytes{%s} %llu\n", lbl, (unsigned long long)st.kv_bytes);
    metric_head(&b, "vllm:prompt_tokens_total", "counter", "Prefill tokens processed.");
    hd_buf_printf(&b, "vllm:prompt_tokens_total{%s} %llu\n", lbl,
                  (unsigned long long)st.prompt_tokens);
    metric_head(&b, "vllm:generation_tokens_total", "counter", "Generation tokens processed.");
    hd_buf_printf(&b, "vllm:generation_tokens_total{%s} %llu\n", lbl,
                  (unsigned long long)st.generated_tokens);
    metric_head(&b, "vllm:prefix_cache_queries_total", "counter",
                "Prompt tokens looked up in the prefix cache.");
    hd_buf_printf(&b, "vllm:prefix_cache_queries_total{%s} %llu\n", lbl,
                  (unsigned long long)st.prefix_queries);
    metric_head(&b, "vllm:prefix_cache_hits_total", "counter",
                "Prompt tokens found in the prefix cache.");
    hd_buf_printf(&b, "vllm:prefix_cache_hits_total{%s} %llu\n", lbl,
                  (unsigned long long)st.prefix_hits);
    metric_head(&b, "vllm:request_success_total", "counter", "Finished requests by reason.");
    for (int i = 0; i < FIN_N; i++) {
        hd_buf_printf(&b, "vllm:request_success_total{%s,finished_reason=\"%s\"} %llu\n", lbl,
                      fin_names[i], (unsigned long long)s->m.fin[i]);
    }
    metric_hist(&b, "vllm:time_to_first_token_seconds", "Time to first token.", &s->m.ttft, lbl);
    metric_hist(&b, "vllm:inter_token_latency_seconds", "Time between tokens of a request.",
                &s->m.itl, lbl);
    metric_hist(&b, "vllm:time_per_output_token_seconds",
                "Old name of vllm:inter_token_latency_seconds.", &s->m.itl, lbl);
    metric_hist(&b, "vllm:e2e_request_latency_seconds", "End-to-end request latency.", &s->m.e2e,
                lbl);
    metric_head(&b, "hadal:http_responses_total", "counter", "HTTP responses by status code.");
    for (int i = 0; i < N_CODES; i++) {
        hd_buf_printf(&b, "hadal:http_responses_total{code=\"%d\"} %llu\n", http_codes[i],
                      (unsigned long long)s->m.codes[i]);
    }
    metric_head(&b, "hadal:http_requests_in_flight", "gauge", "API requests being answered.");
    hd_buf_printf(&b, "hadal:http_requests_in_flight %d\n", s->m.jobs);
    metric_head(&b, "hadal:client_disconnects_total", "counter",
                "Requests cancelled because the client went away.");
    hd_buf_printf(&b, "hadal:client_disconnects_total %llu\n",
                  (unsigned long long)s->m.aborted_disconnect);
    metric_head(&b, "hadal:slow_clients_closed_total", "counter",
                "Connections closed because a request took longer than the timeout to arrive.");
    hd_buf_printf(&b, "hadal:slow_clients_closed_total %llu\n",
                  (unsigned long long)s->slow_closed);
    metric_head(&b, "hadal:steps_total", "counter", "Scheduler steps executed.");
    hd_buf_printf(&b, "hadal:steps_total %llu\n", (unsigned long long)st.steps);
    if (!b.failed) {
        reply_body(s, req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    }
    hd_buf_cleanup(&b);
}

/* ---- slow-client guard ---- */

/* Called by evhttp for each accepted connection: a socket bufferevent we hold a reference on,
 * so the sweep can tell when evhttp has freed it (its callbacks are cleared). */
static struct bufferevent *guard_bevcb(struct event_base *base, void *arg)
{
    hd_http_h s = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    conn_guard_t *g = bev ? hd_calloc(1, sizeof(*g), "http connection guard") : NULL;
    if (g == NULL) {
        return bev; /* unguarded (or NULL: evhttp drops the connection) */
    }
    bufferevent_incref(bev);
    g->srv = s;
    g->bev = bev;
    g->since = now_s();
    g->next = s->guards;
    if (s->guards) {
        s->guards->prev = g;
    }
    s->guards = g;
    return bev;
}

static conn_guard_t *guard_find(hd_http_h s, struct evhttp_connection *conn)
{
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    for (conn_guard_t *g = s->guards; g != NULL && bev != NULL; g = g->next) {
        if (g->bev == bev) {
            return g;
        }
    }
    return NULL;
}

/* A request has been read (@busy) or answered (!@busy): the clock restarts. */
static void guard_mark(hd_http_h s, struct evhttp_connection *conn, bool busy)
{
    conn_guard_t *g = guard_find(s, conn);
    if (g != NULL) {
        g->busy = busy;
        g->since = now_s();
    }
}

static void guard_unlink(hd_http_h s, conn_guard_t *g)
{
    if (g->prev) {
        g->prev->next = g->next;
    } else if (s->guards == g) {
        s->guards = g->next;
    }
    if (g->next) {
        g->next->prev = g->prev;
    }
    bufferevent_decref(g->bev);
    hd_free(g);
}

/* Every 250 ms: forget connections evhttp freed; shut those that have spent more than the
 * timeout without a whole request (trickled headers or body) so evhttp sees them fail. */
static void guard_sweep(evutil_socket_t fd, short what, void *arg)
{
    hd_http_h s = arg;
    double t = now_s();
    (void)fd;
    (void)what;
    for (conn_guard_t *g = s->guards, *next; g != NULL; g = next) {
        bufferevent_data_cb rcb, wcb;
        bufferevent_event_cb ecb;
        void *cbarg;
        next = g->next;
        bufferevent_getcb(g->bev, &rcb, &wcb, &ecb, &cbarg);
        if (rcb == NULL && wcb == NULL && ecb == NULL) {
            guard_unlink(s, g);
            continue;
        }
        evutil_socket_t sfd = bufferevent_getfd(g->bev);
        if (!g->busy && !g->shut && sfd >= 0 && t - g->since > s->p.timeout_s) {
            hd_debug(HD_SUBSYS_API, "closing a connection with no whole request after %d s",
                     s->p.timeout_s);
            shutdown(sfd, SHUT_RDWR);
            g->shut = true;
            s->slow_closed++;
        }
    }
}

static void router(struct evhttp_request *req, void *arg)
{
    hd_http_h s = arg;
    const char *uri = evhttp_request_get_uri(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    char path[128];
    api_err_t e = {0};
    guard_mark(s, evhttp_request_get_connection(req), false);
    size_t n = strcspn(uri ? uri : "", "?");
    snprintf(path, sizeof(path), "%.*s", (int)(n < 127 ? n : 127), uri ? uri : "");
    bool anth = strcmp(path, "/v1/messages") == 0;
    static const struct {
        const char *path;
        enum evhttp_cmd_type cmd;
        int api; /* -1 models, -2 health, -3 ready, -4 metrics */
    } routes[] = {
        {"/v1/chat/completions", EVHTTP_REQ_POST, HD_HTTP_API_CHAT},
        {"/v1/completions", EVHTTP_REQ_POST, HD_HTTP_API_COMPLETION},
        {"/v1/messages", EVHTTP_REQ_POST, HD_HTTP_API_MESSAGES},
        {"/v1/models", EVHTTP_REQ_GET, -1},
        {"/health", EVHTTP_REQ_GET, -2},
        {"/ready", EVHTTP_REQ_GET, -3},
        {"/metrics", EVHTTP_REQ_GET, -4},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(path, routes[i].path) != 0) {
            continue;
        }
        if (cmd != routes[i].cmd) {
            api_err_set(&e, 405, NULL, NULL, NULL, "method not allowed on %s", path);
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                              routes[i].cmd == EVHTTP_REQ_GET ? "GET" : "POST");
            reply_err(s, req, anth, &e);
            return;
        }
        if (routes[i].api >= -1 && !authorized(s, req)) {
            api_err_set(&e, 401, NULL, "invalid_api_key", NULL,
                        "Incorrect or missing API key (Authorization: Bearer KEY or x-api-key)");
            reply_err(s, req, anth, &e);
            return;
        }
        switch (routes[i].api) {
        case -1:
            handle_models(s, req);
            return;
        case -2:
            reply_body(s, req, 200, "application/json", "{\"status\":\"ok\"}", 15);
            return;
        case -3: {
            hd_api_backend_t *be = &s->p.backend;
            if (be->ops->ready(be->ctx)) {
                reply_body(s, req, 200, "application/json", "{\"status\":\"ready\"}", 18);
            } else {
                evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
                reply_body(s, req, 503, "application/json", "{\"status\":\"not ready\"}", 22);
            }
            return;
        }
        case -4:
            handle_metrics(s, req);
            return;
        default:
            handle_generate(s, req, (hd_http_api_t)routes[i].api);
            return;
        }
    }
    api_err_set(&e, 404, NULL, NULL, NULL, "no such endpoint: %s", path);
    reply_err(s, req, anth, &e);
}

/* ---- lifecycle ---- */

static void on_stop_poll(evutil_socket_t fd, short what, void *arg)
{
    hd_http_h s = arg;
    (void)fd;
    (void)what;
    if (*s->p.stop) {
        hd_info(HD_SUBSYS_API, "stopping");
        hd_http_stop(s);
    }
}

hd_status_t hd_http_create(const hd_http_params_t *params, hd_http_h *http_p)
{
    hd_status_t st = HD_ERR_NO_MEMORY;
    hd_http_h s = hd_calloc(1, sizeof(*s), "http server");
    if (s == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    s->p = *params;
    if (s->p.host == NULL) {
        s->p.host = "127.0.0.1";
    }
    if (s->p.max_body_bytes == 0) {
        s->p.max_body_bytes = 8u << 20;
    }
    if (s->p.max_header_bytes == 0) {
        s->p.max_header_bytes = 16u << 10;
    }
    if (s->p.timeout_s <= 0) {
        s->p.timeout_s = 30;
    }
    if (s->p.max_n <= 0) {
        s->p.max_n = 16;
    }
    if (s->p.retry_after_s <= 0) {
        s->p.retry_after_s = 1;
    }
    s->p.backend.ops->limits(s->p.backend.ctx, &s->lim);
    s->m.ttft = (hist_t){.le = ttft_le, .n = (int)(sizeof(ttft_le) / sizeof(double))};
    s->m.itl = (hist_t){.le = itl_le, .n = (int)(sizeof(itl_le) / sizeof(double))};
    s->m.e2e = (hist_t){.le = e2e_le, .n = (int)(sizeof(e2e_le) / sizeof(double))};
    s->eos_id = hd_tok_token_id(s->p.tok, HD_CHAT_EOS, strlen(HD_CHAT_EOS));
    s->model_eos = s->eos_id >= 0 && s->lim.vocab_size > 0 ? s->eos_id % s->lim.vocab_size : 1;
    pthread_mutex_init(&s->mu, NULL);
    if (s->p.n_replay > 0) {
        s->replay_ids = hd_calloc((size_t)s->p.n_replay, sizeof(*s->replay_ids), "replay");
        s->n_replay_ids = hd_calloc((size_t)s->p.n_replay, sizeof(int), "replay");
        if (s->replay_ids == NULL || s->n_replay_ids == NULL) {
            goto err_free;
        }
        for (int i = 0; i < s->p.n_replay; i++) {
            hd_tok_ids_t ids;
            hd_tok_ids_init(&ids);
            const char *t = s->p.replay[i].text;
            if (hd_tok_encode(s->p.tok, t, strlen(t), 0, &ids) != HD_OK) {
                hd_tok_ids_cleanup(&ids);
                goto err_free;
            }
            s->replay_ids[i] = ids.ids;
            s->n_replay_ids[i] = (int)ids.n;
        }
    }
    evthread_use_pthreads();
    s->base = event_base_new();
    s->http = s->base ? evhttp_new(s->base) : NULL;
    s->scratch = evbuffer_new();
    s->inbox_ev = s->base ? event_new(s->base, -1, 0, inbox_drain, s) : NULL;
    if (s->http == NULL || s->scratch == NULL || s->inbox_ev == NULL) {
        hd_error(HD_SUBSYS_API, "libevent initialisation failed");
        goto err_free;
    }
    evhttp_set_max_body_size(s->http, (ev_ssize_t)s->p.max_body_bytes * 2);
    evhttp_set_max_headers_size(s->http, (ev_ssize_t)s->p.max_header_bytes);
    evhttp_set_timeout(s->http, s->p.timeout_s);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(s->http, router, s);
    evhttp_set_bevcb(s->http, guard_bevcb, s);
    {
        struct timeval tv = {0, 250 * 1000};
        s->sweep_ev = event_new(s->base, -1, EV_PERSIST, guard_sweep, s);
        if (s->sweep_ev == NULL || event_add(s->sweep_ev, &tv) != 0) {
            goto err_free;
        }
    }
    s->sock = evhttp_bind_socket_with_handle(s->http, s->p.host, (ev_uint16_t)s->p.port);
    if (s->sock == NULL) {
        hd_error(HD_SUBSYS_API, "cannot listen on %s:%d: %m", s->p.host, s->p.port);
        st = HD_ERR_IO;
        goto err_free;
    }
    if (strcmp(s->p.host, "127.0.0.1") != 0 && strcmp(s->p.host, "localhost") != 0 &&
        strcmp(s->p.host, "::1") != 0) {
        hd_warn(HD_SUBSYS_API, "listening on a non-loopback address %s%s", s->p.host,
                s->p.n_api_keys == 0 ? " without API keys" : "");
    }
    signal(SIGPIPE, SIG_IGN);
    if (s->p.stop != NULL) {
        struct timeval tv = {0, 50 * 1000};
        s->stop_ev = event_new(s->base, -1, EV_PERSIST, on_stop_poll, s);
        if (s->stop_ev == NULL || event_add(s->stop_ev, &tv) != 0) {
            goto err_free;
        }
    }
    *http_p = s;
    return HD_OK;

err_free:
    hd_http_destroy(s);
    return st;
}

int hd_http_port(hd_http_h s)
{
    evutil_socket_t fd = evhttp_bound_socket_get_fd(s->sock);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        return -1;
    }
    if (ss.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

hd_status_t hd_http_run(hd_http_h s)
{
    hd_info(HD_SUBSYS_API, "serving %s on http://%s:%d", s->p.model_name, s->p.host,
            hd_http_port(s));
    event_base_dispatch(s->base);
    return HD_OK;
}

void hd_http_stop(hd_http_h s)
{
    event_base_loopbreak(s->base);
}

void hd_http_destroy(hd_http_h s)
{
    if (s == NULL) {
        return;
    }
    /* the backend is still alive (see hadal/http.h): cancel, then take the finals */
    for (api_job_t *j = s->jobs; j != NULL; j = j->next) {
        for (int i = 0; j->ch != NULL && i < j->r.n; i++) {
            job_cancel_choice(&j->ch[i]);
        }
    }
    if (s->inbox_ev != NULL) {
        inbox_drain(-1, 0, s);
    }
    for (api_job_t *j = s->jobs; j != NULL; j = j->next) {
        if (j->conn != NULL) {
            evhttp_connection_set_closecb(j->conn, NULL, NULL);
            j->conn = NULL;
        }
    }
    while (s->jobs != NULL) {
        job_free(s->jobs);
    }
    if (s->stop_ev) {
        event_free(s->stop_ev);
    }
    if (s->sweep_ev) {
        event_free(s->sweep_ev);
    }
    if (s->inbox_ev) {
        event_free(s->inbox_ev);
    }
    if (s->http) {
        evhttp_free(s->http);
    }
    while (s->guards != NULL) {
        guard_unlink(s, s->guards);
    }
    if (s->scratch) {
        evbuffer_free(s->scratch);
    }
    if (s->base) {
        event_base_free(s->base);
    }
    for (int i = 0; s->replay_ids != NULL && i < s->p.n_replay; i++) {
        hd_free(s->replay_ids[i]);
    }
    hd_free(s->replay_ids);
    hd_free(s->n_replay_ids);
    hd_free(s->inbox);
    hd_free(s->spare);
    pthread_mutex_destroy(&s->mu);
    hd_free(s);
}
