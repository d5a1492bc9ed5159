/*
 * fuzz_config.c - libFuzzer target for the model config parser (Hub and transformers
 * config.json forms). Any input must be accepted as a valid config or refused with a
 * "<origin>: ..." message; an accepted config must pass validation and survive a Hub-form
 * round trip unchanged.
 */
#include "fuzz_common.h"
#include "hadal/config.h"
#include "hadal/log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    hd_model_config_t c, back;
    char err[512];
    char *text = NULL;
    size_t len = 0;
    FILE *f;
    if (!init) {
        hd_log_set(fuzz_quiet, NULL);
        init = 1;
    }
    if (hd_config_parse((const char *)data, size, "fuzz.json", &c, err, sizeof(err)) != HD_OK) {
        if (strncmp(err, "fuzz.json: ", 11) != 0) {
            abort();
        }
        return 0;
    }
    if (hd_config_validate(&c, err, sizeof(err)) != HD_OK) {
        abort();
    }
    f = open_memstream(&text, &len);
    if (f == NULL) {
        return 0;
    }
    if (hd_config_write_hub(&c, f) != HD_OK) {
        abort();
    }
    fclose(f);
    if (hd_config_parse(text, len, "roundtrip", &back, err, sizeof(err)) != HD_OK) {
        abort();
    }
    /* the Hub form cannot say "bf16 experts with FP8 elsewhere" except as null: same value */
    memset(back.name, 0, sizeof(back.name));
    memset(c.name, 0, sizeof(c.name));
    if (memcmp(&back, &c, sizeof(c)) != 0) {
        abort();
    }
    free(text);
    return 0;
}
