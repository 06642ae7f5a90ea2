/*
 * push.h: push notifications for users with no open connection
 * (PROTOCOL.md §7, docs/OPERATIONS.md "Push notifications").
 *
 * A bounded queue drained by one thread of its own, which POSTs one JSON
 * document per notification to --push-webhook (plain http://) with retries
 * and exponential backoff. Nothing here runs on a worker loop except
 * push_enqueue, which only copies and signals.
 */
#ifndef SORI_PUSH_PUSH_H
#define SORI_PUSH_PUSH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *url;   /* http://host[:port]/path */
    int preview;       /* 1: include a text preview */
    int queue_max;     /* notifications waiting (queued + retrying); beyond: dropped */
    int rate_per_min;  /* per user; beyond: dropped */
    int attempts;      /* tries per notification */
    int delay_ms;      /* wait before the first try */
    /* Asked (from the push thread) before every try: 1 if user has still
     * not read room up to seq. 0 cancels the notification (not counted as
     * failed or dropped: counted as "skipped"). Must be thread-safe. */
    int (*still_unread)(const char *user, const char *room, int64_t seq);
} push_config_t;

/* Starts the push thread. 0, or SORI_EINVAL with a sentence in err (a URL
 * that is not http://host[:port]/path). With url empty or NULL, does
 * nothing and push_enqueue drops silently (push off). */
int push_start(const push_config_t *cfg, char *err, size_t errlen);
/* The URL check of push_start alone, without starting anything: 0 (also
 * for an empty or NULL url), or SORI_EINVAL with a sentence in err. For
 * rejecting the flag along with the other flag errors, before any startup
 * work. */
int push_url_check(const char *url, char *err, size_t errlen);
/* Stops the thread; what is still queued is dropped (counted). */
void push_stop(void);
/* 1 when a webhook is configured. */
int push_enabled(void);

/* Queues one notification. kind is "dm" or "mention". Copies everything;
 * thread-safe; never blocks on I/O; never calls back. */
void push_enqueue(const char *kind, const char *user, const char *room, const char *from,
                  uint64_t msg_id, int64_t seq, int64_t ts, const char *text, size_t text_len);

/* SIGHUP reload (main thread): new values for those four fields of the
 * config push_start was given (atomic; the next notification uses them).
 * The queue size and the webhook need a restart. Never calls back. */
void push_set_limits(int preview, int rate_per_min, int attempts, int delay_ms);

typedef struct {
    uint64_t sent;     /* a 2xx answer */
    uint64_t failed;   /* gave up after the last attempt, or a 4xx answer */
    uint64_t dropped;  /* queue full, over the user's rate, or left at shutdown */
    uint64_t skipped;  /* the user read the room before it was sent */
    uint64_t retries;  /* attempts after the first */
    uint64_t queued;   /* waiting now */
} push_stats_t;

void push_stats(push_stats_t *out);
/* Registers the counters above with util/metrics (once, at startup). */
void push_metrics_register(void);

#endif
