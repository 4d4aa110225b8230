"""A run directory as a driver holds it: locked (one driver at a time), repaired before anything is
appended (a torn journal tail cut, unreadable Parquet files set aside), written run by run (history,
then the trial row, each file atomic: sweeps/results.py), compacted as it grows, unlocked at the end.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sweeps import results as R
from sweeps.journal import journal_tail_whole, repair_journal, save_fold
from sweeps.run_journal import JournalReplay
from sweeps.rundir import DriverLock
from unlearning.errors import FailureKind, UserError

if TYPE_CHECKING:
    import pyarrow as pa

MIN_FREE_BYTES = 16 << 20


def os_reason(e: OSError) -> str:
    """The reason of an OSError in a few words, also for pyarrow's, which carry the errno only in
    their message ("... Detail: [errno 28] No space left on device")."""
    import os
    import re

    m = re.search(r"\[errno (\d+)\]", str(e))
    if m:
        return os.strerror(int(m.group(1)))
    return e.strerror or (str(e).splitlines() or [type(e).__name__])[0]


class Record:
    def __init__(self, run_dir: Path, journal: bool, say: Callable[[str], None], role: str = "sweep"):
        self.run_dir, self.say = Path(run_dir), say
        self.journal = self.run_dir / "study.journal" if journal else None
        self.created = not self.run_dir.exists()
        # the folders above it that `open` creates (--out a/b/run with no a/): a refusal removes them
        # too, each only if empty (another sweep may have started in one meanwhile)
        self._parents_made = [p for p in self.run_dir.parents if not p.exists()]
        self.lock = DriverLock(self.run_dir, role)
        self.states: dict[str, tuple[str, FailureKind | None]] = {}  # fingerprint -> (state, kind)
        self.replay: JournalReplay | None = None  # the journal replayed while the backend starts
        self._since_compact = 0
        self._written: dict[Path, pa.Table] = {}  # one-run files written here, not yet compacted

    @classmethod
    def open(cls, run_dir: Path, *, journal: bool, force: bool = False,
             say: Callable[[str], None] = lambda msg: None, role: str = "sweep") -> "Record":
        """Create the run directory if needed, take its lock (naming `role`: sweep or replicate),
        check there is room, repair it. Every way this can fail is one UserError line; a directory
        it created is removed again."""
        rec = cls(run_dir, journal, say, role)
        try:
            rec.run_dir.mkdir(parents=True, exist_ok=True)
            rec.lock.acquire(force=force)
        except UserError:
            rec._forget()
            raise
        except OSError as e:
            rec._forget()
            raise UserError(f"{run_dir}: cannot be used as a run directory ({os_reason(e)})") from None
        free = shutil.disk_usage(rec.run_dir).free
        if free < MIN_FREE_BYTES:
            rec.release(remove=True)
            raise UserError(f"{run_dir}: only {free / 2**20:.1f} MiB free on its file system; the "
                            f"record needs room (at least {MIN_FREE_BYTES >> 20} MiB)")
        try:
            rec._repair()
        except BaseException:
            rec.release(remove=True)
            raise
        return rec

    def _repair(self) -> None:
        """Before anything is appended: cut a torn journal tail, set unreadable Parquet aside, merge a
        large backlog of one-run files. The journal is then replayed in the background while the
        backend starts (`JournalReplay`), which also finds a damaged line inside it."""
        if self.journal and self.journal.is_file():
            self.repair_journal(only_a_bad_tail=True)
        scans = R.scan_record(self.run_dir)
        for sub in scans:
            for note in R.quarantine(self.run_dir, scans[sub].damaged):
                self.say(f"record: {note}")
        pending = len(scans["trials"].singles())
        if pending >= R.COMPACT_EVERY:
            self.compact(quiet=True, scans=scans)
        else:  # what a killed sweep leaves: merged by the next periodic compaction, not before trials start
            self._since_compact = pending
        self.states = R.record_states(scans["trials"])
        if self.journal and self.journal.is_file():  # last: a replay beside the work above would slow it
            self.replay = JournalReplay(self.journal)

    def repair_journal(self, only_a_bad_tail: bool = False) -> None:
        assert self.journal is not None
        try:
            note = None if only_a_bad_tail and journal_tail_whole(self.journal) else \
                repair_journal(self.journal)
        except OSError as e:
            raise UserError(f"{self.journal}: cannot be repaired ({e.strerror or e})") from None
        if note:
            self.say(f"record: {note}")

    # -- runs ----------------------------------------------------------------------------------------
    def reusable(self, fp: str) -> dict[str, Any] | None:
        """The recorded row of run `fp` when it may stand for a new run of it: complete, or failed for
        a reason that belongs to the configuration (not a lost worker or an interruption; a raced
        run never ran)."""
        state, kind = self.states.get(fp, (None, None))
        if state is None or (state != "COMPLETE" and (kind is None or not kind.stands)):
            return None
        return R.read_row(self.run_dir, fp)

    def has(self, fp: str) -> bool:
        return fp in self.states

    def write(self, row: dict[str, Any], history: list[dict[str, Any]], schema) -> None:
        """History, then the trial row (sweeps/results.write_trial); compacts every COMPACT_EVERY."""
        R.write_trial(self.run_dir, row, history, schema, written=self._written)
        kind = row.get("failure_kind")
        self.states[row["fingerprint"]] = (row["state"], FailureKind(kind) if kind else None)
        self._since_compact += 1
        if self._since_compact >= R.COMPACT_EVERY:
            self.compact()

    def compact(self, quiet: bool = False, scans: dict[str, R.Scan] | None = None, full: bool = False) -> None:
        """The one-run files into the next part (full: everything into the compacted file). When
        the record is whole again, the journal's saved fold is brought up to date too (a large
        journal: what `status` reads instead of folding the whole file)."""
        try:
            R.compact(self.run_dir, scans, full=full, written=self._written)
            if self.journal is not None and not R.has_parts(self.run_dir / "trials"):
                save_fold(self.journal)
        except OSError as e:  # a full disk: the one-run files stay, which is fine
            if not quiet:
                self.say(f"warning: compacting the record failed ({e.strerror or e}); it stays as it is")
        self._since_compact = 0

    # -- the end ---------------------------------------------------------------------------------------
    def release(self, remove: bool = False) -> None:
        """Let go of the lock; `remove`: a refusal leaves nothing behind, so a directory this record
        created goes too."""
        self.lock.release()
        if remove:
            self._forget()

    def _forget(self) -> None:
        if self.created:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            for p in self._parents_made:  # nearest first
                try:
                    p.rmdir()
                except OSError:  # not empty (or gone): not ours alone
                    break
