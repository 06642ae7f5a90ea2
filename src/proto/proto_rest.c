/*
 * proto_rest.c: the REST front end (PROTOCOL.md §7): accounts, the chat
 * commands over HTTP, uploads, discovery and metrics.
 *
 * A REST call is a chat command on a TRANSIENT session (no presence, no
 * dm subscriptions) whose sink turns the reply into the HTTP answer: the
 * same checks, acks, seqs and fan-out as over WebSocket, no chat logic
 * here. Answers that complete later (a commit, a store read, a password
 * hash, a file write) use http_defer; the session is closed on the worker
 * once the answer is out. Password hashing and file I/O run on the libuv
 * thread pool of the connection's worker, never on the loop itself.
 *
 * Numbers: request bodies are JSON up to http-max-body (1 MiB), uploads up
 * to upload-max (10 MiB, held in memory once while written); login attempts
 * are limited per name and per address (fixed 60 s windows, at most 100k
 * keys per table).
 */
#include "auth/auth.h"
#include "chat/chat.h"
#include "net/net.h"
#include "proto/proto.h"
#include "util/clock.h"
#include "util/config.h"
#include "util/err.h"
#include "util/json_esc.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/ratelimit.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static ratelimit_t rest__login_name, rest__login_ip, rest__signup_ip;

/* ---- helpers ---- */

static void rest__peer_key(http_req_t *r, const char *prefix, char *out, size_t cap)
{
    char ip[64];
    conn_peer_str(r->c, ip, sizeof ip);
    snprintf(out, cap, "%s%s", prefix, ip);
}

static void rest__too_many(http_req_t *r, int retry_after)
{
    char hdr[64];
    snprintf(hdr, sizeof hdr, "Retry-After: %d\r\n", retry_after);
    static const char body[] = "{\"error\":\"rate_limited\",\"message\":\"Too many attempts; wait and try again.\"}";
    metrics_inc(M_RATE_LIMITED);
    http_respond(r, 429, "application/json", hdr, body, sizeof body - 1);
}

/* The request body as a JSON object, or NULL (answered 400). */
static json_t *rest__body(http_req_t *r)
{
    json_error_t jerr;
    json_t *o = r->body.len ? json_loadb(r->body.p, r->body.len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!json_is_object(o)) {
        json_decref(o);
        http_respond_error(r, 400, "bad_request", "The body must be a JSON object.");
        return NULL;
    }
    return o;
}

static int rest__status_of(const char *code)
{
    static const struct {
        const char *code;
        int status;
    } map[] = {{"bad_request", 400}, {"unauthorized", 401}, {"forbidden", 403}, {"not_member", 403},
               {"not_found", 404},   {"conflict", 409},     {"too_large", 413}, {"rate_limited", 429},
               {"unavailable", 503}, {"internal", 500}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(map[i].code, code)) return map[i].status;
    return 500;
}

/* ---- a chat command over HTTP ---- */

typedef struct {
    http_pending_t *p;
    chat_session_t *s;
    net_worker_t *w;
    int ok_status;      /* 200 or 201 */
    const char *unwrap; /* answer with the first element of this array field */
    int answered;
    int in_call;
} rest_call_t;

static void rest__call_close(net_worker_t *w, void *arg)
{
    (void)w;
    rest_call_t *c = arg;
    chat_session_close(c->s);
    free(c);
}

/* After the answer: the session is closed outside the sink call. */
static void rest__call_done(rest_call_t *c)
{
    c->answered = 1;
    if (c->in_call) return; /* rest__call closes it */
    if (net_worker_post(c->w, rest__call_close, c)) {
        chat_session_close(c->s);
        free(c);
    }
}

static void rest__sink_text(chat_session_t *s, json_t *ref, const char *json, size_t len)
{
    (void)ref;
    rest_call_t *c = chat_session_data(s);
    if (c->answered) return;
    if (c->unwrap) {
        json_t *o = json_loadb(json, len, 0, NULL);
        json_t *v = json_array_get(json_object_get(o, c->unwrap), 0);
        char *t = v ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (t) http_pending_json(c->p, c->ok_status, t, strlen(t));
        else http_pending_error(c->p, 404, "not_found", "Nothing found.");
        free(t);
        json_decref(o);
    } else {
        http_pending_json(c->p, c->ok_status, json, len);
    }
    rest__call_done(c);
}

static void rest__sink_send(chat_session_t *s, json_t *ref, json_t *obj)
{
    rest_call_t *c = chat_session_data(s);
    if (c->answered) return; /* later events (presence) are not for HTTP */
    char *t = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (t) rest__sink_text(s, ref, t, strlen(t));
    else {
        http_pending_error(c->p, 500, "internal", "Out of memory.");
        rest__call_done(c);
    }
    free(t);
}

static void rest__sink_error(chat_session_t *s, json_t *ref, const char *code, const char *message)
{
    (void)ref;
    rest_call_t *c = chat_session_data(s);
    if (c->answered) return;
    http_pending_error(c->p, rest__status_of(code), code, message);
    rest__call_done(c);
}

static void rest__sink_message(chat_session_t *s, chat_msg_t *m) { (void)s, (void)m; }

static const chat_sink_t rest__sink = {
    .message = rest__sink_message,
    .send = rest__sink_send,
    .send_text = rest__sink_text,
    .error = rest__sink_error,
};

/* Starts a command for user: defers r and opens the session; run the
 * command with rest__call_s(c) then rest__call_end(c). NULL: answered. */
static rest_call_t *rest__call_begin(http_req_t *r, const char *user, int ok_status, const char *unwrap)
{
    rest_call_t *c = calloc(1, sizeof *c);
    if (!c) {
        http_respond_error(r, 500, "internal", "Out of memory.");
        return NULL;
    }
    c->w = r->c->w;
    c->ok_status = ok_status;
    c->unwrap = unwrap;
    c->s = chat_session_open(user, c->w->index, CHAT_SESSION_TRANSIENT, &rest__sink, c);
    if (!c->s || !(c->p = http_defer(r))) {
        if (c->s) chat_session_close(c->s);
        else http_respond_error(r, 500, "internal", "Out of memory.");
        free(c);
        return NULL;
    }
    c->in_call = 1;
    return c;
}

static void rest__call_end(rest_call_t *c)
{
    c->in_call = 0;
    if (c->answered) rest__call_done(c);
}

/* ---- identity ---- */

/* The caller (Bearer, ?token=, or a guest); 0 or answered. */
static int rest__user(http_req_t *r, char *user)
{
    return proto_identify(r, user, 0) == 0 ? 0 : -1;
}

/* ---- accounts ---- */

typedef struct {
    uv_work_t work;
    http_pending_t *p;
    net_worker_t *w;
    char name[AUTH_USER_MAX + 1];
    char *pw;
    size_t pwlen;
    char hash[AUTH_PW_HASH_MAX];
    int rc;
    int signup;
} rest_acct_t;

static void rest__acct_free(rest_acct_t *a)
{
    if (a->pw) {
        memset(a->pw, 0, a->pwlen);
        free(a->pw);
    }
    free(a);
}

static void rest__token_answer(http_pending_t *p, const char *name, int status)
{
    int64_t now = clock_now_ms() / 1000, exp = now + CONFIG_GET(token_ttl);
    char token[512];
    if (auth_token_mint(sori_config.secret, name, now, exp, token, sizeof token) < 0) {
        http_pending_error(p, 500, "internal", "Could not mint a token.");
        return;
    }
    json_t *o = json_pack("{s:s, s:s, s:I}", "user", name, "token", token, "expires_at", (json_int_t)exp * 1000);
    char *t = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    http_pending_json(p, status, t, strlen(t));
    free(t);
    json_decref(o);
}

static void rest__signup_committed(net_worker_t *w, void *arg, int status)
{
    (void)w;
    rest_acct_t *a = arg;
    if (status) http_pending_error(a->p, 503, "unavailable", "The account could not be stored; try again.");
    else rest__token_answer(a->p, a->name, 201);
    rest__acct_free(a);
}

static void rest__acct_work(uv_work_t *req)
{
    rest_acct_t *a = req->data;
    if (a->signup) {
        a->rc = auth_pw_hash(a->pw, a->pwlen, a->hash, sizeof a->hash);
    } else {
        int have = chat_account_hash(a->name, a->hash, sizeof a->hash) == 0;
        a->rc = auth_pw_verify(have ? a->hash : NULL, a->pw, a->pwlen);
    }
}

static void rest__acct_after(uv_work_t *req, int status)
{
    rest_acct_t *a = req->data;
    if (status || (a->signup && a->rc)) {
        http_pending_error(a->p, 500, "internal", "Could not hash the password.");
        rest__acct_free(a);
        return;
    }
    if (!a->signup) {
        if (a->rc) {
            metrics_inc(M_LOGIN_FAILED);
            http_pending_error(a->p, 401, "unauthorized", "Wrong name or password.");
        } else {
            rest__token_answer(a->p, a->name, 200);
        }
        rest__acct_free(a);
        return;
    }
    int rc = chat_account_create(a->name, a->hash, a->w, rest__signup_committed, a);
    if (rc) {
        http_pending_error(a->p, rc == SORI_EEXIST ? 409 : 500, rc == SORI_EEXIST ? "conflict" : "internal",
                           rc == SORI_EEXIST ? "This name is taken." : "Out of memory.");
        rest__acct_free(a);
    }
}

static void rest__account(http_req_t *r, int signup)
{
    char key[200];
    int retry;
    int64_t now = clock_now_ms();
    rest__peer_key(r, signup ? "s:" : "l:", key, sizeof key);
    if (ratelimit_hit(signup ? &rest__signup_ip : &rest__login_ip, key, signup ? CONFIG_GET(signup_rate_ip)
                                                                               : CONFIG_GET(login_rate_ip),
                      now, &retry)) {
        rest__too_many(r, retry);
        return;
    }
    json_t *o = rest__body(r);
    if (!o) return;
    json_t *jn = json_object_get(o, "name"), *jp = json_object_get(o, "password");
    const char *name = json_string_value(jn);
    size_t pwlen = json_string_length(jp);
    if (!name || !auth_valid_user(name, strlen(name))) {
        json_decref(o);
        http_respond_error(r, 400, "bad_request", "name is 1-32 of A-Z a-z 0-9 _ . -");
        return;
    }
    if (!json_is_string(jp) || (signup && (pwlen < (size_t)CONFIG_GET(password_min))) ||
        pwlen > (size_t)CONFIG_GET(password_max) || pwlen == 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "password is a string of %d-%d bytes.", CONFIG_GET(password_min),
                 CONFIG_GET(password_max));
        json_decref(o);
        http_respond_error(r, 400, "bad_request", msg);
        return;
    }
    if (!signup) {
        snprintf(key, sizeof key, "n:%s", name);
        if (ratelimit_hit(&rest__login_name, key, CONFIG_GET(login_rate_name), now, &retry)) {
            json_decref(o);
            rest__too_many(r, retry);
            return;
        }
    }
    rest_acct_t *a = calloc(1, sizeof *a);
    if (!a || !(a->pw = malloc(pwlen + 1))) {
        free(a);
        json_decref(o);
        http_respond_error(r, 500, "internal", "Out of memory.");
        return;
    }
    memcpy(a->pw, json_string_value(jp), pwlen);
    a->pwlen = pwlen;
    snprintf(a->name, sizeof a->name, "%s", name);
    json_decref(o);
    a->signup = signup;
    a->w = r->c->w;
    a->work.data = a;
    if (!(a->p = http_defer(r))) {
        rest__acct_free(a);
        return;
    }
    if (uv_queue_work(&a->w->loop, &a->work, rest__acct_work, rest__acct_after)) {
        http_pending_error(a->p, 500, "internal", "Could not queue the password hash.");
        rest__acct_free(a);
    }
}

static void rest__signup(http_req_t *r) { rest__account(r, 1); }
static void rest__login(http_req_t *r) { rest__account(r, 0); }

/* ---- commands ---- */

static void rest__me(http_req_t *r)
{
    char user[AUTH_USER_MAX + 1];
    if (rest__user(r, user)) return;
    rest_call_t *c = rest__call_begin(r, user, 200, NULL);
    if (!c) return;
    chat_me(c->s, NULL);
    rest__call_end(c);
}

static int rest__query_int(http_req_t *r, const char *key, int64_t min, int64_t max, int64_t *out)
{
    char v[32];
    int n = http_query_get(r->req->query, key, v, sizeof v);
    if (n < 0) return 0;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!n || *end || errno || x < min || x > max) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s must be an integer from %lld to %lld.", key, (long long)min, (long long)max);
        http_respond_error(r, 400, "bad_request", msg);
        return -1;
    }
    *out = x;
    return 1;
}

static void rest__search(http_req_t *r)
{
    char user[AUTH_USER_MAX + 1], q[1024], room[256];
    if (rest__user(r, user)) return;
    if (http_query_get(r->req->query, "q", q, sizeof q) < 0) {
        http_respond_error(r, 400, "bad_request", "q is the text to search for.");
        return;
    }
    int has_room = http_query_get(r->req->query, "room", room, sizeof room) > 0;
    int64_t limit = 20;
    if (rest__query_int(r, "limit", 1, CONFIG_GET(search_max), &limit) < 0) return;
    rest_call_t *c = rest__call_begin(r, user, 200, NULL);
    if (!c) return;
    chat_search(c->s, NULL, q, has_room ? room : NULL, (int)limit);
    rest__call_end(c);
}

static void rest__presence(http_req_t *r, const char *user, const char *who)
{
    rest_call_t *c = rest__call_begin(r, user, 200, "users");
    if (!c) return;
    const char *names[1] = {who};
    chat_presence(c->s, NULL, names, 1);
    rest__call_end(c);
}

static int rest__is(const http_req_t *r, const char *m)
{
    return r->req->method.len == strlen(m) && !memcmp(r->req->method.p, m, r->req->method.len);
}

static void rest__method_not_allowed(http_req_t *r, const char *allow)
{
    char hdr[96];
    snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
    static const char body[] = "{\"error\":\"bad_request\",\"message\":\"This method is not allowed on this path.\"}";
    http_respond(r, 405, "application/json", hdr, body, sizeof body - 1);
}

static void rest__rooms(http_req_t *r)
{
    char user[AUTH_USER_MAX + 1], seg[3][HTTP_SEG_MAX];
    int n = http_path_segments(r->req->path, strlen("/api/rooms/"), seg, 3);
    if (r->req->path.len == strlen("/api/rooms")) n = 0;
    if (n < 0) {
        http_not_found_handle(r);
        return;
    }
    int get = rest__is(r, "GET") || rest__is(r, "HEAD"), post = rest__is(r, "POST"), del = rest__is(r, "DELETE");
    /* the route first, then the caller: an unknown path is 404 for everyone */
    const char *allow = n == 0 ? "GET, HEAD, POST"
                        : n == 2 && !strcmp(seg[1], "messages") ? "GET, HEAD, POST"
                        : n == 2 && !strcmp(seg[1], "members")  ? "POST"
                        : n == 2 && !strcmp(seg[1], "read")     ? "POST"
                        : n == 3 && !strcmp(seg[1], "members")  ? "DELETE"
                                                                : NULL;
    if (!allow) {
        http_not_found_handle(r);
        return;
    }
    int allowed = (get && strstr(allow, "GET")) || (post && strstr(allow, "POST")) || (del && strstr(allow, "DELETE"));
    if (!allowed) {
        rest__method_not_allowed(r, allow);
        return;
    }
    if (rest__user(r, user)) return;
    json_t *o = NULL;
    if (post && !(o = rest__body(r))) return;
    rest_call_t *c = NULL;
    if (n == 0 && get) {
        char v[8];
        int pub = http_query_get(r->req->query, "public", v, sizeof v) >= 0 && strcmp(v, "0") && strcmp(v, "false");
        if ((c = rest__call_begin(r, user, 200, NULL))) chat_rooms(c->s, NULL, pub);
    } else if (n == 0) {
        const char *room = json_string_value(json_object_get(o, "room"));
        const char *kind = json_string_value(json_object_get(o, "kind"));
        json_t *title = json_object_get(o, "title");
        if (!room || !kind || (title && !json_is_null(title) && !json_is_string(title)))
            http_respond_error(r, 400, "bad_request", "The body is {room, kind, title?} with strings.");
        else if ((c = rest__call_begin(r, user, 201, NULL)))
            chat_create(c->s, NULL, room, kind, json_string_value(title));
    } else if (!strcmp(seg[1], "messages") && get) {
        int64_t before = -1, after = -1, limit = 50;
        if (rest__query_int(r, "before", 1, INT64_MAX, &before) < 0 ||
            rest__query_int(r, "after", 0, INT64_MAX, &after) < 0 || rest__query_int(r, "limit", 1, 100, &limit) < 0)
            return;
        if (before >= 0 && after >= 0) http_respond_error(r, 400, "bad_request", "Give before or after, not both.");
        else if ((c = rest__call_begin(r, user, 200, NULL))) chat_history(c->s, NULL, seg[0], before, after, (int)limit);
    } else if (!strcmp(seg[1], "messages")) {
        json_t *text = json_object_get(o, "text"), *cid = json_object_get(o, "cid");
        const char *ids[PROTO_ATTACH_MAX];
        size_t nids = 0;
        if (!json_is_string(text) || (cid && !json_is_null(cid) && !json_is_string(cid)))
            http_respond_error(r, 400, "bad_request", "The body is {text, cid?, attachments?}; text and cid are strings.");
        else if (proto_attachments(json_object_get(o, "attachments"), ids, &nids))
            http_respond_error(r, 400, "bad_request", "attachments is an array of at most 10 {\"id\": upload id}.");
        else if ((c = rest__call_begin(r, user, 201, NULL))) {
            metrics_inc(M_FRAMES_IN);
            chat_send(c->s, NULL, seg[0], json_string_value(text), json_string_length(text), json_string_value(cid),
                      ids, nids);
        }
    } else if (!strcmp(seg[1], "members") && post) {
        const char *who = json_string_value(json_object_get(o, "user"));
        if (!who) http_respond_error(r, 400, "bad_request", "The body is {user}.");
        else if ((c = rest__call_begin(r, user, 200, NULL))) chat_invite(c->s, NULL, seg[0], who);
    } else if (!strcmp(seg[1], "members")) {
        if ((c = rest__call_begin(r, user, 200, NULL))) chat_kick(c->s, NULL, seg[0], seg[2]);
    } else { /* read */
        json_t *seq = json_object_get(o, "seq");
        if (!json_is_integer(seq) || json_integer_value(seq) < 0)
            http_respond_error(r, 400, "bad_request", "The body is {seq} with a seq >= 0.");
        else if ((c = rest__call_begin(r, user, 200, NULL))) chat_read(c->s, NULL, seg[0], json_integer_value(seq));
    }
    json_decref(o);
    if (c) rest__call_end(c);
}

static void rest__users(http_req_t *r)
{
    char user[AUTH_USER_MAX + 1], seg[2][HTTP_SEG_MAX];
    int n = http_path_segments(r->req->path, strlen("/api/users/"), seg, 2);
    if (n != 2 || strcmp(seg[1], "presence")) {
        http_not_found_handle(r);
        return;
    }
    if (!rest__is(r, "GET") && !rest__is(r, "HEAD")) {
        rest__method_not_allowed(r, "GET, HEAD");
        return;
    }
    if (rest__user(r, user)) return;
    if (!auth_valid_user(seg[0], strlen(seg[0]))) {
        http_respond_error(r, 400, "bad_request", "User names are 1-32 of A-Z a-z 0-9 _ . -");
        return;
    }
    rest__presence(r, user, seg[0]);
}

/* ---- uploads ---- */

/* The type named by the file's first bytes, or NULL. */
const char *proto_image_type(const unsigned char *p, size_t n)
{
    if (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return "image/png";
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return "image/jpeg";
    if (n >= 6 && (!memcmp(p, "GIF87a", 6) || !memcmp(p, "GIF89a", 6))) return "image/gif";
    if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return "image/webp";
    return NULL;
}

typedef struct {
    uv_work_t work;
    http_pending_t *p;
    net_worker_t *w;
    char user[AUTH_USER_MAX + 1];
    char id[65];
    const char *type;
    unsigned char *data;
    size_t len;
    int rc;
    char path[4200];
} rest_upload_t;

static void rest__upload_free(rest_upload_t *u)
{
    free(u->data);
    free(u);
}

/* DATA_DIR/uploads/ab/abcdef...: written once (temp file, fsync, rename). */
static void rest__upload_work(uv_work_t *req)
{
    rest_upload_t *u = req->data;
    char dir[4096], tmp[4300];
    snprintf(dir, sizeof dir, "%s/uploads", sori_config.data_dir);
    mkdir(dir, 0750);
    snprintf(dir, sizeof dir, "%s/uploads/%.2s", sori_config.data_dir, u->id);
    mkdir(dir, 0750);
    snprintf(u->path, sizeof u->path, "%s/%s", dir, u->id);
    struct stat st;
    if (stat(u->path, &st) == 0 && (size_t)st.st_size == u->len) return; /* the same bytes are there */
    snprintf(tmp, sizeof tmp, "%s.%lx.tmp", u->path, (unsigned long)(uintptr_t)u);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        u->rc = SORI_EIO;
        return;
    }
    size_t off = 0;
    while (off < u->len) {
        ssize_t n = write(fd, u->data + off, u->len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        off += (size_t)n;
    }
    int ok = off == u->len && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, u->path) != 0) {
        unlink(tmp);
        u->rc = SORI_EIO;
        return;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

static void rest__upload_answer(rest_upload_t *u)
{
    char body[256];
    int n = snprintf(body, sizeof body, "{\"id\":\"%s\",\"url\":\"/uploads/%s\",\"type\":\"%s\",\"size\":%zu}", u->id,
                     u->id, u->type, u->len);
    http_pending_json(u->p, 201, body, (size_t)n);
}

static void rest__upload_committed(net_worker_t *w, void *arg, int status)
{
    (void)w;
    rest_upload_t *u = arg;
    if (status) http_pending_error(u->p, 503, "unavailable", "The upload could not be recorded; try again.");
    else {
        metrics_inc(M_UPLOADS);
        rest__upload_answer(u);
    }
    rest__upload_free(u);
}

static void rest__upload_after(uv_work_t *req, int status)
{
    rest_upload_t *u = req->data;
    free(u->data);
    u->data = NULL;
    if (status || u->rc) {
        LOG_WARN("rest", "upload %s: cannot write %s", u->id, u->path);
        http_pending_error(u->p, 500, "internal", "The upload could not be stored.");
        rest__upload_free(u);
        return;
    }
    if (chat_upload_add(u->id, u->type, (int64_t)u->len, u->user, u->w, rest__upload_committed, u)) {
        http_pending_error(u->p, 500, "internal", "Out of memory.");
        rest__upload_free(u);
    }
}

static void rest__upload(http_req_t *r)
{
    char user[AUTH_USER_MAX + 1];
    if (rest__user(r, user)) return;
    if (r->body.len == 0) {
        http_respond_error(r, 400, "bad_request", "The body is the image's bytes.");
        return;
    }
    const char *type = proto_image_type((const unsigned char *)r->body.p, r->body.len);
    if (!type) {
        http_respond(r, 415, "application/json", NULL,
                     "{\"error\":\"bad_request\",\"message\":\"Only PNG, JPEG, GIF and WebP images are accepted.\"}",
                     strlen("{\"error\":\"bad_request\",\"message\":\"Only PNG, JPEG, GIF and WebP images are accepted.\"}"));
        return;
    }
    rest_upload_t *u = calloc(1, sizeof *u);
    if (!u || !(u->data = malloc(r->body.len))) {
        free(u);
        http_respond_error(r, 500, "internal", "Out of memory.");
        return;
    }
    memcpy(u->data, r->body.p, r->body.len);
    u->len = r->body.len;
    u->type = type;
    snprintf(u->user, sizeof u->user, "%s", user);
    /* content-addressed: the first 128 bits of SHA-256, in hex */
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(u->data, u->len, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 16; i++) snprintf(u->id + 2 * i, 3, "%02x", md[i]);
    u->w = r->c->w;
    u->work.data = u;
    if (!(u->p = http_defer(r))) {
        rest__upload_free(u);
        return;
    }
    if (uv_queue_work(&u->w->loop, &u->work, rest__upload_work, rest__upload_after)) {
        http_pending_error(u->p, 500, "internal", "Could not queue the upload.");
        rest__upload_free(u);
    }
}

typedef struct {
    uv_work_t work;
    http_pending_t *p;
    char id[65];
    char type[16];
    char *data;
    size_t len;
    int rc;
} rest_file_t;

static void rest__file_work(uv_work_t *req)
{
    rest_file_t *f = req->data;
    char path[4096];
    snprintf(path, sizeof path, "%s/uploads/%.2s/%s", sori_config.data_dir, f->id, f->id);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || !(f->data = malloc((size_t)st.st_size + 1))) {
        if (fd >= 0) close(fd);
        f->rc = SORI_EIO;
        return;
    }
    size_t off = 0;
    while (off < (size_t)st.st_size) {
        ssize_t n = read(fd, f->data + off, (size_t)st.st_size - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        off += (size_t)n;
    }
    close(fd);
    f->len = off;
    if (off != (size_t)st.st_size) f->rc = SORI_EIO;
}

static void rest__file_after(uv_work_t *req, int status)
{
    rest_file_t *f = req->data;
    if (status || f->rc) {
        http_pending_error(f->p, 404, "not_found", "The file is not available.");
    } else {
        /* immutable: the id is the content's hash; private: only for who may read it */
        char hdr[256];
        snprintf(hdr, sizeof hdr,
                 "Cache-Control: private, max-age=31536000, immutable\r\nETag: \"%s\"\r\n"
                 "X-Content-Type-Options: nosniff\r\n",
                 f->id);
        http_pending_respond(f->p, 200, f->type, hdr, f->data, f->len);
    }
    free(f->data);
    free(f);
}

static void rest__file(http_req_t *r)
{
    char user[AUTH_USER_MAX + 1], seg[1][HTTP_SEG_MAX];
    if (http_path_segments(r->req->path, strlen("/uploads/"), seg, 1) != 1 || strlen(seg[0]) != 32 ||
        strspn(seg[0], "0123456789abcdef") != 32) {
        http_not_found_handle(r);
        return;
    }
    if (rest__user(r, user)) return;
    char type[16];
    int64_t size;
    int rc = chat_upload_check(user, seg[0], type, sizeof type, &size);
    if (rc == SORI_ENOTFOUND) {
        http_not_found_handle(r);
        return;
    }
    if (rc) {
        http_respond_error(r, 403, "forbidden", "Only members of a room where this file was posted may read it.");
        return;
    }
    const slice_t *inm = http_header_get(r->req, "If-None-Match");
    char etag[40];
    snprintf(etag, sizeof etag, "\"%.32s\"", seg[0]);
    if (inm && inm->len == strlen(etag) && !memcmp(inm->p, etag, inm->len)) {
        http_respond(r, 304, NULL, "Cache-Control: private, max-age=31536000, immutable\r\n", NULL, 0);
        return;
    }
    rest_file_t *f = calloc(1, sizeof *f);
    if (!f) {
        http_respond_error(r, 500, "internal", "Out of memory.");
        return;
    }
    memcpy(f->id, seg[0], 33); /* 32 hex digits, checked above */
    snprintf(f->type, sizeof f->type, "%s", type);
    f->work.data = f;
    net_worker_t *w = r->c->w;
    if (!(f->p = http_defer(r))) {
        free(f);
        return;
    }
    if (uv_queue_work(&w->loop, &f->work, rest__file_work, rest__file_after)) {
        http_pending_error(f->p, 500, "internal", "Could not queue the read.");
        free(f);
    }
}

/* ---- discovery and metrics ---- */

static void rest__discovered(net_worker_t *w, void *arg, int status, const char *ws, int node)
{
    (void)w;
    http_pending_t *p = arg;
    if (status) {
        http_pending_error(p, 503, "unavailable", "No live node is registered; try again shortly.");
        return;
    }
    buf_t b = {0};
    int rc = buf_append(&b, "{\"ws\":", 6) | json_esc_append(&b, ws, strlen(ws)) |
             buf_appendf(&b, ",\"node\":\"%d\"}", node);
    if (rc)
        http_pending_error(p, 500, "internal", "Out of memory.");
    else
        http_pending_respond(p, 200, "application/json", "Cache-Control: no-store\r\n", b.data, b.len);
    buf_free(&b);
}

static void rest__discover(http_req_t *r)
{
    if (chat_cluster_on()) {
        /* The least-loaded live node of the registry. */
        http_pending_t *p = http_defer(r);
        if (p && chat_cluster_discover(r->c->w, rest__discovered, p))
            http_pending_error(p, 503, "unavailable", "The cluster bus is down; try again shortly.");
        return;
    }
    /* One node: itself, at the address the client used. */
    const slice_t *host = http_header_get(r->req, "Host");
    char h[256];
    if (host && host->len < sizeof h && host->len > 0 && !memchr(host->p, '"', host->len) &&
        !memchr(host->p, '\\', host->len)) {
        memcpy(h, host->p, host->len);
        h[host->len] = 0;
    } else {
        snprintf(h, sizeof h, "127.0.0.1:%d", net_port());
    }
    char body[512];
    int n = snprintf(body, sizeof body, "{\"ws\":\"%s://%s/ws\",\"node\":\"%d\"}", net_tls_on() ? "wss" : "ws", h,
                     sori_config.node_id);
    http_respond(r, 200, "application/json", "Cache-Control: no-store\r\n", body, (size_t)n);
}

static void rest__metrics(http_req_t *r)
{
    buf_t b = {0};
    if (metrics_render(&b)) {
        buf_free(&b);
        http_respond_error(r, 500, "internal", "Out of memory.");
        return;
    }
    http_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", "Cache-Control: no-store\r\n", b.data, b.len);
    buf_free(&b);
}

int proto_attachments(json_t *v, const char **ids, size_t *n)
{
    *n = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_array(v) || json_array_size(v) > PROTO_ATTACH_MAX) return -1;
    size_t i;
    json_t *it;
    json_array_foreach(v, i, it)
    {
        const char *id = json_is_string(it) ? json_string_value(it) : json_string_value(json_object_get(it, "id"));
        if (!id) return -1;
        ids[(*n)++] = id;
    }
    return 0;
}

void proto_rest_routes(void)
{
    ratelimit_init(&rest__login_name, 60000, 100000);
    ratelimit_init(&rest__login_ip, 60000, 100000);
    ratelimit_init(&rest__signup_ip, 60000, 100000);
    http_route_add("POST", "/api/signup", rest__signup);
    http_route_add("POST", "/api/login", rest__login);
    http_route_add("GET", "/api/me", rest__me);
    http_route_add("GET", "/api/search", rest__search);
    http_route_add("GET", "/api/discover", rest__discover);
    http_route_add("GET", "/metrics", rest__metrics);
    http_route_add_limit("POST", "/api/uploads", rest__upload, (uint64_t)CONFIG_GET(upload_max));
    http_route_add("GET", "/uploads/*", rest__file);
    http_route_add(NULL, "/api/rooms", rest__rooms);
    http_route_add(NULL, "/api/rooms/*", rest__rooms);
    http_route_add(NULL, "/api/users/*", rest__users);
}

void proto_rest_free(void)
{
    ratelimit_free(&rest__login_name);
    ratelimit_free(&rest__login_ip);
    ratelimit_free(&rest__signup_ip);
}
