/*
 * log.c: the log sink. One global level (set at startup and by a SIGHUP
 * reload, read by every thread with relaxed atomics), one line per write(2)
 * on the log descriptor, timestamps in UTC with milliseconds. Lines longer
 * than 1 KiB are truncated with "...".
 *
 * The log descriptor is 2 (stderr) until log_open; the first log_open makes
 * it a descriptor of its own (so stderr still gets sanitizer reports), and
 * every later log_open (SIGUSR1, after logrotate moved the file) dup2()s the
 * new file onto that same number. dup2 swaps the open file atomically, so the
 * writing threads need no lock and never see a closed descriptor; they read
 * log__fd with an atomic load because the first log_open changes it (once,
 * at startup, but TSan cannot know that). Only the main thread opens.
 */
#include "util/log.h"
#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <errno.h>
#include <fcntl.h>

int log_level_current = LOG_LEVEL_INFO;
static int log__fd = 2;
static char log__path[4096];

void log_level_set(int level) { __atomic_store_n(&log_level_current, level, __ATOMIC_RELAXED); }

int log_open(const char *path, char *err, size_t errlen)
{
    if (strlen(path) >= sizeof log__path) {
        snprintf(err, errlen, "--log-file: path too long");
        return SORI_EIO;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "--log-file: cannot open %.300s: %s", path, strerror(errno));
        return SORI_EIO;
    }
    int cur = __atomic_load_n(&log__fd, __ATOMIC_RELAXED);
    if (cur == 2) {
        __atomic_store_n(&log__fd, fd, __ATOMIC_RELEASE); /* keeps fd as the log's own number */
    } else {
        if (dup3(fd, cur, O_CLOEXEC) < 0) {
            snprintf(err, errlen, "--log-file: cannot switch to %.300s: %s", path, strerror(errno));
            close(fd);
            return SORI_EIO;
        }
        close(fd);
    }
    if (log__path != path) snprintf(log__path, sizeof log__path, "%s", path);
    return 0;
}

int log_reopen(char *err, size_t errlen)
{
    if (!log__path[0]) return 0;
    return log_open(log__path, err, errlen);
}

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
    ssize_t w = write(__atomic_load_n(&log__fd, __ATOMIC_RELAXED), line, len);
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
