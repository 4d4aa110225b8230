"""Which sampler finds the front for less: hypervolume against trials and against CPU-seconds for
Optuna's samplers that take constraints (TPE, NSGA-II, GP) and random search, each over several
sampler seeds, through the project's own sweep (`orchestrator.runner.run_sweep`, inline backend, one
trial at a time: exactly the search a user gets).

    python bench/sampler_bench.py --data digits                 # the quickstart: 32 trials x 5 seeds
    python bench/sampler_bench.py --data fmnist --trials 12     # fmnist_cpu, one method (eupmu)
    python bench/sampler_bench.py --samplers tpe,nsga2:population_size=8 --sampler-seeds 0-2
    python bench/sampler_bench.py --data digits --seeds 0-2 --arms plain,race --samplers tpe,random
    python bench/sampler_bench.py --summarize bench/results/sampler_bench_digits.json --fractions 0.99,0.995

Data sets. `digits`: the quickstart preset (its two-method space, objectives forget_gap and test_acc,
constraint utility_drop <= 3). `fmnist`: the fmnist_cpu preset (its four DeepUnlearn objectives; it
has no constraint) restricted to `--methods` (one sweep per method is how that preset is run). Both
on `--seeds` (default one seed per trial) and the preset's everything else.

Per sweep the JSON holds, after each trial (in trial order; a proposal already on record is not a
trial): the hypervolume of the feasible front, the process CPU-seconds since the sweep started (the
driver and the trial run in this process; CPU, not wall time, because the machine is shared), the
wall seconds, and at the end the front. The hypervolume's reference point is
`sweeps.report.units.default_reference` over every configuration of the run (all arms, samplers, seeds):
the worst end of each objective's natural range (digits: forget_gap 100, test_acc 0), and for an
objective without one (fmnist's du_* terms) the worst value seen plus 10% of the range, one point for
the whole run. An untimed warm-up sweep first trains the oracles (one cache per data set) and warms
the process (data, oracle evaluation), so no timed sweep pays for them.

`--arms` names the search strategies compared side by side in one run: `plain` (the sweep as it
is, `race: null`) and `race` (search seeds raced, the spec's `race` at its defaults; options as
`race:margin=2,min_complete=2`). Racing needs two or more seeds per trial (`--seeds 0-2`); a raced
configuration counts as a trial (it was proposed and paid for), never as a result. The summary per
arm and sampler: mean ± std (ddof 1) over sampler seeds of the
hypervolume after k trials, and of the CPU-seconds to reach a fraction of the best hypervolume seen
in the run (over the sweeps that reach it; how many did is given); the hypervolume reached within
a CPU budget (fractions of the plain arm's mean CPU-seconds per sweep, same sampler); and, paired
by sampler seed, the difference to random search (same arm) and to the plain arm (same sampler). Pairing is meaningful:
the driver seeds each ask from (sampler seed, index), so for one seed every sampler's random start
draws the same configurations.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.runner import run_sweep  # noqa: E402
from sweeps.report.analysis import analyze, analyze_runs  # noqa: E402
from sweeps.spec import SweepSpec, load_spec, read_spec_source  # noqa: E402
from sweeps.report.units import default_reference  # noqa: E402

DATA = {  # --data -> (preset, default methods: None = the preset's own space)
    "digits": ("quickstart", None),
    "fmnist": ("fmnist_cpu", ["eupmu"]),
}
ARMS = {"plain": None, "race": {}}  # arm -> the spec's `race` (options from `race:key=value,...`)
AT_TRIALS = (4, 8, 12, 16, 24, 32)
FRACTIONS = (0.9, 0.95, 0.98, 0.99)
AT_CPU = (0.25, 0.5, 0.75, 1.0)  # CPU budgets, as fractions of the plain arm's mean CPU per sweep


# -- one sweep, timed ------------------------------------------------------------------------------

class Clock:
    """A tracker (the driver's hook after each run lands) that reads the process's CPU time and the
    wall time when each run of a trial finishes; a trial's time is that of its last run."""

    def __init__(self):
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        self.number: dict[str, int] = {}
        self.at: dict[int, tuple[float, float]] = {}

    def start(self, key, number, params, config):
        self.number[key] = number

    def log(self, key, row):
        pass

    def finish(self, key, result):
        if key in self.number:
            self.at[self.number[key]] = (time.process_time() - self.cpu0, time.perf_counter() - self.wall0)

    def close(self):
        pass


def _options(text: str) -> tuple[str, dict[str, Any]]:
    """'name:key=value,...' -> (name, {key: JSON value})."""
    kind, _, opts = text.partition(":")
    return kind, {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in opts.split(",") if kv)}


def sweep_spec(raw: dict, sets: list, sampler: str, seed: int, n_trials: int, seeds: list[int],
               name: str, arm: str = "plain") -> SweepSpec:
    """The preset (with the --set overrides) and this sweep's sampler (`name`, or
    `name:key=value,...` for its options), seed and trial budget, and its arm's `race`, in process,
    one trial at a time, no tracking."""
    kind, options = _options(sampler)
    arm_kind, arm_options = _options(arm)
    race = None if ARMS[arm_kind] is None else {**ARMS[arm_kind], **arm_options}
    return load_spec(raw, [*sets, ("name", name), ("race", race),
                           ("sampler", {"name": kind, "seed": seed, "options": options}),
                           ("n_trials", n_trials), ("seeds", seeds),
                           ("resources", {"backend": "inline", "cpus_per_trial": 1, "max_concurrent": 1}),
                           ("tracking", {"wandb": {"mode": "disabled"}})])


def run_one(spec: SweepSpec, run_dir: Path, fn: Callable | None) -> dict[str, Any]:
    clock = Clock()
    out = run_sweep(spec, run_dir, tracker=clock, fn=fn, log=None)
    runs = analyze(run_dir, spec).runs
    numbers = sorted(int(n) for n in runs["trial_number"].unique())
    return {"runs": runs, "numbers": numbers, "clock": clock.at, "driver": out}


def trace(spec: SweepSpec, one: dict, ref: list[float]) -> dict[str, Any]:
    """Hypervolume, CPU and wall seconds after each trial; the final front."""
    runs, hv, cpu, wall, feasible = one["runs"], [], [], [], []
    a = None
    for n in one["numbers"]:
        a = analyze_runs(runs[runs["trial_number"] <= n], spec, ref)
        hv.append(a.hypervolume)
        row = a.configs[a.configs["trial_number"] == n]
        feasible.append(bool(row["feasible"].iloc[0]) if len(row) else False)
        c, w = one["clock"].get(n, (math.nan, math.nan))
        cpu.append(round(c, 3))
        wall.append(round(w, 3))
    objs = [o.metric for o in spec.objectives]
    front = [] if a is None else [
        {"trial": int(r["trial_number"]), "method": r["method"], "params": json.loads(r["params_json"]),
         **{m: float(r[m]) for m in objs}} for _, r in a.front.iterrows()]
    return {"trials": len(hv), "hypervolume": hv, "cpu_s": cpu, "wall_s": wall, "feasible": feasible,
            "front": front, "failed": one["driver"]["failed"], "duplicates": one["driver"]["duplicates"],
            "raced": one["driver"].get("raced", 0), "runs": int((one["runs"]["state"] == "COMPLETE").sum())}


def reference(spec: SweepSpec, records: list[dict]) -> tuple[list[float], list[bool]]:
    """`default_reference` over every feasible configuration of the run (one point for all sweeps)."""
    import numpy as np

    pts = []
    for one in records:
        c = analyze_runs(one["runs"], spec).configs
        c = c[c["feasible"]]
        pts += [[float(r[o.metric]) for o in spec.objectives] for _, r in c.iterrows()]
    values = np.asarray(pts, dtype=float).reshape(-1, len(spec.objectives))
    ref, from_data = default_reference(spec.objectives, values)
    return [float(x) for x in ref], from_data


# -- the summary -----------------------------------------------------------------------------------

def mean_std(xs: list[float]) -> dict[str, Any]:
    import numpy as np

    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return {"mean": float(np.mean(xs)) if xs else None,
            "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else None, "n": len(xs)}


def hv_within(s: dict, budget: float) -> float:
    """The sweep's hypervolume once the trials that ended within `budget` CPU-seconds are in."""
    return max([0.0] + [h for h, c in zip(s["hypervolume"], s["cpu_s"]) if c <= budget])


def summarize(sweeps: list[dict], at: list[int], fractions: list[float],
              at_cpu: tuple[float, ...] = AT_CPU) -> dict[str, Any]:
    best = max((max(s["hypervolume"], default=0.0) for s in sweeps), default=0.0)
    out: dict[str, Any] = {"best_hypervolume": best}
    plain_cpu = {smp: mean_std([s["cpu_s"][-1] for s in sweeps if s["arm"] == "plain" and s["sampler"] == smp
                                and s["cpu_s"]])["mean"] for smp in {s["sampler"] for s in sweeps}}
    for arm in dict.fromkeys(s["arm"] for s in sweeps):
        for sampler in dict.fromkeys(s["sampler"] for s in sweeps if s["arm"] == arm):
            ss = [s for s in sweeps if s["arm"] == arm and s["sampler"] == sampler]
            row: dict[str, Any] = {"sampler_seeds": [s["sampler_seed"] for s in ss]}
            row["hypervolume_at"] = {}
            for k in at:  # `none_feasible`: sweeps with no feasible configuration yet (hypervolume 0)
                hv = [s["hypervolume"][k - 1] for s in ss if len(s["hypervolume"]) >= k]
                row["hypervolume_at"][str(k)] = {**mean_std(hv), "none_feasible": sum(h == 0 for h in hv)}
            row["feasible_trials"] = mean_std([sum(s["feasible"]) for s in ss])
            row["cpu_s_to_fraction"] = {}
            for f in fractions:
                hit = [next((c for h, c in zip(s["hypervolume"], s["cpu_s"]) if h >= f * best), None)
                       for s in ss]
                trials = [next((i + 1 for i, h in enumerate(s["hypervolume"]) if h >= f * best), None)
                          for s in ss]
                reached = sum(h is not None for h in hit)
                row["cpu_s_to_fraction"][str(f)] = {**mean_std(hit), "reached": reached, "of": len(ss),
                                                    "trials": mean_std(trials)}
            if plain_cpu.get(sampler):
                row["hypervolume_at_cpu"] = {str(f): {"cpu_s": f * plain_cpu[sampler], **mean_std(
                    [hv_within(s, f * plain_cpu[sampler]) for s in ss])} for f in at_cpu}
            row["raced"] = mean_std([s.get("raced", 0) for s in ss])
            row["runs"] = mean_std([s["runs"] for s in ss if "runs" in s])
            row["final_hypervolume"] = mean_std([s["hypervolume"][-1] for s in ss if s["hypervolume"]])
            row["cpu_s_total"] = mean_std([s["cpu_s"][-1] for s in ss if s["cpu_s"]])
            row["cpu_s_per_trial"] = mean_std([s["cpu_s"][-1] / s["trials"] for s in ss if s["trials"]])
            for key, base in (("vs_random", (arm, "random")), ("vs_plain", ("plain", sampler))):
                if base != (arm, sampler):
                    row[key] = paired(ss, [s for s in sweeps if (s["arm"], s["sampler"]) == base], at)
            out.setdefault(arm, {})[sampler] = row
    return out


def paired(ss: list[dict], base: list[dict], at: list[int]) -> dict[str, Any] | None:
    """Hypervolume after k trials minus the baseline's, paired by sampler seed (every sampler's first
    configurations are the same random draws for one seed: the driver seeds each ask from (seed,
    index)), and the CPU-seconds of the whole sweep minus the baseline's."""
    by_seed = {b["sampler_seed"]: b for b in base}
    pairs = [(s, by_seed[s["sampler_seed"]]) for s in ss if s["sampler_seed"] in by_seed]
    if not pairs:
        return None
    out: dict[str, Any] = {"hypervolume_at": {}}
    for k in at:
        d = [s["hypervolume"][k - 1] - b["hypervolume"][k - 1] for s, b in pairs
             if len(s["hypervolume"]) >= k and len(b["hypervolume"]) >= k]
        out["hypervolume_at"][str(k)] = {**mean_std(d), "better": sum(x > 0 for x in d),
                                         "worse": sum(x < 0 for x in d)}
    out["cpu_s_total"] = mean_std([s["cpu_s"][-1] - b["cpu_s"][-1] for s, b in pairs
                                   if s["cpu_s"] and b["cpu_s"]])
    return out


def fmt(d: dict, digits: int = 1) -> str:
    if d["mean"] is None:
        return "—"
    return f"{d['mean']:.{digits}f}" + (f" ± {d['std']:.{digits}f}" if d["std"] is not None else "")


def markdown(doc: dict) -> str:
    s, summ = doc["setup"], doc["summary"]
    at = [str(k) for k in s["at_trials"] if k <= s["n_trials"]]
    lines = [f"# Sampler bench: {s['data']} ({s['preset']})", "",
             f"Command: `{doc['command']}`  ",
             *([f"Summary: `{doc['summarized']['command']}`  "] if doc.get("summarized") else []),
             f"Date: {doc['date']}; load average {doc['machine']['load_avg_start']} at the start, "
             f"{doc['machine']['load_avg_end']} at the end ({doc['machine']['cpus']} CPUs); "
             f"wall time {doc['wall_s'] / 60:.1f} min  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()) + "  ",
             f"Search: {s['n_trials']} trials per sweep, {len(s['sampler_seeds'])} sampler seeds "
             f"({', '.join(map(str, s['sampler_seeds']))}), seeds per trial {s['seeds']}, methods "
             f"{', '.join(s['methods'])}; objectives {', '.join(s['objectives'])}; constraints "
             f"{', '.join(s['constraints']) or 'none'}; hypervolume at {s['reference_point']} "
             f"(from data: {s['reference_from_data']}); best seen {summ['best_hypervolume']:.4g}.", "",
             "Hypervolume after k trials, mean ± std over sampler seeds (n each; [z]: z of them with "
             "no feasible configuration yet, hypervolume 0), feasible trials of all, CPU-seconds per trial:",
             "", "| arm | sampler | n | " + " | ".join(f"k={k}" for k in at)
             + " | feasible | CPU s / trial |",
             "|---|---|---|" + "---|" * len(at) + "---|---|"]
    for arm in s["arms"]:
        for name, row in summ.get(arm, {}).items():
            hv = row["hypervolume_at"]
            lines.append(f"| {arm} | {name} | {len(row['sampler_seeds'])} | " + " | ".join(
                fmt(hv[k]) + (f" [{hv[k]['none_feasible']}]" if hv[k].get("none_feasible") else "")
                for k in at) + f" | {fmt(row['feasible_trials'])} | {fmt(row['cpu_s_per_trial'], 2)} |")
    lines += ["", "CPU-seconds to reach a fraction of the best hypervolume seen, mean ± std over the "
              "sweeps that reach it (reached/of), and the trials it took:", "",
              "| arm | sampler | " + " | ".join(f"{f:g} × best" for f in s["fractions"]) + " |",
              "|---|---|" + "---|" * len(s["fractions"])]
    for arm in s["arms"]:
        for name, row in summ.get(arm, {}).items():
            cells = []
            for f in s["fractions"]:
                c = row["cpu_s_to_fraction"][str(f)]
                cells.append(f"{fmt(c, 0)} s ({c['reached']}/{c['of']}; {fmt(c['trials'], 1)} trials)"
                             if c["reached"] else f"— (0/{c['of']})")
            lines.append(f"| {arm} | {name} | " + " | ".join(cells) + " |")
    if any(row.get("hypervolume_at_cpu") for arm in s["arms"] for row in summ.get(arm, {}).values()):
        cpu_at = [str(f) for f in s.get("at_cpu", AT_CPU)]
        lines += ["", "Hypervolume within a CPU budget (a fraction of the plain arm's mean CPU-seconds "
                  "per sweep, same sampler), mean ± std over sampler seeds; runs that ran (a raced "
                  "configuration's first seed only) and configurations raced out, per sweep:", "",
                  "| arm | sampler | " + " | ".join(f"{f} × plain CPU" for f in cpu_at)
                  + " | CPU s / sweep | runs | raced |", "|---|---|" + "---|" * (len(cpu_at) + 3)]
        for arm in s["arms"]:
            for name, row in summ.get(arm, {}).items():
                hc = row.get("hypervolume_at_cpu") or {}
                lines.append(f"| {arm} | {name} | " + " | ".join(
                    f"{fmt(hc[f])} ({hc[f]['cpu_s']:.0f} s)" if f in hc else "—" for f in cpu_at)
                    + f" | {fmt(row['cpu_s_total'], 0)} | {fmt(row['runs'], 1)} | {fmt(row['raced'], 1)} |")
    rows = [(arm, name, row["vs_plain"]) for arm in s["arms"] for name, row in summ.get(arm, {}).items()
            if row.get("vs_plain")]
    if rows:
        lines += ["", "Paired by sampler seed: hypervolume minus the plain arm's (same sampler) after k "
                  "trials (seeds better / worse), and CPU-seconds per sweep minus the plain arm's:", "",
                  "| arm | sampler | " + " | ".join(f"k={k}" for k in at) + " | CPU s |",
                  "|---|---|" + "---|" * (len(at) + 1)]
        for arm, name, v in rows:
            lines.append(f"| {arm} | {name} | " + " | ".join(
                f"{fmt(v['hypervolume_at'][k])} ({v['hypervolume_at'][k]['better']}/"
                f"{v['hypervolume_at'][k]['worse']})" for k in at) + f" | {fmt(v['cpu_s_total'], 0)} |")
    rows = [(arm, name, row["vs_random"]) for arm in s["arms"] for name, row in summ.get(arm, {}).items()
            if row.get("vs_random")]
    if rows:
        lines += ["", "Paired by sampler seed: hypervolume minus random search's after k trials, mean ± "
                  "std over seeds (seeds better / worse):", "",
                  "| arm | sampler | " + " | ".join(f"k={k}" for k in at) + " |",
                  "|---|---|" + "---|" * len(at)]
        for arm, name, v in rows:
            lines.append(f"| {arm} | {name} | " + " | ".join(
                f"{fmt(v['hypervolume_at'][k])} ({v['hypervolume_at'][k]['better']}/"
                f"{v['hypervolume_at'][k]['worse']})" for k in at) + " |")
    return "\n".join(lines) + "\n"


# -- the run ---------------------------------------------------------------------------------------

def seed_ints(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def load_task(dotted: str | None) -> Callable | None:
    """`module:function`, a trial function with run_task's contract (tests pass a fake one)."""
    if not dotted:
        return None
    mod, _, fn = dotted.partition(":")
    return getattr(importlib.import_module(mod), fn)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=sorted(DATA), default="digits")
    ap.add_argument("--trials", type=int, default=32, help="trials per sweep")
    ap.add_argument("--sampler-seeds", default="0-4")
    ap.add_argument("--samplers", default="tpe,nsga2,gp,random",
                    help="comma-separated; options as name:key=value (e.g. nsga2:population_size=8)")
    ap.add_argument("--arms", default="plain",
                    help=f"comma-separated, of {', '.join(ARMS)}; options as race:margin=2,min_complete=2")
    ap.add_argument("--methods", default=None, help="restrict the preset's space to these methods")
    ap.add_argument("--seeds", default="0", help="seeds per trial (the spec's `seeds`)")
    ap.add_argument("--fractions", default=",".join(map(str, FRACTIONS)),
                    help="of the best hypervolume seen, for the CPU-seconds to reach them")
    ap.add_argument("--at", default=",".join(map(str, AT_TRIALS)), help="trial counts for the summary")
    ap.add_argument("--summarize", default=None, metavar="JSON",
                    help="recompute the summary and the markdown of a finished run (no sweep runs)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a spec override (YAML value), as the CLI's --set")
    ap.add_argument("--cache-dir", default=None, help="oracle cache (default: $UNLEARN_SWEEP_CACHE)")
    ap.add_argument("--work", default=None, help="where the sweeps' records go (default: a temp dir)")
    ap.add_argument("--task", default=None, help="module:function trial function (tests: a fake one)")
    ap.add_argument("--out", default=None, help="JSON (default bench/results/sampler_bench_<data>.json)")
    args = ap.parse_args(argv)
    command = " ".join(["python", "bench/sampler_bench.py", *(argv if argv is not None else sys.argv[1:])])
    fractions = [float(f) for f in args.fractions.split(",")]
    if args.summarize:
        doc = json.loads(Path(args.summarize).read_text())
        at = [k for k in seed_ints(args.at) if k <= doc["setup"]["n_trials"]] or [doc["setup"]["n_trials"]]
        doc["setup"].update(at_trials=at, fractions=fractions)
        doc["summary"] = summarize(doc["sweeps"], at, fractions)
        doc["summarized"] = {"command": command,
                             "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        return write(doc, Path(args.out or args.summarize))
    import yaml

    t_start = time.perf_counter()
    load0 = [round(x, 2) for x in os.getloadavg()]
    if args.cache_dir:
        os.environ["UNLEARN_SWEEP_CACHE"] = str(Path(args.cache_dir).resolve())
    os.environ.setdefault("WANDB_MODE", "disabled")
    preset, methods = DATA[args.data]
    raw = read_spec_source(preset)
    methods = args.methods.split(",") if args.methods else methods
    if methods:
        raw["methods"] = {m: raw["methods"][m] for m in methods}
    sets = [(k, yaml.safe_load(v)) for k, _, v in (kv.partition("=") for kv in args.set)]
    samplers = _split_samplers(args.samplers)
    arms = _split_samplers(args.arms)
    bad = [a for a in arms if _options(a)[0] not in ARMS]
    if bad:
        ap.error(f"--arms: unknown arm {bad[0]!r} (known: {', '.join(ARMS)})")
    sampler_seeds, seeds = seed_ints(args.sampler_seeds), seed_ints(args.seeds)
    fn = load_task(args.task)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix=f"sampler-bench-{args.data}-"))

    # untimed warm-up: trains the oracles into the cache, loads the data, evaluates the oracles
    t0 = time.process_time()
    warm = sweep_spec(raw, sets, "random", 0, 1, seeds, "warmup")
    run_sweep(warm, work / "warmup", fn=fn, log=None)
    warmup_cpu = time.process_time() - t0
    print(f"warm-up: {warmup_cpu:.1f} CPU s", flush=True)

    records = []
    for seed in sampler_seeds:  # seed-major: a drift in the machine's load touches every sampler alike
        for arm in arms:
            for sampler in samplers:
                name = "-".join(x.replace(':', '-').replace('=', '').replace(',', '-').replace('.', '')
                                for x in (arm, sampler)) + f"-s{seed}"
                spec = sweep_spec(raw, sets, sampler, seed, args.trials, seeds, name, arm)
                one = run_one(spec, work / name, fn)
                records.append({"arm": arm, "sampler": sampler, "sampler_seed": seed, "spec": spec, **one})
                last = one["clock"].get(one["numbers"][-1], (math.nan,))[0] if one["numbers"] else math.nan
                print(f"{name}: {len(one['numbers'])} trials, {last:.1f} CPU s", flush=True)

    spec0 = records[0]["spec"]
    ref, from_data = reference(spec0, records)
    sweeps = [{"arm": r["arm"], "sampler": r["sampler"], "sampler_seed": r["sampler_seed"],
               **trace(r["spec"], r, ref)} for r in records]
    at = [k for k in seed_ints(args.at) if k <= args.trials] or [args.trials]
    import optuna
    import torch

    doc = {
        "bench": "sampler_bench", "data": args.data,
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_start": load0,
                    "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "optuna": optuna.__version__},
        "wall_s": round(time.perf_counter() - t_start, 1),
        "setup": {"data": args.data, "preset": preset, "methods": list(spec0.methods),
                  "objectives": [f"{o.metric} {o.direction}" for o in spec0.objectives],
                  "constraints": [f"{c.metric} {'<= ' + format(c.max, 'g') if c.max is not None else ''}"
                                  f"{'>= ' + format(c.min, 'g') if c.min is not None else ''}".strip()
                                  for c in spec0.constraints],
                  "n_trials": args.trials, "seeds": seeds, "sampler_seeds": sampler_seeds,
                  "samplers": samplers, "arms": arms, "overrides": args.set, "task": args.task,
                  "reference_point": ref, "reference_from_data": from_data, "at_trials": at,
                  "fractions": fractions, "warmup_cpu_s": round(warmup_cpu, 1),
                  "clock": "process CPU time (time.process_time) since run_sweep was called, read when "
                           "each trial's last run lands; the driver, the sampler and the trial all run "
                           "in this process"},
        "summary": summarize(sweeps, at, fractions),
        "sweeps": sweeps,
    }
    default = ROOT / "bench" / "results" / f"sampler_bench_{args.data}.json"
    return write(doc, Path(args.out) if args.out else default)


def write(doc: dict, out: Path) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return doc


def _split_samplers(text: str) -> list[str]:
    """'tpe,nsga2:population_size=8,mutation_prob=0.1,gp' -> ['tpe', 'nsga2:population_size=8,
    mutation_prob=0.1', 'gp']: an item with '=' but no ':' continues the previous sampler's options."""
    out: list[str] = []
    for part in (p for p in text.split(",") if p):
        if out and "=" in part and ":" not in part:
            out[-1] += "," + part
        else:
            out.append(part)
    return out


if __name__ == "__main__":
    main()
