"""The Backend contract, run against every backend (inline, Ray, and the handover that runs tasks in
this process while a backend starts): what the driver relies on."""
from __future__ import annotations

import os
import threading
import time

import pytest

from cluster.backend import Backend, Outcome
from cluster.inline import InlineBackend
from tests.tasks import task


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("UNLEARN_SWEEP_RAY_DASHBOARD", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


class Rows:
    def __init__(self):
        self.rows: list[tuple[str, dict]] = []

    def __call__(self, key, row):
        self.rows.append((key, row))


@pytest.fixture(scope="module", params=["inline", "handover", pytest.param("ray", marks=pytest.mark.ray),
                                        pytest.param("ray-overlap", marks=pytest.mark.ray)])
def backend(request):
    """One backend per kind for the module (Ray actors take seconds to start); `.rows` records
    progress, `.concurrent` says whether `submit` returns before the task has run, `.own_process`
    whether a task runs in a process of its own. ray-overlap: an actor takes its next task while the
    previous one's CPU tail runs. handover: a backend that is still starting throughout, so every
    task runs in this process, on a thread."""
    rows = Rows()
    gate = threading.Event()
    if request.param == "inline":
        b = InlineBackend(task, rows)
    elif request.param == "handover":
        from cluster.handover import Handover

        b = Handover(lambda: (gate.wait(), InlineBackend(task, rows))[1], task, rows)
    else:
        request.getfixturevalue("ray_instance")
        from cluster.ray_backend import RayBackend
        b = RayBackend(task, rows, cpus_per_trial=1, max_concurrent=2,
                       overlap=request.param == "ray-overlap")
    b.rows, b.concurrent = rows, request.param != "inline"
    b.own_process = request.param.startswith("ray")
    yield b
    gate.set()
    b.shutdown()


def wait_all(backend, handles, timeout=60.0) -> dict:
    out, left, deadline = {}, list(handles), time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        for o in backend.wait(left, timeout=1.0):
            assert o.handle not in out, "an outcome was returned twice"
            out[o.handle] = o
            left.remove(o.handle)
    assert not left, f"not finished: {left}"
    return out


def test_is_a_backend_with_capacity(backend):
    b = backend
    assert isinstance(b, Backend)
    assert b.capacity() >= 1


def test_submit_wait_returns_result(backend):
    b = backend
    h = b.submit("k1", {"op": "echo", "value": [1, "a"]})
    assert h.key == "k1" and h.attempt == 0
    (o,) = wait_all(b, [h]).values()
    assert isinstance(o, Outcome) and o.lost is None and o.result["echo"] == [1, "a"]
    assert o.node
    assert b.wait([h], timeout=0.1) == []  # reported once only


def test_attempt_is_kept(backend):
    b = backend
    h = b.submit("k", {"op": "echo", "value": 1}, attempt=2)
    assert h.attempt == 2 and wait_all(b, [h])[h].result["echo"] == 1


def test_task_exception_is_lost_not_retryable(backend):
    b = backend
    h = b.submit("bad", {"op": "raise", "message": "no such thing"})
    o = wait_all(b, [h])[h]
    assert o.result is None and not o.retryable
    assert "ValueError" in o.lost and "no such thing" in o.lost
    # the backend keeps working after a task's exception
    h2 = b.submit("good", {"op": "echo", "value": 3})
    assert wait_all(b, [h2])[h2].result["echo"] == 3


def test_a_cpu_tail_gives_the_result(backend):
    b = backend
    h = b.submit("t", {"op": "tail", "value": [2, "b"], "device_s": 0.1, "tail_s": 0.2})
    r = wait_all(b, [h])[h].result
    assert r["tail"] == [2, "b"] and r["in_tail"][0] >= r["device"][1]  # after the device part


def test_a_tail_that_raises_is_lost_not_retryable(backend):
    b = backend
    h = b.submit("tr", {"op": "tail", "raise": "svc broke"})
    o = wait_all(b, [h])[h]
    assert o.result is None and not o.retryable and "ValueError" in o.lost and "svc broke" in o.lost
    h2 = b.submit("tr2", {"op": "tail", "value": 4})
    assert wait_all(b, [h2])[h2].result["tail"] == 4


def test_progress_rows_arrive_in_order(backend):
    b, rows = backend, backend.rows
    h = b.submit("p", {"op": "epochs", "n": 4})
    assert wait_all(b, [h])[h].result == {"epochs": 4}
    assert [r["epoch"] for k, r in rows.rows if k == "p"] == [0, 1, 2, 3]


def test_wait_with_timeout_returns_empty_when_nothing_finished(backend):
    b = backend
    if not b.concurrent:  # inline runs at submit: nothing can be unfinished
        assert b.wait([], timeout=0.1) == []
        return
    h = b.submit("slow", {"op": "epochs", "n": 50, "seconds": 0.1})
    t0 = time.monotonic()
    assert b.wait([h], timeout=0.3) == []
    assert time.monotonic() - t0 < 3
    b.cancel(h)
    wait_all(b, [h])


def test_cancel(backend):
    b = backend
    # 30 s of epochs: a task in this process (handover) stops at its next epoch, one on Ray at once
    h = b.submit("c", {"op": "epochs", "n": 300 if b.concurrent else 1, "seconds": 0.1})
    b.cancel(h, reason="timed out")
    o = wait_all(b, [h], timeout=20)[h]
    assert not o.retryable
    if b.concurrent:  # a running task is stopped, and its slot works again
        assert o.lost == "timed out" and o.result is None
        h2 = b.submit("after", {"op": "echo", "value": 5})
        assert wait_all(b, [h2])[h2].result["echo"] == 5
    else:  # inline finished it at submit; either answer is allowed, exactly once
        assert (o.result is None) != (o.lost is None)


def test_many_tasks_each_finish_once(backend):
    b = backend
    hs = [b.submit(f"t{i}", {"op": "echo", "value": i}) for i in range(6)]
    out = wait_all(b, hs)
    assert sorted(o.result["echo"] for o in out.values()) == list(range(6))


def test_worker_death_is_lost_and_retryable(backend):
    if not backend.own_process:
        pytest.skip("tasks run in this process: a dying task takes the driver with it")
    b = backend
    h = b.submit("die", {"op": "die"})
    o = wait_all(b, [h])[h]
    assert o.result is None and o.retryable and o.lost
    h2 = b.submit("again", {"op": "echo", "value": 7}, attempt=1)
    assert wait_all(b, [h2])[h2].result["echo"] == 7
    assert b.capacity() >= 1


def test_shared_bytes_reach_every_task(backend):
    import hashlib

    blob = os.urandom(3 << 20)  # a few MB, as a small model's weights
    token = backend.share(blob)
    hs = [backend.submit(f"s{i}", {"op": "shared", "blob": token}) for i in range(3)]
    out = wait_all(backend, hs)
    assert {o.result["sha"] for o in out.values()} == {hashlib.sha256(blob).hexdigest()}
