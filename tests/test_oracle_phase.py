"""The oracle phase through the real driver with a fake task function (milliseconds): every Original and
Retrain the seeds need is one task, run once and before any run that needs it; its files reach the runs'
payloads; an oracle that fails fails the runs that need it, with the oracle's failure kind."""
from __future__ import annotations

import threading

from orchestrator.runner import run_sweep
from sweeps.results import read_results
from sweeps.spec import load_spec
from tests.sweep_util import ScriptedBackend, fake_task, small_spec


class Tasks:
    """A task function that logs what it ran, in order: oracle tasks return a fake cache file."""

    def __init__(self, fail: str | None = None):
        self.log: list[tuple[str, object]] = []
        self.fail = fail  # "diverged" | "lost": the retrain oracle fails so
        self.lock = threading.Lock()

    def __call__(self, payload, on_epoch=None):
        with self.lock:
            if payload.get("task") == "oracle":
                seeds = payload["config"]["seeds"]
                self.log.append(("oracle", (payload["kind"], seeds["train_seed"], seeds["split_seed"])))
                if self.fail == "diverged" and payload["kind"] == "retrain":
                    return {"ok": False, "failure": {"kind": "diverged", "message": "non-finite loss"}}
                return {"ok": True, "files": {f"{payload['kind']}-{seeds['train_seed']}.pt": b"w"},
                        "trained": True, "runtime_s": 0.0, "node": "n1"}
            self.log.append(("run", sorted(payload.get("shared_files", {}))))
        return fake_task({k: v for k, v in payload.items() if k != "shared_files"}, on_epoch)


class LoseOracles(ScriptedBackend):
    """Every oracle task's worker dies (retryable), every attempt; trials run."""

    def wait(self, handles, timeout=None):
        from cluster.backend import Outcome

        out = []
        for h in handles:
            if h in self.pending and self.pending[h].get("task") == "oracle":
                self.pending.pop(h)
                out.append(Outcome(h, lost="worker died", retryable=True, node="n1"))
        return out or super().wait(handles, timeout)

    def share(self, blob):
        return lambda: blob


def test_each_oracle_once_and_before_the_runs_that_need_it(tmp_path):
    tasks = Tasks()
    spec = load_spec(small_spec(n_trials=3, seeds=[0, 1], seed_axes=["train", "unlearn"]))
    backend = ScriptedBackend(tasks, capacity=2)
    backend.share = lambda blob: blob  # the files travel as they are
    out = run_sweep(spec, tmp_path, backend=backend, oracle_phase=True, log=None)
    oracles = [what for kind, what in tasks.log if kind == "oracle"]
    assert sorted(oracles) == [("original", 0, 0), ("original", 1, 0), ("retrain", 0, 0), ("retrain", 1, 0)]
    runs = [(i, files) for i, (kind, files) in enumerate(tasks.log) if kind == "run"]
    needed = ({"original-0.pt", "retrain-0.pt"}, {"original-1.pt", "retrain-1.pt"})
    assert len(runs) == 6 and all(set(f) in needed for _, f in runs)
    made = {f"{k}-{t}.pt": i for i, (kind, (k, t, _)) in
            ((i, e) for i, e in enumerate(tasks.log) if e[0] == "oracle")}
    assert all(made[f] < i for i, files in runs for f in files)  # a run only after its own oracles
    assert out["done"] == 3 and out["oracles"] == {"ready": 4}


def test_a_failed_oracle_fails_its_runs_with_the_oracles_kind(tmp_path):
    spec = load_spec(small_spec(n_trials=2, fail_fast=0))
    backend = ScriptedBackend(Tasks(fail="diverged"), capacity=2)
    backend.share = lambda blob: blob
    out = run_sweep(spec, tmp_path, backend=backend, oracle_phase=True, log=None)
    rows = read_results(tmp_path).to_pandas()
    assert out["failed"] == 2 and len(rows) == 2
    assert (rows["failure_kind"] == "diverged").all()
    assert rows["error"].str.startswith("oracle retrain (train_seed 0, split_seed 0) could not be trained").all()


def test_a_lost_oracle_leaves_transient_failures_that_resume_reruns(tmp_path):
    spec = load_spec(small_spec(n_trials=2, fail_fast=0, resources={"backend": "inline", "max_retries": 1}))
    out = run_sweep(spec, tmp_path, backend=LoseOracles(Tasks(), capacity=2), oracle_phase=True, log=None)
    rows = read_results(tmp_path).to_pandas()
    assert out["failed"] == 2 and (rows["failure_kind"] == "lost_worker").all()
    backend = ScriptedBackend(Tasks(), capacity=2)
    backend.share = lambda blob: blob
    again = run_sweep(spec, tmp_path, backend=backend, oracle_phase=True, log=None)
    rows = read_results(tmp_path).to_pandas()
    assert again["done"] == 2 and (rows["state"] == "COMPLETE").sum() == 2
