"""A record's answer kept beside it (`.answer.cache.json` in the run directory): what `status` and
`analyze` computed from the record (the study's trial counts, the record's problems, the summary
text and the JSON of the analysis, and which report/ was written from it), keyed on an exact stamp
of everything that answer was computed from, so that an unchanged record answers without reading
it (nor importing pandas, pyarrow or Optuna).

The stamp (`stamp`) hashes, for spec.yaml, run.json, study.journal, every file under trials/,
history/ and audit/: its path, size, mtime_ns and inode; plus the code that computes the answer
(the package's version, the size and mtime of the modules under sweeps/ and of the verbs). Any
write, append, rename over (a new inode), addition or removal changes it; a copy of the record
(new inodes) misses once. A sweep whose study lives in a database (`storage:`) has no stamp:
what the database holds cannot be stamped from here, so it is never cached.

The cache is derived data and never required: written atomically (temp + rename), read only when
its stamp is the record's stamp now, ignored when missing, unreadable or not ours. A writer takes
the stamp before it reads the record and saves only when the stamp is unchanged after it answered
(`save`), so a record that changed meanwhile is never paired with an older answer, and only an
answer the secret scrubber leaves as it is (unlearning.redact: what leaves the process passes it).
What is printed from it is byte-identical to what is computed (tests/test_answer_cache.py).

Light on purpose: the standard library only.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_FILE = ".answer.cache.json"
FORMAT = 1
_FILES = ("spec.yaml", "run.json", "study.journal")
_FOLDERS = ("trials", "history", "audit")
_ROOT = Path(__file__).resolve().parents[1]  # the source tree: sweeps/, orchestrator/


def _entries(path: Path, rel: str, out: list) -> None:
    """(rel, size, mtime_ns, inode) of a file, or of every file below a folder (hidden ones too:
    a temp file is a writer at work), sorted; ("rel", None) for a missing one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        out.append((rel, None))
        return
    if not os.path.isdir(path):
        out.append((rel, st.st_size, st.st_mtime_ns, st.st_ino))
        return
    with os.scandir(path) as it:
        names = sorted(e.name for e in it)
    out.append((rel, "dir"))
    for name in names:
        _entries(path / name, f"{rel}/{name}", out)


# what an answer holds (sweeps.report.summary.record_answer), and "report": the stamp of report/ or None
_SHAPE = {"states": dict, "problems": list, "summary": str, "json": dict}
_LIBRARIES = ("pandas", "numpy", "pyarrow", "optuna", "scipy")  # their formatting and numbers


def _code() -> list:
    """What computes the answer: the package's version and its modules' sizes and mtimes, the
    Python version, and the libraries' installed files (found, not imported: a reinstall or an
    upgrade rewrites them)."""
    import sys
    from importlib.util import find_spec

    from unlearning import __version__

    out: list = [__version__, sys.version]
    for lib in _LIBRARIES:
        spec = find_spec(lib)
        origin = spec.origin if spec is not None else None
        st = os.stat(origin) if origin else None
        out.append((lib, origin, st.st_size if st else None, st.st_mtime_ns if st else None))
    for folder in (_ROOT / "sweeps", _ROOT / "orchestrator" / "verbs"):
        for dirpath, dirnames, files in os.walk(folder):
            dirnames.sort()
            for f in sorted(files):
                if f.endswith(".py"):
                    st = os.stat(os.path.join(dirpath, f))
                    out.append((os.path.relpath(os.path.join(dirpath, f), _ROOT), st.st_size, st.st_mtime_ns))
    return out


def stamp(run_dir: Path, shared_storage: bool = False) -> str | None:
    """The exact stamp of the record in `run_dir` (module docstring); None where it cannot be
    stamped (the study is in a database: `shared_storage`) or cannot be read."""
    if shared_storage:
        return None
    entries: list = [FORMAT, _code()]
    try:
        for rel in (*_FILES, *_FOLDERS):
            _entries(run_dir / rel, rel, entries)
    except OSError:
        return None
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def report_stamp(report: Path) -> str | None:
    """The stamp of the report folder as written (its files' sizes, mtimes, inodes): a report that
    was deleted, edited or replaced since is not the one the cache names."""
    entries: list = []
    try:
        _entries(report, "report", entries)
    except OSError:
        return None
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest() if entries != [("report", None)] else None


def load(run_dir: Path, current: str | None) -> dict[str, Any] | None:
    """The saved answer when it was computed from the record as it is now (`current`, its
    `stamp`); None otherwise, and for a cache file that is missing, unreadable or not one."""
    if current is None:
        return None
    try:
        doc = json.loads((run_dir / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("stamp") != current:
        return None
    answer = doc.get("answer")
    if not isinstance(answer, dict) or not all(isinstance(answer.get(k), t) for k, t in _SHAPE.items()) \
            or not isinstance(answer.get("report"), (str, type(None))):
        return None
    return answer


def save(run_dir: Path, before: str | None, answer: dict[str, Any], shared_storage: bool = False) -> bool:
    """Save `answer`, computed from the record as stamped `before` (taken before it was read),
    if the record's stamp is still `before` (nothing changed while it was computed). Never raises:
    a read-only or full disk only leaves the next answer to be computed. Returns whether saved."""
    from unlearning.redact import scrub

    if before is None or stamp(run_dir, shared_storage) != before:
        return False
    if scrub(answer) != answer:  # what leaves the process passes the scrubber (as the report does);
        return False  # an answer it would change is not written, so what is printed stays the same
    path = run_dir / CACHE_FILE
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"format": FORMAT, "stamp": before, "answer": answer}))
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a read-only file system refuses even that
            pass
        return False
    return True
