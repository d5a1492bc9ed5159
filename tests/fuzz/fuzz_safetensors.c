/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors header parser: any byte string
 * is treated as a whole file image. The parser must fail cleanly or return tensors whose
 * byte ranges lie inside the buffer.
 */
#include "fuzz_common.h"
#include "../../model/st_impl.h"
#include "hadal/log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    hd_st_file_t f;
    char err[256];
    if (!init) {
        hd_log_set(fuzz_quiet, NULL);
        init = 1;
    }
    if (hd_st_parse_header(data, size, "fuzz.safetensors", &f, err, sizeof(err)) != HD_OK) {
        if (strncmp(err, "fuzz.safetensors: ", 18) != 0) {
            abort(); /* every message names the file */
        }
        return 0;
    }
    for (size_t i = 0; i < f.n; i++) {
        const uint8_t *p = f.tensors[i].data;
        if (p < data || p + f.tensors[i].nbytes > data + size) {
            abort();
        }
        if (f.tensors[i].nbytes > 0) {
            volatile uint8_t sink = p[0] ^ p[f.tensors[i].nbytes - 1];
            (void)sink;
        }
    }
    hd_st_file_cleanup(&f);
    return 0;
}
