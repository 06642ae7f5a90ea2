/*
 * log.h: levelled logging to stderr.
 *
 * LOG_INFO("net", "listening on %s", addr) checks the level before it evaluates
 * its arguments, so a disabled debug line costs one comparison. Lines are
 * written with one write(2) each so concurrent threads do not interleave.
 */
#ifndef SORI_UTIL_LOG_H
#define SORI_UTIL_LOG_H

enum log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

extern int log_level_current;

/* Parses "error", "warn", "info" or "debug"; returns the level or -1. */
int log_level_parse(const char *name);

void log_write(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG_AT(lvl, mod, ...)                                                  \
    do {                                                                       \
        if ((lvl) <= log_level_current) log_write((lvl), (mod), __VA_ARGS__);  \
    } while (0)
#define LOG_ERROR(mod, ...) LOG_AT(LOG_LEVEL_ERROR, mod, __VA_ARGS__)
#define LOG_WARN(mod, ...) LOG_AT(LOG_LEVEL_WARN, mod, __VA_ARGS__)
#define LOG_INFO(mod, ...) LOG_AT(LOG_LEVEL_INFO, mod, __VA_ARGS__)
#define LOG_DEBUG(mod, ...) LOG_AT(LOG_LEVEL_DEBUG, mod, __VA_ARGS__)

#endif
