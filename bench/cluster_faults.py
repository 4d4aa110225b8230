"""Node-level faults, each tried N times on a real cluster on this machine (tests/cluster_util.py:
nodes in network namespaces, Ray started with `ray start --block`, SLURM's slurmctld and slurmd),
with the record checked after each (tests/cluster_scenarios.py: every configuration of an
uninterrupted sweep exactly once, every run COMPLETE, nothing RUNNING or WAITING, every file whole).
A try whose checks fail counts as not recovered; its reason is kept.

    .venv/bin/python bench/cluster_faults.py [--tries 3] [--only worker_killed,slurm_requeue]
        [--out runs/bench/cluster_faults.json]

Needs root and `ip` (network namespaces), and Debian's slurm-wlm for the SLURM scenarios. The
figures are wall times on a shared machine: the load average is recorded beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("WANDB_MODE", "disabled")


def scenarios() -> dict:
    from tests import cluster_scenarios as S

    return {"worker_killed": S.worker_killed, "worker_joins": S.worker_joins,
            "worker_cut_off": S.worker_cut_off, "head_lost": S.head_lost,
            "slurm_sweep": S.slurm_sweep, "slurm_requeue": partial(S.slurm_sweep, preempt="requeue"),
            "slurm_time_limit": partial(S.slurm_sweep, preempt="time-limit")}


def summarize(tries: list[dict]) -> dict:
    """Per figure: mean, min, max over the tries that recovered."""
    ok = [t["figures"] for t in tries if t["recovered"]]
    keys = [k for k, v in (ok[0].items() if ok else []) if isinstance(v, (int, float))
            and not isinstance(v, bool)]
    return {k: {"mean": round(statistics.fmean(f[k] for f in ok), 2), "min": min(f[k] for f in ok),
                "max": max(f[k] for f in ok)} for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "cluster_faults.json"))
    args = ap.parse_args()
    from tests.cluster_util import slurm_unavailable, unavailable

    if why := unavailable():
        sys.exit(f"cluster_faults: {why}")
    table = scenarios()
    names = [n for n in args.only.split(",") if n] or list(table)
    doc = {"command": " ".join(["bench/cluster_faults.py", *sys.argv[1:]]), "host": platform.node(),
           "cpus": os.cpu_count(), "scenarios": {}}
    for name in names:
        if name.startswith("slurm") and (why := slurm_unavailable()):
            doc["scenarios"][name] = {"skipped": why}
            continue
        tries = []
        for i in range(args.tries):
            work = Path(tempfile.mkdtemp(prefix=f"cf-{name}-"))
            t0 = time.monotonic()
            try:
                figures, error = table[name](work), None
            except Exception as e:  # noqa: BLE001 - a failed check is a data point here
                figures, error = {}, "".join(traceback.format_exception_only(e)).strip()[-2000:]
            tries.append({"recovered": error is None, "wall_s": round(time.monotonic() - t0, 1),
                          "figures": figures, "error": error, "load_avg": [round(x, 2) for x in os.getloadavg()]})
            print(json.dumps({"scenario": name, "try": i + 1, **tries[-1]}), flush=True)
            shutil.rmtree(work, ignore_errors=True)
        doc["scenarios"][name] = {"tried": len(tries), "recovered": sum(t["recovered"] for t in tries),
                                  "summary": summarize(tries), "tries": tries}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    for name, s in doc["scenarios"].items():
        print(f"{name}: " + (f"skipped ({s['skipped']})" if "skipped" in s else
                             f"recovered {s['recovered']}/{s['tried']} {json.dumps(s['summary'])}"))


if __name__ == "__main__":
    main()
