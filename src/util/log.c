/*
 * log.c: the log sink. One global level (set once at startup, read by every
 * thread), one line per write(2) on stderr, timestamps in UTC with
 * milliseconds. Lines longer than 1 KiB are truncated with "...".
 */
#include "util/log.h"
#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int log_level_current = LOG_LEVEL_INFO;

static const char log__letters[] = "EWID";

int log_level_parse(const char *name)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

void log_write(int level, const char *module, const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %c %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, log__letters[level & 3], module);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) {
        len = sizeof line - 2;
        memcpy(line + len - 3, "...", 3);
    }
    line[len++] = '\n';
    ssize_t w = write(2, line, len);
    (void)w;
}

const char *sori_strerror(int code)
{
    switch (code) {
    case SORI_OK: return "ok";
    case SORI_EAGAIN: return "try again";
    case SORI_EINVAL: return "invalid input";
    case SORI_E2BIG: return "too large";
    case SORI_ENOMEM: return "out of memory";
    case SORI_EIO: return "i/o error";
    case SORI_ENOTFOUND: return "not found";
    case SORI_EPERM: return "not permitted";
    case SORI_ECLOSED: return "closed";
    case SORI_EUTF8: return "invalid UTF-8";
    case SORI_ELIMIT: return "limit reached";
    case SORI_EEXIST: return "already exists";
    }
    return "unknown error";
}
