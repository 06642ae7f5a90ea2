"""The `sori` command line: subcommands, flag and config-file errors (exit 2
with one line naming the culprit), config files, and the generated secret."""
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from conftest import SANITIZER_MARKERS, SLOW, SORI_BIN
from wsraw import RawWS, http_raw



def sori(*args, cwd=None, env=None, timeout=10 * SLOW):
    e = dict(os.environ)
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    e.update(env or {})
    p = subprocess.run([SORI_BIN] + list(args), cwd=cwd, env=e, capture_output=True,
                       timeout=timeout)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    for marker in SANITIZER_MARKERS:
        assert marker not in err, err
    return p.returncode, out, err


def one_line(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    return lines[0]


class Proc:
    """`sori serve` started without the harness's fixed flags."""

    def __init__(self, args, tmp_path, env=None):
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        e.update(env or {})
        self.err_path = str(tmp_path / "serve.stderr")
        self.err = open(self.err_path, "ab")
        self.p = subprocess.Popen([SORI_BIN, "serve"] + list(args), stdout=subprocess.PIPE,
                                  stderr=self.err, env=e, cwd=str(tmp_path))
        line = self.p.stdout.readline().decode()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            self.p.kill()
            self.p.wait()
            raise AssertionError("sori did not start: %r\n%s" % (line, self.stderr()))
        self.port = int(m.group(1))
        deadline = time.monotonic() + 10 * SLOW
        while True:
            try:
                resp, r = http_raw(self.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", tls_ctx=None)
                r.sock.close()
                if resp.status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "sori did not become healthy"
            time.sleep(0.02)

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            code = self.p.wait(timeout=10 * SLOW)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError("sori did not exit within 10 s of SIGTERM")
        finally:
            self.err.close()
        err = self.stderr()
        for marker in SANITIZER_MARKERS:
            assert marker not in err, err
        return code


def test_version():
    for arg in ("version", "--version"):
        code, out, _ = sori(arg)
        assert code == 0
        assert re.fullmatch(r"sori \d+\.\d+\.\d+\S*\n", out), out


def test_help_lists_flags():
    code, out, _ = sori("help")
    assert code == 0
    assert "sori serve" in out
    for flag in ("--port", "--host", "--data-dir", "--allow-guests", "--config", "--ws-max-message"):
        assert flag in out, flag


def test_no_command_and_unknown_command_exit_2():
    code, out, err = sori()
    assert code == 2 and out == "" and "usage" in err
    code, _, err = sori("frobnicate")
    assert code == 2 and "frobnicate" in one_line(err)


@pytest.mark.parametrize("args,names", [
    (["--port", "abc"], "--port"),
    (["--port", "70000"], "--port"),
    (["--port"], "--port"),
    (["--heartbeat-ms", "5"], "--heartbeat-ms"),
    (["--out-limit", "12q"], "--out-limit"),
    (["--allow-guests=maybe"], "--allow-guests"),
    (["--bogus"], "--bogus"),
    (["--bogus=1"], "--bogus"),
    (["stray"], "stray"),
    (["--db", "mysql://x"], "--db"),
    (["--redis", "redis://127.0.0.1:1"], "--redis"),
    (["--stomp-heartbeat-ms", "10"], "--stomp-heartbeat-ms"),
])
def test_bad_flag_exit_2_one_line(tmp_path, args, names):
    code, out, err = sori("serve", "--data-dir", str(tmp_path / "d"), *args, cwd=str(tmp_path))
    assert code == 2
    assert out == ""
    assert names in one_line(err)
    assert not (tmp_path / "d").exists()  # nothing was started


def test_config_file_port_0_and_guests(tmp_path):
    """A --config file of `name = value` lines: port = 0 picks a free port and
    allow-guests = true lets ?user= connect; comments and blank lines are
    skipped; flags override the file."""
    cfg = tmp_path / "sori.conf"
    cfg.write_text("# test config\n\nport = 0\nallow-guests = true   # guests\n"
                   "host = 127.0.0.1\nheartbeat-ms = 5000\n")
    p = Proc(["--config", str(cfg), "--data-dir", str(tmp_path / "data"), "--workers", "1",
              "--heartbeat-ms", "2000"], tmp_path)
    try:
        ws = RawWS(p.port, "/ws?user=cfg", tls_ctx=None)
        try:
            hello = ws.recv_json()
            assert hello["user"] == "cfg"
            assert hello["heartbeat_ms"] == 2000  # the flag beat the file
        finally:
            ws.close()
    finally:
        assert p.stop() == 0


@pytest.mark.parametrize("text,lineno,word", [
    ("port = 0\nno-such-key = 1\n", 2, "no-such-key"),
    ("# c\nport = abc\n", 2, "port"),
    ("port 0\n", 1, None),
    ("config = other.conf\n", 1, "config"),
])
def test_config_file_errors_exit_2_naming_file_line(tmp_path, text, lineno, word):
    cfg = tmp_path / "bad.conf"
    cfg.write_text(text)
    code, _, err = sori("serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"),
                        cwd=str(tmp_path))
    assert code == 2
    line = one_line(err)
    assert "%s:%d" % (cfg, lineno) in line
    if word:
        assert word in line


def test_config_file_missing_exit_2(tmp_path):
    code, _, err = sori("serve", "--config", str(tmp_path / "nope.conf"), cwd=str(tmp_path))
    assert code == 2
    assert "nope.conf" in one_line(err)


def _secret(data_dir):
    return os.path.join(data_dir, "secret")


def test_secret_created_0600_and_reused(make_server, monkeypatch, tmp_path):
    """DATA_DIR/secret is generated once with mode 0600 and reused by the
    next start on the same data dir."""
    monkeypatch.delenv("SORI_SECRET", raising=False)
    data = str(tmp_path / "shared-data")
    first = make_server("--data-dir", data)
    path = _secret(data)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    with open(path) as f:
        secret = f.read()
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert first.stop() == 0
    second = make_server("--data-dir", data)
    with open(path) as f:
        assert f.read() == secret
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert second.stop() == 0
    # A different data dir gets a different secret.
    make_server("--data-dir", str(tmp_path / "other-data"))
    with open(_secret(str(tmp_path / "other-data"))) as f:
        assert f.read() != secret


def test_sori_secret_env_suppresses_file(make_server, monkeypatch):
    monkeypatch.setenv("SORI_SECRET", "an-operator-provided-secret-of-some-length")
    srv = make_server()
    assert os.path.isdir(srv.data_dir)
    assert not os.path.exists(_secret(srv.data_dir))


def test_secret_flag_suppresses_file(make_server, monkeypatch):
    monkeypatch.delenv("SORI_SECRET", raising=False)
    srv = make_server("--secret", "a-secret-given-on-the-command-line")
    assert not os.path.exists(_secret(srv.data_dir))


def test_short_secret_file_refused(tmp_path, monkeypatch):
    """A truncated secret file is an error (exit 1), not silently used."""
    monkeypatch.delenv("SORI_SECRET", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret").write_text("tooshort")
    code, out, err = sori("serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data),
                          cwd=str(tmp_path))
    assert code == 1
    assert "secret" in err


def test_clean_exit_without_leaks(tmp_path, monkeypatch):
    """SIGTERM: exit 0 and, in the ASan build, no LeakSanitizer report, run
    without LSAN_OPTIONS suppressions (regression: replaced option strings
    and the default secret once leaked at every exit)."""
    monkeypatch.delenv("SORI_SECRET", raising=False)
    p = Proc(["--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp_path / "data"),
              "--workers", "1"], tmp_path, env={"LSAN_OPTIONS": ""})
    assert p.stop() == 0


def test_sigterm_right_after_startup_line(tmp_path):
    """Once `sori serve` has printed its URL it is serving, so SIGTERM must
    drain and exit 0 (regression: the handlers were once installed after the
    URL was printed, and a SIGTERM in that window killed the process).
    Repeated, because such a window is short."""
    env = dict(os.environ, SORI_SECRET="s" * 40)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    for trial in range(20 if SLOW == 1 else 6):
        p = subprocess.Popen([SORI_BIN, "serve", "--host", "127.0.0.1", "--port", "0",
                              "--data-dir", str(tmp_path / "data"), "--workers", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        line = p.stdout.readline()
        p.send_signal(signal.SIGTERM)
        try:
            _, err = p.communicate(timeout=10 * SLOW)
        except subprocess.TimeoutExpired:
            p.kill()  # never leave a server behind, even when failing
            _, err = p.communicate()
            raise AssertionError("trial %d: no exit within %d s of SIGTERM\n%s"
                                 % (trial, 10 * SLOW, err.decode()[-2000:]))
        assert b"serving http://" in line
        assert p.returncode == 0, "trial %d: exit %s\n%s" % (trial, p.returncode, err.decode()[-2000:])
