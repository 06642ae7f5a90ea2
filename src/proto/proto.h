/*
 * proto.h: the front ends that turn frames into commands. For now the
 * WebSocket entry point (/ws: sub-protocol choice, identity, the JSON
 * session) and the /echo conformance endpoint.
 */
#ifndef SORI_PROTO_PROTO_H
#define SORI_PROTO_PROTO_H

#include "http/http_server.h"

/* GET /ws: handshake, identity, then the protocol the sub-protocol names. */
void proto_ws_route(http_req_t *r);
/* GET /echo (with --ws-echo): echoes every message back unchanged. */
void proto_echo_route(http_req_t *r);

/* 1 if name is a valid user name ([A-Za-z0-9_.-]{1,32}). */
int proto_valid_user(const char *name, size_t len);

#endif
