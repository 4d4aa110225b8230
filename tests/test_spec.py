"""SweepSpec: valid specs load; every bad spec is ONE line naming its YAML path, exit 2, nothing written."""
from __future__ import annotations

import copy
import os

import pytest
import yaml

from orchestrator.cli import main
from sweeps.spec import load_spec, preset_names, read_spec_source
from tests.sweep_util import small_spec
from unlearning.errors import UserError


def _with(path: str, value, raw=None):
    raw = copy.deepcopy(raw or small_spec())
    node, keys = raw, path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    if value is _DELETE:
        del node[keys[-1]]
    elif isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return raw


_DELETE = object()

BAD = [
    ("top-level unknown key", "n_trails", 3, "n_trails: unknown key"),
    ("unknown key in a dimension", "methods.rl.space.lr.lowx", 0.1, "methods.rl.space.lr.lowx: unknown key"),
    ("low > high", "methods.rl.space.lr.low", 0.5, "methods.rl.space.lr.low:"),
    ("unknown dimension type", "methods.rl.space.lr.type", "uniform", "methods.rl.space.lr.type:"),
    ("unknown method", "methods.nope", {"space": {}}, "methods.nope: unknown method"),
    ("unknown parameter", "methods.rl.space.lrr", 0.1, "methods.rl.space.lrr: unknown parameter"),
    ("value the method rejects", "methods.ft.space.lr.low", 0.0, "methods.ft.space.lr.low:"),
    ("log scale with low <= 0", "methods.rl.space.lr", {"type": "log-float", "low": -1, "high": 1},
     "methods.rl.space.lr.low:"),
    ("int with float bounds", "methods.rl.space.epochs", {"type": "int", "low": 1.5, "high": 3},
     "methods.rl.space.epochs.low:"),
    ("unknown metric", "objectives.0.metric", "accuracy", "objectives.0.metric: unknown metric"),
    ("bad direction", "objectives.1.direction", "up", "objectives.1.direction:"),
    ("unknown sampler", "sampler.name", "cmaes", "sampler.name:"),
    ("unknown base key", "base.data.nme", "digits", "base.data.nme: unknown key"),
    ("method in base", "base.method", "ft", "base.method:"),
    ("bad backend", "resources.backend", "slurm", "resources.backend:"),
    ("bad wandb mode", "tracking.wandb.mode", "sometimes", "tracking.wandb.mode:"),
    ("unknown seed key", "seeds", [{"split_seed": 1, "sead": 2}], "seeds.0.sead: unknown key"),
    ("constraint with no bound", "constraints.0", {"metric": "utility_drop"}, "constraints.0:"),
    ("no objectives", "objectives", [], "objectives:"),
    ("seeds in base", "base.seeds", {"split_seed": 1}, "base.seeds:"),
    ("bad device", "base.device", "bogus", "base.device: 'bogus' is not a device"),
    ("unusable storage URL", "storage", "bogus://x", "storage: not a usable RDB URL"),
    # an unknown parameter given as a range is named as such, not blamed for a missing type
    ("unknown parameter as a range", "methods.rl.space.lrr", {"low": 0.1},
     "methods.rl.space.lrr: unknown parameter"),
    ("dimension without a type", "methods.rl.space.lr", {"low": 0.1, "high": 1},
     "methods.rl.space.lr.type: required key is missing (one of float, log-float, int, log-int, categorical, "
     "fixed)"),
    ("misspelt type lists every type", "methods.rl.space.lr.type", "logfloat",
     "methods.rl.space.lr.type: 'logfloat' is not a dimension type; known: float, log-float, int, log-int, "
     "categorical, fixed"),
    ("a key of another type", "methods.rl.space.lr.choices", [0.1],
     "methods.rl.space.lr.choices: not used by type float"),
    ("missing bound", "methods.ft.space.lr.high", _DELETE,
     "methods.ft.space.lr.high: required key is missing"),
    ("empty choices", "methods.rl.space.lr", {"type": "categorical", "choices": []},
     "methods.rl.space.lr.choices: needs at least one choice"),
    ("non-scalar choice", "methods.rl.space.lr", [[0.1]],
     "methods.rl.space.lr.choices: choices must be scalars"),
    ("zero step", "methods.rl.space.lr.step", 0, "methods.rl.space.lr.step: must be > 0"),
    ("a step on a log-int", "methods.rl.space.epochs", {"type": "log-int", "low": 1, "high": 8, "step": 2},
     "methods.rl.space.epochs.step: a log scale takes no step"),
    ("fixed without a value", "methods.rl.space.lr", {"type": "fixed"},
     "methods.rl.space.lr.value: required key"),
    ("unknown select metric", "select", {"metric": "accuracy"}, "select.metric: unknown metric 'accuracy'"),
    ("an attack timing is no objective", "objectives.0.metric", "mia_seconds",
     "objectives.0.metric: unknown metric"),
    ("same objective twice", "objectives.1.metric", "forget_gap", "objectives: a metric appears twice"),
    ("unknown table", "reference", {"table": "x.csv", "scenario": "a"}, "reference.table: 'x.csv' is not in"),
    # constraints on one metric are one range, across entries too
    ("constraints that contradict each other across entries", "constraints",
     [{"metric": "utility_drop", "max": 1}, {"metric": "utility_drop", "min": 5}],
     "constraints.1: utility_drop: min 5 and max 1 (constraints.0) leave no value"),
    # seeds: 0 .. 2**31 - 1, what every RNG takes and the record's int64 holds
    ("a negative seed", "seeds", [0, -1], "seeds.1: -1 is not a seed (0 to 2147483647)"),
    ("a seed beyond int64", "seeds", [2**70], "seeds.0: 1180591620717411303424 is not a seed"),
    ("a seed mapping out of range", "seeds", [{"train_seed": 2**31}],
     "seeds.0.train_seed: 2147483648 is not a seed"),
    ("replicate seeds out of range", "replicate", {"seeds": "0-99999999999999"},
     "replicate.seeds: 0-99999999999999: seeds are 0 to 2147483647, at most 10,000 of them"),
    ("a negative sampler seed", "sampler.seed", -3, "sampler.seed: Input should be greater than or equal to 0"),
    ("n_trials beyond the bound", "n_trials", 10**12,
     "n_trials: 1,000,000,000,000 trials is more than one sweep takes (at most 100,000"),
]


@pytest.mark.parametrize("label, path, value, expected", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_is_one_line_naming_the_path_and_writes_nothing(label, path, value, expected, tmp_path,
                                                                 monkeypatch, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(_with(path, value)))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code = main(["run", str(spec_file)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert expected in err, err
    assert os.listdir(work) == []  # nothing written (no runs/ folder)


def test_objective_needing_retrain_without_retrain_is_an_error(tmp_path, monkeypatch, capsys):
    raw = small_spec()
    raw["base"]["retrain"] = False
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(f), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "objectives.0.metric: forget_gap needs Retrain" in err
    assert not (tmp_path / "out").exists()
    # a blind objective is fine without Retrain, and the selection rule says so
    raw["objectives"][0] = {"metric": "forget_val_gap"}
    assert load_spec(raw).selection_rule == "blind"
    assert load_spec(small_spec()).selection_rule == "oracle"


def test_set_overrides_before_validation():
    raw = small_spec()
    spec = load_spec(raw, [("n_trials", 3), ("objectives.1.direction", "minimize"),
                           ("methods.rl.space.lr.high", 0.05), ("resources.max_retries", 5)])
    assert spec.n_trials == 3 and spec.directions == ["minimize", "minimize"]
    assert spec.methods["rl"].space["lr"].high == 0.05 and spec.resources.max_retries == 5
    with pytest.raises(UserError, match=r"^n_trials: "):
        load_spec(raw, [("n_trials", 0)])


def test_seeds_ints_set_unlearn_seed_mappings_set_any():
    raw = small_spec(seeds=[0, 1, {"split_seed": 2, "train_seed": 3}])
    raw["base"]["seeds"] = None
    raw["base"].pop("seeds")
    spec = load_spec(raw)
    assert spec.seed_list() == [
        {"split_seed": 0, "train_seed": 0, "unlearn_seed": 0},
        {"split_seed": 0, "train_seed": 0, "unlearn_seed": 1},
        {"split_seed": 2, "train_seed": 3, "unlearn_seed": 0}]


def test_shorthand_dimensions_and_defaults():
    raw = small_spec()
    raw["methods"]["rl"]["space"]["epochs"] = 2  # bare value = fixed
    raw["methods"]["rl"]["space"]["optimizer"] = ["sgd", "adam"]  # list = categorical
    spec = load_spec(raw)
    assert spec.methods["rl"].space["epochs"].type == "fixed"
    assert spec.methods["rl"].space["optimizer"].type == "categorical"
    assert spec.resources.max_retries == 2


def test_presets_are_valid(tmp_path):
    assert {"quickstart", "cifar10_random10", "cifar10_random50", "cifar10_classwise"} <= set(preset_names())
    q = load_spec(read_spec_source("quickstart"))
    assert set(q.methods) == {"eupmu", "ltu"} and len(q.objectives) == 2 and q.constraints
    for name in ("cifar10_random10", "cifar10_random50", "cifar10_classwise"):
        with pytest.raises(UserError, match=r"^base\.data\.root: "):
            load_spec(read_spec_source(name))
        spec = load_spec(read_spec_source(name), [("base.data.root", str(tmp_path))])
        assert spec.base["model"] == "resnet18" and spec.reference is not None


def test_grid_sampler_needs_steps_and_enumerates():
    from sweeps.space import grid_size

    raw = small_spec(sampler={"name": "grid"})
    with pytest.raises(UserError, match=r"^methods\.ft\.space\.lr\.step: "):
        load_spec(raw)
    raw["methods"] = {"ft": {"space": {"lr": [0.01, 0.02], "epochs": {"type": "int", "low": 1, "high": 3}}}}
    assert grid_size(load_spec(raw)) == 6


def test_set_into_a_list_names_the_whole_path():
    with pytest.raises(UserError, match=r"^--set seeds\.5: '5' is not an index of a list of 1$"):
        load_spec(small_spec(), [("seeds.5", 1)])


def test_a_spec_dump_loads_back_and_older_dumps_with_null_keys_load():
    spec = load_spec(small_spec())
    assert load_spec(spec.dump()) == spec
    # spec.yaml files written before each dimension type had its own model hold every key (null
    # where unused); a resume reads them as the same sweep
    raw = small_spec()
    raw["methods"]["rl"]["space"]["lr"].update(step=None, choices=None, value=None)
    raw["methods"]["ft"]["space"]["epochs"].update(low=None, high=None, step=None, choices=None)
    assert load_spec(raw) == spec


def test_each_dimension_type_is_its_own_model():
    from sweeps.spec import CategoricalDim, FixedDim, FloatDim, IntDim, LogFloatDim, LogIntDim

    raw = small_spec()
    raw["methods"]["ft"]["space"].update(optimizer=["sgd", "adam"],
                                         batch_size={"type": "log-int", "low": 8, "high": 64})
    raw["methods"]["rl"]["space"]["epochs"] = {"type": "int", "low": 1, "high": 3, "step": 1}
    spec = load_spec(raw)
    ft, rl = spec.methods["ft"].space, spec.methods["rl"].space
    assert isinstance(ft["lr"], LogFloatDim) and isinstance(ft["epochs"], FixedDim)
    assert isinstance(ft["optimizer"], CategoricalDim) and type(ft["batch_size"]) is LogIntDim
    assert isinstance(rl["lr"], FloatDim) and type(rl["epochs"]) is IntDim
