"""The Optuna study of a sweep: opened or resumed from runs/<name>/study.journal (a JournalFileBackend)
or an RDB URL, driven by ask/tell from our driver; fingerprints that make every run unique; and the
reconciliation of trials a dead driver left RUNNING.

One driver per study: resuming marks every RUNNING trial FAIL and re-enqueues its parameters, so a
lock file (driver.lock, pid@host) refuses a second live driver on the same run directory.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import json
import os
import secrets
import socket
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

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
SUPERSEDED = "superseded"  # study user attr: {finished trial number: why its parameters were enqueued again}
DUPLICATE = "duplicate_of"  # user attr on a trial that proposed an already recorded configuration
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def superseded(study: optuna.Study) -> set[int]:
    """Numbers of the trials whose parameters were enqueued again (a replay took their place): a
    trial still running when that happened carries the user attr REQUEUED; a finished one (whose
    runs went missing from Parquet, or were lost) cannot be changed, so the study lists it."""
    out = {int(k) for k in study.user_attrs.get(SUPERSEDED, {})}
    return out | {t.number for t in study.get_trials(deepcopy=False) if REQUEUED in t.user_attrs}


def sampled_before(study: optuna.Study) -> int:
    """How many configurations the sweep has sampled so far, the way `make_sampler` counts them:
    every trial except those re-enqueued (their replay takes their place) and those still waiting."""
    sup = superseded(study)
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.number not in sup and t.state != TrialState.WAITING)


# -- the journal, checked before anything is appended --------------------------------------------

def _whole_record(line: bytes) -> bool:
    try:
        rec = json.loads(line)
    except ValueError:
        return False
    return isinstance(rec, dict) and isinstance(rec.get("op_code"), int)


def journal_damage(path: Path) -> tuple[list[bytes], int, bool]:
    """(whole records, lines that are not whole records, torn tail?) of a journal file."""
    data = path.read_bytes() if path.is_file() else b""
    torn = bool(data) and not data.endswith(b"\n")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    good = [ln for ln in lines if _whole_record(ln)]
    return good, len(lines) - len(good), torn


def repair_journal(path: Path) -> str | None:
    """Cut a damaged journal (a torn last line, garbage) back to its whole records, keeping a copy
    of the damaged file beside it. Returns a one-line notice, or None when it was whole. Must run
    before Optuna appends anything: appending onto a torn line tears the next record too."""
    good, bad, _ = journal_damage(path)
    if not bad:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.damaged-{stamp}")
    os.replace(path, backup)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(b"".join(ln + b"\n" for ln in good))
    os.replace(tmp, path)
    return (f"{path.name}: {bad} line(s) that are not whole records removed, {len(good)} kept "
            f"(the damaged file is kept as {backup.name})")


def load_study_readonly(spec: SweepSpec, run_dir: Path):
    """The study of a run directory for reading only (status, analyze): nothing is written to the
    run directory. A journal is read as a `sweeps.journal.StudyView` (its trials' numbers, states,
    parameters and user attributes; a damaged journal from its whole records), an RDB storage as
    an optuna.Study. (study or None, one-line notice or None)."""
    from sweeps.journal import Damaged, read_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not spec.storage:
        path = run_dir / "study.journal"
        if not path.is_file():
            return None, None
        name = study_name(spec, run_dir)
        try:
            return read_study(path.read_bytes(), name), None
        except Damaged:
            good, bad, _ = journal_damage(path)
            notice = (f"study.journal: {bad} line(s) are not whole records (a torn write?); "
                      "`resume` repairs it, keeping a copy")
            try:
                return read_study(b"".join(ln + b"\n" for ln in good), name), notice
            except Damaged:
                return None, notice
    try:
        return optuna.load_study(study_name=study_name(spec, run_dir), storage=spec.storage), None
    except KeyError:
        return None, None
    except Exception as e:  # noqa: BLE001 - an unreachable database
        return None, f"storage: cannot open the study ({type(e).__name__}: {str(e).splitlines()[0]})"


def journal_tail_whole(path: Path) -> bool:
    """Whether the journal ends with a whole record and a newline (or is empty): what Optuna's
    reader cannot check, as it skips a bad last line (and raises on a bad line followed by a good
    one). Reads the last 64 KiB only."""
    with path.open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - (1 << 16)))
        tail = f.read()
    lines = tail.split(b"\n")
    return not tail or (lines[-1] == b"" and len(lines) >= 2 and _whole_record(lines[-2]))


class JournalReplay:
    """The journal replayed by Optuna in a background thread, while the driver starts its backend
    (at 10,000 trials the replay takes about a second; an embedded Ray's start several, waiting on
    its processes). `storage()` waits for it: the JournalStorage, or None if the journal turned out
    damaged inside (then `repair_journal`, and a fresh replay). Started once `journal_tail_whole`
    holds (Optuna's reader would skip a bad last line) and before anything is appended; nothing else
    writes the journal meanwhile (the driver holds the lock)."""

    def __init__(self, path: Path):
        import threading

        self._storage: JournalStorage | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), name="journal-replay", daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._storage = JournalStorage(JournalFileBackend(str(path)))
        except Exception:  # noqa: BLE001 - ValueError, KeyError, ...: a damaged line inside
            self._storage = None

    def storage(self) -> JournalStorage | None:
        self._thread.join()
        return self._storage


def storage_for(spec: SweepSpec, run_dir: Path):
    if spec.storage:
        return spec.storage
    return JournalStorage(JournalFileBackend(str(run_dir / "study.journal")))


RUN_FILE = "run.json"  # the run's identity: {"run_id", "created", "study_name"}


def run_identity(run_dir: Path) -> dict[str, Any] | None:
    """What run.json says (None for a run directory not yet started, or one from before run ids)."""
    try:
        d = json.loads((run_dir / RUN_FILE).read_text())
        return d if isinstance(d, dict) and "run_id" in d else None
    except (OSError, ValueError):
        return None


def new_run_identity(spec: SweepSpec, attach: str | None = None) -> dict[str, Any]:
    """A fresh id for a new run directory. In a shared storage the study is named by the id, so two
    sweeps of the same name never attach to each other by accident; `attach` names an existing
    study to join on purpose."""
    run_id = f"{spec.name}-{secrets.token_hex(4)}"
    name = attach or (run_id if spec.storage else spec.name)
    return {"run_id": run_id, "study_name": name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def study_name(spec: SweepSpec, run_dir: Path) -> str:
    ident = run_identity(run_dir)
    return ident["study_name"] if ident and ident.get("study_name") else spec.name


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


def reconcile(study: optuna.Study, *, missing: Callable[[list[str]], bool] = lambda fps: False,
              rerun: Callable[[str], bool] = lambda error: False, run_id: str | None = None
              ) -> dict[str, list[int]]:
    """Bring the study in line with the record before a driver continues it. Re-enqueued (their
    parameters asked again, the old trial not counted towards n_trials):
      - trials left RUNNING by a driver that died;
      - finished trials whose runs `missing(fingerprints)` says are not (all) in Parquet;
      - failed trials whose error `rerun(error)` calls transient (a lost worker).
    Only this run directory's trials (user attr run_id, when given): a study shared on purpose
    (--attach) holds other drivers' trials, running or recorded elsewhere.
    Returns {reason: trial numbers}."""
    out: dict[str, list[int]] = {}
    sup = superseded(study)
    for t in study.get_trials(deepcopy=False):
        if t.number in sup or t.state == TrialState.WAITING:
            continue
        if run_id is not None and t.user_attrs.get("run_id", run_id) != run_id:
            continue
        if t.state == TrialState.RUNNING:
            why = "left RUNNING by a driver that died"
        elif t.state in FINISHED and "method" in t.params and missing(t.user_attrs.get("fingerprints", [])):
            why = "in the journal but missing from Parquet"
        elif t.state == TrialState.FAIL and rerun(str(t.user_attrs.get("error", ""))):
            why = "failed for a transient reason"
        else:
            continue
        requeue(study, t._trial_id, t.number, t.params, reason=why)
        out.setdefault(why, []).append(t.number)
    return out


def requeue(study: optuna.Study, trial_id: int, number: int, params: dict[str, Any], reason: str) -> None:
    """Enqueue a trial's parameters again and mark the trial superseded (not counted towards
    n_trials); a trial still running is closed as FAIL."""
    if "method" in params:  # a trial killed before it was sampled has nothing to repeat
        study.enqueue_trial(dict(params), user_attrs={"requeued_from": number})
    if study._storage.get_trial(trial_id).state.is_finished():
        study.set_user_attr(SUPERSEDED, {**study.user_attrs.get(SUPERSEDED, {}), str(number): reason})
        return
    study._storage.set_trial_user_attr(trial_id, REQUEUED, reason)
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def counted(study: optuna.Study) -> int:
    """Finished trials that count towards n_trials (superseded ones and duplicates do not)."""
    sup = superseded(study)
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED)
               if t.number not in sup and DUPLICATE not in t.user_attrs)


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
    """runs/<name>/driver.lock: one live driver per run directory.

    Taken with flock on the file, so the check and the claim are one step and the kernel releases it
    when its holder dies, even by SIGKILL. The file names its owner (pid, host, a random token): on
    a shared file system whose flock does not reach across hosts, a lock written on another host is
    refused (this host cannot tell whether that driver lives) unless `force`; on this host a lock
    whose flock is free is stale. `release` removes the file only if it is still ours."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "driver.lock"
        self.fd: int | None = None
        self.token = secrets.token_hex(8)

    def owner(self) -> dict[str, Any] | None:
        """Who the file names (None: no lock, or not readable as one)."""
        try:
            return _parse_owner(self.path.read_text())
        except OSError:
            return None

    def acquire(self, force: bool = False) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _parse_owner(_read_fd(fd)) or {}
                os.close(fd)
                raise UserError(f"{self.path.parent}: a driver (pid {owner.get('pid', '?')} on "
                                f"{owner.get('host', '?')}) is already running this sweep") from None
            except OSError:  # a file system without flock: fall back to create-exclusive
                os.close(fd)
                return self._acquire_excl(me, force)
            try:  # the file we locked may have been removed by an owner releasing it: lock anew
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            owner = _parse_owner(_read_fd(fd))
            if owner and owner.get("host") != me["host"] and not force:
                os.close(fd)
                raise UserError(f"{self.path.parent}: driver.lock names pid {owner.get('pid')} on host "
                                f"{owner.get('host')} (since {owner.get('started', '?')}), which this "
                                "host cannot check; if that driver is gone, run again with --force")
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            os.fsync(fd)
            self.fd = fd
            return
        raise UserError(f"{self.path}: could not take the lock (it kept changing under us)")

    def _acquire_excl(self, me: dict[str, Any], force: bool) -> None:
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self.owner() or {}
                mine = owner.get("host") == me["host"]
                pid = owner.get("pid")
                if (mine and isinstance(pid, int) and _alive(pid)) or (not mine and owner and not force):
                    raise UserError(f"{self.path.parent}: a driver (pid {pid} on {owner.get('host')}) "
                                    "holds driver.lock" + ("" if mine else "; if it is gone, use --force")
                                    ) from None
                self.path.unlink(missing_ok=True)  # stale; whoever re-creates it first wins
                continue
            os.write(fd, json.dumps(me).encode())
            os.fsync(fd)
            self.fd = fd
            return
        raise UserError(f"{self.path}: could not take the lock")

    def release(self) -> None:
        """Remove the lock if it is still ours (never another driver's), then let go of it."""
        if self.fd is None:
            return
        try:
            owner = self.owner()
            if owner and owner.get("token") == self.token and \
                    os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


def _read_fd(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode(errors="replace")


def _parse_owner(text: str) -> dict[str, Any] | None:
    text = text.strip()
    if not text:
        return None
    try:
        d = json.loads(text)
        return d if isinstance(d, dict) else None
    except json.JSONDecodeError:  # the format before JSON: pid@host
        pid, _, host = text.partition("@")
        return {"pid": int(pid), "host": host} if pid.isdigit() and host else None


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
