"""One task pool: keeps a backend's slots busy with the tasks of a source, retries a task whose worker
was lost (bounded), cancels a task past its timeout, and drains on a stop signal or an error.

    pool = TaskPool(backend, max_retries=2, stop=stop_signals, say=print)
    pool.run(source)          # until the source has nothing more and nothing is in flight

The sweep's search and replicate runs, the oracle phase and the audit are each a `Source`; the pool
knows nothing of trials, Optuna or Parquet, and a source nothing of retries or backends. Every task
ends in exactly one `source.landed(task, result, failure, node)`: with the task function's result, or
with the pool's typed Failure (a lost worker once the retries ran out, a timeout, the task function
raising, an interruption).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

from cluster.backend import Backend, Handle, Outcome
from orchestrator.signals import StopSignals, current
from unlearning.errors import Failure, FailureKind


@dataclass(eq=False)
class Task:
    """One unit of work for a backend. `key` is unique among the tasks in flight; `item` is the
    source's own object behind it (a run, an oracle job, an audit task)."""

    key: str
    payload: dict[str, Any]
    label: str  # for people: "trial 3 seed 0", "oracle retrain (train_seed 0, split_seed 0)"
    item: Any = None
    timeout_s: float | None = None
    attempt: int = 0
    t0: float = 0.0  # perf_counter of its latest submit
    started_at: str = ""  # ISO time of its latest submit
    cancelled: Failure | None = None  # why the pool cancelled it


class Source(Protocol):
    """Where a pool's tasks come from, and where they land."""

    def next_task(self, slots: int) -> Task | None:
        """A task to submit now, or None when none is ready now (tasks in flight may make more
        ready). `slots`: how many tasks the pool keeps in flight at present."""

    def landed(self, task: Task, result: dict[str, Any] | None, failure: Failure | None,
               node: str) -> None:
        """The end of a task: exactly one of `result` (what the task function returned) and
        `failure` is set. Called once per task."""

    def finished(self) -> bool:
        """True when no task will come any more; asked once nothing is in flight and `next_task`
        gave nothing."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class TaskPool:
    """`decorate(payload) -> payload`, when given, is applied to every payload as it is submitted:
    what every task needs beside its own payload (orchestrator/shipping.py: the plug-ins' source)."""

    def __init__(self, backend: Backend, *, max_retries: int = 2, max_concurrent: int | None = None,
                 stop: StopSignals | None = None, say: Callable[[str], None] = lambda msg: None,
                 decorate: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self.backend, self.max_retries, self.max_concurrent = backend, max_retries, max_concurrent
        self.stop, self.say, self.decorate = stop or current(), say, decorate
        self.inflight: dict[Handle, Task] = {}
        self.retried = 0
        self._submitting: Task | None = None

    def capacity(self) -> int:
        cap = self.backend.capacity()
        m = self.max_concurrent
        return max(1, min(cap, m) if m else cap)

    def run(self, source: Source, on_tick: Callable[["TaskPool"], None] | None = None) -> None:
        """Run `source` to its end. `on_tick(pool)` after every refill of the slots (a progress
        view). On any exception (a stop signal, a record that cannot be written, a bug) the tasks in
        flight are cancelled and landed as interrupted, then the exception propagates."""
        try:
            while True:
                self.stop.check()
                cap = self.capacity()
                while len(self.inflight) < cap:
                    task = source.next_task(cap)
                    if task is None:
                        break
                    self._submit(task)
                if on_tick is not None:
                    on_tick(self)
                if not self.inflight:
                    if source.finished():
                        return
                    raise RuntimeError(f"{type(source).__name__}: tasks to come, none ready, none running")
                for o in self.backend.wait(list(self.inflight), timeout=self._poll()):
                    self._outcome(source, o)
                self._check_timeouts()
        except BaseException:
            self.drain(source)
            raise

    def drain(self, source: Source, reason: str = "interrupted") -> None:
        """Cancel every task in flight (and one caught while being submitted) and land each as
        interrupted. Best effort at every step: this also runs when the disk is full."""
        tasks: list[tuple[Handle | None, Task]] = list(self.inflight.items())
        if self._submitting is not None:
            tasks.append((None, self._submitting))
        self.inflight.clear()
        self._submitting = None
        if tasks:
            self.say(f"{reason}: cancelling {len(tasks)} running task(s)")
        for h, task in tasks:
            try:
                if h is not None:
                    self.backend.cancel(h, reason)
            except Exception:  # noqa: BLE001
                pass
            try:
                source.landed(task, None, Failure(kind=FailureKind.INTERRUPTED, message=reason), "")
            except Exception:  # noqa: BLE001 - a full disk: resume reconciles what was not written
                pass

    # -- inside ------------------------------------------------------------------------------------
    def _submit(self, task: Task) -> None:
        task.t0, task.started_at = time.perf_counter(), now_iso()
        self._submitting = task  # the inline backend runs the task right here: a signal may land in it
        payload = task.payload if self.decorate is None else self.decorate(task.payload)
        with self.stop.interruptible():
            h = self.backend.submit(task.key, payload, attempt=task.attempt)
        self._submitting = None
        self.inflight[h] = task

    def _outcome(self, source: Source, o: Outcome) -> None:
        task = self.inflight.pop(o.handle, None)
        if task is None:
            return
        if o.result is not None:  # finished (even if a timeout's cancel raced with it)
            source.landed(task, o.result, None, o.node)
            return
        reason = o.lost or "lost without a reason"
        if task.cancelled is None and o.retryable and task.attempt < self.max_retries:
            task.attempt += 1
            self.retried += 1
            self.say(f"{task.label}: {reason}; retry {task.attempt}/{self.max_retries}")
            self._submit(task)
            return
        if task.cancelled is not None:
            failure = task.cancelled
        elif o.retryable:
            failure = Failure(kind=FailureKind.LOST_WORKER, message=f"lost: {reason} (attempt "
                              f"{task.attempt + 1}, max_retries {self.max_retries})")
        else:  # the task function raised, or its result could not be read: a bug, not the worker
            failure = Failure(kind=FailureKind.ERROR, message=reason)
        source.landed(task, None, failure, o.node)

    def _poll(self) -> float:
        now = time.perf_counter()
        left = min((t.t0 + t.timeout_s - now for t in self.inflight.values()
                    if t.timeout_s and t.cancelled is None), default=1.0)
        return max(0.01, min(1.0, left))

    def _check_timeouts(self) -> None:
        now = time.perf_counter()
        for h, task in list(self.inflight.items()):
            if task.timeout_s and task.cancelled is None and now - task.t0 > task.timeout_s:
                task.cancelled = Failure(kind=FailureKind.TIMEOUT,
                                         message=f"timed out after {task.timeout_s:g}s")
                self.backend.cancel(h, task.cancelled.message)
