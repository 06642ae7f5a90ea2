#!/usr/bin/python3
"""soak_flood.py: a flood of malformed frames and HTTP garbage from many
clients while normal clients keep their latency.

One sori node (2 workers, --handshake-timeout-ms 3000 so slowloris and half
requests are answered within the run). Normal clients: --senders clients
send a message every --interval-ms into one room, stamped with the send
time; --receivers clients (and the senders) measure send -> delivery
latency and check every message arrives in seq order without gap or
duplicate. Phases in one run: a baseline without attackers
(--baseline seconds), the flood (--duration), then a cool-down.

The attackers run in --procs separate processes (so their CPU use does not
stall the measuring event loop more than the server does), --attackers
concurrent tasks in all, each in a loop of: open a connection (from one of
several 127.0.0.x addresses), attack, read the server's answer, record it
against the expected one, close. Attack classes and the answer they must
get (PROTOCOL.md section 5.6, OPERATIONS "Threads and limits"):

    bad_opcode      frame with reserved opcode 0x3        close 1002
    unmasked        client text frame without mask         close 1002
    rsv_bits        text frame with RSV2 set               close 1002
    cont_first      continuation frame with nothing open   close 1002
    frag_ctrl       fragmented ping (FIN=0 control frame)  close 1002
    bad_utf8        text frame with invalid UTF-8          close 1007
    oversize        64-bit length beyond --ws-max-message  close 1009
    truncated       frame head promising 1000 bytes, 10 sent, then FIN   TCP closed
    garbage_ws      random bytes after the upgrade, then FIN   a close frame (1002/1007/1009) or TCP
                    closed (or error bad_request: the bytes happened to make a valid text frame)
    bad_json        text frame "{not json"               error bad_request, connection stays open
    stomp_garbage   garbage frame on v12.stomp             STOMP ERROR, then closed
    http_garbage    random bytes + CRLFCRLF as a request  HTTP 400
    big_header      a 20 KiB request head                  HTTP 431
    half_request    request line and one header, stall    HTTP 408 (handshake timeout)
    slowloris       one header byte per second            HTTP 408 (handshake timeout)

Asserted: the server never exits; every attack got its expected answer
(a few "no answer" under load are counted separately and must stay under
--max-noanswer-pct); zero lost, duplicated or reordered messages for the
normal clients; flood-phase latency p99 <= max(--p99-factor x baseline
p99, --p99-floor-ms) and <= --p99-max-ms; open fds after the cool-down
within --fd-slack of the baseline.

    soak_flood.py --duration 120     # make soak
    soak_flood.py --duration 10 --baseline 5   # smoke
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import struct
import sys
import time

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soakutil  # noqa: E402
from soakutil import SoriProcess, Sampler, table, build_frame, parse_frames, close_code  # noqa: E402

HS_TIMEOUT_MS = 3000
EXPECT = {
    "bad_opcode": {"close 1002"},
    "unmasked": {"close 1002"},
    "rsv_bits": {"close 1002"},
    "cont_first": {"close 1002"},
    "frag_ctrl": {"close 1002"},
    "bad_utf8": {"close 1007"},
    "oversize": {"close 1009"},
    "truncated": {"tcp closed"},
    # random bytes may happen to form a valid text frame: bad JSON to the protocol
    "garbage_ws": {"close 1002", "close 1007", "close 1009", "tcp closed", "error bad_request"},
    "bad_json": {"error bad_request"},
    "stomp_garbage": {"stomp ERROR"},
    "http_garbage": {"http 400"},
    "big_header": {"http 431"},
    "half_request": {"http 408"},
    "slowloris": {"http 408"},
}
CLASSES = sorted(EXPECT)


# ---- attackers (in child processes) ----

class Conn:
    def __init__(self, r, w):
        self.r, self.w = r, w
        self.buf = b""

    async def read_http(self, timeout):
        """(status or None, rest of the bytes)"""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            chunk = await asyncio.wait_for(self.r.read(65536), left)
            if not chunk:
                break
            self.buf += chunk
        head, sep, rest = self.buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 "):
            return None
        self.buf = rest
        return int(head[9:12])

    async def read_answer(self, timeout):
        """The first telling answer after an attack on an open WebSocket:
        'close N', 'error CODE', 'stomp ERROR', 'tcp closed' or 'no answer'."""
        deadline = time.monotonic() + timeout
        while True:
            frames, self.buf = parse_frames(self.buf)
            for op, payload in frames:
                if op == 0x8:
                    return "close %s" % close_code(payload)
                if op == 0x1:
                    if payload.startswith(b"ERROR"):
                        return "stomp ERROR"
                    try:
                        o = json.loads(payload)
                    except ValueError:
                        continue
                    if o.get("type") == "error":
                        return "error %s" % o.get("code")
            left = deadline - time.monotonic()
            if left <= 0:
                return "no answer"
            try:
                chunk = await asyncio.wait_for(self.r.read(65536), left)
            except (ConnectionResetError, BrokenPipeError):
                return "tcp closed"
            except asyncio.TimeoutError:
                return "no answer"
            if not chunk:
                return "tcp closed"
            self.buf += chunk

    def abort(self):
        try:
            self.w.transport.abort()
        except Exception:
            pass


async def open_conn(port, src, timeout):
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0),
                                                          limit=1 << 20), timeout)
    return Conn(r, w)


async def open_ws(port, src, name, timeout, protocol=None):
    c = await open_conn(port, src, timeout)
    c.w.write(soakutil.ws_upgrade_request(port, "/ws?user=" + name, protocol))
    st = await c.read_http(timeout)
    if st != 101:
        c.abort()
        raise RuntimeError("upgrade: %s" % st)
    if protocol is None:
        # the hello frame
        frames = []
        deadline = time.monotonic() + timeout
        while not frames and time.monotonic() < deadline:
            frames, _ = parse_frames(c.buf)
            if frames:
                break
            chunk = await asyncio.wait_for(c.r.read(65536), timeout)
            if not chunk:
                raise RuntimeError("closed before hello")
            c.buf += chunk
        _, c.buf = parse_frames(c.buf)
    return c


async def attack(kind, port, src, name, timeout):
    if kind in ("http_garbage", "big_header", "half_request", "slowloris"):
        c = await open_conn(port, src, timeout)
        try:
            if kind == "http_garbage":
                c.w.write(bytes(random.choice(b"abcdefgh \t:/\x01\x7f") for _ in range(random.randint(5, 300)))
                          + b"\r\n\r\n")
            elif kind == "big_header":
                c.w.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20480 + b"\r\n\r\n")
            elif kind == "half_request":
                c.w.write(b"GET /ws?user=" + name.encode() + b" HTTP/1.1\r\nHost: x\r\n")
            else:
                req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100
                for i in range(HS_TIMEOUT_MS // 1000 + 3):
                    if c.r.at_eof():
                        break
                    c.w.write(req[i:i + 1])
                    await asyncio.sleep(1.0)
                    if c.r._buffer:  # the answer came
                        break
            try:
                st = await c.read_http(timeout + HS_TIMEOUT_MS / 1000.0)
            except (ConnectionResetError, BrokenPipeError):
                return "tcp closed"
            except asyncio.TimeoutError:
                return "no answer"
            return "http %s" % st if st else "tcp closed"
        finally:
            c.abort()
    proto = "v12.stomp" if kind == "stomp_garbage" else None
    c = await open_ws(port, src, name, timeout, proto)
    try:
        if kind == "bad_opcode":
            c.w.write(build_frame(0x3, b"x"))
        elif kind == "unmasked":
            c.w.write(build_frame(0x1, b'{"type":"ping"}', mask=False))
        elif kind == "rsv_bits":
            c.w.write(build_frame(0x1, b'{"type":"ping"}', rsv=2))
        elif kind == "cont_first":
            c.w.write(build_frame(0x0, b"abc"))
        elif kind == "frag_ctrl":
            c.w.write(build_frame(0x9, b"p", fin=False))
        elif kind == "bad_utf8":
            c.w.write(build_frame(0x1, b'{"type":"ping","x":"\xff\xfe\xc3"}'))
        elif kind == "oversize":
            c.w.write(build_frame(0x2, b"", length=1 << 40) + os.urandom(16))
        elif kind == "truncated":
            c.w.write(build_frame(0x1, b"a" * 1000)[:16])
            c.w.write_eof()
        elif kind == "garbage_ws":
            c.w.write(os.urandom(random.randint(2, 200)))
            c.w.write_eof()  # a frame head among the garbage may wait for more bytes: EOF ends it
        elif kind == "bad_json":
            c.w.write(build_frame(0x1, b"{not json"))
        elif kind == "stomp_garbage":
            c.w.write(build_frame(0x1, b"GARBAGE\nfoo\n\n\0"))
        try:
            await c.w.drain()
        except (ConnectionResetError, BrokenPipeError):
            return "tcp closed"
        ans = await c.read_answer(timeout)
        if kind == "bad_json" and ans == "error bad_request":
            c.w.write(build_frame(0x8, struct.pack("!H", 1000)))
        return ans
    finally:
        c.abort()


def attacker_proc(port, n_tasks, seconds, pause_ms, srcs, q, seed):
    random.seed(seed)
    counts = {}   # (kind, answer) -> n
    errors = {}

    async def task(i):
        end = time.monotonic() + seconds
        k = 0
        while time.monotonic() < end:
            kind = CLASSES[(i + k) % len(CLASSES)]
            k += 1
            try:
                ans = await asyncio.wait_for(attack(kind, port, srcs[(i + k) % len(srcs)], "att%d_%d" % (seed, i),
                                                    10), 20)
            except Exception as e:
                ans = "exception %s" % type(e).__name__
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            counts[(kind, ans)] = counts.get((kind, ans), 0) + 1
            await asyncio.sleep(random.random() * pause_ms / 1000.0)

    async def main():
        await asyncio.gather(*[task(i) for i in range(n_tasks)])

    try:
        asyncio.run(main())
    finally:
        q.put({"counts": [(k[0], k[1], v) for k, v in counts.items()], "errors": errors})


# ---- normal clients (main process) ----

def cpu_s(pid):
    """user + system CPU seconds of pid"""
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

class Normal:
    def __init__(self, url, name, room):
        self.url, self.name, self.room = url, name, room
        self.lat = []   # (phase, latency ms)
        self.phase = "baseline"
        self.last = None
        self.gaps = self.dups = 0
        self.received = 0
        self.acks = 0
        self.closed = False

    async def start(self):
        self.ws = await websockets.connect("%s/ws?user=%s" % (self.url, self.name), compression=None,
                                           ping_interval=None, max_size=None, open_timeout=10)
        json.loads(await self.ws.recv())
        await self.ws.send(json.dumps({"type": "create", "room": self.room, "kind": "public"}))
        await self.ws.send(json.dumps({"type": "join", "room": self.room, "ref": "j"}))
        while True:
            f = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if f.get("ref") == "j":
                assert f["type"] == "joined", f
                self.last = f["seq"]
                break
        self.reader = asyncio.ensure_future(self.read())

    async def read(self):
        try:
            async for raw in self.ws:
                now = time.monotonic()
                f = json.loads(raw)
                if f.get("type") == "message":
                    self.received += 1
                    if f["seq"] == self.last + 1:
                        self.last = f["seq"]
                    elif f["seq"] <= self.last:
                        self.dups += 1
                    else:
                        self.gaps += 1
                        self.last = f["seq"]
                    t = f["text"].split(" ", 2)
                    if t[0] == "lat":
                        self.lat.append((self.phase, (now - float(t[1])) * 1000.0))
                elif f.get("type") == "ack":
                    self.acks += 1
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True

    async def sender(self, interval, until):
        n = 0
        while time.monotonic() < until():
            await self.ws.send(json.dumps({"type": "send", "room": self.room,
                                           "text": "lat %.6f %s %d" % (time.monotonic(), self.name, n)}))
            n += 1
            await asyncio.sleep(interval)
        return n


async def run_normals(args, srv, sampler, on_phase):
    url = "ws://127.0.0.1:%d" % srv.port
    room = "flood-lat"
    senders = [Normal(url, "snd%d" % i, room) for i in range(args.senders)]
    receivers = [Normal(url, "rcv%d" % i, room) for i in range(args.receivers)]
    for c in senders + receivers:
        await c.start()
    state = {"stop": float("inf")}
    send_tasks = [asyncio.ensure_future(s.sender(args.interval_ms / 1000.0, lambda: state["stop"]))
                  for s in senders]
    everyone = senders + receivers
    res = {}
    await asyncio.sleep(2)  # settle
    res["fd_base"] = sampler.now()[1]
    res["rss_base"] = sampler.now()[0]
    c0 = cpu_s(srv.pid)
    await asyncio.sleep(args.baseline)
    res["cpu_base"] = cpu_s(srv.pid)
    res["cpu_baseline"] = res["cpu_base"] - c0
    for c in everyone:
        c.phase = "flood"
    await on_phase("flood")
    res["fd_peak_flood"] = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.duration + 2:
        await asyncio.sleep(1)
        if not srv.alive():
            break
    for c in everyone:
        c.phase = "after"
    await on_phase("after")
    state["stop"] = 0
    sent = sum(await asyncio.gather(*send_tasks))
    res["cpu_flood"] = cpu_s(srv.pid) - res["cpu_base"]
    # cool-down: every attacker connection gone (the normal clients and
    # the /metrics request stay), then the fds against the baseline
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conns = await loop.run_in_executor(None, lambda: srv.metrics().get("sori_connections"))
        if conns is not None and conns <= len(everyone) + 1:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)
    res["fd_final"] = min(sampler.now()[1] for _ in range(3))
    res["sent"] = sent
    res["clients"] = everyone
    for c in everyone:
        await c.ws.close()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=120, help="seconds of flood (120)")
    ap.add_argument("--baseline", type=float, default=20, help="seconds of baseline before the flood (20)")
    ap.add_argument("--attackers", type=int, default=300, help="concurrent attacker connections in all (300)")
    ap.add_argument("--procs", type=int, default=2, help="attacker processes (2)")
    ap.add_argument("--attack-pause-ms", type=float, default=100,
                    help="each attacker waits up to this long between attacks (100)")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--receivers", type=int, default=4)
    ap.add_argument("--interval-ms", type=float, default=20, help="each sender's message interval (20)")
    ap.add_argument("--p99-factor", type=float, default=10)
    ap.add_argument("--p99-floor-ms", type=float, default=50)
    ap.add_argument("--p99-max-ms", type=float, default=500)
    ap.add_argument("--max-noanswer-pct", type=float, default=1.0)
    ap.add_argument("--fd-slack", type=int, default=4)
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    workdir = soakutil.make_workdir("sori-flood.")
    srv = SoriProcess(workdir, ["--handshake-timeout-ms", str(HS_TIMEOUT_MS), "--rate", "1000",
                                "--burst", "2000"])
    procs = []
    ok = False
    try:
        srv.start()
        sampler = Sampler(srv.pid).start()
        q = multiprocessing.Queue()
        srcs = soakutil.source_addrs(args.sources)

        async def on_phase(p):
            if p == "flood":
                per = max(1, args.attackers // args.procs)
                for i in range(args.procs):
                    pr = multiprocessing.Process(target=attacker_proc, daemon=True,
                                                 args=(srv.port, per, args.duration, args.attack_pause_ms, srcs,
                                                       q, 1000 + i))
                    pr.start()
                    procs.append(pr)

        res = asyncio.run(asyncio.wait_for(run_normals(args, srv, sampler, on_phase),
                                           args.baseline + args.duration + 120))
        results = []
        for pr in procs:
            try:
                results.append(q.get(timeout=60))
            except Exception:
                results.append({"counts": [], "errors": {"no result from attacker": 1}})
            pr.join(10)
        fd_final = res["fd_final"]
        sampler.stop()
        peak_rss, peak_fd = sampler.peak()
        alive = srv.alive()
        code = srv.stop()

        # answers per class
        per = {k: {} for k in CLASSES}
        for r in results:
            for kind, ans, n in r["counts"]:
                per[kind][ans] = per[kind].get(ans, 0) + n
        total = sum(sum(v.values()) for v in per.values())
        wrong = noans = 0
        rows_att = []
        for kind in CLASSES:
            good = sum(n for a, n in per[kind].items() if a in EXPECT[kind])
            na = sum(n for a, n in per[kind].items() if a == "no answer" or a.startswith("exception"))
            bad = sum(per[kind].values()) - good - na
            wrong += bad
            noans += na
            rows_att.append((kind, "%5d ok (%s)%s" % (good, "/".join(sorted(EXPECT[kind])),
                                                      "".join("; %s: %d" % (a, n) for a, n in sorted(per[kind].items())
                                                              if a not in EXPECT[kind])),
                             bad == 0))
        clients = res["clients"]
        lat_b = [l for c in clients for p, l in c.lat if p == "baseline"]
        lat_f = [l for c in clients for p, l in c.lat if p == "flood"]
        pct = soakutil.percentile
        p99b, p99f = pct(lat_b, 99), pct(lat_f, 99)
        bound = min(max(args.p99_factor * p99b, args.p99_floor_ms), args.p99_max_ms)
        expected_rcv = res["sent"] * len(clients)
        received = sum(c.received for c in clients)
        checks = {
            "server alive through the flood, exit 0": alive and code == 0,
            "every attack got its expected answer": wrong == 0,
            "no-answer/exceptions <= %.1f%%" % args.max_noanswer_pct:
                total > 0 and noans * 100.0 / total <= args.max_noanswer_pct,
            "normal: no loss/dup/reorder": sum(c.gaps + c.dups for c in clients) == 0 and received == expected_rcv,
            "normal: all acks": sum(c.acks for c in clients) == res["sent"],
            "p99 under flood within bound": p99f <= bound,
            "fds back to baseline": abs(fd_final - res["fd_base"]) <= args.fd_slack,
        }
        rows = [
            ("run", "baseline %.0f s, flood %.0f s, %d attacker tasks in %d processes" %
             (args.baseline, args.duration, args.attackers, args.procs)),
            ("attacks", "%d (%.0f/s)" % (total, total / args.duration)),
        ] + rows_att + [
            ("no answer / exceptions", "%d %s" % (noans, "; ".join("%s: %d" % kv for r in results
                                                                    for kv in r["errors"].items()))),
            ("normal msgs sent / deliveries", "%d / %d of %d expected" % (res["sent"], received, expected_rcv)),
            ("latency baseline p50/p99/max ms", "%.1f / %.1f / %.1f (%d)" % (pct(lat_b, 50), p99b,
                                                                           max(lat_b or [0]), len(lat_b))),
            ("latency flood p50/p99/max ms", "%.1f / %.1f / %.1f (%d)" % (pct(lat_f, 50), p99f, max(lat_f or [0]),
                                                                        len(lat_f))),
            ("p99 bound ms", "%.1f = min(max(%gx baseline p99, %g), %g)" % (bound, args.p99_factor,
                                                                          args.p99_floor_ms, args.p99_max_ms)),
            ("fds baseline/peak/final", "%d / %d / %d" % (res["fd_base"], peak_fd, fd_final)),
            ("RSS KiB baseline/peak", "%d / %d" % (res["rss_base"], peak_rss)),
            ("server CPU baseline/flood", "%.0f%% / %.0f%% of one core" % (
                100 * res["cpu_baseline"] / args.baseline, 100 * res["cpu_flood"] / (args.duration + 2))),
            ("machine load (1 min)", os.getloadavg()[0]),
        ]
        rows += [(k, "", v) for k, v in checks.items()]
        table("soak_flood", rows)
        ok = all(checks.values())
        if not ok:
            print(srv.stderr_tail(2000))
    finally:
        for pr in procs:
            if pr.is_alive():
                pr.terminate()   # by its PID (multiprocessing.Process)
                pr.join(5)
        srv.kill()
        soakutil.remove_workdir(workdir, args.keep)
    print("RESULT soak_flood:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
