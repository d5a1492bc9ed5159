/*
 * fuzz_http.c - libFuzzer target for the HTTP API's request parsing (hadal/http.h,
 * coordinator/api_parse.c): the first byte picks the API (OpenAI chat, OpenAI completions,
 * Anthropic messages), the rest is the request body. Whatever the bytes, parsing, chat
 * encoding and tokenization must finish without a crash, a leak or a sanitizer report, and the
 * answer must be one the server gives to clients: 200 (accepted), 400 or 404.
 */
#include "fuzz_common.h"
#include "hadal/http.h"
#include "hadal/log.h"
#include "hadal/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char msg[256];
    if (size < 1) {
        return 0;
    }
    hd_http_api_t api = (hd_http_api_t)(data[0] % 3);
    int st = hd_http_check_request(api, (const char *)data + 1, size - 1, fuzz_tok(), "m", 4096,
                                   msg, sizeof(msg));
    if (st != 200 && st != 400 && st != 404) {
        fprintf(stderr, "fuzz_http: status %d (%s)\n", st, msg);
        abort();
    }
    return 0;
}
