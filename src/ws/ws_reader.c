/*
 * ws_reader.c: WebSocket message assembly (see ws_reader.h), taken out of
 * ws_conn.c so that the connection only moves bytes and acts on events.
 *
 * Owns, per reader: the message being reassembled (a buf_t, bounded by the
 * caller's max_message, kept between messages up to 64 KiB of capacity) and
 * a 125-byte control payload buffer that exists only while a control frame
 * is read. Invariants: at most one data message is open (msg_op != 0);
 * continuation frames need one and carry no RSV bits; control frames may
 * come between fragments and never touch the message; an uncompressed text
 * message is checked incrementally, so bad UTF-8 fails at its first bad
 * byte, not at the end; a compressed message is checked after inflating
 * (ws_reader_inflate). A message that arrives whole in the caller's buffer,
 * uncompressed, is handed out from there without a copy.
 */
#include "ws/ws_reader.h"
#include "util/err.h"

#include <stdlib.h>
#include <string.h>

static uint8_t ws__rd_empty[1];

static int ws__rd_fail(ws_rd_event_t *ev, unsigned code, const char *reason)
{
    ev->kind = WS_RD_FAIL;
    ev->code = code;
    ev->reason = reason;
    return WS_RD_FAIL;
}

static int ws__rd_event(ws_rd_event_t *ev, int kind, int opcode, uint8_t *data, size_t len, int deflated)
{
    ev->kind = kind;
    ev->opcode = opcode;
    ev->data = data;
    ev->len = len;
    ev->deflated = deflated;
    return kind;
}

int ws_reader_step(ws_reader_t *r, const ws_parse_opts_t *opts, uint64_t max_message, int open,
                   uint8_t *data, size_t len, size_t *posp, ws_rd_event_t *ev)
{
    size_t pos = *posp;
    memset(ev, 0, sizeof *ev);
    while (pos < len) {
        ws_frame_t *f = &r->f;
        if (!r->in_frame) {
            int cc = 1002;
            int hl = ws_frame_parse(data + pos, len - pos, opts, f, &cc);
            if (hl == SORI_EAGAIN) break;
            if (hl < 0) return ws__rd_fail(ev, (unsigned)cc, "protocol error");
            if (f->opcode >= 8) {
                /* control: fits in ctrl (≤ 125 checked by the parser) */
                r->ctrl_len = 0;
            } else if (f->opcode == WS_OP_CONT) {
                if (!r->msg_op) return ws__rd_fail(ev, 1002, "continuation frame without a message");
                if (f->rsv) return ws__rd_fail(ev, 1002, "RSV1 on a continuation frame");
            } else {
                if (r->msg_op) return ws__rd_fail(ev, 1002, "new message before the previous one ended");
                r->msg_op = f->opcode;
                r->msg_deflated = (f->rsv & WS_RSV1) != 0;
                ws_utf8_init(&r->utf8);
            }
            if (f->opcode < 8 && r->msg.len + f->payload_len > max_message)
                return ws__rd_fail(ev, 1009, "message too big");
            pos += (size_t)hl;
            r->in_frame = 1;
            r->f_got = 0;
            /* Fast path: a whole unfragmented uncompressed message is here. */
            if (f->fin && f->opcode < 8 && f->opcode != WS_OP_CONT && !r->msg_deflated &&
                f->payload_len <= len - pos && open) {
                uint8_t *p = data + pos;
                size_t n = (size_t)f->payload_len;
                ws_mask_apply(p, n, f->mask, 0);
                pos += n;
                *posp = pos;
                r->in_frame = 0;
                r->msg_op = 0;
                if (f->opcode == WS_OP_TEXT && !ws_utf8_valid(p, n))
                    return ws__rd_fail(ev, 1007, "invalid UTF-8");
                return ws__rd_event(ev, WS_RD_MESSAGE, f->opcode, p, n, 0);
            }
        }
        /* Payload bytes of the current frame. */
        uint64_t want = f->payload_len - r->f_got;
        size_t n = (size_t)(want < len - pos ? want : len - pos);
        if (n) {
            uint8_t *p = data + pos;
            ws_mask_apply(p, n, f->mask, r->f_got);
            if (f->opcode >= 8) {
                if (!r->ctrl && !(r->ctrl = malloc(125))) return ws__rd_fail(ev, 1011, "out of memory");
                memcpy(r->ctrl + r->ctrl_len, p, n);
                r->ctrl_len = (uint8_t)(r->ctrl_len + n);
            } else if (open) {
                if (r->msg_op == WS_OP_TEXT && !r->msg_deflated && ws_utf8_feed(&r->utf8, p, n))
                    return ws__rd_fail(ev, 1007, "invalid UTF-8");
                if (buf_append(&r->msg, p, n)) return ws__rd_fail(ev, 1011, "out of memory");
            }
            r->f_got += n;
            pos += n;
        }
        if (r->f_got < f->payload_len) break; /* need more */
        r->in_frame = 0;
        if (f->opcode >= 8) {
            *posp = pos;
            return ws__rd_event(ev, WS_RD_CONTROL, f->opcode, r->ctrl ? r->ctrl : ws__rd_empty, r->ctrl_len, 0);
        }
        if (!f->fin) continue;
        int op = r->msg_op;
        r->msg_op = 0;
        if (!open) {
            r->msg.len = 0;
            continue;
        }
        if (op == WS_OP_TEXT && !r->msg_deflated && ws_utf8_finish(&r->utf8))
            return ws__rd_fail(ev, 1007, "invalid UTF-8");
        *posp = pos;
        return ws__rd_event(ev, WS_RD_MESSAGE, op, (uint8_t *)r->msg.data, r->msg.len, r->msg_deflated);
    }
    *posp = pos;
    return WS_RD_NEED;
}

void ws_reader_release(ws_reader_t *r)
{
    free(r->ctrl);
    r->ctrl = NULL;
    r->ctrl_len = 0;
    if (r->msg_op) return; /* a control frame between fragments: keep the message */
    if (r->msg.cap > 65536)
        buf_free(&r->msg);
    else
        r->msg.len = 0;
}

int ws_reader_inflate(ws_inflater_t *z, buf_t *out, uint64_t max_message, ws_rd_event_t *ev)
{
    out->len = 0;
    int rc = ws_inflate_message(z, ev->data, ev->len, (size_t)max_message, out);
    if (rc == SORI_E2BIG) return ws__rd_fail(ev, 1009, "message too big");
    if (rc < 0) return ws__rd_fail(ev, 1007, "invalid compressed data");
    if (ev->opcode == WS_OP_TEXT && !ws_utf8_valid((const uint8_t *)out->data, out->len))
        return ws__rd_fail(ev, 1007, "invalid UTF-8");
    ev->data = (uint8_t *)out->data;
    ev->len = out->len;
    ev->deflated = 0;
    return 0;
}

void ws_reader_free(ws_reader_t *r)
{
    buf_free(&r->msg);
    free(r->ctrl);
    r->ctrl = NULL;
}
