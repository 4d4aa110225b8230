"""The study: journal storage, fingerprints, reconciliation of trials a dead driver left RUNNING."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.space import decode, suggest
from sweeps.spec import load_spec
from sweeps.study import REQUEUED, DriverLock, counted, fingerprint, open_study, reconcile
from tests.sweep_util import small_spec
from unlearning.errors import UserError


def test_fingerprint_depends_on_what_changes_the_result_only():
    spec = load_spec(small_spec())
    s0 = {"split_seed": 0, "train_seed": 0, "unlearn_seed": 0}
    fp, full = fingerprint(spec.trial_config("ft", {"lr": 0.01}, s0))
    assert full["params"]["epochs"] == 5  # defaults filled in
    # the same configuration spelled with its defaults explicit is the same run
    assert fingerprint(spec.trial_config("ft", {"lr": 0.01, "epochs": 5}, s0))[0] == fp
    assert fingerprint(spec.trial_config("ft", {"lr": 0.02}, s0))[0] != fp
    assert fingerprint(spec.trial_config("ft", {"lr": 0.01}, {**s0, "unlearn_seed": 1}))[0] != fp
    assert fingerprint(spec.trial_config("rl", {"lr": 0.01}, s0))[0] != fp
    other = {**spec.trial_config("ft", {"lr": 0.01}, s0), "model": "mlp"}
    assert fingerprint(other)[0] != fp
    # where it runs does not change what it computes
    assert fingerprint({**spec.trial_config("ft", {"lr": 0.01}, s0), "device": "cpu",
                        "cache_dir": "/elsewhere"})[0] == fp


def test_conditional_space_per_method(tmp_path):
    spec = load_spec(small_spec(n_trials=20, sampler={"name": "random", "seed": 1}))
    study = open_study(spec, tmp_path)
    seen = set()
    for _ in range(12):
        t = study.ask()
        method, params = suggest(t, spec)
        seen.add(method)
        assert set(t.params) == {"method", f"{method}.lr"}
        if method == "ft":
            assert params["epochs"] == 1  # fixed values never reach Optuna
        assert decode(spec, t.params) == (method, params)
        study.tell(t, [1.0, 2.0])
    assert seen == {"ft", "rl"}


def test_journal_resume_reconciles_running_trials(tmp_path):
    spec = load_spec(small_spec())
    study = open_study(spec, tmp_path)
    assert (tmp_path / "study.journal").is_file()
    done = study.ask()
    suggest(done, spec)
    study.tell(done, [1.0, 90.0])
    orphan = study.ask()
    _, params = suggest(orphan, spec)
    orphan_params = dict(orphan.params)
    del study  # the driver "dies" with a trial RUNNING

    study = open_study(spec, tmp_path)
    assert [t.number for t in study.get_trials(states=(TrialState.RUNNING,))] == [orphan.number]
    assert reconcile(study) == [orphan.number]
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[orphan.number].state == TrialState.FAIL and REQUEUED in trials[orphan.number].user_attrs
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"] == orphan_params
    assert counted(study) == 1  # the re-enqueued trial does not count towards n_trials
    again = study.ask()  # the enqueued parameters come back first
    assert suggest(again, spec)[1] == params


def test_directions_must_match_on_resume(tmp_path):
    open_study(load_spec(small_spec()), tmp_path)
    raw = small_spec()
    raw["objectives"][1]["direction"] = "minimize"
    with pytest.raises(UserError, match="^objectives: the study"):
        open_study(load_spec(raw), tmp_path)


def test_grid_points_are_enqueued_once(tmp_path):
    raw = small_spec(sampler={"name": "grid"})
    raw["methods"] = {"ft": {"space": {"lr": [0.01, 0.02, 0.03]}}}
    spec = load_spec(raw)
    study = open_study(spec, tmp_path)
    open_study(spec, tmp_path)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.system_attrs["fixed_params"]["ft.lr"] for t in waiting) == [0.01, 0.02, 0.03]


def test_rdb_storage_url(tmp_path):
    spec = load_spec(small_spec(storage=f"sqlite:///{tmp_path / 's.db'}"))
    study = open_study(spec, tmp_path)
    t = study.ask()
    suggest(t, spec)
    study.tell(t, [1.0, 2.0])
    assert optuna.load_study(study_name="t", storage=spec.storage).trials[0].state == TrialState.COMPLETE


def test_driver_lock_refuses_a_second_live_driver(tmp_path):
    import os
    import socket

    (tmp_path / "driver.lock").write_text(f"{os.getppid()}@{socket.gethostname()}")
    with pytest.raises(UserError, match="already running"):
        DriverLock(tmp_path).acquire()
    (tmp_path / "driver.lock").write_text(f"999999999@{socket.gethostname()}")  # dead: taken over
    DriverLock(tmp_path).acquire()


def test_rdb_storage_that_cannot_be_opened_is_one_user_error(tmp_path):
    spec = load_spec(small_spec(storage=f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 's.db'}"))
    with pytest.raises(UserError, match="^storage: cannot open the study"):
        open_study(spec, tmp_path)
