"""SIGINT, SIGTERM and SIGHUP as a request to stop: one object per process, the same on every backend.

    stop = StopSignals()
    with stop.installed():         # the CLI's first instruction: our handlers until its last
        with stop.deferred():      # a driver writing its record: a signal only records itself ...
            stop.check()           #   ... and raises Interrupted where the driver looks
            with stop.interruptible():  # a trial running in this process (the inline backend):
                backend.submit(...)     #   a signal raises Interrupted right there

Two modes. Interruptible (the CLI's default, where nothing is half-written: parsing, loading the
spec, reading a record, a report built aside): the handler raises Interrupted at once. Deferred (a
driver holding its record): the handler only records the signal, so the work in hand (a Parquet row,
a journal line) is never torn, and the driver raises at its next `check()`. A second signal while
the first is being handled is recorded, never raised: the clean-up is not itself interrupted.

`current()` is the object the CLI installed, so a driver, the pool and the audit share it instead
of each installing its own. Nothing replaces our handlers meanwhile: ray.init would install its own
SIGTERM handler (which exits with status 15 and says nothing), so cluster/ray_backend.py starts Ray
with `ray_private.keep_signal_handlers()`.
"""
from __future__ import annotations

import contextlib
import signal
from typing import Any, Iterator

SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))

_current: "StopSignals | None" = None


class Interrupted(KeyboardInterrupt):
    """A signal ended the command; the CLI exits 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def current() -> "StopSignals":
    """The StopSignals installed in this process (by the CLI), or a new one (a driver run from Python
    installs its own)."""
    return _current if _current is not None else StopSignals()


class StopSignals:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._interruptible = False

    def _handle(self, signum, frame) -> None:
        first = self.signum is None
        self.signum = signum
        if first and self._interruptible:
            raise Interrupted(signum)

    def install(self) -> dict[int, Any]:
        """Put our handler on every stop signal; returns the handlers it replaced. Off the main
        thread nothing can be installed: {}."""
        old: dict[int, Any] = {}
        for s in SIGNALS:
            try:
                old[s] = signal.signal(s, self._handle)
            except ValueError:
                return old
        return old

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopSignals"]:
        """Our handlers (and `current()` this object) for the block; the previous ones after it."""
        global _current
        outer, _current = _current, self
        old = self.install()
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            _current = outer

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def interruptible(self, on: bool = True) -> Iterator[None]:
        """A signal raises Interrupted at once inside the block (`on`), or only records itself
        (`on=False`, see `deferred`); the mode around it comes back after. A deferred block that
        ends normally back in interruptible mode raises for a signal that came inside it."""
        before, self._interruptible = self._interruptible, on
        try:
            yield
        finally:
            self._interruptible = before
        if before and not on:
            self.check()

    def deferred(self):
        return self.interruptible(False)
