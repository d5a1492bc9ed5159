/*
 * status.c - names for hd_status_t values.
 */
#include "hadal/status.h"

const char *hd_status_string(hd_status_t status)
{
    switch (status) {
    case HD_OK: return "success";
    case HD_INPROGRESS: return "in progress";
    case HD_ERR_NO_MEMORY: return "out of memory";
    case HD_ERR_INVALID_PARAM: return "invalid parameter";
    case HD_ERR_IO: return "input/output error";
    case HD_ERR_TIMEOUT: return "timed out";
    case HD_ERR_REMOTE: return "remote peer failed";
    case HD_ERR_PROTO: return "protocol error";
    case HD_ERR_CUDA: return "cuda error";
    case HD_ERR_UNSUPPORTED: return "unsupported";
    case HD_ERR_NOT_FOUND: return "not found";
    case HD_ERR_FORMAT: return "malformed data";
    }
    return "unknown status";
}
