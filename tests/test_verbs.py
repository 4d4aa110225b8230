"""The verbs Optuna and Ray Tune users reach for (issue 18): `trials` (every trial with its state,
parameters, n and values, like `optuna trials`), `stop` (a running sweep ended gracefully from
another shell), `status` naming a running replicate or audit."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from orchestrator.cli import main
from orchestrator.runner import run_sweep
from sweeps import results as R
from sweeps.rundir import DriverLock
from sweeps.spec import load_spec
from sweeps.study import open_study
from tests.sweep_util import fake_task, small_spec

ROOT = Path(__file__).resolve().parents[1]


def failing_rl(payload, on_epoch=None):
    """The fake task, except that every rl run fails (a typed failure, as a method's bug would)."""
    if payload["method"] == "rl":
        return {"state": "FAIL", "failure": {"kind": "diverged", "message": "non-finite loss in epoch 0"},
                "method": "rl", "params": payload.get("params", {}), "config": payload}
    return fake_task(payload, on_epoch)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A sweep of 8 trials on 2 seeds where rl fails, plus one trial left RUNNING (a driver killed)."""
    d = tmp_path_factory.mktemp("trials") / "t"
    spec = load_spec(small_spec(n_trials=8, seeds=[0, 1], sampler={"name": "random", "seed": 3}))
    run_sweep(spec, d, fn=failing_rl, log=None)
    study = open_study(spec, d)
    t = study.ask()
    t.suggest_categorical("method", list(spec.methods))
    return d, spec


def test_trials_lists_every_trial_with_state_params_n_and_values(run, capsys):
    d, spec = run
    assert main(["trials", str(d)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("sweep t: 9 trial(s): ") and "1 running" in lines[0]
    assert "forget_gap ↓" in lines[1] and "test_acc ↑" in lines[1] and "params" in lines[1]
    t = R.read_results(d).to_pandas()
    for number, g in t.groupby("trial_number"):
        row = next(ln for ln in lines[2:] if ln.split()[0] == str(number))
        method = g["method"].iloc[0]
        assert f" {method} " in row and f"lr={json.loads(g['params_json'].iloc[0])['lr']:.4g}" in row
        assert ("COMPLETE" in row) == (method == "ft") and ("non-finite loss" in row) == (method == "rl")
    assert any(ln.split()[1] == "RUNNING" for ln in lines[2:])


def test_trials_filters_by_method_and_state_and_speaks_json(run, capsys):
    d, spec = run
    assert main(["trials", str(d), "--method", "ft", "--state", "complete", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    t = R.read_results(d).to_pandas()
    ft = t[t["method"] == "ft"]
    assert [r["number"] for r in rows] == sorted(set(ft["trial_number"]))
    for r in rows:
        g = ft[ft["trial_number"] == r["number"]]
        assert r["state"] == "COMPLETE" and r["method"] == "ft" and r["n"] == 2 == len(g)
        assert r["values"]["forget_gap"] == pytest.approx(g["forget_gap"].mean())
        assert r["stds"]["test_acc"] == pytest.approx(g["test_acc"].std())
        assert set(r["params"]) == {"lr"}  # the searched ones (epochs is fixed)
    assert main(["trials", str(d), "--state", "fail", "--json"]) == 0
    failed = json.loads(capsys.readouterr().out)
    assert failed and all(r["method"] == "rl" and r["failure_kind"] == "diverged" for r in failed)
    assert main(["trials", str(d), "--state", "running", "--json"]) == 0
    [running] = json.loads(capsys.readouterr().out)
    assert running["n"] == 0 and running["values"]["forget_gap"] is None and running["method"] in spec.methods
    assert main(["trials", str(d), "--method", "nope"]) == 2
    assert "nope is not a method of sweep t" in capsys.readouterr().err
    assert main(["trials", str(d), "--state", "done"]) == 2


# -- stop and status --------------------------------------------------------------------------------

def _env(**extra) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "FAKE_TASK_SECONDS": "0.3", **extra}


def test_stop_ends_a_running_sweep_gracefully_from_another_shell(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(small_spec(n_trials=40)))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tests.drive", "run", str(spec), "--out", str(run_dir),
                             "--backend", "inline"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(R._files(run_dir / "trials")) < 2:
        time.sleep(0.05)
    assert proc.poll() is None
    assert main(["status", str(run_dir)]) == 0
    assert f"sweep running (pid {proc.pid}" in capsys.readouterr().out
    assert main(["stop", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"sent SIGTERM to the sweep (pid {proc.pid})" in out and "stopped: no driver running" in out
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err
    s = load_spec(yaml.safe_load((run_dir / "spec.yaml").read_text()), check_data=False)
    study = open_study(s, run_dir)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))  # re-enqueued, not left
    assert 2 <= len(R.read_results(run_dir)) < 40 and not (run_dir / "driver.lock").exists()
    assert main(["stop", str(run_dir)]) == 1  # nothing runs there now: one line, not bad input
    assert "nothing to stop (no driver running)" in capsys.readouterr().err


def test_stop_refuses_a_lock_of_another_host_in_one_line(tmp_path, capsys):
    (tmp_path / "driver.lock").write_text(json.dumps({"pid": 4242, "host": "elsewhere", "started": "x"}))
    assert main(["stop", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "pid 4242 on host elsewhere, which this host cannot signal" in err


def test_status_names_a_running_replicate_and_audit(run, capsys):
    d, _ = run
    (d / "audit").mkdir(exist_ok=True)
    locks = [DriverLock(d, role="replicate"), DriverLock(d / "audit", role="audit")]
    for lock in locks:
        lock.acquire()
    try:
        assert main(["status", str(d)]) == 0
        head = capsys.readouterr().out.splitlines()[0]
        assert f"replicate running (pid {os.getpid()}" in head and f"audit running (pid {os.getpid()}" in head
        assert main(["status", str(d), "--json"]) == 0
        st = json.loads(capsys.readouterr().out)
        assert st["driver"]["role"] == "replicate" and st["driver"]["running"] is True
        assert {lk["role"] for lk in st["locks"]} == {"replicate", "audit"}
        assert all(lk["host"] == socket.gethostname() for lk in st["locks"])
    finally:
        for lock in locks:
            lock.release()
    assert main(["status", str(d)]) == 0
    assert "no driver running" in capsys.readouterr().out.splitlines()[0]


# -- plan ---------------------------------------------------------------------------------------------

def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_plan_shows_space_runs_oracles_and_an_estimate_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNLEARN_SWEEP_CACHE", str(cache))
    raw = small_spec(n_trials=5, seeds=[0, {"split_seed": 1, "train_seed": 1}],
                     base={"data": {"name": "digits"}, "model": "mlp"})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    assert main(["plan", "s.yaml"]) == 0
    out = capsys.readouterr().out
    assert "ft: epochs = 1; lr log-float [0.001, 0.1]" in out and "rl: lr float [0.001, 0.1]" in out
    assert "runs: 5 configuration(s) x 2 seed(s) = 10 run(s)" in out
    assert "oracles: 4 model(s) for the seeds, 4 to train" in out  # an Original and a Retrain per seed pair
    assert "the first 5 configuration(s) at random" in out
    est = next(ln for ln in out.splitlines() if ln.startswith("estimate: about "))
    assert "10 run(s) x" in est and "from a probe here" in est
    assert out.rstrip().endswith("nothing was started or written")
    assert _tree(tmp_path) == ["s.yaml"] and not cache.exists()  # no run directory, no oracle cache
    assert main(["run", "s.yaml", "--dry-run", "--no-probe"]) == 0
    out = capsys.readouterr().out
    assert "estimate: none without a probe" in out and _tree(tmp_path) == ["s.yaml"]


def test_plan_of_a_run_on_record_estimates_from_the_record(run, capsys):
    d, _ = run
    before = _tree(d)
    assert main(["plan", str(d), "--set", "n_trials=12", "--no-probe", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    t = R.read_results(d).to_pandas()
    assert p["exists"] and p["runs"] == 24 and p["runs_on_record"] == int((t["state"] == "COMPLETE").sum())
    assert p["runs_to_do"] == (12 - t["trial_number"].nunique()) * 2
    assert p["estimate"]["source"].startswith("the record") and p["estimate"]["run_s"] > 0
    assert _tree(d) == before


# -- W&B: the sweep-level run -------------------------------------------------------------------------

def test_the_sweep_level_run_holds_the_front_the_table_and_the_plots(tmp_path, monkeypatch):
    from orchestrator.tracking import NullTracker, log_sweep_report
    from sweeps.report.summary import write_report
    from sweeps.rundir import run_identity
    from tests.wandb_offline import offline_runs

    monkeypatch.delenv("WANDB_MODE", raising=False)  # conftest's kill switch
    spec = load_spec(small_spec(n_trials=3, seeds=[0, 1], tracking={"wandb": {"mode": "offline"}}))
    run_sweep(spec, tmp_path, fn=fake_task, log=None, tracker=NullTracker())  # no per-trial runs here
    a, report = write_report(tmp_path, spec)
    assert log_sweep_report(spec, tmp_path, a, report.parent)
    [run] = offline_runs(tmp_path / "wandb")
    assert run["name"] == "t-sweep" and run["group"] == run_identity(tmp_path)["run_id"]
    s = run["summary"]
    assert s["configurations"] == 3 and s["hypervolume"] == pytest.approx(a.hypervolume)
    assert s["table/configurations/nrows"] == 3 and s["plot/front/_type"] == "image-file"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # W&B off: nothing is logged
    assert not log_sweep_report(spec, tmp_path, a, report.parent)


@pytest.mark.slow
def test_wandb_gets_a_sweep_level_run_beside_the_trials(tmp_path):
    from sweeps.rundir import run_identity
    from tests.wandb_offline import offline_runs

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(small_spec(n_trials=2, tracking={"wandb": {"mode": "offline",
                                                                                "project": "p"}})))
    env = {k: v for k, v in _env(FAKE_TASK_SECONDS="0").items() if k != "WANDB_MODE"}  # conftest's switch
    res = subprocess.run([sys.executable, "-m", "tests.drive", "run", str(spec), "--out", str(tmp_path / "r"),
                          "--backend", "inline"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = offline_runs(tmp_path / "r" / "wandb")
    group = run_identity(tmp_path / "r")["run_id"]
    assert all(r["group"] == group for r in runs)
    trials = [r for r in runs if r["name"] != "t-sweep"]
    [sweep] = [r for r in runs if r["name"] == "t-sweep"]
    assert len(trials) == 2 and sweep["exit_code"] == 0
    assert sweep["config"]["name"] == "t" and sweep["config"]["n_trials"] == 2
    s = sweep["summary"]
    assert s["configurations"] == 2 and s["hypervolume"] > 0 and s["pick/oracle"].startswith(("ft", "rl"))
    for table in ("front", "field", "configurations"):
        assert s[f"table/{table}/_type"] == "table-file", table
    assert s["table/configurations/nrows"] == 2 and s["table/field/nrows"] >= 4  # Retrain, Original, picks
    for plot in ("front", "history"):
        assert s[f"plot/{plot}/_type"] == "image-file", plot


def test_model_pick_names_the_kept_trials_when_a_description_has_no_trial_number():
    # a description without trial_number (a model put in models/ by hand) made the line a TypeError
    from orchestrator.verbs.model import pick
    from unlearning.errors import UserError

    models = [{"trial_number": 3, "path": "a.pt"}, {"path": "b.pt"}]
    with pytest.raises(UserError, match=r"models kept for trials: 3;"):
        pick(models, 7, None, None)
