"""The oracle phase, measured: time to the first trial result and the share of worker time spent
waiting before it, on a simulated 2-node Ray cluster (ray.cluster_utils: 2 nodes x 1 CPU, so 2 trial
slots, each node with its own empty oracle cache), 2 seeds, either sharing one Original/Retrain
pair (seed_axes [unlearn], the default) or each with its own (seed_axes [train, unlearn]); the
quickstart's spec otherwise.

  before: resources.oracle_phase false: each trial trains the oracles its node lacks, when it runs
          (under a file lock on its node's cache: other trials of that node wait on the lock)
  after:  the default: the driver first trains the 4 oracles as 4 parallel tasks, each once, sends
          them to the other node, then runs the trials

Every task (trial or oracle) is timed inside the worker: its start, end, and the seconds it spent
waiting for an oracle's lock. Worker time "waiting" before the first result = slots x (first result
- first task start) - the time tasks spent working (their span minus lock waits) in that window.

    .venv/bin/python bench/oracle_phase.py [--trials 4] [--epochs 30] [--out bench/results/oracle_phase.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

LOG_ENV = "ORACLE_BENCH_LOG"


def timed_task(payload: dict, on_epoch=None) -> dict:
    """unlearning.tasks.run_task, timed: one JSON line per task into $ORACLE_BENCH_LOG."""
    import fcntl

    import unlearning.oracle as O
    from unlearning.tasks import run_task

    waits = []
    if not getattr(O, "_bench_patched", False):  # time the wait for a cache lock, once per process
        @contextlib.contextmanager
        def timed_lock(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_suffix(".lock"), "w") as fh:
                t = time.time()
                fcntl.flock(fh, fcntl.LOCK_EX)
                O._bench_waits.append(time.time() - t)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)

        O._locked, O._bench_patched, O._bench_waits = timed_lock, True, []
    O._bench_waits.clear()
    t0 = time.time()
    out = run_task(payload, on_epoch)
    t1 = time.time()
    waits = list(O._bench_waits)
    kind = payload.get("task") or "trial"
    with open(os.environ[LOG_ENV], "a") as f:
        f.write(json.dumps({"kind": kind, "start": t0, "end": t1, "lock_wait_s": sum(waits),
                            "pid": os.getpid(), "node": platform.node()}) + "\n")
    return out


def measure(mode: str, trials: int, epochs: int, work: Path, shared: bool, axes: list[str]) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.runner import Driver
    from sweeps.spec import load_spec, read_spec_source

    tag = f"{mode}-{'shared' if shared else 'per-node'}-{'+'.join(axes)}"
    log = work / f"{tag}.jsonl"
    os.environ[LOG_ENV] = str(log)
    os.environ["PYTHONPATH"] = f"{ROOT}:{ROOT / 'bench'}"
    caches = [work / f"{tag}-cache"] * 2 if shared else [work / f"{tag}-cache-{i}" for i in (1, 2)]
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "env_vars": {"UNLEARN_SWEEP_CACHE": str(caches[0])}})
    cluster.add_node(num_cpus=1, env_vars={"UNLEARN_SWEEP_CACHE": str(caches[1])})
    cluster.connect()
    try:
        spec = load_spec(read_spec_source("quickstart"), [
            ("n_trials", trials), ("seeds", [0, 1]), ("seed_axes", axes),
            ("base.train.epochs", epochs), ("resources.max_concurrent", None),
            ("resources.oracle_phase", mode == "after")])
        t_start = time.time()
        out = Driver(spec, work / f"{tag}-run", fn=timed_task, log=sys.stderr,
                     oracle_phase=mode == "after").run()
    finally:
        ray.shutdown()
        cluster.shutdown()
    rows = [json.loads(ln) for ln in log.read_text().splitlines()]
    tasks = [r for r in rows if r["kind"] in ("trial", "oracle")]
    first_task = min(r["start"] for r in tasks)
    first_result = min(r["end"] for r in rows if r["kind"] == "trial")
    window, slots = first_result - first_task, 2
    worked = sum(max(0.0, min(r["end"], first_result) - max(r["start"], first_task))
                 - (r["lock_wait_s"] if r["start"] < first_result else 0.0) for r in tasks)
    return {"mode": mode, "cache": "one shared by both nodes" if shared else "one per node",
            "seed_axes": axes, "oracles_needed": 2 if axes == ["unlearn"] else 4,
            "time_to_first_result_s": round(first_result - t_start, 2),
            "first_task_to_first_result_s": round(window, 2),
            "worker_time_waiting_before_first_result": round(1 - worked / (slots * window), 3),
            "lock_wait_s_total": round(sum(r["lock_wait_s"] for r in rows), 2),
            "oracle_tasks": sum(r["kind"] == "oracle" for r in rows),
            "sweep_wall_s": round(out["wall_s"], 1), "trials_done": out["done"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=30, help="oracle training epochs (quickstart: 30)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "oracle_phase.json"))
    args = ap.parse_args()
    os.environ.setdefault("UNLEARN_SWEEP_RAY_DASHBOARD", "0")
    os.environ.setdefault("WANDB_MODE", "disabled")
    results = []
    with tempfile.TemporaryDirectory(prefix="oracle-bench-") as d:
        for axes in (["unlearn"], ["train", "unlearn"]):
            for shared in (True, False):
                for mode in ("before", "after"):
                    results.append(measure(mode, args.trials, args.epochs, Path(d), shared, axes))
                    print(json.dumps(results[-1]), flush=True)
    import ray
    import torch

    doc = {"bench": "oracle_phase", "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "load_avg_at_end": os.getloadavg()},
           "versions": {"python": platform.python_version(), "torch": torch.__version__,
                        "ray": ray.__version__},
           "setup": {"nodes": 2, "cpus_per_node": 1, "slots": 2, "seeds": [0, 1], "trials": args.trials,
                     "oracle_epochs": args.epochs, "data": "digits", "model": "small_cnn",
                     "caches": "empty at the start; one shared by both nodes (a shared file "
                               "system), or one per node"},
           "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
