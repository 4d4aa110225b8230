"""A sweep's plan before any compute is spent (`unlearn-sweep plan SPEC`, `run SPEC --dry-run`): the
resolved search space, configurations x seeds = runs, the Original and Retrain models to train (and
which the oracle cache already holds), and a time estimate. Nothing is started (no Ray, no driver)
and nothing is written: the run directory, the study and the oracle cache stay as they are.

The estimate comes from the record when the run directory has complete runs (their median
`total_s`), else from a short probe in this process: one epoch of the Original's training and one
run of the first method (all its epochs, the spec's evaluation) on a two-epoch Original, in a
temporary cache deleted afterwards (the second epoch and the second run are timed: the first pay
start-up costs a sweep pays once). Both are this machine's speed: workers elsewhere (a GPU) differ.
"""
from __future__ import annotations

import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

from sweeps.spec import CategoricalDim, FixedDim, SweepSpec


def dim_text(d) -> str:
    if isinstance(d, FixedDim):
        return f"= {d.value!r}"
    if isinstance(d, CategoricalDim):
        return "in {" + ", ".join(map(repr, d.choices)) + "}"
    step = f", step {d.step:g}" if getattr(d, "step", None) else ""
    return f"{d.type} [{d.low:g}, {d.high:g}{step}]"


def midpoint(d) -> Any:
    """A representative value of a dimension: its (geometric) middle, the first choice, the value."""
    if isinstance(d, FixedDim):
        return d.value
    if isinstance(d, CategoricalDim):
        return d.choices[0]
    mid = math.sqrt(d.low * d.high) if d.type.startswith("log") else (d.low + d.high) / 2
    return int(round(mid)) if "int" in d.type else float(mid)


def slots(spec: SweepSpec) -> tuple[int, str]:
    """(trials at once, how that was decided): max_concurrent, else what the backend offers here."""
    r = spec.resources
    if r.max_concurrent:
        return r.max_concurrent, f"max_concurrent {r.max_concurrent}"
    if r.backend == "inline":
        return 1, "inline: one at a time"
    if r.address:
        return 1, "a Ray cluster (its size is unknown here: the estimate is per slot)"
    n = max(1, int((os.cpu_count() or 1) // r.cpus_per_trial))
    return n, f"embedded Ray: {os.cpu_count()} CPU(s) / {r.cpus_per_trial:g} per trial"


def oracle_needs(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every Original and Retrain the seeds need: kind, seeds, cache key, whether the cache has it."""
    from unlearning.data import load_dataset
    from unlearning.oracle import cache_key, oracle_parts
    from unlearning.splits import make_split
    from unlearning.trial import default_cache_dir, load_trial_config

    method = next(iter(spec.methods))
    out: list[dict[str, Any]] = []
    seen: set[str | tuple[str, str, str]] = set()  # cache keys, and ("file", kind, path) of given ones
    ds = None
    for seeds in spec.seed_list():
        cfg = load_trial_config(spec.trial_config(method, {}, seeds))
        ds = ds or load_dataset(cfg.data, "cpu")
        split = make_split(ds, cfg.split, cfg.seeds.split_seed)
        cache = Path(cfg.cache_dir or default_cache_dir()).expanduser()
        for kind in ("original", "retrain") if cfg.retrain else ("original",):
            given = getattr(cfg.checkpoints, kind, None) if cfg.checkpoints is not None else None
            if given is not None:  # a released model: installed by the trial, never trained
                if ("file", kind, str(given.path)) not in seen:
                    seen.add(("file", kind, str(given.path)))
                    out.append({"kind": kind, "train_seed": cfg.seeds.train_seed, "split_seed": cfg.seeds.split_seed,
                                "examples": 0, "epochs": 0, "cache": str(cache), "cached": True,
                                "checkpoint": str(given.path)})
                continue
            key, idx = oracle_parts(kind, ds, split, model_name=cfg.model, recipe=cfg.train,
                                    train_seed=cfg.seeds.train_seed)
            k = cache_key(key)
            if k in seen:
                continue
            seen.add(k)
            out.append({"kind": kind, "train_seed": cfg.seeds.train_seed, "split_seed": cfg.seeds.split_seed,
                        "examples": int(len(idx)), "epochs": cfg.train.epochs, "cache": str(cache),
                        "cached": (cache / f"{k}.pt").is_file()})
    return out


class Probe(TypedDict):
    oracle_epoch_s_per_example: float
    run_s: float
    method: str  # the method timed
    state: str  # its run's state


def probe(spec: SweepSpec) -> Probe:
    """Seconds per Original epoch per training example (its second epoch: the first pays one-time
    start-up costs) and of one run of the first method (its second run: a sweep's worker pays data
    loading, warm-up and the references' evaluation once), timed here on a two-epoch Original in a
    temporary cache (removed)."""
    import torch

    from unlearning.trial import load_trial_config, run_trial

    method = next(iter(spec.methods))
    params = {p: midpoint(d) for p, d in spec.methods[method].space.items()}
    tmp = tempfile.mkdtemp(prefix="unlearn-sweep-plan-")
    marks: dict[str, list[float]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_trial)))  # as a worker runs a trial
    try:
        raw = spec.trial_config(method, params, spec.seed_list()[0])
        raw["train"] = {**raw.get("train", {}), "epochs": 2}
        raw["cache_dir"] = tmp
        cfg = load_trial_config(raw)

        def heard(kind, ev):
            if ev["event"] == "train":
                marks[kind] = [ev["examples"]]
            elif ev["event"] == "epoch":
                marks[kind].append(time.perf_counter())

        run_trial(cfg, on_oracle=heard)  # trains the two-epoch oracles, warms everything up
        t0 = time.perf_counter()
        r = run_trial(cfg)
        run_s = time.perf_counter() - t0
        orig = marks.get("original", [])
        per_example = (orig[2] - orig[1]) / orig[0] if len(orig) > 2 else math.nan
        return {"oracle_epoch_s_per_example": per_example, "run_s": run_s, "method": method, "state": r.state}
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(tmp, ignore_errors=True)


def make_plan(spec: SweepSpec, run_dir: Path, *, do_probe: bool = True) -> dict[str, Any]:
    """Everything `plan` prints, as data (see the module docstring)."""
    from sweeps.results import read_results
    from sweeps.space import grid_size

    seeds = spec.seed_list()
    runs = read_results(run_dir).to_pandas() if (run_dir / "trials").is_dir() else None
    done = 0 if runs is None else int((runs["state"] == "COMPLETE").sum())
    trials_done = 0
    if runs is not None:  # trials of the search (a record from before `replicate` has no phase)
        search = runs[runs["phase"].fillna("search") == "search"] if "phase" in runs else runs
        trials_done = int(search["trial_number"].nunique())
    configs = spec.n_trials if spec.sampler.name != "grid" else min(spec.n_trials, grid_size(spec))
    to_run = max(configs - trials_done, 0) * len(seeds)
    oracles = oracle_needs(spec)
    n_slots, why = slots(spec)
    est: dict[str, Any] = {"source": None}
    if runs is not None and done:
        ok = runs[(runs["state"] == "COMPLETE") & runs["total_s"].notna()]
        est.update(source=f"the record ({len(ok)} complete run(s) in {run_dir})",
                   run_s=float(statistics.median(ok["total_s"])))
    missing = [o for o in oracles if not o["cached"]]
    if do_probe and (est["source"] is None or missing):
        p = probe(spec)
        if est["source"] is None:
            est.update(source=f"a probe here (an epoch of the Original, a {p['method']} run)", run_s=p["run_s"])
        est["oracle_s"] = [p["oracle_epoch_s_per_example"] * o["examples"] * o["epochs"] for o in missing]
    if "run_s" in est:
        oracle_s = est.get("oracle_s", [])
        # the oracles train side by side (one per slot), then the runs fill the slots
        oracle_wall = sum(oracle_s) / min(n_slots, max(len(oracle_s), 1)) if oracle_s else 0.0
        est["total_s"] = oracle_wall + to_run * est["run_s"] / n_slots
        est["oracle_wall_s"] = oracle_wall
    return {"name": spec.name, "run_dir": str(run_dir), "exists": (run_dir / "spec.yaml").is_file(),
            "sampler": spec.sampler.model_dump(), "methods": {m: {p: dim_text(d) for p, d in ms.space.items()}
                                                            for m, ms in spec.methods.items()},
            "objectives": [f"{o.direction} {o.metric}" for o in spec.objectives],
            "constraints": [c.metric + (f" <= {c.max:g}" if c.max is not None else "")
                            + (f" >= {c.min:g}" if c.min is not None else "") for c in spec.constraints],
            "selection_rule": spec.selection_rule, "n_trials": spec.n_trials, "configurations": configs,
            "seeds": seeds, "runs": configs * len(seeds),
            "race": spec.race.model_dump() if spec.race is not None and len(seeds) > spec.race.seeds else None,
            "runs_on_record": done, "runs_to_do": to_run,
            "oracles": oracles, "slots": n_slots, "slots_why": why, "backend": spec.resources.backend,
            "estimate": est}


def plan_text(p: dict[str, Any]) -> str:
    from sweeps.spec import TPE_STARTUP_TRIALS

    s = p["sampler"]
    startup = s["options"].get("n_startup_trials", TPE_STARTUP_TRIALS) if s["name"] == "tpe" else None
    lines = [f"plan of sweep {p['name']} -> {p['run_dir']}"
             + (" (exists: this continues it)" if p["exists"] else " (new)"),
             f"search: {s['name']}, seed {s['seed']}"
             + (f", the first {startup} configuration(s) at random" if startup is not None else "")
             + f"; objectives: {', '.join(p['objectives'])}"
             + (f"; constraints: {', '.join(p['constraints'])}" if p["constraints"] else "")
             + f"; selection rule: {p['selection_rule']}",
             "space: method in {" + ", ".join(p["methods"]) + "}"]
    for m, space in p["methods"].items():
        lines.append(f"  {m}: " + ("; ".join(f"{k} {v}" for k, v in space.items()) or "(defaults only)"))
    seeds = p["seeds"]
    lines.append(f"runs: {p['configurations']} configuration(s) x {len(seeds)} seed(s) = {p['runs']} run(s)"
                 + (f"; {p['runs_on_record']} complete on record, {p['runs_to_do']} to run" if p["exists"] else ""))
    if p.get("race"):
        lines.append(f"  at most: race is on, a configuration off beyond doubt after its first "
                     f"{p['race']['seeds']} seed(s) skips the others (margin {p['race']['margin']:g} seed spreads)")
    todo = [o for o in p["oracles"] if not o["cached"]]
    lines.append(f"oracles: {len(p['oracles'])} model(s) for the seeds, {len(todo)} to train "
                 f"({len(p['oracles']) - len(todo)} in the cache {p['oracles'][0]['cache'] if p['oracles'] else ''})")
    for o in p["oracles"]:
        lines.append(f"  {o['kind']:<8} train_seed {o['train_seed']}"
                     + (f" split_seed {o['split_seed']}" if o["kind"] == "retrain" else "")
                     + (f": the checkpoint {o['checkpoint']}" if o.get("checkpoint") else
                        f": {o['epochs']} epoch(s) on {o['examples']} examples, "
                        + ("cached" if o["cached"] else "to train")))
    lines.append(f"backend: {p['backend']}, {p['slots']} trial(s) at once ({p['slots_why']})")
    e = p["estimate"]
    if "total_s" in e:
        lines.append(f"estimate: about {_dur(e['total_s'])} ({_dur(e.get('oracle_wall_s', 0))} of oracle "
                     f"training, then {p['runs_to_do']} run(s) x {e['run_s']:.1f}s / {p['slots']} slot(s)), "
                     f"plus the backend's start and the report; from {e['source']}, this machine's speed")
    else:
        lines.append("estimate: none without a probe (drop --no-probe) or runs on record")
    lines.append("nothing was started or written")
    return "\n".join(lines)


def _dur(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"
