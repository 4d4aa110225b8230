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
    # the pace is counted from the first trials told: none on the first line, then on every one
    assert "ETA" not in lines[0] and all("trials/" in ln and "ETA" in ln for ln in lines[1:])


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
    assert "\r" in out and "4/4" in out and "trials/s" in out and "ETA" in out  # our pace, not tqdm's
    assert "done" in out and "running" in out
    assert re.search(r"\[t\] trial 0 seed 0: worker died; retry 1/1\n", out)  # a whole line


def test_rate_and_eta_text():
    p = Progress("x", 10, "forget_gap", "minimize", counted=4, stream=None)
    p.told(0, [1.0], feasible=True)
    p.show(running=1)  # the first trial told: the clock of the pace starts here
    assert "ETA" not in p.line()
    t, c = p._first
    p._first = (t - 100.0, c)  # 100 s ago
    for i in range(1, 3):
        p.told(i, [1.0 + i], feasible=True)
    assert p.best == (1.0, 0) and p.counted == 7
    line = p.line()
    assert "7/10 trials" in line and "1.2 trials/min" in line and "ETA 2m30s" in line


def test_the_first_eta_leaves_out_the_start_up_before_the_first_trial():
    # the demo's first ETA said 4m04s for a 35 s remainder: the start-up (Ray, the oracle phase, the
    # first trial's warm-up) was counted as if it were trial time
    p = Progress("x", 8, "forget_gap", "minimize", stream=None)
    p.show(running=1)
    p.t0 -= 60.0  # a minute of start-up before the first trial landed
    p.told(0, [1.0], feasible=True)
    p.show(running=1)
    t, c = p._first
    p._first = (t - 5.0, c)  # then one trial every 5 s
    p.told(1, [1.0], feasible=True)
    r = p.rate()
    assert abs(r - 1 / 5) < 0.02 and "ETA 30s" in p.line()  # 6 left at 5 s each, not 6 x 32 s


def test_a_terminal_of_zero_columns_gets_the_plain_lines(tmp_path):
    # `script`, some container and CI ptys report a size of 0 x 0: tqdm then prints nothing at all
    import os
    import pty

    master, slave = pty.openpty()  # a fresh pty: 0 rows, 0 columns
    assert os.get_terminal_size(slave).columns == 0
    stream = os.fdopen(slave, "w", buffering=1)
    try:
        assert stream.isatty()
        spec = load_spec(small_spec(n_trials=3, seeds=[0]))
        run_sweep(spec, tmp_path, backend=ScriptedBackend(fake_task, capacity=1), log=stream)
        stream.flush()
        out = os.read(master, 1 << 16).decode()
    finally:
        stream.close()
        os.close(master)
    assert [int(x) for x in re.findall(r"\[t\] (\d+)/3 trials:", out)] == [1, 2, 3], out
