/*
 * proto_json.c: the JSON protocol front end (PROTOCOL.md §2-§4), session
 * part: the `hello` greeting, `ping`/`pong`, and `error` frames for
 * malformed JSON and unknown commands. The connection stays open after a
 * bad command. Holds no chat logic: commands will be decoded here and
 * handed to chat/.
 *
 * Owns json_session_t (one per connection, freed in on_close). Each frame is
 * parsed with jansson (its nesting limit applies); ws-max-message bounds the
 * size.
 */
#include "proto/proto.h"
#include "util/config.h"
#include "util/err.h"
#include "util/log.h"
#include "ws/ws.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

typedef struct {
    char user[33];
    char session[20];
} json_session_t;

static int64_t proto__now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

int proto_valid_user(const char *name, size_t len)
{
    if (len < 1 || len > 32) return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return 0;
    }
    return 1;
}

/* Sends obj (consumed) as one text frame. */
static void json__send(ws_conn_t *ws, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s) return;
    ws_send(ws, WS_OP_TEXT, s, strlen(s));
    free(s);
}

static void json__error(ws_conn_t *ws, json_t *ref, const char *code, const char *message)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "type", "error", "code", code, "message", message);
    if (ref) json_object_set(o, "ref", ref);
    json__send(ws, o);
}

static void json__on_message(ws_conn_t *ws, int opcode, char *data, size_t len)
{
    if (opcode != WS_OP_TEXT) {
        json__error(ws, NULL, "bad_request", "Commands are JSON objects in text frames.");
        return;
    }
    json_error_t jerr;
    json_t *cmd = json_loadb(data, len, 0, &jerr);
    if (!cmd || !json_is_object(cmd)) {
        json__error(ws, NULL, "bad_request",
                    cmd ? "A command is a JSON object." : "The frame is not valid JSON.");
        json_decref(cmd);
        return;
    }
    json_t *ref = json_object_get(cmd, "ref");
    if (ref && !json_is_string(ref) && !json_is_integer(ref) && !json_is_real(ref)) ref = NULL;
    const char *type = json_string_value(json_object_get(cmd, "type"));
    if (!type) {
        json__error(ws, ref, "bad_request", "A command needs a \"type\" string.");
    } else if (!strcmp(type, "ping")) {
        json_t *o = json_pack("{s:s}", "type", "pong");
        if (ref) json_object_set(o, "ref", ref);
        json__send(ws, o);
    } else {
        char msg[128];
        snprintf(msg, sizeof msg, "Unknown command type \"%.40s\".", type);
        json__error(ws, ref, "bad_request", msg);
    }
    json_decref(cmd);
}

static void json__on_close(ws_conn_t *ws)
{
    free(ws->app_data);
    ws->app_data = NULL;
}

static const ws_app_t json__app = {
    .name = "json",
    .on_message = json__on_message,
    .on_close = json__on_close,
};

static const char *const proto__subprotocols[] = {"sori.v1", NULL};

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
    char user[64];
    int n = http_query_get(r->req->query, "user", user, sizeof user);
    if (!sori_config.allow_guests || n < 0) {
        http_respond_error(r, 401, "unauthorized",
                           sori_config.allow_guests ? "Connect with ?user=NAME (guest mode) or a token."
                                                    : "A valid token is required.");
        return;
    }
    if (!proto_valid_user(user, (size_t)n)) {
        http_respond_error(r, 400, "bad_request", "User names are 1-32 of A-Z a-z 0-9 _ . -");
        return;
    }
    json_session_t *s = calloc(1, sizeof *s);
    if (!s) {
        http_respond_error(r, 500, "internal", "Out of memory.");
        return;
    }
    memcpy(s->user, user, (size_t)n + 1);
    snprintf(s->session, sizeof s->session, "%016llx", (unsigned long long)r->c->id ^
             ((unsigned long long)sori_config.node_id << 54));
    ws_conn_t *ws = ws_accept(r, &hs, &json__app, s);
    if (!ws) {
        free(s);
        return;
    }
    char node[16];
    snprintf(node, sizeof node, "%d", sori_config.node_id);
    json__send(ws, json_pack("{s:s, s:s, s:s, s:s, s:i, s:I}", "type", "hello", "user", s->user,
                             "session", s->session, "node", node, "heartbeat_ms",
                             sori_config.heartbeat_ms, "server_time", (json_int_t)proto__now_ms()));
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
