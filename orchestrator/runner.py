"""The driver: ask -> sample -> fingerprint -> (skip if in Parquet) -> submit -> wait -> write Parquet
-> tell, keeping every backend slot busy.

An Optuna trial is one sampled configuration; it runs once per seed of the spec (a "run", one
fingerprint, one Parquet file). The trial is told when all its runs have landed: the objectives are
the means over seeds, the constraints (told with `trial.set_constraint`) too; any failed run fails
the trial. Parquet is always written before Optuna is told, so a driver killed at any instant loses
nothing that `resume` cannot rebuild: RUNNING trials are re-enqueued and runs already in Parquet
are reused, not run again.
"""
from __future__ import annotations

import hashlib
import json
import math
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import optuna
import yaml
from optuna.trial import TrialState

from cluster.backend import Backend, Handle, Outcome
from orchestrator.progress import Progress
from orchestrator.tracking import scrub
from sweeps import results as R
from sweeps.space import suggest
from sweeps.spec import SweepSpec
from sweeps.study import DriverLock, counted, fingerprint, open_study, reconcile, requeue
from unlearning.errors import UserError

TRANSIENT = ("lost:", "timed out", "interrupted")  # failures a later run may not repeat


def make_backend(resources, fn: Callable[..., dict], progress=None) -> Backend:
    """The one place backends are built: inline (in-process) or Ray (embedded or by address)."""
    if resources.backend == "inline":
        import torch

        from cluster.inline import InlineBackend

        # trials run in this process: honour cpus_per_trial (oversubscribed threads are far slower)
        torch.set_num_threads(max(1, int(resources.cpus_per_trial)))

        return InlineBackend(fn, progress)
    try:
        from cluster.ray_backend import ClusterConfigError, RayBackend
    except ImportError as e:
        raise UserError(f"resources.backend: ray is not usable here ({e}); use --backend inline") from None
    try:
        return RayBackend(fn, progress, address=resources.address, cpus_per_trial=resources.cpus_per_trial,
                          gpus_per_trial=resources.gpus_per_trial, max_concurrent=resources.max_concurrent)
    except ClusterConfigError as e:  # a request no node can meet, an unreachable address: exit 2
        raise UserError(f"resources: {e}") from None


@dataclass
class Run:
    """One configuration at one seed: a fingerprint, a payload, a place in its trial."""

    trial: "OpenTrial"
    seed_index: int
    fp: str
    config: dict[str, Any]
    attempt: int = 0
    t0: float = 0.0
    started_at: str = ""
    cancelled: str | None = None  # why the driver cancelled it (timeout)


@dataclass
class OpenTrial:
    trial: optuna.Trial
    method: str
    params: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def number(self) -> int:
        return self.trial.number


class Driver:
    def __init__(self, spec: SweepSpec, run_dir: Path, *, backend: Backend | None = None,
                 tracker=None, fn: Callable[..., dict] | None = None, log: TextIO | None = sys.stderr):
        self.spec, self.run_dir, self.log_to = spec, Path(run_dir), log
        self._backend, self._tracker, self._fn = backend, tracker, fn
        self.schema = R.trial_schema(spec)
        self.inflight: dict[Handle, Run] = {}
        self.queue: deque[Run] = deque()
        self.open: dict[int, OpenTrial] = {}
        self.followers: dict[str, list[Run]] = {}  # fp -> runs waiting on the same fp in flight
        self.done = self.failed = self.reused = self.retried = 0
        self.progress: Progress | None = None
        self._tracker_warned = False

    # -- helpers ---------------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        if self.log_to is not None:
            line = f"[{self.spec.name}] {msg}"
            if self.progress is not None:  # a terminal bar must not be torn
                self.progress.write(line)
            else:
                print(line, file=self.log_to, flush=True)

    def _track(self, hook: str, *args) -> None:
        """A tracker is a view: if it fails, warn once and go on."""
        try:
            getattr(self.tracker, hook)(*args)
        except Exception as e:  # noqa: BLE001
            if not self._tracker_warned:
                self._tracker_warned = True
                self.say(f"warning: tracker {hook} failed ({type(e).__name__}: {e}); the sweep goes on")

    def _progress(self, key: str, row: dict[str, Any]) -> None:
        self._track("log", key, row)

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t_start = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = DriverLock(self.run_dir)
        lock.acquire()
        old_term = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, _raise_interrupt)
        except ValueError:  # not the main thread
            old_term = None
        try:
            # the study first: if it refuses the spec (directions, storage), spec.yaml stays as it was
            self.study = open_study(self.spec, self.run_dir)
            (self.run_dir / "spec.yaml").write_text(yaml.safe_dump(scrub(self.spec.dump()), sort_keys=False))
            fixed = reconcile(self.study)
            if fixed:
                self.say(f"resume: {len(fixed)} trial(s) left RUNNING by a dead driver re-enqueued "
                         f"({', '.join(map(str, fixed))})")
            self.counted = counted(self.study)
            self.progress = Progress.for_study(self.spec, self.study, self.counted, stream=self.log_to)
            self.known = R.known_fingerprints(self.run_dir)
            if self._backend is None:
                from unlearning.trial import run_trial_payload

                self._backend = make_backend(self.spec.resources, self._fn or run_trial_payload,
                                             self._progress)
            self.backend = self._backend
            if getattr(self.backend, "dashboard_hint", None):
                self.say(self.backend.dashboard_hint)
            if self._tracker is None:
                from orchestrator.tracking import make_tracker

                try:
                    self._tracker = make_tracker(self.spec.tracking.model_dump(), self.spec.name, self.run_dir)
                except UserError:
                    raise
                except Exception as e:  # noqa: BLE001
                    from orchestrator.tracking import NullTracker

                    self.say(f"warning: tracker unavailable ({type(e).__name__}: {e}); Parquet only")
                    self._tracker = NullTracker()
            self.tracker = self._tracker
            try:
                self._loop()
            except KeyboardInterrupt:
                self._interrupt()
                raise
            finally:
                self.progress.close()
                self.backend.shutdown()
                self._track("close")
        finally:
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            lock.release()
        wall = time.perf_counter() - t_start
        self.say(f"finished: {self.done} trial(s) done, {self.failed} failed, {self.reused} run(s) "
                 f"reused from Parquet, {self.retried} retried, {wall:.1f}s")
        return {"done": self.done, "failed": self.failed, "reused": self.reused, "retried": self.retried,
                "wall_s": wall, "run_dir": str(self.run_dir)}

    def _capacity(self) -> int:
        cap = self.backend.capacity()
        m = self.spec.resources.max_concurrent
        return max(1, min(cap, m) if m else cap)

    def _loop(self) -> None:
        n_trials = self.spec.n_trials
        while True:
            cap = self._capacity()
            while len(self.inflight) < cap:
                if self.queue:
                    self._submit(self.queue.popleft())
                elif self.counted + len(self.open) < n_trials:
                    self._ask()
                else:
                    break
            self.progress.show(len(self.inflight), getattr(self.backend, "running_per_node", dict)())
            if not self.inflight:  # nothing queued or open either: every open trial has a run in flight
                if self.counted >= n_trials:
                    break
                continue
            for o in self.backend.wait(list(self.inflight), timeout=self._poll()):
                self._outcome(o)
            self._check_timeouts()

    def _poll(self) -> float:
        t = self.spec.resources.timeout_s
        if not t:
            return 1.0
        now = time.perf_counter()
        left = min((r.t0 + t - now for r in self.inflight.values() if not r.cancelled), default=1.0)
        return max(0.01, min(1.0, left))

    def _ask(self) -> None:
        trial = self.study.ask()
        method, params = suggest(trial, self.spec)
        ot = OpenTrial(trial, method, params)
        self.open[trial.number] = ot
        invalid: dict[int, str] = {}
        for i, seeds in enumerate(self.spec.seed_list()):
            raw = self.spec.trial_config(method, params, seeds)
            try:
                fp, cfg = fingerprint(raw)
            except UserError as e:  # a sampled combination the method's config rejects: a FAIL row,
                # content-addressed so the same rejected configuration is recorded once
                digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode())
                fp, cfg, invalid[i] = f"invalid-{digest.hexdigest()[:12]}", raw, \
                    f"invalid configuration: {e}"
            ot.runs.append(Run(ot, i, fp, cfg))
        trial.set_user_attr("fingerprints", [r.fp for r in ot.runs])
        for run in ot.runs:
            if run.seed_index in invalid and run.fp not in self.known:
                self._land(run, None, error=invalid[run.seed_index])
                continue
            if run.fp in self.known:
                row = R.read_row(self.run_dir, run.fp)
                if row is not None and (row["state"] == "COMPLETE" or
                                        not str(row.get("error") or "").startswith(TRANSIENT)):
                    self.reused += 1
                    self._accept(run, row)
                    continue
            if any(r.fp == run.fp for r in self.inflight.values()) or \
                    any(r.fp == run.fp for r in self.queue):
                self.followers.setdefault(run.fp, []).append(run)
                continue
            self.queue.append(run)

    def _submit(self, run: Run) -> None:
        run.t0, run.started_at = time.perf_counter(), R.now_iso()
        if run.attempt == 0:
            self._track("start", run.fp, run.trial.number, {"method": run.trial.method, **run.trial.params},
                        run.config)
        h = self.backend.submit(run.fp, run.config, attempt=run.attempt)
        self.inflight[h] = run

    def _outcome(self, o: Outcome) -> None:
        run = self.inflight.pop(o.handle, None)
        if run is None:
            return
        if o.result is not None:  # finished (even if a timeout cancel raced with it)
            self._land(run, o.result, node=o.node)
            return
        reason = o.lost or "lost without a reason"
        retries = self.spec.resources.max_retries
        if run.cancelled is None and o.retryable and run.attempt < retries:
            run.attempt += 1
            self.retried += 1
            self.say(f"trial {run.trial.number} seed {run.seed_index}: {reason}; retry "
                     f"{run.attempt}/{retries}")
            self._submit(run)
            return
        if run.cancelled:
            error = run.cancelled
        else:
            error = reason if reason.startswith(TRANSIENT) else f"lost: {reason}"
            error += f" (attempt {run.attempt + 1}, max_retries {retries})"
        self._land(run, None, error=error, node=o.node)

    def _check_timeouts(self) -> None:
        t = self.spec.resources.timeout_s
        if not t:
            return
        now = time.perf_counter()
        for h, run in list(self.inflight.items()):
            if run.cancelled is None and now - run.t0 > t:
                run.cancelled = f"timed out after {t:g}s"
                self.backend.cancel(h, run.cancelled)

    # -- landing results -------------------------------------------------------------------------
    def _land(self, run: Run, result: dict[str, Any] | None, error: str | None = None, node: str = ""
              ) -> None:
        """Parquet first (history, then the trial row), then the tracker, then maybe tell."""
        row = scrub(R.trial_row(spec=self.spec, number=run.trial.number, fp=run.fp, config=run.config,
                                seed_index=run.seed_index, result=result, error=error,
                                attempt=run.attempt, node=node, started_at=run.started_at,
                                ended_at=R.now_iso()))  # no secret reaches the record
        R.write_trial(self.run_dir, row, R.history_rows(self.spec, run.trial.number, run.fp,
                                                         run.config.get("method", ""), result),
                      self.schema)
        self.known.add(run.fp)
        self._track("finish", run.fp, result if result is not None else {"state": "FAIL", "error": error})
        self._accept(run, row)
        for f in self.followers.pop(run.fp, []):
            self.reused += 1
            self._accept(f, row)

    def _accept(self, run: Run, row: dict[str, Any]) -> None:
        ot = run.trial
        ot.rows[run.seed_index] = row
        if len(ot.rows) == len(ot.runs) == len(self.spec.seeds):
            self._tell(ot)

    def _tell(self, ot: OpenTrial) -> None:
        rows = [ot.rows[i] for i in sorted(ot.rows)]
        failed = [r for r in rows if r["state"] != "COMPLETE"]
        values, error, feasible = None, None, False
        if failed:
            error = f"seed {failed[0]['seed_index']}: {failed[0]['error']}"
        else:
            values = [_mean(rows, o.metric) for o in self.spec.objectives]
            bad = [o.metric for o, v in zip(self.spec.objectives, values) if not math.isfinite(v)]
            if bad:
                values, error = None, f"objective {bad[0]} is missing or not finite"
        del self.open[ot.number]
        if values is None:
            ot.trial.set_user_attr("error", (error or "")[:2000])
            self.study.tell(ot.trial, state=TrialState.FAIL)
            self.failed += 1
        else:
            feasible = True
            for c in self.spec.constraints:
                for key, v in c.values(_mean(rows, c.metric)).items():
                    v = v if math.isfinite(v) else 1e9
                    ot.trial.set_constraint(key, v)
                    feasible &= v <= 0
                    # also as user attributes: optuna-dashboard 0.21 does not read Optuna 5's keys
                    ot.trial.set_user_attr(f"constraint: {key}", v)
            if self.spec.constraints:
                ot.trial.set_user_attr("feasible", bool(feasible))
            self.study.tell(ot.trial, values)
            self.done += 1
        self.counted += 1
        self.progress.told(ot.number, values, feasible)

    # -- Ctrl-C ----------------------------------------------------------------------------------
    def _interrupt(self) -> None:
        """Cancel what runs, record it (FAIL, 'interrupted'), re-enqueue the open trials' parameters
        and close them as FAIL, so the study holds no RUNNING trial and `resume` redoes them."""
        self.say(f"interrupted: cancelling {len(self.inflight)} running trial(s)")
        for h, run in list(self.inflight.items()):
            try:
                self.backend.cancel(h, "interrupted")
            except Exception:  # noqa: BLE001
                pass
            row = scrub(R.trial_row(spec=self.spec, number=run.trial.number, fp=run.fp, config=run.config,
                                    seed_index=run.seed_index, result=None, error="interrupted",
                                    attempt=run.attempt, started_at=run.started_at, ended_at=R.now_iso()))
            R.write_trial(self.run_dir, row, [], self.schema)
        self.inflight.clear()
        for ot in list(self.open.values()):
            requeue(self.study, ot.trial._trial_id, ot.number, ot.trial.params, reason="interrupted")
        self.open.clear()


def _mean(rows: list[dict[str, Any]], metric: str) -> float:
    vals = [r.get(metric) for r in rows]
    if any(v is None for v in vals):
        return float("nan")
    return float(sum(vals) / len(vals))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_sweep(spec: SweepSpec, run_dir: str | Path, **kw) -> dict[str, Any]:
    return Driver(spec, Path(run_dir), **kw).run()
