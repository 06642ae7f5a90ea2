/*
 * http_server.c: the HTTP/1.1 connection handler: request framing,
 * keep-alive, limits, routing and response encoding.
 *
 * Owns no memory per connection beyond a few flag bits kept in conn->hdata
 * (and, while an answer is deferred, its small http_pending_t): the request head is parsed from the connection's input on each attempt
 * into a stack http_request_t (2 KiB), and the request is answered before
 * on_data returns. Pipelined requests are answered in order. Limits: head
 * over http-max-header -> 431, body over http-max-body -> 413, malformed ->
 * 400, Transfer-Encoding on a request -> 411 (send Content-Length), a head
 * (head and body: the deadline is set when a request starts, from the
 * connection's start for its first one, and not moved by later bytes)
 * not complete within handshake-timeout -> 408 (deadlines are rounded up
 * and get one more second: the wheel's clock may be up to a second old,
 * and a client is always allowed at least the configured time). Every
 * error closes the
 * connection with a lingering close so the client reads the answer. Over
 * --memory-high-water every request but GET and HEAD gets 503 unavailable.
 */
#include "http/http_server.h"
#include "util/config.h"
#include "util/err.h"
#include "util/log.h"
#include "util/memwatch.h"
#include "util/metrics.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HTTP_MAX_ROUTES 64

/* conn->hdata: these bits, or (while a request is deferred) a pointer to
 * its http_pending_t, told apart by value (malloc'd pointers are >= 16). */
enum { HTTP__IN_REQUEST = 1, HTTP__SENT_CONTINUE = 2, HTTP__FRESH = 4, HTTP__PENDING_MIN = 16 };

struct http_pending {
    conn_t *c; /* NULL once the connection is gone */
    net_worker_t *w;
    int keep_alive;
    int head_only;
};

typedef struct {
    const char *method;
    const char *path;
    size_t len;
    int prefix;
    uint64_t max_body; /* 0: http-max-body */
    http_handler_fn fn;
} http_route_t;

static const conn_handler_t http__handler;
static http_route_t http__routes[HTTP_MAX_ROUTES];
static int http__nroutes;
static atomic_int http__draining;

void http_set_draining(int d) { atomic_store(&http__draining, d); }
int http_is_draining(void) { return atomic_load(&http__draining); }

void http_route_add(const char *method, const char *path, http_handler_fn fn)
{
    http_route_add_limit(method, path, fn, 0);
}

void http_route_set_limit(const char *method, const char *path, uint64_t max_body)
{
    for (int i = 0; i < http__nroutes; i++) {
        http_route_t *rt = &http__routes[i];
        if (!strcmp(rt->path, path) && (rt->method == method || (rt->method && method && !strcmp(rt->method, method))))
            __atomic_store_n(&rt->max_body, max_body, __ATOMIC_RELAXED);
    }
}

void http_route_add_limit(const char *method, const char *path, http_handler_fn fn, uint64_t max_body)
{
    if (http__nroutes == HTTP_MAX_ROUTES) abort();
    http_route_t *rt = &http__routes[http__nroutes++];
    size_t len = strlen(path);
    rt->method = method;
    rt->path = path;
    rt->prefix = len && path[len - 1] == '*';
    rt->len = rt->prefix ? len - 1 : len;
    rt->fn = fn;
    rt->max_body = max_body;
}

/* The body limit of the first route whose path matches (any method). */
static uint64_t http__body_limit(slice_t path)
{
    for (int i = 0; i < http__nroutes; i++) {
        const http_route_t *rt = &http__routes[i];
        if (rt->prefix ? (path.len >= rt->len && memcmp(path.p, rt->path, rt->len) == 0)
                       : (path.len == rt->len && memcmp(path.p, rt->path, rt->len) == 0))
        {
            uint64_t max = __atomic_load_n(&rt->max_body, __ATOMIC_RELAXED);
            return max ? max : (uint64_t)CONFIG_GET(http_max_body);
        }
    }
    return (uint64_t)CONFIG_GET(http_max_body);
}

/* ---- responses ---- */

/* The Date header value, cached per thread and renewed once a second. */
static const char *http__date(void)
{
    static __thread char date[40];
    static __thread time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return date;
}

static void http__finish(http_req_t *r)
{
    r->answered = 1;
    metrics_inc(M_HTTP_REQUESTS);
    if (!r->keep_alive) conn_close(r->c, CONN_CLOSE_LINGER);
}

static int http__head(http_req_t *r, int status, const char *content_type, const char *extra,
                      size_t len, buf_t *out)
{
    if (http_is_draining()) r->keep_alive = 0;
    char clen[40] = "";
    if (status != 304 && status != 204) /* RFC 9110 §8.6 */
        snprintf(clen, sizeof clen, "Content-Length: %zu\r\n", len);
    return buf_appendf(out,
                       "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: sori\r\n%s"
                       "%s%s%s%s%s\r\n",
                       status, http_status_text(status), http__date(), clen,
                       content_type ? "Content-Type: " : "", content_type ? content_type : "",
                       content_type ? "\r\n" : "", r->keep_alive ? "" : "Connection: close\r\n",
                       extra ? extra : "");
}

void http_respond(http_req_t *r, int status, const char *content_type, const char *extra_headers,
                  const void *body, size_t len)
{
    if (r->answered) return;
    buf_t out = {0};
    if (http__head(r, status, content_type, extra_headers, len, &out) == 0 &&
        (r->head_only || buf_append(&out, body, len) == 0))
        conn_write_copy(r->c, out.data, out.len, 1);
    else
        r->keep_alive = 0;
    buf_free(&out);
    http__finish(r);
}

void http_respond_sbuf(http_req_t *r, int status, const char *content_type,
                       const char *extra_headers, sbuf_t *b, uint32_t off, uint32_t len)
{
    if (r->answered) return;
    buf_t out = {0};
    if (http__head(r, status, content_type, extra_headers, len, &out) == 0) {
        conn_write_copy(r->c, out.data, out.len, 1);
        if (!r->head_only) conn_write(r->c, b, off, len, 1);
    } else {
        r->keep_alive = 0;
    }
    buf_free(&out);
    http__finish(r);
}

void http_respond_json(http_req_t *r, int status, const char *json, size_t len)
{
    http_respond(r, status, "application/json", NULL, json, len);
}

/* {"error": code, "message": message} (malloc'd; "{}" if out of memory). */
static char *http__error_body(const char *code, const char *message)
{
    json_t *o = json_pack("{s:s, s:s}", "error", code, "message", message);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s ? s : strdup("{}");
}

void http_respond_error(http_req_t *r, int status, const char *code, const char *message)
{
    char *s = http__error_body(code, message);
    if (status >= 400 && status != 401 && status != 403 && status != 404 && status != 405 &&
        status != 409 && status != 429)
        r->keep_alive = 0; /* framing errors: the stream cannot be trusted */
    http_respond_json(r, status, s ? s : "{}", s ? strlen(s) : 2);
    free(s);
}

/* A bare error for a request we could not parse (no http_request_t). */
static void http__fail(conn_t *c, int status, const char *code, const char *message)
{
    http_req_t r = {.c = c, .keep_alive = 0};
    http_respond_error(&r, status, code, message);
}

static int (*http__unhealthy)(void);
void http_set_health_check(int (*unhealthy)(void)) { http__unhealthy = unhealthy; }

void http_healthz_handle(http_req_t *r)
{
    if (http__unhealthy && http__unhealthy()) {
        static const char body[] = "{\"status\":\"unavailable\"}";
        http_respond(r, 503, "application/json", "Cache-Control: no-store\r\n", body, sizeof body - 1);
    } else if (http_is_draining()) {
        static const char body[] = "{\"status\":\"draining\"}";
        http_respond(r, 503, "application/json", "Cache-Control: no-store\r\n", body, sizeof body - 1);
    } else {
        static const char body[] = "{\"status\":\"ok\"}";
        http_respond(r, 200, "application/json", "Cache-Control: no-store\r\n", body, sizeof body - 1);
    }
}

void http_not_found_handle(http_req_t *r)
{
    http_respond_error(r, 404, "not_found", "There is nothing at this path.");
}

/* ---- deferred answers ---- */

static http_pending_t *http__pending_of(conn_t *c)
{
    return (uintptr_t)c->hdata >= HTTP__PENDING_MIN ? c->hdata : NULL;
}

http_pending_t *http_defer(http_req_t *r)
{
    http_pending_t *p = calloc(1, sizeof *p);
    if (!p) {
        http_respond_error(r, 500, "internal", "Out of memory.");
        return NULL;
    }
    p->c = r->c;
    p->w = r->c->w;
    p->keep_alive = r->keep_alive;
    p->head_only = r->head_only;
    r->deferred = 1;
    r->answered = 1; /* by the pending request, later */
    r->c->hdata = p;
    conn_pause_read(r->c);
    conn_set_deadline(r->c, (uint32_t)(CONFIG_GET(http_idle_timeout_ms) + 999) / 1000 + 1);
    return p;
}

net_worker_t *http_pending_worker(const http_pending_t *p) { return p->w; }

void http_pending_respond(http_pending_t *p, int status, const char *content_type,
                          const char *extra_headers, const void *body, size_t len)
{
    conn_t *c = p->c;
    if (c) {
        c->hdata = NULL;
        http_req_t r = {.c = c, .keep_alive = p->keep_alive, .head_only = p->head_only};
        http_respond(&r, status, content_type, extra_headers, body, len);
        if (!(c->flags & CONN_CLOSING)) {
            conn_set_deadline(c, (uint32_t)(CONFIG_GET(http_idle_timeout_ms) + 999) / 1000 + 1);
            conn_resume_read(c);
        }
    }
    free(p);
}

void http_pending_json(http_pending_t *p, int status, const char *json, size_t len)
{
    http_pending_respond(p, status, "application/json", NULL, json, len);
}

void http_pending_error(http_pending_t *p, int status, const char *code, const char *message)
{
    char *s = http__error_body(code, message);
    http_pending_json(p, status, s ? s : "{}", s ? strlen(s) : 2);
    free(s);
}

/* ---- routing ---- */

static void http__route(http_req_t *r)
{
    const http_request_t *q = r->req;
    if (memwatch_over() && !(q->method.len == 3 && memcmp(q->method.p, "GET", 3) == 0) &&
        !(q->method.len == 4 && memcmp(q->method.p, "HEAD", 4) == 0)) {
        /* Over --memory-high-water: writes (signups, uploads, REST
         * commands) are refused; reads, /healthz and /metrics still work. */
        metrics_inc(M_REFUSED_MEMORY);
        http_respond(r, 503, "application/json", "Retry-After: 5\r\n",
                     "{\"error\":\"unavailable\",\"message\":\"The server is low on memory; retry later.\"}", 77);
        return;
    }
    for (int i = 0; i < http__nroutes; i++) {
        const http_route_t *rt = &http__routes[i];
        if (rt->prefix ? (q->path.len < rt->len || memcmp(q->path.p, rt->path, rt->len) != 0)
                       : (q->path.len != rt->len || memcmp(q->path.p, rt->path, rt->len) != 0))
            continue;
        if (rt->method) {
            int same = strlen(rt->method) == q->method.len &&
                       memcmp(rt->method, q->method.p, q->method.len) == 0;
            int head_ok = !same && !strcmp(rt->method, "GET") && q->method.len == 4 &&
                          memcmp(q->method.p, "HEAD", 4) == 0;
            if (!same && !head_ok) {
                /* Another route may take this method for the same path. */
                int other = 0;
                for (int j = i + 1; j < http__nroutes; j++)
                    if (http__routes[j].fn && http__routes[j].len == rt->len && http__routes[j].prefix == rt->prefix &&
                        memcmp(http__routes[j].path, rt->path, rt->len) == 0)
                        other = 1;
                if (other) continue;
                char allow[64];
                snprintf(allow, sizeof allow, "Allow: %s%s\r\n", rt->method,
                         strcmp(rt->method, "GET") ? "" : ", HEAD");
                json_t *o = json_pack("{s:s, s:s}", "error", "bad_request", "message",
                                      "This method is not allowed on this path.");
                char *s = json_dumps(o, JSON_COMPACT);
                http_respond(r, 405, "application/json", allow, s, strlen(s));
                free(s);
                json_decref(o);
                return;
            }
        }
        rt->fn(r);
        if (!r->answered && r->c->h == &http__handler) http_respond_error(r, 500, "internal", "No response.");
        return;
    }
    http_respond_error(r, 404, "not_found", "There is nothing at this path.");
}

/* ---- the connection handler ---- */

static uintptr_t http__flags(conn_t *c) { return (uintptr_t)c->hdata; }
static void http__set_flags(conn_t *c, uintptr_t f) { c->hdata = (void *)f; }

static size_t http__on_data(conn_t *c, char *data, size_t len)
{
    if (!(http__flags(c) & HTTP__IN_REQUEST)) {
        /* A new request starts: it has handshake-timeout to arrive, head
         * and body, however slowly the bytes come (slowloris). The first
         * request of a connection keeps the deadline set at accept: its
         * time counts from the connection's start. */
        int fresh = (http__flags(c) & HTTP__FRESH) != 0;
        http__set_flags(c, HTTP__IN_REQUEST);
        if (!fresh) conn_set_deadline(c, (uint32_t)(CONFIG_GET(handshake_timeout_ms) + 999) / 1000 + 1);
    }
    size_t max_header = (size_t)CONFIG_GET(http_max_header);
    http_request_t req;
    int n = http_request_parse(data, len, &req);
    if (n == SORI_EAGAIN) {
        if (len > max_header)
            http__fail(c, 431, "too_large", "The request head is larger than the server accepts.");
        return len > max_header ? len : 0;
    }
    if (n == SORI_E2BIG || (n > 0 && (size_t)n > max_header)) {
        http__fail(c, 431, "too_large", "The request has too many or too large headers.");
        return len;
    }
    if (n < 0) {
        http__fail(c, 400, "bad_request", "The request is not valid HTTP/1.1.");
        return len;
    }
    if (req.path.len == 0) req.path = SLICE_LIT("/"); /* absolute-form without a path */
    if (req.minor_version == 1) {
        /* RFC 9112 §3.2: exactly one Host field in an HTTP/1.1 request. */
        int hosts = 0;
        for (size_t i = 0; i < req.nheaders; i++)
            hosts += req.headers[i].name.len == 4 && strncasecmp(req.headers[i].name.p, "Host", 4) == 0;
        if (hosts != 1) {
            http__fail(c, 400, "bad_request", "An HTTP/1.1 request needs exactly one Host header.");
            return len;
        }
    }
    if (http_header_get(&req, "Transfer-Encoding")) {
        http__fail(c, 411, "bad_request", "Send the body with a Content-Length header.");
        return len;
    }
    uint64_t body_len = 0;
    const slice_t *cl = http_header_get(&req, "Content-Length");
    if (cl) {
        /* Two Content-Length headers must agree (RFC 9112 §6.3); we take
         * none that disagree. */
        for (size_t i = 0; i < req.nheaders; i++)
            if (req.headers[i].name.len == 14 && req.headers[i].value.p != cl->p &&
                strncasecmp(req.headers[i].name.p, "Content-Length", 14) == 0 &&
                (req.headers[i].value.len != cl->len ||
                 memcmp(req.headers[i].value.p, cl->p, cl->len) != 0)) {
                http__fail(c, 400, "bad_request", "Conflicting Content-Length headers.");
                return len;
            }
        if (http_parse_content_length(*cl, &body_len)) {
            http__fail(c, 400, "bad_request", "The Content-Length header is not a number.");
            return len;
        }
    }
    if (body_len > http__body_limit(req.path)) {
        http__fail(c, 413, "too_large", "The request body is larger than the server accepts.");
        return len;
    }
    if ((uint64_t)(len - (size_t)n) < body_len) {
        const slice_t *expect = http_header_get(&req, "Expect");
        if (expect && !(http__flags(c) & HTTP__SENT_CONTINUE) &&
            http_header_has_token(*expect, "100-continue")) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            conn_write_copy(c, cont, sizeof cont - 1, 0);
            http__set_flags(c, http__flags(c) | HTTP__SENT_CONTINUE);
        }
        return 0; /* wait for the whole body */
    }

    http_req_t r = {.c = c, .req = &req, .body = {data + n, (size_t)body_len}};
    const slice_t *conn_hdr = http_header_get(&req, "Connection");
    if (req.minor_version == 0)
        r.keep_alive = conn_hdr && http_header_has_token(*conn_hdr, "keep-alive");
    else
        r.keep_alive = !(conn_hdr && http_header_has_token(*conn_hdr, "close"));
    r.head_only = req.method.len == 4 && memcmp(req.method.p, "HEAD", 4) == 0;

    http__set_flags(c, 0);
    http__route(&r);
    if (r.deferred) return (size_t)n + (size_t)body_len;
    if (c->h == &http__handler && !(c->flags & CONN_CLOSING))
        conn_set_deadline(c, (uint32_t)(CONFIG_GET(http_idle_timeout_ms) + 999) / 1000 + 1);
    return (size_t)n + (size_t)body_len;
}

static void http__on_timeout(conn_t *c)
{
    http_pending_t *p = http__pending_of(c);
    if (p) {
        /* The answer never came: say so and close; it is dropped if it comes. */
        p->keep_alive = 0;
        p->c = NULL;
        c->hdata = NULL;
        http_req_t r = {.c = c, .keep_alive = 0};
        http_respond_error(&r, 503, "unavailable", "The server could not answer in time; try again.");
        return;
    }
    if (http__flags(c) & HTTP__IN_REQUEST)
        http__fail(c, 408, "bad_request", "The request did not arrive in time.");
    else
        conn_close(c, CONN_CLOSE_NOW);
}

static void http__on_free(conn_t *c)
{
    http_pending_t *p = http__pending_of(c);
    if (p) p->c = NULL; /* its answer will be dropped, and p freed, when it comes */
    c->hdata = NULL;
}

static void http__on_shutdown(conn_t *c)
{
    http_pending_t *p = http__pending_of(c);
    if (p) {
        p->keep_alive = 0; /* answered when it comes, then closed */
        return;
    }
    /* A request whose head or body is arriving is in flight: it finishes
     * (draining answers say Connection: close; /healthz says 503), bounded
     * by its handshake timeout and the drain timeout. Idle ones close. */
    if (!(http__flags(c) & HTTP__IN_REQUEST)) conn_close(c, CONN_CLOSE_AFTER_FLUSH);
}

static const conn_handler_t http__handler = {
    .on_data = http__on_data,
    .on_timeout = http__on_timeout,
    .on_shutdown = http__on_shutdown,
    .on_free = http__on_free,
};

void http_accept(conn_t *c)
{
    c->h = &http__handler;
    c->hdata = (void *)(uintptr_t)HTTP__FRESH;
    conn_set_deadline(c, (uint32_t)(CONFIG_GET(handshake_timeout_ms) + 999) / 1000 + 1);
}
