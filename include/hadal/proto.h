/*
 * hadal/proto.h - the control-plane messages (coordinator <-> workers) and their framing.
 *
 * The messages are defined in proto/hadal.proto (package hadal.v1) and travel as frames:
 *
 *     u32 payload length (little-endian) | u16 message type (little-endian) | payload
 *
 * where the payload is the protobuf encoding of the message. The first frame on every
 * connection is a Hello; the reply is a HelloReply that accepts or refuses (different major).
 * Generated protobuf-c code never leaves proto/: callers use the plain C structs below.
 *
 * Ownership: hd_proto_encode() reads a caller-owned hd_proto_msg_t (nothing is kept) and
 * returns a frame the caller frees with hd_free(). hd_proto_decode() returns a message that
 * owns every string and array it points to (one arena); hd_proto_msg_destroy() frees it all.
 * Decoding never aborts: truncated, oversized, garbage or out-of-range input returns
 * HD_ERR_PROTO (logged at warn level with the reason, also copied into @err).
 * Everything here is thread-safe (no shared state).
 */
#ifndef HADAL_PROTO_H
#define HADAL_PROTO_H

#include "hadal/sampling.h"
#include "hadal/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The protocol this build speaks. Majors must match; minors only add fields/messages. */
#define HD_PROTO_VERSION_MAJOR 1
#define HD_PROTO_VERSION_MINOR 0

#define HD_PROTO_FRAME_HEADER 6u               /* u32 length + u16 type */
#define HD_PROTO_FRAME_MAX_DEFAULT (64u << 20) /* payload bytes; larger frames are refused */

/* Frame types: the u16 in each frame header (= hadal.v1.MsgType). Values are never reused. */
typedef enum {
    HD_PROTO_HELLO = 1,
    HD_PROTO_HELLO_REPLY = 2,
    HD_PROTO_REGISTER = 3,
    HD_PROTO_PLACEMENT = 4,
    HD_PROTO_STEP_BATCH = 5,
    HD_PROTO_STEP_RESULT = 6,
    HD_PROTO_HEARTBEAT = 7,
    HD_PROTO_CANCEL = 8,
    HD_PROTO_CANCEL_ACK = 9,
    HD_PROTO_DRAIN = 10,
    HD_PROTO_ERROR = 11,
    HD_PROTO_TYPE_MAX = 11, /* highest type this build knows */
} hd_proto_type_t;

typedef enum {
    HD_PROTO_ROLE_UNSPECIFIED = 0,
    HD_PROTO_ROLE_COORDINATOR = 1,
    HD_PROTO_ROLE_WORKER = 2,
    HD_PROTO_ROLE_CLIENT = 3, /* CLI tools, gateways */
} hd_proto_role_t;

/* ---- messages (field docs in proto/hadal.proto) ---- */

typedef struct {
    uint32_t major;        /* protocol major of the sender */
    uint32_t minor;        /* protocol minor of the sender */
    hd_proto_role_t role;  /* who is speaking */
    const char *build;     /* free text ("hadal 0.1.0"); NULL = "" */
    uint64_t caps;         /* capability bits (none defined yet: 0) */
} hd_proto_hello_t;

typedef struct {
    bool accepted;         /* false: refused, see reason */
    uint32_t major;        /* the replier's version */
    uint32_t minor;
    const char *build;     /* NULL = "" */
    const char *reason;    /* why refused; NULL = "" */
    uint64_t caps;
} hd_proto_hello_reply_t;

typedef struct {
    const char *transport; /* "tcp", "ucx", "mpi" */
    const uint8_t *blob;   /* hd_net_address() bytes */
    size_t blob_len;
} hd_proto_addr_t;

typedef struct {
    const char *name;          /* unique worker name (host:device) */
    int n_addrs;
    const hd_proto_addr_t *addrs; /* [n_addrs] one per transport opened */
    uint64_t device_memory;    /* bytes usable for weights + KV */
    uint64_t host_memory;      /* bytes */
    const char *device;        /* "cpu", "cuda:0 NVIDIA H100 ..." */
    uint64_t caps;             /* worker capability bits (none defined yet: 0) */
    int32_t requested_rank;    /* -1 = any */
} hd_proto_register_t;

typedef struct {
    int32_t rank;
    int32_t stage;
    int32_t column;
    int n_addrs;
    const hd_proto_addr_t *addrs; /* [n_addrs] */
} hd_proto_peer_t;

typedef struct {
    int32_t rank;              /* stage * ep + column */
    int32_t pp;                /* stages (rows), >= 1 */
    int32_t ep;                /* columns, >= 1 */
    int32_t stage;             /* [0, pp) */
    int32_t column;            /* [0, ep) */
    int32_t layer_lo;          /* layers [layer_lo, layer_hi) */
    int32_t layer_hi;
    int32_t expert_lo;         /* routed experts [expert_lo, expert_hi) owned here */
    int32_t expert_hi;
    int n_experts;             /* when > 0: exact owned expert ids (overrides the range) */
    const uint32_t *experts;   /* [n_experts] */
    const char *model_dir;     /* checkpoint dir, or NULL */
    const char *preset;        /* preset name (random weights), or NULL */
    int32_t numerics;          /* hd_numerics_t: 0 official, 1 plain */
    const char *transport;     /* data-plane transport name */
    int n_peers;
    const hd_proto_peer_t *peers; /* [n_peers] the address table */
    uint64_t epoch;            /* placement generation */
    bool load_mtp;
} hd_proto_placement_t;

typedef struct {
    uint64_t seq_id;
    int32_t column;            /* grid column holding its KV */
    int64_t n_tokens;          /* >= 1 */
    const int32_t *tokens;     /* [n_tokens] prefill chunk or one decode token */
    int64_t pos;               /* position of tokens[0], >= 0 */
    bool first;                /* first tokens: create the sequence */
    bool sample;               /* sample after the last token */
    hd_sampling_params_t sampling;
    int32_t n_logprobs;        /* top logprobs wanted, [0, HD_PROTO_MAX_LOGPROBS] */
    bool want_logits;          /* return the full logits row */
} hd_proto_step_item_t;

#define HD_PROTO_MAX_LOGPROBS 64
/* Largest sampler skip accepted (PRNG draws of a re-run sequence: at most its tokens). */
#define HD_PROTO_MAX_SAMPLER_SKIP (1ull << 24)

typedef struct {
    uint64_t step_id;
    uint32_t micro_batch;      /* micro-batch slot */
    uint64_t epoch;            /* placement generation */
    int n_items;
    const hd_proto_step_item_t *items; /* [n_items] */
    int n_release;
    const uint64_t *release;   /* [n_release] sequences to free */
    int n_cancel;
    const uint64_t *cancel;    /* [n_cancel] sequences cancelled: free + CancelAck */
} hd_proto_step_batch_t;

typedef struct {
    uint64_t seq_id;
    int32_t token;             /* sampled id; -1 when not sampled or failed */
    int32_t error;             /* hd_status_t of this item */
    bool has_logprob;
    float logprob;             /* when has_logprob */
    int n_top;
    const int32_t *top_ids;    /* [n_top] */
    const float *top_logprobs; /* [n_top] */
    int64_t n_logits;
    const float *logits;       /* [n_logits] when want_logits, else NULL */
} hd_proto_item_result_t;

typedef struct {
    uint64_t step_id;
    uint32_t micro_batch;
    int32_t rank;              /* reporting worker */
    int32_t error;             /* hd_status_t of the whole step */
    const char *message;       /* why, when error != 0; NULL = "" */
    int n_items;
    const hd_proto_item_result_t *items; /* [n_items] */
} hd_proto_step_result_t;

typedef struct {
    int32_t rank;
    uint64_t seq;              /* echoed by the receiver */
    uint64_t time_ns;          /* sender's CLOCK_MONOTONIC */
    uint32_t running;          /* sequences held */
    uint64_t kv_free_bytes;
    uint64_t epoch;
} hd_proto_heartbeat_t;

typedef struct {
    int n_seq_ids;
    const uint64_t *seq_ids;   /* [n_seq_ids] */
    const char *reason;        /* NULL = "" */
} hd_proto_cancel_t;

typedef struct {
    int32_t rank;
    int n_seq_ids;
    const uint64_t *seq_ids;   /* [n_seq_ids] freed on this worker */
} hd_proto_cancel_ack_t;

typedef struct {
    const char *reason;        /* NULL = "" */
    uint32_t deadline_ms;      /* 0 = none */
    bool done;                 /* worker -> coordinator: drained */
    bool exit_after;
    int32_t rank;
} hd_proto_drain_t;

typedef struct {
    int32_t code;              /* hd_status_t */
    const char *message;       /* NULL = "" */
} hd_proto_error_t;

typedef struct hd_proto_arena hd_proto_arena_t;

/* One message of any type. Fill .type and the matching member to encode. */
typedef struct {
    hd_proto_type_t type;
    union {
        hd_proto_hello_t hello;
        hd_proto_hello_reply_t hello_reply;
        hd_proto_register_t reg;
        hd_proto_placement_t placement;
        hd_proto_step_batch_t step_batch;
        hd_proto_step_result_t step_result;
        hd_proto_heartbeat_t heartbeat;
        hd_proto_cancel_t cancel;
        hd_proto_cancel_ack_t cancel_ack;
        hd_proto_drain_t drain;
        hd_proto_error_t error;
    };
    hd_proto_arena_t *arena;   /* decoded messages only: owns all pointed-to data */
} hd_proto_msg_t;

/* What a decoder accepts. Zero fields mean "default" / "unchecked". */
typedef struct {
    size_t max_frame;          /* payload bytes; 0 = HD_PROTO_FRAME_MAX_DEFAULT */
    int32_t n_ranks;           /* > 0: rank fields must be in [0, n_ranks) ("unknown worker") */
    int32_t vocab;             /* > 0: token ids must be in [0, vocab) */
} hd_proto_limits_t;

/* Static name of @type ("step_batch"), "unknown" for others. */
const char *hd_proto_type_name(int type);

/* ---- framing ---- */

/*
 * Encode @msg as one frame (header + payload) into a new buffer: *@frame_p (free with
 * hd_free), *@len_p bytes. HD_ERR_INVALID_PARAM for an unknown type or a payload over
 * HD_PROTO_FRAME_MAX_DEFAULT, HD_ERR_NO_MEMORY.
 */
hd_status_t hd_proto_encode(const hd_proto_msg_t *msg, uint8_t **frame_p, size_t *len_p);

/*
 * Parse a frame header from the first @len bytes of a stream. HD_OK: *@type_p and
 * *@frame_len_p (header + payload) are set; HD_INPROGRESS: fewer than HD_PROTO_FRAME_HEADER
 * bytes; HD_ERR_PROTO: payload length above @max_frame (0 = default). Types are not checked
 * here (a newer peer's frame can be skipped by length).
 */
hd_status_t hd_proto_frame_header(const uint8_t *buf, size_t len, size_t max_frame,
                                  int *type_p, size_t *frame_len_p);

/*
 * Decode exactly one frame of @len bytes (header + payload). @lim may be NULL. On HD_OK
 * *@msg_p owns its contents (hd_proto_msg_destroy). Errors: HD_ERR_PROTO (truncated,
 * trailing bytes, oversized, undecodable payload, out-of-range field, unknown rank),
 * HD_ERR_UNSUPPORTED (a frame type this build does not know: skip or refuse), HD_ERR_NO_MEMORY.
 * @err (optional, @err_len bytes) receives the reason. Never aborts on any input.
 */
hd_status_t hd_proto_decode(const uint8_t *frame, size_t len, const hd_proto_limits_t *lim,
                            hd_proto_msg_t **msg_p, char *err, size_t err_len);

/* Free a decoded message (NULL is fine). */
void hd_proto_msg_destroy(hd_proto_msg_t *msg);

/* ---- versioning ---- */

/* A Hello of this build: our version, @role, @build (borrowed, may be NULL). */
void hd_proto_hello_init(hd_proto_hello_t *hello, hd_proto_role_t role, const char *build);

/*
 * Check a peer's Hello: HD_OK when its major equals ours; otherwise HD_ERR_PROTO and @err
 * gets "peer speaks protocol 2.x, this build speaks 1.x" (what a refusal's reason carries).
 */
hd_status_t hd_proto_hello_check(const hd_proto_hello_t *peer, char *err, size_t err_len);

/*
 * Fill @reply answering @peer: accepted when hd_proto_hello_check() passes, else refused with
 * the reason copied into @reason_buf (which @reply->reason then points to).
 */
void hd_proto_hello_reply_init(hd_proto_hello_reply_t *reply, const hd_proto_hello_t *peer,
                               const char *build, char *reason_buf, size_t reason_len);

/* A HelloReply received: HD_OK when accepted (and same major), else HD_ERR_PROTO + reason. */
hd_status_t hd_proto_hello_reply_check(const hd_proto_hello_reply_t *reply, char *err,
                                       size_t err_len);

/* ---- blocking frame I/O on a connected stream socket (control-plane connections) ---- */

/*
 * Write @msg as one frame to @fd, waiting at most @timeout_ms (< 0: no deadline) for the socket.
 * HD_ERR_TIMEOUT, HD_ERR_REMOTE (peer closed/reset), HD_ERR_IO, plus hd_proto_encode errors.
 * Works on blocking and non-blocking descriptors. Not thread-safe per fd.
 */
hd_status_t hd_proto_fd_send(int fd, const hd_proto_msg_t *msg, int timeout_ms);

/*
 * Read one frame from @fd and decode it (see hd_proto_decode), waiting at most @timeout_ms
 * (< 0: no deadline) in total. HD_ERR_REMOTE when the peer closes (also mid-frame),
 * HD_ERR_TIMEOUT, HD_ERR_IO, HD_ERR_PROTO. After HD_ERR_PROTO the stream may be out of sync:
 * close the connection. HD_ERR_UNSUPPORTED (unknown type) consumed the whole frame: the
 * stream is still in sync.
 */
hd_status_t hd_proto_fd_recv(int fd, const hd_proto_limits_t *lim, int timeout_ms,
                             hd_proto_msg_t **msg_p, char *err, size_t err_len);

/*
 * Connection handshakes. The client sends Hello(@role, @build) and waits for the HelloReply;
 * HD_ERR_PROTO with the peer's reason when refused. The server waits for a Hello, answers
 * (accept or refuse) and returns HD_ERR_PROTO when it refused; *@peer_role_p (optional) gets
 * the peer's role. Both within @timeout_ms.
 */
hd_status_t hd_proto_handshake_client(int fd, hd_proto_role_t role, const char *build,
                                      int timeout_ms, char *err, size_t err_len);
hd_status_t hd_proto_handshake_server(int fd, hd_proto_role_t role, const char *build,
                                      int timeout_ms, hd_proto_role_t *peer_role_p, char *err,
                                      size_t err_len);

#endif /* HADAL_PROTO_H */
