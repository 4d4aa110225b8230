"""The analysis at scale: a synthetic record of N configurations x S seeds (rows built by the
driver's own `sweeps.results.trial_row`, in one Parquet file), then the time of each step of
`analyze` and of the whole report. Reading the Parquet is timed apart (the issue's budget is for
the analysis itself: well under 5 s for 10,000 trials).

    .venv/bin/python bench/analysis_scale.py [--configs 10000] [--seeds 3] [--report] [--out X.json]

Prints the JSON; writes it only with --out.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps import results as R  # noqa: E402
from sweeps.report import analysis as A  # noqa: E402
from sweeps.report import tables  # noqa: E402
from sweeps.spec import load_spec  # noqa: E402


def synthetic_record(spec, n_configs: int, n_seeds: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_configs):
        method = ("ft", "rl")[t % 2]
        lr = float(10 ** rng.uniform(-3, -1))
        for s in range(n_seeds):
            ta = 95 - 60 * lr + rng.normal(0, 0.5)
            m = {"unlearn_acc": 2 + 80 * lr + rng.normal(0, 0.5), "retain_acc": 99 - 5 * lr, "test_acc": ta,
                 "mia_efficacy": 5 + 100 * lr, "forget_acc": 98 - 80 * lr, "val_acc": 94.0,
                 "utility_drop": 95 - ta, "forget_gap": abs(80 * lr - 3) + rng.normal(0, 0.3) ** 2,
                 "avg_gap": abs(60 * lr - 2), "runtime_s": 0.5 + rng.random(), "retain_examples_seen": 100.0}
            ref = {"original": {"unlearn_acc": 0.0, "retain_acc": 100.0, "test_acc": 95.0, "mia_efficacy": 0.0},
                   "retrain": {"unlearn_acc": 5.0, "retain_acc": 100.0, "test_acc": 94.5, "mia_efficacy": 12.0}}
            seeds = {"split_seed": 0, "train_seed": 0, "unlearn_seed": s}
            cfg = spec.trial_config(method, {"lr": lr}, seeds)
            rows.append(R.trial_row(spec=spec, number=t, fp=f"{t:06d}-{s}", config=cfg, seed_index=s,
                                    result={"state": "COMPLETE", "metrics": m, "reference": ref,
                                            "params": {"lr": lr}, "runtime_s": m["runtime_s"]},
                                    ended_at="2025-01-01T00:00:00+00:00"))
    return pa.Table.from_pylist(rows, schema=R.trial_schema(spec))


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--report", action="store_true", help="also time write_report (plots, exports)")
    ap.add_argument("--out", help="write the JSON here too")
    args = ap.parse_args()
    spec = load_spec({
        "name": "scale", "base": {"data": {"name": "digits"}},
        "methods": {"ft": {"space": {"lr": {"type": "log-float", "low": 1e-3, "high": 1e-1}}},
                    "rl": {"space": {"lr": {"type": "log-float", "low": 1e-3, "high": 1e-1}}}},
        "objectives": [{"metric": "forget_gap"}, {"metric": "test_acc", "direction": "maximize"}],
        "constraints": [{"metric": "utility_drop", "max": 3}],
        "n_trials": args.configs, "seeds": list(range(args.seeds)),
        "resources": {"backend": "inline"}, "tracking": {"wandb": {"mode": "disabled"}}})
    table, t_build = timed(synthetic_record, spec, args.configs, args.seeds)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "trials").mkdir()
        pq.write_table(table, Path(d) / "trials" / "all.parquet")
        runs, t_read = timed(lambda: R.read_results(d).to_pandas())
        configs, t_cfg = timed(A.per_config, runs, spec)
        a, t_analyze = timed(A.analyze_runs, runs, spec, run_dir=Path(d))
        top, t_top = timed(A.top_configs, a, 10)
        tex, t_export = timed(tables.export, a, "latex")
        out = {"command": " ".join(sys.argv), "machine": {"python": platform.python_version(),
                                                          "cpu": platform.processor() or platform.machine()},
               "configs": args.configs, "seeds": args.seeds, "runs": len(runs),
               "feasible": int(a.configs["feasible"].sum()),
               "front": len(a.front), "seconds": {
                   "build_record (not analysis)": round(t_build, 3), "read_parquet (not analysis)": round(t_read, 3),
                   "per_config": round(t_cfg, 3), "analyze (per_config, front, hypervolume, picks, table)":
                       round(t_analyze, 3), "top_configs(10)": round(t_top, 3), "export latex": round(t_export, 3)}}
        if args.report:
            from sweeps.report import plots

            _, t_png = timed(plots.front_png, a, Path(d) / "front.png")
            _, t_hist = timed(plots.history_png, a, Path(d) / "history.png")
            page, t_html = timed(plots.front_html, a)
            out["seconds"].update({"front.png": round(t_png, 3), "history.png": round(t_hist, 3),
                                   "front.html": round(t_html, 3)})
            out["front_html_mb"] = round(len(page) / 1e6, 2)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
