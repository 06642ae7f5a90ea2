"""`sori bench`, the load generator: each scenario run small and short against a
real server (guest mode, command rate limit lifted), checking the one JSON line
it prints for real behaviour: every acked message delivered to every member of
its room exactly once and in order, latency percentiles present and ordered,
connection counts exact. Also: flag errors exit 2 with one line, a dead server
fails cleanly, a server that goes away mid-run is counted rather than fatal,
and idle connections cost the bench no CPU."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import SANITIZER_MARKERS, SLOW, SORI_BIN

FAST = ("--rate", "1000000", "--burst", "1000000")


def bench(server, *args, timeout=60, expect=0):
    """Runs `sori bench` against server; returns (parsed JSON line, stderr)."""
    cmd = [SORI_BIN, "bench", "--url", server.ws_url + "/ws",
           "--server-pid", str(server.proc.pid)] + [str(a) for a in args]
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    p = subprocess.run(cmd, capture_output=True, timeout=timeout * SLOW, env=env)
    out, err = p.stdout.decode(), p.stderr.decode(errors="replace")
    for marker in SANITIZER_MARKERS:
        assert marker not in err, err
    assert p.returncode == expect, "exit %d\n%s\n%s" % (p.returncode, out, err)
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # one JSON line, nothing else on stdout
    return json.loads(lines[-1]), err


def assert_ordered(h, name):
    assert h["count"] > 0, (name, h)
    assert 0 <= h["min"] <= h["p50"] <= h["p90"] <= h["p99"] <= h["p999"] <= h["max"], (name, h)
    assert h["min"] <= h["mean"] <= h["max"], (name, h)


def assert_exact_delivery(r, recipients):
    """Every acked send reached every recipient once, in seq order."""
    assert r["handshake_failures"] == 0, r
    assert r["sent"] > 0 and r["acked"] == r["sent"], r
    assert r["send_errors"] == 0 and r["rate_limited"] == 0 and r["setup_errors"] == 0, r
    assert r["expected_deliveries"] == r["acked"] * recipients, r
    assert r["deliveries"] == r["expected_deliveries"] and r["lost"] == 0, r
    assert r["duplicates"] == 0 and r["out_of_order"] == 0 and r["gaps"] == 0, r
    assert r["server_closes"] == 0 and r["protocol_errors"] == 0 and r["io_errors"] == 0, r
    assert r["first_error"] == "", r


def test_fanout_open_loop(make_server):
    s = make_server(*FAST)
    r, err = bench(s, "--rooms", 2, "--subs", 5, "--pubs", 1, "--rate", 200,
                   "--duration", 2, "--warmup", 0.5)
    assert r["scenario"] == "fanout" and r["conns"] == 12 and r["connected"] == 12
    assert_exact_delivery(r, recipients=6)  # 5 subscribers and the publisher
    # two publishers at 200/s, paced by the bench: close to 400 sends/s
    assert 300 <= r["sends_per_s"] <= 440, r
    assert r["window_deliveries"] > 0 and r["deliveries_per_s"] > 0
    assert_ordered(r["latency_us"], "latency")
    assert_ordered(r["ack_latency_us"], "ack latency")
    # latency is measured at every recipient in the window
    assert r["latency_us"]["count"] == r["window_deliveries"], r
    assert r["server_cpu_s"] is not None and r["server_cpu_s"] > 0
    assert r["bench_cpu_s"] >= 0 and r["deliveries_per_server_cpu_s"] > 0
    assert "deliveries/s" in err and "latency" in err


def test_fanout_closed_loop_several_publishers(make_server):
    s = make_server(*FAST)
    r, _ = bench(s, "--rooms", 3, "--subs", 4, "--pubs", 2, "--window", 4,
                 "--duration", 1.5, "--warmup", 0.3, "--threads", 2, "--size", 200)
    assert r["conns"] == 18 and r["connected"] == 18 and r["window"] == 4
    assert_exact_delivery(r, recipients=6)  # 4 subscribers and 2 publishers
    assert r["acks_per_s"] > 0
    assert_ordered(r["latency_us"], "latency")


def test_connections(make_server):
    s = make_server(*FAST)
    r, err = bench(s, "--scenario", "connections", "--conns", 200, "--rooms", 4,
                   "--duration", 1, "--sources", 3)
    assert r["conns"] == 200 and r["connected"] == 200 and r["handshake_failures"] == 0, r
    assert r["setup_errors"] == 0 and r["server_closes"] == 0, r
    assert r["connects_per_s"] > 0 and r["connect_s"] > 0
    assert r["server_rss_before"] > 0 and r["server_rss_joined"] > 0
    assert r["server_rss_per_conn"] is not None
    assert r["sent"] == 0 and r["deliveries"] == 0
    assert "200/200 connected" in err


def test_dm(make_server):
    s = make_server(*FAST)
    r, _ = bench(s, "--scenario", "dm", "--pairs", 5, "--duration", 2, "--warmup", 0.3)
    assert r["conns"] == 10 and r["connected"] == 10
    assert_exact_delivery(r, recipients=2)  # both users of the dm room
    assert r["round_trips"] > 0 and r["round_trips_per_s"] > 0
    assert_ordered(r["rtt_us"], "rtt")
    assert_ordered(r["latency_us"], "latency")
    # a round trip is two messages: at least the one-way median
    assert r["rtt_us"]["p50"] >= r["latency_us"]["min"]


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_durable(make_server, durability):
    # --store-queue-max 0: a closed loop on async durability can queue more
    # than the default 100 000 store ops (PostgreSQL), and the bound would
    # then refuse sends; this test is about the bench's counting.
    s = make_server(*FAST, "--durability", durability, "--store-queue-max", "0")
    r, _ = bench(s, "--scenario", "durable", "--conns", 4, "--window", 8,
                 "--duration", 2, "--warmup", 0.3)
    assert r["connected"] == 4 and r["window"] == 8 and r["rooms"] == 4
    assert_exact_delivery(r, recipients=1)  # each sender in its own room
    assert r["acks_per_s"] > 0
    assert_ordered(r["ack_latency_us"], "ack latency")


def test_rate_limited_sends_are_counted(make_server):
    # the default server limit (100/s, burst 200) against 1000 msg/s for 1 s
    s = make_server()
    r, _ = bench(s, "--rooms", 1, "--subs", 1, "--rate", 1000, "--duration", 1, "--warmup", 0)
    assert r["rate_limited"] > 0 and r["send_errors"] >= r["rate_limited"]
    assert r["acked"] + r["send_errors"] == r["sent"], r
    assert r["deliveries"] == r["acked"] * 2 and r["duplicates"] == 0, r
    assert "rate_limited" in r["first_error"]


def test_idle_connections_cost_no_cpu(make_server):
    s = make_server(*FAST)
    r, _ = bench(s, "--scenario", "connections", "--conns", 50, "--duration", 2)
    assert r["connected"] == 50
    assert r["bench_cpu_s"] < 0.2 * SLOW, r  # sleeping in epoll_wait, not polling


def test_server_going_away_is_counted(make_server):
    s = make_server(*FAST)
    cmd = [SORI_BIN, "bench", "--url", s.ws_url + "/ws", "--rooms", "1", "--subs", "5",
           "--rate", "100", "--duration", "30", "--warmup", "0", "--drain", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5 * SLOW)
    s.stop()  # drains: closes every WebSocket with 1012
    out, err = p.communicate(timeout=40 * SLOW)
    err = err.decode(errors="replace")
    for marker in SANITIZER_MARKERS:
        assert marker not in err, err
    assert p.returncode == 0, err
    r = json.loads(out.decode().strip().splitlines()[-1])
    assert r["server_closes"] == 6, r
    assert "1012" in r["first_error"], r


def test_no_server(tmp_path):
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    p = subprocess.run([SORI_BIN, "bench", "--url", "ws://127.0.0.1:%d/ws" % port, "--duration", "1"],
                       capture_output=True, timeout=20 * SLOW)
    assert p.returncode == 1
    assert p.stdout == b""
    assert b"no connection got through" in p.stderr


def test_guests_refused(make_server):
    s = make_server(allow_guests=False)
    p = subprocess.run([SORI_BIN, "bench", "--url", s.ws_url + "/ws", "--duration", "1"],
                       capture_output=True, timeout=20 * SLOW)
    assert p.returncode == 1
    assert b"401" in p.stderr and b"--allow-guests" in p.stderr


def test_several_urls(make_server, tmp_path):
    """--url/--pub-url lists: connections spread over them, deliveries between
    two URLs counted as crossing; --cpu and --window-hook. Both URLs reach the
    same server here (a query string makes the second one distinct), which is
    enough to check the bench's bookkeeping."""
    s = make_server(*FAST)
    a, b = s.ws_url + "/ws", s.ws_url + "/ws?via=b"
    hook = tmp_path / "hook.sh"
    hook.write_text('echo "$1" >>"%s"\n' % (tmp_path / "hook.log"))
    r, err = bench(s, "--url", "%s,%s" % (b, a), "--pub-url", "%s,%s" % (a, b), "--spread", "room",
                   "--rooms", 2, "--subs", 4, "--window", 4, "--duration", 1, "--warmup", 0.3,
                   "--cpu", "srv=%d,me=%d+" % (s.proc.pid, os.getpid()), "--window-hook", "sh %s" % hook)
    assert_exact_delivery(r, recipients=5)
    # room 0: publisher on a, subscribers on b; room 1: the other way round
    assert [t["conns"] for t in r["targets"]] == [5, 5], r["targets"]
    assert sum(t["window_deliveries"] for t in r["targets"]) == r["window_deliveries"]
    assert sum(t["window_acked"] for t in r["targets"]) == r["window_acked"]
    # every subscriber's copy crosses; the publishers' own copies do not
    assert 0.7 * r["window_deliveries"] < r["window_cross_deliveries"] < r["window_deliveries"], r
    assert "from a sender on another URL" in err
    labels = {c["label"]: c for c in r["cpu"]}
    assert labels["srv"]["cpu_s"] > 0 and labels["srv"]["pids"] == str(s.proc.pid)
    assert labels["me"]["cpu_s"] is not None and labels["me"]["pids"].endswith("+")
    assert (tmp_path / "hook.log").read_text().split() == ["start", "end"]
    # one URL: no cross count
    r, _ = bench(s, "--subs", 2, "--window", 2, "--duration", 0.5, "--warmup", 0)
    assert r["window_cross_deliveries"] is None and len(r["targets"]) == 1


@pytest.mark.parametrize("args,needle", [
    (["--spread", "nope"], "--spread"),
    (["--cpu", "x"], "--cpu"),
    (["--cpu", "a=12x"], "--cpu"),
    (["--url", "ws://127.0.0.1:1/ws,"], "--url"),
    (["--scenario", "dm", "--pub-url", "ws://127.0.0.1:1/ws"], "--pub-url"),
    (["--rooms", "0"], "--rooms"),
    (["--scenario", "nope"], "--scenario"),
    (["--scenario", "dm", "--subs", "3"], "--subs"),
    (["--rate", "10", "--window", "2"], "--window"),
    (["--url", "http://127.0.0.1:1/ws"], "--url"),
    (["--url", "wss:/127.0.0.1:1/ws"], "wss://"),
    (["--duration", "abc"], "--duration"),
    (["--threads", "1.5"], "--threads"),
    (["--size", "5"], "--size"),
    (["--tag", "a b"], "--tag"),
    (["--scenario", "connections", "--conns", "2", "--rooms", "3"], "--rooms"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--rate"], "--rate"),
])
def test_flag_errors(args, needle):
    p = subprocess.run([SORI_BIN, "bench"] + args, capture_output=True, timeout=10 * SLOW)
    err = p.stderr.decode()
    assert p.returncode == 2, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert p.stdout == b""


def test_help():
    p = subprocess.run([SORI_BIN, "bench", "--help"], capture_output=True, timeout=10 * SLOW)
    assert p.returncode == 0
    out = p.stdout.decode()
    for word in ("fanout", "connections", "dm", "durable", "--rate", "--window", "--sources",
                 "--server-pid", "--allow-guests", "--burst"):
        assert word in out, word
    p = subprocess.run([SORI_BIN, "help"], capture_output=True, timeout=10 * SLOW)
    assert b"sori bench" in p.stdout


def test_sigint_ends_the_window_early(make_server):
    s = make_server(*FAST)
    cmd = [SORI_BIN, "bench", "--url", s.ws_url + "/ws", "--subs", "3", "--rate", "50",
           "--duration", "30", "--warmup", "0"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5 * SLOW)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20 * SLOW)
    assert p.returncode == 0, err
    r = json.loads(out.decode().strip().splitlines()[-1])
    assert 0.5 < r["duration_s"] < 10 * SLOW, r
    assert r["sent"] > 0 and r["deliveries"] == r["expected_deliveries"] == r["acked"] * 4, r
