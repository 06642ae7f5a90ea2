"""Push notifications (--push-webhook): a dm to a user with no open
connection is POSTed as JSON to a webhook started by the test (http.server
on an ephemeral loopback port, scripted statuses), retried after a 5xx, not
sent to an online user nor to one who read the room before --push-delay-ms
ran out; a webhook that is not http:// stops the server at startup."""
import asyncio
import http.server
import json
import os
import subprocess
import threading
import time

import pytest

from chatclient import connect, run, uniq
from conftest import SANITIZER_MARKERS, SLOW, SORI_BIN




class Hook:
    """A webhook receiver: records every request (path, headers, raw body)
    and answers each with the next scripted status (then 200)."""

    def __init__(self, statuses=()):
        self.requests = []
        self.statuses = list(statuses)
        self.cond = threading.Condition()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with hook.cond:
                    status = hook.statuses.pop(0) if hook.statuses else 200
                    hook.requests.append((self.path, dict((k.lower(), v) for k, v in self.headers.items()),
                                          body, status))
                    hook.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d/hook" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def wait(self, n, timeout):
        """The requests once there are at least n (fails after timeout)."""
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.requests) >= n, timeout)
            got = list(self.requests)
        assert ok, "expected %d push request(s), got %d: %r" % (n, len(got), got)
        return got

    def quiet(self, seconds):
        """Asserts that nothing arrives within seconds; returns what came before."""
        time.sleep(seconds)
        with self.cond:
            return list(self.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hook_factory():
    made = []

    def make(statuses=()):
        h = Hook(statuses)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def dm_room(a, b):
    return "dm:%s:%s" % tuple(sorted((a, b)))


async def make_known(server, name):
    """Connects once and leaves, so that `name` exists and is offline."""
    c = await connect(server, name)
    await c.close()
    await asyncio.sleep(0.2 * SLOW)  # the server has dropped the session


def test_dm_to_offline_user_is_pushed(make_server, hook_factory):
    hook = hook_factory()
    server = make_server("--push-webhook", hook.url)
    alice, bob = uniq("alice"), uniq("bob")

    async def main():
        await make_known(server, bob)
        a = await connect(server, alice)
        return await a.ok({"type": "dm", "to": bob, "text": "hi \"bob\" \u00e9\U0001F600"}, "ack")

    ack = run(main())
    assert ack["room"] == dm_room(alice, bob)
    (path, headers, raw, status), = hook.wait(1, 5 * SLOW)
    assert path == "/hook"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "sori"
    assert headers["host"] == "127.0.0.1:%d" % hook.port
    pairs = json.loads(raw, object_pairs_hook=list)
    assert [k for k, _ in pairs] == ["type", "user", "room", "from", "id", "seq", "ts", "text"]
    assert dict(pairs) == {"type": "dm", "user": bob, "room": ack["room"], "from": alice, "id": ack["id"],
                           "seq": ack["seq"], "ts": ack["ts"], "text": "hi \"bob\" \u00e9\U0001F600"}
    assert isinstance(dict(pairs)["id"], str)
    # One notification, no retry.
    assert len(hook.quiet(0.5 * SLOW)) == 1


def test_not_pushed_to_an_online_user(make_server, hook_factory):
    hook = hook_factory()
    server = make_server("--push-webhook", hook.url)
    alice, bob = uniq("alice"), uniq("bob")

    async def main():
        b = await connect(server, bob)
        a = await connect(server, alice)
        ack = await a.ok({"type": "dm", "to": bob, "text": "are you there?"}, "ack")
        m = await b.next_event("message", pred=lambda f: f.get("room") == ack["room"])
        assert m["text"] == "are you there?"
        return ack

    run(main())
    assert hook.quiet(1.0 * SLOW) == []


def test_retried_after_500(make_server, hook_factory):
    hook = hook_factory([500])
    server = make_server("--push-webhook", hook.url)
    alice, bob = uniq("alice"), uniq("bob")

    async def main():
        await make_known(server, bob)
        a = await connect(server, alice)
        return await a.ok({"type": "dm", "to": bob, "text": "again"}, "ack")

    ack = run(main())
    got = hook.wait(2, 5 * SLOW)
    assert [r[3] for r in got] == [500, 200]
    assert got[0][2] == got[1][2]
    assert json.loads(got[1][2])["id"] == ack["id"]
    assert len(hook.quiet(1.0 * SLOW)) == 2  # sent: no third try


def test_preview_false_has_no_text(make_server, hook_factory):
    hook = hook_factory()
    server = make_server("--push-webhook", hook.url, "--push-preview", "false")
    alice, bob = uniq("alice"), uniq("bob")

    async def main():
        await make_known(server, bob)
        a = await connect(server, alice)
        return await a.ok({"type": "dm", "to": bob, "text": "private"}, "ack")

    ack = run(main())
    (_, _, raw, _), = hook.wait(1, 5 * SLOW)
    body = json.loads(raw)
    assert "text" not in body
    assert body["id"] == ack["id"] and body["user"] == bob and body["from"] == alice


def test_read_during_delay_cancels(make_server, hook_factory):
    """The first dm is read by its recipient before --push-delay-ms runs out:
    no push. The second is not read: pushed, after the delay."""
    hook = hook_factory()
    server = make_server("--push-webhook", hook.url, "--push-delay-ms", "1500")
    alice, bob = uniq("alice"), uniq("bob")

    async def main():
        await make_known(server, bob)
        a = await connect(server, alice)
        ack1 = await a.ok({"type": "dm", "to": bob, "text": "read me"}, "ack")
        b = await connect(server, bob)
        r = await b.ok({"type": "read", "room": ack1["room"], "seq": ack1["seq"]}, "read_ok")
        assert r["seq"] == ack1["seq"]
        await b.close()
        await asyncio.sleep(0.2 * SLOW)
        t2 = time.monotonic()
        ack2 = await a.ok({"type": "dm", "to": bob, "text": "unread"}, "ack")
        return ack1, ack2, t2

    ack1, ack2, t2 = run(main())
    got = hook.wait(1, 6 * SLOW)
    assert time.monotonic() - t2 >= 1.4
    body = json.loads(got[0][2])
    assert body["id"] == ack2["id"] and body["text"] == "unread"
    assert len(hook.quiet(0.5 * SLOW)) == 1  # and never the first one


@pytest.mark.parametrize("url", ["https://push.example/hook", "push.example/hook", "http://host:99999/"])
def test_bad_webhook_exits_2(tmp_path, url):
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    p = subprocess.run([SORI_BIN, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir",
                        str(tmp_path / "data"), "--push-webhook", url],
                       capture_output=True, env=env, timeout=10 * SLOW)
    err = p.stderr.decode(errors="replace")
    for marker in SANITIZER_MARKERS:
        assert marker not in err, err
    assert p.returncode == 2, (p.returncode, err)
    # Exactly one line, checked before anything is created on disk.
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert not (tmp_path / "data").exists()
    assert lines[0].startswith("sori: --push-webhook: "), lines[0]
    if url.startswith("https"):
        assert "https" in lines[0] and "proxy" in lines[0], lines[0]


def test_mention_of_offline_member_is_pushed(make_server, hook_factory):
    """A mention of a member with no open connection is pushed (kind
    "mention"); an online member who is mentioned gets nothing."""
    hook = hook_factory()
    server = make_server("--push-webhook", hook.url)
    alice, bob, carol = uniq("alice"), uniq("bob"), uniq("carol")
    room = uniq("room")

    async def main():
        a = await connect(server, alice)
        await a.ok({"type": "create", "room": room, "kind": "public"}, "created")
        for name in (bob, carol):
            c = await connect(server, name)
            await c.ok({"type": "join", "room": room}, "joined")
            if name == bob:
                await c.close()
            else:
                online = c
        await asyncio.sleep(0.2 * SLOW)
        ack = await a.ok({"type": "send", "room": room, "text": "hi @%s and @%s" % (bob, carol)}, "ack")
        got = hook.wait(1, 5 * SLOW)
        body = json.loads(got[0][2])
        assert body["type"] == "mention" and body["user"] == bob and body["room"] == room
        assert body["id"] == ack["id"] and body["seq"] == ack["seq"] and body["from"] == alice
        assert len(hook.quiet(0.5)) == 1  # nothing for carol, who is online
        await online.close()
        await a.close()
    run(main())
