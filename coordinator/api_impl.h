/*
 * api_impl.h - private to the HTTP serving layer (http.c, api_parse.c): a parsed request
 * (what to generate and how to render it) and the error it may carry.
 */
#ifndef HADAL_COORD_API_IMPL_H
#define HADAL_COORD_API_IMPL_H

#include "hadal/api.h"
#include "hadal/chat.h"
#include "hadal/http.h"
#include "hadal/json.h"
#include "hadal/tokenizer.h"

#include <stdbool.h>

/* An error in the API's own shape: OpenAI {"error":{...}} or Anthropic {"type":"error",...}. */
typedef struct {
    int status;             /* HTTP status */
    const char *type;       /* OpenAI error type / Anthropic error type */
    const char *code;       /* OpenAI code (NULL = null) */
    char param[64];         /* OpenAI param ("" = null) */
    char msg[512];
} api_err_t;

#define API_MAX_STOPS 16

/* A validated request: what to generate and how to answer. */
typedef struct {
    hd_http_api_t api;
    char model[128];
    bool stream;
    bool include_usage;         /* stream_options.include_usage */
    int n;                      /* choices */
    int max_tokens;             /* 0 = not given */
    hd_sampling_params_t sampling;
    bool seed_set;
    char *stops[API_MAX_STOPS]; /* stop strings (owned) */
    int n_stops;
    bool logprobs;              /* per-token logprobs requested */
    int top_logprobs;
    bool thinking;              /* prompt ends in <think>: output starts with reasoning */
    bool chat;                  /* output goes through the DSML/reasoning parser */
    bool tools;                 /* tools were offered */
    bool ignore_eos;            /* keep generating after EOS (benchmarks; vLLM's extension) */
    hd_tok_ids_t prompt;        /* prompt ids (tokenizer vocabulary) */
} api_request_t;

void api_request_init(api_request_t *r);
void api_request_cleanup(api_request_t *r);

/* Parse, validate and tokenize a body. false with @err filled on bad input. */
bool api_request_parse(hd_http_api_t api, const char *body, size_t len, hd_tok_h tok,
                       const char *model_name, int max_context, int max_n, api_request_t *r,
                       api_err_t *err);

void api_err_set(api_err_t *e, int status, const char *type, const char *code,
                 const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#endif /* HADAL_COORD_API_IMPL_H */
