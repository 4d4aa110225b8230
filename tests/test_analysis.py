"""Pareto fronts, hypervolume, per-configuration statistics (sample std, n, replicated seeds), the
field's table and its exports, plots and the report, compare."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from optuna._hypervolume import compute_hypervolume

from orchestrator.runner import run_sweep
from sweeps.report import plots
from sweeps.report.analysis import analyze, analyze_runs, hypervolume, pareto_mask, per_config
from sweeps.report.compare import compare
from sweeps.report.summary import write_report
from sweeps.report.tables import export, read_reference
from sweeps.results import read_results
from sweeps.spec import load_spec
from tests.sweep_util import fake_task, small_spec


def test_pareto_mask():
    pts = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2.5], [6, 6]], dtype=float)
    assert pareto_mask(pts).tolist() == [True, True, True, False, False, False]
    assert pareto_mask(np.array([[2, np.nan], [2, 2]])).tolist() == [False, True]  # NaN = +inf


@pytest.mark.parametrize("d", [2, 3, 4])
def test_hypervolume_matches_optuna(d):
    rng = np.random.default_rng(d)
    pts = rng.random((12, d))
    front = pts[pareto_mask(pts)]
    assert pareto_mask(front).all()
    ref = np.full(d, 1.1)
    assert hypervolume(front, ref) == pytest.approx(compute_hypervolume(front, ref), rel=1e-9)
    assert hypervolume(np.array([[0.5] * d]), np.ones(d)) == pytest.approx(0.5 ** d)


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("three")
    spec = load_spec(small_spec(n_trials=8, seeds=[0, 1, 2]))
    run_sweep(spec, d, fn=fake_task, log=None)
    return d, spec


def test_std_is_the_sample_std_of_pandas_with_n_per_row(three_seeds):
    d, spec = three_seeds
    a = analyze(d, spec)
    runs = read_results(d).to_pandas()
    by = runs[runs["state"] == "COMPLETE"].groupby(["method", "params_json"])
    for _, c in a.configs.iterrows():
        g = by.get_group((c["method"], c["params_json"]))
        assert c["n"] == 3 == g["unlearn_seed"].nunique()
        for m in ("test_acc", "mia_efficacy", "forget_gap"):
            assert c[f"{m}_std"] == pytest.approx(g[m].std(ddof=1))  # fake: test_acc = ... + seed
            assert c[m] == pytest.approx(g[m].mean())
    assert a.configs["test_acc_std"].iloc[0] == pytest.approx(1.0)  # seeds 0,1,2: sample std 1
    assert a.table.loc[~a.table["method"].isin(["Retrain", "Original"]), "n"].eq(3).all()


def _row(method="ft", params='{"lr": 0.01}', seed=0, state="COMPLETE", phase="search", ta=90.0, **kw):
    return {"method": method, "params_json": params, "trial_number": kw.pop("trial", 0), "state": state,
            "error": None if state == "COMPLETE" else "boom", "fingerprint": f"{method}{params}{seed}{phase}",
            "split_seed": 0, "train_seed": 0, "unlearn_seed": seed, "phase": phase, "test_acc": ta,
            "forget_gap": 1.0, "utility_drop": 95 - ta, **kw}


def test_replicated_configurations_have_more_seeds_and_complete_means_over_all_of_them():
    spec = load_spec(small_spec(seeds=[0, 1]))
    rows = [_row(seed=0, ta=90), _row(seed=1, ta=92),                      # search: seeds 0, 1
            _row(seed=2, ta=94, phase="replicate"), _row(seed=3, ta=96, phase="replicate"),
            _row(seed=4, state="FAIL", phase="replicate"),                 # a failed replicate seed
            _row(params='{"lr": 0.02}', seed=0, trial=1),                  # seed 1 missing
            _row(params='{"lr": 0.03}', seed=0, trial=2), _row(params='{"lr": 0.03}', seed=1, trial=2,
                                                               state="FAIL")]
    c = per_config(pd.DataFrame(rows), spec).set_index("params_json")
    rep = c.loc['{"lr": 0.01}']
    assert rep["state"] == "COMPLETE" and rep["n"] == 4 and rep["replicated"] and rep["n_runs"] == 5
    assert rep["test_acc"] == pytest.approx(93.0)
    assert rep["test_acc_std"] == pytest.approx(pd.Series([90, 92, 94, 96]).std())
    assert c.loc['{"lr": 0.02}', "state"] == "FAIL" and c.loc['{"lr": 0.02}', "error"] == "missing seeds"
    assert c.loc['{"lr": 0.03}', "state"] == "FAIL" and c.loc['{"lr": 0.03}', "error"] == "boom"
    assert not c.loc['{"lr": 0.03}', "feasible"] and c.loc['{"lr": 0.03}', "n"] == 1


def test_latex_export_parses_one_row_per_method_with_retrain_original_and_gaps(three_seeds):
    d, spec = three_seeds
    a = analyze(d, spec)
    tex = export(a, "latex")
    # one table per selection rule (both side by side did not fit a page), each parsed the same way
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 2
    assert tex.count("{") == tex.count("}")
    methods = sorted(set(a.table["method"]) - {"Retrain", "Original"})
    retrain_ua = a.table.loc[a.table["method"] == "Retrain", "unlearn_acc"].iloc[0]
    for sel, body in zip(("blind", "oracle"), re.findall(r"\\begin\{tabular\}.*?\\end\{tabular\}", tex, re.S)):
        ncols = len(re.search(r"\\begin\{tabular\}\{([lrc]+)\}", body).group(1))
        rows = [ln for ln in body.splitlines()[1:-1] if ln.endswith(r"\\")]
        for ln in rows:  # every row has as many cells as the column spec
            assert len(ln[:-2].split(" & ")) == ncols, ln
        data = body[body.index(r"\midrule"):]
        labels = [ln.split(" & ")[0] for ln in data.splitlines() if ln.endswith(r"\\")]
        assert [x for x in labels if x.strip()] == ["Retrain", "Original", *methods]  # gaps: a line below
        pick = a.table[(a.table["method"] == "ft") & (a.table["selection"] == sel)].iloc[0]
        assert f"{pick['unlearn_acc']:.2f}" in body
        assert f"({abs(pick['unlearn_acc'] - retrain_ua):.2f})" in body
    assert r"$_{\pm" in tex and r"\textbf{" in tex and r"\label{tab:t-blind}" in tex
    assert "blind selection" in tex and "oracle selection" in tex


def test_markdown_csv_json_exports(three_seeds):
    d, spec = three_seeds
    a = analyze(d, spec)
    md = export(a, "md")
    assert md.splitlines()[0].startswith("| method") and "UA (blind)" in md and "UA (oracle)" in md
    assert "| Retrain" in md and "| Original" in md and "**" in md and " ± " in md
    csv = pd.read_csv(__import__("io").StringIO(export(a, "csv")))
    assert set(csv["selection"]) == {"blind", "oracle"} and "unlearn_acc_gap" in csv
    js = json.loads(export(a, "json"))
    assert js["sweep"] == "t" and set(js["rules"]) == {"blind", "oracle"} and len(js["rows"]) == len(csv)


def test_blind_pick_never_uses_retrain_and_oracle_pick_follows_the_sweep(three_seeds):
    d, spec = three_seeds
    a = analyze(d, spec)
    feas = a.configs[a.configs["feasible"]]
    for method, g in feas.groupby("method"):
        blind = a.picks["blind"].set_index("method").loc[method]
        assert blind["forget_val_gap"] == pytest.approx(g["forget_val_gap"].min())
        oracle = a.picks["oracle"].set_index("method").loc[method]
        assert oracle["forget_gap"] == pytest.approx(g["forget_gap"].min())  # the first objective


def test_report_files_plots_and_offline_html(tmp_path):
    spec = load_spec(small_spec(n_trials=8, seeds=[0, 1], base={"data": {"name": "digits"}, "model": "small_cnn",
                                                                "eval": {"eval_every": 1}}))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    a, report = write_report(tmp_path, spec)
    out = tmp_path / "report"
    for name in ("report.md", "front.png", "history.png", "epochs.png", "front.html", "trials.csv",
                 "front.csv", "table.csv", "table.md", "table.tex"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "front.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "front.html").read_text()
    assert "Plotly.newPlot" in page and not re.search(r"<script[^>]+src=", page)  # plotly.js inline
    assert "lr=" in page and "n = 2 seed(s)" in page  # hover shows the configuration
    text = report.read_text()
    assert "Selection rule: **oracle**" in text and "UA (blind)" in text and "epochs.png" in text
    # the history table records UA/RA/TA per epoch with the seed
    from sweeps.results import read_history

    h = read_history(tmp_path).to_pandas()
    assert h["unlearn_acc"].notna().all() and set(h["unlearn_seed"]) == {0, 1}
    curves = plots.epoch_curves(a, h)
    assert set(curves["epoch"]) == {0, 1, 2} and set(curves["n"]) == {2}


def test_infeasible_points_do_not_set_the_axis_range(three_seeds):
    d, spec = three_seeds
    a = analyze(d, spec)
    scene = plots._scene(a)
    lo, hi = scene["ylim"]
    feas, infeas = a.configs[a.configs["feasible"]], a.configs[~a.configs["feasible"]]
    assert (feas["test_acc"] >= lo).all() and (feas["test_acc"] <= hi).all()
    assert (infeas["test_acc"] < lo).any()  # the fake's large lr ruins TA: beyond the frame
    # TA >= Original TA - 3 ... the utility bound is drawn on the TA axis
    assert [round(b, 6) for b, *_ in scene["yb"]] == [95.0 - 5.0]


def test_paper_preset_report_puts_the_papers_numbers_beside_ours(tmp_path):
    raw = small_spec(n_trials=4, reference={"table": "salun_table1_cifar10_resnet18.csv",
                                            "scenario": "random_10"})
    spec = load_spec(raw)
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    _, report = write_report(tmp_path, spec)
    text = report.read_text()
    assert "Beside the paper (random_10)" in text and "SalUn (Fan et al., ICLR 2024" in text
    assert "5.24 ± 0.69" in text  # the paper's Retrain UA
    assert (tmp_path / "report" / "beside_paper.csv").is_file()
    assert len(read_reference("sparse_table1_cifar10_resnet18_dense.csv", "classwise")) == 5


def test_top_configs_rank_by_pareto_layer_then_objectives(tmp_path):
    from sweeps.report.analysis import top_configs

    spec = load_spec(small_spec(n_trials=10, sampler={"name": "random", "seed": 1}))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    a = analyze(tmp_path, spec)
    top = top_configs(a, 4)
    assert len(top) == min(4, int(a.configs["feasible"].sum())) and list(top["rank"]) == list(range(len(top)))
    assert top["feasible"].all() and (top["layer"].diff().dropna() >= 0).all()
    # layer 0 is exactly the front
    front = set(a.front["trial_number"])
    assert set(top.loc[top["layer"] == 0, "trial_number"]) <= front
    if len(top) > len(front):
        assert set(top["trial_number"][: len(front)]) == front
    assert top_configs(a, 0).empty


def test_top_configs_by_a_select_metric(tmp_path):
    from sweeps.report.analysis import top_configs

    spec = load_spec(small_spec(n_trials=8, sampler={"name": "random", "seed": 2},
                                select={"metric": "avg_gap", "direction": "minimize"}))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    a = analyze(tmp_path, spec)
    top = top_configs(a, 3)
    feas = a.configs[a.configs["feasible"]].sort_values("avg_gap")
    assert list(top["trial_number"]) == list(feas["trial_number"][:3])


# -- compare ---------------------------------------------------------------------------------------

def test_compare_a_run_with_itself_gives_the_same_hypervolume_at_a_fixed_reference(three_seeds):
    d, spec = three_seeds
    c = compare([(d, spec), (d, spec)], ref=[10.0, 80.0])
    h = list(c.table["hypervolume"])
    assert h[0] == h[1] > 0 and c.labels == [d.name, f"{d.name} (2)"]
    assert c.reference_point == [10.0, 80.0]
    # the default point is fixed by the metrics' natural ranges, not by the data
    assert compare([(d, spec)]).reference_point == [100.0, 0.0]


def test_compare_a_dominating_front_has_the_larger_hypervolume(three_seeds, tmp_path):
    d, spec = three_seeds
    runs = read_results(d).to_pandas()
    better = runs.assign(forget_gap=runs["forget_gap"] - 0.5, test_acc=runs["test_acc"] + 0.5)
    a, b = analyze_runs(runs, spec, ref=[100.0, 0.0]), analyze_runs(better, spec, ref=[100.0, 0.0])
    assert b.hypervolume > a.hypervolume
    # through the files too: a copy of the record with every objective improved
    (tmp_path / "trials").mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(better, preserve_index=False), tmp_path / "trials" / "all.parquet")
    c = compare([(d, spec), (tmp_path, spec)])
    assert c.table["hypervolume"].iloc[1] > c.table["hypervolume"].iloc[0]


def test_compare_refuses_runs_with_different_objectives(three_seeds):
    from unlearning.errors import UserError

    d, spec = three_seeds
    other = load_spec(small_spec(objectives=[{"metric": "avg_gap"}, {"metric": "test_acc", "direction": "maximize"}]))
    with pytest.raises(UserError, match="differ"):
        compare([(d, spec), (d, other)])
    with pytest.raises(UserError, match=r"^--ref: 1 value"):
        compare([(d, spec)], ref=[1.0])
