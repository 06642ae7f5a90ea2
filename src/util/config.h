/*
 * config.h: sori's settings, one table row per option.
 *
 * Every option has a name (the flag is --name, the config file key is name),
 * a type, bounds, a default and a help line. The same table parses flags and
 * config files and prints `sori --help` and the docs' option table, so the
 * three never disagree. Flags override the config file, which overrides the
 * defaults. The config is read at startup; on SIGHUP config_reload() reads it
 * again and changes the options marked reloadable (see the rule at the top of
 * config.c): read those with CONFIG_GET(field) from any thread.
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
    char *tls_cert;           /* PEM certificate chain: TLS on the listener when set */
    char *tls_key;            /* PEM private key */
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
    /* operations (issue 9) */
    char *log_file;           /* "" (stderr) or a file reopened on SIGUSR1 */
    char *pid_file;           /* "" or a file that holds the pid while serving */
    /* limits (issue 9), all reloadable: read with CONFIG_GET */
    int max_conns_per_ip;     /* open connections from one address (IPv6: one /64); 0: off */
    int conn_rate_per_ip;     /* new connections per second from one address; 0: off */
    int conn_burst_per_ip;    /* burst above conn_rate_per_ip */
    int ip_limits_loopback;   /* apply the per-address limits to 127.0.0.0/8 and ::1 too */
    int max_conns_per_user;   /* live WebSocket sessions of one user on this node; 0: off */
    int max_rooms_per_user;   /* memberships of one user; 0: off */
    int max_members_per_room; /* members of one room; 0: off */
    int64_t memory_high_water; /* RSS bytes over which new work is refused; 0: auto (80% of RAM) */
    int store_queue_max;      /* store ops queued and not committed before sends are refused; 0: off */
} sori_config_t;

extern sori_config_t sori_config;

/* Reads a reloadable field of sori_config: an atomic load (acquire, so a
 * string's bytes are seen with its pointer; a plain load on x86), safe from
 * any thread while the main thread reloads: never torn, no ordering between
 * two fields. A string stays valid until exit. Fields that are not reloadable
 * may be read plainly. */
#define CONFIG_GET(field) __atomic_load_n(&sori_config.field, __ATOMIC_ACQUIRE)

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

/*
 * Remembers argv (borrowed: must live for the process, as main's argv does)
 * and the options as parsed at startup, before the program derives anything
 * from them. Call once on the main thread, right after config_parse_args.
 */
void config_reload_init(int argc, char **argv);

/* Checks a whole parsed config before it is used (cross-option rules, values
 * other modules must accept): 0, or SORI_EINVAL with a sentence in err. */
typedef int (*config_validate_fn)(const sori_config_t *c, char *err, size_t errlen);

/*
 * SIGHUP, on the main thread: parses defaults, the --config file and the
 * remembered flags again (flags still win), validates the whole result with
 * validate (may be NULL), and only then stores the changed reloadable options
 * into sori_config (atomic stores; old strings are kept until exit). A changed
 * option that is not reloadable is logged and keeps its running value. Logs
 * one line listing what changed (whatever the log level; the values of
 * secret, db, redis and push-webhook are never logged), then calls every
 * config_on_reload hook (in registration order, on this thread), also when
 * no option changed. Returns 0, or
 * SORI_EINVAL with a sentence in err (the running config is untouched).
 */
int config_reload(config_validate_fn validate, char *err, size_t errlen);

/* Registers fn (up to 16; SORI_ELIMIT beyond) to be called on the main loop
 * thread after each successful reload, also one that changed no option (a
 * file an option names, such as a TLS certificate, may have changed under
 * the same name); fn reads the new values with CONFIG_GET (or plainly: it
 * runs on the writing thread) and must not block for long (the main loop
 * also runs the drain). arg is borrowed. Register at startup, before the
 * first SIGHUP can arrive; the hooks run in registration order. */
typedef void (*config_reload_fn)(void *arg);
int config_on_reload(config_reload_fn fn, void *arg);

/* 1 if the option called name is reloadable, 0 if not, -1 if unknown. */
int config_reloadable(const char *name);

/* Prints the option table: as `--help` text (markdown = 0) or as a markdown
 * table for docs/OPERATIONS.md (markdown = 1). */
void config_print_help(int markdown);

#endif
