"""A driver signalled at every moment of its life, on both backends: before anything is written (the
spec being loaded), with the run directory just taken, during ray.init, during the probe, in the
oracle phase, mid-trial, during the final compaction and while the report is written. Each time: exit
128 + N, ONE line from unlearn-sweep (no traceback), a record that is whole (every file readable,
every fingerprint once, no temp file, nothing RUNNING in the journal, no lock), and then `resume`
(or `run` again, when the signal came before the run directory was kept) finishes the sweep with
every configuration exactly once.

The driver is a real CLI process (tests/drive.py: the fake trial function, and $SIGNAL_AT to send
the signal at one moment, from the driver itself or from a Ray worker). The default run tries the
moments that once went wrong (ray.init; a trial in flight on the inline backend); the slow run tries
every moment with every stop signal inline, and every moment on Ray."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from sweeps import results as R
from sweeps.journal import journal_tail_whole, read_study
from tests.test_reliability import DRIVE, _env, assert_whole
from tests.sweep_util import small_spec

N_TRIALS = 4


def _drive(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*DRIVE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def assert_record_whole(run_dir: Path) -> None:
    """The record as any interruption must leave it (the run may be unfinished)."""
    if not run_dir.exists():
        return
    scans = R.scan_record(run_dir)
    assert not scans["trials"].damaged and not scans["history"].damaged
    fps = scans["trials"].table.column("fingerprint").to_pylist()
    assert len(fps) == len(set(fps))
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name], "a temp file was left"
    assert not (run_dir / "driver.lock").exists()
    journal = run_dir / "study.journal"
    if journal.exists():
        assert journal_tail_whole(journal)
        study = read_study(journal.read_bytes(), "t")  # raises Damaged for a torn line
        assert study is not None and not [t for t in study.trials if t.state.name == "RUNNING"]
    if (run_dir / "report").exists():
        assert (run_dir / "report" / "report.md").is_file()


def signalled(tmp_path: Path, moment: str, sig: signal.Signals, backend: str) -> Path:
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths must fit
    spec = tmp_path / "spec.yaml"
    # "ray": Ray first, so each of its moments comes; "handover": two slots, so Ray starts at once
    # while the first trials run in the driver (cluster/handover.py)
    resources = {"backend": backend, "max_concurrent": 1}
    if backend == "ray":
        resources["first_trials_here"] = False
    elif backend == "handover":
        resources = {"backend": "ray", "max_concurrent": 2}
    spec.write_text(yaml.safe_dump(small_spec(n_trials=N_TRIALS, seeds=[0, 1], resources=resources)))
    run_dir = tmp_path / "run"
    marks = tmp_path / "marks"
    marks.mkdir()
    env = _env(RAY_TMPDIR=ray_tmp, FAKE_TASK_SECONDS="0.5", SIGNAL_AT=f"{moment}:{sig.name}",
               SIGNAL_DIR=str(marks))
    res = _drive(["run", str(spec), "--out", str(run_dir)], tmp_path, env)
    assert (marks / "sent").exists(), f"the signal was never sent at {moment}"
    assert res.returncode == 128 + sig, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    ours = [ln for ln in res.stderr.splitlines() if ln.startswith("unlearn-sweep")]
    assert len(ours) == 1 and ours[0].startswith(f"unlearn-sweep: interrupted ({sig.name})"), res.stderr[-3000:]
    assert_record_whole(run_dir)
    if (run_dir / "spec.yaml").exists():
        assert ours[0].endswith(f"`unlearn-sweep resume {run_dir}` continues")
        again = ["resume", str(run_dir)]
    else:  # stopped before the run directory was kept: nothing was left behind
        assert not run_dir.exists()
        again = ["run", str(spec), "--out", str(run_dir)]
    res = _drive([*again, "--backend", "inline"], tmp_path, _env())  # the record is the same on either
    assert res.returncode == 0, res.stderr[-3000:]
    assert_whole(run_dir, N_TRIALS, n_seeds=2)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    return run_dir


INLINE = ["spec", "record", "probe", "oracle", "trial", "compact", "report"]
RAY = ["ray_init", "probe", "oracle", "trial", "compact"]


def test_a_trial_in_flight_on_the_inline_backend_is_recorded_interrupted(tmp_path):
    """The trial runs in the driver's own process: the signal stops it where it is, and its run
    gets an `interrupted` row, as on Ray (the pool lands the task being submitted)."""
    run_dir = tmp_path / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(small_spec(n_trials=N_TRIALS, seeds=[0, 1])))
    marks = tmp_path / "marks"
    marks.mkdir()
    res = _drive(["run", str(spec), "--out", str(run_dir), "--backend", "inline"], tmp_path,
                 _env(FAKE_TASK_SECONDS="5", SIGNAL_AT="trial:SIGTERM", SIGNAL_DIR=str(marks)))
    assert res.returncode == 143, res.stderr[-3000:]
    t = R.read_results(run_dir).to_pandas()
    assert t["failure_kind"].tolist() == ["interrupted"] and t["error"].tolist() == ["interrupted"]
    assert_record_whole(run_dir)


@pytest.mark.slow
@pytest.mark.ray
def test_sigterm_while_ray_starts_is_our_stop_not_rays(tmp_path):
    """ray.init used to install its own SIGTERM handler: exit status 15 and not a word."""
    signalled(tmp_path, "ray_init", signal.SIGTERM, "ray")


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("moment", ["trial", "compact"])
def test_a_signal_while_the_first_trials_run_in_the_driver_and_ray_starts(tmp_path, moment):
    signalled(tmp_path, moment, signal.SIGTERM, "handover")


@pytest.mark.slow
@pytest.mark.parametrize("moment", INLINE)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_at_every_moment_inline(tmp_path, moment, sig):
    signalled(tmp_path, moment, sig, "inline")


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("moment", RAY)
def test_a_signal_at_every_moment_on_ray(tmp_path, moment):
    signalled(tmp_path, moment, signal.SIGTERM, "ray")


def test_a_refusal_for_lack_of_room_leaves_no_run_directory(tmp_path, monkeypatch, capsys):
    """A run refused because its file system is (nearly) full removes the directory it created."""
    import shutil

    from orchestrator.cli import main

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(small_spec(n_trials=2)))
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))
    assert main(["run", str(spec), "--out", str(tmp_path / "deep" / "run")]) == 2
    err = capsys.readouterr().err
    assert "MiB free on its file system" in err and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == ["spec.yaml"]  # neither run/ nor the deep/ made for it
