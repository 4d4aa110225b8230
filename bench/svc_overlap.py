"""The MIA SVC off the critical path: a packed sweep on this CPU, with and without overlap.

    .venv/bin/python bench/svc_overlap.py [--trials 8] [--slots 1 2] [--repeats 2]

One sweep of `--trials` FT configurations (a grid over lr; one seed) on synthetic 8x8 images, sized
so that the exact SVC of MIA-efficacy (fitted on 2 x n_test confidences) is about half of a trial,
runs through the real driver (orchestrator.runner.Driver) on an embedded Ray told it has K CPUs for
each K of `--slots` (K trial actors, one CPU and one torch thread each), with
`resources.overlap_mia` off and on, the two in alternating order over `--repeats`. With overlap, an
actor starts its next trial while the previous one's SVC runs on its background thread.

Reported per run: wall time and trials/h, steady-state trials/h (between the K-th and the last
result: each actor's first trial also evaluates the original and Retrain models), the most trials
alive at once, mean `runtime_s` and `mia_seconds`; and whether every result with overlap equals the
one without (all but timings: unlearning.trial.untimed). The original and Retrain models are
trained into the cache before anything is timed. Writes bench/results/svc_overlap_cpu.json.
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
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8, help="configurations per sweep")
    ap.add_argument("--slots", type=int, nargs="+", default=[1, 2], help="trial actors (Ray CPUs)")
    ap.add_argument("--repeats", type=int, default=2, help="sweeps per (slots, overlap)")
    ap.add_argument("--n-train", type=int, default=12000)
    ap.add_argument("--n-test", type=int, default=6000, help="the SVC fits 2 x this many points")
    ap.add_argument("--image-size", type=int, default=8)
    ap.add_argument("--cache-dir", default=str(ROOT / "runs" / "bench" / "svc_overlap_cache"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "svc_overlap_cpu.json"))
    return ap.parse_args(argv)


def sweep_spec(args) -> dict:
    lrs = [round(0.002 * (i + 1), 4) for i in range(args.trials)]
    return {
        "name": "svc-overlap",
        "base": {"data": {"name": "synthetic", "n_train": args.n_train, "n_test": args.n_test,
                          "image_size": args.image_size},
                 "model": "small_cnn", "train": {"epochs": 2}, "split": {"forget_fraction": 0.1},
                 "device": "cpu"},
        "methods": {"ft": {"space": {"lr": {"type": "categorical", "choices": lrs},
                                     "epochs": {"type": "fixed", "value": 1}}}},
        "objectives": [{"metric": "avg_gap", "direction": "minimize"}],
        "sampler": {"name": "grid", "seed": 0}, "n_trials": args.trials, "seeds": [0],
        "resources": {"backend": "ray", "cpus_per_trial": 1},
        "tracking": {"wandb": {"mode": "disabled"}},
    }


class Results:
    """A tracker that keeps every run's whole result and when it landed."""

    def __init__(self):
        self.results: dict[str, dict] = {}
        self.landed: list[float] = []

    def start(self, *a): pass

    def log(self, *a): pass

    def finish(self, key, result):
        self.results[key] = result
        self.landed.append(time.perf_counter())

    def close(self): pass


def most_alive(results: list[dict]) -> int:
    """The most trials between their start and their end at one instant."""
    ts = lambda s: datetime.fromisoformat(s).timestamp()  # noqa: E731
    events = sorted([(ts(r["started_at"]), 1) for r in results] + [(ts(r["ended_at"]), -1) for r in results])
    alive = peak = 0
    for _, d in events:
        alive += d
        peak = max(peak, alive)
    return peak


def one_sweep(args, raw: dict, slots: int, overlap: bool, work: Path) -> tuple[dict, dict]:
    from cluster.ray_backend import RayBackend
    from orchestrator.runner import Driver
    from sweeps.spec import load_spec
    from unlearning.tasks import run_task

    spec = load_spec({**raw, "resources": {**raw["resources"], "overlap_mia": overlap}})
    run_dir = Path(tempfile.mkdtemp(dir=work))
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    backend = RayBackend(run_task, None, num_cpus=slots, cpus_per_trial=1, overlap=overlap,
                         include_dashboard=False)
    started = time.perf_counter() - t0
    tracker = Results()
    t1 = time.perf_counter()
    out = Driver(spec, run_dir, backend=backend, tracker=tracker, log=None).run()  # shuts Ray down
    wall = out["wall_s"]
    done = list(tracker.results.values())
    assert out["done"] == args.trials and all(r["state"] == "COMPLETE" for r in done), out
    landed = sorted(t - t1 for t in tracker.landed)
    steady = (len(landed) - slots) / (landed[-1] - landed[slots - 1]) if len(landed) > slots else None
    row = {"slots": slots, "overlap": overlap, "trials": len(done), "ray_start_s": round(started, 2),
           "wall_s": round(wall, 2), "trials_per_hour": round(3600 * len(done) / wall, 1),
           "steady_trials_per_hour": round(3600 * steady, 1) if steady else None,
           "most_trials_alive": most_alive(done),
           "runtime_s_mean": round(statistics.mean(r["runtime_s"] for r in done), 3),
           "mia_seconds_mean": round(statistics.mean(r["metrics"]["mia_seconds"] for r in done), 3),
           "total_s_mean": round(statistics.mean(r["total_s"] for r in done), 3),
           "load_avg_1m_before": round(load, 2), "load_avg_1m_after": round(os.getloadavg()[0], 2)}
    print(json.dumps(row), flush=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    return row, tracker.results


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ["UNLEARN_SWEEP_CACHE"] = args.cache_dir  # before unlearning is imported; actors inherit
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    from trial_throughput import versions
    from unlearning.data import load_dataset
    from unlearning.splits import make_split
    from unlearning.trial import load_trial_config, run_trial, untimed

    torch.set_num_threads(1)
    raw = sweep_spec(args)
    from sweeps.spec import load_spec

    spec = load_spec(raw)
    first = spec.trial_config("ft", {"lr": raw["methods"]["ft"]["space"]["lr"]["choices"][0], "epochs": 1},
                              spec.seed_list()[0])
    cfg = load_trial_config(first)
    t0 = time.perf_counter()
    assert run_trial(cfg).state == "COMPLETE"  # trains the original and Retrain models into the cache
    oracle_s = time.perf_counter() - t0
    r = run_trial(cfg)  # one trial as this process runs it, for scale
    split = make_split(load_dataset(cfg.data), cfg.split, cfg.seeds.split_seed)
    setup = {"method": "ft", "model": "small_cnn", "data": raw["base"]["data"], "forget": "random 10%",
             "svc_points": 2 * min(len(split.retain), len(split.test)), "unlearning_epochs": 1,
             "oracle_epochs": 2, "oracles_s": round(oracle_s, 1),
             "one_trial_in_process": {"total_s": round(r.total_s, 2), "runtime_s": round(r.runtime_s, 2),
                                      "mia_seconds": round(r.metrics["mia_seconds"], 2)}}
    print(json.dumps(setup), flush=True)

    work = Path(tempfile.mkdtemp(prefix="svc-overlap-"))
    runs, same, by_mode = [], {}, {}
    try:
        for k in args.slots:
            for rep in range(args.repeats):
                for overlap in ((False, True) if rep % 2 == 0 else (True, False)):
                    row, results = one_sweep(args, raw, k, overlap, work)
                    runs.append({**row, "repeat": rep})
                    by_mode.setdefault((k, overlap), []).append(results)
            base = by_mode[(k, False)][0]
            same[str(k)] = all(set(res) == set(base) and all(untimed(res[fp]) == untimed(base[fp])
                                                               for fp in base)
                               for mode in ((k, False), (k, True)) for res in by_mode[mode])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = []
    for k in args.slots:
        med = {ov: {f: statistics.median(r[f] for r in runs if r["slots"] == k and r["overlap"] == ov)
                    for f in ("wall_s", "trials_per_hour", "steady_trials_per_hour")} for ov in (False, True)}
        summary.append({"slots": k, "off": med[False], "on": med[True],
                        "speedup_trials_per_hour": round(med[True]["trials_per_hour"]
                                                         / med[False]["trials_per_hour"], 3),
                        "speedup_steady": round(med[True]["steady_trials_per_hour"]
                                                / med[False]["steady_trials_per_hour"], 3),
                        "results_identical": same[str(k)]})
    doc = {"command": "python bench/svc_overlap.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": {"node": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
                       "processor": platform.processor() or platform.machine()},
           "versions": versions(), "setup": setup, "runs": runs, "summary": summary,
           "note": "a shared machine: compare the two modes of one slot count, run back to back"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, args.out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
