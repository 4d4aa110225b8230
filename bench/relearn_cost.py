"""Cost of the relearning attack as a trial metric (`eval.relearn: true`, off by default): the same
trial with and without it, on digits and the synthetic CIFAR-shaped set, random 10% and class-wise
forgetting (where Retrain has to learn the class). Reports the attack's own seconds (relearn_seconds,
from the metric) and steps for the unlearned model and Retrain, and the trial's total time both ways.
Oracles are trained first (cached), MIA is off, so only unlearning, evaluation and the attack count.
Writes bench/results/relearn_cost_cpu.json.

    python bench/relearn_cost.py [--repeats 3] [--synthetic-n 2000] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cpu_result import write_cpu_result  # noqa: E402
from unlearning.trial import load_trial_config, run_trial  # noqa: E402

SPLITS = {"random10": {"forget_fraction": 0.1}, "class3": {"scenario": "class", "forget_class": 3}}


def trial(data, split, relearn: bool, cache: str, seed: int):
    cfg = load_trial_config({"method": "ga", "data": data, "model": "small_cnn", "split": split,
                             "params": {"lr": 5e-3}, "seeds": {"unlearn_seed": seed},
                             "eval": {"mia": False, "relearn": relearn}, "cache_dir": cache,
                             "train": {"epochs": 10}})
    t0 = time.perf_counter()
    r = run_trial(cfg)
    assert r.state == "COMPLETE", r.error
    return r, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--synthetic-n", type=int, default=2000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "relearn_cost_cpu.json"))
    args = ap.parse_args()
    cache = os.environ.get("UNLEARN_SWEEP_CACHE") or tempfile.mkdtemp(prefix="relearn-cost-")
    sets = {"digits": {"name": "digits"},
            "synthetic": {"name": "synthetic", "n_train": args.synthetic_n, "n_test": 500}}
    rows = []
    for label, data in sets.items():
        for sname, split in SPLITS.items():
            trial(data, split, True, cache, 0)  # oracles, data and Retrain's attack, once
            for seed in range(1, args.repeats + 1):
                off, t_off = trial(data, split, False, cache, seed)
                on, t_on = trial(data, split, True, cache, seed)
                m = on.metrics
                row = {"data": label, "split": sname, "seed": seed, "unlearn_acc": m["unlearn_acc"],
                       "relearn_steps": m["relearn_steps"], "relearn_seconds": m["relearn_seconds"],
                       "relearn_capped": m["relearn_capped"],
                       "retrain_relearn_steps": on.reference["retrain"]["relearn_steps"],
                       "retrain_relearn_seconds": on.reference["retrain"]["relearn_seconds"],
                       "ain": m["ain"], "unlearn_runtime_s": on.runtime_s, "trial_s_without": t_off,
                       "trial_s_with": t_on}
                print(json.dumps(row), flush=True)
                rows.append(row)
    write_cpu_result(args.out, "GA lr 5e-3 on small_cnn (10-epoch oracles); the attack's defaults (whole "
                     "forget set, SGD lr 0.01, batch 32, target 95% of the original's forget accuracy, "
                     "checked every step, at most 200 steps). Retrain's attack is memoised per process: "
                     "paid once per worker, not per trial. The 2-core host was shared with other jobs.",
                     rows)


if __name__ == "__main__":
    main()
