"""What optuna-dashboard shows of a sweep: Optuna 5 keeps constraint values under system-attribute
keys dashboard 0.21 does not read (its `constraints` field stays empty), so the driver also writes
them as user attributes, which the dashboard lists for every trial."""
from __future__ import annotations

import optuna
import pytest

from orchestrator.runner import run_sweep
from sweeps.spec import load_spec
from sweeps.study import storage_for
from tests.sweep_util import fake_task, small_spec

serializer = pytest.importorskip("optuna_dashboard._serializer")


def test_constraint_values_reach_the_dashboard_as_user_attributes(tmp_path):
    spec = load_spec(small_spec(n_trials=6, sampler={"name": "random", "seed": 0}))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    study = optuna.load_study(study_name=spec.name, storage=storage_for(spec, tmp_path))
    seen = set()
    for t in study.get_trials():
        shown = serializer.serialize_frozen_trial(study._study_id, t, {})
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        (key, value), = t.constraints.items()  # what Optuna 5's samplers use
        assert float(attrs[f"constraint: {key}"]) == pytest.approx(value)
        assert attrs["feasible"] == str(value <= 0)
        assert shown["constraints"] == []  # the dashboard's own field: the limitation we document
        seen.add(value <= 0)
    assert seen == {True, False}
