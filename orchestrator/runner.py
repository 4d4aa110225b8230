"""The driver: starts a sweep (or a replicate) in the order that lets a refusal leave nothing behind,
runs its source of runs through the task pool, and shuts everything down whatever happens.

    run_sweep(spec, "runs/quickstart")                       # search: ask -> run -> record -> tell
    replicate_sweep(spec, "runs/quickstart", top=2, seeds="0-9")

Start-up: the spec's plug-ins are what this run directory ran with (sweeps.rundir.check_inputs) ->
take the run directory (lock; repair a torn journal tail, set unreadable Parquet aside) -> a search
whose study already holds its n_trials, with nothing to redo, ends here (no backend) -> start the
backend and share the plug-ins' source and the checkpoint files through it (orchestrator/shipping.py:
every payload carries handles on them) -> probe it (a worker loads the plug-ins, the data, builds the
split and the model, installs the checkpoints; when the workers run on this machine, this process
does so on a thread while Ray starts, and looks the oracles up in the cache: a model there needs no
task) -> only then
open the study and write spec.yaml and run.json -> the source (orchestrator/sources.py: Search
reconciles the study with the record; Replicate takes the chosen configurations) -> the oracle phase
and the runs, through one TaskPool (orchestrator/pool.py).

Stopping: SIGINT, SIGTERM and SIGHUP take one path on every backend, from the CLI's first
instruction to its last (orchestrator/signals.py; ray.init leaves our handlers in place): the
driver runs with signals deferred and looks at them between steps; the pool cancels what runs and
lands it "interrupted", the source re-enqueues its open trials, the backend (and an embedded Ray
with its agents) shuts down, the lock is released; the CLI exits 128 + the signal number. A failure
budget (`max_failures`, `fail_fast`) stops a sweep whose trials keep failing, with a non-zero exit.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, TextIO

from cluster.backend import WORKER_SECRETS, Backend, BackendLost
from orchestrator.oracles import OraclePlan
from orchestrator.pool import TaskPool
from orchestrator.record import Record, os_reason
from orchestrator.shipping import Shipment
from orchestrator.signals import Interrupted, current
from orchestrator.sources import Replicate, Search, redo_rules
from sweeps.fingerprint import fingerprint
from sweeps.rundir import check_inputs, inputs_identity, new_run_identity, run_identity, write_identity
from sweeps.spec import SweepSpec, load_spec, spec_fingerprint
from sweeps.study import counted, open_study, to_reconcile
from unlearning.config import dump_yaml, load_yaml_text, read_yaml
from unlearning.errors import Aborted, UserError
from unlearning.redact import scrub, scrub_text

if TYPE_CHECKING:
    from orchestrator.tracking import SafeTracker

__all__ = ["Interrupted", "make_backend", "replicate_sweep", "run_sweep"]


# A sweep that runs one trial at a time gains nothing from Ray but its workers' isolation (a trial
# that crashes its process, retried); Ray's start costs seconds of CPU beside the trials and, in a
# sweep that ends first, a wait for it to finish starting. Such a sweep starts Ray after this long.
ONE_SLOT_RAY_AFTER_S = 30.0


def make_backend(resources, fn: Callable[..., Any], progress=None,
                 on_up: Callable[[Backend], None] | None = None) -> Backend:
    """The one place backends are built: inline (in-process) or Ray (embedded or by address).
    `on_up(ray_backend)` once Ray's workers are up (the dashboard hint). An embedded Ray for CPU
    trials starts beside the sweep: the trials run in this process until it is up
    (cluster/handover.py, `resources.first_trials_here`); for a sweep that runs one trial at a time
    it starts only once the sweep has run ONE_SLOT_RAY_AFTER_S here, so a small sweep never pays
    for it."""
    if resources.backend == "inline":
        import torch

        from cluster.inline import InlineBackend

        _threads_for_trials_here(resources)
        if resources.gpus_per_trial > 0 and not torch.cuda.is_available():
            raise UserError(f"resources.gpus_per_trial: {resources.gpus_per_trial:g} GPU per trial asked, "
                            "but the inline backend runs here and this machine has no CUDA device")
        if resources.gpus_per_trial > 1:
            raise UserError("resources.gpus_per_trial: the inline backend runs one trial on one device")
        return InlineBackend(fn, progress)
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise UserError("resources.backend: ray is not installed here; use --backend inline")

    def start() -> Backend:  # on a thread of its own when the first trials run here: Ray imports there
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

    if _first_trials_here(resources):
        from cluster.handover import Handover

        _threads_for_trials_here(resources)
        return Handover(start, fn, progress, on_up=on_up, start_after_s=_ray_start_delay(resources))
    backend = start()
    if on_up is not None:
        on_up(backend)
    return backend


def _threads_for_trials_here(resources) -> None:
    """Trials run in this process: torch's threads as many as `cpus_per_trial`, as a Ray worker of
    that many CPUs has them (oversubscribed threads are far slower, and change the numbers)."""
    import torch

    torch.set_num_threads(max(1, int(resources.cpus_per_trial)))


def _embedded_ray(resources) -> bool:
    """Whether the Ray backend would start an embedded Ray on this machine: no address, none in the
    environment, and no Ray this process already started."""
    ray = sys.modules.get("ray")
    return not (resources.address or os.environ.get("RAY_ADDRESS")) and not (ray and ray.is_initialized())


def _ray_start_delay(resources) -> float:
    """When an embedded Ray starts beside trials run here: at once for a sweep that can run two or
    more trials at a time on this machine, after ONE_SLOT_RAY_AFTER_S for one that cannot."""
    slots = min(resources.max_concurrent or 1 << 30, int((os.cpu_count() or 1) // resources.cpus_per_trial))
    return ONE_SLOT_RAY_AFTER_S if slots <= 1 else 0.0


def _first_trials_here(resources) -> bool:
    """Whether this process runs the trials while an embedded Ray starts (cluster/handover.py): only
    where Ray's workers would run on this machine anyway (no address, no Ray already running here),
    for trials that need nothing but this machine's CPUs, on a machine without CUDA (a worker given
    no GPU trains on the CPU, this process would not), with no `timeout_s` (a trial here stops at an
    epoch's end, not at once), and without W&B credentials in the environment (Ray's start hides
    them from the whole process meanwhile: the tracker needs them)."""
    import torch

    return (resources.first_trials_here and not torch.cuda.is_available() and _embedded_ray(resources)
            and resources.gpus_per_trial == 0
            and resources.cpus_per_trial <= (os.cpu_count() or 1) and resources.timeout_s is None
            and not any(k in os.environ for k in WORKER_SECRETS))


class Driver:
    """One sweep (`replicate` None) or one replicate of a sweep's top configurations, start to end.

    `backend`/`fn`: a ready backend, or the task function for the one the driver builds (default
    unlearning.tasks.run_task); with either given, no probe runs and, unless `oracle_phase`, no
    oracle phase (a custom task function knows neither)."""

    def __init__(self, spec: SweepSpec, run_dir: Path, *, backend: Backend | None = None,
                 tracker=None, fn: Callable[..., Any] | None = None, log: TextIO | None | Literal["stderr"] = "stderr",
                 force: bool = False, attach: str | None = None,
                 replicate: tuple[list[tuple[int, str, dict[str, Any]]], list[dict[str, int]]] | None = None,
                 oracle_phase: bool | None = None, keep_models: bool | None = None):
        # `log`: where its lines go (None: nowhere); the process's stderr as it is now by default
        self.spec, self.run_dir, self.log_to = spec, Path(run_dir), sys.stderr if log == "stderr" else log
        self._backend, self._tracker, self._fn = backend, tracker, fn
        self.force, self.attach, self.replicate = force, attach, replicate
        custom = fn is not None or backend is not None
        self.oracle_phase = spec.resources.oracle_phase and (not custom if oracle_phase is None
                                                             else oracle_phase)
        # unlearned models kept (runs/<name>/models/): replicate's and `keep_models` runs', when the
        # task function is the real one (a custom one returns no model)
        keep = (replicate is not None or spec.keep_models) if keep_models is None else keep_models
        self.keep_models = keep and not custom
        self.ship: Shipment | None = None  # once the backend exists
        self.stop = current()  # the CLI's, installed since its first instruction
        self.progress = None  # the source's progress view, once it exists: messages go through it
        self.tracker: SafeTracker | None = None  # a view that never raises, once the run has its identity

    def say(self, msg: str) -> None:
        if self.log_to is not None:
            line = scrub_text(f"[{self.spec.name}] {msg}")
            if self.progress is not None:  # a terminal bar must not be torn
                self.progress.write(line)
            else:
                print(line, file=self.log_to, flush=True)

    # -- the run -------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t_start = time.perf_counter()
        check_inputs(self.run_dir, self.spec)  # a plug-in changed since: refused, nothing written
        # signals deferred: one that comes while the record is written is acted on at the next step
        with self.stop.installed(), self.stop.deferred():
            self.stop.check()
            record = Record.open(self.run_dir, journal=not self.spec.storage, force=self.force,
                                 say=self.say, role="replicate" if self.replicate else "sweep")
            source, retried = self._run(record)
        self.stop.check()  # a signal during the last steps (the compaction): the sweep stopped there
        wall = time.perf_counter() - t_start
        if source is None:  # nothing was left to run
            return {"done": 0, "failed": 0, "raced": 0, "reused": 0, "retried": 0, "oracles": {}, "duplicates": 0,
                    "wall_s": wall, "run_dir": str(self.run_dir), "stopped": None, "stop_failed": False,
                    "failures": {}}
        what = "configuration(s) replicated" if self.replicate else "trial(s) done"
        raced = f"{source.raced} raced out (spec race), " if source.raced else ""
        self.say(f"finished: {source.done} {what}, {source.failed} failed, {raced}{source.book.reused} run(s) "
                 f"reused from Parquet, {retried} retried, {wall:.1f}s")
        return {"done": source.done, "failed": source.failed, "raced": source.raced, "reused": source.book.reused,
                "retried": retried, "oracles": source.book.oracles.counts() if source.book.oracles else {},
                "duplicates": getattr(source, "duplicates", 0), "wall_s": wall, "run_dir": str(self.run_dir),
                "stopped": source.stopped, "stop_failed": source.stop_failed,
                "failures": dict(source.failures), "models_kept": source.book.kept}

    def _run(self, record: Record):
        """Everything between taking the run directory and letting it go: (source, retries), or
        (None, 0) when a search has nothing left to run."""
        backend = tracker = source = None
        started = False
        try:
            self._same_seeds()
            done = self._nothing_left(record)
            if done is not None:
                self._relocate_plugins()
                self.say(f"nothing left to run: the study holds {done} trial(s), n_trials is "
                         f"{self.spec.n_trials} (`resume --set n_trials=N` runs more)")
                return None, 0
            oracles = self._oracles(self.replicate[1] if self.replicate else self.spec.seed_list())
            here = self._probe_here(oracles)  # beside the backend's start: it starts Ray's processes
            backend = self._start_backend()
            self.stop.check()
            self.ship = Shipment(self.spec, backend)
            self._announce(oracles, self._probe(backend, here))
            run_id, study = self._open_study(record)
            started = True
            tracker = self._make_tracker(run_id)
            source = self._source(record, study, run_id, tracker, backend, oracles)
            self.progress = source.progress
            pool = TaskPool(backend, max_retries=self.spec.resources.max_retries,
                            max_concurrent=self.spec.resources.max_concurrent, stop=self.stop, say=self.say,
                            decorate=self.ship)
            try:
                pool.run(source, on_tick=source.tick)
            except OSError as e:  # the record cannot be written (disk full, read-only): stop cleanly
                raise Aborted(f"{self.run_dir}: cannot write the record ({os_reason(e)}); runs "
                              "recorded so far are intact, `resume` continues once it is fixed") from None
            if source.stopped:
                source.close("stopped")
            return source, pool.retried
        except BaseException as e:
            if source is not None:
                source.close("interrupted")
            if isinstance(e, BackendLost):  # the cluster itself is gone (its head): one line, exit 1
                raise Aborted(f"{e}; runs recorded so far are intact, `resume` continues on a new "
                              "cluster") from None
            if isinstance(e, KeyboardInterrupt) and not isinstance(e, Interrupted) and self.stop.signum:
                raise Interrupted(self.stop.signum) from None
            raise
        finally:
            if self.progress is not None:
                self.progress.close()
                self.progress = None
            if backend is not None:
                backend.shutdown()
            if tracker is not None:
                tracker.close()
            if started:
                record.compact(quiet=True, full=True)
            record.release(remove=not started)

    # -- start-up ------------------------------------------------------------------------------------
    def _same_seeds(self) -> None:
        """A search continues on the seeds its trials were told on (sweeps.study.refuse_new_seeds):
        the API's twin of the CLI's check, so `run_sweep` with other seeds is refused too."""
        path = self.run_dir / "spec.yaml"
        if self.replicate is not None or not path.is_file():
            return
        from sweeps.study import refuse_new_seeds, trials_done

        try:
            recorded = load_spec(read_yaml(path), read_only=True)
        except UserError:  # a damaged spec.yaml: the run's own checks say so
            return
        refuse_new_seeds(self.run_dir, recorded, self.spec, trials_done(recorded, self.run_dir))

    def _nothing_left(self, record: Record) -> int | None:
        """The trials on record when a search has nothing left to run: its study (read only) holds
        n_trials trials that count, and none to redo (left RUNNING, missing from Parquet, failed for
        a transient reason). None otherwise, or when that cannot be told without the backend."""
        if self.replicate is not None or record.created or record.journal is None:
            return None
        from sweeps.journal import Damaged, read_study

        ident = run_identity(self.run_dir)
        if ident is None or not record.journal.is_file() or \
                ident.get("spec_fingerprint") != self._recorded_spec()[1]:  # not this sweep: the
            return None  # normal path says why (the study's own checks)
        try:
            study = read_study(record.journal.read_bytes(), ident["study_name"])
        except Damaged:
            return None
        if study is None or to_reconcile(study, **redo_rules(record, ident["run_id"])):
            return None
        done = counted(study)
        return done if done >= self.spec.n_trials else None

    def _relocate_plugins(self) -> None:
        """A finished sweep run again from a moved lab: spec.yaml learns where its plug-ins lie now
        (what they hold was checked by check_inputs), so `resume` finds them; nothing else of it
        changes (its n_trials stays what the record holds)."""
        path = self.run_dir / "spec.yaml"
        recorded = load_yaml_text(path.read_text())
        if not self.spec.plugins or recorded.get("plugins") == self.spec.plugins:
            return
        self._write_spec_yaml(dump_yaml({**recorded, "plugins": list(self.spec.plugins)}))

    def _write_spec_yaml(self, text: str) -> None:
        """spec.yaml, written under a temp name and renamed (never half a file)."""
        tmp = self.run_dir / f".spec.yaml.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.run_dir / "spec.yaml")

    def _start_backend(self) -> Backend:
        if self._backend is not None:
            self._backend_up(self._backend)
            return self._backend
        from unlearning.tasks import run_task

        return make_backend(self.spec.resources, self._fn or run_task, self._on_epoch, on_up=self._backend_up)

    def _backend_up(self, backend: Backend) -> None:
        if hint := getattr(backend, "dashboard_hint", None):  # not part of Backend: Ray's only
            self.say(hint)

    def _on_epoch(self, key: str, row: dict[str, Any]) -> None:
        """A running task's per-epoch row (the backend's progress callback): to the tracker."""
        if self.tracker is not None:
            self.tracker.log(key, row)

    def _probe_payload(self) -> dict[str, Any]:
        method = next(iter(self.spec.methods))
        return {"task": "probe", "config": self.spec.trial_config(method, {}, self.spec.seed_list()[0])}

    def _workers_here(self) -> bool:
        """Whether the trials run on this machine, with its files: the default task function on
        the in-process backend or on an embedded Ray this driver starts."""
        if self._fn is not None or self._backend is not None:
            return False
        return self.spec.resources.backend == "inline" or _embedded_ray(self.spec.resources)

    def _probe_here(self, oracles: OraclePlan | None) -> tuple[threading.Thread, dict] | None:
        """When the workers share this machine: the probe (unlearning.tasks, with "oracles") run by
        this process on a thread, started before the backend, so that loading the data and looking
        the oracles up in the cache take place while Ray starts its processes. (thread, its result
        box), or None: the probe then goes to a worker (`_probe`)."""
        if not self._workers_here():
            return None
        from unlearning.tasks import run_task

        r = self.spec.resources
        payload = {**self._probe_payload(), "gpus": r.backend == "inline" or r.gpus_per_trial > 0,
                   "oracles": [{"kind": j.kind, "config": j.payload["config"]}
                               for j in (oracles.jobs.values() if oracles else ())]}
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = run_task(payload)
            except BaseException as e:  # noqa: BLE001 - re-raised by the driver's thread
                box["error"] = e

        t = threading.Thread(target=work, name="probe-here", daemon=True)
        t.start()
        return t, box

    def _probe(self, backend: Backend, here: tuple[threading.Thread, dict] | None = None) -> list[int]:
        """The data loaded, the split drawn and the model of the base config built (here, or by a
        worker of the backend), so a missing or unreadable data set, an absent device or a forget
        class out of range is one line (exit 2) before the record is touched. Returns the indices of
        the oracles a probe run here found in the cache (they need no task)."""
        if self._fn is not None or self._backend is not None:  # a custom task function knows no probe
            return []
        deadline = time.monotonic() + 600
        if here is not None:
            thread, box = here
            while thread.is_alive() and time.monotonic() < deadline:
                with self.stop.interruptible():
                    thread.join(timeout=1.0)
                self.stop.check()
            if "error" in box:
                raise box["error"]
            result = box.get("result")
            if result is None:
                raise UserError("base: the check of the base config gave no answer within 600 s")
        else:
            assert self.ship is not None  # run() made it for this backend
            h = backend.submit("probe", self.ship(self._probe_payload()))
            while True:
                with self.stop.interruptible():
                    got = backend.wait([h], timeout=1.0)
                self.stop.check()
                if got or time.monotonic() > deadline:
                    break
            o = got[0] if got else None
            if o is None or o.result is None:
                why = "no answer within 600 s" if o is None else o.lost
                raise UserError(f"resources: a trial worker could not check the base config ({why})")
            result = o.result
        if not result.get("ok"):
            raise UserError(f"base: {result['failure']['message']}")
        return list(result.get("cached") or [])

    def _announce(self, oracles: OraclePlan | None, held: list[int]) -> None:
        if oracles is None:
            return
        labels = oracles.held_here(held)
        n = len(oracles.jobs)
        self.say(f"oracle phase: {n} model(s) for {oracles.seeds} seed(s), " + (
            "all in this machine's cache" if n and len(labels) == n else
            (f"{len(labels)} in this machine's cache, the rest " if labels else "") +
            "trained side by side (or found in the workers' caches) before the trials that need them"))

    def _open_study(self, record: Record):
        """(run id, study): the run's identity (run.json, created for a new run directory) and its
        Optuna study, opened or created; then spec.yaml. A replicate leaves the study alone."""
        ident = run_identity(self.run_dir)
        if self.replicate is not None:  # replicate extends the record of a sweep that exists
            return (ident or {}).get("run_id", self.spec.name), None
        fresh = ident is None
        if fresh:
            ident = {**new_run_identity(self.spec, self.attach), **inputs_identity(self.spec)}
        assert ident is not None  # read, or made just now
        must_exist = bool(self.attach) if self.spec.storage and fresh else None
        storage = record.replay.storage() if record.replay else None
        if record.replay and storage is None:  # a damaged line inside the journal: cut it out first
            record.repair_journal()
        study = open_study(self.spec, self.run_dir, ident["study_name"], must_exist=must_exist,
                           storage=storage)
        text, fp = self._recorded_spec()
        if fresh or ident.get("spec_fingerprint") != fp:  # new, or from before fingerprints
            write_identity(self.run_dir, {**ident, "sweep": self.spec.name, "spec_fingerprint": fp})
        self._write_spec_yaml(text)
        return ident["run_id"], study

    def _recorded_spec(self) -> tuple[str, str]:
        """(spec.yaml's text, the fingerprint of the spec it records): the spec scrubbed of secrets,
        as every later command reads it back and checks it against run.json."""
        text = dump_yaml(scrub(self.spec.dump()))
        return text, spec_fingerprint(load_spec(load_yaml_text(text), read_only=True))

    def _make_tracker(self, run_id: str):
        from orchestrator.tracking import NullTracker, SafeTracker, make_tracker

        tracker = self._tracker
        if tracker is None:
            try:
                tracker = make_tracker(self.spec.tracking.model_dump(), run_id, self.run_dir, warn=self.say)
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001
                self.say(f"warning: tracker unavailable ({type(e).__name__}: {e}); Parquet only")
                tracker = NullTracker()
        self.tracker = SafeTracker(tracker, warn=self.say)
        return self.tracker

    def _oracles(self, seeds: list[dict[str, int]]) -> OraclePlan | None:
        """Every Original/Retrain the seeds need, as tasks that go to the backend before any run that
        needs them (only for real trials on a backend the driver built)."""
        if not self.oracle_phase:
            return None
        plan = OraclePlan()
        method = next(iter(self.spec.methods))
        for s in seeds:
            try:
                _, cfg = fingerprint(self.spec.trial_config(method, {}, s))
            except UserError:  # defaults the method rejects: the runs register their own needs
                continue
            plan.require(cfg)
        plan.seeds = len(seeds)
        return plan

    def _source(self, record: Record, study, run_id: str, tracker, backend: Backend,
                oracles: OraclePlan | None):
        kw = dict(run_id=run_id, tracker=tracker, share=lambda blob: backend.share(blob), say=self.say,
                  stream=self.log_to, keep_models=self.keep_models)
        if self.replicate is None:
            return Search(self.spec, record, study, oracles=oracles, **kw)
        configs, seeds = self.replicate
        return Replicate(self.spec, record, configs, seeds, oracles=oracles, **kw)


def run_sweep(spec: SweepSpec, run_dir: str | Path, **kw) -> dict[str, Any]:
    return Driver(spec, Path(run_dir), **kw).run()


REPLICATE_SETS = ("base.eval.", "base.device", "base.cache_dir", "resources.", "tracking.")


def replicate_sweep(spec: SweepSpec, run_dir: str | Path, *, top: int, seeds, per_method: bool = False,
                    eval: dict[str, Any] | None = None, **kw) -> dict[str, Any]:
    """Rerun the top `top` configurations of the search (by its selection rule; the top `top` of
    each method with `per_method`) on `seeds` (the `seeds` grammar: "0-9", [0, 1], mappings), in
    the same record (phase "replicate"); runs already recorded are not run again, unless only to
    get their unlearned model, which replicate keeps (runs/<name>/models/; `keep_models=False`
    does not). `eval`: base.eval settings for these runs only."""
    from sweeps.report.analysis import analyze, top_configs
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
    return Driver(spec, run_dir, replicate=(configs, seed_list), **kw).run()
