/*
 * hadal/dtype.h - element types of tensors on disk and in memory.
 */
#ifndef HADAL_DTYPE_H
#define HADAL_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    HD_DT_F32 = 0,
    HD_DT_F16,
    HD_DT_BF16,
    HD_DT_F8_E4M3,  /* float8_e4m3fn */
    HD_DT_F8_E8M0,  /* float8_e8m0fnu: power-of-two scales */
    HD_DT_I8,       /* also packed FP4 e2m1 pairs (low nibble first) */
    HD_DT_U8,
    HD_DT_I16,
    HD_DT_I32,
    HD_DT_I64,
    HD_DT_F64,
    HD_DT_BOOL,
    HD_DT_COUNT
} hd_dtype_t;

/* Bytes per element. */
size_t hd_dtype_size(hd_dtype_t dt);
/* Safetensors name ("F32", "BF16", "F8_E4M3", "F8_E8M0", "I8", ...). */
const char *hd_dtype_name(hd_dtype_t dt);
/* Parse a safetensors dtype name; returns -1 if unknown. */
int hd_dtype_from_name(const char *name);

#endif /* HADAL_DTYPE_H */
