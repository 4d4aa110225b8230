"""The method table on Fashion-MNIST: every method tuned by a small search on seeds 0-2 (one sweep per
method, best = the smallest du_norm, DeepUnlearn's rule), its best configuration replicated on seeds
0-4, and the field's table (UA, RA, TA, MIA-efficacy, indiscernibility, avg. gap to Retrain, RTE:
mean ± std over the replicate seeds) written as JSON and markdown under bench/results/.

    python bench/fmnist_table.py                  # fmnist_cpu, the full table (see docs/benchmarks.md)
    python bench/fmnist_table.py --tiny           # the whole pipeline on digits, in about a minute
    python bench/fmnist_table.py --methods ft,neggrad_plus --trials 4
    python bench/fmnist_table.py --cost           # Original/Retrain training and per-run time of each method

The full table writes bench/results/<preset>_table.{json,md} (the committed reference); `--tiny` and
`--cost` write under runs/bench/ unless `--out` says otherwise, so a smoke run or a timing never
overwrites a committed result.
    python bench/fmnist_table.py --preset fmnist_deepunlearn --jobs 1 --replicate-seeds 0-9  # GPU, Ray

With `--jobs N` (default 2, this machine's cores) the Original/Retrain models of every seed are trained
first in N processes, then the rows are shared out over N processes. Within a process each sweep goes
through the command line, `unlearn-sweep run SPEC --out DIR`, in process (so the inline backend
evaluates each Original/Retrain model once for all the process's rows); then `unlearn-sweep replicate
DIR --top 1 --seeds ...` when the CLI has that verb. `--replicate sweep` (the automatic fallback
without it) reruns the chosen configuration as a one-point sweep over the replicate seeds instead. The
table is read back from the Parquet record (sweeps.results, sweeps.report.analysis).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# table row: (key, label, method, parameters fixed on top of the preset's space)
ROWS = [
    ("retrain", "Retrain", "retrain", {}), ("ft", "FT", "ft", {}), ("ga", "GA", "ga", {}),
    ("rl", "RL", "rl", {}), ("neggrad_plus", "NegGrad+", "neggrad_plus", {}),
    ("l1_sparse", "l1-sparse", "l1_sparse", {}), ("salun", "SalUn", "salun", {}),
    ("scrub", "SCRUB", "scrub", {}), ("bs", "BS", "bs", {}), ("ungrad", "UNGrad", "ungrad", {}),
    ("eupmu", "EUPMU", "eupmu", {}),
    ("eupmu_fast", "EUPMU-fast", "eupmu", {"estimate": "previous_batch", "normalise": True}),
    ("ltu", "LTU", "ltu", {}),
]
# (label, metric) in the table; mean ± std over the replicate seeds
COLUMNS = [("UA", "unlearn_acc"), ("RA", "retain_acc"), ("TA", "test_acc"), ("MIA-efficacy", "mia_efficacy"),
           ("Indisc.", "indiscernibility"), ("Avg. gap", "avg_gap"), ("RTE", "rte"), ("du_norm", "du_norm"),
           ("time (s)", "runtime_s")]
GAP_KEYS = ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy")


def seed_ints(text: str) -> list[int]:
    """'0,1,2' or '0-4' (the spec's seed grammar for ints) -> [0, 1, 2] / [0, 1, 2, 3, 4]."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def tiny(raw: dict) -> dict:
    """The same pipeline on digits (embedded, no package): 2-epoch oracles, 1-epoch methods."""
    raw = copy.deepcopy(raw)
    raw["base"]["data"] = {"name": "digits", "val_rule": "train_test_split", "val_fraction": 0.15,
                           "seed": 123}
    raw["base"]["train"]["epochs"] = 2
    raw["base"]["model"] = "lenet"
    raw["resources"] = {"backend": "inline", "cpus_per_trial": 1}
    for name, m in raw["methods"].items():
        if name != "retrain":
            m["space"] = {**m["space"], "epochs": 1}
    raw["methods"]["ltu"]["space"].update(retain_subset=100, mia_steps=20)
    return raw


def row_spec(raw: dict, key: str, method: str, fixed: dict, n_trials: int, seeds: list[int]) -> dict:
    """A one-method sweep spec from the preset: its space for `method` (with `fixed` on top)."""
    spec = copy.deepcopy(raw)
    space = {**raw["methods"][method]["space"], **fixed}
    searched = any(isinstance(d, dict) and d.get("type") != "fixed" or isinstance(d, list)
                   for d in space.values())
    spec.update(name=f"{raw['name']}-{key}", methods={method: {"space": space}},
                n_trials=n_trials if searched else 1, seeds=seeds)
    return spec


def cli(*argv: str) -> None:
    """`unlearn-sweep ARGV` in this process; a non-zero exit stops the bench."""
    from orchestrator.cli import main

    print(f"$ unlearn-sweep {' '.join(argv)}", flush=True)
    rc = main(list(argv))
    if rc != 0:
        raise SystemExit(f"unlearn-sweep {' '.join(argv)} exited with {rc}")


def has_replicate_verb() -> bool:
    from orchestrator.cli import build_parser

    sub = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return bool(sub) and "replicate" in sub[0].choices


def write_spec(spec: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def best_config(run_dir: Path, spec: dict):
    """(method, params) of the top configuration by the spec's `select` (du_norm), or None."""
    from sweeps.report.analysis import analyze, top_configs
    from sweeps.spec import load_spec

    top = top_configs(analyze(run_dir, load_spec(spec, check_data=False)), 1)
    return None if top.empty else (top.iloc[0]["method"], json.loads(top.iloc[0]["params_json"]))


def replicate(run_dir: Path, spec: dict, seeds: list[int], how: str) -> Path | None:
    """Rerun the best configuration of `run_dir` on `seeds`, with the SVC attack (MIA-efficacy) on;
    returns the directory holding the rows."""
    if how == "verb":
        cli("replicate", str(run_dir), "--top", "1", "--seeds", ",".join(map(str, seeds)),
            "--set", "base.eval.mia=true")
        return run_dir
    best = best_config(run_dir, spec)
    if best is None:
        return None
    method, params = best
    rep = copy.deepcopy(spec)  # a fixed space: every parameter the search set, at its chosen value
    rep.update(name=f"{spec['name']}-replicate", n_trials=1, seeds=seeds, sampler={"name": "random", "seed": 0},
               methods={method: {"space": {k: params[k] for k in spec["methods"][method]["space"]}}})
    rep["base"]["eval"] = {**rep["base"].get("eval", {}), "mia": True}
    out = run_dir.parent / f"{run_dir.name}-replicate"
    cli("run", str(write_spec(rep, out.with_suffix(".yaml"))), "--out", str(out))
    return out


def stats(values) -> dict:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    m = sum(v) / len(v)  # the sample std (ddof 1), as papers report it
    return {"mean": m, "std": (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else None,
            "n": len(v)}


def replicate_rows(rows_dir: Path, spec: dict, params: dict, seeds: list[int]):
    """COMPLETE rows of the chosen configuration on the replicate seeds (one per seed)."""
    from sweeps.results import read_results
    from sweeps.spec import load_spec

    want = {tuple(s[k] for k in ("split_seed", "train_seed", "unlearn_seed"))
            for s in load_spec(spec, check_data=False).seed_list(seeds)}
    runs = read_results(rows_dir).to_pandas()
    runs = runs[(runs["state"] == "COMPLETE") & (runs["params_json"] == json.dumps(params, sort_keys=True))]
    runs = runs[[t in want for t in zip(runs["split_seed"], runs["train_seed"], runs["unlearn_seed"])]]
    if "phase" in runs:  # a seed the search ran too: the replicate's row (it has the SVC attack)
        runs = runs.sort_values("phase", key=lambda p: p != "replicate", kind="stable")
    return runs.drop_duplicates(["split_seed", "train_seed", "unlearn_seed"])


def original_row(runs) -> dict:
    """The Original model, from the reference columns of any method's rows (one per train seed)."""
    refs = runs.drop_duplicates(["split_seed", "train_seed"])
    row = {m: stats(refs[f"original_{m}"]) for _, m in COLUMNS if f"original_{m}" in refs}
    gaps = [sum(abs(r[f"original_{k}"] - r[f"retrain_{k}"]) for k in GAP_KEYS) / len(GAP_KEYS)
            for _, r in refs.iterrows()]
    row["avg_gap"] = stats(gaps)
    return row


def fmt(s: dict | None, digits: int = 2) -> str:
    if not s or s["mean"] is None:
        return "—"
    return f"{s['mean']:.{digits}f}" + (f" ± {s['std']:.{digits}f}" if s["std"] is not None else "")


def add_separation(result: dict) -> None:
    """Each method row's avg. gap against the best row's, paired by seed, with the 95% t-interval
    and a rank that ties where the seeds cannot separate, and the under-searched flag (a row tuned
    worse than a method its objective contains): the tool's own, sweeps.report.analysis.separation
    and under_searched (docs/metrics.md). Retrain and Original are references, not ranked."""
    import pandas as pd

    from sweeps.report.analysis import CONTAINS, separation, under_searched

    rows = [r for r in result["rows"] if r.get("per_seed_avg_gap") and r["key"] not in ("retrain", "original")]
    values = {r["key"]: pd.Series([v for *_, v in r["per_seed_avg_gap"]], dtype=float,
                                  index=pd.MultiIndex.from_tuples([tuple(x[:3]) for x in r["per_seed_avg_gap"]]))
              for r in rows}
    sep = separation(values)
    contains = {r["key"]: tuple(x["key"] for x in rows if x["method"] in CONTAINS.get(r["method"], ()))
                for r in rows}
    flags = under_searched({k: float(v) for k, v in sep["mean"].items() if pd.notna(v)}, contains)
    for r in rows:
        x = sep.loc[r["key"]]
        num = lambda v: float(v) if pd.notna(v) else None  # noqa: E731 - JSON has no NaN
        r["separation"] = {"best": bool(x["best"]), "diff": num(x["diff"]), "lo": num(x["lo"]),
                           "hi": num(x["hi"]), "n_pairs": int(x["n_pairs"]), "separated": bool(x["separated"]),
                           "rank": int(x["rank"]), "tie": bool(x["tie"]),
                           "under_searched": flags.get(r["key"], "")}


def separation_cells(row: dict) -> list[str]:
    from sweeps.report.tables import rank_cell, separation_cell

    s = row.get("separation")
    if not s:
        return ["", ""]
    r = {"rank": s["rank"], "tie": s["tie"], "sep_best": s["best"], "sep_diff": s["diff"], "sep_lo": s["lo"],
         "sep_hi": s["hi"], "sep_n": s["n_pairs"], "under_searched": s["under_searched"]}
    r = {k: (math.nan if v is None else v) for k, v in r.items()}
    return [separation_cell(r), rank_cell(r)]


def markdown(result: dict) -> str:
    head = ["method", *[c for c, _ in COLUMNS], "Δ avg. gap vs best [95% CI]", "rank", "chosen parameters"]
    lines = [f"# {result['preset']}: the method table on {result.get('data', 'Fashion-MNIST')}\n",
             f"Command: `{result['command']}`  ",
             f"Machine: {result['machine']['cpu']} ({result['machine']['cpu_count']} cores), "
             f"torch {result['versions']['torch']}, code {result['versions']['git']}  ",
             f"Search: {result['protocol']['search']}; replicate: {result['protocol']['replicate']}; "
             f"selection: {result['protocol']['select']}. Metrics in percent, mean ± std over the "
             f"replicate seeds; Avg. gap per seed against the Retrain model of that seed; RTE = "
             f"t_Retrain / t_method; time = the unlearning procedure's seconds.\n",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        cells = [row["label"], *[fmt(row["metrics"].get(m)) for _, m in COLUMNS], *separation_cells(row),
                 ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in (row.get("searched") or {}).items()) or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\nΔ avg. gap vs best: paired by seed, the 95% Student-t interval of the per-seed differences; "
                 "rank: 1 + the rows it is worse than beyond that interval, `=` where the seeds cannot "
                 "separate (docs/metrics.md).")
    lines += [f"\n**Under-searched**: {r['label']}: {r['separation']['under_searched']}."
              for r in result["rows"] if (r.get("separation") or {}).get("under_searched")]
    lines.append(f"\nWall time: {result['wall_s'] / 60:.1f} min. Record: {result['run_root']}.\n")
    return "\n".join(lines)


def provenance(command: str) -> dict:
    import numpy
    import optuna
    import sklearn
    import torch

    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=False).stdout.strip() or "unknown"
    except OSError:
        git = "unknown"
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() \
        else platform.processor()
    return {"command": command,
            "machine": {"cpu": cpu, "cpu_count": os.cpu_count(), "node": platform.node(),
                        "load_avg_at_start": list(os.getloadavg())},
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": numpy.__version__, "sklearn": sklearn.__version__,
                         "optuna": optuna.__version__, "git": git}}


# -- the table -----------------------------------------------------------------------------------

def is_searched(d) -> bool:
    return isinstance(d, list) or isinstance(d, dict) and d.get("type") != "fixed"


def table_row(raw: dict, args, key: str, how: str) -> dict:
    """One row: the method's search sweep, its best configuration replicated, the stats over seeds
    (and, under "original", the Original model's, from the same runs' reference columns)."""
    _, label, method, fixed = next(r for r in ROWS if r[0] == key)
    t0, run_root = time.perf_counter(), Path(args.runs).resolve()
    spec = row_spec(raw, key, method, fixed, args.trials, seed_ints(args.search_seeds))
    run_dir = run_root / key
    cli("run", str(write_spec(spec, run_root / f"{key}.yaml")), "--out", str(run_dir),
        *(["--backend", args.backend] if args.backend else []))
    row = {"key": key, "label": label, "method": method, "metrics": {}, "searched": None}
    best = best_config(run_dir, spec)
    if best is not None:
        rep_seeds = seed_ints(args.replicate_seeds)
        runs = replicate_rows(replicate(run_dir, spec, rep_seeds, how), spec, best[1], rep_seeds)
        row.update(params=best[1], seeds=len(runs),
                   searched={k: best[1][k] for k, d in spec["methods"][method]["space"].items()
                             if is_searched(d)},
                   metrics={m: stats(runs[m]) for _, m in COLUMNS if m in runs},
                   # per seed, for the separation (each seed has its own Original and Retrain)
                   per_seed_avg_gap=[[int(a), int(b), int(c), float(v)] for a, b, c, v in
                                     zip(runs["split_seed"], runs["train_seed"], runs["unlearn_seed"],
                                         runs["avg_gap"]) if math.isfinite(float(v))],
                   original=original_row(runs) if len(runs) else None)
    row["wall_s"] = time.perf_counter() - t0
    return row


def forwarded(args) -> list[str]:
    """The options a child process of this bench needs to do its share the same way."""
    out = ["--jobs", "1", "--preset", args.preset, "--trials", str(args.trials), "--search-seeds", args.search_seeds,
           "--replicate-seeds", args.replicate_seeds, "--runs", str(Path(args.runs).resolve())]
    out += ["--tiny"] * args.tiny + [x for s in args.set for x in ("--set", s)]
    return out + (["--backend", args.backend] if args.backend else [])


def in_parallel(jobs: list[list[str]], logs: Path) -> None:
    """Run this script once per argument list, at the same time, one torch thread each."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = []
    for i, argv in enumerate(jobs):
        log = open(logs / f"job{i}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen([sys.executable, __file__, *argv], stdout=log,
                                       stderr=subprocess.STDOUT, env=env, cwd=ROOT), log, argv))
        print(f"started job {i}: {' '.join(argv)} (log {logs / f'job{i}.log'})", flush=True)
    failed = []
    for i, (proc, log, _argv) in enumerate(procs):
        proc.wait()
        log.close()
        if proc.returncode != 0:
            failed.append(f"job {i} exited {proc.returncode}: see {logs / f'job{i}.log'}")
    if failed:
        raise SystemExit("; ".join(failed))


def train_oracles(raw: dict, seeds: list[int]) -> None:
    """Train (or find cached) the Original and Retrain models of these seeds: a Retrain trial each."""
    from sweeps.spec import load_spec
    from unlearning.trial import load_trial_config, run_trial

    for s in load_spec({**raw, "seeds": seeds}, check_data=False).seed_list():
        r = run_trial(load_trial_config({**raw["base"], "method": "retrain", "seeds": s,
                                         "eval": {"mia": False}}))
        print(f"oracles of seeds {s}: {r.state} {r.error or ''} (Retrain trained in {r.runtime_s:.1f}s)",
              flush=True)


def table(raw: dict, args) -> dict:
    run_root = Path(args.runs).resolve()
    how = args.replicate if args.replicate != "auto" else ("verb" if has_replicate_verb() else "sweep")
    result = {**provenance(args.command), "preset": raw["name"], "data": data_title(raw, args),
              "run_root": str(run_root), "replicate_with": how,
              "jobs": args.jobs,
              "protocol": {"search": f"{args.trials} trial(s) per method on seeds {args.search_seeds} "
                                     f"({raw.get('sampler', {}).get('name', 'tpe')}, seed axes "
                                     f"{raw.get('seed_axes', ['unlearn'])})",
                           "replicate": f"the best configuration on seeds {args.replicate_seeds}",
                           "select": "smallest du_norm (mean over the search seeds)"}}
    keys = [k for k, *_ in ROWS if not args.methods or k in args.methods]
    t_all = time.perf_counter()
    if args.jobs > 1:  # oracles first (disjoint seeds per job), then the rows (disjoint methods)
        seeds = sorted(set(seed_ints(args.search_seeds)) | set(seed_ints(args.replicate_seeds)))
        in_parallel([[*forwarded(args), "--oracles", ",".join(map(str, seeds[i::args.jobs]))]
                     for i in range(min(args.jobs, len(seeds)))], run_root / "logs" / "oracles")
        result["oracles_wall_s"] = time.perf_counter() - t_all
        parts = [keys[i::args.jobs] for i in range(min(args.jobs, len(keys)))]
        in_parallel([[*forwarded(args), "--replicate", how, "--methods", ",".join(p),
                      "--out", str(run_root / f"part{i}")] for i, p in enumerate(parts)], run_root / "logs" / "rows")
        got = {r["key"]: r for i in range(len(parts))
               for r in json.loads((run_root / f"part{i}.json").read_text())["rows"]}
        first = [got["original"]] if "original" in got else []  # a part's own Original row
        result["rows"] = first + [got[k] for k in keys]
    else:
        rows = [table_row(raw, args, key, how) for key in keys]
        original = next((r["original"] for r in rows if r.get("original")), None)
        for r in rows:
            r.pop("original", None)
        result["rows"] = ([{"key": "original", "label": "Original", "method": None, "metrics": original,
                            "searched": None}] if original else []) + rows
    add_separation(result)
    result["wall_s"] = time.perf_counter() - t_all
    result["machine"]["load_avg_at_end"] = list(os.getloadavg())
    return result


# -- cost: what one run of each method takes here -----------------------------------------------

def cost(raw: dict, args) -> dict:
    """Train (or load) the seed-0 Original and Retrain, then run each method once at seed 0 (1 epoch,
    other searched parameters at their range's midpoint, the SVC attack on) and report the seconds of
    its unlearning and of the evaluation; then estimate the whole table's time from them."""
    import contextlib

    import torch

    from unlearning.data import load_dataset
    from unlearning.oracle import get_oracles
    from unlearning.splits import make_split
    from unlearning.trial import default_cache_dir, load_trial_config, run_trial

    torch.set_num_threads(args.threads)
    out = {**provenance(args.command), "preset": raw["name"], "threads": args.threads, "rows": []}
    base = {**raw["base"], "eval": {**raw["base"].get("eval", {}), "mia": True},
            "seeds": {"split_seed": 0, "train_seed": 0, "unlearn_seed": 0}}
    cfg = load_trial_config({**base, "method": "retrain"})
    ds = load_dataset(cfg.data)
    print(f"--cost: the seed-0 Original and Retrain ({cfg.train.epochs} epochs each unless cached), then one "
          f"run of each method at 1 epoch, {args.threads} torch thread(s)", flush=True)
    from orchestrator.verbs.trial import OracleLines

    original, retrained = get_oracles(
        ds, make_split(ds, cfg.split, 0), model_name=cfg.model, recipe=cfg.train, train_seed=0,
        device=torch.device("cpu"), autocast=contextlib.nullcontext,
        cache_dir=Path(cfg.cache_dir or default_cache_dir()), progress=OracleLines(sys.stdout))
    out["oracles"] = {"original_s": original.runtime_s, "retrain_s": retrained.runtime_s,
                      "epochs": cfg.train.epochs, "trained_now": not (original.cached or retrained.cached)}
    print(f"Original {original.runtime_s:.1f}s, Retrain {retrained.runtime_s:.1f}s of training", flush=True)
    for key, label, method, fixed in ROWS:
        if args.methods and key not in args.methods:
            continue
        space = {**raw["methods"][method]["space"], **fixed}
        params = {k: midpoint(d) for k, d in space.items()} | {"epochs": 1} if method != "retrain" else {}
        t0 = time.perf_counter()
        r = run_trial(load_trial_config({**base, "method": method, "params": params}))
        total = time.perf_counter() - t0
        row = {"key": key, "label": label, "state": r.state, "error": r.error, "params": params,
               "runtime_s": r.runtime_s, "total_s": total, "eval_s": total - r.runtime_s,
               "mia_s": r.metrics.get("mia_seconds"), "epochs_mean": epochs_mean(space)}
        if method == "retrain":
            row["runtime_s"], row["eval_s"] = 0.0, total  # served from the cache: only the evaluation
            row["note"] = "the first run also evaluates Original and Retrain (memoised after)"
        out["rows"].append(row)
        print(f"{label:11} {r.state:8} unlearning {row['runtime_s']:7.2f}s  total {total:7.2f}s", flush=True)
    out["estimate"] = e = estimate(out, raw, args)
    out["machine"]["load_avg_at_end"] = list(os.getloadavg())
    print(f"estimate for the whole table: {e['total_min']:.0f} min (oracles {e['oracles_s'] / 60:.1f} min, "
          f"runs {e['runs_s'] / 60:.1f} min, shared over {e['jobs']} process(es); assumes {e['assumes']})",
          flush=True)
    return out


def epochs_mean(space: dict) -> float:
    d = space.get("epochs", 1)
    return (d["low"] + d["high"]) / 2 if isinstance(d, dict) and "low" in d else float(midpoint(d))


def estimate(measured: dict, raw: dict, args) -> dict:
    """The table's time from one run per method: oracles for every train seed, each search run
    (without the SVC attack) and each replicate run (with it), shared out over `--jobs` processes
    (each of which evaluates the Original/Retrain models it meets once)."""
    rows = [r for r in measured["rows"] if r["key"] != "retrain"]
    ev = sorted(r["eval_s"] for r in rows)[len(rows) // 2] if rows else 0.0  # the median evaluation
    mia = sorted(r["mia_s"] or 0.0 for r in rows)[len(rows) // 2] if rows else 0.0
    search, rep = seed_ints(args.search_seeds), seed_ints(args.replicate_seeds)
    seeds = len(set(search) | set(rep))
    o = measured["oracles"]
    oracles = seeds * (o["original_s"] + o["retrain_s"])
    runs = sum(args.trials * len(search) * (r["runtime_s"] * r["epochs_mean"] + ev - mia)
               + len(rep) * (r["runtime_s"] * r["epochs_mean"] + ev) for r in rows)
    refs = 2 * seeds * 2 * ev  # Original and Retrain evaluated once without and once with the SVC
    return {"oracles_s": oracles, "runs_s": runs, "references_s": refs, "jobs": args.jobs,
            "total_min": ((oracles + runs) / args.jobs + refs) / 60,
            "assumes": f"{args.trials} trials x seeds {args.search_seeds}, replicate {args.replicate_seeds}, "
                       f"epochs at the middle of each space, the median evaluation ({ev:.1f}s, SVC {mia:.1f}s), "
                       f"{args.jobs} processes in parallel at this run's speed"}


def midpoint(d):
    """A representative value of one search dimension: the (geometric) middle of a range."""
    if not isinstance(d, dict):
        return d[0] if isinstance(d, list) else d
    if d.get("type") == "fixed":
        return d["value"]
    if d.get("type") == "categorical":
        return d["choices"][0]
    lo, hi = d["low"], d["high"]
    mid = math.sqrt(lo * hi) if d["type"].startswith("log") else (lo + hi) / 2
    return round(mid) if "int" in d["type"] else mid


def data_title(raw: dict, args) -> str:
    """The data set a table is on, for its title: `--tiny` runs on digits, not Fashion-MNIST."""
    name = raw["base"]["data"]["name"]
    return {"fashion_mnist": "Fashion-MNIST", "digits": "digits (scikit-learn)"}.get(name, name) + \
        (" (--tiny: 2-epoch oracles, 1-epoch methods)" if args.tiny else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="fmnist_cpu")
    ap.add_argument("--tiny", action="store_true", help="digits, 2-epoch oracles, 2 trials: a smoke run")
    ap.add_argument("--methods", type=lambda s: s.split(","), help="row keys, e.g. ft,neggrad_plus")
    ap.add_argument("--trials", type=int, help="search trials per method (default: the preset's n_trials)")
    ap.add_argument("--search-seeds", default=None, help="default 0,1,2 (tiny: 0,1)")
    ap.add_argument("--replicate-seeds", default=None, help="default 0-4 (tiny: 0-2)")
    ap.add_argument("--replicate", choices=["auto", "verb", "sweep"], default="auto",
                    help="verb: `unlearn-sweep replicate`; sweep: a one-point sweep over the seeds")
    ap.add_argument("--replicate-with-sweep", dest="replicate", action="store_const", const="sweep")
    ap.add_argument("--backend", choices=["inline", "ray"], help="override the preset's backend")
    ap.add_argument("--runs", help="where the sweeps' run directories go (default runs/bench-<preset>)")
    ap.add_argument("--out", help="result files without suffix (default bench/results/<preset>_table; "
                    "with --tiny or --cost runs/bench/<name>_table or _cost)")
    ap.add_argument("--jobs", type=int, default=2, help="processes, one torch thread each (default 2: "
                    "this 2-core machine); each evaluates its Original/Retrain models once")
    ap.add_argument("--oracles", metavar="SEEDS", help=argparse.SUPPRESS)  # a job: train these seeds' oracles
    ap.add_argument("--cost", action="store_true", help="time one run of every method instead")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for --cost")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                    help="override a preset field before splitting it per method (base.train.epochs=5)")
    args = ap.parse_args(argv)
    args.command = " ".join(["python", "bench/fmnist_table.py", *(sys.argv[1:] if argv is None else argv)])

    from orchestrator.verbs.common import parse_sets
    from sweeps.spec import read_spec_source, set_path_any

    raw = read_spec_source(args.preset)
    if args.tiny:
        raw = tiny(raw)
    for path, value in parse_sets(args.set):
        raw = set_path_any(raw, path, value)
    name = f"{raw['name']}{'_tiny' if args.tiny else ''}"
    args.trials = args.trials or (2 if args.tiny else raw.get("n_trials", 4))
    args.search_seeds = args.search_seeds or ("0,1" if args.tiny else "0,1,2")
    args.replicate_seeds = args.replicate_seeds or ("0-2" if args.tiny else "0-4")
    args.runs = args.runs or str(ROOT / "runs" / f"bench-{name}")
    if args.oracles:
        train_oracles(raw, seed_ints(args.oracles))
        return 0
    result = cost(raw, args) if args.cost else table(raw, args)
    # only the full table goes to the committed results by default; a smoke run or a timing does not
    where = ROOT / "runs" / "bench" if args.tiny or args.cost else ROOT / "bench" / "results"
    out = Path(args.out or where / f"{name}_{'cost' if args.cost else 'table'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    os.replace(tmp, out.with_suffix(".json"))
    if not args.cost:
        out.with_suffix(".md").write_text(markdown(result))
        print(markdown(result))
    print(f"wrote {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
