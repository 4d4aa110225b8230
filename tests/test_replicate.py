"""Replicate: the top configurations of a search rerun on more seeds in the same record, the way
the field reports mean ± std; and more seeds or trials on resume extend the record, never hide it."""
from __future__ import annotations

import math

import pytest

from orchestrator.runner import replicate_sweep, run_sweep
from sweeps.report.analysis import analyze, top_configs
from sweeps.report.summary import write_report
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


def test_more_trials_on_resume_extend_the_record_more_seeds_go_through_replicate(tmp_path):
    spec = load_spec(small_spec(n_trials=4))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    before = analyze(tmp_path, spec)
    # more seeds for the search would mix n = 1 and n = 3 in one study: refused, nothing run
    with pytest.raises(UserError, match="^seeds: "):
        run_sweep(load_spec(small_spec(n_trials=6, seeds=[0, 1, 2])), tmp_path, fn=fake_task, log=None)
    assert read_results(tmp_path).num_rows == 4
    out = run_sweep(load_spec(small_spec(n_trials=6)), tmp_path, fn=fake_task, log=None)
    assert out["done"] == 2
    replicate_sweep(spec, tmp_path, top=2, seeds="0-2", fn=fake_task, log=None)
    a = analyze(tmp_path, spec)
    assert len(a.configs) == 6 and (a.configs["state"] == "COMPLETE").all()
    assert sorted(a.configs["n"]) == [1, 1, 1, 1, 3, 3]
    assert len(a.front) >= 1 and len(before.front) >= 1
    assert (a.front["n"] == 3).all()  # the front ranks the replicated configurations only


def test_replicate_refuses_an_empty_search_and_bad_seeds(tmp_path):
    spec = load_spec(small_spec(n_trials=2))
    with pytest.raises(UserError, match="no complete feasible configuration"):
        replicate_sweep(spec, tmp_path / "none", top=1, seeds="0-2", fn=fake_task, log=None)
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    with pytest.raises(UserError, match="replicate.seeds: not a seed list"):
        replicate_sweep(spec, tmp_path, top=1, seeds="zero", fn=fake_task, log=None)


def test_read_only_verbs_need_only_the_run_directory(tmp_path, capsys):
    """A run directory copied to a laptop (the data set, Ray and GPUs left on the cluster): status,
    analyze, export and compare read only it; resume needs the data and says so in one line."""
    import shutil

    from orchestrator.cli import main

    root = tmp_path / "cifar"
    root.mkdir()
    raw = small_spec(n_trials=3, base={"data": {"name": "cifar10", "root": str(root)}, "model": "small_cnn"})
    run_dir = tmp_path / "cluster" / "runs" / "t"
    run_sweep(load_spec(raw), run_dir, fn=fake_task, log=None)
    laptop = tmp_path / "laptop" / "t"
    shutil.copytree(run_dir, laptop)
    shutil.rmtree(root)
    for argv in (["status", str(laptop)], ["analyze", str(laptop)], ["export", str(laptop), "--format", "latex"],
                 ["compare", str(laptop), str(laptop), "--out", str(tmp_path / "cmp")]):
        assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "\\begin{tabular}" in out.out
    assert (laptop / "report" / "report.md").is_file()
    assert main(["resume", str(laptop)]) == 2
    assert "base.data.root" in capsys.readouterr().err


def test_sweeps_of_the_same_name_in_one_shared_storage_never_attach_by_accident(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    spec = load_spec(small_spec(n_trials=3, storage=url))
    run_sweep(spec, tmp_path / "a", fn=fake_task, log=None)
    out = run_sweep(spec, tmp_path / "b", fn=fake_task, log=None)  # same name, another run directory
    assert out["done"] == 3  # its own study: it ran its own trials
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(url))
    assert len(names) == 2 and all(n.startswith("t-") for n in names)
    import json

    ids = [json.loads((tmp_path / d / "run.json").read_text()) for d in ("a", "b")]
    assert ids[0]["run_id"] != ids[1]["run_id"] and sorted(i["study_name"] for i in ids) == names
    rows = read_results(tmp_path / "b").to_pandas()
    assert set(rows["run_id"]) == {ids[1]["run_id"]}
    # attaching on purpose: a third directory joins a's study
    out = run_sweep(load_spec(small_spec(n_trials=5, storage=url)), tmp_path / "c", fn=fake_task, log=None,
                    attach=ids[0]["study_name"])
    assert out["done"] == 2  # a's three are counted: two more make five
    with pytest.raises(UserError, match="no study 'nope' to attach to"):
        run_sweep(spec, tmp_path / "d", fn=fake_task, log=None, attach="nope")
    assert not (tmp_path / "d").exists()
