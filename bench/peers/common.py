"""What every contender of bench/peer_compare.py shares: the quickstart's space, sampler, objectives
and constraint (from the project's own spec), and the project's own single-trial function.

    spec = quickstart(n_trials=4)
    params = suggest(optuna_trial, spec)             # (method, params), as the sweep samples them
    out = run_one(spec, method, params)              # {"values", "constraint", "start", "end", ...}

`run_one` is `unlearning.tasks.run_trial_payload` on `spec.trial_config(method, params, seed 0)`:
the trial `unlearn-sweep trial` runs and a sweep's worker runs, with the oracles from the cache
($UNLEARN_SWEEP_CACHE). Its start and end (wall clock, `time.time()`) are what the comparison
calls a trial; the rest of a contender's wall is its fixed cost and its gaps between trials.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def quickstart(n_trials: int):
    from sweeps.spec import load_spec, read_spec_source

    return load_spec(read_spec_source("quickstart"), [("n_trials", n_trials)])


def sampler(spec, index: int):
    """The spec's sampler (TPE, multivariate, grouped, 5 start-up trials) for the `index`-th ask,
    seeded as the sweep seeds it (sweeps.samplers.make_sampler: one per ask, seeded from the spec's
    seed and the index), so that every contender runs the same configurations, and so the same
    trials: their walls then differ only by what each adds around the trials."""
    from sweeps.samplers import make_sampler

    return make_sampler(spec, index)


def suggest(trial, spec) -> tuple[str, dict[str, Any]]:
    from sweeps.space import suggest as sweep_suggest

    return sweep_suggest(trial, spec)


def constraint(spec, metrics: dict[str, float]) -> tuple[str, float]:
    """(key, value <= 0 when feasible) of the spec's one constraint (utility_drop <= 3)."""
    (c,) = spec.constraints
    ((key, v),) = c.values(float(metrics[c.metric])).items()
    return key, v


def run_one(spec, method: str, params: dict[str, Any]) -> dict[str, Any]:
    import torch

    from unlearning.tasks import run_trial_payload

    # cpus_per_trial torch threads, as a sweep's worker runs (Ray's OMP_NUM_THREADS, the inline
    # backend's set_num_threads): one thread per core oversubscribed on a busy machine made the
    # in-process trials 10 times slower
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))

    cfg = spec.trial_config(method, params, spec.seed_list()[0])
    start = time.time()
    res = run_trial_payload(cfg)
    end = time.time()
    metrics = res.get("metrics") or {}
    ok = res.get("state") == "COMPLETE"
    values = [float(metrics[o.metric]) for o in spec.objectives] if ok else None
    return {"method": method, "params": params, "state": res.get("state"), "values": values,
            "constraint": constraint(spec, metrics) if ok else None, "start": start, "end": end}


def write(out: str, contender: str, trials: list[dict[str, Any]], **extra) -> None:
    Path(out).write_text(json.dumps({"contender": contender, "trials": trials, **extra}, default=str))
