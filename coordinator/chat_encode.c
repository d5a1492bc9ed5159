/*
 * chat_encode.c - DeepSeek-V4 prompt rendering (encoding_dsv4.py, spec §8.2).
 *
 * Stages, in the official order: (0) OpenAI adapter: request-level tools/response_format go
 * on the first system message (an empty one is inserted when there is none), content-part
 * arrays and nulls become text; (1) tool messages merge into user turns as tool_result
 * blocks, consecutive user turns merge; (2) tool results are ordered by the preceding
 * assistant's tool-call order; (3) in thinking mode, unless tools are present or the caller
 * keeps reasoning, turns before the last user turn lose their reasoning and earlier developer
 * turns are dropped; (4) each message is rendered and followed by the transition the next
 * message needs (<｜Assistant｜> plus <think> or </think>, or a task token).
 * Written from the spec and the behaviour of the official encoder, not from its code.
 */
#include "chat_impl.h"
#include "hadal/alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Verbatim from encoding_dsv4.py (TOOLS_TEMPLATE); placeholders are filled by fill_template.
 * Test data: tests/coordinator/data/chat/tools_template.txt (written by the official module). */
const char hd_chat_tools_template[] =
    "## Tools\n"
    "\n"
    "You have access to a set of tools to help answer the user's question. You can invoke tools by writing a \"<{dsml_token}tool_calls>\" block like the following:\n"
    "\n"
    "<{dsml_token}tool_calls>\n"
    "<{dsml_token}invoke name=\"$TOOL_NAME\">\n"
    "<{dsml_token}parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</{dsml_token}parameter>\n"
    "...\n"
    "</{dsml_token}invoke>\n"
    "<{dsml_token}invoke name=\"$TOOL_NAME2\">\n"
    "...\n"
    "</{dsml_token}invoke>\n"
    "</{dsml_token}tool_calls>\n"
    "\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n"
    "\n"
    "If thinking_mode is enabled (triggered by {thinking_start_token}), you MUST output your complete reasoning inside {thinking_start_token}...{thinking_end_token} BEFORE any tool calls or final response.\n"
    "\n"
    "Otherwise, output directly after {thinking_end_token} with tool calls or final response.\n"
    "\n"
    "### Available Tool Schemas\n"
    "\n"
    "{tool_schemas}\n"
    "\n"
    "You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";

/* Verbatim from encoding_dsv4.py (REASONING_EFFORT_MAX). */
const char hd_chat_effort_max_preamble[] =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n"
    "\n";

static const char response_format_head[] =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

#define LATEST_REMINDER "<｜latest_reminder｜>"

static const struct {
    const char *name;
    const char *token;
} chat_tasks[] = {
    {"action", "<｜action｜>"}, {"query", "<｜query｜>"},   {"authority", "<｜authority｜>"},
    {"domain", "<｜domain｜>"}, {"title", "<｜title｜>"}, {"read_url", "<｜read_url｜>"},
};

typedef enum {
    ROLE_SYSTEM,
    ROLE_USER,
    ROLE_DEVELOPER,
    ROLE_ASSISTANT,
    ROLE_LATEST_REMINDER,
    ROLE_TOOL,
    ROLE_KEEP,  /* direct_search_results: kept by the drop pass, rejected by the renderer */
    ROLE_OTHER, /* anything else: dropped before the last user turn, else rejected */
} chat_role_t;

typedef enum {
    BLOCK_TEXT,        /* content: user content */
    BLOCK_TOOL_RESULT, /* content: tool message content */
} chat_block_kind_t;

typedef struct {
    chat_block_kind_t kind;
    const hd_json_t *content; /* string, content-part array, or NULL */
    const char *tool_use_id;  /* tool_call_id of the tool message ("" if none) */
    size_t order;             /* sort key (position in the tool-call order, 0 if unknown) */
} chat_block_t;

typedef struct {
    chat_role_t role;
    const char *role_name;            /* as given (for messages) */
    const hd_json_t *content;         /* content value or NULL */
    const hd_json_t *tools;           /* tools array or NULL */
    const hd_json_t *response_format; /* or NULL */
    const hd_json_t *tool_calls;      /* or NULL */
    const hd_json_t *reasoning;       /* reasoning_content, NULL when absent or dropped */
    const hd_json_t *task;            /* task value, NULL when absent or null */
    bool wo_eos;                      /* no EOS after an assistant turn */
    bool has_blocks;                  /* user turn after merging: render blocks */
    chat_block_t *blocks;             /* n_blocks entries */
    size_t n_blocks;
    size_t cap_blocks;
} chat_msg_t;

typedef struct {
    const hd_chat_request_t *req;
    chat_msg_t *msgs; /* working list */
    size_t n;
    size_t cap;
    char *err;
    size_t err_len;
    hd_status_t status;
} chat_enc_t;

static hd_status_t enc_fail(chat_enc_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static hd_status_t enc_fail(chat_enc_t *e, const char *fmt, ...)
{
    if (e->err != NULL && e->err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->err, e->err_len, fmt, ap);
        va_end(ap);
    }
    e->status = HD_ERR_INVALID_PARAM;
    return HD_ERR_INVALID_PARAM;
}

static chat_role_t role_of(const char *r)
{
    static const struct {
        const char *name;
        chat_role_t role;
    } roles[] = {
        {"system", ROLE_SYSTEM},       {"user", ROLE_USER},
        {"developer", ROLE_DEVELOPER}, {"assistant", ROLE_ASSISTANT},
        {"latest_reminder", ROLE_LATEST_REMINDER}, {"tool", ROLE_TOOL},
        {"direct_search_results", ROLE_KEEP},
    };
    for (size_t i = 0; r != NULL && i < sizeof(roles) / sizeof(roles[0]); i++) {
        if (strcmp(r, roles[i].name) == 0) {
            return roles[i].role;
        }
    }
    return ROLE_OTHER;
}

static chat_msg_t *msg_push(chat_enc_t *e)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 16;
        chat_msg_t *m = hd_realloc(e->msgs, cap * sizeof(*m), "chat messages");
        if (m == NULL) {
            e->status = HD_ERR_NO_MEMORY;
            return NULL;
        }
        e->msgs = m;
        e->cap = cap;
    }
    chat_msg_t *m = &e->msgs[e->n++];
    memset(m, 0, sizeof(*m));
    return m;
}

static hd_status_t block_push(chat_enc_t *e, chat_msg_t *m, chat_block_kind_t kind,
                              const hd_json_t *content, const char *tool_use_id)
{
    if (m->n_blocks == m->cap_blocks) {
        size_t cap = m->cap_blocks ? m->cap_blocks * 2 : 4;
        chat_block_t *b = hd_realloc(m->blocks, cap * sizeof(*b), "chat blocks");
        if (b == NULL) {
            e->status = HD_ERR_NO_MEMORY;
            return HD_ERR_NO_MEMORY;
        }
        m->blocks = b;
        m->cap_blocks = cap;
    }
    chat_block_t *b = &m->blocks[m->n_blocks++];
    b->kind = kind;
    b->content = content;
    b->tool_use_id = tool_use_id != NULL ? tool_use_id : "";
    b->order = 0;
    m->has_blocks = true;
    return HD_OK;
}

/* Value of @key, treating JSON null as absent (Python's msg.get(key) is None). */
static const hd_json_t *get_nn(const hd_json_t *obj, const char *key)
{
    const hd_json_t *v = hd_json_get(obj, key);
    return v != NULL && v->type != HD_JSON_NULL ? v : NULL;
}

/*
 * Text of a content value: a string as is; a content-part array as the official encoder
 * renders tool-result lists (text parts, "[Unsupported TYPE]" for others, joined by "\n\n");
 * absent or null as "". Anything else is refused.
 */
static hd_status_t put_content(chat_enc_t *e, const hd_json_t *c, const char *what, hd_buf_t *out)
{
    if (c == NULL || c->type == HD_JSON_NULL) {
        return HD_OK;
    }
    if (c->type == HD_JSON_STRING) {
        hd_buf_append(out, c->str, c->str_len);
        return HD_OK;
    }
    if (c->type != HD_JSON_ARRAY) {
        return enc_fail(e, "%s: content must be a string, an array of content parts or null",
                        what);
    }
    for (size_t i = 0; i < c->n; i++) {
        const hd_json_t *part = c->kids[i];
        if (part->type != HD_JSON_OBJECT) {
            return enc_fail(e, "%s: content part %zu is not an object", what, i);
        }
        const hd_json_t *type = get_nn(part, "type");
        if (i > 0) {
            hd_buf_puts(out, "\n\n");
        }
        if (type != NULL && type->type == HD_JSON_STRING && strcmp(type->str, "text") == 0) {
            const hd_json_t *text = get_nn(part, "text");
            if (text != NULL && text->type != HD_JSON_STRING) {
                return enc_fail(e, "%s: content part %zu has a non-string text", what, i);
            }
            if (text != NULL) {
                hd_buf_append(out, text->str, text->str_len);
            }
        } else {
            hd_buf_puts(out, "[Unsupported ");
            if (type == NULL) {
                hd_buf_puts(out, "None");
            } else if (type->type == HD_JSON_STRING) {
                hd_buf_append(out, type->str, type->str_len);
            } else {
                hd_chat_json_dump(type, e->req->numbers, out);
            }
            hd_buf_puts(out, "]");
        }
    }
    return HD_OK;
}

/* ---- stage 0+1: adapter and merging ---- */

static hd_status_t enc_collect(chat_enc_t *e)
{
    const hd_chat_request_t *req = e->req;
    const hd_json_t *msgs = req->messages;
    bool attach = chat_py_truthy(req->tools) || chat_py_truthy(req->response_format);
    size_t first = 0;

    if (msgs == NULL || msgs->type != HD_JSON_ARRAY) {
        return enc_fail(e, "messages must be an array");
    }
    for (size_t i = 0; i < msgs->n; i++) {
        const hd_json_t *m = msgs->kids[i];
        const hd_json_t *role = hd_json_get(m, "role");
        if (m->type != HD_JSON_OBJECT || role == NULL || role->type != HD_JSON_STRING) {
            return enc_fail(e, "messages[%zu] needs a string role", i);
        }
    }
    if (attach) {
        const hd_json_t *m0 = msgs->n > 0 ? msgs->kids[0] : NULL;
        chat_msg_t *sys = msg_push(e);
        if (sys == NULL) {
            return e->status;
        }
        sys->role = ROLE_SYSTEM;
        sys->role_name = "system";
        if (m0 != NULL && role_of(hd_json_get_str(m0, "role")) == ROLE_SYSTEM) {
            sys->content = get_nn(m0, "content");
            sys->tools = hd_json_get(m0, "tools");
            sys->response_format = hd_json_get(m0, "response_format");
            sys->task = get_nn(m0, "task");
            first = 1;
        }
        if (sys->tools == NULL) {
            sys->tools = req->tools;
        }
        if (sys->response_format == NULL) {
            sys->response_format = req->response_format;
        }
    }
    for (size_t i = first; i < msgs->n; i++) {
        const hd_json_t *src = msgs->kids[i];
        const char *rname = hd_json_get_str(src, "role");
        chat_role_t role = role_of(rname);
        chat_msg_t *last = e->n > 0 ? &e->msgs[e->n - 1] : NULL;
        if (role == ROLE_TOOL) {
            const hd_json_t *id = get_nn(src, "tool_call_id");
            if (id != NULL && id->type != HD_JSON_STRING) {
                return enc_fail(e, "messages[%zu]: tool_call_id must be a string", i);
            }
            if (last == NULL || last->role != ROLE_USER || !last->has_blocks) {
                last = msg_push(e);
                if (last == NULL) {
                    return e->status;
                }
                last->role = ROLE_USER;
                last->role_name = "user";
            }
            /* a present null stays visible: the official code prints it as "None" */
            HD_CHECK(block_push(e, last, BLOCK_TOOL_RESULT, hd_json_get(src, "content"),
                                id != NULL ? id->str : ""));
            continue;
        }
        if (role == ROLE_USER) {
            if (last == NULL || last->role != ROLE_USER || !last->has_blocks || last->task != NULL) {
                last = msg_push(e);
                if (last == NULL) {
                    return e->status;
                }
                last->role = ROLE_USER;
                last->role_name = "user";
                last->content = get_nn(src, "content");
                last->task = get_nn(src, "task");
                last->wo_eos = chat_py_truthy(hd_json_get(src, "wo_eos"));
            }
            HD_CHECK(block_push(e, last, BLOCK_TEXT, get_nn(src, "content"), NULL));
            continue;
        }
        chat_msg_t *m = msg_push(e);
        if (m == NULL) {
            return e->status;
        }
        m->role = role;
        m->role_name = rname;
        m->content = get_nn(src, "content");
        m->tools = hd_json_get(src, "tools");
        m->response_format = hd_json_get(src, "response_format");
        m->tool_calls = hd_json_get(src, "tool_calls");
        m->reasoning = get_nn(src, "reasoning_content");
        if (m->reasoning == NULL) {
            m->reasoning = get_nn(src, "reasoning"); /* vLLM's spelling */
        }
        m->task = get_nn(src, "task");
        m->wo_eos = chat_py_truthy(hd_json_get(src, "wo_eos"));
    }
    return HD_OK;
}

/* ---- stage 2: order tool results like the calls ---- */

static const char *tool_call_id(const hd_json_t *tc)
{
    const hd_json_t *id = get_nn(tc, "id");
    if (!chat_py_truthy(id)) {
        id = get_nn(hd_json_get(tc, "function"), "id");
    }
    return id != NULL && id->type == HD_JSON_STRING && id->str_len > 0 ? id->str : NULL;
}

static void enc_sort_results(chat_enc_t *e)
{
    const hd_json_t *order = NULL; /* tool_calls of the last assistant turn with calls */
    for (size_t i = 0; i < e->n; i++) {
        chat_msg_t *m = &e->msgs[i];
        if (m->role == ROLE_ASSISTANT && chat_py_truthy(m->tool_calls) &&
            m->tool_calls->type == HD_JSON_ARRAY) {
            order = m->tool_calls;
            continue;
        }
        if (m->role != ROLE_USER || !m->has_blocks || order == NULL) {
            continue;
        }
        size_t n_res = 0;
        bool any_id = false;
        for (size_t k = 0; k < order->n; k++) {
            any_id |= tool_call_id(order->kids[k]) != NULL;
        }
        for (size_t b = 0; b < m->n_blocks; b++) {
            chat_block_t *blk = &m->blocks[b];
            if (blk->kind != BLOCK_TOOL_RESULT) {
                continue;
            }
            n_res++;
            blk->order = 0;
            /* the last call with this id wins, as in a dict built in order */
            for (size_t k = 0; k < order->n; k++) {
                const char *id = tool_call_id(order->kids[k]);
                if (id != NULL && strcmp(id, blk->tool_use_id) == 0) {
                    blk->order = k;
                }
            }
        }
        if (n_res < 2 || !any_id) {
            continue;
        }
        /* stable insertion sort of the tool-result blocks among their own slots */
        for (size_t b = 1; b < m->n_blocks; b++) {
            if (m->blocks[b].kind != BLOCK_TOOL_RESULT) {
                continue;
            }
            chat_block_t cur = m->blocks[b];
            size_t j = b;
            for (;;) {
                size_t p = j;
                /* previous tool-result slot */
                while (p > 0 && m->blocks[p - 1].kind != BLOCK_TOOL_RESULT) {
                    p--;
                }
                if (p == 0 || m->blocks[p - 1].order <= cur.order) {
                    break;
                }
                m->blocks[j] = m->blocks[p - 1];
                j = p - 1;
            }
            m->blocks[j] = cur;
        }
    }
}

/* ---- stage 3: drop earlier reasoning ---- */

static size_t last_user_index(const chat_msg_t *m, size_t n, bool *found)
{
    for (size_t i = n; i-- > 0;) {
        if (m[i].role == ROLE_USER || m[i].role == ROLE_DEVELOPER) {
            *found = true;
            return i;
        }
    }
    *found = false;
    return 0;
}

static void enc_drop_thinking(chat_enc_t *e)
{
    bool found;
    size_t last = last_user_index(e->msgs, e->n, &found), o = 0;
    for (size_t i = 0; i < e->n; i++) {
        chat_msg_t m = e->msgs[i];
        bool keep_role = m.role == ROLE_USER || m.role == ROLE_SYSTEM || m.role == ROLE_TOOL ||
                         m.role == ROLE_LATEST_REMINDER || m.role == ROLE_KEEP;
        if (keep_role || !found || i >= last) {
            e->msgs[o++] = m;
        } else if (m.role == ROLE_ASSISTANT) {
            m.reasoning = NULL;
            e->msgs[o++] = m;
        } else {
            hd_free(m.blocks);
        }
    }
    e->n = o;
}

/* ---- stage 4: rendering ---- */

static void fill_template(const char *tpl, const char *schemas, size_t schemas_len, hd_buf_t *out)
{
    const char *p = tpl;
    while (*p) {
        const char *open = strchr(p, '{');
        if (open == NULL) {
            hd_buf_puts(out, p);
            return;
        }
        hd_buf_append(out, p, (size_t)(open - p));
        const char *close = strchr(open, '}');
        size_t nlen = close ? (size_t)(close - open - 1) : 0;
        if (close != NULL && nlen == 10 && memcmp(open + 1, "dsml_token", 10) == 0) {
            hd_buf_puts(out, HD_CHAT_DSML);
        } else if (close != NULL && nlen == 20 && memcmp(open + 1, "thinking_start_token", 20) == 0) {
            hd_buf_puts(out, HD_CHAT_THINK_START);
        } else if (close != NULL && nlen == 18 && memcmp(open + 1, "thinking_end_token", 18) == 0) {
            hd_buf_puts(out, HD_CHAT_THINK_END);
        } else if (close != NULL && nlen == 12 && memcmp(open + 1, "tool_schemas", 12) == 0) {
            hd_buf_append(out, schemas, schemas_len);
        } else {
            hd_buf_append(out, "{", 1);
            p = open + 1;
            continue;
        }
        p = close + 1;
    }
}

static hd_status_t render_tools(chat_enc_t *e, const hd_json_t *tools, hd_buf_t *out)
{
    hd_buf_t schemas;
    if (tools->type != HD_JSON_ARRAY) {
        return enc_fail(e, "tools must be an array");
    }
    hd_buf_init(&schemas);
    for (size_t i = 0; i < tools->n; i++) {
        const hd_json_t *fn = hd_json_get(tools->kids[i], "function");
        if (fn == NULL) {
            hd_buf_cleanup(&schemas);
            return enc_fail(e, "tools[%zu] has no \"function\"", i);
        }
        if (i > 0) {
            hd_buf_puts(&schemas, "\n");
        }
        hd_chat_json_dump(fn, e->req->numbers, &schemas);
    }
    if (schemas.failed) {
        hd_buf_cleanup(&schemas);
        e->status = HD_ERR_NO_MEMORY;
        return HD_ERR_NO_MEMORY;
    }
    hd_buf_puts(out, "\n\n");
    fill_template(hd_chat_tools_template, schemas.data ? schemas.data : "", schemas.len, out);
    hd_buf_cleanup(&schemas);
    return HD_OK;
}

static void render_response_format(chat_enc_t *e, const hd_json_t *rf, hd_buf_t *out)
{
    hd_buf_puts(out, "\n\n");
    hd_buf_puts(out, response_format_head);
    hd_chat_json_dump(rf, e->req->numbers, out);
}

/* One tool call's parameters from its arguments (JSON text, or an object). */
static hd_status_t render_arguments(chat_enc_t *e, const hd_json_t *args, size_t idx,
                                    hd_buf_t *out)
{
    hd_json_t *parsed = NULL;
    hd_chat_numbers_t *nums = NULL;
    const hd_chat_numbers_t *use_nums = e->req->numbers;
    const hd_json_t *obj = NULL;
    hd_status_t status = HD_OK;

    if (args == NULL) {
        return enc_fail(e, "tool_calls[%zu].function.arguments is missing", idx);
    }
    if (args->type == HD_JSON_STRING) {
        char err[8];
        status = hd_chat_numbers_create(&nums);
        if (status != HD_OK) {
            e->status = status;
            return status;
        }
        status = hd_chat_json_parse(args->str, args->str_len, nums, &parsed, err, sizeof(err));
        if (status == HD_OK) {
            obj = parsed;
            use_nums = nums;
        } else if (status == HD_ERR_NO_MEMORY) {
            e->status = status; /* not "not JSON": that would change the prompt */
            goto out;
        }
        status = HD_OK;
    } else {
        obj = args; /* an object given directly (vLLM/SGLang accept this too) */
    }
    if (obj == NULL) {
        /* not JSON: the official encoder passes the raw text as one string parameter */
        hd_buf_puts(out, "<" HD_CHAT_DSML "parameter name=\"arguments\" string=\"true\">");
        hd_buf_append(out, args->str, args->str_len);
        hd_buf_puts(out, "</" HD_CHAT_DSML "parameter>");
        goto out;
    }
    if (obj->type != HD_JSON_OBJECT) {
        status = enc_fail(e, "tool_calls[%zu].function.arguments is not a JSON object", idx);
        goto out;
    }
    for (size_t i = 0; i < obj->n; i++) {
        const hd_json_t *v = obj->kids[i];
        bool is_str = v->type == HD_JSON_STRING;
        if (i > 0) {
            hd_buf_puts(out, "\n");
        }
        hd_buf_puts(out, "<" HD_CHAT_DSML "parameter name=\"");
        hd_buf_append(out, v->key, v->key_len);
        hd_buf_puts(out, is_str ? "\" string=\"true\">" : "\" string=\"false\">");
        if (is_str) {
            hd_buf_append(out, v->str, v->str_len);
        } else {
            hd_chat_json_dump(v, use_nums, out);
        }
        hd_buf_puts(out, "</" HD_CHAT_DSML "parameter>");
    }
out:
    hd_json_free(parsed);
    hd_chat_numbers_destroy(nums);
    return status;
}

static hd_status_t render_tool_calls(chat_enc_t *e, const hd_json_t *calls, hd_buf_t *out)
{
    if (calls->type != HD_JSON_ARRAY) {
        return enc_fail(e, "tool_calls must be an array");
    }
    hd_buf_puts(out, "\n\n<" HD_CHAT_DSML "tool_calls>\n");
    for (size_t i = 0; i < calls->n; i++) {
        const hd_json_t *fn = hd_json_get(calls->kids[i], "function");
        const hd_json_t *name = hd_json_get(fn, "name");
        if (name == NULL || name->type != HD_JSON_STRING) {
            return enc_fail(e, "tool_calls[%zu].function.name must be a string", i);
        }
        if (i > 0) {
            hd_buf_puts(out, "\n");
        }
        hd_buf_puts(out, "<" HD_CHAT_DSML "invoke name=\"");
        hd_buf_append(out, name->str, name->str_len);
        hd_buf_puts(out, "\">\n");
        HD_CHECK(render_arguments(e, hd_json_get(fn, "arguments"), i, out));
        hd_buf_puts(out, "\n</" HD_CHAT_DSML "invoke>");
    }
    hd_buf_puts(out, "\n</" HD_CHAT_DSML "tool_calls>");
    return HD_OK;
}

static hd_status_t render_message(chat_enc_t *e, size_t idx, bool drop, hd_buf_t *out)
{
    const hd_chat_request_t *req = e->req;
    const chat_msg_t *m = &e->msgs[idx];
    bool thinking = req->mode == HD_CHAT_MODE_THINKING;
    bool found;
    size_t last_user = last_user_index(e->msgs, e->n, &found);
    char what[64];

    snprintf(what, sizeof(what), "message %zu (%s)", idx, m->role_name ? m->role_name : "?");
    if (idx == 0 && thinking && req->effort == HD_CHAT_EFFORT_MAX) {
        hd_buf_puts(out, hd_chat_effort_max_preamble);
    }
    switch (m->role) {
    case ROLE_SYSTEM:
        HD_CHECK(put_content(e, m->content, what, out));
        if (chat_py_truthy(m->tools)) {
            HD_CHECK(render_tools(e, m->tools, out));
        }
        if (chat_py_truthy(m->response_format)) {
            render_response_format(e, m->response_format, out);
        }
        break;
    case ROLE_DEVELOPER: {
        hd_buf_t c;
        hd_buf_init(&c);
        hd_status_t st = put_content(e, m->content, what, &c);
        if (st == HD_OK && c.len == 0) {
            st = enc_fail(e, "%s: developer messages need content", what);
        }
        if (st != HD_OK) {
            hd_buf_cleanup(&c);
            return st;
        }
        hd_buf_puts(out, HD_CHAT_USER);
        hd_buf_append(out, c.data, c.len);
        out->failed |= c.failed;
        hd_buf_cleanup(&c);
        if (chat_py_truthy(m->tools)) {
            HD_CHECK(render_tools(e, m->tools, out));
        }
        if (chat_py_truthy(m->response_format)) {
            render_response_format(e, m->response_format, out);
        }
        break;
    }
    case ROLE_USER:
        hd_buf_puts(out, HD_CHAT_USER);
        for (size_t b = 0; b < m->n_blocks; b++) {
            if (b > 0) {
                hd_buf_puts(out, "\n\n");
            }
            if (m->blocks[b].kind == BLOCK_TOOL_RESULT) {
                const hd_json_t *c = m->blocks[b].content;
                hd_buf_puts(out, "<tool_result>");
                if (c != NULL && c->type == HD_JSON_NULL) {
                    hd_buf_puts(out, "None"); /* str.format of Python's None */
                }
                HD_CHECK(put_content(e, c, what, out));
                hd_buf_puts(out, "</tool_result>");
            } else {
                HD_CHECK(put_content(e, m->blocks[b].content, what, out));
            }
        }
        break;
    case ROLE_LATEST_REMINDER:
        hd_buf_puts(out, LATEST_REMINDER);
        if (m->content == NULL) {
            hd_buf_puts(out, "None"); /* absent or null: str.format of Python's None */
        }
        HD_CHECK(put_content(e, m->content, what, out));
        break;
    case ROLE_ASSISTANT: {
        bool prev_task = idx > 0 && e->msgs[idx - 1].task != NULL;
        if (thinking && !prev_task && (!drop || !found || idx > last_user)) {
            if (m->reasoning != NULL && m->reasoning->type != HD_JSON_STRING) {
                return enc_fail(e, "%s: reasoning_content must be a string", what);
            }
            if (m->reasoning != NULL) {
                hd_buf_append(out, m->reasoning->str, m->reasoning->str_len);
            }
            hd_buf_puts(out, HD_CHAT_THINK_END);
        }
        HD_CHECK(put_content(e, m->content, what, out));
        if (chat_py_truthy(m->tool_calls)) {
            HD_CHECK(render_tool_calls(e, m->tool_calls, out));
        }
        if (!m->wo_eos) {
            hd_buf_puts(out, HD_CHAT_EOS);
        }
        break;
    }
    default:
        return enc_fail(e, "%s: unsupported role", what);
    }

    /* transition: only before an assistant/latest_reminder turn, or after the last message */
    if (idx + 1 < e->n && e->msgs[idx + 1].role != ROLE_ASSISTANT &&
        e->msgs[idx + 1].role != ROLE_LATEST_REMINDER) {
        return HD_OK;
    }
    if (m->task != NULL) {
        const char *tok = NULL, *name = m->task->type == HD_JSON_STRING ? m->task->str : "";
        for (size_t i = 0; i < sizeof(chat_tasks) / sizeof(chat_tasks[0]); i++) {
            if (strcmp(chat_tasks[i].name, name) == 0) {
                tok = chat_tasks[i].token;
            }
        }
        if (tok == NULL) {
            return enc_fail(e, "%s: invalid task '%s' (action, query, authority, domain, title, "
                            "read_url)", what, name);
        }
        if (strcmp(name, "action") == 0) {
            hd_buf_puts(out, HD_CHAT_ASSISTANT);
            hd_buf_puts(out, thinking ? HD_CHAT_THINK_START : HD_CHAT_THINK_END);
        }
        hd_buf_puts(out, tok);
    } else if (m->role == ROLE_USER || m->role == ROLE_DEVELOPER) {
        hd_buf_puts(out, HD_CHAT_ASSISTANT);
        if (thinking && (!drop || !found || idx >= last_user)) {
            hd_buf_puts(out, HD_CHAT_THINK_START);
        } else {
            hd_buf_puts(out, HD_CHAT_THINK_END);
        }
    }
    return HD_OK;
}

hd_status_t hd_chat_encode(const hd_chat_request_t *req, hd_buf_t *prompt, char *err,
                           size_t err_len)
{
    chat_enc_t e = {.req = req, .err = err, .err_len = err_len, .status = HD_OK};
    hd_status_t status;
    bool drop = !req->keep_reasoning;

    if (err != NULL && err_len > 0) {
        err[0] = '\0';
    }
    status = enc_collect(&e);
    if (status != HD_OK) {
        goto out;
    }
    enc_sort_results(&e);
    for (size_t i = 0; i < e.n; i++) {
        if (chat_py_truthy(e.msgs[i].tools)) {
            drop = false;
        }
    }
    if (req->mode == HD_CHAT_MODE_THINKING && drop) {
        enc_drop_thinking(&e);
    }
    if (!req->no_bos) {
        hd_buf_puts(prompt, HD_CHAT_BOS);
    }
    for (size_t i = 0; i < e.n; i++) {
        status = render_message(&e, i, drop, prompt);
        if (status != HD_OK) {
            goto out;
        }
    }
    if (prompt->failed) {
        status = HD_ERR_NO_MEMORY;
    }
out:
    if (status == HD_ERR_NO_MEMORY && err != NULL && err_len > 0) {
        snprintf(err, err_len, "out of memory");
    }
    for (size_t i = 0; i < e.n; i++) {
        hd_free(e.msgs[i].blocks);
    }
    hd_free(e.msgs);
    return status;
}

hd_status_t hd_chat_render_tool_calls(const hd_json_t *tool_calls, const hd_chat_numbers_t *nums,
                                      hd_buf_t *out, char *err, size_t err_len)
{
    hd_chat_request_t req = {.numbers = nums};
    chat_enc_t e = {.req = &req, .err = err, .err_len = err_len, .status = HD_OK};
    hd_status_t status = render_tool_calls(&e, tool_calls, out);
    if (status == HD_OK && out->failed) {
        status = HD_ERR_NO_MEMORY;
    }
    return status;
}

bool hd_chat_mode_parse(const char *s, hd_chat_mode_t *mode, hd_chat_effort_t *effort)
{
    if (strcmp(s, "chat") == 0 || strcmp(s, "non-think") == 0) {
        *mode = HD_CHAT_MODE_CHAT;
    } else if (strcmp(s, "thinking") == 0 || strcmp(s, "think") == 0 ||
               strcmp(s, "think-high") == 0) {
        *mode = HD_CHAT_MODE_THINKING;
    } else if (strcmp(s, "think-max") == 0) {
        *mode = HD_CHAT_MODE_THINKING;
        *effort = HD_CHAT_EFFORT_MAX;
    } else {
        return false;
    }
    return true;
}

bool hd_chat_effort_parse(const char *s, hd_chat_effort_t *effort)
{
    if (s[0] == '\0' || strcmp(s, "none") == 0) {
        *effort = HD_CHAT_EFFORT_DEFAULT;
    } else if (strcmp(s, "high") == 0) {
        *effort = HD_CHAT_EFFORT_HIGH;
    } else if (strcmp(s, "max") == 0) {
        *effort = HD_CHAT_EFFORT_MAX;
    } else {
        return false;
    }
    return true;
}
