/* Unit tests for push/push.c against a real HTTP receiver: a tiny server on
 * 127.0.0.1 (its own thread, scripted status per request, or one that reads
 * the request and never answers) records what the push thread POSTs. Covers
 * the exact body, the preview (off, cut on a UTF-8 boundary), retries and
 * backoff order, failures (4xx, refused, timeout), drops (queue, per-user
 * rate, user table), skips (still_unread), URL parsing, push off, and
 * push_stop interrupting a try. Backoff and timeouts are shortened through
 * push.c's statics. SORI_TEST_LOG=1 shows the log. */
#include "push/push.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

/* ---- the receiver ---- */

#define RX_MAX 16

typedef struct {
    int lfd;
    int port;
    pthread_t thread;
    pthread_mutex_t mu;
    int stop;            /* under mu */
    int hang;            /* read requests, never answer */
    int script[RX_MAX];  /* status per request; 0 or past the end: 200 */
    int nscript;
    int n;               /* requests received (under mu) */
    int accepted;        /* connections accepted (under mu) */
    char *head[RX_MAX];  /* request line and headers */
    char *body[RX_MAX];
    int held[RX_MAX];    /* hang mode: connections kept open */
    int nheld;
} rx_t;

static rx_t rx;

static int64_t t_now(void)
{
    return push__now_ms();
}

/* Reads one request (headers, then Content-Length bytes) from fd into
 * malloc'd head and body; 0 or -1. */
static int rx_read(int fd, char **head, char **body)
{
    size_t cap = 65536, have = 0;
    char *b = malloc(cap + 1);
    char *end = NULL;
    while (!end) {
        if (have == cap) goto fail;
        ssize_t r = recv(fd, b + have, cap - have, 0);
        if (r <= 0) goto fail;
        have += (size_t)r;
        b[have] = 0;
        end = strstr(b, "\r\n\r\n");
    }
    size_t hlen = (size_t)(end - b) + 4;
    size_t clen = 0;
    for (char *p = b; p < end; p++)
        if (!strncasecmp(p, "\r\nContent-Length:", 17)) clen = strtoul(p + 17, NULL, 10);
    if (hlen + clen > cap) goto fail;
    while (have < hlen + clen) {
        ssize_t r = recv(fd, b + have, hlen + clen - have, 0);
        if (r <= 0) goto fail;
        have += (size_t)r;
    }
    *head = strndup(b, hlen);
    *body = strndup(b + hlen, clen);
    free(b);
    return 0;
fail:
    free(b);
    return -1;
}

static void *rx_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&rx.mu);
        int stop = rx.stop;
        pthread_mutex_unlock(&rx.mu);
        if (stop) break;
        struct pollfd p = {.fd = rx.lfd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0) continue;
        int fd = accept(rx.lfd, NULL, NULL);
        if (fd < 0) continue;
        struct timeval tv = {.tv_sec = 2};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        pthread_mutex_lock(&rx.mu);
        rx.accepted++;
        pthread_mutex_unlock(&rx.mu);
        char *head = NULL, *body = NULL;
        if (rx_read(fd, &head, &body)) {
            close(fd);
            continue;
        }
        pthread_mutex_lock(&rx.mu);
        int i = rx.n++;
        int status = i < rx.nscript && rx.script[i] ? rx.script[i] : 200;
        if (i < RX_MAX) {
            rx.head[i] = head;
            rx.body[i] = body;
        } else {
            free(head);
            free(body);
        }
        int hang = rx.hang && rx.nheld < RX_MAX;
        if (hang) rx.held[rx.nheld++] = fd;
        pthread_mutex_unlock(&rx.mu);
        if (hang) continue;
        char resp[256];
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 %d Scripted\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                         "Connection: close\r\n\r\nok",
                         status);
        ssize_t w = send(fd, resp, (size_t)n, MSG_NOSIGNAL);
        (void)w;
        close(fd);
    }
    return NULL;
}

/* Starts the receiver with a status script (0-terminated). */
static void rx_start(int hang, const int *script)
{
    memset(&rx, 0, sizeof rx);
    pthread_mutex_init(&rx.mu, NULL);
    rx.hang = hang;
    for (; script && *script && rx.nscript < RX_MAX; script++) rx.script[rx.nscript++] = *script;
    rx.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(rx.lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(rx.lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(rx.lfd, 16), 0);
    socklen_t sl = sizeof sa;
    getsockname(rx.lfd, (struct sockaddr *)&sa, &sl);
    rx.port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&rx.thread, NULL, rx_main, NULL), 0);
}

static void rx_stop(void)
{
    if (rx.lfd <= 0) return;
    pthread_mutex_lock(&rx.mu);
    rx.stop = 1;
    pthread_mutex_unlock(&rx.mu);
    pthread_join(rx.thread, NULL);
    close(rx.lfd);
    for (int i = 0; i < rx.nheld; i++) close(rx.held[i]);
    for (int i = 0; i < RX_MAX; i++) {
        free(rx.head[i]);
        free(rx.body[i]);
    }
    pthread_mutex_destroy(&rx.mu);
    memset(&rx, 0, sizeof rx);
}

static int rx_count(void)
{
    pthread_mutex_lock(&rx.mu);
    int n = rx.n;
    pthread_mutex_unlock(&rx.mu);
    return n;
}

/* What request i carried (locking: the receiver wrote it under mu). */
static const char *rx_body(int i)
{
    pthread_mutex_lock(&rx.mu);
    const char *b = i < rx.n && i < RX_MAX ? rx.body[i] : "";
    pthread_mutex_unlock(&rx.mu);
    return b;
}

static const char *rx_head(int i)
{
    pthread_mutex_lock(&rx.mu);
    const char *h = i < rx.n && i < RX_MAX ? rx.head[i] : "";
    pthread_mutex_unlock(&rx.mu);
    return h;
}

/* A port nothing listens on (bound, then closed). */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}

/* ---- still_unread, recorded ---- */

static pthread_mutex_t su_mu = PTHREAD_MUTEX_INITIALIZER;
static int su_answer = 1, su_calls;
static char su_user[64], su_room[80];
static int64_t su_seq;

static int t_still_unread(const char *user, const char *room, int64_t seq)
{
    pthread_mutex_lock(&su_mu);
    su_calls++;
    snprintf(su_user, sizeof su_user, "%s", user);
    snprintf(su_room, sizeof su_room, "%s", room);
    su_seq = seq;
    int a = su_answer;
    pthread_mutex_unlock(&su_mu);
    return a;
}

static void su_set(int answer)
{
    pthread_mutex_lock(&su_mu);
    su_answer = answer;
    pthread_mutex_unlock(&su_mu);
}

/* ---- helpers ---- */

static char url[128];

static push_config_t cfg_for(int port)
{
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", port);
    return (push_config_t){.url = url, .preview = 1, .queue_max = 100, .rate_per_min = 100, .attempts = 3,
                           .delay_ms = 0, .still_unread = t_still_unread};
}

static void start(const push_config_t *c)
{
    char err[256] = "";
    int rc = push_start(c, err, sizeof err);
    if (rc) fail_msg("push_start: %s", err);
    assert_int_equal(push_enabled(), 1);
}

static push_stats_t stats(void)
{
    push_stats_t s;
    push_stats(&s);
    return s;
}

/* Waits up to 5 s for stats().field to reach want. */
#define WAIT_STAT(field, want)                                                        \
    do {                                                                              \
        int64_t until_ = t_now() + 5000;                                              \
        while (stats().field < (uint64_t)(want) && t_now() < until_) usleep(2000);   \
        assert_int_equal(stats().field, (want));                                      \
    } while (0)

static void enqueue(const char *user, const char *text)
{
    push_enqueue("dm", user, "dm:alice:bob", "alice", 42, 7, 1700000000000LL, text, text ? strlen(text) : 0);
}

static int log_base = -1;

/* Logs at debug level until the test ends, so that the sanitizers see the
 * log lines of drops and failures formatted (set before push_start: the
 * push thread reads the level). */
static void log_verbose(void)
{
    log_level_set(LOG_LEVEL_DEBUG);
}

static int setup(void **state)
{
    (void)state;
    push__backoff_ms = 20;
    push__timeout_ms = PUSH__TIMEOUT_MS;
    su_set(1);
    pthread_mutex_lock(&su_mu);
    su_calls = 0;
    pthread_mutex_unlock(&su_mu);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    push_stop();
    rx_stop();
    log_level_set(log_base);
    return 0;
}

/* ---- delivery ---- */

static void test_delivery_exact_body(void **state)
{
    (void)state;
    rx_start(0, NULL);
    push_config_t c = cfg_for(rx.port);
    start(&c);
    const char text[] = "hi \"there\"\n\\ caf\xc3\xa9";
    push_enqueue("mention", "bob", "lobby", "alice", 123456789012345ULL, 7, 1700000000123LL, text,
                 sizeof text - 1);
    WAIT_STAT(sent, 1);
    push_stats_t s = stats();
    assert_int_equal(s.failed + s.dropped + s.skipped + s.retries + s.queued, 0);
    assert_int_equal(rx_count(), 1);
    assert_string_equal(rx_body(0), "{\"type\":\"mention\",\"user\":\"bob\",\"room\":\"lobby\",\"from\":\"alice\","
                                    "\"id\":\"123456789012345\",\"seq\":7,\"ts\":1700000000123,"
                                    "\"text\":\"hi \\\"there\\\"\\n\\\\ caf\xc3\xa9\"}");
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", rx.port);
    assert_true(!strncmp(rx_head(0), "POST /hook HTTP/1.1\r\n", 21));
    assert_non_null(strstr(rx_head(0), host));
    assert_non_null(strstr(rx_head(0), "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(rx_head(0), "\r\nUser-Agent: sori\r\n"));
    assert_non_null(strstr(rx_head(0), "\r\nConnection: close\r\n"));
    char clen[48];
    snprintf(clen, sizeof clen, "\r\nContent-Length: %zu\r\n", strlen(rx_body(0)));
    assert_non_null(strstr(rx_head(0), clen));
    char user[64], room[80];
    pthread_mutex_lock(&su_mu);
    int calls = su_calls;
    int64_t seq = su_seq;
    memcpy(user, su_user, sizeof user);
    memcpy(room, su_room, sizeof room);
    pthread_mutex_unlock(&su_mu); /* a failed assert must not leave it locked */
    assert_int_equal(calls, 1);
    assert_string_equal(user, "bob");
    assert_string_equal(room, "lobby");
    assert_int_equal(seq, 7);
}

static void test_preview_off(void **state)
{
    (void)state;
    rx_start(0, NULL);
    push_config_t c = cfg_for(rx.port);
    c.preview = 0;
    start(&c);
    enqueue("bob", "secret text");
    WAIT_STAT(sent, 1);
    assert_string_equal(rx_body(0), "{\"type\":\"dm\",\"user\":\"bob\",\"room\":\"dm:alice:bob\",\"from\":\"alice\","
                                    "\"id\":\"42\",\"seq\":7,\"ts\":1700000000000}");
}

static void test_preview_cut_utf8(void **state)
{
    (void)state;
    rx_start(0, NULL);
    push_config_t c = cfg_for(rx.port);
    start(&c);
    /* 99 x 'a', then e-acute (2 bytes), then a 4-byte emoji: 101 characters,
     * cut after the e-acute. */
    char text[200], want[400];
    memset(text, 'a', 99);
    strcpy(text + 99, "\xc3\xa9\xf0\x9f\x98\x80");
    enqueue("bob", text);
    /* Exactly 100 characters: no ellipsis. */
    text[99 + 2] = 0;
    enqueue("carol", text);
    WAIT_STAT(sent, 2);
    char a99[100];
    memset(a99, 'a', 99);
    a99[99] = 0;
    snprintf(want, sizeof want,
             "{\"type\":\"dm\",\"user\":\"bob\",\"room\":\"dm:alice:bob\",\"from\":\"alice\",\"id\":\"42\",\"seq\":7,"
             "\"ts\":1700000000000,\"text\":\"%s\xc3\xa9\xe2\x80\xa6\"}",
             a99);
    assert_string_equal(rx_body(0), want);
    snprintf(want, sizeof want,
             "{\"type\":\"dm\",\"user\":\"carol\",\"room\":\"dm:alice:bob\",\"from\":\"alice\",\"id\":\"42\",\"seq\":7,"
             "\"ts\":1700000000000,\"text\":\"%s\xc3\xa9\"}",
             a99);
    assert_string_equal(rx_body(1), want);
}

static void test_preview_len(void **state)
{
    (void)state;
    int cut;
    char s[512];
    /* 101 emoji: cut after 100 of them, never inside one. */
    for (int i = 0; i < 101; i++) memcpy(s + 4 * i, "\xf0\x9f\x98\x80", 4);
    assert_int_equal(push__preview_len(s, 404, &cut), 400);
    assert_int_equal(cut, 1);
    assert_int_equal(push__preview_len(s, 400, &cut), 400);
    assert_int_equal(cut, 0);
    /* 3-byte characters after one ASCII byte. */
    s[0] = 'x';
    for (int i = 0; i < 100; i++) memcpy(s + 1 + 3 * i, "\xe2\x82\xac", 3);
    assert_int_equal(push__preview_len(s, 301, &cut), 298);
    assert_int_equal(cut, 1);
    assert_int_equal(push__preview_len(s, 0, &cut), 0);
    assert_int_equal(cut, 0);
}

/* ---- retries and failures ---- */

static void test_retry_after_500(void **state)
{
    (void)state;
    int script[] = {500, 200, 0};
    rx_start(0, script);
    push_config_t c = cfg_for(rx.port);
    start(&c);
    enqueue("bob", "hi");
    WAIT_STAT(sent, 1);
    push_stats_t s = stats();
    assert_int_equal(s.retries, 1);
    assert_int_equal(s.failed, 0);
    assert_int_equal(s.queued, 0);
    assert_int_equal(rx_count(), 2);
    assert_string_equal(rx_body(0), rx_body(1));
    pthread_mutex_lock(&su_mu);
    int calls = su_calls;
    pthread_mutex_unlock(&su_mu);
    assert_int_equal(calls, 2); /* asked before every try */
}

static void test_retry_429_does_not_block_others(void **state)
{
    (void)state;
    /* bob's first try gets 429 and waits 300 ms for the next; carol,
     * queued after that, is due at once and is sent meanwhile; then bob. */
    int script[] = {429, 200, 200, 0};
    rx_start(0, script);
    push__backoff_ms = 300;
    push_config_t c = cfg_for(rx.port);
    start(&c);
    enqueue("bob", "first");
    int64_t until = t_now() + 5000;
    size_t waiting = 0;
    while (!waiting && t_now() < until) {
        usleep(1000);
        pthread_mutex_lock(&push__g.lock);
        waiting = push__g.n; /* bob is back in the queue, for his retry */
        pthread_mutex_unlock(&push__g.lock);
    }
    assert_int_equal(waiting, 1);
    assert_int_equal(rx_count(), 1);
    enqueue("carol", "second");
    WAIT_STAT(sent, 2);
    assert_int_equal(rx_count(), 3);
    assert_non_null(strstr(rx_body(0), "\"user\":\"bob\""));
    assert_non_null(strstr(rx_body(1), "\"user\":\"carol\""));
    assert_non_null(strstr(rx_body(2), "\"user\":\"bob\""));
    assert_int_equal(stats().retries, 1);
}

static void test_400_fails_without_retry(void **state)
{
    (void)state;
    int script[] = {400, 0};
    rx_start(0, script);
    push_config_t c = cfg_for(rx.port);
    start(&c);
    enqueue("bob", "hi");
    WAIT_STAT(failed, 1);
    usleep(100 * 1000); /* several backoffs: a retry would have come */
    push_stats_t s = stats();
    assert_int_equal(s.sent, 0);
    assert_int_equal(s.retries, 0);
    assert_int_equal(s.queued, 0);
    assert_int_equal(rx_count(), 1);
}

static void test_refused_fails_after_attempts(void **state)
{
    (void)state;
    log_verbose();
    push_config_t c = cfg_for(dead_port());
    c.attempts = 2;
    start(&c);
    enqueue("bob", "hi");
    enqueue("carol", "hi");
    WAIT_STAT(failed, 2);
    push_stats_t s = stats();
    assert_int_equal(s.sent, 0);
    assert_int_equal(s.retries, 2);
    assert_int_equal(s.queued, 0);
}

static void test_all_5xx_fail(void **state)
{
    (void)state;
    log_verbose();
    int script[] = {503, 502, 500, 200, 0};
    rx_start(0, script);
    push_config_t c = cfg_for(rx.port);
    c.attempts = 3;
    start(&c);
    enqueue("bob", "hi");
    WAIT_STAT(failed, 1);
    assert_int_equal(stats().retries, 2);
    assert_int_equal(stats().sent, 0);
    assert_int_equal(rx_count(), 3);
}

static void test_timeout_is_retried(void **state)
{
    (void)state;
    rx_start(1, NULL); /* reads, never answers */
    push__timeout_ms = 200;
    push_config_t c = cfg_for(rx.port);
    c.attempts = 2;
    start(&c);
    enqueue("bob", "hi");
    WAIT_STAT(failed, 1);
    assert_int_equal(stats().retries, 1);
    assert_int_equal(rx_count(), 2);
}

static void test_stop_interrupts_a_try(void **state)
{
    (void)state;
    rx_start(1, NULL); /* the try would wait 5 s for a status line */
    push_config_t c = cfg_for(rx.port);
    start(&c);
    enqueue("bob", "hi");
    int64_t until = t_now() + 5000;
    while (rx_count() < 1 && t_now() < until) usleep(2000);
    assert_int_equal(rx_count(), 1);
    int64_t t0 = t_now();
    push_stop();
    assert_true(t_now() - t0 < 1000);
    push_stats_t s = stats();
    assert_int_equal(s.dropped, 1);
    assert_int_equal(s.queued, 0);
    assert_int_equal(s.failed + s.sent, 0);
    assert_int_equal(push_enabled(), 0);
}

/* ---- drops and skips ---- */

static void test_queue_full_drops(void **state)
{
    (void)state;
    log_verbose();
    rx_start(0, NULL);
    push_config_t c = cfg_for(rx.port);
    c.queue_max = 3;
    c.delay_ms = 60000; /* everything waits */
    start(&c);
    const char *users[] = {"u1", "u2", "u3", "u4", "u5"};
    for (int i = 0; i < 5; i++) enqueue(users[i], "hi");
    push_stats_t s = stats();
    assert_int_equal(s.queued, 3);
    assert_int_equal(s.dropped, 2);
    push_stop(); /* what waits is dropped too */
    s = stats();
    assert_int_equal(s.queued, 0);
    assert_int_equal(s.dropped, 5);
    assert_int_equal(s.sent, 0);
    assert_int_equal(rx_count(), 0);
}

static void test_rate_per_user(void **state)
{
    (void)state;
    log_verbose();
    rx_start(0, NULL);
    push_config_t c = cfg_for(rx.port);
    c.rate_per_min = 2;
    start(&c);
    for (int i = 0; i < 4; i++) enqueue("bob", "hi");
    enqueue("carol", "hi");
    WAIT_STAT(sent, 3);
    assert_int_equal(stats().dropped, 2);
    usleep(50 * 1000);
    assert_int_equal(rx_count(), 3);
    /* A new window lets bob through again. */
    pthread_mutex_lock(&push__g.lock);
    push_rate_t *r = map_get(&push__g.rates, "bob", 3);
    if (r) r->start -= PUSH__WINDOW_MS;
    pthread_mutex_unlock(&push__g.lock);
    assert_non_null(r);
    enqueue("bob", "hi");
    WAIT_STAT(sent, 4);
    assert_int_equal(stats().dropped, 2);
}

static void test_user_table_bounded(void **state)
{
    (void)state;
    log_verbose();
    rx_start(0, NULL);
    push_config_t c = cfg_for(rx.port);
    c.delay_ms = 60000;
    start(&c);
    pthread_mutex_lock(&push__g.lock);
    push__g.rates_max = 2;
    pthread_mutex_unlock(&push__g.lock);
    enqueue("u1", "hi");
    enqueue("u2", "hi");
    enqueue("u3", "hi"); /* a third user within the minute: dropped */
    enqueue("u1", "hi"); /* known users still pass */
    push_stats_t s = stats();
    assert_int_equal(s.queued, 3);
    assert_int_equal(s.dropped, 1);
    /* Once the windows are over, a sweep makes room. */
    pthread_mutex_lock(&push__g.lock);
    for (size_t i = 0; i < push__g.rates.nbuckets; i++)
        for (map_entry_t *e = push__g.rates.buckets[i]; e; e = e->next) ((push_rate_t *)e->value)->start -= PUSH__WINDOW_MS;
    push__g.rates_next_sweep -= PUSH__WINDOW_MS;
    pthread_mutex_unlock(&push__g.lock);
    enqueue("u3", "hi");
    s = stats();
    assert_int_equal(s.queued, 4);
    assert_int_equal(s.dropped, 1);
    pthread_mutex_lock(&push__g.lock);
    size_t users = push__g.rates.count;
    pthread_mutex_unlock(&push__g.lock);
    assert_int_equal(users, 1);
}

static void test_read_meanwhile_skips(void **state)
{
    (void)state;
    rx_start(0, NULL);
    su_set(0);
    push_config_t c = cfg_for(rx.port);
    start(&c);
    enqueue("bob", "hi");
    WAIT_STAT(skipped, 1);
    push_stats_t s = stats();
    assert_int_equal(s.sent + s.failed + s.dropped + s.retries + s.queued, 0);
    assert_int_equal(rx_count(), 0);
}

static void test_read_between_retries_skips(void **state)
{
    (void)state;
    int script[] = {500, 0};
    rx_start(0, script);
    push__backoff_ms = 200;
    push_config_t c = cfg_for(rx.port);
    start(&c);
    enqueue("bob", "hi");
    int64_t until = t_now() + 5000;
    while (rx_count() < 1 && t_now() < until) usleep(2000);
    su_set(0); /* bob read the room during the backoff */
    WAIT_STAT(skipped, 1);
    assert_int_equal(rx_count(), 1);
    assert_int_equal(stats().retries, 0);
    assert_int_equal(stats().queued, 0);
}

static void test_delay(void **state)
{
    (void)state;
    rx_start(0, NULL);
    push_config_t c = cfg_for(rx.port);
    c.delay_ms = 300;
    start(&c);
    int64_t t0 = t_now();
    enqueue("bob", "hi");
    WAIT_STAT(sent, 1);
    assert_true(t_now() - t0 >= 300);
}

/* ---- configuration ---- */

static void test_bad_urls(void **state)
{
    (void)state;
    const char *bad[] = {
        "https://gw.example/push", "HTTPS://gw", "ftp://gw/", "garbage", "http://", "http:///path",
        "http://:80/", "http://gw:0/", "http://gw:65536/", "http://gw:/", "http://gw:12ab/", "http://gw:123456/",
        "http://user:pw@gw/", "http://g w/", "http://gw/a b", "http://gw/\x01", "http://[::1/", "http://[]/",
        "http://[zz]/", "http://[::1]x/", "http://g_w!/", "http://gw/caf\xc3\xa9",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        push_config_t c = {.url = bad[i], .queue_max = 1, .rate_per_min = 1, .attempts = 1};
        char err[256] = "";
        int rc = push_start(&c, err, sizeof err);
        if (rc != SORI_EINVAL) fail_msg("%s: accepted (%d)", bad[i], rc);
        assert_true(strlen(err) > 10);
        assert_int_equal(push_enabled(), 0);
        char err2[256] = "";
        assert_int_equal(push_url_check(bad[i], err2, sizeof err2), SORI_EINVAL);
        assert_string_equal(err, err2);
    }
    char longurl[PUSH__URL_MAX + 32] = "http://gw/";
    memset(longurl + 10, 'x', PUSH__URL_MAX);
    longurl[PUSH__URL_MAX + 10] = 0;
    push_config_t c = {.url = longurl, .queue_max = 1, .rate_per_min = 1, .attempts = 1};
    char err[256];
    assert_int_equal(push_start(&c, err, sizeof err), SORI_EINVAL);
    push_stop(); /* never started: harmless */
}

static void test_url_parts(void **state)
{
    (void)state;
    struct {
        const char *url, *host, *port, *authority, *path;
    } ok[] = {
        {"http://gw.example", "gw.example", "80", "gw.example", "/"},
        {"HTTP://gw:8080", "gw", "8080", "gw:8080", "/"},
        {"http://10.0.0.1:9000/a/b", "10.0.0.1", "9000", "10.0.0.1:9000", "/a/b"},
        {"http://gw?x=1", "gw", "80", "gw", "/?x=1"},
        {"http://gw/p?q=1#frag", "gw", "80", "gw", "/p?q=1"},
        {"http://[::1]:8081/hook", "::1", "8081", "[::1]:8081", "/hook"},
        {"http://[fe80::1]/", "fe80::1", "80", "[fe80::1]", "/"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        push_url_t u;
        if (push__parse_url(ok[i].url, &u, err, sizeof err)) fail_msg("%s: %s", ok[i].url, err);
        assert_string_equal(u.host, ok[i].host);
        assert_string_equal(u.port, ok[i].port);
        assert_string_equal(u.authority, ok[i].authority);
        assert_string_equal(u.path, ok[i].path);
        assert_int_equal(push_url_check(ok[i].url, err, sizeof err), 0);
    }
    assert_int_equal(push_url_check("", err, sizeof err), 0);
    assert_int_equal(push_url_check(NULL, err, sizeof err), 0);
}

static void test_push_off(void **state)
{
    (void)state;
    push_stop(); /* before any start */
    const char *offs[] = {NULL, ""};
    for (int i = 0; i < 2; i++) {
        push_config_t c = {.url = offs[i], .queue_max = 1, .rate_per_min = 1, .attempts = 1};
        char err[64] = "";
        assert_int_equal(push_start(&c, err, sizeof err), 0);
        assert_int_equal(push_enabled(), 0);
        enqueue("bob", "hi");
        push_stats_t s = stats();
        assert_int_equal(s.sent + s.failed + s.dropped + s.skipped + s.retries + s.queued, 0);
        push_stop();
        push_stop();
    }
    char err[64] = "";
    assert_int_equal(push_start(NULL, err, sizeof err), 0);
    assert_int_equal(push_enabled(), 0);
}

static void test_restart_and_enqueue_after_stop(void **state)
{
    (void)state;
    rx_start(0, NULL);
    push_config_t c = cfg_for(rx.port);
    start(&c);
    char err[64];
    assert_int_equal(push_start(&c, err, sizeof err), SORI_EINVAL); /* already started */
    enqueue("bob", "one");
    WAIT_STAT(sent, 1);
    push_stop();
    enqueue("bob", "lost"); /* off: ignored, not counted */
    assert_int_equal(stats().dropped, 0);
    start(&c); /* counters start over */
    assert_int_equal(stats().sent, 0);
    enqueue("bob", "two");
    WAIT_STAT(sent, 1);
    assert_int_equal(rx_count(), 2);
}

static void test_backoff_values(void **state)
{
    (void)state;
    push__backoff_ms = 500;
    assert_int_equal(push__backoff(1), 500);
    assert_int_equal(push__backoff(2), 1000);
    assert_int_equal(push__backoff(3), 2000);
    assert_int_equal(push__backoff(7), 30000);
    assert_int_equal(push__backoff(100), 30000);
}

static void test_status_line(void **state)
{
    (void)state;
    assert_int_equal(push__status("HTTP/1.1 204 No Content\r\n", 25), 204);
    assert_int_equal(push__status("HTTP/1.0 503\r\n", 14), 503);
    assert_int_equal(push__status("HTTP/2 200 OK\r\n", 15), -1);
    assert_int_equal(push__status("HTTP/1.1 20x OK\r\n", 17), -1);
    assert_int_equal(push__status("HTTP/1.1 2000 OK\r\n", 18), -1);
    assert_int_equal(push__status("SSH-2.0-OpenSSH\r\n", 17), -1);
}

#define T_(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    log_base = getenv("SORI_TEST_LOG") ? LOG_LEVEL_DEBUG : -1;
    log_level_set(log_base);
    const struct CMUnitTest tests[] = {
        T_(test_delivery_exact_body),
        T_(test_preview_off),
        T_(test_preview_cut_utf8),
        T_(test_preview_len),
        T_(test_retry_after_500),
        T_(test_retry_429_does_not_block_others),
        T_(test_400_fails_without_retry),
        T_(test_refused_fails_after_attempts),
        T_(test_all_5xx_fail),
        T_(test_timeout_is_retried),
        T_(test_stop_interrupts_a_try),
        T_(test_queue_full_drops),
        T_(test_rate_per_user),
        T_(test_user_table_bounded),
        T_(test_read_meanwhile_skips),
        T_(test_read_between_retries_skips),
        T_(test_delay),
        T_(test_bad_urls),
        T_(test_url_parts),
        T_(test_push_off),
        T_(test_restart_and_enqueue_after_stop),
        T_(test_backoff_values),
        T_(test_status_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
