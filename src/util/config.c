/*
 * config.c: the option table, its parsers and the SIGHUP reload.
 *
 * One row per option: name, type, offset into sori_config_t, bounds, default,
 * help and flags (OPT_RELOAD). Sizes take k/m/g suffixes (powers of 1024).
 * Strings are heap-copied. A bad value names the option and the accepted range.
 *
 * The reload rule (issue 9). sori_config is written only by the main thread:
 * plainly at startup, before any other thread exists, and by config_reload on
 * SIGHUP. Options without OPT_RELOAD never change after startup and are read
 * plainly anywhere. An option with OPT_RELOAD may change while workers run:
 *   - every read outside the main thread goes through CONFIG_GET(field), a
 *     relaxed atomic load (int, int64_t and pointers are lock-free on every
 *     target we build), and config_reload writes it with a relaxed atomic
 *     store, so ThreadSanitizer sees no race and no read is torn;
 *   - a string option gets a new heap copy swapped in atomically; the old one
 *     is never freed while the process runs (a worker may still be reading it)
 *     but parked on config__retired and freed by config_free at exit: a reload
 *     leaks at most the size of the changed strings until then;
 *   - a module that copied a value at startup (net, chat, push, the routes'
 *     body limits) re-reads it in a config_on_reload hook and stores it
 *     atomically in its own state;
 *   - there is no ordering between two fields: a reader may see the new rate
 *     with the old burst for one command, which every limit tolerates.
 * Marking a new option reloadable is two steps: OPT_RELOAD in its row, and
 * reading it with CONFIG_GET (or copying it again in a hook).
 *
 * A reload parses defaults + file + the startup flags into a fresh struct,
 * validates all of it, and compares it with the previous parse (config__last,
 * not with sori_config, which main changed, e.g. the secret it generated):
 * nothing is stored unless the whole file is good. At most 16 hooks.
 * Config files go through config_load_buffer, a pure parser over the
 * caller's bytes (lines up to 4095 bytes, files up to 1 MiB), which is also
 * the fuzz target's entry point.
 */
#include "util/config.h"
#include "util/err.h"
#include "util/log.h"

#include <ctype.h>
#include <fcntl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sori_config_t sori_config;

/* Reload state, main thread only. */
static int config__argc;
static char **config__argv;
static sori_config_t config__last;      /* the previous parse, owns its strings */
static int config__have_last;
typedef struct config_retired {
    struct config_retired *next;
    char *s;
} config_retired_t;
static config_retired_t *config__retired; /* old string values, freed at exit */
static struct {
    config_reload_fn fn;
    void *arg;
} config__hooks[16];
static int config__nhooks;

enum opt_type { OPT_STR, OPT_INT, OPT_SIZE, OPT_BOOL };

typedef struct {
    const char *name;
    enum opt_type type;
    size_t off;
    int64_t min, max;
    const char *def;
    const char *help;
    unsigned flags; /* OPT_RELOAD: SIGHUP changes it (read it with CONFIG_GET) */
} config_opt_t;

enum { OPT_RELOAD = 1u << 0 };

#define O(field) offsetof(sori_config_t, field)

static const config_opt_t config__opts[] = {
    {"host", OPT_STR, O(host), 0, 0, "0.0.0.0", "address to listen on"},
    {"port", OPT_INT, O(port), 0, 65535, "8080", "TCP port to listen on (0: any free port, printed at startup)"},
    {"data-dir", OPT_STR, O(data_dir), 0, 0, "./data", "directory for the store, uploads and the generated secret"},
    {"web-dir", OPT_STR, O(web_dir), 0, 0, "", "directory of the browser client (default: web/ beside the binary's build dir, then ./web)"},
    {"workers", OPT_INT, O(workers), 0, 256, "0", "worker threads, each with its own event loop (0: one per core)"},
    {"allow-guests", OPT_BOOL, O(allow_guests), 0, 1, "false", "let clients connect as ?user=NAME without a token (demos, benchmarks)"},
    {"secret", OPT_STR, O(secret), 0, 0, "", "token signing secret (or SORI_SECRET; default: generated once into DATA_DIR/secret)"},
    {"config", OPT_STR, O(config_file), 0, 0, "", "read options from FILE (lines of `name = value`); flags override it"},
    {"log-level", OPT_STR, O(log_level), 0, 0, "info", "error, warn, info or debug", OPT_RELOAD},
    {"node-id", OPT_INT, O(node_id), 0, 1023, "0", "this node's id, unique in a cluster (goes into message ids)"},
    {"max-connections", OPT_SIZE, O(max_connections), 1, 10000000, "100000", "open connections the node accepts (also capped by the open-files limit)", OPT_RELOAD},
    {"out-limit", OPT_SIZE, O(out_limit), 4096, 1LL << 32, "4m", "unsent output per connection before it is closed as a slow consumer (1008)", OPT_RELOAD},
    {"ws-max-message", OPT_SIZE, O(ws_max_message), 125, 1LL << 30, "1m", "largest WebSocket message accepted, after decompression (over: close 1009)"},
    {"http-max-header", OPT_SIZE, O(http_max_header), 1024, 1 << 20, "16k", "largest HTTP request head (over: 431)", OPT_RELOAD},
    {"http-max-body", OPT_SIZE, O(http_max_body), 0, 1LL << 30, "1m", "largest HTTP request body (over: 413)", OPT_RELOAD},
    {"heartbeat-ms", OPT_INT, O(heartbeat_ms), 1000, 3600000, "25000", "WebSocket ping interval; two silent intervals close the connection (1001)"},
    {"handshake-timeout-ms", OPT_INT, O(handshake_timeout_ms), 100, 600000, "10000", "time allowed for a request head to arrive", OPT_RELOAD},
    {"http-idle-timeout-ms", OPT_INT, O(http_idle_timeout_ms), 100, 3600000, "60000", "keep-alive idle time of an HTTP connection", OPT_RELOAD},
    {"ws-deflate", OPT_BOOL, O(ws_deflate), 0, 1, "true", "accept permessage-deflate (RFC 7692)"},
    {"ws-deflate-min", OPT_INT, O(ws_deflate_min), 0, 1 << 30, "256", "outgoing messages shorter than this many bytes are sent uncompressed"},
    {"allowed-origins", OPT_STR, O(allowed_origins), 0, 0, "", "comma-separated Origin values allowed to open WebSockets (empty: any)"},
    {"ws-echo", OPT_BOOL, O(ws_echo), 0, 1, "false", "serve /echo, a WebSocket echo endpoint for conformance suites"},
    {"drain-timeout-ms", OPT_INT, O(drain_timeout_ms), 0, 60000, "5000", "on SIGTERM, how long to wait for connections to close before exiting", OPT_RELOAD},
    {"tls-cert", OPT_STR, O(tls_cert), 0, 0, "", "PEM certificate chain (leaf first): the port then speaks TLS only (wss://, https://); read again on SIGHUP", OPT_RELOAD},
    {"tls-key", OPT_STR, O(tls_key), 0, 0, "", "PEM private key of --tls-cert; read again on SIGHUP", OPT_RELOAD},
    {"db", OPT_STR, O(db), 0, 0, "", "the store: empty for SQLite in the data dir, or postgresql://user[:password]@host[:port]/dbname (a cluster's shared store)"},
    {"redis", OPT_STR, O(redis), 0, 0, "", "cluster mode: redis://[:password@]host[:port][/db] shared by the nodes (needs --db postgresql://...; see OPERATIONS.md \"Cluster mode\")"},
    {"public-url", OPT_STR, O(public_url), 0, 0, "", "this node's WebSocket URL as clients reach it, registered for /api/discover (default ws://HOST:PORT/ws)"},
    {"presence-ttl-ms", OPT_INT, O(presence_ttl_ms), 300, 3600000, "30000", "cluster: a node's list of online users expires this long after its last refresh (refreshed 3 times per TTL): how soon a crashed node's users go offline"},
    {"node-ttl-ms", OPT_INT, O(node_ttl_ms), 300, 3600000, "15000", "cluster: a node's registry entry (URL, load) expires this long after its last refresh (3 per TTL)"},
    {"durability", OPT_STR, O(durability), 0, 0, "sync", "sync: a message is committed before its ack and delivery; async: ack first, written within --flush-ms"},
    {"flush-ms", OPT_INT, O(flush_ms), 1, 1000, "1000", "async durability: the longest a message waits to be written (the crash loss window)"},
    {"max-text", OPT_SIZE, O(max_text), 1, 1 << 20, "16k", "bytes of one message text (over: too_large)", OPT_RELOAD},
    {"max-rooms-per-conn", OPT_INT, O(max_rooms_per_conn), 1, 100000, "100", "rooms one connection may join", OPT_RELOAD},
    {"room-ring", OPT_INT, O(room_ring), 0, 100000, "512", "recent messages kept in memory per room for catch-up and history (at least 1 is kept)"},
    {"rate", OPT_INT, O(rate), 1, 1000000, "100", "commands per second per connection (token bucket; over: rate_limited)", OPT_RELOAD},
    {"burst", OPT_INT, O(burst), 1, 1000000, "200", "command burst per connection above --rate", OPT_RELOAD},
    {"token-ttl", OPT_INT, O(token_ttl), 60, 365 * 86400, "604800", "seconds a token from /api/login or /api/signup is valid", OPT_RELOAD},
    {"password-min", OPT_INT, O(password_min), 1, 1024, "8", "shortest password accepted at signup, in bytes", OPT_RELOAD},
    {"password-max", OPT_INT, O(password_max), 8, 4096, "1024", "longest password accepted, in bytes", OPT_RELOAD},
    {"login-rate-name", OPT_INT, O(login_rate_name), 1, 1000000, "10", "login attempts per minute for one name (over: 429 with Retry-After)", OPT_RELOAD},
    {"login-rate-ip", OPT_INT, O(login_rate_ip), 1, 1000000, "30", "login attempts per minute from one client address (over: 429)", OPT_RELOAD},
    {"signup-rate-ip", OPT_INT, O(signup_rate_ip), 1, 1000000, "10", "signups per minute from one client address (over: 429)", OPT_RELOAD},
    {"upload-max", OPT_SIZE, O(upload_max), 1024, 1LL << 30, "10m", "largest upload (over: 413)", OPT_RELOAD},
    {"push-webhook", OPT_STR, O(push_webhook), 0, 0, "", "http://host:port/path that receives push notifications for offline users (empty: off)"},
    {"push-preview", OPT_BOOL, O(push_preview), 0, 1, "true", "include the first 100 characters of the text in push notifications", OPT_RELOAD},
    {"push-queue", OPT_INT, O(push_queue), 1, 10000000, "10000", "push notifications waiting to be sent; beyond this they are dropped (counted)"},
    {"push-rate", OPT_INT, O(push_rate), 1, 1000000, "10", "push notifications per minute per user; beyond this they are dropped (counted)", OPT_RELOAD},
    {"push-attempts", OPT_INT, O(push_attempts), 1, 100, "5", "tries per push notification (exponential backoff from 500 ms)", OPT_RELOAD},
    {"push-delay-ms", OPT_INT, O(push_delay_ms), 0, 3600000, "0", "wait before sending a push; a user who reads the room meanwhile gets none", OPT_RELOAD},
    {"stomp-heartbeat-ms", OPT_INT, O(stomp_heartbeat_ms), 100, 3600000, "10000", "STOMP heart-beat interval the server offers and asks for; the larger of this and the client's applies (PROTOCOL.md STOMP)"},
    {"search-max", OPT_INT, O(search_max), 1, 1000, "100", "largest `limit` of a search", OPT_RELOAD},
    {"log-file", OPT_STR, O(log_file), 0, 0, "", "append log lines to FILE instead of stderr; SIGUSR1 reopens it (after logrotate moved it)"},
    {"pid-file", OPT_STR, O(pid_file), 0, 0, "", "write the process id to FILE while serving (removed at a clean exit)"},
    {"max-conns-per-ip", OPT_INT, O(max_conns_per_ip), 0, 10000000, "1000", "open connections from one client address, IPv6 by /64 (over: 429 rate_limited at accept; 0: off; loopback exempt unless --ip-limits-loopback)", OPT_RELOAD},
    {"conn-rate-per-ip", OPT_INT, O(conn_rate_per_ip), 0, 1000000, "200", "new connections per second from one client address (token bucket; over: 429 rate_limited; 0: off)", OPT_RELOAD},
    {"conn-burst-per-ip", OPT_INT, O(conn_burst_per_ip), 1, 1000000, "400", "new-connection burst per client address above --conn-rate-per-ip", OPT_RELOAD},
    {"ip-limits-loopback", OPT_BOOL, O(ip_limits_loopback), 0, 1, "false", "apply the per-address limits to loopback clients too (off: a local proxy, tests and sori bench are exempt)", OPT_RELOAD},
    {"max-conns-per-user", OPT_INT, O(max_conns_per_user), 0, 1000000, "100", "live WebSocket connections of one user on this node (over: 429 rate_limited at the handshake; 0: off)", OPT_RELOAD},
    {"max-rooms-per-user", OPT_INT, O(max_rooms_per_user), 0, 10000000, "1000", "rooms one user may be a member of, dm rooms counted (create/join/invite over it: too_large; 0: off)", OPT_RELOAD},
    {"max-members-per-room", OPT_INT, O(max_members_per_room), 0, 10000000, "10000", "members of one room (join/invite over it: too_large; 0: off)", OPT_RELOAD},
    {"memory-high-water", OPT_SIZE, O(memory_high_water), 0, 1LL << 40, "0", "resident memory over which new WebSocket sessions, non-GET requests, sends and creates are refused (503 / unavailable); 0: 80% of RAM or of the cgroup memory limit", OPT_RELOAD},
    {"store-queue-max", OPT_INT, O(store_queue_max), 0, 100000000, "100000", "store writes queued and not yet committed over which sends are refused (unavailable); bounds the async backlog; 0: off", OPT_RELOAD},
};

#define NOPTS (sizeof config__opts / sizeof config__opts[0])

static const config_opt_t *config__find(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(config__opts[i].name) == len && memcmp(config__opts[i].name, name, len) == 0)
            return &config__opts[i];
    return NULL;
}

static int config__parse_int(const char *s, int64_t *out, int sizes)
{
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno) return SORI_EINVAL;
    if (sizes && *end) {
        int shift = 0;
        switch (tolower((unsigned char)*end)) {
        case 'k': shift = 10; break;
        case 'm': shift = 20; break;
        case 'g': shift = 30; break;
        default: return SORI_EINVAL;
        }
        end++;
        if (*end == 'b' || *end == 'B') end++;
        if (v > (INT64_MAX >> shift) || v < 0) return SORI_EINVAL;
        v <<= shift;
    }
    if (*end) return SORI_EINVAL;
    *out = v;
    return 0;
}

static int config__apply(sori_config_t *c, const config_opt_t *o, const char *value, char *err,
                         size_t errlen)
{
    char *field = (char *)c + o->off;
    int64_t v = 0;
    switch (o->type) {
    case OPT_STR: {
        char *dup = strdup(value);
        if (!dup) return SORI_ENOMEM;
        free(*(char **)field);
        *(char **)field = dup;
        return 0;
    }
    case OPT_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes") || !strcmp(value, "on"))
            __atomic_store_n((int *)field, 1, __ATOMIC_RELAXED);
        else if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no") || !strcmp(value, "off"))
            __atomic_store_n((int *)field, 0, __ATOMIC_RELAXED);
        else {
            snprintf(err, errlen, "--%s: expected true or false, got \"%s\"", o->name, value);
            return SORI_EINVAL;
        }
        return 0;
    case OPT_INT:
    case OPT_SIZE:
        if (config__parse_int(value, &v, o->type == OPT_SIZE) || v < o->min || v > o->max) {
            snprintf(err, errlen, "--%s: expected %s between %lld and %lld, got \"%s\"", o->name,
                     o->type == OPT_SIZE ? "a size (k, m, g suffixes)" : "an integer",
                     (long long)o->min, (long long)o->max, value);
            return SORI_EINVAL;
        }
        /* Atomic stores: a reload may rewrite a number while workers read
         * it with CONFIG_GET. */
        if (o->type == OPT_INT)
            __atomic_store_n((int *)field, (int)v, __ATOMIC_RELAXED);
        else
            __atomic_store_n((int64_t *)field, v, __ATOMIC_RELAXED);
        return 0;
    }
    return SORI_EINVAL;
}

int config_set(sori_config_t *c, const char *name, const char *value, char *err, size_t errlen)
{
    const config_opt_t *o = config__find(name, strlen(name));
    if (!o) {
        snprintf(err, errlen, "unknown option \"%s\" (see sori --help)", name);
        return SORI_EINVAL;
    }
    return config__apply(c, o, value, err, errlen);
}

void config_defaults(sori_config_t *c)
{
    char err[256];
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NOPTS; i++) {
        int rc = config__apply(c, &config__opts[i], config__opts[i].def, err, sizeof err);
        if (rc) abort(); /* a bad default is a programming error */
    }
}

static void config__free_strings(sori_config_t *c)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (config__opts[i].type == OPT_STR) {
            char **field = (char **)((char *)c + config__opts[i].off);
            free(*field);
            *field = NULL;
        }
}

void config_free(sori_config_t *c)
{
    config__free_strings(c);
    if (c != &sori_config) return;
    /* At exit: what the reload kept alive goes with the process config. */
    while (config__retired) {
        config_retired_t *r = config__retired;
        config__retired = r->next;
        free(r->s);
        free(r);
    }
    if (config__have_last) config__free_strings(&config__last);
    config__have_last = 0;
}

static char *config__trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

/* The longest config file line (without its newline) and file accepted. */
#define CONFIG_LINE_MAX 4095
#define CONFIG_FILE_MAX (1 << 20)

int config_load_buffer(sori_config_t *c, const char *data, size_t len, const char *origin, char *err,
                       size_t errlen)
{
    char line[CONFIG_LINE_MAX + 1];
    int lineno = 0;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (data + pos)) : len - pos;
        lineno++;
        if (n > CONFIG_LINE_MAX) {
            snprintf(err, errlen, "%s:%d: line longer than %d bytes", origin, lineno, CONFIG_LINE_MAX);
            return SORI_EINVAL;
        }
        /* A NUL byte ends the line's text, as it would in a C string. */
        memcpy(line, data + pos, n);
        line[n] = 0;
        pos += n + (nl != NULL);
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *s = config__trim(line);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected `name = value`", origin, lineno);
            return SORI_EINVAL;
        }
        *eq = 0;
        char *name = config__trim(s), *value = config__trim(eq + 1);
        if (!strcmp(name, "config")) {
            snprintf(err, errlen, "%s:%d: `config` cannot be set in a config file", origin, lineno);
            return SORI_EINVAL;
        }
        char sub[256];
        int rc = config_set(c, name, value, sub, sizeof sub);
        if (rc == SORI_ENOMEM) {
            snprintf(err, errlen, "%s:%d: out of memory", origin, lineno);
            return rc;
        }
        if (rc) {
            snprintf(err, errlen, "%s:%d: %s", origin, lineno, sub);
            return SORI_EINVAL;
        }
    }
    return 0;
}

int config_load_file(sori_config_t *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "--config: cannot open %s: %s", path, strerror(errno));
        return SORI_EINVAL;
    }
    char *data = malloc(CONFIG_FILE_MAX + 1);
    if (!data) {
        fclose(f);
        snprintf(err, errlen, "--config: out of memory");
        return SORI_ENOMEM;
    }
    size_t len = fread(data, 1, CONFIG_FILE_MAX + 1, f);
    int rc;
    if (ferror(f)) {
        snprintf(err, errlen, "--config: cannot read %s", path);
        rc = SORI_EINVAL;
    } else if (len > CONFIG_FILE_MAX) {
        snprintf(err, errlen, "--config: %s is larger than %d bytes", path, CONFIG_FILE_MAX);
        rc = SORI_EINVAL;
    } else {
        rc = config_load_buffer(c, data, len, path, err, errlen);
    }
    free(data);
    fclose(f);
    return rc;
}

int config_parse_args(sori_config_t *c, int argc, char **argv, char *err, size_t errlen)
{
    /* First pass: find --config, so that flags override the file. */
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *path = NULL;
        if (!strncmp(a, "--config=", 9)) {
            path = a + 9;
        } else if (!strcmp(a, "--config")) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--config: missing value");
                return SORI_EINVAL;
            }
            path = argv[i + 1];
        }
        if (!path) continue;
        if (config_load_file(c, path, err, errlen)) return SORI_EINVAL;
        if (config_set(c, "config", path, err, errlen)) return SORI_EINVAL; /* the reload reads it again */
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument \"%s\" (see sori --help)", a);
            return SORI_EINVAL;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const config_opt_t *o = config__find(name, nlen);
        if (!o) {
            snprintf(err, errlen, "unknown flag \"--%.*s\" (see sori --help)", (int)nlen, name);
            return SORI_EINVAL;
        }
        const char *value;
        if (eq)
            value = eq + 1;
        else if (o->type == OPT_BOOL && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0))
            value = "true";
        else if (o->type == OPT_BOOL && (!strcmp(argv[i + 1], "true") || !strcmp(argv[i + 1], "false")))
            value = argv[++i];
        else if (o->type == OPT_BOOL)
            value = "true";
        else {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--%s: missing value", o->name);
                return SORI_EINVAL;
            }
            value = argv[++i];
        }
        if (o->off == offsetof(sori_config_t, config_file)) continue; /* applied above */
        if (config__apply(c, o, value, err, errlen)) return SORI_EINVAL;
    }
    return 0;
}

/* ---- reload (SIGHUP) ---- */

/* The option's value in c as text, for comparing and logging. */
static void config__format(const sori_config_t *c, const config_opt_t *o, char *out, size_t outlen)
{
    const char *field = (const char *)c + o->off;
    switch (o->type) {
    case OPT_STR: {
        const char *v = *(char *const *)field;
        snprintf(out, outlen, "%s", v ? v : "");
        return;
    }
    case OPT_BOOL: snprintf(out, outlen, "%s", *(const int *)field ? "true" : "false"); return;
    case OPT_INT: snprintf(out, outlen, "%d", *(const int *)field); return;
    case OPT_SIZE: snprintf(out, outlen, "%lld", (long long)*(const int64_t *)field); return;
    }
}

/* Copies every option of from into to (to's strings are replaced). */
static int config__copy(sori_config_t *to, const sori_config_t *from)
{
    char v[4096], err[256];
    for (size_t i = 0; i < NOPTS; i++) {
        config__format(from, &config__opts[i], v, sizeof v);
        if (config__apply(to, &config__opts[i], v, err, sizeof err)) return SORI_ENOMEM;
    }
    return 0;
}

void config_reload_init(int argc, char **argv)
{
    config__argc = argc;
    config__argv = argv;
    if (config__have_last) config__free_strings(&config__last);
    memset(&config__last, 0, sizeof config__last);
    config__have_last = config__copy(&config__last, &sori_config) == 0;
}

/* Stores next's value of o into sori_config, atomically for readers. */
static int config__store(const config_opt_t *o, const sori_config_t *next)
{
    char *dst = (char *)&sori_config + o->off;
    const char *src = (const char *)next + o->off;
    switch (o->type) {
    case OPT_STR: {
        config_retired_t *r = malloc(sizeof *r);
        char *dup = strdup(*(char *const *)src);
        if (!r || !dup) {
            free(r);
            free(dup);
            return SORI_ENOMEM;
        }
        r->s = __atomic_exchange_n((char **)dst, dup, __ATOMIC_RELEASE);
        r->next = config__retired;
        config__retired = r;
        return 0;
    }
    case OPT_BOOL:
    case OPT_INT: __atomic_store_n((int *)dst, *(const int *)src, __ATOMIC_RELAXED); return 0;
    case OPT_SIZE: __atomic_store_n((int64_t *)dst, *(const int64_t *)src, __ATOMIC_RELAXED); return 0;
    }
    return SORI_EINVAL;
}

/* Values never written to the log: the secret, URLs that may hold a password. */
static int config__hidden(const config_opt_t *o)
{
    return !strcmp(o->name, "secret") || !strcmp(o->name, "db") || !strcmp(o->name, "redis") ||
           !strcmp(o->name, "push-webhook");
}

int config_reload(config_validate_fn validate, char *err, size_t errlen)
{
    if (!config__have_last) {
        snprintf(err, errlen, "config_reload_init was not called");
        return SORI_EINVAL;
    }
    sori_config_t next;
    config_defaults(&next);
    int rc = config_parse_args(&next, config__argc, config__argv, err, errlen);
    if (!rc && validate) rc = validate(&next, err, errlen);
    if (rc) {
        config_free(&next);
        return SORI_EINVAL;
    }
    char changed[2048] = "", oldv[4096], newv[4096];
    size_t clen = 0;
    int nchanged = 0;
    for (size_t i = 0; i < NOPTS; i++) {
        const config_opt_t *o = &config__opts[i];
        config__format(&config__last, o, oldv, sizeof oldv);
        config__format(&next, o, newv, sizeof newv);
        if (!strcmp(oldv, newv)) continue;
        if (!(o->flags & OPT_RELOAD)) {
            if (config__hidden(o))
                LOG_WARN("config", "reload: %s cannot change without a restart; keeping the running value", o->name);
            else
                LOG_WARN("config", "reload: %s cannot change without a restart; keeping %s=\"%.200s\" (the file says \"%.200s\")",
                         o->name, o->name, oldv, newv);
            /* Keep comparing against the running value: warn again next time. */
            config__apply(&next, o, oldv, err, errlen);
            continue;
        }
        if (config__store(o, &next)) {
            /* Out of memory on a string: keep the old value, say so. */
            LOG_ERROR("config", "reload: %s: out of memory; keeping the old value", o->name);
            config__apply(&next, o, oldv, err, errlen);
            continue;
        }
        nchanged++;
        if (clen < sizeof changed) {
            int n = config__hidden(o)
                        ? snprintf(changed + clen, sizeof changed - clen, "%s%s (value not shown)", clen ? ", " : "", o->name)
                        : snprintf(changed + clen, sizeof changed - clen, "%s%s=%.100s (was %.100s)", clen ? ", " : "",
                                   o->name, newv, oldv);
            if (n > 0) clen += (size_t)n;
        }
    }
    config__free_strings(&config__last);
    config__last = next; /* takes next's strings */
    const char *file = sori_config.config_file && sori_config.config_file[0] ? sori_config.config_file : "(no --config file)";
    /* The summary is written whatever the log level (log_write does not
     * check it): a reload that changes log-level is seen either way. */
    if (!nchanged)
        log_write(LOG_LEVEL_INFO, "config", "reloaded %s: nothing to change", file);
    else
        log_write(LOG_LEVEL_INFO, "config", "reloaded %s: %d changed: %s", file, nchanged, changed);
    /* Every time, also with no option changed: a file an option names (a
     * TLS certificate) may have changed under the same name. */
    for (int i = 0; i < config__nhooks; i++) config__hooks[i].fn(config__hooks[i].arg);
    return 0;
}

int config_on_reload(config_reload_fn fn, void *arg)
{
    if (config__nhooks == (int)(sizeof config__hooks / sizeof config__hooks[0])) return SORI_ELIMIT;
    config__hooks[config__nhooks].fn = fn;
    config__hooks[config__nhooks].arg = arg;
    config__nhooks++;
    return 0;
}

int config_reloadable(const char *name)
{
    const config_opt_t *o = config__find(name, strlen(name));
    return o ? (o->flags & OPT_RELOAD) != 0 : -1;
}

void config_print_help(int markdown)
{
    static const char *types[] = {"STR", "N", "SIZE", ""};
    if (markdown) {
        printf("| flag / key | default | SIGHUP | meaning |\n|---|---|---|---|\n");
        for (size_t i = 0; i < NOPTS; i++)
            printf("| `--%s`%s%s | `%s` | %s | %s |\n", config__opts[i].name,
                   config__opts[i].type == OPT_BOOL ? "" : " ", types[config__opts[i].type],
                   config__opts[i].def[0] ? config__opts[i].def : "(none)",
                   config__opts[i].flags & OPT_RELOAD ? "reload" : "", config__opts[i].help);
        return;
    }
    for (size_t i = 0; i < NOPTS; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s %s", config__opts[i].name, types[config__opts[i].type]);
        printf("  %-28s %s", left, config__opts[i].help);
        if (config__opts[i].def[0]) printf(" [%s]", config__opts[i].def);
        if (config__opts[i].flags & OPT_RELOAD) printf(" (SIGHUP reloads)");
        printf("\n");
    }
}
