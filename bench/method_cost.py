"""Cost per epoch of the surgery methods: backward passes per step and seconds per epoch of EUPMU
(same-batch and previous-batch estimates), UNGrad, LTU and RL, on digits and on the synthetic
CIFAR-shaped set, through run_trial (oracles cached, Retrain and MIA off: only the method is timed).

Backward passes are counted by wrapping torch.autograd.backward / torch.autograd.grad; both the count
and the time are taken between the ends of the first and the last epoch, so one-off set-up (LTU's
MIA models, oracle training) is reported separately. Writes bench/results/method_cost_cpu.json.

    python bench/method_cost.py [--epochs 3] [--synthetic-n 2000] [--out PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cpu_result import write_cpu_result  # noqa: E402
from unlearning.trial import load_trial_config, run_trial  # noqa: E402

COUNT = {"n": 0}


def _counting(fn):
    def wrapped(*a, **k):
        COUNT["n"] += 1
        return fn(*a, **k)
    return wrapped


torch.autograd.backward = _counting(torch.autograd.backward)  # Tensor.backward calls this
torch.autograd.grad = _counting(torch.autograd.grad)

METHODS = {
    "rl": {},
    "eupmu": {},
    "eupmu_fast": {"estimate": "previous_batch", "normalise": True},
    "ungrad": {},
    "ltu": {"retain_subset": 500},
}


def measure(data: dict, model: str, method: str, params: dict, epochs: int, cache: str) -> dict:
    marks = []
    cfg = load_trial_config({"method": method.split("_fast")[0], "data": data, "model": model,
                             "params": {"epochs": epochs, "batch_size": 256, **params},
                             "retrain": False, "eval": {"mia": False}, "cache_dir": cache,
                             "train": {"epochs": 10}})
    t_start = time.perf_counter()
    r = run_trial(cfg, on_epoch=lambda row: marks.append((COUNT["n"], row["elapsed_s"], row["steps"])))
    assert r.state == "COMPLETE", r.error
    (c0, t0, _), (c1, _, _) = marks[0], marks[-1]
    steps = sum(m[2] for m in marks[1:])
    per_epoch = sorted(b[1] - a[1] for a, b in zip(marks, marks[1:]))
    return {"method": method, "params": params, "steps_per_epoch": marks[-1][2],
            "backward_per_step": (c1 - c0) / steps, "s_per_epoch": per_epoch[len(per_epoch) // 2],
            "s_per_epoch_min": per_epoch[0], "s_per_epoch_all": per_epoch, "first_epoch_s": t0,
            "runtime_s": r.runtime_s, "trial_total_s": time.perf_counter() - t_start,
            "UA": r.metrics["unlearn_acc"], "RA": r.metrics["retain_acc"], "TA": r.metrics["test_acc"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--synthetic-n", type=int, default=2000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "method_cost_cpu.json"))
    args = ap.parse_args()
    cache = os.environ.get("UNLEARN_SWEEP_CACHE") or tempfile.mkdtemp(prefix="method-cost-")
    sets = [("digits", {"name": "digits"}, "small_cnn"),
            ("synthetic", {"name": "synthetic", "n_train": args.synthetic_n, "n_test": 500}, "small_cnn")]
    rows = []
    for label, data, model in sets:
        for method, params in METHODS.items():
            row = {"data": label, "model": model, **measure(data, model, method, params, args.epochs, cache)}
            print(f"{label:9s} {method:10s} bwd/step {row['backward_per_step']:.2f}  "
                  f"s/epoch median {row['s_per_epoch']:.3f} min {row['s_per_epoch_min']:.3f}  "
                  f"steps/epoch {row['steps_per_epoch']}", flush=True)
            rows.append(row)
    write_cpu_result(args.out, "s_per_epoch: median (and min) over epochs 2..N, so set-up and the first "
                     "epoch are excluded; the 2-core host was shared with other jobs, so compare minima",
                     rows)


if __name__ == "__main__":
    main()
