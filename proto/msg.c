/*
 * msg.c - the control-plane framing and the hd_proto_* wrappers around protobuf-c.
 *
 * A frame is u32 payload length + u16 type (both little-endian) + the protobuf payload of
 * hadal.v1.<Type>. Encoding copies the caller's plain C structs into protobuf-c structs that
 * live in a scratch arena; decoding unpacks with an allocator backed by the message's own
 * arena and then points the plain C structs at the unpacked arrays, so one hd_proto_msg_t
 * owns everything and is freed in one call. Every decoded message is validated (ranges,
 * lengths, ranks) before it is handed out: input from the wire is never trusted.
 */
#include "hadal/proto.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include "hadal.pb-c.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- arena ---- */

typedef struct proto_chunk {
    struct proto_chunk *next;
    size_t used;
    size_t cap;
    _Alignas(16) unsigned char data[];
} proto_chunk_t;

struct hd_proto_arena {
    proto_chunk_t *head;
    bool oom;        /* an allocation failed (tells out-of-memory apart from bad input) */
};

#define PROTO_CHUNK_MIN 4096

static void *proto_arena_alloc(hd_proto_arena_t *arena, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (size == 0) {
        size = 16;
    }
    proto_chunk_t *c = arena->head;
    if (c == NULL || c->cap - c->used < size) {
        size_t cap = size > PROTO_CHUNK_MIN ? size : PROTO_CHUNK_MIN;
        c = hd_malloc(sizeof(*c) + cap, "proto arena");
        if (c == NULL) {
            arena->oom = true;
            return NULL;
        }
        c->used = 0;
        c->cap = cap;
        c->next = arena->head;
        arena->head = c;
    }
    void *p = c->data + c->used;
    c->used += size;
    return p;
}

static void proto_arena_free_all(hd_proto_arena_t *arena)
{
    proto_chunk_t *c = arena->head;
    while (c != NULL) {
        proto_chunk_t *next = c->next;
        hd_free(c);
        c = next;
    }
    arena->head = NULL;
}

static void *proto_pb_alloc(void *data, size_t size)
{
    return proto_arena_alloc(data, size);
}

static void proto_pb_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr; /* freed with the arena */
}

/* ---- type table ---- */

static const ProtobufCMessageDescriptor *proto_descriptor(int type)
{
    switch (type) {
    case HD_PROTO_HELLO: return &hadal__v1__hello__descriptor;
    case HD_PROTO_HELLO_REPLY: return &hadal__v1__hello_reply__descriptor;
    case HD_PROTO_REGISTER: return &hadal__v1__register__descriptor;
    case HD_PROTO_PLACEMENT: return &hadal__v1__placement__descriptor;
    case HD_PROTO_STEP_BATCH: return &hadal__v1__step_batch__descriptor;
    case HD_PROTO_STEP_RESULT: return &hadal__v1__step_result__descriptor;
    case HD_PROTO_HEARTBEAT: return &hadal__v1__heartbeat__descriptor;
    case HD_PROTO_CANCEL: return &hadal__v1__cancel__descriptor;
    case HD_PROTO_CANCEL_ACK: return &hadal__v1__cancel_ack__descriptor;
    case HD_PROTO_DRAIN: return &hadal__v1__drain__descriptor;
    case HD_PROTO_ERROR: return &hadal__v1__error__descriptor;
    }
    return NULL;
}

const char *hd_proto_type_name(int type)
{
    switch (type) {
    case HD_PROTO_HELLO: return "hello";
    case HD_PROTO_HELLO_REPLY: return "hello_reply";
    case HD_PROTO_REGISTER: return "register";
    case HD_PROTO_PLACEMENT: return "placement";
    case HD_PROTO_STEP_BATCH: return "step_batch";
    case HD_PROTO_STEP_RESULT: return "step_result";
    case HD_PROTO_HEARTBEAT: return "heartbeat";
    case HD_PROTO_CANCEL: return "cancel";
    case HD_PROTO_CANCEL_ACK: return "cancel_ack";
    case HD_PROTO_DRAIN: return "drain";
    case HD_PROTO_ERROR: return "error";
    }
    return "unknown";
}

/* ---- encode: plain C structs -> protobuf-c structs in a scratch arena ---- */

static char *proto_str(const char *s)
{
    return (char *)(s != NULL ? s : "");
}

#define PROTO_NEW(arena, T, init, out)                                                            \
    do {                                                                                           \
        (out) = proto_arena_alloc((arena), sizeof(T));                                            \
        if ((out) == NULL) {                                                                       \
            return NULL;                                                                           \
        }                                                                                          \
        T proto_init_ = init;                                                                      \
        *(out) = proto_init_;                                                                      \
    } while (0)

static Hadal__V1__Address **proto_enc_addrs(hd_proto_arena_t *a, const hd_proto_addr_t *addrs,
                                            int n)
{
    Hadal__V1__Address **v = proto_arena_alloc(a, sizeof(*v) * (size_t)(n > 0 ? n : 1));
    if (v == NULL) {
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        PROTO_NEW(a, Hadal__V1__Address, HADAL__V1__ADDRESS__INIT, v[i]);
        v[i]->transport = proto_str(addrs[i].transport);
        v[i]->blob.len = addrs[i].blob_len;
        v[i]->blob.data = (uint8_t *)addrs[i].blob;
    }
    return v;
}

/* Build the protobuf-c message for @msg in @a; NULL on allocation failure or unknown type. */
static ProtobufCMessage *proto_enc(hd_proto_arena_t *a, const hd_proto_msg_t *msg)
{
    switch (msg->type) {
    case HD_PROTO_HELLO: {
        const hd_proto_hello_t *m = &msg->hello;
        Hadal__V1__Hello *p;
        PROTO_NEW(a, Hadal__V1__Hello, HADAL__V1__HELLO__INIT, p);
        p->major = m->major;
        p->minor = m->minor;
        p->role = (Hadal__V1__Role)m->role;
        p->build = proto_str(m->build);
        p->caps = m->caps;
        return &p->base;
    }
    case HD_PROTO_HELLO_REPLY: {
        const hd_proto_hello_reply_t *m = &msg->hello_reply;
        Hadal__V1__HelloReply *p;
        PROTO_NEW(a, Hadal__V1__HelloReply, HADAL__V1__HELLO_REPLY__INIT, p);
        p->accepted = m->accepted;
        p->major = m->major;
        p->minor = m->minor;
        p->build = proto_str(m->build);
        p->reason = proto_str(m->reason);
        p->caps = m->caps;
        return &p->base;
    }
    case HD_PROTO_REGISTER: {
        const hd_proto_register_t *m = &msg->reg;
        Hadal__V1__Register *p;
        PROTO_NEW(a, Hadal__V1__Register, HADAL__V1__REGISTER__INIT, p);
        p->name = proto_str(m->name);
        p->n_addresses = (size_t)(m->n_addrs > 0 ? m->n_addrs : 0);
        p->addresses = proto_enc_addrs(a, m->addrs, m->n_addrs);
        if (p->addresses == NULL) {
            return NULL;
        }
        p->device_memory = m->device_memory;
        p->host_memory = m->host_memory;
        p->device = proto_str(m->device);
        p->caps = m->caps;
        p->requested_rank = m->requested_rank;
        return &p->base;
    }
    case HD_PROTO_PLACEMENT: {
        const hd_proto_placement_t *m = &msg->placement;
        Hadal__V1__Placement *p;
        PROTO_NEW(a, Hadal__V1__Placement, HADAL__V1__PLACEMENT__INIT, p);
        p->rank = m->rank;
        p->pp = m->pp;
        p->ep = m->ep;
        p->stage = m->stage;
        p->column = m->column;
        p->layer_lo = m->layer_lo;
        p->layer_hi = m->layer_hi;
        p->expert_lo = m->expert_lo;
        p->expert_hi = m->expert_hi;
        p->n_experts = (size_t)(m->n_experts > 0 ? m->n_experts : 0);
        p->experts = (uint32_t *)m->experts;
        p->model_dir = proto_str(m->model_dir);
        p->preset = proto_str(m->preset);
        p->numerics = (Hadal__V1__Numerics)m->numerics;
        p->transport = proto_str(m->transport);
        p->epoch = m->epoch;
        p->load_mtp = m->load_mtp;
        int n = m->n_peers > 0 ? m->n_peers : 0;
        p->n_peers = (size_t)n;
        p->peers = proto_arena_alloc(a, sizeof(*p->peers) * (size_t)(n > 0 ? n : 1));
        if (p->peers == NULL) {
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            Hadal__V1__Peer *q;
            PROTO_NEW(a, Hadal__V1__Peer, HADAL__V1__PEER__INIT, q);
            q->rank = m->peers[i].rank;
            q->stage = m->peers[i].stage;
            q->column = m->peers[i].column;
            q->n_addresses = (size_t)(m->peers[i].n_addrs > 0 ? m->peers[i].n_addrs : 0);
            q->addresses = proto_enc_addrs(a, m->peers[i].addrs, m->peers[i].n_addrs);
            if (q->addresses == NULL) {
                return NULL;
            }
            p->peers[i] = q;
        }
        return &p->base;
    }
    case HD_PROTO_STEP_BATCH: {
        const hd_proto_step_batch_t *m = &msg->step_batch;
        Hadal__V1__StepBatch *p;
        PROTO_NEW(a, Hadal__V1__StepBatch, HADAL__V1__STEP_BATCH__INIT, p);
        p->step_id = m->step_id;
        p->micro_batch = m->micro_batch;
        p->epoch = m->epoch;
        p->n_release = (size_t)(m->n_release > 0 ? m->n_release : 0);
        p->release = (uint64_t *)m->release;
        p->n_cancel = (size_t)(m->n_cancel > 0 ? m->n_cancel : 0);
        p->cancel = (uint64_t *)m->cancel;
        int n = m->n_items > 0 ? m->n_items : 0;
        p->n_items = (size_t)n;
        p->items = proto_arena_alloc(a, sizeof(*p->items) * (size_t)(n > 0 ? n : 1));
        if (p->items == NULL) {
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            const hd_proto_step_item_t *it = &m->items[i];
            Hadal__V1__StepItem *q;
            Hadal__V1__Sampling *s;
            PROTO_NEW(a, Hadal__V1__StepItem, HADAL__V1__STEP_ITEM__INIT, q);
            PROTO_NEW(a, Hadal__V1__Sampling, HADAL__V1__SAMPLING__INIT, s);
            q->seq_id = it->seq_id;
            q->column = it->column;
            q->n_tokens = (size_t)(it->n_tokens > 0 ? it->n_tokens : 0);
            q->tokens = (int32_t *)it->tokens;
            q->pos = it->pos;
            q->first = it->first;
            q->sample = it->sample;
            s->temperature = it->sampling.temperature;
            s->top_p = it->sampling.top_p;
            s->top_k = it->sampling.top_k;
            s->min_p = it->sampling.min_p;
            s->seed = it->sampling.seed;
            s->skip = it->sampling.skip;
            q->sampling = s;
            q->n_logprobs = it->n_logprobs;
            q->want_logits = it->want_logits;
            p->items[i] = q;
        }
        return &p->base;
    }
    case HD_PROTO_STEP_RESULT: {
        const hd_proto_step_result_t *m = &msg->step_result;
        Hadal__V1__StepResult *p;
        PROTO_NEW(a, Hadal__V1__StepResult, HADAL__V1__STEP_RESULT__INIT, p);
        p->step_id = m->step_id;
        p->micro_batch = m->micro_batch;
        p->rank = m->rank;
        p->error = m->error;
        p->message = proto_str(m->message);
        int n = m->n_items > 0 ? m->n_items : 0;
        p->n_items = (size_t)n;
        p->items = proto_arena_alloc(a, sizeof(*p->items) * (size_t)(n > 0 ? n : 1));
        if (p->items == NULL) {
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            const hd_proto_item_result_t *it = &m->items[i];
            Hadal__V1__ItemResult *q;
            PROTO_NEW(a, Hadal__V1__ItemResult, HADAL__V1__ITEM_RESULT__INIT, q);
            q->seq_id = it->seq_id;
            q->token = it->token;
            q->error = it->error;
            q->has_logprob = it->has_logprob;
            q->logprob = it->logprob;
            q->n_top_ids = (size_t)(it->n_top > 0 ? it->n_top : 0);
            q->top_ids = (int32_t *)it->top_ids;
            q->n_top_logprobs = q->n_top_ids;
            q->top_logprobs = (float *)it->top_logprobs;
            q->n_logits = (size_t)(it->n_logits > 0 ? it->n_logits : 0);
            q->logits = (float *)it->logits;
            p->items[i] = q;
        }
        return &p->base;
    }
    case HD_PROTO_HEARTBEAT: {
        const hd_proto_heartbeat_t *m = &msg->heartbeat;
        Hadal__V1__Heartbeat *p;
        PROTO_NEW(a, Hadal__V1__Heartbeat, HADAL__V1__HEARTBEAT__INIT, p);
        p->rank = m->rank;
        p->seq = m->seq;
        p->time_ns = m->time_ns;
        p->running = m->running;
        p->kv_free_bytes = m->kv_free_bytes;
        p->epoch = m->epoch;
        return &p->base;
    }
    case HD_PROTO_CANCEL: {
        const hd_proto_cancel_t *m = &msg->cancel;
        Hadal__V1__Cancel *p;
        PROTO_NEW(a, Hadal__V1__Cancel, HADAL__V1__CANCEL__INIT, p);
        p->n_seq_ids = (size_t)(m->n_seq_ids > 0 ? m->n_seq_ids : 0);
        p->seq_ids = (uint64_t *)m->seq_ids;
        p->reason = proto_str(m->reason);
        return &p->base;
    }
    case HD_PROTO_CANCEL_ACK: {
        const hd_proto_cancel_ack_t *m = &msg->cancel_ack;
        Hadal__V1__CancelAck *p;
        PROTO_NEW(a, Hadal__V1__CancelAck, HADAL__V1__CANCEL_ACK__INIT, p);
        p->rank = m->rank;
        p->n_seq_ids = (size_t)(m->n_seq_ids > 0 ? m->n_seq_ids : 0);
        p->seq_ids = (uint64_t *)m->seq_ids;
        return &p->base;
    }
    case HD_PROTO_DRAIN: {
        const hd_proto_drain_t *m = &msg->drain;
        Hadal__V1__Drain *p;
        PROTO_NEW(a, Hadal__V1__Drain, HADAL__V1__DRAIN__INIT, p);
        p->reason = proto_str(m->reason);
        p->deadline_ms = m->deadline_ms;
        p->done = m->done;
        p->exit_after = m->exit_after;
        p->rank = m->rank;
        return &p->base;
    }
    case HD_PROTO_ERROR: {
        const hd_proto_error_t *m = &msg->error;
        Hadal__V1__Error *p;
        PROTO_NEW(a, Hadal__V1__Error, HADAL__V1__ERROR__INIT, p);
        p->code = m->code;
        p->message = proto_str(m->message);
        return &p->base;
    }
    }
    return NULL;
}

static void proto_put_header(uint8_t *h, uint32_t len, uint16_t type)
{
    h[0] = (uint8_t)len;
    h[1] = (uint8_t)(len >> 8);
    h[2] = (uint8_t)(len >> 16);
    h[3] = (uint8_t)(len >> 24);
    h[4] = (uint8_t)type;
    h[5] = (uint8_t)(type >> 8);
}

hd_status_t hd_proto_encode(const hd_proto_msg_t *msg, uint8_t **frame_p, size_t *len_p)
{
    hd_proto_arena_t arena = {NULL, false};
    hd_status_t status;
    if (proto_descriptor(msg->type) == NULL) {
        hd_error(HD_SUBSYS_NET, "proto encode: unknown message type %d", (int)msg->type);
        return HD_ERR_INVALID_PARAM;
    }
    ProtobufCMessage *pb = proto_enc(&arena, msg);
    if (pb == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto err_free_arena;
    }
    size_t payload = protobuf_c_message_get_packed_size(pb);
    if (payload > HD_PROTO_FRAME_MAX_DEFAULT) {
        hd_error(HD_SUBSYS_NET, "proto encode: %s payload of %zu bytes exceeds the %u byte frame limit",
                 hd_proto_type_name(msg->type), payload, HD_PROTO_FRAME_MAX_DEFAULT);
        status = HD_ERR_INVALID_PARAM;
        goto err_free_arena;
    }
    uint8_t *frame = hd_malloc(HD_PROTO_FRAME_HEADER + payload, "proto frame");
    if (frame == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto err_free_arena;
    }
    proto_put_header(frame, (uint32_t)payload, (uint16_t)msg->type);
    size_t packed = protobuf_c_message_pack(pb, frame + HD_PROTO_FRAME_HEADER);
    hd_assert(packed == payload);
    proto_arena_free_all(&arena);
    *frame_p = frame;
    *len_p = HD_PROTO_FRAME_HEADER + payload;
    return HD_OK;

err_free_arena:
    proto_arena_free_all(&arena);
    return status;
}

/* ---- decode: frame -> validated plain C structs ---- */

static hd_status_t proto_bad(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static hd_status_t proto_bad(char *err, size_t err_len, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    hd_warn(HD_SUBSYS_NET, "rejected message: %s", buf);
    if (err != NULL && err_len > 0) {
        snprintf(err, err_len, "%s", buf);
    }
    return HD_ERR_PROTO;
}

hd_status_t hd_proto_frame_header(const uint8_t *buf, size_t len, size_t max_frame,
                                  int *type_p, size_t *frame_len_p)
{
    if (len < HD_PROTO_FRAME_HEADER) {
        return HD_INPROGRESS;
    }
    if (max_frame == 0) {
        max_frame = HD_PROTO_FRAME_MAX_DEFAULT;
    }
    uint32_t plen = (uint32_t)buf[0] | (uint32_t)buf[1] << 8 | (uint32_t)buf[2] << 16 |
                    (uint32_t)buf[3] << 24;
    int type = (int)((unsigned)buf[4] | (unsigned)buf[5] << 8);
    if (plen > max_frame) {
        return proto_bad(NULL, 0, "frame of %u payload bytes (type %d) exceeds the limit of %zu",
                         plen, type, max_frame);
    }
    *type_p = type;
    *frame_len_p = HD_PROTO_FRAME_HEADER + (size_t)plen;
    return HD_OK;
}

static bool proto_rank_ok(const hd_proto_limits_t *lim, int32_t rank)
{
    return lim->n_ranks <= 0 || (rank >= 0 && rank < lim->n_ranks);
}

static bool proto_count_ok(size_t n)
{
    return n <= (size_t)0x7fffffff;
}

/* Convert an unpacked Address list into plain structs in the arena. */
static hd_status_t proto_dec_addrs(hd_proto_arena_t *a, Hadal__V1__Address **v, size_t n,
                                   const hd_proto_addr_t **out_p, int *n_p, char *err,
                                   size_t err_len)
{
    hd_proto_addr_t *out = proto_arena_alloc(a, sizeof(*out) * (n > 0 ? n : 1));
    if (out == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i]->transport[0] == '\0') {
            return proto_bad(err, err_len, "address %zu has no transport name", i);
        }
        out[i].transport = v[i]->transport;
        out[i].blob = v[i]->blob.data;
        out[i].blob_len = v[i]->blob.len;
    }
    *out_p = out;
    *n_p = (int)n;
    return HD_OK;
}

static bool proto_unit(float x)
{
    return isfinite(x) && x >= 0.0f && x <= 1.0f;
}

static hd_status_t proto_dec(hd_proto_arena_t *a, int type, ProtobufCMessage *pb,
                             const hd_proto_limits_t *lim, hd_proto_msg_t *msg, char *err,
                             size_t err_len)
{
    hd_status_t status;
    msg->type = (hd_proto_type_t)type;
    switch (type) {
    case HD_PROTO_HELLO: {
        Hadal__V1__Hello *p = (Hadal__V1__Hello *)pb;
        if ((int)p->role < 0 || (int)p->role > HD_PROTO_ROLE_CLIENT) {
            return proto_bad(err, err_len, "hello with unknown role %d", (int)p->role);
        }
        msg->hello = (hd_proto_hello_t){p->major, p->minor, (hd_proto_role_t)p->role, p->build,
                                        p->caps};
        return HD_OK;
    }
    case HD_PROTO_HELLO_REPLY: {
        Hadal__V1__HelloReply *p = (Hadal__V1__HelloReply *)pb;
        msg->hello_reply = (hd_proto_hello_reply_t){p->accepted, p->major, p->minor, p->build,
                                                    p->reason, p->caps};
        return HD_OK;
    }
    case HD_PROTO_REGISTER: {
        Hadal__V1__Register *p = (Hadal__V1__Register *)pb;
        hd_proto_register_t *m = &msg->reg;
        if (p->requested_rank < -1 || !proto_count_ok(p->n_addresses)) {
            return proto_bad(err, err_len, "register with requested rank %d",
                             (int)p->requested_rank);
        }
        if (p->requested_rank >= 0 && !proto_rank_ok(lim, p->requested_rank)) {
            return proto_bad(err, err_len, "register asks for unknown rank %d (grid has %d)",
                             (int)p->requested_rank, (int)lim->n_ranks);
        }
        m->name = p->name;
        status = proto_dec_addrs(a, p->addresses, p->n_addresses, &m->addrs, &m->n_addrs, err,
                                 err_len);
        if (status != HD_OK) {
            return status;
        }
        m->device_memory = p->device_memory;
        m->host_memory = p->host_memory;
        m->device = p->device;
        m->caps = p->caps;
        m->requested_rank = p->requested_rank;
        return HD_OK;
    }
    case HD_PROTO_PLACEMENT: {
        Hadal__V1__Placement *p = (Hadal__V1__Placement *)pb;
        hd_proto_placement_t *m = &msg->placement;
        if (p->pp < 1 || p->ep < 1 || p->pp > 65536 || p->ep > 65536 ||
            (int64_t)p->pp * p->ep > 0x7fffffff) {
            return proto_bad(err, err_len, "placement with grid %d x %d", (int)p->pp, (int)p->ep);
        }
        if (p->stage < 0 || p->stage >= p->pp || p->column < 0 || p->column >= p->ep ||
            p->rank != p->stage * p->ep + p->column) {
            return proto_bad(err, err_len,
                             "placement rank %d at stage %d column %d does not fit grid %d x %d",
                             (int)p->rank, (int)p->stage, (int)p->column, (int)p->pp,
                             (int)p->ep);
        }
        if (p->layer_lo < 0 || p->layer_hi < p->layer_lo || p->expert_lo < 0 ||
            p->expert_hi < p->expert_lo) {
            return proto_bad(err, err_len, "placement layers [%d, %d) experts [%d, %d)",
                             (int)p->layer_lo, (int)p->layer_hi, (int)p->expert_lo,
                             (int)p->expert_hi);
        }
        if ((int)p->numerics != 0 && (int)p->numerics != 1) {
            return proto_bad(err, err_len, "placement with unknown numerics %d",
                             (int)p->numerics);
        }
        if (!proto_count_ok(p->n_experts) || !proto_count_ok(p->n_peers)) {
            return proto_bad(err, err_len, "placement with too many entries");
        }
        int32_t n_grid = p->pp * p->ep;
        if (!proto_rank_ok(lim, p->rank) || (lim->n_ranks > 0 && n_grid != lim->n_ranks)) {
            return proto_bad(err, err_len, "placement for rank %d of %d, expected grid of %d",
                             (int)p->rank, (int)n_grid, (int)lim->n_ranks);
        }
        *m = (hd_proto_placement_t){0};
        m->rank = p->rank;
        m->pp = p->pp;
        m->ep = p->ep;
        m->stage = p->stage;
        m->column = p->column;
        m->layer_lo = p->layer_lo;
        m->layer_hi = p->layer_hi;
        m->expert_lo = p->expert_lo;
        m->expert_hi = p->expert_hi;
        m->n_experts = (int)p->n_experts;
        m->experts = p->experts;
        m->model_dir = p->model_dir;
        m->preset = p->preset;
        m->numerics = p->numerics;
        m->transport = p->transport;
        m->epoch = p->epoch;
        m->load_mtp = p->load_mtp;
        hd_proto_peer_t *peers = proto_arena_alloc(a, sizeof(*peers) * (p->n_peers + 1));
        if (peers == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        for (size_t i = 0; i < p->n_peers; i++) {
            Hadal__V1__Peer *q = p->peers[i];
            if (q->rank < 0 || q->rank >= n_grid || q->stage < 0 || q->stage >= p->pp ||
                q->column < 0 || q->column >= p->ep || q->rank != q->stage * p->ep + q->column ||
                !proto_count_ok(q->n_addresses)) {
                return proto_bad(err, err_len,
                                 "placement address table: unknown worker rank %d (stage %d "
                                 "column %d) in grid %d x %d",
                                 (int)q->rank, (int)q->stage, (int)q->column, (int)p->pp,
                                 (int)p->ep);
            }
            peers[i].rank = q->rank;
            peers[i].stage = q->stage;
            peers[i].column = q->column;
            status = proto_dec_addrs(a, q->addresses, q->n_addresses, &peers[i].addrs,
                                     &peers[i].n_addrs, err, err_len);
            if (status != HD_OK) {
                return status;
            }
        }
        m->n_peers = (int)p->n_peers;
        m->peers = peers;
        return HD_OK;
    }
    case HD_PROTO_STEP_BATCH: {
        Hadal__V1__StepBatch *p = (Hadal__V1__StepBatch *)pb;
        hd_proto_step_batch_t *m = &msg->step_batch;
        if (!proto_count_ok(p->n_items) || !proto_count_ok(p->n_release) ||
            !proto_count_ok(p->n_cancel)) {
            return proto_bad(err, err_len, "step batch with too many entries");
        }
        hd_proto_step_item_t *items = proto_arena_alloc(a, sizeof(*items) * (p->n_items + 1));
        if (items == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        for (size_t i = 0; i < p->n_items; i++) {
            Hadal__V1__StepItem *q = p->items[i];
            hd_proto_step_item_t *it = &items[i];
            if (q->n_tokens == 0 || q->pos < 0 || q->column < 0 ||
                (lim->n_ranks > 0 && q->column >= lim->n_ranks)) {
                return proto_bad(err, err_len,
                                 "step %llu item %zu (seq %llu): %zu tokens at pos %lld column %d",
                                 (unsigned long long)p->step_id, i,
                                 (unsigned long long)q->seq_id, q->n_tokens, (long long)q->pos,
                                 (int)q->column);
            }
            for (size_t t = 0; t < q->n_tokens; t++) {
                if (q->tokens[t] < 0 || (lim->vocab > 0 && q->tokens[t] >= lim->vocab)) {
                    return proto_bad(err, err_len, "step %llu seq %llu: token id %d out of range",
                                     (unsigned long long)p->step_id,
                                     (unsigned long long)q->seq_id, (int)q->tokens[t]);
                }
            }
            hd_sampling_params_t sp = {.temperature = 0.0f, .top_p = 1.0f};
            if (q->sampling != NULL) {
                sp.temperature = q->sampling->temperature;
                sp.top_p = q->sampling->top_p == 0.0f ? 1.0f : q->sampling->top_p;
                sp.top_k = q->sampling->top_k;
                sp.min_p = q->sampling->min_p;
                sp.seed = q->sampling->seed;
                sp.skip = q->sampling->skip;
            }
            if (!isfinite(sp.temperature) || sp.temperature < 0.0f || !proto_unit(sp.top_p) ||
                sp.top_k < 0 || !proto_unit(sp.min_p)) {
                return proto_bad(err, err_len,
                                 "step %llu seq %llu: sampling temperature %g top_p %g top_k %d "
                                 "min_p %g out of range",
                                 (unsigned long long)p->step_id, (unsigned long long)q->seq_id,
                                 (double)sp.temperature, (double)sp.top_p, sp.top_k,
                                 (double)sp.min_p);
            }
            if (sp.skip > HD_PROTO_MAX_SAMPLER_SKIP) { /* one draw per generated token */
                return proto_bad(err, err_len, "step %llu seq %llu: sampler skip %llu too large",
                                 (unsigned long long)p->step_id, (unsigned long long)q->seq_id,
                                 (unsigned long long)sp.skip);
            }
            if (q->n_logprobs < 0 || q->n_logprobs > HD_PROTO_MAX_LOGPROBS) {
                return proto_bad(err, err_len, "step %llu seq %llu: %d logprobs requested",
                                 (unsigned long long)p->step_id, (unsigned long long)q->seq_id,
                                 (int)q->n_logprobs);
            }
            it->seq_id = q->seq_id;
            it->column = q->column;
            it->n_tokens = (int64_t)q->n_tokens;
            it->tokens = q->tokens;
            it->pos = q->pos;
            it->first = q->first;
            it->sample = q->sample;
            it->sampling = sp;
            it->n_logprobs = q->n_logprobs;
            it->want_logits = q->want_logits;
        }
        m->step_id = p->step_id;
        m->micro_batch = p->micro_batch;
        m->epoch = p->epoch;
        m->n_items = (int)p->n_items;
        m->items = items;
        m->n_release = (int)p->n_release;
        m->release = p->release;
        m->n_cancel = (int)p->n_cancel;
        m->cancel = p->cancel;
        return HD_OK;
    }
    case HD_PROTO_STEP_RESULT: {
        Hadal__V1__StepResult *p = (Hadal__V1__StepResult *)pb;
        hd_proto_step_result_t *m = &msg->step_result;
        if (!proto_rank_ok(lim, p->rank) || !proto_count_ok(p->n_items)) {
            return proto_bad(err, err_len, "step result %llu from unknown worker rank %d",
                             (unsigned long long)p->step_id, (int)p->rank);
        }
        hd_proto_item_result_t *items = proto_arena_alloc(a, sizeof(*items) * (p->n_items + 1));
        if (items == NULL) {
            return HD_ERR_NO_MEMORY;
        }
        for (size_t i = 0; i < p->n_items; i++) {
            Hadal__V1__ItemResult *q = p->items[i];
            if (q->n_top_ids != q->n_top_logprobs || q->n_top_ids > HD_PROTO_MAX_LOGPROBS ||
                q->token < -1 || (lim->vocab > 0 && q->token >= lim->vocab)) {
                return proto_bad(err, err_len,
                                 "step result %llu item %zu: token %d, %zu top ids vs %zu "
                                 "logprobs",
                                 (unsigned long long)p->step_id, i, (int)q->token, q->n_top_ids,
                                 q->n_top_logprobs);
            }
            items[i] = (hd_proto_item_result_t){
                .seq_id = q->seq_id,
                .token = q->token,
                .error = q->error,
                .has_logprob = q->has_logprob,
                .logprob = q->logprob,
                .n_top = (int)q->n_top_ids,
                .top_ids = q->top_ids,
                .top_logprobs = q->top_logprobs,
                .n_logits = (int64_t)q->n_logits,
                .logits = q->n_logits > 0 ? q->logits : NULL,
            };
        }
        m->step_id = p->step_id;
        m->micro_batch = p->micro_batch;
        m->rank = p->rank;
        m->error = p->error;
        m->message = p->message;
        m->n_items = (int)p->n_items;
        m->items = items;
        return HD_OK;
    }
    case HD_PROTO_HEARTBEAT: {
        Hadal__V1__Heartbeat *p = (Hadal__V1__Heartbeat *)pb;
        if (p->rank != -1 && !proto_rank_ok(lim, p->rank)) {
            return proto_bad(err, err_len, "heartbeat from unknown worker rank %d", (int)p->rank);
        }
        msg->heartbeat = (hd_proto_heartbeat_t){p->rank, p->seq, p->time_ns, p->running,
                                                p->kv_free_bytes, p->epoch};
        return HD_OK;
    }
    case HD_PROTO_CANCEL: {
        Hadal__V1__Cancel *p = (Hadal__V1__Cancel *)pb;
        if (!proto_count_ok(p->n_seq_ids)) {
            return proto_bad(err, err_len, "cancel with too many ids");
        }
        msg->cancel = (hd_proto_cancel_t){(int)p->n_seq_ids, p->seq_ids, p->reason};
        return HD_OK;
    }
    case HD_PROTO_CANCEL_ACK: {
        Hadal__V1__CancelAck *p = (Hadal__V1__CancelAck *)pb;
        if (!proto_rank_ok(lim, p->rank) || !proto_count_ok(p->n_seq_ids)) {
            return proto_bad(err, err_len, "cancel ack from unknown worker rank %d",
                             (int)p->rank);
        }
        msg->cancel_ack = (hd_proto_cancel_ack_t){p->rank, (int)p->n_seq_ids, p->seq_ids};
        return HD_OK;
    }
    case HD_PROTO_DRAIN: {
        Hadal__V1__Drain *p = (Hadal__V1__Drain *)pb;
        if (p->done && !proto_rank_ok(lim, p->rank)) {
            return proto_bad(err, err_len, "drain done from unknown worker rank %d",
                             (int)p->rank);
        }
        msg->drain = (hd_proto_drain_t){p->reason, p->deadline_ms, p->done, p->exit_after,
                                        p->rank};
        return HD_OK;
    }
    case HD_PROTO_ERROR: {
        Hadal__V1__Error *p = (Hadal__V1__Error *)pb;
        msg->error = (hd_proto_error_t){p->code, p->message};
        return HD_OK;
    }
    }
    return proto_bad(err, err_len, "unknown message type %d", type);
}

hd_status_t hd_proto_decode(const uint8_t *frame, size_t len, const hd_proto_limits_t *lim,
                            hd_proto_msg_t **msg_p, char *err, size_t err_len)
{
    static const hd_proto_limits_t lim_default = {0, 0, 0};
    hd_status_t status;
    int type;
    size_t frame_len;
    if (lim == NULL) {
        lim = &lim_default;
    }
    if (err != NULL && err_len > 0) {
        err[0] = '\0';
    }
    if (frame == NULL && len > 0) {
        return HD_ERR_INVALID_PARAM;
    }
    status = hd_proto_frame_header(frame, len, lim->max_frame, &type, &frame_len);
    if (status == HD_INPROGRESS) {
        return proto_bad(err, err_len, "truncated frame: %zu bytes, header needs %u", len,
                         HD_PROTO_FRAME_HEADER);
    }
    if (status != HD_OK) {
        return proto_bad(err, err_len, "frame length above the limit");
    }
    if (frame_len != len) {
        return proto_bad(err, err_len, "%s frame: header says %zu bytes, got %zu",
                         frame_len > len ? "truncated" : "overlong", frame_len, len);
    }
    const ProtobufCMessageDescriptor *desc = proto_descriptor(type);
    if (desc == NULL) {
        hd_warn(HD_SUBSYS_NET, "skipping frame of unknown type %d (%zu bytes); newer peer?", type,
                len);
        if (err != NULL && err_len > 0) {
            snprintf(err, err_len, "unknown message type %d", type);
        }
        return HD_ERR_UNSUPPORTED;
    }
    hd_proto_msg_t *msg = hd_calloc(1, sizeof(*msg), "proto msg");
    if (msg == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    msg->arena = hd_calloc(1, sizeof(*msg->arena), "proto arena");
    if (msg->arena == NULL) {
        status = HD_ERR_NO_MEMORY;
        goto err_free_msg;
    }
    ProtobufCAllocator alloc = {proto_pb_alloc, proto_pb_free, msg->arena};
    ProtobufCMessage *pb =
        protobuf_c_message_unpack(desc, &alloc, len - HD_PROTO_FRAME_HEADER,
                                  frame + HD_PROTO_FRAME_HEADER);
    if (pb == NULL && msg->arena->oom) {
        status = HD_ERR_NO_MEMORY;
        goto err_free_arena;
    }
    if (pb == NULL) {
        status = proto_bad(err, err_len, "%s frame of %zu bytes does not decode as hadal.v1.%s",
                           hd_proto_type_name(type), len, desc->short_name);
        goto err_free_arena;
    }
    status = proto_dec(msg->arena, type, pb, lim, msg, err, err_len);
    if (status != HD_OK) {
        goto err_free_arena;
    }
    *msg_p = msg;
    return HD_OK;

err_free_arena:
    proto_arena_free_all(msg->arena);
    hd_free(msg->arena);
err_free_msg:
    hd_free(msg);
    return status;
}

void hd_proto_msg_destroy(hd_proto_msg_t *msg)
{
    if (msg == NULL) {
        return;
    }
    if (msg->arena != NULL) {
        proto_arena_free_all(msg->arena);
        hd_free(msg->arena);
    }
    hd_free(msg);
}

/* ---- versioning ---- */

void hd_proto_hello_init(hd_proto_hello_t *hello, hd_proto_role_t role, const char *build)
{
    *hello = (hd_proto_hello_t){HD_PROTO_VERSION_MAJOR, HD_PROTO_VERSION_MINOR, role, build, 0};
}

hd_status_t hd_proto_hello_check(const hd_proto_hello_t *peer, char *err, size_t err_len)
{
    if (peer->major == HD_PROTO_VERSION_MAJOR) {
        return HD_OK;
    }
    char why[160];
    snprintf(why, sizeof(why), "peer speaks protocol %u.x, this build speaks %d.x", peer->major,
             HD_PROTO_VERSION_MAJOR);
    hd_warn(HD_SUBSYS_NET, "refusing peer (%s, build '%s'): %s",
            peer->role == HD_PROTO_ROLE_WORKER        ? "worker"
            : peer->role == HD_PROTO_ROLE_COORDINATOR ? "coordinator"
                                                      : "client",
            peer->build != NULL ? peer->build : "", why);
    if (err != NULL && err_len > 0) {
        snprintf(err, err_len, "%s", why);
    }
    return HD_ERR_PROTO;
}

void hd_proto_hello_reply_init(hd_proto_hello_reply_t *reply, const hd_proto_hello_t *peer,
                               const char *build, char *reason_buf, size_t reason_len)
{
    hd_status_t st = hd_proto_hello_check(peer, reason_buf, reason_len);
    *reply = (hd_proto_hello_reply_t){
        .accepted = st == HD_OK,
        .major = HD_PROTO_VERSION_MAJOR,
        .minor = HD_PROTO_VERSION_MINOR,
        .build = build,
        .reason = st == HD_OK || reason_buf == NULL ? "" : reason_buf,
        .caps = 0,
    };
}

hd_status_t hd_proto_hello_reply_check(const hd_proto_hello_reply_t *reply, char *err,
                                       size_t err_len)
{
    char why[200];
    if (reply->accepted && reply->major == HD_PROTO_VERSION_MAJOR) {
        return HD_OK;
    }
    if (reply->accepted) {
        snprintf(why, sizeof(why), "peer speaks protocol %u.x, this build speaks %d.x",
                 reply->major, HD_PROTO_VERSION_MAJOR);
    } else {
        snprintf(why, sizeof(why), "refused by peer (protocol %u.%u): %s", reply->major,
                 reply->minor, reply->reason != NULL ? reply->reason : "");
    }
    hd_warn(HD_SUBSYS_NET, "handshake failed: %s", why);
    if (err != NULL && err_len > 0) {
        snprintf(err, err_len, "%s", why);
    }
    return HD_ERR_PROTO;
}

/* ---- blocking frame I/O ---- */

static int64_t proto_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for @events on @fd until @deadline (ms, < 0 none). */
static hd_status_t proto_fd_wait(int fd, short events, int64_t deadline)
{
    for (;;) {
        int tmo = -1;
        if (deadline >= 0) {
            int64_t left = deadline - proto_now_ms();
            if (left <= 0) {
                return HD_ERR_TIMEOUT;
            }
            tmo = left > 1000000 ? 1000000 : (int)left;
        }
        struct pollfd pfd = {fd, events, 0};
        int rc = poll(&pfd, 1, tmo);
        if (rc > 0) {
            return HD_OK;
        }
        if (rc < 0 && errno != EINTR) {
            hd_error(HD_SUBSYS_NET, "poll fd %d: %m", fd);
            return HD_ERR_IO;
        }
    }
}

static hd_status_t proto_fd_write_all(int fd, const uint8_t *buf, size_t len, int64_t deadline)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            HD_CHECK(proto_fd_wait(fd, POLLOUT, deadline));
            continue;
        }
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            hd_warn(HD_SUBSYS_NET, "send on fd %d: peer closed the connection", fd);
            return HD_ERR_REMOTE;
        }
        hd_error(HD_SUBSYS_NET, "send on fd %d: %m", fd);
        return HD_ERR_IO;
    }
    return HD_OK;
}

static hd_status_t proto_fd_read_all(int fd, uint8_t *buf, size_t len, int64_t deadline)
{
    while (len > 0) {
        ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n == 0) {
            return HD_ERR_REMOTE;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            HD_CHECK(proto_fd_wait(fd, POLLIN, deadline));
            continue;
        }
        if (errno == ECONNRESET) {
            return HD_ERR_REMOTE;
        }
        hd_error(HD_SUBSYS_NET, "recv on fd %d: %m", fd);
        return HD_ERR_IO;
    }
    return HD_OK;
}

hd_status_t hd_proto_fd_send(int fd, const hd_proto_msg_t *msg, int timeout_ms)
{
    uint8_t *frame;
    size_t len;
    int64_t deadline = timeout_ms < 0 ? -1 : proto_now_ms() + timeout_ms;
    HD_CHECK(hd_proto_encode(msg, &frame, &len));
    hd_status_t status = proto_fd_write_all(fd, frame, len, deadline);
    hd_free(frame);
    return status;
}

hd_status_t hd_proto_fd_recv(int fd, const hd_proto_limits_t *lim, int timeout_ms,
                             hd_proto_msg_t **msg_p, char *err, size_t err_len)
{
    uint8_t hdr[HD_PROTO_FRAME_HEADER];
    int64_t deadline = timeout_ms < 0 ? -1 : proto_now_ms() + timeout_ms;
    int type;
    size_t frame_len;
    hd_status_t status = proto_fd_read_all(fd, hdr, sizeof(hdr), deadline);
    if (status != HD_OK) {
        if (err != NULL && err_len > 0) {
            snprintf(err, err_len, "%s", hd_status_string(status));
        }
        return status;
    }
    status = hd_proto_frame_header(hdr, sizeof(hdr), lim != NULL ? lim->max_frame : 0, &type,
                                   &frame_len);
    if (status != HD_OK) {
        if (err != NULL && err_len > 0) {
            snprintf(err, err_len, "frame length above the limit");
        }
        return HD_ERR_PROTO;
    }
    uint8_t *frame = hd_malloc(frame_len, "proto frame");
    if (frame == NULL) {
        return HD_ERR_NO_MEMORY;
    }
    memcpy(frame, hdr, sizeof(hdr));
    status = proto_fd_read_all(fd, frame + sizeof(hdr), frame_len - sizeof(hdr), deadline);
    if (status == HD_OK) {
        status = hd_proto_decode(frame, frame_len, lim, msg_p, err, err_len);
    } else if (err != NULL && err_len > 0) {
        snprintf(err, err_len, "%s (mid-frame)", hd_status_string(status));
    }
    hd_free(frame);
    return status;
}

hd_status_t hd_proto_handshake_client(int fd, hd_proto_role_t role, const char *build,
                                      int timeout_ms, char *err, size_t err_len)
{
    hd_proto_msg_t hello = {.type = HD_PROTO_HELLO};
    hd_proto_msg_t *reply = NULL;
    int64_t deadline = timeout_ms < 0 ? -1 : proto_now_ms() + timeout_ms;
    hd_proto_hello_init(&hello.hello, role, build);
    hd_status_t status = hd_proto_fd_send(fd, &hello, timeout_ms);
    if (status != HD_OK) {
        return status;
    }
    int left = deadline < 0 ? -1 : (int)(deadline - proto_now_ms());
    if (deadline >= 0 && left < 0) {
        left = 0;
    }
    status = hd_proto_fd_recv(fd, NULL, left, &reply, err, err_len);
    if (status != HD_OK) {
        return status;
    }
    if (reply->type != HD_PROTO_HELLO_REPLY) {
        status = proto_bad(err, err_len, "expected hello_reply, got %s",
                           hd_proto_type_name(reply->type));
    } else {
        status = hd_proto_hello_reply_check(&reply->hello_reply, err, err_len);
    }
    hd_proto_msg_destroy(reply);
    return status;
}

hd_status_t hd_proto_handshake_server(int fd, hd_proto_role_t role, const char *build,
                                      int timeout_ms, hd_proto_role_t *peer_role_p, char *err,
                                      size_t err_len)
{
    hd_proto_msg_t *hello = NULL;
    int64_t deadline = timeout_ms < 0 ? -1 : proto_now_ms() + timeout_ms;
    char reason[160] = "";
    (void)role;
    hd_status_t status = hd_proto_fd_recv(fd, NULL, timeout_ms, &hello, err, err_len);
    if (status != HD_OK) {
        return status;
    }
    if (hello->type != HD_PROTO_HELLO) {
        status = proto_bad(err, err_len, "expected hello first, got %s",
                           hd_proto_type_name(hello->type));
        hd_proto_msg_destroy(hello);
        return status;
    }
    hd_proto_msg_t reply = {.type = HD_PROTO_HELLO_REPLY};
    hd_proto_hello_reply_init(&reply.hello_reply, &hello->hello, build, reason, sizeof(reason));
    hd_proto_role_t peer_role = hello->hello.role;
    hd_proto_msg_destroy(hello);
    int left = deadline < 0 ? -1 : (int)(deadline - proto_now_ms());
    if (deadline >= 0 && left < 0) {
        left = 0;
    }
    status = hd_proto_fd_send(fd, &reply, left);
    if (status != HD_OK) {
        return status;
    }
    if (!reply.hello_reply.accepted) {
        if (err != NULL && err_len > 0) {
            snprintf(err, err_len, "%s", reason);
        }
        return HD_ERR_PROTO;
    }
    if (peer_role_p != NULL) {
        *peer_role_p = peer_role;
    }
    return HD_OK;
}
