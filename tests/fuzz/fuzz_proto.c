/*
 * fuzz_proto.c - libFuzzer target for control-plane decoding: the input is taken both as a
 * whole frame (header as given) and, with a consistent header built from its first byte, as
 * the payload of every message type, decoded with and without limits. Anything decoded must
 * re-encode and decode again to the same bytes; nothing may crash, leak or read out of bounds.
 */
#include "hadal/alloc.h"
#include "hadal/log.h"
#include "hadal/proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void fuzz_decode(const uint8_t *frame, size_t len, const hd_proto_limits_t *lim)
{
    hd_proto_msg_t *msg = NULL;
    char err[128];
    hd_status_t st = hd_proto_decode(frame, len, lim, &msg, err, sizeof(err));
    if (st != HD_OK) {
        if (st != HD_ERR_PROTO && st != HD_ERR_UNSUPPORTED && st != HD_ERR_NO_MEMORY) {
            abort();
        }
        return;
    }
    uint8_t *again = NULL;
    size_t alen = 0;
    if (hd_proto_encode(msg, &again, &alen) != HD_OK) {
        abort(); /* whatever decodes must encode */
    }
    hd_proto_msg_t *msg2 = NULL;
    if (hd_proto_decode(again, alen, lim, &msg2, err, sizeof(err)) != HD_OK) {
        abort();
    }
    uint8_t *third = NULL;
    size_t tlen = 0;
    if (hd_proto_encode(msg2, &third, &tlen) != HD_OK || tlen != alen ||
        memcmp(third, again, alen) != 0) {
        abort(); /* encode(decode(x)) is a fixed point */
    }
    hd_free(third);
    hd_free(again);
    hd_proto_msg_destroy(msg2);
    hd_proto_msg_destroy(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        hd_log_set_level(HD_LOG_ERROR); /* rejections are logged at warn */
        init = 1;
    }
    static const hd_proto_limits_t lim = {.max_frame = 1u << 20, .n_ranks = 8, .vocab = 129280};
    fuzz_decode(data, size, NULL);
    fuzz_decode(data, size, &lim);
    if (size >= 1 && size < (1u << 20)) {
        uint8_t *frame = malloc(size - 1 + HD_PROTO_FRAME_HEADER);
        uint32_t pl = (uint32_t)(size - 1);
        int type = 1 + data[0] % HD_PROTO_TYPE_MAX;
        frame[0] = (uint8_t)pl;
        frame[1] = (uint8_t)(pl >> 8);
        frame[2] = (uint8_t)(pl >> 16);
        frame[3] = (uint8_t)(pl >> 24);
        frame[4] = (uint8_t)type;
        frame[5] = 0;
        memcpy(frame + HD_PROTO_FRAME_HEADER, data + 1, size - 1);
        fuzz_decode(frame, size - 1 + HD_PROTO_FRAME_HEADER, NULL);
        fuzz_decode(frame, size - 1 + HD_PROTO_FRAME_HEADER, &lim);
        free(frame);
    }
    return 0;
}
