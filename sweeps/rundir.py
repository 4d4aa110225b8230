"""A run directory's identity (run.json) and its lock (driver.lock): which sweep and study it holds,
and which driver, if any, is writing it.

run.json: {"run_id", "created", "study_name", "sweep", "spec_fingerprint", "version"}. The sweep's
name and the fingerprint of what defines it (sweeps.spec.spec_fingerprint: what `spec_difference`
compares) as spec.yaml recorded it, the Optuna study it fills, the project version that created it.
`identity_problem` checks a run directory against it: every command that opens one does
(orchestrator/verbs/common.py)."""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearning.errors import UserError

if TYPE_CHECKING:
    from sweeps.spec import SweepSpec

RUN_FILE = "run.json"  # the run's identity (module docstring)


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
    study to join on purpose. The spec's fingerprint is added by `recorded` (with spec.yaml)."""
    from unlearning import __version__

    run_id = f"{spec.name}-{secrets.token_hex(4)}"
    name = attach or (run_id if spec.storage else spec.name)
    return {"run_id": run_id, "study_name": name, "sweep": spec.name, "version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_identity(run_dir: Path, ident: dict[str, Any]) -> None:
    """run.json, written under a temp name and renamed (never half a file)."""
    tmp = run_dir / f".{RUN_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(ident, indent=1))
    os.replace(tmp, run_dir / RUN_FILE)


def identity_problem(run_dir: Path, spec: SweepSpec) -> str | None:
    """What in a run directory disagrees with its run.json, in one line (None: nothing): spec.yaml
    (`spec`, as loaded from it) replaced by another sweep's or edited in what defines the sweep, or a
    journal that does not hold the study run.json names. A run directory from before run.json held
    the fingerprint is checked for its journal only."""
    from sweeps.spec import spec_fingerprint

    ident = run_identity(run_dir) or {}
    sweep, fp = ident.get("sweep"), ident.get("spec_fingerprint")
    if sweep and sweep != spec.name:
        return (f"{run_dir}: spec.yaml is sweep {spec.name!r} but this run directory was created for sweep "
                f"{sweep!r} (run.json): a spec.yaml copied from another sweep?")
    if fp and fp != spec_fingerprint(spec):
        return (f"{run_dir}: spec.yaml is not the spec this run was started with (spec fingerprint "
                f"{spec_fingerprint(spec)}, run.json records {fp}): edited or replaced by hand?")
    journal = run_dir / "study.journal"
    if spec.storage or not journal.is_file():
        return None
    from sweeps.journal import study_names

    want = ident.get("study_name") or spec.name
    names = study_names(journal)
    if names and want not in names:
        return (f"{run_dir}: study.journal holds study {', '.join(map(repr, names))}, not {want!r} "
                "(run.json): a journal from another sweep?")
    if len(names) > 1:
        return (f"{run_dir}: study.journal holds {len(names)} studies ({', '.join(map(repr, names))}); "
                f"this run fills {want!r} only")
    return None


def inputs_identity(spec: SweepSpec) -> dict[str, Any]:
    """What run.json records of the researcher's own inputs, beside the run's id: each plug-in
    (its name as trial configs give it, and `unlearning.Plugin.record()`: its path, sha256, files
    and the names it registered) and each
    checkpoint (path and sha256). Empty for a sweep with neither (run.json as it always was)."""
    out: dict[str, Any] = {}
    if spec.plugins:
        out["plugins"] = [{"name": p.ref()["name"], **p.record()} for p in spec.loaded_plugins()]
    ckpts = spec.base.get("checkpoints")
    if isinstance(ckpts, dict) and any(ckpts.values()):
        out["checkpoints"] = {k: v for k, v in ckpts.items() if v}
    return out


def check_inputs(run_dir: Path, spec: SweepSpec) -> None:
    """A run directory continues only with the plug-ins its sweep ran with, by content (run.json's
    sha256s; where the files lie may change): results of two versions of a method never mix in one
    study and one record. UserError (one line) naming the plug-in that changed, before anything is
    written. A run directory without run.json, or from before plug-ins, has none."""
    ident = run_identity(run_dir)
    if ident is None:
        return
    then = {p.get("name"): p.get("sha256") for p in ident.get("plugins") or ()}
    now = {p.ref()["name"]: p.sha256 for p in (spec.loaded_plugins() if spec.plugins else ())}
    if then == now:
        return
    fix = f"restore it, or run this spec into another run directory (--out); {run_dir} keeps the old results"
    for name in sorted(set(then) & set(now)):
        if then[name] != now[name]:
            raise UserError(f"{run_dir}: plug-in {name} has changed since this sweep ran (sha256 "
                            f"{str(then[name])[:12]}... then, {now[name][:12]}... now): {fix}")
    gone, new = sorted(set(then) - set(now)), sorted(set(now) - set(then))
    what = f"plug-in {gone[0]} is no longer given" if gone else f"plug-in {new[0]} was not part of it"
    raise UserError(f"{run_dir}: this sweep ran with plug-ins [{', '.join(sorted(then)) or 'none'}]; "
                    f"{what}: {fix}")


class DriverLock:
    """runs/<name>/driver.lock: one live driver per run directory.

    Taken with flock on the file, so the check and the claim are one step and the kernel releases it
    when its holder dies, even by SIGKILL. The file names its owner (pid, host, a random token): on
    a shared file system whose flock does not reach across hosts, a lock written on another host is
    refused (this host cannot tell whether that driver lives) unless `force`; on this host a lock
    whose flock is free is stale. `release` removes the file only if it is still ours."""

    def __init__(self, run_dir: Path, role: str = "sweep"):
        self.path = run_dir / "driver.lock"
        self.fd: int | None = None
        self.token = secrets.token_hex(8)
        self.role = role  # what holds it (sweep, replicate, analyze, audit): `status` says so

    def owner(self) -> dict[str, Any] | None:
        """Who the file names (None: no lock, or not readable as one)."""
        try:
            return _parse_owner(self.path.read_text())
        except OSError:
            return None

    def acquire(self, force: bool = False) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token, "role": self.role,
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        owner: dict[str, Any] | None  # what the lock file says, when read
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
                if (mine and isinstance(pid, int) and alive(pid)) or (not mine and owner and not force):
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


def alive(pid: int) -> bool:
    """Whether process `pid` of this host lives (a zombie does not)."""
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
