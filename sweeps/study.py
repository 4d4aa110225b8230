"""The Optuna study of a sweep: opened or resumed from runs/<name>/study.journal (a JournalFileBackend)
or an RDB URL, driven by ask/tell from our driver, and brought in line with the record before a
driver continues it (trials a dead driver left RUNNING, runs missing from Parquet, lost workers:
their parameters re-enqueued). Only Optuna's public API.

One driver per study: resuming marks every RUNNING trial FAIL and re-enqueues its parameters, so the
run directory's lock (sweeps/rundir.py) refuses a second live driver.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import optuna
from optuna.storages import JournalStorage
from optuna.trial import FrozenTrial, TrialState

from sweeps.journal import SUPERSEDED, StudyView, superseded
from sweeps.study_view import load_study_readonly, study_name
from sweeps.run_journal import journal_storage, journal_study
from sweeps.samplers import make_sampler
from sweeps.space import grid_points
from sweeps.spec import SweepSpec
from unlearning.errors import UserError

# the features we use (group TPE, metric names) are stable in practice; keep the CLI output clean
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

DUPLICATE = "duplicate_of"  # user attr on a trial that proposed an already recorded configuration
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def sampled_before(study: optuna.Study) -> int:
    """How many configurations the sweep has sampled so far, the way `make_sampler` counts them:
    every trial except those re-enqueued (their replay takes their place) and those still waiting."""
    sup = superseded(study)
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.number not in sup and t.state != TrialState.WAITING)


def storage_for(spec: SweepSpec, run_dir: Path):
    if spec.storage:
        return spec.storage
    return journal_storage(run_dir / "study.journal")


def open_study(spec: SweepSpec, run_dir: Path, name: str | None = None, *,
               must_exist: bool | None = None, storage: JournalStorage | None = None) -> optuna.Study:
    """Create or load the study; check it matches the spec's directions; enqueue a grid once.
    `must_exist` True refuses to create one (attaching), False refuses an existing one (a new run
    in a shared storage), None takes either. `storage`: the run's journal already replayed
    (`JournalReplay`)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = name or study_name(spec, run_dir)
    directions = [o.direction for o in spec.objectives]
    storage = storage or storage_for(spec, run_dir)
    try:
        if must_exist is not None:
            exists = name in {st.study_name for st in optuna.get_all_study_summaries(storage)}
            if must_exist and not exists:
                raise UserError(f"storage: there is no study {name!r} to attach to")
            if not must_exist and exists:
                raise UserError(f"storage: a study named {name!r} already exists there; attach to it on "
                                "purpose with --attach")
        study = optuna.create_study(study_name=name, storage=storage, sampler=make_sampler(spec, 0),
                                    directions=directions, load_if_exists=True)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - an unreachable database, a missing driver, ...
        if not spec.storage:
            raise
        first = (str(e).strip() or "no message").splitlines()[0]
        raise UserError(f"storage: cannot open the study ({type(e).__name__}: {first})") from None
    journal_study(study, storage)
    have = [d.name.lower() for d in study.directions]
    if have != directions:
        raise UserError(f"objectives: the study {name!r} in {run_dir} was created with directions "
                        f"{have}, the spec asks {directions}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.metric for o in spec.objectives])
    if spec.sampler.name == "grid" and not study.user_attrs.get("grid_enqueued"):
        for p in grid_points(spec):
            study.enqueue_trial(p)
        study.set_user_attr("grid_enqueued", True)
    return study


def to_reconcile(study, *, missing: Callable[[list[str]], bool] = lambda fps: False,
                 rerun: Callable[[str | None], bool] = lambda kind: False, run_id: str | None = None
                 ) -> list[tuple[FrozenTrial, str]]:
    """The trials a driver must re-enqueue before it continues the study, each with why (touches
    nothing; an optuna.Study or a read-only sweeps.journal.StudyView):
      - trials left RUNNING by a driver that died;
      - finished trials whose runs `missing(fingerprints)` says are not (all) in Parquet;
      - failed trials whose failure kind (user attr failure_kind) `rerun(kind)` calls transient.
    Only this run directory's trials (user attr run_id, when given): a study shared on purpose
    (--attach) holds other drivers' trials, running or recorded elsewhere."""
    out = []
    sup = superseded(study)
    for t in study.get_trials(deepcopy=False):
        if t.number in sup or t.state == TrialState.WAITING:
            continue
        if run_id is not None and t.user_attrs.get("run_id", run_id) != run_id:
            continue
        if t.state == TrialState.RUNNING:
            out.append((t, "left RUNNING by a driver that died"))
        elif t.state in FINISHED and "method" in t.params and missing(t.user_attrs.get("fingerprints", [])):
            out.append((t, "in the journal but missing from Parquet"))
        elif t.state == TrialState.FAIL and rerun(t.user_attrs.get("failure_kind")):
            out.append((t, "failed for a transient reason"))
    return out


def reconcile(study: optuna.Study, **kw) -> dict[str, list[int]]:
    """Bring the study in line with the record before a driver continues it: every trial of
    `to_reconcile(study, **kw)` re-enqueued (its parameters asked again, the old trial not counted
    towards n_trials). Returns {reason: trial numbers}."""
    out: dict[str, list[int]] = {}
    for t, why in to_reconcile(study, **kw):
        requeue(study, t, reason=why)
        out.setdefault(why, []).append(t.number)
    return out


def requeue(study: optuna.Study, trial: FrozenTrial | optuna.Trial, reason: str) -> None:
    """Enqueue a trial's parameters again and list the trial as superseded (not counted towards
    n_trials); a trial still running is closed as FAIL."""
    number = trial.number
    if "method" in trial.params:  # a trial killed before it was sampled has nothing to repeat
        study.enqueue_trial(dict(trial.params), user_attrs={"requeued_from": number})
    study.set_user_attr(SUPERSEDED, {**study.user_attrs.get(SUPERSEDED, {}), str(number): reason})
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def trials_done(spec: SweepSpec, run_dir: Path) -> int:
    """How many trials of the run directory's study count towards n_trials (0 without a study);
    read only."""
    study, _ = load_study_readonly(spec, run_dir)
    return counted(study) if study is not None else 0


def refuse_new_seeds(run_dir: Path, recorded: SweepSpec, new: SweepSpec, done: int) -> None:
    """Seeds are fixed once a trial is on record: its value was told to Optuna as the mean over the
    recorded seeds, and the study cannot be told again. Other seeds would put configurations of
    n = 1 and n = 2 in one study (the sampler learning from both as like for like) and one front,
    and call the old ones complete on seeds they never ran. So a change is refused in one line that
    names the two ways to more seeds: `replicate` (the best configurations, in the open), or a new
    sweep. Order does not matter (the same seeds reordered are the same runs)."""
    key = lambda spec: sorted(tuple(sorted(s.items())) for s in spec.seed_list())  # noqa: E731
    if done and key(recorded) != key(new):
        raise UserError(
            f"seeds: {run_dir} holds {done} trial(s) told to Optuna as means over seeds {recorded.seeds}; "
            f"seeds {new.seeds} would rank n = {len(recorded.seeds)} and n = {len(new.seeds)} as like for "
            f"like: `unlearn-sweep replicate {run_dir} --top K --seeds ...` runs the best configurations on "
            "more seeds, or start another sweep with --out")


def counted(study: optuna.Study | StudyView) -> int:
    """Finished trials that count towards n_trials (superseded ones and duplicates do not)."""
    sup = superseded(study)
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED)
               if t.number not in sup and DUPLICATE not in t.user_attrs)


