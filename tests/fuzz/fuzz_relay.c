/*
 * fuzz_relay.c: libFuzzer target for src/chat/chat_wire.c, the decoders of
 * what other cluster nodes publish on the bus (chat_relay.c applies what
 * they return): the framing of a payload by channel, each op of a
 * "sori:state" notice, and a relayed room message. Byte 0 picks the channel
 * ("sori:state", two room channels, an unrelated one), the rest is the
 * payload, in an exactly sized copy so ASan sees reads past its end.
 * Checks: the kind matches the framing rules; the JSON part lies inside the
 * payload; a user event's user is 1..32 bytes and newline-free; every op
 * that decodes has a known kind and respects the wire invariants (user
 * names 1..32 bytes where a user will be created, upload ids under 65
 * bytes, room kind p/d/r, role o/a/m); a message that decodes has a
 * positive seq, a sender and a text whose length is jansson's.
 */
#include "chat/chat_wire.h"
#include "util/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                        \
    do {                                                                                \
        if (!(x)) {                                                                     \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #x, __FILE__, __LINE__);  \
            abort();                                                                    \
        }                                                                               \
    } while (0)

static void check_op(json_t *o)
{
    chat_wire_op_t op;
    if (chat_wire_op_decode(o, &op)) return;
    CHECK(op.k >= CHAT_WIRE_OP_USER && op.k <= CHAT_WIRE_OP_READ);
    switch (op.k) {
    case CHAT_WIRE_OP_USER:
    case CHAT_WIRE_OP_ACCOUNT: CHECK(op.name && strlen(op.name) <= CHAT_WIRE_USER_MAX); break;
    case CHAT_WIRE_OP_UPLOAD:
        CHECK(op.id && op.type && strlen(op.id) < 65);
        CHECK(!op.user || strlen(op.user) <= CHAT_WIRE_USER_MAX);
        break;
    case CHAT_WIRE_OP_ROOM: CHECK(op.id && (op.kind == 'p' || op.kind == 'd' || op.kind == 'r')); break;
    default:
        CHECK(op.room && op.user && strlen(op.user) <= CHAT_WIRE_USER_MAX);
        CHECK(op.role == 'o' || op.role == 'a' || op.role == 'm');
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const channels[] = {"sori:state", "chatroom-general", "chatroom-dm:alice:bob", "other"};
    if (size < 1) return 0;
    const char *channel = channels[data[0] & 3];
    size_t len = size - 1;
    char *p = malloc(len ? len : 1);
    CHECK(p != NULL);
    memcpy(p, data + 1, len);

    chat_wire_payload_t w;
    int kind = chat_wire_classify(channel, p, len, &w);
    CHECK(kind == w.kind);
    if (kind != CHAT_WIRE_NONE) {
        CHECK(len > 0);
        CHECK(w.body >= p && w.body + w.body_len <= p + len);
    }
    switch (kind) {
    case CHAT_WIRE_STATE:
    case CHAT_WIRE_USER_EVENT:
        CHECK((data[0] & 3) == 0);
        break;
    case CHAT_WIRE_ROOM_MESSAGE:
    case CHAT_WIRE_ROOM_EVENT:
        CHECK((data[0] & 3) == 1 || (data[0] & 3) == 2);
        CHECK(!strcmp(w.room, channel + 9) && w.body[0] == '{');
        break;
    }
    if (kind == CHAT_WIRE_USER_EVENT) {
        size_t n = strlen(w.user);
        CHECK(n >= 1 && n <= CHAT_WIRE_USER_MAX && !memchr(w.user, '\n', n));
        CHECK(p[0] == 'u' && !memcmp(p + 1, w.user, n) && p[1 + n] == '\n');
    }
    if (kind == CHAT_WIRE_STATE) {
        json_t *a = json_loadb(w.body, w.body_len, 0, NULL);
        size_t i;
        json_t *o;
        json_array_foreach(a, i, o) check_op(o);
        if (a && !json_is_array(a)) check_op(a); /* an object alone is not an op list, but decodes safely */
        json_decref(a);
    }
    if (kind == CHAT_WIRE_ROOM_MESSAGE) {
        json_t *o = json_loadb(w.body, w.body_len, 0, NULL);
        chat_wire_msg_t m;
        if (o && chat_wire_msg_decode(o, &m) == 0) {
            CHECK(m.seq > 0 && m.from && m.text);
            CHECK(m.text_len == json_string_length(json_object_get(o, "text")));
            size_t i;
            json_t *v;
            json_array_foreach(m.mentions, i, v)(void) json_string_value(v);
            json_array_foreach(m.attachments, i, v)(void) json_string_value(json_object_get(v, "id"));
        }
        json_decref(o);
    }
    free(p);
    return 0;
}
