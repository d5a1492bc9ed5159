/*
 * chat_parse.c - DeepSeek-V4 completion text -> reasoning, content, DSML tool calls.
 *
 * One state machine serves streaming and whole-text parsing. It consumes input only when a
 * decision is certain from the bytes seen, and holds back anything that may still become a
 * marker (a prefix of </think>, "\n\n<｜DSML｜tool_calls", a DSML closing tag, the EOS string)
 * or half a UTF-8 character; so however the text is split, the concatenated deltas are the
 * same. An outer layer cuts the stream at the EOS string. Grammar of a tool block, as the
 * official encoder writes it (and the official parser accepts):
 *
 *   \n\n<｜DSML｜tool_calls>\n
 *   ( <｜DSML｜invoke name="NAME">\n
 *     ( <｜DSML｜parameter name="K" string="true|false">VALUE</｜DSML｜parameter>\n )*
 *     </｜DSML｜invoke>\n )*
 *   </｜DSML｜tool_calls>
 *
 * Arguments are streamed as the JSON the official parser builds: {"K": "VALUE", "K2": RAW}.
 * Malformed DSML: if no call of the block has started, the whole block is content; otherwise
 * the open call is closed (complete=false) and the text from the error on is content.
 */
#include "chat_impl.h"
#include "hadal/alloc.h"

#include <string.h>

#define M_THINK_END "</think>"
#define M_TC_NN "\n\n<｜DSML｜tool_calls"
#define M_TC "<｜DSML｜tool_calls"
#define M_TCE "</｜DSML｜tool_calls>"
#define M_INV "<｜DSML｜invoke"
#define M_INVC "</｜DSML｜invoke"
#define M_PO "<｜DSML｜parameter"
#define M_PC "</｜DSML｜parameter"
#define M_PCL "/｜DSML｜parameter"
#define M_HDR_T "\" string=\"true\">"
#define M_HDR_F "\" string=\"false\">"

#define SL(s) (sizeof(s) - 1)

typedef enum {
    P_REASONING, /* inside <think> */
    P_CONTENT,   /* answer text */
    P_TB_OPEN,   /* after "<｜DSML｜tool_calls": expect ">\n" */
    P_TB_ITEM,   /* expect "<｜DSML｜invoke" or "</｜DSML｜tool_calls>" */
    P_TB_NAME,   /* ' name="NAME">\n' up to the first parameter or the invoke's end */
    P_TB_PHDR,   /* ' name="K" string="true|false">' */
    P_TB_PVAL,   /* VALUE up to "</｜DSML｜parameter" */
    P_TB_PSEP,   /* ">\n" then a parameter or the invoke's end */
    P_TB_INVEND, /* after "</｜DSML｜invoke": expect ">\n" */
    P_DONE,      /* EOS seen: the rest is ignored */
} pstate_t;

struct hd_chat_parser {
    pstate_t st;
    hd_buf_t pend;        /* input not yet consumed starts at pos */
    size_t pos;           /* consumed bytes of pend */
    size_t avail;         /* bytes of pend the machine may look at (EOS hold-back) */
    size_t scan;          /* bytes after pos known not to start a marker (search resume) */
    size_t eos_scan;      /* bytes of pend known not to start the EOS string */
    hd_buf_t block_raw;   /* raw text of the current block while no call has started */
    hd_buf_t names;       /* parameter names of the open call, each NUL-terminated */
    hd_buf_t tmp;         /* scratch for escaped deltas */
    size_t n_calls;       /* calls started */
    size_t n_params;      /* parameters in the open call */
    bool block_committed; /* a call of the current block has started */
    bool in_call;         /* between TOOL_START and TOOL_END */
    bool in_string;       /* a string value is open in the arguments JSON */
    bool value_is_str;    /* current parameter has string="true" */
    bool reasoning_closed;
    bool eos;
    bool malformed;
    bool oom;
    hd_chat_delta_func_t cb;
    void *user;
};

/* ---- emission ---- */

static void emit(hd_chat_parser_h p, hd_chat_delta_kind_t kind, const char *s, size_t n, bool complete)
{
    hd_chat_delta_t d = {.kind = kind, .tool_index = p->n_calls ? p->n_calls - 1 : 0,
                         .text = s, .len = n, .complete = complete};
    if (n == 0 && (kind == HD_CHAT_DELTA_REASONING || kind == HD_CHAT_DELTA_CONTENT ||
                   kind == HD_CHAT_DELTA_TOOL_ARGS)) {
        return;
    }
    if (p->cb != NULL) {
        p->cb(&d, p->user);
    }
}

static void emit_str(hd_chat_parser_h p, hd_chat_delta_kind_t kind, const char *s)
{
    emit(p, kind, s, strlen(s), false);
}

/* JSON string escaping without quotes (json.dumps rules; byte-local, so split-safe). */
static void escape_into(hd_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *rep = NULL;
        char u[7];
        if (c == '"') {
            rep = "\\\"";
        } else if (c == '\\') {
            rep = "\\\\";
        } else if (c == '\n') {
            rep = "\\n";
        } else if (c == '\r') {
            rep = "\\r";
        } else if (c == '\t') {
            rep = "\\t";
        } else if (c == '\b') {
            rep = "\\b";
        } else if (c == '\f') {
            rep = "\\f";
        } else if (c < 0x20) {
            u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0', u[4] = hex[c >> 4], u[5] = hex[c & 15];
            u[6] = '\0';
            rep = u;
        }
        if (rep != NULL) {
            hd_buf_append(b, s + run, i - run);
            hd_buf_puts(b, rep);
            run = i + 1;
        }
    }
    hd_buf_append(b, s + run, n - run);
}

static void emit_args_escaped(hd_chat_parser_h p, const char *s, size_t n)
{
    p->tmp.len = 0;
    escape_into(&p->tmp, s, n);
    p->oom |= p->tmp.failed;
    emit(p, HD_CHAT_DELTA_TOOL_ARGS, p->tmp.data, p->tmp.len, false);
}

/* Largest k <= n such that s[0..k) does not end inside a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n)
{
    size_t i = n, back = 0;
    while (i > 0 && back < 4) {
        unsigned char c = (unsigned char)s[i - 1];
        back++;
        if ((c & 0xC0) != 0x80) {
            size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                        : (c & 0xF8) == 0xF0 ? 4 : 1;
            return back < need ? i - 1 : n;
        }
        i--;
    }
    return n;
}

/* Longest suffix of s[0..n) that is a proper prefix of @m. */
static size_t hold_for(const char *s, size_t n, const char *m, size_t mlen)
{
    size_t k = mlen - 1 < n ? mlen - 1 : n;
    for (; k > 0; k--) {
        if (memcmp(s + n - k, m, k) == 0) {
            return k;
        }
    }
    return 0;
}

/* First occurrence of @m in s[0..n) (markers are short; memchr on the first byte). */
static const char *find(const char *s, size_t n, const char *m, size_t mlen)
{
    const char *end = s + n;
    while (n >= mlen) {
        const char *c = memchr(s, m[0], n - mlen + 1);
        if (c == NULL) {
            return NULL;
        }
        if (memcmp(c, m, mlen) == 0) {
            return c;
        }
        s = c + 1;
        n = (size_t)(end - s);
    }
    return NULL;
}

/* ---- the machine ---- */

static inline const char *data(hd_chat_parser_h p)
{
    return p->pend.data != NULL ? p->pend.data + p->pos : ""; /* nothing fed yet */
}

static inline size_t dlen(hd_chat_parser_h p)
{
    return p->avail - p->pos;
}

static void consume(hd_chat_parser_h p, size_t n, bool raw)
{
    if (raw && !p->block_committed) {
        hd_buf_append(&p->block_raw, data(p), n);
    }
    p->pos += n;
}

static void go(hd_chat_parser_h p, pstate_t st)
{
    p->st = st;
    p->scan = 0;
}

/* Compare the head of the data with literal @m: 1 match, 0 need more, -1 mismatch. */
static int expect(hd_chat_parser_h p, const char *m, size_t mlen)
{
    size_t n = dlen(p) < mlen ? dlen(p) : mlen;
    if (memcmp(data(p), m, n) != 0) {
        return -1;
    }
    return n == mlen ? 1 : 0;
}

/* Close the open call (if any) as incomplete. */
static void close_call(hd_chat_parser_h p, bool complete)
{
    if (!p->in_call) {
        return;
    }
    if (p->in_string) {
        emit_str(p, HD_CHAT_DELTA_TOOL_ARGS, "\"");
        p->in_string = false;
    }
    emit_str(p, HD_CHAT_DELTA_TOOL_ARGS, "}");
    emit(p, HD_CHAT_DELTA_TOOL_END, NULL, 0, complete);
    p->in_call = false;
}

/*
 * The block cannot go on. @malformed: it does not parse from here; settle it and read on as
 * content (the whole block when no call has started). Otherwise the text ended inside it
 * (final, e.g. max_tokens): the open call closes as incomplete, its arguments still valid
 * JSON, and the unfinished markup is dropped rather than shown as content.
 */
static void tb_abandon(hd_chat_parser_h p, bool malformed)
{
    close_call(p, false);
    if (!malformed) {
        p->block_raw.len = 0;
        p->pos = p->avail;
        go(p, P_CONTENT);
        return;
    }
    if (!p->block_committed) {
        p->oom |= p->block_raw.failed;
        emit(p, HD_CHAT_DELTA_CONTENT, p->block_raw.data, p->block_raw.len, false);
    }
    p->block_raw.len = 0;
    p->malformed |= malformed;
    go(p, P_CONTENT);
}

static void start_block(hd_chat_parser_h p, const char *raw, size_t n)
{
    p->block_raw.len = 0;
    hd_buf_append(&p->block_raw, raw, n);
    p->block_committed = false;
    go(p, P_TB_OPEN);
}

/* Text states: emit what is certain, switch on markers. Returns false when it needs input. */
static bool step_text(hd_chat_parser_h p, bool final)
{
    const char *s = data(p);
    size_t n = dlen(p);
    bool reasoning = p->st == P_REASONING;
    hd_chat_delta_kind_t kind = reasoning ? HD_CHAT_DELTA_REASONING : HD_CHAT_DELTA_CONTENT;
    const char *a = reasoning ? find(s, n, M_THINK_END, SL(M_THINK_END)) : NULL;
    const char *b = find(s, n, reasoning ? M_TC_NN : M_TC, reasoning ? SL(M_TC_NN) : SL(M_TC));

    if (a != NULL && (b == NULL || a < b)) {
        emit(p, kind, s, (size_t)(a - s), false);
        consume(p, (size_t)(a - s) + SL(M_THINK_END), false);
        p->reasoning_closed = true;
        go(p, P_CONTENT);
        return true;
    }
    if (b != NULL) {
        size_t cut = (size_t)(b - s), mlen = reasoning ? SL(M_TC_NN) : SL(M_TC);
        size_t strip = !reasoning && cut >= 2 && s[cut - 2] == '\n' && s[cut - 1] == '\n' ? 2 : 0;
        emit(p, kind, s, cut - strip, false);
        start_block(p, s + cut - strip, strip + mlen);
        consume(p, cut + mlen, false);
        return true;
    }
    size_t safe = n;
    if (!final) {
        size_t h = hold_for(s, n, M_TC_NN, SL(M_TC_NN));
        size_t h2 = hold_for(s, n, reasoning ? M_THINK_END : M_TC, reasoning ? SL(M_THINK_END) : SL(M_TC));
        safe = utf8_cut(s, n - (h > h2 ? h : h2));
    }
    emit(p, kind, s, safe, false);
    consume(p, safe, false);
    return false;
}

/* Search the earliest of two markers from the resume point; NULL when neither is there.
 * *which is 1 or 2. */
static const char *find2(hd_chat_parser_h p, const char *m1, size_t l1, const char *m2, size_t l2,
                         int *which)
{
    const char *s = data(p);
    size_t n = dlen(p), from = p->scan < n ? p->scan : n;
    const char *x = find(s + from, n - from, m1, l1);
    const char *y = m2 ? find(s + from, n - from, m2, l2) : NULL;
    if (x == NULL && y == NULL) {
        size_t keep = (l1 > l2 ? l1 : l2) - 1;
        p->scan = n > keep ? n - keep : 0;
        return NULL;
    }
    if (y == NULL || (x != NULL && x <= y)) {
        *which = 1;
        return x;
    }
    *which = 2;
    return y;
}

/* ' name="NAME">\n' (leading whitespace allowed, an extra trailing "\n" tolerated as the
 * official regex's $ does). */
static bool parse_name(const char *s, size_t n, const char **name, size_t *name_len)
{
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' ||
                     s[i] == '\v')) {
        i++;
    }
    if (n - i < 6 || memcmp(s + i, "name=\"", 6) != 0) {
        return false;
    }
    i += 6;
    size_t end;
    if (n >= i + 4 && memcmp(s + n - 4, "\">\n\n", 4) == 0) {
        end = n - 4;
    } else if (n >= i + 3 && memcmp(s + n - 3, "\">\n", 3) == 0) {
        end = n - 3;
    } else {
        return false;
    }
    *name = s + i;
    *name_len = end - i;
    return true;
}

static bool param_seen(hd_chat_parser_h p, const char *k, size_t n)
{
    size_t i = 0;
    while (i < p->names.len) {
        size_t l = strlen(p->names.data + i);
        if (l == n && memcmp(p->names.data + i, k, n) == 0) {
            return true;
        }
        i += l + 1;
    }
    return false;
}

/* A string="false" value: the raw JSON when it parses, else a JSON string of the text. */
static void emit_raw_value(hd_chat_parser_h p, const char *v, size_t n)
{
    hd_json_t *j = NULL;
    char err[8];
    hd_status_t st = n > 0 ? hd_json_parse(v, n, NULL, &j, err, sizeof(err)) : HD_ERR_FORMAT;
    if (st == HD_OK) {
        hd_json_free(j);
        emit(p, HD_CHAT_DELTA_TOOL_ARGS, v, n, false);
        return;
    }
    p->oom |= st == HD_ERR_NO_MEMORY; /* not "not JSON": that would change the arguments */
    emit_str(p, HD_CHAT_DELTA_TOOL_ARGS, "\"");
    emit_args_escaped(p, v, n);
    emit_str(p, HD_CHAT_DELTA_TOOL_ARGS, "\"");
}

/* Tool-block states. Returns false when it needs input (and !final). */
static bool step_block(hd_chat_parser_h p, bool final)
{
    const char *at;
    int r, which = 0;
    switch (p->st) {
    case P_TB_OPEN:
    case P_TB_INVEND:
        r = expect(p, ">\n", 2);
        if (r == 0 && !final) {
            return false;
        }
        if (r <= 0) {
            tb_abandon(p, r < 0);
            return true;
        }
        consume(p, 2, true);
        go(p, P_TB_ITEM);
        return true;
    case P_TB_ITEM:
        r = expect(p, M_INV, SL(M_INV));
        if (r == 1) {
            consume(p, SL(M_INV), true);
            go(p, P_TB_NAME);
            return true;
        }
        {
            int r2 = expect(p, M_TCE, SL(M_TCE));
            if (r2 == 1) {
                consume(p, SL(M_TCE), true);
                p->block_raw.len = 0;
                go(p, P_CONTENT);
                return true;
            }
            if ((r == 0 || r2 == 0) && !final) {
                return false;
            }
            tb_abandon(p, !(r == 0 || r2 == 0));
        }
        return true;
    case P_TB_NAME: {
        at = find2(p, M_PO, SL(M_PO), M_INVC, SL(M_INVC), &which);
        if (at == NULL) {
            if (!final) {
                return false;
            }
            tb_abandon(p, false);
            return true;
        }
        const char *name;
        size_t name_len, seg = (size_t)(at - data(p));
        if (!parse_name(data(p), seg, &name, &name_len)) {
            tb_abandon(p, true);
            return true;
        }
        p->n_calls++;
        p->block_committed = true;
        p->block_raw.len = 0;
        p->in_call = true;
        p->n_params = 0;
        p->names.len = 0;
        emit(p, HD_CHAT_DELTA_TOOL_START, name, name_len, false);
        emit_str(p, HD_CHAT_DELTA_TOOL_ARGS, "{");
        if (which == 1) {
            consume(p, seg + SL(M_PO), true);
            go(p, P_TB_PHDR);
        } else {
            consume(p, seg + SL(M_INVC), true);
            close_call(p, true);
            go(p, P_TB_INVEND);
        }
        return true;
    }
    case P_TB_PHDR: {
        r = expect(p, " name=\"", 7);
        if (r < 0 || (r == 0 && final)) {
            tb_abandon(p, r < 0);
            return true;
        }
        if (r == 0) {
            return false;
        }
        const char *s = data(p);
        size_t n = dlen(p), from = p->scan > 7 ? p->scan : 7;
        const char *t = find(s + from, n - from, M_HDR_T, SL(M_HDR_T));
        const char *f = find(s + from, n - from, M_HDR_F, SL(M_HDR_F));
        const char *c = find(s + from, n - from, M_PCL, SL(M_PCL));
        const char *h = t != NULL && (f == NULL || t < f) ? t : f;
        if (h == NULL || (c != NULL && c < h)) {
            if (c != NULL || final) {
                tb_abandon(p, c != NULL);
                return true;
            }
            p->scan = n > SL(M_PCL) ? n - SL(M_PCL) : 0;
            return false;
        }
        size_t klen = (size_t)(h - s) - 7;
        const char *k = s + 7;
        if (param_seen(p, k, klen) || memchr(k, '\0', klen) != NULL) {
            tb_abandon(p, true);
            return true;
        }
        hd_buf_append(&p->names, k, klen);
        hd_buf_append(&p->names, "", 1);
        p->value_is_str = h == t;
        p->tmp.len = 0;
        if (p->n_params++ > 0) {
            hd_buf_puts(&p->tmp, ", ");
        }
        hd_buf_json_str(&p->tmp, k, klen);
        hd_buf_puts(&p->tmp, p->value_is_str ? ": \"" : ": ");
        p->oom |= p->tmp.failed;
        emit(p, HD_CHAT_DELTA_TOOL_ARGS, p->tmp.data, p->tmp.len, false);
        p->in_string = p->value_is_str;
        consume(p, (size_t)(h - s) + (h == t ? SL(M_HDR_T) : SL(M_HDR_F)), true);
        go(p, P_TB_PVAL);
        return true;
    }
    case P_TB_PVAL: {
        const char *s = data(p);
        size_t n = dlen(p), from = p->value_is_str ? 0 : (p->scan < n ? p->scan : n);
        const char *c = find(s + from, n - from, M_PCL, SL(M_PCL));
        if (c == NULL) {
            if (p->value_is_str) {
                /* hold back a possible closing tag and half a character; at the end they
                   are dropped, so a truncated value stays valid UTF-8 without markup */
                size_t h1 = hold_for(s, n, M_PC, SL(M_PC)), h2 = hold_for(s, n, M_PCL, SL(M_PCL));
                size_t safe = utf8_cut(s, n - (h1 > h2 ? h1 : h2));
                emit_args_escaped(p, s, safe);
                consume(p, safe, true);
            } else if (final) {
                size_t h1 = hold_for(s, n, M_PC, SL(M_PC)), h2 = hold_for(s, n, M_PCL, SL(M_PCL));
                size_t keep = utf8_cut(s, n - (h1 > h2 ? h1 : h2));
                emit_raw_value(p, s, keep);
                consume(p, keep, true);
            } else {
                p->scan = n > SL(M_PCL) ? n - SL(M_PCL) + 1 : 0;
            }
            if (final) {
                tb_abandon(p, false);
                return true;
            }
            return false;
        }
        size_t vlen = (size_t)(c - s);
        bool lt = vlen > 0 && s[vlen - 1] == '<';
        if (lt) {
            vlen--;
        }
        if (p->value_is_str) {
            emit_args_escaped(p, s, vlen);
            emit_str(p, HD_CHAT_DELTA_TOOL_ARGS, "\"");
            p->in_string = false;
        } else {
            emit_raw_value(p, s, vlen);
        }
        if (!lt) {
            consume(p, vlen, true);
            tb_abandon(p, true);
            return true;
        }
        consume(p, (size_t)(c - s) + SL(M_PCL), true);
        go(p, P_TB_PSEP);
        return true;
    }
    case P_TB_PSEP:
        r = expect(p, ">\n" M_PO, 2 + SL(M_PO));
        if (r == 1) {
            consume(p, 2 + SL(M_PO), true);
            go(p, P_TB_PHDR);
            return true;
        }
        {
            int r2 = expect(p, ">\n" M_INVC, 2 + SL(M_INVC));
            if (r2 == 1) {
                consume(p, 2 + SL(M_INVC), true);
                close_call(p, true);
                go(p, P_TB_INVEND);
                return true;
            }
            if ((r == 0 || r2 == 0) && !final) {
                return false;
            }
            tb_abandon(p, !(r == 0 || r2 == 0));
        }
        return true;
    default:
        return false;
    }
}

static void run(hd_chat_parser_h p, bool final)
{
    for (;;) {
        bool progress;
        if (p->st == P_DONE) {
            return;
        }
        if (p->st == P_REASONING || p->st == P_CONTENT) {
            progress = step_text(p, final);
            if (!progress && final && dlen(p) == 0) {
                return;
            }
        } else {
            progress = step_block(p, final);
        }
        if (!progress) {
            return;
        }
    }
}

/* ---- public API ---- */

hd_status_t hd_chat_parser_create(bool thinking, hd_chat_parser_h *parser_p)
{
    hd_chat_parser_h p = hd_calloc(1, sizeof(*p), "chat parser");
    if (p == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    hd_buf_init(&p->pend);
    hd_buf_init(&p->block_raw);
    hd_buf_init(&p->names);
    hd_buf_init(&p->tmp);
    p->st = thinking ? P_REASONING : P_CONTENT;
    *parser_p = p;
    return HD_OK;
}

void hd_chat_parser_destroy(hd_chat_parser_h p)
{
    if (p == NULL) {
        return;
    }
    hd_buf_cleanup(&p->pend);
    hd_buf_cleanup(&p->block_raw);
    hd_buf_cleanup(&p->names);
    hd_buf_cleanup(&p->tmp);
    hd_free(p);
}

static void compact(hd_chat_parser_h p)
{
    if (p->pos > 0 && (p->pos >= p->pend.len || p->pos > 4096)) {
        memmove(p->pend.data, p->pend.data + p->pos, p->pend.len - p->pos);
        p->pend.len -= p->pos;
        p->avail -= p->pos;
        p->eos_scan = p->eos_scan > p->pos ? p->eos_scan - p->pos : 0;
        p->pos = 0;
    }
}

hd_status_t hd_chat_parser_feed(hd_chat_parser_h p, const char *text, size_t len,
                                hd_chat_delta_func_t cb, void *user)
{
    if (p->st == P_DONE) {
        return HD_OK;
    }
    p->cb = cb;
    p->user = user;
    if (len > 0) {
        hd_buf_append(&p->pend, text, len);
    }
    if (p->pend.failed) {
        return HD_ERR_NO_MEMORY;
    }
    if (p->pend.len == 0) {
        return HD_OK;
    }
    const char *s = p->pend.data;
    size_t n = p->pend.len, from = p->eos_scan < n ? p->eos_scan : n;
    const char *e = find(s + from, n - from, HD_CHAT_EOS, SL(HD_CHAT_EOS));
    if (e != NULL) {
        p->avail = (size_t)(e - s);
        run(p, true);
        p->eos = true;
        p->st = P_DONE;
        p->pend.len = p->pos = p->avail = 0;
        return p->oom ? HD_ERR_NO_MEMORY : HD_OK;
    }
    p->avail = n - hold_for(s, n, HD_CHAT_EOS, SL(HD_CHAT_EOS));
    p->eos_scan = p->avail;
    run(p, false);
    compact(p);
    return p->oom ? HD_ERR_NO_MEMORY : HD_OK;
}

hd_status_t hd_chat_parser_finish(hd_chat_parser_h p, hd_chat_delta_func_t cb, void *user)
{
    if (p->st == P_DONE) {
        return p->oom ? HD_ERR_NO_MEMORY : HD_OK;
    }
    p->cb = cb;
    p->user = user;
    p->avail = p->pend.len;
    run(p, true);
    p->st = P_DONE;
    p->pend.len = p->pos = p->avail = 0;
    return p->oom ? HD_ERR_NO_MEMORY : HD_OK;
}

void hd_chat_parser_flags(hd_chat_parser_h p, bool *reasoning_closed, bool *eos, bool *malformed)
{
    *reasoning_closed = p->reasoning_closed;
    *eos = p->eos;
    *malformed = p->malformed;
}

/* ---- whole-text parsing ---- */

void hd_chat_msg_init(hd_chat_msg_t *msg)
{
    memset(msg, 0, sizeof(*msg));
    hd_buf_init(&msg->reasoning);
    hd_buf_init(&msg->content);
}

void hd_chat_msg_cleanup(hd_chat_msg_t *msg)
{
    for (size_t i = 0; i < msg->n_tool_calls; i++) {
        hd_free(msg->tool_calls[i].name);
        hd_free(msg->tool_calls[i].arguments);
    }
    hd_free(msg->tool_calls);
    hd_buf_cleanup(&msg->reasoning);
    hd_buf_cleanup(&msg->content);
    memset(msg, 0, sizeof(*msg));
}

typedef struct {
    hd_chat_msg_t *msg;
    hd_buf_t args; /* arguments of the open call */
    bool oom;
} collect_t;

static void collect(const hd_chat_delta_t *d, void *user)
{
    collect_t *c = user;
    hd_chat_msg_t *m = c->msg;
    switch (d->kind) {
    case HD_CHAT_DELTA_REASONING:
        hd_buf_append(&m->reasoning, d->text, d->len);
        break;
    case HD_CHAT_DELTA_CONTENT:
        hd_buf_append(&m->content, d->text, d->len);
        break;
    case HD_CHAT_DELTA_TOOL_START: {
        hd_chat_tool_call_t *tc = hd_realloc(m->tool_calls, (m->n_tool_calls + 1) * sizeof(*tc),
                                             "chat tool calls");
        if (tc == NULL) {
            c->oom = true;
            return;
        }
        m->tool_calls = tc;
        tc = &m->tool_calls[m->n_tool_calls++];
        tc->name = hd_strndup(d->text, d->len, "chat tool name");
        tc->arguments = NULL;
        tc->complete = false;
        c->oom |= tc->name == NULL;
        c->args.len = 0;
        break;
    }
    case HD_CHAT_DELTA_TOOL_ARGS:
        hd_buf_append(&c->args, d->text, d->len);
        break;
    case HD_CHAT_DELTA_TOOL_END:
        if (m->n_tool_calls > 0) {
            hd_chat_tool_call_t *tc = &m->tool_calls[m->n_tool_calls - 1];
            tc->arguments = hd_strndup(c->args.data ? c->args.data : "", c->args.len, "chat args");
            tc->complete = d->complete;
            c->oom |= tc->arguments == NULL;
        }
        break;
    }
}

hd_status_t hd_chat_parse(const char *text, size_t len, bool thinking, hd_chat_msg_t *msg)
{
    hd_chat_parser_h p;
    collect_t c = {.msg = msg};
    hd_status_t status;

    hd_chat_msg_init(msg);
    hd_buf_init(&c.args);
    status = hd_chat_parser_create(thinking, &p);
    if (status != HD_OK) {
        return status;
    }
    status = hd_chat_parser_feed(p, text, len, collect, &c);
    if (status == HD_OK) {
        status = hd_chat_parser_finish(p, collect, &c);
    }
    hd_chat_parser_flags(p, &msg->reasoning_closed, &msg->eos, &msg->malformed);
    hd_chat_parser_destroy(p);
    hd_buf_cleanup(&c.args);
    if (status == HD_OK && (c.oom || msg->reasoning.failed || msg->content.failed)) {
        status = HD_ERR_NO_MEMORY;
    }
    return status;
}
