/*
 * proto_json.c: the JSON protocol front end (PROTOCOL.md §2-§4): `hello`,
 * decoding each command into a chat_* call, and the chat sink that encodes
 * replies and events (the /ws route that picks it is in proto_ws.c). Holds no
 * chat logic. Bad input gets an `error` frame and the connection stays open.
 *
 * Owns json_session_t (one per connection, freed in on_close, which also
 * closes the chat session). Each frame is parsed with jansson (duplicate
 * keys refused, its nesting limit applies); ws-max-message bounds the size;
 * a token bucket (--rate, --burst) bounds commands per connection. Message
 * events are encoded by chat once and wrapped in one shared WebSocket frame
 * (slot 0 of the message's cache) for every JSON recipient.
 */
#include "proto/proto_internal.h"
#include "auth/auth.h"
#include "chat/chat.h"
#include "util/clock.h"
#include "util/config.h"
#include "util/err.h"
#include "util/json_esc.h"
#include "util/log.h"
#include "ws/ws.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    ws_conn_t *ws;
    chat_session_t *chat;
    proto_bucket_t rate;
    char session[20];
} json_session_t;


/* Sends obj (consumed) as one text frame. */
static void json__send(ws_conn_t *ws, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
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

/* ---- the chat sink: how chat's replies and events reach this connection ---- */

static void json__destroy_frame(void *v) { ws_shared_unref(v); }

static void json__sink_message(chat_session_t *cs, chat_msg_t *m)
{
    json_session_t *js = chat_session_data(cs);
    ws_shared_t *frame = chat_msg_cache_get(m, 0);
    if (!frame) {
        size_t len;
        const char *json = chat_msg_json(m, &len);
        frame = ws_shared_new(WS_OP_TEXT, json, len);
        if (!frame) return;
        frame = chat_msg_cache_set(m, 0, frame);
    }
    ws_send_shared(js->ws, frame);
}

static void json__sink_send(chat_session_t *cs, json_t *ref, json_t *obj)
{
    json_session_t *js = chat_session_data(cs);
    if (ref) json_object_set(obj, "ref", ref);
    json__send(js->ws, json_incref(obj));
}

static void json__sink_send_text(chat_session_t *cs, json_t *ref, const char *json, size_t len)
{
    json_session_t *js = chat_session_data(cs);
    if (!ref) {
        ws_send(js->ws, WS_OP_TEXT, json, len);
        return;
    }
    /* {...} -> {...,"ref":REF} */
    buf_t b = {0};
    int rc = buf_append(&b, json, len - 1) | buf_append(&b, ",\"ref\":", sizeof ",\"ref\":" - 1);
    if (json_is_string(ref)) {
        rc |= json_esc_append(&b, json_string_value(ref), json_string_length(ref));
    } else if (json_is_integer(ref)) {
        rc |= buf_appendf(&b, "%lld", (long long)json_integer_value(ref));
    } else {
        char *r = json_dumps(ref, JSON_ENCODE_ANY);
        rc |= r ? buf_append(&b, r, strlen(r)) : SORI_ENOMEM;
        free(r);
    }
    rc |= buf_append(&b, "}", 1);
    if (!rc) ws_send(js->ws, WS_OP_TEXT, b.data, b.len);
    buf_free(&b);
}

static void json__sink_error(chat_session_t *cs, json_t *ref, const char *code, const char *message)
{
    json_session_t *js = chat_session_data(cs);
    json__error(js->ws, ref, code, message);
}

static uint64_t json__sink_unsent(chat_session_t *cs)
{
    return ws_unsent(((json_session_t *)chat_session_data(cs))->ws);
}

static void json__sink_notify_drain(chat_session_t *cs)
{
    ws_notify_drain(((json_session_t *)chat_session_data(cs))->ws);
}

static const chat_sink_t json__sink = {
    .message = json__sink_message,
    .send = json__sink_send,
    .send_text = json__sink_send_text,
    .error = json__sink_error,
    .unsent = json__sink_unsent,
    .notify_drain = json__sink_notify_drain,
};

/* ---- decoding commands ---- */

/* A required string field; NULL after answering bad_request. */
static const char *json__str(ws_conn_t *ws, json_t *ref, json_t *cmd, const char *key)
{
    const char *v = json_string_value(json_object_get(cmd, key));
    if (!v) {
        char msg[96];
        snprintf(msg, sizeof msg, "\"%s\" must be a string.", key);
        json__error(ws, ref, "bad_request", msg);
    }
    return v;
}

/* An optional integer field in [min, max]: 1 present, 0 absent, -1 after
 * answering bad_request. */
static int json__int(ws_conn_t *ws, json_t *ref, json_t *cmd, const char *key, int64_t min, int64_t max,
                     int64_t *out)
{
    json_t *v = json_object_get(cmd, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        char msg[128];
        snprintf(msg, sizeof msg, "\"%s\" must be an integer from %lld to %lld.", key, (long long)min,
                 (long long)max);
        json__error(ws, ref, "bad_request", msg);
        return -1;
    }
    *out = json_integer_value(v);
    return 1;
}

static void json__command(json_session_t *js, json_t *cmd)
{
    ws_conn_t *ws = js->ws;
    chat_session_t *cs = js->chat;
    json_t *ref = json_object_get(cmd, "ref");
    if (ref && !json_is_string(ref) && !json_is_integer(ref) && !json_is_real(ref)) ref = NULL;
    const char *type = json_string_value(json_object_get(cmd, "type"));
    if (!type) {
        json__error(ws, ref, "bad_request", "A command needs a \"type\" string.");
        return;
    }
    if (!proto_bucket_take(&js->rate)) {
        json__error(ws, ref, "rate_limited", "Too many commands; slow down.");
        return;
    }
    const char *room = NULL, *user = NULL, *text = NULL;
    int64_t a = -1, limit = 50;
    if (!strcmp(type, "ping")) {
        json_t *o = json_pack("{s:s}", "type", "pong");
        if (ref) json_object_set(o, "ref", ref);
        json__send(ws, o);
    } else if (!strcmp(type, "join")) {
        if (!(room = json__str(ws, ref, cmd, "room"))) return;
        if (json__int(ws, ref, cmd, "since", 0, INT64_MAX, &a) < 0) return;
        chat_join(cs, ref, room, a);
    } else if (!strcmp(type, "leave")) {
        if ((room = json__str(ws, ref, cmd, "room"))) chat_leave(cs, ref, room);
    } else if (!strcmp(type, "part")) {
        if ((room = json__str(ws, ref, cmd, "room"))) chat_part(cs, ref, room);
    } else if (!strcmp(type, "send") || !strcmp(type, "dm")) {
        int dm = type[0] == 'd';
        const char *target = json__str(ws, ref, cmd, dm ? "to" : "room");
        if (!target || !(text = json__str(ws, ref, cmd, "text"))) return;
        const char *ids[PROTO_ATTACH_MAX];
        size_t nids = 0;
        json_t *att = json_object_get(cmd, "attachments");
        if (dm && att && !json_is_null(att)) {
            json__error(ws, ref, "bad_request", "Direct messages carry no attachments; post them in a room.");
            return;
        }
        if (!dm && proto_attachments(att, ids, &nids)) {
            json__error(ws, ref, "bad_request",
                        "\"attachments\" is an array of at most 10 {\"id\": upload id} objects.");
            return;
        }
        json_t *cid = json_object_get(cmd, "cid");
        if (cid && !json_is_string(cid) && !json_is_null(cid)) {
            json__error(ws, ref, "bad_request", "\"cid\" must be a string.");
            return;
        }
        size_t len = json_string_length(json_object_get(cmd, "text"));
        if (dm)
            chat_dm(cs, ref, target, text, len, json_string_value(cid));
        else
            chat_send(cs, ref, target, text, len, json_string_value(cid), ids, nids);
    } else if (!strcmp(type, "history")) {
        int64_t before = -1, after = -1;
        if (!(room = json__str(ws, ref, cmd, "room"))) return;
        if (json__int(ws, ref, cmd, "before", 1, INT64_MAX, &before) < 0 ||
            json__int(ws, ref, cmd, "after", 0, INT64_MAX, &after) < 0 ||
            json__int(ws, ref, cmd, "limit", 1, 100, &limit) < 0)
            return;
        if (before >= 0 && after >= 0) {
            json__error(ws, ref, "bad_request", "Give before or after, not both.");
            return;
        }
        chat_history(cs, ref, room, before, after, (int)limit);
    } else if (!strcmp(type, "rooms")) {
        chat_rooms(cs, ref, json_is_true(json_object_get(cmd, "public")));
    } else if (!strcmp(type, "create")) {
        const char *kind;
        if (!(room = json__str(ws, ref, cmd, "room")) || !(kind = json__str(ws, ref, cmd, "kind"))) return;
        json_t *title = json_object_get(cmd, "title");
        if (title && !json_is_string(title)) {
            json__error(ws, ref, "bad_request", "\"title\" must be a string.");
            return;
        }
        chat_create(cs, ref, room, kind, json_string_value(title));
    } else if (!strcmp(type, "invite") || !strcmp(type, "kick")) {
        if (!(room = json__str(ws, ref, cmd, "room")) || !(user = json__str(ws, ref, cmd, "user"))) return;
        if (type[0] == 'i')
            chat_invite(cs, ref, room, user);
        else
            chat_kick(cs, ref, room, user);
    } else if (!strcmp(type, "role")) {
        const char *role;
        if (!(room = json__str(ws, ref, cmd, "room")) || !(user = json__str(ws, ref, cmd, "user")) ||
            !(role = json__str(ws, ref, cmd, "role")))
            return;
        chat_role(cs, ref, room, user, role);
    } else if (!strcmp(type, "members")) {
        if ((room = json__str(ws, ref, cmd, "room"))) chat_members(cs, ref, room);
    } else if (!strcmp(type, "read")) {
        if (!(room = json__str(ws, ref, cmd, "room"))) return;
        int got = json__int(ws, ref, cmd, "seq", 0, INT64_MAX, &a);
        if (got == 0) json__error(ws, ref, "bad_request", "\"seq\" is required.");
        if (got <= 0) return;
        chat_read(cs, ref, room, a);
    } else if (!strcmp(type, "search")) {
        const char *q;
        json_t *r = json_object_get(cmd, "room");
        limit = 20;
        if (!(q = json__str(ws, ref, cmd, "q"))) return;
        if (r && !json_is_null(r) && !json_is_string(r)) {
            json__error(ws, ref, "bad_request", "\"room\" must be a room id.");
            return;
        }
        if (json__int(ws, ref, cmd, "limit", 1, CONFIG_GET(search_max), &limit) < 0) return;
        chat_search(cs, ref, q, json_string_value(r), (int)limit);
    } else if (!strcmp(type, "typing")) {
        if ((room = json__str(ws, ref, cmd, "room"))) chat_typing(cs, room);
    } else if (!strcmp(type, "presence")) {
        json_t *users = json_object_get(cmd, "users");
        if (!json_is_array(users) || json_array_size(users) > 1000) {
            json__error(ws, ref, "bad_request", "\"users\" must be an array of at most 1000 names.");
            return;
        }
        const char *names[1000];
        size_t n = 0, i;
        json_t *u;
        json_array_foreach(users, i, u)
        {
            if (!json_is_string(u)) {
                json__error(ws, ref, "bad_request", "\"users\" must be an array of names.");
                return;
            }
            names[n++] = json_string_value(u);
        }
        chat_presence(cs, ref, names, n);
    } else {
        char msg[128];
        snprintf(msg, sizeof msg, "Unknown command type \"%.40s\".", type);
        json__error(ws, ref, "bad_request", msg);
    }
}

static void json__on_message(ws_conn_t *ws, int opcode, char *data, size_t len)
{
    json_session_t *js = ws->app_data;
    if (opcode != WS_OP_TEXT) {
        json__error(ws, NULL, "bad_request", "Commands are JSON objects in text frames.");
        return;
    }
    json_error_t jerr;
    json_t *cmd = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!cmd || !json_is_object(cmd)) {
        char msg[200];
        snprintf(msg, sizeof msg, "The frame is not valid JSON (%s).", jerr.text);
        json__error(ws, NULL, "bad_request", cmd ? "A command is a JSON object." : msg);
        json_decref(cmd);
        return;
    }
    json__command(js, cmd);
    json_decref(cmd);
}

static void json__on_close(ws_conn_t *ws)
{
    json_session_t *js = ws->app_data;
    if (js->chat) chat_session_close(js->chat);
    free(js);
    ws->app_data = NULL;
}

static void json__on_drain(ws_conn_t *ws)
{
    json_session_t *js = ws->app_data;
    if (js->chat) chat_session_drained(js->chat);
}

static const ws_app_t json__app = {
    .name = "json",
    .on_message = json__on_message,
    .on_close = json__on_close,
    .on_drain = json__on_drain,
};

void proto_json_accept(http_req_t *r, const ws_handshake_t *hs, const char *user)
{
    json_session_t *js = calloc(1, sizeof *js);
    if (!js) {
        http_respond_error(r, 500, "internal", "Out of memory.");
        return;
    }
    proto_bucket_init(&js->rate);
    proto_session_id(r, js->session);
    ws_conn_t *ws = ws_accept(r, hs, &json__app, js);
    if (!ws) {
        free(js);
        return;
    }
    js->ws = ws;
    char node[16];
    snprintf(node, sizeof node, "%d", sori_config.node_id);
    json__send(ws, json_pack("{s:s, s:s, s:s, s:s, s:i, s:I}", "type", "hello", "user", user, "session",
                             js->session, "node", node, "heartbeat_ms", sori_config.heartbeat_ms, "server_time",
                             (json_int_t)clock_now_ms()));
    js->chat = chat_session_open(user, r->c->w->index, CHAT_SESSION_LIVE, &json__sink, js);
    if (!js->chat) ws_close(ws, 1011, "out of memory");
}

void proto_init(void)
{
    chat_msg_cache_register(0, json__destroy_frame);
    proto_stomp_init();
}
