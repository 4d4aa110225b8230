"""The runs of a sweep's configurations on their way to the record.

A configuration (a method and its parameters) runs once per seed: each (configuration, seed) is a
*run*, named by its fingerprint, one Parquet row. The `RunBook` takes configurations from a source of
them (the search, or replicate), and for each run: accepts its row when the record already holds it;
follows a run of the same fingerprint already under way; or queues it until the Original and Retrain
it needs exist (the oracle phase, orchestrator/oracles.py), then hands it to the task pool. A landed
run is written to the record (history, then the row), shown to the tracker, and put in its
configuration; once a configuration has all its rows, the book calls `on_complete(configuration)`.

Keeping models (`keep_models`: replicate, `run --keep-models`): every run asks its worker for the
unlearned model, which comes back beside the result (never into Parquet or the tracker) and is saved
as runs/<name>/models/<fingerprint>.pt with its .json (unlearning/kept.py) before the row is
written. A run already on record whose model is not kept runs again for its model alone: its
recorded row stays as it is and stands for it, the model's .json holds the metrics of the run
that made it.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from orchestrator.oracles import OracleJob, OraclePlan
from orchestrator.pool import Task, now_iso
from sweeps import results as R
from sweeps.spec import SweepSpec
from unlearning.errors import Failure, FailureKind
from unlearning.redact import scrub


@dataclass(eq=False)
class Run:
    """One configuration at one seed: a fingerprint, its TrialConfig dict, its place in the
    configuration, and the oracle identities it waits for."""

    conf: "Configuration"
    seed_index: int
    fp: str
    config: dict[str, Any]
    needs: list[str] = field(default_factory=list)
    recorded: dict[str, Any] | None = None  # its row on record, when it runs only for its model

    @property
    def label(self) -> str:
        return f"trial {self.conf.number} seed {self.seed_index}"


@dataclass(eq=False)
class Configuration:
    """A method and its parameters, run once per seed. `number` is its Optuna trial's number (for a
    replicated configuration, that of the search trial it repeats); `owner` is the source's own
    handle on it (the search's open Optuna trial)."""

    number: int
    method: str
    params: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed index -> its row on record
    owner: Any = None

    @property
    def complete(self) -> bool:
        return len(self.rows) == len(self.runs)

    def failed_rows(self) -> list[dict[str, Any]]:
        return [self.rows[i] for i in sorted(self.rows) if self.rows[i]["state"] != "COMPLETE"]


class RunBook:
    def __init__(self, spec: SweepSpec, record, *, run_id: str, phase: str, tracker,
                 oracles: OraclePlan | None, share: Callable[[bytes], Any],
                 on_complete: Callable[[Configuration], None], say: Callable[[str], None],
                 keep_models: bool = False,
                 on_partial: Callable[[Configuration], None] | None = None):
        self.spec, self.record, self.run_id, self.phase, self.share = spec, record, run_id, phase, share
        self.tracker, self.oracles, self.on_complete, self.say = tracker, oracles, on_complete, say
        self.keep_models = keep_models
        self.models = record.run_dir / "models"
        self.kept = self.rerun_for_model = 0
        self.on_partial = on_partial  # a row accepted, the configuration not yet complete
        self.schema = R.trial_schema(spec)
        self.queue: deque[Run] = deque()  # waiting for their oracles or a slot
        self.running: dict[str, Run] = {}  # fingerprint -> the run in flight
        self.oracles_running = 0
        self.followers: dict[str, list[Run]] = {}  # fingerprint -> runs waiting on the same one
        self.reused = 0

    @property
    def busy(self) -> bool:
        """Runs (or oracles) queued or in flight."""
        return bool(self.queue or self.running or self.oracles_running)

    # -- in ------------------------------------------------------------------------------------------
    def add(self, conf: Configuration, rejected: dict[int, Failure] | None = None,
            runs: list[Run] | None = None) -> None:
        """Take a configuration's runs (`runs`: only these, the others later or never): each is
        accepted from the record, follows the same fingerprint under way, or is queued. `rejected`:
        seed index -> why that run's config was refused up front (recorded as a FAIL row, once per
        fingerprint)."""
        for run in conf.runs if runs is None else runs:
            why = (rejected or {}).get(run.seed_index)
            if why is not None and not self.record.has(run.fp):
                self._land(run, None, why)
                continue
            row = self.record.reusable(run.fp)
            if row is not None and self.keep_models and row["state"] == "COMPLETE" and \
                    not (self.models / f"{run.fp}.json").is_file() and not self._under_way(run.fp):
                run.recorded = row  # on record, its model not kept: run again for the model alone
                self.reused += 1
                self.rerun_for_model += 1
                self._queue(run)
            elif row is not None:
                self.reused += 1
                self._accept(run, row)
            elif self._under_way(run.fp):
                self.followers.setdefault(run.fp, []).append(run)
            else:
                self._queue(run)

    def _under_way(self, fp: str) -> bool:
        return fp in self.running or any(q.fp == fp for q in self.queue)

    def _queue(self, run: Run) -> None:
        if self.oracles is not None:
            run.needs = self.oracles.require(run.config)
        self.queue.append(run)

    # -- out to the pool -------------------------------------------------------------------------------
    def next_task(self) -> Task | None:
        """A run whose oracles exist first (the first result comes as early as it can), then an oracle
        a waiting run needs. Runs whose oracle failed land as FAIL on the way."""
        for run in list(self.queue):
            state = self.oracles.state(run.needs) if (self.oracles and run.needs) else "ready"
            if state == "waiting":
                continue
            self.queue.remove(run)
            if state == "failed":
                assert self.oracles is not None  # only oracles fail
                self._land(run, None, self.oracles.failure(run.needs))
                continue
            return self._run_task(run)
        job = self.oracles.next_pending() if self.oracles else None
        if job is None:
            return None
        assert self.oracles is not None  # the job came from it
        job.status, job.t0 = "running", time.perf_counter()
        self.oracles_running += 1
        key = f"oracle-{list(self.oracles.jobs).index(job.ident)}"  # unique per job: handles are keys
        return Task(key, job.payload, f"oracle {job.label}", item=job)

    def _run_task(self, run: Run) -> Task:
        self.running[run.fp] = run
        self._track("start", run.fp, run.conf.number, {"method": run.conf.method, **run.conf.params,
                                                        "seed_index": run.seed_index}, run.config)
        payload = run.config
        files = self.oracles.files(run.needs) if self.oracles is not None and run.needs else {}
        if files:  # where its oracles are, for a node that lacks them (none: found in the cache here)
            payload = {**run.config, "shared_files": files}
        if self.keep_models:
            payload = {**payload, "keep_model": True}
        return Task(run.fp, payload, run.label, item=run, timeout_s=self.spec.resources.timeout_s)

    # -- back from the pool -----------------------------------------------------------------------------
    def landed(self, task: Task, result: dict[str, Any] | None, failure: Failure | None, node: str) -> None:
        if isinstance(task.item, OracleJob):
            self.oracles_running -= 1
            self._oracle_landed(task.item, result, failure)
            return
        run = task.item
        del self.running[run.fp]
        self._land(run, result, failure, node=node, attempt=task.attempt, started_at=task.started_at)

    def _oracle_landed(self, job: OracleJob, result, failure: Failure | None) -> None:
        assert self.oracles is not None
        if failure is not None:
            job.status, job.failure = "failed", failure
            if failure.kind != FailureKind.INTERRUPTED:
                self.say(f"oracle {job.label} failed: {failure.message}")
            return
        self.say(self.oracles.landed(job, result, self.share))

    def _land(self, run: Run, result: dict[str, Any] | None, failure: Failure | None, *, node: str = "",
              attempt: int = 0, started_at: str = "") -> None:
        """The kept model first, then Parquet (history, then the row), then the tracker, then the
        configuration (an interrupted run is recorded but not accepted: its configuration goes back
        to the source). A run that ran only for its model writes no row: its recorded one stands."""
        kept = None
        if result is not None and "kept_model" in result:  # bytes: never into Parquet or the tracker
            result = dict(result)
            kept = result.pop("kept_model")
        if kept is not None and result is not None and failure is None and result.get("state") == "COMPLETE":
            self._keep(run, kept, result, node)
        if run.recorded is not None:
            if failure is not None and failure.kind == FailureKind.INTERRUPTED:
                return
            if kept is None:
                why = failure.message if failure is not None else (result or {}).get("error")
                self.say(f"{run.label}: its model could not be kept ({why or 'no model came back'}); "
                         "its recorded row stands")
            self._accept(run, run.recorded)
            for f in self.followers.pop(run.fp, []):
                self._accept(f, run.recorded)
            return
        row = scrub(R.trial_row(spec=self.spec, number=run.conf.number, fp=run.fp, config=run.config,
                                seed_index=run.seed_index, result=result, failure=failure,
                                attempt=attempt, node=node, started_at=started_at, ended_at=now_iso(),
                                seeds_in_trial=len(run.conf.runs), run_id=self.run_id, phase=self.phase))
        self.record.write(row, R.history_rows(self.spec, run.conf.number, run.fp,
                                              run.config.get("method", ""), result), self.schema)
        self._track("finish", run.fp, result if result is not None else
                    {"state": "FAIL", "error": row["error"], "failure_kind": row["failure_kind"]})
        if failure is not None and failure.kind == FailureKind.INTERRUPTED:
            self.followers.pop(run.fp, None)
            return
        self._accept(run, row)
        for f in self.followers.pop(run.fp, []):
            self.reused += 1
            self._accept(f, row)

    def _keep(self, run: Run, kept: dict[str, Any], result: dict[str, Any], node: str) -> None:
        """runs/<name>/models/<fingerprint>.pt and .json: the model and what reproduces it."""
        from unlearning.kept import save_unlearned
        from unlearning.registry import MODELS

        model = run.config.get("model", "small_cnn")
        info = {"sweep": self.spec.name, "run_id": self.run_id, "phase": self.phase,
                "trial_number": run.conf.number, "seed_index": run.seed_index,
                "seeds": run.config.get("seeds", {}), "method": run.conf.method,
                "params": result.get("params") or run.conf.params, "config": run.config,
                "model": model, "model_source": MODELS.source_sha256(model),
                "metrics": result.get("metrics", {}), "node": node or result.get("node", ""),
                "created": now_iso()}
        if run.recorded is not None:
            info["rerun_for_model"] = True
            moved = [m for m in ("unlearn_acc", "retain_acc", "test_acc")
                     if run.recorded.get(m) != info["metrics"].get(m)]
            if moved:  # a device whose kernels are not deterministic: say so, the JSON holds both
                info["recorded_metrics"] = {m: run.recorded.get(m) for m in moved}
                self.say(f"{run.label}: its model, run again, scores {', '.join(moved)} otherwise than "
                         "the record (a nondeterministic device); its .json holds its own numbers")
        save_unlearned(self.models, run.fp, kept, scrub(info))
        self.kept += 1

    def drop(self, runs: list[Run], failure: Failure) -> None:
        """Record runs that will not run (a raced configuration's other seeds) as rows of `failure`,
        without running them; their configuration completes as usual."""
        for run in runs:
            # a run on record stands: one that ran (a configuration proposed again) is never
            # overwritten, one dropped before (a resumed sweep) is taken as it was recorded
            row = self.record.reusable(run.fp)
            if row is None and self.record.states.get(run.fp, (None, None))[1] == failure.kind:
                row = R.read_row(self.record.run_dir, run.fp)
            if row is not None:
                self._accept(run, row)
            else:
                self._land(run, None, failure)

    def _accept(self, run: Run, row: dict[str, Any]) -> None:
        conf = run.conf
        conf.rows[run.seed_index] = row
        if conf.complete:
            self.on_complete(conf)
        elif self.on_partial is not None:
            self.on_partial(conf)

    def _track(self, hook: str, *args) -> None:
        if self.tracker is not None:
            getattr(self.tracker, hook)(*args)

    def clear(self) -> None:
        """Forget what waits (a stopped sweep): the source re-enqueues its configurations."""
        self.queue.clear()
        self.followers.clear()
