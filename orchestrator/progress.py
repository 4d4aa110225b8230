"""The sweep's progress view: a tqdm bar (rate, ETA, counts, best so far) on a terminal, one plain
line per finished trial when stderr is not a TTY (CI, log files, `2> log`) or is a terminal whose
size reads 0 columns (`script`, some container and CI ptys: a bar there prints nothing at all).

    progress = Progress.for_study(spec, study, stream=sys.stderr)   # counts and best from the study
    progress.told(number, values, feasible)   # a trial was told to Optuna
    progress.show(running=len(inflight))      # after the driver refilled its slots
    progress.close()

Counts include the trials finished before a resume (seeded from the study), so "7/16" and the best
so far are right after `resume`; the rate and ETA use this session's trials only, counted from
the first trials told (the first wave: what landed at the first update), so the start-up before
them (Ray, the oracle phase, a worker's first-trial warm-up) does not inflate the ETA. `running` is
taken after the driver has refilled its slots, so it counts what actually runs: the line is printed
then, not at the instant a run lands (when its slot is momentarily empty).
"""
from __future__ import annotations

import io
import math
import os
import sys
import time
from typing import TextIO

from optuna.trial import TrialState


class Progress:
    def __init__(self, name: str, total: int, metric: str | None, direction: str, *, counted: int = 0,
                 done: int = 0, failed: int = 0, raced: int = 0, best: tuple[float, int] | None = None,
                 stream: TextIO | None = sys.stderr, bar: bool | None = None, seeds: int | None = None):
        # `seeds`: how many seeds each told value is the mean of (the spec's), said beside the best
        self.name, self.total, self.metric, self.direction, self.seeds = name, total, metric, direction, seeds
        self.counted, self.done, self.failed, self.best = counted, done, failed, best
        self.raced = raced  # trials dropped after their first seed(s) (spec `race`): PRUNED
        self.stream, self.start_count, self.t0 = stream, counted, time.perf_counter()
        self.per_node: dict[str, int]
        self.running, self.per_node = 0, {}
        self._dirty = False
        self._first: tuple[float, int] | None = None  # (when, counted) at the first update with news
        self._tty = bar if bar is not None else bool(stream is not None and
                                                     getattr(stream, "isatty", lambda: False)()
                                                     and columns(stream) > 0)
        self._bar = None
        self._started = False

    def _start(self) -> None:
        """At the first `show`, when trials start (not while the backend starts): the clock of the
        rate and ETA, and the bar."""
        self._started, self.t0 = True, time.perf_counter()
        if self.stream is not None and self._tty:
            from tqdm import tqdm

            # our rate and ETA (`pace`) in the postfix, not tqdm's: its clock starts before the first
            # trial, so its first ETA counted the start-up (4m04s shown for a 35 s remainder)
            self._bar = tqdm(total=self.total, initial=self.counted, file=self.stream, desc=f"[{self.name}]",
                             unit="trial", dynamic_ncols=True,
                             bar_format="{desc} {bar} {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    @classmethod
    def for_study(cls, spec, study, counted: int, stream: TextIO | None = sys.stderr, **kw) -> "Progress":
        """Seed the counts and the best feasible value of the first objective from the trials the
        study already holds (a resumed sweep), `counted` being what the driver counts towards
        n_trials (re-enqueued trials excluded)."""
        from sweeps.study import DUPLICATE, superseded

        o = spec.objectives[0]
        done = failed = raced = 0
        best = None
        sup = superseded(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL,
                                                          TrialState.PRUNED)):
            if t.number in sup or DUPLICATE in t.user_attrs:
                continue
            if t.state == TrialState.PRUNED:
                raced += 1
                continue
            if t.state == TrialState.FAIL:
                failed += 1
                continue
            done += 1
            if t.values and all(v <= 0 for v in t.constraints.values()):
                best = _better(best, t.values[0], t.number, o.direction)
        return cls(spec.name, spec.n_trials, o.metric, o.direction, counted=counted, done=done,
                   failed=failed, raced=raced, best=best, stream=stream, seeds=len(spec.seed_list()), **kw)

    # -- events ----------------------------------------------------------------------------------
    def told(self, number: int, values: list[float] | None, feasible: bool, raced: bool = False) -> None:
        """A trial finished: `values` None when it failed (or was raced out, `raced`)."""
        self.counted += 1
        if raced:
            self.raced += 1
        elif values is None:
            self.failed += 1
        else:
            self.done += 1
            if feasible:
                self.best = _better(self.best, values[0], number, self.direction)
        self._dirty = True

    def show(self, running: int, per_node: dict[str, int] | None = None) -> None:
        """Called by the driver once its slots are refilled: update the bar, or print the line of
        the trials told since the last call."""
        if not self._started:
            self._start()
        if self._dirty and self._first is None:
            self._first = (time.perf_counter(), self.counted)
        changed = running != self.running or (per_node or {}) != self.per_node
        self.running, self.per_node = running, dict(per_node or {})
        if self.stream is None:
            return
        if self._bar is not None:
            if self._dirty or changed:
                self._bar.n = self.counted
                self._bar.set_postfix_str(self.bar_text(), refresh=True)
        elif self._dirty:
            print(f"[{self.name}] {self.line()}", file=self.stream, flush=True)
        self._dirty = False

    def write(self, msg: str) -> None:
        """A message that must not tear the bar."""
        if self.stream is None:
            return
        if self._bar is not None:
            self._bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.n = self.counted
            self._bar.set_postfix_str(self.bar_text(), refresh=True)
            self._bar.close()
            self._bar = None
        elif self._dirty and self.stream is not None:
            print(f"[{self.name}] {self.line()}", file=self.stream, flush=True)
            self._dirty = False

    # -- text ------------------------------------------------------------------------------------
    def best_text(self) -> str:
        if self.metric is None:  # nothing is ranked (replicate)
            return ""
        if self.best is None:
            return "none feasible yet"
        n = ("" if self.seeds is None else ", 1 seed: not yet evidence" if self.seeds == 1
             else f", mean of {self.seeds} seeds")
        return f"best {self.metric} {self.best[0]:.3f} (trial {self.best[1]}{n})"

    def status(self) -> str:
        nodes = ", ".join(f"{k}={v}" for k, v in sorted(self.per_node.items()))
        best = self.best_text()
        return (f"{self.done} done, {self.running} running, {self.failed} failed"
                + (f", {self.raced} raced out" if self.raced else "") + (f", {best}" if best else "")
                + (f" | per node: {nodes}" if nodes else ""))

    def rate(self) -> float:
        """Trials per second in this session since the first trials were told (NaN until more
        have been told after them)."""
        if self._first is None:
            return math.nan
        t, c = self._first
        n, dt = self.counted - c, time.perf_counter() - t
        return n / dt if n > 0 and dt > 0 else math.nan

    def pace(self) -> str:
        """`12 trials/h, ETA 2m30s`, or "" before the rate is known."""
        r = self.rate()
        if not math.isfinite(r):
            return ""
        left = max(self.total - self.counted, 0)
        speed = f"{r:.2f} trials/s" if r >= 1 else f"{r * 60:.1f} trials/min" if r * 60 >= 1 \
            else f"{r * 3600:.0f} trials/h"
        return f"{speed}, ETA {_duration(left / r) if left else 'done'}"

    def bar_text(self) -> str:
        pace = self.pace()
        return f"{pace} | {self.status()}" if pace else self.status()

    def line(self) -> str:
        pace = self.pace()
        return f"{self.counted}/{self.total} trials: {self.status()}" + (f" | {pace}" if pace else "")


def columns(stream) -> int:
    """The width of the terminal `stream` writes to: 0 where the size reads 0 (a pty nobody sized);
    80 when the stream has no file descriptor to ask (a stand-in that calls itself a TTY)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return 80


def _better(best: tuple[float, int] | None, value: float, number: int, direction: str
            ) -> tuple[float, int] | None:
    if not math.isfinite(value):
        return best
    if best is None or (value < best[0] if direction == "minimize" else value > best[0]):
        return (value, number)
    return best


def _duration(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


__all__ = ["Progress"]
