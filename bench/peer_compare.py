"""unlearn-sweep against its peers on a small sweep: the quickstart's space at N trials (default 4),
one trial at a time, the same trial function (unlearning.tasks.run_trial_payload) and the same
configurations in every contender (bench/peers/common.py), the oracle cache warm:

  unlearn-sweep   `unlearn-sweep run quickstart --set n_trials=N` (the default backend: embedded Ray)
  ray_tune        Ray Tune + OptunaSearch (bench/peers/ray_tune.py)
  optuna          `study.optimize` in one process (bench/peers/optuna_loop.py)

Each round runs the three as whole processes, one after the other, in an order that rotates from
round to round (interleaved, so a change in the machine's load falls on all three); a warm-up run of
each first is not counted. Per run: the wall from the launch to the exit, the fixed cost (launch ->
first trial's start, plus last trial's end -> exit), the median gap between trials, and the 1-minute
load average before and after. A trial's start and end are the trial function's own for the peers
and the driver's submit and record for unlearn-sweep (its trial's dispatch counts as trial time).
Ratios are taken round by round (paired), then their median.

    .venv/bin/python bench/peer_compare.py [--rounds 3] [--trials 4] [--out bench/results/peers.json]

Prints one line per run and the markdown table of docs/performance.md; writes the JSON.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CONTENDERS = ("unlearn-sweep", "ray_tune", "optuna")


def _command(name: str, trials: int, out: Path) -> list[str]:
    if name == "unlearn-sweep":
        exe = Path(PY).with_name("unlearn-sweep")
        return [str(exe), "run", "quickstart", "--set", f"n_trials={trials}", "--out", str(out)]
    return [PY, str(ROOT / "bench" / "peers" / f"{'ray_tune' if name == 'ray_tune' else 'optuna_loop'}.py"),
            "--trials", str(trials), "--out", str(out)]


def _trials(name: str, out: Path) -> list[dict]:
    """[{start, end, method, params}] in start order."""
    if name != "unlearn-sweep":
        return json.loads(out.read_text())["trials"]
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "trials").to_pylist()
    ts = lambda v: v.timestamp() if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(v).timestamp()  # noqa: E731
    return sorted(({"start": ts(r["started_at"]), "end": ts(r["ended_at"]), "method": r["method"],
                    "state": r["state"]} for r in rows), key=lambda t: t["start"])


def run_once(name: str, trials: int, env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        out = Path(tmp) / ("run" if name == "unlearn-sweep" else "out.json")
        load_before = os.getloadavg()[0]
        t0 = time.time()
        if name == "optuna":  # one thread per library, as Ray gives a 1-CPU worker (OMP_NUM_THREADS)
            env = {**env, "OMP_NUM_THREADS": "1"}
        p = subprocess.run(_command(name, trials, out), env=env, cwd=tmp, capture_output=True, text=True)
        t1 = time.time()
        load_after = os.getloadavg()[0]
        if p.returncode != 0:
            raise SystemExit(f"{name} failed ({p.returncode}):\n{p.stderr[-3000:]}")
        ts = _trials(name, out)
    starts, ends = [t["start"] for t in ts], [t["end"] for t in ts]
    gaps = [b - a for a, b in zip(ends, starts[1:])]
    return {"contender": name, "wall_s": round(t1 - t0, 3), "trials": len(ts),
            "trial_s": round(sum(e - s for s, e in zip(starts, ends)), 3),
            "startup_s": round(starts[0] - t0, 3), "ending_s": round(t1 - ends[-1], 3),
            "fixed_s": round(starts[0] - t0 + t1 - ends[-1], 3),
            "gap_s": round(statistics.median(gaps), 3) if gaps else None,
            "methods": [t["method"] for t in ts], "states": [t["state"] for t in ts],
            "load1_before": round(load_before, 2), "load1_after": round(load_after, 2)}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for name in CONTENDERS:
        mine = [r for r in rows if r["contender"] == name]
        out[name] = {k: round(statistics.median(r[k] for r in mine), 3)
                     for k in ("wall_s", "fixed_s", "startup_s", "ending_s", "gap_s", "trial_s")
                     if all(r[k] is not None for r in mine)}
        out[name]["load1"] = [r["load1_before"] for r in mine]
    rounds = sorted({r["round"] for r in rows})
    for peer in CONTENDERS[1:]:
        ratios = []
        for i in rounds:
            ours = next(r for r in rows if r["round"] == i and r["contender"] == CONTENDERS[0])
            theirs = next(r for r in rows if r["round"] == i and r["contender"] == peer)
            ratios.append(ours["wall_s"] / theirs["wall_s"])
        out[peer]["ours_over_this_wall"] = round(statistics.median(ratios), 3)
        out[peer]["ours_over_this_wall_per_round"] = [round(x, 3) for x in ratios]
    return out


def table(summary: dict) -> str:
    head = "| | " + " | ".join(CONTENDERS) + " |\n|---|" + "---|" * len(CONTENDERS) + "\n"

    def cell(name, key, ratio=False):
        v = summary[name].get(key)
        s = "" if v is None else f"{v:.2f} s" if key != "gap_s" else f"{v:.3f} s"
        if ratio and name != CONTENDERS[0]:
            s += f" (ours {summary[name]['ours_over_this_wall']:.2f}x)"
        return s

    rows = [("whole sweep", "wall_s", True), ("fixed cost (launch -> first trial, last trial -> exit)",
                                                "fixed_s", False),
            ("of it, launch -> first trial", "startup_s", False), ("of it, last trial -> exit", "ending_s", False),
            ("gap between trials (median)", "gap_s", False), ("the trials themselves", "trial_s", False)]
    body = "".join(f"| {label} | " + " | ".join(cell(n, k, r) for n in CONTENDERS) + " |\n"
                   for label, k, r in rows)
    loads = "| 1-min load average before each run | " + " | ".join(
        ", ".join(f"{x:.1f}" for x in summary[n]["load1"]) for n in CONTENDERS) + " |\n"
    return head + body + loads


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "peers.json"))
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.setdefault("UNLEARN_SWEEP_CACHE", str(Path(tempfile.gettempdir()) / "peer-compare-cache"))
    rows = []
    for name in CONTENDERS:  # warm-up: the oracle cache, the file system's cache, .pyc files
        r = run_once(name, args.trials, env)
        print(f"warm-up {name}: {r['wall_s']:.1f}s (load {r['load1_before']:.1f})", flush=True)
    for i in range(args.rounds):
        order = CONTENDERS[i % 3:] + CONTENDERS[:i % 3]
        for name in order:
            r = {"round": i, **run_once(name, args.trials, env)}
            rows.append(r)
            print(f"round {i} {name}: wall {r['wall_s']:.1f}s fixed {r['fixed_s']:.1f}s gap {r['gap_s']}s "
                  f"trials {r['trial_s']:.1f}s {r['methods']} (load {r['load1_before']:.1f} -> "
                  f"{r['load1_after']:.1f})", flush=True)
    summary = summarise(rows)
    same = len({tuple(r["methods"]) for r in rows}) == 1
    res = {"what": "the quickstart's space, n_trials trials one at a time, warm oracle cache; medians "
                   "over rounds, ratios paired per round", "n_trials": args.trials, "rounds": args.rounds,
           "same_methods_in_every_run": same, "summary": summary, "runs": rows,
           "machine": {"node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "command": "bench/peer_compare.py " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(table(summary))


if __name__ == "__main__":
    main()
