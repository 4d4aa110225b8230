"""SIGINT, SIGTERM and SIGHUP as a request to stop, the same on every backend.

    stop = StopSignals()
    with stop.installed():        # our handlers, the previous ones restored on the way out
        ...
        stop.check()              # raises Interrupted once a signal came
        with stop.interruptible(): # code that runs a trial in this process (the inline backend):
            backend.submit(...)   #   a signal raises Interrupted right there

A signal only records itself, so the work in hand (a Parquet row being written, a journal line) is
never torn; the driver looks at `check()` between steps. Inside `interruptible()` the handler raises at
once instead: an in-process trial can take minutes.
"""
from __future__ import annotations

import contextlib
import signal
from typing import Any, Iterator

SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class Interrupted(KeyboardInterrupt):
    """A signal ended the sweep; the CLI exits 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
        """Put our handler on every stop signal (again, after a library replaced one: ray.init does);
        returns the handlers it replaced. Off the main thread nothing can be installed: {}."""
        old: dict[int, Any] = {}
        for s in SIGNALS:
            try:
                old[s] = signal.signal(s, self._handle)
            except ValueError:
                return old
        return old

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopSignals"]:
        old = self.install()
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False
