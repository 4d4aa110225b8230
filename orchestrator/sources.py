"""The two sources of a sweep's runs (orchestrator/pool.Source), both fed through a RunBook:

  Search     configurations asked of the Optuna study (a fresh seeded sampler per ask), each run on
             every seed of the spec, told back once all their runs are on record: the objectives
             are the means over seeds, the constraints too (`trial.set_constraint`); any failed run
             fails the trial. Stops early on the failure budget or when the space holds nothing new.
             With `race` (sweeps/race.py), a configuration runs its first seed(s) alone and is
             dropped there when it is off beyond doubt: its other seeds are recorded as PRUNED rows
             (failure kind `raced`), never run, and its trial is told PRUNED.
  Replicate  the top configurations of a finished search on more seeds, in the same record (phase
             "replicate"); nothing is told to Optuna.

Parquet is always written (by the book) before Optuna is told, so a driver killed at any instant
loses nothing that `resume` cannot rebuild.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from typing import Any, Callable, TextIO, cast

import optuna
from optuna.trial import TrialState

from orchestrator.oracles import OraclePlan
from orchestrator.pool import Task
from orchestrator.progress import Progress
from orchestrator.runs import Configuration, Run, RunBook
from sweeps import results as R
from sweeps.space import suggest
from sweeps.spec import SweepSpec
from sweeps.fingerprint import fingerprint
from sweeps.race import Race, means_stds
from sweeps.samplers import make_sampler
from sweeps.run_journal import batch
from sweeps.study import DUPLICATE, counted, reconcile, requeue, sampled_before, superseded
from unlearning.errors import Failure, FailureKind, UserError

EXHAUSTED_AFTER = 50  # proposals in a row that were all recorded before: the space holds no more


def _mean(rows: list[dict[str, Any]], metric: str) -> float:
    vals: list[Any] = [r.get(metric) for r in rows]  # a row's values are untyped (Parquet's)
    if any(v is None for v in vals):
        return float("nan")
    return float(sum(vals) / len(vals))


def _reason(row: dict[str, Any]) -> tuple[FailureKind, str]:
    """A failed row's kind and the key its reason counts under (numbers and ids blurred)."""
    kind = FailureKind(row.get("failure_kind") or "error")
    return kind, R.reason_key(row.get("error") or "")


def redo_rules(record, run_id: str) -> dict[str, Any]:
    """What a resumed search redoes (sweeps.study.reconcile's rules): a trial whose runs the record
    lacks, or that failed for a transient reason (a lost worker, an interruption), of this run."""
    return {"missing": lambda fps: any(not record.has(fp) for fp in fps),
            "rerun": lambda kind: kind is not None and FailureKind(kind).transient, "run_id": run_id}


class _Sweep:
    """What both sources share: the book, the progress view, the tally."""

    phase = "search"

    def __init__(self, spec: SweepSpec, record, *, run_id: str, tracker, oracles: OraclePlan | None,
                 share: Callable[[bytes], Any], say: Callable[[str], None], keep_models: bool = False):
        self.spec, self.say = spec, say
        self.book = RunBook(spec, record, run_id=run_id, phase=self.phase, tracker=tracker, oracles=oracles,
                            share=share, on_complete=self._complete, say=say, keep_models=keep_models,
                            on_partial=self._partial)
        self.done = self.failed = self.raced = 0
        self.failures: Counter[str] = Counter()  # reason key -> configurations that failed for it
        self.stopped: str | None = None  # why the sweep ended before its end
        self.stop_failed = False  # ... and whether that is a failure (budget) or not (space exhausted)
        self.progress: Progress

    def landed(self, task: Task, result, failure: Failure | None, node: str) -> None:
        self.book.landed(task, result, failure, node)

    def tick(self, pool) -> None:
        running = sum(isinstance(t.item, Run) for t in pool.inflight.values())
        self.progress.show(running, getattr(pool.backend, "running_per_node", dict)())

    def _complete(self, conf: Configuration) -> None:
        raise NotImplementedError

    def _partial(self, conf: Configuration) -> None:
        pass


class Search(_Sweep):
    def __init__(self, spec: SweepSpec, record, study: optuna.Study, *, stream: TextIO | None, **kw):
        super().__init__(spec, record, **kw)
        self.study, self.run_id = study, kw["run_id"]
        self.open: dict[int, Configuration] = {}  # trial number -> configuration not yet told
        self.duplicates = 0
        self.race = Race.of(spec)
        self.held: dict[int, tuple[list[Run], dict[int, Failure]]] = {}  # raced: runs not yet given
        self._dup_streak = 0
        self._first_error: dict[str, str] = {}  # reason key -> the first such reason, in full
        self._told_here: list[str | None] = []  # this driver's told trials: None or the reason key
        self._reconcile(record)
        self.progress = Progress.for_study(spec, study, self.counted, stream=stream)

    def _reconcile(self, record) -> None:
        """Bring the study in line with the record (sweeps/study.reconcile), then count what the
        study already holds: trials told, configurations sampled, configurations on record."""
        redo = reconcile(self.study, **redo_rules(record, self.run_id))
        for why, numbers in redo.items():
            self.say(f"resume: {len(numbers)} trial(s) {why} re-enqueued ({', '.join(map(str, numbers))})")
        self.counted = counted(self.study)
        self.sampled = sampled_before(self.study)
        self.told_configs: dict[tuple[str, ...], int] = {}
        sup = superseded(self.study)
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
            fps = t.user_attrs.get("fingerprints")
            if fps and t.number not in sup and DUPLICATE not in t.user_attrs:
                self.told_configs.setdefault(tuple(fps), t.number)
                told = t.user_attrs.get("race")
                if self.race is not None and t.state == TrialState.COMPLETE and told:
                    self.race.add(t.number, told["means"], told["stds"], t.user_attrs.get("feasible", True))

    # -- the source --------------------------------------------------------------------------------
    def _more_to_ask(self) -> bool:
        return not self.stopped and self.counted + len(self.open) < self.spec.n_trials

    def next_task(self, slots: int) -> Task | None:
        while True:
            task = self.book.next_task()
            # a new configuration is asked while fewer runs wait than there are slots (a run that
            # waits for its oracles needs no slot)
            if task is not None or not (self._more_to_ask() and len(self.book.queue) < slots):
                return task
            self._ask()

    def finished(self) -> bool:
        return not self.book.busy and not self._more_to_ask()

    def _ask(self) -> None:
        # a fresh sampler per configuration, seeded by how many were sampled before: a restarted
        # driver proposes what an uninterrupted one would have, not the first configurations again
        self.study.sampler = make_sampler(self.spec, self.sampled)
        with batch(self.study):  # the ask, its parameters and attributes: one journal append
            trial = self.study.ask()
            self.sampled += 1
            method, params = suggest(trial, self.spec)
            conf = Configuration(trial.number, method, params, owner=trial)
            self.open[trial.number] = conf
            rejected: dict[int, Failure] = {}
            for i, seeds in enumerate(self.spec.seed_list()):
                raw = self.spec.trial_config(method, params, seeds)
                try:
                    fp, cfg = fingerprint(raw)
                except UserError as e:  # a sampled combination the method's config rejects: a FAIL row,
                    # content-addressed so the same rejected configuration is recorded once
                    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode())
                    fp, cfg = f"invalid-{digest.hexdigest()[:12]}", raw
                    rejected[i] = Failure(kind=FailureKind.USER_ERROR, message=f"invalid configuration: {e}")
                conf.runs.append(Run(conf, i, fp, cfg))
            trial.set_user_attr("fingerprints", [r.fp for r in conf.runs])
            trial.set_user_attr("run_id", self.run_id)  # whose record holds its rows (shared studies)
            key = tuple(r.fp for r in conf.runs)
            if key in self.told_configs:  # the sampler proposed a configuration already on record
                trial.set_user_attr(DUPLICATE, self.told_configs[key])
        if self.race is None:
            self.book.add(conf, rejected)
            return
        k = self.race.rules.seeds  # held before the add: rows on record are accepted during it
        self.held[conf.number] = (conf.runs[k:], rejected)
        self.book.add(conf, rejected, runs=conf.runs[:k])

    def _partial(self, conf: Configuration) -> None:
        """A raced configuration whose first seeds are all on record: drop it (its other runs
        recorded as raced, never run) when it is off beyond doubt, else give the book the rest."""
        if self.race is None or conf.number not in self.held:
            return
        k = self.race.rules.seeds
        if any(i not in conf.rows for i in range(k)):
            return
        runs, rejected = self.held.pop(conf.number)
        first = [conf.rows[i] for i in range(k)]
        why = None
        if all(r["state"] == "COMPLETE" for r in first):  # a failed seed fails the trial: no race
            why = self.race.verdict(means_stds(first, self.race.metrics)[0])
        if why is None:
            self.book.add(conf, rejected, runs=runs)
        else:
            self.book.drop(runs, Failure(kind=FailureKind.RACED, message=f"raced after {k} seed(s): {why}"))

    # -- telling ---------------------------------------------------------------------------------
    def _complete(self, conf: Configuration) -> None:
        if self.open.pop(conf.number, None) is None:
            return
        trial: optuna.Trial = conf.owner
        rows = [conf.rows[i] for i in sorted(conf.rows)]
        raced = [r for r in rows if r.get("failure_kind") == FailureKind.RACED.value]
        failed = [r for r in conf.failed_rows() if r not in raced]
        values, failure, reason, feasible = None, None, None, False
        if failed:
            kind, reason = _reason(failed[0])
            failure = Failure(kind=kind, message=f"seed {failed[0]['seed_index']}: {failed[0]['error']}")
            self._first_error.setdefault(reason, failed[0]["error"] or "")
        elif not raced:
            values = [_mean(rows, o.metric) for o in self.spec.objectives]
            bad = [o.metric for o, v in zip(self.spec.objectives, values) if not math.isfinite(v)]
            if bad:
                msg = f"objective {bad[0]} is missing or not finite"
                values, reason = None, R.reason_key(msg)
                failure = Failure(kind=FailureKind.USER_ERROR, message=msg)
                self._first_error.setdefault(reason, msg)
        with batch(self.study):  # attributes, constraints and values: one journal append
            if failure is not None:
                trial.set_user_attr("error", failure.message[:2000])
                trial.set_user_attr("failure_kind", failure.kind.value)
                self.study.tell(trial, state=TrialState.FAIL)
            elif raced:  # a partial result: never told as values, so never on Optuna's front either
                trial.set_user_attr("error", raced[0]["error"][:2000])
                trial.set_user_attr("failure_kind", FailureKind.RACED.value)
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                feasible = True
                for c in self.spec.constraints:
                    for key, v in c.values(_mean(rows, c.metric)).items():
                        v = v if math.isfinite(v) else 1e9
                        trial.set_constraint(key, v)
                        feasible &= v <= 0
                        # also as user attributes: optuna-dashboard 0.21 does not read Optuna 5's keys
                        trial.set_user_attr(f"constraint: {key}", v)
                if self.spec.constraints:
                    trial.set_user_attr("feasible", bool(feasible))
                if self.race is not None:  # what later race verdicts compare with (also after a resume)
                    means, stds = means_stds(rows, self.race.metrics)
                    trial.set_user_attr("race", {k: {m: v if math.isfinite(v) else None for m, v in d.items()}
                                                 for k, d in (("means", means), ("stds", stds))})
                    if DUPLICATE not in trial.user_attrs:
                        self.race.add(conf.number, means, stds, feasible)
                self.study.tell(trial, values)
        if DUPLICATE in trial.user_attrs:
            self._duplicate()
            return
        self._dup_streak = 0
        self.told_configs.setdefault(tuple(r.fp for r in conf.runs), conf.number)
        self.counted += 1
        if raced and failure is None:
            self.raced += 1
            self.progress.told(conf.number, None, False, raced=True)
            return
        if values is None:
            assert reason is not None  # set wherever values is None
            self.failed += 1
            self.failures[reason] += 1
        else:
            self.done += 1
        self._told_here.append(reason)
        self.progress.told(conf.number, values, feasible)
        self._budget()

    def _duplicate(self) -> None:
        self.duplicates += 1
        self._dup_streak += 1
        if self._dup_streak >= EXHAUSTED_AFTER and not self.stopped:
            self.stopped = (f"the search space holds no new configuration: the last {EXHAUSTED_AFTER} "
                            f"proposals were all on record already ({len(self.told_configs)} distinct)")
            self.say(f"stopping: {self.stopped}")

    def _budget(self) -> None:
        """Stop a sweep whose trials keep failing: `max_failures` failed trials in this driver, or
        its first `fail_fast` trials all failed for the same reason."""
        if self.stopped:
            return
        mf, ff, told = self.spec.max_failures, self.spec.fail_fast, self._told_here
        if mf is not None and self.failed >= mf:
            self.stopped = f"{self.failed} trial(s) failed, the budget max_failures is {mf}"
        elif ff and len(told) == ff and all(told) and len(set(told)) == 1:
            first = cast(str, told[0])  # all(told): a reason key
            self.stopped = (f"the first {ff} trial(s) all failed for the same reason: "
                            f"{self._first_error[first]} (fail_fast; set fail_fast: 0 to go on "
                            "regardless)")
        if self.stopped:
            self.stop_failed = True
            self.say(f"stopping: {self.stopped}")

    # -- ending early ------------------------------------------------------------------------------
    def close(self, reason: str) -> None:
        """Re-enqueue the parameters of every configuration not yet told and close its trial, so the
        study holds no RUNNING trial and `resume` redoes them. Best effort (a full disk)."""
        self.book.clear()
        self.held.clear()
        for conf in list(self.open.values()):
            try:
                requeue(self.study, conf.owner, reason=reason)
            except Exception:  # noqa: BLE001 - the next resume reconciles RUNNING trials
                pass
        self.open.clear()


class Replicate(_Sweep):
    """Configurations (trial number, method, full params) of the search on more seeds (each a Seeds
    dict); runs already recorded are not run again."""

    phase = "replicate"

    def __init__(self, spec: SweepSpec, record, configs: list[tuple[int, str, dict[str, Any]]],
                 seeds: list[dict[str, int]], *, stream: TextIO | None, **kw):
        super().__init__(spec, record, **kw)
        self.progress = Progress(spec.name, len(configs), None, "minimize", stream=stream)  # no best
        for number, method, params in configs:
            conf = Configuration(number, method, params)
            for i, s in enumerate(seeds):
                fp, cfg = fingerprint(spec.trial_config(method, params, s))
                conf.runs.append(Run(conf, i, fp, cfg))
            self.book.add(conf)
        again = self.book.rerun_for_model
        self.say(f"replicate: {len(configs)} configuration(s) x {len(seeds)} seed(s), "
                 f"{len(self.book.queue)} run(s) to do, {self.book.reused} already on record"
                 + (f" ({again} of them run again for their models)" if again else ""))

    def next_task(self, slots: int) -> Task | None:
        return self.book.next_task()

    def finished(self) -> bool:
        return not self.book.busy

    def _complete(self, conf: Configuration) -> None:
        """A replicated configuration has all its new seeds: counted, never told to Optuna."""
        bad = conf.failed_rows()
        if bad:
            self.failed += 1
            self.failures[_reason(bad[0])[1]] += 1
        else:
            self.done += 1
        self.progress.told(conf.number, None if bad else [0.0], False)

    def close(self, reason: str) -> None:
        """Nothing to tell: the remaining runs are redone by the next replicate."""
        self.book.clear()
