"""One trial end to end: config validation, the oracle cache, failures recorded as data."""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError
import torch

from tests.conftest import digits_config
from unlearning import trial as T
from unlearning import warmup as W
from unlearning.errors import UserError
from unlearning.methods import Method, MethodConfig, register
from unlearning.tasks import run_trial_payload
from unlearning.trial import TrialConfig, load_trial_config, run_trial, start_trial, untimed


@pytest.mark.parametrize("raw, needle", [
    ({"method": "nope"}, "unknown method 'nope'"),
    ({"model": "nope"}, "unknown model 'nope'"),
    ({"data": {"name": "imagenet"}}, "data.name"),
    ({"bogus": 1}, "bogus: unknown key"),
    ({"params": {"lrr": 0.1}}, "params.lrr: unknown key"),
    ({"method": "ga", "params": {"lr": -1}}, "params.lr"),
    ({"split": {"forget_fraction": 0}}, "split.forget_fraction"),
    ({"device": "bogus"}, "device: 'bogus' is not a device"),
    ({"train": {"schedule": "cosin"}}, "train.schedule"),
])
def test_bad_configs_are_one_line_user_errors(raw, needle):
    with pytest.raises(UserError) as e:
        load_trial_config(raw)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_trial_config_is_frozen():
    cfg = TrialConfig()
    with pytest.raises(ValidationError):
        cfg.method = "ga"


@pytest.mark.slow
def test_oracle_is_cached_and_reused(tmp_path):
    cfg = digits_config("ft", params={"epochs": 1}, cache_dir=str(tmp_path))
    first = run_trial(cfg)
    files = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert len(files) == 2  # original + retrain
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.pt")}
    second = run_trial(cfg)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.pt")} == mtimes
    for k in ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy"):
        assert first.metrics[k] == second.metrics[k]
    # another train seed is another original model
    run_trial(digits_config("ft", params={"epochs": 1}, cache_dir=str(tmp_path),
                            seeds={"train_seed": 1}, retrain=False))
    assert len(list(tmp_path.glob("*.pt"))) == 3


def test_cache_files_load_as_weights_only(oracle_cache):
    run_trial(digits_config("ft", params={"epochs": 1}))
    for p in oracle_cache.glob("*.pt"):
        state = torch.load(p, weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_same_seeds_same_result_and_unlearn_seed_matters():
    a = run_trial(digits_config("rl", params={"epochs": 2, "lr": 0.02, "batch_size": 64}))
    b = run_trial(digits_config("rl", params={"epochs": 2, "lr": 0.02, "batch_size": 64}))
    c = run_trial(digits_config("rl", params={"epochs": 2, "lr": 0.02, "batch_size": 64},
                                seeds={"unlearn_seed": 7}))
    losses = lambda r: [h["loss"] for h in r.history]  # noqa: E731
    assert losses(a) == losses(b) and a.metrics["unlearn_acc"] == b.metrics["unlearn_acc"]
    assert losses(a) != losses(c)


@register
class _Explodes(Method):
    """A method whose loss becomes NaN: the trial must end as FAIL with the reason."""

    name = "_test_nan"
    Config = MethodConfig

    def step(self, model, batch):
        return model(batch.x).sum() * float("nan")


def test_nan_loss_is_a_failed_trial_not_a_crash():
    r = run_trial(digits_config("_test_nan", params={"epochs": 2}))
    assert r.state == "FAIL" and "non-finite" in r.error
    assert r.metrics == {}


def test_payload_entry_point_turns_user_errors_into_fail_rows():
    out = run_trial_payload({"method": "ft", "data": {"name": "cifar10", "root": "/nonexistent"}})
    assert out["state"] == "FAIL" and "does not exist" in out["error"]
    json.dumps(out)  # JSON-safe



# -- the CPU tail (overlap) and the warm-up (RTE) -------------------------------------------------

def test_tails_run_beside_the_next_trials_give_the_results_of_trials_run_one_by_one():
    """What a worker with overlap does: each trial's CPU tail (the MIA SVC, DeepUnlearn's attack)
    runs on a background thread while the next trial trains. Every number but the timings is the
    same as when the trials run one after another."""
    cfgs = [digits_config("ft", params={"epochs": 1, "lr": lr}) for lr in (0.02, 0.1)] + [
        digits_config("rl", params={"epochs": 1}, eval={"du_mia": True})]
    one_by_one = [run_trial(c) for c in cfgs]
    with ThreadPoolExecutor(max_workers=1) as tails:  # the worker's background thread
        futures = [tails.submit(start_trial(c)) for c in cfgs]
        overlapped = [f.result() for f in futures]
    for a, b in zip(one_by_one, overlapped):
        assert a.state == "COMPLETE" and "mia_efficacy" in a.metrics
        assert untimed(a) == untimed(b)


def test_a_failure_in_the_tail_is_a_failed_trial(monkeypatch):
    def broken(*a, **k):
        raise ValueError("no attack can be trained")

    monkeypatch.setattr(T.M, "mia_efficacy", broken)
    r = run_trial(digits_config("ft", params={"epochs": 1}))
    assert r.state == "FAIL" and "ValueError: no attack can be trained" in r.error
    assert r.ended_at and r.total_s > 0


@pytest.mark.slow
def test_the_timed_unlearning_of_a_fresh_process_imports_nothing():
    """RTE is a reported metric: one-time process costs (the first optimizer imports torch._dynamo,
    about a second) must not land in the first trial's timed part. In a fresh process, no module
    is imported while the unlearning is timed, for methods that build SGD, Adam, MIA models and
    functional calls."""
    script = """
import json, sys
from unlearning import loop, trial as T
seen, real = [], loop.run_loop
def timed(*a, **k):
    before = set(sys.modules)
    out = real(*a, **k)
    seen.append(sorted(set(sys.modules) - before))
    return out
T.run_loop = timed
for m, p in (("ltu", {"epochs": 1, "mia_steps": 20}), ("eupmu", {"epochs": 1}), ("ft", {"epochs": 1})):
    r = T.run_trial(T.load_trial_config({"method": m, "data": {"name": "digits"}, "params": p}))
    assert r.state == "COMPLETE", r.error
print(json.dumps(seen))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == [[], [], []]


def test_the_kernel_warm_up_changes_no_result():
    cfg = digits_config("rl", params={"epochs": 1})
    W._WARM_KERNELS.clear()
    warmed = run_trial(cfg)  # a few steps of a throwaway copy first, outside the timed part
    assert W._WARM_KERNELS
    again = run_trial(cfg)  # already warm: straight to the unlearning
    assert untimed(warmed) == untimed(again)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_cli_trial_json_is_one_trial_result():
    p = run_cli("trial", "--method", "ft", "--data", "digits", "--set", "epochs=1", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["state"] == "COMPLETE" and out["params"]["epochs"] == 1
    assert {"unlearn_acc", "retain_acc", "test_acc", "mia_efficacy", "avg_gap"} <= set(out["metrics"])


@pytest.mark.parametrize("args, needle", [
    (["--method", "nope"], "unknown method"),
    (["--model", "nope"], "unknown model"),
    (["--data", "imagenet"], "data.name"),
    (["--set", "bogus=1"], "--set bogus: neither a parameter of ft nor a trial field"),
    (["--set", "split.bogus=1"], "split.bogus: unknown key"),
    (["--data", "cifar10", "--data-root", "/does/not/exist"], "does not exist"),
    (["--set", "split.scenario=class", "--set", "split.forget_class=10"], "out of range"),
    (["--set", "split.forget_fraction=0"], "split.forget_fraction"),
    (["--set", "split.forget_fraction=1"], "split.forget_fraction"),
    (["--config", "/no/such.yaml"], "no such file"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, needle, capsys):
    from orchestrator.cli import main

    assert main(["trial", *args]) == 2  # in this process: the same main a shell runs (below)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err


def test_cli_bad_input_from_a_shell_is_one_line_and_exit_2():
    p = run_cli("trial", "--method", "nope")
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown method" in lines[0], p.stderr


def test_cli_methods_lists_every_method_with_defaults():
    p = run_cli("methods")
    assert p.returncode == 0
    for name in ("ft", "ga", "neggrad_plus", "rl", "l1_sparse", "salun", "scrub", "bs", "retrain"):
        assert f"\n{name}:" in "\n" + p.stdout
    assert "lr = " in p.stdout
