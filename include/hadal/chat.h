/*
 * hadal/chat.h - DeepSeek-V4 chat encoding (messages -> prompt) and output parsing
 * (completion text -> reasoning, content, tool calls), whole or streaming.
 *
 * The encoder reproduces DeepSeek's encoding_dsv4.py byte for byte (spec §8.2): BOS, the
 * think-max preamble, system/user/developer/assistant/latest_reminder/tool messages, tool
 * results merged into user turns and ordered by the preceding tool calls, dropping of earlier
 * reasoning, the "## Tools" section (TOOLS_TEMPLATE), DSML tool calls, response-format
 * sections, quick-instruction task tokens. JSON embedded in the prompt is serialised the way
 * Python's json.dumps(ensure_ascii=False) does, numbers included (see hd_chat_numbers_t).
 * An OpenAI-shaped adapter sits in front; docs/TOKENIZER.md lists what it adds.
 *
 * The parser is tolerant where the official one raises: malformed DSML stays content, a
 * truncated tool call is returned with complete=false, nothing crashes. On well-formed text
 * it returns exactly what the official parse_message_from_completion_text returns.
 *
 * Thread-safety: all functions are reentrant; a parser object belongs to one stream.
 */
#ifndef HADAL_CHAT_H
#define HADAL_CHAT_H

#include "hadal/json.h"
#include "hadal/status.h"

#include <stdbool.h>
#include <stddef.h>

/* The DeepSeek-V4 marker strings (UTF-8). */
#define HD_CHAT_BOS "<｜begin▁of▁sentence｜>"
#define HD_CHAT_EOS "<｜end▁of▁sentence｜>"
#define HD_CHAT_USER "<｜User｜>"
#define HD_CHAT_ASSISTANT "<｜Assistant｜>"
#define HD_CHAT_THINK_START "<think>"
#define HD_CHAT_THINK_END "</think>"
#define HD_CHAT_DSML "｜DSML｜"

typedef enum {
    HD_CHAT_MODE_CHAT = 0,     /* non-think: the prompt ends in </think> */
    HD_CHAT_MODE_THINKING = 1, /* think: the prompt ends in <think> */
} hd_chat_mode_t;

typedef enum {
    HD_CHAT_EFFORT_DEFAULT = 0, /* reasoning_effort None (same prompt as HIGH) */
    HD_CHAT_EFFORT_HIGH = 1,    /* "high" */
    HD_CHAT_EFFORT_MAX = 2,     /* "max": the fixed preamble after BOS (thinking mode only) */
} hd_chat_effort_t;

/* ---- number spellings ---- */

/*
 * Python keeps 1.0 and 1 apart (float vs int) and prints floats with repr(); hd_json_t keeps
 * only values. A numbers table remembers the literal of every number node of parsed JSON
 * texts, so the encoder can print them as json.dumps would. Nodes not in the table are
 * printed from their value (integral -> int, else Python float repr).
 */
typedef struct hd_chat_numbers hd_chat_numbers_t;

hd_status_t hd_chat_numbers_create(hd_chat_numbers_t **nums_p);
/* Record the number literals of @root, which hd_json_parse() produced from @text/@len. */
hd_status_t hd_chat_numbers_add(hd_chat_numbers_t *nums, const char *text, size_t len,
                                const hd_json_t *root);
void hd_chat_numbers_destroy(hd_chat_numbers_t *nums);

/* hd_json_parse() + hd_chat_numbers_add() into @nums (which may be NULL). */
hd_status_t hd_chat_json_parse(const char *text, size_t len, hd_chat_numbers_t *nums,
                               hd_json_t **root_p, char *err, size_t err_len);

/* Append json.dumps(@v, ensure_ascii=False) to @out. */
void hd_chat_json_dump(const hd_json_t *v, const hd_chat_numbers_t *nums, hd_buf_t *out);

/* ---- encoding ---- */

typedef struct {
    const hd_json_t *messages;        /* array of messages (required), OpenAI shape: role,
                                         content (string | content-part array | null),
                                         reasoning_content, tool_calls[{id, function{name,
                                         arguments}}], tool_call_id; also the official
                                         extras tools, response_format, task, wo_eos */
    const hd_json_t *tools;           /* OpenAI tools array [{type, function{...}}], or NULL */
    const hd_json_t *response_format; /* any JSON value, or NULL */
    const hd_chat_numbers_t *numbers; /* literal spellings for the JSON above, or NULL */
    hd_chat_mode_t mode;              /* chat or thinking */
    hd_chat_effort_t effort;          /* only used in thinking mode */
    bool keep_reasoning;              /* official drop_thinking=False */
    bool no_bos;                      /* official add_default_bos_token=False */
} hd_chat_request_t;

/*
 * Append the prompt for @req to @prompt. HD_ERR_INVALID_PARAM with a message in @err for
 * requests the official encoder rejects (unknown role, empty developer content, bad task,
 * tool-call arguments that are JSON but not an object, ...); HD_ERR_NO_MEMORY.
 */
hd_status_t hd_chat_encode(const hd_chat_request_t *req, hd_buf_t *prompt, char *err,
                           size_t err_len);

/* "chat"/"non-think" -> CHAT, "thinking"/"think"/"think-high"/"think-max" -> THINKING
 * (think-max also sets MAX); false for anything else. */
bool hd_chat_mode_parse(const char *s, hd_chat_mode_t *mode, hd_chat_effort_t *effort);
/* "high" / "max" / "none" (or "") -> effort; false for anything else. */
bool hd_chat_effort_parse(const char *s, hd_chat_effort_t *effort);

/* The template texts, verbatim from encoding_dsv4.py (placeholders included). */
extern const char hd_chat_tools_template[];
extern const char hd_chat_effort_max_preamble[];

/* ---- output parsing ---- */

typedef struct {
    char *name;      /* function name (NUL-terminated) */
    char *arguments; /* JSON object text, as the official parser builds it */
    bool complete;   /* false when the text ended or broke off inside this call */
} hd_chat_tool_call_t;

typedef struct {
    hd_buf_t reasoning;              /* reasoning_content */
    hd_buf_t content;                /* content */
    hd_chat_tool_call_t *tool_calls; /* n_tool_calls entries */
    size_t n_tool_calls;
    bool reasoning_closed; /* </think> was seen (thinking mode) */
    bool eos;              /* the end-of-sentence marker was seen */
    bool malformed;        /* some DSML did not parse and was kept as content */
} hd_chat_msg_t;

void hd_chat_msg_init(hd_chat_msg_t *msg);
void hd_chat_msg_cleanup(hd_chat_msg_t *msg);

typedef enum {
    HD_CHAT_DELTA_REASONING,  /* text: more reasoning */
    HD_CHAT_DELTA_CONTENT,    /* text: more content */
    HD_CHAT_DELTA_TOOL_START, /* text: the function name of call tool_index */
    HD_CHAT_DELTA_TOOL_ARGS,  /* text: more of the arguments JSON of call tool_index */
    HD_CHAT_DELTA_TOOL_END,   /* call tool_index is finished; complete says how */
} hd_chat_delta_kind_t;

typedef struct {
    hd_chat_delta_kind_t kind; /* what changed */
    size_t tool_index;         /* TOOL_*: 0-based call number */
    const char *text;          /* not NUL-terminated; valid during the callback only */
    size_t len;                /* bytes of text */
    bool complete;             /* TOOL_END: the call was well-formed to its end */
} hd_chat_delta_t;

typedef void (*hd_chat_delta_func_t)(const hd_chat_delta_t *delta, void *user);

typedef struct hd_chat_parser *hd_chat_parser_h;

/* @thinking: the prompt ended in <think>, so the output starts with reasoning. */
hd_status_t hd_chat_parser_create(bool thinking, hd_chat_parser_h *parser_p);
void hd_chat_parser_destroy(hd_chat_parser_h parser);

/*
 * Feed the next @len bytes of completion text. Deltas are delivered through @cb as soon as
 * they are certain: text that may still turn out to be a marker (a prefix of </think>,
 * "\n\n<｜DSML｜tool_calls", the EOS string, a DSML closing tag) or half a UTF-8 character is
 * held back; an open DSML block is never emitted as content. Splitting the same text
 * differently yields the same concatenated deltas. HD_ERR_NO_MEMORY only.
 */
hd_status_t hd_chat_parser_feed(hd_chat_parser_h parser, const char *text, size_t len,
                                hd_chat_delta_func_t cb, void *user);
/* End of output: flush held text; an unfinished DSML block is settled (see docs). */
hd_status_t hd_chat_parser_finish(hd_chat_parser_h parser, hd_chat_delta_func_t cb, void *user);
/* Flags of the message so far (reasoning_closed, eos, malformed); buffers untouched. */
void hd_chat_parser_flags(hd_chat_parser_h parser, bool *reasoning_closed, bool *eos,
                          bool *malformed);

/* Parse a whole completion (the same machine fed once). */
hd_status_t hd_chat_parse(const char *text, size_t len, bool thinking, hd_chat_msg_t *msg);

/* Append the DSML block the encoder renders for @tool_calls (OpenAI tool_calls array),
 * starting with "\n\n<｜DSML｜tool_calls>" (used by tests for round trips). */
hd_status_t hd_chat_render_tool_calls(const hd_json_t *tool_calls,
                                      const hd_chat_numbers_t *nums, hd_buf_t *out, char *err,
                                      size_t err_len);

#endif /* HADAL_CHAT_H */
