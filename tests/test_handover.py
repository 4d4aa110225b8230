"""The handover (cluster/handover.py): tasks in this process while a backend starts, then on it.
The contract itself is tests/test_backend_contract.py's; here, what is the handover's own."""
from __future__ import annotations

import contextlib
import os
import pickle
import platform
import threading
import time

import pytest

from cluster.backend import BackendLost
from cluster.handover import Handover
from cluster.inline import InlineBackend
from tests.tasks import task


class Recording(InlineBackend):
    """The started backend: inline, recording what reached it."""

    def __init__(self):
        super().__init__(task)
        self.submitted: list[str] = []
        self.shared: list[bytes] = []
        self.shut = 0

    def submit(self, key, payload, attempt=0):
        self.submitted.append(key)
        return super().submit(key, {**payload, "op": "echo", "value": "there"}, attempt)

    def share(self, blob):
        self.shared.append(blob)
        return ("there", len(blob))  # picklable, unlike inline's own

    def shutdown(self):
        self.shut += 1


@contextlib.contextmanager
def starting(progress=None, **kw):
    """A handover whose backend (a Recording) starts once `gate` is set; torn down as tests end:
    the gate set (a start under way is waited for), then shut down."""
    inner, gate = Recording(), threading.Event()

    def start():
        gate.wait()
        return inner

    b = Handover(start, task, progress, **kw)
    try:
        yield b, inner, gate
    finally:
        gate.set()
        b.shutdown()


def wait_one(b, h, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = b.wait([h], timeout=0.5)
        if got:
            return got[0]
    raise AssertionError(f"{h} did not finish")


def test_tasks_run_here_while_the_backend_starts_then_there():
    ups: list = []
    with starting(on_up=ups.append) as (b, inner, gate):
        assert b.capacity() == 1
        o = wait_one(b, b.submit("a", {"op": "pid"}))
        assert o.result == {"pid": os.getpid()} and o.node == platform.node()
        assert inner.submitted == [] and ups == []
        gate.set()
        assert b.up(5)
        o = wait_one(b, b.submit("b", {"op": "pid"}))
        assert o.result["echo"] == "there" and inner.submitted == ["b"]
        assert ups == [inner]  # once
        b.capacity()
        assert ups == [inner]
    assert inner.shut == 1


def test_a_task_running_here_when_the_backend_comes_up_finishes_here():
    with starting() as (b, inner, gate):
        h = b.submit("long", {"op": "epochs", "n": 10, "seconds": 0.05})
        gate.set()
        b.up(5)
        assert b.capacity() == inner.capacity() + 1  # its slot, and the started backend's
        assert b.running_per_node() == {platform.node(): 1}
        h2 = b.submit("next", {"op": "pid"})  # goes there at once
        assert inner.submitted == ["next"]
        out = {}
        while len(out) < 2:
            for o in b.wait([x for x in (h, h2) if x not in out], timeout=1.0):
                out[o.handle] = o
        assert out[h].result == {"epochs": 10} and out[h2].result["echo"] == "there"
        assert b.capacity() == inner.capacity()


def test_wait_returns_when_the_backend_comes_up():
    """So the pool can fill the slots that came up while a task runs here."""
    with starting() as (b, inner, gate):
        h = b.submit("long", {"op": "epochs", "n": 40, "seconds": 0.05})
        threading.Timer(0.3, gate.set).start()
        t0 = time.monotonic()
        assert b.wait([h], timeout=10) == []
        assert time.monotonic() - t0 < 1.5 and b.capacity() == inner.capacity() + 1
        assert wait_one(b, h).result == {"epochs": 40}


def test_a_start_that_fails_is_said_by_every_later_call():
    def start():
        raise ValueError("cannot start a local Ray instance: no room\nmore detail")

    b = Handover(start, task)
    try:
        assert b.up(5)
        for call in (b.capacity, lambda: b.submit("x", {}), lambda: b.wait([], 0.1) or b.capacity()):
            with pytest.raises(BackendLost, match="^cannot start a local Ray instance: no room$"):
                call()
    finally:
        b.shutdown()


def test_a_task_here_that_is_cancelled_stops_at_its_next_epoch_and_says_nothing_more():
    rows: list = []
    with starting(lambda k, r: rows.append(r)) as (b, inner, gate):
        h = b.submit("c", {"op": "epochs", "n": 200, "seconds": 0.05})
        while not rows:
            b.wait([h], timeout=0.1)
        b.cancel(h, "timed out")
        o = wait_one(b, h)
        assert o.lost == "timed out" and o.result is None and not o.retryable
        n = len(rows)
        deadline = time.monotonic() + 2
        while b.running_per_node() and time.monotonic() < deadline:  # the thread ends at its epoch
            time.sleep(0.02)
        assert b.running_per_node() == {}
        h2 = b.submit("after", {"op": "pid"})  # the slot is free again
        assert wait_one(b, h2).result == {"pid": os.getpid()}
        assert len(rows) == n  # no row of the cancelled task after its cancel


def test_a_cancelled_task_holds_the_slot_until_it_has_stopped():
    """A task here that ignores the cancel (no epochs) keeps its thread: the next one waits for it
    instead of running beside it."""
    with starting() as (b, inner, gate):
        h = b.submit("deaf", {"op": "sleep", "seconds": 0.6})
        b.cancel(h)
        assert wait_one(b, h).lost == "cancelled"
        t0 = time.monotonic()
        r = wait_one(b, b.submit("next", {"op": "sleep", "seconds": 0.0})).result
        assert r["start"] >= t0 + 0.3  # began once the deaf one had ended


def test_a_shared_handle_is_the_bytes_here_and_the_started_backends_handle_when_sent():
    with starting() as (b, inner, gate):
        token = b.share(b"weights")
        assert token() == b"weights"
        with pytest.raises(RuntimeError, match="before its backend had started"):
            pickle.dumps(token)
        gate.set()
        b.up(5)
        assert pickle.loads(pickle.dumps(token)) == ("there", 7)
        assert pickle.loads(pickle.dumps(token)) == ("there", 7)
        assert inner.shared == [b"weights"]  # shared there once


def test_the_starter_lives_until_shutdown_and_shutdown_waits_for_a_start_under_way():
    """Ray's processes die with the thread that started them (PR_SET_PDEATHSIG): it must live on."""
    starters = lambda: [t for t in threading.enumerate() if t.name == "backend-start"]  # noqa: E731
    with starting() as (b, inner, gate):
        assert starters()
        done = threading.Event()
        threading.Thread(target=lambda: (b.shutdown(), done.set()), daemon=True).start()
        assert not done.wait(0.3)  # still starting: shutdown waits for it
        gate.set()
        assert done.wait(5) and inner.shut == 1 and not starters()

    with starting() as (b2, inner2, gate2):
        gate2.set()
        b2.up(5)
        time.sleep(0.1)
        assert starters() and inner2.shut == 0  # up, and its thread still there
        b2.shutdown()
        assert inner2.shut == 1 and not starters()


@pytest.mark.ray
@pytest.mark.slow  # about 15 s: Ray's start, two trials, Ray's shutdown
def test_a_trial_run_here_while_ray_starts_equals_the_same_trial_on_ray(monkeypatch):
    """The default backend for CPU trials on an embedded Ray: the first trial runs in this process
    while Ray starts, the next on a Ray worker; the same configuration gives the same numbers both
    ways (one torch thread each, as a 1-CPU worker has)."""
    ray = pytest.importorskip("ray")
    from orchestrator.runner import make_backend
    from sweeps.spec import load_spec
    from tests.sweep_util import small_spec
    from unlearning.tasks import run_task

    monkeypatch.setenv("UNLEARN_SWEEP_RAY_DASHBOARD", "0")
    assert not ray.is_initialized()
    raw = small_spec(resources={"backend": "ray", "cpus_per_trial": 1, "max_concurrent": 1})
    spec = load_spec(raw)
    method = next(iter(spec.methods))
    payload = spec.trial_config(method, {"lr": 0.01, "epochs": 1}, spec.seed_list()[0])
    b = make_backend(spec.resources, run_task)
    try:
        assert isinstance(b, Handover)
        here = wait_one(b, b.submit("here", payload), timeout=300)
        assert b.up(120) and ray.is_initialized()
        there = wait_one(b, b.submit("there", payload), timeout=300)
    finally:
        b.shutdown()
    assert not ray.is_initialized()
    assert here.node == platform.node() and there.node.startswith("127.0.0.1/")
    assert here.result["state"] == there.result["state"] == "COMPLETE"
    for m in ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy", "avg_gap"):
        assert here.result["metrics"][m] == pytest.approx(there.result["metrics"][m], abs=1e-6), m


def test_a_start_not_yet_due_when_shut_down_never_happens():
    started = []
    b = Handover(lambda: started.append(1) or Recording(), task, start_after_s=30)
    try:
        o = wait_one(b, b.submit("a", {"op": "pid"}))
        assert o.result == {"pid": os.getpid()} and b.capacity() == 1 and not b.up(0.2)
    finally:
        t0 = time.monotonic()
        b.shutdown()
    assert time.monotonic() - t0 < 5 and started == []


def test_the_driver_runs_the_first_trials_only_where_ray_would_run_them_here(monkeypatch):
    """orchestrator.runner decides: an embedded Ray, CPU trials that fit this machine, no CUDA here,
    no timeout, no W&B credentials in the environment; Ray at once for two slots or more."""
    import torch

    from orchestrator import runner
    from sweeps.spec import load_spec
    from tests.sweep_util import small_spec

    for k in ("RAY_ADDRESS", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_ACCESS_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)

    def res(**r):
        return load_spec(small_spec(resources={"backend": "ray", **r})).resources

    assert runner._first_trials_here(res())
    for no in ({"first_trials_here": False}, {"address": "auto"}, {"gpus_per_trial": 0.5},
               {"cpus_per_trial": 5}, {"timeout_s": 60}):
        assert not runner._first_trials_here(res(**no)), no
    for env in ("RAY_ADDRESS", "WANDB_API_KEY"):
        monkeypatch.setenv(env, "x")
        assert not runner._first_trials_here(res()), env
        monkeypatch.delenv(env)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not runner._first_trials_here(res())
    assert runner._ray_start_delay(res()) == 0.0  # four slots
    assert runner._ray_start_delay(res(max_concurrent=2)) == 0.0
    assert runner._ray_start_delay(res(max_concurrent=1)) == runner.ONE_SLOT_RAY_AFTER_S
    assert runner._ray_start_delay(res(cpus_per_trial=3)) == runner.ONE_SLOT_RAY_AFTER_S
