/*
 * hadal/http.h - the coordinator's HTTP/1.1 server (libevent evhttp): OpenAI
 * /v1/chat/completions, /v1/completions, /v1/models; Anthropic /v1/messages; /health, /ready,
 * /metrics. Requests are tokenized (chat encoding for messages), handed to a backend
 * (hadal/api.h), and the tokens that come back are detokenized, parsed (reasoning, content,
 * DSML tool calls) and streamed as SSE or returned whole. docs/API.md documents every field,
 * error and metric.
 *
 * Threading: the server runs one event loop on the thread that calls hd_http_run(); backend
 * callbacks from other threads are queued to it. hd_http_stop() is for the loop's own thread;
 * other threads and signal handlers set *params->stop instead.
 */
#ifndef HADAL_HTTP_H
#define HADAL_HTTP_H

#include "hadal/api.h"
#include "hadal/status.h"
#include "hadal/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *name;           /* replay script name (X-Hadal-Replay header value) */
    const char *text;           /* completion text the "sampler" produces (tokenized) */
} hd_http_replay_t;

typedef struct {
    const char *host;           /* bind address; NULL = "127.0.0.1" */
    int port;                   /* 0 = any free port (see hd_http_port) */
    const char *model_name;     /* the served model id (/v1/models, "model" must match) */
    hd_tok_h tok;               /* tokenizer (borrowed) */
    hd_api_backend_t backend;   /* generation backend (borrowed) */
    size_t max_body_bytes;      /* 0 = 8 MiB; larger bodies get 413 */
    size_t max_header_bytes;    /* 0 = 16 KiB; larger header blocks are refused */
    int timeout_s;              /* read/write timeout of a connection (slow clients); 0 = 30 */
    int max_tokens_default;     /* when the request does not say; 0 = up to the context */
    int max_n;                  /* largest n; 0 = 16 */
    int retry_after_s;          /* Retry-After on 429/503; 0 = 1 */
    const char *const *api_keys; /* accepted keys (Bearer or x-api-key); none = no auth */
    int n_api_keys;
    const hd_http_replay_t *replay; /* (test mode) forced completions; NULL = off */
    int n_replay;
    const volatile int *stop;   /* (optional) the loop ends soon after it becomes non-zero */
} hd_http_params_t;

typedef struct hd_http *hd_http_h;

/* Bind and prepare. HD_ERR_IO (logged) when the address cannot be bound. */
hd_status_t hd_http_create(const hd_http_params_t *params, hd_http_h *http_p);
/* Port actually bound. */
int hd_http_port(hd_http_h http);
/* Serve until hd_http_stop(). */
hd_status_t hd_http_run(hd_http_h http);
/* Make hd_http_run() return: stops accepting, cancels in-flight requests. */
void hd_http_stop(hd_http_h http);
/* Free the server while the backend is still alive: requests in flight are cancelled (their
 * final callbacks come synchronously or are already queued, and are drained here), so no
 * callback reaches the server afterwards. Then destroy the backend. */
void hd_http_destroy(hd_http_h http);

/* ---- request parsing (also the fuzz target's entry point) ---- */

typedef enum {
    HD_HTTP_API_CHAT = 0,       /* OpenAI /v1/chat/completions */
    HD_HTTP_API_COMPLETION = 1, /* OpenAI /v1/completions */
    HD_HTTP_API_MESSAGES = 2,   /* Anthropic /v1/messages */
} hd_http_api_t;

/*
 * Parse and validate a request body of @api against the limits, tokenize it, and report
 * the HTTP status the server would answer (200 when it would be accepted) and its error
 * message. Used by tests/fuzz/fuzz_http.c; never crashes on any input.
 */
int hd_http_check_request(hd_http_api_t api, const char *body, size_t len, hd_tok_h tok,
                          const char *model_name, int max_context, char *msg, size_t msg_len);

#endif /* HADAL_HTTP_H */
