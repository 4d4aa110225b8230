"""A real multi-process Ray cluster, as a user starts one on two machines (docs/cluster.md): a head
started with `ray start --head`, a worker node started with `ray start --address` as its own process
tree with its own oracle cache, a sweep driven from a third process with `--address`, then
`ray stop`. Trials run on both nodes and every Original/Retrain is trained once in the whole
cluster: the oracle phase trains each on one node and the other receives the same files.

Both nodes use this machine's address, not 127.0.0.1: Ray 2.60 resolves a loopback node address to
the machine's own for a multi-node cluster, and refuses to add worker nodes when its multi-node
support is off (what keeps the embedded Ray on loopback). `ray stop` stops every Ray process of this
user on the machine, which is why the test is marked slow (run alone, by `make test-all`)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sweeps.results import read_results

pytestmark = [pytest.mark.slow, pytest.mark.ray]
ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
CLI = str(Path(sys.executable).with_name("unlearn-sweep"))


def _ip() -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))  # no packet is sent: this picks the outgoing interface
        return s.getsockname()[0]
    finally:
        s.close()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], env: dict) -> None:
    res = subprocess.run([RAY, "start", *args], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"ray start {' '.join(args)}: {(res.stdout + res.stderr)[-3000:]}"


def _no_ray_left(timeout: float = 30.0) -> None:
    """An earlier test's Ray (a driver SIGKILLed on purpose) takes a few seconds to go; `ray start
    --head` refuses to start beside one."""
    import psutil

    deadline = time.monotonic() + timeout
    while any(p.info["name"] in ("raylet", "gcs_server") for p in psutil.process_iter(["name"])):
        assert time.monotonic() < deadline, "a Ray from before is still running"
        time.sleep(0.5)


def test_two_ray_start_nodes_share_the_sweep_and_train_each_oracle_once(tmp_path):
    ip, port = _ip(), _port()
    head_cache, worker_cache, driver_cache = (tmp_path / n for n in ("head-cache", "worker-cache",
                                                                      "driver-cache"))
    base = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(ROOT)}  # token auth stays on
    _no_ray_left()
    # Ray's socket paths live under its temp dir and must fit AF_UNIX's 107 bytes: not under tmp_path
    ray_tmp = tempfile.mkdtemp(prefix="us-ray-")
    t0 = time.monotonic()
    try:
        _ray_start(["--head", f"--port={port}", "--num-cpus=1", "--disable-usage-stats",
                    "--include-dashboard=false", f"--temp-dir={ray_tmp}"],
                   {**base, "UNLEARN_SWEEP_CACHE": str(head_cache)})
        _ray_start([f"--address={ip}:{port}", "--num-cpus=1", "--disable-usage-stats"],
                   {**base, "UNLEARN_SWEEP_CACHE": str(worker_cache)})
        res = subprocess.run(
            [CLI, "run", "quickstart", "--out", str(tmp_path / "run"), "--address", f"{ip}:{port}",
             "--set", "n_trials=4", "--set", "seeds=[0,1]", "--set", "seed_axes=[train,unlearn]",
             "--set", "resources.max_concurrent=null", "--set", "base.train.epochs=5"],
            env={**base, "UNLEARN_SWEEP_CACHE": str(driver_cache)}, cwd=tmp_path, capture_output=True,
            text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    finally:
        subprocess.run([RAY, "stop", "--force"], env=base, capture_output=True, timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    wall = time.monotonic() - t0
    t = read_results(tmp_path / "run").to_pandas()
    assert (t["state"] == "COMPLETE").all() and len(t) == 8
    assert t["node"].nunique() == 2, t["node"].value_counts()  # both nodes ran trials
    # 2 seeds x (Original, Retrain): 4 models, each trained once; the other node got the same files
    models = sorted(p.name for p in head_cache.glob("*.json"))
    assert len(models) == 4 and sorted(p.name for p in worker_cache.glob("*.json")) == models
    for name in models:
        assert (head_cache / name).read_bytes() == (worker_cache / name).read_bytes(), name
    assert res.stderr.count(" ready: trained in ") == 4
    assert not list(driver_cache.glob("*.pt"))  # the driver trains nothing
    print(f"multi-process cluster test: {wall:.1f} s")
    shutil.rmtree(tmp_path / "ray", ignore_errors=True)
