"""Search seeds raced (spec `race`, sweeps/race.py): a configuration off beyond doubt after its first
seed is dropped (its other seeds recorded, never run; its trial PRUNED; never on a front), a good one
never is, and a resumed or interrupted sweep races exactly as an uninterrupted one."""
from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from orchestrator.runner import run_sweep
from sweeps.race import Race, means_stds
from sweeps.report.analysis import analyze
from sweeps.report.summary import summary_text
from sweeps.results import failure_reasons, read_results
from sweeps.spec import load_spec
from sweeps.study import storage_for
from tests.sweep_util import fake_task, small_spec

FRONT = 0.03  # forget_gap |100 lr - 3| and test_acc 95 - 100 lr: the front is lr <= 0.03
BAD = 0.07  # utility_drop 100 lr (bound 5): seed 0 (-0.5) past it by more than 3 spreads beyond this lr
NOISE = 0.5  # seed-to-seed: -0.5, 0, +0.5 (sample std 0.5), against the metric


def task(calls: list):
    def fn(payload, on_epoch=None):
        lr, s = payload["params"]["lr"], payload["seeds"]["unlearn_seed"]
        calls.append((lr, s))
        out = fake_task(payload, on_epoch)
        e = NOISE * (s - 1)
        m = out["metrics"]
        m.update(test_acc=95.0 - 100 * lr - e, forget_gap=abs(100 * lr - 3) - e)
        m["utility_drop"] = 95.0 - m["test_acc"]
        return out
    return fn


def spec_of(n_trials: int, **race):
    raw = small_spec(n_trials=n_trials, seeds=[0, 1, 2], sampler={"name": "random", "seed": 3},
                     race={"margin": 3.0, "min_complete": 2, **race})
    raw["methods"] = {"ft": {"space": {"lr": {"type": "log-float", "low": 0.02, "high": 0.3}}}}
    return load_spec(raw)


def study(spec, run_dir) -> optuna.Study:
    return optuna.load_study(study_name=spec.name, storage=storage_for(spec, run_dir))


def record(run_dir) -> dict[float, tuple[str, ...]]:
    """lr (one configuration each) -> its rows' states by seed index"""
    df = read_results(run_dir).to_pandas().sort_values(["p_lr", "seed_index"])
    return {float(lr): tuple(g["state"]) for lr, g in df.groupby("p_lr")}


# -- the rule --------------------------------------------------------------------------------------

def _race(margin=3.0):
    raw = small_spec(seeds=[0, 1, 2], race={"margin": margin, "min_complete": 2})
    r = Race.of(load_spec(raw))
    for n, (gap, acc) in enumerate([(1.0, 92.0), (2.0, 91.0)]):  # spread 0.5 in every metric
        r.add(n, {"forget_gap": gap, "test_acc": acc, "utility_drop": 95 - acc},
              {"forget_gap": 0.5, "test_acc": 0.5, "utility_drop": 0.5}, True)
    return r


def test_no_verdict_before_the_spread_is_known_nor_without_seeds_to_save():
    r = Race.of(load_spec(small_spec(seeds=[0, 1, 2], race={"min_complete": 3})))
    r.add(0, {"forget_gap": 1, "test_acc": 92, "utility_drop": 3}, {"forget_gap": 0.5, "test_acc": 0.5,
                                                                     "utility_drop": 0.5}, True)
    assert r.verdict({"forget_gap": 90.0, "test_acc": 10.0, "utility_drop": 85.0}) is None
    assert Race.of(load_spec(small_spec(seeds=[0], race=True))) is None  # one seed: nothing to race
    assert Race.of(load_spec(small_spec(seeds=[0, 1]))) is None  # race off by default


def test_infeasible_beyond_doubt_is_dropped_within_the_margin_is_not():
    r = _race()
    why = r.verdict({"forget_gap": 0.0, "test_acc": 88.0, "utility_drop": 7.0})  # 5 + 4 spreads
    assert why and why.startswith("infeasible beyond doubt: utility_drop 7")
    assert r.verdict({"forget_gap": 0.0, "test_acc": 89.0, "utility_drop": 6.0}) is None  # 5 + 2 spreads


def test_dominated_beyond_doubt_in_every_objective_is_dropped():
    r = _race()
    why = r.verdict({"forget_gap": 3.0, "test_acc": 90.0, "utility_drop": 5.0})  # trial 0: 4 spreads in both
    assert why and "dominated beyond doubt by trial 0" in why
    # worse by far in one objective, by less than the margin in the other: kept
    assert r.verdict({"forget_gap": 30.0, "test_acc": 91.5, "utility_drop": 3.5}) is None


@pytest.mark.parametrize("margin", [1.0, 3.0])
def test_a_configuration_as_good_as_a_told_one_is_never_dropped(margin):
    """Any first seed within the margin of a front member in some objective, and feasible within
    the margin, is kept, wherever else it lies."""
    r = _race(margin)
    import random

    rng = random.Random(0)
    for _ in range(500):
        gap = 1.0 + rng.uniform(-1, 1) * margin * 0.5  # within the margin of trial 0's forget_gap
        acc = rng.uniform(50, 99)
        drop = min(95 - acc, 5 + margin * 0.5 * rng.random())
        assert r.verdict({"forget_gap": gap, "test_acc": acc, "utility_drop": drop}) is None


def test_means_stds_are_the_sample_statistics():
    means, stds = means_stds([{"a": 1.0}, {"a": 2.0}, {"a": 3.0}], ["a", "b"])
    assert means["a"] == 2.0 and stds["a"] == 1.0 and math.isnan(means["b"])


def test_race_spec_rejects_unknown_keys_and_bad_values():
    from unlearning.errors import UserError

    for bad in ({"margins": 2}, {"margin": 0}, {"seeds": 0}, {"min_complete": 1}):
        with pytest.raises(UserError, match="race"):
            load_spec(small_spec(race=bad))


# -- the sweep ---------------------------------------------------------------------------------------

def test_a_raced_sweep_drops_the_bad_runs_and_keeps_every_good_one(tmp_path):
    calls: list = []
    spec = spec_of(16)
    out = run_sweep(spec, tmp_path, fn=task(calls), log=None)
    trials = study(spec, tmp_path).trials
    rec = record(tmp_path)
    assert out["raced"] > 0 and out["done"] + out["raced"] == 16 and out["failed"] == 0
    complete_before = 0
    for t in trials:
        lr = t.params["ft.lr"]
        if lr <= FRONT:  # on the front: never stopped, every seed ran, told with values
            assert t.state == TrialState.COMPLETE and rec[lr] == ("COMPLETE",) * 3
        elif lr > BAD and complete_before >= 2:  # infeasible beyond doubt, the spread known: stopped
            assert t.state == TrialState.PRUNED and t.user_attrs["failure_kind"] == "raced"
            assert "beyond doubt" in t.user_attrs["error"]
            assert rec[lr] == ("COMPLETE", "PRUNED", "PRUNED")
        if t.state == TrialState.COMPLETE:
            complete_before += 1
        else:  # the only other state here
            assert t.state == TrialState.PRUNED and rec[lr] == ("COMPLETE", "PRUNED", "PRUNED")
            assert not any(s > 0 for x, s in calls if x == lr)  # its other seeds never ran
    assert len(calls) == len(set(calls)) == 3 * 16 - 2 * out["raced"]

    a = analyze(tmp_path, spec)
    c = a.configs.set_index("trial_number")
    for t in trials:
        if t.state == TrialState.PRUNED:  # typed in the analysis too: never a result, never on the front
            assert c.loc[t.number, "state"] == "PRUNED" and not c.loc[t.number, "feasible"]
            assert c.loc[t.number, "n"] == 1 and t.number not in set(a.front["trial_number"])
    df = read_results(tmp_path).to_pandas()
    raced = df[df["state"] == "PRUNED"]
    assert (raced["failure_kind"] == "raced").all() and raced["test_acc"].isna().all()
    assert f"{out['raced']} raced out after their first seed(s)" in summary_text(a)
    assert failure_reasons(read_results(tmp_path)) == []  # raced runs never ran: not failures


def test_resume_and_an_interruption_race_as_one_uninterrupted_sweep(tmp_path):
    calls: list = []
    spec = spec_of(12)
    run_sweep(spec, tmp_path / "once", fn=task(calls), log=None)
    want = record(tmp_path / "once")
    assert any("PRUNED" in s for s in want.values())

    # in two steps: the race rebuilt from the study gives the same verdicts
    calls2: list = []
    run_sweep(spec_of(6), tmp_path / "twice", fn=task(calls2), log=None)
    run_sweep(spec, tmp_path / "twice", fn=task(calls2), log=None)
    assert record(tmp_path / "twice") == want
    assert sorted(calls2) == sorted(calls)  # nothing ran twice, no raced seed ran on resume

    # interrupted (Ctrl-C) at every 7th run, resumed until done: the same record in the end
    calls3: list = []
    inner, hit = task(calls3), set()

    def flaky(payload, on_epoch=None):
        if len(calls3) % 7 == 6 and len(calls3) not in hit:
            hit.add(len(calls3))
            raise KeyboardInterrupt
        return inner(payload, on_epoch)
    for _ in range(20):
        try:
            run_sweep(spec, tmp_path / "flaky", fn=flaky, log=None)
            break
        except KeyboardInterrupt:
            continue
    assert hit and record(tmp_path / "flaky") == want
    st = study(spec, tmp_path / "flaky")
    assert sum(t.state == TrialState.PRUNED for t in st.trials) == sum("PRUNED" in s for s in want.values())


def test_a_configuration_proposed_again_keeps_the_runs_it_ran(tmp_path):
    """A configuration that ran every seed before the race knew the spread, proposed again later
    and judged off then, keeps its complete rows: a run that ran is never overwritten by a raced one."""
    calls: list = []
    raw = small_spec(n_trials=12, seeds=[0, 1, 2], sampler={"name": "random", "seed": 0},
                     race={"min_complete": 2})
    raw["methods"] = {"ft": {"space": {"lr": [0.02, 0.03, 0.3]}}}
    spec = load_spec(raw)
    run_sweep(spec, tmp_path, fn=task(calls), log=None)
    df = read_results(tmp_path).to_pandas()
    state = {(float(r.p_lr), int(r.seed_index)): r.state for r in df.itertuples()}
    assert all(state[(lr, s)] == "COMPLETE" for lr, s in calls)  # every run that ran is on record
    assert all(v == "COMPLETE" for (lr, s), v in state.items() if lr < 0.1)
    assert len(calls) == len(set(calls))


def test_race_may_be_turned_on_when_a_sweep_is_resumed(tmp_path):
    """`race` extends a sweep (as seeds and n_trials do): a resume may turn it on; the race then
    learns the spread from the configurations it tells, and what ran before stays as it was."""
    calls: list = []
    raw = spec_of(6).model_dump(mode="json", exclude_defaults=True)
    run_sweep(load_spec({**raw, "race": None}), tmp_path, fn=task(calls), log=None)
    before = record(tmp_path)
    assert all(s == ("COMPLETE",) * 3 for s in before.values())
    out = run_sweep(load_spec({**raw, "n_trials": 16}), tmp_path, fn=task(calls), log=None)
    after = record(tmp_path)
    assert {lr: after[lr] for lr in before} == before and len(calls) == len(set(calls))
    assert out["raced"] > 0 and sum("PRUNED" in s for s in after.values()) == out["raced"]
