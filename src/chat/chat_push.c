/*
 * chat_push.c: the chat core's hand-off to push/ (PROTOCOL.md §7 "push").
 *
 * After a message is committed, the users it concerns and who have no live
 * session (no open WebSocket on this node) get one notification each: the
 * other member of a dm room (kind "dm"), and every mentioned member other
 * than the sender (kind "mention"). A user both dm'd and mentioned gets one
 * ("dm"). The push thread asks chat_push_still_unread before each try, so
 * a user who read the room in the meantime gets nothing.
 *
 * Locks: the user lock only, one user at a time, after the room lock was
 * dropped by the caller (chat_internal.h lock order).
 */
#include "chat/chat_internal.h"
#include "push/push.h"

#include <stdio.h>
#include <string.h>

static void chat__push_one(const char *kind, const char *name, chat_msg_t *m)
{
    if (!strcmp(name, m->from)) return;
    chat_user_t *u = chat__user_get(name, 0);
    if (!u) return;
    uv_mutex_lock(&u->lock);
    int offline = u->nsessions == 0 && u->nrnodes == 0; /* in a cluster: on no node */
    uv_mutex_unlock(&u->lock);
    if (offline)
        push_enqueue(kind, u->name, m->room->id, m->from, m->id, m->seq, m->ts, m->text, m->text_len);
}

void chat__push_msg(chat_msg_t *m)
{
    if (!push_enabled() || m->is_event) return;
    const char *dm_peer = NULL;
    char peer[CHAT_USER_MAX + 1];
    chat_room_t *r = m->room;
    if (r->kind == 'd') {
        /* dm:<a>:<b>, names sorted: the peer is the one that is not from. */
        const char *a = r->id + 3, *colon = strchr(a, ':');
        if (colon && (size_t)(colon - a) <= CHAT_USER_MAX) {
            size_t al = (size_t)(colon - a);
            if (strlen(m->from) == al && !memcmp(a, m->from, al)) {
                snprintf(peer, sizeof peer, "%s", colon + 1);
            } else {
                memcpy(peer, a, al);
                peer[al] = 0;
            }
            dm_peer = peer;
            chat__push_one("dm", dm_peer, m);
        }
    }
    for (uint32_t i = 0; i < m->nmentions; i++)
        if (!dm_peer || strcmp(m->mentions[i], dm_peer)) chat__push_one("mention", m->mentions[i], m);
}

int chat_push_still_unread(const char *user, const char *room, int64_t seq)
{
    chat_room_t *r = chat__room_get(room);
    if (!r) return 0;
    uv_mutex_lock(&r->lock);
    chat_member_t *mb = map_get(&r->members, user, strlen(user));
    int unread = mb && mb->last_read < seq;
    uv_mutex_unlock(&r->lock);
    return unread;
}
