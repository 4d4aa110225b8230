"""One trial end to end: config validation, the oracle cache, failures recorded as data."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import digits_config
from unlearning.errors import UserError
from unlearning.methods import Method, MethodConfig, register
from unlearning.trial import TrialConfig, load_trial_config, run_trial, run_trial_payload


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
    with pytest.raises(Exception):
        cfg.method = "ga"


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



def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True,
                          text=True, timeout=300)


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
    (["--set", "bogus=1"], "params.bogus: unknown key"),
    (["--set", "split.bogus=1"], "split.bogus: unknown key"),
    (["--data", "cifar10", "--data-root", "/does/not/exist"], "does not exist"),
    (["--set", "split.scenario=class", "--set", "split.forget_class=10"], "out of range"),
    (["--set", "split.forget_fraction=0"], "split.forget_fraction"),
    (["--set", "split.forget_fraction=1"], "split.forget_fraction"),
    (["--config", "/no/such.yaml"], "no such file"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, needle):
    p = run_cli("trial", *args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr


def test_cli_methods_lists_every_method_with_defaults():
    p = run_cli("methods")
    assert p.returncode == 0
    for name in ("ft", "ga", "neggrad_plus", "rl", "l1_sparse", "salun", "scrub", "bs", "retrain"):
        assert f"\n{name}:" in "\n" + p.stdout
    assert "lr = " in p.stdout
