"""Cluster tests: several sori nodes sharing one PostgreSQL database and one
Redis, all started by the harness on loopback ports. Run under both
harnesses, which provide the servers:

    scripts/pg-test.sh scripts/redis-test.sh /usr/bin/python3 -m pytest tests/cluster

The node fixtures reuse tests/integration/conftest.py (Server, SLOW, the
sanitizer checks)."""
import itertools
import os
import sys

import pytest

import importlib.util  # noqa: E402

_INTEGRATION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration")
sys.path.insert(0, _INTEGRATION)  # chatclient.py
# The integration harness, loaded under its own name (this file is "conftest"
# here, and chatclient's `from conftest import SLOW` finds the re-export).
_spec = importlib.util.spec_from_file_location("sori_harness", os.path.join(_INTEGRATION, "conftest.py"))
_harness_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_harness_mod)
PG, SLOW, Server, _finish_all, pg_database, http_request = (
    _harness_mod.PG, _harness_mod.SLOW, _harness_mod.Server, _harness_mod._finish_all, _harness_mod.pg_database,
    _harness_mod.http_request)

REDIS = os.environ.get("SORI_REDIS_URL")
_node_ids = itertools.count(1)  # unique in the run: registry keys of earlier tests may linger until their TTL


@pytest.fixture(autouse=True)
def _harness():
    """Without the servers these tests fail loudly rather than skip."""
    assert PG and REDIS, "run under scripts/pg-test.sh scripts/redis-test.sh (see this file's docstring)"


@pytest.fixture
def cluster(tmp_path):
    """cluster(n, *flags): n nodes (fresh ids) on one fresh database and the
    harness's Redis; stopped (and checked) at the end."""
    started = []

    def make(n=2, *flags):
        db = pg_database()
        nodes = []
        for i in range(1, n + 1):
            d = tmp_path / ("node%d" % i)
            d.mkdir()
            s = Server(d, ["--redis", REDIS, "--node-id", str(next(_node_ids)), *flags], db=db)
            started.append(s)
            nodes.append(s.start())
        return nodes

    yield make
    _finish_all(started)


@pytest.fixture
def nginx(tmp_path, cluster):
    """nginx(nodes): a real nginx, configured by deploy/nginx.conf, in front
    of those nodes on a free loopback port; returns it running (url, ws_url
    and http() like a Server's; tests/cluster/nginx.py). Stopped by its PID
    at the end, before the cluster's nodes (it depends on that fixture)."""
    from nginx import Nginx  # here: nginx.py imports this file
    started = []

    def make(nodes):
        n = Nginx(tmp_path / ("nginx%d" % len(started)), nodes)
        started.append(n)
        return n.start()

    yield make
    first = None
    for n in started:
        try:
            n.stop()
        except BaseException as e:  # noqa: B902 - re-raised below
            first = first or e
    if first:
        raise first
