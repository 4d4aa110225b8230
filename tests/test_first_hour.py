"""What a researcher meets in the first hour with the record (issue 18): a run with no rows yet
reports instead of crashing, the files a paper or a script reads hold numbers of the right type,
rows come in trial order, and a hypervolume shows the change a resume makes."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from orchestrator.cli import main
from orchestrator.runner import run_sweep
from sweeps.report.analysis import analyze
from sweeps.report.summary import summary_text, write_report
from sweeps.results import read_results
from sweeps.spec import load_spec
from tests.sweep_util import fake_task, small_spec


@pytest.fixture
def no_rows(tmp_path, monkeypatch):
    """runs/lock2 as a sweep stopped in its oracle phase leaves it: spec.yaml, no trial row."""
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "runs" / "lock2"
    d.mkdir(parents=True)
    (d / "spec.yaml").write_text(yaml.safe_dump(small_spec(name="lock2")))
    return d


def test_analyze_and_compare_of_a_run_with_no_rows_report_instead_of_a_traceback(no_rows, capsys):
    # before: KeyError 'forget_gap' in the plots, a 45-line traceback
    assert main(["analyze", "lock2"]) == 0
    out = capsys.readouterr().out
    assert "no run on record yet" in out and "hypervolume 0 " in out
    assert (no_rows / "report" / "report.md").is_file() and (no_rows / "report" / "front.png").is_file()
    assert main(["compare", "lock2", "--out", "cmp"]) == 0
    out, err = capsys.readouterr()
    assert "no run on record yet in: lock2" in out and "Traceback" not in err
    assert main(["analyze", "lock2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["configurations"] == 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    d = tmp_path_factory.mktemp("finished")
    spec = load_spec(small_spec(n_trials=6, seeds=[0, 1]))
    run_sweep(spec, d, fn=fake_task, log=None)
    write_report(d, spec)
    return d, spec


def test_table_csv_writes_trial_and_n_as_integers(finished):
    d, _ = finished
    import csv

    rows = list(csv.DictReader((d / "report" / "table.csv").open()))
    methods = [r for r in rows if r["method"] not in ("Retrain", "Original")]
    assert methods and all(r["trial"].isdigit() and r["n"].isdigit() for r in methods)  # not "10.0"
    assert all(r["trial"] == "" for r in rows if r["method"] in ("Retrain", "Original"))


def test_compare_csv_stores_numbers_not_formatted_text(finished, tmp_path, capsys):
    d, _ = finished
    assert main(["compare", str(d), str(d), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "(n=2)" in text  # the terminal shows mean ± std (n=...)
    c = pd.read_csv(tmp_path / "compare.csv")
    for col in ("best_forget_gap", "best_forget_gap_std", "best_test_acc", "hypervolume"):
        assert pd.api.types.is_float_dtype(c[col]), col
    assert (c["best_forget_gap_n"] == 2).all() and "(n=" not in (tmp_path / "compare.csv").read_text()


def test_read_results_orders_rows_by_trial_then_seed(finished):
    d, _ = finished
    t = read_results(d).to_pandas()
    keys = list(zip(t["trial_number"], t["unlearn_seed"]))
    assert keys == sorted(keys) and len(set(keys)) == len(keys) == 12
    # fingerprints (the file names) are in another order: the sort is not an accident of the files
    assert list(t["fingerprint"]) != sorted(t["fingerprint"]) or list(t["trial_number"]) == sorted(
        t["trial_number"])


def test_hypervolume_shows_the_change_a_resume_makes(tmp_path):
    # before: "9966" before and after a resume that added a front point (4 significant digits)
    from sweeps.report.units import hv_text

    assert hv_text(9966.4213) != hv_text(9966.9901) and hv_text(9966.4213) == "9966.421"
    spec = load_spec(small_spec(n_trials=3, sampler={"name": "random", "seed": 4}))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    before = analyze(tmp_path, spec)
    more = load_spec(small_spec(n_trials=12, sampler={"name": "random", "seed": 4}))
    run_sweep(more, tmp_path, fn=fake_task, log=None)
    after = analyze(tmp_path, more)
    assert after.hypervolume > before.hypervolume
    shown = [ln for ln in (summary_text(before), summary_text(after)) for ln in ln.splitlines()
             if "hypervolume" in ln]
    assert shown[0] != shown[1] and hv_text(after.hypervolume) in shown[1]


# -- plots ----------------------------------------------------------------------------------------

def _marker_vertices(marker: str):
    from matplotlib.markers import MarkerStyle

    m = MarkerStyle(marker)
    return m.get_path().transformed(m.get_transform()).vertices


def _drawn_with(collection, marker: str) -> bool:
    import numpy as np

    paths, want = collection.get_paths(), _marker_vertices(marker)
    return bool(paths) and paths[0].vertices.shape == want.shape and np.allclose(paths[0].vertices, want)


def test_plots_say_mean_and_std_only_when_there_are_several_seeds(tmp_path):
    from sweeps.report.plots import front_figure_mpl

    for seeds, said in (([0], "one seed per configuration"), ([0, 1], "mean ± sample std over seeds")):
        spec = load_spec(small_spec(n_trials=3, seeds=seeds))
        run_sweep(spec, tmp_path / str(len(seeds)), fn=fake_task, log=None)
        fig = front_figure_mpl(analyze(tmp_path / str(len(seeds)), spec))
        title = fig.axes[0].get_title()
        assert said in title and (len(seeds) > 1 or "±" not in title), title


def test_the_legend_shows_the_off_frame_marker_that_is_drawn(tmp_path):
    # before: the legend said ">" whatever was drawn (here "v": infeasible points below the frame)
    from sweeps.report.plots import EDGE_MARKERS, front_figure_mpl

    spec = load_spec(small_spec(n_trials=16, sampler={"name": "random", "seed": 1}))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    ax = front_figure_mpl(analyze(tmp_path, spec)).axes[0]
    drawn = {mk for _, mk, _ in EDGE_MARKERS for c in ax.collections
             if len(c.get_offsets()) and _drawn_with(c, mk)}
    assert drawn, "the record was meant to put infeasible points beyond the frame"
    legend = {t.get_text(): h for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)}
    shown = {mk for text, h in legend.items() if "the frame" in text for _, mk, _ in EDGE_MARKERS
             if _drawn_with(h, mk)}
    assert shown == drawn, (shown, drawn)


def test_both_picks_stay_visible_when_they_coincide(tmp_path):
    # one configuration: the blind and the oracle rule pick it both; a filled star used to hide the diamond
    from sweeps.report.plots import front_figure_mpl

    spec = load_spec(small_spec(n_trials=1, methods={"ft": {"space": {"lr": 0.01}}}))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    a = analyze(tmp_path, spec)
    assert a.picks["blind"]["trial_number"].tolist() == a.picks["oracle"]["trial_number"].tolist()
    ax = front_figure_mpl(a).axes[0]
    [diamond] = [c for c in ax.collections if len(c.get_offsets()) and _drawn_with(c, "D")]
    [star] = [c for c in ax.collections if len(c.get_offsets()) and _drawn_with(c, "*")]
    assert (diamond.get_facecolors()[:, 3] == 0).all()  # hollow: what is inside shows through
    assert diamond.get_sizes()[0] > star.get_sizes()[0] and star.get_zorder() > diamond.get_zorder()


def test_a_sweep_extended_by_resume_proposes_what_an_uninterrupted_one_proposes(tmp_path):
    # before: TPE's start-up was min(10, max(2, n_trials // 3)): 2 random trials for the first run of
    # 6, 4 for a sweep of 12, so `resume --set n_trials=12` searched differently from a 12-trial sweep
    def configs(d):
        t = read_results(d).to_pandas()
        return list(zip(t["trial_number"], t["method"], t["params_json"]))

    run_sweep(load_spec(small_spec(n_trials=6)), tmp_path / "extended", fn=fake_task, log=None)
    run_sweep(load_spec(small_spec(n_trials=12)), tmp_path / "extended", fn=fake_task, log=None)
    run_sweep(load_spec(small_spec(n_trials=12)), tmp_path / "whole", fn=fake_task, log=None)
    assert len(configs(tmp_path / "whole")) == 12
    assert configs(tmp_path / "extended") == configs(tmp_path / "whole")


# -- importances and parallel coordinates -----------------------------------------------------------

@pytest.fixture(scope="module")
def two_params(tmp_path_factory):
    """ft searching lr (which the fake's metrics follow) and momentum (which they ignore)."""
    d = tmp_path_factory.mktemp("importance")
    spec = load_spec(small_spec(n_trials=24, sampler={"name": "random", "seed": 0}, methods={"ft": {"space": {
        "lr": {"type": "log-float", "low": 1e-3, "high": 1e-1},
        "momentum": {"type": "float", "low": 0.0, "high": 0.9}}}}))
    run_sweep(spec, d, fn=fake_task, log=None)
    return d, spec


def test_importances_per_objective_over_feasible_configurations(two_params):
    from sweeps.report.importance import param_importances

    d, spec = two_params
    a = analyze(d, spec)
    imp = param_importances(a)
    n_feasible = int(a.configs["feasible"].sum())
    assert 2 <= n_feasible < len(a.configs)  # some are infeasible: they are left out
    assert set(imp["objective"]) == {"forget_gap", "test_acc"} and (imp["n"] == n_feasible).all()
    assert (imp["evaluator"] == "fanova").all()
    for _, g in imp.groupby("objective"):
        w = g.set_index("param")["importance"]
        assert w.sum() == pytest.approx(1.0) and w["lr"] > w["momentum"]


def test_importances_switch_to_ped_anova_on_large_sweeps(two_params, monkeypatch):
    from sweeps.report import importance

    d, spec = two_params
    monkeypatch.setattr(importance, "FANOVA_MAX", 3)
    imp = importance.param_importances(analyze(d, spec))
    assert len(imp) and (imp["evaluator"] == "ped-anova").all()


def test_importances_above_the_cap_come_from_a_seeded_sample_and_say_so(two_params, monkeypatch):
    from sweeps.report import importance

    d, spec = two_params
    a = analyze(d, spec)
    n_feasible = int(a.configs["feasible"].sum())
    monkeypatch.setattr(importance, "SAMPLE_MAX", n_feasible - 1)
    imp = importance.param_importances(a)
    assert len(imp) and (imp["n"] == n_feasible - 1).all() and (imp["of"] == n_feasible).all()
    assert imp.equals(importance.param_importances(a))  # the same sample every time
    assert f"from {n_feasible - 1} of {n_feasible} feasible configurations" in importance.importance_markdown(imp)


def test_front_plots_above_the_cap_draw_the_front_exactly_and_a_seeded_sample_of_the_rest(two_params,
                                                                                          monkeypatch):
    from sweeps.report import plots

    d, spec = two_params
    a = analyze(d, spec)
    ok = a.configs[a.configs["state"] == "COMPLETE"]
    must = (set(a.front.index) | {i for p in a.picks.values() for i in p.index}) & set(ok.index)
    monkeypatch.setattr(plots, "DRAW_MAX", len(must) + 3)
    drawn, note = plots._drawn(a, ok)
    assert len(ok) > len(drawn) == len(must) + 3 and must <= set(drawn.index)
    assert drawn.index.equals(plots._drawn(a, ok)[0].index)  # the same sample every time
    assert note == ("drawn: every front configuration and pick, and a random 3 of the other "
                    f"{len(ok) - len(must)} (seeded)")
    assert note in plots.front_html(a)
    monkeypatch.setattr(plots, "DRAW_MAX", len(ok))
    drawn, note = plots._drawn(a, ok)
    assert drawn is ok and note == ""


def test_the_report_has_importances_and_a_parallel_coordinates_page(two_params):
    d, spec = two_params
    a, report = write_report(d, spec)
    md = report.read_text()
    assert "## Parameter importances (feasible configurations)" in md and "| lr " in md
    page = (d / "report" / "parallel.html").read_text()
    assert page.count("Plotly.newPlot(") == 1 and "parcoords" in page and "infeasible grey" in page
    assert "<script src=" not in page  # plotly.js inline: opens offline
    assert pd.read_csv(d / "report" / "importances.csv").columns.tolist() == \
        ["method", "objective", "param", "importance", "evaluator", "n", "of"]


def test_the_record_joins_the_optuna_study_by_its_parameter_names(tmp_path):
    # before: the record's p_lr against the study's ltu.lr, with no documented way between them
    import optuna

    from sweeps.results import study_params
    from sweeps.study import storage_for

    spec = load_spec(small_spec(n_trials=6, seeds=[0, 1]))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    runs = read_results(tmp_path).to_pandas()
    study = optuna.load_study(study_name=spec.name, storage=storage_for(spec, tmp_path))
    joined = study_params(runs).merge(study.trials_dataframe(), left_on="trial_number", right_on="number",
                                      suffixes=("", "_study"))
    assert len(joined) == len(runs) == 12
    cols = [c for c in study_params(runs).columns if c.startswith("params_")]
    assert "params_method" in cols and "params_ft.lr" in cols and "params_ft.epochs" not in cols  # fixed
    for c in cols:
        ours, theirs = joined[c], joined[f"{c}_study"]
        assert ((ours == theirs) | (ours.isna() & theirs.isna())).all(), c
    # a record written before the column reads as it did, and still maps (with its spec)
    old = runs.assign(study_params_json=None)
    assert study_params(old, spec).equals(study_params(runs))


def test_a_record_from_before_the_mapping_column_still_reads(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweeps.results import BASE_SCHEMA

    spec = load_spec(small_spec(n_trials=2))
    run_sweep(spec, tmp_path / "new", fn=fake_task, log=None)
    t = read_results(tmp_path / "new").drop_columns(["study_params_json"])
    (tmp_path / "old" / "trials").mkdir(parents=True)
    pq.write_table(t, tmp_path / "old" / "trials" / "a.parquet")
    from sweeps.results import study_params

    got = read_results(tmp_path / "old")
    assert got.num_rows == 2 and "study_params_json" not in got.column_names
    assert pa.types.is_string(BASE_SCHEMA.field("study_params_json").type)
    assert analyze(tmp_path / "old", spec).configs["n"].tolist() == [1, 1]
    assert study_params(got.to_pandas(), spec).equals(study_params(read_results(tmp_path / "new").to_pandas()))
    with pytest.raises(ValueError, match="pass the run's spec"):
        study_params(got.to_pandas())
