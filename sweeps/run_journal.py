"""The run's own journal, written by its driver: `RunJournal` (Optuna's JournalFileBackend with
batched appends), the JournalStorage on it, and its replay in the background while the driver
starts. The read-only view of a journal (status, analyze) is sweeps/journal.py, which needs no
Optuna.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from pathlib import Path

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend


class JournalReplay:
    """The journal replayed by Optuna in a background thread, while the driver starts its backend
    (at 10,000 trials the replay takes about a second; an embedded Ray's start several, waiting on
    its processes). `storage()` waits for it: the JournalStorage, or None if the journal turned out
    damaged inside (then `repair_journal`, and a fresh replay). Started once `journal_tail_whole`
    holds (Optuna's reader would skip a bad last line) and before anything is appended; nothing else
    writes the journal meanwhile (the driver holds the lock)."""

    def __init__(self, path: Path):
        self._storage: JournalStorage | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), name="journal-replay", daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._storage = journal_storage(path)
        except Exception:  # noqa: BLE001 - ValueError, KeyError, ...: a damaged line inside
            self._storage = None

    def storage(self) -> JournalStorage | None:
        self._thread.join()
        return self._storage


# -- the run's own journal, written by its driver ------------------------------------------------

class RunJournal(JournalFileBackend):
    """A run's own journal file (one writer: its driver, which holds the run directory's lock), with
    `batch()`: the log lines of the storage calls made inside the block are appended as one write
    (one lock, one fsync) when it ends, in the order they were made. Inside the block they are
    already visible to this process's storage (`read_logs` serves them after the file's lines), so
    Optuna reads its own writes; other readers see them at the end (an exception inside the block
    still writes what was done, as without a batch; a process killed inside it writes none of it).
    The journal's content is the same with or without batches.
    Why: each append is an fsync; a trial's attributes (run id, constraints for the dashboard,
    feasibility) had made them 9.4 per trial, the most of the driver's cost per trial."""

    def __init__(self, path: str):
        super().__init__(path)
        self._pending: list[dict] | None = None
        self._on_file = 0  # log lines on file, as far as this process has read or written them

    def read_logs(self, log_number_from: int):
        if self._pending is None:
            n = log_number_from
            for log in super().read_logs(log_number_from):
                n += 1
                yield log
            self._on_file = max(self._on_file, n)
            return
        if log_number_from < self._on_file:  # nothing else writes this file: it ends at _on_file
            yield from super().read_logs(log_number_from)
        yield from self._pending[max(0, log_number_from - self._on_file):]

    def append_logs(self, logs: list[dict]) -> None:
        if self._pending is None:
            super().append_logs(logs)
        else:
            self._pending.extend(logs)

    @contextlib.contextmanager
    def batch(self):
        if self._pending is not None:  # nested: the outer block writes
            yield
            return
        for _ in self.read_logs(self._on_file):  # the file's end, in case it was not read up to it
            pass
        self._pending = []
        try:
            yield
        finally:
            pending, self._pending = self._pending, None
            if pending:
                super().append_logs(pending)
                for _ in self.read_logs(self._on_file):  # past them, so the next read seeks, not scans
                    pass


# the RunJournal behind a storage made by `journal_storage`, and behind a study opened on one
_JOURNALS: "weakref.WeakKeyDictionary[object, RunJournal]" = weakref.WeakKeyDictionary()


def journal_storage(path: Path) -> JournalStorage:
    """The JournalStorage of a run's own journal file (a `RunJournal`)."""
    backend = RunJournal(str(path))
    storage = JournalStorage(backend)
    _JOURNALS[storage] = backend
    return storage


def journal_study(study, storage) -> None:
    """Remember that `study` was opened on `storage`, for `batch`."""
    if storage in _JOURNALS:
        _JOURNALS[study] = _JOURNALS[storage]


def batch(study):
    """`RunJournal.batch()` for a study `open_study` opened on a run's own journal; a block that
    does nothing for any other storage (an RDB URL: its writes are transactions of their own)."""
    backend = _JOURNALS.get(study)
    return backend.batch() if backend is not None else contextlib.nullcontext()
