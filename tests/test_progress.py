"""The progress view: plain lines off a terminal with running counts taken after the slots are
refilled, a tqdm bar with rate and ETA on one, and a best so far that survives a resume."""
from __future__ import annotations

import io
import re

import optuna

from orchestrator.progress import Progress
from orchestrator.runner import run_sweep
from sweeps.report.analysis import analyze
from sweeps.spec import load_spec
from sweeps.study import storage_for
from tests.sweep_util import ScriptedBackend, fake_task, small_spec


def _lines(log: io.StringIO) -> list[str]:
    return [ln for ln in log.getvalue().splitlines() if re.search(r"\d+/\d+ trials:", ln)]


def _running(line: str) -> int:
    return int(re.search(r"(\d+) running", line).group(1))


def test_running_counts_what_runs_after_the_slots_are_refilled(tmp_path):
    # two slots: the old line said "1 running" while two ran (it printed as a run landed)
    spec = load_spec(small_spec(n_trials=6, seeds=[0]))
    log = io.StringIO()
    run_sweep(spec, tmp_path, backend=ScriptedBackend(fake_task, capacity=2), log=log)
    lines = _lines(log)
    assert lines and all(_running(ln) == 2 for ln in lines[:-1]), lines
    assert lines[-1].startswith("[t] 6/6 trials: ") and _running(lines[-1]) == 0
    assert "trials/" in lines[0] and "ETA" in lines[0]


def test_one_slot_reports_one_running_not_zero(tmp_path):
    # the quickstart's max_concurrent 1: the old line always said "0 running"
    spec = load_spec(small_spec(n_trials=4, seeds=[0, 1]))
    log = io.StringIO()
    run_sweep(spec, tmp_path, backend=ScriptedBackend(fake_task, capacity=1), log=log)
    lines = _lines(log)
    assert [int(re.search(r"\] (\d+)/", ln).group(1)) for ln in lines] == [1, 2, 3, 4]
    assert [_running(ln) for ln in lines] == [1, 1, 1, 0]
    done = [int(re.search(r"(\d+) done", ln).group(1)) for ln in lines]
    assert done == [1, 2, 3, 4]


def test_best_so_far_includes_the_trials_before_a_resume(tmp_path):
    spec = load_spec(small_spec(n_trials=5, sampler={"name": "random", "seed": 4}))
    run_sweep(spec, tmp_path, fn=fake_task, log=None)
    first = analyze(tmp_path, spec)
    feas = first.configs[first.configs["feasible"]]
    assert len(feas)  # the fake makes small learning rates feasible
    best = feas.loc[feas["forget_gap"].idxmin()]
    study = optuna.load_study(study_name=spec.name, storage=storage_for(spec, tmp_path))
    p = Progress.for_study(spec, study, counted=5, stream=None)
    assert p.best == (best["forget_gap"], int(best["trial_number"])) and (p.done, p.failed) == (5, 0)
    # resumed for one more: its line counts 6/6 and names a best even if the new trial is worse
    log = io.StringIO()
    more = load_spec(small_spec(n_trials=6, sampler={"name": "random", "seed": 4}))
    run_sweep(more, tmp_path, fn=fake_task, log=log)
    [line] = _lines(log)
    assert "6/6 trials: 6 done" in line and "none feasible yet" not in line
    assert f"best forget_gap {min(best['forget_gap'], _new_best(more, tmp_path)):.3f}" in line


def _new_best(spec, run_dir) -> float:
    a = analyze(run_dir, spec)
    return float(a.configs.loc[a.configs["feasible"], "forget_gap"].min())


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_rate_and_eta_and_messages_do_not_tear_it(tmp_path):
    spec = load_spec(small_spec(n_trials=4, resources={"backend": "inline", "max_retries": 1}))
    tty = _Tty()
    run_sweep(spec, tmp_path, backend=ScriptedBackend(fake_task, lose=1, capacity=1), log=tty)
    out = tty.getvalue()
    assert "\r" in out and "4/4" in out and "trial/s" in out and "<" in out  # [elapsed<remaining, rate]
    assert "done" in out and "running" in out
    assert re.search(r"\[t\] trial 0 seed 0: worker died; retry 1/1\n", out)  # a whole line


def test_rate_and_eta_text():
    p = Progress("x", 10, "forget_gap", "minimize", counted=4, stream=None)
    p.t0 -= 100.0  # 100 s ago
    for i in range(2):
        p.told(i, [1.0 + i], feasible=True)
    assert p.best == (1.0, 0) and p.counted == 6
    line = p.line()
    assert "6/10 trials" in line and "72 trials/h" in line and "ETA 3m20s" in line
