#!/usr/bin/python3
"""soak_churn.py: connect/disconnect churn with traffic; RSS and open fds
must return to their baseline.

One sori node (SQLite, sync durability, 2 workers) on 127.0.0.1. A few
steady clients join every churn room between them (room k is watched by
steady client k % S) and stay connected the whole run, checking that every
message of their rooms arrives in seq order with no gap and no duplicate,
and at the end that the last seq they saw is the room's latest (`rooms`).
Churn runs in waves: a wave opens --wave clients (JSON, JSON with
permessage-deflate, or STOMP v1.2; from several 127.0.0.x source
addresses), each joins a random room, and once the whole wave is connected
each sends --msgs messages, waits for its acks (JSON `ack`, STOMP
`RECEIPT`) and its own messages back, then leaves by a clean close
handshake, a TCP FIN without a close frame, or a TCP reset (SO_LINGER 0).
Waves repeat until --duration seconds have passed (or --max-waves).

The server's VmRSS and open fds are sampled every second. The baseline is
taken after --warmup-waves waves and a quiet period (so the room rings,
user records and glibc's arenas have reached their steady size), the final
value after the churn and the same quiet period. Asserted:
  - fds: |final - baseline| <= --fd-slack (default 4)
  - RSS: final <= baseline + max(--rss-slack-mib, --rss-slack-pct % of baseline),
    and RSS after each wave of the second half of the churn at most
    --half-slack-mib above the first wave of that half (a leak grows with
    every wave; glibc's arenas level off)
  - no steady client lost, duplicated or reordered a message; every
    churner got its acks and its own messages; no connect failed.
Prints a result table and exits 1 on any failure; the server is stopped by
its PID in every case.

    soak_churn.py --duration 600          # make soak
    soak_churn.py --duration 60 --wave 500   # a smoke run
"""
import argparse
import asyncio
import json
import os
import random
import socket
import struct
import sys
import time

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soakutil  # noqa: E402
from soakutil import SoriProcess, Sampler, table  # noqa: E402

OP_TIMEOUT = 20.0  # bound on any single client step under load


class Stats:
    def __init__(self):
        self.connects = 0
        self.connect_fail = 0
        self.acks = 0
        self.ack_fail = 0
        self.echo_fail = 0
        self.modes = {"close": 0, "fin": 0, "reset": 0}
        self.kinds = {"json": 0, "deflate": 0, "stomp": 0}
        self.errors = []

    def err(self, msg):
        if len(self.errors) < 20:
            self.errors.append(msg)


# ---- steady clients ----

class Steady:
    def __init__(self, url, name, rooms):
        self.url = url
        self.name = name
        self.rooms = rooms
        self.last = {}      # room -> last seq seen
        self.received = 0
        self.gaps = 0
        self.dups = 0
        self.closed = False
        self.ws = None
        self.pending = {}
        self.task = None

    async def start(self):
        self.ws = await websockets.connect("%s/ws?user=%s" % (self.url, self.name), compression=None,
                                           ping_interval=None, max_size=None, open_timeout=OP_TIMEOUT)
        hello = json.loads(await self.ws.recv())
        assert hello["type"] == "hello", hello
        for i, r in enumerate(self.rooms):
            await self.ws.send(json.dumps({"type": "create", "room": r, "kind": "public", "ref": "c%d" % i}))
            await self.ws.send(json.dumps({"type": "join", "room": r, "ref": "j%d" % i}))
        need = set("j%d" % i for i in range(len(self.rooms)))
        while need:
            f = json.loads(await asyncio.wait_for(self.ws.recv(), OP_TIMEOUT))
            if f.get("type") == "joined":
                self.last[f["room"]] = f["seq"]
                need.discard(f.get("ref"))
            elif f.get("type") == "message":
                self.on_message(f)
            elif f.get("type") == "error" and f.get("code") != "conflict":
                raise RuntimeError("steady join: %r" % f)
        self.task = asyncio.ensure_future(self.read())

    def on_message(self, f):
        r = f["room"]
        last = self.last.get(r)
        if last is None:
            return
        self.received += 1
        if f["seq"] == last + 1:
            self.last[r] = f["seq"]
        elif f["seq"] <= last:
            self.dups += 1
        else:
            self.gaps += 1
            self.last[r] = f["seq"]

    async def read(self):
        try:
            async for raw in self.ws:
                f = json.loads(raw)
                t = f.get("type")
                if t == "message":
                    self.on_message(f)
                elif f.get("ref") in self.pending:
                    self.pending.pop(f["ref"]).set_result(f)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True

    async def prefill(self, n):
        for room in self.rooms:
            futs = []
            for i in range(n):
                ref = "p%s.%d" % (room, i)
                fut = asyncio.get_running_loop().create_future()
                self.pending[ref] = fut
                futs.append(fut)
                await self.ws.send(json.dumps({"type": "send", "room": room, "ref": ref,
                                               "text": "prefill %d %s" % (i, "y" * random.randint(10, 600))}))
            for r in await asyncio.wait_for(asyncio.gather(*futs), 60):
                assert r["type"] == "ack", r

    async def rpc(self, cmd, ref):
        fut = asyncio.get_running_loop().create_future()
        self.pending[ref] = fut
        await self.ws.send(json.dumps(dict(cmd, ref=ref)))
        return await asyncio.wait_for(fut, OP_TIMEOUT)


# ---- churners ----

def stomp_frame(cmd, headers, body=b""):
    h = "".join("%s:%s\n" % kv for kv in headers.items())
    return (cmd + "\n" + h + "\n").encode() + body + b"\0"


def stomp_parse(raw):
    if isinstance(raw, str):
        raw = raw.encode()
    raw = raw.lstrip(b"\r\n")
    if not raw:
        return None
    head, _, body = raw.partition(b"\n\n")
    lines = head.decode(errors="replace").split("\n")
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs.setdefault(k, v)
    return lines[0], hdrs, body.rstrip(b"\0")


async def churner(args, url, src, name, room, kind, go, leave, st, seen_kinds):
    ws = None
    try:
        kw = dict(ping_interval=None, max_size=None, open_timeout=OP_TIMEOUT, close_timeout=5,
                  local_addr=(src, 0))
        kw["compression"] = "deflate" if kind == "deflate" else None
        if kind == "stomp":
            kw["subprotocols"] = ["v12.stomp"]
        ws = await asyncio.wait_for(websockets.connect("%s/ws?user=%s" % (url, name), **kw), OP_TIMEOUT)
        if kind == "stomp":
            await ws.send(stomp_frame("CONNECT", {"accept-version": "1.2", "host": "sori",
                                                  "login": name, "heart-beat": "0,0"}))
            await ws.send(stomp_frame("SUBSCRIBE", {"id": "s1", "destination": "/topic/room." + room,
                                                    "receipt": "sub"}))
            got = set()
            while "sub" not in got:
                fr = stomp_parse(await asyncio.wait_for(ws.recv(), OP_TIMEOUT))
                if fr and fr[0] == "RECEIPT":
                    got.add(fr[1].get("receipt-id"))
                elif fr and fr[0] == "ERROR":
                    raise RuntimeError("stomp error %r" % (fr,))
        else:
            hello = json.loads(await asyncio.wait_for(ws.recv(), OP_TIMEOUT))
            assert hello["type"] == "hello", hello
            await ws.send(json.dumps({"type": "join", "room": room, "ref": "j"}))
            while True:
                f = json.loads(await asyncio.wait_for(ws.recv(), OP_TIMEOUT))
                if f.get("ref") == "j":
                    if f["type"] != "joined":
                        raise RuntimeError("join: %r" % f)
                    break
        st.connects += 1
        st.kinds[kind] += 1
    except Exception as e:
        st.connect_fail += 1
        st.err("connect %s %s: %r" % (kind, name, e))
        if ws is not None:
            ws.transport.abort()
        await go.wait()
        return
    try:
        await go.wait()
        texts = ["%s %d %s" % (name, i, "x" * random.randint(10, 600)) for i in range(args.msgs)]
        acked = 0
        echoed = 0
        for i, t in enumerate(texts):
            if kind == "stomp":
                await ws.send(stomp_frame("SEND", {"destination": "/app/room." + room,
                                                   "content-type": "application/json",
                                                   "receipt": "m%d" % i}, json.dumps({"text": t}).encode()))
            else:
                await ws.send(json.dumps({"type": "send", "room": room, "text": t, "ref": "m%d" % i}))
        deadline = time.monotonic() + OP_TIMEOUT
        while (acked < len(texts) or echoed < len(texts)) and time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if kind == "stomp":
                fr = stomp_parse(raw)
                if not fr:
                    continue
                if fr[0] == "RECEIPT":
                    acked += 1
                elif fr[0] == "MESSAGE" and fr[1].get("from") == name:
                    echoed += 1
                elif fr[0] == "ERROR":
                    raise RuntimeError("stomp error %r" % (fr,))
            else:
                f = json.loads(raw)
                if f.get("type") == "ack":
                    acked += 1
                elif f.get("type") == "message" and f.get("from") == name:
                    echoed += 1
                elif f.get("type") == "error":
                    raise RuntimeError("error %r" % f)
        st.acks += acked
        if acked < len(texts):
            st.ack_fail += len(texts) - acked
            st.err("%s %s: %d of %d acks" % (kind, name, acked, len(texts)))
        if echoed < len(texts):
            st.echo_fail += len(texts) - echoed
            st.err("%s %s: %d of %d own messages back" % (kind, name, echoed, len(texts)))
    except Exception as e:
        st.ack_fail += 1
        st.err("traffic %s %s: %r" % (kind, name, e))
    await leave.wait()
    await asyncio.sleep(random.random() * 0.5)
    mode = random.choices(["close", "fin", "reset"], weights=[6, 2, 2])[0]
    st.modes[mode] += 1
    try:
        if mode == "close":
            await asyncio.wait_for(ws.close(), 10)
        elif mode == "fin":
            ws.transport.close()
        else:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.transport.abort()
    except Exception:
        ws.transport.abort()


async def wave(args, url, srcs, widx, st):
    go = asyncio.Event()
    leave = asyncio.Event()
    sem = asyncio.Semaphore(args.connect_concurrency)
    kinds = random.choices(["json", "deflate", "stomp"], weights=[5, 3, 2], k=args.wave)

    async def paced(i):
        async with sem:
            t = asyncio.ensure_future(one_conn(i))
            await connected[i].wait()
        await t

    connected = [asyncio.Event() for _ in range(args.wave)]

    async def one_conn(i):
        # churner() waits on `go`; mark connected once it gets there
        class Go:
            async def wait(_self):
                connected[i].set()
                await go.wait()
        # a churner name always joins the same room: memberships (stored,
        # per user and room) reach their steady size in the first wave
        await churner(args, url, srcs[i % len(srcs)], "ch%d" % i, "c%d" % (i % args.rooms),
                      kinds[i], Go(), leave, st, None)

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(paced(i)) for i in range(args.wave)]
    await asyncio.wait_for(asyncio.gather(*[c.wait() for c in connected]), 300)
    t_conn = time.monotonic() - t0
    go.set()
    # let traffic run: leave once every churner has its acks (tasks are
    # parked on `leave`) or after a bound
    await asyncio.sleep(0.5)
    leave_deadline = time.monotonic() + OP_TIMEOUT + 10
    while time.monotonic() < leave_deadline:
        if st.acks + st.ack_fail >= st._expect_acks:
            break
        await asyncio.sleep(0.2)
    leave.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return t_conn, time.monotonic() - t0


async def wait_conns(srv, want, timeout):
    deadline = time.monotonic() + timeout
    n = None
    while time.monotonic() < deadline:
        n = srv.metrics().get("sori_connections")
        if n is not None and n <= want:
            return n
        await asyncio.sleep(0.5)
    return n


async def main_async(args, srv, sampler):
    url = "ws://127.0.0.1:%d" % srv.port
    srcs = soakutil.source_addrs(args.sources)
    st = Stats()
    st._expect_acks = 0
    rooms = ["c%d" % k for k in range(args.rooms)]
    steady = [Steady(url, "steady%d" % i, [r for k, r in enumerate(rooms) if k % args.steady == i])
              for i in range(args.steady)]
    for s in steady:
        await s.start()
    # fill every room's ring (--room-ring messages) so it is at its steady
    # size before the baseline
    t = time.monotonic()
    await asyncio.gather(*[s.prefill(args.room_ring) for s in steady])
    print("prefilled %d rooms with %d messages each in %.1f s" % (args.rooms, args.room_ring,
                                                                  time.monotonic() - t), flush=True)
    res = {"waves": [], "post_wave": []}

    async def run_wave(idx):
        st._expect_acks += args.wave * args.msgs - 0  # acks owed by this wave's churners
        tc, tt = await wave(args, url, srcs, idx, st)
        rss, fds = sampler.now()
        res["waves"].append((tc, tt))
        res["post_wave"].append((rss, fds))
        print("  wave %3d: %d clients connected in %.1f s, wave %.1f s; RSS %d KiB, fds %d" %
              (idx, args.wave, tc, tt, rss, fds), flush=True)

    print("warm-up: %d waves of %d" % (args.warmup_waves, args.wave), flush=True)
    for i in range(args.warmup_waves):
        await run_wave(i)
    await wait_conns(srv, args.steady + 1, 60)  # + the /metrics request itself
    await asyncio.sleep(args.quiet)
    base = [sampler.now() for _ in range(3)]
    res["baseline"] = (max(b[0] for b in base), max(b[1] for b in base))
    res["parts_base"] = soakutil.rss_parts(srv.pid)
    print("baseline: RSS %d KiB, fds %d" % res["baseline"], flush=True)
    st_w = (st.connects, st.acks)
    sampler_mark = len(sampler.samples)
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < args.duration and i < args.max_waves:
        await run_wave(args.warmup_waves + i)
        i += 1
    churn_s = time.monotonic() - t0
    res["churn_waves"] = i
    res["churn_s"] = churn_s
    res["connects"] = st.connects - st_w[0]
    res["msgs"] = st.acks - st_w[1]
    peak = sampler.samples[sampler_mark:] or sampler.samples
    res["peak"] = (max(s[1] for s in peak), max(s[2] for s in peak))
    res["conns_left"] = await wait_conns(srv, args.steady + 1, 60)
    await asyncio.sleep(args.quiet)
    fin = [sampler.now() for _ in range(3)]
    res["final"] = (min(f[0] for f in fin), min(f[1] for f in fin))
    res["parts_final"] = soakutil.rss_parts(srv.pid)
    # the tail: every steady client saw its rooms up to their latest seq
    await asyncio.sleep(1)
    tail_missing = 0
    for s in steady:
        r = await s.rpc({"type": "rooms"}, "rooms")
        latest = {x["id"]: x["seq"] for x in r.get("rooms", [])}
        for room in s.rooms:
            if latest.get(room, 0) != s.last.get(room):
                tail_missing += 1
                st.err("%s: room %s latest seq %s, last seen %s" % (s.name, room, latest.get(room),
                                                                    s.last.get(room)))
    res["tail_missing"] = tail_missing
    res["steady"] = steady
    res["steady_dropped"] = sum(1 for s in steady if s.closed)
    res["st"] = st
    for s in steady:
        await s.ws.close()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600, help="seconds of churn after the warm-up (600)")
    ap.add_argument("--max-waves", type=int, default=1000, help="upper bound on churn waves (1000)")
    ap.add_argument("--wave", type=int, default=2000, help="clients per wave, connected at once (2000)")
    ap.add_argument("--msgs", type=int, default=2, help="messages each churner sends (2)")
    ap.add_argument("--rooms", type=int, default=200, help="churn rooms (200)")
    ap.add_argument("--steady", type=int, default=8, help="steady checking clients (8)")
    ap.add_argument("--warmup-waves", type=int, default=2)
    ap.add_argument("--quiet", type=float, default=5, help="quiet seconds before baseline/final samples (5)")
    ap.add_argument("--sources", type=int, default=4, help="127.0.0.x source addresses (4)")
    ap.add_argument("--connect-concurrency", type=int, default=64)
    ap.add_argument("--fd-slack", type=int, default=4)
    ap.add_argument("--rss-slack-mib", type=float, default=8)
    ap.add_argument("--rss-slack-pct", type=float, default=10)
    ap.add_argument("--half-slack-mib", type=float, default=4,
                    help="RSS growth allowed over the second half of the churn waves (4)")
    ap.add_argument("--room-ring", type=int, default=32,
                    help="server --room-ring; the rings are filled before the warm-up (32)")
    ap.add_argument("--csv", help="write the RSS/fd samples here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    random.seed(os.getpid())

    workdir = soakutil.make_workdir("sori-churn.")
    srv = SoriProcess(workdir, ["--room-ring", str(args.room_ring), "--rate", "1000", "--burst", "2000"])
    ok = False
    try:
        srv.start()
        sampler = Sampler(srv.pid).start()
        t_start = time.monotonic()
        res = asyncio.run(asyncio.wait_for(main_async(args, srv, sampler), args.duration + 900))
        sampler.stop()
        if args.csv:
            sampler.write_csv(args.csv)
        st = res["st"]
        steady = res["steady"]
        base_rss, base_fd = res["baseline"]
        fin_rss, fin_fd = res["final"]
        peak_rss, peak_fd = res["peak"]
        rss_allow = max(args.rss_slack_mib * 1024, base_rss * args.rss_slack_pct / 100.0)
        # a leak grows with every wave; glibc's arenas settle: the second
        # half of the churn must be flat
        churn_pw = [r for r, _ in res["post_wave"][args.warmup_waves:]]
        half = churn_pw[len(churn_pw) // 2:] if len(churn_pw) >= 4 else churn_pw
        growth2 = (max(half) - half[0]) if half else 0
        alive = srv.alive()
        code = srv.stop()
        checks = {
            "fds back to baseline": abs(fin_fd - base_fd) <= args.fd_slack,
            "RSS back to baseline": fin_rss <= base_rss + rss_allow,
            "RSS flat in the 2nd half": growth2 <= args.half_slack_mib * 1024,
            "steady: no gap/dup": sum(s.gaps + s.dups for s in steady) == 0,
            "steady: tail complete": res["tail_missing"] == 0,
            "steady: stayed connected": res["steady_dropped"] == 0,
            "churners: all acks": st.ack_fail == 0,
            "churners: own msgs back": st.echo_fail == 0,
            "connects: none failed": st.connect_fail == 0,
            "server alive, exit 0": alive and code == 0,
        }
        cs = res["churn_s"]
        rows = [
            ("run", "%d warm-up + %d churn waves of %d clients, churn %.0f s (total %.0f s)" %
             (args.warmup_waves, res["churn_waves"], args.wave, cs, time.monotonic() - t_start)),
            ("connects (churn)", "%d (%.1f/s); json %d, deflate %d, stomp %d (whole run)" %
             (res["connects"], res["connects"] / cs if cs else 0, st.kinds["json"], st.kinds["deflate"],
              st.kinds["stomp"])),
            ("leaves", "close %d, fin %d, reset %d" % (st.modes["close"], st.modes["fin"], st.modes["reset"])),
            ("messages acked (churn)", "%d (%.1f/s)" % (res["msgs"], res["msgs"] / cs if cs else 0)),
            ("steady received", "%d (gaps %d, dups %d)" % (sum(s.received for s in steady),
                                                           sum(s.gaps for s in steady),
                                                           sum(s.dups for s in steady))),
            ("connect failures", st.connect_fail, checks["connects: none failed"]),
            ("missing acks / echoes", "%d / %d" % (st.ack_fail, st.echo_fail),
             checks["churners: all acks"] and checks["churners: own msgs back"]),
            ("RSS KiB baseline/peak/final", "%d / %d / %d (allowed final <= %d)" %
             (base_rss, peak_rss, fin_rss, base_rss + rss_allow), checks["RSS back to baseline"]),
            ("fds baseline/peak/final", "%d / %d / %d (slack %d)" % (base_fd, peak_fd, fin_fd, args.fd_slack),
             checks["fds back to baseline"]),
            ("RSS KiB anon/file/shmem", "baseline %s, final %s" % tuple(
                "/".join(str(d.get(k, 0)) for k in ("RssAnon", "RssFile", "RssShmem"))
                for d in (res["parts_base"], res["parts_final"]))),
            ("RSS KiB after each wave", " ".join(str(r) for r, _ in res["post_wave"])),
            ("RSS growth, 2nd half of churn", "%d KiB (allowed %d)" % (growth2, args.half_slack_mib * 1024),
             checks["RSS flat in the 2nd half"]),
            ("server connections left", res["conns_left"]),
        ]
        rows += [(k, "", v) for k, v in checks.items() if k not in
                 ("fds back to baseline", "RSS back to baseline", "connects: none failed",
                  "RSS flat in the 2nd half")]
        table("soak_churn", rows)
        for e in st.errors:
            print("  error:", e)
        ok = all(checks.values())
        if not ok:
            print(srv.stderr_tail(2000))
    finally:
        srv.kill()
        soakutil.remove_workdir(workdir, args.keep)
    print("RESULT soak_churn:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
