/*
 * proto_json.c: the JSON protocol front end (PROTOCOL.md §2-§4): `hello`,
 * decoding each command into a chat_* call, and the chat sink that encodes
 * replies and events (the /ws route that picks it is in proto_ws.c). Holds no
 * chat logic. Bad input gets an `error` frame and the connection stays open.
 *
 * Owns json_session_t (one per connection, freed in on_close, which also
 * closes the chat session). Each frame is parsed with jansson (duplicate
 * keys refused, its nesting limit applies); ws-max-message bounds the size;
 * a token bucket (--rate, --burst) bounds commands per connection. Decoding
 * (proto_json_decode: the frame into a proto_json_cmd_t, fields type- and
 * bound-checked) is a pure function, separate from running the command, so
 * it can be fuzzed (tests/fuzz/fuzz_json.c). Message
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

static int json__fail(proto_json_cmd_t *c, const char *msg)
{
    snprintf(c->err, sizeof c->err, "%s", msg);
    return SORI_EINVAL;
}

/* A required string field: 0, or SORI_EINVAL with the message set. */
static int json__str(proto_json_cmd_t *c, const char *key, const char **out)
{
    *out = json_string_value(json_object_get(c->root, key));
    if (!*out) {
        snprintf(c->err, sizeof c->err, "\"%s\" must be a string.", key);
        return SORI_EINVAL;
    }
    return 0;
}

/* An optional integer field in [min, max]: 1 present, 0 absent (out
 * unchanged), SORI_EINVAL with the message set. */
static int json__int(proto_json_cmd_t *c, const char *key, int64_t min, int64_t max, int64_t *out)
{
    json_t *v = json_object_get(c->root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        snprintf(c->err, sizeof c->err, "\"%s\" must be an integer from %lld to %lld.", key,
                 (long long)min, (long long)max);
        return SORI_EINVAL;
    }
    *out = json_integer_value(v);
    return 1;
}

static const struct {
    const char *name;
    int type;
} json__types[] = {
    {"ping", PJ_PING},       {"join", PJ_JOIN},       {"leave", PJ_LEAVE},     {"part", PJ_PART},
    {"send", PJ_SEND},       {"dm", PJ_DM},           {"history", PJ_HISTORY}, {"rooms", PJ_ROOMS},
    {"create", PJ_CREATE},   {"invite", PJ_INVITE},   {"kick", PJ_KICK},       {"role", PJ_ROLE},
    {"members", PJ_MEMBERS}, {"read", PJ_READ},       {"search", PJ_SEARCH},   {"typing", PJ_TYPING},
    {"presence", PJ_PRESENCE},
};

/* The fields of c->type's command. */
static int json__fields(proto_json_cmd_t *c)
{
    json_t *cmd = c->root, *v;
    switch (c->type) {
    case PJ_PING:
        return 0;
    case PJ_ROOMS:
        c->public_only = json_is_true(json_object_get(cmd, "public"));
        return 0;
    case PJ_JOIN:
        if (json__str(c, "room", &c->room)) return SORI_EINVAL;
        return json__int(c, "since", 0, INT64_MAX, &c->since) < 0 ? SORI_EINVAL : 0;
    case PJ_LEAVE:
    case PJ_PART:
    case PJ_MEMBERS:
    case PJ_TYPING:
        return json__str(c, "room", &c->room);
    case PJ_SEND:
    case PJ_DM: {
        int dm = c->type == PJ_DM;
        if (json__str(c, dm ? "to" : "room", dm ? &c->user : &c->room) || json__str(c, "text", &c->text))
            return SORI_EINVAL;
        v = json_object_get(cmd, "attachments");
        if (dm && v && !json_is_null(v))
            return json__fail(c, "Direct messages carry no attachments; post them in a room.");
        if (!dm && proto_attachments(v, c->ids, &c->nids))
            return json__fail(c, "\"attachments\" is an array of at most 10 {\"id\": upload id} objects.");
        v = json_object_get(cmd, "cid");
        if (v && !json_is_string(v) && !json_is_null(v)) return json__fail(c, "\"cid\" must be a string.");
        c->cid = json_string_value(v);
        c->text_len = json_string_length(json_object_get(cmd, "text"));
        return 0;
    }
    case PJ_HISTORY:
        if (json__str(c, "room", &c->room)) return SORI_EINVAL;
        if (json__int(c, "before", 1, INT64_MAX, &c->before) < 0 ||
            json__int(c, "after", 0, INT64_MAX, &c->after) < 0 ||
            json__int(c, "limit", 1, 100, &c->limit) < 0)
            return SORI_EINVAL;
        if (c->before >= 0 && c->after >= 0) return json__fail(c, "Give before or after, not both.");
        return 0;
    case PJ_CREATE:
        if (json__str(c, "room", &c->room) || json__str(c, "kind", &c->kind)) return SORI_EINVAL;
        v = json_object_get(cmd, "title");
        if (v && !json_is_string(v)) return json__fail(c, "\"title\" must be a string.");
        c->title = json_string_value(v);
        return 0;
    case PJ_INVITE:
    case PJ_KICK:
        if (json__str(c, "room", &c->room) || json__str(c, "user", &c->user)) return SORI_EINVAL;
        return 0;
    case PJ_ROLE:
        if (json__str(c, "room", &c->room) || json__str(c, "user", &c->user) || json__str(c, "role", &c->role))
            return SORI_EINVAL;
        return 0;
    case PJ_READ: {
        if (json__str(c, "room", &c->room)) return SORI_EINVAL;
        int got = json__int(c, "seq", 0, INT64_MAX, &c->seq);
        if (got == 0) return json__fail(c, "\"seq\" is required.");
        return got < 0 ? SORI_EINVAL : 0;
    }
    case PJ_SEARCH:
        c->limit = 20;
        if (json__str(c, "q", &c->q)) return SORI_EINVAL;
        v = json_object_get(cmd, "room");
        if (v && !json_is_null(v) && !json_is_string(v)) return json__fail(c, "\"room\" must be a room id.");
        c->room = json_string_value(v);
        return json__int(c, "limit", 1, CONFIG_GET(search_max), &c->limit) < 0 ? SORI_EINVAL : 0;
    case PJ_PRESENCE: {
        json_t *users = json_object_get(cmd, "users");
        if (!json_is_array(users) || json_array_size(users) > PROTO_PRESENCE_MAX)
            return json__fail(c, "\"users\" must be an array of at most 1000 names.");
        size_t i;
        json_array_foreach(users, i, v)
        {
            if (!json_is_string(v)) return json__fail(c, "\"users\" must be an array of names.");
            c->names[c->nnames++] = json_string_value(v);
        }
        return 0;
    }
    }
    return SORI_EINVAL;
}

int proto_json_decode(const char *data, size_t len, proto_json_cmd_t *c)
{
    memset(c, 0, offsetof(proto_json_cmd_t, ids));
    c->since = c->before = c->after = c->seq = -1;
    c->limit = 50;
    c->nids = c->nnames = 0;
    c->early = 1;
    c->err[0] = 0;
    json_error_t jerr;
    c->root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!c->root) {
        snprintf(c->err, sizeof c->err, "The frame is not valid JSON (%s).", jerr.text);
        return SORI_EINVAL;
    }
    if (!json_is_object(c->root)) return json__fail(c, "A command is a JSON object.");
    json_t *ref = json_object_get(c->root, "ref");
    if (ref && (json_is_string(ref) || json_is_integer(ref) || json_is_real(ref))) c->ref = ref;
    const char *type = json_string_value(json_object_get(c->root, "type"));
    if (!type) return json__fail(c, "A command needs a \"type\" string.");
    c->early = 0;
    for (size_t i = 0; i < sizeof json__types / sizeof json__types[0]; i++)
        if (!strcmp(type, json__types[i].name)) c->type = json__types[i].type;
    if (!c->type) {
        snprintf(c->err, sizeof c->err, "Unknown command type \"%.40s\".", type);
        return SORI_EINVAL;
    }
    return json__fields(c);
}

void proto_json_cmd_free(proto_json_cmd_t *c)
{
    json_decref(c->root);
    c->root = NULL;
}

/* Runs a decoded command (proto_json_decode returned 0). */
static void json__command(json_session_t *js, proto_json_cmd_t *c)
{
    chat_session_t *cs = js->chat;
    json_t *ref = c->ref;
    switch (c->type) {
    case PJ_PING: {
        json_t *o = json_pack("{s:s}", "type", "pong");
        if (ref) json_object_set(o, "ref", ref);
        json__send(js->ws, o);
        break;
    }
    case PJ_JOIN: chat_join(cs, ref, c->room, c->since); break;
    case PJ_LEAVE: chat_leave(cs, ref, c->room); break;
    case PJ_PART: chat_part(cs, ref, c->room); break;
    case PJ_SEND: chat_send(cs, ref, c->room, c->text, c->text_len, c->cid, c->ids, c->nids); break;
    case PJ_DM: chat_dm(cs, ref, c->user, c->text, c->text_len, c->cid); break;
    case PJ_HISTORY: chat_history(cs, ref, c->room, c->before, c->after, (int)c->limit); break;
    case PJ_ROOMS: chat_rooms(cs, ref, c->public_only); break;
    case PJ_CREATE: chat_create(cs, ref, c->room, c->kind, c->title); break;
    case PJ_INVITE: chat_invite(cs, ref, c->room, c->user); break;
    case PJ_KICK: chat_kick(cs, ref, c->room, c->user); break;
    case PJ_ROLE: chat_role(cs, ref, c->room, c->user, c->role); break;
    case PJ_MEMBERS: chat_members(cs, ref, c->room); break;
    case PJ_READ: chat_read(cs, ref, c->room, c->seq); break;
    case PJ_SEARCH: chat_search(cs, ref, c->q, c->room, (int)c->limit); break;
    case PJ_TYPING: chat_typing(cs, c->room); break;
    case PJ_PRESENCE: chat_presence(cs, ref, c->names, c->nnames); break;
    }
}

static void json__on_message(ws_conn_t *ws, int opcode, char *data, size_t len)
{
    json_session_t *js = ws->app_data;
    if (opcode != WS_OP_TEXT) {
        json__error(ws, NULL, "bad_request", "Commands are JSON objects in text frames.");
        return;
    }
    proto_json_cmd_t cmd; /* 8 KiB of presence names, as the old decoder's stack held */
    int rc = proto_json_decode(data, len, &cmd);
    if (rc && cmd.early)
        json__error(ws, cmd.ref, "bad_request", cmd.err);
    else if (!proto_bucket_take(&js->rate))
        json__error(ws, cmd.ref, "rate_limited", "Too many commands; slow down.");
    else if (rc)
        json__error(ws, cmd.ref, "bad_request", cmd.err);
    else
        json__command(js, &cmd);
    proto_json_cmd_free(&cmd);
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
