"""cluster/reaper.py without Ray: stand-in processes named like Ray's agents, holding a log file of a
session directory open, as Ray's agents do."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from cluster.reaper import Reaper

HOLD = ("import sys, time\n"
        "open('/proc/self/comm', 'w').write(sys.argv[2])\n"  # the name Ray's agents take
        "f = open(sys.argv[1], 'a')\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n")


def _holder(log, name: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(log), name], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def _ended(p: subprocess.Popen, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return p.poll() is not None


def test_a_driver_killed_inside_ray_init_leaves_no_agent_behind(tmp_path):
    """Before: the reaper started after ray.init; a driver SIGKILLed inside it (seen in the chaos test)
    left `ray::DashboardAgent` and `ray::RuntimeEnvAgent` waiting out a 60 s timeout."""
    root = tmp_path / "ray"
    ours = root / f"session_2026-01-01_00-00-00_000001_{os.getpid()}"  # as Ray names this process's
    other = root / "session_2026-01-01_00-00-00_000001_1"  # another driver's session
    for d in (ours, other):
        (d / "logs").mkdir(parents=True)
    agent = _holder(ours / "logs" / "dashboard_agent.log", "ray::DashboardA")
    foreign = _holder(other / "logs" / "dashboard_agent.log", "ray::DashboardA")
    tail = _holder(ours / "logs" / "raylet.out", "tail")  # a user's `tail -f`: not Ray's, left alone
    try:
        reaper = Reaper.start(str(root))
        reaper.stop()  # the pipe closes without a session named: as if killed inside ray.init
        assert _ended(agent), "the agent of this driver's session outlived it"
        assert foreign.poll() is None and tail.poll() is None
    finally:
        for p in (agent, foreign, tail):
            p.kill()
            p.wait()


def test_a_named_session_is_the_only_one_reaped(tmp_path):
    root = tmp_path / "ray"
    named, older = root / "session_b_1", root / f"session_a_{os.getpid()}"
    for d in (named, older):
        (d / "logs").mkdir(parents=True)
    agent = _holder(named / "logs" / "runtime_env_agent.log", "ray::RuntimeEnv")
    old = _holder(older / "logs" / "runtime_env_agent.log", "ray::RuntimeEnv")
    try:
        reaper = Reaper.start(str(root))
        reaper.watch(str(named))
        reaper.stop()
        assert _ended(agent) and old.poll() is None
    finally:
        for p in (agent, old):
            p.kill()
            p.wait()
