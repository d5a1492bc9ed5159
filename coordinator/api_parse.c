/*
 * api_parse.c - request bodies of the OpenAI (chat, completions) and Anthropic (messages)
 * APIs -> api_request_t: strict field and type checks in each API's own wording, sampling
 * limits, chat encoding through hadal/chat.h (Anthropic messages are first rewritten into
 * the OpenAI message shape), tokenization and context-length checks. Pure functions of the
 * body, so the fuzz target (tests/fuzz/fuzz_http.c) drives them directly.
 */
#include "api_impl.h"
#include "hadal/alloc.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- errors ---- */

void api_err_set(api_err_t *e, int status, const char *type, const char *code,
                 const char *param, const char *fmt, ...)
{
    va_list ap;
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
}

#define BAD(e, param, ...) api_err_set((e), 400, NULL, NULL, (param), __VA_ARGS__)

void api_request_init(api_request_t *r)
{
    memset(r, 0, sizeof(*r));
    hd_tok_ids_init(&r->prompt);
    r->n = 1;
    r->sampling = (hd_sampling_params_t){.temperature = 1.0f, .top_p = 1.0f};
}

void api_request_cleanup(api_request_t *r)
{
    for (int i = 0; i < r->n_stops; i++) {
        hd_free(r->stops[i]);
    }
    hd_tok_ids_cleanup(&r->prompt);
    memset(r, 0, sizeof(*r));
}

/* ---- field tables ---- */

enum {
    T_NULL = 1,
    T_BOOL = 2,
    T_NUM = 4, /* any number */
    T_INT = 8, /* integral number */
    T_STR = 16,
    T_ARR = 32,
    T_OBJ = 64,
};

typedef struct {
    const char *name;
    unsigned types;
} field_t;

static const field_t chat_fields[] = {
    {"model", T_STR},
    {"messages", T_ARR},
    {"max_tokens", T_INT | T_NULL},
    {"max_completion_tokens", T_INT | T_NULL},
    {"temperature", T_NUM | T_NULL},
    {"top_p", T_NUM | T_NULL},
    {"top_k", T_INT | T_NULL},
    {"min_p", T_NUM | T_NULL},
    {"n", T_INT | T_NULL},
    {"seed", T_INT | T_NULL},
    {"stop", T_STR | T_ARR | T_NULL},
    {"logprobs", T_BOOL | T_NULL},
    {"top_logprobs", T_INT | T_NULL},
    {"tools", T_ARR | T_NULL},
    {"tool_choice", T_STR | T_OBJ | T_NULL},
    {"parallel_tool_calls", T_BOOL | T_NULL},
    {"reasoning_effort", T_STR | T_NULL},
    {"thinking", T_OBJ | T_NULL},
    {"chat_template_kwargs", T_OBJ | T_NULL},
    {"response_format", T_OBJ | T_NULL},
    {"stream", T_BOOL | T_NULL},
    {"stream_options", T_OBJ | T_NULL},
    {"frequency_penalty", T_NUM | T_NULL},
    {"presence_penalty", T_NUM | T_NULL},
    {"logit_bias", T_OBJ | T_NULL},
    {"user", T_STR | T_NULL},
    {"metadata", T_OBJ | T_NULL},
    {"store", T_BOOL | T_NULL},
    {"service_tier", T_STR | T_NULL},
    {"ignore_eos", T_BOOL | T_NULL},
    {NULL, 0},
};

static const field_t completion_fields[] = {
    {"model", T_STR},
    {"prompt", T_STR | T_ARR},
    {"max_tokens", T_INT | T_NULL},
    {"temperature", T_NUM | T_NULL},
    {"top_p", T_NUM | T_NULL},
    {"top_k", T_INT | T_NULL},
    {"min_p", T_NUM | T_NULL},
    {"n", T_INT | T_NULL},
    {"seed", T_INT | T_NULL},
    {"stop", T_STR | T_ARR | T_NULL},
    {"logprobs", T_INT | T_NULL},
    {"echo", T_BOOL | T_NULL},
    {"suffix", T_STR | T_NULL},
    {"best_of", T_INT | T_NULL},
    {"stream", T_BOOL | T_NULL},
    {"stream_options", T_OBJ | T_NULL},
    {"frequency_penalty", T_NUM | T_NULL},
    {"presence_penalty", T_NUM | T_NULL},
    {"logit_bias", T_OBJ | T_NULL},
    {"user", T_STR | T_NULL},
    {"ignore_eos", T_BOOL | T_NULL},
    {NULL, 0},
};

static const field_t messages_fields[] = {
    {"model", T_STR},
    {"messages", T_ARR},
    {"max_tokens", T_INT},
    {"system", T_STR | T_ARR},
    {"stop_sequences", T_ARR},
    {"temperature", T_NUM},
    {"top_p", T_NUM},
    {"top_k", T_INT},
    {"stream", T_BOOL},
    {"tools", T_ARR},
    {"tool_choice", T_OBJ},
    {"thinking", T_OBJ},
    {"metadata", T_OBJ},
    {"service_tier", T_STR},
    {NULL, 0},
};

static unsigned json_tmask(const hd_json_t *v)
{
    switch (v->type) {
    case HD_JSON_NULL:
        return T_NULL;
    case HD_JSON_FALSE:
    case HD_JSON_TRUE:
        return T_BOOL;
    case HD_JSON_NUMBER:
        return v->is_int ? (T_NUM | T_INT) : T_NUM;
    case HD_JSON_STRING:
        return T_STR;
    case HD_JSON_ARRAY:
        return T_ARR;
    case HD_JSON_OBJECT:
        return T_OBJ;
    }
    return 0;
}

static const char *tmask_name(unsigned t)
{
    if (t & T_INT) {
        return "an integer";
    }
    if (t & T_NUM) {
        return "a number";
    }
    if (t & T_STR) {
        return "a string";
    }
    if (t & T_BOOL) {
        return "a boolean";
    }
    if (t & T_ARR) {
        return "an array";
    }
    if (t & T_OBJ) {
        return "an object";
    }
    return "null";
}

static bool check_fields(const hd_json_t *root, const field_t *tab, bool anthropic, api_err_t *e)
{
    for (size_t i = 0; i < root->n; i++) {
        const hd_json_t *m = root->kids[i];
        const field_t *f = tab;
        while (f->name != NULL && (strlen(f->name) != m->key_len ||
                                   memcmp(f->name, m->key, m->key_len) != 0)) {
            f++;
        }
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)(m->key_len < 60 ? m->key_len : 60), m->key);
        if (f->name == NULL) {
            if (anthropic) {
                BAD(e, name, "%s: Extra inputs are not permitted", name);
            } else {
                BAD(e, name, "Unrecognized request argument supplied: %s", name);
            }
            return false;
        }
        if ((json_tmask(m) & f->types) == 0) {
            BAD(e, name, "Invalid type for '%s': expected %s, but got %s.", name,
                tmask_name(f->types), hd_json_type_name(m->type));
            return false;
        }
    }
    return true;
}

static bool present(const hd_json_t *root, const char *key)
{
    const hd_json_t *v = hd_json_get(root, key);
    return v != NULL && v->type != HD_JSON_NULL;
}

/* ---- shared fields ---- */

static bool parse_model(const hd_json_t *root, const char *model_name, api_request_t *r,
                        api_err_t *e)
{
    const char *m = hd_json_get_str(root, "model");
    if (m == NULL) {
        BAD(e, "model", "you must provide a model parameter");
        return false;
    }
    if (model_name != NULL && strcmp(m, model_name) != 0) {
        api_err_set(e, 404, NULL, "model_not_found", "model",
                    "The model `%.100s` does not exist. This server serves `%s`.", m, model_name);
        return false;
    }
    snprintf(r->model, sizeof(r->model), "%s", m);
    return true;
}

static bool parse_sampling(const hd_json_t *root, int max_n, bool anthropic, api_request_t *r,
                           api_err_t *e)
{
    double d;
    int64_t i;
    if (present(root, "temperature")) {
        hd_json_get_num(root, "temperature", &d);
        if (!(d >= 0.0 && d <= (anthropic ? 1.0 : 2.0))) {
            BAD(e, "temperature", "temperature must be between 0 and %d", anthropic ? 1 : 2);
            return false;
        }
        r->sampling.temperature = (float)d;
    }
    if (present(root, "top_p")) {
        hd_json_get_num(root, "top_p", &d);
        if (!(d > 0.0 && d <= 1.0)) {
            BAD(e, "top_p", "top_p must be in (0, 1]");
            return false;
        }
        r->sampling.top_p = (float)d;
    }
    if (present(root, "top_k")) {
        hd_json_get_i64(root, "top_k", &i);
        if (i < -1 || i > 1000000) {
            BAD(e, "top_k", "top_k must be -1 (off), 0 (off) or a positive integer");
            return false;
        }
        r->sampling.top_k = i < 0 ? 0 : (int)i;
    }
    if (present(root, "min_p")) {
        hd_json_get_num(root, "min_p", &d);
        if (!(d >= 0.0 && d <= 1.0)) {
            BAD(e, "min_p", "min_p must be in [0, 1]");
            return false;
        }
        r->sampling.min_p = (float)d;
    }
    if (present(root, "seed")) {
        hd_json_get_i64(root, "seed", &i);
        r->sampling.seed = (uint64_t)i;
        r->seed_set = true;
    }
    if (present(root, "n")) {
        hd_json_get_i64(root, "n", &i);
        if (i < 1 || i > max_n) {
            BAD(e, "n", "n must be between 1 and %d", max_n);
            return false;
        }
        r->n = (int)i;
    }
    hd_json_get_bool(root, "ignore_eos", &r->ignore_eos);
    static const char *const unsupported[] = {"frequency_penalty", "presence_penalty"};
    for (size_t k = 0; k < 2; k++) {
        if (present(root, unsupported[k]) && hd_json_get_num(root, unsupported[k], &d) &&
            d != 0.0) {
            BAD(e, unsupported[k], "%s is not supported (only 0)", unsupported[k]);
            return false;
        }
    }
    const hd_json_t *lb = hd_json_get(root, "logit_bias");
    if (lb != NULL && lb->type == HD_JSON_OBJECT && lb->n > 0) {
        BAD(e, "logit_bias", "logit_bias is not supported");
        return false;
    }
    return true;
}

static bool add_stop(api_request_t *r, const hd_json_t *s, const char *param, api_err_t *e)
{
    if (s->type != HD_JSON_STRING) {
        BAD(e, param, "Invalid type for '%s': expected a string, but got %s.", param,
            hd_json_type_name(s->type));
        return false;
    }
    if (s->str_len == 0 || s->str_len > 256) {
        BAD(e, param, "stop strings must have 1 to 256 bytes");
        return false;
    }
    if (r->n_stops >= API_MAX_STOPS) {
        BAD(e, param, "at most %d stop strings", API_MAX_STOPS);
        return false;
    }
    r->stops[r->n_stops] = hd_strndup(s->str, s->str_len, "api stop string");
    if (r->stops[r->n_stops] == NULL) {
        api_err_set(e, 500, NULL, NULL, NULL, "out of memory");
        return false;
    }
    r->n_stops++;
    return true;
}

static bool parse_stops(const hd_json_t *root, const char *key, api_request_t *r, api_err_t *e)
{
    const hd_json_t *s = hd_json_get(root, key);
    if (s == NULL || s->type == HD_JSON_NULL) {
        return true;
    }
    if (s->type == HD_JSON_STRING) {
        return add_stop(r, s, key, e);
    }
    for (size_t i = 0; i < s->n; i++) {
        if (!add_stop(r, s->kids[i], key, e)) {
            return false;
        }
    }
    return true;
}

static bool parse_stream(const hd_json_t *root, api_request_t *r, api_err_t *e)
{
    hd_json_get_bool(root, "stream", &r->stream);
    const hd_json_t *so = hd_json_get(root, "stream_options");
    if (so != NULL && so->type == HD_JSON_OBJECT) {
        if (!r->stream) {
            BAD(e, "stream_options", "stream_options is only allowed when stream is true");
            return false;
        }
        for (size_t i = 0; i < so->n; i++) {
            const hd_json_t *m = so->kids[i];
            if (strcmp(m->key, "include_usage") == 0 && m->type != HD_JSON_NULL) {
                if (m->type != HD_JSON_TRUE && m->type != HD_JSON_FALSE) {
                    BAD(e, "stream_options.include_usage", "include_usage must be a boolean");
                    return false;
                }
                r->include_usage = m->type == HD_JSON_TRUE;
            } else if (strcmp(m->key, "continuous_usage_stats") != 0 &&
                       strcmp(m->key, "include_usage") != 0) {
                BAD(e, "stream_options", "Unrecognized stream_options field: %.60s", m->key);
                return false;
            }
        }
    }
    return true;
}

static bool parse_max_tokens(const hd_json_t *root, const char *key, api_request_t *r,
                             api_err_t *e)
{
    int64_t v;
    if (!present(root, key)) {
        return true;
    }
    hd_json_get_i64(root, key, &v);
    if (v < 1 || v > INT32_MAX) {
        BAD(e, key, "%s must be at least 1", key);
        return false;
    }
    r->max_tokens = (int)v;
    return true;
}

/* Prompt length against the context; max_tokens too when given. */
static bool check_context(api_request_t *r, int max_context, const char *what, api_err_t *e)
{
    int64_t np = (int64_t)r->prompt.n;
    if (np < 1) {
        BAD(e, what, "the prompt is empty");
        return false;
    }
    if (np >= max_context) {
        api_err_set(e, 400, NULL, "context_length_exceeded", what,
                    "This model's maximum context length is %d tokens. However, your %s "
                    "resulted in %lld tokens.",
                    max_context, what, (long long)np);
        return false;
    }
    if (r->max_tokens > 0 && np + r->max_tokens > max_context) {
        api_err_set(e, 400, NULL, "context_length_exceeded", "max_tokens",
                    "This model's maximum context length is %d tokens. However, you requested "
                    "%lld tokens (%lld in the %s, %d in the completion). Please reduce the "
                    "length of the %s or completion.",
                    max_context, (long long)np + r->max_tokens, (long long)np, what,
                    r->max_tokens, what);
        return false;
    }
    return true;
}

/* ---- OpenAI chat ---- */

static bool parse_effort(const char *s, hd_chat_mode_t *mode, hd_chat_effort_t *effort)
{
    if (strcmp(s, "none") == 0 || strcmp(s, "minimal") == 0 || strcmp(s, "non-think") == 0) {
        *mode = HD_CHAT_MODE_CHAT;
    } else if (strcmp(s, "low") == 0 || strcmp(s, "medium") == 0 || strcmp(s, "high") == 0) {
        *mode = HD_CHAT_MODE_THINKING;
        *effort = HD_CHAT_EFFORT_HIGH;
    } else if (strcmp(s, "max") == 0 || strcmp(s, "xhigh") == 0) {
        *mode = HD_CHAT_MODE_THINKING;
        *effort = HD_CHAT_EFFORT_MAX;
    } else {
        return false;
    }
    return true;
}

static bool check_tools(const hd_json_t *tools, api_err_t *e)
{
    for (size_t i = 0; i < tools->n; i++) {
        const hd_json_t *t = tools->kids[i];
        const hd_json_t *f = hd_json_get(t, "function");
        const char *type = hd_json_get_str(t, "type");
        if (t->type != HD_JSON_OBJECT || type == NULL || strcmp(type, "function") != 0 ||
            f == NULL || f->type != HD_JSON_OBJECT || hd_json_get_str(f, "name") == NULL) {
            BAD(e, "tools", "tools[%zu] must be {\"type\": \"function\", \"function\": "
                "{\"name\": ..., \"parameters\": {...}}}", i);
            return false;
        }
        const hd_json_t *p = hd_json_get(f, "parameters");
        if (p != NULL && p->type != HD_JSON_OBJECT && p->type != HD_JSON_NULL) {
            BAD(e, "tools", "tools[%zu].function.parameters must be an object", i);
            return false;
        }
    }
    return true;
}

static bool check_messages(const hd_json_t *msgs, bool anthropic, api_err_t *e)
{
    if (msgs == NULL || msgs->type != HD_JSON_ARRAY || msgs->n == 0) {
        BAD(e, "messages", "messages must be a non-empty array");
        return false;
    }
    for (size_t i = 0; i < msgs->n; i++) {
        const hd_json_t *m = msgs->kids[i];
        const char *role = hd_json_get_str(m, "role");
        if (m->type != HD_JSON_OBJECT || role == NULL) {
            BAD(e, "messages", "messages[%zu] must be an object with a string role", i);
            return false;
        }
        bool ok = anthropic ? (strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0)
                            : (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0 ||
                               strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0 ||
                               strcmp(role, "tool") == 0);
        if (!ok) {
            BAD(e, "messages", "messages[%zu].role: unknown role '%.40s'", i, role);
            return false;
        }
        const hd_json_t *c = hd_json_get(m, "content");
        if (c != NULL && c->type != HD_JSON_STRING && c->type != HD_JSON_ARRAY &&
            c->type != HD_JSON_NULL) {
            BAD(e, "messages", "messages[%zu].content must be a string or an array", i);
            return false;
        }
        if (anthropic && (c == NULL || c->type == HD_JSON_NULL)) {
            BAD(e, "messages", "messages.%zu.content: Field required", i);
            return false;
        }
    }
    return true;
}

static bool encode_chat(const hd_chat_request_t *cr, hd_tok_h tok, api_request_t *r,
                        api_err_t *e)
{
    hd_buf_t text;
    char err[256] = "";
    hd_buf_init(&text);
    hd_status_t st = hd_chat_encode(cr, &text, err, sizeof(err));
    if (st == HD_OK && text.failed) {
        st = HD_ERR_NO_MEMORY;
    }
    if (st == HD_OK) {
        st = hd_tok_encode(tok, text.data, text.len, 0, &r->prompt);
    }
    hd_buf_cleanup(&text);
    if (st == HD_ERR_INVALID_PARAM) {
        BAD(e, "messages", "%s", err[0] ? err : "the messages cannot be encoded");
        return false;
    }
    if (st != HD_OK) {
        api_err_set(e, 500, NULL, NULL, NULL, "encoding failed: %s", hd_status_string(st));
        return false;
    }
    r->thinking = cr->mode == HD_CHAT_MODE_THINKING;
    r->chat = true;
    return true;
}

static bool parse_chat(const hd_json_t *root, const hd_chat_numbers_t *nums, hd_tok_h tok,
                       int max_n, api_request_t *r, api_err_t *e)
{
    hd_chat_request_t cr = {.numbers = nums, .mode = HD_CHAT_MODE_CHAT};
    const hd_json_t *v;
    if (!parse_sampling(root, max_n, false, r, e) || !parse_stops(root, "stop", r, e) ||
        !parse_stream(root, r, e) || !parse_max_tokens(root, "max_tokens", r, e) ||
        !parse_max_tokens(root, "max_completion_tokens", r, e)) {
        return false;
    }
    cr.messages = hd_json_get(root, "messages");
    if (!check_messages(cr.messages, false, e)) {
        return false;
    }
    hd_json_get_bool(root, "logprobs", &r->logprobs);
    if (present(root, "top_logprobs")) {
        int64_t k;
        hd_json_get_i64(root, "top_logprobs", &k);
        if (k < 0 || k > 20 || !r->logprobs) {
            BAD(e, "top_logprobs", "top_logprobs must be in [0, 20] and needs logprobs: true");
            return false;
        }
        r->top_logprobs = (int)k;
    }

    v = hd_json_get(root, "tools");
    if (v != NULL && v->type == HD_JSON_ARRAY && v->n > 0) {
        if (!check_tools(v, e)) {
            return false;
        }
        cr.tools = v;
        r->tools = true;
    }
    v = hd_json_get(root, "tool_choice");
    if (v != NULL && v->type == HD_JSON_STRING) {
        if (strcmp(v->str, "none") == 0) {
            cr.tools = NULL;
            r->tools = false;
        } else if (strcmp(v->str, "auto") != 0 && strcmp(v->str, "required") != 0) {
            BAD(e, "tool_choice", "tool_choice must be none, auto, required or a function");
            return false;
        }
    } else if (v != NULL && v->type == HD_JSON_OBJECT) {
        const hd_json_t *f = hd_json_get(v, "function");
        if (f == NULL || hd_json_get_str(f, "name") == NULL || cr.tools == NULL) {
            BAD(e, "tool_choice", "tool_choice names a function that is not in tools");
            return false;
        }
    }
    const char *eff = hd_json_get_str(root, "reasoning_effort");
    if (eff != NULL && !parse_effort(eff, &cr.mode, &cr.effort)) {
        BAD(e, "reasoning_effort", "reasoning_effort must be none, low, medium, high or max");
        return false;
    }
    v = hd_json_get(root, "thinking");
    if (v != NULL && v->type == HD_JSON_OBJECT) {
        const char *t = hd_json_get_str(v, "type");
        if (t != NULL && strcmp(t, "enabled") == 0) {
            cr.mode = HD_CHAT_MODE_THINKING;
        } else if (t != NULL && strcmp(t, "disabled") == 0) {
            cr.mode = HD_CHAT_MODE_CHAT;
        } else {
            BAD(e, "thinking", "thinking.type must be enabled or disabled");
            return false;
        }
    }
    v = hd_json_get(root, "chat_template_kwargs");
    if (v != NULL && v->type == HD_JSON_OBJECT) {
        bool th;
        if (hd_json_get_bool(v, "thinking", &th)) {
            cr.mode = th ? HD_CHAT_MODE_THINKING : HD_CHAT_MODE_CHAT;
        }
        const char *re = hd_json_get_str(v, "reasoning_effort");
        if (re != NULL && !parse_effort(re, &cr.mode, &cr.effort)) {
            BAD(e, "chat_template_kwargs", "reasoning_effort must be none, high or max");
            return false;
        }
    }
    v = hd_json_get(root, "response_format");
    if (v != NULL && v->type == HD_JSON_OBJECT) {
        const char *t = hd_json_get_str(v, "type");
        const hd_json_t *js = hd_json_get(v, "json_schema");
        if (t == NULL || (strcmp(t, "text") != 0 && strcmp(t, "json_object") != 0 &&
                          strcmp(t, "json_schema") != 0)) {
            BAD(e, "response_format", "response_format.type must be text, json_object or "
                "json_schema");
            return false;
        }
        if (strcmp(t, "json_schema") == 0 &&
            (js == NULL || js->type != HD_JSON_OBJECT || hd_json_get_str(js, "name") == NULL)) {
            BAD(e, "response_format", "response_format.json_schema must be an object with a "
                "name and a schema");
            return false;
        }
        if (strcmp(t, "text") != 0) {
            cr.response_format = v;
        }
    }
    return encode_chat(&cr, tok, r, e);
}

/* ---- OpenAI completions ---- */

static bool parse_completion(const hd_json_t *root, hd_tok_h tok, int max_n, api_request_t *r,
                             api_err_t *e)
{
    int64_t k;
    bool b;
    if (!parse_sampling(root, max_n, false, r, e) || !parse_stops(root, "stop", r, e) ||
        !parse_stream(root, r, e) || !parse_max_tokens(root, "max_tokens", r, e)) {
        return false;
    }
    if (r->max_tokens == 0 && !present(root, "max_tokens")) {
        r->max_tokens = 16; /* the OpenAI default for completions */
    }
    if (present(root, "logprobs")) {
        hd_json_get_i64(root, "logprobs", &k);
        if (k < 0 || k > 5) {
            BAD(e, "logprobs", "logprobs must be in [0, 5]");
            return false;
        }
        r->logprobs = true;
        r->top_logprobs = (int)k;
    }
    if (hd_json_get_bool(root, "echo", &b) && b) {
        BAD(e, "echo", "echo is not supported");
        return false;
    }
    if (present(root, "suffix")) {
        BAD(e, "suffix", "suffix is not supported");
        return false;
    }
    if (present(root, "best_of") && hd_json_get_i64(root, "best_of", &k) && k != 1) {
        BAD(e, "best_of", "best_of is not supported (only 1)");
        return false;
    }
    const hd_json_t *p = hd_json_get(root, "prompt");
    if (p == NULL) {
        BAD(e, "prompt", "you must provide a prompt");
        return false;
    }
    if (p->type == HD_JSON_ARRAY && p->n == 1 &&
        (p->kids[0]->type == HD_JSON_STRING || p->kids[0]->type == HD_JSON_ARRAY)) {
        p = p->kids[0]; /* a batch of one */
    }
    if (p->type == HD_JSON_STRING) {
        hd_status_t st = hd_tok_encode(tok, p->str, p->str_len, 0, &r->prompt);
        if (st != HD_OK) {
            api_err_set(e, 500, NULL, NULL, NULL, "tokenizing failed: %s", hd_status_string(st));
            return false;
        }
        return true;
    }
    for (size_t i = 0; i < p->n; i++) {
        const hd_json_t *t = p->kids[i];
        if (t->type != HD_JSON_NUMBER || !t->is_int || t->i64 < 0 ||
            t->i64 >= (int64_t)hd_tok_n_ids(tok)) {
            BAD(e, "prompt", "prompt must be a string, an array of token ids, or a batch of "
                "one of those (batches of several prompts are not supported)");
            return false;
        }
        if (r->prompt.n == r->prompt.cap) {
            size_t nc = r->prompt.cap ? r->prompt.cap * 2 : 64;
            int32_t *ids = hd_realloc(r->prompt.ids, nc * sizeof(int32_t), "prompt ids");
            if (ids == NULL) {
                api_err_set(e, 500, NULL, NULL, NULL, "out of memory");
                return false;
            }
            r->prompt.ids = ids;
            r->prompt.cap = nc;
        }
        r->prompt.ids[r->prompt.n++] = (int32_t)t->i64;
    }
    return true;
}

/* ---- Anthropic messages -> OpenAI shape ---- */

static void put_text_of(hd_buf_t *o, const hd_json_t *c, const hd_chat_numbers_t *nums)
{
    if (c == NULL || c->type == HD_JSON_NULL) {
        hd_buf_puts(o, "\"\"");
        return;
    }
    if (c->type == HD_JSON_STRING) {
        hd_buf_json_str(o, c->str, c->str_len);
        return;
    }
    hd_buf_t t;
    hd_buf_init(&t);
    for (size_t i = 0; c->type == HD_JSON_ARRAY && i < c->n; i++) {
        const char *s = hd_json_get_str(c->kids[i], "text");
        if (s != NULL) {
            hd_buf_puts(&t, s);
        }
    }
    (void)nums;
    hd_buf_json_str(o, t.data ? t.data : "", t.len);
    hd_buf_cleanup(&t);
}

/* Append one Anthropic message as one or more OpenAI messages (comma-led after the first). */
static bool anth_message(hd_buf_t *o, const hd_json_t *m, const hd_chat_numbers_t *nums,
                         size_t idx, bool *first, api_err_t *e)
{
    const char *role = hd_json_get_str(m, "role");
    const hd_json_t *c = hd_json_get(m, "content");
    bool user = strcmp(role, "user") == 0;
#define SEP() (hd_buf_puts(o, *first ? "" : ","), *first = false)
    if (c->type == HD_JSON_STRING) {
        SEP();
        hd_buf_printf(o, "{\"role\":\"%s\",\"content\":", role);
        hd_buf_json_str(o, c->str, c->str_len);
        hd_buf_puts(o, "}");
        return true;
    }
    hd_buf_t text, reasoning, calls;
    hd_buf_init(&text);
    hd_buf_init(&reasoning);
    hd_buf_init(&calls);
    bool ok = true;
    int n_calls = 0;
    for (size_t i = 0; i < c->n && ok; i++) {
        const hd_json_t *b = c->kids[i];
        const char *type = hd_json_get_str(b, "type");
        if (b->type != HD_JSON_OBJECT || type == NULL) {
            BAD(e, "messages", "messages.%zu.content.%zu: a block needs a type", idx, i);
            ok = false;
        } else if (strcmp(type, "text") == 0) {
            const char *s = hd_json_get_str(b, "text");
            if (s == NULL) {
                BAD(e, "messages", "messages.%zu.content.%zu.text: Field required", idx, i);
                ok = false;
            } else {
                hd_buf_puts(&text, s);
            }
        } else if (strcmp(type, "thinking") == 0 && !user) {
            const char *s = hd_json_get_str(b, "thinking");
            hd_buf_puts(&reasoning, s ? s : "");
        } else if (strcmp(type, "redacted_thinking") == 0 && !user) {
            continue;
        } else if (strcmp(type, "tool_use") == 0 && !user) {
            const char *id = hd_json_get_str(b, "id");
            const char *name = hd_json_get_str(b, "name");
            const hd_json_t *in = hd_json_get(b, "input");
            if (id == NULL || name == NULL || in == NULL || in->type != HD_JSON_OBJECT) {
                BAD(e, "messages", "messages.%zu.content.%zu: tool_use needs id, name and an "
                    "object input", idx, i);
                ok = false;
                continue;
            }
            hd_buf_t args;
            hd_buf_init(&args);
            hd_chat_json_dump(in, nums, &args);
            hd_buf_puts(&calls, n_calls++ ? "," : "");
            hd_buf_puts(&calls, "{\"id\":");
            hd_buf_json_str(&calls, id, strlen(id));
            hd_buf_puts(&calls, ",\"type\":\"function\",\"function\":{\"name\":");
            hd_buf_json_str(&calls, name, strlen(name));
            hd_buf_puts(&calls, ",\"arguments\":");
            hd_buf_json_str(&calls, args.data ? args.data : "{}", args.len);
            hd_buf_puts(&calls, "}}");
            hd_buf_cleanup(&args);
        } else if (strcmp(type, "tool_result") == 0 && user) {
            const char *id = hd_json_get_str(b, "tool_use_id");
            if (id == NULL) {
                BAD(e, "messages", "messages.%zu.content.%zu.tool_use_id: Field required",
                    idx, i);
                ok = false;
                continue;
            }
            SEP();
            hd_buf_puts(o, "{\"role\":\"tool\",\"tool_call_id\":");
            hd_buf_json_str(o, id, strlen(id));
            hd_buf_puts(o, ",\"content\":");
            put_text_of(o, hd_json_get(b, "content"), nums);
            hd_buf_puts(o, "}");
        } else {
            BAD(e, "messages", "messages.%zu.content.%zu: block type '%.40s' is not supported "
                "in a %s message", idx, i, type, role);
            ok = false;
        }
    }
    if (ok && (text.len > 0 || reasoning.len > 0 || n_calls > 0 || c->n == 0)) {
        SEP();
        hd_buf_printf(o, "{\"role\":\"%s\",\"content\":", role);
        hd_buf_json_str(o, text.data ? text.data : "", text.len);
        if (reasoning.len > 0) {
            hd_buf_puts(o, ",\"reasoning_content\":");
            hd_buf_json_str(o, reasoning.data, reasoning.len);
        }
        if (n_calls > 0) {
            hd_buf_printf(o, ",\"tool_calls\":[%s]", calls.data);
        }
        hd_buf_puts(o, "}");
    }
#undef SEP
    hd_buf_cleanup(&text);
    hd_buf_cleanup(&reasoning);
    hd_buf_cleanup(&calls);
    return ok;
}

static bool parse_messages(const hd_json_t *root, const hd_chat_numbers_t *nums, hd_tok_h tok,
                           api_request_t *r, api_err_t *e)
{
    hd_chat_request_t cr = {.mode = HD_CHAT_MODE_CHAT};
    hd_buf_t o;
    hd_json_t *conv = NULL;
    hd_chat_numbers_t *nums2 = NULL;
    const hd_json_t *v;
    bool ok = false, first = true;
    if (!present(root, "max_tokens")) {
        BAD(e, "max_tokens", "max_tokens: Field required");
        return false;
    }
    if (!parse_sampling(root, 1, true, r, e) || !parse_stops(root, "stop_sequences", r, e) ||
        !parse_max_tokens(root, "max_tokens", r, e)) {
        return false;
    }
    hd_json_get_bool(root, "stream", &r->stream);
    const hd_json_t *msgs = hd_json_get(root, "messages");
    if (!check_messages(msgs, true, e)) {
        return false;
    }
    hd_buf_init(&o);
    hd_buf_puts(&o, "{\"messages\":[");
    v = hd_json_get(root, "system");
    if (v != NULL) {
        first = false;
        hd_buf_puts(&o, "{\"role\":\"system\",\"content\":");
        put_text_of(&o, v, nums);
        hd_buf_puts(&o, "}");
    }
    for (size_t i = 0; i < msgs->n; i++) {
        if (!anth_message(&o, msgs->kids[i], nums, i, &first, e)) {
            goto out;
        }
    }
    hd_buf_puts(&o, "],\"tools\":[");
    v = hd_json_get(root, "tools");
    bool use_tools = v != NULL && v->n > 0;
    for (size_t i = 0; v != NULL && i < v->n; i++) {
        const hd_json_t *t = v->kids[i];
        const char *name = hd_json_get_str(t, "name");
        const char *type = hd_json_get_str(t, "type");
        const hd_json_t *schema = hd_json_get(t, "input_schema");
        if (t->type != HD_JSON_OBJECT || name == NULL || schema == NULL ||
            schema->type != HD_JSON_OBJECT || (type != NULL && strcmp(type, "custom") != 0)) {
            BAD(e, "tools", "tools.%zu: only custom tools {name, description, input_schema} "
                "are supported", i);
            goto out;
        }
        hd_buf_puts(&o, i ? "," : "");
        hd_buf_puts(&o, "{\"type\":\"function\",\"function\":{\"name\":");
        hd_buf_json_str(&o, name, strlen(name));
        const char *desc = hd_json_get_str(t, "description");
        if (desc != NULL) {
            hd_buf_puts(&o, ",\"description\":");
            hd_buf_json_str(&o, desc, strlen(desc));
        }
        hd_buf_puts(&o, ",\"parameters\":");
        hd_chat_json_dump(schema, nums, &o);
        hd_buf_puts(&o, "}}");
    }
    hd_buf_puts(&o, "]}");
    v = hd_json_get(root, "tool_choice");
    if (v != NULL) {
        const char *t = hd_json_get_str(v, "type");
        if (t == NULL || (strcmp(t, "auto") != 0 && strcmp(t, "any") != 0 &&
                          strcmp(t, "tool") != 0 && strcmp(t, "none") != 0)) {
            BAD(e, "tool_choice", "tool_choice.type must be auto, any, tool or none");
            goto out;
        }
        if (strcmp(t, "none") == 0) {
            use_tools = false;
        }
    }
    v = hd_json_get(root, "thinking");
    if (v != NULL) {
        const char *t = hd_json_get_str(v, "type");
        int64_t budget = 0;
        if (t != NULL && (strcmp(t, "enabled") == 0 || strcmp(t, "adaptive") == 0)) {
            cr.mode = HD_CHAT_MODE_THINKING;
            cr.effort = HD_CHAT_EFFORT_HIGH;
            if (hd_json_get_i64(v, "budget_tokens", &budget) && budget >= 32768) {
                cr.effort = HD_CHAT_EFFORT_MAX;
            }
        } else if (t == NULL || strcmp(t, "disabled") != 0) {
            BAD(e, "thinking", "thinking.type must be enabled, adaptive or disabled");
            goto out;
        }
    }
    if (o.failed) {
        api_err_set(e, 500, NULL, NULL, NULL, "out of memory");
        goto out;
    }
    char err[160];
    if (hd_chat_numbers_create(&nums2) != HD_OK ||
        hd_chat_json_parse(o.data, o.len, nums2, &conv, err, sizeof(err)) != HD_OK) {
        api_err_set(e, 500, NULL, NULL, NULL, "internal conversion failed");
        goto out;
    }
    cr.messages = hd_json_get(conv, "messages");
    cr.tools = use_tools ? hd_json_get(conv, "tools") : NULL;
    cr.numbers = nums2;
    r->tools = use_tools;
    ok = encode_chat(&cr, tok, r, e);
out:
    hd_json_free(conv);
    hd_chat_numbers_destroy(nums2);
    hd_buf_cleanup(&o);
    return ok;
}

/* ---- entry ---- */

bool api_request_parse(hd_http_api_t api, const char *body, size_t len, hd_tok_h tok,
                       const char *model_name, int max_context, int max_n, api_request_t *r,
                       api_err_t *e)
{
    hd_json_t *root = NULL;
    hd_chat_numbers_t *nums = NULL;
    char err[200] = "";
    bool ok = false;
    bool anth = api == HD_HTTP_API_MESSAGES;
    static const field_t *const tabs[] = {chat_fields, completion_fields, messages_fields};

    r->api = api;
    if (hd_chat_numbers_create(&nums) != HD_OK) {
        api_err_set(e, 500, NULL, NULL, NULL, "out of memory");
        return false;
    }
    hd_status_t st = hd_chat_json_parse(body, len, nums, &root, err, sizeof(err));
    if (st != HD_OK) {
        if (st == HD_ERR_NO_MEMORY) {
            api_err_set(e, 500, NULL, NULL, NULL, "out of memory");
        } else {
            BAD(e, NULL, "We could not parse the JSON body of your request: %s", err);
        }
        goto out;
    }
    if (root->type != HD_JSON_OBJECT) {
        BAD(e, NULL, "the request body must be a JSON object");
        goto out;
    }
    if (!check_fields(root, tabs[api], anth, e) || !parse_model(root, model_name, r, e)) {
        goto out;
    }
    switch (api) {
    case HD_HTTP_API_CHAT:
        ok = parse_chat(root, nums, tok, max_n, r, e);
        break;
    case HD_HTTP_API_COMPLETION:
        ok = parse_completion(root, tok, max_n, r, e);
        break;
    case HD_HTTP_API_MESSAGES:
        ok = parse_messages(root, nums, tok, r, e);
        break;
    }
    if (ok) {
        ok = check_context(r, max_context, api == HD_HTTP_API_COMPLETION ? "prompt" : "messages",
                           e);
    }
out:
    hd_json_free(root);
    hd_chat_numbers_destroy(nums);
    return ok;
}

int hd_http_check_request(hd_http_api_t api, const char *body, size_t len, hd_tok_h tok,
                          const char *model_name, int max_context, char *msg, size_t msg_len)
{
    api_request_t r;
    api_err_t e = {.status = 200};
    api_request_init(&r);
    bool ok = api_request_parse(api, body, len, tok, model_name, max_context, 16, &r, &e);
    api_request_cleanup(&r);
    if (msg != NULL && msg_len > 0) {
        snprintf(msg, msg_len, "%s", ok ? "" : e.msg);
    }
    return ok ? 200 : e.status;
}
