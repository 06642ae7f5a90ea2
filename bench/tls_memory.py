#!/usr/bin/python3
"""bench/tls_memory.py: bytes of server memory per idle WebSocket, plain
against TLS, measured in the same run (docs/BENCHMARKS.md "TLS").

For each round and each transport it starts build/sori (one worker, guests,
a throw-away data dir; TLS with a self-signed P-256 certificate made by the
openssl command), opens --conns WebSockets on /ws?user=uN (each its own
user; the TLS ones complete the handshake and the upgrade), waits for every
hello, lets the server settle, and reads its VmRSS. Bytes per idle
connection = (RSS with the connections - RSS with one) / connections. The
clients are Python sockets on 127.0.0.1; the server is stopped by PID.

    /usr/bin/python3 bench/tls_memory.py [--conns 4000] [--rounds 3] [--bin build/sori]
"""
import argparse
import base64
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def ws_open(port, user, ctx):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if ctx:
        s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws?user=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % (user, key)).encode())
    data = b""
    while b"\r\n\r\n" not in data or b'"hello"' not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the upgrade: %r" % data)
        data += chunk
    assert data.startswith(b"HTTP/1.1 101"), data[:100]
    return s


def one(binary, tls, conns, certdir):
    d = tempfile.mkdtemp(prefix="sori-tlsmem-")
    cmd = [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", d, "--workers", "1",
           "--allow-guests", "--log-level", "warn", "--max-connections", str(conns + 100)]
    ctx = None
    if tls:
        cmd += ["--tls-cert", os.path.join(certdir, "c.pem"), "--tls-key", os.path.join(certdir, "k.pem")]
        ctx = ssl.create_default_context(cafile=os.path.join(certdir, "c.pem"))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    socks = []
    try:
        m = re.search(r"https?://127\.0\.0\.1:(\d+)/", p.stdout.readline().decode())
        port = int(m.group(1))
        socks.append(ws_open(port, "warm", ctx))
        time.sleep(0.5)
        base = rss(p.pid)
        t0 = time.monotonic()
        for i in range(conns):
            socks.append(ws_open(port, "u%d" % i, ctx))
        took = time.monotonic() - t0
        time.sleep(1.0)
        after = rss(p.pid)
        return {"base": base, "after": after, "per_conn": (after - base) / conns, "connects_s": conns / took}
    finally:
        for s in socks:
            s.close()
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "sori"))
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.conns + 200 > hard:
        sys.exit("--conns %d needs more open files than the limit (%d)" % (a.conns, hard))
    certdir = tempfile.mkdtemp(prefix="sori-tlsmem-cert-")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", os.path.join(certdir, "k.pem"), "-out", os.path.join(certdir, "c.pem"),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    res = {"plain": [], "tls": []}
    try:
        for r in range(a.rounds):
            for mode in (("plain", "tls") if r % 2 == 0 else ("tls", "plain")):
                x = one(a.bin, mode == "tls", a.conns, certdir)
                res[mode].append(x)
                print("round %d %-5s %6.0f bytes/conn  (RSS %.1f -> %.1f MB, %.0f connects/s)"
                      % (r + 1, mode, x["per_conn"], x["base"] / 1e6, x["after"] / 1e6, x["connects_s"]),
                      flush=True)
    finally:
        shutil.rmtree(certdir, ignore_errors=True)
    med = {k: statistics.median(x["per_conn"] for x in v) for k, v in res.items()}
    print()
    print("| transport | idle connections | bytes per idle connection (median of %d) | connects/s (Python client) |"
          % a.rounds)
    print("|---|---|---|---|")
    for k in ("plain", "tls"):
        print("| %s | %d | %.0f | %.0f |" % (k, a.conns, med[k],
                                             statistics.median(x["connects_s"] for x in res[k])))
    print()
    print("TLS costs %.0f bytes more per idle connection (%.2fx plain)" % (med["tls"] - med["plain"],
                                                                          med["tls"] / med["plain"]))


if __name__ == "__main__":
    main()
