"""Cluster mode, the parts that exist so far (docs/OPERATIONS.md "Cluster
mode"): presence across nodes (online while any node has a session, offline
when the last one closes, a killed node's users offline within the presence
TTL), discovery of the least-loaded live node, and /healthz while Redis is
down and after it is back."""
import asyncio
import json
import os
import signal
import subprocess
import time

from chatclient import connect, run, uniq
from conftest import SLOW

# short TTLs so that a killed node's users go offline within seconds; the
# registry's 3 s leaves slack for a starved bus thread under make test's load
FAST = ("--presence-ttl-ms", "1500", "--node-ttl-ms", "3000")


def healthz(node):
    try:
        return node.http("GET", "/healthz", timeout=2)[0]
    except OSError:
        return None


def wait_for(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_nodes_come_up_healthy(cluster):
    a, b = cluster(2, *FAST)
    for n in (a, b):
        wait_for(lambda: healthz(n) == 200, 10 * SLOW, "healthz 200")
        assert "cluster mode" in n.read_stderr()


def test_presence_across_nodes(cluster):
    a, b = cluster(2, *FAST)

    async def go():
        alice = await connect(a, uniq("alice"))
        bob_name = uniq("bob")
        r = await alice.ok({"type": "presence", "users": [bob_name]}, "presence")
        assert r["users"][0]["online"] is False
        bob_b = await connect(b, bob_name)                 # bob on the other node
        ev = await alice.next_event("presence", timeout=5 * SLOW)
        assert ev["user"] == bob_name and ev["online"] is True
        # a fresh question from node a sees him online too
        other = await connect(a, uniq("carol"))
        r = await other.ok({"type": "presence", "users": [bob_name]}, "presence")
        assert r["users"][0]["online"] is True and r["users"][0]["last_seen"] is None
        bob_a = await connect(a, bob_name)                 # and on a as well
        await bob_b.close()                                # still online on a
        await alice.no_event("presence", 1.0 * SLOW)
        await bob_a.close()                                # now gone everywhere
        ev = await alice.next_event("presence", timeout=5 * SLOW)
        assert ev["user"] == bob_name and ev["online"] is False and ev["last_seen"]
        # carol began watching while bob was online elsewhere: she hears it too
        ev = await other.next_event("presence", timeout=5 * SLOW, pred=lambda f: f["online"] is False)
        assert ev["user"] == bob_name
        # nobody on a watched erin when she came online on b: a watcher who
        # asks later still hears her go
        erin_name = uniq("erin")
        erin = await connect(b, erin_name)
        await asyncio.sleep(0.3)
        dave = await connect(a, uniq("dave"))
        r = await dave.ok({"type": "presence", "users": [erin_name]}, "presence")
        assert r["users"][0]["online"] is True
        await asyncio.sleep(0.3)
        await erin.close()
        ev = await dave.next_event("presence", timeout=5 * SLOW, pred=lambda f: f["online"] is False)
        assert ev["user"] == erin_name
        # REST on node b agrees
        status, _, body = b.http("GET", "/api/users/%s/presence?user=%s" % (bob_name, uniq("x")))
        assert status == 200 and json.loads(body)["online"] is False
    run(go(), timeout=30 * SLOW)


def test_killed_node_users_go_offline_within_the_ttl(cluster):
    a, b = cluster(2, *FAST)

    async def go():
        alice = await connect(a, uniq("alice"))
        bob_name = uniq("bob")
        await alice.ok({"type": "presence", "users": [bob_name]}, "presence")
        await connect(b, bob_name)
        ev = await alice.next_event("presence", timeout=5 * SLOW)
        assert ev["online"] is True
        b.proc.send_signal(signal.SIGKILL)                 # no goodbye from b
        b.proc.wait()
        t0 = time.time()
        ev = await alice.next_event("presence", timeout=10 * SLOW)
        took = time.time() - t0
        assert ev["user"] == bob_name and ev["online"] is False
        assert took < 1.5 + 3 * SLOW, took                 # the TTL plus a refresh period and slack
    run(go(), timeout=40 * SLOW)


def test_discover_picks_the_least_loaded_live_node(cluster):
    a, b = cluster(2, *FAST)

    def discover(node):
        status, _, body = node.http("GET", "/api/discover")
        return status, json.loads(body)

    async def go():
        # load node a with connections; both answer with node b once the
        # registry has refreshed (every TTL/3)
        conns = [await connect(a, uniq("u")) for _ in range(5)]
        want = "ws://127.0.0.1:%d/ws" % b.port
        for node in (a, b):
            got = await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_for(lambda: discover(node)[1].get("ws") == want and discover(node),
                                       10 * SLOW, "discover -> b"))
            assert got[0] == 200
        for c in conns:
            await c.close()
        # b stops cleanly: it leaves the registry at once (never answered
        # again); a node kill -9ed by the test before this one may still be
        # registered until its --node-ttl-ms (3 s) runs out, so the answer
        # becomes a itself within that time
        b.stop()
        st, body = discover(a)
        assert st in (200, 503) and body.get("ws") != want, body
        got = await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_for(lambda: discover(a)[1].get("ws") == "ws://127.0.0.1:%d/ws" % a.port,
                                   5 * SLOW, "discover -> a"))
        assert got
    run(go(), timeout=40 * SLOW)


def test_healthz_follows_redis(cluster):
    """Redis down: /healthz 503; back: 200, by itself."""
    ctl = os.environ.get("SORI_REDIS_CTL")
    assert ctl, "scripts/redis-test.sh provides SORI_REDIS_CTL"
    a, = cluster(1, *FAST)
    wait_for(lambda: healthz(a) == 200, 10 * SLOW, "healthz 200")
    subprocess.run([ctl, "--stop"], check=True, timeout=30)
    try:
        wait_for(lambda: healthz(a) == 503, 10 * SLOW, "healthz 503 while Redis is down")
    finally:
        subprocess.run([ctl, "--start"], check=True, timeout=30)
    wait_for(lambda: healthz(a) == 200, 20 * SLOW, "healthz 200 after Redis is back")
