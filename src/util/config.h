/*
 * config.h: sori's settings, one table row per option.
 *
 * Every option has a name (the flag is --name, the config file key is name),
 * a type, bounds, a default and a help line. The same table parses flags and
 * config files and prints `sori --help` and the docs' option table, so the
 * three never disagree. Flags override the config file, which overrides the
 * defaults. The config is read once at startup and then only read.
 */
#ifndef SORI_UTIL_CONFIG_H
#define SORI_UTIL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *host;
    int port;
    char *data_dir;
    char *db;                 /* "" (SQLite in data_dir) or postgresql://... */
    char *redis;              /* "" (one node) or redis://...: cluster mode */
    char *public_url;         /* this node's WebSocket URL for discovery */
    int presence_ttl_ms;      /* cluster: a crashed node's users stay online this long */
    int node_ttl_ms;          /* cluster: a crashed node stays discoverable this long */
    char *web_dir;
    int workers;
    int allow_guests;
    char *secret;
    char *config_file;
    char *log_level;
    int node_id;
    int64_t max_connections;
    int64_t out_limit;        /* unsent bytes per connection before 1008 */
    int64_t ws_max_message;   /* bytes of one reassembled WebSocket message */
    int64_t http_max_header;  /* bytes of one request head */
    int64_t http_max_body;    /* bytes of one request body */
    int heartbeat_ms;
    int handshake_timeout_ms;
    int http_idle_timeout_ms;
    int ws_deflate;
    int ws_deflate_min;       /* messages shorter than this are sent uncompressed */
    char *allowed_origins;    /* comma-separated; empty allows every origin */
    int ws_echo;              /* serves /echo, an echo endpoint for conformance suites */
    int drain_timeout_ms;
    char *durability;         /* "sync" or "async" */
    int flush_ms;             /* async durability: longest wait before a write */
    int64_t max_text;         /* bytes of a message text */
    int max_rooms_per_conn;
    int room_ring;            /* recent messages kept in memory per room */
    int rate;                 /* commands per second per connection */
    int burst;
    /* accounts (issue 5) */
    int token_ttl;            /* seconds a login token is valid */
    int password_min;         /* bytes */
    int password_max;
    int login_rate_name;      /* failed-or-not login attempts per minute per name */
    int login_rate_ip;        /* per client address */
    int signup_rate_ip;       /* signups per minute per address */
    int64_t upload_max;       /* bytes of one upload */
    /* push notifications */
    char *push_webhook;       /* http://host:port/path, empty: off */
    int push_preview;         /* include a text preview */
    int push_queue;           /* notifications waiting, beyond: dropped */
    int push_rate;            /* notifications per minute per user, beyond: dropped */
    int push_attempts;        /* tries per notification */
    int push_delay_ms;        /* wait before sending (a read in the meantime cancels it) */
    int search_max;           /* largest `limit` of a search */
    int stomp_heartbeat_ms;   /* STOMP heart-beat the server offers and asks for */
} sori_config_t;

extern sori_config_t sori_config;

/* Fills c with the defaults (c must be zeroed or freed with config_free). */
void config_defaults(sori_config_t *c);
/* Frees the option strings (at exit). */
void config_free(sori_config_t *c);

/*
 * Applies `--name value`, `--name=value` and bare boolean `--name` flags from
 * argv[0..argc), and first the file named by --config if any. Returns 0, or
 * SORI_EINVAL with a one-line message naming the flag or key in err.
 */
int config_parse_args(sori_config_t *c, int argc, char **argv, char *err, size_t errlen);

/* Applies a config file of `name = value` lines ('#' starts a comment):
 * reads it whole (at most 1 MiB) and hands it to config_load_buffer. */
int config_load_file(sori_config_t *c, const char *path, char *err, size_t errlen);
/*
 * Applies the config file text data[0..len) (borrowed; any bytes, no NUL
 * needed), lines separated by '\n', each blank, a comment or `name = value`
 * (at most 4095 bytes; a NUL byte ends a line's text). Stops at the first
 * bad line: SORI_EINVAL with "origin:line: why" in err, or SORI_ENOMEM.
 * Options set before the bad line stay set.
 */
int config_load_buffer(sori_config_t *c, const char *data, size_t len, const char *origin, char *err,
                       size_t errlen);

/* Sets one option by name from a string, with its type and bounds checked. */
int config_set(sori_config_t *c, const char *name, const char *value, char *err, size_t errlen);

/* Prints the option table: as `--help` text (markdown = 0) or as a markdown
 * table for docs/OPERATIONS.md (markdown = 1). */
void config_print_help(int markdown);

#endif
