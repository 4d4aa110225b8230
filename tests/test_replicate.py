"""Replicate: the top configurations of a search rerun on more seeds in the same record, the way
the field reports mean ± std; and more seeds or trials on resume extend the record, never hide it."""
from __future__ import annotations

import math

import pytest

from orchestrator.runner import replicate_sweep, run_sweep
from sweeps.analysis import analyze, top_configs, write_report
from sweeps.results import read_results
from sweeps.spec import load_spec
from tests.sweep_util import fake_task, small_spec
from unlearning.errors import UserError


def test_search_on_one_seed_then_replicate_the_top_two_on_three(tmp_path):
    spec = load_spec(small_spec(n_trials=8, seeds=[0], sampler={"name": "random", "seed": 4}))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    top = top_configs(analyze(tmp_path, spec), 2)
    out = replicate_sweep(spec, tmp_path, top=2, seeds="0,1,2", fn=fake_task, log=None)
    assert out["done"] == 2 and out["reused"] == 2  # seed 0 of each was already on record
    t = read_results(tmp_path).to_pandas()
    rep = t[t["phase"] == "replicate"]
    assert len(rep) == 4 and set(rep["unlearn_seed"]) == {1, 2}
    assert set(rep["trial_number"]) == set(top["trial_number"])
    a = analyze(tmp_path, spec)
    c = a.configs.set_index("trial_number")
    for n in top["trial_number"]:
        assert c.loc[n, "n"] == 3 and math.isfinite(c.loc[n, "test_acc_std"]) and c.loc[n, "test_acc_std"] > 0
        vals = t[t["trial_number"] == n]["test_acc"]
        assert c.loc[n, "test_acc_std"] == pytest.approx(vals.std(ddof=1))  # the sample std
    others = c.drop(index=list(top["trial_number"]))
    assert (others["n"] == 1).all()
    assert len(a.front) >= 1
    _, report = write_report(tmp_path, spec)
    assert "| 3 |" in report.read_text() or " 3 " in report.read_text()
    # a second replicate does no work: every run is on record
    again = replicate_sweep(spec, tmp_path, top=2, seeds=[0, 1, 2], fn=fake_task, log=None)
    assert again["reused"] == 6 and read_results(tmp_path).num_rows == len(t)


def test_replicate_per_method_takes_each_methods_best(tmp_path):
    spec = load_spec(small_spec(n_trials=10, sampler={"name": "random", "seed": 1}))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    replicate_sweep(spec, tmp_path, top=1, seeds="1-2", per_method=True, fn=fake_task, log=None)
    rep = read_results(tmp_path).to_pandas().query("phase == 'replicate'")
    assert sorted(rep.groupby("method")["trial_number"].nunique().to_dict().items()) == [("ft", 1), ("rl", 1)]


def test_more_seeds_or_trials_on_resume_extend_the_record(tmp_path):
    spec = load_spec(small_spec(n_trials=4))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    before = analyze(tmp_path, spec)
    more = load_spec(small_spec(n_trials=6, seeds=[0, 1, 2]))
    out = run_sweep(more, tmp_path, fn=fake_task, log=None)
    assert out["done"] == 2  # two new trials (on three seeds); the four old ones stay as they are
    a = analyze(tmp_path, more)
    assert len(a.configs) == 6 and (a.configs["state"] == "COMPLETE").all()
    assert sorted(a.configs["n"]) == [1, 1, 1, 1, 3, 3]
    assert len(a.front) >= 1 and len(before.front) >= 1


def test_replicate_refuses_an_empty_search_and_bad_seeds(tmp_path):
    spec = load_spec(small_spec(n_trials=2))
    with pytest.raises(UserError, match="no complete feasible configuration"):
        replicate_sweep(spec, tmp_path / "none", top=1, seeds="0-2", fn=fake_task, log=None)
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    with pytest.raises(UserError, match="replicate.seeds: not a seed list"):
        replicate_sweep(spec, tmp_path, top=1, seeds="zero", fn=fake_task, log=None)
