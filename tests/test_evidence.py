"""Picks and fronts that know n: a configuration's value is its mean over its seeds with n and a 95%
t-interval; the front, the picks and the tables rank replicated configurations among themselves,
never against single draws; every surface says so in one line when every result is one seed."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from orchestrator.progress import Progress
from sweeps.report import tables
from sweeps.report.analysis import analyze_runs, replication, separation, t_half_width, top_configs
from sweeps.report.summary import summary_text, to_json
from sweeps.spec import load_spec
from tests.sweep_util import small_spec

SPEC = load_spec(small_spec(seeds=[0]))  # minimise forget_gap, maximise test_acc; utility_drop <= 5


def run(params: str, seed: int, gap: float, ta: float, phase: str = "search", trial: int = 0,
        method: str = "ft") -> dict:
    return {"method": method, "params_json": params, "trial_number": trial, "state": "COMPLETE",
            "error": None, "fingerprint": f"{method}{params}{seed}", "split_seed": 0, "train_seed": 0,
            "unlearn_seed": seed, "phase": phase, "forget_gap": gap, "test_acc": ta, "utility_drop": 95 - ta,
            "avg_gap": gap / 2, "forget_val_gap": gap, "seeds_in_trial": 1}


def replicated(params: str, trial: int, gaps: list[float], tas: list[float], method: str = "ft") -> list[dict]:
    """Seed 0 from the search, the others from `replicate`."""
    return [run(params, s, g, t, "search" if s == 0 else "replicate", trial, method)
            for s, (g, t) in enumerate(zip(gaps, tas))]


def test_the_interval_is_the_student_t_one_and_covers_the_mean_as_it_says():
    assert math.isnan(t_half_width([1])[0]) and math.isnan(t_half_width([0])[0])
    assert t_half_width([2])[0] == pytest.approx(12.7062 / math.sqrt(2), rel=1e-4)
    assert t_half_width([10])[0] == pytest.approx(2.2622 / math.sqrt(10), rel=1e-4)
    # coverage: 95% of intervals from 5 normal draws hold the true mean (4000 tries: within 1.5 points)
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(4000, 5))
    half = x.std(axis=1, ddof=1) * t_half_width([5])[0]
    assert np.mean(np.abs(x.mean(axis=1) - 3.0) <= half) == pytest.approx(0.95, abs=0.015)


def test_each_configuration_has_its_interval_from_its_own_seeds():
    rows = replicated('{"lr": 0.01}', 0, [1, 2, 4], [92, 93, 95]) + [run('{"lr": 0.02}', 0, 0.5, 94, trial=1)]
    c = analyze_runs(pd.DataFrame(rows), SPEC).configs.set_index("trial_number")
    g = pd.Series([1.0, 2, 4])
    assert c.loc[0, "forget_gap_ci"] == pytest.approx(g.std() * stats.t.ppf(0.975, 2) / math.sqrt(3))
    assert c.loc[0, "n"] == 3 and c.loc[0, "replicated"] and not c.loc[1, "replicated"]
    assert math.isnan(c.loc[1, "forget_gap_ci"])  # one seed: no interval, never a zero-width one


def test_a_single_seed_sweep_says_it_is_not_yet_evidence_everywhere():
    rows = [run('{"lr": 0.01}', 0, 1.0, 93), run('{"lr": 0.02}', 0, 0.0, 91, trial=1),
            run('{"lr": 0.03}', 0, 2.0, 94, trial=2, method="rl")]
    a = analyze_runs(pd.DataFrame(rows), SPEC)
    assert "every result is a single seed (n = 1): not yet evidence" in a.evidence
    text = summary_text(a)
    assert a.evidence in text.splitlines() and "ft trial 1 (n = 1)" in text
    assert "not yet evidence" in to_json(a)["evidence"]
    assert "single seed (n = 1): not yet evidence" in tables.to_markdown(a.table)
    front = tables.front_table(a.front, SPEC)
    assert (front["n"] == 1).all() and "forget_gap 95% CI" not in front  # no interval: no column of dashes
    # the progress line of a one-seed sweep never calls its best draw "best" without saying so
    p = Progress("t", 3, "forget_gap", "minimize", seeds=1, stream=io.StringIO())
    p.told(1, [0.0, 91.0], True)
    assert p.best_text() == "best forget_gap 0.000 (trial 1, 1 seed: not yet evidence)"
    assert "mean of 3 seeds" in Progress("t", 3, "forget_gap", "minimize", seeds=3, best=(1.0, 2)).best_text()


def _after_replicate() -> pd.DataFrame:
    """The demo's story: trial 0 looked best on its search seed and falls apart on more seeds
    (infeasible); trial 1 holds; trial 2 (one seed) looks better than both; rl was not replicated."""
    return pd.DataFrame(
        replicated('{"lr": 0.01}', 0, [0.0, 9.0, 8.0], [94, 88, 87])        # mean TA 89.7: infeasible
        + replicated('{"lr": 0.02}', 1, [2.0, 3.0, 4.0], [93, 92, 94])      # feasible, gap 3
        + [run('{"lr": 0.03}', 0, 0.5, 95, trial=2),                        # one lucky draw
           run('{"lr": 0.04}', 0, 1.0, 93, trial=3, method="rl")])


def test_after_replicate_the_front_and_picks_rank_replicated_configurations_only():
    a = analyze_runs(_after_replicate(), SPEC)
    # trial 2 dominates trial 1 on its single draw, yet the front is of the replicated means
    assert a.front["trial_number"].tolist() == [1] and a.front["n"].tolist() == [3]
    picks = a.picks["oracle"].set_index("method")
    assert picks.loc["ft", "trial_number"] == 1 and picks.loc["ft", "n"] == 3
    assert picks.loc["rl", "n"] == 1  # rl has nothing replicated: its pick is marked, not hidden
    assert "rank the 1 feasible replicated configuration(s) (n = 3)" in a.evidence
    assert "picks from search seeds only: rl" in a.evidence
    md = tables.to_markdown(a.table)
    assert "different numbers of seeds (n = 1, 3)" in md and "rl: a single seed, not yet evidence" in md
    # replicate and audit take the replicated ones first, then the others ranked among themselves
    assert top_configs(a, 3)["trial_number"].tolist() == [1, 2, 3]
    assert tables.front_table(a.front, SPEC)["forget_gap 95% CI"].iloc[0] == tables.interval(
        3.0, a.front["forget_gap_ci"].iloc[0]) != "—"


def test_compare_takes_each_runs_best_from_its_replicated_means_and_says_what_they_rest_on(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweeps.report.compare import compare
    from sweeps.report.compare import summary_text as compare_text

    d = tmp_path / "run"
    (d / "trials").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(_after_replicate(), preserve_index=False), d / "trials" / "all.parquet")
    c = compare([(d, SPEC)])
    row = c.table.iloc[0]
    # trial 2's single draw (gap 0.5, TA 95) beats trial 1's mean on both objectives; the best
    # stays the replicated mean, as on the front
    assert (row["best_forget_gap"], row["best_forget_gap_n"]) == (pytest.approx(3.0), 3)
    assert (row["best_test_acc"], row["best_test_acc_n"]) == (pytest.approx(93.0), 3)
    assert "run: evidence: the front and picks rank the 1 feasible replicated" in compare_text(c)


def test_replication_shows_what_the_search_saw_beside_the_replicated_mean():
    a = analyze_runs(_after_replicate(), SPEC)
    r = replication(a).set_index("trial_number")
    assert r.index.tolist() == [0, 1]
    assert r.loc[0, "forget_gap_search"] == 0.0 and r.loc[0, "forget_gap"] == pytest.approx(17 / 3)
    assert (r.loc[0, "n_search"], r.loc[0, "n"]) == (1, 3)
    assert r.loc[0, "feasible_search"] and not r.loc[0, "feasible"] and not r.loc[0, "on_front"]
    assert r.loc[1, "feasible"] and r.loc[1, "on_front"]
    t = tables.replication_table(a).set_index("trial")
    assert t.loc[0, "feasible"] == "yes -> no" and t.loc[0, "n"] == "1 -> 3" and t.loc[1, "on front"] == "yes"
    assert t.loc[0, "forget_gap search"] == "0.00" and t.loc[0, "forget_gap replicated"].startswith("5.67 ± ")


def test_when_no_replicated_configuration_holds_the_front_falls_back_and_says_so():
    rows = pd.DataFrame(replicated('{"lr": 0.01}', 0, [0.0, 9.0], [94, 80])
                        + [run('{"lr": 0.03}', 0, 0.5, 95, trial=2)])
    a = analyze_runs(rows, SPEC)
    assert a.front["trial_number"].tolist() == [2]
    assert "none of the 1 replicated configuration(s) (n = 2) is feasible on its mean" in a.evidence
    assert "not yet evidence" in a.evidence


# -- methods side by side, with confidence ----------------------------------------------------------

def _seeds(values) -> pd.Series:
    return pd.Series(values, index=pd.MultiIndex.from_tuples([(s, s, s) for s in range(len(values))]),
                     dtype=float)


def test_separation_is_paired_by_seed():
    """Seeds differ a lot (each has its own Original and Retrain), a method a little and always: the
    paired interval sees it; the same values on unmatched seeds do not."""
    base = np.array([1.0, 6.0, 2.0, 9.0, 4.0])
    sep = separation({"a": _seeds(base), "b": _seeds(base + 0.3 + [0, 0.01, -0.01, 0.02, 0.0])})
    assert sep.loc["a", "best"] and sep.loc["b", "separated"] and sep.loc["b", "diff"] == pytest.approx(0.304)
    assert sep.loc["b", "lo"] > 0 and list(sep["rank"]) == [1, 2] and not sep["tie"].any()
    # the interval is the t-interval of the paired differences
    d = pd.Series([0.3, 0.31, 0.29, 0.32, 0.3])
    half = d.std() * stats.t.ppf(0.975, 4) / math.sqrt(5)
    assert (sep.loc["b", "lo"], sep.loc["b", "hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    # shuffled pairing (b's values moved to other seeds): nothing separates
    shuffled = separation({"a": _seeds(base), "b": _seeds(np.roll(base + 0.3, 2))})
    assert not shuffled.loc["b", "separated"] and shuffled["tie"].all()


def test_ranks_tie_where_the_data_cannot_separate():
    sep = separation({"a": _seeds([1.0, 1.2, 0.9, 1.1, 1.0]), "b": _seeds([1.1, 1.1, 1.0, 1.2, 1.0]),
                      "c": _seeds([3.0, 2.5, 3.2, 2.8, 3.1]), "one": _seeds([0.5])})
    assert sep["rank"].to_dict() == {"a": 1, "b": 1, "c": 3, "one": 1}  # c is beaten by a and b
    assert sep.loc["one", "best"] and not sep.loc["c", "tie"] and sep.loc["a", "tie"]
    assert sep.loc["c", "n_pairs"] == 1 and math.isnan(sep.loc["c", "lo"])  # one common seed: no interval


def test_a_method_tuned_worse_than_a_method_its_objective_contains_is_flagged():
    from sweeps.report.analysis import CONTAINS, under_searched
    from unlearning.methods import all_methods

    assert under_searched({"eupmu": 2.49, "rl": 1.61, "ft": 3.0}) == {
        "eupmu": "avg. gap 2.49 worse than rl's 1.61, which its objective contains: under-searched"}
    assert under_searched({"eupmu": 1.0, "rl": 1.61}) == {} and under_searched({"eupmu": 9.0}) == {}
    known = set(all_methods())
    assert all(m in known and set(inner) <= known for m, inner in CONTAINS.items())


def test_the_fields_table_carries_the_separation_and_the_flag():
    rows = []
    for seed, (e, r, f) in enumerate([(3.0, 1.0, 5.0), (2.0, 1.5, 7.0), (2.5, 1.2, 6.0)]):
        rows += [run('{"lr": 0.1}', seed, 2 * e, 93, method="eupmu"),
                 run('{"lr": 0.2}', seed, 2 * r, 93, trial=1, method="rl"),
                 run('{"lr": 0.3}', seed, 2 * f, 93, trial=2, method="ft")]
    a = analyze_runs(pd.DataFrame(rows), SPEC)
    t = a.table[a.table["selection"] == "oracle"].set_index("method")
    assert t.loc["rl", "sep_best"] and t.loc["rl", "rank"] == 1
    assert t.loc["eupmu", "sep_diff"] == pytest.approx(2.5 - 3.7 / 3) and not t.loc["eupmu", "separated"]
    assert "under-searched" in t.loc["eupmu", "under_searched"] and t.loc["eupmu", "rank"] == 1  # a tie
    # ft is beaten by rl beyond the noise, not by eupmu (3 seeds: its interval holds 0)
    assert t.loc["ft", "separated"] and t.loc["ft", "rank"] == 2
    md = tables.to_markdown(a.table)
    assert "Δ avg. gap vs best [95% CI]" in md and "| best " in md and "(under-searched)" in md
    assert "**Under-searched**: eupmu (oracle): avg. gap 2.50 worse than rl's 1.23" in md
    assert tables.rank_cell(t.loc["ft"]) == "2" and tables.rank_cell(t.loc["rl"]) == "1="


def test_the_cli_says_it_before_and_after_replicate(tmp_path, capsys, monkeypatch):
    """`run`, `status` and `replicate` as a user meets them (fast fake trials)."""
    import yaml

    import unlearning.tasks
    from orchestrator.cli import main
    from tests.tasks import fake_run_task

    monkeypatch.setattr(unlearning.tasks, "run_task", fake_run_task)
    monkeypatch.setenv("FAKE_TASK_SECONDS", "0")
    spec = small_spec(n_trials=4, sampler={"name": "random", "seed": 1})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "t"
    assert main(["run", str(tmp_path / "t.yaml"), "--out", str(run_dir)]) == 0
    out = capsys.readouterr()
    assert "every result is a single seed (n = 1): not yet evidence" in out.out
    assert "1 seed: not yet evidence" in out.err  # the progress line's best
    assert main(["status", str(run_dir)]) == 0 and "not yet evidence" in capsys.readouterr().out
    assert main(["replicate", str(run_dir), "--top", "1", "--seeds", "0-2"]) == 0
    out = capsys.readouterr().out
    assert "replication (search seeds -> all seeds; mean ± sample std [95% t-interval]):" in out
    assert "1 -> 3" in out and "(1 replicated on more)" in out and "evidence: " in out
    assert "## Replication" in (run_dir / "report" / "report.md").read_text()
    assert (run_dir / "report" / "replication.csv").is_file()
