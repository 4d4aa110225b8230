"""What keeps a large record fast (bench/record_scale.py measures it; these prove the properties,
never a time): once compacted, the read-only verbs open the same few files whatever the number of
trials; the read-only verbs read the Optuna journal in one pass of their own (the same trials as
Optuna's replay, a third of its time) and never import torch, nor sklearn where they only read
(status, export: some 2 s of start-up for a command that only reads Parquet; `analyze`, which writes
the report, imports sklearn with Optuna's importance evaluators); a resumed driver replays the
journal once, while its backend starts."""
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
from optuna.trial import TrialState

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
    """The Parquet files a CLI command opens (folder/name), in order."""
    seen, real_open, real_read = [], pq.ParquetFile.__init__, pq.read_table

    def note(source) -> None:
        seen.append(f"{Path(source).parent.name}/{Path(source).name}")

    def opening(self, source, *a, **kw):
        note(source)
        real_open(self, source, *a, **kw)

    def reading(source, *a, **kw):
        note(source)
        return real_read(source, *a, **kw)

    monkeypatch.setattr(pq.ParquetFile, "__init__", opening)
    monkeypatch.setattr(pq, "read_table", reading)
    assert main(argv) == 0
    capsys.readouterr()
    monkeypatch.undo()
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


def test_the_read_only_journal_view_is_what_optunas_replay_gives(tmp_path, monkeypatch):
    """status and analyze fold the journal themselves (`sweeps.journal`): the same trials, states,
    parameters and attributes as Optuna's replay, on a journal with every kind of record the
    driver writes (told, failed, re-enqueued while running and once finished, waiting, duplicate
    study names, a deleted study)."""
    import optuna

    from sweeps.journal import read_study
    from sweeps.study import open_study, requeue, storage_for

    spec = load_spec(small_spec(n_trials=5))

    def flaky(payload, on_epoch=None):  # every other configuration fails
        out = fake_task(payload, on_epoch)
        return out if payload["params"]["lr"] < 0.02 else {**out, "state": "FAIL", "error": "boom"}

    run_sweep(spec, tmp_path, fn=flaky, log=None)
    study = open_study(spec, tmp_path)
    clash = study.ask()  # a parameter whose distribution clashes with the study's: written, rejected
    with pytest.raises(ValueError, match="dynamic value space"):
        clash.suggest_categorical("method", ["x", "y"])
    study.tell(clash, state=TrialState.FAIL)
    t = study.ask()
    t.suggest_categorical("method", ["ft", "rl"])  # a trial killed while running, then re-enqueued
    requeue(study, t, reason="left RUNNING")
    done = study.get_trials(states=(TrialState.COMPLETE,))[0]
    requeue(study, done, reason="missing from Parquet")
    study.enqueue_trial({"method": "rl", "rl.lr": 0.05})
    storage = storage_for(spec, tmp_path)
    other = optuna.create_study(study_name="other", storage=storage)
    other.tell(other.ask(), 1.0)
    optuna.delete_study(study_name="other", storage=storage)
    optuna.create_study(study_name="other", storage=storage).ask()

    counts = _replayed_logs(monkeypatch)
    view = read_study((tmp_path / "study.journal").read_bytes(), spec.name)
    assert counts == []  # Optuna's replay was not used
    monkeypatch.undo()
    real = optuna.load_study(study_name=spec.name, storage=storage_for(spec, tmp_path))
    assert view.user_attrs == real.user_attrs
    assert {t.state for t in real.trials} >= {TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING}
    assert len(view.trials) == len(real.trials)
    for v, r in zip(view.get_trials(), real.get_trials(deepcopy=False)):
        assert (v.number, v.state, v.user_attrs) == (r.number, r.state, r.user_attrs)
        assert v.params == {k: r.distributions[k].to_internal_repr(x) for k, x in r.params.items()}
    assert "method" not in view.trials[clash.number].params
    assert read_study((tmp_path / "study.journal").read_bytes(), "nope") is None


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


@pytest.mark.parametrize("verbs, heavy", [(("status", "export"), "[]"), (("analyze",), "['sklearn']")])
def test_read_only_verbs_import_neither_torch_nor_sklearn(small_and_large, verbs, heavy):
    # analyze writes the report, whose parameter importances are Optuna's evaluators: importing
    # optuna.importance imports sklearn (1-3 s here); it still never imports torch
    _, large = small_and_large
    (large / ".answer.cache.json").unlink(missing_ok=True)  # the answer computed, not the one kept
    code = ("import sys\nfrom orchestrator.cli import main\n"
            f"for verb in {verbs!r}:\n    assert main([verb, {str(large)!r}]) == 0\n"
            "print('heavy:', sorted(m for m in ('torch', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == f"heavy: {heavy}"


def test_a_folder_of_many_one_run_files_reads_into_few_chunks(tmp_path):
    """A record whose compaction never ran (written by an older version, or a full disk): its
    one-run tables are merged while they are read, so the table holds a few chunks per column, not
    one per file (30,000 files held 4.9 GB that way), and every row is there once, in file order."""
    import pyarrow as pa

    from sweeps import results as R

    n = 2 * R.MERGE_EVERY + 7
    for i in range(n):
        R.write_atomic(pa.table({"fingerprint": [f"fp{i:04d}"], "x": [i]}), tmp_path / f"fp{i:04d}.parquet")
    got = R.scan(tmp_path, pa.schema([("fingerprint", pa.string()), ("x", pa.int64())]))
    assert got.table.column("x").to_pylist() == list(range(n)) and not got.damaged
    assert got.table.column("x").num_chunks <= 3


def _record_builder():
    import importlib.util

    spec = importlib.util.spec_from_file_location("record_scale", ROOT / "bench" / "record_scale.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("state", ["compacted", "killed", "uncompacted"])
def test_the_bench_builds_a_record_the_verbs_accept_in_every_state(tmp_path, capsys, monkeypatch, state):
    """bench/record_scale.py builds its records without the driver: status, analyze and export must
    take one as a sweep's own, with every trial counted, the journal agreeing with Parquet, and the
    same answers from a compacted record as from parts and one-run files."""
    import json

    from sweeps import results as R

    monkeypatch.setattr(R, "COMPACT_EVERY", 4)
    monkeypatch.setattr(R, "PARTS_MAX", 4)
    bench = _record_builder()
    d = tmp_path / state
    assert bench.build(d, 50, state=state) == {"trials": 50, "runs": 50}
    files = sorted(p.name for p in (d / "trials").iterdir())
    merged = [f for f in files if not R.is_single(d / "trials" / f)]
    assert merged == {"compacted": ["compacted.parquet"], "uncompacted": [],
                      "killed": ["compacted.parquet", "part-000001.parquet", "part-000002.parquet",
                                 "part-000003.parquet"]}[state]
    assert len(files) - len(merged) == {"compacted": 0, "killed": 3, "uncompacted": 50}[state]
    assert main(["status", str(d), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["study"] == {"COMPLETE": 50} and st["record_problems"] == []
    assert (st["configurations"], st["complete"]) == (50, 50) and st["front"]
    assert main(["analyze", str(d), "--json"]) == 0
    an = json.loads(capsys.readouterr().out)
    assert an["configurations"] == 50 and an["record_problems"] == [] and an["front"] == st["front"]
    assert (d / "report" / "report.md").is_file()
    assert main(["export", str(d), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)
    if state != "compacted":  # analyze merged the parts and one-run files
        assert [p.name for p in (d / "trials").iterdir()] == ["compacted.parquet"]
    other = tmp_path / "other"  # the same build in the other state: the same rows
    bench.build(other, 50, state="uncompacted" if state == "compacted" else "compacted")
    from sweeps.results import read_results

    cols = ["trial_number", "fingerprint", "method", "params_json", "forget_gap", "test_acc", "utility_drop"]
    assert read_results(d).select(cols).equals(read_results(other).select(cols))


def test_status_merges_a_backlog_of_one_run_files_once_and_says_the_same(tmp_path, capsys, monkeypatch):
    """A record whose compaction never ran: `status` reads it, then merges it under the lock (no
    driver holds it), so the next command reads one file; what status says is unchanged."""
    import json

    from sweeps import results as R

    bench = _record_builder()
    d = tmp_path / "backlog"
    bench.build(d, 30, state="uncompacted")
    monkeypatch.setattr(R, "COMPACT_EVERY", 20)
    said = []
    for _ in range(2):
        assert main(["status", str(d), "--json"]) == 0
        said.append({k: v for k, v in json.loads(capsys.readouterr().out).items() if k != "locks"})
        assert [p.name for p in (d / "trials").iterdir()] == ["compacted.parquet"]
    assert said[0] == said[1] and said[0]["configurations"] == 30
    assert not (d / "driver.lock").exists()  # the lock was let go


def test_parts_hold_each_periodic_compaction_and_the_newest_copy_of_a_run_wins(tmp_path, monkeypatch):
    """The driver's periodic compaction writes the one-run files it merges into the next part (its
    cost is theirs, not the record's); the record reads the same through compacted file, parts and
    one-run files; a newer copy of a run (a rerun) replaces the older one wherever they lie; a full
    compaction leaves one file with the same rows."""
    import pyarrow.parquet as pq

    from sweeps import results as R

    monkeypatch.setattr(R, "PARTS_MAX", 5)
    bench = _record_builder()
    whole = tmp_path / "whole"
    bench.build(whole, 20, state="uncompacted")
    d = tmp_path / "grown"
    d.mkdir()
    for sub in ("trials", "history"):
        (d / sub).mkdir()
    by_trial = {pq.read_table(p).column("trial_number")[0].as_py(): p.name for p in (whole / "trials").iterdir()}

    def land(numbers) -> None:  # the runs of these trials land as one-run files
        for n in numbers:
            for sub in ("trials", "history"):
                shutil.copy(whole / sub / by_trial[n], d / sub / by_trial[n])

    land(range(12))
    assert R.compact(d, full=False) == 24  # no compacted file yet: this is it
    land(range(12, 16))
    assert R.compact(d, full=False) == 8
    land(range(16, 20))
    R.compact(d, full=False)
    names = sorted(p.name for p in (d / "trials").iterdir())
    assert names == ["compacted.parquet", "part-000001.parquet", "part-000002.parquet"]
    assert pq.read_metadata(d / "trials" / "part-000002.parquet").num_rows == 4
    assert R.read_results(d).equals(R.read_results(whole))
    assert R.read_history(d).num_rows == R.read_history(whole).num_rows
    fp = by_trial[13].removesuffix(".parquet")
    assert R.read_row(d, fp)["trial_number"] == 13  # from its part
    # run 13 again (a rerun): its new one-run file wins over the part's copy, once merged too
    row = R.read_row(d, fp)
    row["error"] = "redone"
    R.write_trial(d, row, [], R.trial_schema(bench.bench_spec(20, 1)))
    for _ in range(2):
        t = R.read_results(d)
        assert t.num_rows == 20 and t.filter(pa_equal(t, "fingerprint", fp)).column("error").to_pylist() == ["redone"]
        assert R.read_row(d, fp)["error"] == "redone"
        R.compact(d, full=False)
    assert (d / "trials" / "part-000003.parquet").is_file()
    R.compact(d, full=True)
    assert sorted(p.name for p in (d / "trials").iterdir()) == ["compacted.parquet"]
    assert sorted(p.name for p in (d / "history").iterdir()) == ["compacted.parquet"]
    assert R.read_results(d).num_rows == 20 and R.read_row(d, fp)["error"] == "redone"
    assert R.read_history(d).num_rows == R.read_history(whole).num_rows


def test_the_driver_merges_the_files_it_wrote_from_memory_into_the_same_part(tmp_path):
    """The driver keeps the tables of the one-run files it wrote (`write_trial(written=)`) and its
    periodic compaction merges them without reading the files back: the part equals the one merged
    from the files; a file gone from the folder meanwhile is not brought back from memory."""
    from sweeps import results as R

    bench = _record_builder()
    whole = tmp_path / "whole"
    bench.build(whole, 12, state="uncompacted")
    schema = R.trial_schema(bench.bench_spec(12, 1))
    runs = [(R.read_row(whole, p.stem), pq.read_table(whole / "history" / p.name).to_pylist())
            for p in sorted((whole / "trials").iterdir())]
    memory, disk = tmp_path / "memory", tmp_path / "disk"
    known: dict = {}
    for d, w in ((memory, known), (disk, None)):
        R.write_trial(d, *runs[0], schema)  # a first compaction: the compacted file
        R.compact(d, full=False)
        for row, history in runs[1:]:
            R.write_trial(d, row, history, schema, written=w)
    assert len(known) == 2 * 11
    gone = memory / "trials" / f"{runs[5][0]['fingerprint']}.parquet"
    gone.unlink()
    (disk / "trials" / gone.name).unlink()
    assert R.compact(memory, full=False, written=known) == R.compact(disk, full=False) == 21
    assert known == {}  # what was merged, and the file that went, are let go
    for sub in ("trials", "history"):
        a, b = (pq.read_table(d / sub / "part-000001.parquet") for d in (memory, disk))
        assert a.equals(b) and a.num_rows == (10 if sub == "trials" else b.num_rows)
    assert R.read_results(memory).equals(R.read_results(disk))


def pa_equal(t, column: str, value):
    import pyarrow.compute as pc

    return pc.equal(t.column(column), value)


def test_a_large_journal_is_folded_once_then_from_its_tail(tmp_path, monkeypatch):
    """The fold of a large journal is kept beside it: a later read folds only what was appended,
    and gives what a whole read gives; a fold that no longer matches its journal (replaced,
    rewritten, cut) or that is not one is ignored and folded again."""
    import json

    from sweeps import journal as J

    monkeypatch.setattr(J, "FOLD_MIN", 2000)
    bench = _record_builder()
    d = tmp_path / "r"
    bench.build(d, 30, state="compacted")
    path, name = d / "study.journal", json.loads((d / "run.json").read_text())["study_name"]
    cache = d / J.FOLD_FILE

    def same(view) -> bool:
        whole = J.read_study(path.read_bytes(), name)
        return [(t.number, t.state, t.params, t.user_attrs) for t in view.trials] == \
            [(t.number, t.state, t.params, t.user_attrs) for t in whole.trials] and \
            view.user_attrs == whole.user_attrs

    fed: list[int] = []
    real_feed = J.Fold.feed
    monkeypatch.setattr(J.Fold, "feed", lambda self, recs: (fed.append(len(recs)), real_feed(self, recs))[1])

    def cached() -> tuple[bool, list[int]]:
        fed.clear()
        view = J.read_study_cached(path, name)
        folded = list(fed)
        return same(view), folded

    assert cached() == (True, [0])  # the build saved it, as a sweep does at its end
    cache.unlink()
    assert cached() == (True, [len(path.read_bytes().splitlines())]) and cache.is_file()
    assert cached() == (True, [0])  # nothing appended: nothing folded
    # the journal grows (a running sweep): only the new lines are folded
    lines = path.read_bytes().splitlines(keepends=True)
    head, tail = b"".join(lines[: len(lines) // 2]), b"".join(lines[len(lines) // 2:])
    path.write_bytes(head)
    cache.unlink()
    assert cached() == (True, [len(lines) // 2])
    with open(path, "ab") as fh:
        fh.write(tail)
    assert cached() == (True, [len(lines) - len(lines) // 2])
    # a copy of the record keeps its fold; another journal in its place does not
    shutil.copytree(d, tmp_path / "copied")
    path = tmp_path / "copied" / "study.journal"
    assert cached() == (True, [0])
    bench.build(tmp_path / "other", 30, state="compacted", seed=1)
    os.replace(tmp_path / "other" / "study.journal", path)
    assert cached() == (True, [len(path.read_bytes().splitlines())])
    lines = path.read_bytes().splitlines()
    # a fold that is not one, or whose covered bytes changed
    cache = path.with_name(J.FOLD_FILE)
    for garbage in (b"{not json", b'{"offset": 5}', json.dumps({**json.loads(cache.read_bytes()),
                                                                 "fold": {"trials": 3}}).encode()):
        cache.write_bytes(garbage)
        assert cached() == (True, [len(lines)])
    doc = json.loads(cache.read_bytes())
    doc["check"] = "0" * 64
    cache.write_text(json.dumps(doc))
    assert cached() == (True, [len(lines)])


def test_a_sweep_leaves_its_journal_folded_so_status_folds_nothing(tmp_path, monkeypatch):
    from sweeps import journal as J

    monkeypatch.setattr(J, "FOLD_MIN", 2000)
    d = _sweep(tmp_path / "r", 6)
    assert (d / J.FOLD_FILE).is_file()
    fed: list[int] = []
    real_feed = J.Fold.feed
    monkeypatch.setattr(J.Fold, "feed", lambda self, recs: (fed.append(len(recs)), real_feed(self, recs))[1])
    assert main(["status", str(d)]) == 0
    assert fed == [0]
