/*
 * proto.h: the front ends that turn frames into commands. For now the
 * WebSocket entry point (/ws: sub-protocol choice, identity, the JSON
 * session) and the /echo conformance endpoint.
 */
#ifndef SORI_PROTO_PROTO_H
#define SORI_PROTO_PROTO_H

#include "http/http_server.h"

/* Registers the front ends' per-message caches with chat (once, at start). */
void proto_init(void);

/* GET /ws: handshake, identity, then the protocol the sub-protocol names. */
void proto_ws_route(http_req_t *r);
/* GET /echo (with --ws-echo): echoes every message back unchanged. */
void proto_echo_route(http_req_t *r);

/*
 * Who is connecting (PROTOCOL.md §2), first match wins: Authorization:
 * Bearer <token>, ?token=<token>, then ?user=<name> when guests are allowed.
 * Returns 0 with user (AUTH_USER_MAX + 1 bytes) filled, or the HTTP status
 * it already answered r with (401 with a JSON body, 400 for a bad name).
 */
int proto_identify(http_req_t *r, char *user);

#endif
