/*
 * bus.h: the node-to-node bus (ARCHITECTURE.md "bus/"), Redis backend.
 *
 * A bus_t owns one thread with its own libuv loop and two Redis connections
 * (one for commands and PUBLISH, one in subscribe mode). Every function below
 * may be called from any thread except where it says otherwise; none blocks
 * on I/O (they take one mutex for a few instructions, copy what they are
 * given and wake the bus thread). Callbacks ALWAYS run on the bus thread,
 * never on the caller's, and never with a bus lock held: they may call any
 * bus_* function except bus_close, and they must not block (post to a
 * worker's inbox and return).
 *
 * Callers never see hiredis: replies come as bus_reply_t trees owned by the
 * bus and valid only during the callback.
 *
 * Wire format of a published message (so that Lua scripts can publish the
 * same frames): the origin node id in decimal ASCII, one ':', then the
 * payload bytes as given ("12:hello"). A receiver drops frames whose origin
 * is its own node id and frames without a valid prefix (counted as
 * malformed). Presence notices on BUS_PRESENCE_CHANNEL carry as payload
 * '+' or '-' followed by the user name (online / offline on the origin
 * node), or "*" alone (the origin node rewrote or dropped its whole presence
 * set: re-query what you cache). bus_presence_notice_parse decodes them.
 *
 * Redis keys (the prefix is fixed: one cluster per Redis database):
 *   sori:online:<node>   hash, field = user name online on that node, value
 *                        "1"; expires presence_ttl_ms after the last refresh
 *   sori:presence:nodes  set of node ids that may have an online hash
 *   sori:node:<node>     string, {"node":N,"ws":"...","load":X}; expires
 *                        node_ttl_ms after the last refresh
 *   sori:nodes           set of node ids that may have a node key
 * The two sets are pruned by the scripts that read them (an id whose key
 * has expired is removed; a live node adds itself back on every refresh).
 * Redis Cluster is not supported (the scripts touch keys they compute).
 */
#ifndef SORI_BUS_BUS_H
#define SORI_BUS_BUS_H

#include <stddef.h>
#include <stdint.h>

#define BUS_PRESENCE_CHANNEL "sori:presence"

typedef struct bus bus_t;

typedef struct {
    void *arg;
    /* A message another node (origin, its node id) published on a channel
     * this node subscribed to (this node's own messages are dropped).
     * channel is NUL-terminated; data (len bytes, not terminated, may
     * contain NULs) is the payload without the origin prefix. Both are
     * borrowed for the call. Also
     * receives the presence notices of other nodes on BUS_PRESENCE_CHANNEL
     * (the bus subscribes to it by itself). Bus thread; must not block.
     * Messages of a channel may arrive before on_state(1) after a
     * (re)connect, as soon as that channel's subscription is confirmed. */
    void (*on_message)(void *arg, int origin, const char *channel, const char *data, size_t len);
    /* The link changed: up = 1 once both connections are established, the
     * presence set and registration are rewritten and EVERY subscription is
     * confirmed; up = 0 when the link is lost. Exactly once per transition,
     * starting with the first up (the bus starts down, silently). Not called
     * by bus_close. Bus thread; must not block. */
    void (*on_state)(void *arg, int up);
} bus_handler_t;

/* Tunables; a zero field takes the default in brackets. The TTLs and
 * intervals exist so that tests need not wait 30 s; production keeps the
 * defaults. */
typedef struct {
    size_t queue_max_msgs;    /* [65536] requests accepted and not yet answered */
    size_t queue_max_bytes;   /* [64 MiB] their bytes (payloads, arguments) */
    int backoff_min_ms;       /* [100] first reconnect delay, doubling ... */
    int backoff_max_ms;       /* [5000] ... up to this */
    int connect_timeout_ms;   /* [5000] connect + handshake, else retry */
    int reply_timeout_ms;     /* [10000] a reply overdue this long drops the link */
    int presence_ttl_ms;      /* [30000] sori:online:<node> expiry */
    int presence_refresh_ms;  /* [min(10000, ttl / 3)] its refresh interval (< ttl) */
    int node_ttl_ms;          /* [15000] sori:node:<node> expiry */
    int node_refresh_ms;      /* [min(5000, ttl / 3)] its refresh interval (< ttl) */
    int keep_keys_on_close;   /* [0] tests: bus_close leaves the presence hash
                               * and the node key to expire, as a crash would */
} bus_opts_t;

/* A reply to bus_command: a tree owned by the bus, valid during the
 * callback only. */
enum bus_reply_type {
    BUS_REPLY_NIL = 0,
    BUS_REPLY_STRING,  /* bulk string: str, len */
    BUS_REPLY_STATUS,  /* +OK and the like: str, len */
    BUS_REPLY_ERROR,   /* -ERR ...: str, len */
    BUS_REPLY_INTEGER, /* integer */
    BUS_REPLY_ARRAY,   /* element[0..elements) */
};

typedef struct bus_reply {
    enum bus_reply_type type;
    long long integer;
    const char *str; /* NUL-terminated (len excludes it); NULL unless a string type */
    size_t len;
    const struct bus_reply *element;
    size_t elements;
} bus_reply_t;

/* A live node, as bus_discover reports it (borrowed for the callback). */
typedef struct {
    int node;
    const char *ws;
    double load;
} bus_node_t;

typedef struct {
    uint64_t published;     /* PUBLISHes acknowledged by Redis */
    uint64_t publish_failed;/* done(arg, < 0): link lost first, or an error reply */
    uint64_t queue_full;    /* requests refused with SORI_ELIMIT */
    uint64_t received;      /* messages delivered to on_message */
    uint64_t own_dropped;   /* this node's own messages dropped */
    uint64_t malformed;     /* messages without a valid origin prefix */
    uint64_t ups, downs;    /* on_state(1) and on_state(0) calls */
    uint64_t connect_failed;/* connect attempts that failed before the link was up */
} bus_stats_t;

/* url: redis://[[user]:password@]host[:port][/db] (port 6379 and db 0 by
 * default; user and password may be %XX-encoded; an IPv6 host in []).
 * node_id >= 0, unique in the cluster. h is copied; h->arg must outlive the
 * bus. opts may be NULL. Starts the bus thread, which connects and
 * reconnects by itself (backoff opts->backoff_min_ms doubling to
 * backoff_max_ms); a Redis that is down at start is not an error: the bus
 * stays down until it can connect. NULL with a sentence in err only for a
 * malformed url, bad arguments, no memory or a thread that cannot start. A
 * host name is resolved on the bus thread (blocking that thread only). */
bus_t *bus_open(const char *url, int node_id, const bus_handler_t *h, char *err, size_t errlen);
bus_t *bus_open_opts(const char *url, int node_id, const bus_handler_t *h, const bus_opts_t *opts,
                     char *err, size_t errlen);

/* Stops the bus: requests queued before it are sent; when the link is up it
 * waits (at most 1 s) for their answers, deletes this node's presence hash
 * and node key (unless keep_keys_on_close) and publishes the "*" notice.
 * Requests still unanswered then get their callback with SORI_ECLOSED.
 * Then stops the thread and frees everything: no callback runs after it
 * returns. Not from a bus callback; no other bus_* call may run
 * concurrently with it or follow it. NULL is a no-op. */
void bus_close(bus_t *b);

/* 1 while the link is up (the last on_state said 1), else 0. Any thread. */
int bus_up(const bus_t *b);

/* Reference-counted subscriptions (the bus holds one reference of its own
 * on BUS_PRESENCE_CHANNEL): the first bus_subscribe of a channel
 * SUBSCRIBEs, the last bus_unsubscribe UNSUBSCRIBEs; they are remembered
 * across reconnects and restored before on_state(1). Returns at once (the
 * SUBSCRIBE is sent by the bus thread): 0, SORI_EINVAL (empty or longer
 * than 1024 bytes), SORI_ENOMEM, SORI_ECLOSED (closing) or, for unsubscribe
 * of a channel with no subscription, SORI_ENOTFOUND. Works while down. */
int bus_subscribe(bus_t *b, const char *channel);
int bus_unsubscribe(bus_t *b, const char *channel);

/* Publishes a copy of data[0..len) (any bytes) on channel. Returns at once:
 * 0 (queued), SORI_ECLOSED while the bus is down, SORI_ELIMIT when the
 * outgoing queue is full (the caller answers "unavailable"), SORI_EINVAL,
 * SORI_ENOMEM. After 0, done(arg, status) (optional) runs exactly once on
 * the bus thread: status 0 when Redis acknowledged the PUBLISH, SORI_ECLOSED
 * when the link failed first, SORI_EIO on an error reply. Publishes from one
 * thread reach Redis in the order of the calls. */
int bus_publish(bus_t *b, const char *channel, const void *data, size_t len,
                void (*done)(void *arg, int status), void *arg);

/* Sends one command (argv[i] of argvlen[i] bytes, or strlen when argvlen is
 * NULL; all copied) on the command connection, in order with publishes.
 * Returns at once like bus_publish. After 0, cb(arg, status, reply) runs
 * exactly once on the bus thread: status 0 with the reply (an error reply
 * is status 0 with BUS_REPLY_ERROR), or SORI_ECLOSED with reply NULL.
 * Refused with SORI_EINVAL: subscribe-mode commands (SUBSCRIBE, MONITOR,
 * ...), commands that change the shared connection (SELECT, AUTH, HELLO,
 * QUIT, RESET, CLIENT REPLY), transactions (MULTI, EXEC, WATCH, ...: the
 * bus's own commands would land inside them; use EVAL) and blocking list
 * and sorted-set pops and WAIT. Other commands that block (XREAD BLOCK)
 * must not be sent: a reply overdue by reply_timeout_ms drops the link. */
int bus_command(bus_t *b, int argc, const char **argv, const size_t *argvlen,
                void (*cb)(void *arg, int status, const bus_reply_t *reply), void *arg);

/* Presence. Call on a user's 0<->1 transitions of local sessions: the bus
 * keeps the set of users online on this node, writes the change to
 * sori:online:<node> and publishes a notice ("+user" / "-user") on
 * BUS_PRESENCE_CHANNEL. Changes made while down are kept and written (the
 * whole hash is rewritten) after the next connect; rapid changes of one user
 * coalesce. 0, SORI_EINVAL (empty or longer than 1024 bytes), SORI_ENOMEM or
 * SORI_ECLOSED (closing). */
int bus_presence_set(bus_t *b, const char *user, int online);

/* Asks, for each of users[0..n) (1 <= n <= 65536), whether it is online on
 * ANY live node (its field exists in a live node's hash, this node's
 * included, as of Redis). Returns at once like bus_publish. After 0,
 * cb(arg, status, online) runs once on the bus thread: status 0 and
 * online[i] in {0, 1}, or < 0 with online NULL. */
int bus_presence_query(bus_t *b, const char *const *users, size_t n,
                       void (*cb)(void *arg, int status, const uint8_t *online), void *arg);

/* Node registry. Registers (or re-registers) this node: while up, the bus
 * thread writes sori:node:<id> = {"node":id,"ws":ws_url,"load":load()}
 * with node_ttl_ms every node_refresh_ms, at once now (when up) and after
 * every reconnect. load (may be NULL: 0) runs on the bus thread: it must be
 * thread-safe and cheap. ws_url is copied. 0, SORI_EINVAL, SORI_ENOMEM,
 * SORI_ECLOSED (closing). */
int bus_register(bus_t *b, const char *ws_url, double (*load)(void));

/* Lists the live nodes (this one included once registered), in no
 * particular order. Returns at once like bus_publish. After 0, cb runs once
 * on the bus thread: status 0 with nodes[0..n) (borrowed for the call), or
 * < 0 with nodes NULL. Entries that do not parse are skipped. */
int bus_discover(bus_t *b, void (*cb)(void *arg, int status, const bus_node_t *nodes, size_t n), void *arg);

/* Counters; any thread. */
void bus_stats(const bus_t *b, bus_stats_t *out);

/* ---- pure helpers (no bus needed) ---- */

/* Splits a frame into its origin node id and payload. 0, or SORI_EINVAL
 * when it has no valid "<digits>:" prefix (at most 10 digits, <= INT_MAX). */
int bus_frame_parse(const char *data, size_t len, int *origin, const char **payload, size_t *plen);

/* Decodes a presence notice payload (as on_message hands it, prefix
 * stripped): *online = 1 ("+user"), 0 ("-user") or -1 ("*": the origin
 * node's whole set changed; *user NULL, *ulen 0). 0 or SORI_EINVAL. */
int bus_presence_notice_parse(const char *data, size_t len, int *online, const char **user, size_t *ulen);

#endif
