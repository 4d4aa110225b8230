"""`unlearn-sweep run | resume | status | analyze | presets` end to end, with real trials on digits:
the (shrunk) quickstart, and a driver killed with SIGKILL mid-sweep then resumed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import optuna
import pytest
import pyarrow.parquet as pq
import yaml
from optuna.trial import TrialState

from orchestrator.cli import main
from sweeps.results import read_results
from sweeps.spec import load_spec
from sweeps.study import storage_for

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "base.train.epochs=2"]  # a 2-epoch oracle: seconds, shared by the session cache


def test_presets_command_lists_quickstart(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "quickstart:" in out and "cifar10_random10:" in out


@pytest.mark.slow
def test_quickstart_shrunk_prints_front_and_writes_everything(tmp_path, capsys):
    out_dir = tmp_path / "qs"
    code = main(["run", "quickstart", "--out", str(out_dir), "--set", "n_trials=2", *FAST,
                 "--set", "methods.eupmu.space.epochs.value=1", "--set", "methods.ltu.space.epochs.value=1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Pareto front (" in out.out and f"report: {out_dir / 'report' / 'report.md'}" in out.out
    t = read_results(out_dir)
    assert t.num_rows == 2 and set(t.column("method").to_pylist()) <= {"eupmu", "ltu"}
    # the record as other tools read it: raw Parquet files, with pyarrow and with DuckDB
    files = sorted((out_dir / "trials").glob("*.parquet"))
    assert sum(pq.read_table(f).num_rows for f in files) == 2
    [(n, states)] = duckdb.sql(f"select count(*), list(distinct state) from "
                               f"read_parquet('{out_dir}/trials/*.parquet')").fetchall()
    assert n == 2 and states == ["COMPLETE"]
    for name in ("report.md", "front.png", "front.html", "history.png", "table.csv"):
        assert (out_dir / "report" / name).is_file()
    assert main(["status", str(out_dir)]) == 0
    assert "COMPLETE" in capsys.readouterr().out
    assert main(["analyze", str(out_dir)]) == 0
    assert "report:" in capsys.readouterr().out
    # a second `run` with a different spec on the same directory is refused, nothing changed;
    # more trials (or seeds) would extend the same sweep instead
    before = (out_dir / "spec.yaml").read_text()
    same = ["run", "quickstart", "--out", str(out_dir), "--set", "n_trials=2", *FAST,
            "--set", "methods.eupmu.space.epochs.value=1", "--set", "methods.ltu.space.epochs.value=1"]
    assert main([*same, "--set", "methods.eupmu.space.lr.high=0.05"]) == 2
    assert "with a different methods.eupmu.space.lr.high" in capsys.readouterr().err
    assert (out_dir / "spec.yaml").read_text() == before


@pytest.mark.slow  # two driver processes and ~16 real trials: about 30 s on a busy 2-core machine
def test_sigkill_mid_sweep_then_resume_runs_every_trial_exactly_once(tmp_path):
    spec = {
        "name": "killme",
        "base": {"data": {"name": "digits"}, "model": "small_cnn", "train": {"epochs": 2},
                 "eval": {"mia": True}},
        "methods": {"ft": {"space": {"lr": {"type": "log-float", "low": 1e-3, "high": 1e-1},
                                     "epochs": 1}}},
        "objectives": [{"metric": "forget_gap"}, {"metric": "test_acc", "direction": "maximize"}],
        "constraints": [{"metric": "utility_drop", "max": 10}],
        "sampler": {"name": "tpe", "seed": 0}, "n_trials": 6, "seeds": [0, 1],
        "resources": {"backend": "ray"}, "tracking": {"wandb": {"mode": "disabled"}},
    }
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "orchestrator.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*cmd, "run", str(spec_file), "--backend", "inline", "--out", str(run_dir)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if len(list((run_dir / "trials").glob("*.parquet"))) >= 3:  # mid-trial: seed 0 of trial 1 landed
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    landed = len(list((run_dir / "trials").glob("*.parquet")))
    assert 3 <= landed < 12

    res = subprocess.run([*cmd, "resume", str(run_dir)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "re-enqueued" in res.stderr  # the trial killed mid-flight was reconciled
    t = read_results(run_dir)
    fps = t.column("fingerprint").to_pylist()
    assert len(fps) == len(set(fps)) == 12  # 6 trials x 2 seeds, each exactly once
    assert set(t.column("state").to_pylist()) == {"COMPLETE"}
    for p in (run_dir / "trials").glob("*.parquet"):  # every visible file is whole
        if not p.name.startswith("."):
            assert pq.read_table(p).num_rows >= 1
    s = load_spec(yaml.safe_load((run_dir / "spec.yaml").read_text()))
    study = optuna.load_study(study_name=s.name, storage=storage_for(s, run_dir))
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6
    assert sorted(fp for tr in complete for fp in tr.user_attrs["fingerprints"]) == sorted(fps)
