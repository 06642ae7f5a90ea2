/*
 * ws.h: WebSocket connections (RFC 6455) on top of net/, after an HTTP
 * upgrade: the handshake, message reassembly, control frames, the closing
 * handshake, heartbeats and permessage-deflate (RFC 7692).
 *
 * An application (the JSON protocol, STOMP, the echo endpoint) plugs in with
 * a ws_app_t and sees whole, validated messages; it sends with ws_send or
 * with ws_send_shared for frames encoded once for many recipients.
 */
#ifndef SORI_WS_WS_H
#define SORI_WS_WS_H

#include "http/http_server.h"
#include "net/net.h"
#include "util/buf.h"
#include "ws/ws_deflate.h"
#include "ws/ws_frame.h"
#include "ws/ws_reader.h"
#include "ws/ws_utf8.h"

typedef struct ws_conn ws_conn_t;

typedef struct ws_app {
    const char *name;
    /* A complete message: opcode WS_OP_TEXT (valid UTF-8) or WS_OP_BINARY.
     * data is mutable and valid only during the call. May call ws_send and
     * ws_close. */
    void (*on_message)(ws_conn_t *ws, int opcode, char *data, size_t len);
    /* The connection is gone; free app_data. No sending from here. */
    void (*on_close)(ws_conn_t *ws);
    /* Optional: the server is draining (SIGTERM); the default closes with
     * WS_CLOSE_RESTART and WS_RESTART_REASON. An app that says goodbye
     * first must close the same way. */
    void (*on_shutdown)(ws_conn_t *ws);
    /* Optional: everything queued was written, after ws_notify_drain. */
    void (*on_drain)(ws_conn_t *ws);
} ws_app_t;

enum { WS_OPEN = 0, WS_CLOSE_SENT = 1, WS_CLOSED = 2 };

/* The drain's close: 1012 Service Restart (IANA WebSocket close code
 * registry, RFC 6455 §7.4.2): the client should reconnect, to this node once
 * it is back or to another one. PROTOCOL.md §2 tells clients what to do. */
#define WS_CLOSE_RESTART 1012
#define WS_RESTART_REASON "server restarting, reconnect"

struct ws_conn {
    conn_t *c;
    const ws_app_t *app;
    void *app_data;
    ws_reader_t rd;       /* frames and message assembly (ws_reader.c) */
    uint64_t last_seen;   /* worker ms (uv_now) of the last bytes from the peer */
    uint8_t state;        /* WS_OPEN, WS_CLOSE_SENT, WS_CLOSED */
    uint8_t deflate_bits; /* 0: no deflate; else our window bits (9..15) */
};

typedef struct {
    char accept[32];           /* Sec-WebSocket-Accept value */
    const char *subprotocol;   /* chosen, or NULL */
    ws_deflate_params_t deflate;
    char extensions[160];      /* Sec-WebSocket-Extensions response value, or "" */
} ws_handshake_t;

/*
 * Checks an upgrade request (RFC 6455 §4.2.1): GET, HTTP/1.1, Upgrade
 * contains the token "websocket", Connection contains "Upgrade",
 * Sec-WebSocket-Version 13, a Sec-WebSocket-Key of 16 base64 bytes, the
 * Origin (when present) in the allow-list when one is configured. Chooses
 * the first offered sub-protocol that is in `supported` (NULL-terminated);
 * offering only unsupported ones is an error. Negotiates permessage-deflate
 * when enabled. Returns 0 and fills *hs, or the HTTP status to answer (400,
 * 403, 426) with *msg a sentence for the body.
 */
int ws_handshake_check(const http_request_t *req, const char *const *supported, ws_handshake_t *hs,
                       const char **msg);

/* Answers r with 101 and turns the connection into a WebSocket running app.
 * Returns the new ws_conn_t (owned by the connection) or NULL if it could
 * not be allocated (r then got a 500). Never calls back into app. */
ws_conn_t *ws_accept(http_req_t *r, const ws_handshake_t *hs, const ws_app_t *app, void *app_data);

/*
 * Sends one message (text or binary), compressed when deflate was negotiated
 * and len >= ws-deflate-min. Returns 0; SORI_ECLOSED if the connection is
 * closing; SORI_E2BIG if it exceeded its output limit (it is then being
 * closed with 1008 "slow consumer"). Never calls back.
 */
int ws_send(ws_conn_t *ws, int opcode, const void *data, size_t len);

/*
 * A message encoded once for many recipients: the plain frame, and lazily
 * one compressed frame per window size in use. Thread-safe to share once
 * built; each variant is built by whichever thread first needs it (guarded
 * by a lock inside). Freed with the last ws_shared_unref.
 */
typedef struct ws_shared ws_shared_t;
ws_shared_t *ws_shared_new(int opcode, const void *data, size_t len);
ws_shared_t *ws_shared_ref(ws_shared_t *s);
void ws_shared_unref(ws_shared_t *s);
/* Queues the right variant of s on ws; as ws_send. */
int ws_send_shared(ws_conn_t *ws, ws_shared_t *s);
/* One message whose payload is prefix[0..plen) (copied; per recipient, at
 * most WS_PREFIX_MAX bytes) followed by s's payload (shared, not copied).
 * With permessage-deflate the prefix goes in a stored deflate block ahead
 * of s's shared compressed payload. As ws_send; SORI_E2BIG if plen is over. */
#define WS_PREFIX_MAX 1024
int ws_send_shared_prefixed(ws_conn_t *ws, const void *prefix, size_t plen, ws_shared_t *s);

/* Bytes queued on the connection and not yet written. */
uint64_t ws_unsent(const ws_conn_t *ws);
/* Asks for one app->on_drain call when the output queue is empty. */
void ws_notify_drain(ws_conn_t *ws);

/* Starts the closing handshake with code and reason (≤ 123 bytes). */
void ws_close(ws_conn_t *ws, unsigned code, const char *reason);

/* Frees this thread's compressor state (call when a worker stops). */
void ws_thread_cleanup(void);

#endif
