"""The driver's own cost per trial: ask + sample + fingerprint + write Parquet (trial + history) +
tell (journal storage), over N no-op trials through the inline backend (the task returns a canned
result at once), beside Optuna's own loop (`study.optimize`, the same sampler built the same way
per ask, the same space, a journal file, the constraint set on the trial) doing nothing but ask,
sample and tell. Reports the median, mean and p99 of the time between consecutive tells.

    .venv/bin/python bench/driver_overhead.py [--trials 1000] [--sampler random|tpe] [--out FILE]

Writes bench/results/driver_overhead_<sampler>.json (--out to change). Targets at 1,000 trials:
random at most 15 ms per trial; TPE within 5 ms of Optuna's own loop.
"""
from __future__ import annotations

import argparse
import json
import os
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


def _tells(stamps: list[float]):
    """Search._complete (where a configuration is told), timestamped into `stamps`."""
    from orchestrator import sources

    told = sources.Search._complete

    def timed(self, conf):
        told(self, conf)
        stamps.append(time.perf_counter())
    sources.Search._complete = timed


def optuna_loop(spec, trials: int, tmp: Path) -> list[float]:
    """Optuna's own loop on the same space and sampler: suggest, canned values, the constraint."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from sweeps.samplers import make_sampler
    from sweeps.space import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stamps: list[float] = []
    storage = JournalStorage(JournalFileBackend(str(tmp / "peer.journal")))
    study = optuna.create_study(storage=storage, sampler=make_sampler(spec, 0),
                                directions=[o.direction for o in spec.objectives])

    def objective(trial):
        suggest(trial, spec)
        trial.set_constraint("utility_drop<=3", CANNED["utility_drop"] - 3.0)
        return [CANNED[o.metric] for o in spec.objectives]

    def after(study, _trial):
        stamps.append(time.perf_counter())
        study.sampler = make_sampler(spec, len(stamps))  # as the driver builds it per ask

    study.optimize(objective, n_trials=trials, callbacks=[after])
    return stamps


def figures(stamps: list[float]) -> dict:
    dt = np.diff(np.array(stamps)) * 1000.0
    return {"median_ms": round(float(np.median(dt)), 3), "mean_ms": round(float(dt.mean()), 3),
            "p99_ms": round(float(np.percentile(dt, 99)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--sampler", default="random", choices=["random", "tpe"])
    ap.add_argument("--out")
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
    stamps: list[float] = []
    _tells(stamps)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        Driver(spec, Path(tmp) / "run", fn=noop, log=None).run()
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        peer = optuna_loop(spec, args.trials, Path(tmp))
        peer_wall = time.perf_counter() - t0
    res = {"trials": args.trials, "sampler": args.sampler, "storage": "journal file",
           "unlearn_sweep": {**figures(stamps), "wall_s": round(wall, 2)},
           "optuna_loop": {**figures(peer), "wall_s": round(peer_wall, 2)},
           "load1_before": round(load, 2), "load1_after": round(os.getloadavg()[0], 2),
           "python": platform.python_version(), "node": platform.node(),
           "command": f"bench/driver_overhead.py --trials {args.trials} --sampler {args.sampler}",
           "note": "per trial = time between consecutive tells with a no-op task (ask, sample, "
                   "fingerprint, Parquet trial + history, set_constraint, tell); optuna_loop: "
                   "study.optimize on the same space and sampler, canned values"}
    out = Path(args.out or Path(__file__).parent / "results" / f"driver_overhead_{args.sampler}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
