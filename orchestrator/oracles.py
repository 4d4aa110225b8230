"""The oracle phase: every Original and Retrain model a sweep (or a replicate) needs, trained as
tasks on the backend before the trials that need them, side by side, each once.

Which models a run needs is read from its configuration alone (no data set on the driver): the
Original depends on the data, model, training recipe and train seed; Retrain also on the split and
its seed. Each distinct one is one task ({"task": "oracle"} to unlearning.tasks.run_task): the
worker trains it, or finds it in its node's cache, and sends the cache files back; the driver
shares them through the backend (Ray's object store), and every trial payload carries handles to
the files its oracles are in, so a worker on a node that lacks them fetches them instead of
training them again. Nodes need no shared file system; each keeps its own content-addressed cache.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from unlearning.errors import Failure, FailureKind

# what an Original is determined by (beside the train seed); Retrain adds the split and its seed
_ORIGINAL_KEYS = ("data", "model", "train", "precision", "device", "cache_dir")


@dataclass
class OracleJob:
    """One oracle model as a backend task, and what became of it."""

    ident: str
    kind: str  # original | retrain
    payload: dict[str, Any]
    label: str  # for people: "retrain (train_seed 1, split_seed 0)"
    status: str = "pending"  # pending -> running -> ready | failed
    attempt: int = 0
    files: dict[str, Any] = field(default_factory=dict)  # cache file name -> the backend's handle
    failure: Failure | None = None
    t0: float = 0.0


def needs_retrain(cfg: dict[str, Any]) -> bool:
    from unlearning.methods import get_method

    return bool(cfg.get("retrain", True)) or get_method(cfg["method"]).from_oracle


def oracle_idents(cfg: dict[str, Any]) -> list[tuple[str, str, str]]:
    """[(kind, identity, label)] of the oracles a normalised TrialConfig dict needs."""
    seeds = cfg["seeds"]
    base = {k: cfg.get(k) for k in _ORIGINAL_KEYS} | {"train_seed": seeds["train_seed"]}
    out = [("original", json.dumps({"kind": "original", **base}, sort_keys=True),
            f"original (train_seed {seeds['train_seed']})")]
    if needs_retrain(cfg):
        out.append(("retrain", json.dumps({"kind": "retrain", **base, "split": cfg.get("split"),
                                           "split_seed": seeds["split_seed"]}, sort_keys=True),
                    f"retrain (train_seed {seeds['train_seed']}, split_seed {seeds['split_seed']})"))
    return out


class OraclePlan:
    """The oracle jobs of a sweep, keyed by identity."""

    def __init__(self):
        self.jobs: dict[str, OracleJob] = {}
        self.seeds = 0  # how many seeds the plan was made for (for the log)

    def require(self, cfg: dict[str, Any]) -> list[str]:
        """Register the oracles `cfg` needs (once each); returns their identities."""
        idents = []
        for kind, ident, label in oracle_idents(cfg):
            if ident not in self.jobs:
                self.jobs[ident] = OracleJob(ident, kind, {"task": "oracle", "kind": kind, "config": cfg},
                                             label)
            idents.append(ident)
        return idents

    def held_here(self, indices: list[int]) -> list[str]:
        """The jobs at `indices` (in `jobs` order) are in the cache the workers read (the driver
        looked, on their machine): ready without a task, with no files to hand over. Their labels."""
        jobs = list(self.jobs.values())
        for i in indices:
            jobs[i].status = "ready"
        return [jobs[i].label for i in indices]

    def next_pending(self) -> OracleJob | None:
        return next((j for j in self.jobs.values() if j.status == "pending"), None)

    def state(self, idents: list[str]) -> str:
        """ready (every one), failed (any one) or waiting."""
        sts = [self.jobs[i].status for i in idents if i in self.jobs]
        if "failed" in sts:
            return "failed"
        return "ready" if all(s == "ready" for s in sts) else "waiting"

    def failure(self, idents: list[str]) -> Failure:
        """A run's failure when an oracle it needs failed: of the oracle's kind (a lost worker stays
        transient, so `resume` tries again)."""
        j = next(self.jobs[i] for i in idents if self.jobs[i].status == "failed")
        assert j.failure is not None
        return Failure(kind=j.failure.kind, message=f"oracle {j.label} could not be trained: {j.failure}")

    def files(self, idents: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i in idents:
            out.update(self.jobs[i].files)
        return out

    def landed(self, job: OracleJob, result: dict[str, Any], share) -> str:
        """Record an oracle task's result; returns a line for the log."""
        if not result.get("ok"):
            job.status = "failed"
            job.failure = Failure.model_validate(result["failure"]) if result.get("failure") else \
                Failure(kind=FailureKind.ERROR, message="the oracle task gave no reason")
            return f"oracle {job.label} failed: {job.failure}"
        job.files = {name: share(blob) for name, blob in (result.get("files") or {}).items()}
        job.status = "ready"
        how = (f"trained in {result.get('runtime_s', float('nan')):.1f}s" if result.get("trained")
               else "found in the cache")
        return f"oracle {job.label} ready: {how} on {result.get('node', '?')} " \
               f"({time.perf_counter() - job.t0:.1f}s)"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for j in self.jobs.values():
            out[j.status] = out.get(j.status, 0) + 1
        return out
