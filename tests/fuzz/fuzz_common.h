/*
 * fuzz_common.h - helpers shared by the libFuzzer targets: a silent log sink, a strict UTF-8
 * validator (the property checks compare against it) and the vendored tokenizer, loaded once.
 */
#ifndef HD_FUZZ_COMMON_H
#define HD_FUZZ_COMMON_H

#include "hadal/log.h"
#include "hadal/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void fuzz_quiet(hd_log_level_t level, const char *line, void *user)
{
    (void)level;
    (void)line;
    (void)user;
}

/* Well-formed UTF-8: shortest forms only, no surrogates, nothing above U+10FFFF. */
static inline bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t k;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            k = 1, cp = b & 0x1F;
        } else if (b >= 0xE0 && b <= 0xEF) {
            k = 2, cp = b & 0x0F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            k = 3, cp = b & 0x07;
        } else {
            return false;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += k + 1;
    }
    return true;
}

/* $HD_TOKENIZER, else the vendored V4 tokenizer of this source tree; logging silenced. */
static inline hd_tok_h fuzz_tok(void)
{
    static hd_tok_h tok;
    if (tok == NULL) {
        char path[4096];
        const char *env = getenv("HD_TOKENIZER");
        hd_log_set(fuzz_quiet, NULL);
        if (env != NULL) {
            snprintf(path, sizeof(path), "%s", env);
        } else {
            /* __FILE__ is tests/fuzz/fuzz_common.h under the source tree */
            snprintf(path, sizeof(path), "%s", __FILE__);
            char *cut = strstr(path, "tests/fuzz/fuzz_common.h");
            if (cut == NULL) {
                abort();
            }
            snprintf(cut, sizeof(path) - (size_t)(cut - path), "coordinator/data/%s",
                     HD_TOK_DEFAULT_REL);
        }
        if (hd_tok_create(path, &tok) != HD_OK) {
            fprintf(stderr, "fuzz: cannot load the tokenizer %s\n", path);
            abort();
        }
    }
    return tok;
}

#endif /* HD_FUZZ_COMMON_H */
