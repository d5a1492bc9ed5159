/*
 * hadal/log.h - levelled, subsystem-masked logging.
 *
 * hd_error/hd_warn/hd_info/hd_debug/hd_trace(HD_SUBSYS_X, fmt, ...) check the level and the
 * subsystem mask before formatting anything. Level and mask come from HD_LOG_LEVEL
 * (error|warn|info|debug|trace) and HD_LOG_SUBSYS (comma list or "all"), read once by
 * hd_log_init(). Each line starts "host:pid:tid role rank" and a millisecond timestamp.
 * Thread-safe: one write(2) per line.
 */
#ifndef HADAL_LOG_H
#define HADAL_LOG_H

#include <stdarg.h>

typedef enum {
    HD_LOG_ERROR = 0,
    HD_LOG_WARN = 1,
    HD_LOG_INFO = 2,
    HD_LOG_DEBUG = 3,
    HD_LOG_TRACE = 4,
} hd_log_level_t;

typedef enum {
    HD_SUBSYS_CORE = 1u << 0,
    HD_SUBSYS_MODEL = 1u << 1,
    HD_SUBSYS_KERN = 1u << 2,
    HD_SUBSYS_NET = 1u << 3,
    HD_SUBSYS_KV = 1u << 4,
    HD_SUBSYS_TOK = 1u << 5,
    HD_SUBSYS_SCHED = 1u << 6,
    HD_SUBSYS_API = 1u << 7,
    HD_SUBSYS_ALL = 0xffffffffu,
} hd_log_subsys_t;

/* A sink receives each fully formatted line (no trailing newline). */
typedef void (*hd_log_sink_func_t)(hd_log_level_t level, const char *line, void *user);

extern int hd_log_level_cur;
extern unsigned hd_log_subsys_mask;

/* Read HD_LOG_LEVEL / HD_LOG_SUBSYS / HD_LOG_FILE; set role ("hadal", "worker", ...) and rank. */
void hd_log_init(const char *role, int rank);
void hd_log_set_level(hd_log_level_t level);
/* Install a sink (NULL restores stderr). */
void hd_log_set(hd_log_sink_func_t sink, void *user);
void hd_log_emit(hd_log_level_t level, unsigned subsys, const char *file, int line, const char *fmt,
                 ...) __attribute__((format(printf, 5, 6)));

#define hd_log_(lvl, sub, ...)                                                                     \
    do {                                                                                           \
        if ((int)(lvl) <= hd_log_level_cur && ((sub)&hd_log_subsys_mask)) {                        \
            hd_log_emit((lvl), (sub), __FILE__, __LINE__, __VA_ARGS__);                            \
        }                                                                                          \
    } while (0)
#define hd_error(sub, ...) hd_log_(HD_LOG_ERROR, sub, __VA_ARGS__)
#define hd_warn(sub, ...) hd_log_(HD_LOG_WARN, sub, __VA_ARGS__)
#define hd_info(sub, ...) hd_log_(HD_LOG_INFO, sub, __VA_ARGS__)
#define hd_debug(sub, ...) hd_log_(HD_LOG_DEBUG, sub, __VA_ARGS__)
#define hd_trace(sub, ...) hd_log_(HD_LOG_TRACE, sub, __VA_ARGS__)

/* Our own invariants only: aborts with file and line. Never for external input. */
#define hd_assert(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            hd_assert_fail(#cond, __FILE__, __LINE__);                                             \
        }                                                                                          \
    } while (0)
void hd_assert_fail(const char *cond, const char *file, int line) __attribute__((noreturn));

#endif /* HADAL_LOG_H */
