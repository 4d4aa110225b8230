"""The record at scale, the whole commands: `status`, `analyze` and `resume` (up to its first
submitted trial) on a run directory of N trials, timed as subprocesses (wall time and peak RSS).

The run directory is built by the driver itself (`orchestrator.runner.Driver`) of the source tree
being measured, through the inline backend with an instant fake task, so the Optuna journal and the
Parquet record are exactly what that driver writes. The spec is the quickstart's (EUPMU and LTU,
two objectives, one constraint) on 1 or 3 seeds; it is built with the random sampler (TPE's own cost
at 10,000 trials would make the build take hours; the journal's operations are the same), then
spec.yaml is switched back to TPE so `resume` asks TPE as the quickstart would. Two states:

  killed    the builder SIGKILLs itself at the first run of trial N+1: what a killed sweep leaves
            (a RUNNING trial in the journal; the runs since the last compaction as one-run files)
  finished  `killed`, then resumed by the same driver until trial N+1 is done: a finished sweep

and for trees that compact, `exploded`: `finished` with every run in a one-run file again (the worst
case, a record whose compaction never ran). Measured on each: `status DIR`, `analyze DIR`, and
`resume` to its first submit (killed: the re-enqueued trial; finished: `--set n_trials=N+2`, a new
TPE ask over N trials), with the inline backend (no Ray start-up; it imports torch). `resume` runs
in a wrapper that stops the driver at its backend's first submit of a run or an oracle (the
Backend protocol's `submit`, wrapped) as Ctrl-C would and writes the time of that moment (and of
the backend start and the probe) to a file; nothing in the tree is changed.

    .venv/bin/python bench/record_scale.py --trials 1000,10000 --seeds 1,3 [--tree before=/tmp/before]
        [--repeat 2] [--out bench/results/record_scale.json]

Prints one line per measurement and, with --out, writes the JSON (machine, versions, rows).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
VENV = ROOT / ".venv" / "bin"


# -- the fake task: instant, metrics a smooth function of the parameters plus seeded noise --------

_CALLS = 0


def fake_task(payload: dict, on_epoch=None) -> dict:
    """A TrialResult dict as `run_trial_payload` returns it, in microseconds. Env BENCH_KILL_AT=k
    SIGKILLs this process at its k-th call (a driver killed with a run in flight)."""
    global _CALLS
    _CALLS += 1
    if _CALLS == int(os.environ.get("BENCH_KILL_AT", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
    p = dict(payload.get("params", {}))
    seeds = payload.get("seeds", {})
    h = hashlib.sha256(json.dumps([p, seeds], sort_keys=True).encode()).digest()
    noise = [b / 255.0 - 0.5 for b in h[:8]]
    lr, eps = float(p.get("lr", 0.01)), float(p.get("epsilon", 0.0))
    ref = {"original": {"unlearn_acc": 0.4, "retain_acc": 100.0, "test_acc": 97.0, "mia_efficacy": 1.0,
                        "forget_acc": 99.6, "val_acc": 96.5, "indiscernibility": 0.0},
           "retrain": {"unlearn_acc": 3.2, "retain_acc": 100.0, "test_acc": 96.4, "mia_efficacy": 9.0,
                       "forget_acc": 96.8, "val_acc": 96.0, "indiscernibility": 50.0}}
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
    for row in history:
        if on_epoch:
            on_epoch(row)
    return {"state": "COMPLETE", "error": None, "method": payload["method"], "params": p, "config": payload,
            "metrics": m, "reference": ref, "history": history, "step_history": [],
            "runtime_s": m["runtime_s"], "total_s": 1.2, "device": "cpu", "device_name": "cpu",
            "peak_mem_bytes": 0, "node": platform.node(), "code_version": "bench",
            "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:00:01+00:00"}


def spec_raw(tree: Path, n: int, seeds: int, sampler: str) -> dict:
    import yaml

    raw = yaml.safe_load((tree / "sweeps" / "presets" / "quickstart.yaml").read_text())
    raw.update(name="scale", n_trials=n, seeds=list(range(seeds)), sampler={"name": sampler, "seed": 0},
               resources={"backend": "inline", "cpus_per_trial": 1, "max_concurrent": 1},
               tracking={"wandb": {"mode": "disabled"}})
    return raw


# -- subprocess entry points (run with PYTHONPATH=<tree>, cwd=<tree>) -----------------------------

def _build(run_dir: str, n: int, seeds: int) -> None:
    """Drive n_trials=n with the fake task and the random sampler (the tree's own driver)."""
    from orchestrator.runner import Driver
    from sweeps.spec import load_spec

    spec = load_spec(spec_raw(Path.cwd(), n, seeds, "random"))
    Driver(spec, Path(run_dir), fn=fake_task, log=None).run()


def _resume(mark: str, argv: list[str]) -> int:
    """`unlearn-sweep resume ...`, stopped at the driver's first submit (as Ctrl-C would stop it);
    the moment, the backend's start and the probe go to the file `mark`."""
    from orchestrator import cli, runner

    spent = {"backend_s": 0.0, "probe_s": 0.0}

    def timed(key, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] += time.perf_counter() - t0
        return wrapper

    make = timed("backend_s", runner.make_backend)

    def stopping_backend(*a, **kw):
        """The run's backend, whose first submit of a run or an oracle (the Backend protocol's own
        method; the probe passes) marks the moment and stops the driver."""
        backend = make(*a, **kw)
        submit = backend.submit

        def first_submit(key, payload, **k):
            if payload.get("task") == "probe":
                return submit(key, payload, **k)
            Path(mark).write_text(json.dumps({"t_submit": time.time(), **spent}))
            raise KeyboardInterrupt

        backend.submit = first_submit
        return backend

    runner.make_backend = stopping_backend
    if hasattr(runner.Driver, "_probe"):
        runner.Driver._probe = timed("probe_s", runner.Driver._probe)
    return cli.main(["resume", *argv])


# -- the parent: build, copy, time ----------------------------------------------------------------

def env_for(tree: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
            "UNLEARN_SWEEP_RAY_DASHBOARD": "0"}


def timed_run(cmd: list[str], tree: Path, mark: Path | None = None) -> dict:
    """Wall time and peak RSS of one subprocess (its own rusage, from wait4)."""
    if mark is not None:
        mark.unlink(missing_ok=True)
    t_launch = time.time()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=tree, env=env_for(tree), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    row = {"wall_s": round(wall, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
           "rss_mb": round(ru.ru_maxrss / 1024, 1), "rc": p.returncode, "load_avg_1m": os.getloadavg()[0]}
    if mark is not None:
        if not mark.is_file():
            raise RuntimeError(f"{cmd}: no submit seen (rc {p.returncode}):\n{out.decode()[-3000:]}")
        m = json.loads(mark.read_text())
        row.update(to_submit_s=round(m["t_submit"] - t_launch, 3), backend_s=round(m["backend_s"], 3),
                   probe_s=round(m["probe_s"], 3))
    elif p.returncode != 0:
        raise RuntimeError(f"{cmd}: rc {p.returncode}:\n{out.decode()[-3000:]}")
    return row


def set_spec(tree: Path, run_dir: Path, **fields) -> None:
    """Edit spec.yaml, and run.json's record of it with the tree's own fingerprint (trees that have
    one refuse a spec.yaml edited by hand)."""
    import yaml

    path = run_dir / "spec.yaml"
    raw = yaml.safe_load(path.read_text())
    raw.update(fields)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run([str(VENV / "python"), str(HERE), "_refingerprint", str(run_dir)], cwd=tree,
                   env=env_for(tree), check=True)


def _refingerprint(run_dir: str) -> None:
    import yaml

    try:
        from sweeps.rundir import run_identity, write_identity
        from sweeps.spec import load_spec, spec_fingerprint
    except ImportError:  # a tree from before spec fingerprints
        return
    d = Path(run_dir)
    ident = run_identity(d)
    if ident and "spec_fingerprint" in ident:
        spec = load_spec(yaml.safe_load((d / "spec.yaml").read_text()), read_only=True)
        write_identity(d, {**ident, "spec_fingerprint": spec_fingerprint(spec)})


def du(path: Path) -> dict:
    files = [p for p in path.rglob("*") if p.is_file()]
    by = {}
    for sub in ("trials", "history"):
        fs = [p for p in files if p.parent.name == sub]
        by[sub] = {"files": len(fs), "mb": round(sum(p.stat().st_size for p in fs) / 1e6, 2)}
    j = path / "study.journal"
    by["journal_mb"] = round(j.stat().st_size / 1e6, 2) if j.is_file() else None
    return by


def explode(run_dir: Path) -> None:
    """Every row of the compacted files back into its own one-run file (written as `write_trial`
    writes one: no column statistics)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for sub in ("trials", "history"):
        path = run_dir / sub / "compacted.parquet"
        if not path.is_file():
            continue
        t = pq.read_table(path)
        fps = t.column("fingerprint").to_pylist()
        rows: dict[str, list[int]] = {}
        for i, fp in enumerate(fps):
            rows.setdefault(fp, []).append(i)
        for fp, idx in rows.items():
            pq.write_table(t.take(pa.array(idx)), run_dir / sub / f"{fp}.parquet", write_statistics=False)
        path.unlink()


def build_states(name: str, tree: Path, n: int, seeds: int, work: Path) -> dict[str, Path]:
    py = str(VENV / "python")
    base = work / f"{name}-{n}x{seeds}"
    killed, finished = base / "killed", base / "finished"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    t0 = time.perf_counter()
    env = {**env_for(tree), "BENCH_KILL_AT": str(n * seeds + 1)}
    p = subprocess.run([py, str(HERE), "_build", str(killed), str(n + 1), str(seeds)], cwd=tree, env=env,
                       capture_output=True, text=True)
    if p.returncode != -signal.SIGKILL:
        raise RuntimeError(f"build {name}: expected the SIGKILL, got rc {p.returncode}:\n{p.stderr[-3000:]}")
    print(f"built {name} {n}x{seeds} in {time.perf_counter() - t0:.0f}s", flush=True)
    set_spec(tree, killed, sampler={"name": "tpe", "seed": 0})
    shutil.copytree(killed, finished)
    p = subprocess.run([py, str(HERE), "_build", str(finished), str(n + 1), str(seeds)], cwd=tree,
                       env=env_for(tree), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"finish {name}: rc {p.returncode}:\n{p.stderr[-3000:]}")
    set_spec(tree, finished, sampler={"name": "tpe", "seed": 0})
    states = {"killed": killed, "finished": finished}
    if (tree / "sweeps" / "results.py").read_text().find("def compact(") >= 0:
        exploded = base / "exploded"
        shutil.copytree(finished, exploded)
        explode(exploded)
        states["exploded"] = exploded
    return states


def measure(name: str, tree: Path, n: int, seeds: int, work: Path, repeat: int, ray: bool) -> list[dict]:
    states = build_states(name, tree, n, seeds, work)
    cli = str(VENV / "unlearn-sweep")
    rows = []
    for state, d in states.items():
        size = du(d)
        cmds = {"status": lambda w: [cli, "status", str(w)], "analyze": lambda w: [cli, "analyze", str(w)]}
        if state != "exploded":
            extra = ["--set", f"n_trials={n + 2}"] if state == "finished" else []
            mark = work / "mark.json"
            for backend in ("inline", "ray") if ray else ("inline",):
                verb = "resume" if backend == "inline" else "resume (ray)"
                cmds[verb] = lambda w, extra=extra, mark=mark, backend=backend: [
                    str(VENV / "python"), str(HERE), "_resume", str(mark), str(w), "--set",
                    f"resources.backend={backend}", *extra]
        for verb, make in cmds.items():
            runs = []
            for _ in range(repeat):
                w = work / "scratch"
                shutil.rmtree(w, ignore_errors=True)
                shutil.copytree(d, w)  # every command sees the state as built (analyze, resume write)
                runs.append(timed_run(make(w), tree, work / "mark.json" if verb.startswith("resume") else None))
            key = "to_submit_s" if verb.startswith("resume") else "wall_s"
            best = min(runs, key=lambda r: r[key])
            row = {"tree": name, "trials": n, "seeds": seeds, "state": state, "command": verb, **best,
                   "all_" + key: [r[key] for r in runs], "record": size}
            rows.append(row)
            extra_txt = (f", to first submit {best['to_submit_s']:.2f}s (backend {best['backend_s']:.2f}s, "
                         f"probe {best['probe_s']:.2f}s)") if verb.startswith("resume") else ""
            print(f"{name:>7} {n:>6}x{seeds} {state:>9} {verb:>8}: wall {best['wall_s']:7.2f}s "
                  f"rss {best['rss_mb']:7.1f} MB{extra_txt}", flush=True)
    shutil.rmtree(work / "scratch", ignore_errors=True)
    shutil.rmtree(work / f"{name}-{n}x{seeds}", ignore_errors=True)
    return rows


def versions() -> dict:
    out = subprocess.run([str(VENV / "python"), "-c", "import optuna, pyarrow, pandas, ray, sys; print("
                          "optuna.__version__, pyarrow.__version__, pandas.__version__, ray.__version__, "
                          "sys.version.split()[0])"], capture_output=True, text=True).stdout.split()
    return dict(zip(("optuna", "pyarrow", "pandas", "ray", "python"), out))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_build":
        return _build(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    if len(sys.argv) > 1 and sys.argv[1] == "_resume":
        sys.exit(_resume(sys.argv[2], sys.argv[3:]))
    if len(sys.argv) > 1 and sys.argv[1] == "_refingerprint":
        return _refingerprint(sys.argv[2])
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", default="1000,10000")
    ap.add_argument("--seeds", default="1,3")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                    help="source trees to measure (default after=this tree)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per command; the fastest is reported")
    ap.add_argument("--ray", action="store_true", help="also resume on an embedded Ray (its dashboard off)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench" / "record_scale"))
    ap.add_argument("--out", help="write the JSON here (rows are added to what it holds)")
    args = ap.parse_args()
    trees = [t.split("=", 1) for t in args.tree] or [["after", str(ROOT)]]
    work = Path(args.work)
    rows = []
    for name, path in trees:
        for n in map(int, args.trials.split(",")):
            for s in map(int, args.seeds.split(",")):
                rows += measure(name, Path(path).resolve(), n, s, work, args.repeat, args.ray)
                if args.out:
                    write(args.out, rows)
    if not args.out:
        print(json.dumps(rows, indent=1))


def write(path: str, rows: list[dict]) -> None:
    p = Path(path)
    old = json.loads(p.read_text()) if p.is_file() else {}
    keep = [r for r in old.get("rows", []) if (r["tree"], r["trials"], r["seeds"]) not in
            {(x["tree"], x["trials"], x["seeds"]) for x in rows}]
    doc = {"command": " ".join([".venv/bin/python", *sys.argv]),
           "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                       "load_avg": os.getloadavg(), "note": "2 cores shared with other work"},
           "versions": versions(), "rows": keep + rows}
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
