"""Who is working on a run directory, and asking them to stop: what `status` shows and `stop` does.

A run directory has up to two lock files, each naming the process that holds it (sweeps/rundir.py):
`driver.lock` (a sweep or a replicate, or `analyze` compacting the record) and `audit/driver.lock`
(an audit). `stop` sends SIGTERM to a live holder: the same graceful path as Ctrl-C (running
trials recorded `interrupted` and re-enqueued, the lock released, `resume` continues), then waits
for the lock to be let go.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from sweeps.rundir import DriverLock, alive
from unlearning.errors import UserError

LOCKS = (("", "sweep"), ("audit", "audit"))  # (folder below the run directory, default role)


@dataclass
class Holder:
    lock: Path
    role: str  # sweep | replicate | analyze | audit
    pid: int | None
    host: str | None
    started: str
    live: bool | None  # None: on another host, which cannot be checked from here

    def text(self) -> str:
        where = "" if self.host in (None, socket.gethostname()) else f" on {self.host}"
        if self.live is None:
            return (f"{self.role}: lock held by pid {self.pid}{where} since {self.started} "
                    "(not checkable here)")
        if self.live:
            return f"{self.role} running (pid {self.pid}, since {self.started})"
        return f"no {self.role} running (a stale lock of pid {self.pid} is left; the next one takes it over)"


def holders(run_dir: Path) -> list[Holder]:
    """The lock files of `run_dir` that name a process, each with whether that process lives."""
    out = []
    for sub, role in LOCKS:
        lock = DriverLock(run_dir / sub if sub else run_dir)
        owner = lock.owner()
        if not owner:
            continue
        pid, host = owner.get("pid"), owner.get("host")
        here = host in (None, socket.gethostname())
        live = (isinstance(pid, int) and alive(pid)) if here else None
        out.append(Holder(lock.path, str(owner.get("role") or role), pid if isinstance(pid, int) else None,
                          host, str(owner.get("started", "?")), live))
    return out


def state_text(run_dir: Path) -> str:
    """`sweep running (pid 123, since ...)`, `audit running (...)`, or `no driver running`."""
    hs = holders(run_dir)
    return "; ".join(h.text() for h in hs) if hs else "no driver running"


def stop(run_dir: Path, *, wait_s: float = 60.0, say=print) -> bool:
    """SIGTERM to every live holder of `run_dir`'s locks on this host, then wait up to `wait_s` for
    their locks to be released. True when all have let go. A lock held on another host is refused
    in one line (UserError): this host can neither check nor signal that process."""
    hs = holders(run_dir)
    remote = [h for h in hs if h.live is None]
    if remote:
        h = remote[0]
        raise UserError(f"{h.lock}: held by pid {h.pid} on host {h.host}, which this host cannot signal; "
                        f"run `unlearn-sweep stop {run_dir}` there (or kill -TERM {h.pid} on {h.host})")
    live = [h for h in hs if h.live]
    if not live:
        raise NothingToStop(f"{run_dir}: nothing to stop ({state_text(run_dir)})")
    for h in live:
        assert h.pid is not None  # live: holders() checked its pid
        try:
            os.kill(h.pid, signal.SIGTERM)
        except ProcessLookupError:  # it ended between the check and the signal
            continue
        except PermissionError:
            raise UserError(f"{h.lock}: pid {h.pid} belongs to another user; it cannot be signalled "
                            "from here") from None
        say(f"sent SIGTERM to the {h.role} (pid {h.pid}): it records its running trials as interrupted, "
            "re-enqueues them and releases the lock; `unlearn-sweep resume` continues")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not any(h.pid is not None and alive(h.pid) and _still_holds(h) for h in live):
            say(f"stopped: {state_text(run_dir)}")
            return True
        time.sleep(0.2)
    say(f"still stopping after {wait_s:.0f}s (a trial in flight is being cancelled); "
        f"`unlearn-sweep status {run_dir}` shows when it has gone")
    return False


def _still_holds(h: Holder) -> bool:
    owner = DriverLock(h.lock.parent).owner() or {}
    return owner.get("pid") == h.pid


class NothingToStop(Exception):
    """`stop` found no live driver: one line, exit code 1 (not bad input)."""
