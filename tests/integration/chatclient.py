"""chatclient.py: a small asyncio client of the JSON protocol (PROTOCOL.md
§2-§4) for the chat integration tests, on python3-websockets 10.4.

    c = await connect(server, "alice")             # guest mode (?user=), waits for hello
    c = await connect(server, token=tok)           # Authorization: Bearer
    r = await c.rpc({"type": "join", "room": "lobby"})   # the reply with our ref
    m = await c.next_event("message")              # buffered or incoming, by type
    await c.no_event("typing", 0.5)                # asserts nothing of that type came
    await c.close()
    run(coro)                                      # asyncio.run with a bound; closes every client

A background task reads every frame into a buffer. rpc() gives each command a
unique ref and returns the frame carrying that ref (a reply or an error);
frames without our ref (events, catch-up messages, replies to other commands)
stay buffered, in arrival order, for next_event(). Every wait has a timeout
(asyncio.TimeoutError); a closed connection raises ConnectionClosed from the
waits once the buffer holds nothing that matches.
"""
import asyncio
import itertools
import json

import websockets

from conftest import SLOW

T = 5 * SLOW  # default bound for one answer
QUIET = 0.4 * SLOW  # how long no_event() callers wait to be sure nothing comes

_refs = itertools.count(1)
_names = itertools.count(1)


def uniq(base):
    """A user or room name no other test of this run uses."""
    return "%s%d" % (base, next(_names))


_open = []  # clients of the running run(), closed when it ends


class ConnectionClosed(Exception):
    pass


class Client:
    def __init__(self, ws, user, hello):
        self.ws = ws
        self.user = user
        self.hello = hello
        self.frames = []            # everything received and not taken yet
        self.log = []               # everything received, in order (never taken)
        self.close_code = None      # set when the connection ended
        self.close_reason = None
        self.closed = False
        self._cond = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())
        _open.append(self)

    async def _read(self):
        try:
            async for raw in self.ws:
                obj = json.loads(raw)
                async with self._cond:
                    self.log.append(obj)
                    self.frames.append(obj)
                    self._cond.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason
            self.closed = True
            async with self._cond:
                self._cond.notify_all()

    async def _take(self, match, timeout):
        """Removes and returns the first buffered frame for which match() is
        true, waiting up to timeout seconds for one to arrive."""
        async def wait():
            async with self._cond:
                while True:
                    for i, f in enumerate(self.frames):
                        if match(f):
                            return self.frames.pop(i)
                    if self.closed:
                        raise ConnectionClosed("%s: connection closed (%s %r)"
                                               % (self.user, self.close_code, self.close_reason))
                    await self._cond.wait()
        return await asyncio.wait_for(wait(), timeout)

    async def send(self, obj):
        """Sends one command (dict) or raw text (str/bytes) without waiting."""
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    async def send_ref(self, cmd):
        """Sends cmd with a fresh ref; returns the ref (to wait with reply())."""
        cmd = dict(cmd)
        ref = cmd.setdefault("ref", "r%d" % next(_refs))
        await self.send(cmd)
        return ref

    async def reply(self, ref, timeout=T):
        return await self._take(lambda f: f.get("ref") == ref, timeout)

    async def rpc(self, cmd, timeout=T):
        """Sends cmd with a unique ref and returns the frame with that ref."""
        return await self.reply(await self.send_ref(cmd), timeout)

    async def ok(self, cmd, want=None, timeout=T):
        """rpc() that asserts the reply is not an error (and of type want)."""
        r = await self.rpc(cmd, timeout)
        assert r["type"] != "error", (self.user, cmd, r)
        if want:
            assert r["type"] == want, (self.user, cmd, r)
        return r

    async def err(self, cmd, code=None, timeout=T):
        """rpc() that asserts an error reply (with that code); returns it."""
        r = await self.rpc(cmd, timeout)
        assert r["type"] == "error", (self.user, cmd, r)
        if code:
            assert r["code"] == code, (self.user, cmd, r)
        return r

    async def next_event(self, type=None, timeout=T, pred=None):
        """The next buffered or incoming frame of that type (any type when
        None) for which pred (if given) is true."""
        return await self._take(lambda f: (type is None or f.get("type") == type)
                                and (pred is None or pred(f)), timeout)

    async def no_event(self, type=None, within=0.5, pred=None):
        """Asserts that no frame of that type (matching pred) arrives within
        `within` seconds (also none already buffered)."""
        try:
            f = await self.next_event(type, within, pred)
        except asyncio.TimeoutError:
            return
        except ConnectionClosed:
            return
        raise AssertionError("%s: unexpected %r" % (self.user, f))

    def index(self, frame):
        """The position of frame (by identity) in the arrival log."""
        for i, f in enumerate(self.log):
            if f is frame:
                return i
        raise ValueError("frame not received: %r" % (frame,))

    def drain(self, type=None):
        """Removes and returns every buffered frame of that type, now."""
        got = [f for f in self.frames if type is None or f.get("type") == type]
        self.frames = [f for f in self.frames if not (type is None or f.get("type") == type)]
        return got

    async def messages(self, n, timeout=T, room=None):
        """The next n `message` frames (of room, if given), in arrival order."""
        out = []
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        for _ in range(n):
            out.append(await self.next_event(
                "message", max(0.01, end - loop.time()),
                pred=(lambda f: f.get("room") == room) if room else None))
        return out

    async def wait_closed(self, timeout=T):
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code, self.close_reason

    async def close(self):
        if self in _open:
            _open.remove(self)
        try:
            await asyncio.wait_for(self.ws.close(), T)
        except Exception:
            pass
        self._reader.cancel()
        try:
            await self._reader
        except BaseException:
            pass


async def connect(server, user=None, token=None, query_token=None, headers=None,
                  timeout=T, **kw):
    """Opens /ws on server as a guest (?user=user), with a Bearer token
    (token=) and/or with ?token= (query_token=), waits for `hello` and
    returns a Client. Raises websockets.InvalidStatusCode when the handshake is
    refused."""
    q = []
    if user is not None:
        q.append("user=" + user)
    if query_token is not None:
        q.append("token=" + query_token)
    url = server.ws_url + "/ws" + ("?" + "&".join(q) if q else "")
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", None)
    kw.setdefault("compression", None)
    kw.setdefault("close_timeout", 1 * SLOW)
    if getattr(server, "tls_ctx", None) is not None:
        kw.setdefault("ssl", server.tls_ctx)  # wss:// to a --tls-cert server
    ws = await asyncio.wait_for(websockets.connect(url, extra_headers=hdrs, open_timeout=timeout, **kw),
                                timeout)
    try:
        hello = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    except BaseException:
        await ws.close()
        raise
    assert hello["type"] == "hello", hello
    return Client(ws, hello["user"], hello)


def run(coro, timeout=10 * SLOW):
    """Runs one test coroutine with an overall bound; every client it opened
    is closed at the end, also when it failed."""
    async def main():
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            while _open:
                await _open.pop().close()
    return asyncio.run(main())
