"""What keeps a large record fast (bench/record_scale.py measures it; these prove the properties,
never a time): once compacted, the read-only verbs open the same few files whatever the number of
trials; each command replays the Optuna journal once; the read-only verbs never import torch or
sklearn (some 2 s of start-up for a command that only reads Parquet)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from optuna.storages.journal._storage import JournalStorageReplayResult

from orchestrator.cli import main
from orchestrator.runner import run_sweep
from sweeps.spec import load_spec
from tests.sweep_util import fake_task, small_spec

ROOT = Path(__file__).resolve().parents[1]


def _sweep(run_dir: Path, n: int) -> Path:
    run_sweep(load_spec(small_spec(n_trials=n, seeds=[0, 1])), run_dir, fn=fake_task, log=None)
    return run_dir


@pytest.fixture(scope="module")
def small_and_large(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale")
    return _sweep(d / "small", 3), _sweep(d / "large", 12)


def _parquet_reads(monkeypatch, argv: list[str], capsys) -> list[str]:
    """The Parquet files a CLI command reads (folder/name), in order."""
    seen, real = [], pq.read_table

    def counting(source, *a, **kw):
        seen.append(f"{Path(source).parent.name}/{Path(source).name}")
        return real(source, *a, **kw)

    monkeypatch.setattr(pq, "read_table", counting)
    assert main(argv) == 0
    capsys.readouterr()
    monkeypatch.setattr(pq, "read_table", real)
    return seen


@pytest.mark.parametrize("verb", ["status", "analyze", "export"])
def test_a_compacted_record_is_read_in_the_same_files_whatever_its_size(small_and_large, monkeypatch,
                                                                        capsys, verb):
    small, large = small_and_large
    reads = [_parquet_reads(monkeypatch, [verb, str(d)], capsys) for d in (small, large)]
    assert reads[0] == reads[1]  # 3 trials or 12: the same reads
    assert reads[0] and set(reads[0]) <= {"trials/compacted.parquet", "history/compacted.parquet"}
    assert len(list((large / "trials").iterdir())) == 1  # the sweep ended compacted


def _replayed_logs(monkeypatch) -> list[int]:
    """Log records Optuna's journal replay applies, per call (one replay of the whole file, then
    the few lines each later sync reads)."""
    counts, real = [], JournalStorageReplayResult.apply_logs

    def counting(self, logs):
        logs = list(logs)
        counts.append(len(logs))
        return real(self, logs)

    monkeypatch.setattr(JournalStorageReplayResult, "apply_logs", counting)
    return counts


def test_status_and_analyze_replay_the_journal_once(small_and_large, monkeypatch, capsys):
    _, large = small_and_large
    lines = len((large / "study.journal").read_bytes().splitlines())
    for verb in ("status", "analyze"):
        counts = _replayed_logs(monkeypatch)
        assert main([verb, str(large)]) == 0
        assert sum(counts) == lines, (verb, counts)
    capsys.readouterr()


def test_a_resumed_driver_replays_the_journal_once_while_its_backend_starts(small_and_large, monkeypatch,
                                                                            tmp_path):
    """The backend here starts only once the whole journal is replayed: a driver that replayed it
    after starting its backend (or twice) would fail the asserts."""
    from orchestrator import runner

    run = shutil.copytree(small_and_large[1], tmp_path / "resumed")
    lines = len((run / "study.journal").read_bytes().splitlines())
    counts, seen, real = _replayed_logs(monkeypatch), [], runner.make_backend

    def start_when_replayed(*a, **kw):
        deadline = time.monotonic() + 20
        while sum(counts) < lines and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(sum(counts))
        return real(*a, **kw)

    monkeypatch.setattr(runner, "make_backend", start_when_replayed)
    run_sweep(load_spec(small_spec(n_trials=13, seeds=[0, 1])), run, fn=fake_task, log=None)
    after = len((run / "study.journal").read_bytes().splitlines())
    assert seen == [lines]  # replayed before the backend was up
    assert counts[0] == lines and sum(counts) <= after, counts  # then only what it appended


def test_read_only_verbs_import_neither_torch_nor_sklearn(small_and_large):
    _, large = small_and_large
    code = ("import sys\nfrom orchestrator.cli import main\n"
            f"for verb in ('status', 'analyze', 'export'):\n    assert main([verb, {str(large)!r}]) == 0\n"
            "print('heavy:', sorted(m for m in ('torch', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "heavy: []"
