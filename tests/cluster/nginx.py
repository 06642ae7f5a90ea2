"""A real nginx in front of test nodes, configured by deploy/nginx.conf.

    n = Nginx(tmp_path / "nginx", [node_a, node_b]).start()
    n.url, n.ws_url, n.port             # like Server's: chatclient.connect(n, ...) works
    n.http("GET", "/healthz")           # (status, headers, body), like Server.http
    n.stop()

The config is deploy/nginx.conf with two substitutions: the lines between
"#@nodes-begin" and "#@nodes-end" become one `server` line per node (the
parameters of the file's first server line kept), and the line marked
"#@listen" listens on 127.0.0.1 at a free port. Everything else (timeouts,
upgrade headers, least_conn, health checks, body size) is the shipped file.

nginx (/usr/sbin/nginx, $SORI_NGINX) runs in the foreground (-g 'daemon
off;') as the current user with its prefix (-p) in the given directory, so
its pid file, logs and temp files stay there; it never reads /etc/nginx or
touches a system nginx. Run as root, its workers run as root too (`user
root;`): pytest's temp directories are not readable by nobody. stop() sends
SIGTERM (fast shutdown: open WebSockets are cut) to the master by its PID,
kills it and its workers by PID if it has not exited within 10 s, and
fails unless it exited 0 with no worker crashed and no [emerg] logged."""
import os
import re
import signal
import socket
import subprocess
import time

from conftest import SLOW, http_request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY_CONF = os.path.join(ROOT, "deploy", "nginx.conf")
NGINX_BIN = os.environ.get("SORI_NGINX", "/usr/sbin/nginx")


def render(text, servers, listen):
    """deploy/nginx.conf's text with its nodes and listen address replaced;
    servers are "host:port" strings."""
    lines = text.splitlines(keepends=True)
    begin = [i for i, l in enumerate(lines) if l.strip() == "#@nodes-begin"]
    end = [i for i, l in enumerate(lines) if l.strip() == "#@nodes-end"]
    assert len(begin) == 1 and len(end) == 1 and begin[0] < end[0], \
        "deploy/nginx.conf: one #@nodes-begin ... #@nodes-end block expected"
    first = next((l for l in lines[begin[0] + 1:end[0]] if l.strip().startswith("server ")), None)
    m = first and re.match(r"(\s*)server\s+\S+(.*)$", first.rstrip("\n"))
    assert m, "deploy/nginx.conf: no server line between the node markers"
    indent, params = m.group(1), m.group(2)
    nodes = ["%sserver %s%s\n" % (indent, s, params) for s in servers]
    lines[begin[0] + 1:end[0]] = nodes
    marked = [i for i, l in enumerate(lines) if l.rstrip().endswith("#@listen")]
    assert len(marked) == 1, "deploy/nginx.conf: one line marked #@listen expected"
    i = marked[0]
    assert re.match(r"\s*listen\s+\S+;", lines[i]), lines[i]
    lines[i] = re.sub(r"listen\s+\S+;", "listen %s;" % listen, lines[i], count=1)
    return "".join(lines)


def _free_port():
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class Nginx:
    def __init__(self, prefix, nodes):
        self.prefix = str(prefix)
        self.nodes = list(nodes)
        self.proc = None
        self.port = None
        self._log_from = 0

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def ws_url(self):
        return "ws://127.0.0.1:%d" % self.port

    def path(self, name):
        return os.path.join(self.prefix, name)

    def read_log(self, name="error.log"):
        """One of nginx's logs in the prefix (error.log, access.log,
        stderr.log: what it printed before opening its error log)."""
        try:
            with open(self.path(name), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def http(self, method, path, body=None, headers=None, timeout=5):
        return http_request(self.port, method, path, body, headers, timeout)

    def start(self):
        os.makedirs(self.prefix, exist_ok=True)
        with open(DEPLOY_CONF) as f:
            template = f.read()
        servers = ["127.0.0.1:%d" % n.port for n in self.nodes]
        directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
        # The free port can be taken by someone else before nginx binds it:
        # then try another.
        for attempt in range(5):
            self._log_from = len(self.read_log())       # this attempt's part of error.log
            err_from = len(self.read_log("stderr.log"))
            self.port = _free_port()
            conf = self.path("nginx.conf")
            with open(conf, "w") as f:
                f.write(render(template, servers, "127.0.0.1:%d" % self.port))
            self._stderr = open(self.path("stderr.log"), "ab")
            self.proc = subprocess.Popen([NGINX_BIN, "-p", self.prefix + "/", "-c", conf, "-g", directives],
                                         stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr)
            if self._wait_ready():
                return self
            log = self.read_log()[self._log_from:] + self.read_log("stderr.log")[err_from:]
            if self.proc.poll() is not None and "Address already in use" in log and attempt < 4:
                self._stderr.close()
                continue
            try:
                self.stop()
            except AssertionError:
                pass                                    # the error below says more
            self.proc = None                            # stopped: nothing left for stop()
            raise RuntimeError("nginx did not start:\n" + log[-4000:])

    def _wait_ready(self):
        """True once nginx answers /healthz (from a node) with 200; False if
        it exited or did not answer within 10 s."""
        deadline = time.time() + 10 * SLOW
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.http("GET", "/healthz", timeout=2)[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def _children(self):
        """The PIDs of the master's children (its workers)."""
        pid = self.proc.pid
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def stop(self):
        """Stops nginx by its PID (fast shutdown) and checks that it exited
        0 and that no worker crashed; returns the exit code."""
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                workers = self._children()
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10 * SLOW)
                except subprocess.TimeoutExpired:
                    for pid in workers:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    self.proc.kill()
                    self.proc.wait()
                    raise AssertionError("nginx did not exit within %d s of SIGTERM" % (10 * SLOW))
        finally:
            self._stderr.close()
        log = self.read_log()[self._log_from:]
        assert self.proc.returncode == 0 and "exited on signal" not in log and "[emerg]" not in log, \
            "nginx exited %s\n%s" % (self.proc.returncode, (log + self.read_log("stderr.log"))[-4000:])
        return self.proc.returncode
