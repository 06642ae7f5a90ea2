"""Limits (OPERATIONS.md "Limits"): per-address connection count and rate
at accept, connections per user at the handshake, rooms per user and
members per room over JSON and REST, the memory high-water mark, the store
queue bound, and slow clients (a request head or body trickled a byte at a
time, a WebSocket frame that never ends) cut at their deadline.

Per-address limits exempt loopback by default, so these servers run with
--ip-limits-loopback; clients bind 127.0.0.2 / 127.0.0.3 as their source
address to show the count is per address (any 127.x reaches a 127.0.0.1
listener on Linux). Every wait is bounded.
"""
import asyncio
import json
import socket
import ssl
import time

import pytest
import websockets

from chatclient import connect, run, uniq
from conftest import SLOW, TLS
from httpclient import call
import wsraw


def sock_from(port, src="127.0.0.1", timeout=5):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout * SLOW)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return wsraw.tls_wrap(s)  # TLS in a SORI_TEST_TLS=1 run


def get_from(port, src, path="/healthz"):
    """One GET on a new connection from source address src: the response."""
    s = sock_from(port, src)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        return wsraw.read_http_response(wsraw.Reader(s))
    finally:
        s.close()


def held_from(port, src, n):
    """n keep-alive connections from src, each known to be accepted (one
    request answered on it), left open."""
    out = []
    for _ in range(n):
        s = sock_from(port, src)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wsraw.read_http_response(wsraw.Reader(s)).status == 200
        out.append(s)
    return out


def metric(server, name):
    st, _, body = server.http("GET", "/metrics")
    assert st == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no metric " + name)


@pytest.mark.skipif(TLS, reason="a TLS port refuses over-limit connections by closing them, without the 429")
def test_conns_per_ip_counted_per_address(make_server):
    s = make_server("--max-conns-per-ip", "3", "--conn-rate-per-ip", "0", "--ip-limits-loopback")
    held = held_from(s.port, "127.0.0.2", 3)
    # the three are open: a fourth from the same address is refused before any parsing
    r = get_from(s.port, "127.0.0.2")
    assert r.status == 429, r
    body = json.loads(r.body)
    assert body["error"] == "rate_limited" and body["message"]
    # another address is not affected
    assert get_from(s.port, "127.0.0.3").status == 200
    # closing one frees a place (the count goes back down)
    held.pop().close()
    deadline = time.monotonic() + 3 * SLOW
    while True:
        r = get_from(s.port, "127.0.0.2")
        if r.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.status == 200
    for h in held:
        h.close()
    assert metric(s, "sori_refused_conns_per_ip_total") >= 1


def test_loopback_exempt_by_default(make_server):
    s = make_server("--max-conns-per-ip", "2")
    held = held_from(s.port, "127.0.0.1", 5)
    assert get_from(s.port, "127.0.0.1").status == 200
    for h in held:
        h.close()


@pytest.mark.skipif(TLS, reason="a TLS port refuses over-limit connections by closing them, without the 429")
def test_conn_rate_per_ip(make_server):
    s = make_server("--conn-rate-per-ip", "2", "--conn-burst-per-ip", "4", "--max-conns-per-ip", "0",
                    "--ip-limits-loopback")
    statuses = [get_from(s.port, "127.0.0.2") for _ in range(10)]
    ok = [r for r in statuses if r.status == 200]
    refused = [r for r in statuses if r.status == 429]
    assert 4 <= len(ok) <= 6 * SLOW and len(ok) + len(refused) == 10, [r.status for r in statuses]
    assert refused[0].headers.get("retry-after") == "1"
    assert json.loads(refused[0].body)["error"] == "rate_limited"
    assert get_from(s.port, "127.0.0.3").status == 200  # its own bucket
    time.sleep(1.1)
    assert get_from(s.port, "127.0.0.2").status == 200  # refilled
    assert metric(s, "sori_refused_conn_rate_total") >= 4


def test_conns_per_user(make_server):
    s = make_server("--max-conns-per-user", "2")

    async def body():
        alice = uniq("alice")
        a1 = await connect(s, alice)
        a2 = await connect(s, alice)
        with pytest.raises(websockets.InvalidStatusCode) as e:
            await connect(s, alice)
        assert e.value.status_code == 429
        await connect(s, uniq("bob"))  # others are not affected
        await a1.close()
        for _ in range(50):
            try:
                a3 = await connect(s, alice)
                break
            except websockets.InvalidStatusCode:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("a place did not free up")
        await a2.close()
        await a3.close()
        return alice

    alice = run(body())
    r = wsraw.RawWS(s.port, "/ws?user=" + alice, expect_status=101)
    r2 = wsraw.RawWS(s.port, "/ws?user=" + alice, expect_status=101)
    refused = wsraw.RawWS(s.port, "/ws?user=" + alice, expect_status=429)
    assert json.loads(refused.response.body)["error"] == "rate_limited"
    for c in (r, r2, refused):
        c.close()
    assert metric(s, "sori_refused_conns_per_user_total") >= 2


def test_conns_per_user_stomp_connect(make_server):
    """A STOMP client naming itself in CONNECT is counted there: ERROR
    code:rate_limited and close 1008; JSON and STOMP sessions count together."""
    from stompclient import encode, open_ws
    s = make_server("--max-conns-per-user", "1")

    async def body():
        name = uniq("st")
        j = await connect(s, name)
        c = await open_ws(s)
        await c.raw(encode("CONNECT", [("accept-version", "1.2"), ("host", "x"), ("login", name)]))
        e = await c.error_and_close()
        assert e["headers"]["code"] == "rate_limited" and e["body"], e
        assert c.close_code == 1008
        await j.close()
        for _ in range(50):
            c = await open_ws(s)
            await c.raw(encode("CONNECT", [("accept-version", "1.2"), ("host", "x"), ("login", name)]))
            f = await c.frame()
            if f["command"] == "CONNECTED":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the place did not free up")

    run(body())


def test_rooms_per_user_json_and_rest(make_server):
    s = make_server("--max-rooms-per-user", "3")

    async def body():
        alice, bob, carol = uniq("alice"), uniq("bob"), uniq("carol")
        a = await connect(s, alice)
        b = await connect(s, bob)
        c = await connect(s, carol)
        r = [uniq("r") for _ in range(6)]
        await a.ok({"type": "create", "room": r[0], "kind": "public"})
        await a.ok({"type": "create", "room": r[1], "kind": "public"})
        for i in (2, 3, 4):
            await b.ok({"type": "create", "room": r[i], "kind": "public"})
        await c.ok({"type": "create", "room": r[5], "kind": "private"})
        await a.ok({"type": "join", "room": r[2]})  # three memberships
        e = await a.err({"type": "create", "room": uniq("r"), "kind": "public"}, "too_large")
        assert "3 rooms" in e["message"]
        await a.err({"type": "join", "room": r[3]}, "too_large")
        await c.err({"type": "invite", "room": r[5], "user": alice}, "too_large")
        # over REST: an invite, and a create
        st, _, j = call(s, "POST", "/api/rooms/%s/members?user=%s" % (r[4], bob), {"user": alice})
        assert st == 413 and j["error"] == "too_large", (st, j)
        st, _, j = call(s, "POST", "/api/rooms?user=" + alice, {"room": uniq("r"), "kind": "public"})
        assert st == 413 and j["error"] == "too_large", (st, j)
        # leaving one makes room for another
        await a.ok({"type": "part", "room": r[2]})
        await a.ok({"type": "join", "room": r[3]})
        # direct messages are never refused by it
        await a.ok({"type": "dm", "to": bob, "text": "hi"})

    run(body())
    assert metric(s, "sori_refused_membership_total") >= 5


def test_members_per_room_json_and_rest(make_server):
    s = make_server("--max-members-per-room", "3")

    async def body():
        names = [uniq("m") for _ in range(5)]
        cs = [await connect(s, n) for n in names]
        room = uniq("big")
        await cs[0].ok({"type": "create", "room": room, "kind": "public"})
        await cs[1].ok({"type": "join", "room": room})
        await cs[2].ok({"type": "join", "room": room})
        e = await cs[3].err({"type": "join", "room": room}, "too_large")
        assert "3 members" in e["message"]
        await cs[0].err({"type": "invite", "room": room, "user": names[4]}, "too_large")
        st, _, j = call(s, "POST", "/api/rooms/%s/members?user=%s" % (room, names[0]), {"user": names[4]})
        assert st == 413 and j["error"] == "too_large", (st, j)
        await cs[2].ok({"type": "part", "room": room})
        await cs[3].ok({"type": "join", "room": room})
        await cs[0].ok({"type": "send", "room": room, "text": "still works"})

    run(body())


def test_memory_high_water_refuses_new_work(make_server):
    s = make_server("--memory-high-water", "1m")  # below any sori's RSS

    async def body():
        with pytest.raises(websockets.InvalidStatusCode) as e:
            await connect(s, uniq("late"))
        assert e.value.status_code == 503

    run(body())
    r = wsraw.RawWS(s.port, "/ws?user=x", expect_status=503)
    j = json.loads(r.response.body)
    assert j["error"] == "unavailable" and "memory" in j["message"]
    r.close()
    st, _, j = call(s, "POST", "/api/rooms?user=x", {"room": uniq("r"), "kind": "public"})
    assert st == 503 and j["error"] == "unavailable", (st, j)
    st, _, _ = call(s, "GET", "/api/rooms?user=x")  # reads keep working
    assert st == 200
    assert metric(s, "sori_memory_rss_bytes") > 1 << 20
    assert metric(s, "sori_memory_high_water_bytes") == 1 << 20
    assert metric(s, "sori_refused_memory_total") >= 3

    fine = make_server("--memory-high-water", "64g")

    async def ok():
        c = await connect(fine, uniq("u"))
        room = uniq("r")
        await c.ok({"type": "create", "room": room, "kind": "public"})
        await c.ok({"type": "join", "room": room})
        await c.ok({"type": "send", "room": room, "text": "fine"})

    run(ok())


def test_store_queue_max_refuses_sends(make_server):
    s = make_server("--durability", "async", "--flush-ms", "1000", "--store-queue-max", "1")

    async def body():
        c = await connect(s, uniq("q"))
        room = uniq("r")
        await c.ok({"type": "create", "room": room, "kind": "public"})
        await c.ok({"type": "join", "room": room})
        # the create's writes wait up to --flush-ms: sends are refused meanwhile
        loop = asyncio.get_running_loop()
        end = loop.time() + 5 * SLOW
        refused = 0
        while True:
            r = await c.rpc({"type": "send", "room": room, "text": "x"})
            if r["type"] == "ack":
                break
            assert r["code"] == "unavailable", r
            refused += 1
            assert loop.time() < end, "sends never got through"
            await asyncio.sleep(0.1)
        # one message is now queued: the next send is refused at once
        r = await c.rpc({"type": "send", "room": room, "text": "y"})
        assert r["type"] == "error" and r["code"] == "unavailable", r
        assert "storing" in r["message"]
        return refused

    run(body(), timeout=15 * SLOW)
    assert metric(s, "sori_refused_store_queue_total") >= 1


def _trickle(sock, data, every, limit):
    """Sends data a byte every `every` s until the server answers or closes
    (or `limit` s pass): (seconds from the start, bytes received)."""
    t0 = time.monotonic()
    sock.setblocking(False)
    got = b""
    i = 0
    while time.monotonic() - t0 < limit:
        if i < len(data):
            try:
                sock.send(data[i:i + 1])
            except OSError:
                break
            i += 1
        end = time.monotonic() + every
        closed = False
        while time.monotonic() < end:
            try:
                chunk = sock.recv(4096)
                if not chunk:
                    closed = True
                    break
                got += chunk
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                time.sleep(0.02)
            except OSError:
                closed = True
                break
        if closed or got:
            break
    return time.monotonic() - t0, got


def test_slowloris_head_cut_at_handshake_timeout(make_server):
    s = make_server("--handshake-timeout-ms", "2000")
    sock = sock_from(s.port)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    took, got = _trickle(sock, head, 0.3, 10 * SLOW)
    sock.close()
    # the deadline is 2 s rounded up plus one wheel second: cut after 3-4 s,
    # not moved by the bytes
    assert took < 5.5 * SLOW, took
    assert got.startswith(b"HTTP/1.1 408"), got


def test_slowloris_deadline_counts_from_connect(make_server):
    s = make_server("--handshake-timeout-ms", "2000")
    sock = sock_from(s.port)
    t0 = time.monotonic()
    time.sleep(2.5)  # idle, then a trickle: still cut 3-4 s after connect
    took, got = _trickle(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"a" * 200, 0.3, 10 * SLOW)
    sock.close()
    assert time.monotonic() - t0 < 4.8 * SLOW, (took, got)
    assert got.startswith(b"HTTP/1.1 408"), got


def test_body_trickle_cut(make_server):
    s = make_server("--handshake-timeout-ms", "2000")
    sock = sock_from(s.port)
    sock.sendall(b"POST /api/rooms?user=slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 500\r\n\r\n")
    took, got = _trickle(sock, b"{" + b" " * 498 + b"}", 0.3, 10 * SLOW)
    sock.close()
    assert took < 5.5 * SLOW, took
    assert got.startswith(b"HTTP/1.1 408"), got


def test_ws_frame_trickle_cut(make_server):
    s = make_server("--heartbeat-ms", "1000")
    ws = wsraw.RawWS(s.port, "/ws?user=" + uniq("trickle"))
    frame = wsraw.build_frame(wsraw.OP_TEXT, json.dumps({"type": "typing", "room": "x" * 80}).encode())
    # one byte every 0.3 s, never the last one: bytes keep coming but no
    # frame completes, so the heartbeat check closes it after two silent
    # intervals (2-3 s), as if the peer were silent
    sock = ws.sock
    sock.setblocking(False)
    t0 = time.monotonic()
    closed = False
    i = 0
    while not closed and time.monotonic() - t0 < 10 * SLOW:
        try:
            sock.send(frame[i:i + 1])
            i = min(i + 1, len(frame) - 2)
        except OSError:
            closed = True
            break
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            try:
                if not sock.recv(4096):
                    closed = True
                    break
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                time.sleep(0.02)
            except OSError:
                closed = True
                break
    took = time.monotonic() - t0
    sock.close()
    assert closed and took < 6 * SLOW, took


def test_limits_documented():
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ops = open(os.path.join(root, "docs", "OPERATIONS.md")).read()
    section = ops.split("## Limits", 1)[1].split("\n## ", 1)[0]
    for flag in ("--max-conns-per-ip", "--conn-rate-per-ip", "--conn-burst-per-ip", "--ip-limits-loopback",
                 "--max-conns-per-user", "--max-rooms-per-user", "--max-members-per-room",
                 "--memory-high-water", "--store-queue-max", "--handshake-timeout-ms", "--http-max-header",
                 "--http-max-body", "--max-connections", "--max-rooms-per-conn", "--rate", "--out-limit"):
        assert flag in section, flag
