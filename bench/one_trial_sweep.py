"""A one-trial sweep against one `unlearn-sweep trial` of the same configuration: what a sweep adds
around a trial (the probe, the oracle phase, the record, the report, the exit, and Ray's start where
the sweep starts Ray: a sweep of one trial at a time starts it only after 30 s, docs/cluster.md), on
the default backend with the oracle cache warm.

Each pair runs, as whole processes, in turn (the order alternating from pair to pair):
  sweep   unlearn-sweep run quickstart --set n_trials=1 --out <tmp>
  trial   unlearn-sweep trial --config <the TrialConfig that sweep ran, from its record>
A warm-up sweep first (its record gives the trial's config; the oracle cache fills). Prints each
run's wall with the 1-minute load average before it, then the medians and the median of the ratios
sweep / trial, pair by pair.

    .venv/bin/python bench/one_trial_sweep.py [--pairs 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXE = str(Path(sys.executable).with_name("unlearn-sweep"))


def timed(cmd: list[str], cwd: str) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr[-2000:]}")
    return {"wall_s": round(wall, 3), "load1_before": round(load, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    import pyarrow.parquet as pq
    import yaml

    with tempfile.TemporaryDirectory(prefix="one-trial-") as tmp:
        sweep = lambda: [EXE, "run", "quickstart", "--set", "n_trials=1", "--out",  # noqa: E731
                         tempfile.mkdtemp(dir=tmp)]
        first = sweep()
        timed(first, tmp)  # warm-up
        (row,) = pq.read_table(Path(first[-1]) / "trials").to_pylist()
        cfg = json.loads(row["config_json"])
        cfg.pop("cache_dir", None)
        config = Path(tmp) / "trial.yaml"
        config.write_text(yaml.safe_dump(cfg))
        trial = [EXE, "trial", "--config", str(config)]
        rows = []
        for i in range(args.pairs):
            for name in (("sweep", "trial") if i % 2 == 0 else ("trial", "sweep")):
                r = {"pair": i, "what": name, **timed(sweep() if name == "sweep" else trial, tmp)}
                rows.append(r)
                print(f"pair {i} {name}: {r['wall_s']:.2f}s (load {r['load1_before']:.1f})", flush=True)
    med = {w: statistics.median(r["wall_s"] for r in rows if r["what"] == w) for w in ("sweep", "trial")}
    ratios = [next(r["wall_s"] for r in rows if r["pair"] == i and r["what"] == "sweep") /
              next(r["wall_s"] for r in rows if r["pair"] == i and r["what"] == "trial")
              for i in range(args.pairs)]
    res = {"method": row["method"], "median_wall_s": med, "sweep_over_trial": round(statistics.median(ratios), 3),
           "ratios": [round(x, 3) for x in ratios], "runs": rows,
           "command": "bench/one_trial_sweep.py " + " ".join(sys.argv[1:])}
    print(json.dumps({k: res[k] for k in ("method", "median_wall_s", "sweep_over_trial", "ratios")}))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
