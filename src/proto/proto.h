/*
 * proto.h: the front ends that turn frames and requests into commands: the
 * WebSocket entry point (/ws: sub-protocol choice, identity, then the JSON
 * or STOMP session), the REST API and the /echo conformance endpoint.
 */
#ifndef SORI_PROTO_PROTO_H
#define SORI_PROTO_PROTO_H

#include "http/http_server.h"

#include <jansson.h>

/* Registers the front ends' per-message caches with chat (once, at start). */
void proto_init(void);

/* GET /ws: handshake, identity, then the protocol the sub-protocol names. */
void proto_ws_route(http_req_t *r);
/* GET /echo (with --ws-echo): echoes every message back unchanged. */
void proto_echo_route(http_req_t *r);

/*
 * Who is connecting (PROTOCOL.md §2), first match wins: Authorization:
 * Bearer <token>, ?token=<token>, then ?user=<name> when guests are allowed.
 * With optional (STOMP, which may authenticate in CONNECT), no credentials
 * at all is 0 with user "".
 * Returns 0 with user (AUTH_USER_MAX + 1 bytes) filled, or the HTTP status
 * it already answered r with (401 with a JSON body, 400 for a bad name).
 */
int proto_identify(http_req_t *r, char *user, int optional);

/* The REST API (PROTOCOL.md §7): registers its routes. */
void proto_rest_routes(void);
void proto_rest_free(void);
/* The image type named by a file's first bytes ("image/png", "image/jpeg",
 * "image/gif", "image/webp"), or NULL. */
const char *proto_image_type(const unsigned char *p, size_t n);

#define PROTO_ATTACH_MAX 10
/* Reads a command's "attachments" (absent, null, or an array of at most
 * PROTO_ATTACH_MAX {"id": "..."} objects or id strings) into ids (borrowed
 * from v). 0, or -1 when malformed. */
int proto_attachments(json_t *v, const char **ids, size_t *n);

#endif
