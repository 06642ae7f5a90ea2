"""WebSocket behaviour of the real server: the opening handshake (RFC 6455 §4),
framing (§5), closing (§5.5.1, §7), UTF-8 (§8.1), permessage-deflate
(RFC 7692), the JSON session of PROTOCOL.md §2-§4, heartbeats, slow consumers
and shutdown. Byte-exact cases use the raw client in wsraw.py; the rest use
python3-websockets 10.4. Each test names the clause it checks."""
import asyncio
import json
import os
import socket
import struct
import threading
import time

import pytest
import websockets

from conftest import SLOW, Server, _finish, ws_tls
from wsraw import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RSV1, RSV2, RSV3,
                   Closed, RawWS, build_frame, deflate, http_raw, inflate, parse_close)

T = 5 * SLOW  # generous bound for one answer


def run(coro, timeout=10 * SLOW):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _module_server(tmp_path_factory, name, *args):
    return Server(tmp_path_factory.mktemp(name), list(args)).start()


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    """A guest server with /echo and the default limits (ws-max-message 1m)."""
    s = _module_server(tmp_path_factory, "echo", "--ws-echo", "--ws-max-message", "1m")
    yield s
    _finish(s)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """/echo with a 1 KiB message limit."""
    s = _module_server(tmp_path_factory, "small", "--ws-echo", "--ws-max-message", "1k")
    yield s
    _finish(s)


@pytest.fixture(scope="module")
def hb(tmp_path_factory):
    """A server with a 1 s heartbeat."""
    s = _module_server(tmp_path_factory, "hb", "--heartbeat-ms", "1000")
    yield s
    _finish(s)


def echo_ws(srv, **kw):
    return RawWS(srv.port, "/echo", **kw)


def assert_fails_with(ws, code, timeout=T):
    """The server answers with a close frame carrying `code` (§7.1.7 fail the
    connection) and then closes TCP."""
    got, _reason = ws.expect_close(timeout)
    assert got == code
    assert ws.wait_tcp_close(timeout)


def assert_server_alive(srv):
    assert srv.http("GET", "/healthz")[0] == 200


# ======================================================================
# Opening handshake (RFC 6455 §4.2.1, §4.2.2; PROTOCOL.md §2)
# ======================================================================

def test_handshake_accept_value(server):
    """§4.2.2 5.4: Sec-WebSocket-Accept = base64(SHA-1(key + GUID)); the
    RFC's own example key."""
    ws = RawWS(server.port, "/ws?user=alice", key="dGhlIHNhbXBsZSBub25jZQ==")
    try:
        assert ws.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert ws.headers["upgrade"].lower() == "websocket"
        assert "upgrade" in ws.headers["connection"].lower()
        assert "sec-websocket-protocol" not in ws.headers  # none offered: none chosen
    finally:
        ws.close()


@pytest.mark.parametrize("key", [None, "abc", "dGhlIHNhbXBsZSBub25jZQ", "!!!!!!!!!!!!!!!!!!!!!!!=",
                                 "dGhlIHNhbXBsZSBub25jZQ=="[:-2] + "AAAA"])
def test_handshake_bad_key_400(server, key):
    """§4.2.1 item 5: Sec-WebSocket-Key must be a base64 16-byte nonce."""
    if key is None:
        ws = RawWS(server.port, "/ws?user=a", drop=["Sec-WebSocket-Key"], expect_status=400)
    else:
        ws = RawWS(server.port, "/ws?user=a", headers={"Sec-WebSocket-Key": key}, expect_status=400)
    ws.close()
    assert json.loads(ws.response.body)["error"] == "bad_request"


@pytest.mark.parametrize("version", ["12", "8", "130", None])
def test_handshake_bad_version_426(server, version):
    """§4.2.2 item 4 / §4.4: an unsupported version gets 426 Upgrade Required
    with Sec-WebSocket-Version: 13."""
    if version is None:
        ws = RawWS(server.port, "/ws?user=a", drop=["Sec-WebSocket-Version"], expect_status=426)
    else:
        ws = RawWS(server.port, "/ws?user=a", headers={"Sec-WebSocket-Version": version},
                   expect_status=426)
    ws.close()
    assert ws.headers["sec-websocket-version"] == "13"


def test_handshake_no_upgrade_426(server):
    """§4.2.1 items 3-4: no Upgrade: websocket means this is not a WebSocket
    handshake: 426 Upgrade Required (RFC 9110 §15.5.22) naming websocket."""
    ws = RawWS(server.port, "/ws?user=a", drop=["Upgrade"], expect_status=426)
    ws.close()
    assert ws.headers["upgrade"].lower() == "websocket"
    status, _, _ = server.http("GET", "/ws?user=a")  # a plain GET
    assert status == 426


def test_handshake_no_connection_upgrade_426(server):
    """§4.2.1 item 4: Connection must include the token Upgrade."""
    ws = RawWS(server.port, "/ws?user=a", headers={"Connection": "keep-alive"}, expect_status=426)
    ws.close()


def test_handshake_tokens_case_insensitive(server):
    """§4.2.1 items 3-4: Upgrade and Connection are compared ASCII
    case-insensitively and Connection is a token list."""
    ws = RawWS(server.port, "/ws?user=a", headers={"Upgrade": "WebSocket",
                                                   "Connection": "keep-alive, UPGRADE"})
    try:
        assert ws.recv_json()["type"] == "hello"
    finally:
        ws.close()


def test_handshake_post_refused(server):
    """§4.2.1 item 1: the handshake is a GET."""
    ws = RawWS(server.port, "/ws?user=a", method="POST", expect_status=None,
               headers={"Content-Length": "0"})
    ws.close()
    assert ws.response.status in (400, 405)


def test_handshake_http10_refused(server):
    """§4.2.1 item 1: the handshake needs HTTP/1.1 or higher."""
    resp, reader = http_raw(server.port, b"GET /ws?user=a HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\n"
                                         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                         b"Sec-WebSocket-Version: 13\r\n\r\n")
    reader.sock.close()
    assert resp.status == 400


def test_subprotocol_unknown_only_400(server):
    """§4.2.2 item 5.5 and PROTOCOL.md §2: offering only unsupported
    sub-protocols is refused with 400."""
    ws = RawWS(server.port, "/ws?user=a", headers={"Sec-WebSocket-Protocol": "foo, bar"},
               expect_status=400)
    ws.close()
    assert json.loads(ws.response.body)["error"] == "bad_request"


def test_subprotocol_picks_supported(server):
    """§4.2.2 item 5.5: the server selects one of the offered protocols."""
    ws = RawWS(server.port, "/ws?user=a", headers={"Sec-WebSocket-Protocol": "foo, sori.v1"})
    try:
        assert ws.headers["sec-websocket-protocol"] == "sori.v1"
        assert ws.recv_json()["type"] == "hello"
    finally:
        ws.close()


def test_subprotocol_with_websockets_client(server):
    """§4.1 (client side check): websockets validates the chosen protocol."""
    async def go():
        async with websockets.connect(server.ws_url + "/ws?user=sub", **ws_tls(server), compression=None,
                                      subprotocols=["foo", "sori.v1"]) as ws:
            assert ws.subprotocol == "sori.v1"
            assert json.loads(await ws.recv())["type"] == "hello"
    run(go())


def test_no_token_guests_off_401(make_server):
    """PROTOCOL.md §2: without guest mode a missing token is refused at the
    handshake with 401 and {"error":"unauthorized","message":...}."""
    srv = make_server(allow_guests=False)
    for path in ("/ws", "/ws?user=alice"):
        ws = RawWS(srv.port, path, expect_status=401)
        ws.close()
        doc = json.loads(ws.response.body)
        assert doc["error"] == "unauthorized" and doc["message"]
        assert ws.headers["content-type"] == "application/json"


def test_guest_without_user_401(server):
    """PROTOCOL.md §2: guest mode needs ?user=NAME (or a token)."""
    ws = RawWS(server.port, "/ws", expect_status=401)
    ws.close()
    assert json.loads(ws.response.body)["error"] == "unauthorized"


@pytest.mark.parametrize("user", ["bad%20name", "a" * 33, "%00x", "caf%C3%A9"])
def test_guest_bad_user_name_400(server, user):
    """PROTOCOL.md §1: user names are [A-Za-z0-9_.-]{1,32}."""
    ws = RawWS(server.port, "/ws?user=" + user, expect_status=None)
    ws.close()
    assert ws.response.status in (400, 401)
    assert ws.response.status != 101


def test_allowed_origins(make_server):
    """§4.2.2 item 4 and §10.2: a server may refuse an Origin with 403;
    allowed origins (and non-browser clients without Origin) get 101."""
    srv = make_server("--allowed-origins", "http://ok.example")
    ws = RawWS(srv.port, "/ws?user=a", headers={"Origin": "http://evil.example"}, expect_status=403)
    ws.close()
    assert json.loads(ws.response.body)["error"] == "forbidden"
    ws = RawWS(srv.port, "/ws?user=a", headers={"Origin": "http://ok.example.evil.example"},
               expect_status=403)
    ws.close()
    for headers in ({"Origin": "http://ok.example"}, {}):
        ws = RawWS(srv.port, "/ws?user=a", headers=headers)
        try:
            assert ws.recv_json()["type"] == "hello"
        finally:
            ws.close()


# ======================================================================
# The JSON session (PROTOCOL.md §2-§4)
# ======================================================================

def test_hello_frame(server):
    """PROTOCOL.md §2: the first frame is hello {type,user,session,node,
    heartbeat_ms,server_time}."""
    async def go():
        async with websockets.connect(server.ws_url + "/ws?user=alice", **ws_tls(server), compression=None) as ws:
            return json.loads(await ws.recv())
    before = time.time() * 1000
    hello = run(go())
    after = time.time() * 1000
    assert hello["type"] == "hello"
    assert hello["user"] == "alice"
    assert isinstance(hello["session"], str) and hello["session"]
    assert isinstance(hello["node"], str) and hello["node"]
    assert hello["heartbeat_ms"] == 25000 and isinstance(hello["heartbeat_ms"], int)
    assert isinstance(hello["server_time"], int)
    assert before - 2000 <= hello["server_time"] <= after + 2000


def test_hello_sessions_distinct_and_heartbeat_configured(hb):
    """PROTOCOL.md §2: heartbeat_ms reports the configured interval; each
    connection is its own session."""
    a = RawWS(hb.port, "/ws?user=a")
    b = RawWS(hb.port, "/ws?user=a")
    try:
        ha, hb_ = a.recv_json(), b.recv_json()
        assert ha["heartbeat_ms"] == 1000
        assert ha["session"] != hb_["session"]
    finally:
        a.close()
        b.close()


def test_json_ping_pong_ref(server):
    """PROTOCOL.md §3: {"type":"ping"} gets {"type":"pong"}, with the ref."""
    async def go():
        async with websockets.connect(server.ws_url + "/ws?user=bob", **ws_tls(server), compression=None) as ws:
            await ws.recv()
            out = []
            for msg in ({"type": "ping", "ref": 1}, {"type": "ping", "ref": "r-2"}, {"type": "ping"}):
                await ws.send(json.dumps(msg))
                out.append(json.loads(await ws.recv()))
            return out
    a, b, c = run(go())
    assert a == {"type": "pong", "ref": 1}
    assert b == {"type": "pong", "ref": "r-2"}
    assert c == {"type": "pong"}


@pytest.mark.parametrize("text,ref", [
    ('{"type":', None),
    ("not json at all", None),
    ("[1,2,3]", None),
    ('"ping"', None),
    ('{"type":"no_such_command","ref":7}', 7),
    ('{"type":"no_such_command","ref":"abc"}', "abc"),
    ('{"ref":9}', 9),
    ('{"type":42,"ref":"x"}', "x"),
])
def test_bad_command_error_frame_connection_stays(server, text, ref):
    """PROTOCOL.md §3-§4: malformed JSON, a non-object or an unknown type is
    answered with error {code: bad_request, ref} and the connection stays
    usable (§5.6)."""
    ws = RawWS(server.port, "/ws?user=carol")
    try:
        ws.recv_json()
        ws.send_text(text)
        err = ws.recv_json()
        assert err["type"] == "error" and err["code"] == "bad_request"
        assert isinstance(err["message"], str) and err["message"]
        if ref is None:
            assert "ref" not in err
        else:
            assert err["ref"] == ref
        ws.send_json({"type": "ping", "ref": 2})
        assert ws.recv_json() == {"type": "pong", "ref": 2}
    finally:
        ws.close()


def test_binary_frame_error(server):
    """PROTOCOL.md §3: commands are text frames; a binary frame gets
    error bad_request and the connection stays open."""
    ws = RawWS(server.port, "/ws?user=dave")
    try:
        ws.recv_json()
        ws.send_binary(b'{"type":"ping"}')
        err = ws.recv_json()
        assert err["type"] == "error" and err["code"] == "bad_request"
        ws.send_json({"type": "ping", "ref": 3})
        assert ws.recv_json() == {"type": "pong", "ref": 3}
    finally:
        ws.close()


# ======================================================================
# Framing (RFC 6455 §5)
# ======================================================================

def _fails(srv, frames, code, path="/echo"):
    ws = RawWS(srv.port, path)
    try:
        if path.startswith("/ws"):
            ws.recv_json()
        for f in frames:
            ws.send_raw(f)
        assert_fails_with(ws, code)
    finally:
        ws.close()
    assert_server_alive(srv)


def test_unmasked_client_frame_1002(echo):
    """§5.1: a server MUST close the connection on an unmasked client frame
    (1002, §7.4.1)."""
    _fails(echo, [build_frame(OP_TEXT, b"hello", mask=False)], 1002)


def test_unmasked_frame_on_json_endpoint_1002(server):
    """§5.1 on /ws too."""
    _fails(server, [build_frame(OP_TEXT, b'{"type":"ping"}', mask=False)], 1002, "/ws?user=m")


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3])
def test_rsv_bits_without_extension_1002(echo, rsv):
    """§5.2: RSV1-3 MUST be 0 unless an extension defines them; RFC 7692
    §6.1: a compressed frame without negotiated deflate is a protocol error."""
    payload = deflate(b"hello") if rsv & RSV1 else b"hello"
    _fails(echo, [build_frame(OP_TEXT, payload, rsv=rsv)], 1002)


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_reserved_opcode_1002(echo, opcode):
    """§5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved; §10.7 fail with 1002."""
    _fails(echo, [build_frame(opcode, b"x")], 1002)


def test_ping_payload_over_125_1002(echo):
    """§5.5: control frames have a payload of at most 125 bytes."""
    _fails(echo, [build_frame(OP_PING, b"p" * 126)], 1002)


def test_close_payload_over_125_1002(echo):
    """§5.5 for a close frame."""
    _fails(echo, [build_frame(OP_CLOSE, struct.pack("!H", 1000) + b"r" * 124)], 1002)


def test_fragmented_ping_1002(echo):
    """§5.5: control frames MUST NOT be fragmented."""
    _fails(echo, [build_frame(OP_PING, b"ab", fin=False)], 1002)


def test_continuation_without_start_1002(echo):
    """§5.4: a continuation frame needs a message in progress."""
    _fails(echo, [build_frame(OP_CONT, b"orphan", fin=True)], 1002)


@pytest.mark.parametrize("second", [OP_TEXT, OP_BINARY])
def test_new_message_during_fragmented_one_1002(echo, second):
    """§5.4: fragments of one message are not interleaved with another
    message's frames."""
    _fails(echo, [build_frame(OP_TEXT, b"part", fin=False), build_frame(second, b"new")], 1002)


def test_64bit_length_with_msb_set_1002(echo):
    """§5.2: the most significant bit of a 64-bit length MUST be 0."""
    hdr = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + b"\x00\x00\x00\x00"
    _fails(echo, [hdr], 1002)


def test_fragmented_message_with_interleaved_ping(echo):
    """§5.4: control frames MAY be injected in the middle of a fragmented
    message; §5.5.2-3: the ping is answered with a pong carrying its payload,
    then the whole message is handled."""
    ws = echo_ws(echo)
    try:
        ws.send_frame(OP_TEXT, b"Hel", fin=False)
        ws.send_frame(OP_PING, b"mid")
        ws.send_frame(OP_CONT, b"lo, ", fin=False)
        ws.send_frame(OP_CONT, b"world")
        f = ws.recv_frame(T)
        assert (f.opcode, f.payload, f.fin) == (OP_PONG, b"mid", True)
        assert ws.recv_message(T) == (OP_TEXT, b"Hello, world")
    finally:
        ws.close()


def test_many_fragments_reassembled(echo):
    """§5.4: a message may have any number of fragments, empty ones too."""
    ws = echo_ws(echo)
    try:
        parts = [os.urandom(97) for _ in range(100)]
        ws.send_frame(OP_BINARY, parts[0], fin=False)
        for p in parts[1:]:
            ws.send_frame(OP_CONT, p, fin=False)
        ws.send_frame(OP_CONT, b"", fin=True)
        assert ws.recv_message(T) == (OP_BINARY, b"".join(parts))
    finally:
        ws.close()


@pytest.mark.parametrize("size,form", [(0, 7), (125, 7), (126, 16), (200, 16), (65535, 16),
                                       (65536, 64), (70000, 64)])
def test_length_forms_echoed(echo, size, form):
    """§5.2: 7-bit lengths up to 125, 16-bit up to 65535, then 64-bit; the
    server's echo uses the minimal form too."""
    data = os.urandom(size)
    ws = echo_ws(echo)
    try:
        ws.send_frame(OP_BINARY, data)
        f = ws.recv_frame(T)
        assert (f.opcode, f.fin, f.rsv) == (OP_BINARY, True, 0)
        assert f.payload == data
        assert f.length_form == form
    finally:
        ws.close()


def test_non_minimal_length_accepted(echo):
    """§5.2 asks senders for the minimal length encoding; the server still
    reads a 64-bit-encoded short frame (liberal in what it accepts)."""
    ws = echo_ws(echo)
    try:
        ws.send_frame(OP_TEXT, b"short", length_form=64)
        ws.send_frame(OP_TEXT, b"tiny", length_form=16)
        assert ws.recv_message(T) == (OP_TEXT, b"short")
        assert ws.recv_message(T) == (OP_TEXT, b"tiny")
    finally:
        ws.close()


def test_frames_split_across_tcp_segments(echo):
    """§5.2: a frame may arrive in pieces, header bytes included."""
    ws = echo_ws(echo)
    try:
        ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = build_frame(OP_TEXT, b"x" * 300) + build_frame(OP_TEXT, b"second")
        for i in range(0, 20):
            ws.send_raw(data[i:i + 1])
            time.sleep(0.002)
        ws.send_raw(data[20:])
        assert ws.recv_message(T) == (OP_TEXT, b"x" * 300)
        assert ws.recv_message(T) == (OP_TEXT, b"second")
    finally:
        ws.close()


def test_many_frames_in_one_send(echo):
    """§5.2: frames follow each other back to back in one TCP segment."""
    ws = echo_ws(echo)
    try:
        msgs = [("m%d" % i).encode() * (i + 1) for i in range(50)]
        ws.send_raw(b"".join(build_frame(OP_TEXT, m) for m in msgs))
        for m in msgs:
            assert ws.recv_message(T) == (OP_TEXT, m)
    finally:
        ws.close()


def test_ping_pong_same_payload(echo):
    """§5.5.2-3: a pong answers a ping with the same application data."""
    ws = echo_ws(echo)
    try:
        for payload in (b"", b"abc", os.urandom(125)):
            ws.send_ping(payload)
            f = ws.recv_frame(T)
            assert (f.opcode, f.payload, f.fin) == (OP_PONG, payload, True)
    finally:
        ws.close()


def test_unsolicited_pong_ignored(echo):
    """§5.5.3: an unsolicited pong needs no answer."""
    ws = echo_ws(echo)
    try:
        ws.send_frame(OP_PONG, b"whatever")
        ws.send_text("after")
        assert ws.recv_frame(T) == (True, 0, OP_TEXT, b"after", 7)
    finally:
        ws.close()


def test_control_frame_split_across_tcp_segments(echo):
    """§5.2/§5.5: a control frame's header and payload may arrive in pieces."""
    ws = echo_ws(echo)
    try:
        ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = build_frame(OP_PING, b"split-ping")
        for i in range(len(data)):
            ws.send_raw(data[i:i + 1])
            time.sleep(0.002)
        f = ws.recv_frame(T)
        assert (f.opcode, f.payload) == (OP_PONG, b"split-ping")
    finally:
        ws.close()


def test_frame_in_same_segment_as_handshake(echo):
    """§4.1 asks clients to wait for the 101 before sending frames; a server
    that gets a frame in the same segment as the request still parses it as
    the first frame of the connection (nothing is lost at the switch)."""
    ws = echo_ws(echo, early=build_frame(OP_TEXT, b"early") + build_frame(OP_PING, b"p"))
    try:
        assert ws.recv_frame(T)[2:4] == (OP_TEXT, b"early")
        assert ws.recv_frame(T)[2:4] == (OP_PONG, b"p")
    finally:
        ws.close()


def test_close_during_fragmented_message(echo):
    """§5.4-§5.5: a close may come between fragments; it is answered and the
    unfinished message is dropped."""
    ws = echo_ws(echo)
    try:
        ws.send_frame(OP_TEXT, b"never finished", fin=False)
        ws.send_close(1000)
        f = ws.recv_frame(T)
        assert f.opcode == OP_CLOSE and parse_close(f.payload)[0] == 1000
        assert ws.wait_tcp_close(T)
    finally:
        ws.close()


def test_close_echo_is_defined_behaviour(tmp_path):
    """§5.5.1: echoing a client's close code must not crash the server
    (regression: ws__send_close once did memcpy(dst, NULL, 0), which aborts
    the UBSan build). Runs its own server and checks its stderr itself, so a
    sanitizer build reports this one test instead of every later one."""
    srv = Server(tmp_path, ["--ws-echo"]).start()
    try:
        ws = echo_ws(srv)
        try:
            ws.send_close(1000)
            code, _ = ws.expect_close(T)
            assert code == 1000
        finally:
            ws.close()
        assert srv.http("GET", "/healthz")[0] == 200
        assert srv.stop(expect_code=None) == 0
        assert srv.sanitizer_report() is None, srv.read_stderr()[-3000:]
    finally:
        srv.kill()
        srv.stderr.close()


# ---- UTF-8 (§5.6, §8.1) ----

@pytest.mark.parametrize("bad", [b"\xff", b"ok\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                 b"abc\xe2\x82", b"\x80"])
def test_invalid_utf8_text_1007(echo, bad):
    """§8.1: a text message that is not valid UTF-8 fails with 1007 (§7.4.1);
    overlong forms, surrogates, code points over U+10FFFF and a truncated
    sequence at the end are all invalid."""
    _fails(echo, [build_frame(OP_TEXT, bad)], 1007)


def test_invalid_utf8_on_json_endpoint_1007(server):
    """§8.1 on /ws."""
    _fails(server, [build_frame(OP_TEXT, b'{"type":"ping","x":"\xff"}')], 1007, "/ws?user=u8")


def test_invalid_utf8_first_fragment_fails_fast(echo):
    """§8.1 and §5.6: invalid bytes in the first fragment fail the connection
    without waiting for the end of the message."""
    ws = echo_ws(echo)
    try:
        ws.send_frame(OP_TEXT, b"fine so far \xff", fin=False)
        assert_fails_with(ws, 1007)
    finally:
        ws.close()


def test_invalid_utf8_split_across_fragments_1007(echo):
    """§8.1: a sequence started in one fragment and broken in the next."""
    _fails(echo, [build_frame(OP_TEXT, b"euro \xe2\x82", fin=False), build_frame(OP_CONT, b"(")], 1007)


def test_invalid_utf8_truncated_at_message_end_1007(echo):
    """§8.1: a message whose last fragment ends inside a sequence."""
    _fails(echo, [build_frame(OP_TEXT, b"euro ", fin=False), build_frame(OP_CONT, b"\xe2\x82")], 1007)


def test_valid_utf8_split_across_fragments(echo):
    """§5.6: only the whole message must be valid; a code point may be split
    between fragments."""
    text = "é€😀 done".encode()
    ws = echo_ws(echo)
    try:
        ws.send_frame(OP_TEXT, text[:1], fin=False)   # half of é
        ws.send_frame(OP_CONT, text[1:4], fin=False)  # rest of é, 2 of €
        ws.send_frame(OP_CONT, text[4:7], fin=False)  # rest of €, 1 of 😀
        ws.send_frame(OP_CONT, text[7:])
        assert ws.recv_message(T) == (OP_TEXT, text)
    finally:
        ws.close()


def test_binary_frame_is_not_utf8_checked(echo):
    """§5.6: binary data is arbitrary."""
    ws = echo_ws(echo)
    try:
        ws.send_binary(b"\xff\xfe\xc0\xaf")
        assert ws.recv_message(T) == (OP_BINARY, b"\xff\xfe\xc0\xaf")
    finally:
        ws.close()


# ---- closing (§5.5.1, §7) ----

def test_close_1000_echoed_then_tcp_closed(echo):
    """§5.5.1: the endpoint answers a close with a close, typically echoing
    the status code; §7.1.1: the server then closes the TCP connection."""
    ws = echo_ws(echo)
    try:
        ws.send_close(1000, "bye")
        assert ws.expect_close(T)[0] == 1000
        assert ws.wait_tcp_close(T)
    finally:
        ws.close()


@pytest.mark.parametrize("code", [1001, 1003, 1011, 3000, 4999])
def test_close_valid_codes_echoed(echo, code):
    """§7.4.1-7.4.2: defined codes and 3000-4999 are valid in a close frame."""
    ws = echo_ws(echo)
    try:
        ws.send_close(code)
        assert ws.expect_close(T)[0] == code
        assert ws.wait_tcp_close(T)
    finally:
        ws.close()


def test_close_empty_payload_answered(echo):
    """§5.5.1: a close without a body is valid; §7.1.5: it reads as 1005,
    which must not be sent back, so the answer has no code."""
    ws = echo_ws(echo)
    try:
        ws.send_close()
        code, _ = ws.expect_close(T)
        assert code in (None, 1000)
        assert ws.wait_tcp_close(T)
    finally:
        ws.close()


def test_close_one_byte_payload_1002(echo):
    """§5.5.1: a close body starts with a 2-byte code; one byte is malformed."""
    _fails(echo, [build_frame(OP_CLOSE, b"\x03")], 1002)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_close_invalid_code_1002(echo, code):
    """§7.4.1-7.4.2: 1004-1006, 1015, unassigned 1016-2999 and codes outside
    1000-4999 must not appear in a close frame: protocol error."""
    _fails(echo, [build_frame(OP_CLOSE, struct.pack("!H", code))], 1002)


def test_close_reason_invalid_utf8_1007(echo):
    """§5.5.1: the close reason is UTF-8; §8.1: invalid text fails with 1007."""
    _fails(echo, [build_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bad \xff")], 1007)


def test_nothing_after_close_is_answered(echo):
    """§5.5.1: after sending a close an endpoint sends no more data frames."""
    ws = echo_ws(echo)
    try:
        ws.send_raw(build_frame(OP_CLOSE, struct.pack("!H", 1000)) + build_frame(OP_TEXT, b"late"))
        f = ws.recv_frame(T)
        assert f.opcode == OP_CLOSE
        assert ws.wait_tcp_close(T)
    finally:
        ws.close()


# ---- message size (§10.4) ----

def test_message_over_limit_1009(small):
    """§10.4 and §7.4.1: a message over the configured limit fails with 1009."""
    _fails(small, [build_frame(OP_BINARY, b"x" * 2000)], 1009)


def test_fragmented_message_over_limit_1009(small):
    """§10.4: the limit applies to the reassembled message."""
    _fails(small, [build_frame(OP_TEXT, b"a" * 600, fin=False), build_frame(OP_CONT, b"b" * 600)], 1009)


def test_message_at_limit_echoed(small):
    """§10.4: exactly --ws-max-message bytes are accepted."""
    ws = echo_ws(small)
    try:
        data = b"z" * 1024
        ws.send_frame(OP_TEXT, data[:500], fin=False)
        ws.send_frame(OP_CONT, data[500:])
        assert ws.recv_message(T) == (OP_TEXT, data)
    finally:
        ws.close()


def test_huge_declared_length_1009(small):
    """§10.4: a frame header announcing 2^40 bytes fails at once, before any
    payload is buffered."""
    hdr = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 40) + b"\x01\x02\x03\x04"
    _fails(small, [hdr], 1009)


# ======================================================================
# permessage-deflate (RFC 7692)
# ======================================================================

PMD = {"Sec-WebSocket-Extensions": "permessage-deflate"}


def _ext_params(value):
    first = value.split(",")[0]
    parts = [p.strip() for p in first.split(";")]
    return parts[0], set(parts[1:])


def test_deflate_negotiated_with_websockets(echo):
    """RFC 7692 §5-§7: websockets offers permessage-deflate; the server
    accepts with server_no_context_takeover and client_no_context_takeover;
    large compressible text and binary round-trip."""
    text = "the quick brown fox jumps over the lazy dog. " * 5000
    blob = bytes(range(256)) * 1000

    async def go():
        async with websockets.connect(echo.ws_url + "/echo", **ws_tls(echo), compression="deflate") as ws:
            ext = ws.response_headers["Sec-WebSocket-Extensions"]
            await ws.send(text)
            got_text = await ws.recv()
            await ws.send(blob)
            got_blob = await ws.recv()
            await ws.send("short")
            got_short = await ws.recv()
            return ext, got_text, got_blob, got_short
    ext, got_text, got_blob, got_short = run(go())
    name, params = _ext_params(ext)
    assert name == "permessage-deflate"
    assert "server_no_context_takeover" in params and "client_no_context_takeover" in params
    assert got_text == text and got_blob == blob and got_short == "short"


def test_deflate_json_endpoint_with_websockets(server):
    """RFC 7692 on /ws: the JSON session works compressed."""
    async def go():
        async with websockets.connect(server.ws_url + "/ws?user=zed", **ws_tls(server), compression="deflate") as ws:
            assert "permessage-deflate" in ws.response_headers["Sec-WebSocket-Extensions"]
            assert json.loads(await ws.recv())["type"] == "hello"
            await ws.send(json.dumps({"type": "ping", "ref": "z" * 500}))
            return json.loads(await ws.recv())
    assert run(go()) == {"type": "pong", "ref": "z" * 500}


def test_deflate_raw_compressed_frame_inflated_and_echoed(echo):
    """RFC 7692 §7.2.2: the server inflates an RSV1 message (payload + 00 00
    FF FF); §7.2.1: messages it sends over ws-deflate-min are compressed
    (RSV1 on the first frame), short ones are not."""
    ws = echo_ws(echo, headers=PMD)
    try:
        assert "permessage-deflate" in ws.headers["sec-websocket-extensions"]
        big = b"compress me please " * 2000
        ws.send_frame(OP_TEXT, deflate(big), rsv=RSV1)
        f = ws.recv_frame(T)
        assert f.opcode == OP_TEXT and f.rsv == RSV1 and f.fin
        assert len(f.payload) < len(big) // 10
        assert inflate(f.payload) == big
        ws.send_frame(OP_BINARY, deflate(b"tiny"), rsv=RSV1)
        f = ws.recv_frame(T)
        assert (f.opcode, f.rsv, f.payload) == (OP_BINARY, 0, b"tiny")
        ws.send_frame(OP_TEXT, b"plain too")  # RSV1 is per message (§6)
        assert ws.recv_message(T) == (OP_TEXT, b"plain too")
    finally:
        ws.close()


def test_deflate_fragmented_compressed_message(echo):
    """RFC 7692 §6.1: RSV1 is set on the first frame only; the compressed
    payload is split across fragments."""
    ws = echo_ws(echo, headers=PMD)
    try:
        data = b"fragmented and compressed " * 500
        z = deflate(data)
        ws.send_frame(OP_BINARY, z[:10], rsv=RSV1, fin=False)
        ws.send_frame(OP_CONT, z[10:20], fin=False)
        ws.send_frame(OP_CONT, z[20:])
        assert ws.recv_message(T, inflate_wbits=15) == (OP_BINARY, data)
    finally:
        ws.close()


def test_deflate_empty_message(echo):
    """RFC 7692 §7.2.3.6: an empty message compresses to a single 0x00 byte
    (an empty stored block minus 00 00 FF FF)."""
    ws = echo_ws(echo, headers=PMD)
    try:
        ws.send_frame(OP_TEXT, b"\x00", rsv=RSV1)
        assert ws.recv_message(T, inflate_wbits=15) == (OP_TEXT, b"")
        ws.send_frame(OP_BINARY, deflate(b""), rsv=RSV1)
        assert ws.recv_message(T, inflate_wbits=15) == (OP_BINARY, b"")
    finally:
        ws.close()


def test_deflate_rsv1_on_continuation_1002(echo):
    """RFC 7692 §6.1: RSV1 on a continuation frame is a protocol error."""
    z = deflate(b"abc" * 100)
    _fails_hdr(echo, [build_frame(OP_TEXT, z[:5], rsv=RSV1, fin=False),
                      build_frame(OP_CONT, z[5:], rsv=RSV1)], 1002)


def test_deflate_rsv1_on_control_frame_1002(echo):
    """RFC 7692 §6.1: RSV1 is for data frames only."""
    _fails_hdr(echo, [build_frame(OP_PING, b"p", rsv=RSV1)], 1002)


def test_deflate_rsv2_still_refused(echo):
    """RFC 6455 §5.2: deflate only defines RSV1."""
    _fails_hdr(echo, [build_frame(OP_TEXT, b"x", rsv=RSV2)], 1002)


def test_deflate_invalid_utf8_after_inflate_1007(echo):
    """RFC 6455 §8.1 applies to the inflated text."""
    _fails_hdr(echo, [build_frame(OP_TEXT, deflate(b"ok \xff\xfe"), rsv=RSV1)], 1007)


def test_deflate_garbage_payload_fails(echo):
    """RFC 7692 §7.2.2: data that does not inflate fails the connection."""
    ws = echo_ws(echo, headers=PMD)
    try:
        ws.send_frame(OP_BINARY, b"\xff\xff\xff\xff not deflate", rsv=RSV1)
        code, _ = ws.expect_close(T)
        assert code in (1002, 1007)
        assert ws.wait_tcp_close(T)
    finally:
        ws.close()
    assert_server_alive(echo)


def _fails_hdr(srv, frames, code):
    ws = echo_ws(srv, headers=PMD)
    try:
        assert "permessage-deflate" in ws.headers["sec-websocket-extensions"]
        for f in frames:
            ws.send_raw(f)
        assert_fails_with(ws, code)
    finally:
        ws.close()
    assert_server_alive(srv)


def test_deflate_server_max_window_bits_10(echo):
    """RFC 7692 §7.1.2.1: an offer of server_max_window_bits=10 is accepted
    with =10 in the response, and the server's messages then inflate with a
    1 KiB window (back-references to 4 KiB ago would not)."""
    ws = echo_ws(echo, headers={"Sec-WebSocket-Extensions":
                                "permessage-deflate; server_max_window_bits=10"})
    try:
        name, params = _ext_params(ws.headers["sec-websocket-extensions"])
        assert name == "permessage-deflate"
        assert "server_max_window_bits=10" in params
        block = os.urandom(4096)
        data = block * 8  # compressible only with a window over 4 KiB
        ws.send_frame(OP_BINARY, deflate(data), rsv=RSV1)
        f = ws.recv_frame(T)
        assert f.rsv == RSV1
        assert inflate(f.payload, wbits=10) == data
    finally:
        ws.close()


def test_deflate_unacceptable_offer_falls_back(echo):
    """RFC 7692 §5: a server declines an offer it cannot accept; the next
    acceptable offer is taken, or none (no extension in the response)."""
    ws = echo_ws(echo, headers={"Sec-WebSocket-Extensions":
                                "permessage-deflate; server_max_window_bits=8, permessage-deflate"})
    try:
        name, params = _ext_params(ws.headers["sec-websocket-extensions"])
        assert name == "permessage-deflate"
        assert not any(p.startswith("server_max_window_bits") for p in params)
    finally:
        ws.close()
    ws = echo_ws(echo, headers={"Sec-WebSocket-Extensions": "permessage-deflate; bogus_param"})
    try:
        assert "sec-websocket-extensions" not in ws.headers
        ws.send_frame(OP_TEXT, b"x", rsv=RSV1)  # not negotiated now
        assert_fails_with(ws, 1002)
    finally:
        ws.close()


def test_deflate_bomb_1009(echo):
    """RFC 7692 §8.1 (and RFC 6455 §10.4): a small compressed frame that
    inflates past --ws-max-message (1m) fails with 1009, without the server
    inflating it all."""
    bomb = deflate(b"\x00" * (10 << 20))
    assert len(bomb) < 64 * 1024
    ws = echo_ws(echo, headers=PMD)
    try:
        ws.send_frame(OP_BINARY, bomb, rsv=RSV1)
        assert_fails_with(ws, 1009)
    finally:
        ws.close()
    assert_server_alive(echo)


def test_deflate_inflated_over_limit_1009(small):
    """RFC 6455 §10.4: the limit counts inflated bytes (1k server)."""
    ws = echo_ws(small, headers=PMD)
    try:
        ws.send_frame(OP_TEXT, deflate(b"a" * 1025), rsv=RSV1)
        assert_fails_with(ws, 1009)
    finally:
        ws.close()


def test_deflate_disabled(make_server):
    """RFC 7692 §5: --ws-deflate false: the offer is ignored, no extension is
    in the response, and RSV1 frames are then protocol errors."""
    srv = make_server("--ws-deflate", "false", "--ws-echo")
    ws = echo_ws(srv, headers=PMD)
    try:
        assert "sec-websocket-extensions" not in ws.headers
        ws.send_frame(OP_TEXT, deflate(b"hello"), rsv=RSV1)
        assert_fails_with(ws, 1002)
    finally:
        ws.close()

    async def go():
        async with websockets.connect(srv.ws_url + "/echo", **ws_tls(srv), compression="deflate") as c:
            assert "Sec-WebSocket-Extensions" not in c.response_headers
            await c.send("plain")
            return await c.recv()
    assert run(go()) == "plain"


# ======================================================================
# Heartbeats (PROTOCOL.md §2; RFC 6455 §5.5.2)
# ======================================================================

def test_heartbeat_ping_arrives(hb):
    """PROTOCOL.md §2 and RFC 6455 §5.5.2: the server pings every
    heartbeat_ms (1 s here)."""
    ws = RawWS(hb.port, "/ws?user=hb1")
    try:
        ws.recv_json()
        t0 = time.monotonic()
        f = ws.recv_frame(3 * SLOW)
        assert f.opcode == OP_PING
        assert time.monotonic() - t0 <= 2.1 * SLOW  # the sweep is once a second
    finally:
        ws.close()


def test_heartbeat_silent_client_closed_1001(hb):
    """PROTOCOL.md §2: a connection with no sign of life is closed with 1001
    (RFC 6455 §7.4.1 going away) after two heartbeat intervals (not before;
    the once-a-second sweep may add up to one more), then TCP is closed."""
    ws = RawWS(hb.port, "/ws?user=hb2")
    try:
        t0 = time.monotonic()
        code, reason = ws.expect_close(4 * SLOW)
        elapsed = time.monotonic() - t0
        assert code == 1001
        assert 1.9 <= elapsed <= 3.5 * SLOW
        assert ws.wait_tcp_close(T)
    finally:
        ws.close()


def test_heartbeat_close_not_before_two_intervals(hb):
    """PROTOCOL.md §2: only a connection that showed no sign of life for two
    intervals is closed. The client's last frame is sent 0.85 s after a
    server ping (the heartbeat sweep's phase), the worst case for a
    whole-second clock; it must then stay open for about 2 s (regression:
    ws__on_timeout once compared whole-second ticks and closed it after
    1.15 s)."""
    ws = RawWS(hb.port, "/ws?user=hb3")
    try:
        ws.recv_json()
        f = ws.recv_frame(2.5 * SLOW)  # a ping: the sweep just ran
        assert f.opcode == OP_PING
        time.sleep(0.85)
        ws.send_frame(OP_PONG, b"")  # the last sign of life
        last = time.monotonic()
        code, _ = ws.expect_close(4 * SLOW)
        silent = time.monotonic() - last
        assert code == 1001
        assert silent >= 1.9, "closed after %.2f s of silence" % silent
    finally:
        ws.close()


def test_heartbeat_answering_client_stays_open(hb):
    """PROTOCOL.md §2 and RFC 6455 §5.5.3: a client that answers pings with
    pongs stays connected well past two intervals."""
    ws = RawWS(hb.port, "/ws?user=hb4")
    try:
        ws.recv_json()
        pings = 0
        end = time.monotonic() + 4.5
        while time.monotonic() < end:
            try:
                f = ws.recv_frame(max(0.05, end - time.monotonic()))
            except TimeoutError:
                break
            assert f.opcode != OP_CLOSE, parse_close(f.payload)
            if f.opcode == OP_PING:
                pings += 1
                ws.send_frame(OP_PONG, f.payload)
        assert pings >= 3
        ws.send_json({"type": "ping", "ref": "still"})
        assert ws.recv_json(T, answer_pings=True) == {"type": "pong", "ref": "still"}
    finally:
        ws.close()


# ======================================================================
# Slow consumers (PROTOCOL.md §5.5; STYLE.md practice 7)
# ======================================================================

SLOW_ARGS = ("--ws-echo", "--out-limit", "64k", "--ws-max-message", "32k")


def _flood(ws, seconds, stop_when_blocked=0.5):
    """Sends 30 KB binary messages without reading until sending fails or
    blocks, or `seconds` pass. Returns how many went out."""
    msg = build_frame(OP_BINARY, os.urandom(30000))
    sent = 0
    end = time.monotonic() + seconds
    ws.sock.settimeout(stop_when_blocked)
    while time.monotonic() < end:
        try:
            ws.sock.sendall(msg)
        except (socket.timeout, OSError):
            break
        sent += 1
    return sent


def _slow_client_outcome(ws):
    """After the flood: reads everything. Returns 'closed-1008' when a 1008
    close frame with reason "slow consumer" arrived, 'tcp-closed' when the
    connection ended without one, or 'open' when neither happened."""
    try:
        while True:
            f = ws.recv_frame(3 * SLOW)
            if f.opcode == OP_CLOSE:
                code, reason = parse_close(f.payload)
                assert (code, reason) == (1008, b"slow consumer")
                return "closed-1008"
    except Closed:
        return "tcp-closed"
    except TimeoutError:
        return "open"


def test_slow_consumer_disconnected_others_unaffected(make_server):
    """PROTOCOL.md §5.5: a connection whose unsent output exceeds
    --out-limit is cut (1008 "slow consumer", or at least the TCP connection
    ends); a normal client on the same server keeps getting its echoes and
    the server's memory stays bounded."""
    srv = make_server(*SLOW_ARGS)
    good = echo_ws(srv)
    slow = echo_ws(srv, rcvbuf=4096)
    try:
        good.send_binary(b"before")
        assert good.recv_message(T) == (OP_BINARY, b"before")
        sent = _flood(slow, 2.0)
        assert sent >= 3
        for i in range(5):
            data = os.urandom(30000)
            good.send_binary(data)
            assert good.recv_message(T) == (OP_BINARY, data)
        assert _slow_client_outcome(slow) in ("closed-1008", "tcp-closed")
        for i in range(3):
            good.send_text("after %d" % i)
            assert good.recv_message(T) == (OP_TEXT, b"after %d" % i)
    finally:
        slow.close()
        good.close()


def test_slow_consumer_receives_1008(make_server):
    """PROTOCOL.md §5.5 and RFC 6455 §7.1.1/§7.4.1: the slow consumer is
    closed with 1008 and reason "slow consumer" -- which it can only learn
    if the close frame reaches it, also when it was still sending
    (regression: a close() with unread input once sent an RST that
    discarded the queued close frame; the server now lingers)."""
    srv = make_server(*SLOW_ARGS)
    slow = echo_ws(srv, rcvbuf=4096)
    try:
        _flood(slow, 0.3, stop_when_blocked=0.2)
        assert _slow_client_outcome(slow) == "closed-1008"
    finally:
        slow.close()


# ======================================================================
# Shutdown (PROTOCOL.md §2; 1012 Service Restart, IANA close code registry)
# ======================================================================

def test_shutdown_closes_websockets_with_1012(make_server):
    """On SIGTERM the server drains: connected clients get a 1012 (Service
    Restart) close saying to reconnect, and the process exits 0 within 10 s."""
    srv = make_server()

    async def go():
        async with websockets.connect(srv.ws_url + "/ws?user=bye", **ws_tls(srv), compression=None,
                                      ping_interval=None) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            loop = asyncio.get_running_loop()
            stopping = loop.run_in_executor(None, srv.stop)
            with pytest.raises(websockets.ConnectionClosed) as ei:
                await asyncio.wait_for(ws.recv(), 8 * SLOW)
            code = await stopping
            rcvd = ei.value.rcvd
            return (rcvd.code, rcvd.reason) if rcvd else (None, None), code
    (close_code, reason), exit_code = run(go(), timeout=20 * SLOW)
    assert close_code == 1012 and reason == "server restarting, reconnect"
    assert exit_code == 0


def test_shutdown_raw_client(make_server):
    """RFC 6455 §7.1.2-7.1.3: the server starts the closing handshake with
    1012, the client answers, the server closes TCP; exit status 0."""
    srv = make_server("--ws-echo")
    ws = echo_ws(srv)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("code", srv.stop()))
    try:
        t.start()
        code, reason = ws.expect_close(8 * SLOW)
        assert code == 1012
        ws.send_close(1012)
        assert ws.wait_tcp_close(8 * SLOW)
    finally:
        ws.close()
        t.join(15 * SLOW)
    assert result.get("code") == 0
