"""The driver: ask -> sample -> fingerprint -> (skip if in Parquet) -> submit -> wait -> write Parquet
-> tell, keeping every backend slot busy.

An Optuna trial is one sampled configuration; it runs once per seed of the spec (a "run", one
fingerprint, one Parquet file). The trial is told when all its runs have landed: the objectives are
the means over seeds, the constraints (told with `trial.set_constraint`) too; any failed run fails
the trial. Parquet is always written before Optuna is told, so a driver killed at any instant loses
nothing that `resume` cannot rebuild.

Start-up, in the order that lets a refusal leave nothing behind:
  lock the run directory -> repair the record (torn journal tail, unreadable Parquet files) ->
  start the backend -> probe it (a worker loads the data, builds the split and the model) ->
  only then open the study and write spec.yaml and run.json -> reconcile the study with the record.

Stopping: SIGINT, SIGTERM and SIGHUP take one path on every backend (handlers installed after Ray
started, which installs its own): running runs are cancelled and recorded "interrupted", their
trials re-enqueued, the backend (and an embedded Ray with its agents) shut down, the lock released;
the CLI exits 128 + the signal number. A failure budget (`max_failures`, `fail_fast`) stops a sweep
whose trials keep failing, with a non-zero exit.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import optuna
from optuna.trial import TrialState

from cluster.backend import Backend, BackendLost, Handle, Outcome
from orchestrator.oracles import OracleJob, OraclePlan
from orchestrator.progress import Progress
from sweeps import results as R
from sweeps.space import suggest
from sweeps.spec import SweepSpec
from sweeps.study import (DUPLICATE, DriverLock, JournalReplay, counted, fingerprint, journal_tail_whole,
                          make_sampler, new_run_identity, open_study, reconcile, repair_journal, requeue,
                          run_identity, sampled_before, superseded)
from unlearning.config import dump_yaml
from unlearning.errors import Aborted, UserError
from unlearning.redact import scrub, scrub_text

TRANSIENT = ("lost:", "interrupted")  # failures a later run may not repeat: rerun, never reused
EXHAUSTED_AFTER = 50  # proposals in a row that were all recorded before: the space holds no more
SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
MIN_FREE_BYTES = 16 << 20


class Interrupted(KeyboardInterrupt):
    """A signal ended the sweep; the CLI exits 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def make_backend(resources, fn: Callable[..., dict], progress=None) -> Backend:
    """The one place backends are built: inline (in-process) or Ray (embedded or by address)."""
    if resources.backend == "inline":
        import torch

        from cluster.inline import InlineBackend

        # trials run in this process: honour cpus_per_trial (oversubscribed threads are far slower)
        torch.set_num_threads(max(1, int(resources.cpus_per_trial)))
        if resources.gpus_per_trial > 0 and not torch.cuda.is_available():
            raise UserError(f"resources.gpus_per_trial: {resources.gpus_per_trial:g} GPU per trial asked, "
                            "but the inline backend runs here and this machine has no CUDA device")
        if resources.gpus_per_trial > 1:
            raise UserError("resources.gpus_per_trial: the inline backend runs one trial on one device")
        return InlineBackend(fn, progress)
    try:
        from cluster.ray_backend import ClusterConfigError, RayBackend
    except ImportError as e:
        raise UserError(f"resources.backend: ray is not usable here ({e}); use --backend inline") from None
    try:
        return RayBackend(fn, progress, address=resources.address, cpus_per_trial=resources.cpus_per_trial,
                          gpus_per_trial=resources.gpus_per_trial, max_concurrent=resources.max_concurrent,
                          overlap=resources.overlap_mia)
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
    needs: list[str] = field(default_factory=list)  # the oracle identities it waits for


@dataclass
class OpenTrial:
    """A configuration's runs, one per seed: an Optuna trial of the search (told when all have
    landed), or a configuration replicated on more seeds (`trial` None: nothing to tell)."""

    trial: optuna.Trial | None
    method: str
    params: dict[str, Any]
    number: int
    runs: list[Run] = field(default_factory=list)
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    duplicate_of: int | None = None  # a configuration already recorded: told, not counted


@dataclass(frozen=True)
class Replicate:
    """What `unlearn-sweep replicate` runs: configurations (trial number, method, full params) of
    the search on more seeds (each a Seeds dict), in the same record, phase "replicate"."""

    configs: list[tuple[int, str, dict[str, Any]]]
    seeds: list[dict[str, int]]


class Driver:
    def __init__(self, spec: SweepSpec, run_dir: Path, *, backend: Backend | None = None,
                 tracker=None, fn: Callable[..., dict] | None = None, log: TextIO | None = sys.stderr,
                 force: bool = False, attach: str | None = None, replicate: Replicate | None = None,
                 oracle_phase: bool | None = None):
        self.spec, self.run_dir, self.log_to = spec, Path(run_dir), log
        self._backend, self._tracker, self._fn = backend, tracker, fn
        self.force, self.attach, self.replicate = force, attach, replicate
        self._oracle_phase = oracle_phase  # None: when the real trial function runs on a backend we built
        self.schema = R.trial_schema(spec)
        self.inflight: dict[Handle, Run | OracleJob] = {}
        self.oracles: OraclePlan | None = None  # the oracle phase (real trials on a backend we built)
        self.queue: deque[Run] = deque()
        self.open: dict[int, OpenTrial] = {}
        self.followers: dict[str, list[Run]] = {}  # fp -> runs waiting on the same fp in flight
        self.done = self.failed = self.reused = self.retried = self.duplicates = 0
        self.progress: Progress | None = None
        self.failures: Counter[str] = Counter()  # reason key -> trials of this driver that failed so
        self.first_error: dict[str, str] = {}  # reason key -> the first error of that kind, in full
        self.told_here: list[str | None] = []  # this driver's told trials: None or the failure reason
        self.stopped: str | None = None  # why the sweep ended before n_trials
        self.stop_failed = False  # ... and whether that is a failure (budget) or not (space exhausted)
        self._signal: int | None = None
        self._interruptible = False
        self._since_compact = 0
        self._dup_streak = 0
        self._replay: JournalReplay | None = None  # the journal replayed while the backend starts

    # -- helpers ---------------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        if self.log_to is not None:
            line = scrub_text(f"[{self.spec.name}] {msg}")
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

    _tracker_warned = False

    def _progress(self, key: str, row: dict[str, Any]) -> None:
        self._track("log", key, row)

    # -- signals ---------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        first = self._signal is None
        self._signal = signum
        if first and self._interruptible:  # an in-process trial: stop it where it is
            raise Interrupted(signum)

    def _install_signals(self) -> dict[int, Any]:
        old = {}
        for s in SIGNALS:
            try:
                old[s] = signal.signal(s, self._on_signal)
            except ValueError:  # not the main thread: the caller handles interruption
                return old
        return old

    def _check_signal(self) -> None:
        if self._signal is not None:
            raise Interrupted(self._signal)

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t_start = time.perf_counter()
        created = not self.run_dir.exists()
        lock = self._lock()
        old_handlers = self._install_signals()
        self.backend = None
        self.tracker = None
        started = False
        try:
            self._repair_record()
            self.backend = self._start_backend()
            self._install_signals()  # again: ray.init replaced the SIGTERM handler
            if getattr(self.backend, "dashboard_hint", None):
                self.say(self.backend.dashboard_hint)
            self._check_signal()
            self._probe()
            if self.replicate is None:
                self._open_study()
            else:  # replicate extends the record of a sweep that exists; the study is not touched
                ident = run_identity(self.run_dir) or {}
                self.run_id = ident.get("run_id", self.spec.name)
            started = True
            if self.replicate is None:
                self._reconcile()
            else:
                self.counted = 0
                self.progress = Progress(self.spec.name, len(self.replicate.configs), "replicate",
                                         "minimize", stream=self.log_to)
            self._make_tracker()
            self._plan_oracles()
            if self.replicate is not None:
                self._queue_replicate()
            try:
                self._loop()
            except KeyboardInterrupt as e:
                self._interrupt("interrupted")
                if not isinstance(e, Interrupted) and self._signal is not None:
                    raise Interrupted(self._signal) from None
                raise
            except OSError as e:  # the record cannot be written (disk full, read-only): stop cleanly
                self._interrupt("interrupted")
                raise Aborted(f"{self.run_dir}: cannot write the record ({os_reason(e)}); runs "
                              "recorded so far are intact, `resume` continues once it is fixed") from None
            except BackendLost as e:  # the cluster itself is gone (its head): stop cleanly, one line
                self._interrupt("interrupted")
                raise Aborted(f"{e}; runs recorded so far are intact, `resume` continues on a new "
                              "cluster") from None
            if self.stopped:
                self._interrupt("stopped")
        except BaseException:
            if not started and created:  # a refusal leaves nothing behind
                lock.release()
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        finally:
            if self.progress is not None:
                self.progress.close()
                self.progress = None
            if self.backend is not None:
                self.backend.shutdown()
            if self.tracker is not None:
                self._track("close")
            for s, h in old_handlers.items():
                signal.signal(s, h)
            if started:
                self._compact(quiet=True)
            lock.release()
        wall = time.perf_counter() - t_start
        what = "configuration(s) replicated" if self.replicate else "trial(s) done"
        self.say(f"finished: {self.done} {what}, {self.failed} failed, {self.reused} run(s) "
                 f"reused from Parquet, {self.retried} retried, {wall:.1f}s")
        return {"done": self.done, "failed": self.failed, "reused": self.reused, "retried": self.retried,
                "oracles": self.oracles.counts() if self.oracles else {},
                "duplicates": self.duplicates, "wall_s": wall, "run_dir": str(self.run_dir),
                "stopped": self.stopped, "stop_failed": self.stop_failed, "failures": dict(self.failures)}

    def _lock(self) -> DriverLock:
        """Create the run directory if needed and take its lock; the ways that can fail are one line."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            lock = DriverLock(self.run_dir)
            lock.acquire(force=self.force)
        except UserError:
            raise
        except OSError as e:
            raise UserError(f"{self.run_dir}: cannot be used as a run directory ({os_reason(e)})") from None
        free = shutil.disk_usage(self.run_dir).free
        if free < MIN_FREE_BYTES:
            lock.release()
            raise UserError(f"{self.run_dir}: only {free / 2**20:.1f} MiB free on its file system; the "
                            f"record needs room (at least {MIN_FREE_BYTES >> 20} MiB)")
        return lock

    def _repair_record(self) -> None:
        """Before anything is appended: cut a torn journal tail, set unreadable Parquet aside. The
        journal is then replayed in the background while the backend starts (`JournalReplay`),
        which also finds a damaged line inside it (repaired in `_open_study`)."""
        journal = self.run_dir / "study.journal" if not self.spec.storage else None
        if journal and journal.is_file():
            self._repair_journal(only_a_bad_tail=True)
        scans = R.scan_record(self.run_dir)
        for sub in scans:
            for note in R.quarantine(self.run_dir, scans[sub].damaged):
                self.say(f"record: {note}")
        pending = sum(p.name != R.COMPACTED for p in scans["trials"].files)
        if pending >= R.COMPACT_EVERY:
            self._compact(quiet=True, scans=scans)
        else:  # what a killed sweep leaves: merged by the next periodic compaction, not before trials start
            self._since_compact = pending
        self.states = R.record_states(scans["trials"])
        if journal and journal.is_file():  # last: a replay beside the work above would slow it (GIL)
            self._replay = JournalReplay(journal)

    def _repair_journal(self, only_a_bad_tail: bool = False) -> None:
        path = self.run_dir / "study.journal"
        try:
            note = None if only_a_bad_tail and journal_tail_whole(path) else repair_journal(path)
        except OSError as e:
            raise UserError(f"{self.run_dir}/study.journal: cannot be repaired ({e.strerror or e})"
                            ) from None
        if note:
            self.say(f"record: {note}")

    def _compact(self, quiet: bool = False, scans: dict[str, R.Scan] | None = None) -> None:
        try:
            R.compact(self.run_dir, scans)
        except OSError as e:  # a full disk: the one-run files stay, which is fine
            if not quiet:
                self.say(f"warning: compacting the record failed ({e.strerror or e}); it stays as it is")
        self._since_compact = 0

    def _start_backend(self) -> Backend:
        if self._backend is not None:
            return self._backend
        from unlearning.trial import run_task

        return make_backend(self.spec.resources, self._fn or run_task, self._progress)

    def _probe(self) -> None:
        """A worker of the backend loads the data, draws the split and builds the model of the
        base config, so a missing or unreadable data set, an absent device or a forget class out of
        range is one line (exit 2) before the record is touched."""
        if self._fn is not None or self._backend is not None:  # a custom task function knows no probe
            return
        method = next(iter(self.spec.methods))
        payload = {"task": "probe", "config": self.spec.trial_config(method, {}, self.spec.seed_list()[0])}
        h = self.backend.submit("probe", payload)
        deadline = time.monotonic() + 600
        while True:
            self._interruptible = True
            try:
                got = self.backend.wait([h], timeout=1.0)
            finally:
                self._interruptible = False
            self._check_signal()
            if got or time.monotonic() > deadline:
                break
        o = got[0] if got else None
        if o is None or o.result is None:
            why = "no answer within 600 s" if o is None else o.lost
            raise UserError(f"resources: a trial worker could not check the base config ({why})")
        if not o.result.get("ok"):
            raise UserError(f"base: {o.result.get('error')}")

    def _open_study(self) -> None:
        ident = run_identity(self.run_dir)
        fresh = ident is None
        if fresh:
            ident = new_run_identity(self.spec, self.attach)
        must_exist = None
        if self.spec.storage and fresh:
            must_exist = bool(self.attach)
        storage = self._replay.storage() if self._replay else None
        if self._replay and storage is None:  # a damaged line inside the journal: cut it out first
            self._repair_journal()
        self.study = open_study(self.spec, self.run_dir, ident["study_name"], must_exist=must_exist,
                                storage=storage)
        self.run_id = ident["run_id"]
        if fresh:
            (self.run_dir / "run.json").write_text(json.dumps(ident, indent=1))
        (self.run_dir / "spec.yaml").write_text(dump_yaml(scrub(self.spec.dump())))

    def _reconcile(self) -> None:
        def missing(fps: list[str]) -> bool:
            return any(fp not in self.states for fp in fps)

        def rerun(error: str) -> bool:
            return re.sub(r"^seed \d+: ", "", error).startswith(TRANSIENT)

        for why, numbers in reconcile(self.study, missing=missing, rerun=rerun, run_id=self.run_id).items():
            self.say(f"resume: {len(numbers)} trial(s) {why} re-enqueued ({', '.join(map(str, numbers))})")
        self.counted = counted(self.study)
        self.progress = Progress.for_study(self.spec, self.study, self.counted, stream=self.log_to)
        self.sampled = sampled_before(self.study)
        self.told_configs: dict[tuple[str, ...], int] = {}
        sup = superseded(self.study)
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            fps = t.user_attrs.get("fingerprints")
            if fps and t.number not in sup and DUPLICATE not in t.user_attrs:
                self.told_configs.setdefault(tuple(fps), t.number)

    def _plan_oracles(self) -> None:
        """Work out every Original/Retrain the seeds need and queue them as tasks (they go to the
        backend before any run that needs them). Only for real trials on a backend we built."""
        auto = self._fn is None and self._backend is None
        if not self.spec.resources.oracle_phase or not (auto if self._oracle_phase is None
                                                        else self._oracle_phase):
            return
        self.oracles = OraclePlan()
        method = next(iter(self.spec.methods))
        seeds = self.replicate.seeds if self.replicate else self.spec.seed_list()
        for s in seeds:
            try:
                _, cfg = fingerprint(self.spec.trial_config(method, {}, s))
            except UserError:  # defaults the method rejects: the runs register their own needs
                continue
            self.oracles.require(cfg)
        n = len(self.oracles.jobs)
        self.say(f"oracle phase: {n} model(s) for {len(seeds)} seed(s), trained side by side "
                 "(or found in the workers' caches) before the trials that need them")

    def _queue_replicate(self) -> None:
        """The replicate runs: each configuration on each new seed, unless already on record."""
        rp = self.replicate
        for number, method, params in rp.configs:
            ot = OpenTrial(None, method, params, number)
            self.open[-1 - len(self.open)] = ot
            for i, seeds in enumerate(rp.seeds):
                fp, cfg = fingerprint(self.spec.trial_config(method, params, seeds))
                ot.runs.append(Run(ot, i, fp, cfg))
            for run in ot.runs:
                if not self._reuse(run):
                    self._enqueue(run)
        self.say(f"replicate: {len(rp.configs)} configuration(s) x {len(rp.seeds)} seed(s), "
                 f"{len(self.queue)} run(s) to do, {self.reused} already on record")

    def _reuse(self, run: Run) -> bool:
        """Accept the run's row from Parquet if it is on record and not a transient failure (those
        are rerun); False when it has to run."""
        state, error = self.states.get(run.fp, (None, ""))
        if not (state == "COMPLETE" or (state and not error.startswith(TRANSIENT))):
            return False
        row = R.read_row(self.run_dir, run.fp)
        if row is None:
            return False
        self.reused += 1
        self._accept(run, row)
        return True

    def _enqueue(self, run: Run) -> None:
        if self.oracles is not None:
            run.needs = self.oracles.require(run.config)
        self.queue.append(run)

    def _make_tracker(self) -> None:
        if self._tracker is None:
            from orchestrator.tracking import NullTracker, make_tracker

            try:
                self._tracker = make_tracker(self.spec.tracking.model_dump(), self.run_id, self.run_dir,
                                             warn=self.say)
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001
                self.say(f"warning: tracker unavailable ({type(e).__name__}: {e}); Parquet only")
                self._tracker = NullTracker()
        self.tracker = self._tracker

    # -- the loop --------------------------------------------------------------------------------
    def _capacity(self) -> int:
        cap = self.backend.capacity()
        m = self.spec.resources.max_concurrent
        return max(1, min(cap, m) if m else cap)

    def _more_to_ask(self) -> bool:
        return (self.replicate is None and not self.stopped
                and self.counted + len(self.open) < self.spec.n_trials)

    def _loop(self) -> None:
        while True:
            self._check_signal()
            cap = self._capacity()
            while len(self.inflight) < cap and not self.stopped:
                # a run whose oracles exist first (the first result comes as early as it can), then
                # the oracles the waiting runs need, then a new configuration; a new one is asked
                # while fewer runs wait than there are slots (a run that waits needs no slot)
                run = self._next_ready()
                job = None if run is not None or not self.oracles else self.oracles.next_pending()
                if run is not None:
                    self._submit(run)
                elif job is not None:
                    self._submit_oracle(job)
                elif len(self.queue) < cap and self._more_to_ask():
                    self._ask()
                else:
                    break
            running = sum(isinstance(v, Run) for v in self.inflight.values())
            self.progress.show(running, getattr(self.backend, "running_per_node", dict)())
            if not self.inflight:
                if self.queue and not self.stopped:  # only runs whose oracles will never come
                    self._next_ready(fail_all=True)
                    continue
                if not self._more_to_ask():
                    break
                continue
            for o in self.backend.wait(list(self.inflight), timeout=self._poll()):
                self._outcome(o)
            self._check_timeouts()

    def _next_ready(self, fail_all: bool = False) -> Run | None:
        """The first queued run whose oracles are ready (runs whose oracle failed land as FAIL on
        the way); None when every queued run still waits."""
        for run in list(self.queue):
            state = self.oracles.state(run.needs) if (self.oracles and run.needs) else "ready"
            if state == "waiting" and not fail_all:
                continue
            self.queue.remove(run)
            if state == "ready" and not fail_all:
                return run
            self._land(run, None, error=self.oracles.failure(run.needs) if state == "failed"
                       else "oracle: no oracle task could be run for it")
        return None

    def _submit_oracle(self, job: OracleJob) -> None:
        job.status, job.t0 = "running", time.perf_counter()
        key = f"oracle-{list(self.oracles.jobs).index(job.ident)}"  # unique per job: handles are keys
        self.inflight[self.backend.submit(key, job.payload, attempt=job.attempt)] = job

    def _oracle_outcome(self, job: OracleJob, o: Outcome) -> None:
        if o.result is not None:
            self.say(self.oracles.landed(job, o.result, self.backend.share))
            return
        if o.retryable and job.attempt < self.spec.resources.max_retries:
            job.attempt += 1
            self.say(f"oracle {job.label}: {o.lost}; retry {job.attempt}")
            self._submit_oracle(job)
            return
        job.status, job.error = "failed", f"lost: {o.lost}"
        self.say(f"oracle {job.label} failed: {job.error}")

    def _poll(self) -> float:
        t = self.spec.resources.timeout_s
        if not t:
            return 1.0
        now = time.perf_counter()
        left = min((r.t0 + t - now for r in self.inflight.values() if isinstance(r, Run) and not r.cancelled),
                   default=1.0)
        return max(0.01, min(1.0, left))

    def _ask(self) -> None:
        # a fresh sampler per configuration, seeded by how many were sampled before: a restarted
        # driver proposes what an uninterrupted one would have, not the first configurations again
        self.study.sampler = make_sampler(self.spec, self.sampled)
        trial = self.study.ask()
        self.sampled += 1
        method, params = suggest(trial, self.spec)
        ot = OpenTrial(trial, method, params, trial.number)
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
        trial.set_user_attr("run_id", self.run_id)  # whose record holds its rows (shared studies)
        key = tuple(r.fp for r in ot.runs)
        if key in self.told_configs:  # the sampler proposed a configuration already on record
            ot.duplicate_of = self.told_configs[key]
            trial.set_user_attr(DUPLICATE, ot.duplicate_of)
        for run in ot.runs:
            if run.seed_index in invalid and run.fp not in self.states:
                self._land(run, None, error=invalid[run.seed_index])
                continue
            if self._reuse(run):
                continue
            if any(isinstance(r, Run) and r.fp == run.fp for r in self.inflight.values()) or \
                    any(r.fp == run.fp for r in self.queue):
                self.followers.setdefault(run.fp, []).append(run)
                continue
            self._enqueue(run)

    def _submit(self, run: Run) -> None:
        run.t0, run.started_at = time.perf_counter(), R.now_iso()
        if run.attempt == 0:
            self._track("start", run.fp, run.trial.number, {"method": run.trial.method, **run.trial.params,
                                                             "seed_index": run.seed_index}, run.config)
        payload = run.config
        if self.oracles is not None and run.needs:  # where its oracles are, for a node that lacks them
            payload = {**run.config, "shared_files": self.oracles.files(run.needs)}
        self._interruptible = True  # the inline backend runs the trial right here
        try:
            h = self.backend.submit(run.fp, payload, attempt=run.attempt)
        finally:
            self._interruptible = False
        self.inflight[h] = run

    def _outcome(self, o: Outcome) -> None:
        run = self.inflight.pop(o.handle, None)
        if run is None:
            return
        if isinstance(run, OracleJob):
            self._oracle_outcome(run, o)
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
            if isinstance(run, Run) and run.cancelled is None and now - run.t0 > t:
                run.cancelled = f"timed out after {t:g}s"
                self.backend.cancel(h, run.cancelled)

    # -- landing results -------------------------------------------------------------------------
    def _row(self, run: Run, result: dict[str, Any] | None, error: str | None, node: str = "") -> dict:
        return scrub(R.trial_row(spec=self.spec, number=run.trial.number, fp=run.fp, config=run.config,
                                 seed_index=run.seed_index, result=result, error=error,
                                 attempt=run.attempt, node=node, started_at=run.started_at,
                                 ended_at=R.now_iso(), seeds_in_trial=len(run.trial.runs),
                                 run_id=self.run_id,
                                 phase="search" if run.trial.trial is not None else "replicate"))

    def _land(self, run: Run, result: dict[str, Any] | None, error: str | None = None, node: str = ""
              ) -> None:
        """Parquet first (history, then the trial row), then the tracker, then maybe tell."""
        row = self._row(run, result, error, node)  # no secret reaches the record
        R.write_trial(self.run_dir, row, R.history_rows(self.spec, run.trial.number, run.fp,
                                                         run.config.get("method", ""), result),
                      self.schema)
        self.states[run.fp] = (row["state"], row.get("error") or "")
        self._since_compact += 1
        if self._since_compact >= R.COMPACT_EVERY:
            self._compact()
        self._track("finish", run.fp, result if result is not None else {"state": "FAIL", "error": error})
        self._accept(run, row)
        for f in self.followers.pop(run.fp, []):
            self.reused += 1
            self._accept(f, row)

    def _accept(self, run: Run, row: dict[str, Any]) -> None:
        ot = run.trial
        ot.rows[run.seed_index] = row
        if len(ot.rows) == len(ot.runs) and any(v is ot for v in self.open.values()):
            if ot.trial is None:
                self._replicated(ot)
            else:
                self._tell(ot)

    def _replicated(self, ot: OpenTrial) -> None:
        """A replicated configuration has all its new seeds: counted, never told to Optuna."""
        del self.open[next(k for k, v in self.open.items() if v is ot)]
        bad = [r for r in ot.rows.values() if r["state"] != "COMPLETE"]
        if bad:
            self.failed += 1
            self.failures[R.reason_key(bad[0].get("error") or "")] += 1
        else:
            self.done += 1
        self.progress.told(ot.number, None if bad else [0.0], False)

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
        if ot.duplicate_of is not None:
            self.duplicates += 1
            self._dup_streak += 1
            if self._dup_streak >= EXHAUSTED_AFTER and not self.stopped:
                self.stopped, self.stop_failed = (
                    f"the search space holds no new configuration: the last {EXHAUSTED_AFTER} proposals "
                    f"were all on record already ({len(self.told_configs)} distinct)"), False
                self.say(f"stopping: {self.stopped}")
            return
        self._dup_streak = 0
        self.told_configs.setdefault(tuple(r.fp for r in ot.runs), ot.number)
        self.counted += 1
        reason = re.sub(r"^seed \d+: ", "", error or "")
        if values is None:
            self.failed += 1
            self.failures[R.reason_key(reason)] += 1
            self.first_error.setdefault(R.reason_key(reason), reason)
        else:
            self.done += 1
        self.told_here.append(None if values is not None else R.reason_key(reason))
        self.progress.told(ot.number, values, feasible)
        self._budget()

    def _budget(self) -> None:
        """Stop a sweep whose trials keep failing: `max_failures` failed trials in this driver, or
        its first `fail_fast` trials all failed for the same reason."""
        if self.stopped:
            return
        mf, ff = self.spec.max_failures, self.spec.fail_fast
        if mf is not None and self.failed >= mf:
            self.stopped = f"{self.failed} trial(s) failed, the budget max_failures is {mf}"
        elif ff and len(self.told_here) == ff and all(self.told_here) and len(set(self.told_here)) == 1:
            self.stopped = (f"the first {ff} trial(s) all failed for the same reason: "
                            f"{self.first_error[self.told_here[0]]} (fail_fast; set fail_fast: 0 to go on "
                            "regardless)")
        if self.stopped:
            self.stop_failed = True
            self.say(f"stopping: {self.stopped}")

    # -- stopping early --------------------------------------------------------------------------
    def _interrupt(self, reason: str) -> None:
        """Cancel what runs, record it (FAIL, `reason`), re-enqueue the open trials' parameters and
        close them, so the study holds no RUNNING trial and `resume` redoes them. Best effort on
        every step: this also runs when the disk is full."""
        if self.inflight:
            self.say(f"{reason}: cancelling {len(self.inflight)} running run(s)")
        for h, run in list(self.inflight.items()):
            try:
                self.backend.cancel(h, reason)
            except Exception:  # noqa: BLE001
                pass
            if isinstance(run, OracleJob):
                continue
            try:
                R.write_trial(self.run_dir, self._row(run, None, "interrupted"), [], self.schema)
            except OSError:
                pass
        self.inflight.clear()
        self.queue.clear()
        for ot in list(self.open.values()):
            if ot.trial is None:  # a replicate: its remaining runs are redone by the next replicate
                continue
            try:
                requeue(self.study, ot.trial._trial_id, ot.number, ot.trial.params, reason=reason)
            except Exception:  # noqa: BLE001 - a full disk: the next resume reconciles RUNNING trials
                pass
        self.open.clear()


def os_reason(e: OSError) -> str:
    """The reason of an OSError in a few words, also for pyarrow's, which carry the errno only in
    their message ("... Detail: [errno 28] No space left on device")."""
    m = re.search(r"\[errno (\d+)\]", str(e))
    if m:
        return os.strerror(int(m.group(1)))
    return e.strerror or (str(e).splitlines() or [type(e).__name__])[0]


def _mean(rows: list[dict[str, Any]], metric: str) -> float:
    vals = [r.get(metric) for r in rows]
    if any(v is None for v in vals):
        return float("nan")
    return float(sum(vals) / len(vals))


def run_sweep(spec: SweepSpec, run_dir: str | Path, **kw) -> dict[str, Any]:
    return Driver(spec, Path(run_dir), **kw).run()


REPLICATE_SETS = ("base.eval.", "base.device", "base.cache_dir", "resources.", "tracking.")


def replicate_sweep(spec: SweepSpec, run_dir: str | Path, *, top: int, seeds, per_method: bool = False,
                    eval: dict[str, Any] | None = None, **kw) -> dict[str, Any]:
    """Rerun the top `top` configurations of the search (by its selection rule; the top `top` of
    each method with `per_method`) on `seeds` (the `seeds` grammar: "0-9", [0, 1], mappings), in
    the same record (phase "replicate"); runs already recorded are not run again. `eval`: base.eval
    settings for these runs only."""
    from sweeps.analysis import analyze, top_configs
    from sweeps.spec import load_spec, parse_seeds

    run_dir = Path(run_dir)
    a = analyze(run_dir, spec)
    if eval:
        raw = spec.dump()
        raw["base"] = {**raw["base"], "eval": {**raw["base"].get("eval", {}), **eval}}
        spec = load_spec(raw)
    ranked = top_configs(a, len(a.configs))
    picked = ranked.groupby("method", sort=False).head(top) if per_method else ranked.head(top)
    if picked.empty:
        raise UserError(f"replicate: {run_dir} has no complete feasible configuration to replicate yet")
    try:
        seed_list = spec.seed_list(parse_seeds(seeds))
    except ValueError as e:
        raise UserError(f"replicate.seeds: {e}") from None
    configs = [(int(r.trial_number), r.method, json.loads(r.params_json)) for r in picked.itertuples()]
    return Driver(spec, run_dir, replicate=Replicate(configs, seed_list), **kw).run()
