/*
 * http_server.h: HTTP/1.1 on a connection: requests, routing, responses.
 *
 * Handlers run on the connection's worker thread, synchronously: they answer
 * with one of the http_respond* calls (exactly once) or hand the connection
 * to another protocol (WebSocket). The request and its body live until the
 * handler returns.
 */
#ifndef SORI_HTTP_SERVER_H
#define SORI_HTTP_SERVER_H

#include "http/http_parse.h"
#include "net/net.h"

typedef struct {
    conn_t *c;
    const http_request_t *req;
    slice_t body;
    int keep_alive;
    int head_only; /* HEAD: headers only */
    int answered;
    int deferred; /* http_defer was called */
} http_req_t;

typedef void (*http_handler_fn)(http_req_t *r);

/* Installs the HTTP handler on a new connection (net's accept callback). */
void http_accept(conn_t *c);

/*
 * Adds a route, checked in the order added. `path` matches exactly, or as a
 * prefix when it ends in '*'. method NULL matches every method (the handler
 * checks). Call before net_start; not thread-safe.
 */
void http_route_add(const char *method, const char *path, http_handler_fn fn);
/* As http_route_add with its own request body limit (uploads); the first
 * route matching the path decides the limit. */
void http_route_add_limit(const char *method, const char *path, http_handler_fn fn, uint64_t max_body);
/* SIGHUP reload (main thread): a new body limit for the route added with
 * this method and path (atomic; workers read it for the next request). */
void http_route_set_limit(const char *method, const char *path, uint64_t max_body);

/*
 * Answers r: status line, Date, Server, Content-Length, Connection, the
 * content type, extra_headers (each ending in CRLF, may be NULL) and the body
 * (copied). With keep_alive 0 the connection closes after the response.
 * Never calls back.
 */
void http_respond(http_req_t *r, int status, const char *content_type, const char *extra_headers,
                  const void *body, size_t len);
/* As http_respond with a shared body buffer (no copy): body is b[off..off+len). */
void http_respond_sbuf(http_req_t *r, int status, const char *content_type,
                       const char *extra_headers, sbuf_t *b, uint32_t off, uint32_t len);
/* {"error":"<code>","message":"<message>"} with status; message is escaped. */
void http_respond_error(http_req_t *r, int status, const char *code, const char *message);
/* A JSON body with status. */
void http_respond_json(http_req_t *r, int status, const char *json, size_t len);

/*
 * Deferred answers, for handlers whose answer comes later (a store commit,
 * a password hash on the thread pool). The handler calls http_defer and
 * returns without answering; the connection stops reading (pipelined
 * requests wait, so answers stay in order) until the pending request is
 * answered, exactly once, on the connection's worker thread, with one of
 * the http_pending_* calls, which also free it. If the connection closes
 * first the answer is discarded. A request not answered within
 * http-idle-timeout gets 503 and the connection closes.
 */
typedef struct http_pending http_pending_t;
http_pending_t *http_defer(http_req_t *r); /* NULL: out of memory (r answered 500) */
void http_pending_respond(http_pending_t *p, int status, const char *content_type,
                          const char *extra_headers, const void *body, size_t len);
void http_pending_json(http_pending_t *p, int status, const char *json, size_t len);
void http_pending_error(http_pending_t *p, int status, const char *code, const char *message);
/* The worker the pending request belongs to (for posting its answer). */
net_worker_t *http_pending_worker(const http_pending_t *p);

/* GET /healthz: 200 {"status":"ok"}, or 503 {"status":"draining"}. */
void http_healthz_handle(http_req_t *r);
/* A function /healthz asks: non-zero means a required backend is down. */
void http_set_health_check(int (*unhealthy)(void));
/* 404 with a JSON body (unknown /api/ paths). */
void http_not_found_handle(http_req_t *r);

/* The server's health as /healthz reports it: 0 serving, 1 draining. */
void http_set_draining(int draining);
int http_is_draining(void);

#endif
