"""Pareto fronts, hypervolume, the field's table, plots and the report (with a paper preset's table)."""
from __future__ import annotations

import numpy as np
import pytest
from optuna._hypervolume import compute_hypervolume

from orchestrator.runner import run_sweep
from sweeps.analysis import hypervolume, pareto_mask, read_reference, write_report
from sweeps.spec import load_spec
from tests.sweep_util import fake_task, small_spec


def test_pareto_mask():
    pts = np.array([[1, 5], [2, 2], [5, 1], [3, 3], [2, 2.5], [6, 6]], dtype=float)
    assert pareto_mask(pts).tolist() == [True, True, True, False, False, False]


@pytest.mark.parametrize("d", [2, 3, 4])
def test_hypervolume_matches_optuna(d):
    rng = np.random.default_rng(d)
    pts = rng.random((12, d))
    front = pts[pareto_mask(pts)]
    ref = np.full(d, 1.1)
    assert hypervolume(front, ref) == pytest.approx(compute_hypervolume(front, ref), rel=1e-9)
    assert hypervolume(np.array([[0.5] * d]), np.ones(d)) == pytest.approx(0.5 ** d)


def test_report_files_and_field_table(tmp_path):
    spec = load_spec(small_spec(n_trials=8, seeds=[0, 1]))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    a, report = write_report(tmp_path, spec)
    out = tmp_path / "report"
    for name in ("report.md", "front.png", "history.png", "front.html", "trials.csv", "front.csv",
                 "table.csv"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "front.png").read_bytes()[:4] == b"\x89PNG"
    html = (out / "front.html").read_text()
    assert "<svg" in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
    text = report.read_text()
    assert "Selection rule: **oracle**" in text and "| UA | RA | TA | MIA | Avg. gap | RTE (s) |" in text
    # one row per method's best + Retrain + Original, mean +- std over the two seeds
    assert list(a.table["method"][:2]) == ["Retrain", "Original"]
    assert set(a.table["method"][2:]) <= {"ft", "rl"}
    assert "±" in text
    assert a.hypervolume > 0 and len(a.front) >= 1


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
    from sweeps.analysis import analyze, pareto_mask, top_configs

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
    from sweeps.analysis import analyze, top_configs

    spec = load_spec(small_spec(n_trials=8, sampler={"name": "random", "seed": 2},
                                select={"metric": "avg_gap", "direction": "minimize"}))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    a = analyze(tmp_path, spec)
    top = top_configs(a, 3)
    feas = a.configs[a.configs["feasible"]].sort_values("avg_gap")
    assert list(top["trial_number"]) == list(feas["trial_number"][:3])
