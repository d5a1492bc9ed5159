/*
 * tok_regex.c - run the Oniguruma patterns of HF `Split` pre-tokenizers on PCRE2.
 *
 * HF tokenizers compiles tokenizer.json regexes with Oniguruma (Ruby syntax, Unicode 16.0
 * tables in tokenizers 0.23.3). PCRE2 understands the same syntax for everything DeepSeek
 * uses; what differs is data: PCRE2 10.42 knows Unicode 14.0, and its \s also matches U+180E.
 * So each \p{L|M|N|P|S} gets the Unicode 15.0-16.0 additions from tok_unicode.c spliced in,
 * \s/\S become the explicit White_Space set, \h/\H (hex digit in Oniguruma) become
 * [0-9a-fA-F], \uHHHH becomes \x{HHHH}, and ^/$ become line anchors as in Ruby syntax.
 * Known gaps (documented in docs/TOKENIZER.md): negated properties and \S inside a bracket
 * class, sub-category properties (\p{Lu}, \d, \w) keep PCRE2's Unicode version.
 */
#include "tok_impl.h"
#include "hadal/alloc.h"
#include "hadal/log.h"

#include <stdio.h>
#include <string.h>

static const tok_uniset_t *regex_delta_for(const char *name, size_t n)
{
    static const struct {
        const char *name;
        char cat;
    } longnames[] = {
        {"L", 'L'},     {"Letter", 'L'},      {"M", 'M'},      {"Mark", 'M'},
        {"N", 'N'},     {"Number", 'N'},      {"P", 'P'},      {"Punctuation", 'P'},
        {"S", 'S'},     {"Symbol", 'S'},
    };
    for (size_t i = 0; i < sizeof(longnames) / sizeof(longnames[0]); i++) {
        if (strlen(longnames[i].name) == n && memcmp(longnames[i].name, name, n) == 0) {
            for (const tok_uniset_t *u = tok_unicode_delta; u->name; u++) {
                if (u->name == longnames[i].cat) {
                    return u;
                }
            }
        }
    }
    return NULL;
}

static void regex_put_ranges(hd_buf_t *out, const tok_uniset_t *u)
{
    for (size_t i = 0; i < u->n; i++) {
        if (u->ranges[i][0] == u->ranges[i][1]) {
            hd_buf_printf(out, "\\x{%X}", u->ranges[i][0]);
        } else {
            hd_buf_printf(out, "\\x{%X}-\\x{%X}", u->ranges[i][0], u->ranges[i][1]);
        }
    }
}

static int regex_hex(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

hd_status_t tok_regex_translate(const char *pat, size_t len, hd_buf_t *out)
{
    bool in_class = false;
    size_t i = 0;
    while (i < len) {
        char c = pat[i];
        if (c == '\\' && i + 1 < len) {
            char d = pat[i + 1];
            if (d == 'p' || d == 'P') {
                const char *name;
                size_t nlen, used;
                bool neg = d == 'P';
                if (i + 2 < len && pat[i + 2] == '{') {
                    const char *close = memchr(pat + i + 3, '}', len - i - 3);
                    if (close == NULL) {
                        return HD_ERR_FORMAT;
                    }
                    name = pat + i + 3;
                    nlen = (size_t)(close - name);
                    used = (size_t)(close - (pat + i)) + 1;
                } else if (i + 2 < len) {
                    name = pat + i + 2;
                    nlen = 1;
                    used = 3;
                } else {
                    return HD_ERR_FORMAT;
                }
                if (nlen > 0 && name[0] == '^') {
                    neg = !neg;
                    name++;
                    nlen--;
                }
                const tok_uniset_t *u = regex_delta_for(name, nlen);
                if (u != NULL && !(neg && in_class)) {
                    hd_buf_puts(out, in_class ? "" : (neg ? "[^" : "["));
                    hd_buf_printf(out, "\\p{%c}", u->name);
                    regex_put_ranges(out, u);
                    hd_buf_puts(out, in_class ? "" : "]");
                } else {
                    hd_buf_append(out, pat + i, used);
                }
                i += used;
                continue;
            }
            if (d == 's' || (d == 'S' && !in_class)) {
                hd_buf_puts(out, in_class ? "" : (d == 'S' ? "[^" : "["));
                regex_put_ranges(out, &tok_unicode_white_space);
                hd_buf_puts(out, in_class ? "" : "]");
                i += 2;
                continue;
            }
            if (d == 'h' || (d == 'H' && !in_class)) {
                hd_buf_puts(out, in_class ? "0-9a-fA-F" : (d == 'H' ? "[^0-9a-fA-F]" : "[0-9a-fA-F]"));
                i += 2;
                continue;
            }
            if (d == 'u' && i + 5 < len && regex_hex(pat[i + 2]) >= 0 && regex_hex(pat[i + 3]) >= 0 &&
                regex_hex(pat[i + 4]) >= 0 && regex_hex(pat[i + 5]) >= 0) {
                hd_buf_puts(out, "\\x{");
                hd_buf_append(out, pat + i + 2, 4);
                hd_buf_puts(out, "}");
                i += 6;
                continue;
            }
            hd_buf_append(out, pat + i, 2);
            i += 2;
            continue;
        }
        if (c == '[') {
            if (in_class) {
                if (i + 1 < len && pat[i + 1] == ':') {
                    const char *close = NULL;
                    for (size_t j = i + 2; j + 1 < len; j++) {
                        if (pat[j] == ':' && pat[j + 1] == ']') {
                            close = pat + j;
                            break;
                        }
                    }
                    if (close == NULL) {
                        return HD_ERR_FORMAT;
                    }
                    size_t used = (size_t)(close - (pat + i)) + 2;
                    hd_buf_append(out, pat + i, used);
                    i += used;
                    continue;
                }
                /* Oniguruma nested classes / && intersections have no PCRE2 spelling */
                return HD_ERR_UNSUPPORTED;
            }
            in_class = true;
            hd_buf_append(out, "[", 1);
            i++;
            if (i < len && pat[i] == '^') {
                hd_buf_append(out, "^", 1);
                i++;
            }
            if (i < len && pat[i] == ']') {
                hd_buf_puts(out, "\\]");
                i++;
            }
            continue;
        }
        if (in_class && c == '&' && i + 1 < len && pat[i + 1] == '&') {
            return HD_ERR_UNSUPPORTED;
        }
        if (c == ']' && in_class) {
            in_class = false;
        } else if (!in_class && c == '^') {
            hd_buf_puts(out, "(?m:^)");
            i++;
            continue;
        } else if (!in_class && c == '$') {
            hd_buf_puts(out, "(?m:$)");
            i++;
            continue;
        }
        hd_buf_append(out, &c, 1);
        i++;
    }
    if (in_class) {
        return HD_ERR_FORMAT;
    }
    return out->failed ? HD_ERR_NO_MEMORY : HD_OK;
}

hd_status_t tok_split_compile(tok_split_t *sp, const char *pat, size_t len, bool literal,
                              const char *file)
{
    hd_buf_t src;
    hd_status_t status = HD_OK;
    int errcode = 0;
    PCRE2_SIZE erroff = 0;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP;

    hd_buf_init(&src);
    if (literal) {
        hd_buf_append(&src, pat, len);
        opts |= PCRE2_LITERAL;
        opts &= ~(uint32_t)PCRE2_UCP;
    } else {
        status = tok_regex_translate(pat, len, &src);
        if (status != HD_OK) {
            hd_error(HD_SUBSYS_TOK, "tokenizer %s: split pattern \"%.*s\" %s", file, (int)len,
                     pat,
                     status == HD_ERR_UNSUPPORTED ? "uses nested classes (unsupported)"
                                                  : "is malformed");
            goto out;
        }
    }
    if (src.failed) {
        status = HD_ERR_NO_MEMORY;
        goto out;
    }
    sp->code = pcre2_compile((PCRE2_SPTR)src.data, src.len, opts, &errcode, &erroff, NULL);
    if (sp->code == NULL) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        hd_error(HD_SUBSYS_TOK, "tokenizer %s: split pattern \"%.*s\" does not compile: %s at %zu",
                 file, (int)len, pat, (const char *)msg, (size_t)erroff);
        status = HD_ERR_FORMAT;
        goto out;
    }
    sp->jit = pcre2_jit_compile(sp->code, PCRE2_JIT_COMPLETE) == 0;
    if (!sp->jit) {
        hd_debug(HD_SUBSYS_TOK, "tokenizer %s: PCRE2 JIT unavailable, interpreting", file);
    }
out:
    hd_buf_cleanup(&src);
    return status;
}

void tok_split_cleanup(tok_split_t *sp)
{
    if (sp->code != NULL) {
        pcre2_code_free(sp->code);
        sp->code = NULL;
    }
}
