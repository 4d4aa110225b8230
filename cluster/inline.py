"""The in-process backend: runs each task at submit time, in this process, one at a time (a CPU
tail right after its task: nothing overlaps). Same contract as every other backend
(tests/test_backend_contract.py)."""
from __future__ import annotations

import platform
from typing import Any

from cluster.backend import Handle, Outcome, ProgressFn, TaskFn


class InlineBackend:
    def __init__(self, fn: TaskFn, progress: ProgressFn | None = None):
        self.fn, self.progress = fn, progress
        self._done: dict[Handle, Outcome] = {}

    def capacity(self) -> int:
        return 1

    def submit(self, key: str, payload: dict[str, Any], attempt: int = 0) -> Handle:
        h = Handle(key, attempt)
        try:
            progress = self.progress
            on_epoch = (lambda row: progress(key, row)) if progress else None
            result = self.fn(payload, on_epoch=on_epoch)
            if callable(result):  # the task's CPU tail
                result = result()
            self._done[h] = Outcome(h, result=result, node=platform.node())
        except Exception as e:  # the task function's own bug: a lost task, not a crashed driver
            self._done[h] = Outcome(h, lost=f"{type(e).__name__}: {e}", retryable=False,
                                    node=platform.node())
        return h

    def wait(self, handles: list[Handle], timeout: float | None = None) -> list[Outcome]:
        return [self._done.pop(h) for h in handles if h in self._done]

    def share(self, blob: bytes):
        """The tasks run in this process: a handle that just returns the bytes."""
        return lambda: blob

    def cancel(self, handle: Handle, reason: str = "cancelled") -> None:
        self._done.setdefault(handle, Outcome(handle, lost=reason))

    def shutdown(self) -> None:
        self._done.clear()
