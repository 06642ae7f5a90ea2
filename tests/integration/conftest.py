"""Integration test harness: starts the real sori binary on a free loopback
port with its own data dir, waits until /healthz answers, and stops it by PID
with SIGTERM at the end, failing the test if the server did not exit 0 within
10 s or printed a sanitizer report (ASan, UBSan, TSan, LSan) on stderr.

The binary is $SORI_BIN (default build/sori), so `make test` runs the same
suite against the release, ASan+UBSan and TSan builds.
"""
import itertools
import os
import re
import signal
import ssl
import subprocess
import tempfile
import time
import http.client

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SORI_BIN = os.path.abspath(os.environ.get("SORI_BIN", os.path.join(ROOT, "build", "sori")))
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "WARNING: ThreadSanitizer",
    "runtime error:",
    "SUMMARY: UndefinedBehaviorSanitizer",
)
# Sanitized builds are slower: scale waits.
SLOW = 3 if os.path.basename(os.path.dirname(SORI_BIN)) in ("asan", "tsan") else 1
# SORI_TEST_VALGRIND=1 (make soak, scripts/soak.sh): every server runs under
# valgrind memcheck (tests/soak/valgrind.supp: third-party noise only), waits
# are 10x longer, and a test fails when its server's valgrind log reports
# errors or definite leaks (see docs/OPERATIONS.md "Soak and chaos tests").
VALGRIND = os.environ.get("SORI_TEST_VALGRIND") == "1"
if VALGRIND:
    SLOW = 10


# Under scripts/pg-test.sh (SORI_STORE_TYPE=postgresql) every server gets a
# fresh PostgreSQL database of its own on that throw-away server, so the whole
# suite runs against the PostgreSQL store as well.
PG = os.environ.get("SORI_STORE_TYPE") == "postgresql"
_pg_dbs = itertools.count(1)
# SORI_TEST_CLUSTER=1 (under scripts/pg-test.sh and scripts/redis-test.sh):
# every server is a cluster node (--redis, a node id unique in the run), so
# the whole suite runs through the cluster's paths: seqs assigned by the
# store, delivery through the relay, state published on the bus.
CLUSTER = os.environ.get("SORI_TEST_CLUSTER") == "1"
_node_ids = itertools.cycle(range(100, 1024))  # --node-id is 0-1023
# SORI_TEST_TLS=1: every server speaks TLS (--tls-cert with a self-signed
# certificate for 127.0.0.1 made once per run) and every client of the
# suite connects with https:// and wss:// trusting it, so the whole suite
# runs through the TLS transport.
TLS = os.environ.get("SORI_TEST_TLS") == "1"
_tls_files = []


def tls_files():
    """(cert, key) of the run's self-signed certificate for 127.0.0.1."""
    if not _tls_files:
        d = tempfile.mkdtemp(prefix="sori-test-tls-")
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
        _tls_files.extend([cert, key])
    return tuple(_tls_files)


def ws_tls(server):
    """Keyword arguments for websockets.connect to this server: its TLS
    context when it speaks TLS."""
    return {"ssl": server.tls_ctx} if server.tls_ctx is not None else {}


def default_tls_ctx():
    """The client context of a SORI_TEST_TLS=1 run, else None (plain)."""
    return ssl.create_default_context(cafile=tls_files()[0]) if TLS else None


def pg_database():
    """A new empty database on the harness's server; its URL."""
    name = "t%d_%d" % (os.getpid(), next(_pg_dbs))
    subprocess.run(["createdb", name], check=True, timeout=30, capture_output=True)
    base = os.environ["SORI_STORE_URL"]
    return base[:base.rindex("/") + 1] + name


def http_request(port, method, path, body=None, headers=None, timeout=5, tls_ctx=None):
    """One HTTP/1.1 request to 127.0.0.1:port (HTTPS with tls_ctx):
    (status, lower-cased headers, body bytes)."""
    if tls_ctx is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout * SLOW, context=tls_ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SLOW)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data
    finally:
        conn.close()


class Server:
    def __init__(self, tmp_path, args, allow_guests=True, db=None):
        self.data_dir = str(tmp_path / "data")
        self.db = db or (pg_database() if PG else None)  # a restart passes its predecessor's
        self.stderr_path = str(tmp_path / "sori.stderr")
        if TLS and "--tls-cert" not in args:
            args = list(args) + ["--tls-cert", tls_files()[0], "--tls-key", tls_files()[1]]
        self.args = args
        self.allow_guests = allow_guests
        self.proc = None
        self.port = None
        self.node_id = "0"  # --node-id
        self.stdout_line = ""
        # --tls-cert FILE: the server speaks TLS only; clients trust FILE
        # (a self-signed certificate for 127.0.0.1) through this context.
        self.tls_ctx = None
        self.tls_cafile = None
        if "--tls-cert" in args:
            self.tls_cafile = args[list(args).index("--tls-cert") + 1]
            self.tls_ctx = ssl.create_default_context(cafile=self.tls_cafile)
        self.port_flag = True  # False: the port comes from a --config file

    def start(self):
        cmd = [SORI_BIN, "serve", "--host", "127.0.0.1"] + (["--port", "0"] if self.port_flag else []) + [
               "--data-dir", self.data_dir, "--workers", "2"]
        if self.allow_guests:
            cmd.append("--allow-guests")
        if self.db:
            cmd += ["--db", self.db]
        if CLUSTER and "--redis" not in self.args:
            self.node_id = str(next(_node_ids))
            cmd += ["--redis", os.environ["SORI_REDIS_URL"], "--node-id", self.node_id]
        cmd += list(self.args)
        if VALGRIND:
            cmd = ["valgrind", "--tool=memcheck", "--error-exitcode=99", "--leak-check=full",
                   "--errors-for-leak-kinds=definite", "--num-callers=30",
                   "--suppressions=" + os.path.join(ROOT, "tests", "soak", "valgrind.supp"),
                   "--log-file=" + os.path.join(os.path.dirname(self.stderr_path), "valgrind.%p.log")] + cmd
        self.stderr = open(self.stderr_path, "ab")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=0")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        line = self.proc.stdout.readline().decode()
        self.stdout_line = line
        m = re.search(r"https?://127\.0\.0\.1:(\d+)/", line)
        if not m:
            self.proc.wait(timeout=5)
            raise RuntimeError("sori did not start: %r\n%s" % (line, self.read_stderr()))
        self.port = int(m.group(1))
        deadline = time.time() + 10 * SLOW
        while time.time() < deadline:
            try:
                status, _, _ = self.http("GET", "/healthz")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("sori did not become healthy")

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls_ctx else "http", self.port)

    @property
    def ws_url(self):
        return "%s://127.0.0.1:%d" % ("wss" if self.tls_ctx else "ws", self.port)

    def http(self, method, path, body=None, headers=None, timeout=5):
        return http_request(self.port, method, path, body, headers, timeout, self.tls_ctx)

    def read_stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def sanitizer_report(self):
        err = self.read_stderr()
        for marker in SANITIZER_MARKERS:
            if marker in err:
                return err
        return None

    def stop(self, sig=signal.SIGTERM, expect_code=0):
        """Stops the server by PID and returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        # Shutdown commits everything acknowledged. After a load run with
        # async durability the backlog can be large, and PostgreSQL commits
        # it at ~16k messages/s (4096-message batches of ~250 ms) where
        # SQLite does ~100k/s: it gets longer to drain.
        limit = (60 if self.db else 10) * SLOW
        try:
            code = self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("sori did not exit within %d s of %s" % (limit, sig))
        if expect_code is not None:
            assert code == expect_code, "sori exited %s\n%s" % (code, self.read_stderr()[-4000:])
        return code

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _finish(server):
    try:
        if server.proc and server.proc.poll() is None:
            server.stop()
    finally:
        server.kill()
        server.stderr.close()
        report = server.sanitizer_report()
        if report:
            pytest.fail("sanitizer report in sori's stderr:\n" + report[-8000:])
        if VALGRIND:
            _valgrind_check(os.path.dirname(server.stderr_path))


def _valgrind_check(d):
    """Fails on a valgrind log in d with errors (a run killed with SIGKILL
    leaves no summary and is not judged)."""
    import glob
    for path in sorted(glob.glob(os.path.join(d, "valgrind.*.log"))):
        with open(path, errors="replace") as f:
            log = f.read()
        m = re.search(r"ERROR SUMMARY: (\d+) errors", log)
        if m and int(m.group(1)) > 0:
            pytest.fail("valgrind: %s errors in %s:\n%s" % (m.group(1), path, log[-12000:]))


def _finish_all(servers):
    """_finish for every server, also when one of them fails: no server
    started by a test outlives it; the first failure is raised at the end."""
    first = None
    for s in servers:
        try:
            _finish(s)
        except BaseException as e:  # noqa: B902 - re-raised below
            first = first or e
    if first:
        raise first


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One guest-mode server shared by a test module."""
    s = Server(tmp_path_factory.mktemp("sori"), []).start()
    yield s
    _finish(s)


@pytest.fixture
def make_server(tmp_path):
    """Factory for servers with their own flags: make_server('--out-limit', '64k')."""
    started = []

    def make(*args, allow_guests=True):
        s = Server(tmp_path / ("s%d" % len(started)), args, allow_guests=allow_guests)
        os.makedirs(tmp_path / ("s%d" % len(started)), exist_ok=True)
        started.append(s)
        return s.start()

    yield make
    _finish_all(started)
