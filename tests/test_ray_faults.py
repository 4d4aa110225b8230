"""The Ray backend under faults and real placement: killed workers, logical GPUs shared four ways,
impossible requests, several nodes with one removed mid-run.

One Ray instance for the module: a ray.cluster_utils.Cluster whose head has 2 CPUs and one logical
GPU (no real GPU needed); the multi-node test adds worker nodes and removes one."""
from __future__ import annotations

import os
import signal
import time

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from cluster.ray_backend import ClusterConfigError, RayBackend  # noqa: E402
from tests.tasks import task  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    old = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    os.environ.pop("RAY_ADDRESS", None)
    _token_auth(on=True)  # what ray.init does for a local cluster; Cluster does not: keep auth on
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 1, "include_dashboard": False,
        # notice a removed node within about a second instead of the default ~15 s
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300,
                           "health_check_timeout_ms": 300, "health_check_failure_threshold": 3}})
    c.connect()
    yield c
    ray.shutdown()
    c.shutdown()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _token_auth(on=None)


def _token_auth(on: bool | None) -> None:
    """Token mode for this process and the nodes it starts (ray.init's own set-up, which
    cluster_utils skips); on=None re-reads the restored environment."""
    from cluster import ray_private

    if on:
        os.environ["RAY_AUTH_MODE"] = "token"
    ray_private.reload_auth_mode()
    if on:
        ray_private.ensure_token()


def run_all(backend, payloads: dict[str, dict], timeout=90.0, on_running=None, max_retries=3):
    """A miniature driver: submit everything, resubmit retryable losses, return {key: outcome}
    plus the list of losses. `on_running(backend)` is called once, when every slot is busy."""
    pending = {key: backend.submit(key, p) for key, p in payloads.items()}
    done, losses, fired = {}, [], on_running is None
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        if not fired and sum(backend.running_per_node().values()) >= backend.capacity():
            fired = True
            on_running(backend)
        for o in backend.wait(list(pending.values()), timeout=0.5):
            key = o.handle.key
            assert key not in done, f"{key} finished twice"
            del pending[key]
            if o.lost is not None:
                losses.append(o)
                assert o.retryable and o.handle.attempt < max_retries, o
                pending[key] = backend.submit(key, payloads[key], attempt=o.handle.attempt + 1)
            else:
                done[key] = o
    assert not pending, f"unfinished: {sorted(pending)}"
    return done, losses


def gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_actor_reused_then_killed_process_is_retryable_and_replaced(cluster):
    with RayBackend(task, None, cpus_per_trial=1, max_concurrent=1) as b:
        assert b.capacity() == 1
        first = b.wait([b.submit("a", {"op": "pid"})], timeout=30)[0].result["pid"]
        second = b.wait([b.submit("b", {"op": "pid"})], timeout=30)[0].result["pid"]
        assert first == second  # one long-lived process: per-process caches are reused

        h = b.submit("victim", {"op": "sleep", "seconds": 60})
        deadline = time.monotonic() + 20
        while b.running_per_node() == {} and time.monotonic() < deadline:
            b.wait([h], timeout=0.1)
        time.sleep(0.5)  # inside the task
        os.kill(first, signal.SIGKILL)
        (o,) = b.wait([h], timeout=30)
        assert o.result is None and o.retryable and "died" in o.lost, o
        assert o.node

        o2 = b.wait([b.submit("victim", {"op": "pid"}, attempt=1)], timeout=60)[0]
        assert o2.result["pid"] != first  # a fresh actor took the slot
        assert b.capacity() == 1
        pids = [w["pid"] for w in b.workers()]
    assert all(gone(p) for p in pids), "actor processes outlived shutdown"


def test_out_of_memory_result_passes_through_and_recycles_the_worker(cluster):
    with RayBackend(task, None, cpus_per_trial=1, max_concurrent=1) as b:
        o = b.wait([b.submit("oom", {"op": "oom"})], timeout=30)[0]
        assert o.result["state"] == "FAIL" and o.lost is None  # the task's own FAIL: data, not a loss
        after = b.wait([b.submit("next", {"op": "pid"})], timeout=60)[0].result["pid"]
        assert after != o.result["pid"]


@pytest.mark.slow
def test_fractional_gpus_pack_four_per_gpu_and_the_fifth_waits(cluster):
    with RayBackend(task, None, cpus_per_trial=0.25, gpus_per_trial=0.25) as b:
        assert b.capacity() == 4  # 1 logical GPU / 0.25
        done, _ = run_all(b, {f"g{i}": {"op": "sleep", "seconds": 3, "key": f"g{i}"} for i in range(5)})
    runs = sorted((o.result for o in done.values()), key=lambda r: r["start"])
    first4, fifth = runs[:4], runs[4]
    assert max(r["start"] for r in first4) - min(r["start"] for r in first4) < 2.0  # together
    assert min(r["end"] for r in first4) <= fifth["start"] + 0.05  # waited for a free quarter
    assert {r["cuda"] for r in runs} == {"0"}  # Ray gave each the one (logical) GPU


# -- overlap: the next task on the device while the previous one's CPU tail runs -----------------

def _until(pred, backend, handles, within=30.0):
    """Drive `backend.wait` until `pred()` holds; fails if any of `handles` finishes meanwhile."""
    deadline = time.monotonic() + within
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        assert backend.wait(handles, timeout=0.2) == [], "a task finished too early"


@pytest.mark.parametrize("overlap", [True, False])
def test_an_actor_takes_the_next_task_once_the_previous_one_is_in_its_tail(cluster, overlap, tmp_path):
    # with overlap, a's tail lasts until c has begun (30 s at most), so the order is by event, not
    # by how fast a loaded machine runs; without, a's tail is short and c must wait for it anyway
    began = tmp_path / "c-began"
    with RayBackend(task, None, cpus_per_trial=2, overlap=overlap) as b:  # one actor
        assert b.capacity() == 1
        a = b.submit("a", {"op": "tail", "device_s": 0.3, "tail_s": 30 if overlap else 1.5,
                           "tail_until": str(began)})
        if overlap:
            _until(lambda: b.capacity() == 2, b, [a])
            assert b.workers()[0]["tails"] == ["a"] and b.workers()[0]["running"] is None
        else:
            assert b.capacity() == 1
        c = b.submit("c", {"op": "tail", "value": "c", "device_s": 0.5, "mark": str(began)})
        assert b.capacity() == (2 if overlap else 1)  # never a second task before a tail
        out = {o.handle.key: o.result for o in _wait_all(b, [a, c])}
        assert out["a"]["pid"] == out["c"]["pid"]  # one worker process ran both
        if overlap:  # c used the device while a's tail ran, and both results are whole
            assert out["c"]["device"][0] < out["a"]["in_tail"][1]
        else:
            assert out["c"]["device"][0] >= out["a"]["in_tail"][1]
        assert out["c"]["tail"] == "c"


def _wait_all(b, handles, within=60.0):
    out, left, deadline = [], list(handles), time.monotonic() + within
    while left and time.monotonic() < deadline:
        for o in b.wait(left, timeout=0.5):
            left.remove(o.handle)
            out.append(o)
    assert not left, f"not finished: {left}"
    return out


def _two_on_one_actor(b):
    """`a` hangs in its tail while `c` holds the device: two tasks on the one actor."""
    a = b.submit("a", {"op": "tail", "tail_s": 60})
    _until(lambda: b.capacity() == 2, b, [a])
    c = b.submit("c", {"op": "tail", "device_s": 60})
    _until(lambda: b.workers()[0]["running"] == "c", b, [a, c])
    return a, c, b.workers()[0]["pid"]


def test_cancel_mid_overlap_records_the_cancelled_task_and_the_other_is_retryable(cluster):
    with RayBackend(task, None, cpus_per_trial=2, overlap=True) as b:
        a, c, pid = _two_on_one_actor(b)
        time.sleep(0.3)  # inside both
        b.cancel(a, "timed out after 5s")
        out = {o.handle.key: o for o in _wait_all(b, [a, c])}
        assert out["a"].lost == "timed out after 5s" and not out["a"].retryable
        assert out["c"].result is None and out["c"].retryable  # lost only because a's worker went
        assert "stopped to cancel" in out["c"].lost and "timed out" in out["c"].lost
        assert gone(pid)
        again = _wait_all(b, [b.submit("c", {"op": "tail", "value": 1}, attempt=1)])[0]
        assert again.result["tail"] == 1 and again.result["pid"] != pid
        assert len(b.workers()) == 1 and b.capacity() == 1


def test_a_worker_killed_mid_overlap_loses_both_tasks_retryable_and_is_replaced_once(cluster):
    with RayBackend(task, None, cpus_per_trial=2, overlap=True) as b:
        a, c, pid = _two_on_one_actor(b)
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        out = _wait_all(b, [a, c])
        assert len(out) == 2 and all(o.result is None and o.retryable and "died" in o.lost for o in out)
        deadline = time.monotonic() + 60
        while b.capacity() < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(b.workers()) == 1 and b.capacity() == 1  # one replacement, not one per task
        again = _wait_all(b, [b.submit(k, {"op": "tail", "value": k}, attempt=1) for k in ("a", "c")])
        assert {o.result["tail"] for o in again} == {"a", "c"}


def test_an_out_of_memory_result_retires_the_actor_after_its_other_task(cluster):
    with RayBackend(task, None, cpus_per_trial=2, overlap=True) as b:
        a = b.submit("a", {"op": "tail", "device_s": 0.2, "tail_s": 1})
        _until(lambda: b.capacity() == 2, b, [a])
        oom = b.submit("oom", {"op": "oom"})
        outs = {o.handle.key: o for o in _wait_all(b, [a, oom])}
        assert outs["oom"].result["state"] == "FAIL" and outs["a"].result["tail"] is None
        assert outs["a"].result["pid"] == outs["oom"].result["pid"]  # a finished, not killed
        after = _wait_all(b, [b.submit("next", {"op": "pid"})])[0].result["pid"]
        assert after != outs["oom"].result["pid"]


@pytest.mark.parametrize("kwargs, needle", [
    ({"gpus_per_trial": 2}, "2 GPU"),
    ({"cpus_per_trial": 64}, "64 CPU"),
    ({"resources_per_trial": {"tpu_slice": 1}}, "1 tpu_slice"),
])
def test_impossible_request_is_one_clear_line(cluster, kwargs, needle):
    t0 = time.monotonic()
    with pytest.raises(ClusterConfigError) as e:
        RayBackend(task, None, **kwargs)
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and "\n" not in msg
    assert needle in msg and "no Ray node can run a trial" in msg and "largest" in msg
    assert time.monotonic() - t0 < 10


def test_bad_fraction_is_rejected(cluster):
    with pytest.raises(ClusterConfigError, match="gpus_per_trial"):
        RayBackend(task, None, gpus_per_trial=1.5)


@pytest.mark.timeout(120)  # before the grace period, this start waited for the whole start timeout
def test_a_worker_that_cannot_be_placed_yet_does_not_hold_the_start_back(cluster, monkeypatch, caplog):
    """One of two 1-CPU workers has no free CPU (another job holds it; or its node is dead and Ray
    does not know yet): the backend starts with the one that is up after the grace period, not the
    whole start timeout, and the other joins the pool once the CPU is free."""
    from cluster import ray_backend

    monkeypatch.setattr(ray_backend, "_START_GRACE_S", 1.0)
    monkeypatch.setattr(ray_backend, "_START_TIMEOUT_S", 600.0)

    @ray.remote(num_cpus=1)
    class Squatter:
        def up(self):
            return True

    squatter = Squatter.remote()
    ray.get(squatter.up.remote())
    try:
        with RayBackend(task, None, cpus_per_trial=1) as b:  # the start timeout (600 s) would hit pytest's
            assert "1 of 2 trial workers still waiting" in caplog.text
            assert len(b.workers()) == 2 and b.capacity() == 1
            done, _ = run_all(b, {"a": {"op": "sleep", "seconds": 0.1, "key": "a"}})
            assert done["a"].result is not None
            ray.kill(squatter)
            squatter = None
            deadline = time.monotonic() + 60
            while b.capacity() < 2:
                assert time.monotonic() < deadline, b.workers()
                time.sleep(0.2)
    finally:
        if squatter is not None:
            ray.kill(squatter)


def test_the_pool_grows_when_a_node_joins(cluster):
    """Sized at start for the head (one 2-CPU trial), the pool takes a node that joins later (the
    check runs in capacity(), about once a second) and its trials run there."""
    with RayBackend(task, None, cpus_per_trial=2) as b:
        assert b.capacity() == 1
        node = cluster.add_node(num_cpus=2, include_dashboard=False)
        try:
            deadline = time.monotonic() + 60
            while b.capacity() < 2:
                assert time.monotonic() < deadline, b.workers()
                time.sleep(0.2)
            assert len({w["node"] for w in b.workers()}) == 2
            done, _ = run_all(b, {k: {"op": "sleep", "seconds": 1, "key": k} for k in ("a", "b")})
            assert len({o.node for o in done.values()}) == 2  # side by side, one per node
        finally:
            cluster.remove_node(node, allow_graceful=False)
            # the next tests size their pools from the live nodes: let Ray see this one gone
            deadline = time.monotonic() + 30
            while any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()) \
                    and time.monotonic() < deadline:
                time.sleep(0.2)


@pytest.mark.slow
def test_nodes_share_the_work_and_a_removed_node_loses_no_task(cluster):
    workers = [cluster.add_node(num_cpus=1, resources={"slot": 1}, include_dashboard=False)
               for _ in range(3)]
    cluster.wait_for_nodes()
    rows: list = []
    try:
        with RayBackend(task, lambda k, r: rows.append(k), cpus_per_trial=1,
                        resources_per_trial={"slot": 1}) as b:
            assert b.capacity() == 3
            assert len({w["node"] for w in b.workers()}) == 3  # one trial actor per node
            seen: dict = {}

            def remove_one(backend):
                seen.update(backend.running_per_node())
                cluster.remove_node(workers.pop(), allow_graceful=False)

            payloads = {f"k{i}": {"op": "sleep", "seconds": 2, "key": f"k{i}"} for i in range(9)}
            done, losses = run_all(b, payloads, on_running=remove_one)
            assert sorted(done) == sorted(payloads)  # every key exactly once (run_all checks twice)
            assert len(seen) == 3 and set(seen.values()) == {1}  # spread: one per node
            assert losses and all(o.retryable for o in losses)
            assert len({o.node for o in done.values()}) >= 2
            assert b.capacity() == 2  # the replacement waits for a node with a free slot

            workers.append(cluster.add_node(num_cpus=1, resources={"slot": 1}, include_dashboard=False))
            deadline = time.monotonic() + 30
            while b.capacity() < 3 and time.monotonic() < deadline:
                time.sleep(0.3)
            assert b.capacity() == 3  # ... and takes one that joins
    finally:
        for node in workers:
            cluster.remove_node(node, allow_graceful=False)


# -- end to end: the sweep driver on the Ray backend ---------------------------------------------

def _by_fp(run_dir):
    from sweeps.results import read_results

    return {r["fingerprint"]: r for r in read_results(run_dir).to_pylist()}


@pytest.mark.slow
def test_sweep_on_ray_gives_the_metrics_inline_gives(cluster, tmp_path):
    """Real unlearning trials (digits, small_cnn): same seeds, same sampler -> the same numbers,
    whether trials run in this process or in Ray actors (UNLEARN_SWEEP_CACHE reaches them)."""
    from orchestrator.runner import run_sweep
    from sweeps.spec import load_spec
    from tests.sweep_util import small_spec

    raw = small_spec(n_trials=3, sampler={"name": "random", "seed": 1})
    raw["methods"] = {"ft": raw["methods"]["ft"]}
    raw["resources"] = {"backend": "inline", "cpus_per_trial": 1}
    run_sweep(load_spec(raw), tmp_path / "inline", log=None)
    raw["resources"] = {"backend": "ray", "cpus_per_trial": 1, "max_concurrent": 2}
    out = run_sweep(load_spec(raw), tmp_path / "ray", log=None)
    assert out["done"] == 3 and out["failed"] == 0
    inline, on_ray = _by_fp(tmp_path / "inline"), _by_fp(tmp_path / "ray")
    assert set(inline) == set(on_ray) and len(on_ray) == 3
    for fp, row in on_ray.items():
        assert row["state"] == "COMPLETE" and row["node"]
        for m in ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy", "avg_gap", "forget_gap"):
            assert row[m] == pytest.approx(inline[fp][m], abs=1e-6), (fp, m)


class _Results:
    """A tracker that keeps each run's whole result (metrics, reference metrics, history)."""

    def __init__(self):
        self.results: dict[str, dict] = {}

    def start(self, *a): pass

    def log(self, *a): pass

    def finish(self, key, result): self.results[key] = result

    def close(self): pass


@pytest.mark.slow
def test_sweep_with_overlap_gives_the_whole_results_inline_gives(cluster, tmp_path):
    """Real trials (digits, small_cnn) on one actor that starts each trial while the previous one's
    MIA SVC runs: every metric, reference metric and history row equals the in-process run's, all
    but the timings."""
    from orchestrator.runner import run_sweep
    from sweeps.spec import load_spec
    from tests.sweep_util import small_spec
    from unlearning.trial import untimed

    raw = small_spec(n_trials=4, sampler={"name": "random", "seed": 3})
    # the same torch thread count on both sides (Ray gives an actor num_cpus threads): a float sum's
    # order depends on it
    raw["resources"] = {"backend": "inline", "cpus_per_trial": 2}
    inline, overlapped = _Results(), _Results()
    run_sweep(load_spec(raw), tmp_path / "inline", tracker=inline, log=None)
    raw["resources"] = {"backend": "ray", "cpus_per_trial": 2, "overlap_mia": True}  # one actor
    out = run_sweep(load_spec(raw), tmp_path / "ray", tracker=overlapped, log=None)
    assert out["done"] == 4 and out["failed"] == 0
    assert set(overlapped.results) == set(inline.results) and len(inline.results) == 4
    for fp, r in overlapped.results.items():
        assert r["state"] == "COMPLETE" and "mia_efficacy" in r["metrics"]
        assert untimed(r) == untimed(inline.results[fp]), fp


def test_a_trial_timed_out_mid_overlap_is_recorded_and_the_trial_beside_it_rerun(cluster, tmp_path):
    """The first trial hangs in its CPU tail while the next one has started on the same actor:
    the driver cancels the first (FAIL, timed out), which stops the actor, and reruns the other."""
    import io

    from orchestrator.runner import run_sweep
    from sweeps.spec import load_spec
    from tests.sweep_util import small_spec
    from tests.tasks import fake_tail_task

    raw = small_spec(n_trials=4, sampler={"name": "random", "seed": 4})
    raw["base"]["cache_dir"] = str(tmp_path)  # where fake_tail_task marks the tail that hangs
    # 10 s: far above a trial's 0.5 s even on a loaded machine, far below the hang's 60 s
    raw["resources"] = {"backend": "ray", "cpus_per_trial": 2, "timeout_s": 10, "max_retries": 1}
    log = io.StringIO()
    out = run_sweep(load_spec(raw), tmp_path / "run", fn=fake_tail_task, log=log)
    rows = list(_by_fp(tmp_path / "run").values())
    assert len(rows) == 4 and out["done"] == 3 and out["failed"] == 1 and out["retried"] == 1
    (failed,) = [r for r in rows if r["state"] == "FAIL"]
    assert failed["error"].startswith("timed out after 10s") and failed["attempt"] == 0
    (rerun,) = [r for r in rows if r["attempt"] == 1]
    assert rerun["state"] == "COMPLETE"
    assert "stopped to cancel another task" in log.getvalue()


class _NodeRemover(RayBackend):
    """Removes the node under a running trial once every slot is busy (one node, once)."""

    def __init__(self, *a, cluster, nodes, **kw):
        super().__init__(*a, **kw)
        self.cluster, self.nodes, self.removed, self.seen = cluster, nodes, None, set()

    def wait(self, handles, timeout=None):
        running = self.running_per_node()
        self.seen |= set(running)
        if self.removed is None and sum(running.values()) >= self.capacity() >= 3:
            victim = next(n for n in self.nodes if any(label.endswith(n.node_id[:8]) for label in running))
            self.nodes.remove(victim)
            self.cluster.remove_node(victim, allow_graceful=False)
            self.removed = victim.node_id
        return super().wait(handles, timeout)


@pytest.mark.slow
def test_multinode_sweep_with_a_node_removed_records_every_fingerprint_once(cluster, tmp_path):
    from orchestrator.runner import run_sweep
    from sweeps.spec import load_spec
    from tests.sweep_util import small_spec
    from tests.tasks import slow_fake_task

    nodes = [cluster.add_node(num_cpus=1, resources={"slot": 1}, include_dashboard=False)
             for _ in range(3)]
    cluster.wait_for_nodes()
    try:
        raw = small_spec(n_trials=8, sampler={"name": "random", "seed": 2})
        raw["resources"] = {"backend": "ray", "cpus_per_trial": 1, "max_retries": 2}
        spec = load_spec(raw)
        backend = _NodeRemover(slow_fake_task, None, cpus_per_trial=1, resources_per_trial={"slot": 1},
                               cluster=cluster, nodes=nodes)
        out = run_sweep(spec, tmp_path, backend=backend, fn=slow_fake_task, log=None)
        assert backend.removed is not None
        rows = _by_fp(tmp_path)
        from sweeps.results import read_results

        fps = read_results(tmp_path).column("fingerprint").to_pylist()
        assert len(fps) == len(set(fps)) == 8  # every fingerprint exactly once
        assert all(r["state"] == "COMPLETE" for r in rows.values())
        assert out["done"] == 8 and out["failed"] == 0 and out["retried"] >= 1
        assert len(backend.seen) == 3  # trials ran on every node
        # (the Parquet `node` column holds the task's hostname: one machine here)
    finally:
        for node in nodes:
            cluster.remove_node(node, allow_graceful=False)
