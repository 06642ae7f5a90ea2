"""STOMP 1.0-1.2 over WebSocket (PROTOCOL.md §6) with raw frames from
stompclient.py: version negotiation and authentication in CONNECT,
SUBSCRIBE/SEND/RECEIPT on the same rooms as JSON clients, destinations,
`since` catch-up, frames split across and batched in WebSocket messages,
header escapes, heart-beats both ways, ERROR-then-close on bad input,
DISCONNECT receipts, ack modes, and MESSAGE frames under permessage-deflate."""
import asyncio
import time

import pytest
import websockets

from chatclient import connect, run, uniq
from conftest import SLOW
from stompclient import encode, open_ws, stomp

QUIET = 0.4 * SLOW


async def room_with_owner(server, kind="public"):
    owner = await connect(server, uniq("owner"))
    room = uniq("r")
    await owner.ok({"type": "create", "room": room, "kind": kind})
    return owner, room


async def subscribe(c, room, sid="s1", **headers):
    h = {"id": sid, "destination": "/topic/room." + room, "receipt": "sub-" + sid}
    h.update(headers)
    await c.send_frame("SUBSCRIBE", h)
    r = await c.frame("RECEIPT")
    assert r["headers"]["receipt-id"] == "sub-" + sid
    return r


# ---------------------------------------------------------------- CONNECT

def test_connect_negotiates_version(server):
    async def go():
        c = await open_ws(server)
        f = await c.connect(login=uniq("u"), accept="1.0,1.1,1.2")
        assert f["headers"]["version"] == "1.2"
        assert f["headers"]["server"].startswith("sori/")
        assert f["headers"]["user-name"].startswith("u")
        assert len(f["headers"]["session"]) == 16
        c = await open_ws(server, protocols=["v11.stomp"])
        f = await c.connect(login=uniq("u"), accept="1.1,1.0")
        assert f["headers"]["version"] == "1.1"
        assert c.ws.subprotocol == "v11.stomp"
        # no accept-version: STOMP 1.0, which has no heart-beating
        c = await open_ws(server, protocols=["v10.stomp"])
        await c.raw(encode("CONNECT", [("login", uniq("u"))]))
        f = await c.frame("CONNECTED")
        assert f["headers"]["version"] == "1.0" and "heart-beat" not in f["headers"]
        # the STOMP command works like CONNECT
        c = await open_ws(server)
        f = await c.connect(login=uniq("u"), command="STOMP")
        assert f["headers"]["version"] == "1.2"
        # no common version: ERROR naming ours, then the close
        c = await open_ws(server)
        await c.raw(encode("CONNECT", [("accept-version", "2.0"), ("login", "x")]))
        e = await c.error_and_close()
        assert e["headers"]["version"] == "1.0,1.1,1.2"
    run(go())


def test_frames_before_connect_and_second_connect(server):
    async def go():
        c = await open_ws(server)
        await c.send_frame("SEND", {"destination": "/app/room.x"}, "hi")
        e = await c.error_and_close()
        assert e["headers"]["code"] == "unauthorized"
        c = await stomp(server, uniq("u"))
        await c.raw(encode("CONNECT", [("accept-version", "1.2"), ("login", "x")]))
        e = await c.error_and_close()
        assert e["headers"]["code"] == "bad_request"
    run(go())


def test_guest_login_needs_allow_guests(make_server):
    srv = make_server(allow_guests=False)

    async def go():
        c = await open_ws(srv)
        await c.raw(encode("CONNECT", [("accept-version", "1.2"), ("login", "alice"), ("passcode", "pw")]))
        e = await c.error_and_close()
        assert e["headers"]["code"] == "unauthorized" and e["body"]
        assert c.close_code == 1008
    run(go())


def test_tokens_in_connect_or_handshake(make_server, tmp_path):
    from test_chat_auth import SECRET, mint
    srv = make_server("--secret", SECRET, allow_guests=False)
    tok = mint(tmp_path, "tina")

    async def go():
        c = await open_ws(srv)                     # passcode:<token>, as Spring clients send it
        f = await c.connect(login="ignored", passcode=tok)
        assert f["headers"]["user-name"] == "tina"
        c = await open_ws(srv)                     # Authorization: Bearer in CONNECT
        f = await c.connect(headers={"Authorization": "Bearer " + tok})
        assert f["headers"]["user-name"] == "tina"
        c = await open_ws(srv, query="token=" + tok)  # the handshake's token
        f = await c.connect()
        assert f["headers"]["user-name"] == "tina"
        c = await open_ws(srv)                     # a bad token in CONNECT
        await c.raw(encode("CONNECT", [("accept-version", "1.2"), ("Authorization", "Bearer " + tok + "x")]))
        e = await c.error_and_close()
        assert e["headers"]["code"] == "unauthorized"
        with pytest.raises(websockets.InvalidStatusCode) as ei:  # a bad token at the handshake: 401
            await open_ws(srv, query="token=nope")
        assert ei.value.status_code == 401
        # no credentials at all is fine for the handshake, not for CONNECT
        c = await open_ws(srv)
        await c.raw(encode("CONNECT", [("accept-version", "1.2")]))
        e = await c.error_and_close()
        assert e["headers"]["code"] == "unauthorized"
    run(go())


def test_json_clients_still_need_credentials(make_server):
    """Only STOMP may defer authentication to CONNECT."""
    srv = make_server(allow_guests=False)

    async def go():
        with pytest.raises(websockets.InvalidStatusCode) as ei:
            await connect(srv)
        assert ei.value.status_code == 401
    run(go())


# ---------------------------------------------------------------- rooms

def test_mixed_room_with_json_clients(server):
    """A STOMP and a JSON client in one room see each other's messages, in
    one seq order; MESSAGE carries the §6 headers and the §4 JSON body."""
    async def go():
        owner, room = await room_with_owner(server)
        s = await stomp(server, uniq("st"))
        await subscribe(s, room)
        j = await connect(server, uniq("js"))
        await j.ok({"type": "join", "room": room})
        await s.send_frame("SEND", {"destination": "/topic/room." + room, "receipt": "m1"}, "from stomp")
        rc = await s.frame("RECEIPT")
        ack = await j.ok({"type": "send", "room": room, "text": "from json"}, "ack")
        got = await s.messages(2)
        assert [m["json"]["text"] for m in got] == ["from stomp", "from json"]
        m1, m2 = got
        assert m1["headers"]["destination"] == "/topic/room." + room
        assert m1["headers"]["subscription"] == "s1"
        assert m1["headers"]["content-type"] == "application/json"
        assert m1["headers"]["from"] == m1["json"]["from"] and m1["headers"]["from"].startswith("st")
        assert m1["headers"]["message-id"] == m1["json"]["id"] == rc["headers"]["message-id"]
        assert int(m1["headers"]["seq"]) == m1["json"]["seq"] == int(rc["headers"]["seq"])
        assert int(m1["headers"]["timestamp"]) == m1["json"]["ts"]
        assert m1["json"]["type"] == "message" and m1["json"]["room"] == room
        assert m2["json"]["seq"] == ack["seq"] == m1["json"]["seq"] + 1
        jm = await j.messages(2)
        assert [m["text"] for m in jm] == ["from stomp", "from json"]
        assert jm[0]["id"] == m1["json"]["id"]
        # history has both, as for any client
        h = await j.ok({"type": "history", "room": room})
        assert [m["text"] for m in h["messages"]] == ["from stomp", "from json"]
    run(go())


def test_app_destination_json_body_and_idempotency(server):
    async def go():
        owner, room = await room_with_owner(server)
        s = await stomp(server, uniq("st"))
        await subscribe(s, room)
        body = '{"text":"once","cid":"c-1"}'
        for r in ("a", "b"):
            await s.send_frame("SEND", {"destination": "/app/room." + room, "content-type": "application/json",
                                        "receipt": r}, body)
        ra, rb = await s.frame("RECEIPT"), await s.frame("RECEIPT")
        assert ra["headers"]["seq"] == rb["headers"]["seq"] == "1"
        assert ra["headers"]["message-id"] == rb["headers"]["message-id"]
        m = await s.frame("MESSAGE")
        assert m["json"]["text"] == "once" and m["json"]["cid"] == "c-1"
        await s.no_frame("MESSAGE", QUIET)
        # a text body with a cid header (extension) is idempotent too
        for r in ("c", "d"):
            await s.send_frame("SEND", {"destination": "/app/room." + room, "cid": "c-2", "receipt": r}, "plain")
        rc, rd = await s.frame("RECEIPT"), await s.frame("RECEIPT")
        assert rc["headers"]["seq"] == rd["headers"]["seq"] == "2"
    run(go())


def test_since_catch_up_then_live(server):
    async def go():
        owner, room = await room_with_owner(server)
        for i in range(1, 6):
            await owner.ok({"type": "send", "room": room, "text": "m%d" % i})
        s = await stomp(server, uniq("st"))
        await s.send_frame("SUBSCRIBE", {"id": "s1", "destination": "/topic/room." + room, "since": "2",
                                         "receipt": "r"})
        await owner.ok({"type": "send", "room": room, "text": "m6"})
        got = await s.messages(4)
        assert [m["json"]["seq"] for m in got] == [3, 4, 5, 6]
        receipt = s.log.index(next(f for f in s.log if f["command"] == "RECEIPT"))
        assert receipt > s.log.index(got[2])  # the RECEIPT follows the backlog (seq 3-5)
        await s.no_frame("MESSAGE", QUIET)
        # without since: live messages only
        s2 = await stomp(server, uniq("st"))
        await subscribe(s2, room)
        await s2.no_frame("MESSAGE", QUIET)
        await s2.send_frame("SUBSCRIBE", {"id": "bad", "destination": "/topic/room." + room, "since": "-1"})
        e = await s2.error_and_close()
        assert e["headers"]["code"] == "bad_request"
    run(go())


def test_direct_messages_through_user_queue(server):
    async def go():
        alice = await connect(server, uniq("alice"))
        bname = uniq("bob")
        bob = await stomp(server, bname)
        await bob.send_frame("SUBSCRIBE", {"id": "dm", "destination": "/user/queue/messages", "receipt": "r"})
        await bob.frame("RECEIPT")
        ack = await alice.ok({"type": "dm", "to": bname, "text": "psst"}, "ack")
        m = await bob.frame("MESSAGE")
        assert m["headers"]["destination"] == "/user/queue/messages"
        assert m["headers"]["subscription"] == "dm"
        assert m["json"]["room"] == ack["room"] and m["json"]["text"] == "psst"
        await bob.send_frame("SEND", {"destination": "/app/dm." + alice.user, "receipt": "back"}, "hi alice")
        r = await bob.frame("RECEIPT")
        assert r["headers"]["seq"] == "2"
        got = await alice.next_event("message", pred=lambda f: f["text"] == "hi alice")
        assert got["room"] == ack["room"] and got["from"] == bname
        # bob's own dm comes back on his queue too, in order
        mine = await bob.frame("MESSAGE")
        assert mine["json"]["text"] == "hi alice"
        # a room subscription does not get dms
        assert all(f["headers"]["destination"] == "/user/queue/messages" for f in bob.log if f["command"] == "MESSAGE")
        # ... unless it is a subscription to that dm room itself
        await bob.send_frame("SUBSCRIBE", {"id": "t", "destination": "/topic/room." + ack["room"], "receipt": "t"})
        await bob.frame("RECEIPT")
        await alice.ok({"type": "dm", "to": bname, "text": "both"})
        got = sorted(m["headers"]["subscription"] for m in await bob.messages(2))
        assert got == ["dm", "t"]
    run(go())


def test_authorization_matches_json(server):
    """A private room is invisible to non-members (forbidden) and sending
    needs membership (not_member): ERROR with the code and receipt-id."""
    async def go():
        owner, room = await room_with_owner(server, "private")
        s = await stomp(server, uniq("st"))
        await s.send_frame("SUBSCRIBE", {"id": "s", "destination": "/topic/room." + room, "receipt": "x1"})
        e = await s.error_and_close()
        assert e["headers"]["code"] == "forbidden" and e["headers"]["receipt-id"] == "x1"
        pub_owner, pub = await room_with_owner(server)
        s = await stomp(server, uniq("st"))
        await s.send_frame("SEND", {"destination": "/app/room." + pub, "receipt": "x2"}, "not a member")
        e = await s.error_and_close()
        assert e["headers"]["code"] == "not_member" and e["headers"]["receipt-id"] == "x2"
        s = await stomp(server, uniq("st"))
        await s.send_frame("SUBSCRIBE", {"id": "s", "destination": "/topic/room.nope" + uniq("x")})
        e = await s.error_and_close()
        assert e["headers"]["code"] == "not_found"
        await owner.ok({"type": "send", "room": room, "text": "still fine"})
    run(go())


def test_unsubscribe_stops_delivery(server):
    async def go():
        owner, room = await room_with_owner(server)
        s = await stomp(server, uniq("st"))
        await subscribe(s, room)
        await owner.ok({"type": "send", "room": room, "text": "one"})
        await s.frame("MESSAGE")
        await s.send_frame("UNSUBSCRIBE", {"id": "s1", "receipt": "u"})
        assert (await s.frame("RECEIPT"))["headers"]["receipt-id"] == "u"
        await owner.ok({"type": "send", "room": room, "text": "two"})
        await s.no_frame("MESSAGE", QUIET)
        await s.send_frame("UNSUBSCRIBE", {"id": "s1"})
        e = await s.error_and_close()
        assert e["headers"]["code"] == "not_found"
    run(go())


def test_two_subscriptions_to_one_room(server):
    """Each subscription gets its own MESSAGE; dropping one keeps the other."""
    async def go():
        owner, room = await room_with_owner(server)
        s = await stomp(server, uniq("st"))
        await subscribe(s, room, "a")
        await subscribe(s, room, "b")
        await owner.ok({"type": "send", "room": room, "text": "x"})
        got = sorted(m["headers"]["subscription"] for m in await s.messages(2))
        assert got == ["a", "b"]
        await s.send_frame("UNSUBSCRIBE", {"id": "a", "receipt": "u"})
        await s.frame("RECEIPT")
        await owner.ok({"type": "send", "room": room, "text": "y"})
        m = await s.frame("MESSAGE")
        assert m["headers"]["subscription"] == "b" and m["json"]["text"] == "y"
        await s.no_frame("MESSAGE", QUIET)
    run(go())


def test_events_all_brings_typing(server):
    async def go():
        owner, room = await room_with_owner(server)
        s = await stomp(server, uniq("st"))
        await subscribe(s, room, "plain")
        await subscribe(s, room, "ev", events="all")
        await owner.send({"type": "typing", "room": room})
        m = await s.frame("MESSAGE")
        assert m["headers"]["subscription"] == "ev" and m["json"]["type"] == "typing"
        assert m["json"]["user"] == owner.user and m["headers"]["message-id"]
        await s.no_frame("MESSAGE", QUIET)
    run(go())


# ---------------------------------------------------------------- framing

def test_batched_split_and_heartbeat_eols(server):
    """Several frames in one WebSocket message, one frame split across three
    (inside the headers and inside the body), EOLs between frames."""
    async def go():
        owner, room = await room_with_owner(server)
        s = await stomp(server, uniq("st"))
        sub = encode("SUBSCRIBE", {"id": "s1", "destination": "/topic/room." + room, "receipt": "r0"})
        send = encode("SEND", {"destination": "/topic/room." + room, "receipt": "r1"}, "batched")
        await s.raw((b"\n" + sub + b"\r\n\n" + send + b"\n").decode())
        # STOMP does not order receipts; in a cluster the SUBSCRIBE's may
        # follow the SEND's (a cold room is read from the store first)
        got = {(await s.frame("RECEIPT"))["headers"]["receipt-id"] for _ in range(2)}
        assert got == {"r0", "r1"}
        text = "split across\n\nmessages: \u00e9\u20ac"
        frame = encode("SEND", {"destination": "/topic/room." + room, "receipt": "r2"}, text)
        cut1, cut2 = 10, len(frame) - 5
        await s.raw(frame[:cut1].decode())
        await s.raw(frame[cut1:cut2])          # binary messages carry frames too
        await s.raw(frame[cut2:])
        assert (await s.frame("RECEIPT"))["headers"]["receipt-id"] == "r2"
        got = await s.messages(2)
        assert [m["json"]["text"] for m in got] == ["batched", text]
        # without content-length the body ends at the first NUL
        await s.raw(encode("SEND", {"destination": "/topic/room." + room}, "no length", content_length=False))
        assert (await s.frame("MESSAGE"))["json"]["text"] == "no length"
    run(go())


def test_header_escapes_per_version(server):
    """Room ids may hold ':' (escaped as \\c in 1.1/1.2 headers, verbatim in
    1.0); subscription ids come back escaped as they were given."""
    async def go():
        owner = await connect(server, uniq("owner"))
        room = uniq("team:x")
        await owner.ok({"type": "create", "room": room, "kind": "public"})
        s = await stomp(server, uniq("st"))
        sid = "id:with\\odd\nchars"
        await s.send_frame("SUBSCRIBE", {"id": sid, "destination": "/topic/room." + room, "receipt": "r"})
        await s.frame("RECEIPT")
        await owner.ok({"type": "send", "room": room, "text": "esc"})
        m = await s.frame("MESSAGE")
        assert m["headers"]["subscription"] == sid
        assert m["headers"]["destination"] == "/topic/room." + room
        raw = [v for k, v in m["all"] if k == "destination"]
        assert raw == ["/topic/room." + room]
        # STOMP 1.0: no escapes
        s0 = await open_ws(server, protocols=["v10.stomp"])
        await s0.raw(encode("CONNECT", [("login", uniq("u"))]))
        await s0.frame("CONNECTED")
        await s0.raw(encode("SUBSCRIBE", [("destination", "/topic/room." + room), ("receipt", "r")], version="1.0"))
        await s0.frame("RECEIPT")
        await owner.ok({"type": "send", "room": room, "text": "v10"})
        m = await s0.frame("MESSAGE")
        assert m["headers"]["destination"] == "/topic/room." + room == m["headers"]["subscription"]
        # an undefined escape is a protocol error
        await s.raw("SEND\ndestination:/topic/room.x\\t\n\nbody\0")
        e = await s.error_and_close()
        assert e["headers"]["code"] == "bad_request" and s.close_code == 1002
    run(go())


@pytest.mark.parametrize("bad,code", [
    ("FROB\n\n\0", "bad_request"),                                   # unknown command
    ("SEND\nno colon here\n\nx\0", "bad_request"),                    # header without ':'
    ("SEND\n:empty\n\nx\0", "bad_request"),                           # empty header name
    ("SEND\ncontent-length:abc\n\nx\0", "bad_request"),               # bad content-length
    ("SEND\ncontent-length:2\n\nxyz\0", "bad_request"),               # NUL not where it says
    ("BEGIN\ntransaction:t\n\n\0", "bad_request"),                    # no transactions
    ("SEND\ndestination:/queue/x\n\nx\0", "not_found"),               # unknown destination
    ("SUBSCRIBE\ndestination:/topic/room.a\n\n\0", "bad_request"),    # 1.2 SUBSCRIBE needs id
    ("ACK\n\n\0", "bad_request"),                                     # ACK needs id
    ("SUBSCRIBE\nid:1\ndestination:/topic/room.a\nack:sometimes\n\n\0", "bad_request"),
    ("SEND\ndestination:/app/room.a\nreceipt:" + "r" * 300 + "\n\nx\0", "bad_request"),  # receipt id too long
])
def test_bad_frames_error_then_close(server, bad, code):
    async def go():
        s = await stomp(server, uniq("st"))
        await s.raw(bad)
        e = await s.error_and_close()
        assert e["headers"]["code"] == code, e
        assert e["headers"]["message"] and e["body"].decode() == e["headers"]["message"]
        # the server is fine
        s2 = await stomp(server, uniq("st"))
        await s2.send_frame("DISCONNECT", {"receipt": "bye"})
        await s2.frame("RECEIPT")
    run(go())


def test_limits(make_server):
    srv = make_server("--ws-max-message", "64k", "--max-text", "1k")

    async def go():
        owner, room = await room_with_owner(srv)
        s = await stomp(srv, uniq("st"))
        await s.raw("SEND\n" + "".join("h%d:v\n" % i for i in range(100)) + "\n\0")
        e = await s.error_and_close()
        assert e["headers"]["code"] == "too_large" and s.close_code == 1009
        s = await stomp(srv, uniq("st"))
        await s.raw("SEND\nx:" + "y" * 20000 + "\n\n\0")           # 16 KiB of headers at most
        e = await s.error_and_close()
        assert e["headers"]["code"] == "too_large"
        s = await stomp(srv, uniq("st"))                              # a body over ws-max-message, in pieces
        await s.raw("SEND\ndestination:/topic/room.%s\n\n" % room)
        for _ in range(3):
            await s.raw("z" * 30000)
        e = await s.error_and_close()
        assert e["headers"]["code"] == "too_large"
        s = await stomp(srv, uniq("st"))                              # a text over --max-text: chat says so
        await subscribe(s, room)
        await s.send_frame("SEND", {"destination": "/topic/room." + room, "receipt": "big"}, "t" * 2000)
        e = await s.error_and_close()
        assert e["headers"]["code"] == "too_large" and e["headers"]["receipt-id"] == "big"
    run(go())


def test_text_body_must_be_utf8_without_nul(server):
    async def go():
        owner, room = await room_with_owner(server)
        s = await stomp(server, uniq("st"))
        await subscribe(s, room)
        await s.raw(b"SEND\ndestination:/topic/room." + room.encode() + b"\ncontent-length:3\n\na\0b\0")
        e = await s.error_and_close()
        assert e["headers"]["code"] == "bad_request"
        s = await stomp(server, uniq("st"))
        await subscribe(s, room)
        await s.raw(b"SEND\ndestination:/topic/room." + room.encode() + b"\n\n\xff\xfe\0")
        e = await s.error_and_close()
        assert e["headers"]["code"] == "bad_request"
    run(go())


# ---------------------------------------------------------------- receipts, acks, heart-beats

def test_disconnect_receipt_after_earlier_receipts(server):
    async def go():
        owner, room = await room_with_owner(server)
        s = await stomp(server, uniq("st"))
        await subscribe(s, room)
        frames = b"".join(encode("SEND", {"destination": "/topic/room." + room, "receipt": "m%d" % i}, "t%d" % i)
                          for i in range(5))
        await s.raw(frames + encode("DISCONNECT", {"receipt": "bye"}))
        code, _ = await s.wait_closed()
        receipts = [f["headers"]["receipt-id"] for f in s.log if f["command"] == "RECEIPT"]
        assert receipts[-6:] == ["m0", "m1", "m2", "m3", "m4", "bye"]
        assert code == 1000
        h = await owner.ok({"type": "history", "room": room})
        assert [m["text"] for m in h["messages"]] == ["t%d" % i for i in range(5)]
    run(go())


def test_ack_modes(server):
    async def go():
        owner, room = await room_with_owner(server)
        s = await stomp(server, uniq("st"))
        await subscribe(s, room, "c", ack="client-individual")
        await owner.ok({"type": "send", "room": room, "text": "ack me"})
        m = await s.frame("MESSAGE")
        assert m["headers"]["ack"] == m["headers"]["message-id"]
        await s.send_frame("ACK", {"id": m["headers"]["ack"], "receipt": "a"})
        await s.send_frame("NACK", {"id": m["headers"]["ack"], "receipt": "n"})
        assert [(await s.frame("RECEIPT"))["headers"]["receipt-id"] for _ in range(2)] == ["a", "n"]
        s2 = await stomp(server, uniq("st"))
        await subscribe(s2, room, "auto")
        await owner.ok({"type": "send", "room": room, "text": "auto"})
        assert "ack" not in (await s2.frame("MESSAGE"))["headers"]
    run(go())


def test_server_heartbeats(make_server):
    srv = make_server("--stomp-heartbeat-ms", "200")

    async def go():
        s = await open_ws(srv)
        f = await s.connect(login=uniq("u"), heart_beat="0,200")
        assert f["headers"]["heart-beat"] == "200,200"
        await asyncio.sleep(1.5)
        assert s.heartbeats >= 3, s.heartbeats          # every ~200 ms: about 7
        gaps = [b - a for a, b in zip(s.heartbeat_times, s.heartbeat_times[1:])]
        assert max(gaps) < 0.2 * 2.5 * SLOW, gaps
        # the larger interval wins: the client asks for 500 ms
        s = await open_ws(srv)
        await s.connect(login=uniq("u"), heart_beat="0,500")
        await asyncio.sleep(1.2)
        assert 1 <= s.heartbeats <= 3, s.heartbeats
        # 0 in CONNECT: none sent
        s = await open_ws(srv)
        await s.connect(login=uniq("u"), heart_beat="0,0")
        await asyncio.sleep(0.6)
        assert s.heartbeats == 0
    run(go())


def test_client_heartbeats_enforced(make_server):
    srv = make_server("--stomp-heartbeat-ms", "200")

    async def go():
        quiet = await open_ws(srv)
        await quiet.connect(login=uniq("u"), heart_beat="200,0")   # promises a beat every 200 ms
        lively = await open_ws(srv)
        await lively.connect(login=uniq("u"), heart_beat="200,0")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5:
            await lively.raw("\n")
            await asyncio.sleep(0.1)
        e = await quiet.error_and_close(timeout=2 * SLOW)
        assert e["headers"]["code"] == "heartbeat" and quiet.close_code == 1001
        assert not lively.closed
        await lively.send_frame("DISCONNECT", {"receipt": "r"})
        await lively.frame("RECEIPT")
    run(go())


def test_permessage_deflate_messages(server):
    """MESSAGE frames share one compressed body behind per-subscription
    headers (a stored deflate block): they must inflate intact, for two
    subscriptions with different ids and for a long text."""
    async def go():
        owner, room = await room_with_owner(server)
        s = await stomp(server, uniq("st"), compression="deflate")
        assert s.ws.extensions, "deflate was not negotiated"
        await subscribe(s, room, "first")
        await subscribe(s, room, "second-with-a-longer-id")
        j = await connect(server, uniq("js"), compression="deflate")
        await j.ok({"type": "join", "room": room})
        text = "compress me " * 200
        await owner.ok({"type": "send", "room": room, "text": text})
        got = await s.messages(2)
        assert sorted(m["headers"]["subscription"] for m in got) == ["first", "second-with-a-longer-id"]
        assert all(m["json"]["text"] == text for m in got)
        assert (await j.next_event("message"))["text"] == text
        await owner.ok({"type": "send", "room": room, "text": "short"})
        assert all(m["json"]["text"] == "short" for m in await s.messages(2))
    run(go())
