"""stompclient.py: a raw STOMP 1.0-1.2 client over WebSocket for the STOMP
integration tests (PROTOCOL.md §6), written from the STOMP spec on
python3-websockets; independent of the server's parser.

    c = await open_ws(server, protocols=["v12.stomp"])     # just the socket
    connected = await c.connect(login="alice")              # CONNECT -> CONNECTED
    await c.send_frame("SUBSCRIBE", {"id": "s1", "destination": "/topic/room.x", "receipt": "r1"})
    r = await c.frame("RECEIPT")                            # buffered or incoming
    await c.raw(b"SEND\\n...")                               # bytes as one WebSocket message

A background task reads every WebSocket message, counts heart-beats (EOLs
between frames) and splits frames (content-length or NUL), so frames split
across messages or several per message are handled. Frames are dicts:
{"command", "headers" (first of repeated wins), "all" (list of pairs),
"body" (bytes), "json" (body parsed when content-type is JSON)}.
"""
import asyncio
import json
import time

import websockets

from conftest import SLOW

T = 5 * SLOW


class ConnectionClosed(Exception):
    pass


def _unescape(s, version):
    if version == "1.0":
        return s
    out, i = [], 0
    table = {"\\": "\\", "n": "\n", "c": ":", "r": "\r"}
    while i < len(s):
        if s[i] == "\\":
            out.append(table[s[i + 1]])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def escape(s, version="1.2"):
    if version == "1.0":
        return s
    s = s.replace("\\", "\\\\").replace("\n", "\\n").replace(":", "\\c")
    return s.replace("\r", "\\r") if version == "1.2" else s


def encode(command, headers=(), body=b"", version="1.2", content_length=True):
    """A frame as bytes; headers a dict or a list of pairs."""
    if isinstance(body, str):
        body = body.encode()
    items = headers.items() if isinstance(headers, dict) else headers
    esc = command not in ("CONNECT", "STOMP")
    lines = [command]
    for k, v in items:
        lines.append("%s:%s" % (escape(k, version) if esc else k, escape(str(v), version) if esc else v))
    if content_length and body and not any(k == "content-length" for k, _ in items):
        lines.append("content-length:%d" % len(body))
    return ("\n".join(lines) + "\n\n").encode() + body + b"\0"


class StompClient:
    def __init__(self, ws):
        self.ws = ws
        self.version = "1.2"
        self.buf = b""
        self.frames = []
        self.log = []
        self.heartbeats = 0
        self.heartbeat_times = []
        self.messages_received = 0
        self.closed = False
        self.close_code = None
        self.close_reason = None
        self._cond = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())

    def _parse(self):
        out = []
        while True:
            while self.buf[:1] == b"\n" or self.buf[:2] == b"\r\n":
                self.buf = self.buf[1:] if self.buf[:1] == b"\n" else self.buf[2:]
                self.heartbeats += 1
                self.heartbeat_times.append(time.monotonic())
            end = self.buf.find(b"\n\n")
            if end < 0:
                return out
            head = self.buf[:end].decode().replace("\r\n", "\n").split("\n")
            command, pairs = head[0], []
            for line in head[1:]:
                k, _, v = line.partition(":")
                if command != "CONNECTED":
                    k, v = _unescape(k, self.version), _unescape(v, self.version)
                pairs.append((k, v))
            headers = {}
            for k, v in pairs:
                headers.setdefault(k, v)
            start = end + 2
            if "content-length" in headers:
                n = int(headers["content-length"])
                if len(self.buf) < start + n + 1:
                    return out
                body = self.buf[start:start + n]
                assert self.buf[start + n:start + n + 1] == b"\0", "no NUL after content-length bytes"
                self.buf = self.buf[start + n + 1:]
            else:
                nul = self.buf.find(b"\0", start)
                if nul < 0:
                    return out
                body = self.buf[start:nul]
                self.buf = self.buf[nul + 1:]
            f = {"command": command, "headers": headers, "all": pairs, "body": body}
            if headers.get("content-type", "").startswith("application/json"):
                f["json"] = json.loads(body)
            if command == "CONNECTED":
                self.version = headers.get("version", "1.0")
            out.append(f)

    async def _read(self):
        try:
            async for raw in self.ws:
                self.messages_received += 1
                self.buf += raw if isinstance(raw, bytes) else raw.encode()
                got = self._parse()
                async with self._cond:
                    self.log.extend(got)
                    self.frames.extend(got)
                    self._cond.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason
            self.closed = True
            async with self._cond:
                self._cond.notify_all()

    async def raw(self, data):
        """Sends data (bytes or str) as one WebSocket message."""
        await self.ws.send(data)

    async def send_frame(self, command, headers=(), body=b"", **kw):
        await self.ws.send(encode(command, headers, body, self.version, **kw).decode())

    async def frame(self, command=None, timeout=T, pred=None):
        """Removes and returns the first buffered or incoming frame of that
        command (any when None) matching pred."""
        def match(f):
            return (command is None or f["command"] == command) and (pred is None or pred(f))

        async def wait():
            async with self._cond:
                while True:
                    for i, f in enumerate(self.frames):
                        if match(f):
                            return self.frames.pop(i)
                    if self.closed:
                        raise ConnectionClosed("closed (%s %r); buffered: %r"
                                               % (self.close_code, self.close_reason, self.frames))
                    await self._cond.wait()
        return await asyncio.wait_for(wait(), timeout)

    async def no_frame(self, command=None, within=0.5):
        try:
            f = await self.frame(command, within)
        except (asyncio.TimeoutError, ConnectionClosed):
            return
        raise AssertionError("unexpected frame %r" % (f,))

    async def messages(self, n, timeout=T, dest=None):
        out = []
        for _ in range(n):
            out.append(await self.frame("MESSAGE", timeout,
                                        (lambda f: f["headers"]["destination"] == dest) if dest else None))
        return out

    async def connect(self, login=None, passcode=None, accept="1.0,1.1,1.2", heart_beat="0,0", headers=None,
                      command="CONNECT"):
        h = [("accept-version", accept), ("host", "localhost"), ("heart-beat", heart_beat)]
        if login is not None:
            h.append(("login", login))
        if passcode is not None:
            h.append(("passcode", passcode))
        h += list((headers or {}).items())
        await self.ws.send(encode(command, h).decode())
        f = await self.frame()
        assert f["command"] == "CONNECTED", f
        return f

    async def error_and_close(self, timeout=T):
        """The ERROR frame, then asserts the connection closes."""
        f = await self.frame("ERROR", timeout)
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        assert self.closed
        return f

    async def wait_closed(self, timeout=T):
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code, self.close_reason

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), T)
        except Exception:
            pass
        self._reader.cancel()
        try:
            await self._reader
        except BaseException:
            pass


async def open_ws(server, protocols=("v12.stomp", "v11.stomp", "v10.stomp"), query="", headers=None,
                  compression=None):
    url = server.ws_url + "/ws" + ("?" + query if query else "")
    ws = await asyncio.wait_for(websockets.connect(
        url, subprotocols=list(protocols), extra_headers=headers or {}, ping_interval=None,
        max_size=None, compression=compression, close_timeout=1 * SLOW,
        **({"ssl": server.tls_ctx} if getattr(server, "tls_ctx", None) is not None else {})), T)
    c = StompClient(ws)
    import chatclient
    chatclient._open.append(c)  # closed by chatclient.run() at the end
    return c


async def stomp(server, user, heart_beat="0,0", **kw):
    """A connected client for guest `user`."""
    c = await open_ws(server, **kw)
    await c.connect(login=user, heart_beat=heart_beat)
    return c
