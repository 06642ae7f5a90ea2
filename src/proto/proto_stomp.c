/*
 * proto_stomp.c: the STOMP 1.0-1.2 front end (PROTOCOL.md §6) on the same
 * rooms, seqs and history as the JSON protocol: frames in, chat_* calls,
 * and a chat sink that writes MESSAGE, RECEIPT and ERROR frames.
 *
 * Owns stomp_session_t (one per connection, freed in on_close with its
 * subscriptions; its heart-beat timer is freed by libuv's close callback).
 * Holds no chat logic: destinations map to room ids, SUBSCRIBE is join,
 * SEND is send or dm, and every reply of chat comes back through the sink
 * tagged with a ref string "<kind><receipt-id>". Any chat error, like any
 * bad frame, is an ERROR frame and then the close (STOMP 1.2 §ERROR).
 *
 * Invariants: frames are handled in order; a frame split across WebSocket
 * messages waits in `in`, bounded by the header and body limits; RECEIPTs
 * follow their command's completion (after the store commit with sync
 * durability) and a DISCONNECT receipt follows every earlier one. A message
 * is encoded once for every STOMP recipient (the cache slot 1 holds its
 * headers after `subscription` and its body); only "MESSAGE", destination,
 * subscription and ack are written per recipient (precomputed per
 * subscription). Numbers: 64 headers, 16 KiB of headers, body up to
 * ws-max-message; a session is ~180 bytes plus ~100 per subscription.
 */
#include "proto/proto_internal.h"
#include "proto/stomp_frame.h"
#include "auth/auth.h"
#include "chat/chat.h"
#include "util/clock.h"
#include "util/config.h"
#include "util/err.h"
#include "util/log.h"
#include "ws/ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define STOMP_HEADER_BYTES (16 * 1024)
#define STOMP_SUB_EXTRA 8 /* subscriptions beyond max-rooms-per-conn (user queue, duplicates) */
#define STOMP_SERVER "sori/1"

enum { SUB_ROOM = 0, SUB_USER = 1 };

typedef struct stomp_sub {
    struct stomp_sub *next;
    uint8_t kind;       /* SUB_ROOM or SUB_USER */
    uint8_t ack_client; /* ack: client or client-individual */
    uint8_t events;     /* events:all — typing, receipts, members, presence too */
    uint8_t joined;     /* this subscription called chat_join (the room's first) */
    char room[65];
    char *id;           /* the client's subscription id */
    char *prefix;       /* "MESSAGE\ndestination:...\nsubscription:...\n" */
    size_t prefix_len;
} stomp_sub_t;

typedef struct {
    ws_conn_t *ws;
    chat_session_t *chat;
    uv_timer_t *hb;
    stomp_sub_t *subs;
    uint32_t nsubs;
    buf_t in;              /* the start of a frame split across messages */
    proto_bucket_t rate;
    uint64_t last_tx;      /* worker ms of our last frame */
    uint32_t send_ms;      /* we send a heart-beat after this much silence (0: never) */
    uint32_t recv_ms;      /* the client sends at least this often (0: not expected) */
    uint32_t pending;      /* commands whose reply has not come */
    uint64_t events_sent;  /* counter for event message-ids */
    int version;           /* 10, 11, 12 once connected */
    uint8_t connected, done;
    char *disconnect_receipt;
    char user[AUTH_USER_MAX + 1]; /* the handshake's identity, or "" */
    char session[20];
} stomp_session_t;

static stomp_limits_t stomp__limits(void)
{
    return (stomp_limits_t){STOMP_HEADERS_MAX, STOMP_HEADER_BYTES, sori_config.ws_max_message};
}

/* ---- sending frames ---- */

static void stomp__send(stomp_session_t *ss, buf_t *b)
{
    ws_send(ss->ws, WS_OP_TEXT, b->data, b->len);
    ss->last_tx = uv_now(&ss->ws->c->w->loop);
}

static int stomp__hdr(buf_t *b, stomp_session_t *ss, const char *name, const char *value)
{
    return stomp_header_append(b, ss->version ? ss->version : STOMP_V12, name, value, strlen(value));
}

/* Appends content-type, content-length, the blank line, body and NUL. */
static int stomp__body(buf_t *b, const char *type, const char *body, size_t len)
{
    int rc = buf_appendf(b, "content-type:%s\ncontent-length:%zu\n\n", type, len);
    rc |= buf_append(b, body, len) | buf_append(b, "", 1);
    return rc;
}

/* An ERROR frame, then the closing handshake (close_code, reason); the
 * session takes no more frames and the sink no more events. */
static void stomp__fatal_reason(stomp_session_t *ss, const char *code, const char *message, const char *receipt,
                                unsigned close_code, const char *reason)
{
    if (ss->done) return;
    ss->done = 1;
    buf_t b = {0};
    int rc = buf_append(&b, "ERROR\n", 6) | stomp__hdr(&b, ss, "message", message) | stomp__hdr(&b, ss, "code", code);
    if (receipt) rc |= stomp__hdr(&b, ss, "receipt-id", receipt);
    if (!ss->connected) rc |= stomp__hdr(&b, ss, "version", "1.0,1.1,1.2");
    rc |= stomp__body(&b, "text/plain", message, strlen(message));
    if (!rc) stomp__send(ss, &b);
    buf_free(&b);
    LOG_DEBUG("stomp", "conn %llx: ERROR %s: %s", (unsigned long long)ss->ws->c->id, code, message);
    ws_close(ss->ws, close_code, reason);
}

/* As stomp__fatal_reason, with the code as the close reason. */
static void stomp__fatal(stomp_session_t *ss, const char *code, const char *message, const char *receipt,
                         unsigned close_code)
{
    stomp__fatal_reason(ss, code, message, receipt, close_code, code);
}

static void stomp__receipt(stomp_session_t *ss, const char *receipt, const char *extra)
{
    buf_t b = {0};
    int rc = buf_append(&b, "RECEIPT\n", 8) | stomp__hdr(&b, ss, "receipt-id", receipt);
    if (extra) rc |= buf_append(&b, extra, strlen(extra));
    rc |= buf_append(&b, "\n", 2); /* blank line and NUL */
    if (!rc) stomp__send(ss, &b);
    buf_free(&b);
}

/* A command completed: the DISCONNECT receipt waits for the last one. */
static void stomp__completed(stomp_session_t *ss)
{
    if (ss->pending) ss->pending--;
    if (ss->pending || !ss->disconnect_receipt || ss->done) return;
    stomp__receipt(ss, ss->disconnect_receipt, NULL);
    ss->done = 1;
    ws_close(ss->ws, 1000, "disconnect");
}

/* ---- refs: "<kind><receipt id>" ---- */

enum { REF_SEND = 's', REF_JOIN = 'j', REF_LEAVE = 'l' };

static json_t *stomp__ref(stomp_session_t *ss, char kind, const slice_t *receipt)
{
    char buf[258]; /* kind + a receipt id of at most 255 bytes (stomp__frame checked) + NUL */
    size_t n = receipt ? receipt->len : 0;
    buf[0] = kind;
    if (n) memcpy(buf + 1, receipt->p, n);
    buf[n + 1] = 0;
    json_t *ref = json_stringn(buf, n + 1);
    if (ref) ss->pending++;
    return ref;
}

static const char *stomp__ref_receipt(json_t *ref)
{
    const char *s = json_string_value(ref);
    return s && s[0] && s[1] ? s + 1 : NULL;
}

/* ---- the chat sink ---- */

static void stomp__destroy_shared(void *v) { ws_shared_unref(v); }

/* The part of a MESSAGE frame every STOMP recipient shares: the headers
 * after subscription/ack (none needs escaping: digits and user names),
 * the blank line, the JSON body and the NUL. Cached on the message. */
static ws_shared_t *stomp__shared(chat_msg_t *m)
{
    ws_shared_t *sh = chat_msg_cache_get(m, 1);
    if (sh) return sh;
    size_t len;
    const char *json = chat_msg_json(m, &len);
    buf_t b = {0};
    int rc = 0;
    if (!chat_msg_is_event(m))
        rc |= buf_appendf(&b, "message-id:%llu\nseq:%lld\nfrom:%s\ntimestamp:%lld\n",
                          (unsigned long long)chat_msg_id(m), (long long)chat_msg_seq(m), chat_msg_from(m),
                          (long long)chat_msg_ts(m));
    rc |= stomp__body(&b, "application/json", json, len);
    if (!rc) sh = ws_shared_new(WS_OP_TEXT, b.data, b.len);
    buf_free(&b);
    return sh ? chat_msg_cache_set(m, 1, sh) : NULL;
}

static void stomp__deliver(stomp_session_t *ss, stomp_sub_t *sub, chat_msg_t *m)
{
    ws_shared_t *sh = stomp__shared(m);
    if (!sh) return;
    char pre[1024];
    size_t n = sub->prefix_len;
    if (n > sizeof pre - 64) return; /* ids are bounded when subscribing */
    memcpy(pre, sub->prefix, n);
    if (chat_msg_is_event(m))
        n += (size_t)snprintf(pre + n, sizeof pre - n, "message-id:%s-e%llu\n", ss->session,
                              (unsigned long long)++ss->events_sent);
    else if (sub->ack_client)
        n += (size_t)snprintf(pre + n, sizeof pre - n, "ack:%llu\n", (unsigned long long)chat_msg_id(m));
    ws_send_shared_prefixed(ss->ws, pre, n, sh);
    ss->last_tx = uv_now(&ss->ws->c->w->loop);
}

/* Events that are not messages: only for subscriptions that asked (events:all),
 * except member events about this user, which the user queue always gets. */
static int stomp__event_wanted(stomp_session_t *ss, const stomp_sub_t *sub, chat_msg_t *m)
{
    if (sub->events) return 1;
    if (sub->kind != SUB_USER) return 0;
    size_t len;
    const char *json = chat_msg_json(m, &len);
    if (len < 16 || memcmp(json, "{\"type\":\"member\"", 16)) return 0;
    char needle[AUTH_USER_MAX + 12];
    int k = snprintf(needle, sizeof needle, "\"user\":\"%s\"", chat_session_user(ss->chat));
    return k > 0 && memmem(json, len, needle, (size_t)k) != NULL;
}

static void stomp__sink_message(chat_session_t *cs, chat_msg_t *m)
{
    stomp_session_t *ss = chat_session_data(cs);
    if (ss->done) return;
    const char *room = chat_msg_room(m);
    int dm = room && !strncmp(room, "dm:", 3);
    int ev = chat_msg_is_event(m);
    for (stomp_sub_t *sub = ss->subs; sub; sub = sub->next) {
        int match = (room && sub->kind == SUB_ROOM && !strcmp(sub->room, room)) ||
                    ((dm || (!room && ev)) && sub->kind == SUB_USER);
        if (match && (!ev || stomp__event_wanted(ss, sub, m))) stomp__deliver(ss, sub, m);
    }
}

/* Replies: a RECEIPT when one was asked for (with the ack's message-id and
 * seq as extension headers). Events that are not chat_msg_t (none today)
 * are dropped. */
static void stomp__reply(stomp_session_t *ss, json_t *ref, json_t *obj)
{
    if (!ref || ss->done) return;
    const char *receipt = stomp__ref_receipt(ref);
    if (receipt) {
        char extra[96] = "";
        const char *id = json_string_value(json_object_get(obj, "id"));
        json_t *seq = json_object_get(obj, "seq");
        if (id && json_is_integer(seq))
            snprintf(extra, sizeof extra, "message-id:%s\nseq:%lld\n", id, (long long)json_integer_value(seq));
        stomp__receipt(ss, receipt, extra);
    }
    stomp__completed(ss);
}

static void stomp__sink_send(chat_session_t *cs, json_t *ref, json_t *obj)
{
    stomp__reply(chat_session_data(cs), ref, obj);
}

static void stomp__sink_send_text(chat_session_t *cs, json_t *ref, const char *json, size_t len)
{
    stomp_session_t *ss = chat_session_data(cs);
    if (!ref || ss->done) return;
    if (!stomp__ref_receipt(ref)) { /* no receipt asked: no need to read the reply */
        stomp__completed(ss);
        return;
    }
    json_t *obj = json_loadb(json, len, 0, NULL);
    stomp__reply(ss, ref, obj);
    json_decref(obj);
}

static void stomp__sink_error(chat_session_t *cs, json_t *ref, const char *code, const char *message)
{
    stomp_session_t *ss = chat_session_data(cs);
    if (ref && ss->pending) ss->pending--;
    stomp__fatal(ss, code, message, ref ? stomp__ref_receipt(ref) : NULL, 1008);
}

static uint64_t stomp__sink_unsent(chat_session_t *cs)
{
    return ws_unsent(((stomp_session_t *)chat_session_data(cs))->ws);
}

static void stomp__sink_notify_drain(chat_session_t *cs)
{
    ws_notify_drain(((stomp_session_t *)chat_session_data(cs))->ws);
}

static const chat_sink_t stomp__sink = {
    .message = stomp__sink_message,
    .send = stomp__sink_send,
    .send_text = stomp__sink_send_text,
    .error = stomp__sink_error,
    .unsent = stomp__sink_unsent,
    .notify_drain = stomp__sink_notify_drain,
};

/* ---- heart-beats ---- */

static void stomp__hb_tick(uv_timer_t *t)
{
    stomp_session_t *ss = t->data;
    if (!ss || ss->done) return;
    uint64_t now = uv_now(t->loop);
    if (ss->recv_ms && now - ss->ws->last_seen > 2ull * ss->recv_ms) {
        stomp__fatal(ss, "heartbeat", "No heart-beat from the client in twice the negotiated interval.", NULL,
                     1001);
        return;
    }
    if (ss->send_ms && now - ss->last_tx >= ss->send_ms) {
        ws_send(ss->ws, WS_OP_TEXT, "\n", 1);
        ss->last_tx = now;
    }
}

static void stomp__hb_free(uv_handle_t *h) { free(h); }

/* "cx,cy" from CONNECT; 0 and both set, or -1. */
static int stomp__heartbeat_header(const slice_t *v, uint64_t *cx, uint64_t *cy)
{
    *cx = *cy = 0;
    if (!v) return 0;
    char tmp[48];
    if (v->len >= sizeof tmp) return -1;
    memcpy(tmp, v->p, v->len);
    tmp[v->len] = 0;
    unsigned long long a, b;
    char end;
    if (sscanf(tmp, " %llu , %llu %c", &a, &b, &end) != 2 || a > 86400000ull || b > 86400000ull) return -1;
    *cx = a;
    *cy = b;
    return 0;
}

/* ---- frames ---- */

static int stomp__is(const slice_t *v, const char *s)
{
    return v && v->len == strlen(s) && !memcmp(v->p, s, v->len);
}

/* The highest of 1.0-1.2 in accept-version (absent: 1.0), or 0. */
static int stomp__pick_version(const slice_t *v)
{
    if (!v) return STOMP_V10;
    int best = 0;
    for (size_t i = 0; i < v->len;) {
        size_t j = i;
        while (j < v->len && v->p[j] != ',') j++;
        slice_t t = {v->p + i, j - i};
        while (t.len && t.p[0] == ' ') t.p++, t.len--;
        while (t.len && t.p[t.len - 1] == ' ') t.len--;
        int ver = stomp__is(&t, "1.2") ? STOMP_V12 : stomp__is(&t, "1.1") ? STOMP_V11 : stomp__is(&t, "1.0") ? STOMP_V10 : 0;
        if (ver > best) best = ver;
        i = j + 1;
    }
    return best;
}

/* Copies a header into a NUL-terminated buffer: 0, or -1 if absent, too
 * long or holding a NUL. */
static int stomp__copy(const slice_t *v, char *out, size_t cap)
{
    if (!v || v->len >= cap || memchr(v->p, 0, v->len)) return -1;
    memcpy(out, v->p, v->len);
    out[v->len] = 0;
    return 0;
}

static void stomp__connect(stomp_session_t *ss, stomp_frame_t *f)
{
    int version = stomp__pick_version(stomp_header_get(f, "accept-version"));
    if (!version) {
        stomp__fatal(ss, "bad_request", "Supported protocol versions are 1.0, 1.1 and 1.2.", NULL, 1002);
        return;
    }
    ss->version = version;
    uint64_t cx, cy;
    if (stomp__heartbeat_header(stomp_header_get(f, "heart-beat"), &cx, &cy) < 0) {
        stomp__fatal(ss, "bad_request", "heart-beat must be two numbers of milliseconds: \"cx,cy\".", NULL, 1002);
        return;
    }
    /* Who: Authorization: Bearer, passcode (a token), the handshake's
     * identity, then login as a guest. */
    char user[AUTH_USER_MAX + 1] = "", token[4200];
    const slice_t *authz = stomp_header_get(f, "Authorization");
    if (!authz) authz = stomp_header_get(f, "authorization");
    const slice_t *passcode = stomp_header_get(f, "passcode");
    const slice_t *login = stomp_header_get(f, "login");
    int64_t now = clock_now_ms() / 1000;
    if (authz) {
        if (authz->len <= 7 || strncasecmp(authz->p, "Bearer ", 7) ||
            stomp__copy(&(slice_t){authz->p + 7, authz->len - 7}, token, sizeof token) < 0 ||
            auth_token_verify(sori_config.secret, token, strlen(token), now, user, NULL) != 0) {
            stomp__fatal(ss, "unauthorized", "The Authorization token is not valid or has expired.", NULL, 1008);
            return;
        }
    } else if (passcode && stomp__copy(passcode, token, sizeof token) == 0 &&
               auth_token_verify(sori_config.secret, token, strlen(token), now, user, NULL) == 0) {
        /* the passcode is a token */
    } else if (ss->user[0]) {
        memcpy(user, ss->user, sizeof user);
    } else if (sori_config.allow_guests && login && login->len && login->len <= AUTH_USER_MAX &&
               auth_valid_user(login->p, login->len)) {
        memcpy(user, login->p, login->len);
        user[login->len] = 0;
    } else {
        stomp__fatal(ss, "unauthorized",
                     sori_config.allow_guests ? "Connect with a token (passcode or Authorization: Bearer) or a login name."
                                              : "Connect with a token (passcode or Authorization: Bearer).",
                     NULL, 1008);
        return;
    }
    char lim[160];
    if (chat_user_conns_check(user, lim, sizeof lim)) {
        stomp__fatal(ss, "rate_limited", lim, NULL, 1008);
        return;
    }
    uint32_t ours = (uint32_t)sori_config.stomp_heartbeat_ms;
    ss->send_ms = cy ? (uint32_t)(cy > ours ? cy : ours) : 0;
    ss->recv_ms = cx ? (uint32_t)(cx > ours ? cx : ours) : 0;
    ss->chat = chat_session_open(user, ss->ws->c->w->index, CHAT_SESSION_LIVE, &stomp__sink, ss);
    if (!ss->chat) {
        stomp__fatal(ss, "internal", "Out of memory.", NULL, 1011);
        return;
    }
    ss->connected = 1;
    buf_t b = {0};
    char hb[48];
    snprintf(hb, sizeof hb, "%u,%u", ours, ours);
    int rc = buf_append(&b, "CONNECTED\n", 10) |
             buf_appendf(&b, "version:%s\n", version == STOMP_V12 ? "1.2" : version == STOMP_V11 ? "1.1" : "1.0");
    if (version >= STOMP_V11) rc |= buf_appendf(&b, "heart-beat:%s\n", hb);
    rc |= buf_appendf(&b, "server:%s\nsession:%s\nuser-name:%s\n\n", STOMP_SERVER, ss->session, user);
    rc |= buf_append(&b, "", 1);
    if (!rc) stomp__send(ss, &b);
    buf_free(&b);
    if (version >= STOMP_V11 && (ss->send_ms || ss->recv_ms)) {
        uint32_t lo = ss->send_ms && ss->recv_ms ? (ss->send_ms < ss->recv_ms ? ss->send_ms : ss->recv_ms)
                                                 : (ss->send_ms ? ss->send_ms : ss->recv_ms);
        uint32_t period = lo / 4 > 50 ? lo / 4 : 50;
        ss->hb = malloc(sizeof *ss->hb);
        if (ss->hb && uv_timer_init(&ss->ws->c->w->loop, ss->hb) == 0) {
            ss->hb->data = ss;
            uv_timer_start(ss->hb, stomp__hb_tick, period, period);
        } else {
            free(ss->hb);
            ss->hb = NULL;
        }
    }
}

/* "/topic/room.<room>", "/app/room.<room>" -> room; 0 or -1. */
static int stomp__room_dest(const slice_t *d, const char *prefix, char *room)
{
    size_t pl = strlen(prefix);
    if (!d || d->len <= pl || memcmp(d->p, prefix, pl) || d->len - pl > 64) return -1;
    memcpy(room, d->p + pl, d->len - pl);
    room[d->len - pl] = 0;
    return chat_valid_room(room) ? 0 : -1;
}

static stomp_sub_t *stomp__sub_find(stomp_session_t *ss, const slice_t *id, stomp_sub_t ***link)
{
    for (stomp_sub_t **p = &ss->subs; *p; p = &(*p)->next)
        if (strlen((*p)->id) == id->len && !memcmp((*p)->id, id->p, id->len)) {
            if (link) *link = p;
            return *p;
        }
    return NULL;
}

static void stomp__sub_free(stomp_sub_t *sub)
{
    free(sub->id);
    free(sub->prefix);
    free(sub);
}

static void stomp__subscribe(stomp_session_t *ss, stomp_frame_t *f)
{
    const slice_t *dest = stomp_header_get(f, "destination");
    const slice_t *id = stomp_header_get(f, "id");
    const slice_t *receipt = stomp_header_get(f, "receipt");
    const char *rcpt = NULL;
    char rbuf[256];
    if (receipt && stomp__copy(receipt, rbuf, sizeof rbuf) == 0) rcpt = rbuf;
    if (!id && ss->version == STOMP_V10) id = dest; /* 1.0: id is optional */
    if (!dest || !id || id->len == 0 || id->len > 200 || memchr(id->p, 0, id->len)) {
        stomp__fatal(ss, "bad_request", "SUBSCRIBE needs destination and an id of at most 200 bytes.", rcpt, 1002);
        return;
    }
    if (stomp__sub_find(ss, id, NULL)) {
        stomp__fatal(ss, "conflict", "A subscription with this id exists on this connection.", rcpt, 1008);
        return;
    }
    if (ss->nsubs >= (uint32_t)CONFIG_GET(max_rooms_per_conn) + STOMP_SUB_EXTRA) {
        stomp__fatal(ss, "too_large", "Too many subscriptions on this connection.", rcpt, 1008);
        return;
    }
    stomp_sub_t *sub = calloc(1, sizeof *sub);
    if (!sub) {
        stomp__fatal(ss, "internal", "Out of memory.", rcpt, 1011);
        return;
    }
    if (stomp__is(dest, "/user/queue/messages")) {
        sub->kind = SUB_USER;
    } else if (stomp__room_dest(dest, "/topic/room.", sub->room) == 0) {
        sub->kind = SUB_ROOM;
    } else {
        free(sub);
        stomp__fatal(ss, "not_found",
                     "Unknown destination: subscribe to /topic/room.<room> or /user/queue/messages.", rcpt, 1008);
        return;
    }
    const slice_t *ack = stomp_header_get(f, "ack");
    sub->ack_client = stomp__is(ack, "client") || stomp__is(ack, "client-individual");
    if (ack && !sub->ack_client && !stomp__is(ack, "auto")) {
        free(sub);
        stomp__fatal(ss, "bad_request", "ack is auto, client or client-individual.", rcpt, 1002);
        return;
    }
    sub->events = stomp__is(stomp_header_get(f, "events"), "all");
    int64_t since = -1;
    const slice_t *sv = stomp_header_get(f, "since");
    if (sv) {
        char tmp[24];
        char *end;
        if (stomp__copy(sv, tmp, sizeof tmp) < 0 || !tmp[0] || (since = strtoll(tmp, &end, 10)) < 0 || *end) {
            free(sub);
            stomp__fatal(ss, "bad_request", "since is a seq: a whole number from 0.", rcpt, 1002);
            return;
        }
    }
    sub->id = strndup(id->p, id->len);
    buf_t b = {0};
    int rc = buf_append(&b, "MESSAGE\n", 8) |
             stomp_header_append(&b, ss->version, "destination", dest->p, dest->len) |
             stomp_header_append(&b, ss->version, "subscription", id->p, id->len);
    if (rc || !sub->id) {
        buf_free(&b);
        stomp__sub_free(sub);
        stomp__fatal(ss, "internal", "Out of memory.", rcpt, 1011);
        return;
    }
    sub->prefix = b.data;
    sub->prefix_len = b.len;
    /* joining a room the connection already joined would re-run its
     * catch-up for the other subscription: the second one is live only */
    int first = 1;
    if (sub->kind == SUB_ROOM)
        for (stomp_sub_t *o = ss->subs; o; o = o->next) first &= !(o->kind == SUB_ROOM && !strcmp(o->room, sub->room));
    sub->next = ss->subs;
    ss->subs = sub;
    ss->nsubs++;
    if (sub->kind == SUB_ROOM && first) {
        sub->joined = 1;
        json_t *ref = stomp__ref(ss, REF_JOIN, receipt);
        chat_join(ss->chat, ref, sub->room, since);
        json_decref(ref);
    } else if (rcpt) {
        stomp__receipt(ss, rcpt, NULL);
    }
}

static void stomp__unsubscribe(stomp_session_t *ss, stomp_frame_t *f)
{
    const slice_t *id = stomp_header_get(f, "id");
    const slice_t *receipt = stomp_header_get(f, "receipt");
    if (!id && ss->version == STOMP_V10) id = stomp_header_get(f, "destination");
    char rbuf[256];
    const char *rcpt = receipt && stomp__copy(receipt, rbuf, sizeof rbuf) == 0 ? rbuf : NULL;
    stomp_sub_t **link, *sub = id ? stomp__sub_find(ss, id, &link) : NULL;
    if (!sub) {
        stomp__fatal(ss, "not_found", "No subscription with this id.", rcpt, 1008);
        return;
    }
    *link = sub->next;
    ss->nsubs--;
    int last = sub->kind == SUB_ROOM;
    for (stomp_sub_t *o = ss->subs; o && last; o = o->next) last = !(o->kind == SUB_ROOM && !strcmp(o->room, sub->room));
    if (last) {
        json_t *ref = stomp__ref(ss, REF_LEAVE, receipt);
        chat_leave(ss->chat, ref, sub->room);
        json_decref(ref);
    } else {
        /* another subscription keeps the room joined; hand it the join */
        for (stomp_sub_t *o = ss->subs; o && sub->joined; o = o->next)
            if (o->kind == SUB_ROOM && !strcmp(o->room, sub->room)) o->joined = 1, sub->joined = 0;
        if (rcpt) stomp__receipt(ss, rcpt, NULL);
    }
    stomp__sub_free(sub);
}

/* SEND's text and cid: the body as text, or {"text", "cid", "attachments"}
 * with content-type application/json. */
static void stomp__send_frame(stomp_session_t *ss, stomp_frame_t *f)
{
    const slice_t *dest = stomp_header_get(f, "destination");
    const slice_t *receipt = stomp_header_get(f, "receipt");
    char rbuf[256];
    const char *rcpt = receipt && stomp__copy(receipt, rbuf, sizeof rbuf) == 0 ? rbuf : NULL;
    char target[65];
    int dm = 0;
    if (stomp__room_dest(dest, "/topic/room.", target) == 0 || stomp__room_dest(dest, "/app/room.", target) == 0) {
        dm = 0;
    } else if (dest && dest->len > 8 && !memcmp(dest->p, "/app/dm.", 8) && dest->len - 8 <= AUTH_USER_MAX &&
               auth_valid_user(dest->p + 8, dest->len - 8)) {
        dm = 1;
        memcpy(target, dest->p + 8, dest->len - 8);
        target[dest->len - 8] = 0;
    } else {
        stomp__fatal(ss, "not_found",
                     "Unknown destination: send to /topic/room.<room>, /app/room.<room> or /app/dm.<user>.", rcpt,
                     1008);
        return;
    }
    const slice_t *ct = stomp_header_get(f, "content-type");
    int is_json = ct && ct->len >= 16 && !strncasecmp(ct->p, "application/json", 16);
    const char *text = f->body, *cid = NULL;
    size_t len = f->body_len;
    const char *ids[PROTO_ATTACH_MAX];
    size_t nids = 0;
    char cidbuf[80];
    json_t *doc = NULL;
    if (is_json) {
        json_error_t jerr;
        doc = json_loadb(f->body, f->body_len, JSON_REJECT_DUPLICATES, &jerr);
        json_t *t = json_object_get(doc, "text");
        json_t *c = json_object_get(doc, "cid");
        json_t *att = json_object_get(doc, "attachments");
        if (!json_is_object(doc) || !json_is_string(t) || (c && !json_is_string(c) && !json_is_null(c)) ||
            (dm && att && !json_is_null(att)) || (!dm && proto_attachments(att, ids, &nids))) {
            json_decref(doc);
            stomp__fatal(ss, "bad_request",
                         "A JSON body is {\"text\": string, \"cid\"?: string, \"attachments\"?: [{\"id\": upload id}]}"
                         " (no attachments in direct messages).",
                         rcpt, 1008);
            return;
        }
        text = json_string_value(t);
        len = json_string_length(t);
        cid = json_string_value(c);
    } else {
        if (memchr(f->body, 0, f->body_len) || !ws_utf8_valid((const uint8_t *)f->body, f->body_len)) {
            stomp__fatal(ss, "bad_request", "A text body must be UTF-8 without NUL bytes.", rcpt, 1008);
            return;
        }
        if (stomp_header_get(f, "cid")) {
            if (stomp__copy(stomp_header_get(f, "cid"), cidbuf, sizeof cidbuf) < 0) {
                stomp__fatal(ss, "bad_request", "cid is 1-64 characters.", rcpt, 1008);
                return;
            }
            cid = cidbuf;
        }
    }
    if (memchr(text, 0, len)) {
        json_decref(doc);
        stomp__fatal(ss, "bad_request", "A text has no NUL characters.", rcpt, 1008);
        return;
    }
    json_t *ref = stomp__ref(ss, REF_SEND, receipt);
    if (dm)
        chat_dm(ss->chat, ref, target, text, len, cid);
    else
        chat_send(ss->chat, ref, target, text, len, cid, ids, nids);
    json_decref(ref);
    json_decref(doc);
}

static void stomp__frame(stomp_session_t *ss, stomp_frame_t *f)
{
    const slice_t *receipt = stomp_header_get(f, "receipt");
    char rbuf[256];
    const char *rcpt = receipt && stomp__copy(receipt, rbuf, sizeof rbuf) == 0 ? rbuf : NULL;
    if (receipt && !rcpt) {
        /* a receipt we could not echo whole would never come: say so */
        stomp__fatal(ss, "bad_request", "A receipt id is at most 255 bytes.", NULL, 1002);
        return;
    }
    if (!ss->connected) {
        if (f->command == STOMP_CONNECT || f->command == STOMP_STOMP)
            stomp__connect(ss, f);
        else
            stomp__fatal(ss, "unauthorized", "Send CONNECT first.", rcpt, 1008);
        return;
    }
    if (!proto_bucket_take(&ss->rate)) {
        stomp__fatal(ss, "rate_limited", "Too many frames; slow down.", rcpt, 1008);
        return;
    }
    switch (f->command) {
    case STOMP_CONNECT:
    case STOMP_STOMP: stomp__fatal(ss, "bad_request", "Already connected.", rcpt, 1002); break;
    case STOMP_SEND: stomp__send_frame(ss, f); break;
    case STOMP_SUBSCRIBE: stomp__subscribe(ss, f); break;
    case STOMP_UNSUBSCRIBE: stomp__unsubscribe(ss, f); break;
    case STOMP_ACK:
    case STOMP_NACK:
        /* Accepted for client and client-individual subscriptions: messages
         * are not redelivered (history and `since` are how a client
         * catches up), so there is nothing to settle. */
        if (!stomp_header_get(f, ss->version == STOMP_V12 ? "id" : "message-id")) {
            stomp__fatal(ss, "bad_request", ss->version == STOMP_V12 ? "ACK and NACK need id." : "ACK and NACK need message-id.",
                         rcpt, 1002);
            return;
        }
        if (rcpt) stomp__receipt(ss, rcpt, NULL);
        break;
    case STOMP_BEGIN:
    case STOMP_COMMIT:
    case STOMP_ABORT:
        stomp__fatal(ss, "bad_request", "Transactions are not supported; send without BEGIN.", rcpt, 1002);
        break;
    case STOMP_DISCONNECT:
        if (!rcpt) {
            ss->done = 1;
            ws_close(ss->ws, 1000, "disconnect");
        } else if (!(ss->disconnect_receipt = strdup(rcpt))) {
            stomp__fatal(ss, "internal", "Out of memory.", NULL, 1011);
        } else {
            ss->pending++;
            stomp__completed(ss);
        }
        break;
    }
}

/* ---- the WebSocket application ---- */

/* Parses and handles the frames in p[0..n); returns the bytes of an
 * incomplete frame left at the end (still to be kept), or -1 if the session
 * ended. */
static long stomp__feed(stomp_session_t *ss, char *p, size_t n)
{
    stomp_limits_t lim = stomp__limits();
    size_t off = 0;
    while (off < n && !ss->done && !ss->disconnect_receipt) {
        off += stomp_skip_eols(p + off, n - off);
        if (off == n) break;
        stomp_frame_t f;
        int rc = stomp_frame_parse(p + off, n - off, ss->connected ? ss->version : STOMP_V10, &lim, &f);
        if (rc == SORI_EAGAIN) return (long)(n - off);
        if (rc < 0) {
            stomp__fatal(ss, rc == SORI_E2BIG ? "too_large" : "bad_request", f.error, NULL,
                         rc == SORI_E2BIG ? 1009 : 1002);
            return -1;
        }
        stomp__frame(ss, &f);
        off += (size_t)rc;
    }
    return ss->done ? -1 : 0;
}

static void stomp__on_message(ws_conn_t *ws, int opcode, char *data, size_t len)
{
    stomp_session_t *ss = ws->app_data;
    (void)opcode; /* STOMP frames come in text or binary messages alike */
    if (ss->done || ss->disconnect_receipt) return;
    if (!ss->in.len) {
        long left = stomp__feed(ss, data, len);
        if (left > 0 && buf_append(&ss->in, data + len - left, (size_t)left))
            stomp__fatal(ss, "internal", "Out of memory.", NULL, 1011);
        return;
    }
    if (buf_append(&ss->in, data, len)) {
        stomp__fatal(ss, "internal", "Out of memory.", NULL, 1011);
        return;
    }
    long left = stomp__feed(ss, ss->in.data, ss->in.len);
    if (left < 0) buf_free(&ss->in);
    else if (left == 0) buf_free(&ss->in);
    else buf_consume(&ss->in, ss->in.len - (size_t)left);
}

static void stomp__on_close(ws_conn_t *ws)
{
    stomp_session_t *ss = ws->app_data;
    if (ss->chat) chat_session_close(ss->chat);
    if (ss->hb) {
        ss->hb->data = NULL;
        uv_timer_stop(ss->hb);
        uv_close((uv_handle_t *)ss->hb, stomp__hb_free);
    }
    while (ss->subs) {
        stomp_sub_t *s = ss->subs;
        ss->subs = s->next;
        stomp__sub_free(s);
    }
    buf_free(&ss->in);
    free(ss->disconnect_receipt);
    free(ss);
    ws->app_data = NULL;
}

static void stomp__on_drain(ws_conn_t *ws)
{
    stomp_session_t *ss = ws->app_data;
    if (ss->chat) chat_session_drained(ss->chat);
}

/* SIGTERM drain: an ERROR frame (code server_restarting) that says to
 * reconnect, then close 1012, like the JSON protocol's bare close. */
static void stomp__on_shutdown(ws_conn_t *ws)
{
    stomp_session_t *ss = ws->app_data;
    if (ss->done) {
        ws_close(ws, WS_CLOSE_RESTART, WS_RESTART_REASON);
        return;
    }
    stomp__fatal_reason(ss, "server_restarting", WS_RESTART_REASON, NULL, WS_CLOSE_RESTART, WS_RESTART_REASON);
}

static const ws_app_t stomp__app = {
    .name = "stomp",
    .on_message = stomp__on_message,
    .on_close = stomp__on_close,
    .on_shutdown = stomp__on_shutdown,
    .on_drain = stomp__on_drain,
};

void proto_stomp_accept(http_req_t *r, const ws_handshake_t *hs, const char *user)
{
    stomp_session_t *ss = calloc(1, sizeof *ss);
    if (!ss) {
        http_respond_error(r, 500, "internal", "Out of memory.");
        return;
    }
    proto_bucket_init(&ss->rate);
    snprintf(ss->user, sizeof ss->user, "%s", user);
    proto_session_id(r, ss->session);
    ws_conn_t *ws = ws_accept(r, hs, &stomp__app, ss);
    if (!ws) {
        free(ss);
        return;
    }
    ss->ws = ws;
    ss->last_tx = uv_now(&r->c->w->loop);
}

void proto_stomp_init(void) { chat_msg_cache_register(1, stomp__destroy_shared); }
