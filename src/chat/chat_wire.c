/*
 * chat_wire.c: the decoders of chat_wire.h, taken out of chat_relay.c so
 * that what other nodes send is parsed by pure functions (STYLE.md practice
 * 3) and can be fuzzed. Owns nothing: every string returned is borrowed from
 * the caller's bytes or JSON. The formats (written by chat_relay.c):
 * - "sori:state": 's' + [{"k": op, ...}, ...] or 'u' + user + '\n' + JSON;
 * - "chatroom-<room>": a message's JSON, which begins {"type":"message",
 *   (chat__msg_encode), or an event's JSON object.
 * Invariants: a user name from the wire is 1..32 bytes (and, framed by
 * '\n', NUL-free) before anything looks a user up or creates one for it;
 * an upload id is under 65 bytes.
 */
#include "chat/chat_wire.h"
#include "util/err.h"

#include <stdlib.h>
#include <string.h>

int chat_wire_classify(const char *channel, const char *data, size_t len, chat_wire_payload_t *p)
{
    memset(p, 0, sizeof *p);
    if (!len) return CHAT_WIRE_NONE;
    if (!strcmp(channel, CHAT_WIRE_STATE_CHANNEL)) {
        p->body = data + 1;
        p->body_len = len - 1;
        if (data[0] == 's') return p->kind = CHAT_WIRE_STATE;
        if (data[0] != 'u') return CHAT_WIRE_NONE;
        const char *nl = memchr(p->body, '\n', p->body_len);
        if (!nl || nl == p->body || (size_t)(nl - p->body) > CHAT_WIRE_USER_MAX) return CHAT_WIRE_NONE;
        size_t n = (size_t)(nl - p->body);
        /* A NUL would cut the name: the event would go to another user. */
        if (memchr(p->body, '\0', n)) return CHAT_WIRE_NONE;
        memcpy(p->user, p->body, n);
        p->user[n] = 0;
        p->body_len -= n + 1;
        p->body = nl + 1;
        return p->kind = CHAT_WIRE_USER_EVENT;
    }
    if (strncmp(channel, "chatroom-", 9) != 0) return CHAT_WIRE_NONE;
    static const char msg_head[] = "{\"type\":\"message\",";
    p->room = channel + 9;
    p->body = data;
    p->body_len = len;
    if (len > sizeof msg_head - 1 && !memcmp(data, msg_head, sizeof msg_head - 1))
        return p->kind = CHAT_WIRE_ROOM_MESSAGE;
    if (data[0] == '{') return p->kind = CHAT_WIRE_ROOM_EVENT;
    return p->kind = CHAT_WIRE_NONE;
}

static const char *chat__wire_str(json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }
static int64_t chat__wire_int(json_t *o, const char *key) { return json_integer_value(json_object_get(o, key)); }

static int chat__wire_user_ok(const char *s) { return s && strlen(s) <= CHAT_WIRE_USER_MAX; }

int chat_wire_op_decode(json_t *o, chat_wire_op_t *op)
{
    memset(op, 0, sizeof *op);
    const char *k = chat__wire_str(o, "k");
    if (!k) return SORI_EINVAL;
    op->created_at = chat__wire_int(o, "created_at");
    if (!strcmp(k, "user") || !strcmp(k, "account")) {
        op->k = k[0] == 'u' ? CHAT_WIRE_OP_USER : CHAT_WIRE_OP_ACCOUNT;
        op->name = chat__wire_str(o, "name");
        op->pw_hash = chat__wire_str(o, "pw_hash");
        return chat__wire_user_ok(op->name) ? 0 : SORI_EINVAL;
    }
    if (!strcmp(k, "upload")) {
        op->k = CHAT_WIRE_OP_UPLOAD;
        op->id = chat__wire_str(o, "id");
        op->type = chat__wire_str(o, "type");
        op->user = chat__wire_str(o, "user");
        if (!chat__wire_user_ok(op->user)) op->user = NULL; /* no owner rather than a cut name */
        op->size = chat__wire_int(o, "size");
        return op->id && op->type && strlen(op->id) < 65 ? 0 : SORI_EINVAL;
    }
    if (!strcmp(k, "room")) {
        op->k = CHAT_WIRE_OP_ROOM;
        op->id = chat__wire_str(o, "id");
        const char *kind = chat__wire_str(o, "kind");
        if (!op->id || !kind) return SORI_EINVAL;
        op->kind = !strcmp(kind, "public") ? 'p' : !strcmp(kind, "dm") ? 'd' : 'r';
        op->title = chat__wire_str(o, "title");
        return 0;
    }
    if (!strcmp(k, "member"))
        op->k = CHAT_WIRE_OP_MEMBER;
    else if (!strcmp(k, "member_del"))
        op->k = CHAT_WIRE_OP_MEMBER_DEL;
    else if (!strcmp(k, "read"))
        op->k = CHAT_WIRE_OP_READ;
    else
        return SORI_EINVAL;
    op->room = chat__wire_str(o, "room");
    op->user = chat__wire_str(o, "user");
    const char *role = chat__wire_str(o, "role");
    op->role = role && role[0] == 'o' ? 'o' : role && role[0] == 'a' ? 'a' : 'm';
    op->seq = chat__wire_int(o, "seq");
    return op->room && chat__wire_user_ok(op->user) ? 0 : SORI_EINVAL;
}

int chat_wire_msg_decode(json_t *o, chat_wire_msg_t *m)
{
    memset(m, 0, sizeof *m);
    const char *ids = chat__wire_str(o, "id");
    json_t *text = json_object_get(o, "text");
    m->from = chat__wire_str(o, "from");
    m->seq = chat__wire_int(o, "seq");
    if (!ids || !m->from || !json_is_string(text) || m->seq <= 0) return SORI_EINVAL;
    m->id = strtoull(ids, NULL, 10);
    m->ts = chat__wire_int(o, "ts");
    m->text = json_string_value(text);
    m->text_len = json_string_length(text);
    m->cid = chat__wire_str(o, "cid");
    m->attachments = json_object_get(o, "attachments");
    m->mentions = json_object_get(o, "mentions");
    return 0;
}
