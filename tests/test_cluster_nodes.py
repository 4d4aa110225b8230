"""Node-level faults on a real Ray cluster on this machine: nodes in network namespaces with their
own addresses, directories and caches (tests/cluster_util.py), `ray start --block` on each, the
sweep driver a real CLI process with `--address`. Each scenario is in tests/cluster_scenarios.py
(bench/cluster_faults.py repeats them for docs/reliability.md); here each runs once.

Marked `cluster` (run by `make test-cluster` and CI, not by `make test`): each takes 30-90 s and
a few hundred MB per node. Skipped where namespaces cannot be made (not root, no `ip`)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import cluster_scenarios as S
from tests.cluster_util import LocalCluster, count_ray_status_nodes, namespaces_left, unavailable

WHY = unavailable()
pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.skipif(WHY is not None, reason=WHY or "")]


def test_the_harness_gives_each_node_its_own_network_and_directory_and_cleans_up(tmp_path):
    c = LocalCluster(workers=1, ray=False)
    try:
        head, w = c.nodes
        assert c.run(w, ["hostname"]).stdout.strip() == "w1"
        assert c.run(w, ["getent", "hosts", "head"]).stdout.split()[0] == head.ip
        addrs = c.run(w, ["ip", "-4", "-o", "addr"]).stdout
        assert f"{w.ip}/24" in addrs and head.ip not in addrs
        # nothing of the machine's own network is inside: only loopback and the bridge
        assert {ln.split()[1] for ln in addrs.splitlines()} == {"lo", "eth0"}
        probe = c.popen(w, ["sleep", "60"], stdout=subprocess.DEVNULL)
        assert probe.pid in w.pids() and probe.pid not in head.pids()
        assert c.run(head, ["sh", "-c", "echo $HOME $UNLEARN_SWEEP_CACHE"]).stdout.split() == [
            str(head.dir), str(head.cache)]
        # each its own /tmp: what one node writes there, no other node (nor this machine) sees
        c.run(w, ["touch", "/tmp/only-on-w1"])
        assert (w.dir / "tmp" / "only-on-w1").exists() and not Path("/tmp/only-on-w1").exists()
        assert c.run(head, ["ls", "/tmp/only-on-w1"]).returncode != 0
    finally:
        c.close()
    assert probe.poll() is not None  # ended by close(), by its pid
    assert namespaces_left(c) == [] and not c.base.exists()


def test_a_failing_test_still_leaves_nothing_behind(tmp_path):
    pids = []
    with pytest.raises(RuntimeError, match="on purpose"):
        with LocalCluster(workers=1) as c:
            pids = [p for n in c.nodes for p in n.pids()]
            assert len(pids) > 5  # Ray's processes on both nodes
            raise RuntimeError("on purpose")
    assert namespaces_left(c) == []
    alive = [p for p in pids if subprocess.run(["kill", "-0", str(p)], capture_output=True).returncode == 0]
    assert not alive, alive


def test_ray_status_node_count():
    text = ("Node status\n----\nActive:\n 1 node_ab12\n 1 node_cd34\nIdle:\n 1 node_ef56\n"
            "Pending:\n 1 node_9999\nRecent failures:\n")
    assert count_ray_status_nodes(text) == 3


def test_two_nodes_share_a_real_sweep_and_train_each_oracle_once(tmp_path):
    """Real trials (the quickstart, 4 configurations x 2 seeds) on a head and a worker with a cache
    each, the driver on the head with a cache of its own: trials run on both nodes, every
    Original/Retrain is trained once in the whole cluster (the oracle phase trains it on one node
    and sends the files to the other), and the driver trains nothing."""
    from sweeps.results import read_results
    from tests.cluster_util import BIN

    with LocalCluster(workers=1, logs=tmp_path / "logs") as c:
        head, worker = c.nodes
        driver_cache, run = head.dir / "driver-cache", head.dir / "run"
        res = c.run(head, [str(BIN / "unlearn-sweep"), "run", "quickstart", "--out", str(run),
                           "--address", c.address, "--set", "n_trials=4", "--set", "seeds=[0,1]",
                           "--set", "seed_axes=[train,unlearn]", "--set", "resources.max_concurrent=null",
                           "--set", "base.train.epochs=5"],
                    env=c.env(head, UNLEARN_SWEEP_CACHE=str(driver_cache)), timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        t = read_results(run).to_pandas()
        assert (t["state"] == "COMPLETE").all() and len(t) == 8
        assert {n.split("/")[0] for n in t["node"]} == {head.ip, worker.ip}  # both nodes ran trials
        # 2 seeds x (Original, Retrain): 4 models, each trained once; the other node got the same files
        models = sorted(p.name for p in head.cache.glob("*.json"))
        assert len(models) == 4 and sorted(p.name for p in worker.cache.glob("*.json")) == models
        for name in models:
            assert (head.cache / name).read_bytes() == (worker.cache / name).read_bytes(), name
        assert res.stderr.count(" ready: trained in ") == 4
        assert not list(driver_cache.glob("*.pt"))  # the driver trains nothing


def test_a_worker_node_killed_mid_trial_loses_nothing(tmp_path):
    print(S.worker_killed(tmp_path))


def test_a_worker_node_that_joins_mid_sweep_takes_trials(tmp_path):
    print(S.worker_joins(tmp_path))


def test_a_worker_cut_off_the_network_is_lost_and_nothing_counts_twice_when_it_returns(tmp_path):
    print(S.worker_cut_off(tmp_path))


def test_the_head_lost_ends_the_driver_in_one_line_and_resume_continues_on_a_new_cluster(tmp_path):
    print(S.head_lost(tmp_path))
