#!/usr/bin/python3
"""soak_crash.py: kill -9 and restart loops under traffic; zero acked
messages lost.

--senders clients (one user each) send continuously into one room, each
with up to --window sends in flight, every send with a cid (`<user>-<n>`)
used as its ref, and record every ack (cid -> seq, id). The scenario kills
the server with SIGKILL (by its PID) at a random moment every
--min-gap..--max-gap seconds, restarts it on the same data dir (and
database) and port, --cycles times. Clients reconnect (bounded backoff),
re-join, and resend every unacked cid with the same cid: a message that
was committed before the crash comes back with its first ack
(idempotency), one that was not is stored now; each reconnect also
repeats the last acked send, whose ack must be the first one. After the last cycle the
senders stop, resend until every cid is acked (bounded), and a fresh
client pages the room's whole history. Asserted:
  - every acked cid is in the history exactly once, with its acked seq and id
  - an ack repeated for a cid (a resend) carried the same seq and id
  - the history's seqs are 1..N, strictly increasing, gapless, and hold
    no message besides the senders'
  - the server restarted every time; none of the senders gave up

Stores (--store):
  sqlite      one node, SQLite in the data dir, --durability sync (default)
  postgresql  one node on a fresh database of the PostgreSQL given by
              SORI_STORE_URL (run under scripts/pg-test.sh)
  cluster     two nodes (--redis SORI_REDIS_URL, one fresh PostgreSQL
              database; run under scripts/pg-test.sh scripts/redis-test.sh);
              the kills alternate between the nodes, clients fail over to
              the other node

    soak_crash.py --cycles 20                       # make soak
    scripts/pg-test.sh /usr/bin/python3 tests/soak/soak_crash.py --store postgresql --cycles 5
"""
import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soakutil  # noqa: E402
from soakutil import SoriProcess, table  # noqa: E402

ROOM = "crashroom"


class Sender:
    def __init__(self, name, nodes, window, st):
        self.name = name
        self.nodes = nodes            # list of SoriProcess; tried in turn
        self.window = window
        self.st = st
        self.n = 0                    # next cid number
        self.unacked = {}             # cid -> text (sent, no ack yet)
        self.acked = {}               # cid -> (seq, id)
        self.mismatch = []            # cids whose repeated ack differed
        self.reconnects = 0
        self.resent = 0               # sends repeated with the same cid after a reconnect
        self.repeat_acks = 0          # acks for a cid already acked (the idempotent path)
        self.errors = {}
        self.gave_up = False
        self.stop_new = False
        self.node_i = 0

    async def connect(self, deadline):
        while time.monotonic() < deadline:
            node = self.nodes[self.node_i % len(self.nodes)]
            self.node_i += 1
            try:
                ws = await asyncio.wait_for(websockets.connect(
                    "ws://127.0.0.1:%d/ws?user=%s" % (node.port, self.name), compression=None,
                    ping_interval=None, max_size=None, open_timeout=5, close_timeout=1), 6)
                hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert hello["type"] == "hello"
                await ws.send(json.dumps({"type": "create", "room": ROOM, "kind": "public", "ref": "c"}))
                await ws.send(json.dumps({"type": "join", "room": ROOM, "ref": "j"}))
                while True:
                    f = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if f.get("ref") == "j":
                        if f["type"] != "joined":
                            raise RuntimeError("join: %r" % f)
                        return ws
            except Exception:
                await asyncio.sleep(0.1 + random.random() * 0.2)
        return None

    def on_ack(self, f):
        cid = f["ref"]
        got = (f["seq"], f["id"])
        if cid in self.acked:
            self.repeat_acks += 1
            if self.acked[cid] != got:
                self.mismatch.append((cid, self.acked[cid], got))
        else:
            self.acked[cid] = got
        self.unacked.pop(cid, None)

    async def session(self, ws):
        """Sends until the connection drops (or, with stop_new, until all
        is acked). Returns True when everything is acked and stop_new."""
        inflight = set()
        # after a reconnect, repeat the last acked send (same cid): its ack
        # must be the first one, from the store of a restarted server
        if self.acked and self.reconnects:
            cid = max(self.acked, key=lambda c: int(c.rsplit("-", 1)[1]))
            await ws.send(json.dumps({"type": "send", "room": ROOM, "cid": cid, "ref": cid, "text": "m %s" % cid}))
            inflight.add(cid)
        # resend what a crash left unacked, same cid
        for cid in sorted(self.unacked, key=lambda c: int(c.rsplit("-", 1)[1])):
            await ws.send(json.dumps({"type": "send", "room": ROOM, "cid": cid, "ref": cid,
                                      "text": self.unacked[cid]}))
            inflight.add(cid)
            self.resent += 1
        while True:
            while not self.stop_new and len(inflight) < self.window:
                cid = "%s-%d" % (self.name, self.n)
                self.n += 1
                text = "m %s" % cid
                self.unacked[cid] = text
                await ws.send(json.dumps({"type": "send", "room": ROOM, "cid": cid, "ref": cid, "text": text}))
                inflight.add(cid)
            if self.stop_new and not self.unacked:
                return True
            f = json.loads(await asyncio.wait_for(ws.recv(), 15))
            t = f.get("type")
            if t == "ack":
                self.on_ack(f)
                inflight.discard(f["ref"])
            elif t == "error":
                code = f.get("code")
                self.errors[code] = self.errors.get(code, 0) + 1
                cid = f.get("ref")
                inflight.discard(cid)
                if cid in self.unacked:
                    await asyncio.sleep(0.05)
                    await ws.send(json.dumps({"type": "send", "room": ROOM, "cid": cid, "ref": cid,
                                              "text": self.unacked[cid]}))
                    inflight.add(cid)

    async def run(self, end_deadline):
        while time.monotonic() < end_deadline:
            ws = await self.connect(end_deadline)
            if ws is None:
                break
            try:
                if await self.session(ws):
                    await ws.close()
                    return
            except (websockets.ConnectionClosed, asyncio.TimeoutError, OSError):
                pass
            finally:
                ws.transport.abort()
            self.reconnects += 1
            await asyncio.sleep(0.05)
        self.gave_up = True


async def fetch_history(node):
    ws = await websockets.connect("ws://127.0.0.1:%d/ws?user=auditor" % node.port, compression=None,
                                  ping_interval=None, max_size=None)
    json.loads(await ws.recv())
    out = []
    after = 0
    i = 0
    while True:
        i += 1
        await ws.send(json.dumps({"type": "history", "room": ROOM, "after": after, "limit": 100, "ref": "h%d" % i}))
        while True:
            f = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if f.get("ref") == "h%d" % i:
                break
        if f["type"] != "history":
            raise RuntimeError("history: %r" % f)
        out += f["messages"]
        if not f["messages"] or not f.get("has_more"):
            break
        after = f["messages"][-1]["seq"]
    await ws.close()
    return out


def restart(node, tries=20):
    for i in range(tries):
        try:
            return node.start()
        except RuntimeError:
            node.kill()
            time.sleep(0.25)
    raise RuntimeError("could not restart on port %d:\n%s" % (node.port, node.stderr_tail()))


async def main_async(args, nodes, st):
    senders = [Sender("crash%d" % i, nodes[i % len(nodes):] + nodes[:i % len(nodes)], args.window, st)
               for i in range(args.senders)]
    end = time.monotonic() + args.cycles * (args.max_gap + 30) + 120
    tasks = [asyncio.ensure_future(s.run(end)) for s in senders]
    loop = asyncio.get_running_loop()
    kills = []
    for c in range(args.cycles):
        await asyncio.sleep(random.uniform(args.min_gap, args.max_gap))
        node = nodes[c % len(nodes)]
        acked_before = sum(len(s.acked) for s in senders)
        t = time.monotonic()
        node.kill9()
        await asyncio.sleep(random.uniform(0, args.down_max))
        await loop.run_in_executor(None, restart, node)
        kills.append((acked_before, time.monotonic() - t))
        print("  cycle %2d: killed node %d (pid gone) with %d acked so far; back in %.2f s" %
              (c + 1, c % len(nodes) + 1, acked_before, kills[-1][1]), flush=True)
    await asyncio.sleep(args.tail)
    for s in senders:
        s.stop_new = True
    await asyncio.wait_for(asyncio.gather(*tasks), 180)
    hist = await fetch_history(nodes[0])
    return senders, hist, kills


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=20, help="kill -9 / restart cycles (20)")
    ap.add_argument("--store", choices=["sqlite", "postgresql", "cluster"], default="sqlite")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--window", type=int, default=8, help="sends in flight per sender (8)")
    ap.add_argument("--min-gap", type=float, default=0.5, help="shortest run between kills, s (0.5)")
    ap.add_argument("--max-gap", type=float, default=3.0, help="longest run between kills, s (3)")
    ap.add_argument("--down-max", type=float, default=0.5, help="longest pause before the restart, s (0.5)")
    ap.add_argument("--tail", type=float, default=2.0, help="traffic after the last restart, s (2)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    db = None
    extra = []
    if args.store in ("postgresql", "cluster"):
        base = os.environ.get("SORI_STORE_URL")
        if not base:
            print("--store %s: run under scripts/pg-test.sh (no SORI_STORE_URL)" % args.store)
            return 2
        name = "crash%d_%d" % (os.getpid(), int(time.time()))
        subprocess.run(["createdb", name], check=True, timeout=30, capture_output=True)
        db = base[:base.rindex("/") + 1] + name
    if args.store == "cluster":
        if not os.environ.get("SORI_REDIS_URL"):
            print("--store cluster: run under scripts/redis-test.sh too (no SORI_REDIS_URL)")
            return 2
    workdir = soakutil.make_workdir("sori-crash.")
    nodes = []
    ok = False
    try:
        n_nodes = 2 if args.store == "cluster" else 1
        for i in range(n_nodes):
            a = list(extra) + ["--rate", "1000", "--burst", "2000"]
            if args.store == "cluster":
                a += ["--redis", os.environ["SORI_REDIS_URL"], "--node-id", str(900 + i)]
            nodes.append(SoriProcess(os.path.join(workdir, "node%d" % (i + 1)), a, db=db).start())
        t0 = time.monotonic()
        senders, hist, kills = asyncio.run(main_async(args, nodes, None))
        elapsed = time.monotonic() - t0
        alive = all(n.alive() for n in nodes)
        codes = [n.stop() for n in nodes]

        acked = {}
        mism = []
        for s in senders:
            acked.update(s.acked)
            mism += s.mismatch
        seqs = [m["seq"] for m in hist]
        by_cid = {}
        foreign = 0
        for m in hist:
            cid = m.get("cid")
            if cid is None or not cid.startswith("crash"):
                foreign += 1
                continue
            by_cid.setdefault(cid, []).append(m)
        lost = [c for c in acked if c not in by_cid]
        dup = [c for c, ms in by_cid.items() if len(ms) > 1]
        wrong = [c for c in acked if c in by_cid and (by_cid[c][0]["seq"], by_cid[c][0]["id"]) != acked[c]]
        unacked_stored = [c for c in by_cid if c not in acked]
        gapless = seqs == list(range(1, len(seqs) + 1))
        checks = {
            "zero acked messages lost": not lost,
            "no cid stored twice": not dup,
            "history seq/id == acked seq/id": not wrong,
            "repeated acks identical": not mism,
            "seqs 1..N gapless, increasing": gapless,
            "no unacked/foreign message in history": not unacked_stored and foreign == 0,
            "no sender gave up": not any(s.gave_up for s in senders),
            "nodes alive, exit 0": alive and all(c == 0 for c in codes),
        }
        errs = {}
        for s in senders:
            for k, v in s.errors.items():
                errs[k] = errs.get(k, 0) + v
        rows = [
            ("run", "%s, %d node(s), %d kill -9 cycles, %d senders x window %d, %.0f s" %
             (args.store, n_nodes, len(kills), args.senders, args.window, elapsed)),
            ("acked messages", "%d (%.0f/s)" % (len(acked), len(acked) / elapsed)),
            ("history", "%d messages, seq 1..%s" % (len(hist), seqs[-1] if seqs else 0)),
            ("restart time s (mean/max)", "%.2f / %.2f" % (sum(k[1] for k in kills) / max(1, len(kills)),
                                                         max([k[1] for k in kills] or [0]))),
            ("reconnects", sum(s.reconnects for s in senders)),
            ("unacked resent after reconnect / repeated acks (incl. 1 probe per reconnect)",
             "%d / %d" % (sum(s.resent for s in senders), sum(s.repeat_acks for s in senders))),
            ("error replies", errs or "none"),
            ("lost / duplicated / wrong seq", "%d / %d / %d" % (len(lost), len(dup), len(wrong))),
        ]
        rows += [(k, "", v) for k, v in checks.items()]
        table("soak_crash (%s)" % args.store, rows)
        for what, lst in (("lost", lost), ("dup", dup), ("wrong", wrong), ("mismatch", mism)):
            if lst:
                print("  %s: %r" % (what, lst[:10]))
        ok = all(checks.values())
        if not ok:
            for n in nodes:
                print(n.stderr_tail(2000))
    finally:
        for n in nodes:
            n.kill()
        soakutil.remove_workdir(workdir, args.keep)
    print("RESULT soak_crash (%s):" % args.store, "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
