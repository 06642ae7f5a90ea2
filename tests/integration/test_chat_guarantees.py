"""PROTOCOL.md §5 (delivery guarantees) through real clients against the real
server (2 workers, as the harness starts it): order, no silent loss, the
catch-up seam under load, idempotency, slow consumers, bad input, and
durability across kill -9 and SIGTERM restarts in sync and async mode.
Every wait is bounded; waits scale with conftest.SLOW."""
import asyncio
import pathlib

import pytest

from chatclient import QUIET, T, connect, run, uniq
from conftest import CLUSTER, SLOW, Server, _finish_all
from wsraw import OP_CLOSE, OP_TEXT, Closed, RawWS, parse_close

FAST = ("--rate", "1000000", "--burst", "1000000")  # no rate limiting in load tests


async def send_pipelined(c, room, texts, cid_prefix=None, window=None):
    """Sends texts in order (at most `window` unanswered at a time, or all at
    once) and returns the acks in send order."""
    acks, pending = [], []
    for i, text in enumerate(texts):
        cmd = {"type": "send", "room": room, "text": text}
        if cid_prefix:
            cmd["cid"] = "%s%d" % (cid_prefix, i)
        pending.append(await c.send_ref(cmd))
        if window and len(pending) >= window:
            acks.append(await c.reply(pending.pop(0)))
    for ref in pending:
        acks.append(await c.reply(ref))
    for a in acks:
        assert a["type"] == "ack", a
    return acks


async def history_all(c, room):
    """Every message of the room, oldest first, paging with `after`."""
    out, after = [], 0
    while True:
        r = await c.ok({"type": "history", "room": room, "after": after, "limit": 100}, "history")
        out += r["messages"]
        if not r["has_more"]:
            return out
        after = out[-1]["seq"]


async def collect_until(c, room, last_seq, timeout):
    """message frames of room until one with seq >= last_seq arrives."""
    got = []
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not got or got[-1]["seq"] < last_seq:
        got.append(await c.next_event("message", max(0.01, end - loop.time()),
                                      pred=lambda f: f["room"] == room))
    return got


@pytest.fixture
def restart():
    """restart(srv): a new server on srv's data dir (and flags), stopped by
    the harness at the end."""
    started = []

    def do(srv, *extra):
        s = Server(pathlib.Path(srv.data_dir).parent, list(srv.args) + list(extra),
                   allow_guests=srv.allow_guests, db=srv.db)
        started.append(s)
        return s.start()
    yield do
    _finish_all(started)


# ---------------------------------------------------------------- §5.1 order, §5.2 no loss

def test_order_concurrent_senders_no_gaps_no_duplicates(server):
    """§5.1: 4 concurrent senders x 100 messages into one room, 3 receivers
    (and the senders, who joined too): every connection sees seq 1..400
    strictly increasing without gaps or duplicates, each sender's messages
    in its send order; §5.2: every acked message is in the history with
    its acked id and seq."""
    async def go():
        room = uniq("order")
        owner = await connect(server, uniq("own"))
        await owner.ok({"type": "create", "room": room, "kind": "public"})
        receivers = [await connect(server, uniq("rcv")) for _ in range(3)]
        senders = [await connect(server, uniq("snd")) for _ in range(4)]
        for c in receivers + senders:
            await c.ok({"type": "join", "room": room}, "joined")
        results = await asyncio.gather(*[
            send_pipelined(s, room, ["%s:%d" % (s.user, i) for i in range(100)]) for s in senders])
        all_acks = [a for acks in results for a in acks]
        assert sorted(a["seq"] for a in all_acks) == list(range(1, 401))
        assert len({a["id"] for a in all_acks}) == 400
        for acks in results:   # a connection's sends get increasing seqs
            seqs = [a["seq"] for a in acks]
            assert seqs == sorted(seqs)
        by_seq = {a["seq"]: a for a in all_acks}
        for c in receivers + senders:
            got = await c.messages(400, timeout=T * 2, room=room)
            assert [m["seq"] for m in got] == list(range(1, 401)), c.user
            assert all(m["id"] == by_seq[m["seq"]]["id"] for m in got)
            for s in senders:
                mine = [int(m["text"].split(":")[1]) for m in got if m["from"] == s.user]
                assert mine == list(range(100)), (c.user, s.user)
            await c.no_event("message", 0.1)
        hist = await history_all(receivers[0], room)
        assert [(m["seq"], m["id"]) for m in hist] == [(s, by_seq[s]["id"]) for s in range(1, 401)]
    run(go(), timeout=30 * SLOW)


# ---------------------------------------------------------------- §5.3 catch-up seam

def test_catchup_seam_under_concurrent_load(make_server):
    """§5.3: while 2 senders send continuously, clients join with since=K
    (K older than --room-ring 16, so the store answers first, and K inside
    the ring): each receives every seq > K exactly once and in order, then
    joined {seq} (the messages before it are exactly K+1..seq), then the live
    messages continue without a gap or duplicate."""
    srv = make_server("--room-ring", "16", *FAST)

    async def go():
        room = uniq("seam")
        owner = await connect(srv, uniq("own"))
        await owner.ok({"type": "create", "room": room, "kind": "public"})
        await owner.ok({"type": "send", "room": room, "text": "start"})
        await send_pipelined(owner, room, ["pre%d" % i for i in range(99)])   # seq 1..100
        senders = [await connect(srv, uniq("snd")) for _ in range(2)]
        for s in senders:
            await s.ok({"type": "join", "room": room})
        progress = {"max": 100}
        per_sender = 250

        async def sender(s):
            acks = []
            for i in range(0, per_sender, 5):
                acks += await send_pipelined(s, room, ["%s:%d" % (s.user, j) for j in range(i, i + 5)])
                progress["max"] = max(progress["max"], acks[-1]["seq"])
                await asyncio.sleep(0.002)
            return acks

        async def joiner(wait_for, since_fn):
            while progress["max"] < wait_for:
                await asyncio.sleep(0.005)
            c = await connect(srv, uniq("join"))
            k = since_fn()
            j = await c.ok({"type": "join", "room": room, "since": k}, "joined")
            return c, k, j

        tasks = [asyncio.ensure_future(sender(s)) for s in senders]
        joins = await asyncio.gather(
            joiner(130, lambda: 0),                        # the store, from the start
            joiner(180, lambda: 5),                        # the store
            joiner(250, lambda: 60),                       # the store, then the ring
            joiner(300, lambda: progress["max"] - 4),      # the ring
            joiner(350, lambda: progress["max"] - 40))     # past the ring
        acks = [a for t in await asyncio.gather(*tasks) for a in t]
        final = 100 + 2 * per_sender
        assert sorted(a["seq"] for a in acks) == list(range(101, final + 1))
        assert any(j["seq"] < final - 50 for _, _, j in joins), "joins did not overlap the load"
        ids = {a["seq"]: a["id"] for a in acks}
        for c, k, j in joins:
            got = await collect_until(c, room, final, 4 * T)
            seqs = [m["seq"] for m in got]
            assert seqs == list(range(k + 1, final + 1)), (k, j, seqs[:10])
            before = [m["seq"] for m in got if c.index(m) < c.index(j)]
            assert before == list(range(k + 1, j["seq"] + 1)), (k, j["seq"], before[-5:])
            assert all(m["id"] == ids[m["seq"]] for m in got if m["seq"] > 100)
            await c.no_event("message", 0.1)
    run(go(), timeout=30 * SLOW)


# ---------------------------------------------------------------- §5.4 idempotency

def test_idempotent_send_same_cid(server):
    """§5.4: a send repeated with the same cid by the same user returns the
    first ack (same id, seq, ts) and creates no second message: sequential,
    pipelined before the first commit, from two connections of the same user
    at once, and with a different text; another user's same cid is a new
    message."""
    async def go():
        al = uniq("al")
        a1 = await connect(server, al)
        a2 = await connect(server, al)
        b = await connect(server, uniq("bo"))
        w = await connect(server, uniq("watch"))
        room = uniq("idem")
        await a1.ok({"type": "create", "room": room, "kind": "public"})
        for c in (a1, a2, b, w):
            await c.ok({"type": "join", "room": room})
        first = await a1.ok({"type": "send", "room": room, "text": "one", "cid": "k1"}, "ack")
        again = await a1.ok({"type": "send", "room": room, "text": "one", "cid": "k1"}, "ack")
        other = await a2.ok({"type": "send", "room": room, "text": "changed", "cid": "k1"}, "ack")
        strip = lambda x: {k: v for k, v in x.items() if k != "ref"}
        assert strip(first) == strip(again) == strip(other)
        # pipelined: the second arrives before the first is committed
        r1 = await a1.send_ref({"type": "send", "room": room, "text": "two", "cid": "k2"})
        r2 = await a1.send_ref({"type": "send", "room": room, "text": "two", "cid": "k2"})
        x1, x2 = await a1.reply(r1), await a1.reply(r2)
        assert x1["type"] == "ack" and strip(x1) == strip(x2)
        # two connections of the same user at the same moment
        for n in range(5):
            cmd = {"type": "send", "room": room, "text": "three", "cid": "k3-%d" % n}
            y1, y2 = await asyncio.gather(a1.rpc(dict(cmd)), a2.rpc(dict(cmd)))
            assert y1["type"] == "ack" and strip(y1) == strip(y2), (y1, y2)
        # another user's cid space is separate
        z = await b.ok({"type": "send", "room": room, "text": "mine", "cid": "k1"}, "ack")
        assert z["seq"] != first["seq"]
        hist = await history_all(w, room)
        assert [(m["text"], m.get("cid")) for m in hist] == \
            [("one", "k1"), ("two", "k2")] + [("three", "k3-%d" % n) for n in range(5)] + [("mine", "k1")]
        assert [m["seq"] for m in hist] == list(range(1, 9))
        got = await w.messages(8)
        assert [m["seq"] for m in got] == list(range(1, 9))
        await w.no_event("message", QUIET)
    run(go())


# ---------------------------------------------------------------- §5.5 slow consumers

def test_slow_consumer_closed_others_get_everything(make_server):
    """§5.5: a joined connection that never reads is closed once its unsent
    output passes --out-limit (1008 "slow consumer", or at least the TCP
    connection ends); a normal receiver in the same room gets every message;
    the slow user can reconnect and catch up."""
    srv = make_server("--out-limit", "64k", "--ws-max-message", "32k", *FAST)
    room = uniq("slow")
    size, most = 8000, 1200   # up to 9.6 MB: more than the kernel buffers (tcp_wmem max 4 MB)

    async def go():
        sender = await connect(srv, uniq("snd"))
        await sender.ok({"type": "create", "room": room, "kind": "public"})
        # (the sender, a member, does not join: it only sends, a few at a time,
        # so that a reading client never has more than --out-limit pending)
        good = await connect(srv, uniq("good"))
        await good.ok({"type": "join", "room": room})
        slow = RawWS(srv.port, "/ws?user=slowpoke", rcvbuf=4096)
        try:
            assert slow.recv_json()["type"] == "hello"
            slow.send_json({"type": "join", "room": room, "ref": "j"})
            assert slow.recv_json()["type"] == "joined"
            # from here on the slow client reads nothing; send until the
            # server says it cut it (its log), then a little more
            acks = []
            while len(acks) < most and "slow consumer" not in srv.read_stderr():
                acks += await send_pipelined(sender, room,
                                             [("%05d" % (len(acks) + i)) * (size // 5) for i in range(20)],
                                             window=2)
            acks += await send_pipelined(sender, room, ["tail%d" % i for i in range(20)])
            n = len(acks)
            got = await good.messages(n, timeout=4 * T)
            assert [m["seq"] for m in got] == [a["seq"] for a in acks] == list(range(1, n + 1))
            # the slow one: whatever the kernel buffered, then the end
            outcome, count = "open", 0
            try:
                while True:
                    f = slow.recv_frame(2 * SLOW)
                    if f.opcode == OP_CLOSE:
                        code, reason = parse_close(f.payload)
                        assert (code, reason) == (1008, b"slow consumer")
                        outcome = "closed-1008"
                        break
                    if f.opcode == OP_TEXT:
                        count += 1
            except Closed:
                outcome = "tcp-closed"
            except TimeoutError:
                pass
            assert outcome in ("closed-1008", "tcp-closed"), (outcome, count)
            assert count < n
        finally:
            slow.close()
        # it reconnects and catches up (a backlog smaller than --out-limit:
        # see test_catchup_larger_than_out_limit for a larger one)
        again = await connect(srv, "slowpoke")
        await again.ok({"type": "join", "room": room, "since": n - 25}, "joined")
        assert [m["seq"] for m in await again.messages(25)] == list(range(n - 24, n + 1))
        await sender.ok({"type": "ping"}, "pong")
    run(go(), timeout=30 * SLOW)


def test_catchup_larger_than_out_limit(make_server):
    """§5.5 "it can reconnect and catch up": a reading client that joins
    with since=0 over a backlog bigger than --out-limit (40 x 8 KB against
    64 KiB) receives it all, then joined."""
    srv = make_server("--out-limit", "64k", "--ws-max-message", "32k", *FAST)

    async def go():
        a = await connect(srv, uniq("al"))
        room = uniq("big")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await send_pipelined(a, room, ["%04d" % i * 2000 for i in range(40)], window=2)
        b = await connect(srv, uniq("bo"))
        j = await b.ok({"type": "join", "room": room, "since": 0}, "joined")
        assert j["seq"] == 40
        assert [m["seq"] for m in b.drain("message")] == list(range(1, 41))
    run(go())


# ---------------------------------------------------------------- §5.6 bad input

def test_bad_input_does_not_affect_others(make_server):
    """§5.6: malformed JSON, unknown types, binary frames and an oversize
    frame (1009) from one client never disturb the others: their messages
    all arrive; the misbehaving JSON client gets error frames and stays
    usable; --max-text is counted in bytes (too_large)."""
    srv = make_server("--max-text", "1k", "--ws-max-message", "4k")

    async def go():
        room = uniq("bad")
        a = await connect(srv, uniq("al"))
        b = await connect(srv, uniq("bo"))
        evil = await connect(srv, uniq("ev"))
        for c in (a, b, evil):
            if c is a:
                await a.ok({"type": "create", "room": room, "kind": "public"})
            await c.ok({"type": "join", "room": room})
        for i in range(10):
            await evil.send("{broken" if i % 3 == 0 else ('{"type":"nope%d"}' % i if i % 3 == 1 else b"\x01"))
            await a.ok({"type": "send", "room": room, "text": "ok%d" % i}, "ack")
        for _ in range(10):
            assert (await evil.next_event("error"))["code"] == "bad_request"
        assert [m["text"] for m in await b.messages(10)] == ["ok%d" % i for i in range(10)]
        await evil.ok({"type": "send", "room": room, "text": "x" * 1024}, "ack")
        r = await evil.err({"type": "send", "room": room, "text": "x" * 1025}, "too_large")
        assert "1024" in r["message"]
        await evil.ok({"type": "send", "room": room, "text": "é" * 512}, "ack")       # 1024 bytes
        await evil.err({"type": "send", "room": room, "text": "é" * 513}, "too_large")
        await evil.err({"type": "dm", "to": a.user, "text": "y" * 2000}, "too_large")
        # an oversize frame closes that connection only (1009)
        await evil.send('{"type":"send","room":"%s","text":"%s"}' % (room, "z" * 5000))
        code, _ = await evil.wait_closed(T)
        assert code == 1009
        await a.ok({"type": "send", "room": room, "text": "after"}, "ack")
        got = await b.messages(3)
        assert [m["text"] for m in got] == ["x" * 1024, "é" * 512, "after"]
        await b.no_event("message", QUIET)
    run(go())


def test_rate_limit_per_connection(make_server):
    """§3 limits: with --rate 5 --burst 5 the 6th immediate command is
    rate_limited (with its ref) and does nothing; the bucket refills; another
    connection has its own bucket."""
    srv = make_server("--rate", "5", "--burst", "5")

    async def go():
        room = uniq("rl")
        a = await connect(srv, uniq("al"))
        b = await connect(srv, uniq("bo"))
        refs = [await a.send_ref({"type": "ping"}) for _ in range(5)]
        refs.append(await a.send_ref({"type": "create", "room": room, "kind": "public"}))
        replies = [await a.reply(r) for r in refs]
        assert [r["type"] for r in replies[:5]] == ["pong"] * 5
        assert replies[5]["type"] == "error" and replies[5]["code"] == "rate_limited"
        assert replies[5]["ref"] == refs[5]
        await b.err({"type": "join", "room": room}, "not_found")   # b's bucket is full; the create did nothing
        await asyncio.sleep(0.45)                                 # >= two tokens back
        await a.ok({"type": "create", "room": room, "kind": "public"}, "created")
        # the bucket never holds more than --burst: of 10 immediate commands
        # at most 5 (and one refilled meanwhile) pass, whatever the delay was
        refs = [await a.send_ref({"type": "ping"}) for _ in range(10)]
        kinds = [(await a.reply(r))["type"] for r in refs]
        assert kinds.count("pong") <= 6 and kinds.count("pong") + kinds.count("error") == 10
        assert kinds[-1] == "error"
    run(go())


def test_rooms_per_connection_limit(make_server):
    """§3 limits: --max-rooms-per-conn 2: a third join on one connection is
    refused (too_large) and does not subscribe; leave frees a place; a
    second connection has its own count; dm rooms do not count."""
    srv = make_server("--max-rooms-per-conn", "2")

    async def go():
        a = await connect(srv, uniq("al"))
        a2 = await connect(srv, a.user)
        b = await connect(srv, uniq("bo"))
        rooms = [uniq("r") for _ in range(3)]
        for r in rooms:
            await b.ok({"type": "create", "room": r, "kind": "public"})
        await a.ok({"type": "join", "room": rooms[0]})
        await a.ok({"type": "join", "room": rooms[1]})
        await a.ok({"type": "join", "room": rooms[1]}, "joined")      # already joined: fine
        await a.err({"type": "join", "room": rooms[2]}, "too_large")
        await a2.ok({"type": "join", "room": rooms[2]}, "joined")    # its own count
        await b.ok({"type": "join", "room": rooms[2]})
        await b.ok({"type": "send", "room": rooms[2], "text": "hello"})
        assert (await a2.next_event("message"))["text"] == "hello"
        await a.no_event("message", QUIET)                         # a never subscribed
        await b.ok({"type": "dm", "to": a.user, "text": "dm"})      # dms need no join
        assert (await a.next_event("message"))["text"] == "dm"
        await a.ok({"type": "leave", "room": rooms[0]}, "left")
        await a.ok({"type": "join", "room": rooms[2]}, "joined")
        await a.err({"type": "join", "room": rooms[0]}, "too_large")
    run(go())


# ---------------------------------------------------------------- §5.2 durability (sync)

def test_sync_kill9_keeps_every_acked_message(make_server, restart):
    """§5.2 sync: an ack means committed. 200 acked messages survive kill -9
    with the same id and seq; the room's seq continues at 201; a cid sent
    before the crash gets its first ack again after it."""
    srv = make_server(*FAST)
    room = uniq("dur")

    async def before():
        a = await connect(srv, "alice")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        return await send_pipelined(a, room, ["m%d" % i for i in range(200)], cid_prefix="c")
    acks = run(before(), timeout=20 * SLOW)
    srv.kill()
    srv2 = restart(srv)

    async def after():
        a = await connect(srv2, "alice")
        hist = await history_all(a, room)
        assert [(m["seq"], m["id"], m["text"], m["cid"]) for m in hist] == \
            [(x["seq"], x["id"], "m%d" % i, "c%d" % i) for i, x in enumerate(acks)]
        j = await a.ok({"type": "join", "room": room}, "joined")
        assert j["seq"] == 200
        again = await a.ok({"type": "send", "room": room, "text": "m7", "cid": "c7"}, "ack")
        assert {k: again[k] for k in ("room", "id", "seq", "ts")} == \
            {k: acks[7][k] for k in ("room", "id", "seq", "ts")}
        new = await a.ok({"type": "send", "room": room, "text": "new"}, "ack")
        assert new["seq"] == 201 and int(new["id"]) > max(int(x["id"]) for x in acks)
    run(after(), timeout=20 * SLOW)


def test_sigterm_restart_keeps_rooms_members_roles_reads(make_server, restart):
    """§5.2 / §3: after a clean SIGTERM restart, rooms (kind, title),
    memberships, roles, last_read (rooms.unread), dm rooms (delivered without
    join on new connections) and idempotency keys are all kept."""
    srv = make_server()
    pub, priv = uniq("pub"), uniq("priv")

    async def setup():
        a = await connect(srv, "alice")
        b = await connect(srv, "bob")
        c = await connect(srv, "carol")
        await a.ok({"type": "create", "room": pub, "kind": "public", "title": "Public one"})
        await a.ok({"type": "create", "room": priv, "kind": "private", "title": "Private one"})
        await a.ok({"type": "invite", "room": priv, "user": "bob"})
        await a.ok({"type": "invite", "room": priv, "user": "carol"})
        await a.ok({"type": "role", "room": priv, "user": "bob", "role": "admin"})
        await c.ok({"type": "join", "room": pub})
        await send_pipelined(a, priv, ["p%d" % i for i in range(5)])
        await send_pipelined(a, pub, ["q%d" % i for i in range(3)])
        await b.ok({"type": "read", "room": priv, "seq": 4})
        await c.ok({"type": "read", "room": priv, "seq": 2})
        await c.ok({"type": "read", "room": pub, "seq": 3})
        ack = await b.ok({"type": "dm", "to": "carol", "text": "hey", "cid": "dm1"}, "ack")
        rooms = {}
        for x in (a, b, c):
            rooms[x.user] = sorted((r["id"], r["kind"], r["title"], r["seq"], r["last_read"], r["unread"])
                                   for r in (await x.ok({"type": "rooms"}))["rooms"])
        members = (await a.ok({"type": "members", "room": priv}))["members"]
        e = await connect(srv, "erin")
        await e.close()
        for _ in range(100):
            seen = (await a.ok({"type": "presence", "users": ["erin"]}))["users"][0]
            if not seen["online"]:
                break
            await asyncio.sleep(0.02)
        assert isinstance(seen["last_seen"], int), seen
        return ack, rooms, {m["user"]: m["role"] for m in members}, seen
    ack, rooms, roles, erin = run(setup())
    assert srv.stop() == 0
    srv2 = restart(srv)

    async def after():
        a = await connect(srv2, "alice")
        b = await connect(srv2, "bob")
        c = await connect(srv2, "carol")
        for x in (a, b, c):
            got = sorted((r["id"], r["kind"], r["title"], r["seq"], r["last_read"], r["unread"])
                         for r in (await x.ok({"type": "rooms"}))["rooms"])
            assert got == rooms[x.user], x.user
        assert ("dm:bob:carol", "dm", "", 1, 0, 1) in rooms["carol"]
        assert (priv, "private", "Private one", 5, 4, 1) in rooms["bob"]
        members = (await a.ok({"type": "members", "room": priv}))["members"]
        assert {m["user"]: m["role"] for m in members} == roles == \
            {"alice": "owner", "bob": "admin", "carol": "member"}
        # the rules still apply with the restored roles
        await c.err({"type": "invite", "room": priv, "user": "alice"}, "forbidden")
        await b.ok({"type": "kick", "room": priv, "user": "carol"}, "kicked")
        await a.err({"type": "part", "room": priv}, "forbidden")
        # read never moves backwards across the restart either
        assert (await b.ok({"type": "read", "room": priv, "seq": 1}))["seq"] == 4
        # dm: delivered without join, and its cid still known
        again = await b.ok({"type": "dm", "to": "carol", "text": "hey", "cid": "dm1"}, "ack")
        assert {k: again[k] for k in ("room", "id", "seq", "ts")} == \
            {k: ack[k] for k in ("room", "id", "seq", "ts")}
        await b.ok({"type": "dm", "to": "carol", "text": "after restart"}, "ack")
        m = await c.next_event("message")
        assert (m["room"], m["seq"], m["text"]) == ("dm:bob:carol", 2, "after restart")
        # presence: last_seen survives the restart
        r = await a.ok({"type": "presence", "users": ["erin"]})
        assert r["users"] == [erin]
        d = await connect(srv2, "dave")
        d2 = (await d.ok({"type": "rooms", "public": True}))["rooms"]
        assert [(r["id"], r["title"]) for r in d2 if r["id"] in (pub, priv)] == [(pub, "Public one")]
    run(after())


# ---------------------------------------------------------------- §5.2 durability (async)

ASYNC = ("--durability", "async", "--flush-ms", "200")


def test_async_acks_and_clean_restart_keeps_all(make_server, restart):
    """§5.2 async: acks come at once; after a clean SIGTERM (which commits
    what is queued) every acked message is in the history."""
    srv = make_server(*ASYNC, *FAST)
    room = uniq("as")

    async def before():
        a = await connect(srv, "alice")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await a.ok({"type": "join", "room": room})
        acks = await send_pipelined(a, room, ["m%d" % i for i in range(200)], cid_prefix="c")
        assert [m["seq"] for m in await a.messages(200)] == list(range(1, 201))
        return acks
    acks = run(before(), timeout=20 * SLOW)
    assert srv.stop() == 0        # right away: the last writes are still queued
    srv2 = restart(srv)

    async def after():
        a = await connect(srv2, "alice")
        hist = await history_all(a, room)
        assert [(m["seq"], m["id"]) for m in hist] == [(x["seq"], x["id"]) for x in acks]
        again = await a.ok({"type": "send", "room": room, "text": "m3", "cid": "c3"}, "ack")
        assert (again["id"], again["seq"]) == (acks[3]["id"], acks[3]["seq"])
    run(after(), timeout=20 * SLOW)


def test_async_kill9_loses_at_most_the_flush_window(make_server, restart):
    """§5.2 async: after kill -9, what was acked more than a flush window
    before the crash is there; at most the last window is lost; the kept
    messages are a prefix (seq 1..M, same ids as acked) and the room's seq
    goes on at M+1, so seq stays gapless.

    Observed (release and ASan builds, --flush-ms 200): batch A (100
    messages, then 5 flush windows of quiet) always survives; of batch B
    (100 messages pipelined, kill -9 as soon as the last ack arrived) none
    or only a prefix survives -- typically M == 100, sometimes a few more
    when a flush fell inside batch B. A client that saw live seqs > M before
    the crash will see those seqs again for new messages (different ids):
    the documented async trade-off."""
    srv = make_server(*ASYNC, *FAST)
    room = uniq("ak")

    async def before():
        a = await connect(srv, "alice")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        acks = await send_pipelined(a, room, ["a%d" % i for i in range(100)])
        await asyncio.sleep(1.0)          # five flush windows
        acks += await send_pipelined(a, room, ["b%d" % i for i in range(100)])
        return acks
    acks = run(before(), timeout=20 * SLOW)
    srv.kill()
    srv2 = restart(srv)

    async def after():
        a = await connect(srv2, "alice")
        hist = await history_all(a, room)
        m = len(hist)
        assert 100 <= m <= 200
        assert [(h["seq"], h["id"], h["text"]) for h in hist] == \
            [(x["seq"], x["id"], ("a%d" % i) if i < 100 else ("b%d" % (i - 100)))
             for i, x in enumerate(acks[:m])]
        j = await a.ok({"type": "join", "room": room}, "joined")
        assert j["seq"] == m
        new = await a.ok({"type": "send", "room": room, "text": "after"}, "ack")
        # one node: the store's seq goes on (lost seqs are given again); a
        # cluster: Redis kept the counter, so a lost seq is never reused
        nxt = 201 if CLUSTER else m + 1
        assert new["seq"] == nxt
        want = list(range(1, m + 1)) + [nxt]
        for _ in range(50):   # a cluster holds nxt until the gap before it is known lost (2 flush windows + 1 s)
            got = [h["seq"] for h in await history_all(a, room)]
            if got == want or not CLUSTER:
                break
            await asyncio.sleep(0.1)
        assert got == want
        print("async kill -9: %d of 200 acked messages survived" % m)
    run(after(), timeout=20 * SLOW)


def test_async_first_dm_delivered(make_server):
    """§3 (dm) under async durability: the very first direct message (which
    creates the dm room and commits at once) reaches every connection of
    both users without a join."""
    srv = make_server(*ASYNC)

    async def go():
        z = await connect(srv, uniq("zed"))
        a1 = await connect(srv, uniq("amy"))
        a2 = await connect(srv, a1.user)
        ack = await z.ok({"type": "dm", "to": a1.user, "text": "first"}, "ack")
        for c in (z, a1, a2):
            m = await c.next_event("message", 2 * SLOW)
            assert (m["room"], m["seq"], m["id"]) == (ack["room"], 1, ack["id"])
    run(go())


ASYNC_RING = ("--durability", "async", "--flush-ms", "1000", "--room-ring", "16")


def test_async_catchup_older_than_ring_before_flush(make_server):
    """§5.3 with --durability async: join with since older than the ring,
    right after the messages were acked (before the flush), still returns
    every message after since."""
    srv = make_server(*ASYNC_RING, *FAST)

    async def go():
        a = await connect(srv, uniq("al"))
        b = await connect(srv, uniq("bo"))
        room = uniq("acu")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await send_pipelined(a, room, ["m%d" % i for i in range(60)])
        j = await b.ok({"type": "join", "room": room, "since": 0}, "joined")
        assert j["seq"] == 60
        got = b.drain("message")
        assert [m["seq"] for m in got] == list(range(1, 61))
    run(go())


def test_async_history_right_after_ack(make_server):
    """§5.2 "a message that was acked is in the room's history", async mode:
    history asked right after the acks (before the flush) has them all."""
    srv = make_server(*ASYNC_RING, *FAST)

    async def go():
        a = await connect(srv, uniq("al"))
        room = uniq("ahi")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        acks = await send_pipelined(a, room, ["m%d" % i for i in range(60)])
        r = await a.ok({"type": "history", "room": room, "limit": 100}, "history")
        assert [m["id"] for m in r["messages"]] == [x["id"] for x in acks]
    run(go())
