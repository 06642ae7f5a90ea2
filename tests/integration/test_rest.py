"""The REST API of PROTOCOL.md §7 through real HTTP clients (http.client)
and real WebSocket clients: accounts (signup, login, their errors and rate
limits), REST commands sharing the JSON protocol's command layer (a POSTed
message is acked and delivered over WebSocket like a `send`), uploads,
search, mentions, discovery and metrics."""
import json
import time

import pytest

from chatclient import connect, run, uniq
from httpclient import call, png, signup
from conftest import SLOW, Server, _finish
import wsraw


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module signs up many users from one address: its shared server
    allows that (the limits have tests of their own below)."""
    s = Server(tmp_path_factory.mktemp("sori"), ["--signup-rate-ip", "10000", "--login-rate-ip", "10000",
                                                 "--login-rate-name", "10000"]).start()
    yield s
    _finish(s)


def test_signup_login_me_and_token_on_websocket(server):
    name = uniq("acct")
    st, _, b = call(server, "POST", "/api/signup", {"name": name, "password": "s3cret-pass"})
    assert st == 201 and b["user"] == name and b["token"].count(".") == 2
    st, _, b = call(server, "POST", "/api/login", {"name": name, "password": "s3cret-pass"})
    assert st == 200 and b["user"] == name
    assert b["expires_at"] > time.time() * 1000 + 3600 * 1000
    tok = b["token"]
    st, _, me = call(server, "GET", "/api/me", token=tok)
    assert st == 200 and me["user"] == name and me["account"] is True
    assert abs(me["created_at"] - time.time() * 1000) < 60000

    async def go():
        c = await connect(server, token=tok)
        assert c.user == name
        await c.close()
    run(go())


def test_signup_errors(server):
    name = uniq("dup")
    signup(server, name)
    st, _, b = call(server, "POST", "/api/signup", {"name": name, "password": "another one"})
    assert st == 409 and b["error"] == "conflict"
    for body, why in [({"name": "bad name!", "password": "long enough"}, "name"),
                      ({"name": "x" * 33, "password": "long enough"}, "name"),
                      ({"name": uniq("s"), "password": "short"}, "password"),
                      ({"name": uniq("s"), "password": "p" * 1025}, "password"),
                      ({"name": uniq("s"), "password": 12345678}, "password"),
                      ({"name": uniq("s")}, "password")]:
        st, _, b = call(server, "POST", "/api/signup", body)
        assert st == 400 and b["error"] == "bad_request" and why in b["message"], (body, b)
    st, _, b = call(server, "POST", "/api/signup", raw=b"not json")
    assert st == 400 and b["error"] == "bad_request"
    st, hdrs, b = call(server, "GET", "/api/signup")
    assert st == 405


def test_signup_cannot_claim_a_known_user(server):
    """A name someone already used (here a guest with history) cannot be
    taken over by a signup."""
    name = uniq("guest")

    async def go():
        c = await connect(server, name)
        await c.close()
    run(go())
    st, _, b = call(server, "POST", "/api/signup", {"name": name, "password": "takeover!"})
    assert st == 409


def test_login_errors(server):
    name, _ = signup(server)
    st, _, b = call(server, "POST", "/api/login", {"name": name, "password": "wrong password"})
    assert st == 401 and b["error"] == "unauthorized"
    st, _, b = call(server, "POST", "/api/login", {"name": uniq("nobody"), "password": "whatever1"})
    assert st == 401 and b["error"] == "unauthorized"
    st, _, b = call(server, "GET", "/api/me", token="not.a.token")
    assert st == 401


def test_login_rate_limited_per_name(make_server):
    s = make_server("--login-rate-name", "3", "--login-rate-ip", "100", "--signup-rate-ip", "100")
    name, _ = signup(s)
    for _ in range(3):
        st, _, _ = call(s, "POST", "/api/login", {"name": name, "password": "wrong password"})
        assert st == 401
    st, hdrs, b = call(s, "POST", "/api/login", {"name": name, "password": "correct horse"})
    assert st == 429 and b["error"] == "rate_limited"
    assert 1 <= int(hdrs["retry-after"]) <= 60
    # another name from the same address is not limited by this one
    other, _ = signup(s)
    st, _, _ = call(s, "POST", "/api/login", {"name": other, "password": "correct horse"})
    assert st == 200


def test_signup_rate_limited_per_address(make_server):
    s = make_server("--signup-rate-ip", "2")
    signup(s)
    signup(s)
    st, hdrs, b = call(s, "POST", "/api/signup", {"name": uniq("n"), "password": "whatever1"})
    assert st == 429 and b["error"] == "rate_limited" and int(hdrs["retry-after"]) >= 1


def test_login_rate_limited_per_address(make_server):
    s = make_server("--login-rate-ip", "2")
    for _ in range(2):
        st, _, _ = call(s, "POST", "/api/login", {"name": uniq("n"), "password": "whatever1"})
        assert st == 401
    st, hdrs, b = call(s, "POST", "/api/login", {"name": uniq("n"), "password": "whatever1"})
    assert st == 429 and "retry-after" in hdrs


def test_accounts_survive_a_restart(make_server, tmp_path):
    s = make_server(allow_guests=False)
    name, _ = signup(s, password="persist me")
    s.stop()
    s.start()
    st, _, b = call(s, "POST", "/api/login", {"name": name, "password": "persist me"})
    assert st == 200


# ---------------------------------------------------------------- commands over HTTP

def test_rest_send_is_delivered_over_websocket(server):
    owner, tok = signup(server)
    room = uniq("rest")
    st, _, b = call(server, "POST", "/api/rooms", {"room": room, "kind": "public", "title": "T"}, token=tok)
    assert st == 201 and b["room"] == room
    st, _, b = call(server, "POST", "/api/rooms", {"room": room, "kind": "public"}, token=tok)
    assert st == 409 and b["error"] == "conflict"

    async def go():
        c = await connect(server, uniq("watcher"))
        await c.ok({"type": "join", "room": room}, "joined")
        st, _, ack = call(server, "POST", "/api/rooms/%s/messages" % room, {"text": "over http", "cid": "c1"},
                          token=tok)
        assert st == 201 and ack["room"] == room and ack["seq"] == 1 and ack["id"].isdigit()
        ev = await c.next_event("message")
        assert ev["id"] == ack["id"] and ev["seq"] == 1 and ev["from"] == owner and ev["text"] == "over http"
        # the same cid again: the first ack, no second message
        st, _, again = call(server, "POST", "/api/rooms/%s/messages" % room, {"text": "over http", "cid": "c1"},
                            token=tok)
        assert st == 201 and again["id"] == ack["id"] and again["seq"] == 1
        await c.no_event("message", within=0.3)
        # and a WebSocket send continues the same seq
        w = await connect(server, token=tok)
        await w.ok({"type": "join", "room": room}, "joined")
        a2 = await w.ok({"type": "send", "room": room, "text": "over ws"}, "ack")
        assert a2["seq"] == 2
        await c.close()
        await w.close()
    run(go())
    st, _, h = call(server, "GET", "/api/rooms/%s/messages?limit=10" % room, token=tok)
    assert st == 200 and [m["text"] for m in h["messages"]] == ["over http", "over ws"]
    st, _, h = call(server, "GET", "/api/rooms/%s/messages?after=1" % room, token=tok)
    assert [m["seq"] for m in h["messages"]] == [2]
    st, _, b = call(server, "GET", "/api/rooms/%s/messages?before=1&after=1" % room, token=tok)
    assert st == 400
    st, _, b = call(server, "GET", "/api/rooms/%s/messages?limit=101" % room, token=tok)
    assert st == 400
    st, _, rooms = call(server, "GET", "/api/rooms", token=tok)
    mine = [r for r in rooms["rooms"] if r["id"] == room]
    assert mine and mine[0]["seq"] == 2 and mine[0]["unread"] == 2 and mine[0]["mentions"] == 0
    st, _, b = call(server, "POST", "/api/rooms/%s/read" % room, {"seq": 2}, token=tok)
    assert st == 200 and b["seq"] == 2
    st, _, pub = call(server, "GET", "/api/rooms?public=1", token=tok)
    assert any(r["id"] == room for r in pub["rooms"])


def test_rest_errors_map_to_statuses(server):
    owner, tok = signup(server)
    other, tok2 = signup(server)
    room = uniq("priv")
    assert call(server, "POST", "/api/rooms", {"room": room, "kind": "private"}, token=tok)[0] == 201
    # not a member: 403; unknown room: 404; bad body: 400; no token: 401
    st, _, b = call(server, "POST", "/api/rooms/%s/messages" % room, {"text": "x"}, token=tok2)
    assert st == 403 and b["error"] == "not_member"
    st, _, b = call(server, "GET", "/api/rooms/%s/messages" % room, token=tok2)
    assert st == 403 and b["error"] == "forbidden"
    st, _, b = call(server, "GET", "/api/rooms/nosuchroom%s/messages" % uniq("z"), token=tok)
    assert st == 404 and b["error"] == "not_found"
    st, _, b = call(server, "POST", "/api/rooms/%s/messages" % room, {"txt": "x"}, token=tok)
    assert st == 400
    st, _, b = call(server, "POST", "/api/rooms/%s/messages" % room, {"text": ""}, token=tok)
    assert st == 400
    st, _, b = call(server, "POST", "/api/rooms/%s/messages" % room, {"text": "x" * 17000}, token=tok)
    assert st == 413 and b["error"] == "too_large"
    st, _, b = call(server, "GET", "/api/rooms", headers={})
    assert st in (401,) or server.allow_guests  # guests without ?user= are still refused
    st, _, b = call(server, "DELETE", "/api/rooms/%s/messages" % room, token=tok)
    assert st == 405
    st, _, b = call(server, "GET", "/api/rooms/%s/nothing" % room, token=tok)
    assert st == 404
    # invite, then the member may send; kick removes them again
    st, _, b = call(server, "POST", "/api/rooms/%s/members" % room, {"user": other}, token=tok)
    assert st == 200 and b["user"] == other
    assert call(server, "POST", "/api/rooms/%s/messages" % room, {"text": "hi"}, token=tok2)[0] == 201
    st, _, b = call(server, "DELETE", "/api/rooms/%s/members/%s" % (room, other), token=tok)
    assert st == 200
    assert call(server, "POST", "/api/rooms/%s/messages" % room, {"text": "hi"}, token=tok2)[0] == 403


def test_rest_presence(server):
    name, tok = signup(server)
    other, _ = signup(server)
    st, _, p = call(server, "GET", "/api/users/%s/presence" % other, token=tok)
    assert st == 200 and p == {"user": other, "online": False, "last_seen": None}

    async def go():
        c = await connect(server, query_token=call(server, "POST", "/api/login",
                                                   {"name": other, "password": "correct horse"})[2]["token"])
        st2, _, p2 = call(server, "GET", "/api/users/%s/presence" % other, token=tok)
        assert p2["online"] is True
        await c.close()
    run(go())
    st, _, b = call(server, "GET", "/api/users/bad%20name/presence", token=tok)
    assert st == 400


def test_pipelined_requests_answer_in_order_while_deferred(server):
    """A deferred answer (a send waits for its commit) holds back the next
    pipelined request, so answers come in order."""
    import socket
    name, tok = signup(server)
    room = uniq("pipe")
    assert call(server, "POST", "/api/rooms", {"room": room, "kind": "public"}, token=tok)[0] == 201
    body = json.dumps({"text": "piped"}).encode()
    req = (b"POST /api/rooms/%s/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (room.encode(), tok.encode(), len(body), body))
    s = wsraw.tls_wrap(socket.create_connection(("127.0.0.1", server.port), timeout=5 * SLOW))
    s.sendall(req + req + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    parts = data.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"201", b"201", b"200"]
    assert b'"seq":1' in parts[0] and b'"seq":2' in parts[1] and b'"status":"ok"' in parts[2]


# ---------------------------------------------------------------- uploads

def test_upload_and_attachment_access(server):
    owner, tok = signup(server)
    member, tok_m = signup(server)
    outsider, tok_o = signup(server)
    room = uniq("pics")
    assert call(server, "POST", "/api/rooms", {"room": room, "kind": "private"}, token=tok)[0] == 201
    assert call(server, "POST", "/api/rooms/%s/members" % room, {"user": member}, token=tok)[0] == 200
    img = png(uniq("x").encode())
    st, _, up = call(server, "POST", "/api/uploads", raw=img, token=tok, headers={"Content-Type": "text/plain"})
    assert st == 201 and up["type"] == "image/png" and up["size"] == len(img)
    assert up["url"] == "/uploads/" + up["id"] and len(up["id"]) == 32
    # the same bytes again: the same id (content-addressed)
    st, _, up2 = call(server, "POST", "/api/uploads", raw=img, token=tok)
    assert st == 201 and up2["id"] == up["id"]
    # the uploader may read it before posting; others may not
    st, hdrs, data = call(server, "GET", up["url"], token=tok)
    assert st == 200 and data == img and hdrs["content-type"] == "image/png"
    assert "immutable" in hdrs["cache-control"] and "private" in hdrs["cache-control"]
    st, _, _ = call(server, "GET", up["url"], token=tok_m)
    assert st == 403

    async def go():
        c = await connect(server, token=tok_m)
        await c.ok({"type": "join", "room": room}, "joined")
        st2, _, ack = call(server, "POST", "/api/rooms/%s/messages" % room,
                           {"text": "look", "attachments": [{"id": up["id"]}]}, token=tok)
        assert st2 == 201
        ev = await c.next_event("message")
        assert ev["attachments"] == [{"id": up["id"], "url": up["url"], "type": "image/png", "size": len(img)}]
        # someone else's upload cannot be attached by a member who cannot read it
        img2 = png(uniq("y").encode())
        st3, _, other_up = call(server, "POST", "/api/uploads", raw=img2, token=tok_o)
        e = await c.err({"type": "send", "room": room, "text": "steal",
                         "attachments": [{"id": other_up["id"]}]}, "forbidden")
        e = await c.err({"type": "send", "room": room, "text": "none",
                         "attachments": [{"id": "0" * 32}]}, "not_found")
        e = await c.err({"type": "send", "room": room, "text": "bad", "attachments": "nope"}, "bad_request")
        await c.close()
    run(go())
    # now a member of the room may read it; the outsider still may not
    st, _, data = call(server, "GET", up["url"], token=tok_m)
    assert st == 200 and data == img
    st, _, b = call(server, "GET", up["url"], token=tok_o)
    assert st == 403 and b["error"] == "forbidden"
    st, _, _ = call(server, "GET", up["url"])
    assert st == 401 or server.allow_guests
    st, _, _ = call(server, "GET", up["url"] + "?token=" + tok_m)
    assert st == 200
    st, hdrs, _ = call(server, "GET", up["url"], token=tok_m, headers={"If-None-Match": '"%s"' % up["id"]})
    assert st == 304
    st, _, _ = call(server, "GET", "/uploads/" + "f" * 32, token=tok)
    assert st == 404
    # history keeps the attachments
    st, _, h = call(server, "GET", "/api/rooms/%s/messages" % room, token=tok)
    assert h["messages"][-1]["attachments"][0]["id"] == up["id"]


@pytest.mark.parametrize("head,typ", [(b"\xff\xd8\xff\xe0" + b"\0" * 20, "image/jpeg"),
                                      (b"GIF89a" + b"\0" * 20, "image/gif"),
                                      (b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 20, "image/webp")])
def test_upload_types_from_bytes(server, head, typ):
    _, tok = signup(server)
    st, _, up = call(server, "POST", "/api/uploads", raw=head + uniq("b").encode(), token=tok,
                     headers={"Content-Type": "image/png"})
    assert st == 201 and up["type"] == typ


def test_upload_refusals(make_server):
    s = make_server("--upload-max", "2k")
    _, tok = signup(s)
    # a renamed text file is not an image, whatever its Content-Type says
    st, _, b = call(s, "POST", "/api/uploads", raw=b"hello, I am text" * 4, token=tok,
                    headers={"Content-Type": "image/png"})
    assert st == 415 and b["error"] == "bad_request"
    st, _, b = call(s, "POST", "/api/uploads", raw=png(b"z" * 4096), token=tok)
    assert st == 413 and b["error"] == "too_large"
    st, _, b = call(s, "POST", "/api/uploads", raw=b"", token=tok)
    assert st == 400
    st, _, b = call(s, "POST", "/api/uploads", raw=png())
    assert st == 401
    # a small image is fine on the same server
    assert call(s, "POST", "/api/uploads", raw=png(), token=tok)[0] == 201


def test_upload_survives_restart(make_server):
    s = make_server()
    _, tok = signup(s)
    img = png(b"restart")
    st, _, up = call(s, "POST", "/api/uploads", raw=img, token=tok)
    s.stop()
    s.start()
    st, _, data = call(s, "GET", up["url"], token=tok)
    assert st == 200 and data == img


# ---------------------------------------------------------------- search

def test_search_is_scoped_to_readable_rooms(server):
    a, tok_a = signup(server)
    b, tok_b = signup(server)
    word = uniq("zebra").replace("-", "").replace("_", "").replace(".", "")
    pub, priv = uniq("spub"), uniq("spriv")
    assert call(server, "POST", "/api/rooms", {"room": pub, "kind": "public"}, token=tok_a)[0] == 201
    assert call(server, "POST", "/api/rooms", {"room": priv, "kind": "private"}, token=tok_a)[0] == 201
    for room, text in [(pub, "first %s in public" % word), (priv, "secret %s in private" % word),
                       (pub, "second %s in public" % word), (pub, "nothing to see")]:
        assert call(server, "POST", "/api/rooms/%s/messages" % room, {"text": text}, token=tok_a)[0] == 201
    st, _, r = call(server, "GET", "/api/search?q=" + word, token=tok_a)
    assert st == 200 and [m["text"] for m in r["results"]] == [
        "second %s in public" % word, "secret %s in private" % word, "first %s in public" % word]
    assert all("room" in m and "seq" in m for m in r["results"])
    st, _, r = call(server, "GET", "/api/search?q=" + word, token=tok_b)
    assert [m["room"] for m in r["results"]] == [pub, pub]
    st, _, r = call(server, "GET", "/api/search?limit=1&q=" + word, token=tok_a)
    assert len(r["results"]) == 1
    st, _, r = call(server, "GET", "/api/search?q=%s&room=%s" % (word, priv), token=tok_a)
    assert [m["room"] for m in r["results"]] == [priv]
    st, _, r = call(server, "GET", "/api/search?q=%s&room=%s" % (word, priv), token=tok_b)
    assert st == 403
    st, _, r = call(server, "GET", "/api/search?q=", token=tok_a)
    assert st == 400
    st, _, r = call(server, "GET", "/api/search?q=%22%20OR%20*", token=tok_a)  # FTS syntax is just text
    assert st == 200

    async def go():
        c = await connect(server, token=tok_b)
        res = await c.ok({"type": "search", "q": word + " public"}, "search")
        assert len(res["results"]) == 2
        await c.err({"type": "search", "q": word, "limit": 0}, "bad_request")
        await c.err({"type": "search"}, "bad_request")
        await c.close()
    run(go())


# ---------------------------------------------------------------- mentions

def test_mentions_fill_the_field_and_the_counts(server):
    a, tok_a = signup(server)
    b, tok_b = signup(server)
    c_name, tok_c = signup(server)
    room = uniq("ment")
    assert call(server, "POST", "/api/rooms", {"room": room, "kind": "public"}, token=tok_a)[0] == 201

    async def go():
        cb = await connect(server, token=tok_b)
        await cb.ok({"type": "join", "room": room}, "joined")
        # @c is not a member: not a mention; @b twice counts once; "x@b" is no mention
        ack = await cb.ok({"type": "send", "room": room, "text": "hi"}, "ack")
        await cb.next_event("message")
        st, _, _ = call(server, "POST", "/api/rooms/%s/messages" % room,
                        {"text": "hey @%s and @%s, also @%s. mail x@%s" % (b, b, c_name, b)}, token=tok_a)
        ev = await cb.next_event("message")
        assert ev["mentions"] == [b]
        st, _, _ = call(server, "POST", "/api/rooms/%s/messages" % room, {"text": "@%s: again" % b}, token=tok_a)
        ev2 = await cb.next_event("message")
        assert ev2["mentions"] == [b]
        st, _, _ = call(server, "POST", "/api/rooms/%s/messages" % room, {"text": "no mention"}, token=tok_a)
        ev3 = await cb.next_event("message")
        assert "mentions" not in ev3
        rooms = await cb.ok({"type": "rooms"}, "rooms")
        mine = [r for r in rooms["rooms"] if r["id"] == room][0]
        assert mine["mentions"] == 2 and mine["unread"] == 4
        await cb.ok({"type": "read", "room": room, "seq": ev["seq"]}, "read_ok")
        rooms = await cb.ok({"type": "rooms"}, "rooms")
        assert [r for r in rooms["rooms"] if r["id"] == room][0]["mentions"] == 1
        await cb.close()
    run(go())
    st, _, h = call(server, "GET", "/api/rooms/%s/messages" % room, token=tok_a)
    assert [m.get("mentions") for m in h["messages"]] == [None, [b], [b], None]


def test_mention_counts_survive_a_restart(make_server):
    s = make_server()
    a, tok_a = signup(s)
    b, tok_b = signup(s)
    room = uniq("mr")
    assert call(s, "POST", "/api/rooms", {"room": room, "kind": "private"}, token=tok_a)[0] == 201
    assert call(s, "POST", "/api/rooms/%s/members" % room, {"user": b}, token=tok_a)[0] == 200
    for t in ["@%s one" % b, "@%s two" % b, "three"]:
        assert call(s, "POST", "/api/rooms/%s/messages" % room, {"text": t}, token=tok_a)[0] == 201
    assert call(s, "POST", "/api/rooms/%s/read" % room, {"seq": 1}, token=tok_b)[0] == 200
    s.stop()
    s.start()
    st, _, rooms = call(s, "GET", "/api/rooms", token=tok_b)
    r = [x for x in rooms["rooms"] if x["id"] == room][0]
    assert r["mentions"] == 1 and r["unread"] == 2


# ---------------------------------------------------------------- operations

def parse_prometheus(text):
    """Parses the text format strictly enough to catch malformed output:
    every sample line is `name{labels} value` with a float value and a name
    declared by a TYPE line."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert typ in ("counter", "gauge", "histogram"), line
            types[name] = typ
        elif line.startswith("# HELP ") or not line:
            continue
        else:
            name_labels, value = line.rsplit(" ", 1)
            float(value)
            base = name_labels.split("{")[0]
            root = base
            for suf in ("_bucket", "_sum", "_count"):
                if base.endswith(suf) and base[:-len(suf)] in types:
                    root = base[:-len(suf)]
            assert root in types, line
            samples[name_labels] = float(value)
    return types, samples


def test_metrics_are_prometheus_text(server):
    _, tok = signup(server)
    room = uniq("met")
    call(server, "POST", "/api/rooms", {"room": room, "kind": "public"}, token=tok)
    _, _, before = call(server, "GET", "/metrics")
    _, s0 = parse_prometheus(before.decode())
    for i in range(3):
        assert call(server, "POST", "/api/rooms/%s/messages" % room, {"text": "m%d" % i}, token=tok)[0] == 201
    st, hdrs, body = call(server, "GET", "/metrics")
    assert st == 200 and hdrs["content-type"].startswith("text/plain; version=0.0.4")
    types, s = parse_prometheus(body.decode())
    for name in ["sori_connections", "sori_rooms", "sori_users", "sori_messages_in_total", "sori_deliveries_total",
                 "sori_slow_consumers_total", "sori_ws_messages_in_total", "sori_ws_messages_out_total",
                 "sori_push_sent_total", "sori_push_failed_total", "sori_push_dropped_total",
                 "sori_store_batch_ops", "sori_store_commit_ms", "sori_http_requests_total"]:
        assert name in types, name
    assert types["sori_store_commit_ms"] == "histogram"
    assert s["sori_messages_in_total"] >= s0["sori_messages_in_total"] + 3
    assert s["sori_store_commit_ms_count"] >= s0["sori_store_commit_ms_count"] + 1
    assert s['sori_store_commit_ms_bucket{le="+Inf"}'] == s["sori_store_commit_ms_count"]
    assert s["sori_rooms"] >= 1 and s["sori_connections"] >= 1


def test_discover_names_this_node(server):
    st, _, b = call(server, "GET", "/api/discover")
    assert st == 200 and b == {"ws": server.ws_url + "/ws", "node": server.node_id}
