"""Chaos: rounds of a small sweep (tests/drive.py: the CLI with the fake trial function), each hit by a
random fault at a random moment, then resumed. Faults: the driver killed with SIGKILL, stopped with
SIGTERM, or (on Ray) a trial worker killed with kill -9; backends: inline and an embedded Ray. A
moment: a random delay after the driver starts (start-up, Ray's start, the probe, the oracle phase)
or a random number of runs on record plus a random delay (mid-sweep). Every round must end with the
record whole (every fingerprint once, nothing RUNNING, every file readable, no lock, no Ray process
left) and the configurations of the uninterrupted sweep.

Slow (about 15 s a round inline, 40 s on Ray). The rounds are seeded: round i is the same fault at the
same moment every time (give CHAOS_SEED to draw others); CHAOS_LOG names a file that gets one JSON
line per round (what was done, what the driver answered), for the tally in docs/reliability.md."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time

import psutil
import pytest
import yaml

from orchestrator.runner import run_sweep
from sweeps import results as R
from sweeps.spec import load_spec
from tests.sweep_util import fake_task, small_spec
from tests.test_reliability import DRIVE, _env, _ray_processes, assert_whole

ROUNDS = 24
N_TRIALS, SEEDS = 5, [0, 1]
SEED = int(os.environ.get("CHAOS_SEED", "20"))


def _plan(i: int) -> dict:
    rng = random.Random(SEED * 1000 + i)
    backend = "ray" if i % 2 else "inline"
    fault = rng.choice(["sigkill", "sigterm", "worker"] if backend == "ray" else ["sigkill", "sigterm"])
    after_runs = rng.randint(0, N_TRIALS * len(SEEDS) - 1)
    delay = round(rng.uniform(0.5, 8.0) if after_runs == 0 else rng.uniform(0.0, 0.6), 2)
    return {"round": i, "backend": backend, "fault": fault, "after_runs": after_runs, "delay_s": delay}


def _spec(name: str, backend: str) -> dict:
    # first_trials_here off: a one-slot sweep this short would otherwise run in the driver, not on Ray
    return small_spec(name=name, n_trials=N_TRIALS, seeds=SEEDS,
                      resources={"backend": backend, "max_concurrent": 1, "max_retries": 2,
                                 **({"first_trials_here": False} if backend == "ray" else {})})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> set:
    run_dir = tmp_path_factory.mktemp("whole") / "c"
    run_sweep(load_spec(_spec("c", "inline")), run_dir, fn=fake_task, log=None)
    return assert_whole(run_dir, N_TRIALS, n_seeds=len(SEEDS))


def _trial_workers(ray_tmp: str) -> list[psutil.Process]:
    """Ray's trial actors of the session under `ray_tmp` (by name and an open file of the session)."""
    out = []
    for p in psutil.process_iter(["name"]):
        try:
            if p.info["name"].startswith("ray::_TrialWorker") and \
                    any(f.path.startswith(ray_tmp + "/") for f in p.open_files()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


@pytest.mark.slow
@pytest.mark.parametrize("i", range(ROUNDS), ids=lambda i: "-".join(map(str, list(_plan(i).values())[:3])))
def test_a_random_fault_at_a_random_moment_then_resume(tmp_path, uninterrupted, i):
    plan = _plan(i)
    ray_tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    env = _env(RAY_TMPDIR=ray_tmp, FAKE_TASK_SECONDS="0.3")
    spec = tmp_path / "c.yaml"
    spec.write_text(yaml.safe_dump(_spec("c", plan["backend"])))
    run_dir = tmp_path / "c"
    proc = subprocess.Popen([*DRIVE, "run", str(spec), "--out", str(run_dir)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while plan["after_runs"] and proc.poll() is None and time.time() < deadline and \
            len(R._files(run_dir / "trials")) < plan["after_runs"]:
        time.sleep(0.02)
    time.sleep(plan["delay_s"])
    hit = proc.poll() is None  # the sweep may have ended first: then the fault hits nothing
    if hit and plan["fault"] == "worker":
        workers = _trial_workers(ray_tmp)
        hit = bool(workers)
        for w in workers:
            w.kill()
    elif hit:
        proc.send_signal(signal.SIGKILL if plan["fault"] == "sigkill" else signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    assert "Traceback" not in err, err[-3000:]
    expected = {"sigkill": -signal.SIGKILL, "sigterm": 128 + signal.SIGTERM, "worker": 0}[plan["fault"]]
    assert proc.returncode in ((expected, 0) if hit else (0,)), err[-3000:]
    assert not R.scan_record(run_dir)["trials"].damaged if run_dir.exists() else True

    again = ["resume", str(run_dir)] if (run_dir / "spec.yaml").exists() else \
        ["run", str(spec), "--out", str(run_dir)]
    res = subprocess.run([*DRIVE, *again], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    configs = assert_whole(run_dir, N_TRIALS, n_seeds=len(SEEDS))
    assert configs == uninterrupted
    left = _ray_processes(ray_tmp, within=15)
    if os.environ.get("CHAOS_LOG"):
        with open(os.environ["CHAOS_LOG"], "a") as f:
            f.write(json.dumps({**plan, "hit": hit, "exit": proc.returncode, "resumed_with": again[0],
                                "ray_left": left}) + "\n")
    assert not left, f"Ray processes outlived the round: {left}"
    shutil.rmtree(ray_tmp, ignore_errors=True)
