"""The Backend protocol: where trials run. Modelled on submitit's executor: submit returns a handle,
`wait` returns whatever has finished, and an in-process twin (cluster/inline.py) runs the same
contract for tests and debugging.

The cluster package imports none of unlearning/sweeps/orchestrator: a backend runs a *task function*
given at construction (`fn(payload: dict, on_epoch=None)`, importable by module path so remote
workers can load it) on JSON-like payloads. The orchestrator passes `unlearning.tasks.run_task`.

A task function returns its result (a dict), or a zero-argument callable that computes it: its *CPU
tail*, work that no longer needs the trial's device (a trial's MIA SVC). A backend runs the tail in
the same process and reports what it returns as the result, exactly as if `fn` had returned it; the
inline backend runs it at once, the Ray backend with overlap on a background thread of the worker
while the worker's next task uses the device.

A result (dict) with a true `retire_worker` says the worker process should not run another task (a
trial that ran out of device memory leaves a fragmented allocator): a backend with long-lived
workers replaces it once its tasks are done. Backends never read anything else in a result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

# fn(payload, on_epoch=None) -> the result (dict[str, Any]) or its CPU tail (Callable[[], dict]);
# on_epoch(row) is called after each epoch when given
TaskFn = Callable[..., Any]
ProgressFn = Callable[[str, dict[str, Any]], None]  # (task key, per-epoch row)
# credentials a trial worker never needs (the tracker runs in the driver): kept from its environment
WORKER_SECRETS = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_ACCESS_TOKEN")


@dataclass(frozen=True)
class Handle:
    """A submitted task: `key` is the caller's id (the trial fingerprint), `attempt` counts retries."""

    key: str
    attempt: int = 0
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Outcome:
    """What `wait` returns for a finished handle. Exactly one of `result` / `lost` is set:
    `result` is the task function's return value; `lost` says why the worker never returned one
    (process killed, node lost, cancelled, timed out). `retryable` tells the driver whether running
    it again on a fresh worker makes sense. `node` names where it ran, when known."""

    handle: Handle
    result: dict[str, Any] | None = None
    lost: str | None = None
    retryable: bool = False
    node: str = ""


@runtime_checkable
class Backend(Protocol):
    def capacity(self) -> int:
        """How many tasks can run at once right now (the driver keeps this many in flight). It may
        grow while tasks run: an actor whose task is in its CPU tail takes another."""

    def submit(self, key: str, payload: dict[str, Any], attempt: int = 0) -> Handle:
        """Start running the task function on payload; never blocks on the task itself."""

    def wait(self, handles: list[Handle], timeout: float | None = None) -> list[Outcome]:
        """Block until at least one of handles finishes (or timeout); return every finished one.
        May return early with nothing when capacity() has grown."""

    def cancel(self, handle: Handle, reason: str = "cancelled") -> None:
        """Stop a running task; its Outcome (lost=reason, retryable False) comes from `wait`. Tasks
        that had to stop with it (sharing its worker process) come back lost and retryable."""

    def share(self, blob: bytes) -> Callable[[], bytes]:
        """Make bytes available to every worker: returns a picklable zero-argument callable that,
        called inside a task on any node, gives the bytes back (put in a payload, it travels
        cheaply; the bytes move only when called)."""

    def shutdown(self) -> None:
        """Release workers; running tasks are cancelled."""


class BackendLost(Exception):
    """The backend itself is gone, not one of its workers: a Ray cluster whose head (GCS) stopped
    answering. Raised by `submit`, `wait` and `capacity`; every later call raises it again. No
    task can finish any more; the driver records what ran as interrupted and stops (`resume`
    continues on a new cluster). Message: one line naming the cause."""
