"""A trial's wall at two nice levels on a machine that other work keeps busy: the priority Ray
gives its workers by default (nice 15) against the one unlearn-sweep's embedded Ray gives them
(the driver's own, nice 0 unless the sweep was started under `nice`).

Each pair runs `unlearn-sweep trial` (the quickstart's base config, one EUPMU trial; the oracle
cache warm) once at each level, in turn, the order alternating from pair to pair; the 1-minute load
average before each run is printed beside it. `--load N` adds N busy-looping processes at nice 0
for the length of the measurement (the competing work); by default the machine's own load is the
competition.

    .venv/bin/python bench/worker_niceness.py [--pairs 3] [--load 0] [--levels 0,15] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ["trial", "--method", "eupmu", "--data", "digits", "--model", "small_cnn",
         "--set", "split.forget_fraction=0.1", "--set", "epochs=3"]


def _spin() -> None:
    while True:
        pass


def run_at(nice: int, timeout_s: float) -> dict:
    exe = Path(sys.executable).with_name("unlearn-sweep")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        p = subprocess.run([str(exe), *TRIAL], capture_output=True, text=True, timeout=timeout_s,
                           preexec_fn=lambda: os.nice(nice))
        wall, rc = time.perf_counter() - t0, p.returncode
    except subprocess.TimeoutExpired:  # killed at the bound: its wall is at least that
        return {"nice": nice, "wall_s": timeout_s, "timed_out": True, "rc": None,
                "load1_before": round(load, 2)}
    return {"nice": nice, "wall_s": round(wall, 2), "timed_out": False, "rc": rc,
            "load1_before": round(load, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--load", type=int, default=0)
    ap.add_argument("--levels", default="0,15")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.load)]
    for s in spinners:
        s.start()
    rows = []
    try:
        run_at(levels[0], args.timeout)  # warm-up: the oracle cache, the file system's cache
        for i in range(args.pairs):
            for nice in (levels if i % 2 == 0 else levels[::-1]):
                r = {"pair": i, **run_at(nice, args.timeout)}
                rows.append(r)
                print(f"pair {i} nice {nice}: {'>' if r['timed_out'] else ''}{r['wall_s']} s "
                      f"(load {r['load1_before']})", flush=True)
    finally:
        for s in spinners:
            s.terminate()
    # a run killed at --timeout counts as the bound: a median that includes one is a lower bound
    med = {n: statistics.median(r["wall_s"] for r in rows if r["nice"] == n) for n in levels}
    res = {"trial": "unlearn-sweep " + " ".join(TRIAL), "extra_busy_processes": args.load,
           "median_wall_s": {str(n): v for n, v in med.items()}, "runs": rows,
           "machine": {"node": platform.node(), "cpus": os.cpu_count()},
           "command": "bench/worker_niceness.py " + " ".join(sys.argv[1:])}
    print(json.dumps(res["median_wall_s"]))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
