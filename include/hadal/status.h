/*
 * hadal/status.h - the one status type of the code base.
 *
 * Every function named as an action returns hd_status_t. A peer's failure
 * (REMOTE, TIMEOUT, PROTO) is kept apart from our own (NO_MEMORY, INVALID_PARAM, IO).
 */
#ifndef HADAL_STATUS_H
#define HADAL_STATUS_H

typedef enum {
    HD_OK = 0,
    HD_INPROGRESS = 1,
    HD_ERR_NO_MEMORY = -1,
    HD_ERR_INVALID_PARAM = -2,
    HD_ERR_IO = -3,
    HD_ERR_TIMEOUT = -4,
    HD_ERR_REMOTE = -5,
    HD_ERR_PROTO = -6,
    HD_ERR_CUDA = -7,
    HD_ERR_UNSUPPORTED = -8,
    HD_ERR_NOT_FOUND = -9,
    HD_ERR_FORMAT = -10, /* malformed file or message contents */
} hd_status_t;

/* Static string naming @status; never NULL. */
const char *hd_status_string(hd_status_t status);

/* Evaluate @call; on failure store its status in @status and jump to @label. */
#define HD_CHECK_GOTO(call, status, label)                                                         \
    do {                                                                                           \
        (status) = (call);                                                                         \
        if ((status) != HD_OK) {                                                                   \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

/* Evaluate @call and return its status on failure: only where nothing needs cleaning up. */
#define HD_CHECK(call)                                                                             \
    do {                                                                                           \
        hd_status_t _hd_st = (call);                                                               \
        if (_hd_st != HD_OK) {                                                                     \
            return _hd_st;                                                                         \
        }                                                                                          \
    } while (0)

#endif /* HADAL_STATUS_H */
