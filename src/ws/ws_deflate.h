/*
 * ws_deflate.h: permessage-deflate (RFC 7692) negotiation and per-message
 * compression with zlib.
 *
 * sori always answers with server_no_context_takeover and
 * client_no_context_takeover (§7.1.1: a server may add the latter even when
 * it was not offered). Every message is then compressed and decompressed on
 * its own, which is what lets one compressed broadcast frame be shared by
 * every recipient and keeps zero bytes of zlib state per connection: the
 * deflater and inflater belong to the worker and are reset per message.
 */
#ifndef SORI_WS_DEFLATE_H
#define SORI_WS_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

typedef struct {
    int enabled;            /* 1 when an offer was accepted */
    int server_window_bits; /* 9..15: the window our compressor may use */
} ws_deflate_params_t;

/*
 * Reads a Sec-WebSocket-Extensions request value (possibly several
 * extensions and several permessage-deflate offers, comma separated, with
 * ';' parameters, values possibly quoted) and accepts the first acceptable
 * permessage-deflate offer (§5, §7.1). An offer is declined when it has an
 * unknown parameter, a duplicate parameter, a bad value (window bits outside
 * 8..15, a value on a no_context_takeover parameter, no value on
 * server_max_window_bits) or server_max_window_bits=8 (zlib cannot honour a
 * 256-byte window). Returns 1 and fills *out and resp (the response value,
 * NUL-terminated, e.g. "permessage-deflate; server_no_context_takeover;
 * client_no_context_takeover; server_max_window_bits=10") when an offer is
 * accepted; 0 when none is acceptable (no extension is used); SORI_EINVAL
 * when the header cannot be parsed at all.
 */
int ws_deflate_negotiate(slice_t header_value, ws_deflate_params_t *out, char *resp,
                         size_t resp_cap);

typedef struct ws_deflater ws_deflater_t;
typedef struct ws_inflater ws_inflater_t;

/* A compressor for window_bits 9..15 and zlib level 1..9; NULL on failure.
 * Owned by the caller (one per worker thread); not thread-safe. */
ws_deflater_t *ws_deflater_new(int level, int window_bits);
void ws_deflater_free(ws_deflater_t *d);
/* Compresses one whole message with a fresh context and appends the result
 * to out without the trailing 00 00 FF FF (§7.2.1). 0 or -SORI_ENOMEM/EIO. */
int ws_deflate_message(ws_deflater_t *d, const uint8_t *in, size_t n, buf_t *out);

/* A decompressor able to read any window up to 15 bits. */
ws_inflater_t *ws_inflater_new(void);
void ws_inflater_free(ws_inflater_t *z);
/* Decompresses one whole message (the 00 00 FF FF tail is added here,
 * §7.2.2) with a fresh context and appends it to out. SORI_E2BIG when the
 * output would exceed max_out bytes (decompression bombs stop there, before
 * the memory is used); SORI_EINVAL when the data is not valid deflate. */
int ws_inflate_message(ws_inflater_t *z, const uint8_t *in, size_t n, size_t max_out,
                       buf_t *out);

#endif
