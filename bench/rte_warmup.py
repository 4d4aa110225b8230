"""RTE and one-time process costs: is a worker's first trial timed like the later ones?

    .venv/bin/python bench/rte_warmup.py [--methods ltu eupmu ft] [--processes 3] [--trials 4]
    .venv/bin/python bench/rte_warmup.py --data synthetic --model resnet18   # on a GPU: cuDNN

Each of `--processes` fresh Python processes (a new trial worker) runs `--trials` identical trials
(digits and small_cnn by default, one unlearning epoch, the same seeds) of a method and reports each trial's
`runtime_s`: the timed unlearning RTE divides Retrain's time by. Three ways:

* none: unlearning.warmup's warm_up and warm_kernels disabled (what the issue measured: the first
  optimizer of a process imports torch._dynamo inside the timed part);
* warm_up: the process-wide warm-up only (the optimizer import, autograd's engine);
* both: also a few steps of a throwaway copy of the model at the training batch shape (kernel
  choice, allocator pools), the default.

Reported per method and way: the first trial's runtime_s, the median of the later ones, and their
difference and ratio (medians over processes). Oracles come from the cache (trained first, once).
Writes bench/results/rte_warmup_cpu.json (or _cuda on a GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
WAYS = ("none", "warm_up", "both")
PARAMS = {"ltu": {"epochs": 1, "mia_steps": 50}}


def trial_config(args, method: str) -> dict:
    return {"method": method, "data": {"name": args.data}, "model": args.model,
            "train": {"epochs": args.oracle_epochs}, "params": PARAMS.get(method, {"epochs": 1})}


def child(raw: dict, way: str, trials: int) -> None:
    """One fresh worker: `trials` identical trials, their runtime_s as one JSON line."""
    import torch

    from unlearning import trial as T

    torch.set_num_threads(1)
    if way == "none":
        T.warm_up = lambda: None
    if way in ("none", "warm_up"):
        T.warm_kernels = lambda *a, **k: None
    cfg = T.load_trial_config(raw)
    out = []
    for _ in range(trials):
        r = T.run_trial(cfg)
        assert r.state == "COMPLETE", r.error
        out.append(r.runtime_s)
    print(json.dumps(out))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=["ltu", "eupmu", "ft"])
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--oracle-epochs", type=int, default=30, help="the original and Retrain models")
    ap.add_argument("--cache-dir", default=str(ROOT / "runs" / "bench" / "rte_cache"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=3, metavar=("CONFIG", "WAY", "TRIALS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ["UNLEARN_SWEEP_CACHE"] = args.cache_dir
    if args.child:
        return child(json.loads(args.child[0]), args.child[1], int(args.child[2]))

    import torch

    from trial_throughput import versions

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs: dict = {}
    for method in args.methods:
        raw = json.dumps(trial_config(args, method))
        subprocess.run([sys.executable, __file__, "--child", raw, "both", "1"], env=env, check=True,
                       capture_output=True, cwd=ROOT)  # the oracles, into the cache
        for p in range(args.processes):
            for way in (WAYS if p % 2 == 0 else WAYS[::-1]):  # alternate: load drifts on a shared machine
                res = subprocess.run([sys.executable, __file__, "--child", raw, way, str(args.trials)],
                                     env=env, check=True, capture_output=True, text=True, cwd=ROOT)
                times = json.loads(res.stdout.strip().splitlines()[-1])
                runs.setdefault(method, {}).setdefault(way, []).append(times)
                print(method, way, [round(t, 3) for t in times], flush=True)
    summary = {}
    for method, ways in runs.items():
        summary[method] = {}
        for way, procs in ways.items():
            first = statistics.median(t[0] for t in procs)
            later = statistics.median(statistics.median(t[1:]) for t in procs)
            summary[method][way] = {"first_s": round(first, 4), "later_s": round(later, 4),
                                    "first_minus_later_s": round(first - later, 4),
                                    "first_over_later": round(first / later, 2)}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    doc = {"command": "python bench/rte_warmup.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "machine": {"node": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
                       "load_avg_1m": round(os.getloadavg()[0], 2)},
           "versions": versions(), "device": device,
           "setup": {"configs": {m: trial_config(args, m) for m in args.methods},
                     "processes": args.processes, "trials_per_process": args.trials, "torch_threads": 1},
           "runtime_s": runs, "summary": summary}
    out = Path(args.out or ROOT / "bench" / "results" / f"rte_warmup_{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
