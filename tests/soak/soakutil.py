"""soakutil.py: what the soak and chaos scenarios (tests/soak/soak_*.py) share.

- SoriProcess: one `sori serve` on 127.0.0.1 with its own data dir, started
  with --port 0 (or a given port, for restarts on the same port), stopped by
  its PID only (SIGTERM, SIGKILL after a bound), also when a scenario fails
  (Procs.stop_all() in a finally, and atexit).
- Sampler: VmRSS and the number of open fds of a PID, once a second.
- table(): the result table every scenario prints.
- raw WebSocket helpers (handshake, frame building) for the attackers.

Python 3 from Debian (/usr/bin/python3) with python3-websockets 10.4; no PyPI.
Every wait here is bounded.
"""
import asyncio
import atexit
import base64
import json
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SORI_BIN = os.path.abspath(os.environ.get("SORI_BIN", os.path.join(ROOT, "build", "sori")))

# websockets connections aborted on purpose (resets, crashes) leave tasks
# that asyncio reports as "destroyed but pending" when a run ends: noise.
logging.getLogger("asyncio").setLevel(logging.CRITICAL)

_live = []  # every SoriProcess started and not yet stopped


def _stop_live():
    for p in list(_live):
        try:
            p.kill()
        except Exception:
            pass


atexit.register(_stop_live)


def _on_term(signum, frame):
    # `timeout` and Ctrl-C: unwind, so the scenario's finally blocks and
    # atexit stop the servers it started (Python's default SIGTERM would not)
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _on_term)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class SoriProcess:
    """sori serve on 127.0.0.1; data dir and stderr log in `workdir`."""

    def __init__(self, workdir, args=(), port=0, db=None, workers=2, bin=SORI_BIN):
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "data")
        self.args = list(args)
        self.port = port
        self.db = db
        self.workers = workers
        self.bin = bin
        self.proc = None
        self.starts = 0
        os.makedirs(self.data_dir, exist_ok=True)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=30):
        cmd = [self.bin, "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", self.data_dir, "--workers", str(self.workers), "--allow-guests",
               "--log-level", "warn"]
        if self.db:
            cmd += ["--db", self.db]
        cmd += self.args
        self.starts += 1
        err = open(os.path.join(self.workdir, "sori.stderr"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        err.close()
        _live.append(self)
        line = self._readline(timeout)
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            self.kill()
            raise RuntimeError("sori did not start: %r\n%s" % (line, self.stderr_tail()))
        self.port = int(m.group(1))
        # keep draining stdout so the server never blocks on a full pipe
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sori exited %s\n%s" % (self.proc.returncode, self.stderr_tail()))
            try:
                if self.http_status("/healthz") == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("sori did not become healthy within %d s" % timeout)

    def _readline(self, timeout):
        out = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline().decode(errors="replace")),
                             daemon=True)
        t.start()
        t.join(timeout)
        return out[0] if out else ""

    @staticmethod
    def _drain(proc):
        try:
            while proc.stdout.read(4096):
                pass
        except Exception:
            pass

    def http_status(self, path, timeout=3):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path), timeout=timeout) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
        return out

    def stderr_tail(self, n=4000):
        try:
            with open(os.path.join(self.workdir, "sori.stderr"), "rb") as f:
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        """SIGKILL (a crash), by PID; returns once it is gone."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc:
            self.proc.wait(timeout=30)
        if self in _live:
            _live.remove(self)

    def stop(self, timeout=60):
        """SIGTERM by PID; SIGKILL after timeout. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in _live:
            _live.remove(self)
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self in _live:
            _live.remove(self)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_parts(pid):
    """{'RssAnon': KiB, 'RssFile': KiB, 'RssShmem': KiB}: heap and stacks vs
    mapped files (SQLite's WAL index is shared memory)."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return out


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Sampler:
    """Samples VmRSS (KiB) and open fds of pid every `period` seconds in a
    thread: .samples is a list of (t, rss_kib, fds)."""

    def __init__(self, pid, period=1.0):
        self.pid = pid
        self.period = period
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.monotonic()

    def start(self):
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - self.t0, rss_kib(self.pid), fd_count(self.pid)))
            except OSError:
                pass
            self._stop.wait(self.period)

    def now(self):
        return rss_kib(self.pid), fd_count(self.pid)

    def stop(self):
        self._stop.set()
        self._t.join(5)

    def peak(self):
        if not self.samples:
            return 0, 0
        return max(s[1] for s in self.samples), max(s[2] for s in self.samples)

    def write_csv(self, path):
        with open(path, "w") as f:
            f.write("t_s,rss_kib,fds\n")
            for t, r, n in self.samples:
                f.write("%.1f,%d,%d\n" % (t, r, n))


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def table(title, rows):
    """Prints a two-column result table: rows of (name, value, [ok])."""
    print("\n== %s ==" % title)
    w = max(len(r[0]) for r in rows) if rows else 10
    for r in rows:
        mark = ""
        if len(r) > 2 and r[2] is not None:
            mark = "  ok" if r[2] else "  FAIL"
        print("  %-*s  %s%s" % (w, r[0], r[1], mark))
    sys_flush()


def sys_flush():
    import sys
    sys.stdout.flush()


def make_workdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("TMPDIR", "/tmp"))
    return d


def remove_workdir(d, keep=False):
    if not keep:
        shutil.rmtree(d, ignore_errors=True)


def source_addrs(n):
    """n loopback source addresses 127.0.0.2.. (spreads ephemeral ports and
    TIME_WAIT over several 4-tuples spaces)."""
    return ["127.0.0.%d" % (2 + i) for i in range(n)]


# ---- raw WebSocket bytes (for the attackers) ----

def ws_upgrade_request(port, path, protocol=None, extra=b""):
    key = base64.b64encode(os.urandom(16))
    req = (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode() +
           b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
           b"\r\nSec-WebSocket-Version: 13\r\n")
    if protocol:
        req += b"Sec-WebSocket-Protocol: " + protocol.encode() + b"\r\n"
    return req + extra + b"\r\n"


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
    """One frame; length overrides the encoded payload length (lies)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        key = os.urandom(4)
        body = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
        return head + key + body
    return head + payload


def parse_frames(buf):
    """Complete server frames at the start of buf: ([(opcode, payload)], rest)."""
    out = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        n = b1 & 0x7F
        i = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack("!H", buf[2:4])[0]
            i = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack("!Q", buf[2:10])[0]
            i = 10
        if b1 & 0x80:
            i += 4
        if len(buf) < i + n:
            break
        out.append((b0 & 0x0F, bytes(buf[i:i + n])))
        buf = buf[i + n:]
    return out, buf


def close_code(payload):
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def jdump(o):
    return json.dumps(o, separators=(",", ":"))


async def bounded(coro, timeout):
    return await asyncio.wait_for(coro, timeout)
