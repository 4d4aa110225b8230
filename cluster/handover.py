"""Tasks in this process while a backend starts, then on that backend.

    backend = Handover(lambda: RayBackend(fn, progress, ...), fn, progress, start_after_s=0)

An embedded Ray takes seconds to start (its GCS, raylet, dashboard and the trial actors): as long
as, or longer than, a small sweep's trials. Meanwhile this process runs the tasks itself, one at a
time on a thread, as the inline backend would; once `start()` has returned, every new task goes to
the backend it built, and the task still running here finishes here. Same contract as every other
backend (tests/test_backend_contract.py). With `start_after_s`, the start itself waits that long:
a sweep that ends sooner never starts the backend at all.

What a task run here does not have: a process of its own. `cancel` (a timeout, a stop signal)
stops it at its next `on_epoch` call, not at once, and its slot stays taken until it has stopped;
a task that kills its process kills the driver (the record stays whole: `resume`). So the driver
uses it only where the backend's workers would run on this machine anyway (orchestrator/runner.py).

`start()` runs on a thread that lives until `shutdown`: Ray starts its processes with
PR_SET_PDEATHSIG, which Linux ties to the thread that forked them, so a starter thread that ended
would take the Ray it started with it. A `start()` that raises makes every later call raise
BackendLost with its message (the runs recorded so far stay valid).
"""
from __future__ import annotations

import platform
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from cluster.backend import Backend, BackendLost, Handle, Outcome, ProgressFn, TaskFn

_SLICE_S = 0.05  # how often `wait` looks at both sides while a task runs here


class _Cancelled(BaseException):
    """Raised inside a task run here, at its next `on_epoch`, once it is cancelled (a BaseException:
    a task's own `except Exception` does not swallow it)."""


@dataclass
class _Here:
    handle: Handle
    cancel: threading.Event = field(default_factory=threading.Event)


class Handover:
    """Backend protocol: tasks here until `start()` has returned the backend that runs them (see the
    module docstring). `on_up(backend)` is called once, from a call of this object, when it is up."""

    def __init__(self, start: Callable[[], Backend], fn: TaskFn, progress: ProgressFn | None = None,
                 *, on_up: Callable[[Backend], None] | None = None, start_after_s: float = 0.0):
        self.fn, self.progress, self.on_up = fn, progress, on_up
        self.node = platform.node()
        self._inner: Backend | None = None
        self._error: str | None = None
        self._up = threading.Event()  # start() returned or raised
        self._release = threading.Event()  # shutdown: the starter shuts its backend down and ends
        self._wake = threading.Event()  # a task here ended
        self._lock = threading.Lock()
        self._here: _Here | None = None  # the task running in this process (at most one)
        self._queue: deque[tuple[Handle, dict[str, Any]]] = deque()
        self._where: dict[Handle, str] = {}  # "queued" | "here" | "there" (the started backend)
        self._done: dict[Handle, Outcome] = {}
        self._rows: list[tuple[Handle, dict]] = []
        self._cancelled: set[Handle] = set()  # their progress rows are dropped
        self._announced = self._closed = False
        self._starter = threading.Thread(target=self._start, args=(start, start_after_s),
                                         name="backend-start", daemon=True)
        self._starter.start()

    def _start(self, start: Callable[[], Backend], after_s: float) -> None:
        if after_s > 0 and self._release.wait(after_s):  # shut down before the start was due
            return
        try:
            inner = start()
        except BaseException as e:  # noqa: BLE001 - said by every later call
            self._error = (str(e).strip().splitlines() or [type(e).__name__])[0]
            self._up.set()
            return
        self._inner = inner
        self._up.set()
        self._release.wait()  # this thread's life is the started processes' (PR_SET_PDEATHSIG)
        try:
            inner.shutdown()
        except Exception:  # noqa: BLE001 - shutting down is best effort
            pass

    def up(self, timeout: float | None = None) -> bool:
        """Wait (at most `timeout`) until the backend has started; whether it has (a failed start
        counts: the next call says why)."""
        return self._up.wait(timeout)

    # -- the protocol ----------------------------------------------------------------------------

    def capacity(self) -> int:
        if self._closed:
            return 0
        inner = self._pump()
        here = 1 if self._here is not None and not self._here.cancel.is_set() else 0
        return 1 if inner is None else inner.capacity() + here

    def submit(self, key: str, payload: dict[str, Any], attempt: int = 0) -> Handle:
        if self._closed:
            raise RuntimeError("Handover is shut down")
        h = Handle(key, attempt)
        self._queue.append((h, payload))
        self._where[h] = "queued"
        self._pump()
        return h

    def wait(self, handles: list[Handle], timeout: float | None = None) -> list[Outcome]:
        """As the protocol says; also returns (maybe with nothing) when the backend has just come
        up, so the caller can fill its slots."""
        if not any(h in self._where or h in self._done for h in handles):
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        was_up = self._up.is_set()
        while True:
            inner = self._pump()
            out = self._collect(handles)
            there = [h for h in handles if self._where.get(h) == "there"]
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if there and inner is not None:
                if out:
                    t: float | None = 0.0
                elif any(self._where.get(h) in ("here", "queued") for h in handles):
                    t = _SLICE_S if left is None else min(_SLICE_S, left)  # look here again soon
                else:
                    t = left
                got = inner.wait(there, timeout=t)
                for o in got:
                    self._where.pop(o.handle, None)
                out += got
            elif not out:
                self._wake.wait(_SLICE_S if left is None else min(_SLICE_S, left))
                self._wake.clear()
                out = self._collect(handles)
            if out or (not was_up and self._up.is_set()) or (
                    deadline is not None and time.monotonic() >= deadline):
                self._deliver_rows()
                return out

    def cancel(self, handle: Handle, reason: str = "cancelled") -> None:
        where = self._where.get(handle)
        if where == "there":
            assert self._inner is not None  # sent there
            self._inner.cancel(handle, reason)
            return
        if where == "queued":
            self._queue = deque((h, p) for h, p in self._queue if h != handle)
        elif where == "here" and self._here is not None and self._here.handle == handle:
            self._here.cancel.set()  # it stops at its next epoch; the slot is taken until then
        else:
            return
        self._cancelled.add(handle)
        with self._lock:  # a result that came first stands (the pool takes a result over a cancel)
            self._done.setdefault(handle, Outcome(handle, lost=reason, node=self.node))

    def share(self, blob: bytes) -> "_Shared":
        return _Shared(self, blob)

    def shutdown(self) -> None:
        """Stop the task here (at its next epoch; it is not waited for), then wait for a start under
        way to end and the started backend to shut down (a start not yet due never happens)."""
        if self._closed:
            return
        self._closed = True
        if self._here is not None:
            self._here.cancel.set()
        self._queue.clear()
        self._release.set()
        self._starter.join()

    # -- views -----------------------------------------------------------------------------------

    def running_per_node(self) -> dict[str, int]:
        inner = self._inner if self._up.is_set() else None
        out = dict(getattr(inner, "running_per_node", dict)()) if inner is not None else {}
        if self._here is not None and not self._here.cancel.is_set():
            out[self.node] = out.get(self.node, 0) + 1
        return out

    # -- inside ----------------------------------------------------------------------------------

    def _pump(self) -> Backend | None:
        """Move queued tasks on (to the started backend once it is up, else here when the slot is
        free); the started backend, or None while it starts."""
        if self._error is not None:
            raise BackendLost(self._error)
        inner = self._inner if self._up.is_set() else None
        if inner is not None and not self._announced:
            self._announced = True
            if self.on_up is not None:
                self.on_up(inner)
        while self._queue and not self._closed:
            h, payload = self._queue[0]
            if inner is not None:
                inner.submit(h.key, payload, h.attempt)
                self._where[h] = "there"
            elif self._here is None:
                self._run_here(h, payload)
            else:
                break
            self._queue.popleft()
        return inner

    def _run_here(self, h: Handle, payload: dict[str, Any]) -> None:
        here = self._here = _Here(h)
        self._where[h] = "here"

        def on_epoch(row: dict) -> None:
            if here.cancel.is_set():
                raise _Cancelled
            self._rows.append((h, row))

        def work() -> None:
            o: Outcome | None
            try:
                result = self.fn(payload, on_epoch=on_epoch)
                if callable(result):  # the task's CPU tail, at once (as inline)
                    if here.cancel.is_set():
                        raise _Cancelled
                    result = result()
                o = Outcome(h, result=result, node=self.node)
            except _Cancelled:
                o = None
            except BaseException as e:  # noqa: BLE001 - the task's own bug: lost, the driver lives
                o = Outcome(h, lost=f"{type(e).__name__}: {e}", retryable=False, node=self.node)
            with self._lock:
                if o is not None and not here.cancel.is_set():
                    self._done[h] = o
                self._here = None
            self._wake.set()

        threading.Thread(target=work, name=f"task-here-{h.key}", daemon=True).start()

    def _collect(self, handles: list[Handle]) -> list[Outcome]:
        with self._lock:
            out = [self._done.pop(h) for h in handles if h in self._done]
        for o in out:
            self._where.pop(o.handle, None)
        return out

    def _deliver_rows(self) -> None:
        """Progress rows of the tasks run here, on the caller's thread, each before its outcome."""
        rows, self._rows = self._rows, []
        for h, row in rows:
            if self.progress is not None and h not in self._cancelled:
                try:
                    self.progress(h.key, row)
                except Exception:  # noqa: BLE001 - a broken progress view never stops a sweep
                    pass


def _same(x: Any) -> Any:
    return x


class _Shared:
    """`share`'s handle: the bytes themselves to a task run here; pickled (only to go to the started
    backend's workers), that backend's own handle on them, made once."""

    def __init__(self, owner: Handover, blob: bytes):
        self._owner, self._blob = owner, blob
        self._there: Any = None

    def __call__(self) -> bytes:
        return self._blob

    def __reduce__(self):
        if self._there is None:
            inner = self._owner._inner
            if inner is None:
                raise RuntimeError("a shared handle was sent before its backend had started")
            self._there = inner.share(self._blob)
        return _same, (self._there,)
