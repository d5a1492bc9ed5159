/*
 * dtype.c - sizes and safetensors names of element types.
 */
#include "hadal/dtype.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_info[HD_DT_COUNT] = {
    [HD_DT_F32] = {"F32", 4},       [HD_DT_F16] = {"F16", 2},     [HD_DT_BF16] = {"BF16", 2},
    [HD_DT_F8_E4M3] = {"F8_E4M3", 1}, [HD_DT_F8_E8M0] = {"F8_E8M0", 1}, [HD_DT_I8] = {"I8", 1},
    [HD_DT_U8] = {"U8", 1},         [HD_DT_I16] = {"I16", 2},     [HD_DT_I32] = {"I32", 4},
    [HD_DT_I64] = {"I64", 8},       [HD_DT_F64] = {"F64", 8},     [HD_DT_BOOL] = {"BOOL", 1},
};

size_t hd_dtype_size(hd_dtype_t dt)
{
    return (unsigned)dt < HD_DT_COUNT ? dtype_info[dt].size : 0;
}

const char *hd_dtype_name(hd_dtype_t dt)
{
    return (unsigned)dt < HD_DT_COUNT ? dtype_info[dt].name : "?";
}

int hd_dtype_from_name(const char *name)
{
    for (int i = 0; i < HD_DT_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            return i;
        }
    }
    return -1;
}
