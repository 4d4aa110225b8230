"""The driver's own cost per trial: ask + sample + fingerprint + write Parquet (trial + history) +
tell (journal storage), over N no-op trials through the inline backend (the task returns a canned
result at once). Reports the median and p99 of the time between consecutive tells.

    .venv/bin/python bench/driver_overhead.py [--trials 1000] [--sampler random|tpe]

Writes bench/results/driver_overhead.json. Target: median under 20 ms.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.runner import Driver  # noqa: E402
from sweeps.spec import load_spec  # noqa: E402

CANNED = {"unlearn_acc": 5.0, "retain_acc": 99.0, "test_acc": 95.0, "mia_efficacy": 12.0,
          "forget_acc": 95.0, "val_acc": 94.0, "avg_gap": 1.0, "forget_gap": 1.0, "utility_drop": 0.5,
          "runtime_s": 0.0, "retain_examples_seen": 0.0}


def noop(payload, on_epoch=None):
    return {"state": "COMPLETE", "method": payload["method"], "params": payload["params"],
            "config": payload, "metrics": CANNED, "reference": {}, "history": [
                {"epoch": 0, "loss": 0.0, "lr": 0.01, "elapsed_s": 0.0}], "runtime_s": 0.0}


class TimedDriver(Driver):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.stamps: list[float] = []

    def _tell(self, ot):
        super()._tell(ot)
        self.stamps.append(time.perf_counter())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--sampler", default="random", choices=["random", "tpe"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "driver_overhead.json"))
    args = ap.parse_args()
    spec = load_spec({
        "name": "overhead", "base": {"data": {"name": "digits"}},
        "methods": {"ft": {"space": {"lr": {"type": "log-float", "low": 1e-4, "high": 1e-1},
                                     "epochs": {"type": "int", "low": 1, "high": 10}}},
                    "rl": {"space": {"lr": {"type": "log-float", "low": 1e-4, "high": 1e-1}}}},
        "objectives": [{"metric": "forget_gap"}, {"metric": "test_acc", "direction": "maximize"}],
        "constraints": [{"metric": "utility_drop", "max": 3}],
        "sampler": {"name": args.sampler, "seed": 0}, "n_trials": args.trials,
        "resources": {"backend": "inline"}, "tracking": {"wandb": {"mode": "disabled"}}})
    with tempfile.TemporaryDirectory() as tmp:
        d = TimedDriver(spec, Path(tmp), fn=noop, log=None)
        t0 = time.perf_counter()
        d.run()
        wall = time.perf_counter() - t0
    dt = np.diff(np.array(d.stamps)) * 1000.0
    res = {"trials": args.trials, "sampler": args.sampler, "storage": "journal file",
           "median_ms": round(float(np.median(dt)), 3), "p99_ms": round(float(np.percentile(dt, 99)), 3),
           "mean_ms": round(float(dt.mean()), 3), "wall_s": round(wall, 2),
           "target_median_ms": 20.0, "python": platform.python_version(), "node": platform.node(),
           "note": "per trial = time between consecutive tells with a no-op task (ask, sample, "
                   "fingerprint, Parquet trial + history, set_constraint, tell)"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
