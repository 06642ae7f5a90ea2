/*
 * main.c: the `sori` command: subcommands, flags, startup, signals and
 * shutdown.
 *
 * `sori serve` reads the config, prepares the data directory and the secret,
 * loads the browser client, starts the workers and waits on the main thread
 * for signals (all handled on the main loop, never in a worker):
 *   SIGTERM/SIGINT: drain: stop accepting (listeners closed, /healthz 503),
 *     close WebSockets with 1012 "server restarting, reconnect" (STOMP gets
 *     an ERROR frame first), let in-flight requests finish, wait up to
 *     --drain-timeout-ms, then commit everything the store has queued, stop
 *     the bus and the push thread, and exit 0;
 *   SIGHUP: config_reload (util/config.c): re-read --config, validate it all,
 *     apply the reloadable options, then the hooks (main__on_reload first);
 *   SIGUSR1: reopen --log-file (after logrotate moved it).
 * During the drain SIGHUP and SIGUSR1 are ignored (so a logrotate run cannot
 * kill a draining node) and a second SIGTERM/SIGINT kills the process.
 * Exit codes: 0 ok, 1 runtime failure, 2 bad usage (flag, config value).
 */
#include "auth/auth.h"
#include "bench/bench.h"
#include "http/http_server.h"
#include "chat/chat.h"
#include "http/http_static.h"
#include "net/net.h"
#include "proto/proto.h"
#include "push/push.h"
#include "util/config.h"
#include "util/err.h"
#include "util/log.h"
#include "util/memwatch.h"
#include "util/metrics.h"
#include "ws/ws.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef SORI_VERSION
#define SORI_VERSION "0.1.0"
#endif

static void usage(FILE *out)
{
    fprintf(out,
            "sori %s: a real-time chat server\n\n"
            "usage:\n"
            "  sori serve [flags]      run a chat node\n"
            "  sori token --user NAME [--ttl 24h] [--data-dir D | --secret S]\n"
            "                          mint a token with the server's secret\n"
            "  sori bench [flags]      load-test a running server (sori bench --help)\n"
            "  sori version            print the version\n"
            "  sori help               this text\n\n"
            "flags of `sori serve` (also `name = value` lines in a --config file):\n",
            SORI_VERSION);
    if (out == stdout) config_print_help(0);
}

static int mkdir_p(const char *path, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) goto fail;
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) goto fail;
    return 0;
fail:
    snprintf(err, errlen, "--data-dir %.200s: cannot create %.200s: %s", path, tmp, strerror(errno));
    return SORI_EIO;
}

/* --secret, else SORI_SECRET, else DATA_DIR/secret (made once, mode 0600). */
static int load_secret(char *err, size_t errlen)
{
    if (sori_config.secret && *sori_config.secret) return 0;
    /* (the same order in `sori serve` and `sori token`, so they agree) */
    const char *env = getenv("SORI_SECRET");
    if (env && *env) {
        free(sori_config.secret);
        sori_config.secret = strdup(env);
        return 0;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/secret", sori_config.data_dir);
    char hex[65] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, hex, 64);
        close(fd);
        if (n < 32) {
            snprintf(err, errlen, "%.300s: the secret file is too short; delete it to make a new one", path);
            return SORI_EINVAL;
        }
        hex[n] = 0;
        hex[strcspn(hex, "\r\n")] = 0;
        free(sori_config.secret);
        sori_config.secret = strdup(hex);
        return 0;
    }
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        snprintf(err, errlen, "cannot get random bytes for the secret");
        return SORI_EIO;
    }
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, hex, 64) != 64) {
        snprintf(err, errlen, "cannot write %.300s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return SORI_EIO;
    }
    close(fd);
    free(sori_config.secret);
    sori_config.secret = strdup(hex);
    LOG_INFO("main", "generated a new secret in %s", path);
    return 0;
}

static const char *find_web_dir(void)
{
    static char found[PATH_MAX];
    if (sori_config.web_dir && *sori_config.web_dir) return sori_config.web_dir;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *dir = dirname(exe);
        const char *rel[] = {"/../web", "/../../web"};
        for (int i = 0; i < 2; i++) {
            snprintf(found, sizeof found, "%s%s/index.html", dir, rel[i]);
            if (access(found, R_OK) == 0) {
                snprintf(found, sizeof found, "%s%s", dir, rel[i]);
                return found;
            }
        }
    }
    return "./web";
}

/* The main loop's signal handles (main thread only). */
static struct {
    uv_signal_t term, intr, hup, usr1;
    uv_timer_t memtimer; /* reads the resident size once a second (memwatch) */
    uint64_t max_conns_cap; /* the open-files limit's cap on --max-connections */
} main__sig;

static void main__close_signal(uv_signal_t *s)
{
    if (!uv_is_closing((uv_handle_t *)s)) uv_close((uv_handle_t *)s, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    int drain_ms = sori_config.drain_timeout_ms; /* main thread: the writer itself */
    LOG_INFO("main", "%s: draining (up to %d ms): listeners closed, WebSockets closed with 1012",
             signum == SIGTERM ? "SIGTERM" : "SIGINT", drain_ms);
    http_set_draining(1);
    net_drain((unsigned)drain_ms);
    main__close_signal(&main__sig.term);
    main__close_signal(&main__sig.intr);
    main__close_signal(&main__sig.hup);
    main__close_signal(&main__sig.usr1);
    if (!uv_is_closing((uv_handle_t *)&main__sig.memtimer)) uv_close((uv_handle_t *)&main__sig.memtimer, NULL);
    /* uv_close restored the default actions; reload and reopen could only
     * kill the draining node now. */
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
}

/* Cross-option rules and values other modules must accept: the same checks
 * at startup (exit 2) and on SIGHUP (the reload is refused). */
static int main__validate(const sori_config_t *c, char *err, size_t errlen)
{
    char sub[400];
    if (log_level_parse(c->log_level) < 0) {
        snprintf(err, errlen, "--log-level: expected error, warn, info or debug, got \"%.100s\"", c->log_level);
        return SORI_EINVAL;
    }
    if (c->out_limit <= c->ws_max_message) {
        snprintf(err, errlen, "--out-limit (%lld) must be larger than --ws-max-message (%lld)",
                 (long long)c->out_limit, (long long)c->ws_max_message);
        return SORI_EINVAL;
    }
    if (push_url_check(c->push_webhook, sub, sizeof sub)) {
        snprintf(err, errlen, "--push-webhook: %s", sub);
        return SORI_EINVAL;
    }
    if (strcmp(c->durability, "sync") && strcmp(c->durability, "async")) {
        snprintf(err, errlen, "--durability: expected sync or async, got \"%.100s\"", c->durability);
        return SORI_EINVAL;
    }
    return 0;
}

/* After a reload: modules that copied a value at startup take the new one. */
static void main__on_reload(void *arg)
{
    (void)arg;
    log_level_set(log_level_parse(sori_config.log_level)); /* validated */
    uint64_t max_conns = (uint64_t)sori_config.max_connections;
    if (main__sig.max_conns_cap && max_conns > main__sig.max_conns_cap) max_conns = main__sig.max_conns_cap;
    net_set_limits(max_conns, (uint64_t)sori_config.out_limit);
    chat_set_limits((size_t)sori_config.max_text, sori_config.max_rooms_per_conn,
                    (uint64_t)sori_config.out_limit / 4);
    http_route_set_limit("POST", "/api/uploads", (uint64_t)sori_config.upload_max);
    push_set_limits(sori_config.push_preview, sori_config.push_rate, sori_config.push_attempts,
                    sori_config.push_delay_ms);
}

static void on_sighup(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    char err[512];
    LOG_INFO("config", "SIGHUP: reloading %s", sori_config.config_file[0] ? sori_config.config_file : "the flags (no --config file)");
    if (config_reload(main__validate, err, sizeof err))
        LOG_ERROR("config", "reload refused, the running config stays: %s", err);
}

static void on_sigusr1(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    char err[512];
    if (!sori_config.log_file[0]) {
        LOG_INFO("main", "SIGUSR1: logging to stderr, nothing to reopen");
        return;
    }
    if (log_reopen(err, sizeof err))
        LOG_ERROR("main", "SIGUSR1: %s; still logging to the old file", err);
    else
        LOG_INFO("main", "SIGUSR1: reopened the log file %s", sori_config.log_file);
}

/* A reload hook: load the TLS certificate and key again (new connections
 * get them, open ones keep theirs; a bad file keeps the running ones). */
static void main__tls_reload(void *arg)
{
    (void)arg;
    char err[512];
    if (net_tls_reload(sori_config.tls_cert, sori_config.tls_key, err, sizeof err))
        LOG_ERROR("main", "SIGHUP: TLS certificate not reloaded, the running one stays: %s", err);
    else
        LOG_INFO("main", "SIGHUP: TLS certificate %s reloaded", sori_config.tls_cert);
}

/* --pid-file: written at startup, removed at a clean exit. */
static int main__write_pid(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "w");
    int ok = f && fprintf(f, "%ld\n", (long)getpid()) > 0;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) {
        snprintf(err, errlen, "--pid-file: cannot write %.300s: %s", path, strerror(errno));
        return SORI_EIO;
    }
    return 0;
}

static void on_worker_stop(net_worker_t *w)
{
    (void)w;
    ws_thread_cleanup();
}

/* Node-wide gauges for /metrics, read at scrape time. */
static double main_gauge_connections(void) { return (double)net_connections(); }
static double main_gauge_rooms(void)
{
    uint64_t r, u;
    chat_counts(&r, &u);
    return (double)r;
}
static double main_gauge_users(void)
{
    uint64_t r, u;
    chat_counts(&r, &u);
    return (double)u;
}

static double main_gauge_rss(void) { return (double)memwatch_rss(); }
static double main_gauge_high_water(void) { return (double)memwatch_high_water(); }
static double main_gauge_store_queue(void) { return (double)chat_store_queue(); }

/* Samples the resident memory once a second (--memory-high-water). */
static void main_memwatch_cb(uv_timer_t *t)
{
    (void)t;
    int was = memwatch_over();
    memwatch_sample();
    int now = memwatch_over();
    if (now != was)
        LOG_WARN("main", "resident memory %llu MiB is %s the high-water mark %llu MiB%s",
                 (unsigned long long)(memwatch_rss() >> 20), now ? "over" : "back under",
                 (unsigned long long)(memwatch_high_water() >> 20),
                 now ? ": refusing new WebSocket sessions, writes, sends and creates" : "");
}

static int cmd_serve(int argc, char **argv)
{
    char err[512];
    config_defaults(&sori_config);
    if (config_parse_args(&sori_config, argc, argv, err, sizeof err)) {
        fprintf(stderr, "sori: %s\n", err);
        return 2;
    }
    if (main__validate(&sori_config, err, sizeof err)) {
        fprintf(stderr, "sori: %s\n", err);
        return 2;
    }
    /* What SIGHUP compares the file against: the options as given, before
     * anything below derives values from them (the secret, the caps). */
    config_reload_init(argc, argv);
    log_level_set(log_level_parse(sori_config.log_level));
    if (sori_config.log_file[0] && log_open(sori_config.log_file, err, sizeof err)) {
        fprintf(stderr, "sori: %s\n", err);
        return 1;
    }
    if ((sori_config.tls_cert && sori_config.tls_cert[0]) || (sori_config.tls_key && sori_config.tls_key[0])) {
        if (net_tls_init(sori_config.tls_cert, sori_config.tls_key, err, sizeof err)) {
            fprintf(stderr, "sori: %s\n", err);
            return 2;
        }
    }
    const store_type_t *stype = &store_type_sqlite;
    const char *surl = sori_config.data_dir;
    if (sori_config.db && sori_config.db[0]) {
        const char *db = sori_config.db;
        if (!strncmp(db, "postgresql://", 13) || !strncmp(db, "postgres://", 11)) {
            stype = store_type_find("postgresql");
            if (!stype) {
                fprintf(stderr, "sori: --db: this build has no PostgreSQL store\n");
                return 2;
            }
        } else {
            fprintf(stderr, "sori: --db: expected postgresql://user@host:port/dbname (or nothing for SQLite)\n");
            return 2;
        }
        surl = db;
    }
    if (sori_config.redis && sori_config.redis[0] && stype != store_type_find("postgresql")) {
        fprintf(stderr, "sori: --redis: the nodes of a cluster share their store: give --db postgresql://...\n");
        return 2;
    }
    if (mkdir_p(sori_config.data_dir, err, sizeof err) || load_secret(err, sizeof err)) {
        fprintf(stderr, "sori: %s\n", err);
        return 1;
    }
    const char *web = find_web_dir();
    if (http_static_load(web, err, sizeof err)) LOG_WARN("main", "no browser client: %s", err);

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    uint64_t max_conns = (uint64_t)sori_config.max_connections;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur > 64) main__sig.max_conns_cap = rl.rlim_cur - 64;
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur > 64 && max_conns > rl.rlim_cur - 64) {
            max_conns = rl.rlim_cur - 64;
            LOG_INFO("main", "max-connections capped at %llu by the open-files limit",
                     (unsigned long long)max_conns);
        }
    }

    int durability = !strcmp(sori_config.durability, "sync") ? STORE_SYNC
                     : !strcmp(sori_config.durability, "async") ? STORE_ASYNC : -1;
    if (durability < 0) {
        fprintf(stderr, "sori: --durability: expected sync or async, got \"%s\"\n", sori_config.durability);
        return 2;
    }
    int workers = sori_config.workers;
    if (workers == 0) workers = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (workers < 1) workers = 1;
    chat_config_t ccfg = {
        .durability = durability,
        .flush_ms = sori_config.flush_ms,
        .ring = sori_config.room_ring,
        .max_text = (size_t)sori_config.max_text,
        .max_rooms_per_conn = sori_config.max_rooms_per_conn,
        .catchup_budget = (uint64_t)sori_config.out_limit / 4,
        .node_id = sori_config.node_id,
        .workers = workers,
    };
    if (chat_init(&ccfg, stype, surl, err, sizeof err)) {
        fprintf(stderr, "sori: %s\n", err);
        return 1;
    }
    if (sori_config.redis && sori_config.redis[0]) {
        if (chat_cluster_start(sori_config.redis, sori_config.node_id, sori_config.presence_ttl_ms,
                               sori_config.node_ttl_ms, err, sizeof err)) {
            fprintf(stderr, "sori: --redis: %s\n", err);
            chat_shutdown();
            return 2;
        }
    }
    if (auth_pw_init()) {
        fprintf(stderr, "sori: libsodium failed to initialise\n");
        return 1;
    }
    push_config_t pcfg = {
        .url = sori_config.push_webhook,
        .preview = sori_config.push_preview,
        .queue_max = sori_config.push_queue,
        .rate_per_min = sori_config.push_rate,
        .attempts = sori_config.push_attempts,
        .delay_ms = sori_config.push_delay_ms,
        .still_unread = chat_push_still_unread,
    };
    if (push_start(&pcfg, err, sizeof err)) {
        fprintf(stderr, "sori: --push-webhook: %s\n", err);
        chat_shutdown();
        return 2;
    }
    push_metrics_register();
    metrics_gauge("sori_connections", "Open connections (HTTP and WebSocket).", main_gauge_connections);
    metrics_gauge("sori_rooms", "Rooms on this node.", main_gauge_rooms);
    metrics_gauge("sori_users", "Users this node knows.", main_gauge_users);
    metrics_gauge("sori_memory_rss_bytes", "Resident memory, sampled once a second.", main_gauge_rss);
    metrics_gauge("sori_memory_high_water_bytes", "The --memory-high-water mark in force.", main_gauge_high_water);
    metrics_gauge("sori_store_queue_ops", "Store writes queued and not yet committed.", main_gauge_store_queue);
    proto_init();
    http_set_health_check(chat_unhealthy);
    http_route_add("GET", "/healthz", http_healthz_handle);
    http_route_add("GET", "/ws", proto_ws_route);
    if (sori_config.ws_echo) http_route_add("GET", "/echo", proto_echo_route);
    proto_rest_routes();
    http_route_add(NULL, "/api/*", http_not_found_handle);
    http_route_add(NULL, "/*", http_static_handle);

    net_config_t ncfg = {
        .host = sori_config.host,
        .port = sori_config.port,
        .workers = workers,
        .max_connections = max_conns,
        .out_limit = (uint64_t)sori_config.out_limit,
        .on_accept = http_accept,
        .on_worker_stop = on_worker_stop,
    };
    /* Signals are caught before any connection can be served, so a SIGTERM
     * right after the first /healthz still drains cleanly. */
    uv_loop_t *loop = uv_default_loop();
    uv_signal_init(loop, &main__sig.term);
    uv_signal_init(loop, &main__sig.intr);
    uv_signal_init(loop, &main__sig.hup);
    uv_signal_init(loop, &main__sig.usr1);
    uv_signal_start(&main__sig.term, on_signal, SIGTERM);
    uv_signal_start(&main__sig.intr, on_signal, SIGINT);
    uv_signal_start(&main__sig.hup, on_sighup, SIGHUP);
    uv_signal_start(&main__sig.usr1, on_sigusr1, SIGUSR1);
    config_on_reload(main__on_reload, NULL); /* first: the hooks others add see the new limits applied */
    if (net_tls_on()) config_on_reload(main__tls_reload, NULL);
    memwatch_init();
    LOG_INFO("main", "memory high-water mark %llu MiB (resident now %llu MiB)%s",
             (unsigned long long)(memwatch_high_water() >> 20), (unsigned long long)(memwatch_rss() >> 20),
             memwatch_over() ? ": over it, refusing new WebSocket sessions, writes, sends and creates" : "");
    uv_timer_init(loop, &main__sig.memtimer);
    uv_timer_start(&main__sig.memtimer, main_memwatch_cb, 1000, 1000);
    if (net_start(&ncfg, err, sizeof err)) {
        fprintf(stderr, "sori: %s\n", err);
        return 1;
    }
    if (sori_config.pid_file[0] && main__write_pid(sori_config.pid_file, err, sizeof err)) {
        fprintf(stderr, "sori: %s\n", err);
        return 1;
    }
    if (chat_cluster_on()) {
        char ws[600];
        if (sori_config.public_url && sori_config.public_url[0])
            snprintf(ws, sizeof ws, "%s", sori_config.public_url);
        else
        {
            const char *h = strcmp(sori_config.host, "0.0.0.0") && strcmp(sori_config.host, "::") ? sori_config.host
                                                                                                 : "127.0.0.1";
            snprintf(ws, sizeof ws, strchr(h, ':') ? "%s://[%s]:%d/ws" : "%s://%s:%d/ws",
                     net_tls_on() ? "wss" : "ws", h, net_port());
        }
        chat_cluster_register(ws);
        LOG_INFO("main", "cluster mode: node %d, registered as %s", sori_config.node_id, ws);
    }
    const char *shown = sori_config.host;
    if (!strcmp(shown, "0.0.0.0") || !strcmp(shown, "::")) shown = "127.0.0.1";
    printf("sori %s serving %s://%s%s%s:%d/ (data in %s, %d worker%s)\n", SORI_VERSION,
           net_tls_on() ? "https" : "http", strchr(shown, ':') ? "[" : "", shown, strchr(shown, ':') ? "]" : "", net_port(),
           sori_config.data_dir, workers, workers == 1 ? "" : "s");
    fflush(stdout);

    uv_run(loop, UV_RUN_DEFAULT); /* until the drain closed the signals and the memory timer */
    net_join();
    chat_cluster_stop();
    push_stop();
    chat_shutdown(); /* commits what is queued; replies to closed workers are dropped */
    net_free();
    net_tls_free();
    uv_loop_close(loop);
    http_static_free();
    proto_rest_free();
    if (sori_config.pid_file[0]) unlink(sori_config.pid_file);
    LOG_INFO("main", "stopped");
    return 0;
}

/* "90", "90s", "30m", "24h", "7d" -> seconds; -1 if malformed. */
static int64_t parse_ttl(const char *s)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || v <= 0) return -1;
    int64_t mul = 1;
    if (*end == 'm') mul = 60, end++;
    else if (*end == 'h') mul = 3600, end++;
    else if (*end == 'd') mul = 86400, end++;
    else if (*end == 's') end++;
    if (*end || v > INT64_MAX / mul / 2) return -1;
    return v * mul;
}

static int cmd_token(int argc, char **argv)
{
    char err[512];
    const char *user = NULL;
    int64_t ttl = 86400;
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int nrest = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--user") && i + 1 < argc) user = argv[++i];
        else if (!strncmp(argv[i], "--user=", 7)) user = argv[i] + 7;
        else if ((!strcmp(argv[i], "--ttl") && i + 1 < argc) || !strncmp(argv[i], "--ttl=", 6)) {
            const char *v = argv[i][5] == '=' ? argv[i] + 6 : argv[++i];
            if ((ttl = parse_ttl(v)) < 0) {
                fprintf(stderr, "sori: --ttl: expected a duration like 3600, 90m, 24h or 7d, got \"%s\"\n", v);
                free(rest);
                return 2;
            }
        } else rest[nrest++] = argv[i];
    }
    config_defaults(&sori_config);
    int rc = config_parse_args(&sori_config, nrest, rest, err, sizeof err);
    free(rest);
    if (rc) {
        fprintf(stderr, "sori: %s\n", err);
        return 2;
    }
    if (!user || !auth_valid_user(user, strlen(user))) {
        fprintf(stderr, "sori: --user: expected a user name of 1-32 of A-Z a-z 0-9 _ . -\n");
        return 2;
    }
    if (mkdir_p(sori_config.data_dir, err, sizeof err) || load_secret(err, sizeof err)) {
        fprintf(stderr, "sori: %s\n", err);
        return 1;
    }
    char tok[1024];
    int64_t now = (int64_t)time(NULL);
    if (auth_token_mint(sori_config.secret, user, now, now + ttl, tok, sizeof tok) < 0) {
        fprintf(stderr, "sori: cannot mint the token\n");
        return 1;
    }
    printf("%s\n", tok);
    return 0;
}

static void free_config_at_exit(void) { config_free(&sori_config); }

int main(int argc, char **argv)
{
    atexit(free_config_at_exit); /* every exit path, so LeakSanitizer stays quiet */
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 2, argv + 2);
    if (!strcmp(cmd, "token")) return cmd_token(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return bench_main(argc - 2, argv + 2);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("sori %s\n", SORI_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        config_defaults(&sori_config);
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "config-doc")) {
        config_defaults(&sori_config);
        config_print_help(1);
        return 0;
    }
    fprintf(stderr, "sori: unknown command \"%s\" (see sori help)\n", cmd);
    return 2;
}
