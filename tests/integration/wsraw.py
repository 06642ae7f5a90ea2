"""wsraw.py: a tiny raw HTTP/WebSocket client for byte-exact integration tests.

Everything goes over a plain socket to 127.0.0.1, so a test controls every
byte: the upgrade request (any header added, replaced or dropped), frames with
any opcode, FIN, RSV bits, mask and length encoding (7-, 16- or 64-bit), and
it sees every byte the server sends back. Every read has a deadline: a read
that times out raises TimeoutError, a peer that closed the TCP connection
(EOF or reset) raises Closed. Nothing here answers pings by itself unless a
caller asks for it (recv_message(answer_pings=True)).

    ws = RawWS(port, "/ws?user=alice")          # 101 or AssertionError
    ws.send_frame(OP_TEXT, b"hi", fin=False)
    ws.send_frame(OP_CONT, b"!")
    f = ws.recv_frame()                          # Frame(fin, rsv, opcode, payload, ...)
    code, reason = ws.expect_close()             # the server's close frame
    assert ws.wait_tcp_close()
"""
import base64
import collections
import hashlib
import json
import os
import socket
import struct
import time
import zlib

from conftest import SLOW, default_tls_ctx

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 4, 2, 1  # as the 3-bit RSV field: RSV1 is the high bit

DEFAULT_TIMEOUT = 5.0 * SLOW


class Closed(Exception):
    """The peer closed the TCP connection (EOF or reset)."""


class CloseReceived(Exception):
    """A close frame arrived where a data message was expected."""

    def __init__(self, code, reason):
        super().__init__("close frame %r %r" % (code, reason))
        self.code = code
        self.reason = reason


Frame = collections.namedtuple("Frame", "fin rsv opcode payload length_form")

HTTPResponse = collections.namedtuple("HTTPResponse", "status reason version headers body head")


# ---- bytes in ----

class Reader:
    """A socket plus the bytes read from it but not consumed yet."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def _more(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from the server in time")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from the server in time")
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as e:
            self.eof = True
            raise Closed(str(e))
        if not chunk:
            self.eof = True
            raise Closed("EOF")
        self.buf += chunk

    def read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._more(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until(self, sep, deadline, limit=1 << 20):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i + len(sep)])
                del self.buf[:i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise AssertionError("no %r within %d bytes" % (sep, limit))
            self._more(deadline)

    def read_to_eof(self, deadline):
        while True:
            try:
                self._more(deadline)
            except Closed:
                out = bytes(self.buf)
                self.buf.clear()
                return out


def read_http_response(reader, timeout=DEFAULT_TIMEOUT, head_only=False):
    """Reads one HTTP/1.x response from reader. The body is read by
    Content-Length, or to EOF when there is none; it is empty for HEAD
    (head_only), 1xx, 204 and 304. Bytes after the response stay in reader."""
    deadline = time.monotonic() + timeout
    head = reader.read_until(b"\r\n\r\n", deadline)
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = headers[name] + ", " + value if name in headers else value
    status = int(status)
    body = b""
    if head_only or status < 200 or status in (204, 304):
        pass
    elif "content-length" in headers:
        body = reader.read_exact(int(headers["content-length"]), deadline)
    else:
        body = reader.read_to_eof(deadline)
    return HTTPResponse(status, reason, version, headers, body, head)


def tls_wrap(sock, tls_ctx="auto"):
    """sock, or sock in TLS with tls_ctx; "auto": TLS in a SORI_TEST_TLS=1
    run (conftest.default_tls_ctx), plain otherwise."""
    if tls_ctx == "auto":
        tls_ctx = default_tls_ctx()
    return tls_ctx.wrap_socket(sock, server_hostname="127.0.0.1") if tls_ctx is not None else sock


def http_connect(port, timeout=DEFAULT_TIMEOUT, tls_ctx="auto"):
    """A connected Reader on 127.0.0.1:port."""
    return Reader(tls_wrap(socket.create_connection(("127.0.0.1", port), timeout=timeout), tls_ctx))


def http_raw(port, data, timeout=DEFAULT_TIMEOUT, head_only=False, tls_ctx="auto"):
    """Sends raw request bytes on a new connection and returns (response,
    reader) with the first response read."""
    r = http_connect(port, timeout, tls_ctx)
    r.sock.sendall(data)
    return read_http_response(r, timeout, head_only), r


def wait_tcp_close(reader, timeout=DEFAULT_TIMEOUT):
    """Reads and discards until the peer closes; True if it did in time."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            reader.buf.clear()
            reader._more(deadline)
    except Closed:
        return True
    except TimeoutError:
        return False


# ---- frames ----

def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, mask_key=None, length_form=None):
    """One frame. rsv is the 3-bit field (RSV1 = 4); length_form is 7, 16 or
    64 to force an encoding of the length (None: the shortest)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload)
    if length_form is None:
        length_form = 7 if n <= 125 else 16 if n <= 0xFFFF else 64
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)
    mbit = 0x80 if mask else 0
    if length_form == 7:
        assert n <= 125
        hdr = struct.pack("!BB", b0, mbit | n)
    elif length_form == 16:
        assert n <= 0xFFFF
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return hdr + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return hdr + key + mask_bytes(payload, key)


def mask_bytes(payload, key):
    if not payload:
        return b""
    reps = (len(payload) + 3) // 4
    k = int.from_bytes((key * reps)[:len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(len(payload), "big")


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


def deflate(data, wbits=15):
    """permessage-deflate payload (RFC 7692 §7.2.1): raw deflate, sync
    flushed, without the trailing 00 00 FF FF."""
    c = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(data, wbits=15):
    """The inverse (RFC 7692 §7.2.2): appends 00 00 FF FF and inflates with
    a window of at most 2**wbits bytes."""
    d = zlib.decompressobj(-wbits)
    return d.decompress(data + b"\x00\x00\xff\xff") + d.flush()


class RawWS:
    """A WebSocket client over a raw socket. The constructor performs the
    opening handshake and asserts its status (expect_status=None: any) and,
    on 101, the Sec-WebSocket-Accept value. headers add or replace request
    fields, drop removes default ones; rcvbuf sets SO_RCVBUF before connect
    (a small window makes a slow reader); early is sent right after the
    request, in the same send; tls_ctx (an ssl.SSLContext) speaks TLS to a
    --tls-cert server (default: as the run, see tls_wrap)."""

    def __init__(self, port, path="/ws?user=raw", headers=None, drop=(), method="GET",
                 timeout=DEFAULT_TIMEOUT, expect_status=101, key=None, rcvbuf=None, early=b"",
                 tls_ctx="auto"):
        self.timeout = timeout
        self.key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        sock = tls_wrap(sock, tls_ctx)
        self.sock = sock
        self.reader = Reader(sock)
        fields = [("Host", "127.0.0.1:%d" % port), ("Upgrade", "websocket"),
                  ("Connection", "Upgrade"), ("Sec-WebSocket-Key", self.key),
                  ("Sec-WebSocket-Version", "13")]
        extra = list((headers or {}).items()) if isinstance(headers, dict) else list(headers or [])
        names = {n.lower() for n, _ in extra}
        drop = {d.lower() for d in drop}
        fields = [(n, v) for n, v in fields if n.lower() not in names and n.lower() not in drop]
        fields += extra
        req = "%s %s HTTP/1.1\r\n" % (method, path)
        req += "".join("%s: %s\r\n" % f for f in fields) + "\r\n"
        sock.sendall(req.encode("latin-1") + early)  # early: frames in the same send
        self.response = read_http_response(self.reader, timeout)
        if expect_status is not None:
            assert self.response.status == expect_status, self.response
        if self.response.status == 101:
            assert self.response.headers.get("sec-websocket-accept") == accept_for(self.key), \
                self.response

    @property
    def headers(self):
        return self.response.headers

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- sending --

    def send_raw(self, data):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", fin=True, rsv=0, mask=True, length_form=None):
        self.send_raw(build_frame(opcode, payload, fin, rsv, mask, None, length_form))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def send_binary(self, data):
        self.send_frame(OP_BINARY, data)

    def send_ping(self, payload=b""):
        self.send_frame(OP_PING, payload)

    def send_close(self, code=None, reason=b""):
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    # -- receiving --

    def recv_frame(self, timeout=None):
        """The next frame from the server (which must not mask it)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        b0, b1 = self.reader.read_exact(2, deadline)
        assert not (b1 & 0x80), "the server masked a frame (RFC 6455 §5.1)"
        n = b1 & 0x7F
        form = 7
        if n == 126:
            (n,) = struct.unpack("!H", self.reader.read_exact(2, deadline))
            form = 16
        elif n == 127:
            (n,) = struct.unpack("!Q", self.reader.read_exact(8, deadline))
            form = 64
        payload = self.reader.read_exact(n, deadline)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload, form)

    def recv_message(self, timeout=None, answer_pings=False, inflate_wbits=None):
        """The next data message as (opcode, payload), reassembled from
        fragments; pings and pongs are skipped (pings answered when
        answer_pings). RSV1 messages are inflated when inflate_wbits is set.
        A close frame raises CloseReceived."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        op, parts, compressed = None, [], False
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if f.opcode == OP_CLOSE:
                code, reason = parse_close(f.payload)
                raise CloseReceived(code, reason)
            if f.opcode == OP_PING:
                if answer_pings:
                    self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            if op is None:
                assert f.opcode in (OP_TEXT, OP_BINARY), f
                op, compressed = f.opcode, bool(f.rsv & RSV1)
            else:
                assert f.opcode == OP_CONT, f
            parts.append(f.payload)
            if f.fin:
                data = b"".join(parts)
                if compressed:
                    assert inflate_wbits, "RSV1 message without deflate"
                    data = inflate(data, inflate_wbits)
                return op, data

    def recv_json(self, timeout=None, answer_pings=False):
        op, data = self.recv_message(timeout, answer_pings)
        assert op == OP_TEXT, (op, data)
        return json.loads(data.decode())

    def expect_close(self, timeout=None):
        """Reads frames until the server's close frame; returns (code,
        reason) with code None for an empty close. Raises Closed when TCP
        closes first, TimeoutError when nothing comes."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if f.opcode == OP_CLOSE:
                return parse_close(f.payload)

    def wait_tcp_close(self, timeout=None):
        return wait_tcp_close(self.reader, timeout if timeout is not None else self.timeout)


def parse_close(payload):
    if not payload:
        return None, b""
    assert len(payload) >= 2, "a 1-byte close payload from the server"
    return struct.unpack("!H", payload[:2])[0], payload[2:]
