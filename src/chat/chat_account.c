/*
 * chat_account.c: accounts (a password hash on a user), `me`, and the
 * uploads registry with its read rule.
 *
 * Owns: chat_user_t.pw_hash (guarded by the user lock), the uploads table
 * (chat__g.uploads, guarded by chat__g.uploads_lock, a leaf lock: nothing
 * else is taken while it is held). A name is claimed for an account only if
 * the node has never seen it (no account, never connected, not stored), so
 * a signup cannot take over the history of a token or guest user. Hashing
 * and verifying happen in proto/ on the thread pool; this file only keeps
 * and compares nothing but strings. Numbers: an argon2id string is ~100
 * bytes per account; an upload ~100 bytes plus 8 per link.
 */
#include "chat/chat_internal.h"
#include "util/err.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- writes with a completion on a worker ---- */

typedef struct {
    store_job_t job;
    store_op_t ops[2];
    net_worker_t *w;
    chat_done_fn done;
    void *arg;
    int status;
    char strs[512]; /* copies of the ops' strings */
} chat_cjob_t;

static void chat__cjob_post(net_worker_t *w, void *arg)
{
    (void)w;
    chat_cjob_t *j = arg;
    j->done(j->w, j->arg, j->status);
    free(j);
}

static void chat__cjob_done(store_job_t *job, int status)
{
    chat_cjob_t *j = job->arg;
    j->status = status;
    if (net_worker_post(j->w, chat__cjob_post, j)) {
        LOG_WARN("chat", "a write completed after its worker stopped");
        free(j);
    }
}

/* Queues j's first op; done(w, arg, status) runs on w after the commit. */
static void chat__cjob_submit(chat_cjob_t *j, net_worker_t *w, chat_done_fn done, void *arg)
{
    j->job.ops = j->ops;
    j->job.nops = 1;
    j->job.done = chat__cjob_done;
    j->job.arg = j;
    j->w = w;
    j->done = done;
    j->arg = arg;
    store_write(chat__g.store, &j->job);
}

static char *chat__cjob_str(chat_cjob_t *j, size_t *used, const char *s)
{
    size_t n = strlen(s) + 1;
    if (*used + n > sizeof j->strs) return NULL;
    char *p = memcpy(j->strs + *used, s, n);
    *used += n;
    return p;
}

/* ---- accounts ---- */

int chat_account_create(const char *name, const char *hash, net_worker_t *w, chat_done_fn done, void *arg)
{
    chat_cjob_t *j = calloc(1, sizeof *j);
    char *h = strdup(hash);
    if (!j || !h) {
        free(j);
        free(h);
        return SORI_ENOMEM;
    }
    /* A user record may exist without being known (someone watched the
     * name's presence): only `known` or a password makes the name taken.
     * Two signups of one new name race on the user lock: the first wins. */
    chat_user_t *u = chat__user_get(name, 1);
    int rc = u ? 0 : SORI_ENOMEM;
    if (u) {
        uv_mutex_lock(&u->lock);
        if (atomic_load_explicit(&u->known, memory_order_relaxed) || u->pw_hash) {
            rc = SORI_EEXIST;
        } else {
            atomic_store_explicit(&u->known, 1, memory_order_relaxed);
            u->pw_hash = h;
            u->created_at = chat__now_ms();
            h = NULL;
        }
        uv_mutex_unlock(&u->lock);
    }
    free(h);
    if (rc) {
        free(j);
        return rc;
    }
    size_t used = 0;
    j->ops[0] = (store_op_t){.kind = STORE_OP_ACCOUNT,
                             .u.user = {.name = u->name, .created_at = u->created_at,
                                        .pw_hash = chat__cjob_str(j, &used, hash)}};
    chat__cjob_submit(j, w, done, arg);
    return 0;
}

int chat_account_hash(const char *name, char *out, size_t cap)
{
    chat_user_t *u = chat__user_get(name, 0);
    int rc = SORI_ENOTFOUND;
    if (!u) return rc;
    uv_mutex_lock(&u->lock);
    if (u->pw_hash && strlen(u->pw_hash) < cap) {
        memcpy(out, u->pw_hash, strlen(u->pw_hash) + 1);
        rc = 0;
    }
    uv_mutex_unlock(&u->lock);
    return rc;
}

void chat_me(chat_session_t *s, json_t *ref)
{
    chat_user_t *u = s->user;
    uv_mutex_lock(&u->lock);
    int64_t created = u->created_at;
    int account = u->pw_hash != NULL;
    size_t rooms = u->rooms.count;
    uv_mutex_unlock(&u->lock);
    chat__reply(s, ref, json_pack("{s:s, s:s, s:I, s:b, s:I}", "type", "me", "user", u->name, "created_at",
                                  (json_int_t)created, "account", account, "rooms", (json_int_t)rooms));
}

/* ---- uploads ---- */

chat_upload_t *chat__upload_get(const char *id) /* uploads_lock held */
{
    return map_get(&chat__g.uploads, id, strlen(id));
}

/* Adds or finds the upload and links it (uploads_lock held). */
int chat__upload_link(const char *id, const char *type, int64_t size, int64_t created_at, chat_user_t *owner,
                      chat_room_t *room)
{
    chat_upload_t *up = chat__upload_get(id);
    if (!up) {
        if (!(up = calloc(1, sizeof *up))) return SORI_ENOMEM;
        snprintf(up->id, sizeof up->id, "%s", id);
        snprintf(up->type, sizeof up->type, "%s", type);
        up->size = size;
        up->created_at = created_at;
        if (map_put(&chat__g.uploads, up->id, strlen(up->id), up)) {
            free(up);
            return SORI_ENOMEM;
        }
    }
    if (owner) {
        for (uint32_t i = 0; i < up->nowners; i++)
            if (up->owners[i] == owner) return 0;
        return chat__arr_add((void ***)&up->owners, &up->nowners, &up->capowners, owner);
    }
    if (room) {
        for (uint32_t i = 0; i < up->nrooms; i++)
            if (up->rooms[i] == room) return 0;
        return chat__arr_add((void ***)&up->rooms, &up->nrooms, &up->caprooms, room);
    }
    return 0;
}

int chat_upload_add(const char *id, const char *type, int64_t size, const char *user, net_worker_t *w,
                    chat_done_fn done, void *arg)
{
    chat_user_t *u = chat__user_get(user, 1);
    chat_cjob_t *j = calloc(1, sizeof *j);
    if (!u || !j) {
        free(j);
        return SORI_ENOMEM;
    }
    int64_t now = chat__now_ms();
    uv_mutex_lock(&chat__g.uploads_lock);
    int rc = chat__upload_link(id, type, size, now, u, NULL);
    chat_upload_t *up = rc ? NULL : chat__upload_get(id);
    int64_t created = up ? up->created_at : now;
    uv_mutex_unlock(&chat__g.uploads_lock);
    if (rc) {
        free(j);
        return rc;
    }
    size_t used = 0;
    j->ops[0] = (store_op_t){.kind = STORE_OP_UPLOAD,
                             .u.upload = {.id = chat__cjob_str(j, &used, id), .type = chat__cjob_str(j, &used, type),
                                          .size = size, .created_at = created, .user = u->name}};
    chat__cjob_submit(j, w, done, arg);
    return 0;
}

/* 1 if user may read room r: public, or a member. */
static int chat__can_read(chat_room_t *r, const char *user)
{
    if (r->kind == 'p') return 1;
    uv_mutex_lock(&r->lock);
    int member = map_get(&r->members, user, strlen(user)) != NULL;
    uv_mutex_unlock(&r->lock);
    return member;
}

int chat_upload_check(const char *user, const char *id, char *type, size_t typecap, int64_t *size)
{
    chat_user_t *u = chat__user_get(user, 0);
    uv_mutex_lock(&chat__g.uploads_lock);
    chat_upload_t *up = chat__upload_get(id);
    if (!up) {
        uv_mutex_unlock(&chat__g.uploads_lock);
        return SORI_ENOTFOUND;
    }
    snprintf(type, typecap, "%s", up->type);
    *size = up->size;
    int ok = 0;
    for (uint32_t i = 0; u && i < up->nowners && !ok; i++) ok = up->owners[i] == u;
    uint32_t n = up->nrooms;
    chat_room_t **rooms = ok || !n ? NULL : malloc(n * sizeof *rooms);
    if (rooms) memcpy(rooms, up->rooms, n * sizeof *rooms);
    uv_mutex_unlock(&chat__g.uploads_lock);
    for (uint32_t i = 0; rooms && i < n && !ok; i++) ok = chat__can_read(rooms[i], user);
    free(rooms);
    return ok ? 0 : SORI_EPERM;
}

void chat__upload_free(chat_upload_t *up)
{
    free(up->owners);
    free(up->rooms);
    free(up);
}
