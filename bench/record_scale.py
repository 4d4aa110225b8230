"""The record at scale: `status` and `analyze` (and optionally `resume` to its first submitted run) on
a run directory of N trials, timed as subprocesses (wall time, CPU time, peak RSS, `uptime` beside
each figure).

The run directory is built directly, in one process, with the project's own writers and Optuna's
public API, never the driver (whose ~70 ms per trial put 100,000 trials out of reach):

  - spec.yaml and run.json as the driver writes them (`new_run_identity`, `spec_fingerprint`,
    `write_identity`), from the quickstart's spec (EUPMU and LTU, two objectives, one constraint);
  - the Optuna journal through `sweeps.study.open_study` on the run's own `RunJournal`: each trial
    is created by the storage (`create_new_trial`, what `study.ask` does, without its scan for a
    waiting trial), sampled by the project's `sweeps.space.suggest` on an `optuna.Trial` with
    Optuna's RandomSampler, given the driver's user attributes and constraints, and told its
    objectives' means with `study.tell`; appended in batches (`sweeps.journal.batch`), which gives
    the same file as one append per call;
  - the Parquet rows by `sweeps.results.trial_row` / `history_rows` from an instant fake result,
    fingerprinted by `sweeps.fingerprint.fingerprint`, written in one of three states:

      compacted    trials/compacted.parquet and history/compacted.parquet, written as
                   `sweeps.results.compact` writes them (`write_atomic`, the same schema): what a
                   finished sweep leaves;
      killed       what a sweep killed mid-way leaves at worst (the driver merges its one-run files
                   into a part every COMPACT_EVERY runs, and the parts into the compacted file once
                   PARTS_MAX exist): the compacted file, PARTS_MAX - 1 parts of COMPACT_EVERY runs
                   and COMPACT_EVERY - 1 one-run files;
      uncompacted  every run in its own one-run file (`sweeps.results.write_trial`): a record whose
                   compaction never ran (written by a version before the parts), the legacy worst case.

    .venv/bin/python bench/record_scale.py --trials 1000,10000,100000 [--states compacted,killed,uncompacted]
        [--repeat 2] [--resume] [--again] [--out bench/results/record_scale.json]
    .venv/bin/python bench/record_scale.py --build DIR --trials 50 --states uncompacted   # build only

Each command runs on a fresh copy of the record, whose new inodes leave behind any answer kept beside
it (sweeps/answer_cache.py): the first command computes. --again also times the same command a second
time on the record the first left (rows "<verb> again").

Prints one line per measurement and, with --out, writes the JSON (machine, versions, rows).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
VENV = ROOT / ".venv" / "bin"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BATCH = 500  # trials per journal append while building


# -- the fake result: instant, metrics a smooth function of the parameters plus hashed noise ------

REFERENCE = {"original": {"unlearn_acc": 0.4, "retain_acc": 100.0, "test_acc": 97.0, "mia_efficacy": 1.0,
                          "forget_acc": 99.6, "val_acc": 96.5, "indiscernibility": 0.0},
             "retrain": {"unlearn_acc": 3.2, "retain_acc": 100.0, "test_acc": 96.4, "mia_efficacy": 9.0,
                         "forget_acc": 96.8, "val_acc": 96.0, "indiscernibility": 50.0}}


def fake_result(config: dict[str, Any]) -> dict[str, Any]:
    """A TrialResult dict as `run_trial_payload` returns it, computed in microseconds."""
    p, seeds = dict(config.get("params", {})), config.get("seeds", {})
    h = hashlib.sha256(json.dumps([p, seeds], sort_keys=True).encode()).digest()
    noise = [b / 255.0 - 0.5 for b in h[:8]]
    lr, eps = float(p.get("lr", 0.01)), float(p.get("epsilon", 0.0))
    ua = 1 + 250 * lr + 4 * eps + noise[0]
    ta = 97 - 120 * lr - 3 * abs(eps) + noise[1]
    mia = 2 + 300 * lr + 2 * noise[2]
    m = {"unlearn_acc": ua, "retain_acc": 99.8 - 40 * lr + noise[3] / 5, "test_acc": ta, "mia_efficacy": mia,
         "forget_acc": 100 - ua, "val_acc": ta - 0.5 + noise[4], "utility_drop": 97 - ta,
         "forget_gap": (abs(ua - 3.2) + abs(mia - 9.0)) / 2, "retain_examples_seen": 1000.0,
         "mia_seconds": 0.05, "runtime_s": 0.4 + noise[5] / 10, "rte": 0.4 + noise[5] / 10}
    m["avg_gap"] = (abs(ua - 3.2) + abs(m["retain_acc"] - 100) + abs(ta - 96.4) + abs(mia - 9)) / 4
    history = [{"epoch": e, "loss": 1.0 / (e + 1) + lr, "lr": lr, "elapsed_s": 0.1 * (e + 1), "steps": 12}
               for e in range(int(p.get("epochs", 3)))]
    return {"state": "COMPLETE", "error": None, "method": config["method"], "params": p, "config": config,
            "metrics": m, "reference": REFERENCE, "history": history, "step_history": [],
            "runtime_s": m["runtime_s"], "total_s": 1.2, "device": "cpu", "device_name": "cpu",
            "peak_mem_bytes": 0, "node": platform.node(), "code_version": "bench",
            "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:00:01+00:00"}


def bench_spec(n: int, seeds: int):
    """The quickstart's spec, n trials on `seeds` seeds, inline backend, no race (every seed runs)."""
    import yaml

    from sweeps.spec import load_spec

    raw = yaml.safe_load((ROOT / "sweeps" / "presets" / "quickstart.yaml").read_text())
    raw.pop("race", None)
    raw.update(name="scale", n_trials=n, seeds=list(range(seeds)),
               resources={"backend": "inline", "cpus_per_trial": 1, "max_concurrent": 1},
               tracking={"wandb": {"mode": "disabled"}})
    return load_spec(raw)


# -- the builder -------------------------------------------------------------------------------------

def build(run_dir: Path, n: int, *, seeds: int = 1, state: str = "compacted", seed: int = 0) -> dict[str, int]:
    """A finished sweep of `n` trials on `seeds` seeds in the new folder `run_dir` (module docstring),
    its Parquet in `state` (compacted | uncompacted). Returns {"trials": n, "runs": rows written}."""
    import math

    import optuna
    import pyarrow as pa

    from sweeps import results as R
    from sweeps.fingerprint import fingerprint
    from sweeps.journal import save_fold
    from sweeps.run_journal import batch, journal_storage
    from sweeps.rundir import inputs_identity, new_run_identity, write_identity
    from sweeps.space import suggest
    from sweeps.spec import load_spec, spec_fingerprint
    from sweeps.study import open_study
    from unlearning.config import dump_yaml, load_yaml_text
    from unlearning.redact import scrub

    if state not in ("compacted", "killed", "uncompacted"):
        raise ValueError(f"state: compacted, killed or uncompacted, not {state!r}")
    loose = (R.COMPACT_EVERY - 1) // seeds if state == "killed" else 0  # trials left in one-run files
    in_parts = (R.PARTS_MAX - 1) * R.COMPACT_EVERY if state == "killed" else 0
    spec = bench_spec(n, seeds)
    run_dir.mkdir(parents=True)
    # run.json and spec.yaml as the driver's _open_study writes them
    text = dump_yaml(scrub(spec.dump()))
    ident = {**new_run_identity(spec), **inputs_identity(spec)}
    write_identity(run_dir, {**ident, "spec_fingerprint": spec_fingerprint(load_spec(load_yaml_text(text),
                                                                                      read_only=True))})
    (run_dir / "spec.yaml").write_text(text)

    storage = journal_storage(run_dir / "study.journal")
    study = open_study(spec, run_dir, ident["study_name"], storage=storage)
    study.sampler = optuna.samplers.RandomSampler(seed=seed)
    study_id = storage.get_study_id_from_name(ident["study_name"])
    schema = R.trial_schema(spec)
    trial_rows: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    for start in range(0, n, BATCH):
        with batch(study):
            for number in range(start, min(n, start + BATCH)):
                trial = optuna.Trial(study, storage.create_new_trial(study_id))
                method, params = suggest(trial, spec)
                rows = []
                for i, s in enumerate(spec.seed_list()):
                    fp, cfg = fingerprint(spec.trial_config(method, params, s))
                    result = fake_result(cfg)
                    row = scrub(R.trial_row(spec=spec, number=number, fp=fp, config=cfg, seed_index=i,
                                            result=result, node=result["node"], started_at=result["started_at"],
                                            ended_at=R.now_iso(), seeds_in_trial=seeds, run_id=ident["run_id"]))
                    hist = R.history_rows(spec, number, fp, method, result)
                    if state == "uncompacted" or number >= n - loose:
                        R.write_trial(run_dir, row, hist, schema)
                    else:
                        trial_rows.append({k: row.get(k) for k in schema.names})
                        history += hist
                    rows.append(row)
                trial.set_user_attr("fingerprints", [r["fingerprint"] for r in rows])
                trial.set_user_attr("run_id", ident["run_id"])
                mean = lambda metric, rows=rows: sum(r[metric] for r in rows) / len(rows)  # noqa: E731
                feasible = True
                for c in spec.constraints:  # as orchestrator/sources.py's _complete tells a trial
                    for key, v in c.values(mean(c.metric)).items():
                        v = v if math.isfinite(v) else 1e9
                        trial.set_constraint(key, v)
                        feasible &= v <= 0
                        trial.set_user_attr(f"constraint: {key}", v)
                if spec.constraints:
                    trial.set_user_attr("feasible", bool(feasible))
                study.tell(trial, [mean(o.metric) for o in spec.objectives])
        if state == "killed" and min(n, start + BATCH) <= n - in_parts - loose:
            save_fold(run_dir / "study.journal")  # the driver's last full compaction before the kill
    if state == "compacted":
        save_fold(run_dir / "study.journal")  # as the driver leaves it at the end of a sweep
    if state != "uncompacted":
        runs = [r["trial_number"] for r in trial_rows]
        start = max(0, len(trial_rows) - in_parts)  # the rows before the parts: the compacted file
        k_every = R.COMPACT_EVERY
        cuts = [(R.COMPACTED, 0, start)] + [(f"{R.PART}{k + 1:06d}.parquet", start + k * k_every,
                                              start + (k + 1) * k_every)
                                             for k in range((len(trial_rows) - start) // k_every)]
        for name, lo, hi in cuts:
            numbers = set(runs[lo:hi])
            R.write_atomic(pa.Table.from_pylist(trial_rows[lo:hi], schema=schema), run_dir / "trials" / name)
            R.write_atomic(pa.Table.from_pylist([h for h in history if h["trial_number"] in numbers],
                                                schema=R.HISTORY_SCHEMA), run_dir / "history" / name)
    return {"trials": n, "runs": n * seeds}


# -- the parent: build, time ---------------------------------------------------------------------------

def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
            "UNLEARN_SWEEP_RAY_DASHBOARD": "0"}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed_run(cmd: list[str], mark: Path | None = None) -> dict[str, Any]:
    """Wall time, CPU time and peak RSS of one subprocess (its own rusage, from wait4)."""
    if mark is not None:
        mark.unlink(missing_ok=True)
    load = uptime()
    t_launch = time.time()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.stdout is not None
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    row: dict[str, Any] = {"wall_s": round(wall, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
                           "rss_mb": round(ru.ru_maxrss / 1024, 1), "rc": rc, "uptime": load,
                           "load_avg_1m": os.getloadavg()[0]}
    if mark is not None:
        if not mark.is_file():
            raise RuntimeError(f"{cmd}: no submit seen (rc {rc}):\n{out.decode()[-3000:]}")
        row["to_submit_s"] = round(json.loads(mark.read_text())["t_submit"] - t_launch, 3)
    elif rc != 0:
        raise RuntimeError(f"{cmd}: rc {rc}:\n{out.decode()[-3000:]}")
    return row


def _resume(mark: str, argv: list[str]) -> int:
    """`unlearn-sweep resume ...`, stopped at the backend's first submit of a run or an oracle (as
    Ctrl-C would stop it); the moment goes to the file `mark`."""
    from orchestrator import cli, runner

    make = runner.make_backend

    def stopping_backend(*a, **kw):
        backend = make(*a, **kw)
        submit = backend.submit

        def first_submit(key, payload, **k):
            if payload.get("task") == "probe":
                return submit(key, payload, **k)
            Path(mark).write_text(json.dumps({"t_submit": time.time()}))
            raise KeyboardInterrupt

        backend.submit = first_submit
        return backend

    runner.make_backend = stopping_backend
    return cli.main(["resume", *argv])


def du(path: Path) -> dict[str, Any]:
    by: dict[str, Any] = {}
    for sub in ("trials", "history"):
        fs = [p for p in (path / sub).iterdir() if p.is_file()] if (path / sub).is_dir() else []
        by[sub] = {"files": len(fs), "mb": round(sum(p.stat().st_size for p in fs) / 1e6, 2)}
    j = path / "study.journal"
    by["journal_mb"] = round(j.stat().st_size / 1e6, 2) if j.is_file() else None
    return by


def _build_here(run_dir: str, n: int, seeds: int, state: str) -> None:
    t0 = time.perf_counter()
    build(Path(run_dir), n, seeds=seeds, state=state)
    print(json.dumps({"build_s": round(time.perf_counter() - t0, 1)}))


def measure(n: int, seeds: int, state: str, work: Path, repeat: int, resume: bool,
            again_too: bool = False) -> list[dict[str, Any]]:
    d = work / f"{state}-{n}x{seeds}"
    shutil.rmtree(d, ignore_errors=True)
    p = subprocess.run([str(VENV / "python"), str(HERE), "_build", str(d), str(n), str(seeds), state],
                       cwd=ROOT, env=env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"build {state} {n}x{seeds}: rc {p.returncode}:\n{p.stderr[-3000:]}")
    build_s = json.loads(p.stdout.strip().splitlines()[-1])["build_s"]
    size = du(d)
    print(f"built {state} {n}x{seeds} in {build_s:.0f}s: {size}", flush=True)
    cli = str(VENV / "unlearn-sweep")
    cmds = {"status": lambda w: [cli, "status", str(w)], "analyze": lambda w: [cli, "analyze", str(w)]}
    if resume:
        cmds["resume"] = lambda w: [str(VENV / "python"), str(HERE), "_resume", str(work / "mark.json"),
                                    str(w), "--set", f"n_trials={n + 1}"]
    rows = []
    for verb, make in list(cmds.items()):
        runs, again = [], []
        for _ in range(repeat):
            # every command sees the state as built (analyze compacts and writes the report, resume
            # compacts): a fresh copy each time; the uncompacted state is copied too (minutes at
            # 100,000 runs), so the work folder holds two copies at most
            w = work / "scratch"
            shutil.rmtree(w, ignore_errors=True)
            shutil.copytree(d, w)
            runs.append(timed_run(make(w), work / "mark.json" if verb == "resume" else None))
            if again_too and verb != "resume":  # the same command again on the record it left
                again.append(timed_run(make(w)))
        key = "to_submit_s" if verb == "resume" else "wall_s"
        for name, got in ((verb, runs), (f"{verb} again", again)):
            if not got:
                continue
            best = min(got, key=lambda r: r[key])
            row = {"trials": n, "seeds": seeds, "state": state, "command": name, **best,
                   "all_" + key: [r[key] for r in got], "build_s": build_s, "record": size}
            rows.append(row)
            print(f"{n:>7}x{seeds} {state:>11} {name:>14}: {key} {best[key]:7.2f}s cpu {best['cpu_s']:6.2f}s "
                  f"rss {best['rss_mb']:7.1f} MB  [{best['uptime']}]", flush=True)
    shutil.rmtree(work / "scratch", ignore_errors=True)
    shutil.rmtree(d, ignore_errors=True)
    return rows


def versions() -> dict[str, str]:
    out = subprocess.run([str(VENV / "python"), "-c", "import optuna, pyarrow, pandas, sys; print("
                          "optuna.__version__, pyarrow.__version__, pandas.__version__, "
                          "sys.version.split()[0])"], capture_output=True, text=True).stdout.split()
    return dict(zip(("optuna", "pyarrow", "pandas", "python"), out))


def write(path: str, rows: list[dict[str, Any]]) -> None:
    """Rows replace those of the same (trials, seeds, state, command) already in the file."""
    p = Path(path)
    old = json.loads(p.read_text()) if p.is_file() else {}
    new = {(r["trials"], r["seeds"], r["state"], r["command"]) for r in rows}
    keep = [r for r in old.get("rows", []) if "state" in r and "tree" not in r
            and (r["trials"], r["seeds"], r["state"], r["command"]) not in new]
    doc = {"command": " ".join([".venv/bin/python", *sys.argv]),
           "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                       "note": "2 cores shared with other work; each row has `uptime` at its start"},
           "versions": versions(), "rows": keep + rows}
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1) + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_build":
        return _build_here(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    if len(sys.argv) > 1 and sys.argv[1] == "_resume":
        sys.exit(_resume(sys.argv[2], sys.argv[3:]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", default="1000,10000")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--states", default="compacted,killed,uncompacted")
    ap.add_argument("--repeat", type=int, default=2, help="runs per command; the fastest is reported")
    ap.add_argument("--resume", action="store_true", help="also `resume` (inline) to its first submit")
    ap.add_argument("--again", action="store_true", help="also each command a second time on the record "
                    "the first left (its answer kept beside the record: sweeps/answer_cache.py)")
    ap.add_argument("--build", metavar="DIR", help="only build the record of --trials (one N) in DIR")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench" / "record_scale"))
    ap.add_argument("--out", help="write the JSON here (rows are added to what it holds)")
    args = ap.parse_args()
    if args.build:
        (n,), (state,) = map(int, args.trials.split(",")), args.states.split(",")
        return _build_here(args.build, n, args.seeds, state)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for n in map(int, args.trials.split(",")):
        for state in args.states.split(","):
            rows += measure(n, args.seeds, state, work, args.repeat, args.resume, args.again)
            if args.out:
                write(args.out, rows)
    if not args.out:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
