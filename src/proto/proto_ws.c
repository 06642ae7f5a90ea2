/*
 * proto_ws.c: the WebSocket entry point /ws (PROTOCOL.md §2): the
 * handshake, the sub-protocol choice (none or sori.v1: JSON; v12.stomp,
 * v11.stomp, v10.stomp: STOMP), who is connecting, and what both front
 * ends share (the command bucket, session ids); plus the /echo endpoint
 * for conformance suites.
 *
 * Owns nothing past the call: the chosen front end owns its session.
 * --max-conns-per-user is checked here, before the upgrade (429
 * rate_limited), when the user is known from the handshake; a STOMP
 * client that names itself in CONNECT is checked there (ERROR, 1008).
 */
#include "proto/proto_internal.h"
#include "auth/auth.h"
#include "chat/chat.h"
#include "util/clock.h"
#include "util/config.h"
#include "util/err.h"
#include "util/memwatch.h"
#include "util/metrics.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const proto__subprotocols[] = {"sori.v1", "v12.stomp", "v11.stomp", "v10.stomp", NULL};

void proto_bucket_init(proto_bucket_t *b)
{
    b->tokens = CONFIG_GET(burst);
    b->ms = clock_now_ms();
}

int proto_bucket_take(proto_bucket_t *b)
{
    int64_t now = clock_now_ms();
    int burst = CONFIG_GET(burst); /* SIGHUP may change rate and burst */
    b->tokens += (double)(now - b->ms) * CONFIG_GET(rate) / 1000.0;
    if (b->tokens > burst) b->tokens = burst;
    b->ms = now;
    if (b->tokens < 1) return 0;
    b->tokens -= 1;
    return 1;
}

void proto_session_id(const http_req_t *r, char *out)
{
    snprintf(out, 20, "%016llx", (unsigned long long)r->c->id ^ ((unsigned long long)sori_config.node_id << 54));
}

int proto_identify(http_req_t *r, char *user, int optional)
{
    char token[4200];
    int n = -1;
    const slice_t *authz = http_header_get(r->req, "Authorization");
    if (authz && authz->len > 7 && strncasecmp(authz->p, "Bearer ", 7) == 0 && authz->len - 7 < sizeof token) {
        n = (int)(authz->len - 7);
        memcpy(token, authz->p + 7, (size_t)n);
        token[n] = 0;
    } else {
        n = http_query_get(r->req->query, "token", token, sizeof token);
    }
    if (n >= 0) {
        int rc = auth_token_verify(sori_config.secret, token, (size_t)n, clock_now_ms() / 1000, user, NULL);
        if (rc == 0) return 0;
        http_respond_error(r, 401, "unauthorized",
                           rc == SORI_EPERM ? "The token has expired; log in again." : "The token is not valid.");
        return 401;
    }
    char name[64];
    n = http_query_get(r->req->query, "user", name, sizeof name);
    if (n < 0 && optional) {
        user[0] = 0;
        return 0;
    }
    if (!sori_config.allow_guests || n < 0) {
        http_respond_error(r, 401, "unauthorized",
                           sori_config.allow_guests ? "Connect with a token, or as a guest with ?user=NAME."
                                                    : "A valid token is required (Authorization: Bearer or ?token=).");
        return 401;
    }
    if (!auth_valid_user(name, (size_t)n)) {
        http_respond_error(r, 400, "bad_request", "User names are 1-32 of A-Z a-z 0-9 _ . -");
        return 400;
    }
    memcpy(user, name, (size_t)n + 1);
    return 0;
}

void proto_ws_route(http_req_t *r)
{
    ws_handshake_t hs;
    const char *msg;
    int status = ws_handshake_check(r->req, proto__subprotocols, &hs, &msg);
    if (status) {
        if (status == 426) {
            char body[256];
            int blen = snprintf(body, sizeof body, "{\"error\":\"bad_request\",\"message\":\"%s\"}", msg);
            http_respond(r, 426, "application/json", "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n",
                         body, (size_t)blen);
            return;
        }
        http_respond_error(r, status, status == 403 ? "forbidden" : "bad_request", msg);
        return;
    }
    /* STOMP clients may authenticate in CONNECT instead (browsers cannot
     * set headers on a WebSocket); a token given here must still be good. */
    int stomp = hs.subprotocol && strstr(hs.subprotocol, ".stomp") != NULL;
    char user[AUTH_USER_MAX + 1];
    if (proto_identify(r, user, stomp)) return;
    if (memwatch_over()) {
        metrics_inc(M_REFUSED_MEMORY);
        http_respond_error(r, 503, "unavailable", "The server is low on memory; retry later.");
        return;
    }
    char lim[160];
    if (user[0] && chat_user_conns_check(user, lim, sizeof lim)) {
        /* before the upgrade: a plain 429 any client library reports */
        http_respond_error(r, 429, "rate_limited", lim);
        return;
    }
    if (stomp)
        proto_stomp_accept(r, &hs, user);
    else
        proto_json_accept(r, &hs, user);
}

/* ---- /echo ---- */

static void echo__on_message(ws_conn_t *ws, int opcode, char *data, size_t len)
{
    ws_send(ws, opcode, data, len);
}

static const ws_app_t echo__app = {.name = "echo", .on_message = echo__on_message};

void proto_echo_route(http_req_t *r)
{
    ws_handshake_t hs;
    const char *msg;
    int status = ws_handshake_check(r->req, NULL, &hs, &msg);
    if (status == 400 && http_header_get(r->req, "Sec-WebSocket-Protocol")) {
        /* the echo endpoint ignores sub-protocols rather than refusing them */
        http_request_t copy = *r->req;
        size_t j = 0;
        for (size_t i = 0; i < copy.nheaders; i++)
            if (!(copy.headers[i].name.len == 22 &&
                  strncasecmp(copy.headers[i].name.p, "Sec-WebSocket-Protocol", 22) == 0))
                copy.headers[j++] = copy.headers[i];
        copy.nheaders = j;
        status = ws_handshake_check(&copy, NULL, &hs, &msg);
    }
    if (status) {
        http_respond_error(r, status, status == 403 ? "forbidden" : "bad_request", msg);
        return;
    }
    ws_accept(r, &hs, &echo__app, NULL);
}
