/*
 * st_impl.h - model-private parts of the safetensors reader: one parsed file, and the
 * parse-from-memory entry that the reader, the tests and the fuzzer share.
 */
#ifndef HADAL_MODEL_ST_IMPL_H
#define HADAL_MODEL_ST_IMPL_H

#include "hadal/safetensors.h"
#include "hadal/status.h"

#include <stddef.h>
#include <stdint.h>

/* Upper bound on the JSON header, as the safetensors format itself sets (100 MiB). */
#define HD_ST_MAX_HEADER (100u << 20)

typedef struct {
    char *path;              /* owned copy of the file's path (names it in messages) */
    void *map;               /* mmap base, NULL when parsed from a caller's buffer */
    size_t map_len;          /* bytes mapped */
    hd_st_tensor_t *tensors; /* n entries, header order; names owned, data into the buffer */
    size_t n;                /* number of tensors */
    size_t data_len;         /* bytes of the data section */
} hd_st_file_t;

/*
 * Parse and fully validate a whole safetensors file image @buf (@len bytes) named @file.
 * Fills @f (tensor data points into @buf, which must outlive @f). On failure @f is left
 * empty and @err says "<file>: ..." naming the tensor when one is at fault.
 * Errors: HD_ERR_FORMAT (malformed), HD_ERR_NO_MEMORY.
 */
hd_status_t hd_st_parse_header(const uint8_t *buf, size_t len, const char *file, hd_st_file_t *f,
                               char *err, size_t err_len);
/* Free what hd_st_parse_header allocated (not the buffer; not the mapping). */
void hd_st_file_cleanup(hd_st_file_t *f);

#endif /* HADAL_MODEL_ST_IMPL_H */
