"""The audit as a distributed job (orchestrator/audit.py): planned from a sweep's record, run on a
backend, written per task atomically, resumed after SIGKILL with every shadow trained once, reused
by a larger audit, reachable from the CLI; on a simulated 2-node Ray cluster the shadows spread.

The sweep records are made with the fake task (tests/sweep_util.py): the audit then runs REAL
tasks (digits, a 3-epoch MLP recipe) on the configurations the record ranks first."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from orchestrator.audit import plan, run_audit
from orchestrator.cli import main
from orchestrator.runner import run_sweep
from sweeps.report.audit_results import audit_dir, audit_section, audit_summary, read_tasks
from sweeps.spec import AuditSpec, load_spec
from tests.sweep_util import fake_task, small_spec

FAST = {"data": {"name": "digits"}, "model": "mlp", "train": {"epochs": 3}}


def make_record(path: Path, **over) -> Path:
    raw = small_spec(**{"n_trials": 4, "sampler": {"name": "random", "seed": 1}, "base": dict(FAST), **over})
    run_sweep(load_spec(raw), path, fn=fake_task, log=None)
    return path


@pytest.fixture()
def record(tmp_path):
    return make_record(tmp_path / "run")


def test_audit_writes_per_example_results_and_a_summary_then_reuses_everything(record):
    spec = load_spec(json.loads(json.dumps(small_spec(base=dict(FAST)))))
    audit = AuditSpec(top=1, shadows=4)
    out = run_audit(spec, record, audit, log=None)
    assert out["ran"] == out["tasks"] == len(plan(spec, audit, out["configs"]))
    s = audit_summary(record)
    assert list(s["method"][1:]) == ["original", "retrain"] and s["rank"].iloc[0] == 0
    for col in ("ulira_auc", "ulira_offline_auc", "klom_forget_mean", "klom_val_mean", "relearn_steps",
                "ain"):
        assert s[col].notna().all(), col
    assert (s["n_shadows"] == 4).all() and (s["n_failed"] == 0).all()
    ex = pq.read_table(audit_dir(record) / "examples.parquet").to_pandas()
    forget = ex[(ex["set"] == "forget") & (ex["config_id"] == s["config_id"].iloc[0])]
    from unlearning.data import DataConfig, load_dataset
    from unlearning.splits import SplitConfig, make_split

    n_forget = len(make_split(load_dataset(DataConfig(name="digits")), SplitConfig(), 0).forget)
    assert len(forget) == n_forget and forget["example"].is_unique
    row = forget.iloc[0]
    assert len(row["score"]) == len(row["lr_online"]) == len(row["margin"]) == 4
    assert set(row["held_by"]) <= set(row["shadows"]) == {0, 1, 2, 3}
    assert {"retain", "val"} <= set(ex["set"])
    assert "U-LiRA AUC" in audit_section(record) and (audit_dir(record) / "summary.md").is_file()

    again = run_audit(spec, record, audit, log=None)  # everything is in the record already
    assert again["ran"] == 0
    bigger = run_audit(spec, record, AuditSpec(top=1, shadows=6, kinds=["ulira"]), log=None)
    # only what the 2 new shadows need: they and 2 more Retrain models (the `retrain` baseline turns
    # shadow k into Retrain k) trained, then the shadows scored under the 3 configurations
    assert bigger["ran"] == 2 + 2 + 2 * 3
    assert (audit_summary(record)["n_shadows"] == 6).all()


def test_cli_audit_and_its_bad_input(record, capsys):
    assert main(["audit", str(record), "--top", "1", "--shadows", "2", "--kind", "klom,relearn",
                 "--backend", "inline"]) == 0
    out = capsys.readouterr().out
    assert "KLoM forget" in out and "U-LiRA" in out
    assert main(["audit", str(record), "--kind", "lira"]) == 2
    assert "kinds.0" in capsys.readouterr().err
    assert main(["audit", str(record.parent / "nowhere")]) == 2
    assert main(["audit", str(record), "--shadows", "1"]) == 2


def test_a_record_without_feasible_configurations_is_one_line(tmp_path, capsys):
    rec = make_record(tmp_path / "r", constraints=[{"metric": "utility_drop", "max": -100.0}])
    assert main(["audit", str(rec)]) == 2
    assert "no feasible" in capsys.readouterr().err


def test_spec_audit_section_is_validated_and_asks_for_an_audit():
    raw = small_spec(audit={"top": 2, "shadows": 8, "kinds": ["ulira"]})
    assert load_spec(raw).audit == AuditSpec(top=2, shadows=8, kinds=["ulira"])
    from unlearning.errors import UserError

    with pytest.raises(UserError, match="audit.shadowz: unknown key"):
        load_spec(small_spec(audit={"shadowz": 3}))
    with pytest.raises(UserError, match="relearning attack"):
        load_spec(small_spec(objectives=[{"metric": "relearn_steps"}]))
    assert load_spec(small_spec(objectives=[{"metric": "tow", "direction": "maximize"}])).selection_rule \
        == "oracle"


def _shadow_metas(cache: Path) -> dict[str, float]:
    out = {}
    for p in cache.glob("*.json"):
        info = json.loads(p.read_text())
        if info["key"]["kind"] == "shadow":
            out[p.stem] = info["created"]
    return out


@pytest.mark.slow
def test_sigkilled_audit_resumes_and_trains_every_shadow_once(tmp_path):
    rec = make_record(tmp_path / "run", base={**FAST, "model": "small_cnn"})
    cache = tmp_path / "cache"
    env = {**os.environ, "UNLEARN_SWEEP_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "orchestrator.cli", "audit", str(rec), "--top", "1", "--shadows", "4",
           "--kind", "ulira", "--backend", "inline", "--set", "audit.baselines=false"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tasks = audit_dir(rec) / "tasks"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if tasks.is_dir() and len([p for p in tasks.glob("*.parquet")]) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the audit finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = _shadow_metas(cache)
    assert 2 <= len(before) < 4 and not (audit_dir(rec) / "summary.parquet").exists()

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    after = _shadow_metas(cache)
    assert len(after) == 4
    assert {k: after[k] for k in before} == before  # none trained again
    rows = read_tasks(rec)
    train = [r for r in rows.values() if r["op"] == "train" and r["role"] == "shadow"]
    assert sorted(r["index"] for r in train) == [0, 1, 2, 3]  # one record per shadow
    # a shadow trained before the kill is never reported as trained again
    assert sum(not r["cached"] for r in train) <= 4
    s = audit_summary(rec)
    assert (s["n_shadows"] == 4).all() and s["ulira_auc"].notna().all()


@pytest.mark.slow
@pytest.mark.ray
def test_shadow_training_spreads_over_two_ray_nodes(tmp_path):
    """A simulated 2-node cluster (ray.cluster_utils.Cluster, as tests/test_ray_faults.py): one
    trial slot per node, the audit's shadow training lands on both."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from cluster.ray_backend import RayBackend
    from tests.test_ray_faults import _token_auth
    from unlearning.audit import run_audit_task

    rec = make_record(tmp_path / "run", base={**FAST, "model": "small_cnn"})
    old = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    os.environ.pop("RAY_ADDRESS", None)
    _token_auth(on=True)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"slot": 1},
                                                      "include_dashboard": False})
    c.add_node(num_cpus=1, resources={"slot": 1}, include_dashboard=False)
    c.wait_for_nodes()
    c.connect()
    try:
        backend = RayBackend(run_audit_task, None, cpus_per_trial=1, resources_per_trial={"slot": 1})
        assert backend.capacity() == 2
        spec = load_spec(small_spec(base={**FAST, "model": "small_cnn"}))
        out = run_audit(spec, rec, AuditSpec(top=1, shadows=4, kinds=["ulira"]), backend=backend, log=None)
        backend.shutdown()
        shadows = [r for r in read_tasks(rec).values() if r["op"] == "train" and r["role"] == "shadow"]
        assert len(shadows) == 4 and len({r["node"] for r in shadows}) == 2, shadows
        assert len(out["nodes"]) == 2
    finally:
        ray.shutdown()
        c.shutdown()
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        _token_auth(on=None)
