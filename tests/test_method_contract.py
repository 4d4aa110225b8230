"""The contract every registered method keeps, checked over the whole registry (optuna's way: one
contract test, every implementation), so a new method (or a plug-in) is held to it without a line
here: its Config validates and names a bad key; the same seed gives the same model; it touches only
the forget and retain examples its data door hands out; a NaN becomes a FAIL result, not a crash.

One epoch on digits (small_cnn) per method; the original comes from the session's oracle cache."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from pydantic import ValidationError

from tests.conftest import digits_config
from unlearning.config import one_line
from unlearning.data import load_dataset
from unlearning.errors import FailureKind
from unlearning.loop import autocast_factory
from unlearning.methods import all_methods, get_method
from unlearning.oracle import get_oracles
from unlearning.splits import MethodData, make_split
from unlearning.trial import default_cache_dir, unlearn

# every registered method; names starting with "_" are other tests' deliberate misfits (a NaN loss,
# a method with no step), registered when their modules are imported
METHODS = sorted(m for m in all_methods() if not m.startswith("_"))
UNLEARNING = [m for m in METHODS if not get_method(m).from_oracle]
FAST = {"epochs": 1, "batch_size": 128}  # LTU: its defaults train 3 MIA models; keep them small
SMALL = {"ltu": {"retain_subset": 64, "mia_steps": 20}}


def _params(name: str) -> dict:
    fields = get_method(name).Config.model_fields
    return {k: v for k, v in {**FAST, **SMALL.get(name, {})}.items() if k in fields}


@pytest.fixture(scope="module")
def setting():
    cfg = digits_config("ft")
    device = torch.device("cpu")
    ds = load_dataset(cfg.data, device)
    split = make_split(ds, cfg.split, cfg.seeds.split_seed)
    original, _ = get_oracles(ds, split, model_name=cfg.model, recipe=cfg.train, train_seed=0, device=device,
                              autocast=autocast_factory(device, "fp32"),
                              cache_dir=default_cache_dir(), retrain=False)
    return ds, split, original


class Recording(MethodData):
    """The data door, remembering every door it was (the test reads `seen` afterwards)."""

    opened: list["Recording"] = []

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        Recording.opened.append(self)


def _unlearn(name: str, setting, original=None, seed: int = 0):
    ds, split, orig = setting
    cfg = digits_config(name, params=_params(name))
    return unlearn(cfg, original or orig, ds, split.forget, split.retain, split.val, torch.device("cpu"),
                   autocast_factory(torch.device("cpu"), "fp32"), seed=seed, method_data=Recording)


@pytest.mark.parametrize("name", METHODS)
def test_config_defaults_validate_and_a_bad_key_is_named(name):
    Config = get_method(name).Config
    Config()  # the defaults are a valid configuration
    with pytest.raises(ValidationError) as e:
        Config(no_such_setting=1)
    assert one_line(e.value).startswith("no_such_setting: unknown key")
    for field, info in Config.model_fields.items():  # every parameter is documented by a type
        assert info.annotation is not None, (name, field)


@pytest.mark.parametrize("name", UNLEARNING)
def test_the_same_seed_gives_the_same_model_and_only_the_door_is_touched(name, setting):
    ds, split, _ = setting
    Recording.opened.clear()
    a, b = _unlearn(name, setting), _unlearn(name, setting)
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), f"{name}: {k} differs between two runs with the same seed"
    allowed = torch.zeros(len(ds.y_train), dtype=torch.bool)
    allowed[torch.cat([split.forget, split.retain])] = True
    for door in Recording.opened:
        seen = door.seen.cpu()
        assert seen.any(), f"{name} took no example through its data door"
        assert not (seen & ~allowed).any(), f"{name} touched training examples outside forget + retain"


@pytest.mark.parametrize("name", UNLEARNING)
def test_a_nan_in_the_model_is_a_diverged_fail_not_a_crash(name, setting, monkeypatch):
    _, _, original = setting
    broken = copy.deepcopy(original.model)
    with torch.no_grad():
        next(broken.parameters()).view(-1)[0] = float("nan")
    monkeypatch.setattr("unlearning.trial.get_oracles", lambda *a, **k: (replace(original, model=broken), None))
    from unlearning.trial import run_trial

    r = run_trial(digits_config(name, params=_params(name), retrain=False))
    assert r.state == "FAIL" and r.failure is not None, name
    assert r.failure.kind == FailureKind.DIVERGED, (name, r.failure)
