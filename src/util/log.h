/*
 * log.h: levelled logging to stderr or to a file (--log-file).
 *
 * LOG_INFO("net", "listening on %s", addr) checks the level before it evaluates
 * its arguments, so a disabled debug line costs one comparison (a relaxed
 * atomic load: SIGHUP may change the level while threads log). Lines are
 * written with one write(2) each so concurrent threads do not interleave.
 */
#ifndef SORI_UTIL_LOG_H
#define SORI_UTIL_LOG_H

#include <stddef.h>

enum log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

extern int log_level_current; /* read and written with __atomic builtins only */

/* Parses "error", "warn", "info" or "debug"; returns the level or -1. */
int log_level_parse(const char *name);
/* Sets the level; any thread may be logging meanwhile. */
void log_level_set(int level);

/*
 * Sends log lines to path (appended, created 0640) instead of stderr; a
 * later call with the same or another path reopens: the new file is opened,
 * then dup2(2)'d onto the log descriptor, which every thread keeps writing
 * to with no lock: a line goes wholly to the old file or wholly to the new
 * one. Call on the main thread (it opens a file: not on a worker loop).
 * 0, or SORI_EIO with a sentence in err (logging goes on where it was).
 * stderr itself is left alone (sanitizer and crash reports stay there).
 */
int log_open(const char *path, char *err, size_t errlen);
/* SIGUSR1: log_open on the path given last; 0 without one (stderr). */
int log_reopen(char *err, size_t errlen);

void log_write(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG_AT(lvl, mod, ...)                                                  \
    do {                                                                       \
        if ((lvl) <= __atomic_load_n(&log_level_current, __ATOMIC_RELAXED))   \
            log_write((lvl), (mod), __VA_ARGS__);                              \
    } while (0)
#define LOG_ERROR(mod, ...) LOG_AT(LOG_LEVEL_ERROR, mod, __VA_ARGS__)
#define LOG_WARN(mod, ...) LOG_AT(LOG_LEVEL_WARN, mod, __VA_ARGS__)
#define LOG_INFO(mod, ...) LOG_AT(LOG_LEVEL_INFO, mod, __VA_ARGS__)
#define LOG_DEBUG(mod, ...) LOG_AT(LOG_LEVEL_DEBUG, mod, __VA_ARGS__)

#endif
