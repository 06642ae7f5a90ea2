"""TLS (issue 9): wss:// and https:// natively with --tls-cert/--tls-key.

Every test runs a real server with a self-signed certificate made by the
openssl command line for 127.0.0.1, and real clients: Python's ssl module
(http.client, raw sockets) and python3-websockets. They check the protocol
versions and ALPN offered, the JSON protocol and REST over TLS, large and
backed-up output (TLS writes retried after the socket filled), a stalled
handshake cut by the handshake timeout, plaintext on the TLS port, SIGHUP
certificate reload (new connections get the new certificate, open ones keep
working, a broken file keeps the old one) and refusal to start on bad files.
"""
import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import warnings

import pytest

from chatclient import connect, run, uniq
from conftest import SLOW, http_request
import wsraw


def make_cert(dirpath, name, cn="127.0.0.1"):
    """A self-signed P-256 certificate for 127.0.0.1: (cert path, key path)."""
    cert = os.path.join(dirpath, name + ".crt")
    key = os.path.join(dirpath, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    return {"a": make_cert(str(d), "a", "sori-a"), "b": make_cert(str(d), "b", "sori-b"), "dir": str(d)}


def tls_server(make_server, certs, *args, which="a"):
    cert, key = certs[which]
    return make_server("--tls-cert", cert, "--tls-key", key, *args)


def client_ctx(cafile, **kw):
    ctx = ssl.create_default_context(cafile=cafile)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def handshake(port, ctx, timeout=5):
    """A TLS connection to the port: (version, cipher, alpn, peer cert DER)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    try:
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        try:
            return s.version(), s.cipher()[0], s.selected_alpn_protocol(), s.getpeercert(binary_form=True)
        finally:
            s.close()
    finally:
        raw.close()


def pem_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_https_and_wss_chat(make_server, certs):
    s = tls_server(make_server, certs)
    assert s.stdout_line.startswith("sori ") and "https://127.0.0.1:" in s.stdout_line
    status, _, body = s.http("GET", "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = s.http("GET", "/api/discover")
    assert status == 200 and json.loads(body)["ws"].startswith("wss://127.0.0.1:%d/" % s.port)

    async def go():
        room = uniq("tls")
        a = await connect(s, uniq("alice"), compression="deflate")
        b = await connect(s, uniq("bob"))
        assert (await a.rpc({"type": "create", "room": room, "kind": "public"}))["type"] == "created"
        for c in (a, b):
            assert (await c.rpc({"type": "join", "room": room}))["type"] == "joined"
        texts = ["%d:" % i + "x" * (i * 300) for i in range(50)]  # up to ~15 KB, records and chunks
        for t in texts:
            ack = await a.rpc({"type": "send", "room": room, "text": t})
            assert ack["type"] == "ack", ack
        for c in (a, b):
            got = [(await c.next_event("message"))["text"] for _ in texts]
            assert got == texts
    run(go())


def test_rest_over_https(make_server, certs):
    s = tls_server(make_server, certs)
    status, _, body = s.http("POST", "/api/signup", json.dumps({"name": uniq("carol"), "password": "secret-pw-1"}),
                             {"Content-Type": "application/json"})
    assert status == 201, body
    tok = json.loads(body)["token"]
    auth = {"Authorization": "Bearer " + tok, "Content-Type": "application/json"}
    room = uniq("rest")
    status, _, body = s.http("POST", "/api/rooms", json.dumps({"room": room, "kind": "public"}), auth)
    assert status == 201, body
    big = "y" * 16000
    status, _, body = s.http("POST", "/api/rooms/%s/messages" % room, json.dumps({"text": big}), auth)
    assert status == 201, body
    status, _, body = s.http("GET", "/api/rooms/%s/messages" % room, None, auth)
    assert status == 200 and json.loads(body)["messages"][0]["text"] == big


def test_versions_ciphers_and_alpn(make_server, certs):
    s = tls_server(make_server, certs)
    ca = certs["a"][0]
    v, cipher, alpn, _ = handshake(s.port, client_ctx(ca))
    assert v == "TLSv1.3" and alpn is None
    v, cipher, _, _ = handshake(s.port, client_ctx(ca, maximum_version=ssl.TLSVersion.TLSv1_2))
    assert v == "TLSv1.2" and cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), cipher
    # TLS 1.2 with a suite outside the list (no forward secrecy) is refused.
    ctx = client_ctx(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError):
        handshake(s.port, ctx)
    # TLS 1.1 and older are refused (the client may refuse first: either way no session).
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            pass
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(s.port, ctx)
    # ALPN: http/1.1 is chosen among others; a client offering only h2 is refused.
    ctx = client_ctx(ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    assert handshake(s.port, ctx)[2] == "http/1.1"
    ctx = client_ctx(ca)
    ctx.set_alpn_protocols(["h2"])
    with pytest.raises(ssl.SSLError):
        handshake(s.port, ctx)
    # Counted by the server as it reads each client's last flight.
    deadline = time.time() + 5 * SLOW
    while True:
        text = s.http("GET", "/metrics")[2].decode()
        hs = [float(l.split()[1]) for l in text.splitlines() if l.startswith("sori_tls_handshakes_total ")]
        fails = [float(l.split()[1]) for l in text.splitlines()
                 if l.startswith("sori_tls_handshake_failures_total ")]
        if hs and fails and hs[0] >= 5 and fails[0] >= 2:  # the 5th: this scrape's own
            break
        assert time.time() < deadline, text
        time.sleep(0.05)


def test_backed_up_output_is_delivered_whole(make_server, certs):
    """A reader with a small receive window stops reading while 4 MB queue
    up: the TLS writes hit a full socket again and again and are retried,
    and every byte arrives, in order, once the reader reads again."""
    s = tls_server(make_server, certs, "--out-limit", "64m", "--rate", "10000", "--burst", "10000")
    ctx = s.tls_ctx
    room = uniq("slow")
    with wsraw.RawWS(s.port, "/ws?user=" + uniq("w"), tls_ctx=ctx) as w, \
            wsraw.RawWS(s.port, "/ws?user=" + uniq("r"), tls_ctx=ctx, rcvbuf=4096) as r:
        assert w.recv_json()["type"] == "hello" and r.recv_json()["type"] == "hello"
        w.send_json({"type": "create", "room": room, "kind": "public"})
        assert w.recv_json()["type"] == "created"
        for c in (w, r):
            c.send_json({"type": "join", "room": room})
            assert c.recv_json()["type"] == "joined"
        n = 280
        for i in range(n):
            w.send_json({"type": "send", "room": room, "text": "%04d" % i + "z" * 15000, "ref": i})
        acks = 0
        while acks < n:  # the writer reads its acks and own messages as they come
            if w.recv_json()["type"] == "ack":
                acks += 1
        time.sleep(0.5 * SLOW)  # the reader's queue is full and waiting
        seen = []
        while len(seen) < n:
            m = r.recv_json(timeout=10 * SLOW)
            if m["type"] == "message":
                seen.append(int(m["text"][:4]))
        assert seen == list(range(n))


def test_stalled_handshake_is_cut(make_server, certs):
    s = tls_server(make_server, certs, "--handshake-timeout-ms", "1000")
    # Silent after connect, and stalled inside a ClientHello.
    silent = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW)
    partial = socket.create_connection(("127.0.0.1", s.port), timeout=10 * SLOW)
    partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    t0 = time.monotonic()
    for sock in (silent, partial):
        try:
            assert sock.recv(4096) == b""
        except ConnectionResetError:
            pass
        sock.close()
    assert time.monotonic() - t0 < 5 * SLOW
    assert s.http("GET", "/healthz")[0] == 200


def test_plaintext_on_the_tls_port(make_server, certs):
    s = tls_server(make_server, certs)
    for junk in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\x05hello", os.urandom(3000)):
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=5 * SLOW)
        sock.sendall(junk)
        data = b""
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        sock.close()
        assert not data.startswith(b"HTTP/"), data  # a TLS alert at most, never a plaintext answer
    assert s.http("GET", "/healthz")[0] == 200


def test_sighup_reloads_the_certificate(make_server, certs, tmp_path):
    cert, key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    for src, dst in ((certs["a"][0], cert), (certs["a"][1], key)):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
    s = make_server("--tls-cert", cert, "--tls-key", key)
    trust = client_ctx(certs["a"][0])
    trust.load_verify_locations(certs["b"][0])
    assert handshake(s.port, trust)[3] == pem_der(certs["a"][0])
    old = wsraw.RawWS(s.port, "/ws?user=" + uniq("keep"), tls_ctx=trust)
    assert old.recv_json()["type"] == "hello"

    for src, dst in ((certs["b"][0], cert), (certs["b"][1], key)):
        with open(src, "rb") as f, open(dst + ".tmp", "wb") as g:
            g.write(f.read())
        os.rename(dst + ".tmp", dst)
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 5 * SLOW
    while handshake(s.port, trust)[3] != pem_der(certs["b"][0]):
        assert time.time() < deadline, "the new certificate was not served"
        time.sleep(0.05)
    old.send_json({"type": "ping", "ref": 1})
    assert old.recv_json()["type"] == "pong"  # the open connection kept its session

    with open(cert, "w") as f:
        f.write("not a certificate\n")
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 5 * SLOW
    while "not reloaded" not in s.read_stderr():
        assert time.time() < deadline, s.read_stderr()
        time.sleep(0.05)
    assert handshake(s.port, trust)[3] == pem_der(certs["b"][0])
    old.send_json({"type": "ping", "ref": 2})
    assert old.recv_json()["type"] == "pong"
    old.close()


def test_bad_files_refuse_to_start(tmp_path, certs):
    from conftest import SORI_BIN
    base = [SORI_BIN, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp_path / "d")]
    cases = [
        (["--tls-cert", str(tmp_path / "missing.crt"), "--tls-key", certs["a"][1]], "missing.crt"),
        (["--tls-cert", certs["a"][0], "--tls-key", certs["b"][1]], "does not match"),
        (["--tls-cert", certs["a"][0]], "--tls-key"),
    ]
    for args, words in cases:
        p = subprocess.run(base + args, capture_output=True, timeout=20 * SLOW)
        assert p.returncode == 2, (args, p)
        assert words in p.stderr.decode(), p.stderr


def test_bench_over_wss(make_server, certs):
    """sori bench speaks wss:// (its TLS client, src/bench/bench_loop.c):
    every acked message reaches every subscriber once, in order, through
    the server's TLS writes, with messages (16 KB texts) larger than one record."""
    from test_bench import assert_exact_delivery, bench
    s = tls_server(make_server, certs, "--rate", "1000000", "--burst", "1000000")
    assert s.ws_url.startswith("wss://")
    r, _ = bench(s, "--rooms", 2, "--subs", 10, "--window", 4, "--size", 16000,
                 "--duration", 1, "--warmup", 0.3)
    assert_exact_delivery(r, recipients=11)
    assert r["targets"][0]["url"].startswith("wss://127.0.0.1:")
