"""Messages and room traffic across the nodes of a cluster (docs/OPERATIONS.md
"Cluster mode"): one seq order for every connection whatever node it is on,
concurrent senders on different nodes, room events and state changes across
nodes, idempotent resends to another node, catch-up after a node is killed."""
import asyncio
import os
import subprocess

import pytest

from chatclient import connect, run, uniq
from conftest import SLOW

# Sync: the store assigns seqs. Async: one Lua script in Redis assigns the
# seq and publishes; the store write follows within --flush-ms.
MODES = {"sync": (), "async": ("--durability", "async", "--flush-ms", "200")}


@pytest.fixture(params=["sync", "async"])
def mode(request):
    return MODES[request.param]


async def settled(c, cmd, want, codes=("not_found", "forbidden")):
    """cmd's reply, retried while it fails with one of codes: a state change
    made on another node (a room created, an invitation) reaches this node
    within milliseconds, not at once (docs/OPERATIONS.md "Cluster mode")."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 3 * SLOW
    while True:
        r = await c.rpc(cmd)
        if r["type"] != "error" or r["code"] not in codes or loop.time() > end:
            assert r["type"] == want, (c.user, cmd, r)
            return r
        await asyncio.sleep(0.02)


async def join_all(clients, room, **kw):
    for c in clients:
        await settled(c, dict({"type": "join", "room": room}, **kw), "joined")


def test_cross_node_delivery_in_one_order(cluster, mode):
    a, b = cluster(2, *mode)

    async def go():
        room = uniq("r")
        alice = await connect(a, uniq("alice"))
        bob = await connect(b, uniq("bob"))
        await alice.ok({"type": "create", "room": room, "kind": "public"}, "created")
        await join_all([alice, bob], room)
        acks = []
        for i in range(20):
            sender = alice if i % 2 == 0 else bob
            acks.append(await sender.ok({"type": "send", "room": room, "text": "m%d" % i}, "ack"))
        seqs = [x["seq"] for x in acks]
        assert seqs == list(range(seqs[0], seqs[0] + 20))      # gapless, in send order
        for c in (alice, bob):
            got = await c.messages(20, timeout=10 * SLOW, room=room)
            assert [m["seq"] for m in got] == seqs
            assert [m["text"] for m in got] == ["m%d" % i for i in range(20)]
    run(go())


def test_concurrent_senders_on_two_nodes(cluster, mode):
    a, b = cluster(2, *mode)
    N = 40

    async def go():
        room = uniq("r")
        owner = await connect(a, uniq("o"))
        await owner.ok({"type": "create", "room": room, "kind": "public"}, "created")
        senders = [await connect(a if i % 2 == 0 else b, uniq("s%d" % i)) for i in range(4)]
        readers = [await connect(a, uniq("ra")), await connect(b, uniq("rb"))]
        await join_all(senders + readers, room)

        async def blast(c, k):
            return [(await c.ok({"type": "send", "room": room, "text": "%d-%d" % (k, j)}, "ack"))["seq"]
                    for j in range(N)]
        acked = await asyncio.gather(*(blast(c, k) for k, c in enumerate(senders)))
        allseqs = sorted(s for l in acked for s in l)
        assert allseqs == list(range(allseqs[0], allseqs[0] + 4 * N))
        views = []
        for r in readers:
            got = await r.messages(4 * N, timeout=20 * SLOW, room=room)
            views.append([(m["seq"], m["text"]) for m in got])
            assert [s for s, _ in views[-1]] == allseqs          # every seq once, in order
        assert views[0] == views[1]                              # the same history on both nodes
        # history from either node agrees
        for c in readers:
            h = await c.ok({"type": "history", "room": room, "limit": 100}, "history")
            assert [(m["seq"], m["text"]) for m in h["messages"]] == views[0][-100:]
    run(go(), timeout=60 * SLOW)


def test_events_and_state_cross_nodes(cluster):
    a, b = cluster(2)

    async def go():
        room = uniq("priv")
        owner_name, guest_name = uniq("owner"), uniq("guest")
        owner = await connect(a, owner_name)
        guest = await connect(b, guest_name)
        await owner.ok({"type": "create", "room": room, "kind": "private"}, "created")
        # the room and its membership are known on b: the invitee joins there
        r = await settled(guest, {"type": "join", "room": room}, "error", codes=("not_found",))
        assert r["code"] == "forbidden"
        # (the guest's first connection reaches a as a user notice: retried on not_found)
        await settled(owner, {"type": "invite", "room": room, "user": guest_name}, "invited", codes=("not_found",))
        ev = await guest.next_event("member", timeout=5 * SLOW)           # a user event across nodes
        assert ev["event"] == "invited" and ev["room"] == room
        await settled(guest, {"type": "join", "room": room}, "joined")
        await owner.ok({"type": "join", "room": room}, "joined")
        # typing and receipts cross
        await guest.send({"type": "typing", "room": room})
        ev = await owner.next_event("typing", timeout=5 * SLOW)
        assert ev["user"] == guest_name
        ack = await owner.ok({"type": "send", "room": room, "text": "hi @%s" % guest_name}, "ack")
        m = (await guest.messages(1, timeout=5 * SLOW, room=room))[0]
        assert m["mentions"] == [guest_name] and m["seq"] == ack["seq"]
        await guest.ok({"type": "read", "room": room, "seq": ack["seq"]}, "read_ok")
        ev = await owner.next_event("receipt", timeout=5 * SLOW)
        assert ev["user"] == guest_name and ev["seq"] == ack["seq"]
        # a kick on a takes effect on b
        await owner.ok({"type": "kick", "room": room, "user": guest_name}, "kicked")
        await guest.next_event("member", timeout=5 * SLOW, pred=lambda f: f["event"] == "kicked")
        for _ in range(50):
            r = await guest.rpc({"type": "send", "room": room, "text": "still here?"})
            if r.get("type") == "error":
                break
            await asyncio.sleep(0.1)
        assert r["type"] == "error" and r["code"] in ("not_member", "forbidden")
    run(go(), timeout=30 * SLOW)


def test_dm_across_nodes(cluster, mode):
    a, b = cluster(2, *mode)

    async def go():
        an, bn = uniq("a"), uniq("b")
        x = await connect(a, an)
        y = await connect(b, bn)
        ack = await settled(x, {"type": "dm", "to": bn, "text": "psst"}, "ack")   # y is known on a
        m = await y.next_event("message", timeout=5 * SLOW)
        assert m["room"] == ack["room"] and m["text"] == "psst" and m["seq"] == ack["seq"]
        ack2 = await y.ok({"type": "dm", "to": an, "text": "yes?"}, "ack")
        m = await x.next_event("message", timeout=5 * SLOW, pred=lambda f: f["text"] == "yes?")
        assert m["seq"] == ack2["seq"] == ack["seq"] + 1
    run(go())


def test_idempotent_resend_to_another_node(cluster, mode):
    a, b = cluster(2, *mode)

    async def go():
        room, name = uniq("r"), uniq("u")
        c1 = await connect(a, name)
        await c1.ok({"type": "create", "room": room, "kind": "public"}, "created")
        await c1.ok({"type": "join", "room": room}, "joined")
        first = await c1.ok({"type": "send", "room": room, "text": "once", "cid": "k1"}, "ack")
        await c1.close()
        c2 = await connect(b, name)                     # reconnected elsewhere
        await settled(c2, {"type": "join", "room": room}, "joined")
        again = await c2.ok({"type": "send", "room": room, "text": "once", "cid": "k1"}, "ack")
        assert (again["id"], again["seq"]) == (first["id"], first["seq"])
        # (async: the other node sees it in the store within --flush-ms)
        loop = asyncio.get_running_loop()
        end = loop.time() + 5 * SLOW
        while True:
            h = await c2.ok({"type": "history", "room": room, "limit": 10}, "history")
            if h["messages"] or loop.time() > end:
                break
            await asyncio.sleep(0.1)
        assert [m["text"] for m in h["messages"]] == ["once"]
    run(go())


def test_catch_up_after_node_killed(cluster, mode):
    a, b = cluster(2, *mode)

    async def go():
        room, name = uniq("r"), uniq("u")
        writer = await connect(b, uniq("w"))
        await writer.ok({"type": "create", "room": room, "kind": "public"}, "created")
        await writer.ok({"type": "join", "room": room}, "joined")
        reader = await connect(a, name)
        await reader.ok({"type": "join", "room": room}, "joined")
        acked = [(await writer.ok({"type": "send", "room": room, "text": "x%d" % i}, "ack"))["seq"]
                 for i in range(10)]
        got = await reader.messages(5, timeout=5 * SLOW, room=room)
        last = got[-1]["seq"]
        a.kill()                                            # kill -9 the reader's node
        await reader.wait_closed(timeout=5 * SLOW)
        acked += [(await writer.ok({"type": "send", "room": room, "text": "y%d" % i}, "ack"))["seq"]
                  for i in range(10)]
        again = await connect(b, name)                      # the client moves to the live node
        await again.ok({"type": "join", "room": room, "since": last}, "joined")
        rest = await again.messages(len(acked) - 5, timeout=5 * SLOW, room=room)
        assert [m["seq"] for m in rest] == acked[5:]
    run(go())


async def traffic(clients, room, stop, acked, refused):
    """Each client sends until stop is set; acked gets (seq, text) of every
    ack, refused counts `unavailable` answers (the only error allowed)."""
    async def one(c, k):
        i = 0
        while not stop.is_set():
            text = "%d-%d" % (k, i)
            i += 1
            try:
                r = await c.rpc({"type": "send", "room": room, "text": text, "cid": text}, timeout=15 * SLOW)
            except Exception:
                return              # connection lost: what it had acked is in acked
            if r["type"] == "ack":
                acked.append((r["seq"], text))
            else:
                assert r["code"] == "unavailable", r
                refused.append(text)
                await asyncio.sleep(0.05)
    await asyncio.gather(*(one(c, k) for k, c in enumerate(clients)))


async def outage(a, b, ctl_stop, ctl_start, down_s=1.5):
    """Traffic from both nodes into one room while ctl_stop() .. ctl_start()
    takes a shared server away; then every acked message is in the history
    and was delivered to a reader on each node, once and in order."""
    room = uniq("r")
    owner = await connect(a, uniq("o"))
    await owner.ok({"type": "create", "room": room, "kind": "public"}, "created")
    senders = [await connect(n, uniq("s")) for n in (a, b, a, b)]
    readers = [await connect(a, uniq("ra")), await connect(b, uniq("rb"))]
    await join_all(senders + readers, room)
    stop, acked, refused = asyncio.Event(), [], []
    task = asyncio.ensure_future(traffic(senders, room, stop, acked, refused))
    await asyncio.sleep(0.5)
    n_before = len(acked)
    await asyncio.get_running_loop().run_in_executor(None, ctl_stop)
    # while it is down a send is refused with unavailable (the senders above
    # may instead be waiting for a commit being retried: that is not lost)
    probe = await connect(b, uniq("p"))
    await settled(probe, {"type": "join", "room": room}, "joined", codes=())
    end = asyncio.get_running_loop().time() + 10 * SLOW
    for i in range(1000):
        r = await probe.rpc({"type": "send", "room": room, "text": "probe%d" % i}, timeout=15 * SLOW)
        if r["type"] == "error" or asyncio.get_running_loop().time() > end:
            break
        acked.append((r["seq"], "probe%d" % i))
        await asyncio.sleep(0.1)
    assert r["type"] == "error" and r["code"] == "unavailable", r
    await asyncio.sleep(down_s)
    await asyncio.get_running_loop().run_in_executor(None, ctl_start)
    # traffic goes on until sends are acked again on both nodes
    loop = asyncio.get_running_loop()
    end = loop.time() + 30 * SLOW
    while loop.time() < end and len(acked) < n_before + 40:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    stop.set()
    await task
    assert len(acked) >= n_before + 40, "sends did not recover (%d acked, %d refused)" % (len(acked), len(refused))
    seqs = sorted(s for s, _ in acked)
    assert len(set(seqs)) == len(seqs)                     # no seq acked twice
    want = dict(acked)
    # nothing acked is lost: each reader got every acked message in seq order
    top = seqs[-1]
    for r in readers:
        got = []
        while not got or got[-1]["seq"] < top:
            got += await r.messages(1, timeout=15 * SLOW, room=room)
        s = [m["seq"] for m in got]
        assert s == sorted(set(s)), "out of order or duplicated on %s" % r.user
        texts = {m["seq"]: m["text"] for m in got}
        for seq, text in want.items():
            assert texts.get(seq) == text, (r.user, seq, text)
    # and the store has them all (history from the other node, paged)
    hist, before = {}, None
    while True:
        cmd = {"type": "history", "room": room, "limit": 100}
        if before:
            cmd["before"] = before
        h = await readers[1].ok(cmd, "history")
        for m in h["messages"]:
            hist[m["seq"]] = m["text"]
        if not h["has_more"] or not h["messages"]:
            break
        before = h["messages"][0]["seq"]
    for seq, text in want.items():
        assert hist.get(seq) == text
    return len(acked), len(refused)


def test_redis_restart_during_traffic(cluster, mode):
    ctl = os.environ["SORI_REDIS_CTL"]
    a, b = cluster(2, *mode)
    run(outage(a, b, lambda: subprocess.run([ctl, "--stop"], check=True, timeout=30),
               lambda: subprocess.run([ctl, "--start"], check=True, timeout=30)), timeout=90 * SLOW)


def test_postgresql_restart_during_traffic(cluster):
    ctl = os.environ["SORI_PG_CTL"]
    a, b = cluster(2)
    run(outage(a, b, lambda: subprocess.run([ctl, "stop"], check=True, timeout=60),
               lambda: subprocess.run([ctl, "start"], check=True, timeout=60)), timeout=120 * SLOW)


def test_stomp_clients_on_two_nodes(cluster, mode):
    """A STOMP subscriber on each node and JSON and STOMP senders on both:
    every subscriber gets every message once, in the one seq order."""
    from stompclient import stomp
    a, b = cluster(2, *mode)

    async def go():
        room = uniq("r")
        owner = await connect(a, uniq("o"))
        await owner.ok({"type": "create", "room": room, "kind": "public"}, "created")
        subs = [await stomp(a, uniq("sa")), await stomp(b, uniq("sb"))]
        for k, s in enumerate(subs):
            for _ in range(60):      # the room reaches b within milliseconds
                await s.send_frame("SUBSCRIBE", {"id": "s%d" % k, "destination": "/topic/room." + room,
                                                 "receipt": "sub%d" % k})
                f = await s.frame(pred=lambda f: f["command"] in ("RECEIPT", "ERROR"))
                if f["command"] == "RECEIPT":
                    break
                subs[k] = s = await stomp(b if k else a, uniq("sb"))   # an ERROR closes the connection
                await asyncio.sleep(0.05)
        json_sender = await connect(b, uniq("j"))
        await settled(json_sender, {"type": "join", "room": room}, "joined")
        stomp_sender = subs[0]
        acked = []
        for i in range(10):
            acked.append((await json_sender.ok({"type": "send", "room": room, "text": "j%d" % i}, "ack"))["seq"])
            await stomp_sender.send_frame("SEND", {"destination": "/topic/room." + room, "receipt": "x%d" % i},
                                          "s%d" % i)
            r = await stomp_sender.frame("RECEIPT", pred=lambda f: f["headers"]["receipt-id"] == "x%d" % i)
            acked.append(int(r["headers"]["seq"]))
        assert sorted(acked) == list(range(acked[0], acked[0] + 20))
        for s in subs:
            got = await s.messages(20, timeout=10 * SLOW)
            seqs = [m["json"]["seq"] for m in got]
            assert seqs == sorted(acked), seqs
    run(go(), timeout=40 * SLOW)


def test_state_changed_while_redis_down_is_learned_after(cluster):
    """State changes committed while Redis is down are not announced; when
    the link is back every node reads the state again from the store."""
    ctl = os.environ["SORI_REDIS_CTL"]
    a, b = cluster(2)

    async def go():
        owner_name, guest_name, gone_name = uniq("owner"), uniq("guest"), uniq("gone")
        owner = await connect(a, owner_name)
        guest = await connect(b, guest_name)
        gone = await connect(b, gone_name)
        old = uniq("old")
        await owner.ok({"type": "create", "room": old, "kind": "private"}, "created")
        for name in (gone_name, guest_name):     # both known on a before the outage
            await settled(owner, {"type": "invite", "room": old, "user": name}, "invited", codes=("not_found",))
        await settled(gone, {"type": "join", "room": old}, "joined")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: subprocess.run([ctl, "--stop"], check=True, timeout=30))
        try:
            # on a, while nobody hears it: a new private room with guest in it,
            # and gone kicked from the old one
            room = uniq("new")
            await owner.ok({"type": "create", "room": room, "kind": "private"}, "created")
            await owner.ok({"type": "invite", "room": room, "user": guest_name}, "invited")
            await owner.ok({"type": "kick", "room": old, "user": gone_name}, "kicked")
            await asyncio.sleep(0.3)
            r = await guest.rpc({"type": "join", "room": room})
            assert r["type"] == "error" and r["code"] == "not_found"     # b does not know yet
        finally:
            await loop.run_in_executor(None, lambda: subprocess.run([ctl, "--start"], check=True, timeout=30))
        await settled(guest, {"type": "join", "room": room}, "joined", codes=("not_found", "forbidden"))
        # the kick reached b too: gone may no longer see the old room
        end = loop.time() + 10 * SLOW
        while True:
            r = await gone.rpc({"type": "history", "room": old, "limit": 10})
            if r["type"] == "error" or loop.time() > end:
                break
            await asyncio.sleep(0.1)
        assert r["type"] == "error" and r["code"] == "forbidden", r
    run(go(), timeout=60 * SLOW)

