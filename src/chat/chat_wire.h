/*
 * chat_wire.h: pure decoders for what other nodes publish on the bus
 * (chat_relay.c's payloads): the framing of a payload by channel, the state
 * ops of a "sori:state" notice and the fields of a relayed room message.
 * No chat state is touched: chat_relay.c applies what these return, and
 * tests/fuzz/fuzz_relay.c drives them with any bytes.
 */
#ifndef SORI_CHAT_WIRE_H
#define SORI_CHAT_WIRE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define CHAT_WIRE_STATE_CHANNEL "sori:state"
#define CHAT_WIRE_USER_MAX 32 /* = CHAT_USER_MAX */

enum {
    CHAT_WIRE_NONE = 0,     /* not ours, or empty: ignore */
    CHAT_WIRE_STATE,        /* "sori:state" 's' + a JSON array of state ops */
    CHAT_WIRE_USER_EVENT,   /* "sori:state" 'u' + user + '\n' + an event's JSON */
    CHAT_WIRE_ROOM_MESSAGE, /* "chatroom-<room>": a message's JSON */
    CHAT_WIRE_ROOM_EVENT,   /* "chatroom-<room>": an event's JSON object */
};

typedef struct {
    int kind;
    const char *room;      /* room payloads: the id (a suffix of channel) */
    char user[CHAT_WIRE_USER_MAX + 1]; /* user events: the user, 1..32 bytes, no NUL */
    const char *body;      /* the JSON part, borrowed from data */
    size_t body_len;
} chat_wire_payload_t;

/* Frames a payload published on `channel` (NUL-terminated) as data[0..len).
 * Returns the kind (also in p->kind); CHAT_WIRE_NONE for anything else. */
int chat_wire_classify(const char *channel, const char *data, size_t len, chat_wire_payload_t *p);

enum {
    CHAT_WIRE_OP_USER = 1, CHAT_WIRE_OP_ACCOUNT, CHAT_WIRE_OP_UPLOAD, CHAT_WIRE_OP_ROOM,
    CHAT_WIRE_OP_MEMBER, CHAT_WIRE_OP_MEMBER_DEL, CHAT_WIRE_OP_READ
};

/* One state op; strings borrowed from the op's JSON object. */
typedef struct {
    int k;                      /* CHAT_WIRE_OP_* */
    const char *name, *pw_hash; /* user, account: name 1..32 bytes; pw_hash or NULL */
    const char *id, *type;      /* upload: id < 65 bytes; room: id (checked by the caller) */
    const char *user;           /* upload: owner or NULL; member ops: 1..32 bytes */
    const char *room;           /* member ops */
    char kind;                  /* room: 'p' public, 'd' dm, 'r' private */
    const char *title;          /* room: or NULL */
    char role;                  /* member: 'o', 'a' or 'm' */
    int64_t created_at, size, seq;
} chat_wire_op_t;

/* Decodes one element of a state notice. 0, or SORI_EINVAL: skip it. */
int chat_wire_op_decode(json_t *o, chat_wire_op_t *op);

/* A relayed message's fields; strings and arrays borrowed from o. */
typedef struct {
    uint64_t id;
    int64_t seq, ts;
    const char *from, *text, *cid;
    size_t text_len;
    json_t *attachments, *mentions; /* as sent, or NULL */
} chat_wire_msg_t;

/* Decodes a relayed message object. 0, or SORI_EINVAL (no id, from or text
 * string, or seq not positive). */
int chat_wire_msg_decode(json_t *o, chat_wire_msg_t *m);

#endif
