"""Errors a user can fix (one line, exit code 2), and failures as data.

A run that does not finish is recorded with a `Failure`: a kind from a closed list and the message a
person reads. Code decides by the kind (rerun it? retire the worker?); the message is only shown.
"""
from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict


class UserError(Exception):
    """Bad input: an unknown name, a missing path, a value out of range. Message = one clear line."""


class DataError(UserError):
    """A data set cannot be found or read."""


class Aborted(Exception):
    """A run stopped for a reason outside its input (the disk filled up, the run directory became
    read-only). Message: one line; the CLI exits 1. What was recorded before stays whole."""


class FailureKind(str, Enum):
    """Why a run (a trial, an oracle, an audit task) has no result."""

    USER_ERROR = "user_error"  # its configuration or input cannot run (a rejected combination, no data)
    DIVERGED = "diverged"  # a non-finite loss, weights or outputs
    OUT_OF_MEMORY = "out_of_memory"  # the device ran out of memory
    TIMEOUT = "timeout"  # cancelled by the driver after resources.timeout_s
    LOST_WORKER = "lost_worker"  # its worker process or node died and the retries ran out
    INTERRUPTED = "interrupted"  # the sweep was stopped (a signal, the failure budget) while it ran
    ERROR = "error"  # an exception in a method, the task function or the environment: a bug
    RACED = "raced"  # never run: its configuration was dropped after its first seed(s) (spec `race`)

    @property
    def transient(self) -> bool:
        """A failure that says nothing about the configuration: never reused, `resume` reruns it."""
        return self in (FailureKind.LOST_WORKER, FailureKind.INTERRUPTED)

    @property
    def stands(self) -> bool:
        """A failed run's row may stand for a new run of the same fingerprint: the failure belongs
        to the configuration (not transient), and the run did run (not raced)."""
        return not self.transient and self is not FailureKind.RACED


class Failure(BaseModel):
    """A failed run: its kind and the reason, one line for people."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FailureKind
    message: str

    def __str__(self) -> str:
        return self.message


class TrialFailed(Exception):
    """A trial that started but cannot finish: recorded as a FAIL with `kind`, not raised to the user."""

    def __init__(self, message: str, kind: FailureKind):
        super().__init__(message)
        self.kind = kind

    def failure(self) -> Failure:
        return Failure(kind=self.kind, message=str(self))
