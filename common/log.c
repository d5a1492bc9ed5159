/*
 * log.c - the logging back end: level/subsystem filters read once from the environment,
 * one formatted line per call, written with a single write(2) so lines from many threads
 * and processes do not interleave.
 */
#define _GNU_SOURCE
#include "hadal/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int hd_log_level_cur = HD_LOG_WARN;
unsigned hd_log_subsys_mask = HD_SUBSYS_ALL;

static char log_role[16] = "hadal";
static int log_rank = -1;
static char log_host[64] = "";
static int log_fd = 2;
static hd_log_sink_func_t log_sink;
static void *log_sink_user;

static const char *const log_level_names[] = {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"};

static const struct {
    const char *name;
    unsigned bit;
} log_subsys_names[] = {
    {"core", HD_SUBSYS_CORE}, {"model", HD_SUBSYS_MODEL}, {"kern", HD_SUBSYS_KERN},
    {"net", HD_SUBSYS_NET},   {"kv", HD_SUBSYS_KV},       {"tok", HD_SUBSYS_TOK},
    {"sched", HD_SUBSYS_SCHED}, {"api", HD_SUBSYS_API},   {"all", HD_SUBSYS_ALL},
};

static unsigned log_parse_subsys(const char *s)
{
    unsigned mask = 0;
    char buf[256];
    char *save = NULL;
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        for (size_t i = 0; i < sizeof(log_subsys_names) / sizeof(log_subsys_names[0]); i++) {
            if (strcasecmp(tok, log_subsys_names[i].name) == 0) {
                mask |= log_subsys_names[i].bit;
            }
        }
    }
    return mask ? mask : HD_SUBSYS_ALL;
}

void hd_log_set_level(hd_log_level_t level)
{
    hd_log_level_cur = (int)level;
}

void hd_log_init(const char *role, int rank)
{
    const char *s;
    if (role != NULL) {
        snprintf(log_role, sizeof(log_role), "%s", role);
    }
    log_rank = rank;
    gethostname(log_host, sizeof(log_host) - 1);
    s = getenv("HD_LOG_LEVEL");
    if (s != NULL) {
        for (int i = 0; i < 5; i++) {
            if (strcasecmp(s, log_level_names[i]) == 0) {
                hd_log_level_cur = i;
            }
        }
    }
    s = getenv("HD_LOG_SUBSYS");
    if (s != NULL) {
        hd_log_subsys_mask = log_parse_subsys(s);
    }
    s = getenv("HD_LOG_FILE");
    if (s != NULL && *s != '\0') {
        char path[512];
        size_t o = 0;
        for (const char *p = s; *p && o + 32 < sizeof(path); p++) {
            if (p[0] == '%' && p[1] == 'h') {
                o += (size_t)snprintf(path + o, sizeof(path) - o, "%s", log_host);
                p++;
            } else if (p[0] == '%' && p[1] == 'p') {
                o += (size_t)snprintf(path + o, sizeof(path) - o, "%d", (int)getpid());
                p++;
            } else {
                path[o++] = *p;
            }
        }
        path[o] = '\0';
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            log_fd = fd;
        }
    }
}

void hd_log_set(hd_log_sink_func_t sink, void *user)
{
    log_sink = sink;
    log_sink_user = user;
}

void hd_log_emit(hd_log_level_t level, unsigned subsys, const char *file, int line, const char *fmt,
                 ...)
{
    char buf[2048];
    struct timeval tv;
    struct tm tm;
    int saved_errno = errno;
    size_t n;
    va_list ap;
    (void)subsys;

    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    if (log_host[0] == '\0') {
        gethostname(log_host, sizeof(log_host) - 1);
    }
    n = (size_t)snprintf(buf, sizeof(buf), "%s:%d:%ld %s %d %02d:%02d:%02d.%03ld %s ", log_host,
                         (int)getpid(), (long)syscall(SYS_gettid), log_role, log_rank, tm.tm_hour,
                         tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000),
                         log_level_names[level < 0 ? 0 : level > 4 ? 4 : level]);
    if (level >= HD_LOG_DEBUG && n < sizeof(buf)) {
        const char *base = strrchr(file, '/');
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s:%d ", base ? base + 1 : file, line);
    }
    if (n < sizeof(buf)) {
        errno = saved_errno;
        va_start(ap, fmt);
        n += (size_t)vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
        va_end(ap);
    }
    if (n >= sizeof(buf) - 1) {
        n = sizeof(buf) - 2;
    }
    if (log_sink != NULL) {
        buf[n] = '\0';
        log_sink(level, buf, log_sink_user);
        return;
    }
    buf[n++] = '\n';
    ssize_t w = write(log_fd, buf, n);
    (void)w;
    errno = saved_errno;
}

void hd_assert_fail(const char *cond, const char *file, int line)
{
    hd_log_emit(HD_LOG_ERROR, HD_SUBSYS_ALL, file, line, "assertion failed: %s (%s:%d)", cond,
                file, line);
    abort();
}
