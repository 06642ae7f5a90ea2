/*
 * bench.c: `sori bench`: flags, the coordinator and the report.
 *
 * The coordinator (the main thread) parses and checks the flags, raises the
 * open-files limit, starts --threads loop threads (bench_loop.c) and walks
 * them through the phases: connect, create rooms, join, run (warm-up, then
 * the measured window), drain, close. Between phases it waits until every
 * thread has entered the phase and the counters say the step is complete
 * (or a timeout passed), polling every millisecond, so the loop threads
 * never block on each other. At the edges of the measured window it samples
 * its own CPU (getrusage) and the server's (/proc/PID/stat, --server-pid),
 * and how long each side's threads were runnable but waiting for a CPU
 * (schedstat: a busy machine shows up there before it skews the latency);
 * the same for the --cpu processes (with their children for PID+), and it
 * runs --window-hook just outside those samples;
 * around the connect and join phases the server's VmRSS. After the threads
 * are joined it merges their counters and histograms and prints one JSON
 * line on stdout and a summary on stderr. The bench never starts a server.
 */
#include "bench/bench.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

bench_run_t bench_g;

static volatile sig_atomic_t bench__stop;

static const char *const bench__scenarios[] = {"fanout", "connections", "dm", "durable"};

/* ---- flags ---- */

#define S_FAN (1u << BENCH_FANOUT)
#define S_CON (1u << BENCH_CONNECTIONS)
#define S_DM (1u << BENCH_DM)
#define S_DUR (1u << BENCH_DURABLE)
#define S_ALL (S_FAN | S_CON | S_DM | S_DUR)

typedef struct {
    const char *name;
    char kind;         /* 'i' int, 'd' number, 's' string */
    double min, max;
    unsigned scenarios;
    const char *arg, *help;
} bench_flag_t;

enum {
    F_SCENARIO, F_URL, F_THREADS, F_SOURCES, F_ROOMS, F_SUBS, F_PUBS, F_RATE, F_WINDOW, F_CONNS, F_PAIRS,
    F_SIZE, F_DURATION, F_WARMUP, F_DRAIN, F_CONNECT_TIMEOUT, F_CONCURRENCY, F_SERVER_PID, F_TAG, F_PEER_PROTOCOL,
    F_PUB_URL, F_SPREAD, F_CPU, F_WINDOW_HOOK, F_JOIN_DELAY, F_COUNT
};

static const bench_flag_t bench__flags[F_COUNT] = {
    [F_SCENARIO] = {"scenario", 's', 0, 0, S_ALL, "NAME", "fanout, connections, dm or durable (default fanout)"},
    [F_URL] = {"url", 's', 0, 0, S_ALL, "URL[,URL]",
               "the server's WebSocket endpoint (default ws://127.0.0.1:8080/ws; wss:// speaks TLS without "
               "checking the certificate); several, comma-separated: "
               "connections go to them in turn (see --spread), e.g. the nodes of a cluster"},
    [F_THREADS] = {"threads", 'i', 1, 64, S_ALL, "N", "event-loop threads of the bench (default 1)"},
    [F_SOURCES] = {"sources", 'i', 1, 254, S_ALL, "N",
                   "bind to 127.0.0.2..127.0.0.(N+1) in turn: ~28k connections each (default 1: no bind)"},
    [F_ROOMS] = {"rooms", 'i', 1, 1000000, S_FAN | S_CON | S_DUR, "R",
                 "rooms (default 1; durable: one per connection)"},
    [F_SUBS] = {"subs", 'i', 0, 1000000, S_FAN, "S", "fanout: subscribers per room (default 10)"},
    [F_PUBS] = {"pubs", 'i', 1, 100000, S_FAN, "P", "fanout: publishers per room, which also receive (default 1)"},
    [F_RATE] = {"rate", 'd', 0.001, 10000000, S_FAN, "M",
                "fanout: messages/s per publisher, open loop, evenly paced (default 10 unless --window)"},
    [F_WINDOW] = {"window", 'i', 1, 100000, S_FAN | S_DUR, "W",
                  "closed loop: sends in flight per sender, the next goes on each ack (durable default 8)"},
    [F_CONNS] = {"conns", 'i', 1, 1000000, S_CON | S_DUR, "N", "connections (connections default 100, durable 4)"},
    [F_PAIRS] = {"pairs", 'i', 1, 500000, S_DM, "N", "dm: pairs of users ping-ponging direct messages (default 10)"},
    [F_SIZE] = {"size", 'i', BENCH_TS_TEXT, 16384, S_FAN | S_DM | S_DUR, "BYTES",
                "message text size, at least 21: \"t=\" and a 19-digit µs timestamp, padded (default 21)"},
    [F_DURATION] = {"duration", 'd', 0, 86400, S_ALL, "SECS", "measured window (default 10)"},
    [F_WARMUP] = {"warmup", 'd', 0, 3600, S_ALL, "SECS",
                  "load before the measured window (default 1; connections 0)"},
    [F_DRAIN] = {"drain", 'd', 0, 600, S_ALL, "SECS",
                 "after the window: longest wait for acks and deliveries still due (default 5)"},
    [F_CONNECT_TIMEOUT] = {"connect-timeout", 'd', 0.1, 3600, S_ALL, "SECS",
                           "longest the connect phase may take; late connections fail (default 60)"},
    [F_CONCURRENCY] = {"connect-concurrency", 'i', 1, 100000, S_ALL, "N",
                       "handshakes in progress at once (default 256)"},
    [F_SERVER_PID] = {"server-pid", 'i', 1, 4194304, S_ALL, "PID",
                      "measure this server process: CPU over the window, RSS per connection"},
    [F_TAG] = {"tag", 's', 0, 0, S_ALL, "TAG",
               "user and room names are b<TAG>.<n> and bench.<TAG>.<n> (default: random per run)"},
    [F_PEER_PROTOCOL] = {"peer-protocol", 's', 0, 0, S_FAN | S_CON, "NAME",
                         "sori (default), or nchan: an Nchan pubsub location, --url ws://HOST:PORT/PREFIX/ "
                         "(bench/README.md)"},
    [F_PUB_URL] = {"pub-url", 's', 0, 0, S_FAN, "URL[,URL]",
                   "fanout: publishers connect here (in turn), subscribers to --url; deliveries from a "
                   "publisher on another URL are counted as crossing servers"},
    [F_SPREAD] = {"spread", 's', 0, 0, S_ALL, "HOW",
                  "with several URLs: conn (default) gives each connection of a role the next URL; room gives "
                  "all of room r's connections of a role URL r mod N"},
    [F_CPU] = {"cpu", 's', 0, 0, S_ALL, "L=PID[+],...",
               "also measure these processes' CPU over the window, summed per label L; PID+ adds its children "
               "(e.g. a PostgreSQL postmaster's backends)"},
    [F_WINDOW_HOOK] = {"window-hook", 's', 0, 0, S_ALL, "CMD",
                       "run `sh -c \"CMD start\"` just before the window and `sh -c \"CMD end\"` just after it "
                       "(its stdout goes to stderr), e.g. to snapshot a Redis's INFO commandstats"},
    [F_JOIN_DELAY] = {"join-delay", 'd', 0, 60, S_FAN | S_CON | S_DUR, "SECS",
                      "wait this long after the rooms are created before joining them (default 0), e.g. "
                      "while a cluster tells its other nodes about the new rooms"},
};

static void bench__usage(FILE *out)
{
    fprintf(out,
            "usage: sori bench [--scenario NAME] [flags]\n\n"
            "A load generator for a running sori server (it never starts one). It connects as guests\n"
            "(?user=NAME), so start the server with --allow-guests, and lift the per-connection command\n"
            "limit for fast publishers, e.g.:\n"
            "  sori serve --allow-guests --rate 1000000 --burst 1000000 --port 8080\n"
            "Prints one JSON line on stdout (jq-friendly: `| tail -1 | jq`) and a summary on stderr.\n\n"
            "scenarios:\n"
            "  fanout       --rooms R rooms, each with --pubs P publishers and --subs S subscribers; every\n"
            "               publisher sends at --rate M msg/s (open loop) or keeps --window W unacked sends\n"
            "               (closed loop). Latency is measured at every recipient; loss, duplicates and\n"
            "               order are checked by seq.\n"
            "  connections  --conns N idle connections over --rooms R rooms: connect rate, handshake\n"
            "               failures, server RSS per connection (with --server-pid); held for --duration.\n"
            "  dm           --pairs N pairs of users ping-ponging direct messages: round trips/s, latency.\n"
            "  durable      --conns C senders with --window W sends in flight each: ack rate and send->ack\n"
            "               latency; run against servers started with --durability sync or async.\n\n"
            "several servers (the nodes of a cluster): --url A,B spreads the connections over them (--pub-url,\n"
            "--spread), deliveries from a sender on another URL are counted as crossing, and --cpu measures\n"
            "more processes (bench/README.md, bench/cluster.sh).\n\n"
            "flags:\n");
    for (int i = 0; i < F_COUNT; i++) {
        const bench_flag_t *f = &bench__flags[i];
        char left[48];
        snprintf(left, sizeof left, "--%s %s", f->name, f->arg);
        fprintf(out, "  %-27s %s\n", left, f->help);
    }
    fprintf(out, "  %-27s %s\n", "--help", "this text");
}

static int bench__bad(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "sori bench: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, " (see sori bench --help)\n");
    return 2;
}

/* ws[s]://HOST[:PORT][/PATH] -> host, port, path, address, TLS. */
static int bench__parse_url(bench_target_t *o, const char *url)
{
    o->tls = !strncmp(url, "wss://", 6);
    if (strncmp(url, "ws://", 5) && !o->tls)
        return bench__bad("--url: expected ws://HOST:PORT/PATH or wss://..., got \"%s\"%s", url, "");
    const char *h = url + (o->tls ? 6 : 5), *he, *rest;
    if (*h == '[') {
        he = strchr(h, ']');
        if (!he) return bench__bad("--url: unclosed [ in \"%s\"%s", url, "");
        h++;
        rest = he + 1;
    } else {
        he = h + strcspn(h, ":/?");
        rest = he;
    }
    if (he == h || (size_t)(he - h) >= sizeof o->host) return bench__bad("--url: no host in \"%s\"%s", url, "");
    memcpy(o->host, h, (size_t)(he - h));
    o->host[he - h] = 0;
    snprintf(o->port_str, sizeof o->port_str, o->tls ? "443" : "80");
    if (*rest == ':') {
        rest++;
        size_t n = strspn(rest, "0123456789");
        long port = n && n < 6 ? strtol(rest, NULL, 10) : 0;
        if (port < 1 || port > 65535) return bench__bad("--url: bad port in \"%s\"%s", url, "");
        snprintf(o->port_str, sizeof o->port_str, "%ld", port);
        rest += n;
    }
    if (*rest && *rest != '/' && *rest != '?') return bench__bad("--url: cannot parse \"%s\"%s", url, "");
    if (strlen(rest) + 2 >= sizeof o->path) return bench__bad("--url: path too long in \"%s\"%s", url, "");
    snprintf(o->path, sizeof o->path, "%s%s", *rest == '/' ? "" : "/", *rest ? rest : "ws");
    if (!strcmp(o->path, "/")) snprintf(o->path, sizeof o->path, "/ws");
    for (const char *p = o->path; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f) return bench__bad("--url: bad character in \"%s\"%s", url, "");
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(o->host, o->port_str, &hints, &res);
    if (rc || !res) return bench__bad("--url: cannot resolve %s: %s", o->host, gai_strerror(rc));
    memcpy(&o->addr, res->ai_addr, res->ai_addrlen);
    o->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* A comma-separated list of URLs -> indexes into o->tg (one target per
 * distinct URL string, shared by --url and --pub-url). */
static int bench__parse_urls(bench_opts_t *o, const char *flag, const char *list, int *idx, int *n)
{
    *n = 0;
    const char *p = list;
    for (;;) {
        size_t l = strcspn(p, ",");
        char one[800];
        if (!l || l >= sizeof one) return bench__bad("%s: empty or too long URL in \"%s\"", flag, list);
        memcpy(one, p, l);
        one[l] = 0;
        int k = 0;
        while (k < o->ntg && strcmp(o->tg[k].url, one)) k++;
        if (k == o->ntg) {
            if (o->ntg == BENCH_TARGETS_MAX) return bench__bad("%s: more than 16 distinct URLs%s", flag, "");
            if (bench__parse_url(&o->tg[k], one)) return 2;
            memcpy(o->tg[k].url, one, l + 1);
            o->ntg++;
        }
        if (*n == BENCH_TARGETS_MAX) return bench__bad("%s: more than 16 URLs%s", flag, "");
        idx[(*n)++] = k;
        if (!p[l]) return 0;
        p += l + 1;
    }
}

/* --cpu LABEL=PID[+][,LABEL=PID[+]...] */
static int bench__parse_cpu(bench_opts_t *o, const char *list)
{
    const char *p = list;
    for (;;) {
        size_t l = strcspn(p, ",");
        const char *eq = memchr(p, '=', l);
        if (!eq || eq == p || (size_t)(eq - p) >= sizeof o->cpu[0].label)
            return bench__bad("--cpu: expected LABEL=PID[+],... (labels up to 23 bytes), got \"%s\"%s", list, "");
        if (o->ncpu == BENCH_CPU_MAX) return bench__bad("--cpu: more than 32 processes%s%s", "", "");
        bench_cpu_t *c = &o->cpu[o->ncpu];
        memcpy(c->label, p, (size_t)(eq - p));
        c->label[eq - p] = 0;
        if (strchr(c->label, '"') || strchr(c->label, '\\'))
            return bench__bad("--cpu: a label may not hold quotes or backslashes: \"%s\"%s", list, "");
        const char *d = eq + 1, *e = p + l;
        size_t nd = strspn(d, "0123456789");
        long pid = nd && nd < 8 ? strtol(d, NULL, 10) : 0;
        c->children = d + nd < e && d[nd] == '+';
        if (pid < 1 || d + nd + (size_t)c->children != e)
            return bench__bad("--cpu: expected LABEL=PID[+],..., got \"%s\"%s", list, "");
        c->pid = (pid_t)pid;
        o->ncpu++;
        if (!*e) return 0;
        p = e + 1;
    }
}

static int bench__parse(bench_opts_t *o, int argc, char **argv)
{
    const char *val[F_COUNT] = {0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            bench__usage(stdout);
            return 1;
        }
        if (strncmp(a, "--", 2)) return bench__bad("unexpected argument \"%s\"%s", a, "");
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        int k = 0;
        while (k < F_COUNT && !(strlen(bench__flags[k].name) == nl && !strncmp(bench__flags[k].name, a + 2, nl))) k++;
        if (k == F_COUNT) return bench__bad("unknown flag %s%s", a, "");
        if (eq) {
            val[k] = eq + 1;
        } else {
            if (i + 1 >= argc) return bench__bad("%s needs a value%s", a, "");
            val[k] = argv[++i];
        }
    }
    memset(o, 0, sizeof *o);
    o->scenario = BENCH_FANOUT;
    if (val[F_SCENARIO]) {
        int s = 0;
        while (s < 4 && strcmp(val[F_SCENARIO], bench__scenarios[s])) s++;
        if (s == 4)
            return bench__bad("--scenario: expected fanout, connections, dm or durable, got \"%s\"%s",
                              val[F_SCENARIO], "");
        o->scenario = s;
    }
    double num[F_COUNT] = {0};
    for (int k = 0; k < F_COUNT; k++) {
        const bench_flag_t *f = &bench__flags[k];
        if (!val[k]) continue;
        if (!(f->scenarios & (1u << o->scenario))) {
            char flag[40];
            snprintf(flag, sizeof flag, "--%s", f->name);
            return bench__bad("%s does not apply to --scenario %s", flag, bench__scenarios[o->scenario]);
        }
        if (f->kind == 's') continue;
        char *end;
        errno = 0;
        double v = strtod(val[k], &end);
        char msg[160];
        if (end == val[k] || *end || errno || !isfinite(v) || v < f->min || v > f->max ||
            (f->kind == 'i' && v != floor(v))) {
            if (f->kind == 'i')
                snprintf(msg, sizeof msg, "--%s: expected an integer from %.0f to %.0f, got", f->name, f->min, f->max);
            else
                snprintf(msg, sizeof msg, "--%s: expected a number from %g to %g, got", f->name, f->min, f->max);
            return bench__bad("%s \"%s\"", msg, val[k]);
        }
        num[k] = v;
    }
#define NUM(k, dflt) (val[k] ? num[k] : (dflt))
    if (bench__parse_urls(o, "--url", val[F_URL] ? val[F_URL] : "ws://127.0.0.1:8080/ws", o->urls, &o->nurls))
        return 2;
    if (val[F_PUB_URL]) {
        if (bench__parse_urls(o, "--pub-url", val[F_PUB_URL], o->pub_urls, &o->npub_urls)) return 2;
    } else {
        memcpy(o->pub_urls, o->urls, sizeof o->urls);
        o->npub_urls = o->nurls;
    }
    if (val[F_SPREAD]) {
        if (!strcmp(val[F_SPREAD], "room"))
            o->spread_room = 1;
        else if (strcmp(val[F_SPREAD], "conn"))
            return bench__bad("--spread: expected conn or room, got \"%s\"%s", val[F_SPREAD], "");
    }
    if (val[F_CPU] && bench__parse_cpu(o, val[F_CPU])) return 2;
    o->window_hook = val[F_WINDOW_HOOK];
    o->join_delay = NUM(F_JOIN_DELAY, 0);
    o->threads = (int)NUM(F_THREADS, 1);
    o->sources = (int)NUM(F_SOURCES, 1);
    o->subs = (int)NUM(F_SUBS, 10);
    o->pubs = (int)NUM(F_PUBS, 1);
    o->conns = (int)NUM(F_CONNS, o->scenario == BENCH_DURABLE ? 4 : 100);
    o->rooms = (int)NUM(F_ROOMS, o->scenario == BENCH_DURABLE ? o->conns : 1);
    o->pairs = (int)NUM(F_PAIRS, 10);
    o->size = (int)NUM(F_SIZE, BENCH_TS_TEXT);
    o->duration = NUM(F_DURATION, 10);
    o->warmup = NUM(F_WARMUP, o->scenario == BENCH_CONNECTIONS ? 0 : 1);
    o->drain = NUM(F_DRAIN, 5);
    o->connect_timeout = NUM(F_CONNECT_TIMEOUT, 60);
    o->connect_concurrency = (int)NUM(F_CONCURRENCY, 256);
    o->server_pid = (pid_t)NUM(F_SERVER_PID, 0);
    if (o->scenario == BENCH_FANOUT) {
        if (val[F_RATE] && val[F_WINDOW]) return bench__bad("give --rate (open loop) or --window (closed loop), not both%s%s", "", "");
        o->rate = val[F_WINDOW] ? 0 : NUM(F_RATE, 10);
        o->window = (int)NUM(F_WINDOW, 0);
    } else if (o->scenario == BENCH_DURABLE) {
        o->window = (int)NUM(F_WINDOW, 8);
    }
    if ((o->scenario == BENCH_CONNECTIONS || o->scenario == BENCH_DURABLE) && o->rooms > o->conns) {
        char r[24], c[24];
        snprintf(r, sizeof r, "%d", o->rooms);
        snprintf(c, sizeof c, "%d", o->conns);
        return bench__bad("--rooms (%s) cannot exceed --conns (%s)", r, c);
    }
    if (val[F_PEER_PROTOCOL]) {
        if (!strcmp(val[F_PEER_PROTOCOL], "nchan")) {
            o->nchan = 1;
            for (int k = 0; k < o->ntg; k++) {
                const char *path = o->tg[k].path;
                if (strchr(path, '?') || path[strlen(path) - 1] != '/')
                    return bench__bad("--peer-protocol nchan: --url must end in the channel prefix and '/', "
                                      "e.g. ws://127.0.0.1:8080/chat/, not \"%s\"%s", path, "");
            }
        } else if (strcmp(val[F_PEER_PROTOCOL], "sori")) {
            return bench__bad("--peer-protocol: expected sori or nchan, got \"%s\"%s", val[F_PEER_PROTOCOL], "");
        }
    }
    if (val[F_TAG]) {
        size_t n = strlen(val[F_TAG]);
        if (n < 1 || n > 12 || strspn(val[F_TAG], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != n)
            return bench__bad("--tag: expected 1-12 letters and digits, got \"%s\"%s", val[F_TAG], "");
        memcpy(o->tag, val[F_TAG], n + 1);
    } else {
        static const char a36[] = "0123456789abcdefghijklmnopqrstuvwxyz";
        unsigned char r[6];
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
            uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
            memcpy(r, &x, sizeof r);
        }
        for (int i = 0; i < 6; i++) o->tag[i] = a36[r[i] % 36];
        o->tag[6] = 0;
    }
    for (int k = 0; o->sources > 1 && k < o->ntg; k++) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&o->tg[k].addr;
        if (o->tg[k].addr.ss_family != AF_INET || (ntohl(sin->sin_addr.s_addr) >> 24) != 127)
            return bench__bad("--sources needs an IPv4 loopback server (127.x.x.x), not %s%s", o->tg[k].host, "");
    }
    return 0;
#undef NUM
}

/* ---- process figures ---- */

static double bench__cpu_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

/* From /proc/PID/stat: utime + stime (*own) and cutime + cstime, the CPU
 * of its children that have exited and been waited for (*dead), in
 * seconds, and the parent's PID. 0, or -1 when pid is gone. */
static int bench__stat(pid_t pid, double *own, double *dead, pid_t *ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p) return -1;
    unsigned long long ut = 0, st = 0, cut = 0, cst = 0;
    int pp = 0;
    /* after ") ": state(3) ppid(4) pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14)
     * stime(15) cutime(16) cstime(17) */
    if (sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu", &pp, &ut, &st, &cut,
               &cst) != 5)
        return -1;
    double hz = (double)sysconf(_SC_CLK_TCK);
    if (own) *own = (double)(ut + st) / hz;
    if (dead) *dead = (double)(cut + cst) / hz;
    if (ppid) *ppid = (pid_t)pp;
    return 0;
}

/* utime + stime of pid in seconds, or -1. */
static double bench__cpu_proc(pid_t pid)
{
    double own;
    if (!pid || bench__stat(pid, &own, NULL, NULL)) return -1;
    return own;
}

/* Seconds thread tid of pid spent runnable but waiting for a CPU (the
 * second field of /proc/PID/task/TID/schedstat), or -1. */
static double bench__task_wait(pid_t pid, const char *tid)
{
    char p[96];
    snprintf(p, sizeof p, "/proc/%d/task/%.20s/schedstat", (int)pid, tid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    unsigned long long run = 0, wait = 0;
    int ok = fscanf(f, "%llu %llu", &run, &wait) == 2;
    fclose(f);
    return ok ? (double)wait / 1e9 : -1;
}

/* The same summed over the bench's loop threads (not the coordinator,
 * whose short naps would only add noise). */
static double bench__loop_wait(void)
{
    double total = 0;
    for (int i = 0; i < bench_g.o.threads; i++) {
        char tid[24];
        snprintf(tid, sizeof tid, "%d", atomic_load(&bench_g.threads[i].os_tid));
        double w = bench__task_wait(getpid(), tid);
        if (w < 0) return -1;
        total += w;
    }
    return total;
}

/* The same summed over every thread of pid: shows when the figures were
 * taken on a machine too busy to trust them. */
static double bench__runq_wait(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    double total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        double w = bench__task_wait(pid, e->d_name);
        if (w > 0) total += w;
    }
    closedir(d);
    return total;
}

/* One --cpu entry now: CPU seconds and run-queue wait, with children
 * (PID+): the process's own time and that of its children, live ones read
 * from their /proc entries, exited ones from its cutime + cstime once it has
 * waited for them. Over a window the difference counts each child's CPU in
 * the window exactly once, whether it was born, lived through or exited in
 * it. -1 when the process is gone. */
static void bench__cpu_entry(const bench_cpu_t *e, double *cpu, double *wait)
{
    double own, dead;
    *cpu = *wait = -1;
    if (bench__stat(e->pid, &own, &dead, NULL)) return;
    double w = bench__runq_wait(e->pid);
    *cpu = own;
    *wait = w > 0 ? w : 0;
    if (!e->children) return;
    *cpu += dead;
    DIR *d = opendir("/proc");
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if ((unsigned)(de->d_name[0] - '0') > 9) continue;
        pid_t c = (pid_t)atoi(de->d_name), pp;
        double cown, cdead;
        if (bench__stat(c, &cown, &cdead, &pp) || pp != e->pid) continue;
        *cpu += cown + cdead;
        double cw = bench__runq_wait(c);
        if (cw > 0) *wait += cw;
    }
    closedir(d);
}

static void bench__cpu_sample(double *cpu, double *wait)
{
    for (int i = 0; i < bench_g.o.ncpu; i++) bench__cpu_entry(&bench_g.o.cpu[i], &cpu[i], &wait[i]);
}

/* --window-hook: `sh -c "CMD PHASE"`, its stdout sent to stderr (stdout is
 * the JSON line); waits for it. */
static void bench__hook(const char *phase)
{
    if (!bench_g.o.window_hook) return;
    char cmd[4096];
    if ((size_t)snprintf(cmd, sizeof cmd, "%s %s", bench_g.o.window_hook, phase) >= sizeof cmd) {
        fprintf(stderr, "sori bench: warning: --window-hook: command too long\n");
        return;
    }
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "sori bench: warning: --window-hook: fork: %s\n", strerror(errno));
        return;
    }
    if (pid == 0) {
        dup2(2, 1);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        fprintf(stderr, "sori bench: warning: --window-hook %s: exit status %d\n", phase,
                WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

/* VmRSS of pid in bytes, or -1. */
static long long bench__rss(pid_t pid)
{
    if (!pid) return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kb = strtoll(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* ---- the coordinator ---- */

static uint64_t bench__sum(size_t off)
{
    uint64_t s = 0;
    for (int i = 0; i < bench_g.o.threads; i++) {
        _Atomic uint64_t *p = (_Atomic uint64_t *)((char *)&bench_g.threads[i].live + off);
        s += atomic_load_explicit(p, memory_order_relaxed);
    }
    return s;
}
#define SUM(field) bench__sum(offsetof(bench_live_t, field))

static void bench__sleep_ms(double ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(fmod(ms, 1000) * 1e6)};
    nanosleep(&ts, NULL);
}

static void bench__advance(int phase)
{
    atomic_store_explicit(&bench_g.phase, phase, memory_order_release);
    for (int i = 0; i < bench_g.o.threads; i++) bench_thread_wake(&bench_g.threads[i]);
    for (;;) {
        int all = 1;
        for (int i = 0; i < bench_g.o.threads; i++)
            if (atomic_load_explicit(&bench_g.threads[i].live.phase_seen, memory_order_acquire) < (uint64_t)phase)
                all = 0;
        if (all) return;
        bench__sleep_ms(0.2);
    }
}

/* Sum over rooms of acked sends x connections in the room. */
static uint64_t bench__expected(void)
{
    uint64_t e = 0;
    for (uint32_t r = 0; r < bench_g.nrooms; r++)
        e += atomic_load_explicit(&bench_g.room_acked[r], memory_order_relaxed) *
             atomic_load_explicit(&bench_g.room_members[r], memory_order_relaxed);
    return e;
}

/* Polls until done() or the timeout (seconds) or a stop; 1 if done. */
static int bench__wait(int (*done)(void), double timeout)
{
    uint64_t end = bench_now_ns() + (uint64_t)(timeout * 1e9);
    while (!done()) {
        if (bench__stop || bench_now_ns() >= end) return done();
        bench__sleep_ms(1);
    }
    return 1;
}

static int bench__connect_done(void) { return SUM(opened) + SUM(failed) >= bench_g.nconns; }
static int bench__create_done(void) { return SUM(created) >= SUM(creators); }
static int bench__join_done(void) { return SUM(joined) + SUM(join_failed) >= SUM(joins); }
static int bench__drain_done(void) { return SUM(replies) >= SUM(sent) && SUM(deliveries) >= bench__expected(); }
static int bench__close_done(void) { return SUM(closed) >= bench_g.nconns; }

static void bench__on_signal(int sig)
{
    (void)sig;
    bench__stop = 1;
}

/* ---- report ---- */

static void bench__json_hist(FILE *f, const char *name, const bench_hist_t *h)
{
    fprintf(f,
            ",\"%s\":{\"count\":%llu,\"min\":%llu,\"mean\":%.1f,\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"p999\":%llu,"
            "\"max\":%llu}",
            name, (unsigned long long)h->count, (unsigned long long)(h->count ? h->min : 0),
            h->count ? (double)h->sum / (double)h->count : 0.0, (unsigned long long)bench_hist_pct(h, 50),
            (unsigned long long)bench_hist_pct(h, 90), (unsigned long long)bench_hist_pct(h, 99),
            (unsigned long long)bench_hist_pct(h, 99.9), (unsigned long long)h->max);
}

static void bench__num(FILE *f, const char *name, double v, int ok)
{
    if (ok && isfinite(v))
        fprintf(f, ",\"%s\":%.3f", name, v);
    else
        fprintf(f, ",\"%s\":null", name);
}

static void bench__int(FILE *f, const char *name, long long v, int ok)
{
    if (ok)
        fprintf(f, ",\"%s\":%lld", name, v);
    else
        fprintf(f, ",\"%s\":null", name);
}

typedef struct {
    double connect_s, window_s, bench_cpu, server_cpu, bench_wait, server_wait;
    long long rss_before, rss_connected, rss_joined;
    uint64_t expected;
    double ecpu[BENCH_CPU_MAX], ewait[BENCH_CPU_MAX]; /* --cpu entries over the window; -1: unknown */
} bench_figures_t;

static void bench__report(const bench_figures_t *fg, const char *url)
{
    const bench_opts_t *o = &bench_g.o;
    bench_stats_t s = {0};
    bench_hist_t *lat = malloc(sizeof *lat), *ack = malloc(sizeof *ack), *rtt = malloc(sizeof *rtt);
    if (!lat || !ack || !rtt) {
        fprintf(stderr, "sori bench: out of memory for the report\n");
        free(lat);
        free(ack);
        free(rtt);
        return;
    }
    bench_hist_init(lat);
    bench_hist_init(ack);
    bench_hist_init(rtt);
    const char *first_error = "";
    for (int i = 0; i < o->threads; i++) {
        bench_thread_t *t = &bench_g.threads[i];
        bench_hist_merge(lat, &t->lat);
        bench_hist_merge(ack, &t->ack);
        bench_hist_merge(rtt, &t->rtt);
        const bench_stats_t *x = &t->st;
        s.acked += x->acked, s.send_errors += x->send_errors, s.rate_limited += x->rate_limited;
        s.other_errors += x->other_errors, s.duplicates += x->duplicates, s.out_of_order += x->out_of_order;
        s.gaps += x->gaps, s.server_closes += x->server_closes, s.io_errors += x->io_errors;
        s.protocol_errors += x->protocol_errors, s.stalls += x->stalls, s.late_slots += x->late_slots;
        s.skipped_slots += x->skipped_slots;
        s.w_sent += x->w_sent, s.w_acked += x->w_acked, s.w_deliveries += x->w_deliveries;
        s.w_rtts += x->w_rtts, s.setup_errors += x->setup_errors;
        s.w_cross += x->w_cross;
        for (int k = 0; k < o->ntg; k++) {
            s.w_acked_tg[k] += x->w_acked_tg[k];
            s.w_deliveries_tg[k] += x->w_deliveries_tg[k];
            s.conns_tg[k] += x->conns_tg[k];
        }
        if (!*first_error && x->first_error[0]) first_error = x->first_error;
    }
    uint64_t opened = SUM(opened), failed = SUM(failed), sent = SUM(sent), deliveries = SUM(deliveries);
    double w = fg->window_s > 0 ? fg->window_s : NAN;
    int srv = o->server_pid > 0 && fg->server_cpu >= 0;
    FILE *f = stdout;
    fprintf(f, "{\"scenario\":\"%s\",\"url\":\"%s\",\"protocol\":\"%s\",\"tag\":\"%s\",\"threads\":%d,\"sources\":%d",
            bench__scenarios[o->scenario], url, o->nchan ? "nchan" : "sori", o->tag, o->threads, o->sources);
    fprintf(f, ",\"conns\":%u,\"connected\":%llu,\"handshake_failures\":%llu", bench_g.nconns,
            (unsigned long long)opened, (unsigned long long)failed);
    bench__num(f, "connect_s", fg->connect_s, 1);
    bench__num(f, "connects_per_s", (double)opened / fg->connect_s, fg->connect_s > 0);
    fprintf(f, ",\"rooms\":%u", bench_g.nrooms);
    if (o->scenario == BENCH_FANOUT) {
        fprintf(f, ",\"subs\":%d,\"pubs\":%d", o->subs, o->pubs);
        bench__num(f, "rate", o->rate, o->rate > 0);
    }
    if (o->scenario == BENCH_DM) fprintf(f, ",\"pairs\":%d", o->pairs);
    bench__int(f, "window", o->window, o->window > 0);
    if (o->scenario != BENCH_CONNECTIONS) fprintf(f, ",\"size\":%d", o->size);
    bench__num(f, "warmup_s", o->warmup, 1);
    bench__num(f, "duration_s", fg->window_s, 1);
    fprintf(f,
            ",\"sent\":%llu,\"acked\":%llu,\"send_errors\":%llu,\"rate_limited\":%llu,\"other_errors\":%llu,"
            "\"setup_errors\":%llu",
            (unsigned long long)sent, (unsigned long long)s.acked, (unsigned long long)s.send_errors,
            (unsigned long long)s.rate_limited, (unsigned long long)s.other_errors,
            (unsigned long long)s.setup_errors);
    fprintf(f,
            ",\"deliveries\":%llu,\"expected_deliveries\":%llu,\"lost\":%llu,\"duplicates\":%llu,"
            "\"out_of_order\":%llu,\"gaps\":%llu",
            (unsigned long long)deliveries, (unsigned long long)fg->expected,
            (unsigned long long)(fg->expected > deliveries ? fg->expected - deliveries : 0),
            (unsigned long long)s.duplicates, (unsigned long long)s.out_of_order, (unsigned long long)s.gaps);
    fprintf(f, ",\"server_closes\":%llu,\"io_errors\":%llu,\"protocol_errors\":%llu,\"stalls\":%llu,\"late_slots\":%llu,"
            "\"skipped_slots\":%llu",
            (unsigned long long)s.server_closes, (unsigned long long)s.io_errors,
            (unsigned long long)s.protocol_errors, (unsigned long long)s.stalls, (unsigned long long)s.late_slots,
            (unsigned long long)s.skipped_slots);
    fprintf(f, ",\"window_sent\":%llu,\"window_acked\":%llu,\"window_deliveries\":%llu,\"round_trips\":%llu",
            (unsigned long long)s.w_sent, (unsigned long long)s.w_acked, (unsigned long long)s.w_deliveries,
            (unsigned long long)s.w_rtts);
    bench__num(f, "sends_per_s", (double)s.w_sent / w, fg->window_s > 0);
    bench__num(f, "acks_per_s", (double)s.w_acked / w, fg->window_s > 0);
    bench__num(f, "deliveries_per_s", (double)s.w_deliveries / w, fg->window_s > 0);
    bench__num(f, "round_trips_per_s", (double)s.w_rtts / w, fg->window_s > 0);
    bench__json_hist(f, "latency_us", lat);
    bench__json_hist(f, "ack_latency_us", ack);
    bench__json_hist(f, "rtt_us", rtt);
    bench__num(f, "bench_cpu_s", fg->bench_cpu, 1);
    bench__num(f, "bench_cpu_pct", 100.0 * fg->bench_cpu / w, fg->window_s > 0);
    bench__num(f, "bench_runq_wait_s", fg->bench_wait, fg->bench_wait >= 0);
    bench__int(f, "server_pid", o->server_pid, o->server_pid > 0);
    bench__num(f, "server_cpu_s", fg->server_cpu, srv);
    bench__num(f, "server_cpu_pct", 100.0 * fg->server_cpu / w, srv && fg->window_s > 0);
    bench__num(f, "server_runq_wait_s", fg->server_wait, srv && fg->server_wait >= 0);
    bench__num(f, "deliveries_per_server_cpu_s", (double)s.w_deliveries / fg->server_cpu, srv && fg->server_cpu > 0);
    bench__num(f, "acks_per_server_cpu_s", (double)s.w_acked / fg->server_cpu, srv && fg->server_cpu > 0);
    fprintf(f, ",\"targets\":[");
    for (int k = 0; k < o->ntg; k++) {
        const bench_target_t *tg = &o->tg[k];
        fprintf(f, "%s{\"url\":\"%s://%s%s%s:%s", k ? "," : "", tg->tls ? "wss" : "ws", strchr(tg->host, ':') ? "[" : "", tg->host,
                strchr(tg->host, ':') ? "]" : "", tg->port_str);
        for (const char *p = tg->path; *p; p++) fputc(*p == '"' || *p == '\\' ? '_' : *p, f);
        fprintf(f, "\",\"conns\":%llu,\"window_acked\":%llu,\"window_deliveries\":%llu}",
                (unsigned long long)s.conns_tg[k], (unsigned long long)s.w_acked_tg[k],
                (unsigned long long)s.w_deliveries_tg[k]);
    }
    fprintf(f, "]");
    bench__int(f, "window_cross_deliveries", (long long)s.w_cross, o->ntg > 1);
    bench__num(f, "cross_deliveries_per_s", (double)s.w_cross / w, o->ntg > 1 && fg->window_s > 0);
    fprintf(f, ",\"cpu\":[");
    int nl = 0;
    for (int i = 0; i < o->ncpu; i++) { /* one object per label, in the order labels first appear */
        int first = 1;
        for (int j = 0; j < i; j++)
            if (!strcmp(o->cpu[j].label, o->cpu[i].label)) first = 0;
        if (!first) continue;
        double cpu = 0, wait = 0;
        int ok = 1;
        fprintf(f, "%s{\"label\":\"%s\",\"pids\":\"", nl++ ? "," : "", o->cpu[i].label);
        for (int j = i, k = 0; j < o->ncpu; j++) {
            if (strcmp(o->cpu[j].label, o->cpu[i].label)) continue;
            fprintf(f, "%s%d%s", k++ ? "," : "", (int)o->cpu[j].pid, o->cpu[j].children ? "+" : "");
            if (fg->ecpu[j] < 0) ok = 0;
            cpu += fg->ecpu[j];
            wait += fg->ewait[j];
        }
        fprintf(f, "\"");
        bench__num(f, "cpu_s", cpu, ok);
        bench__num(f, "cpu_pct", 100.0 * cpu / w, ok && fg->window_s > 0);
        bench__num(f, "runq_wait_s", wait, ok);
        fprintf(f, "}");
    }
    fprintf(f, "]");
    bench__int(f, "server_rss_before", fg->rss_before, fg->rss_before >= 0);
    bench__int(f, "server_rss_connected", fg->rss_connected, fg->rss_connected >= 0);
    bench__int(f, "server_rss_joined", fg->rss_joined, fg->rss_joined >= 0);
    int rss_ok = fg->rss_before >= 0 && fg->rss_joined >= 0 && opened > 0;
    bench__num(f, "server_rss_per_conn", rss_ok ? (double)(fg->rss_joined - fg->rss_before) / (double)opened : 0,
               rss_ok);
    fprintf(f, ",\"first_error\":\"");
    for (const char *p = first_error; *p; p++) {
        if (*p == '"' || *p == '\\') fputc('\\', f);
        fputc((unsigned char)*p < ' ' ? '?' : *p, f);
    }
    fprintf(f, "\"}\n");
    fflush(f);

    /* the summary for people */
    fprintf(stderr, "sori bench %s: %llu/%u connected in %.3f s (%.0f/s), %llu failed\n",
            bench__scenarios[o->scenario], (unsigned long long)opened, bench_g.nconns, fg->connect_s,
            fg->connect_s > 0 ? (double)opened / fg->connect_s : 0.0, (unsigned long long)failed);
    if (o->scenario != BENCH_CONNECTIONS) {
        fprintf(stderr,
                "  window %.2f s: %.0f sends/s, %.0f acks/s, %.0f deliveries/s\n"
                "  totals: sent %llu, acked %llu, errors %llu (rate_limited %llu), deliveries %llu of %llu "
                "expected, duplicates %llu, out of order %llu, gaps %llu\n",
                fg->window_s, (double)s.w_sent / w, (double)s.w_acked / w, (double)s.w_deliveries / w,
                (unsigned long long)sent, (unsigned long long)s.acked,
                (unsigned long long)s.send_errors, (unsigned long long)s.rate_limited,
                (unsigned long long)deliveries, (unsigned long long)fg->expected, (unsigned long long)s.duplicates,
                (unsigned long long)s.out_of_order, (unsigned long long)s.gaps);
        fprintf(stderr, "  latency µs: p50 %llu, p90 %llu, p99 %llu, p99.9 %llu, max %llu (%llu samples)\n",
                (unsigned long long)bench_hist_pct(lat, 50), (unsigned long long)bench_hist_pct(lat, 90),
                (unsigned long long)bench_hist_pct(lat, 99), (unsigned long long)bench_hist_pct(lat, 99.9),
                (unsigned long long)lat->max, (unsigned long long)lat->count);
        if (ack->count)
            fprintf(stderr, "  ack latency µs: p50 %llu, p99 %llu, max %llu\n",
                    (unsigned long long)bench_hist_pct(ack, 50), (unsigned long long)bench_hist_pct(ack, 99),
                    (unsigned long long)ack->max);
        if (rtt->count)
            fprintf(stderr, "  round trips: %.0f/s, p50 %llu µs, p99 %llu µs\n", (double)s.w_rtts / w,
                    (unsigned long long)bench_hist_pct(rtt, 50), (unsigned long long)bench_hist_pct(rtt, 99));
    }
    fprintf(stderr, "  bench CPU %.2f s (%.0f%% of the window)", fg->bench_cpu,
            fg->window_s > 0 ? 100.0 * fg->bench_cpu / fg->window_s : 0.0);
    if (srv)
        fprintf(stderr, "; server CPU %.2f s (%.0f%%), %.0f deliveries per server CPU-second", fg->server_cpu,
                fg->window_s > 0 ? 100.0 * fg->server_cpu / fg->window_s : 0.0,
                fg->server_cpu > 0 ? (double)s.w_deliveries / fg->server_cpu : 0.0);
    fprintf(stderr, "\n");
    if (fg->bench_wait > 0.05 * fg->window_s || (srv && fg->server_wait > 0.05 * fg->window_s))
        fprintf(stderr, "  warning: runnable but waiting for a CPU %.2f s (bench), %.2f s (server) in the window: "
                        "contention skews latency\n",
                fg->bench_wait, srv ? fg->server_wait : 0.0);
    if (o->ntg > 1) {
        fprintf(stderr, "  by URL (connections, acks/s, deliveries/s):");
        for (int k = 0; k < o->ntg; k++)
            fprintf(stderr, "%s %s %llu, %.0f, %.0f", k ? ";" : "", o->tg[k].url, (unsigned long long)s.conns_tg[k],
                    (double)s.w_acked_tg[k] / w, (double)s.w_deliveries_tg[k] / w);
        fprintf(stderr, "\n  deliveries from a sender on another URL: %.0f/s (%.1f%% of the window's)\n",
                (double)s.w_cross / w, s.w_deliveries ? 100.0 * (double)s.w_cross / (double)s.w_deliveries : 0.0);
    }
    if (o->ncpu) {
        fprintf(stderr, "  CPU in the window:");
        for (int i = 0; i < o->ncpu; i++)
            fprintf(stderr, "%s %s(%d%s) %.2f s", i ? "," : "", o->cpu[i].label, (int)o->cpu[i].pid,
                    o->cpu[i].children ? "+" : "", fg->ecpu[i]);
        fprintf(stderr, "\n");
    }
    if (rss_ok)
        fprintf(stderr, "  server RSS %.1f MiB -> %.1f MiB: %.0f bytes per connection\n",
                (double)fg->rss_before / 1048576.0, (double)fg->rss_joined / 1048576.0,
                (double)(fg->rss_joined - fg->rss_before) / (double)opened);
    if (s.server_closes || s.io_errors || s.protocol_errors || s.stalls || s.late_slots || s.skipped_slots)
        fprintf(stderr,
                "  server closes %llu, I/O errors %llu, protocol errors %llu, output stalls %llu, sends late "
                "(>1 ms) %llu, skipped (>100 ms) %llu\n",
                (unsigned long long)s.server_closes, (unsigned long long)s.io_errors,
                (unsigned long long)s.protocol_errors, (unsigned long long)s.stalls, (unsigned long long)s.late_slots,
                (unsigned long long)s.skipped_slots);
    if (*first_error) fprintf(stderr, "  first error: %s\n", first_error);
    free(lat);
    free(ack);
    free(rtt);
}

int bench_main(int argc, char **argv)
{
    bench_opts_t *o = &bench_g.o;
    int rc = bench__parse(o, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    switch (o->scenario) {
    case BENCH_FANOUT:
        bench_g.nrooms = (uint32_t)o->rooms;
        bench_g.nconns = (uint32_t)((uint64_t)o->rooms * (uint64_t)(o->pubs + o->subs));
        if ((uint64_t)o->rooms * (uint64_t)(o->pubs + o->subs) > 1000000)
            return bench__bad("--rooms x (--pubs + --subs) is over a million connections%s%s", "", "");
        break;
    case BENCH_CONNECTIONS:
    case BENCH_DURABLE:
        bench_g.nrooms = (uint32_t)o->rooms;
        bench_g.nconns = (uint32_t)o->conns;
        break;
    case BENCH_DM:
        bench_g.nrooms = (uint32_t)o->pairs;
        bench_g.nconns = 2u * (uint32_t)o->pairs;
        break;
    }
    if ((uint32_t)o->threads > bench_g.nconns) o->threads = (int)bench_g.nconns;

    /* every connection is a descriptor; raise the soft limit to the hard one */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        uint64_t need = (uint64_t)bench_g.nconns + 16 + 3u * (uint64_t)o->threads;
        if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
            fprintf(stderr,
                    "sori bench: %u connections need about %llu open files; the limit is %llu "
                    "(ulimit -n) (see sori bench --help)\n",
                    bench_g.nconns, (unsigned long long)need, (unsigned long long)rl.rlim_cur);
            return 2;
        }
    }
    if (o->sources <= 1 && bench_g.nconns > 28000)
        fprintf(stderr, "sori bench: warning: %u connections from one source address may run out of ports; "
                        "see --sources\n", bench_g.nconns);

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = bench__on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char url[BENCH_TARGETS_MAX * 800 + 16] = "";
    for (int k = 0; k < o->ntg; k++) { /* the URLs, normalized, comma-separated */
        const bench_target_t *tg = &o->tg[k];
        size_t at = strlen(url);
        snprintf(url + at, sizeof url - at, "%s%s://%s%s%s:%s%s", k ? "," : "", tg->tls ? "wss" : "ws",
                 strchr(tg->host, ':') ? "[" : "", tg->host, strchr(tg->host, ':') ? "]" : "", tg->port_str, tg->path);
    }
    for (char *p = url; *p; p++)
        if (*p == '"' || *p == '\\') *p = '_'; /* it goes into JSON as is */

    bench_g.room_acked = calloc(bench_g.nrooms, sizeof *bench_g.room_acked);
    bench_g.room_members = calloc(bench_g.nrooms, sizeof *bench_g.room_members);
    bench_g.threads = calloc((size_t)o->threads, sizeof *bench_g.threads);
    if (!bench_g.room_acked || !bench_g.room_members || !bench_g.threads) {
        fprintf(stderr, "sori bench: out of memory\n");
        return 1;
    }
    atomic_store(&bench_g.phase, BP_CONNECT);
    atomic_store(&bench_g.measuring, 0);
    char err[256];
    int started = 0, status = 0, none = 0;
    bench_figures_t fg = {.rss_before = -1, .rss_connected = -1, .rss_joined = -1, .server_cpu = -1,
                          .bench_wait = -1, .server_wait = -1};
    for (int i = 0; i < BENCH_CPU_MAX; i++) fg.ecpu[i] = fg.ewait[i] = -1;
    for (int i = 0; i < o->threads; i++) {
        bench_g.threads[i].id = i;
        if (bench_thread_setup(&bench_g.threads[i], err, sizeof err)) {
            fprintf(stderr, "sori bench: %s\n", err);
            status = 1;
            goto out;
        }
    }
    fg.rss_before = bench__rss(o->server_pid);
    if (o->server_pid > 0 && fg.rss_before < 0)
        fprintf(stderr, "sori bench: warning: cannot read /proc/%d: no server figures\n", (int)o->server_pid);
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < o->threads; i++) {
        if (pthread_create(&bench_g.threads[i].tid, NULL, bench_thread_main, &bench_g.threads[i])) {
            fprintf(stderr, "sori bench: cannot start a thread\n");
            status = 1;
            atomic_store(&bench_g.phase, BP_DONE);
            for (int k = 0; k < started; k++) bench_thread_wake(&bench_g.threads[k]);
            goto out;
        }
        started++;
    }

    bench__wait(bench__connect_done, o->connect_timeout);
    fg.connect_s = (double)(bench_now_ns() - t0) / 1e9;
    fg.rss_connected = bench__rss(o->server_pid);
    none = !SUM(opened);
    if (none) status = 1;
    if (!status && !bench__stop) {
        bench__advance(BP_CREATE);
        if (!bench__wait(bench__create_done, 30)) fprintf(stderr, "sori bench: warning: rooms not all created\n");
        if (o->join_delay > 0) {
            uint64_t until = bench_now_ns() + (uint64_t)(o->join_delay * 1e9);
            while (!bench__stop && bench_now_ns() < until) bench__sleep_ms(10);
        }
        bench__advance(BP_JOIN);
        if (!bench__wait(bench__join_done, 60)) fprintf(stderr, "sori bench: warning: joins not all answered\n");
        fg.rss_joined = bench__rss(o->server_pid);
        bench__advance(BP_RUN);
        /* warm-up, then the measured window */
        uint64_t end = bench_now_ns() + (uint64_t)(o->warmup * 1e9);
        while (!bench__stop && !bench__close_done() && bench_now_ns() < end) bench__sleep_ms(10);
        bench__hook("start");
        double ecpu0[BENCH_CPU_MAX], ewait0[BENCH_CPU_MAX], ecpu1[BENCH_CPU_MAX], ewait1[BENCH_CPU_MAX];
        bench__cpu_sample(ecpu0, ewait0);
        double cpu0 = bench__cpu_self(), scpu0 = bench__cpu_proc(o->server_pid);
        double wait0 = bench__loop_wait(), swait0 = o->server_pid ? bench__runq_wait(o->server_pid) : -1;
        uint64_t w0 = bench_now_ns();
        atomic_store(&bench_g.measuring, 1);
        end = w0 + (uint64_t)(o->duration * 1e9);
        /* the window ends early on ^C, or when the server has closed every connection */
        while (!bench__stop && !bench__close_done() && bench_now_ns() < end) {
            uint64_t left = end - bench_now_ns();
            bench__sleep_ms(left > 20000000 ? 10 : (double)left / 2e6 + 0.05);
        }
        atomic_store(&bench_g.measuring, 0);
        fg.window_s = (double)(bench_now_ns() - w0) / 1e9;
        fg.bench_cpu = bench__cpu_self() - cpu0;
        double scpu1 = bench__cpu_proc(o->server_pid);
        fg.server_cpu = scpu0 >= 0 && scpu1 >= 0 ? scpu1 - scpu0 : -1;
        double wait1 = bench__loop_wait(), swait1 = o->server_pid ? bench__runq_wait(o->server_pid) : -1;
        fg.bench_wait = wait0 >= 0 && wait1 >= 0 ? wait1 - wait0 : -1;
        fg.server_wait = swait0 >= 0 && swait1 >= 0 ? swait1 - swait0 : -1;
        bench__cpu_sample(ecpu1, ewait1);
        for (int i = 0; i < o->ncpu; i++) {
            int ok = ecpu0[i] >= 0 && ecpu1[i] >= 0;
            fg.ecpu[i] = ok ? ecpu1[i] - ecpu0[i] : -1;
            fg.ewait[i] = ok ? ewait1[i] - ewait0[i] : -1;
        }
        bench__hook("end");
        bench__advance(BP_DRAIN);
        bench__stop = 0; /* a second ^C cuts the drain short */
        bench__wait(bench__drain_done, o->drain);
        fg.expected = bench__expected();
    }
    bench__advance(BP_CLOSE);
    bench__wait(bench__close_done, 3);
    bench__advance(BP_DONE);
out:
    for (int i = 0; i < started; i++) pthread_join(bench_g.threads[i].tid, NULL);
    if (none) { /* the threads' notes are safe to read once they are joined */
        fprintf(stderr, "sori bench: no connection got through to %s", url);
        for (int i = 0; i < o->threads; i++)
            if (bench_g.threads[i].st.first_error[0]) {
                fprintf(stderr, " (%s)", bench_g.threads[i].st.first_error);
                break;
            }
        fprintf(stderr, "; is the server running with --allow-guests?\n");
    }
    if (!status) bench__report(&fg, url);
    for (int i = 0; i < o->threads; i++) bench_thread_free(&bench_g.threads[i]);
    free(bench_g.threads);
    free((void *)bench_g.room_acked);
    free((void *)bench_g.room_members);
    bench_g.threads = NULL;
    return status;
}
