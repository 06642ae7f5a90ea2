"""Messages and room traffic across the nodes of a cluster (docs/OPERATIONS.md
"Cluster mode"): one seq order for every connection whatever node it is on,
concurrent senders on different nodes, room events and state changes across
nodes, idempotent resends to another node, catch-up after a node is killed."""
import asyncio

from chatclient import connect, run, uniq
from conftest import SLOW


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


def test_cross_node_delivery_in_one_order(cluster):
    a, b = cluster(2)

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


def test_concurrent_senders_on_two_nodes(cluster):
    a, b = cluster(2)
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
        await owner.ok({"type": "invite", "room": room, "user": guest_name}, "invited")
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


def test_dm_across_nodes(cluster):
    a, b = cluster(2)

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


def test_idempotent_resend_to_another_node(cluster):
    a, b = cluster(2)

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
        h = await c2.ok({"type": "history", "room": room, "limit": 10}, "history")
        assert [m["text"] for m in h["messages"]] == ["once"]
    run(go())


def test_catch_up_after_node_killed(cluster):
    a, b = cluster(2)

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
