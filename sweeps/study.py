"""The Optuna study of a sweep: opened or resumed from runs/<name>/study.journal (a JournalFileBackend)
or an RDB URL, driven by ask/tell from our driver; fingerprints that make every run unique; and the
reconciliation of trials a dead driver left RUNNING.

One driver per study: resuming marks every RUNNING trial FAIL and re-enqueues its parameters, so a
lock file (driver.lock, pid@host) refuses a second live driver on the same run directory.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from sweeps.samplers import make_sampler
from sweeps.space import grid_points
from sweeps.spec import SweepSpec
from unlearning.errors import UserError

# the features we use (group TPE, metric names) are stable in practice; keep the CLI output clean
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

REQUEUED = "requeued"  # user attr on a trial whose parameters were enqueued again (dead driver, Ctrl-C)
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def storage_for(spec: SweepSpec, run_dir: Path):
    if spec.storage:
        return spec.storage
    return JournalStorage(JournalFileBackend(str(run_dir / "study.journal")))


def open_study(spec: SweepSpec, run_dir: Path) -> optuna.Study:
    """Create or load the study; check it matches the spec's directions; enqueue a grid once."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [o.direction for o in spec.objectives]
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage_for(spec, run_dir),
                                    sampler=make_sampler(spec), directions=directions, load_if_exists=True)
    except Exception as e:  # noqa: BLE001 - an unreachable database, a missing driver, ...
        if not spec.storage:
            raise
        first = (str(e).strip() or "no message").splitlines()[0]
        raise UserError(f"storage: cannot open the study ({type(e).__name__}: {first})") from None
    have = [d.name.lower() for d in study.directions]
    if have != directions:
        raise UserError(f"objectives: the study {spec.name!r} in {run_dir} was created with directions "
                        f"{have}, the spec asks {directions}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.metric for o in spec.objectives])
    if spec.sampler.name == "grid" and not study.user_attrs.get("grid_enqueued"):
        for p in grid_points(spec):
            study.enqueue_trial(p)
        study.set_user_attr("grid_enqueued", True)
    return study


def reconcile(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a driver that died: mark them FAIL and enqueue their parameters again
    (so the sampler's plan is kept and nothing is lost). Returns the reconciled trial numbers."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        requeue(study, t._trial_id, t.number, t.params, reason="driver died")
        out.append(t.number)
    return out


def requeue(study: optuna.Study, trial_id: int, number: int, params: dict[str, Any], reason: str) -> None:
    """Enqueue a RUNNING trial's parameters again, then mark it FAIL (not counted towards n_trials)."""
    if "method" in params:  # a trial killed before it was sampled has nothing to repeat
        study.enqueue_trial(dict(params), user_attrs={"requeued_from": number})
    study._storage.set_trial_user_attr(trial_id, REQUEUED, reason)
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def counted(study: optuna.Study) -> int:
    """Finished trials that count towards n_trials (re-enqueued ones do not)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED)
               if REQUEUED not in t.user_attrs)


# -- fingerprints --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def method_code_version(method: str) -> str:
    """The oracle's code version (data, loop, models) plus this method's own source."""
    from unlearning import __version__
    from unlearning.methods import get_method
    from unlearning.oracle import code_version

    src = inspect.getsource(sys.modules[get_method(method).__module__])
    return hashlib.sha256(f"{__version__}|{code_version()}|{src}".encode()).hexdigest()[:12]


# fields of a TrialConfig that do not change what a trial computes
NOT_FINGERPRINTED = ("device", "cache_dir")


def fingerprint(trial_config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(fingerprint, the normalised TrialConfig dict). The fingerprint hashes every field that
    determines the result (method, full params with defaults, seeds, data, split, model, recipe,
    eval, precision) and the code version, so one (configuration, seed) never runs twice."""
    from unlearning.trial import load_trial_config

    cfg = load_trial_config(trial_config)
    full = cfg.model_dump(mode="json")
    full["params"] = cfg.method_config().model_dump(mode="json")
    key = {k: v for k, v in full.items() if k not in NOT_FINGERPRINTED}
    key["code_version"] = method_code_version(cfg.method)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()[:20], full


# -- one driver per run directory ----------------------------------------------------------------

class DriverLock:
    """runs/<name>/driver.lock holding pid@host; a live driver on this host refuses a second one."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "driver.lock"

    def acquire(self) -> None:
        me = f"{os.getpid()}@{socket.gethostname()}"
        if self.path.exists():
            pid, _, host = self.path.read_text().strip().partition("@")
            if host == socket.gethostname() and pid.isdigit() and _alive(int(pid)) \
                    and int(pid) != os.getpid():
                raise UserError(f"{self.path.parent}: a driver (pid {pid}) is already running this sweep")
        tmp = self.path.with_name(f".driver.lock.{os.getpid()}")
        tmp.write_text(me)
        os.replace(tmp, self.path)

    def release(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not a live driver
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True
