"""Released models as files: a saved Original (or Retrain) gives a trial exactly the model it was
saved from; a file that is not a plain state dict of the right architecture is one line, and nothing
in it runs; checkpoints key the oracle cache by content, and configs without one keep their keys."""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle

import pytest
import torch

from tests.conftest import digits_config
from tests.plugin_util import MODEL_SRC, digits_npz, write
from unlearning.data import load_dataset
from unlearning.errors import UserError
from unlearning.models import build_model
from unlearning.oracle import cache_key, oracle_parts
from unlearning.splits import make_split
from unlearning.tasks import probe
from unlearning.trial import run_trial, untimed


def cached_state(cfg, kind: str, cache) -> dict[str, torch.Tensor]:
    """The state dict of the oracle `cfg` uses, read from the cache (run a trial of cfg first)."""
    ds = load_dataset(cfg.data)
    parts, _ = oracle_parts(kind, ds, make_split(ds, cfg.split, cfg.seeds.split_seed), model_name=cfg.model,
                            recipe=cfg.train, train_seed=cfg.seeds.train_seed)
    return torch.load(cache / f"{cache_key(parts)}.pt", weights_only=True)


def same_outcome(a, b, keys=("state", "metrics", "reference", "history", "step_history")):
    ua, ub = untimed(a), untimed(b)
    for k in keys:
        assert ua[k] == ub[k], k


def test_a_saved_original_gives_exactly_the_metrics_of_the_cached_original(tmp_path, oracle_cache):
    plain = run_trial(digits_config("rl", params={"epochs": 1}))
    torch.save(cached_state(digits_config(), "original", oracle_cache), tmp_path / "released.pt")
    started = run_trial(digits_config("rl", params={"epochs": 1},
                                      checkpoints={"original": str(tmp_path / "released.pt")}))
    assert started.state == "COMPLETE", started.error
    same_outcome(plain, started)
    assert started.config["checkpoints"]["original"]["path"] == str(tmp_path / "released.pt")


def test_a_saved_retrain_serves_retrain_and_the_gaps_and_has_no_training_time(tmp_path, oracle_cache):
    plain = run_trial(digits_config("ft", params={"epochs": 1}))
    torch.save(cached_state(digits_config(), "retrain", oracle_cache), tmp_path / "retrain.pt")
    given = run_trial(digits_config("ft", params={"epochs": 1},
                                    checkpoints={"retrain": str(tmp_path / "retrain.pt")}))
    same_outcome(plain, given)
    assert "rte" in plain.metrics and "rte" not in given.metrics  # no one here timed its training
    oracle = run_trial(digits_config("retrain", checkpoints={"retrain": str(tmp_path / "retrain.pt")}))
    assert oracle.state == "COMPLETE" and oracle.metrics["avg_gap"] == 0.0


def test_only_an_original_still_trains_retrain_under_its_usual_key(tmp_path, oracle_cache):
    """Retrain never sees the original: its key and model are the same with or without a checkpoint,
    while two different original files get two different original keys."""
    cfg = digits_config()
    ds = load_dataset(cfg.data)
    split = make_split(ds, cfg.split, 0)
    kw = dict(model_name=cfg.model, recipe=cfg.train, train_seed=0)
    keys = {c: [oracle_parts(k, ds, split, checkpoint=c, **kw)[0] for k in ("original", "retrain")]
            for c in (None, "a" * 64, "b" * 64)}
    assert len({cache_key(v[0]) for v in keys.values()}) == 3
    assert keys[None][1] == oracle_parts("retrain", ds, split, **kw)[0]  # not the checkpoint's
    assert keys["a" * 64][0] == {"kind": "original", "checkpoint": "a" * 64, "model": "small_cnn"}


def test_a_pinned_checkpoint_already_installed_needs_no_file(tmp_path, oracle_cache):
    """What a node that never had the file does: the oracle cache holds the installed checkpoint
    (shipped like any cached oracle) and the config names its sha256."""
    state = build_model("small_cnn", (1, 8, 8), 10).state_dict()
    path = tmp_path / "pinned.pt"
    torch.save(state, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    cfg = digits_config("ft", params={"epochs": 1}, retrain=False,
                        checkpoints={"original": {"path": str(path), "sha256": sha}})
    first = run_trial(cfg)
    assert first.state == "COMPLETE", first.error
    path.unlink()
    again = run_trial(cfg)
    same_outcome(first, again)
    with pytest.raises(UserError, match=f"has sha256 {sha}, expected {'0' * 64}"):
        torch.save(state, path)
        run_trial(digits_config(retrain=False, checkpoints={"original": {"path": str(path),
                                                                         "sha256": "0" * 64}}))


class _Touch:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _small_cnn() -> dict[str, torch.Tensor]:
    return build_model("small_cnn", (1, 8, 8), 10).state_dict()


def _torch_pickle(marker):
    return lambda p: torch.save({"conv": _Touch(str(marker))}, p)


def _raw_pickle(marker):
    return lambda p: p.write_bytes(pickle.dumps(_Touch(str(marker))))


def _mutated(edit):
    def make(p):
        state = _small_cnn()
        edit(state)
        torch.save(state, p)
    return make


BAD = [
    (lambda p: torch.save(torch.zeros(3), p), "holds a Tensor, not a state dict"),
    (lambda p: torch.save([torch.zeros(3)], p), "holds a list, not a state dict"),
    (lambda p: torch.save({"state_dict": _small_cnn(), "epoch": 3}, p),
     "'state_dict' holds a mapping, not a tensor (a training checkpoint? save its 'state_dict'"),
    (_mutated(lambda s: s.pop("12.weight")), "lacks '12.weight', which the model small_cnn has"),
    (_mutated(lambda s: s.update(extra=torch.zeros(1))), "has 'extra', which the model small_cnn does not"),
    (_mutated(lambda s: s.update({"12.weight": torch.zeros(3, 128)})), "'12.weight' has shape (3, 128), "
     "the model small_cnn's (10, 128)"),
    (_mutated(lambda s: s["0.weight"].fill_(float("nan"))), "'0.weight' holds NaN or infinite values"),
    (lambda p: torch.save({f"module.{k}": v for k, v in _small_cnn().items()}, p), "saved from DataParallel"),
    (lambda p: None, "no such file"),
    (lambda p: os.mkfifo(p), "a FIFO (named pipe), not a file"),
    (lambda p: p.write_bytes(b"hello world" * 10), "cannot be read as a PyTorch file"),
]


@pytest.mark.parametrize("make, needle", BAD)
def test_a_bad_checkpoint_is_one_line_before_anything_runs(tmp_path, make, needle):
    path = tmp_path / "model.pt"
    make(path)
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as e:
        run_trial(digits_config(checkpoints={"original": str(path)}, cache_dir=str(cache)))
    msg = str(e.value)
    assert msg.startswith("checkpoints.original: ") and needle in msg and "\n" not in msg, msg
    assert not cache.exists()  # nothing trained, nothing installed


@pytest.mark.parametrize("writer", [_torch_pickle, _raw_pickle])
def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path, writer):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    writer(marker)(path)
    with pytest.raises(UserError) as e:
        run_trial(digits_config(checkpoints={"original": str(path)}, cache_dir=str(tmp_path / "cache")))
    assert "is not a plain weights file" in str(e.value) and "nothing in it ran" in str(e.value)
    assert not marker.exists()
    with pytest.raises(UserError):  # the up-front check refuses it too
        probe(digits_config(checkpoints={"original": str(path)}, cache_dir=str(tmp_path / "cache")))
    assert not marker.exists()
    with contextlib.suppress(Exception):  # the file is potent: an unguarded load runs its payload
        torch.load(path, weights_only=False)
    assert marker.exists()


def test_checkpoints_are_left_out_of_a_config_without_them_so_fingerprints_stay():
    from sweeps.fingerprint import fingerprint

    plain = digits_config()
    assert "checkpoints" not in plain.model_dump() and "checkpoints" not in plain.model_dump(mode="json")
    given = {"method": "ft", "data": {"name": "digits"}, "checkpoints": {"original": "x.pt"}}
    assert fingerprint(given)[0] != fingerprint({**given, "checkpoints": None})[0]
    assert fingerprint({**given, "checkpoints": None})[1] == fingerprint({"method": "ft"})[1]


def test_a_retrain_checkpoint_needs_a_trial_that_uses_retrain():
    with pytest.raises(UserError, match="checkpoints.retrain: given, but this trial uses no Retrain"):
        digits_config(retrain=False, checkpoints={"retrain": "r.pt"})
    with pytest.raises(UserError, match="checkpoints.original.sha256"):
        digits_config(checkpoints={"original": {"path": "r.pt", "sha256": "xyz"}})


def test_keys_of_models_and_data_from_outside_the_package_hold_their_source(tmp_path, registries):
    """A plug-in model edited under the same name is another network, and a loader's normalisation
    shapes training: both are in the oracle key; the built-ins' keys have neither."""
    from unlearning.oracle import TrainRecipe, oracle_key
    from unlearning.data import DataConfig
    from unlearning.plugins import load_plugins

    digits = load_dataset(DataConfig(name="digits"))
    assert set(oracle_key(digits, "small_cnn", TrainRecipe(), 0)) == {"data", "model", "recipe", "seed",
                                                                     "code"}
    p = write(tmp_path, "net.py", MODEL_SRC.format(name="keyed_net"))
    [v1] = load_plugins([str(p)])
    digits_npz(tmp_path / "d.npz")
    npz = load_dataset(DataConfig(name="npz", root=str(tmp_path / "d.npz")))
    k1 = oracle_key(npz, "keyed_net", TrainRecipe(), 0)
    assert k1["model_source"] == v1.sha256 and k1["data_prep"]["mean"] == list(npz.mean)
    p.write_text(MODEL_SRC.format(name="keyed_net").replace("64", "32"))
    load_plugins([str(p)])
    assert oracle_key(npz, "keyed_net", TrainRecipe(), 0)["model_source"] != v1.sha256
