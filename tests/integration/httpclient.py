"""HTTP helpers shared by the REST tests and the nginx tests: one request
with a JSON body or raw bytes and an optional bearer token, a signup, and a
small valid PNG (http.client underneath: Server.http / Nginx.http)."""
import json
import struct
import zlib

from chatclient import uniq


def call(target, method, path, body=None, token=None, headers=None, raw=None, timeout=10):
    """One request to a node or to nginx: (status, headers, the JSON body, or
    the bytes when the body is not JSON)."""
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    status, hdrs, out = target.http(method, path, body=data, headers=h, timeout=timeout)
    try:
        j = json.loads(out) if out and hdrs.get("content-type", "").startswith("application/json") else None
    except ValueError:
        j = None
    return status, hdrs, j if j is not None else out


def signup(target, name=None, password="correct horse"):
    name = name or uniq("u")
    st, _, b = call(target, "POST", "/api/signup", {"name": name, "password": password})
    assert st == 201, b
    return name, b["token"]


def png(extra=b""):
    """A valid 1x1 PNG (plus bytes in a text chunk, to make it unique or large)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\0\0\0")) +
            chunk(b"tEXt", b"c\0" + extra) + chunk(b"IEND", b""))
