"""Authorization and authentication of the JSON protocol through real
clients: who may do what in private, public and dm rooms (PROTOCOL.md §1,
§3, §4 error codes), and the handshake's identity (§2: Bearer header,
?token=, guests, 401 with a JSON body)."""
import base64
import hashlib
import hmac
import json
import subprocess
import time

import pytest

from chatclient import QUIET, connect, run, uniq
from conftest import SLOW, SORI_BIN
from wsraw import RawWS

SECRET = "test-secret-0123456789abcdef0123456789"


# ---------------------------------------------------------------- rooms

def test_private_room_invisible_to_non_members(server):
    """§1/§3: a private room is for its members: a non-member gets forbidden
    for join, history, members, invite, kick, role, part, read; its send is
    refused (chat_send answers not_member: membership is checked before
    anything is stored) and is never delivered or stored; its typing goes
    nowhere."""
    async def go():
        o = await connect(server, uniq("own"))
        m = await connect(server, uniq("mem"))
        x = await connect(server, uniq("out"))
        room = uniq("priv")
        await o.ok({"type": "create", "room": room, "kind": "private"})
        await o.ok({"type": "invite", "room": room, "user": m.user})
        for c in (o, m):
            await c.ok({"type": "join", "room": room})
        await o.ok({"type": "send", "room": room, "text": "secret"})
        for c in (o, m):
            assert (await c.next_event("message"))["text"] == "secret"
        assert (await m.next_event("member"))["event"] == "invited"
        for cmd in ({"type": "join", "room": room},
                    {"type": "join", "room": room, "since": 0},
                    {"type": "history", "room": room},
                    {"type": "history", "room": room, "after": 0},
                    {"type": "members", "room": room},
                    {"type": "invite", "room": room, "user": x.user},
                    {"type": "kick", "room": room, "user": m.user},
                    {"type": "role", "room": room, "user": x.user, "role": "owner"},
                    {"type": "part", "room": room},
                    {"type": "read", "room": room, "seq": 1}):
            r = await x.err(dict(cmd), "forbidden")
            assert "secret" not in json.dumps(r)
        r = await x.err({"type": "send", "room": room, "text": "intruder", "cid": "i1"}, "not_member")
        await x.send({"type": "typing", "room": room})
        await x.no_event("message", QUIET)
        for c in (o, m):
            await c.no_event(None, QUIET)
        h = await o.ok({"type": "history", "room": room})
        assert [msg["text"] for msg in h["messages"]] == ["secret"]
        # not in the intruder's rooms, not in the directory
        r = await x.ok({"type": "rooms"})
        assert room not in [r_["id"] for r_ in r["rooms"]]
        r = await x.ok({"type": "rooms", "public": True})
        assert room not in [r_["id"] for r_ in r["rooms"]]
        # a later invitation is what lets x in
        await o.ok({"type": "invite", "room": room, "user": x.user})
        await x.ok({"type": "join", "room": room, "since": 0}, "joined")
        assert [msg["text"] for msg in await x.messages(1)] == ["secret"]
    run(go())


def test_public_room_non_member(server):
    """§3: anyone may read a public room (history, members) and join it,
    but sending (and read, invite, part, kick) needs membership:
    not_member; nothing is delivered."""
    async def go():
        o = await connect(server, uniq("own"))
        x = await connect(server, uniq("out"))
        room = uniq("pub")
        await o.ok({"type": "create", "room": room, "kind": "public"})
        await o.ok({"type": "join", "room": room})
        await o.ok({"type": "send", "room": room, "text": "hello"})
        o.drain()
        h = await x.ok({"type": "history", "room": room}, "history")
        assert [m["text"] for m in h["messages"]] == ["hello"]
        ms = await x.ok({"type": "members", "room": room}, "members")
        assert [m["user"] for m in ms["members"]] == [o.user]
        await x.err({"type": "send", "room": room, "text": "not yet"}, "not_member")
        await x.err({"type": "read", "room": room, "seq": 1}, "not_member")
        await x.err({"type": "invite", "room": room, "user": x.user}, "not_member")
        await x.err({"type": "part", "room": room}, "not_member")
        await x.err({"type": "kick", "room": room, "user": o.user}, "not_member")
        await x.err({"type": "role", "room": room, "user": o.user, "role": "member"}, "forbidden")
        await o.no_event("message", QUIET)
        h = await o.ok({"type": "history", "room": room})
        assert len(h["messages"]) == 1
        # joining makes x a member; then it may send
        await x.ok({"type": "join", "room": room})
        await x.ok({"type": "send", "room": room, "text": "now"}, "ack")
        assert (await o.next_event("message"))["text"] == "now"
    run(go())


def test_dm_room_closed_to_third_parties(server):
    """§1/§3: a dm room has exactly its two members; a third user gets
    forbidden for join/history/members, cannot send into it (not_member),
    and cannot be invited into it."""
    async def go():
        a = await connect(server, uniq("amy"))
        b = await connect(server, uniq("ben"))
        x = await connect(server, uniq("xav"))
        ack = await a.ok({"type": "dm", "to": b.user, "text": "just us"}, "ack")
        room = ack["room"]
        for cmd in ({"type": "join", "room": room}, {"type": "history", "room": room},
                    {"type": "members", "room": room}, {"type": "read", "room": room, "seq": 1}):
            await x.err(cmd, "forbidden")
        await x.err({"type": "send", "room": room, "text": "hi"}, "not_member")
        await a.err({"type": "invite", "room": room, "user": x.user}, "forbidden")
        await a.err({"type": "kick", "room": room, "user": b.user}, "forbidden")
        await a.err({"type": "role", "room": room, "user": b.user, "role": "admin"}, "forbidden")
        await x.no_event("message", QUIET)
        a.drain()
        b.drain()
        h = await b.ok({"type": "history", "room": room})
        assert [m["text"] for m in h["messages"]] == ["just us"]
        ms = await a.ok({"type": "members", "room": room})
        assert sorted(m["user"] for m in ms["members"]) == sorted([a.user, b.user])
    run(go())


# ---------------------------------------------------------------- tokens

def mint(tmp_path, user, secret=SECRET, ttl=None):
    cmd = [SORI_BIN, "token", "--user", user, "--secret", secret, "--data-dir", str(tmp_path / "tok")]
    if ttl is not None:
        cmd += ["--ttl", str(ttl)]
    out = subprocess.run(cmd, capture_output=True, timeout=10 * SLOW, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().strip()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(claims, secret=SECRET, alg="HS256"):
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), ("%s.%s" % (head, body)).encode(), hashlib.sha256).digest()
    return "%s.%s.%s" % (head, body, b64url(sig) if alg == "HS256" else "")


def refused(srv, path, headers=None):
    """The handshake's HTTP answer: asserts 401 with a JSON error body."""
    ws = RawWS(srv.port, path, headers=headers, expect_status=None)
    try:
        resp = ws.response
    finally:
        ws.close()
    assert resp.status == 401, resp
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = json.loads(resp.body)
    assert body["error"] == "unauthorized" and isinstance(body["message"], str) and body["message"]
    return body


@pytest.fixture
def authsrv(make_server):
    """Tokens only (guests off), a known secret."""
    return make_server("--secret", SECRET, allow_guests=False)


def test_bearer_header_and_query_token(authsrv, tmp_path):
    """§2: Authorization: Bearer <token> and ?token=<token> both sign in as
    the token's sub; a minted token is usable at once."""
    tok = mint(tmp_path, "tina")

    async def go():
        a = await connect(authsrv, token=tok)
        assert a.hello["user"] == "tina"
        b = await connect(authsrv, query_token=tok)
        assert b.hello["user"] == "tina"
        room = uniq("r")
        await a.ok({"type": "create", "room": room, "kind": "public"})
        await b.ok({"type": "join", "room": room})
        await a.ok({"type": "send", "room": room, "text": "hi"})
        m = await b.next_event("message")
        assert m["from"] == "tina"
        # a forged-but-correctly-signed token (any backend with the secret) works too
        c = await connect(authsrv, token=forge({"sub": "fred", "iat": int(time.time()),
                                                 "exp": int(time.time()) + 60}))
        assert c.hello["user"] == "fred"
    run(go())


def test_expired_token_refused_401(authsrv, tmp_path):
    """§2: an expired token is refused at the handshake: HTTP 401 with
    {"error":"unauthorized","message":...}, by header and by query."""
    tok = mint(tmp_path, "tina", ttl=1)
    time.sleep(2.1)
    body = refused(authsrv, "/ws", {"Authorization": "Bearer " + tok})
    assert "expire" in body["message"]
    refused(authsrv, "/ws?token=" + tok)


def test_foreign_secret_and_garbage_tokens_refused_401(authsrv, tmp_path):
    """§2: a token signed with another secret, a tampered one, alg none, or
    garbage: 401 with a JSON body."""
    other = mint(tmp_path, "tina", secret="another-secret-abcdefabcdefabcdef")
    refused(authsrv, "/ws", {"Authorization": "Bearer " + other})
    refused(authsrv, "/ws?token=" + other)
    good = mint(tmp_path, "tina")
    h, p, s = good.split(".")
    tampered = "%s.%s.%s" % (h, b64url(json.dumps({"sub": "root", "exp": int(time.time()) + 99}).encode()), s)
    refused(authsrv, "/ws", {"Authorization": "Bearer " + tampered})
    refused(authsrv, "/ws", {"Authorization": "Bearer " + forge({"sub": "root", "exp": 2 ** 40}, alg="none")})
    refused(authsrv, "/ws", {"Authorization": "Bearer " + forge({"sub": "bad name", "exp": 2 ** 40})})
    refused(authsrv, "/ws", {"Authorization": "Bearer " + forge({"sub": "nobody"})})  # no exp
    refused(authsrv, "/ws", {"Authorization": "Bearer not.a.jwt"})
    refused(authsrv, "/ws?token=")


def test_guests_off_refuses_user_param(authsrv):
    """§2: guest mode is off by default: ?user= (and no credentials at all)
    is refused with 401 and a JSON body."""
    refused(authsrv, "/ws?user=guest")
    refused(authsrv, "/ws")


def test_bad_token_wins_over_guest_user(make_server, tmp_path):
    """§2 "first match wins": with guests on, a bad token is still 401 even
    when ?user= is given; a good token's sub wins over ?user=."""
    srv = make_server("--secret", SECRET)
    other = mint(tmp_path, "tina", secret="another-secret-abcdefabcdefabcdef")
    refused(srv, "/ws?user=guest", {"Authorization": "Bearer " + other})
    refused(srv, "/ws?user=guest&token=" + other)
    good = mint(tmp_path, "tina")

    async def go():
        c = await connect(srv, "guest", query_token=good)
        assert c.hello["user"] == "tina"
        g = await connect(srv, "guest")
        assert g.hello["user"] == "guest"
    run(go())
