"""bench/fmnist_table.py end to end at --tiny size (digits, no package needed): one sweep per method
through the CLI, the best configuration replicated, the field's table as JSON and markdown."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import fmnist_table  # noqa: E402


def run_tiny(tmp_path, methods: str, jobs: int) -> dict:
    out = tmp_path / "table"
    assert fmnist_table.main(["--tiny", "--methods", methods, "--replicate-with-sweep", "--jobs", str(jobs),
                              "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    d = json.loads(out.with_suffix(".json").read_text())
    assert d["replicate_with"] == "sweep" and "fmnist_table.py --tiny" in d["command"]
    md = out.with_suffix(".md").read_text()
    assert md.startswith("# fmnist_cpu: the method table on digits") and "Fashion-MNIST" not in md
    assert "| method | UA | RA | TA | MIA-efficacy | Indisc. | Avg. gap | RTE |" in md
    assert all(f"| {r['label']} |" in md for r in d["rows"])
    return d


@pytest.mark.slow
def test_tiny_table_end_to_end(tmp_path):
    d = run_tiny(tmp_path, "retrain,ga,eupmu_fast", jobs=2)  # oracles, then rows, in two processes
    assert d["jobs"] == 2 and len(list((tmp_path / "runs" / "logs").rglob("job*.log"))) == 4
    assert [r["label"] for r in d["rows"]] == ["Original", "Retrain", "GA", "EUPMU-fast"]
    rows = {r["label"]: r for r in d["rows"]}
    for label in ("Retrain", "GA", "EUPMU-fast"):
        assert rows[label]["seeds"] == 3  # replicated on seeds 0-2 (tiny), one row per seed
        assert all(rows[label]["metrics"][m]["n"] == 3 for m in ("unlearn_acc", "indiscernibility", "rte"))
    assert rows["Retrain"]["metrics"]["avg_gap"]["mean"] == 0 and rows["Retrain"]["metrics"]["rte"]["mean"] == 1
    fast = rows["EUPMU-fast"]["params"]
    assert fast["estimate"] == "previous_batch" and fast["normalise"] is True
    assert set(rows["GA"]["searched"]) == {"lr"}  # tiny fixes the epochs
    # the replicate runs hold exactly the chosen configuration, on the replicate seeds
    from sweeps.results import read_results

    rep = read_results(tmp_path / "runs" / "ga-replicate").to_pandas()
    assert set(rep["params_json"]) == {json.dumps(rows["GA"]["params"], sort_keys=True)}
    assert sorted(rep["train_seed"]) == [0, 1, 2] and (rep["state"] == "COMPLETE").all()
    # the tool's separation, paired by seed: GA against EUPMU-fast (the references are not ranked)
    assert "separation" not in rows["Retrain"]
    assert {rows[k]["separation"]["n_pairs"] for k in ("GA", "EUPMU-fast")} == {3}
    assert sorted(rows[k]["separation"]["best"] for k in ("GA", "EUPMU-fast")) == [False, True]
    assert "| Δ avg. gap vs best [95% CI] | rank |" in (tmp_path / "table.md").read_text()


def test_separation_of_the_bench_rows_flags_a_row_worse_than_one_it_contains():
    rows = [{"key": k, "label": k, "method": m, "metrics": {},
             "per_seed_avg_gap": [[s, s, 0, v + 0.1 * s] for s in range(3)]}
            for k, m, v in (("rl", "rl", 1.6), ("eupmu", "eupmu", 2.5), ("eupmu_fast", "eupmu", 1.0))]
    result = {"rows": rows}
    fmnist_table.add_separation(result)
    sep = {r["key"]: r["separation"] for r in rows}
    assert sep["eupmu_fast"]["best"] and sep["eupmu"]["rank"] == 3 and sep["rl"]["rank"] == 2
    assert "worse than rl's 1.70" in sep["eupmu"]["under_searched"] and not sep["eupmu_fast"]["under_searched"]


@pytest.mark.slow
def test_tiny_table_of_every_method(tmp_path):
    d = run_tiny(tmp_path, ",".join(key for key, *_ in fmnist_table.ROWS), jobs=1)
    assert len(d["rows"]) == 14 and all(r.get("seeds", 3) == 3 for r in d["rows"])


def test_cost_mode_times_each_method_once(tmp_path):
    out = tmp_path / "cost"
    assert fmnist_table.main(["--tiny", "--cost", "--methods", "retrain,ft", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["key"] for r in rows] == ["retrain", "ft"] and all(r["state"] == "COMPLETE" for r in rows)
    assert rows[1]["params"]["epochs"] == 1 and rows[1]["runtime_s"] > 0 and rows[1]["mia_s"] > 0
    est = json.loads(out.with_suffix(".json").read_text())["estimate"]
    assert est["total_min"] > 0 and est["oracles_s"] > 0


def test_seed_grammar():
    assert fmnist_table.seed_ints("0-4") == [0, 1, 2, 3, 4] and fmnist_table.seed_ints("0,2,5-6") == [0, 2, 5, 6]


def test_tiny_and_cost_write_under_runs_never_over_the_committed_results(tmp_path, monkeypatch, capsys):
    # before: `--tiny` and `--cost` wrote bench/results/fmnist_cpu_tiny_table.* and fmnist_cpu_cost.json
    monkeypatch.setattr(fmnist_table, "ROOT", tmp_path)
    assert fmnist_table.main(["--tiny", "--cost", "--methods", "ft", "--runs", str(tmp_path / "runs")]) == 0
    assert (tmp_path / "runs" / "bench" / "fmnist_cpu_tiny_cost.json").is_file()
    assert not (tmp_path / "bench").exists()
    out = capsys.readouterr().out  # it says what it does, and its estimate, not only in the JSON
    assert "--cost: the seed-0 Original and Retrain" in out and "estimate for the whole table:" in out
    assert ("Original epoch" in out) or ("Original: from the oracle cache" in out)
