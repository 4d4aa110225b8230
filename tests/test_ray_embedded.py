"""The Ray backend starting its own Ray (the laptop default): dashboard on 127.0.0.1 only, token
authentication on, everything gone after shutdown. This module's one Ray instance is the backend's."""
from __future__ import annotations

import os
import time

import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from cluster.ray_backend import RayBackend  # noqa: E402
from tests.tasks import task  # noqa: E402

pytestmark = pytest.mark.ray


def test_embedded_ray_is_private_and_leaves_nothing_behind(monkeypatch):
    if ray.is_initialized():
        pytest.skip("another test left Ray running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    rows = []
    b = RayBackend(task, lambda k, r: rows.append(r), cpus_per_trial=1, max_concurrent=1,
                   num_cpus=1, include_dashboard=True)
    try:
        assert ray.is_initialized()
        node = ray._private.worker._global_node
        session = os.path.basename(node.get_session_dir_path())
        host, port = node.address_info["webui_url"].rsplit(":", 1)
        assert host == "127.0.0.1"
        bound = {c.laddr.ip for c in psutil.net_connections("tcp")
                 if c.status == "LISTEN" and c.laddr.port == int(port)}
        assert bound == {"127.0.0.1"}, bound  # the dashboard is not reachable from the network
        assert os.environ.get("RAY_AUTH_MODE", "token") == "token"  # Ray's default: token auth on
        (o,) = b.wait([b.submit("e", {"op": "epochs", "n": 2})], timeout=60)
        assert o.result == {"epochs": 2} and len(rows) == 2
        pids = [w["pid"] for w in b.workers()]
    finally:
        b.shutdown()
    assert not ray.is_initialized()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = [p for p in psutil.process_iter(["pid", "cmdline"])
                if any(session in part for part in (p.info["cmdline"] or [])) or p.info["pid"] in pids]
        if not left:
            break
        time.sleep(0.3)
    assert not left, f"left running: {[p.info['cmdline'][:2] for p in left]}"
