/*
 * ws_handshake.c: the server side of the opening handshake (RFC 6455 §4.2).
 *
 * Pure over the parsed request and the config: validates, picks a
 * sub-protocol and the permessage-deflate parameters, and computes
 * Sec-WebSocket-Accept = base64(SHA-1(key + GUID)) (§4.2.2 step 5.4).
 */
#include "util/base64.h"
#include "util/config.h"
#include "util/err.h"
#include "ws/ws.h"

#include <openssl/evp.h>
#include <string.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static int ws__origin_allowed(slice_t origin)
{
    const char *list = sori_config.allowed_origins;
    if (!list || !*list) return 1;
    while (*list) {
        const char *end = strchr(list, ',');
        size_t n = end ? (size_t)(end - list) : strlen(list);
        while (n && (*list == ' ')) list++, n--;
        size_t m = n;
        while (m && list[m - 1] == ' ') m--;
        if (m == origin.len && strncasecmp(list, origin.p, m) == 0) return 1;
        if (!end) break;
        list = end + 1;
    }
    return 0;
}

/* Picks the first offered sub-protocol that we support (client order). */
static int ws__pick_subprotocol(slice_t offered, const char *const *supported, const char **out)
{
    const char *p = offered.p, *end = offered.p + offered.len;
    int any = 0;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *s = p;
        while (s < e && (*s == ' ' || *s == '\t')) s++;
        const char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if (t > s) {
            any = 1;
            for (int i = 0; supported && supported[i]; i++)
                if (strlen(supported[i]) == (size_t)(t - s) && memcmp(supported[i], s, (size_t)(t - s)) == 0) {
                    *out = supported[i];
                    return 0;
                }
        }
        p = comma ? comma + 1 : end;
    }
    return any ? SORI_ENOTFOUND : 0;
}

int ws_handshake_check(const http_request_t *req, const char *const *supported, ws_handshake_t *hs,
                       const char **msg)
{
    memset(hs, 0, sizeof *hs);
    if (req->method.len != 3 || memcmp(req->method.p, "GET", 3) != 0) {
        *msg = "A WebSocket handshake is a GET request.";
        return 400;
    }
    if (req->minor_version < 1) {
        *msg = "A WebSocket handshake needs HTTP/1.1.";
        return 400;
    }
    const slice_t *upgrade = http_header_get(req, "Upgrade");
    const slice_t *connection = http_header_get(req, "Connection");
    if (!upgrade || !http_header_has_token(*upgrade, "websocket") || !connection ||
        !http_header_has_token(*connection, "upgrade")) {
        *msg = "This endpoint speaks WebSocket: send Upgrade: websocket and Connection: Upgrade.";
        return 426;
    }
    const slice_t *version = http_header_get(req, "Sec-WebSocket-Version");
    if (!version || version->len != 2 || memcmp(version->p, "13", 2) != 0) {
        *msg = "Only WebSocket version 13 is supported.";
        return 426;
    }
    const slice_t *key = http_header_get(req, "Sec-WebSocket-Key");
    unsigned char raw[18];
    if (!key || key->len != 24 || base64_decode(key->p, key->len, raw, sizeof raw, 0) != 16) {
        *msg = "Sec-WebSocket-Key must be 16 bytes in base64.";
        return 400;
    }
    const slice_t *origin = http_header_get(req, "Origin");
    if (origin && !ws__origin_allowed(*origin)) {
        *msg = "This origin may not open WebSockets here.";
        return 403;
    }
    const slice_t *proto = http_header_get(req, "Sec-WebSocket-Protocol");
    if (proto && ws__pick_subprotocol(*proto, supported, &hs->subprotocol) != 0) {
        *msg = "None of the offered sub-protocols is supported (sori.v1, v12.stomp, v11.stomp, v10.stomp).";
        return 400;
    }
    const slice_t *ext = http_header_get(req, "Sec-WebSocket-Extensions");
    if (ext && sori_config.ws_deflate) {
        int rc = ws_deflate_negotiate(*ext, &hs->deflate, hs->extensions, sizeof hs->extensions);
        if (rc < 0) {
            *msg = "The Sec-WebSocket-Extensions header cannot be parsed.";
            return 400;
        }
        if (rc == 0) {
            hs->deflate.enabled = 0;
            hs->extensions[0] = 0;
        }
    }
    /* Accept = base64(SHA-1(key || GUID)) */
    unsigned char cat[24 + sizeof WS_GUID], digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    memcpy(cat, key->p, 24);
    memcpy(cat + 24, WS_GUID, sizeof WS_GUID - 1);
    if (!EVP_Digest(cat, 24 + sizeof WS_GUID - 1, digest, &dlen, EVP_sha1(), NULL) || dlen != 20) {
        *msg = "Internal error computing the handshake.";
        return 500;
    }
    base64_encode(digest, 20, hs->accept, 0);
    return 0;
}
