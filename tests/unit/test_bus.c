/* Unit tests for bus/bus_redis.c against a real Redis: two or more bus_t
 * with different node ids in this one process act as the nodes of a
 * cluster. Covers pub/sub across nodes (own messages dropped, order per
 * publishing thread, 1 MiB and empty payloads), reference-counted
 * subscriptions, the queue bounds (Redis held still with CLIENT PAUSE),
 * requests while down, Redis killed (-9) and restarted on the same port
 * (on_state 1, 0, 1; in-flight publishes answered; subscriptions, presence
 * and registration restored), a Redis that stops answering (the reply
 * watchdog drops and restores the link), presence across nodes (notices, a user on two
 * nodes, a crashed node expiring, a clean close), the node registry, generic
 * commands and their reply trees. The pure helpers (frame, notice, URL) run
 * without Redis.
 *
 * Redis comes from SORI_REDIS_URL; without it the Redis tests are skipped
 * with a message. The restart test also needs SORI_REDIS_CTL (the control
 * script). Run: scripts/redis-test.sh build/tests/test_bus
 * SORI_TEST_LOG=1 shows the log. Every wait is bounded. */
#include "bus/bus_redis.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *redis_url;
static const char *redis_ctl;
static pthread_t main_thread; /* callbacks must never run on it */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

#define NEED_REDIS()                                                                                               \
    do {                                                                                                           \
        if (!redis_url) {                                                                                          \
            skip();                                                                                                \
            return;                                                                                                \
        }                                                                                                          \
    } while (0)

/* ---- a node: a bus and what its callbacks saw ---- */

typedef struct {
    int origin;
    char *channel;
    char *data;
    size_t len;
} msg_t;

typedef struct {
    bus_t *b;
    int id;
    pthread_mutex_t mu;
    int states[32];
    int nstates;
    msg_t *msgs;
    size_t nmsgs, cap;
    int wrong_thread; /* a callback ran on the test's thread */
} node_t;

static void on_message(void *arg, int origin, const char *channel, const char *data, size_t len)
{
    node_t *n = arg;
    pthread_mutex_lock(&n->mu);
    if (n->nmsgs == n->cap) {
        n->cap = n->cap ? n->cap * 2 : 64;
        n->msgs = realloc(n->msgs, n->cap * sizeof *n->msgs);
    }
    msg_t *m = &n->msgs[n->nmsgs++];
    m->origin = origin;
    m->channel = strdup(channel);
    m->data = malloc(len + 1);
    memcpy(m->data, data, len);
    m->data[len] = 0;
    m->len = len;
    if (pthread_equal(pthread_self(), main_thread)) n->wrong_thread = 1;
    pthread_mutex_unlock(&n->mu);
}

static void on_state(void *arg, int up)
{
    node_t *n = arg;
    pthread_mutex_lock(&n->mu);
    if (n->nstates < 32) n->states[n->nstates++] = up;
    if (pthread_equal(pthread_self(), main_thread)) n->wrong_thread = 1;
    pthread_mutex_unlock(&n->mu);
}

static int wait_until(int (*pred)(void *), void *arg, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        if (pred(arg)) return 1;
        if (now_ms() > end) return 0;
        sleep_ms(2);
    }
}

static int node_is_up(void *arg)
{
    return bus_up(((node_t *)arg)->b);
}

static node_t *node_open_opts(int id, const bus_opts_t *o)
{
    node_t *n = calloc(1, sizeof *n);
    pthread_mutex_init(&n->mu, NULL);
    n->id = id;
    bus_handler_t h = {.arg = n, .on_message = on_message, .on_state = on_state};
    char err[256] = "";
    n->b = bus_open_opts(redis_url, id, &h, o, err, sizeof err);
    if (!n->b) fail_msg("bus_open: %s", err);
    assert_true(wait_until(node_is_up, n, 5000));
    return n;
}

static node_t *node_open(int id)
{
    return node_open_opts(id, NULL);
}

static void node_free_msgs(node_t *n)
{
    for (size_t i = 0; i < n->nmsgs; i++) {
        free(n->msgs[i].channel);
        free(n->msgs[i].data);
    }
    free(n->msgs);
    n->msgs = NULL;
    n->nmsgs = n->cap = 0;
}

static void node_close(node_t *n)
{
    if (!n) return;
    bus_close(n->b);
    assert_false(n->wrong_thread);
    node_free_msgs(n);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

/* Messages n got on channel (from origin, or any origin when < 0). */
static size_t count_msgs(node_t *n, const char *channel, int origin)
{
    size_t c = 0;
    pthread_mutex_lock(&n->mu);
    for (size_t i = 0; i < n->nmsgs; i++)
        if (!strcmp(n->msgs[i].channel, channel) && (origin < 0 || n->msgs[i].origin == origin)) c++;
    pthread_mutex_unlock(&n->mu);
    return c;
}

/* Has n got exactly this payload on channel from origin? */
static int has_msg(node_t *n, const char *channel, int origin, const char *data, size_t len)
{
    int found = 0;
    pthread_mutex_lock(&n->mu);
    for (size_t i = 0; i < n->nmsgs && !found; i++)
        found = !strcmp(n->msgs[i].channel, channel) && n->msgs[i].origin == origin && n->msgs[i].len == len &&
                !memcmp(n->msgs[i].data, data, len);
    pthread_mutex_unlock(&n->mu);
    return found;
}

typedef struct {
    node_t *n;
    const char *channel;
    int origin;
    const char *data;
    size_t len;
    size_t count;
} want_t;

static int want_msg(void *arg)
{
    want_t *w = arg;
    return has_msg(w->n, w->channel, w->origin, w->data, w->len);
}

static int want_count(void *arg)
{
    want_t *w = arg;
    return count_msgs(w->n, w->channel, w->origin) >= w->count;
}

static void expect_msg(node_t *n, const char *channel, int origin, const char *data)
{
    want_t w = {n, channel, origin, data, strlen(data), 0};
    if (!wait_until(want_msg, &w, 5000))
        fail_msg("node %d never got \"%s\" on %s from node %d", n->id, data, channel, origin);
}

/* ---- synchronous wrappers over the async calls ---- */

typedef struct {
    pthread_mutex_t mu;
    int done;
    int status;
    long long integer;
    int type;
    char str[256];
    uint8_t online[64];
    size_t n;
    bus_node_t nodes[32];
    char ws[32][128];
} sync_t;

static void sync_init(sync_t *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
}

static int sync_done(void *arg)
{
    sync_t *s = arg;
    pthread_mutex_lock(&s->mu);
    int d = s->done;
    pthread_mutex_unlock(&s->mu);
    return d;
}

static void sync_wait(sync_t *s)
{
    assert_true(wait_until(sync_done, s, 5000));
    pthread_mutex_destroy(&s->mu);
}

static void cmd_cb(void *arg, int status, const bus_reply_t *r)
{
    sync_t *s = arg;
    pthread_mutex_lock(&s->mu);
    s->status = status;
    if (r) {
        s->type = r->type;
        s->integer = r->integer;
        if (r->str) snprintf(s->str, sizeof s->str, "%s", r->str);
        if (r->type == BUS_REPLY_ARRAY && r->elements == 2 && r->element[1].type == BUS_REPLY_INTEGER)
            s->integer = r->element[1].integer; /* PUBSUB NUMSUB ch -> [ch, n] */
    }
    s->done = 1;
    pthread_mutex_unlock(&s->mu);
}

/* Runs a command given as words; returns the sync record (filled). */
static void cmd_sync(node_t *n, sync_t *s, int argc, const char **argv)
{
    sync_init(s);
    assert_int_equal(bus_command(n->b, argc, argv, NULL, cmd_cb, s), 0);
    sync_wait(s);
    assert_int_equal(s->status, 0);
}

static long long numsub(node_t *n, const char *channel)
{
    sync_t s;
    const char *argv[] = {"PUBSUB", "NUMSUB", channel};
    cmd_sync(n, &s, 3, argv);
    return s.integer;
}

typedef struct {
    node_t *n;
    const char *channel;
    long long want;
} numsub_t;

static int numsub_is(void *arg)
{
    numsub_t *w = arg;
    return numsub(w->n, w->channel) == w->want;
}

static void expect_numsub(node_t *n, const char *channel, long long want)
{
    numsub_t w = {n, channel, want};
    if (!wait_until(numsub_is, &w, 5000)) fail_msg("PUBSUB NUMSUB %s never became %lld", channel, want);
}

static void query_cb(void *arg, int status, const uint8_t *online)
{
    sync_t *s = arg;
    pthread_mutex_lock(&s->mu);
    s->status = status;
    if (online) memcpy(s->online, online, s->n);
    s->done = 1;
    pthread_mutex_unlock(&s->mu);
}

/* Online flags of users[0..k) as seen from node n, as a string of 0/1. */
static const char *query(node_t *n, size_t k, const char **users)
{
    static __thread char out[65];
    sync_t s;
    sync_init(&s);
    s.n = k;
    assert_int_equal(bus_presence_query(n->b, users, k, query_cb, &s), 0);
    sync_wait(&s);
    assert_int_equal(s.status, 0);
    for (size_t i = 0; i < k; i++) out[i] = (char)('0' + s.online[i]);
    out[k] = 0;
    return out;
}

static const char *query1(node_t *n, const char *user)
{
    return query(n, 1, &user);
}

static void discover_cb(void *arg, int status, const bus_node_t *nodes, size_t n)
{
    sync_t *s = arg;
    pthread_mutex_lock(&s->mu);
    s->status = status;
    s->n = 0;
    for (size_t i = 0; i < n && i < 32; i++) {
        s->nodes[i] = nodes[i];
        snprintf(s->ws[i], sizeof s->ws[i], "%s", nodes[i].ws);
        s->nodes[i].ws = s->ws[i];
        s->n++;
    }
    s->done = 1;
    pthread_mutex_unlock(&s->mu);
}

/* The entry of node id in a discovery from n, or NULL (copied to *out). */
static int discover_find(node_t *n, int id, bus_node_t *out, char *ws, size_t wslen)
{
    sync_t s;
    sync_init(&s);
    assert_int_equal(bus_discover(n->b, discover_cb, &s), 0);
    sync_wait(&s);
    assert_int_equal(s.status, 0);
    for (size_t i = 0; i < s.n; i++) {
        if (s.nodes[i].node != id) continue;
        if (out) *out = s.nodes[i];
        if (ws) snprintf(ws, wslen, "%s", s.ws[i]);
        return 1;
    }
    return 0;
}

/* publish completions */
typedef struct {
    pthread_mutex_t mu;
    int ok, failed, calls;
} pubs_t;

static void pub_done(void *arg, int status)
{
    pubs_t *p = arg;
    pthread_mutex_lock(&p->mu);
    p->calls++;
    if (status == 0) p->ok++;
    else p->failed++;
    pthread_mutex_unlock(&p->mu);
}

typedef struct {
    pubs_t *p;
    int want;
} pubs_want_t;

static int pubs_reached(void *arg)
{
    pubs_want_t *w = arg;
    pthread_mutex_lock(&w->p->mu);
    int r = w->p->calls >= w->want;
    pthread_mutex_unlock(&w->p->mu);
    return r;
}

static void pubs_wait(pubs_t *p, int want)
{
    pubs_want_t w = {p, want};
    if (!wait_until(pubs_reached, &w, 5000)) fail_msg("only %d of %d publishes were answered", p->calls, want);
}

static int pub(node_t *n, const char *channel, const char *s, pubs_t *p)
{
    return bus_publish(n->b, channel, s, strlen(s), p ? pub_done : NULL, p);
}

static int redis_ctl_run(const char *what)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' %s", redis_ctl, what);
    return system(cmd);
}

/* ---- pure helpers ---- */

static void test_frame_parse(void **state)
{
    (void)state;
    int o;
    const char *p;
    size_t n;
    assert_int_equal(bus_frame_parse("12:hello", 8, &o, &p, &n), 0);
    assert_int_equal(o, 12);
    assert_int_equal(n, 5);
    assert_memory_equal(p, "hello", 5);
    assert_int_equal(bus_frame_parse("0:", 2, &o, &p, &n), 0);
    assert_int_equal(o, 0);
    assert_int_equal(n, 0);
    assert_int_equal(bus_frame_parse("2147483647:\0x", 13, &o, &p, &n), 0);
    assert_int_equal(o, 2147483647);
    assert_int_equal(n, 2);
    const char *bad[] = {"", ":x", "12", "12x:", "-1:x", "2147483648:", "99999999999:x", "a:b", " 1:x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(bus_frame_parse(bad[i], strlen(bad[i]), &o, &p, &n), SORI_EINVAL);
}

static void test_notice_parse(void **state)
{
    (void)state;
    int on;
    const char *u;
    size_t n;
    assert_int_equal(bus_presence_notice_parse("+alice", 6, &on, &u, &n), 0);
    assert_int_equal(on, 1);
    assert_int_equal(n, 5);
    assert_memory_equal(u, "alice", 5);
    assert_int_equal(bus_presence_notice_parse("-bob", 4, &on, &u, &n), 0);
    assert_int_equal(on, 0);
    assert_int_equal(bus_presence_notice_parse("*", 1, &on, &u, &n), 0);
    assert_int_equal(on, -1);
    assert_null(u);
    assert_int_equal(bus_presence_notice_parse("+", 1, &on, &u, &n), SORI_EINVAL);
    assert_int_equal(bus_presence_notice_parse("", 0, &on, &u, &n), SORI_EINVAL);
    assert_int_equal(bus_presence_notice_parse("xy", 2, &on, &u, &n), SORI_EINVAL);
    assert_int_equal(bus_presence_notice_parse("**", 2, &on, &u, &n), SORI_EINVAL);
}

static void test_url_parse(void **state)
{
    (void)state;
    bus_url_t u;
    char err[256];
    assert_int_equal(bus__parse_url("redis://127.0.0.1:6380", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_null(u.pass);
    assert_int_equal(u.db, 0);
    bus__url_free(&u);
    assert_int_equal(bus__parse_url("REDIS://redis-1.internal", &u, err, sizeof err), 0);
    assert_string_equal(u.host, "redis-1.internal");
    assert_int_equal(u.port, 6379);
    bus__url_free(&u);
    assert_int_equal(bus__parse_url("redis://:s3cret@h:1/3", &u, err, sizeof err), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.pass, "s3cret");
    assert_int_equal(u.port, 1);
    assert_int_equal(u.db, 3);
    bus__url_free(&u);
    assert_int_equal(bus__parse_url("redis://sori:p%40ss%3Aw@h/", &u, err, sizeof err), 0);
    assert_string_equal(u.user, "sori");
    assert_string_equal(u.pass, "p@ss:w");
    assert_int_equal(u.db, 0);
    bus__url_free(&u);
    assert_int_equal(bus__parse_url("redis://:a@b@[::1]:7000/2", &u, err, sizeof err), 0);
    assert_string_equal(u.pass, "a@b");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 2);
    bus__url_free(&u);
    const char *bad[] = {NULL,
                         "",
                         "http://h:1",
                         "rediss://h:1",
                         "redis://",
                         "redis://h:0",
                         "redis://h:70000",
                         "redis://h:",
                         "redis://h:1x",
                         "redis://h/x",
                         "redis://h/123456",
                         "redis://pw@h",
                         "redis://h?timeout=1",
                         "redis://h/1#f",
                         "redis://:p%zz@h",
                         "redis://:p%00@h",
                         "redis://:p%4@h",
                         "redis://h st",
                         "redis://[::1",
                         "redis://[]:1",
                         "redis://h_!x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        if (bus__parse_url(bad[i], &u, err, sizeof err) != SORI_EINVAL) fail_msg("accepted %s", bad[i]);
        assert_true(err[0] != 0);
    }
}

static void test_open_errors(void **state)
{
    (void)state;
    char err[256] = "";
    bus_handler_t h = {0};
    assert_null(bus_open("http://x", 1, &h, err, sizeof err));
    assert_true(err[0]);
    err[0] = 0;
    assert_null(bus_open("redis://127.0.0.1:1", -1, &h, err, sizeof err));
    assert_true(err[0]);
    err[0] = 0;
    bus_opts_t o = {.presence_ttl_ms = 1000, .presence_refresh_ms = 1000};
    assert_null(bus_open_opts("redis://127.0.0.1:1", 1, &h, &o, err, sizeof err));
    assert_true(err[0]);
    err[0] = 0;
    o = (bus_opts_t){.backoff_min_ms = 500, .backoff_max_ms = 100};
    assert_null(bus_open_opts("redis://127.0.0.1:1", 1, &h, &o, err, sizeof err));
    assert_true(err[0]);
    /* a short TTL alone gets a refresh interval below it */
    o = (bus_opts_t){.presence_ttl_ms = 900, .node_ttl_ms = 300};
    bus_t *b = bus_open_opts("redis://127.0.0.1:1", 1, &h, &o, err, sizeof err);
    assert_non_null(b);
    assert_int_equal(b->o.presence_refresh_ms, 300);
    assert_int_equal(b->o.node_refresh_ms, 100);
    assert_int_equal(b->o.queue_max_msgs, 65536);
    bus_close(b);
    bus_close(NULL);
}

/* A port nothing listens on: bound, then closed. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int cb_called;
static void never_cb(void *arg, int status, const bus_reply_t *r)
{
    (void)arg, (void)status, (void)r;
    cb_called = 1;
}
static void never_q(void *arg, int status, const uint8_t *o)
{
    (void)arg, (void)status, (void)o;
    cb_called = 1;
}
static void never_d(void *arg, int status, const bus_node_t *n, size_t k)
{
    (void)arg, (void)status, (void)n, (void)k;
    cb_called = 1;
}

/* Redis down from the start: not an error, the bus stays down, requests
 * fail fast, tables still take changes, close is prompt. No Redis needed. */
static void test_down_from_start(void **state)
{
    (void)state;
    char url[64], err[256] = "";
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", dead_port());
    node_t n = {0};
    pthread_mutex_init(&n.mu, NULL);
    bus_handler_t h = {.arg = &n, .on_message = on_message, .on_state = on_state};
    bus_opts_t o = {.backoff_min_ms = 10, .backoff_max_ms = 40};
    n.b = bus_open_opts(url, 7, &h, &o, err, sizeof err);
    assert_non_null(n.b);
    sleep_ms(200); /* several attempts: 10, 20, 40, 40 ... ms apart */
    assert_int_equal(bus_up(n.b), 0);
    bus_stats_t st;
    bus_stats(n.b, &st);
    assert_true(st.connect_failed >= 3);
    assert_int_equal(st.ups, 0);
    assert_int_equal(bus_publish(n.b, "c", "x", 1, NULL, NULL), SORI_ECLOSED);
    const char *argv[] = {"PING"};
    assert_int_equal(bus_command(n.b, 1, argv, NULL, never_cb, NULL), SORI_ECLOSED);
    const char *users[] = {"u"};
    assert_int_equal(bus_presence_query(n.b, users, 1, never_q, NULL), SORI_ECLOSED);
    assert_int_equal(bus_discover(n.b, never_d, NULL), SORI_ECLOSED);
    assert_int_equal(bus_subscribe(n.b, "c"), 0);
    assert_int_equal(bus_unsubscribe(n.b, "c"), 0);
    assert_int_equal(bus_unsubscribe(n.b, "c"), SORI_ENOTFOUND);
    assert_int_equal(bus_subscribe(n.b, ""), SORI_EINVAL);
    assert_int_equal(bus_presence_set(n.b, "u", 1), 0);
    assert_int_equal(bus_presence_set(n.b, "u", 0), 0);
    assert_int_equal(bus_register(n.b, "ws://x/ws", NULL), 0);
    assert_int_equal(bus_register(n.b, "", NULL), SORI_EINVAL);
    int64_t t0 = now_ms();
    bus_close(n.b);
    assert_true(now_ms() - t0 < 1000);
    assert_int_equal(n.nstates, 0);
    assert_int_equal(cb_called, 0);
    pthread_mutex_destroy(&n.mu);
}

/* ---- against Redis ---- */

static void test_pubsub_two_nodes(void **state)
{
    (void)state;
    NEED_REDIS();
    node_t *a = node_open(1), *b = node_open(2);
    assert_int_equal(bus_subscribe(a->b, "t1:room"), 0);
    assert_int_equal(bus_subscribe(b->b, "t1:room"), 0);
    expect_numsub(a, "t1:room", 2);
    pubs_t p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(pub(a, "t1:room", "hello", &p), 0);
    expect_msg(b, "t1:room", 1, "hello");
    assert_int_equal(pub(b, "t1:room", "back", &p), 0);
    expect_msg(a, "t1:room", 2, "back");
    pubs_wait(&p, 2);
    assert_int_equal(p.ok, 2);
    /* each saw only the other's message: a's "hello" came back to a through
     * Redis before b's "back" (one connection, in order) and was dropped */
    assert_int_equal(count_msgs(a, "t1:room", -1), 1);
    assert_int_equal(count_msgs(b, "t1:room", -1), 1);
    bus_stats_t st;
    bus_stats(a->b, &st);
    assert_true(st.own_dropped >= 1);
    assert_int_equal(st.published, 1);
    assert_true(st.received >= 1);
    assert_int_equal(st.ups, 1);
    /* a channel nobody subscribed: acknowledged, delivered to no one */
    assert_int_equal(pub(a, "t1:nobody", "x", &p), 0);
    pubs_wait(&p, 3);
    assert_int_equal(p.ok, 3);
    /* bad arguments */
    assert_int_equal(bus_publish(a->b, "", "x", 1, NULL, NULL), SORI_EINVAL);
    assert_int_equal(bus_publish(a->b, "c", NULL, 1, NULL, NULL), SORI_EINVAL);
    node_close(a);
    node_close(b);
}

#define ORDER_N 2000

typedef struct {
    node_t *n;
    int tag;
    pubs_t *p;
} pubber_t;

static void *pubber_main(void *arg)
{
    pubber_t *w = arg;
    char buf[32];
    for (int i = 0; i < ORDER_N; i++) {
        snprintf(buf, sizeof buf, "%d:%d", w->tag, i);
        int rc;
        while ((rc = pub(w->n, "t2:order", buf, w->p)) == SORI_ELIMIT) sleep_ms(1);
        if (rc) return (void *)1;
    }
    return NULL;
}

/* Two threads of node a publish 2000 messages each; node b receives all
 * 4000, each thread's in its order. */
static void test_order_many(void **state)
{
    (void)state;
    NEED_REDIS();
    node_t *a = node_open(3), *b = node_open(4);
    assert_int_equal(bus_subscribe(b->b, "t2:order"), 0);
    expect_numsub(b, "t2:order", 1);
    pubs_t p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pubber_t w[2] = {{a, 0, &p}, {a, 1, &p}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, pubber_main, &w[i]);
    for (int i = 0; i < 2; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        assert_null(rv);
    }
    want_t ww = {b, "t2:order", 3, NULL, 0, 2 * ORDER_N};
    assert_true(wait_until(want_count, &ww, 10000));
    pubs_wait(&p, 2 * ORDER_N);
    assert_int_equal(p.ok, 2 * ORDER_N);
    int next[2] = {0, 0};
    pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < b->nmsgs; i++) {
        if (strcmp(b->msgs[i].channel, "t2:order")) continue;
        int tag, k;
        assert_int_equal(sscanf(b->msgs[i].data, "%d:%d", &tag, &k), 2);
        assert_int_equal(k, next[tag]);
        next[tag]++;
    }
    pthread_mutex_unlock(&b->mu);
    assert_int_equal(next[0], ORDER_N);
    assert_int_equal(next[1], ORDER_N);
    node_close(a);
    node_close(b);
}

static void test_refcount(void **state)
{
    (void)state;
    NEED_REDIS();
    node_t *a = node_open(5), *b = node_open(6);
    assert_int_equal(bus_subscribe(a->b, "t3:ch"), 0);
    assert_int_equal(bus_subscribe(a->b, "t3:ch"), 0);
    assert_int_equal(bus_subscribe(a->b, "t3:barrier"), 0);
    expect_numsub(b, "t3:ch", 1);
    expect_numsub(b, "t3:barrier", 1);
    assert_int_equal(pub(b, "t3:ch", "m1", NULL), 0);
    expect_msg(a, "t3:ch", 6, "m1");
    /* one reference left: still subscribed */
    assert_int_equal(bus_unsubscribe(a->b, "t3:ch"), 0);
    assert_int_equal(pub(b, "t3:ch", "m2", NULL), 0);
    expect_msg(a, "t3:ch", 6, "m2");
    assert_int_equal(numsub(b, "t3:ch"), 1);
    /* the last one: UNSUBSCRIBEd */
    assert_int_equal(bus_unsubscribe(a->b, "t3:ch"), 0);
    expect_numsub(b, "t3:ch", 0);
    assert_int_equal(pub(b, "t3:ch", "m3", NULL), 0);
    assert_int_equal(pub(b, "t3:barrier", "after-m3", NULL), 0);
    expect_msg(a, "t3:barrier", 6, "after-m3");
    assert_false(has_msg(a, "t3:ch", 6, "m3", 2));
    assert_int_equal(bus_unsubscribe(a->b, "t3:ch"), SORI_ENOTFOUND);
    /* and back: subscribe, unsubscribe, subscribe in a burst ends subscribed */
    assert_int_equal(bus_subscribe(a->b, "t3:ch"), 0);
    assert_int_equal(bus_unsubscribe(a->b, "t3:ch"), 0);
    assert_int_equal(bus_subscribe(a->b, "t3:ch"), 0);
    expect_numsub(b, "t3:ch", 1);
    assert_int_equal(pub(b, "t3:ch", "m4", NULL), 0);
    expect_msg(a, "t3:ch", 6, "m4");
    node_close(a);
    node_close(b);
}

static void test_large_and_empty(void **state)
{
    (void)state;
    NEED_REDIS();
    node_t *a = node_open(7), *b = node_open(8);
    assert_int_equal(bus_subscribe(b->b, "t4:big"), 0);
    expect_numsub(a, "t4:big", 1);
    size_t len = 1 << 20;
    char *big = malloc(len);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        big[i] = (char)(i % 4096 == 0 ? 0 : x);
    }
    pubs_t p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(bus_publish(a->b, "t4:big", big, len, pub_done, &p), 0);
    assert_int_equal(bus_publish(a->b, "t4:big", "", 0, pub_done, &p), 0);
    want_t w = {b, "t4:big", 7, NULL, 0, 2};
    assert_true(wait_until(want_count, &w, 10000));
    assert_true(has_msg(b, "t4:big", 7, big, len));
    assert_true(has_msg(b, "t4:big", 7, "", 0));
    pubs_wait(&p, 2);
    assert_int_equal(p.ok, 2);
    free(big);
    node_close(a);
    node_close(b);
}

/* Redis held still by CLIENT PAUSE: nothing is answered, so accepted
 * requests stay queued and the bounds bite. */
static void test_queue_full(void **state)
{
    (void)state;
    NEED_REDIS();
    bus_opts_t oa = {.queue_max_msgs = 16};
    bus_opts_t oc = {.queue_max_bytes = 200 << 10};
    node_t *a = node_open_opts(9, &oa), *c = node_open_opts(10, &oc);
    char *chunk = calloc(1, 300 << 10);
    assert_int_equal(bus_publish(c->b, "t5:q", chunk, 300 << 10, NULL, NULL), SORI_E2BIG);
    sync_t s;
    const char *pause[] = {"CLIENT", "PAUSE", "500", "ALL"};
    cmd_sync(a, &s, 4, pause);
    assert_int_equal(s.type, BUS_REPLY_STATUS);
    pubs_t p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    for (int i = 0; i < 16; i++) assert_int_equal(pub(a, "t5:q", "m", &p), 0);
    assert_int_equal(pub(a, "t5:q", "m", &p), SORI_ELIMIT);
    assert_int_equal(pub(a, "t5:q", "m", &p), SORI_ELIMIT);
    /* bytes: three 60 KiB publishes fit in 200 KiB, a fourth does not */
    for (int i = 0; i < 3; i++) assert_int_equal(bus_publish(c->b, "t5:q", chunk, 60 << 10, pub_done, &p), 0);
    assert_int_equal(bus_publish(c->b, "t5:q", chunk, 60 << 10, pub_done, &p), SORI_ELIMIT);
    bus_stats_t st;
    bus_stats(a->b, &st);
    assert_int_equal(st.queue_full, 2);
    /* the pause ends; every accepted publish is acknowledged */
    pubs_wait(&p, 19);
    assert_int_equal(p.ok, 19);
    assert_int_equal(p.failed, 0);
    assert_int_equal(pub(a, "t5:q", "m", &p), 0);
    assert_int_equal(bus_publish(c->b, "t5:q", chunk, 60 << 10, pub_done, &p), 0);
    pubs_wait(&p, 21);
    assert_int_equal(p.ok, 21);
    free(chunk);
    node_close(a);
    node_close(c);
}

static void test_command_replies(void **state)
{
    (void)state;
    NEED_REDIS();
    node_t *a = node_open(11);
    sync_t s;
    const char *set[] = {"SET", "t6:k", "a\0b", NULL};
    size_t lens[] = {3, 4, 3};
    sync_init(&s);
    assert_int_equal(bus_command(a->b, 3, set, lens, cmd_cb, &s), 0);
    sync_wait(&s);
    assert_int_equal(s.type, BUS_REPLY_STATUS);
    assert_string_equal(s.str, "OK");
    const char *strlen_[] = {"STRLEN", "t6:k"};
    cmd_sync(a, &s, 2, strlen_);
    assert_int_equal(s.type, BUS_REPLY_INTEGER);
    assert_int_equal(s.integer, 3);
    const char *get[] = {"GET", "t6:missing"};
    cmd_sync(a, &s, 2, get);
    assert_int_equal(s.type, BUS_REPLY_NIL);
    const char *bad[] = {"NOSUCHCOMMAND"};
    cmd_sync(a, &s, 1, bad);
    assert_int_equal(s.type, BUS_REPLY_ERROR);
    assert_non_null(strstr(s.str, "unknown command"));
    /* a nested reply through a script: {1, {"x", {2}}, "y"} */
    const char *eval[] = {"EVAL", "return {1, {'x', {2}}, 'y'}", "0"};
    sync_init(&s);
    assert_int_equal(bus_command(a->b, 3, eval, NULL, cmd_cb, &s), 0);
    sync_wait(&s);
    assert_int_equal(s.type, BUS_REPLY_ARRAY); /* the tree itself: test_reply_tree */
    const char *refused[][1] = {{"SUBSCRIBE"}, {"multi"}, {"Select"}, {"MONITOR"}, {"AUTH"}, {"blpop"}};
    for (size_t i = 0; i < 6; i++) assert_int_equal(bus_command(a->b, 1, refused[i], NULL, cmd_cb, &s), SORI_EINVAL);
    const char *reply_off[] = {"CLIENT", "reply", "OFF"};
    assert_int_equal(bus_command(a->b, 3, reply_off, NULL, cmd_cb, &s), SORI_EINVAL);
    assert_int_equal(bus_command(a->b, 0, set, NULL, cmd_cb, &s), SORI_EINVAL);
    node_close(a);
}

static int tree_ok;
static pthread_mutex_t tree_mu = PTHREAD_MUTEX_INITIALIZER;
static void tree_cb(void *arg, int status, const bus_reply_t *r)
{
    (void)arg;
    int ok = status == 0 && r->type == BUS_REPLY_ARRAY && r->elements == 3 &&
             r->element[0].type == BUS_REPLY_INTEGER && r->element[0].integer == 1 &&
             r->element[1].type == BUS_REPLY_ARRAY && r->element[1].elements == 2 &&
             r->element[1].element[0].type == BUS_REPLY_STRING && r->element[1].element[0].len == 1 &&
             !strcmp(r->element[1].element[0].str, "x") && r->element[1].element[1].type == BUS_REPLY_ARRAY &&
             r->element[1].element[1].elements == 1 && r->element[1].element[1].element[0].integer == 2 &&
             r->element[2].type == BUS_REPLY_STRING && !strcmp(r->element[2].str, "y");
    pthread_mutex_lock(&tree_mu);
    tree_ok = ok ? 1 : -1;
    pthread_mutex_unlock(&tree_mu);
}

static int tree_done(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&tree_mu);
    int d = tree_ok != 0;
    pthread_mutex_unlock(&tree_mu);
    return d;
}

static void test_reply_tree(void **state)
{
    (void)state;
    NEED_REDIS();
    node_t *a = node_open(12);
    const char *eval[] = {"EVAL", "return {1, {'x', {2}}, 'y'}", "0"};
    assert_int_equal(bus_command(a->b, 3, eval, NULL, tree_cb, NULL), 0);
    assert_true(wait_until(tree_done, NULL, 5000));
    assert_int_equal(tree_ok, 1);
    node_close(a);
}

/* Publishes in flight when bus_close runs are answered before it returns. */
static void test_close_answers_inflight(void **state)
{
    (void)state;
    NEED_REDIS();
    node_t *a = node_open(13);
    pubs_t p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    int accepted = 0;
    for (int i = 0; i < 500; i++) accepted += pub(a, "t7:close", "m", &p) == 0;
    assert_int_equal(accepted, 500);
    node_close(a);
    assert_int_equal(p.calls, 500);
    assert_int_equal(p.ok, 500);
}

static double load_a(void) { return 0.25; }
static double load_b(void) { return 0.5; }

static int presence_is(node_t *n, const char *user, const char *want)
{
    return !strcmp(query1(n, user), want);
}

typedef struct {
    node_t *n;
    const char *user;
    const char *want;
} pres_want_t;

static int pres_reached(void *arg)
{
    pres_want_t *w = arg;
    return presence_is(w->n, w->user, w->want);
}

static void test_presence(void **state)
{
    (void)state;
    NEED_REDIS();
    node_t *a = node_open(21), *b = node_open(22);
    /* set on a: b gets the notice, then sees the user online */
    assert_int_equal(bus_presence_set(a->b, "alice", 1), 0);
    expect_msg(b, BUS_PRESENCE_CHANNEL, 21, "+alice");
    const char *ab[] = {"alice", "bob"};
    assert_string_equal(query(b, 2, ab), "10");
    assert_string_equal(query(a, 2, ab), "10"); /* this node's own users count */
    /* one user on both nodes stays online until both clear it */
    assert_int_equal(bus_presence_set(a->b, "carol", 1), 0);
    assert_int_equal(bus_presence_set(b->b, "carol", 1), 0);
    expect_msg(b, BUS_PRESENCE_CHANNEL, 21, "+carol");
    expect_msg(a, BUS_PRESENCE_CHANNEL, 22, "+carol");
    assert_int_equal(bus_presence_set(a->b, "carol", 0), 0);
    expect_msg(b, BUS_PRESENCE_CHANNEL, 21, "-carol");
    assert_string_equal(query1(b, "carol"), "1");
    assert_int_equal(bus_presence_set(b->b, "carol", 0), 0);
    expect_msg(a, BUS_PRESENCE_CHANNEL, 22, "-carol");
    assert_string_equal(query1(a, "carol"), "0");
    /* no notices for no-ops; a burst of toggles ends where it stopped */
    assert_int_equal(bus_presence_set(a->b, "alice", 1), 0);
    for (int i = 0; i < 50; i++) assert_int_equal(bus_presence_set(a->b, "dan", i % 2 == 0), 0);
    assert_int_equal(bus_presence_set(a->b, "dan", 1), 0);
    pres_want_t w = {b, "dan", "1"};
    assert_true(wait_until(pres_reached, &w, 5000));
    assert_int_equal(count_msgs(b, BUS_PRESENCE_CHANNEL, 21) >= 3, 1);
    assert_int_equal(bus_presence_set(a->b, "", 1), SORI_EINVAL);
    /* many names in one query (more than one HMGET chunk) */
    const char *many[64];
    char names[64][16];
    for (int i = 0; i < 64; i++) {
        snprintf(names[i], sizeof names[i], "u%d", i);
        many[i] = names[i];
    }
    many[10] = "alice";
    many[63] = "dan";
    const char *r = query(b, 64, many);
    for (int i = 0; i < 64; i++) assert_int_equal(r[i], i == 10 || i == 63 ? '1' : '0');

    /* a crashed node (no cleanup) drops out within its TTL */
    bus_opts_t oc = {.presence_ttl_ms = 600, .presence_refresh_ms = 200, .keep_keys_on_close = 1};
    node_t *c = node_open_opts(23, &oc);
    assert_int_equal(bus_presence_set(c->b, "erin", 1), 0);
    expect_msg(b, BUS_PRESENCE_CHANNEL, 23, "+erin");
    sleep_ms(700); /* longer than the TTL: the refresh keeps it alive */
    assert_string_equal(query1(b, "erin"), "1");
    node_close(c);
    int64_t t0 = now_ms();
    assert_string_equal(query1(b, "erin"), "1"); /* nothing was cleaned up */
    w = (pres_want_t){b, "erin", "0"};
    assert_true(wait_until(pres_reached, &w, 3000));
    assert_true(now_ms() - t0 <= 600 + 1000);

    /* a clean close removes its users at once and says so */
    node_t *d = node_open(24);
    assert_int_equal(bus_presence_set(d->b, "fay", 1), 0);
    expect_msg(b, BUS_PRESENCE_CHANNEL, 24, "+fay");
    assert_string_equal(query1(b, "fay"), "1");
    node_close(d);
    assert_string_equal(query1(b, "fay"), "0");
    expect_msg(b, BUS_PRESENCE_CHANNEL, 24, "*");
    node_close(a);
    node_close(b);
}

static void test_registry(void **state)
{
    (void)state;
    NEED_REDIS();
    node_t *a = node_open(31), *b = node_open(32);
    assert_int_equal(bus_register(a->b, "ws://a.example:8080/ws", load_a), 0);
    assert_int_equal(bus_register(b->b, "ws://b.example/ws", load_b), 0);
    bus_node_t e;
    char ws[128];
    /* b's registration is written on b's connection: a sees it once it is */
    for (int64_t end = now_ms() + 5000; !discover_find(a, 32, NULL, NULL, 0) && now_ms() < end;) sleep_ms(5);
    assert_true(discover_find(a, 31, &e, ws, sizeof ws));
    assert_string_equal(ws, "ws://a.example:8080/ws");
    assert_true(e.load == 0.25);
    assert_true(discover_find(a, 32, &e, ws, sizeof ws));
    assert_string_equal(ws, "ws://b.example/ws");
    assert_true(e.load == 0.5);
    /* re-registering replaces the entry */
    assert_int_equal(bus_register(a->b, "wss://a2.example/ws", NULL), 0);
    assert_true(discover_find(a, 31, &e, ws, sizeof ws));
    assert_string_equal(ws, "wss://a2.example/ws");
    assert_true(e.load == 0);
    /* a node that stops refreshing disappears after its TTL */
    bus_opts_t oc = {.node_ttl_ms = 500, .node_refresh_ms = 150, .keep_keys_on_close = 1};
    node_t *c = node_open_opts(33, &oc);
    assert_int_equal(bus_register(c->b, "ws://c.example/ws", NULL), 0);
    for (int64_t end = now_ms() + 5000; !discover_find(a, 33, NULL, NULL, 0) && now_ms() < end;) sleep_ms(5);
    sleep_ms(600); /* beyond the TTL: refreshed */
    assert_true(discover_find(a, 33, NULL, NULL, 0));
    node_close(c);
    assert_true(discover_find(a, 33, NULL, NULL, 0));
    int64_t t0 = now_ms();
    while (discover_find(a, 33, NULL, NULL, 0) && now_ms() - t0 < 3000) sleep_ms(20);
    assert_false(discover_find(a, 33, NULL, NULL, 0));
    assert_true(now_ms() - t0 <= 500 + 1000);
    /* a clean close deletes its key at once */
    node_close(b);
    assert_false(discover_find(a, 32, NULL, NULL, 0));
    assert_true(discover_find(a, 31, NULL, NULL, 0));
    node_close(a);
}

typedef struct {
    node_t *n;
    int k;
} states_t;

static int states_reached(void *arg)
{
    states_t *w = arg;
    pthread_mutex_lock(&w->n->mu);
    int r = w->n->nstates >= w->k;
    pthread_mutex_unlock(&w->n->mu);
    return r;
}

/* Redis killed -9 and restarted on the same port, empty. */
static void test_redis_restart(void **state)
{
    (void)state;
    NEED_REDIS();
    if (!redis_ctl) {
        fprintf(stderr, "test_bus: SORI_REDIS_CTL is unset: cannot crash Redis; skipping the restart test\n");
        skip();
        return;
    }
    node_t *a = node_open(41), *b = node_open(42);
    assert_int_equal(bus_subscribe(a->b, "t8:r"), 0);
    assert_int_equal(bus_subscribe(b->b, "t8:r"), 0);
    expect_numsub(a, "t8:r", 2);
    assert_int_equal(bus_presence_set(a->b, "rita", 1), 0);
    assert_int_equal(bus_register(a->b, "ws://a/ws", NULL), 0);
    expect_msg(b, BUS_PRESENCE_CHANNEL, 41, "+rita");
    assert_true(discover_find(b, 41, NULL, NULL, 0));

    /* a burst in flight when Redis dies: every publish is answered */
    pubs_t p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    int accepted = 0;
    for (int i = 0; i < 300; i++) accepted += pub(a, "t8:r", "burst", &p) == 0;
    assert_int_equal(redis_ctl_run("--kill"), 0);
    states_t sa = {a, 2}, sb = {b, 2};
    assert_true(wait_until(states_reached, &sa, 5000));
    assert_true(wait_until(states_reached, &sb, 5000));
    assert_int_equal(bus_up(a->b), 0);
    pubs_wait(&p, accepted);
    assert_int_equal(p.ok + p.failed, accepted);
    assert_int_equal(pub(a, "t8:r", "while-down", NULL), SORI_ECLOSED);
    /* changes while down are kept */
    assert_int_equal(bus_presence_set(a->b, "sam", 1), 0);
    assert_int_equal(bus_subscribe(a->b, "t8:new"), 0);

    sleep_ms(300); /* reconnect attempts meet a closed port (backoff 100, 200 ms) */
    bus_stats_t st;
    bus_stats(a->b, &st);
    assert_true(st.connect_failed >= 1);
    assert_int_equal(redis_ctl_run("--start"), 0);
    sa.k = sb.k = 3;
    assert_true(wait_until(states_reached, &sa, 10000));
    assert_true(wait_until(states_reached, &sb, 10000));
    pthread_mutex_lock(&a->mu);
    assert_int_equal(a->nstates, 3);
    assert_int_equal(a->states[0], 1);
    assert_int_equal(a->states[1], 0);
    assert_int_equal(a->states[2], 1);
    pthread_mutex_unlock(&a->mu);
    assert_true(bus_up(a->b) && bus_up(b->b));
    /* up means subscribed again: no waiting for NUMSUB */
    assert_int_equal(pub(b, "t8:r", "after", NULL), 0);
    expect_msg(a, "t8:r", 42, "after");
    assert_int_equal(pub(b, "t8:new", "new", NULL), 0);
    expect_msg(a, "t8:new", 42, "new");
    assert_int_equal(pub(a, "t8:r", "after-a", NULL), 0);
    expect_msg(b, "t8:r", 41, "after-a");
    /* presence and registration rewritten on the empty Redis */
    const char *rs[] = {"rita", "sam"};
    assert_string_equal(query(b, 2, rs), "11");
    assert_true(discover_find(b, 41, NULL, NULL, 0));
    bus_stats(a->b, &st);
    assert_int_equal(st.ups, 2);
    assert_int_equal(st.downs, 1);
    node_close(a);
    node_close(b);
}

/* A Redis that stops answering (CLIENT PAUSE from another node) is
 * detected by the reply watchdog: the link drops, the stuck publish fails,
 * and the link comes back once Redis answers again. */
static void test_reply_timeout(void **state)
{
    (void)state;
    NEED_REDIS();
    bus_opts_t ox = {.reply_timeout_ms = 300};
    node_t *x = node_open_opts(51, &ox), *y = node_open(52);
    sync_t s;
    const char *pause[] = {"CLIENT", "PAUSE", "1200", "ALL"};
    cmd_sync(y, &s, 4, pause);
    pubs_t p = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(pub(x, "t9:p", "stuck", &p), 0);
    states_t sx = {x, 2};
    assert_true(wait_until(states_reached, &sx, 3000));
    pubs_wait(&p, 1);
    assert_int_equal(p.failed, 1);
    assert_int_equal(bus_up(y->b), 1); /* y's 10 s timeout is far away */
    sx.k = 3;
    assert_true(wait_until(states_reached, &sx, 6000));
    assert_int_equal(x->states[1], 0);
    assert_int_equal(x->states[2], 1);
    assert_int_equal(pub(x, "t9:p", "again", &p), 0);
    pubs_wait(&p, 2);
    assert_int_equal(p.ok, 1);
    node_close(x);
    node_close(y);
}

int main(void)
{
    log_level_set(getenv("SORI_TEST_LOG") ? LOG_LEVEL_DEBUG : -1);
    main_thread = pthread_self();
    redis_url = getenv("SORI_REDIS_URL");
    if (redis_url && !*redis_url) redis_url = NULL;
    redis_ctl = getenv("SORI_REDIS_CTL");
    if (redis_ctl && !*redis_ctl) redis_ctl = NULL;
    if (!redis_url)
        fprintf(stderr, "test_bus: SORI_REDIS_URL is unset: skipping the tests that need Redis "
                        "(run: scripts/redis-test.sh %s)\n",
                "build/tests/test_bus");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_parse),
        cmocka_unit_test(test_notice_parse),
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_down_from_start),
        cmocka_unit_test(test_pubsub_two_nodes),
        cmocka_unit_test(test_order_many),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_large_and_empty),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_command_replies),
        cmocka_unit_test(test_reply_tree),
        cmocka_unit_test(test_close_answers_inflight),
        cmocka_unit_test(test_presence),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_redis_restart),
        cmocka_unit_test(test_reply_timeout),
    };
    return cmocka_run_group_tests_name("bus", tests, NULL, NULL);
}
