"""What the Ray path costs per trial, and how no-op throughput scales with nodes.

    .venv/bin/python bench/ray_overhead.py [--trials 200] [--nodes 1 2 4]

* inline: a no-op task through InlineBackend (the floor: a function call).
* ray latency: one actor, submit -> wait, one at a time (the per-trial round trip of the Ray path),
  plain and with 10 progress rows streamed per trial.
* ray throughput: no-op trials through RayBackend on a ray.cluster_utils.Cluster of N simulated
  nodes (1 CPU each, on this one machine; the head holds the driver only), pool = N actors.
Writes bench/results/ray_overhead.json. These are orchestration costs: a real unlearning trial runs
for seconds to minutes, so what matters is that they stay in the milliseconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # Ray workers import tests.tasks from the driver's directory

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from cluster.inline import InlineBackend  # noqa: E402
from cluster.ray_backend import RayBackend  # noqa: E402
from tests.tasks import task  # noqa: E402


def token_auth() -> None:
    """Token mode for the simulated cluster, as ray.init sets it up for a local one."""
    from cluster import ray_private

    os.environ["RAY_AUTH_MODE"] = "token"
    ray_private.reload_auth_mode()
    ray_private.ensure_token()


def drain(backend, payloads: list[dict]) -> float:
    """Keep every slot busy until all payloads are done; seconds taken."""
    t0, todo, inflight = time.perf_counter(), list(enumerate(payloads)), []
    while todo or inflight:
        while todo and len(inflight) < max(1, backend.capacity()):
            i, p = todo.pop()
            inflight.append(backend.submit(f"t{i}", p))
        for o in backend.wait(inflight, timeout=5):
            assert o.result is not None, o
            inflight.remove(o.handle)
    return time.perf_counter() - t0


def per_trial(backend, payload: dict, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        h = backend.submit(f"l{i}", payload)
        while not backend.wait([h], timeout=5):
            pass
        out.append(time.perf_counter() - t0)
    return out


def ms(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"median_ms": round(1e3 * statistics.median(xs), 3),
            "p90_ms": round(1e3 * xs[int(0.9 * (len(xs) - 1))], 3), "n": len(xs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "ray": ray.__version__, "load_avg_1m": os.getloadavg()[0]},
                 "trials": args.trials}

    rows = []
    inline = InlineBackend(task, lambda k, r: rows.append(r))
    out["inline"] = {"noop": ms(per_trial(inline, {"op": "echo"}, args.trials)),
                     "noop_10_rows": ms(per_trial(inline, {"op": "epochs", "n": 10}, args.trials))}

    token_auth()
    os.environ.pop("RAY_ADDRESS", None)
    out["ray"] = {}
    for n in args.nodes:
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(n):
            c.add_node(num_cpus=1)
        c.wait_for_nodes()
        c.connect()
        try:
            t0 = time.perf_counter()
            b = RayBackend(task, lambda k, r: rows.append(r), cpus_per_trial=1)
            start_s = time.perf_counter() - t0
            drain(b, [{"op": "echo"}] * 20)  # warm-up
            wall = drain(b, [{"op": "echo"}] * args.trials)
            res = {"nodes": n, "actors": b.capacity(), "pool_start_s": round(start_s, 2),
                   "noop_trials_per_s": round(args.trials / wall, 1)}
            if n == args.nodes[0]:
                b.shutdown()
                b = RayBackend(task, lambda k, r: rows.append(r), cpus_per_trial=1, max_concurrent=1)
                per_trial(b, {"op": "echo"}, 10)
                res["latency_noop"] = ms(per_trial(b, {"op": "echo"}, args.trials))
                res["latency_noop_10_rows"] = ms(per_trial(b, {"op": "epochs", "n": 10}, args.trials // 2))
            b.shutdown()
            out["ray"][f"{n}_nodes"] = res
            print(json.dumps(res), flush=True)
        finally:
            ray.shutdown()
            c.shutdown()
    first = out["ray"][f"{args.nodes[0]}_nodes"]
    out["overhead_per_trial_ms"] = round(first["latency_noop"]["median_ms"] - out["inline"]["noop"]["median_ms"], 3)
    out["overhead_per_progress_row_ms"] = round(
        (first["latency_noop_10_rows"]["median_ms"] - first["latency_noop"]["median_ms"]) / 10, 3)
    path = ROOT / "bench" / "results" / "ray_overhead.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("inline", "overhead_per_trial_ms", "overhead_per_progress_row_ms")}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
