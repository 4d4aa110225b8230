"""The driver when the backend itself is lost, not one of its workers (a Ray cluster whose head is
gone: cluster.backend.BackendLost, raised by RayBackend's submit/wait/capacity): the sweep stops in
one line (Aborted: the CLI prints it and exits 1), runs in flight are recorded `interrupted`, nothing
is left RUNNING, the lock is released, and a resume on a working backend ends with the
configurations an uninterrupted sweep runs. tests/test_cluster_nodes.py does it with a real head
killed under a real driver."""
from __future__ import annotations

import pytest
from optuna.trial import TrialState

from cluster.backend import BackendLost
from orchestrator.runner import run_sweep
from sweeps import results as R
from sweeps.spec import load_spec
from tests.sweep_util import ScriptedBackend, fake_task, small_spec
from tests.test_reliability import _study, assert_whole
from unlearning.errors import Aborted

LOST = "the Ray cluster is gone: its head (GCS at 10.0.0.1:6379) has not answered for 30 s"


class LostAfter(ScriptedBackend):
    """Finishes `n` runs, then the cluster is gone: every call raises BackendLost."""

    def __init__(self, fn, n: int):
        super().__init__(fn, capacity=2)
        self.n, self.lost = n, False

    def _check(self):
        if self.lost:
            raise BackendLost(LOST)

    def capacity(self):
        self._check()
        return super().capacity()

    def submit(self, key, payload, attempt=0):
        self._check()
        return super().submit(key, payload, attempt)

    def wait(self, handles, timeout=None):
        self._check()
        out = super().wait(handles[:1], timeout)  # one at a time: the other stays in flight
        self.n -= len(out)
        self.lost = self.n <= 0
        return out


def test_a_lost_backend_stops_the_sweep_in_one_line_and_resume_continues(tmp_path):
    raw = small_spec(n_trials=6, sampler={"name": "random", "seed": 3})
    run_sweep(load_spec(raw), tmp_path / "whole", fn=fake_task, log=None)
    uninterrupted = assert_whole(tmp_path / "whole", 6)

    run = tmp_path / "run"
    backend = LostAfter(fake_task, n=3)
    with pytest.raises(Aborted) as e:
        run_sweep(load_spec(raw), run, backend=backend, fn=fake_task, log=None)
    msg = str(e.value)
    assert msg.startswith(LOST) and "\n" not in msg and "`resume`" in msg
    assert backend.shut  # shut down on the way out
    t = R.read_results(run).to_pandas()
    assert (t["state"] == "COMPLETE").sum() == 3 and (t["error"] == "interrupted").sum() >= 1
    assert not (run / "driver.lock").exists()
    _, study = _study(run)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # re-enqueued, not left running

    run_sweep(load_spec(raw), run, backend=ScriptedBackend(fake_task), fn=fake_task, log=None)
    assert assert_whole(run, 6) == uninterrupted
