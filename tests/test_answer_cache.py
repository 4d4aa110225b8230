"""The answer of `status` and `analyze` kept beside the record (sweeps/answer_cache.py): printed from
it only while the record is exactly as it was read, byte-identical to the answer computed, and
never required (a missing or damaged cache only costs time)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.runner import run_sweep
from sweeps import answer_cache
from sweeps import results as R
from sweeps.report import summary
from sweeps.spec import load_spec
from tests.sweep_util import fake_task, small_spec

CACHE = answer_cache.CACHE_FILE


def _sweep(run_dir: Path, n: int) -> Path:
    run_sweep(load_spec(small_spec(n_trials=n, seeds=[0, 1])), run_dir, fn=fake_task, log=None)
    return run_dir


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    return _sweep(tmp_path_factory.mktemp("cache") / "r", 4)


@pytest.fixture
def run(record, tmp_path):
    """A fresh copy of the module's record (copies have new inodes: no cache carried over)."""
    d = tmp_path / "r"
    shutil.copytree(record, d)
    (d / CACHE).unlink(missing_ok=True)
    return d


@pytest.fixture
def computed(monkeypatch):
    """How many times the answer was computed from the record (not taken from the cache)."""
    calls = []
    real = summary.record_answer

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(summary, "record_answer", counting)
    return calls


def cli(capsys, *argv: str) -> tuple[str, str]:
    assert main(list(argv)) == 0
    out = capsys.readouterr()
    return out.out, out.err


def fresh(capsys, run_dir: Path, *argv: str) -> tuple[str, str]:
    """The answer computed with no cache at all: in a copy of the record without the cache file."""
    other = run_dir.parent / "fresh"
    shutil.rmtree(other, ignore_errors=True)
    shutil.copytree(run_dir, other)
    (other / CACHE).unlink(missing_ok=True)
    out, err = cli(capsys, argv[0], str(other), *argv[1:])
    shutil.rmtree(other)
    return out.replace(str(other), str(run_dir)), err.replace(str(other), str(run_dir))


@pytest.mark.parametrize("argv", [("status",), ("status", "--json"), ("analyze",), ("analyze", "--json")])
def test_an_answer_from_the_cache_is_the_answer_computed(run, capsys, computed, argv):
    first = cli(capsys, argv[0], str(run), *argv[1:])
    assert computed == [1] and (run / CACHE).is_file()
    again = cli(capsys, argv[0], str(run), *argv[1:])
    assert computed == [1]  # from the cache: the record was not read
    assert again == first == fresh(capsys, run, *argv)


def test_status_after_analyze_and_the_driver_answers_from_what_they_kept(run, capsys, computed):
    cli(capsys, "analyze", str(run))
    report_md = (run / "report" / "report.md").stat()
    for argv in (("status",), ("status", "--json"), ("analyze",)):
        assert cli(capsys, argv[0], str(run), *argv[1:]) == fresh(capsys, run, *argv)
    assert computed == [1, 1, 1, 1]  # analyze once, then each fresh copy: never this record again
    assert (run / "report" / "report.md").stat().st_mtime_ns == report_md.st_mtime_ns  # the report kept


def test_the_report_a_sweep_writes_at_its_end_is_kept_by_analyze(tmp_path, capsys, monkeypatch, computed):
    from orchestrator import runner

    real = runner.run_sweep
    monkeypatch.setattr(runner, "run_sweep", lambda spec, d, **kw: real(spec, d, fn=fake_task, log=None, **kw))
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(small_spec(n_trials=3, seeds=[0, 1])))
    run_dir = tmp_path / "runs" / "t"
    assert main(["run", str(spec), "--out", str(run_dir), "--no-probe"]) == 0
    capsys.readouterr()
    assert computed == [1]  # the driver's report
    for argv in (("status",), ("analyze", "--json")):
        assert cli(capsys, argv[0], str(run_dir), *argv[1:]) == fresh(capsys, run_dir, *argv)
    assert computed == [1, 1, 1]  # the fresh copies only


def test_status_keeps_its_answer_for_the_record_it_merged(run, capsys, computed):
    _new_run_file(run)  # what a killed sweep leaves: one-run files
    first = cli(capsys, "status", str(run))
    assert not R._files(run / "trials") and R.has_parts(run / "trials")  # merged into a part
    assert cli(capsys, "status", str(run)) == first == fresh(capsys, run, "status")
    assert computed == [1, 1]  # this record once, then the fresh copy


def test_a_record_changed_between_its_read_and_the_merge_is_not_kept(run):
    from orchestrator.verbs import record

    _new_run_file(run)
    before = answer_cache.stamp(run)
    scans = R.scan_record(run)
    _journal_append(run)  # a driver's write between the read and the lock
    assert record.compact_if_free(run, scans, "status", full=False, read_at=before) is None
    _new_run_file(run)
    before = answer_cache.stamp(run)
    assert record.compact_if_free(run, R.scan_record(run), "status", full=False, read_at=before) \
        == answer_cache.stamp(run) != before  # unchanged up to the merge: the merged record's stamp


def _new_run_file(run_dir: Path) -> None:
    """One more configuration's run, as a driver writes it (a one-run file)."""
    row = R.read_results(run_dir).to_pylist()[0]
    row.update(fingerprint="f" * 64, trial_number=99, params_json=json.dumps({"lr": 0.0123}), p_lr=0.0123)
    spec = load_spec(yaml.safe_load((run_dir / "spec.yaml").read_text()), read_only=True)
    R.write_trial(run_dir, row, [], R.trial_schema(spec))


def _journal_append(run_dir: Path) -> None:
    """A trial told complete whose run Parquet lacks: the journal grows (a problem of the record)."""
    import optuna

    from sweeps.run_journal import journal_storage

    storage = journal_storage(run_dir / "study.journal")
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    study = optuna.load_study(study_name=name, storage=storage)
    trial = study.ask()
    trial.suggest_categorical("method", ["ft", "rl"])
    trial.set_user_attr("fingerprints", ["0" * 64])
    study.tell(trial, [1.0, 90.0])


def _compaction(run_dir: Path) -> None:
    _new_run_file(run_dir)  # the change is seen first, then the record is merged (same answer)
    assert main(["status", str(run_dir)]) == 0
    assert R.compact(run_dir, full=True) > 0


def _resumed_sweep(run_dir: Path) -> None:
    run_sweep(load_spec(small_spec(n_trials=6, seeds=[0, 1])), run_dir, fn=fake_task, log=None)


def _quarantined(run_dir: Path) -> None:
    (run_dir / "trials" / "part-000001.parquet").write_bytes(b"not parquet")


@pytest.mark.parametrize("change", [_new_run_file, _journal_append, _compaction, _resumed_sweep, _quarantined])
@pytest.mark.parametrize("verb", ["status", "analyze"])
def test_any_change_to_the_record_is_answered_anew(run, capsys, computed, change, verb):
    before = cli(capsys, verb, str(run))
    change(run)
    capsys.readouterr()
    n = len(computed)
    after = cli(capsys, verb, str(run))
    assert len(computed) == n + 1  # computed again, not taken from the cache
    assert after == fresh(capsys, run, verb)
    if change not in (_compaction,):
        assert after != before  # the change shows: an answer kept from before would be wrong


def test_a_deleted_or_edited_report_is_written_again(run, capsys, computed):
    cli(capsys, "analyze", str(run))
    (run / "report" / "front.csv").unlink()
    cli(capsys, "analyze", str(run))
    assert (run / "report" / "front.csv").is_file() and len(computed) == 2
    (run / "report" / "report.md").write_text("edited")
    cli(capsys, "analyze", str(run))
    assert (run / "report" / "report.md").read_text() != "edited" and len(computed) == 3


@pytest.mark.parametrize("damage", [b"", b"{not json", b"[1, 2]", b'{"format": 1}',
                                    b'{"format": 1, "stamp": "STAMP", "answer": {"states": {}}}',
                                    b'{"format": 1, "stamp": "STAMP", "answer": {"states": [], "problems": [], '
                                    b'"summary": "x", "json": {}}}'])
def test_a_damaged_cache_is_ignored(run, capsys, computed, damage):
    want = fresh(capsys, run, "status")
    stamp = answer_cache.stamp(run)
    assert stamp is not None
    (run / CACHE).write_bytes(damage.replace(b"STAMP", stamp.encode()))
    assert cli(capsys, "status", str(run)) == want
    assert len(computed) == 2
    assert cli(capsys, "status", str(run)) == want  # and replaced by a good one
    assert len(computed) == 2


def test_a_cache_is_saved_only_when_the_record_did_not_change_while_it_was_read(run):
    before = answer_cache.stamp(run)
    _journal_append(run)
    assert not answer_cache.save(run, before, {"states": {}, "problems": [], "summary": "", "json": {}})
    assert not (run / CACHE).exists()
    assert answer_cache.load(run, answer_cache.stamp(run)) is None


def test_a_study_in_a_database_is_never_cached(run):
    assert answer_cache.stamp(run, shared_storage=True) is None
    assert not answer_cache.save(run, None, {"states": {}, "problems": [], "summary": "", "json": {}})


def test_an_answer_the_scrubber_would_change_is_not_written(run):
    secret = {"states": {}, "problems": ["a line with password=hunter2hunter2 in it"], "summary": "",
              "json": {}}
    assert not answer_cache.save(run, answer_cache.stamp(run), secret)
    assert not (run / CACHE).exists()
    plain = {**secret, "problems": ["a line"]}
    assert answer_cache.save(run, answer_cache.stamp(run), plain)
    assert answer_cache.load(run, answer_cache.stamp(run)) == plain


def test_a_sweep_with_its_study_in_a_database_keeps_no_answer_and_answers_the_same(tmp_path, capsys, computed):
    run_dir = tmp_path / "db"
    spec = load_spec(small_spec(n_trials=3, seeds=[0, 1], storage=f"sqlite:///{tmp_path / 's.db'}"))
    run_sweep(spec, run_dir, fn=fake_task, log=None)
    summary.write_report(run_dir, spec)  # the driver's end: the study is not read for an answer
    assert computed == [] and not (run_dir / CACHE).exists()
    for argv in (("status",), ("analyze",)):
        first = cli(capsys, argv[0], str(run_dir))
        assert cli(capsys, argv[0], str(run_dir)) == first and "COMPLETE 3" in cli(capsys, "status", str(run_dir))[0]
    assert not (run_dir / CACHE).exists() and len(computed) == 6  # every time
