"""How long an embedded Ray's processes outlive a driver killed with SIGKILL.

A real `unlearn-sweep run` (tests/drive.py: the CLI with a fake trial function) on an embedded Ray is
killed with SIGKILL once two trials are on record; every process of its Ray session (found by the
session's RAY_TMPDIR in its environment, as tests/test_reliability.py does) is then watched until it
is gone. Prints, and writes as JSON with --out, each process's name and how many seconds after the
kill it was last seen.

    .venv/bin/python bench/ray_after_sigkill.py --repeat 3 --out runs/bench/ray_after_sigkill.json

bench/results/ray_after_sigkill.json: with cluster/reaper.py (0.6-0.8 s with the dashboard, under
0.1 s without); ray_after_sigkill_before.json: without it (61 s: the raylet's agents).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.sweep_util import small_spec  # noqa: E402


def session(ray_tmp: str) -> dict[int, str]:
    """The processes of the Ray session under `ray_tmp`: its RAY_TMPDIR in their environment, or a
    file of the session open (Ray's agents rename themselves, `ray::DashboardAgent`, which makes
    their environment unreadable, but they keep their logs open)."""
    out = {}
    for p in psutil.process_iter(["name"]):
        try:
            if p.environ().get("RAY_TMPDIR") == ray_tmp or \
                    any(f.path.startswith(ray_tmp + "/") for f in p.open_files()):
                out[p.pid] = p.info["name"]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


def once(dashboard: bool, limit_s: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-sigkill-"))
    ray_tmp = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # short: Ray's socket paths must fit
    spec = work / "spec.yaml"
    spec.write_text(yaml.safe_dump(small_spec(n_trials=20, resources={"backend": "ray",
                                                                        "max_concurrent": 1})))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp, "FAKE_TASK_SECONDS": "0.3",
           "UNLEARN_SWEEP_RAY_DASHBOARD": "1" if dashboard else "0"}
    run_dir = work / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tests.drive", "run", str(spec), "--out", str(run_dir)],
                            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and \
            len(list((run_dir / "trials").glob("[!.]*.parquet"))) < 2:
        time.sleep(0.05)
    before = session(ray_tmp)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last_seen = {pid: 0.0 for pid in before}
    while time.monotonic() - t0 < limit_s:
        alive = session(ray_tmp)
        now = time.monotonic() - t0
        for pid in alive:
            last_seen[pid] = now
        if not alive:
            break
        time.sleep(0.1)
    left = session(ray_tmp)
    for pid in left:  # past the limit: end them, so the next repeat starts clean
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    procs = sorted(({"name": before[pid], "last_seen_s": round(s, 2)} for pid, s in last_seen.items()),
                   key=lambda d: -d["last_seen_s"])
    return {"dashboard": dashboard, "processes": len(before), "all_gone_s": round(max(last_seen.values(),
                                                                                      default=0.0), 2),
            "still_alive_at_limit": len(left), "by_process": procs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--limit", type=float, default=90.0, help="stop watching after this many seconds")
    ap.add_argument("--dashboard", choices=["on", "off", "both"], default="both")
    ap.add_argument("--out")
    args = ap.parse_args()
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.dashboard]
    runs = []
    for dashboard in modes:
        for i in range(args.repeat):
            r = once(dashboard, args.limit)
            runs.append(r)
            slowest = ", ".join(f"{p['name']} {p['last_seen_s']}s" for p in r["by_process"][:3])
            print(f"dashboard {'on' if dashboard else 'off'} #{i + 1}: {r['processes']} processes, all gone "
                  f"{r['all_gone_s']} s after the kill (slowest: {slowest})", flush=True)
    doc = {"command": " ".join(sys.argv), "load_avg": os.getloadavg(), "runs": runs}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
