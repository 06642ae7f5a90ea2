/*
 * proto_internal.h: what the WebSocket front ends share: the per-connection
 * command bucket, session ids, and their entry points from /ws.
 */
#ifndef SORI_PROTO_INTERNAL_H
#define SORI_PROTO_INTERNAL_H

#include "proto/proto.h"
#include "ws/ws.h"

#include <stdint.h>

/* A token bucket of commands per connection (--rate per second, --burst). */
typedef struct {
    double tokens;
    int64_t ms;
} proto_bucket_t;

void proto_bucket_init(proto_bucket_t *b);
/* Takes one token: 1, or 0 when the connection is over its rate. */
int proto_bucket_take(proto_bucket_t *b);

/* The connection's session id (16 hex digits + NUL into out[20]). */
void proto_session_id(const http_req_t *r, char *out);

/* Accept the upgrade r for user (JSON: always known; STOMP: "" when the
 * client authenticates in CONNECT). Answer r themselves on failure. */
void proto_json_accept(http_req_t *r, const ws_handshake_t *hs, const char *user);
void proto_stomp_accept(http_req_t *r, const ws_handshake_t *hs, const char *user);
void proto_stomp_init(void);

/* ---- the JSON protocol's command decoder (proto_json.c) ---- */

enum {
    PJ_PING = 1, PJ_JOIN, PJ_LEAVE, PJ_PART, PJ_SEND, PJ_DM, PJ_HISTORY, PJ_ROOMS, PJ_CREATE,
    PJ_INVITE, PJ_KICK, PJ_ROLE, PJ_MEMBERS, PJ_READ, PJ_SEARCH, PJ_TYPING, PJ_PRESENCE
};

#define PROTO_PRESENCE_MAX 1000

/* One decoded client command. Every pointer borrows from root, which the
 * decoder owns until proto_json_cmd_free. Fields a command does not use
 * keep their defaults (NULL, -1; limit 50 for history, 20 for search). */
typedef struct {
    json_t *root;    /* the parsed frame (owned), or NULL */
    json_t *ref;     /* "ref" when a string or a number, else NULL */
    int type;        /* PJ_* (0 when the frame has no "type" string) */
    const char *room, *user, *text, *cid, *kind, *title, *role, *q;
    size_t text_len; /* bytes of text (it may hold NUL bytes) */
    int64_t since, before, after, limit, seq;
    int public_only; /* rooms: "public" is true */
    const char *ids[PROTO_ATTACH_MAX];
    size_t nids;
    const char *names[PROTO_PRESENCE_MAX];
    size_t nnames;
    int early;       /* the error came before the rate check: not JSON, not an
                        object, or no "type" */
    char err[200];   /* the bad_request message when decoding failed */
} proto_json_cmd_t;

/*
 * Decodes the text frame data[0..len) (borrowed, any bytes) into cmd: parses
 * it with jansson (duplicate keys refused, its depth limit applies) and
 * checks the command's fields and their types and bounds (PROTOCOL.md §3).
 * Returns 0, or SORI_EINVAL with cmd->err set (cmd->type and cmd->ref are
 * still filled when known). Pure: no session, no loop; it reads only
 * sori_config.search_max. Always call proto_json_cmd_free afterwards.
 */
int proto_json_decode(const char *data, size_t len, proto_json_cmd_t *cmd);
void proto_json_cmd_free(proto_json_cmd_t *cmd);

#endif
