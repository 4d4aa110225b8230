"""The study: journal storage, fingerprints, reconciliation of trials a dead driver left RUNNING."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.space import decode, suggest
from sweeps.spec import load_spec
from sweeps.fingerprint import fingerprint
from sweeps.rundir import DriverLock
from sweeps.study import counted, open_study, reconcile, superseded
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
    assert reconcile(study) == {"left RUNNING by a driver that died": [orphan.number]}
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[orphan.number].state == TrialState.FAIL and orphan.number in superseded(study)
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


def _hold_lock(run_dir, ready, release):
    lock = DriverLock(run_dir)
    lock.acquire()
    ready.set()
    release.wait(30)
    lock.release()


def test_driver_lock_refuses_a_live_driver_and_takes_over_a_dead_ones(tmp_path):
    import multiprocessing as mp
    import os
    import signal

    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    holder.start()
    assert ready.wait(10)
    with pytest.raises(UserError, match=rf"a driver \(pid {holder.pid} on .*\) is already running"):
        DriverLock(tmp_path).acquire()
    os.kill(holder.pid, signal.SIGKILL)  # dies holding it: the kernel lets go, the file stays
    holder.join()
    assert (tmp_path / "driver.lock").exists()
    lock = DriverLock(tmp_path)
    lock.acquire()  # stale: taken over
    assert lock.owner()["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "driver.lock").exists()


def test_driver_lock_from_another_host_is_refused_unless_forced(tmp_path):
    import json

    (tmp_path / "driver.lock").write_text(json.dumps({"pid": 4242, "host": "node-b", "token": "x",
                                                      "started": "2026-12-01T03:00:00+00:00"}))
    with pytest.raises(UserError, match="names pid 4242 on host node-b .* --force"):
        DriverLock(tmp_path).acquire()
    lock = DriverLock(tmp_path)
    lock.acquire(force=True)
    lock.release()


def test_release_never_removes_a_lock_another_driver_owns(tmp_path):
    import json

    lock = DriverLock(tmp_path)
    lock.acquire()
    theirs = json.dumps({"pid": 1, "host": "elsewhere", "token": "theirs"})
    (tmp_path / "driver.lock").write_text(theirs)  # e.g. someone forced it meanwhile
    lock.release()
    assert (tmp_path / "driver.lock").read_text() == theirs


def _race(run_dir, barrier, results):
    import time

    lock = DriverLock(run_dir)
    barrier.wait()
    try:
        lock.acquire()
        results.put("got")
        time.sleep(0.3)  # hold it while the other one tries
        lock.release()
    except UserError:
        results.put("refused")


@pytest.mark.slow
def test_two_drivers_starting_at_the_same_instant_exactly_one_gets_the_lock(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for i in range(20):
        d = tmp_path / str(i)
        d.mkdir()
        barrier, results = ctx.Barrier(2), ctx.Queue()
        ps = [ctx.Process(target=_race, args=(d, barrier, results)) for _ in range(2)]
        for p in ps:
            p.start()
        for p in ps:
            p.join(10)
        assert sorted(results.get(timeout=5) for _ in ps) == ["got", "refused"], i


def test_torn_and_garbage_journal_tails_are_cut_back_to_whole_records(tmp_path):
    from sweeps.journal import journal_damage, repair_journal
    from sweeps.study import load_study_readonly

    spec = load_spec(small_spec())
    study = open_study(spec, tmp_path)
    for v in (1.0, 2.0):
        t = study.ask()
        suggest(t, spec)
        study.tell(t, [v, 90.0])
    path = tmp_path / "study.journal"
    whole = path.read_bytes()
    assert repair_journal(path) is None  # whole: untouched
    for damage in (b'{"op_code": 5, "worker', b"\x00garbage\n", b"not json at all\n{\"op"):
        path.write_bytes(whole + damage)
        # status reads it without touching it
        ro, notice = load_study_readonly(spec, tmp_path)
        assert len(ro.trials) == 2 and "not whole records" in notice
        assert path.read_bytes() == whole + damage
        note = repair_journal(path)
        assert "removed" in note and path.read_bytes() == whole
        assert journal_damage(path)[1] == 0
        study = open_study(spec, tmp_path)  # appending after the repair keeps the journal whole
        t = study.ask()
        suggest(t, spec)
        study.tell(t, [3.0, 90.0])
        assert len(open_study(spec, tmp_path).trials) == 3
        path.write_bytes(whole)
    assert len(list(tmp_path.glob("study.journal.damaged-*"))) >= 1


def test_sampler_seeded_by_index_proposes_the_same_whatever_the_restarts(tmp_path):
    """The i-th configuration is a function of (seed, i, history): asking with fresh samplers
    (a driver restarted before every trial) gives what one long-lived driver gives."""
    from sweeps.study import make_sampler

    spec = load_spec(small_spec(n_trials=12))

    def sweep(run_dir, restart):
        study = open_study(spec, run_dir)
        out = []
        for i in range(12):
            if restart:
                study = open_study(spec, run_dir)
            study.sampler = make_sampler(spec, i)
            t = study.ask()
            method, params = suggest(t, spec)
            study.tell(t, [params["lr"] * 100, 90 - params["lr"]])
            out.append((method, params["lr"]))
        return out

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = sweep(tmp_path / "a", False), sweep(tmp_path / "b", True)
    assert a == b and len(set(a)) == 12


def test_rdb_storage_that_cannot_be_opened_is_one_user_error(tmp_path):
    spec = load_spec(small_spec(storage=f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 's.db'}"))
    with pytest.raises(UserError, match="^storage: cannot open the study"):
        open_study(spec, tmp_path)


def _lines(path) -> int:
    return len(path.read_bytes().splitlines())


def _view(trials) -> list:
    return [(t.number, t.state, t.params, t.values, t.user_attrs, t.system_attrs) for t in trials]


def test_a_journal_batch_is_one_append_that_this_process_reads_at_once(tmp_path):
    """RunJournal.batch: the block's log lines reach the file together at its end, in order; inside
    it the study reads its own writes; the file then replays to exactly the study this process
    sees, as a journal written call by call does."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from sweeps.run_journal import batch

    spec = load_spec(small_spec(n_trials=4))
    study = open_study(spec, tmp_path, "s")
    path = tmp_path / "study.journal"
    for i in range(4):
        before = _lines(path)
        with batch(study):
            trial = study.ask()
            suggest(trial, spec)
            trial.set_user_attr("run_id", "r")
            assert _lines(path) == before  # nothing on file yet
            assert study.get_trials(deepcopy=False)[-1].user_attrs == {"run_id": "r"}  # read back here
        assert _lines(path) > before + 2
        before = _lines(path)
        with batch(study):
            trial.set_constraint("utility_drop<=3", i - 2.0)
            trial.set_user_attr("feasible", i <= 2)
            study.tell(trial, [float(i), 100.0 - i])
            assert _lines(path) == before
        assert _lines(path) == before + 3
    again = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    assert _view(again.get_trials()) == _view(study.get_trials())
    assert [t.state for t in again.get_trials()] == [TrialState.COMPLETE] * 4
    # outside a batch, call by call as before; and a study on another storage has no batch to open
    study.set_user_attr("after", 1)
    assert optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path)))) \
        .user_attrs["after"] == 1
    with batch(optuna.create_study()):
        pass
