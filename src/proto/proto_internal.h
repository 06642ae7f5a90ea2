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

#endif
