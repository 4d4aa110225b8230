"""The Ray backend starting its own Ray (the laptop default): dashboard on 127.0.0.1 only, token
authentication on, everything gone after shutdown. This module's one Ray instance is the backend's."""
from __future__ import annotations

import os
import time

import pytest

from cluster import ray_private

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from cluster.ray_backend import RayBackend  # noqa: E402
from tests.tasks import task  # noqa: E402

pytestmark = pytest.mark.ray


KEY = "0123456789abcdef0123456789abcdef01234567"


def _listening(session: str, pids: list[int]) -> set[tuple[str, str, int]]:
    """(process, ip, port) of every listening TCP socket of this process's Ray session."""
    me = psutil.Process()
    procs = {p.pid: p for p in [me, *me.children(recursive=True)]}
    for p in psutil.process_iter(["pid", "cmdline"]):  # agents may be re-parented
        if any(session in part for part in (p.info["cmdline"] or [])) or p.info["pid"] in pids:
            procs[p.pid] = p
    out = set()
    for p in procs.values():
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.add((p.name(), c.laddr.ip, c.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


@pytest.mark.slow
def test_embedded_ray_is_private_and_leaves_nothing_behind(monkeypatch):
    if ray.is_initialized():
        pytest.skip("another test left Ray running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", KEY)  # the driver's; its workers must not inherit it
    rows = []
    b = RayBackend(task, lambda k, r: rows.append(r), cpus_per_trial=1, max_concurrent=1,
                   num_cpus=1, include_dashboard=True)
    try:
        assert ray.is_initialized()
        node = ray_private.global_node()
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
        # every server of the embedded Ray (GCS, raylet, object manager, workers, agents, metrics)
        # listens on loopback only, and token auth stays on
        socks = _listening(session, pids)
        assert len(socks) >= 6, socks
        assert {ip for _, ip, _ in socks} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, socks
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        (o,) = b.wait([b.submit("v", {"op": "env", "names": ["WANDB_API_KEY", "UNLEARN_SWEEP_CACHE"]})],
                      timeout=60)
        assert o.result["WANDB_API_KEY"] is None and os.environ["WANDB_API_KEY"] == KEY
        # trial workers at the driver's priority, not Ray's default of 15 nice levels below it
        assert {os.getpriority(os.PRIO_PROCESS, p) for p in pids} == {os.getpriority(os.PRIO_PROCESS, 0)}
        assert "RAY_worker_niceness" not in os.environ  # set for Ray's start only
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
