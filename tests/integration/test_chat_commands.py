"""The JSON protocol's commands and events through real clients: every
command of PROTOCOL.md §3 except `search`, and every event of §4, with the
exact fields of their replies. Each test names the clause it checks.

The module shares one guest-mode server (conftest `server`); every test uses
its own users and rooms (uniq()), so tests do not see each other's events.
Tests that need other flags start their own server with make_server."""
import asyncio
import time

import pytest

from chatclient import QUIET, T, connect, run, uniq
from conftest import SLOW

MSG_KEYS = {"type", "room", "id", "seq", "from", "text", "ts"}


def now_ms():
    return int(time.time() * 1000)


async def clients(server, *names):
    return [await connect(server, n) for n in names]


async def close_all(*cs):
    for c in cs:
        await c.close()


async def send_many(c, room, n, prefix="m"):
    """Pipelines n sends and returns their acks in send order."""
    refs = [await c.send_ref({"type": "send", "room": room, "text": "%s%d" % (prefix, i)})
            for i in range(n)]
    acks = [await c.reply(r) for r in refs]
    for a in acks:
        assert a["type"] == "ack", a
    return acks


def check_message(m, room, sender, text, seq=None, cid=None):
    """§4 message {room, id, seq, from, text, ts, cid?}: exactly these."""
    assert set(m) == MSG_KEYS | ({"cid"} if cid is not None else set()), m
    assert m["type"] == "message" and m["room"] == room and m["from"] == sender
    assert m["text"] == text
    assert isinstance(m["id"], str) and m["id"].isdigit() and int(m["id"]) > 0
    assert isinstance(m["seq"], int) and m["seq"] >= 1
    if seq is not None:
        assert m["seq"] == seq, m
    assert isinstance(m["ts"], int) and abs(m["ts"] - now_ms()) < 60000
    if cid is not None:
        assert m["cid"] == cid


# ---------------------------------------------------------------- §2 hello, ping

def test_hello_fields_and_ping(server):
    """§2: the first frame is hello {user, session, node, heartbeat_ms,
    server_time}; §3 ping -> pong carrying the ref, a string or a number."""
    async def go():
        name = uniq("hal")
        c = await connect(server, name)
        h = c.hello
        assert set(h) == {"type", "user", "session", "node", "heartbeat_ms", "server_time"}, h
        assert h["user"] == name and isinstance(h["session"], str) and h["session"]
        assert h["node"] == server.node_id and h["heartbeat_ms"] == 25000
        assert abs(h["server_time"] - now_ms()) < 60000
        r = await c.rpc({"type": "ping", "ref": "p-1"})
        assert r == {"type": "pong", "ref": "p-1"}
        r = await c.rpc({"type": "ping", "ref": 42})
        assert r == {"type": "pong", "ref": 42}
        await c.send({"type": "ping"})
        assert await c.next_event("pong") == {"type": "pong"}
        c2 = await connect(server, name)
        assert c2.hello["session"] != h["session"]
        await close_all(c, c2)
    run(go())


# ---------------------------------------------------------------- join

def test_join_public_makes_member_and_notifies_others(server):
    """§3 join: joined {room, seq, kind} with the room's latest seq; joining a
    public room makes the user a member, and §4 `member joined` goes to the
    room's other connections (not to the joiner)."""
    async def go():
        al, bo = uniq("al"), uniq("bo")
        a, b = await clients(server, al, bo)
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"}, "created")
        r = await a.ok({"type": "join", "room": room}, "joined")
        assert {k: r[k] for k in ("room", "seq", "kind")} == {"room": room, "seq": 0, "kind": "public"}
        await send_many(a, room, 3)
        r = await b.rpc({"type": "join", "room": room})
        assert set(r) == {"type", "room", "seq", "kind", "ref"}, r
        assert (r["type"], r["room"], r["seq"], r["kind"]) == ("joined", room, 3, "public")
        ev = await a.next_event("member")
        assert ev == {"type": "member", "room": room, "user": bo, "event": "joined"}
        # no catch-up without since; no member event for the joiner itself
        await b.no_event("message", QUIET)
        await b.no_event("member", 0)
        ms = await b.ok({"type": "members", "room": room}, "members")
        assert {m["user"]: m["role"] for m in ms["members"]} == {al: "owner", bo: "member"}
        rooms = await b.ok({"type": "rooms"})
        assert room in [x["id"] for x in rooms["rooms"]]
        # joining again: no second member event, still joined
        r = await b.ok({"type": "join", "room": room}, "joined")
        await a.no_event("member", QUIET)
        await close_all(a, b)
    run(go())


def test_create_reply_exact(server):
    """§3 create: created {room, kind} (+ref); the creator is owner and member."""
    async def go():
        al = uniq("al")
        a, = await clients(server, al)
        room = uniq("c")
        r = await a.rpc({"type": "create", "room": room, "kind": "private", "title": "Hi"})
        assert r == {"type": "created", "room": room, "kind": "private", "ref": r["ref"]}
        ms = await a.ok({"type": "members", "room": room})
        assert ms["members"] == [{"user": al, "role": "owner", "online": True}]
        await close_all(a)
    run(go())


def test_join_since_catches_up_in_order_then_joined(server):
    """§3 join with since: the missed messages (seq > since) as message frames
    in order, then joined; since 0 is everything."""
    async def go():
        a, b = await clients(server, uniq("al"), uniq("bo"))
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        acks = await send_many(a, room, 5)
        r = await b.ok({"type": "join", "room": room, "since": 2}, "joined")
        assert r["seq"] == 5
        ms = await b.messages(3)
        assert [m["seq"] for m in ms] == [3, 4, 5]
        assert [m["id"] for m in ms] == [x["id"] for x in acks[2:]]
        assert all(b.index(m) < b.index(r) for m in ms), "messages must come before joined"
        for i, m in enumerate(ms):
            check_message(m, room, a.user, "m%d" % (i + 2), seq=i + 3)
        # re-join with since=0 on the same connection: everything again
        r = await b.ok({"type": "join", "room": room, "since": 0}, "joined")
        assert [m["seq"] for m in await b.messages(5)] == [1, 2, 3, 4, 5]
        # since == latest: nothing, joined
        r = await b.ok({"type": "join", "room": room, "since": 5}, "joined")
        await b.no_event("message", QUIET)
        await close_all(a, b)
    run(go())


def test_join_errors(server):
    """§3/§4: join of an unknown room is not_found, a bad id or a bad since is
    bad_request (with the ref); the connection stays usable."""
    async def go():
        a, = await clients(server, uniq("al"))
        await a.err({"type": "join", "room": uniq("nope")}, "not_found")
        await a.err({"type": "join", "room": "bad room!"}, "bad_request")
        await a.err({"type": "join", "room": "x" * 65}, "bad_request")
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        r = await a.err({"type": "join", "room": room, "since": -1, "ref": "neg"}, "bad_request")
        assert r["ref"] == "neg" and set(r) == {"type", "code", "message", "ref"}
        assert isinstance(r["message"], str) and r["message"]
        await a.err({"type": "join", "room": room, "since": "3"}, "bad_request")
        await a.err({"type": "join", "room": room, "since": 1.5}, "bad_request")
        await a.ok({"type": "ping"}, "pong")
        await close_all(a)
    run(go())


def test_join_since_beyond_latest_is_refused_or_harmless(server):
    """§3 join / §5.1: a since beyond the room's latest seq (a client that
    remembers seqs an async crash lost, or a buggy one) must be bad_request
    ("numbers out of range are bad_request") or be treated as the latest seq;
    it must not silently swallow the room's next messages."""
    async def go():
        a, b = await clients(server, uniq("al"), uniq("bo"))
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await send_many(a, room, 2)
        r = await b.rpc({"type": "join", "room": room, "since": 10})
        if r["type"] == "error":
            assert r["code"] == "bad_request"
            return
        assert r["type"] == "joined" and r["seq"] == 2
        acks = await send_many(a, room, 3)
        got = await b.messages(3, timeout=2 * SLOW)
        assert [m["seq"] for m in got] == [x["seq"] for x in acks]
    run(go())


# ---------------------------------------------------------------- leave, part

def test_leave_stops_events_keeps_membership(server):
    """§3 leave: left {room}; no further events of that room on this
    connection, but the user stays a member (rejoin with since catches up)."""
    async def go():
        al, bo, ca = uniq("al"), uniq("bo"), uniq("ca")
        a, b, c = await clients(server, al, bo, ca)
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await a.ok({"type": "join", "room": room})
        await b.ok({"type": "join", "room": room})
        r = await b.rpc({"type": "leave", "room": room})
        assert r == {"type": "left", "room": room, "ref": r["ref"]}
        await a.ok({"type": "send", "room": room, "text": "after leave"})
        await c.ok({"type": "join", "room": room})        # a member event
        await a.next_event("member")
        await a.ok({"type": "read", "room": room, "seq": 1})  # a receipt event
        await a.next_event("receipt")
        await b.no_event(None, QUIET)
        ms = await a.ok({"type": "members", "room": room})
        assert bo in [m["user"] for m in ms["members"]]
        # leave keeps membership: b may still send, and catches up with since
        await b.ok({"type": "send", "room": room, "text": "still member"}, "ack")
        await b.ok({"type": "join", "room": room, "since": 0})
        assert [m["text"] for m in await b.messages(2)] == ["after leave", "still member"]
        # leaving a room one has not joined is harmless
        r = await c.rpc({"type": "leave", "room": uniq("never")})
        assert r["type"] == "left"
        await close_all(a, b, c)
    run(go())


def test_part_owner_refused_member_leaves(server):
    """§3 part: parted {room}; the owner must hand over first (forbidden); a
    member stops being a member, the others get `member left`, and that
    user's connections stop receiving the room."""
    async def go():
        al, bo = uniq("al"), uniq("bo")
        a, b = await clients(server, al, bo)
        b2 = await connect(server, bo)
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await a.ok({"type": "join", "room": room})
        await b.ok({"type": "join", "room": room})
        await b2.ok({"type": "join", "room": room})
        await a.next_event("member")
        await a.err({"type": "part", "room": room}, "forbidden")
        r = await b.rpc({"type": "part", "room": room})
        assert r == {"type": "parted", "room": room, "ref": r["ref"]}
        ev = await a.next_event("member")
        assert ev == {"type": "member", "room": room, "user": bo, "event": "left"}
        ms = await a.ok({"type": "members", "room": room})
        assert [m["user"] for m in ms["members"]] == [al]
        rooms = await b.ok({"type": "rooms"})
        assert room not in [x["id"] for x in rooms["rooms"]]
        await a.ok({"type": "send", "room": room, "text": "gone?"})
        await b.no_event("message", QUIET)
        await b2.no_event("message", 0)
        await b.err({"type": "send", "room": room, "text": "x"}, "not_member")
        await b.err({"type": "part", "room": room}, "not_member")
        await a.err({"type": "part", "room": uniq("nope")}, "not_found")
        await close_all(a, b, b2)
    run(go())


# ---------------------------------------------------------------- send

def test_send_ack_and_message_fields(server):
    """§3 send: ack {room, id, seq, ts}; §4 message {room, id, seq, from,
    text, ts, cid?} to every joined connection, the sender's included."""
    async def go():
        al, bo = uniq("al"), uniq("bo")
        a, b = await clients(server, al, bo)
        a2 = await connect(server, al)   # another connection of the sender, not joined
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await a.ok({"type": "join", "room": room})
        await b.ok({"type": "join", "room": room})
        text = "héllo 👋 \"quoted\" \n line"
        ack = await a.rpc({"type": "send", "room": room, "text": text, "cid": "c-1"})
        assert set(ack) == {"type", "room", "id", "seq", "ts", "ref"}, ack
        assert ack["type"] == "ack" and ack["room"] == room and ack["seq"] == 1
        assert ack["id"].isdigit() and abs(ack["ts"] - now_ms()) < 60000
        for c in (a, b):
            m = await c.next_event("message")
            check_message(m, room, al, text, seq=1, cid="c-1")
            assert (m["id"], m["ts"]) == (ack["id"], ack["ts"])
        await a2.no_event("message", QUIET)  # not joined: nothing
        ack2 = await a.ok({"type": "send", "room": room, "text": "no cid"}, "ack")
        assert ack2["seq"] == 2 and int(ack2["id"]) > int(ack["id"]) and ack2["ts"] >= ack["ts"]
        m = await b.next_event("message")
        check_message(m, room, al, "no cid", seq=2)
        # errors
        await a.err({"type": "send", "room": room, "text": ""}, "bad_request")
        await a.err({"type": "send", "room": uniq("nope"), "text": "x"}, "not_found")
        await a.err({"type": "send", "room": room, "text": "x", "cid": ""}, "bad_request")
        await a.err({"type": "send", "room": room, "text": "x", "cid": "c" * 65}, "bad_request")
        await a.err({"type": "send", "room": room, "text": "x", "cid": 7}, "bad_request")
        await a.err({"type": "send", "room": room}, "bad_request")
        await a.err({"type": "send", "text": "x"}, "bad_request")
        ok = await a.ok({"type": "send", "room": room, "text": "x", "cid": "c" * 64}, "ack")
        assert ok["seq"] == 3
        await close_all(a, a2, b)
    run(go())


def test_send_with_unknown_attachment_refused_not_dropped(server):
    """§3 send with attachments: an attachment id that is no upload is
    refused (not_found) instead of storing the text without the image, and
    no message is created."""
    async def go():
        al = uniq("al")
        (a,) = await clients(server, al)
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await a.ok({"type": "join", "room": room})
        await a.err({"type": "send", "room": room, "text": "pic", "attachments": [{"id": "x"}]}, "not_found")
        ok = await a.ok({"type": "send", "room": room, "text": "after"}, "ack")
        assert ok["seq"] == 1  # the refused send took no seq
        await close_all(a)
    run(go())


def test_message_mentions(server):
    """§4 message: `mentions` lists the names mentioned as @name who are
    members of the room (non-members are left out)."""
    async def go():
        al, bo = uniq("al"), uniq("bo")
        a, b = await clients(server, al, bo)
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await a.ok({"type": "join", "room": room})
        await b.ok({"type": "join", "room": room})
        await a.ok({"type": "send", "room": room, "text": "hi @%s and @nobody_here" % bo})
        m = await b.next_event("message")
        assert m.get("mentions") == [bo]
    run(go())


# ---------------------------------------------------------------- dm

def test_dm_room_and_delivery_to_every_connection(server):
    """§3 dm: ack whose room is dm:<a>:<b> with the names sorted; every
    connection of both users receives it without joining, a second
    connection of the recipient and one opened later included (§3 last
    paragraph); the room is a `dm` room of both."""
    async def go():
        zed, amy = uniq("zed"), uniq("amy")   # sender sorts after recipient
        z = await connect(server, zed)
        a1 = await connect(server, amy)
        a2 = await connect(server, amy)
        ack = await z.rpc({"type": "dm", "to": amy, "text": "psst", "cid": "d1"})
        room = "dm:%s:%s" % (amy, zed)
        assert set(ack) == {"type", "room", "id", "seq", "ts", "ref"}, ack
        assert (ack["type"], ack["room"], ack["seq"]) == ("ack", room, 1)
        for c in (z, a1, a2):
            m = await c.next_event("message")
            check_message(m, room, zed, "psst", seq=1, cid="d1")
            assert m["id"] == ack["id"]
        # a connection opened afterwards gets later dms, without joining
        a3 = await connect(server, amy)
        ack = await a1.ok({"type": "dm", "to": zed, "text": "back"}, "ack")
        assert ack["room"] == room and ack["seq"] == 2
        for c in (z, a1, a2, a3):
            m = await c.next_event("message")
            check_message(m, room, amy, "back", seq=2)
        for c in (z, a1):
            rooms = await c.ok({"type": "rooms"})
            mine = [x for x in rooms["rooms"] if x["id"] == room]
            assert len(mine) == 1 and mine[0]["kind"] == "dm"
        ms = await z.ok({"type": "members", "room": room})
        assert sorted((m["user"], m["role"]) for m in ms["members"]) == [(amy, "member"), (zed, "member")]
        h = await a3.ok({"type": "history", "room": room})
        assert [m["text"] for m in h["messages"]] == ["psst", "back"]
        await z.err({"type": "part", "room": room}, "forbidden")
        await close_all(z, a1, a2, a3)
    run(go())


def test_dm_errors(server):
    """§3 dm: to an unknown user not_found, to oneself or a bad name
    bad_request; too-long text too_large."""
    async def go():
        al = uniq("al")
        a, = await clients(server, al)
        await a.err({"type": "dm", "to": uniq("ghost"), "text": "x"}, "not_found")
        await a.err({"type": "dm", "to": al, "text": "x"}, "bad_request")
        await a.err({"type": "dm", "to": "bad name", "text": "x"}, "bad_request")
        await a.err({"type": "dm", "to": al, "text": ""}, "bad_request")
        await a.err({"type": "dm", "text": "x"}, "bad_request")
        await a.err({"type": "dm", "to": 5, "text": "x"}, "bad_request")
        await a.err({"type": "create", "room": "dm:%s:zz" % al, "kind": "public"}, "bad_request")
        await a.ok({"type": "ping"}, "pong")
        await close_all(a)
    run(go())


# ---------------------------------------------------------------- history

@pytest.mark.parametrize("ring", ["512", "4"], ids=["ring", "store"])
def test_history_pages_and_bounds(make_server, ring):
    """§3 history: the newest page without a cursor, before/after pages,
    limit 1..100 (default 50), has_more, oldest first; out-of-range numbers
    and before+after are bad_request. Run with a ring that holds all the
    messages and with --room-ring 4 (the store answers)."""
    srv = make_server("--room-ring", ring)

    async def go():
        al = uniq("al")
        a, = await clients(srv, al)
        room = uniq("h")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await a.ok({"type": "join", "room": room})
        acks = await send_many(a, room, 120)
        ids = {x["seq"]: x["id"] for x in acks}
        live = {m["seq"]: m for m in a.drain("message")}

        async def page(**kw):
            r = await a.ok(dict({"type": "history", "room": room}, **kw), "history")
            assert set(r) == {"type", "room", "messages", "has_more", "ref"}, r
            assert r["room"] == room
            for m in r["messages"]:
                assert set(m) == MSG_KEYS - {"type"}
                assert m["id"] == ids[m["seq"]] and m["text"] == "m%d" % (m["seq"] - 1)
                if m["seq"] in live:
                    assert dict(m, type="message") == live[m["seq"]]
            return [m["seq"] for m in r["messages"]], r["has_more"]

        assert await page() == (list(range(71, 121)), True)
        assert await page(limit=10) == (list(range(111, 121)), True)
        assert await page(limit=100) == (list(range(21, 121)), True)
        assert await page(limit=1) == ([120], True)
        assert await page(before=11, limit=5) == ([6, 7, 8, 9, 10], True)
        assert await page(before=4, limit=10) == ([1, 2, 3], False)
        assert await page(before=1) == ([], False)
        assert await page(before=500, limit=2) == ([119, 120], True)
        assert await page(after=110, limit=5) == ([111, 112, 113, 114, 115], True)
        assert await page(after=115, limit=10) == ([116, 117, 118, 119, 120], False)
        assert await page(after=120) == ([], False)
        assert await page(after=0, limit=3) == ([1, 2, 3], True)
        assert await page(after=20, limit=100) == (list(range(21, 121)), False)
        for bad in ({"limit": 0}, {"limit": 101}, {"limit": -1}, {"limit": "5"}, {"limit": 2.5},
                    {"before": 0}, {"before": -3}, {"after": -1}, {"after": "1"},
                    {"before": 10, "after": 2}):
            await a.err(dict({"type": "history", "room": room}, **bad), "bad_request")
        await a.err({"type": "history", "room": uniq("nope")}, "not_found")
        await a.err({"type": "history"}, "bad_request")
        # an empty room
        empty = uniq("e")
        await a.ok({"type": "create", "room": empty, "kind": "public"})
        r = await a.ok({"type": "history", "room": empty}, "history")
        assert (r["messages"], r["has_more"]) == ([], False)
        await close_all(a)
    run(go(), timeout=20 * SLOW)


def test_history_after_huge_is_harmless(make_server):
    """§3 history / §5.6: `after` up to 2^63-1 passes the front end's range
    check; the answer must be an empty page (or bad_request), never a crash
    or has_more:true, and the server must keep serving."""
    srv = make_server()

    async def go():
        a, = await clients(srv, uniq("al"))
        room = uniq("h")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await a.ok({"type": "send", "room": room, "text": "one"})
        r = await a.rpc({"type": "history", "room": room, "after": 2 ** 63 - 1})
        if r["type"] == "error":
            assert r["code"] == "bad_request"
        else:
            assert (r["messages"], r["has_more"]) == ([], False)
        await a.ok({"type": "ping"}, "pong")
    try:
        run(go())
    finally:
        # a sanitizer abort is this test's failure, not a teardown error
        report = srv.sanitizer_report()
        srv.kill()
        srv.stderr_path = "/dev/null"
        assert not report, report[-3000:]


# ---------------------------------------------------------------- rooms

def test_rooms_unread_last_read_last_message_and_directory(server):
    """§3 rooms: the caller's rooms with {id, kind, title, seq, last_read,
    unread, last_message}; rooms public:true lists the public directory
    (public rooms only, members or not)."""
    async def go():
        al, bo = uniq("al"), uniq("bo")
        a, b = await clients(server, al, bo)
        pub, priv, empty = uniq("pub"), uniq("priv"), uniq("empty")
        await a.ok({"type": "create", "room": pub, "kind": "public", "title": "The pub"})
        await a.ok({"type": "create", "room": priv, "kind": "private", "title": "Secret"})
        await a.ok({"type": "create", "room": empty, "kind": "public"})
        acks = await send_many(a, pub, 5)
        await a.ok({"type": "read", "room": pub, "seq": 2})
        r = await a.ok({"type": "rooms"}, "rooms")
        assert set(r) == {"type", "rooms", "ref"}
        mine = {x["id"]: x for x in r["rooms"]}
        assert set(mine) == {pub, priv, empty}
        for x in mine.values():
            assert set(x) == {"id", "kind", "title", "seq", "last_read", "unread", "mentions", "last_message"}, x
        p = mine[pub]
        assert (p["kind"], p["title"], p["seq"], p["last_read"], p["unread"]) == \
            ("public", "The pub", 5, 2, 3)
        lm = p["last_message"]
        assert set(lm) == MSG_KEYS - {"type"}
        assert (lm["seq"], lm["id"], lm["from"], lm["text"], lm["room"]) == \
            (5, acks[4]["id"], al, "m4", pub)
        q = mine[priv]
        assert (q["kind"], q["title"], q["seq"], q["last_read"], q["unread"], q["last_message"]) == \
            ("private", "Secret", 0, 0, 0, None)
        assert mine[empty]["title"] == "" and mine[empty]["last_message"] is None
        # bob is in none of them; the directory shows the public ones
        r = await b.ok({"type": "rooms"}, "rooms")
        assert r["rooms"] == []
        d = await b.ok({"type": "rooms", "public": True}, "rooms")
        listed = {x["id"]: x for x in d["rooms"]}
        assert pub in listed and empty in listed and priv not in listed
        assert all(x["kind"] == "public" for x in d["rooms"])
        assert (listed[pub]["title"], listed[pub]["seq"]) == ("The pub", 5)
        assert {"id", "kind", "title", "seq"} <= set(listed[pub])
        await close_all(a, b)
    run(go())


def test_rooms_last_message_without_ring(make_server):
    """§3 rooms: last_message is the room's newest message, whatever
    --room-ring is."""
    srv = make_server("--room-ring", "0")

    async def go():
        a, = await clients(srv, uniq("al"))
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        ack = await a.ok({"type": "send", "room": room, "text": "only"}, "ack")
        r = await a.ok({"type": "rooms"})
        x = [x for x in r["rooms"] if x["id"] == room][0]
        assert x["seq"] == 1
        assert x["last_message"] is not None and x["last_message"]["id"] == ack["id"]
    run(go())


# ---------------------------------------------------------------- create

def test_create_conflict_kinds_and_bad_ids(server):
    """§3 create: kinds public and private only; a duplicate id is conflict;
    dm: ids are reserved (bad_request); ids follow §1; titles are bounded."""
    async def go():
        al, bo = uniq("al"), uniq("bo")
        a, b = await clients(server, al, bo)
        room = uniq("c")
        r = await a.rpc({"type": "create", "room": room, "kind": "public", "title": "T"})
        assert r == {"type": "created", "room": room, "kind": "public", "ref": r["ref"]}
        await a.err({"type": "create", "room": room, "kind": "public"}, "conflict")
        await b.err({"type": "create", "room": room, "kind": "private"}, "conflict")
        room2 = uniq("c")
        r = await b.ok({"type": "create", "room": room2, "kind": "private"}, "created")
        assert r["kind"] == "private"
        for kind in ("dm", "secret", "", "PUBLIC"):
            await a.err({"type": "create", "room": uniq("k"), "kind": kind}, "bad_request")
        await a.err({"type": "create", "room": uniq("k"), "kind": 1}, "bad_request")
        await a.err({"type": "create", "room": uniq("k")}, "bad_request")
        await a.err({"type": "create", "room": "dm:a:b", "kind": "public"}, "bad_request")
        await a.err({"type": "create", "room": "has space", "kind": "public"}, "bad_request")
        await a.err({"type": "create", "room": "", "kind": "public"}, "bad_request")
        await a.err({"type": "create", "room": "y" * 65, "kind": "public"}, "bad_request")
        r = await a.ok({"type": "create", "room": "Ok_.:-" + uniq("z"), "kind": "public"}, "created")
        r = await a.ok({"type": "create", "room": ("L" * 60 + uniq("")) [:64], "kind": "public"}, "created")
        await a.err({"type": "create", "room": uniq("t"), "kind": "public", "title": "t" * 201}, "too_large")
        await a.err({"type": "create", "room": uniq("t"), "kind": "public", "title": 5}, "bad_request")
        await a.ok({"type": "create", "room": uniq("t"), "kind": "public", "title": "t" * 200}, "created")
        await close_all(a, b)
    run(go())


# ---------------------------------------------------------------- invite, kick, role

async def _private_room(server, n_members=0, n_admins=0):
    """A private room with an owner, admins and members, all joined.
    Returns (room, owner, [admins], [members])."""
    room = uniq("pr")
    o = await connect(server, uniq("own"))
    await o.ok({"type": "create", "room": room, "kind": "private"})
    await o.ok({"type": "join", "room": room})
    admins, members = [], []
    for i in range(n_admins + n_members):
        c = await connect(server, uniq("adm" if i < n_admins else "mem"))
        await o.ok({"type": "invite", "room": room, "user": c.user}, "invited")
        if i < n_admins:
            await o.ok({"type": "role", "room": room, "user": c.user, "role": "admin"}, "role_ok")
            admins.append(c)
        else:
            members.append(c)
        await c.ok({"type": "join", "room": room}, "joined")
    # Events of one room reach a connection in order: once everyone has the
    # last invitation (the owner and earlier joiners through the room, the
    # invitee directly), every setup event has arrived, and draining leaves
    # none to arrive late in the test itself.
    everyone = [o] + admins + members
    if len(everyone) > 1:
        last = everyone[-1]
        for c in everyone:
            await c.next_event("member", pred=lambda f: f["user"] == last.user and f["event"] == "invited")
    for c in everyone:
        c.drain()
    return room, o, admins, members


def test_invite_private_owner_admin_only(server):
    """§3 invite: invited {room, user}; in a private room only the owner or
    an admin may invite (a member gets forbidden, a non-member forbidden:
    the room is invisible); the invitee and the joined members get `member
    invited`; the invitee may then join and read."""
    async def go():
        room, o, (adm,), (mem,) = await _private_room(server, n_members=1, n_admins=1)
        x1, x2, x3 = await clients(server, uniq("x"), uniq("x"), uniq("x"))
        r = await o.rpc({"type": "invite", "room": room, "user": x1.user})
        assert r == {"type": "invited", "room": room, "user": x1.user, "ref": r["ref"]}
        ev = {"type": "member", "room": room, "user": x1.user, "event": "invited"}
        assert await x1.next_event("member") == ev
        for c in (o, adm, mem):
            assert await c.next_event("member") == ev
        r = await adm.ok({"type": "invite", "room": room, "user": x2.user}, "invited")
        assert await x2.next_event("member") == dict(ev, user=x2.user)
        await mem.err({"type": "invite", "room": room, "user": x3.user}, "forbidden")
        await x3.err({"type": "invite", "room": room, "user": x3.user}, "forbidden")
        await x3.err({"type": "join", "room": room}, "forbidden")
        await x3.no_event("member", QUIET)
        # the invitee is a member now
        await o.ok({"type": "send", "room": room, "text": "welcome"})
        r = await x1.ok({"type": "join", "room": room, "since": 0}, "joined")
        assert [m["text"] for m in await x1.messages(1)] == ["welcome"]
        ms = await o.ok({"type": "members", "room": room})
        assert {m["user"]: m["role"] for m in ms["members"]}[x1.user] == "member"
        # inviting a member again: invited, no event; unknown users not_found
        o.drain()
        await o.ok({"type": "invite", "room": room, "user": x1.user}, "invited")
        await o.no_event("member", QUIET)
        await o.err({"type": "invite", "room": room, "user": uniq("ghost")}, "not_found")
        await o.err({"type": "invite", "room": room, "user": "bad name"}, "bad_request")
        await o.err({"type": "invite", "room": room}, "bad_request")
        await close_all(o, adm, mem, x1, x2, x3)
    run(go())


def test_invite_public_by_member(server):
    """§3 invite: the owner/admin restriction is for private rooms; a member
    of a public room may invite; a non-member may not (not_member)."""
    async def go():
        a, b, c, d = await clients(server, uniq("al"), uniq("bo"), uniq("ca"), uniq("da"))
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await b.ok({"type": "join", "room": room})
        await b.ok({"type": "invite", "room": room, "user": c.user}, "invited")
        await d.err({"type": "invite", "room": room, "user": c.user}, "not_member")
        ms = await a.ok({"type": "members", "room": room})
        assert sorted(m["user"] for m in ms["members"]) == sorted([a.user, b.user, c.user])
        await close_all(a, b, c, d)
    run(go())


def test_kick_rules_and_effects(server):
    """§3 kick: kicked {room, user}; the owner may kick anyone else, an admin
    only members (owner or admin: forbidden), a member nobody; the kicked
    user's connections get `member kicked` and then no more room events,
    and it is no longer a member."""
    async def go():
        room, o, (a1, a2), (m1, m2) = await _private_room(server, n_members=2, n_admins=2)
        await a1.err({"type": "kick", "room": room, "user": o.user}, "forbidden")
        await a1.err({"type": "kick", "room": room, "user": a2.user}, "forbidden")
        await m1.err({"type": "kick", "room": room, "user": m2.user}, "forbidden")
        await m1.err({"type": "kick", "room": room, "user": a1.user}, "forbidden")
        await o.err({"type": "kick", "room": room, "user": o.user}, "bad_request")
        r = await a1.rpc({"type": "kick", "room": room, "user": m1.user})
        assert r == {"type": "kicked", "room": room, "user": m1.user, "ref": r["ref"]}
        ev = {"type": "member", "room": room, "user": m1.user, "event": "kicked"}
        for c in (o, a1, a2, m2, m1):
            assert await c.next_event("member") == ev
        await m1.no_event("member", QUIET)  # exactly once
        await o.ok({"type": "send", "room": room, "text": "after kick"})
        assert (await m2.next_event("message"))["text"] == "after kick"
        await m1.no_event("message", QUIET)
        await m1.err({"type": "send", "room": room, "text": "x"}, "not_member")
        await m1.err({"type": "history", "room": room}, "forbidden")
        await m1.err({"type": "join", "room": room}, "forbidden")
        await a1.err({"type": "kick", "room": room, "user": m1.user}, "not_member")
        # the owner kicks an admin
        r = await o.ok({"type": "kick", "room": room, "user": a2.user}, "kicked")
        assert await a2.next_event("member", pred=lambda e: e["event"] == "kicked") == \
            dict(ev, user=a2.user)
        ms = await o.ok({"type": "members", "room": room})
        assert sorted(m["user"] for m in ms["members"]) == sorted([o.user, a1.user, m2.user])
        await o.err({"type": "kick", "room": room, "user": uniq("ghost")}, "not_found")
        await close_all(o, a1, a2, m1, m2)
    run(go())


def test_kick_of_non_member_target(server):
    """§3 kick: a target that is not a member is not_member."""
    async def go():
        room, o, _, (m1,) = await _private_room(server, n_members=1)
        x, = await clients(server, uniq("x"))
        await o.err({"type": "kick", "room": room, "user": x.user}, "not_member")
        await close_all(o, m1, x)
    run(go())


def test_role_owner_only_and_handover(server):
    """§3 role: role_ok {room, user, role}; owner only (admin and member get
    forbidden); giving `owner` hands ownership over and makes the previous
    owner an admin, who may then part."""
    async def go():
        room, o, (a1,), (m1, m2) = await _private_room(server, n_members=2, n_admins=1)
        r = await o.rpc({"type": "role", "room": room, "user": m1.user, "role": "admin"})
        assert r == {"type": "role_ok", "room": room, "user": m1.user, "role": "admin", "ref": r["ref"]}
        await a1.err({"type": "role", "room": room, "user": m2.user, "role": "admin"}, "forbidden")
        await m2.err({"type": "role", "room": room, "user": m2.user, "role": "owner"}, "forbidden")
        await o.err({"type": "role", "room": room, "user": m2.user, "role": "king"}, "bad_request")
        await o.err({"type": "role", "room": room, "user": m2.user}, "bad_request")
        await o.err({"type": "role", "room": room, "user": o.user, "role": "member"}, "bad_request")
        await o.ok({"type": "role", "room": room, "user": m1.user, "role": "member"}, "role_ok")
        r = await o.ok({"type": "role", "room": room, "user": a1.user, "role": "owner"}, "role_ok")
        assert r["role"] == "owner"
        ms = await a1.ok({"type": "members", "room": room})
        roles = {m["user"]: m["role"] for m in ms["members"]}
        assert roles == {o.user: "admin", a1.user: "owner", m1.user: "member", m2.user: "member"}
        await o.err({"type": "role", "room": room, "user": m2.user, "role": "admin"}, "forbidden")
        await a1.ok({"type": "role", "room": room, "user": m2.user, "role": "admin"}, "role_ok")
        await a1.err({"type": "part", "room": room}, "forbidden")
        await o.ok({"type": "part", "room": room}, "parted")
        x, = await clients(server, uniq("x"))
        await a1.err({"type": "role", "room": room, "user": x.user, "role": "admin"}, "not_member")
        await close_all(o, a1, m1, m2, x)
    run(go())


# ---------------------------------------------------------------- members

def test_members_role_and_online(server):
    """§3 members: members {room, members:[{user, role, online}]}."""
    async def go():
        room, o, (a1,), (m1,) = await _private_room(server, n_members=1, n_admins=1)
        r = await o.rpc({"type": "members", "room": room})
        assert set(r) == {"type", "room", "members", "ref"} and r["room"] == room
        for m in r["members"]:
            assert set(m) == {"user", "role", "online"}
        assert {m["user"]: (m["role"], m["online"]) for m in r["members"]} == \
            {o.user: ("owner", True), a1.user: ("admin", True), m1.user: ("member", True)}
        await m1.close()
        deadline = time.monotonic() + T
        while True:
            r = await o.ok({"type": "members", "room": room})
            online = {m["user"]: m["online"] for m in r["members"]}
            if not online[m1.user] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert online == {o.user: True, a1.user: True, m1.user: False}
        await close_all(o, a1)
    run(go())


# ---------------------------------------------------------------- read

def test_read_never_moves_backwards_and_receipts(server):
    """§3 read: read_ok {room, seq} with the stored last-read seq, which never
    moves backwards; a seq beyond the latest is bad_request; §4 receipt
    {room, user, seq} goes to the room's other connections when it moved."""
    async def go():
        al, bo = uniq("al"), uniq("bo")
        a, b = await clients(server, al, bo)
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await a.ok({"type": "join", "room": room})
        await b.ok({"type": "join", "room": room})
        await send_many(a, room, 6)
        r = await b.rpc({"type": "read", "room": room, "seq": 5})
        assert r == {"type": "read_ok", "room": room, "seq": 5, "ref": r["ref"]}
        assert await a.next_event("receipt") == {"type": "receipt", "room": room, "user": bo, "seq": 5}
        r = await b.ok({"type": "read", "room": room, "seq": 3}, "read_ok")
        assert r["seq"] == 5
        await a.no_event("receipt", QUIET)
        r = await b.ok({"type": "read", "room": room, "seq": 5}, "read_ok")
        assert r["seq"] == 5
        await b.err({"type": "read", "room": room, "seq": 7}, "bad_request")
        await b.err({"type": "read", "room": room, "seq": -1}, "bad_request")
        await b.err({"type": "read", "room": room}, "bad_request")
        await b.err({"type": "read", "room": room, "seq": "6"}, "bad_request")
        r = await b.ok({"type": "read", "room": room, "seq": 6}, "read_ok")
        assert r["seq"] == 6
        assert (await a.next_event("receipt"))["seq"] == 6
        rooms = await b.ok({"type": "rooms"})
        x = [x for x in rooms["rooms"] if x["id"] == room][0]
        assert (x["last_read"], x["unread"]) == (6, 0)
        c, = await clients(server, uniq("ca"))
        await c.err({"type": "read", "room": room, "seq": 1}, "not_member")
        await close_all(a, b, c)
    run(go())


# ---------------------------------------------------------------- typing

def test_typing_to_others_not_sender_rate_limited(server):
    """§3 typing: no reply; the room's other members get typing {room, user},
    the sender does not; at most one per second per room."""
    async def go():
        al, bo, ca = uniq("al"), uniq("bo"), uniq("ca")
        a, b, c = await clients(server, al, bo, ca)
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        for x in (a, b, c):
            await x.ok({"type": "join", "room": room})
        for x, n in ((a, 2), (b, 1)):   # the `member joined` events of the later joiners
            for _ in range(n):
                await x.next_event("member")
        await a.send({"type": "typing", "room": room, "ref": "t1"})
        ev = {"type": "typing", "room": room, "user": al}
        assert await b.next_event("typing") == ev
        assert await c.next_event("typing") == ev
        t0 = time.monotonic()
        await a.send({"type": "typing", "room": room})   # within the second: dropped
        await a.send({"type": "typing", "room": room})
        await a.ok({"type": "ping"}, "pong")
        await a.no_event(None, QUIET)                    # no reply, no echo
        await b.no_event("typing", QUIET)
        await asyncio.sleep(max(0, 1.05 - (time.monotonic() - t0)))
        await a.send({"type": "typing", "room": room})
        assert await b.next_event("typing") == ev
        # a non-member's typing goes nowhere
        d, = await clients(server, uniq("da"))
        await d.send({"type": "typing", "room": room})
        await d.ok({"type": "ping"}, "pong")
        await b.no_event("typing", QUIET)
        await close_all(a, b, c, d)
    run(go())


# ---------------------------------------------------------------- presence

def test_presence_reply_then_events(server):
    """§3 presence: presence {users:[{user, online, last_seen}]}, then §4
    presence {user, online, last_seen} events when a watched user comes
    online (last_seen null) and goes offline (last_seen a ts); a second
    connection does not make a second online event."""
    async def go():
        wa, bo = uniq("wa"), uniq("bo")
        b = await connect(server, bo)       # known to the server
        await b.close()
        w = await connect(server, wa)
        ghost = uniq("ghost")
        t0 = now_ms()
        r = None
        deadline = time.monotonic() + T
        while True:   # b's close reaches the server asynchronously
            r = await w.ok({"type": "presence", "users": [bo, ghost]}, "presence")
            if not r["users"][0]["online"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert set(r) == {"type", "users", "ref"}
        u0, u1 = r["users"]
        assert set(u0) == {"user", "online", "last_seen"}
        assert (u0["user"], u0["online"]) == (bo, False)
        assert isinstance(u0["last_seen"], int) and abs(u0["last_seen"] - t0) < 60000
        assert u1 == {"user": ghost, "online": False, "last_seen": None}
        b1 = await connect(server, bo)
        # b's close may still announce "offline" after w's question made w a
        # watcher (a repeat of what the reply said): the next news is online
        assert await w.next_event("presence", pred=lambda f: f["online"]) == {
            "type": "presence", "user": bo, "online": True, "last_seen": None}
        b2 = await connect(server, bo)
        await w.no_event("presence", QUIET)
        r = await w.ok({"type": "presence", "users": [bo]})
        assert r["users"] == [{"user": bo, "online": True, "last_seen": None}]
        await b1.close()
        await w.no_event("presence", QUIET)              # b2 still online
        before = now_ms()
        await b2.close()
        ev = await w.next_event("presence")
        assert set(ev) == {"type", "user", "online", "last_seen"}
        assert (ev["user"], ev["online"]) == (bo, False)
        assert before - 1000 <= ev["last_seen"] <= now_ms() + 1000
        r = await w.ok({"type": "presence", "users": [bo]})
        assert r["users"] == [{"user": bo, "online": False, "last_seen": ev["last_seen"]}]
        await w.err({"type": "presence", "users": bo}, "bad_request")
        await w.err({"type": "presence", "users": [1]}, "bad_request")
        await w.err({"type": "presence"}, "bad_request")
        await close_all(w)
    run(go())


def test_presence_event_for_never_seen_user(server):
    """§3 presence: "then presence events for those users while connected"
    -- also for a user who had never connected when the watch began."""
    async def go():
        w, = await clients(server, uniq("wa"))
        newbie = uniq("newbie")
        r = await w.ok({"type": "presence", "users": [newbie]})
        assert r["users"] == [{"user": newbie, "online": False, "last_seen": None}]
        n = await connect(server, newbie)
        try:
            ev = await w.next_event("presence", timeout=2 * SLOW)
            assert (ev["user"], ev["online"]) == (newbie, True)
        finally:
            await close_all(w, n)
    run(go())


def test_presence_watch_does_not_create_users(server):
    """§3 dm/invite: a user who never connected is unknown (not_found), also
    after someone asked for their presence."""
    async def go():
        a, = await clients(server, uniq("al"))
        ghost = uniq("ghost")
        room = uniq("priv")
        await a.ok({"type": "create", "room": room, "kind": "private"})
        await a.ok({"type": "presence", "users": [ghost]}, "presence")
        await a.err({"type": "dm", "to": ghost, "text": "boo"}, "not_found")
        await a.err({"type": "invite", "room": room, "user": ghost}, "not_found")
    run(go())


# ---------------------------------------------------------------- bad commands

def test_unknown_and_malformed_commands(server):
    """§3: unknown type or a malformed command (missing fields, wrong types)
    is error bad_request with the command's ref; the connection stays
    usable. A frame that is not a JSON object gets bad_request without ref."""
    async def go():
        a, = await clients(server, uniq("al"))
        room = uniq("pub")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        bad = [
            {"type": "frobnicate"},
            {"type": ""},
            {"type": 5},
            {"room": room},                      # no type
            {"type": "join"},
            {"type": "join", "room": 5},
            {"type": "leave"},
            {"type": "part", "room": None},
            {"type": "send", "room": room, "text": 5},
            {"type": "send", "room": [room], "text": "x"},
            {"type": "dm", "to": "x", "text": None},
            {"type": "history", "room": room, "limit": "10"},
            {"type": "create", "room": room},
            {"type": "invite", "room": room, "user": 3},
            {"type": "kick", "room": room},
            {"type": "role", "room": room, "user": "x", "role": 1},
            {"type": "members"},
            {"type": "read", "room": room, "seq": 1.5},
            {"type": "typing", "room": 5},
            {"type": "presence", "users": {"a": 1}},
        ]
        for i, cmd in enumerate(bad):
            cmd = dict(cmd, ref="bad%d" % i)
            r = await a.rpc(cmd)
            assert r["type"] == "error" and r["code"] == "bad_request", (cmd, r)
            assert set(r) == {"type", "code", "message", "ref"} and r["message"], r
        for raw in ("{not json", "[1,2]", "\"str\"", "42", "", '{"type":"ping","type":"ping"}'):
            await a.send(raw)
            e = await a.next_event("error")
            assert e["code"] == "bad_request" and "ref" not in e, (raw, e)
        await a.send(b"\x00\x01binary")
        e = await a.next_event("error")
        assert e["code"] == "bad_request"
        # unknown fields are ignored
        await a.ok({"type": "ping", "extra": {"x": [1]}}, "pong")
        await a.ok({"type": "send", "room": room, "text": "still here", "zzz": 1}, "ack")
        await close_all(a)
    run(go())
