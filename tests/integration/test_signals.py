"""Signals (docs/OPERATIONS.md "Signals"; issue 9 "Graceful operation"):

- SIGTERM drains: WebSockets closed with 1012 "server restarting, reconnect"
  (STOMP: an ERROR frame first), the listeners closed (a connect is refused,
  not left hanging), a request in flight finishes (/healthz answers 503),
  every acked message is committed before exit (async durability), exit 0;
- SIGUSR1 reopens --log-file after it was moved;
- SIGHUP reloads --config: reloadable options change without a restart, a
  broken file or a change of a non-reloadable option is logged and the
  running values stay.

Every wait is bounded; the only processes signalled are the ones these tests
started, by PID.
"""
import asyncio
import os
import pathlib
import re
import signal
import socket
import subprocess
import time

import pytest

from chatclient import connect, run, uniq
from conftest import CLUSTER, SLOW, SORI_BIN, Server, _finish_all
from stompclient import stomp
from wsraw import tls_wrap

RESTART_REASON = "server restarting, reconnect"


def wait_for(pred, timeout, what):
    end = time.time() + timeout * SLOW
    while time.time() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def wait_exit(srv, timeout=15):
    """The exit code of a server that was already signalled (a second SIGTERM
    would kill it, so not srv.stop())."""
    return srv.proc.wait(timeout=timeout * SLOW)


def log_has(srv, pattern, start=0):
    return re.search(pattern, srv.read_stderr()[start:]) is not None


# ---------------------------------------------------------------- SIGTERM

def test_sigterm_drain_1012_stomp_error_refused_healthz_503(make_server):
    srv = make_server("--drain-timeout-ms", "8000")
    port = srv.port
    # A request in flight: its head has started arriving before the signal.
    inflight = tls_wrap(socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW))
    inflight.sendall(b"GET /healthz HTTP/1.1\r\nHost: sori\r\n")

    async def go():
        j = await connect(srv, uniq("dj"))
        s = await stomp(srv, uniq("ds"))
        await asyncio.sleep(0.2 * SLOW)  # the partial head has been read
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        code, reason = await j.wait_closed(5 * SLOW)
        assert (code, reason) == (1012, RESTART_REASON)
        err = await s.error_and_close(5 * SLOW)
        assert err["headers"]["code"] == "server_restarting", err
        assert "reconnect" in err["headers"]["message"], err
        assert s.close_code == 1012, (s.close_code, s.close_reason)
        return time.time() - t0
    took = run(go(), timeout=20 * SLOW)
    assert took < 3 * SLOW, took  # at once, not after the drain timeout

    # The node is still draining (the request above is open), and every
    # listener is closed: a new connection is refused at once, not queued.
    assert srv.proc.poll() is None
    time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(2 * SLOW)
    t0 = time.time()
    with pytest.raises((ConnectionRefusedError, ConnectionResetError)):
        probe.connect(("127.0.0.1", port))
        # (a reset may only show on the first read)
        if probe.recv(1) == b"":
            raise ConnectionResetError("closed")
    probe.close()
    assert time.time() - t0 < 1.5 * SLOW

    # The in-flight request finishes: /healthz says draining, and closes.
    inflight.settimeout(5 * SLOW)
    inflight.sendall(b"\r\n")
    data = b""
    while True:
        chunk = inflight.recv(4096)
        if not chunk:
            break
        data += chunk
    inflight.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), data
    assert b"connection: close" in head.lower(), data
    assert b"draining" in body, data
    assert wait_exit(srv) == 0
    assert log_has(srv, r"SIGTERM: draining")


def test_sigterm_commits_every_acked_async_message(make_server):
    """Async durability acks before the store write (--flush-ms 1000: nothing
    is written yet when the signal comes). SIGTERM right after the last ack,
    with the senders still connected: the drain closes them with 1012 and the
    store commits its queue before exit; a restart on the same data dir has
    every acked message, with its id and seq, in two rooms."""
    srv = make_server("--durability", "async", "--flush-ms", "1000",
                      "--rate", "1000000", "--burst", "1000000")
    rooms = [uniq("fa"), uniq("fb")]
    n = 300

    async def send_all(c, room):
        refs = [await c.send_ref({"type": "send", "room": room, "text": "m%d" % i, "cid": "%s-%d" % (room, i)})
                for i in range(n)]
        acks = [await c.reply(r) for r in refs]
        assert all(a["type"] == "ack" for a in acks), acks[:3]
        return acks

    async def before():
        cs = []
        for room in rooms:
            c = await connect(srv, uniq("fw"))
            await c.ok({"type": "create", "room": room, "kind": "public"})
            cs.append(c)
        acks = await asyncio.gather(*[send_all(c, r) for c, r in zip(cs, rooms)])
        srv.proc.send_signal(signal.SIGTERM)  # the clients are still connected
        for c in cs:
            code, _ = await c.wait_closed(10 * SLOW)
            assert code == 1012
        return acks
    acks = run(before(), timeout=30 * SLOW)
    assert wait_exit(srv, 60 if srv.db else 15) == 0

    srv2 = Server(pathlib.Path(srv.data_dir).parent, list(srv.args), db=srv.db)
    try:
        srv2.start()

        async def after():
            c = await connect(srv2, uniq("fr"))
            for room, want in zip(rooms, acks):
                got, after_seq = [], 0
                while True:
                    r = await c.ok({"type": "history", "room": room, "after": after_seq, "limit": 100}, "history")
                    got += r["messages"]
                    if not r["has_more"]:
                        break
                    after_seq = got[-1]["seq"]
                assert [(m["seq"], m["id"], m["text"]) for m in got] == \
                    [(a["seq"], a["id"], "m%d" % i) for i, a in enumerate(want)]
        run(after(), timeout=20 * SLOW)
    finally:
        _finish_all([srv2])


# ---------------------------------------------------------------- SIGUSR1

def test_sigusr1_reopens_the_log_file(make_server, tmp_path):
    log = tmp_path / "sori.log"
    pid = tmp_path / "sori.pid"
    srv = make_server("--log-file", str(log), "--pid-file", str(pid))
    assert pid.read_text() == "%d\n" % srv.proc.pid  # what the postrotate script signals
    wait_for(lambda: log.exists() and b"chat: loaded" in log.read_bytes(), 5, "startup lines in the log file")
    assert "chat: loaded" not in srv.read_stderr()  # stderr keeps only what came before the file
    os.rename(log, tmp_path / "sori.log.1")   # what logrotate does
    srv.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: log.exists() and b"SIGUSR1: reopened" in log.read_bytes(), 5, "the reopened log file")
    srv.proc.send_signal(signal.SIGHUP)       # any later line goes to the new file
    wait_for(lambda: b"SIGHUP" in log.read_bytes(), 5, "a line after the reopen")
    old = (tmp_path / "sori.log.1").read_bytes()
    new = log.read_bytes()
    assert b"chat: loaded" in old and b"SIGHUP" not in old and b"reopened" not in old
    assert b"chat: loaded" not in new
    assert srv.stop() == 0
    assert b"stopped" in log.read_bytes()
    assert not pid.exists()  # removed at a clean exit


# ---------------------------------------------------------------- SIGHUP

def hup_and_wait(srv, pattern):
    start = len(srv.read_stderr())
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: log_has(srv, pattern, start), 5, pattern)
    return srv.read_stderr()[start:]


async def count_limited(c, k):
    refs = [await c.send_ref({"type": "ping"}) for _ in range(k)]
    replies = [await c.reply(r) for r in refs]
    return sum(1 for r in replies if r.get("code") == "rate_limited")


def test_sighup_reloads_rate_and_log_level(make_server, tmp_path):
    conf = tmp_path / "sori.conf"
    conf.write_text("rate = 1\nburst = 2\nlog-level = info\n")
    srv = make_server("--config", str(conf))

    async def limited():
        c = await connect(srv, uniq("hr"))
        assert await count_limited(c, 10) >= 7  # a burst of 2, then 1/s
        conf.write_text("# raised\nrate = 100000\nburst = 100000\nlog-level = debug\n")
        out = await asyncio.get_running_loop().run_in_executor(
            None, hup_and_wait, srv, r"config: reloaded .*changed")
        line = [x for x in out.splitlines() if "reloaded" in x][0]
        assert "rate=100000 (was 1)" in line and "burst=100000 (was 2)" in line, line
        assert "log-level=debug (was info)" in line, line
        # The same connection, no restart: its bucket refills at the new rate.
        await asyncio.sleep(0.05)
        assert await count_limited(c, 50) == 0
        c2 = await connect(srv, uniq("hr"))
        assert await count_limited(c2, 50) == 0
        # debug lines are on now (a STOMP ERROR logs one).
        start = len(srv.read_stderr())
        s = await stomp(srv, uniq("hs"))
        await s.send_frame("BOGUS")
        await s.error_and_close()
        await asyncio.get_running_loop().run_in_executor(
            None, wait_for, lambda: log_has(srv, r" D stomp: .*ERROR", start), 5, "a debug line")
    run(limited(), timeout=20 * SLOW)

    conf.write_text("rate = 1\nburst = 1\nlog-level = warn\n")
    hup_and_wait(srv, r"config: reloaded")
    start = len(srv.read_stderr())

    async def lowered():
        c = await connect(srv, uniq("hr"))
        assert await count_limited(c, 5) >= 3
    run(lowered(), timeout=10 * SLOW)
    assert srv.stop() == 0
    assert " I " not in srv.read_stderr()[start:].replace("I config: reloaded", "")  # warn: info lines are off


def test_sighup_bad_file_keeps_the_running_config(make_server, tmp_path):
    conf = tmp_path / "sori.conf"
    conf.write_text("rate = 1\nburst = 1\n")
    srv = make_server("--config", str(conf))
    for bad, why in (("rate = 100000\nburst = lots\n", "burst"),     # a bad value after a good one
                     ("rate = 100000\nno-such-option = 1\n", "no-such-option"),
                     ("rate = 100000\nlog-level = loud\n", "log-level"),  # fails validation
                     ("rate = 100000\nout-limit = 1k\n", "out-limit")):
        conf.write_text(bad)
        out = hup_and_wait(srv, r"reload refused")
        assert why in out, out
        assert "reloaded" not in out, out
    os.unlink(conf)
    out = hup_and_wait(srv, r"reload refused")
    assert "cannot open" in out, out
    st, _, _ = srv.http("GET", "/healthz")
    assert st == 200

    async def still_limited():
        c = await connect(srv, uniq("hb"))
        assert await count_limited(c, 5) >= 3
    run(still_limited(), timeout=10 * SLOW)
    assert srv.stop() == 0


def test_sighup_refuses_a_port_change(tmp_path):
    """A non-reloadable option changed in the file (here the port, which
    this server takes from the file) is logged and keeps its value; the
    reloadable ones in the same file still apply."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    conf = tmp_path / "sori.conf"
    conf.write_text("host = 127.0.0.1\nport = %d\nrate = 5\n" % port)
    srv = Server(tmp_path / "p", ["--config", str(conf)])
    os.makedirs(tmp_path / "p", exist_ok=True)
    srv.port_flag = False  # --port 0 would win over the file
    try:
        srv.start()
        assert srv.port == port
        conf.write_text("host = 127.0.0.1\nport = %d\nrate = 7\n" % (port + 1))
        out = hup_and_wait(srv, r"config: reloaded")
        assert re.search(r"W config: reload: port cannot change without a restart; keeping port=\"%d\"" % port, out), out
        assert "rate=7 (was 5)" in out, out
        st, _, _ = srv.http("GET", "/healthz")
        assert st == 200
        # Said again at the next reload while the file still differs.
        out = hup_and_wait(srv, r"config: reloaded")
        assert "port cannot change" in out and "nothing to change" in out, out
        assert srv.stop() == 0
    finally:
        _finish_all([srv])


def test_config_doc_marks_reloadable_options():
    """The option table says which options SIGHUP reloads."""
    out = subprocess.run([SORI_BIN, "config-doc"], capture_output=True, text=True, check=True, timeout=10).stdout
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `--([a-z-]+)`[^|]*\| `[^`]*` \| (\w*) \|", out, re.M)}
    for name in ("log-level", "rate", "burst", "max-connections", "out-limit", "max-text", "max-rooms-per-conn",
                 "handshake-timeout-ms", "http-idle-timeout-ms", "http-max-header", "http-max-body",
                 "upload-max", "login-rate-name", "login-rate-ip", "signup-rate-ip", "push-rate"):
        assert rows.get(name) == "reload", (name, rows.get(name))
    for name in ("host", "port", "data-dir", "db", "redis", "workers", "node-id", "durability", "log-file"):
        assert rows.get(name) == "", (name, rows.get(name))


def test_sighup_under_load(make_server, tmp_path):
    """Reloads while both workers serve WebSocket commands and HTTP requests
    that read the reloadable limits (a ThreadSanitizer run of this test is
    the race check of the reload): every reload applies, nothing fails that
    the limits allow, the node stays healthy."""
    conf = tmp_path / "sori.conf"
    values = [
        "rate = 100000\nburst = 100000\nmax-text = 4k\nout-limit = 8m\nmax-connections = 5000\n"
        "http-max-body = 64k\nhttp-max-header = 8k\nupload-max = 2m\nsearch-max = 50\n"
        "login-rate-ip = 1000\npush-rate = 20\nhandshake-timeout-ms = 5000\nlog-level = info\n",
        "rate = 200000\nburst = 200000\nmax-text = 8k\nout-limit = 16m\nmax-connections = 6000\n"
        "http-max-body = 128k\nhttp-max-header = 16k\nupload-max = 4m\nsearch-max = 60\n"
        "login-rate-ip = 2000\npush-rate = 30\nhandshake-timeout-ms = 6000\nlog-level = warn\n",
    ]
    conf.write_text(values[0])
    srv = make_server("--config", str(conf))
    room = uniq("hl")

    async def load(stop):
        cs = [await connect(srv, uniq("hl")) for _ in range(4)]
        await cs[0].ok({"type": "create", "room": room, "kind": "public"})
        for c in cs[1:]:
            await c.ok({"type": "join", "room": room})
        sent = 0
        while not stop.is_set():
            for c in cs:
                a = await c.rpc({"type": "send", "room": room, "text": "x" * 3000})
                assert a["type"] == "ack", a  # 3000 bytes fit both max-text values
                sent += 1
            st, _, _ = await asyncio.get_running_loop().run_in_executor(None, srv.http, "GET", "/healthz")
            assert st == 200
        return sent

    async def go():
        stop = asyncio.Event()
        task = asyncio.ensure_future(load(stop))
        loop = asyncio.get_running_loop()
        for i in range(8):
            conf.write_text(values[(i + 1) % 2])
            await loop.run_in_executor(None, hup_and_wait, srv, r"config: reloaded .*changed")
            await asyncio.sleep(0.05)
        stop.set()
        return await task
    assert run(go(), timeout=60 * SLOW) > 0
    assert srv.stop() == 0
    assert srv.read_stderr().count("config: reloaded /") == 8  # written whatever the level
