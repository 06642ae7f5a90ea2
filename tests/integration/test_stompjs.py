"""STOMP with a real client: npm's @stomp/stompjs 7 on Node with `ws`
(tests/node/stomp_driver.mjs, driven line by line from here), against the
same rooms as JSON clients: connect with a token or a login, subscribe,
publish with receipts, a mixed room, direct messages through
/user/queue/messages, negotiated heart-beats, an ERROR, and DISCONNECT on
deactivate. Needs `node` and tests/node/node_modules (scripts/deps.sh)."""
import asyncio
import json
import os
import shutil

import pytest

from chatclient import connect, run, uniq
from conftest import ROOT, SLOW

NODE_DIR = os.path.join(ROOT, "tests", "node")
T = 10 * SLOW



@pytest.fixture(autouse=True)
def _node_installed():
    """Missing node modules fail loudly rather than skip: `make test` must
    run these (scripts/deps.sh installs them)."""
    assert shutil.which("node"), "node is not installed: run scripts/deps.sh"
    assert os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@stomp", "stompjs")), \
        "tests/node/node_modules is missing: run scripts/deps.sh"


class StompJs:
    """One stompjs client in a node process; events are JSON lines."""

    async def start(self, server, connect_headers, query="", hb=(0, 0)):
        opts = {"url": server.ws_url + "/ws" + ("?" + query if query else ""),
                "connectHeaders": connect_headers, "heartbeatIncoming": hb[0], "heartbeatOutgoing": hb[1]}
        self.proc = await asyncio.create_subprocess_exec(
            "node", os.path.join(NODE_DIR, "stomp_driver.mjs"), json.dumps(opts), cwd=NODE_DIR,
            env=dict(os.environ, NODE_EXTRA_CA_CERTS=server.tls_cafile) if server.tls_cafile else None,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self.events = []
        self.log = []
        self._cond = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            ev = json.loads(line)
            async with self._cond:
                self.events.append(ev)
                self.log.append(ev)
                self._cond.notify_all()
        async with self._cond:
            self.events.append({"ev": "eof"})
            self._cond.notify_all()

    async def cmd(self, **c):
        self.proc.stdin.write((json.dumps(c) + "\n").encode())
        await self.proc.stdin.drain()

    async def event(self, ev, pred=None, timeout=T):
        async def wait():
            async with self._cond:
                while True:
                    for i, e in enumerate(self.events):
                        if e["ev"] == ev and (pred is None or pred(e)):
                            return self.events.pop(i)
                        if e["ev"] == "eof" and ev != "eof":
                            stderr = (await self.proc.stderr.read()).decode()
                            raise AssertionError("node ended: %r\n%s" % (self.log, stderr))
                    await self._cond.wait()
        return await asyncio.wait_for(wait(), timeout)

    async def stop(self):
        if self.proc.returncode is None:
            try:
                self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), T)
            except (asyncio.TimeoutError, BrokenPipeError, ConnectionResetError):
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()


def drive(coro_fn):
    """Runs coro_fn(clients) and stops every node process it started."""
    started = []

    async def go():
        async def new(*a, **kw):
            c = await StompJs().start(*a, **kw)
            started.append(c)
            return c
        try:
            await coro_fn(new)
        finally:
            for c in started:
                await c.stop()
    run(go(), timeout=30 * SLOW)


def test_stompjs_mixed_room_with_receipts(server):
    async def go(new):
        owner = await connect(server, uniq("owner"))
        room = uniq("r")
        await owner.ok({"type": "create", "room": room, "kind": "public"})
        name = uniq("sj")
        c = await new(server, {"login": name, "passcode": "guest"})
        con = await c.event("connected")
        assert con["headers"]["version"] == "1.2" and con["headers"]["user-name"] == name
        await c.cmd(op="subscribe", id="sub-0", destination="/topic/room." + room, headers={"receipt": "s"})
        await c.event("receipt", lambda e: e["id"] == "s")
        j = await connect(server, uniq("js"))
        await j.ok({"type": "join", "room": room})
        await c.cmd(op="publish", destination="/app/room." + room, body="hello from stompjs", receipt="p1")
        r = await c.event("receipt", lambda e: e["id"] == "p1")
        assert r["headers"]["seq"] == "1"
        m = await c.event("message")
        assert m["subscription"] == "sub-0" and m["destination"] == "/topic/room." + room
        body = json.loads(m["body"])
        assert body["text"] == "hello from stompjs" and body["from"] == name and body["seq"] == 1
        assert m["headers"]["message-id"] == body["id"]
        jm = await j.next_event("message")
        assert jm["text"] == "hello from stompjs" and jm["id"] == body["id"]
        await j.ok({"type": "send", "room": room, "text": "hello from json"})
        m = await c.event("message")
        assert json.loads(m["body"])["text"] == "hello from json" and m["headers"]["seq"] == "2"
        # JSON body with a cid
        await c.cmd(op="publish", destination="/topic/room." + room,
                    body=json.dumps({"text": "with cid", "cid": "k1"}),
                    headers={"content-type": "application/json"}, receipt="p2")
        await c.event("receipt", lambda e: e["id"] == "p2")
        m = await c.event("message")
        assert json.loads(m["body"])["cid"] == "k1"
    drive(go)


def test_stompjs_token_and_direct_messages(make_server, tmp_path):
    from test_chat_auth import SECRET, mint
    srv = make_server("--secret", SECRET, allow_guests=False)
    tok_bob, tok_ann = mint(tmp_path, "bob"), mint(tmp_path, "ann")

    async def go(new):
        bob = await new(srv, {"Authorization": "Bearer " + tok_bob})
        assert (await bob.event("connected"))["headers"]["user-name"] == "bob"
        await bob.cmd(op="subscribe", id="q", destination="/user/queue/messages", headers={"receipt": "q"})
        await bob.event("receipt", lambda e: e["id"] == "q")
        ann = await connect(srv, token=tok_ann)
        ack = await ann.ok({"type": "dm", "to": "bob", "text": "hi bob"}, "ack")
        m = await bob.event("message")
        assert m["destination"] == "/user/queue/messages" and m["subscription"] == "q"
        assert json.loads(m["body"])["room"] == ack["room"] == "dm:ann:bob"
        await bob.cmd(op="publish", destination="/app/dm.ann", body="hi ann", receipt="d")
        await bob.event("receipt", lambda e: e["id"] == "d")
        got = await ann.next_event("message", pred=lambda f: f["text"] == "hi ann")
        assert got["from"] == "bob"
        # a token in the handshake URL, no credentials in CONNECT
        ann2 = await new(srv, {}, query="token=" + tok_ann)
        assert (await ann2.event("connected"))["headers"]["user-name"] == "ann"
    drive(go)


def test_stompjs_heartbeats(make_server):
    srv = make_server("--stomp-heartbeat-ms", "200")

    async def go(new):
        c = await new(srv, {"login": uniq("hb")}, hb=(200, 200))
        con = await c.event("connected")
        assert con["headers"]["heart-beat"] == "200,200"
        await asyncio.sleep(1.5)
        await c.cmd(op="stats")
        st = await c.event("stats")
        assert st["connected"] and st["pongs"] >= 3, st   # server beats every ~200 ms
        assert not [e for e in c.log if e["ev"] in ("closed", "error")]
    drive(go)


def test_stompjs_error_and_deactivate(server):
    async def go(new):
        owner = await connect(server, uniq("owner"))
        room = uniq("p")
        await owner.ok({"type": "create", "room": room, "kind": "private"})
        c = await new(server, {"login": uniq("sj")})
        await c.event("connected")
        await c.cmd(op="subscribe", id="x", destination="/topic/room." + room)
        e = await c.event("error")
        assert e["headers"]["code"] == "forbidden" and e["body"]
        await c.event("closed")
        # a clean DISCONNECT: stompjs waits for its receipt, then the socket closes normally
        d = await new(server, {"login": uniq("sj")})
        await d.event("connected")
        await d.cmd(op="deactivate")
        closed = await d.event("closed")
        assert closed["code"] == 1000, closed
    drive(go)
