"""A run directory's study for the verbs that only read it (status, analyze, trials): its journal
as a `sweeps.journal.StudyView`, without Optuna; a study in a database as Optuna's own."""
from __future__ import annotations

from pathlib import Path

from sweeps.journal import Damaged, journal_damage, read_study, read_study_cached
from sweeps.rundir import run_identity
from sweeps.spec import SweepSpec


def study_name(spec: SweepSpec, run_dir: Path) -> str:
    ident = run_identity(run_dir)
    return ident["study_name"] if ident and ident.get("study_name") else spec.name


def load_study_readonly(spec: SweepSpec, run_dir: Path):
    """The study of a run directory for reading only (status, analyze): nothing of the record is
    changed (a large journal's fold is kept beside it: `sweeps.journal.read_study_cached`). A
    journal is read as a `sweeps.journal.StudyView` (its trials' numbers, states, parameters and
    user attributes; a damaged journal from its whole records), without Optuna; an RDB storage as
    an optuna.Study.
    (study or None, one-line notice or None)."""
    if not spec.storage:
        path = run_dir / "study.journal"
        if not path.is_file():
            return None, None
        name = study_name(spec, run_dir)
        try:
            return read_study_cached(path, name), None
        except Damaged:
            good, bad, _ = journal_damage(path)
            notice = (f"study.journal: {bad} line(s) are not whole records (a torn write?); "
                      "`resume` repairs it, keeping a copy")
            try:
                return read_study(b"".join(ln + b"\n" for ln in good), name), notice
            except Damaged:
                return None, notice
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study_name(spec, run_dir), storage=spec.storage), None
    except KeyError:
        return None, None
    except Exception as e:  # noqa: BLE001 - an unreachable database
        return None, f"storage: cannot open the study ({type(e).__name__}: {str(e).splitlines()[0]})"
