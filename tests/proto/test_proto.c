/*
 * test_proto.c - the control-plane messages: every message type round-trips field for field
 * through encode/decode; a different major version is refused with the exact message; every
 * truncation of every frame, garbage payloads, oversized frames, out-of-range fields and
 * unknown ranks are rejected with HD_ERR_PROTO (never a crash); handshakes and frame I/O over
 * a real socketpair, including a peer that closes mid-frame and a deadline that passes.
 */
#include "hd_test.h"
#include "hadal/alloc.h"
#include "hadal/proto.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- sample messages ---- */

static const uint8_t blob_a[] = {1, 2, 3, 0, 255, 9};
static const uint8_t blob_b[] = {42};
static const hd_proto_addr_t addrs[] = {{"tcp", blob_a, sizeof(blob_a)},
                                        {"ucx", blob_b, sizeof(blob_b)}};
static const uint32_t experts[] = {0, 5, 17, 255};
static const hd_proto_peer_t peers[] = {{0, 0, 0, 2, addrs}, {1, 0, 1, 1, addrs + 1},
                                        {2, 1, 0, 0, NULL}, {3, 1, 1, 2, addrs}};
static const int32_t toks_a[] = {0, 1, 128000, 7, 99};
static const int32_t toks_b[] = {424};
static const uint64_t rel[] = {11, 12};
static const uint64_t can[] = {1ull << 40};
static const hd_proto_step_item_t items[] = {
    {.seq_id = 77, .column = 1, .n_tokens = 5, .tokens = toks_a, .pos = 0, .first = true,
     .sample = false, .sampling = {0.7f, 0.9f, 40, 0.05f, 1234567890123ull}, .n_logprobs = 5,
     .want_logits = false},
    {.seq_id = 78, .column = 0, .n_tokens = 1, .tokens = toks_b, .pos = 4095, .first = false,
     .sample = true, .sampling = {0.0f, 1.0f, 0, 0.0f, 0}, .n_logprobs = 0, .want_logits = true},
};
static const int32_t top_ids[] = {5, 6, 7};
static const float top_lp[] = {-0.1f, -2.5f, -3.75f};
static const float logits[] = {1.0f, -1.0f, 0.5f, 3.25f};
static const hd_proto_item_result_t results[] = {
    {.seq_id = 77, .token = -1, .error = 0},
    {.seq_id = 78, .token = 9, .error = 0, .has_logprob = true, .logprob = -0.25f, .n_top = 3,
     .top_ids = top_ids, .top_logprobs = top_lp, .n_logits = 4, .logits = logits},
    {.seq_id = 79, .token = -1, .error = HD_ERR_REMOTE},
};

static hd_proto_msg_t sample(int type)
{
    hd_proto_msg_t m = {.type = (hd_proto_type_t)type};
    switch (type) {
    case HD_PROTO_HELLO:
        hd_proto_hello_init(&m.hello, HD_PROTO_ROLE_WORKER, "hadal test");
        m.hello.caps = 0x55;
        break;
    case HD_PROTO_HELLO_REPLY:
        m.hello_reply = (hd_proto_hello_reply_t){false, 1, 3, "coord", "nope", 7};
        break;
    case HD_PROTO_REGISTER:
        m.reg = (hd_proto_register_t){"host-a:cuda:3", 2, addrs, 80ull << 30, 1ull << 40,
                                      "cuda:3 H100", 0x3, 2};
        break;
    case HD_PROTO_PLACEMENT:
        m.placement = (hd_proto_placement_t){.rank = 3, .pp = 2, .ep = 2, .stage = 1,
                                             .column = 1, .layer_lo = 31, .layer_hi = 61,
                                             .expert_lo = 128, .expert_hi = 256,
                                             .n_experts = 4, .experts = experts,
                                             .model_dir = "/models/v4-pro", .preset = "",
                                             .numerics = 1, .transport = "ucx", .n_peers = 4,
                                             .peers = peers, .epoch = 9, .load_mtp = true};
        break;
    case HD_PROTO_STEP_BATCH:
        m.step_batch = (hd_proto_step_batch_t){123456789012ull, 2, 9, 2, items, 2, rel, 1, can};
        break;
    case HD_PROTO_STEP_RESULT:
        m.step_result = (hd_proto_step_result_t){123456789012ull, 2, 3, 0, "", 3, results};
        break;
    case HD_PROTO_HEARTBEAT:
        m.heartbeat = (hd_proto_heartbeat_t){2, 41, 999999999999ull, 17, 1ull << 33, 9};
        break;
    case HD_PROTO_CANCEL:
        m.cancel = (hd_proto_cancel_t){2, rel, "client went away"};
        break;
    case HD_PROTO_CANCEL_ACK:
        m.cancel_ack = (hd_proto_cancel_ack_t){1, 2, rel};
        break;
    case HD_PROTO_DRAIN:
        m.drain = (hd_proto_drain_t){"rolling update", 30000, true, true, 3};
        break;
    case HD_PROTO_ERROR:
        m.error = (hd_proto_error_t){HD_ERR_PROTO, "bad frame"};
        break;
    }
    return m;
}

static bool str_eq(const char *a, const char *b)
{
    return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

static void check_addrs(const hd_proto_addr_t *a, const hd_proto_addr_t *b, int n)
{
    for (int i = 0; i < n; i++) {
        HD_CHECK_TRUE(str_eq(a[i].transport, b[i].transport));
        HD_CHECK_INT_EQ(a[i].blob_len, b[i].blob_len);
        HD_CHECK_TRUE(a[i].blob_len == 0 || memcmp(a[i].blob, b[i].blob, a[i].blob_len) == 0);
    }
}

/* Field-by-field equality of a sample and its decoded copy. */
static void check_equal(const hd_proto_msg_t *a, const hd_proto_msg_t *b)
{
    HD_CHECK_INT_EQ(a->type, b->type);
    switch (a->type) {
    case HD_PROTO_HELLO:
        HD_CHECK_INT_EQ(a->hello.major, b->hello.major);
        HD_CHECK_INT_EQ(a->hello.minor, b->hello.minor);
        HD_CHECK_INT_EQ(a->hello.role, b->hello.role);
        HD_CHECK_TRUE(str_eq(a->hello.build, b->hello.build));
        HD_CHECK_INT_EQ(a->hello.caps, b->hello.caps);
        break;
    case HD_PROTO_HELLO_REPLY:
        HD_CHECK_INT_EQ(a->hello_reply.accepted, b->hello_reply.accepted);
        HD_CHECK_INT_EQ(a->hello_reply.major, b->hello_reply.major);
        HD_CHECK_INT_EQ(a->hello_reply.minor, b->hello_reply.minor);
        HD_CHECK_TRUE(str_eq(a->hello_reply.build, b->hello_reply.build));
        HD_CHECK_TRUE(str_eq(a->hello_reply.reason, b->hello_reply.reason));
        HD_CHECK_INT_EQ(a->hello_reply.caps, b->hello_reply.caps);
        break;
    case HD_PROTO_REGISTER:
        HD_CHECK_TRUE(str_eq(a->reg.name, b->reg.name));
        HD_CHECK_INT_EQ(a->reg.n_addrs, b->reg.n_addrs);
        check_addrs(a->reg.addrs, b->reg.addrs, a->reg.n_addrs);
        HD_CHECK_INT_EQ(a->reg.device_memory, b->reg.device_memory);
        HD_CHECK_INT_EQ(a->reg.host_memory, b->reg.host_memory);
        HD_CHECK_TRUE(str_eq(a->reg.device, b->reg.device));
        HD_CHECK_INT_EQ(a->reg.caps, b->reg.caps);
        HD_CHECK_INT_EQ(a->reg.requested_rank, b->reg.requested_rank);
        break;
    case HD_PROTO_PLACEMENT: {
        const hd_proto_placement_t *x = &a->placement, *y = &b->placement;
        HD_CHECK_INT_EQ(x->rank, y->rank);
        HD_CHECK_INT_EQ(x->pp, y->pp);
        HD_CHECK_INT_EQ(x->ep, y->ep);
        HD_CHECK_INT_EQ(x->stage, y->stage);
        HD_CHECK_INT_EQ(x->column, y->column);
        HD_CHECK_INT_EQ(x->layer_lo, y->layer_lo);
        HD_CHECK_INT_EQ(x->layer_hi, y->layer_hi);
        HD_CHECK_INT_EQ(x->expert_lo, y->expert_lo);
        HD_CHECK_INT_EQ(x->expert_hi, y->expert_hi);
        HD_CHECK_INT_EQ(x->n_experts, y->n_experts);
        HD_CHECK_TRUE(memcmp(x->experts, y->experts, sizeof(uint32_t) * (size_t)x->n_experts) == 0);
        HD_CHECK_TRUE(str_eq(x->model_dir, y->model_dir));
        HD_CHECK_TRUE(str_eq(x->preset, y->preset));
        HD_CHECK_INT_EQ(x->numerics, y->numerics);
        HD_CHECK_TRUE(str_eq(x->transport, y->transport));
        HD_CHECK_INT_EQ(x->epoch, y->epoch);
        HD_CHECK_INT_EQ(x->load_mtp, y->load_mtp);
        HD_CHECK_INT_EQ(x->n_peers, y->n_peers);
        for (int i = 0; i < x->n_peers && i < y->n_peers; i++) {
            HD_CHECK_INT_EQ(x->peers[i].rank, y->peers[i].rank);
            HD_CHECK_INT_EQ(x->peers[i].stage, y->peers[i].stage);
            HD_CHECK_INT_EQ(x->peers[i].column, y->peers[i].column);
            HD_CHECK_INT_EQ(x->peers[i].n_addrs, y->peers[i].n_addrs);
            check_addrs(x->peers[i].addrs, y->peers[i].addrs, x->peers[i].n_addrs);
        }
        break;
    }
    case HD_PROTO_STEP_BATCH: {
        const hd_proto_step_batch_t *x = &a->step_batch, *y = &b->step_batch;
        HD_CHECK_INT_EQ(x->step_id, y->step_id);
        HD_CHECK_INT_EQ(x->micro_batch, y->micro_batch);
        HD_CHECK_INT_EQ(x->epoch, y->epoch);
        HD_CHECK_INT_EQ(x->n_items, y->n_items);
        for (int i = 0; i < x->n_items && i < y->n_items; i++) {
            const hd_proto_step_item_t *p = &x->items[i], *q = &y->items[i];
            HD_CHECK_INT_EQ(p->seq_id, q->seq_id);
            HD_CHECK_INT_EQ(p->column, q->column);
            HD_CHECK_INT_EQ(p->n_tokens, q->n_tokens);
            HD_CHECK_TRUE(memcmp(p->tokens, q->tokens, sizeof(int32_t) * (size_t)p->n_tokens) == 0);
            HD_CHECK_INT_EQ(p->pos, q->pos);
            HD_CHECK_INT_EQ(p->first, q->first);
            HD_CHECK_INT_EQ(p->sample, q->sample);
            HD_CHECK_TRUE(p->sampling.temperature == q->sampling.temperature);
            HD_CHECK_TRUE(p->sampling.top_p == q->sampling.top_p);
            HD_CHECK_INT_EQ(p->sampling.top_k, q->sampling.top_k);
            HD_CHECK_TRUE(p->sampling.min_p == q->sampling.min_p);
            HD_CHECK_INT_EQ(p->sampling.seed, q->sampling.seed);
            HD_CHECK_INT_EQ(p->n_logprobs, q->n_logprobs);
            HD_CHECK_INT_EQ(p->want_logits, q->want_logits);
        }
        HD_CHECK_INT_EQ(x->n_release, y->n_release);
        HD_CHECK_TRUE(memcmp(x->release, y->release, 8 * (size_t)x->n_release) == 0);
        HD_CHECK_INT_EQ(x->n_cancel, y->n_cancel);
        HD_CHECK_TRUE(memcmp(x->cancel, y->cancel, 8 * (size_t)x->n_cancel) == 0);
        break;
    }
    case HD_PROTO_STEP_RESULT: {
        const hd_proto_step_result_t *x = &a->step_result, *y = &b->step_result;
        HD_CHECK_INT_EQ(x->step_id, y->step_id);
        HD_CHECK_INT_EQ(x->micro_batch, y->micro_batch);
        HD_CHECK_INT_EQ(x->rank, y->rank);
        HD_CHECK_INT_EQ(x->error, y->error);
        HD_CHECK_TRUE(str_eq(x->message, y->message));
        HD_CHECK_INT_EQ(x->n_items, y->n_items);
        for (int i = 0; i < x->n_items && i < y->n_items; i++) {
            const hd_proto_item_result_t *p = &x->items[i], *q = &y->items[i];
            HD_CHECK_INT_EQ(p->seq_id, q->seq_id);
            HD_CHECK_INT_EQ(p->token, q->token);
            HD_CHECK_INT_EQ(p->error, q->error);
            HD_CHECK_INT_EQ(p->has_logprob, q->has_logprob);
            HD_CHECK_TRUE(p->logprob == q->logprob);
            HD_CHECK_INT_EQ(p->n_top, q->n_top);
            HD_CHECK_TRUE(p->n_top == 0 ||
                          (memcmp(p->top_ids, q->top_ids, 4 * (size_t)p->n_top) == 0 &&
                           memcmp(p->top_logprobs, q->top_logprobs, 4 * (size_t)p->n_top) == 0));
            HD_CHECK_INT_EQ(p->n_logits, q->n_logits);
            HD_CHECK_TRUE(p->n_logits == 0 ||
                          memcmp(p->logits, q->logits, 4 * (size_t)p->n_logits) == 0);
        }
        break;
    }
    case HD_PROTO_HEARTBEAT:
        HD_CHECK_TRUE(memcmp(&a->heartbeat, &b->heartbeat, sizeof(a->heartbeat)) == 0);
        break;
    case HD_PROTO_CANCEL:
        HD_CHECK_INT_EQ(a->cancel.n_seq_ids, b->cancel.n_seq_ids);
        HD_CHECK_TRUE(memcmp(a->cancel.seq_ids, b->cancel.seq_ids, 8 * (size_t)a->cancel.n_seq_ids) == 0);
        HD_CHECK_TRUE(str_eq(a->cancel.reason, b->cancel.reason));
        break;
    case HD_PROTO_CANCEL_ACK:
        HD_CHECK_INT_EQ(a->cancel_ack.rank, b->cancel_ack.rank);
        HD_CHECK_INT_EQ(a->cancel_ack.n_seq_ids, b->cancel_ack.n_seq_ids);
        HD_CHECK_TRUE(memcmp(a->cancel_ack.seq_ids, b->cancel_ack.seq_ids, 16) == 0);
        break;
    case HD_PROTO_DRAIN:
        HD_CHECK_TRUE(str_eq(a->drain.reason, b->drain.reason));
        HD_CHECK_INT_EQ(a->drain.deadline_ms, b->drain.deadline_ms);
        HD_CHECK_INT_EQ(a->drain.done, b->drain.done);
        HD_CHECK_INT_EQ(a->drain.exit_after, b->drain.exit_after);
        HD_CHECK_INT_EQ(a->drain.rank, b->drain.rank);
        break;
    case HD_PROTO_ERROR:
        HD_CHECK_INT_EQ(a->error.code, b->error.code);
        HD_CHECK_TRUE(str_eq(a->error.message, b->error.message));
        break;
    }
}

HD_TEST(round_trip_every_message)
{
    hd_proto_limits_t lim = {.n_ranks = 4, .vocab = 129280};
    for (int type = 1; type <= HD_PROTO_TYPE_MAX; type++) {
        hd_proto_msg_t m = sample(type);
        uint8_t *frame = NULL;
        size_t len = 0;
        HD_CHECK_INT_EQ(hd_proto_encode(&m, &frame, &len), HD_OK);
        HD_CHECK_TRUE(len >= HD_PROTO_FRAME_HEADER);
        /* header: u32 payload length + u16 type, little-endian */
        HD_CHECK_INT_EQ(frame[0] | frame[1] << 8 | frame[2] << 16 | (uint32_t)frame[3] << 24,
                        len - HD_PROTO_FRAME_HEADER);
        HD_CHECK_INT_EQ(frame[4] | frame[5] << 8, type);
        int ftype = 0;
        size_t flen = 0;
        HD_CHECK_INT_EQ(hd_proto_frame_header(frame, len, 0, &ftype, &flen), HD_OK);
        HD_CHECK_INT_EQ(ftype, type);
        HD_CHECK_INT_EQ(flen, len);
        hd_proto_msg_t *d = NULL;
        char err[256];
        hd_status_t st = hd_proto_decode(frame, len, &lim, &d, err, sizeof(err));
        HD_CHECK_MSG(st == HD_OK, "%s: %s", hd_proto_type_name(type), err);
        if (d != NULL) {
            check_equal(&m, d);
            /* re-encoding the decoded message gives the same bytes */
            uint8_t *again = NULL;
            size_t alen = 0;
            HD_CHECK_INT_EQ(hd_proto_encode(d, &again, &alen), HD_OK);
            HD_CHECK_MSG(alen == len && memcmp(again, frame, len) == 0, "%s re-encodes differently",
                         hd_proto_type_name(type));
            hd_free(again);
        }
        hd_proto_msg_destroy(d);
        hd_free(frame);
    }
    HD_CHECK_STR_EQ(hd_proto_type_name(HD_PROTO_STEP_BATCH), "step_batch");
    HD_CHECK_STR_EQ(hd_proto_type_name(999), "unknown");
}

HD_TEST(version_refusal)
{
    hd_proto_hello_t peer;
    hd_proto_hello_init(&peer, HD_PROTO_ROLE_WORKER, "future");
    char err[200] = "";
    HD_CHECK_INT_EQ(hd_proto_hello_check(&peer, err, sizeof(err)), HD_OK);
    peer.minor = 99; /* newer minor of the same major: fine */
    HD_CHECK_INT_EQ(hd_proto_hello_check(&peer, err, sizeof(err)), HD_OK);
    peer.major = 2;
    HD_CHECK_INT_EQ(hd_proto_hello_check(&peer, err, sizeof(err)), HD_ERR_PROTO);
    HD_CHECK_STR_EQ(err, "peer speaks protocol 2.x, this build speaks 1.x");
    hd_proto_hello_reply_t reply;
    char reason[160];
    hd_proto_hello_reply_init(&reply, &peer, "me", reason, sizeof(reason));
    HD_CHECK_TRUE(!reply.accepted);
    HD_CHECK_STR_EQ(reply.reason, "peer speaks protocol 2.x, this build speaks 1.x");
    /* the refusal travels and is reported by the other side with the reason */
    hd_proto_msg_t m = {.type = HD_PROTO_HELLO_REPLY, .hello_reply = reply};
    uint8_t *frame;
    size_t len;
    HD_CHECK_INT_EQ(hd_proto_encode(&m, &frame, &len), HD_OK);
    hd_proto_msg_t *d = NULL;
    HD_CHECK_INT_EQ(hd_proto_decode(frame, len, NULL, &d, NULL, 0), HD_OK);
    HD_CHECK_INT_EQ(hd_proto_hello_reply_check(&d->hello_reply, err, sizeof(err)), HD_ERR_PROTO);
    HD_CHECK_TRUE(strstr(err, "peer speaks protocol 2.x, this build speaks 1.x") != NULL);
    hd_proto_msg_destroy(d);
    hd_free(frame);
    peer.major = 0;
    HD_CHECK_INT_EQ(hd_proto_hello_check(&peer, err, sizeof(err)), HD_ERR_PROTO);
    HD_CHECK_STR_EQ(err, "peer speaks protocol 0.x, this build speaks 1.x");
}

HD_TEST(truncated_frames_rejected)
{
    for (int type = 1; type <= HD_PROTO_TYPE_MAX; type++) {
        hd_proto_msg_t m = sample(type);
        uint8_t *frame;
        size_t len;
        HD_CHECK_INT_EQ(hd_proto_encode(&m, &frame, &len), HD_OK);
        int accepted = 0;
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *copy = malloc(cut + 1); /* exact size: ASan sees any overread */
            memcpy(copy, frame, cut);
            hd_proto_msg_t *d = NULL;
            hd_status_t st = hd_proto_decode(copy, cut, NULL, &d, NULL, 0);
            accepted += st == HD_OK;
            hd_proto_msg_destroy(d);
            /* a header that claims fewer bytes than the frame: decode the shortened payload */
            if (cut >= HD_PROTO_FRAME_HEADER) {
                uint32_t pl = (uint32_t)(cut - HD_PROTO_FRAME_HEADER);
                copy[0] = (uint8_t)pl;
                copy[1] = (uint8_t)(pl >> 8);
                copy[2] = (uint8_t)(pl >> 16);
                copy[3] = (uint8_t)(pl >> 24);
                d = NULL;
                st = hd_proto_decode(copy, cut, NULL, &d, NULL, 0);
                HD_CHECK_TRUE(st == HD_OK || st == HD_ERR_PROTO);
                hd_proto_msg_destroy(d);
            }
            free(copy);
        }
        HD_CHECK_MSG(accepted == 0, "%s: %d truncations accepted", hd_proto_type_name(type),
                     accepted);
        /* trailing bytes are refused too */
        uint8_t *longer = malloc(len + 3);
        memcpy(longer, frame, len);
        memset(longer + len, 0, 3);
        hd_proto_msg_t *d = NULL;
        HD_CHECK_INT_EQ(hd_proto_decode(longer, len + 3, NULL, &d, NULL, 0), HD_ERR_PROTO);
        free(longer);
        hd_free(frame);
    }
}

HD_TEST(garbage_rejected)
{
    uint64_t x = 0x1234567887654321ull;
    int ok = 0, proto = 0, unsupported = 0;
    for (int iter = 0; iter < 20000; iter++) {
        uint8_t buf[300];
        size_t len = (size_t)(iter % 299) + 1;
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = (uint8_t)x;
        }
        /* a consistent header half the time, so the payload decoder sees garbage */
        if (iter % 2 == 0 && len >= HD_PROTO_FRAME_HEADER) {
            uint32_t pl = (uint32_t)(len - HD_PROTO_FRAME_HEADER);
            buf[0] = (uint8_t)pl;
            buf[1] = (uint8_t)(pl >> 8);
            buf[2] = 0;
            buf[3] = 0;
            buf[4] = (uint8_t)(1 + iter % HD_PROTO_TYPE_MAX);
            buf[5] = 0;
        }
        hd_proto_msg_t *d = NULL;
        hd_status_t st = hd_proto_decode(buf, len, NULL, &d, NULL, 0);
        ok += st == HD_OK;
        proto += st == HD_ERR_PROTO;
        unsupported += st == HD_ERR_UNSUPPORTED;
        HD_CHECK_TRUE(st == HD_OK || st == HD_ERR_PROTO || st == HD_ERR_UNSUPPORTED);
        hd_proto_msg_destroy(d);
    }
    HD_CHECK_TRUE(proto > 10000);
    /* an unknown frame type of a newer peer: skippable, not a protocol error */
    uint8_t unk[8] = {2, 0, 0, 0, 200, 0, 0x08, 0x01};
    hd_proto_msg_t *d = NULL;
    char err[128];
    HD_CHECK_INT_EQ(hd_proto_decode(unk, 8, NULL, &d, err, sizeof(err)), HD_ERR_UNSUPPORTED);
    HD_CHECK_STR_EQ(err, "unknown message type 200");
    /* oversized length: refused from the header alone */
    uint8_t big[6] = {0xff, 0xff, 0xff, 0x7f, 5, 0};
    int t;
    size_t fl;
    HD_CHECK_INT_EQ(hd_proto_frame_header(big, 6, 0, &t, &fl), HD_ERR_PROTO);
    HD_CHECK_INT_EQ(hd_proto_frame_header(big, 5, 0, &t, &fl), HD_INPROGRESS);
    hd_proto_limits_t small = {.max_frame = 16};
    hd_proto_msg_t m = sample(HD_PROTO_PLACEMENT);
    uint8_t *frame;
    size_t len;
    HD_CHECK_INT_EQ(hd_proto_encode(&m, &frame, &len), HD_OK);
    HD_CHECK_INT_EQ(hd_proto_decode(frame, len, &small, &d, err, sizeof(err)), HD_ERR_PROTO);
    hd_free(frame);
    HD_CHECK_INT_EQ(hd_proto_decode(NULL, 0, NULL, &d, NULL, 0), HD_ERR_PROTO);
}

/* Encode @m, decode with @lim: the status. */
static hd_status_t decode_status(const hd_proto_msg_t *m, const hd_proto_limits_t *lim,
                                 char *err, size_t err_len)
{
    uint8_t *frame;
    size_t len;
    hd_proto_msg_t *d = NULL;
    if (hd_proto_encode(m, &frame, &len) != HD_OK) {
        return HD_ERR_INVALID_PARAM;
    }
    hd_status_t st = hd_proto_decode(frame, len, lim, &d, err, err_len);
    hd_proto_msg_destroy(d);
    hd_free(frame);
    return st;
}

HD_TEST(out_of_range_fields_rejected)
{
    hd_proto_limits_t lim = {.n_ranks = 4, .vocab = 1000};
    char err[256];
    /* unknown worker ranks */
    hd_proto_msg_t m = sample(HD_PROTO_HEARTBEAT);
    m.heartbeat.rank = 4;
    HD_CHECK_INT_EQ(decode_status(&m, &lim, err, sizeof(err)), HD_ERR_PROTO);
    HD_CHECK_STR_EQ(err, "heartbeat from unknown worker rank 4");
    HD_CHECK_INT_EQ(decode_status(&m, NULL, err, sizeof(err)), HD_OK); /* unchecked */
    m = sample(HD_PROTO_STEP_RESULT);
    m.step_result.rank = 17;
    HD_CHECK_INT_EQ(decode_status(&m, &lim, err, sizeof(err)), HD_ERR_PROTO);
    m = sample(HD_PROTO_CANCEL_ACK);
    m.cancel_ack.rank = -3;
    HD_CHECK_INT_EQ(decode_status(&m, &lim, err, sizeof(err)), HD_ERR_PROTO);
    m = sample(HD_PROTO_REGISTER);
    m.reg.requested_rank = 9;
    HD_CHECK_INT_EQ(decode_status(&m, &lim, err, sizeof(err)), HD_ERR_PROTO);
    /* placements that do not fit their grid */
    m = sample(HD_PROTO_PLACEMENT);
    m.placement.rank = 2; /* stage 1 column 1 of 2x2 is rank 3 */
    HD_CHECK_INT_EQ(decode_status(&m, &lim, err, sizeof(err)), HD_ERR_PROTO);
    m = sample(HD_PROTO_PLACEMENT);
    m.placement.layer_hi = 3;
    HD_CHECK_INT_EQ(decode_status(&m, &lim, err, sizeof(err)), HD_ERR_PROTO);
    m = sample(HD_PROTO_PLACEMENT);
    hd_proto_peer_t bad_peers[1] = {{.rank = 7, .stage = 3, .column = 1}};
    m.placement.peers = bad_peers;
    m.placement.n_peers = 1;
    HD_CHECK_INT_EQ(decode_status(&m, &lim, err, sizeof(err)), HD_ERR_PROTO);
    HD_CHECK_TRUE(strstr(err, "unknown worker rank 7") != NULL);
    m = sample(HD_PROTO_PLACEMENT);
    m.placement.pp = 0;
    HD_CHECK_INT_EQ(decode_status(&m, NULL, err, sizeof(err)), HD_ERR_PROTO);
    /* step items */
    hd_proto_step_item_t it[1];
    m = sample(HD_PROTO_STEP_BATCH);
    m.step_batch.items = it;
    m.step_batch.n_items = 1;
    for (int k = 0; k < 8; k++) {
        it[0] = items[0];
        switch (k) {
        case 0: it[0].n_tokens = 0; break;
        case 1: it[0].pos = -1; break;
        case 2: it[0].sampling.temperature = -1.0f; break;
        case 3: it[0].sampling.top_p = 1.5f; break;
        case 4: it[0].sampling.top_k = -2; break;
        case 5: it[0].sampling.min_p = NAN; break;
        case 6: it[0].n_logprobs = HD_PROTO_MAX_LOGPROBS + 1; break;
        case 7: it[0].tokens = toks_a; it[0].n_tokens = 3; break; /* 128000 >= vocab */
        }
        HD_CHECK_MSG(decode_status(&m, &lim, err, sizeof(err)) == HD_ERR_PROTO, "edit %d", k);
    }
    it[0] = items[1];
    HD_CHECK_INT_EQ(decode_status(&m, &lim, err, sizeof(err)), HD_OK);
    /* top_p 0 is read as "off" (1) */
    it[0].sampling.top_p = 0.0f;
    uint8_t *frame;
    size_t len;
    hd_proto_msg_t *d = NULL;
    HD_CHECK_INT_EQ(hd_proto_encode(&m, &frame, &len), HD_OK);
    HD_CHECK_INT_EQ(hd_proto_decode(frame, len, &lim, &d, NULL, 0), HD_OK);
    HD_CHECK_TRUE(d != NULL && d->step_batch.items[0].sampling.top_p == 1.0f);
    hd_proto_msg_destroy(d);
    hd_free(frame);
    /* results with mismatched top lists are malformed */
    m = sample(HD_PROTO_STEP_RESULT);
    hd_proto_item_result_t r[1] = {results[1]};
    r[0].token = 5000;
    m.step_result.items = r;
    m.step_result.n_items = 1;
    HD_CHECK_INT_EQ(decode_status(&m, &lim, err, sizeof(err)), HD_ERR_PROTO);
    /* encode refuses unknown types */
    m.type = (hd_proto_type_t)77;
    HD_CHECK_INT_EQ(hd_proto_encode(&m, &frame, &len), HD_ERR_INVALID_PARAM);
}

/* ---- frame I/O and handshakes over a socketpair ---- */

typedef struct {
    int fd;
    hd_proto_role_t role;
    uint32_t major;    /* what the client claims */
    hd_status_t status;
    char err[200];
} hs_arg_t;

static void *hs_client(void *p)
{
    hs_arg_t *a = p;
    if (a->major == HD_PROTO_VERSION_MAJOR) {
        a->status = hd_proto_handshake_client(a->fd, a->role, "client", 3000, a->err,
                                              sizeof(a->err));
        return NULL;
    }
    /* a client from the future */
    hd_proto_msg_t hello = {.type = HD_PROTO_HELLO};
    hd_proto_hello_init(&hello.hello, a->role, "hadal 9");
    hello.hello.major = a->major;
    hd_proto_msg_t *reply = NULL;
    a->status = hd_proto_fd_send(a->fd, &hello, 3000);
    if (a->status == HD_OK) {
        a->status = hd_proto_fd_recv(a->fd, NULL, 3000, &reply, a->err, sizeof(a->err));
    }
    if (a->status == HD_OK) {
        a->status = hd_proto_hello_reply_check(&reply->hello_reply, a->err, sizeof(a->err));
    }
    hd_proto_msg_destroy(reply);
    return NULL;
}

HD_TEST(handshake_over_socketpair)
{
    for (int future = 0; future < 2; future++) {
        int sv[2];
        HD_CHECK_INT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        hs_arg_t a = {.fd = sv[1], .role = HD_PROTO_ROLE_WORKER,
                      .major = future ? 2 : HD_PROTO_VERSION_MAJOR};
        pthread_t th;
        pthread_create(&th, NULL, hs_client, &a);
        hd_proto_role_t role = HD_PROTO_ROLE_UNSPECIFIED;
        char err[200] = "";
        hd_status_t st = hd_proto_handshake_server(sv[0], HD_PROTO_ROLE_COORDINATOR, "coord", 3000,
                                                   &role, err, sizeof(err));
        pthread_join(th, NULL);
        if (!future) {
            HD_CHECK_INT_EQ(st, HD_OK);
            HD_CHECK_INT_EQ(a.status, HD_OK);
            HD_CHECK_INT_EQ(role, HD_PROTO_ROLE_WORKER);
            /* then messages flow both ways on the same connection */
            hd_proto_msg_t m = sample(HD_PROTO_STEP_BATCH);
            HD_CHECK_INT_EQ(hd_proto_fd_send(sv[0], &m, 1000), HD_OK);
            hd_proto_msg_t *d = NULL;
            HD_CHECK_INT_EQ(hd_proto_fd_recv(sv[1], NULL, 1000, &d, err, sizeof(err)), HD_OK);
            if (d != NULL) {
                check_equal(&m, d);
            }
            hd_proto_msg_destroy(d);
        } else {
            HD_CHECK_INT_EQ(st, HD_ERR_PROTO);
            HD_CHECK_STR_EQ(err, "peer speaks protocol 2.x, this build speaks 1.x");
            HD_CHECK_INT_EQ(a.status, HD_ERR_PROTO);
            HD_CHECK_TRUE(strstr(a.err, "peer speaks protocol 2.x, this build speaks 1.x") != NULL);
        }
        close(sv[0]);
        close(sv[1]);
    }
}

HD_TEST(fd_recv_errors)
{
    int sv[2];
    char err[200];
    hd_proto_msg_t *d = NULL;
    HD_CHECK_INT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    /* nothing arrives: the deadline passes */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    HD_CHECK_INT_EQ(hd_proto_fd_recv(sv[0], NULL, 150, &d, err, sizeof(err)), HD_ERR_TIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    HD_CHECK_MSG(ms >= 140 && ms < 1000, "%.0f ms", ms);
    /* garbage header: oversized length */
    uint8_t junk[6] = {0xff, 0xff, 0xff, 0xff, 1, 0};
    HD_CHECK_INT_EQ(write(sv[1], junk, 6), 6);
    HD_CHECK_INT_EQ(hd_proto_fd_recv(sv[0], NULL, 500, &d, err, sizeof(err)), HD_ERR_PROTO);
    /* a frame cut short by the peer closing */
    hd_proto_msg_t m = sample(HD_PROTO_REGISTER);
    uint8_t *frame;
    size_t len;
    HD_CHECK_INT_EQ(hd_proto_encode(&m, &frame, &len), HD_OK);
    HD_CHECK_INT_EQ(write(sv[1], frame, len - 4), (ssize_t)(len - 4));
    close(sv[1]);
    HD_CHECK_INT_EQ(hd_proto_fd_recv(sv[0], NULL, 500, &d, err, sizeof(err)), HD_ERR_REMOTE);
    HD_CHECK_INT_EQ(hd_proto_fd_recv(sv[0], NULL, 500, &d, err, sizeof(err)), HD_ERR_REMOTE);
    HD_CHECK_INT_EQ(hd_proto_fd_send(sv[0], &m, 500), HD_ERR_REMOTE);
    hd_free(frame);
    close(sv[0]);
}

HD_TEST(allocation_failures_are_errors)
{
    /* every allocation of encode and decode failing in turn: an error, never a crash or leak */
    hd_proto_msg_t m = sample(HD_PROTO_PLACEMENT);
    uint8_t *frame = NULL;
    size_t len = 0;
    HD_CHECK_INT_EQ(hd_proto_encode(&m, &frame, &len), HD_OK);
    int ok_dec = 0, nomem_dec = 0, ok_enc = 0, nomem_enc = 0;
    for (long k = 0; k < 40; k++) {
        hd_proto_msg_t *d = NULL;
        hd_alloc_fail_after(k);
        hd_status_t st = hd_proto_decode(frame, len, NULL, &d, NULL, 0);
        hd_alloc_fail_after(-1);
        ok_dec += st == HD_OK;
        nomem_dec += st == HD_ERR_NO_MEMORY;
        HD_CHECK_TRUE(st == HD_OK || st == HD_ERR_NO_MEMORY);
        hd_proto_msg_destroy(d);
        uint8_t *f2 = NULL;
        size_t l2 = 0;
        hd_alloc_fail_after(k);
        st = hd_proto_encode(&m, &f2, &l2);
        hd_alloc_fail_after(-1);
        ok_enc += st == HD_OK;
        nomem_enc += st == HD_ERR_NO_MEMORY;
        HD_CHECK_TRUE(st == HD_OK || st == HD_ERR_NO_MEMORY);
        hd_free(f2);
    }
    HD_CHECK_TRUE(nomem_dec > 0 && ok_dec > 0);
    HD_CHECK_TRUE(nomem_enc > 0 && ok_enc > 0);
    hd_free(frame);
}
