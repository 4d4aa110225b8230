"""The driver, with a fake task function and scripted backends (no torch): slots, seeds, constraints,
retries, timeouts, Ctrl-C and resume, trackers that fail."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from cluster.inline import InlineBackend
from orchestrator.runner import make_backend, run_sweep
from sweeps.results import read_results
from sweeps.spec import load_spec
from sweeps.study import storage_for
from tests.sweep_util import ScriptedBackend, fake_task, small_spec
from pydantic import model_validator

from unlearning.errors import UserError
from unlearning.methods import Method, MethodConfig, register


def _study(spec, run_dir):
    return optuna.load_study(study_name=spec.name, storage=storage_for(spec, run_dir))


def _no_dupes(run_dir):
    fps = read_results(run_dir).column("fingerprint").to_pylist()
    assert len(fps) == len(set(fps))
    return fps


def test_sweep_writes_one_file_per_run_and_tells_means_over_seeds(tmp_path):
    spec = load_spec(small_spec(n_trials=5, seeds=[0, 2]))
    out = run_sweep(spec, tmp_path, fn=fake_task, log=None)
    assert out["done"] == 5 and out["failed"] == 0
    df = read_results(tmp_path).to_pandas()
    assert len(df) == 10 and set(df["unlearn_seed"]) == {0, 2}
    _no_dupes(tmp_path)
    from sweeps.results import read_history

    assert read_history(tmp_path).to_pandas()["fingerprint"].nunique() == 10  # compacted at the end
    assert [p.name for p in (tmp_path / "trials").iterdir()] == ["compacted.parquet"]
    study = _study(spec, tmp_path)
    assert len(study.trials) == 5
    for t in study.trials:
        rows = df[df["trial_number"] == t.number]
        assert len(rows) == 2
        assert t.values[0] == pytest.approx(rows["forget_gap"].mean())  # mean over seeds
        assert t.values[1] == pytest.approx(rows["test_acc"].mean())
        assert set(t.user_attrs["fingerprints"]) == set(rows["fingerprint"])


def test_constraints_are_told_and_filter_feasibility(tmp_path):
    # fake: utility_drop = 100 * lr - seed  ->  feasible iff lr <= 0.02 (seed 0)
    raw = small_spec(n_trials=8, sampler={"name": "random", "seed": 3})
    raw["constraints"] = [{"metric": "utility_drop", "max": 2.0}]
    spec = load_spec(raw)
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    from sweeps.report.analysis import analyze

    a = analyze(tmp_path, spec)
    for t in _study(spec, tmp_path).trials:
        lr = t.params[f"{t.params['method']}.lr"]
        (key, value), = t.constraints.items()
        assert key == "utility_drop<=2" and value == pytest.approx(100 * lr - 2.0)
        feasible = bool(a.configs.loc[a.configs["trial_number"] == t.number, "feasible"].iloc[0])
        assert feasible == (value <= 0)
    assert len(a.front) and a.front["feasible"].all()
    assert (a.front["utility_drop"] <= 2.0).all()


def test_lost_retryable_is_retried_then_failed(tmp_path):
    spec = load_spec(small_spec(n_trials=2, resources={"backend": "inline", "max_retries": 2}))
    be = ScriptedBackend(fake_task, lose=99, retryable=True)
    out = run_sweep(spec, tmp_path, backend=be, log=None)
    assert out["failed"] == 2 and out["retried"] == 4
    attempts = sorted(a for _, a in be.submits)
    assert attempts == [0, 0, 1, 1, 2, 2]  # each run: first try + max_retries
    df = read_results(tmp_path).to_pandas()
    assert (df["state"] == "FAIL").all() and df["error"].str.startswith("lost: worker died").all()
    assert (df["attempt"] == 2).all()
    assert all(t.state == TrialState.FAIL for t in _study(spec, tmp_path).trials)


def test_lost_then_recovered_and_not_retryable(tmp_path):
    spec = load_spec(small_spec(n_trials=2, resources={"backend": "inline", "max_retries": 2}))
    out = run_sweep(spec, tmp_path / "a", backend=ScriptedBackend(fake_task, lose=1), log=None)
    assert out["done"] == 2 and out["retried"] == 2
    assert (read_results(tmp_path / "a").to_pandas()["attempt"] == 1).all()
    be = ScriptedBackend(fake_task, lose=1, retryable=False)
    out = run_sweep(spec, tmp_path / "b", backend=be, log=None)
    assert out["failed"] == 2 and out["retried"] == 0 and len(be.submits) == 2


def test_timeout_cancels_and_records_fail(tmp_path):
    spec = load_spec(small_spec(n_trials=2, resources={"backend": "inline", "timeout_s": 0.2}))
    be = ScriptedBackend(fake_task, hang=True)
    out = run_sweep(spec, tmp_path, backend=be, log=None)
    assert out["failed"] == 2
    df = read_results(tmp_path).to_pandas()
    assert df["error"].str.startswith("timed out after 0.2s").all()
    assert be.shut


def test_failing_tracker_never_stops_the_sweep(tmp_path, capsys):
    class Broken:
        calls = 0

        def __getattr__(self, name):
            def boom(*a):
                Broken.calls += 1
                raise RuntimeError("wandb is down")
            return boom

    spec = load_spec(small_spec(n_trials=3))
    import sys

    out = run_sweep(spec, tmp_path, fn=fake_task, tracker=Broken(), log=sys.stderr)
    assert out["done"] == 3 and Broken.calls > 3
    err = capsys.readouterr().err
    assert err.count("tracker") == 1 and "the sweep goes on" in err
    assert "3/3 trials: 3 done, 0 running, 0 failed, best forget_gap" in err


def test_ctrl_c_leaves_a_consistent_study_and_resume_finishes(tmp_path):
    calls = {"n": 0}

    def flaky(payload, on_epoch=None):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return fake_task(payload, on_epoch)

    class Interruptible(ScriptedBackend):
        def wait(self, handles, timeout=None):  # KeyboardInterrupt reaches the driver, as Ctrl-C would
            return super().wait(handles, timeout)

    spec = load_spec(small_spec(n_trials=6, seeds=[0, 1]))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path, backend=Interruptible(flaky, capacity=1), log=None)
    study = _study(spec, tmp_path)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    df = read_results(tmp_path).to_pandas()
    assert (df["error"] == "interrupted").sum() == 1
    assert not (tmp_path / "driver.lock").exists()

    out = run_sweep(spec, tmp_path, fn=fake_task, log=None)
    assert out["reused"] == 1  # the seed that landed before Ctrl-C is not run again
    fps = _no_dupes(tmp_path)
    df = read_results(tmp_path).to_pandas()
    assert len(fps) == 12 and (df["state"] == "COMPLETE").all()
    study = _study(spec, tmp_path)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 6
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_same_configuration_sampled_twice_runs_once_and_counts_once(tmp_path):
    raw = small_spec(n_trials=4, sampler={"name": "random", "seed": 0})
    raw["methods"] = {"ft": {"space": {"lr": [0.01, 0.02]}}}  # two possible configurations
    spec = load_spec(raw)
    out = run_sweep(spec, tmp_path, fn=fake_task, log=None)
    # 4 asked for, 2 exist: both run once, repeats are told (the sampler learns) but not counted,
    # and the sweep ends when proposals keep repeating, without failing
    assert out["done"] == 2 and out["duplicates"] >= 50 and not out["stop_failed"]
    assert "no new configuration" in out["stopped"]
    assert read_results(tmp_path).num_rows == 2
    from sweeps.study import counted

    assert counted(_study(spec, tmp_path)) == 2


def test_make_backend_inline():
    spec = load_spec(small_spec())
    be = make_backend(spec.resources, fake_task)
    assert isinstance(be, InlineBackend) and be.capacity() == 1


def test_a_spec_the_study_refuses_leaves_spec_yaml_as_it_was(tmp_path):
    spec = load_spec(small_spec(n_trials=2))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    before = (tmp_path / "spec.yaml").read_text()
    raw = small_spec(n_trials=2)
    raw["objectives"][1]["direction"] = "minimize"
    with pytest.raises(UserError, match="^objectives: the study"):
        run_sweep(load_spec(raw), tmp_path, fn=fake_task, log=None)
    assert (tmp_path / "spec.yaml").read_text() == before



class _PairConfig(MethodConfig):
    low: float = 0.0
    high: float = 1.0

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError("low must be below high")
        return self


@register
class _Pair(Method):
    """A test method whose parameters are valid one by one but not in every combination."""

    name = "_test_pair"
    Config = _PairConfig


def test_sampled_configurations_the_method_rejects_are_fail_rows(tmp_path):
    """Failures are data: a sampled combination the method's config refuses lands in Parquet as FAIL
    with the reason, and Optuna is told FAIL; valid ones run as usual."""
    raw = small_spec(n_trials=8, sampler={"name": "random", "seed": 0})
    raw["methods"] = {"_test_pair": {"space": {"low": {"type": "float", "low": 0.0, "high": 0.9},
                                               "high": {"type": "float", "low": 0.1, "high": 1.0}}}}
    spec = load_spec(raw)
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    df = read_results(tmp_path).to_pandas()
    _no_dupes(tmp_path)
    trials = _study(spec, tmp_path).trials
    bad = [t for t in trials if t.params["_test_pair.low"] >= t.params["_test_pair.high"]]
    assert 0 < len(bad) < len(trials)
    assert all(t.state == TrialState.FAIL for t in bad)
    rows = df[df["trial_number"].isin([t.number for t in bad])]
    assert len(rows) == len(bad) and (rows["state"] == "FAIL").all()
    assert rows["error"].str.contains("invalid configuration").all()
    assert (df[~df["trial_number"].isin([t.number for t in bad])]["state"] == "COMPLETE").all()
