"""Every baseline runs on digits + small_cnn and moves the metrics in its known direction; the
oracle behaves as an original and a Retrain model should."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import digits_config
from unlearning.trial import run_trial

# Settings strong enough to see each method act within 5 epochs on 1,165 retain / 130 forget images.
PARAMS = {
    "ft": {"lr": 0.02},
    "ga": {"lr": 0.01, "batch_size": 32},
    "neggrad_plus": {"lr": 0.02, "beta": 0.9, "batch_size": 64},
    "rl": {"lr": 0.02, "batch_size": 64},
    "l1_sparse": {"lr": 0.02, "alpha": 1e-3},
    "salun": {"lr": 0.02, "batch_size": 64},
    "scrub": {"lr": 0.01, "batch_size": 64, "msteps": 3, "alpha": 0.5},
    "bs": {"lr": 2e-3, "batch_size": 64},
    "retrain": {},
}


@pytest.fixture(scope="module")
def results():
    return {m: run_trial(digits_config(m, params=p)) for m, p in PARAMS.items()}


def test_every_baseline_completes(results):
    for name, r in results.items():
        assert r.state == "COMPLETE", (name, r.error)
        for k in ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy", "avg_gap", "runtime_s"):
            assert k in r.metrics and r.metrics[k] == r.metrics[k], (name, k)  # present, not NaN


def test_oracle_original_and_retrain(results):
    ref = results["ft"].reference
    orig, retr = ref["original"], ref["retrain"]
    # the original memorised its training set: forget accuracy ~ train (retain) accuracy
    assert abs(orig["forget_acc"] - orig["retain_acc"]) <= 2.0
    # Retrain never saw the forget set: its forget accuracy is close to its test accuracy
    assert abs(retr["forget_acc"] - retr["test_acc"]) <= 4.0
    assert retr["test_acc"] > 93.0 and orig["test_acc"] > 93.0


def test_retrain_is_the_oracle(results):
    r = results["retrain"]
    assert r.metrics["avg_gap"] == pytest.approx(0.0)
    for k in ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy"):
        assert r.metrics[k] == pytest.approx(r.reference["retrain"][k])
    assert r.runtime_s > 0


def ua_up(results, name, by):
    r = results[name]
    return r.metrics["unlearn_acc"] >= r.reference["original"]["unlearn_acc"] + by


def test_ft_keeps_retain_accuracy(results):
    r = results["ft"].metrics
    assert r["retain_acc"] >= 99.0 and r["test_acc"] >= results["ft"].reference["original"]["test_acc"] - 2


def test_ga_lowers_forget_accuracy_without_retain_data(results):
    assert ua_up(results, "ga", 5.0)
    assert results["ga"].metrics["retain_examples_seen"] == 0


def test_neggrad_plus_forgets_and_keeps_most_utility(results):
    assert ua_up(results, "neggrad_plus", 3.0)
    assert results["neggrad_plus"].metrics["retain_acc"] >= 80.0


def test_random_labels_forget_and_raise_mia(results):
    r = results["rl"]
    assert ua_up(results, "rl", 2.0)
    assert r.metrics["mia_efficacy"] > r.reference["original"]["mia_efficacy"]
    assert r.metrics["retain_acc"] >= 95.0


def test_l1_sparse_keeps_retain_accuracy(results):
    assert results["l1_sparse"].metrics["retain_acc"] >= 95.0


def test_salun_forgets_while_keeping_utility(results):
    r = results["salun"]
    assert ua_up(results, "salun", 0.5)
    assert r.metrics["retain_acc"] >= 95.0


def test_scrub_keeps_retain_accuracy_and_does_not_remember_more(results):
    r = results["scrub"]
    assert r.metrics["retain_acc"] >= 97.0
    assert r.metrics["forget_acc"] <= r.reference["original"]["forget_acc"]


def test_boundary_shrink_moves_forget_examples_across_the_boundary(results):
    assert ua_up(results, "bs", 5.0)
    assert results["bs"].metrics["retain_examples_seen"] == 0


def test_history_has_one_row_per_epoch(results):
    r = results["ft"]
    assert [h["epoch"] for h in r.history] == list(range(5))
    assert all(h["loss"] == h["loss"] for h in r.history)


def test_salun_masked_weights_stay_exactly_at_original_values():
    """Weight decay and momentum must not move the weights outside the saliency mask."""
    import copy

    from unlearning.data import load_dataset
    from unlearning.loop import run_loop
    from unlearning.methods import Context, get_method
    from unlearning.models import build_model
    from unlearning.splits import MethodData, SplitConfig, make_split

    ds = load_dataset(digits_config().data)
    split = make_split(ds, SplitConfig(), 0)
    torch.manual_seed(0)
    model = build_model("small_cnn", ds.in_shape, 10)
    before = copy.deepcopy(model.state_dict())
    gen = torch.Generator().manual_seed(0)
    view = MethodData(ds, split.forget, split.retain, val=split.val, gen=gen)
    cls = get_method("salun")
    method = cls(cls.Config(lr=0.05, epochs=2, batch_size=128, ratio=0.3, weight_decay=0.01),
                 Context(view, copy.deepcopy(model).eval(), torch.device("cpu"), gen, lambda: _null()))
    run_loop(model, method)
    moved = frozen = 0
    for (name, p), m in zip(model.named_parameters(), method.masks):
        p0 = before[name]
        assert torch.equal(p.detach()[~m], p0[~m]), name
        moved += int((p.detach()[m] != p0[m]).sum())
        frozen += int((~m).sum())
    assert moved > 0 and frozen > 0


def test_l1_sparse_shrinks_the_weights_more_than_ft():
    from unlearning.data import load_dataset
    from unlearning.loop import run_loop
    from unlearning.methods import Context, get_method
    from unlearning.models import build_model
    from unlearning.splits import MethodData, SplitConfig, make_split

    ds = load_dataset(digits_config().data)
    split = make_split(ds, SplitConfig(), 0)
    norms = {}
    for name, extra in (("ft", {}), ("l1_sparse", {"alpha": 5e-3})):
        torch.manual_seed(0)
        model = build_model("mlp", ds.in_shape, 10)
        gen = torch.Generator().manual_seed(0)
        view = MethodData(ds, split.forget, split.retain, val=split.val, gen=gen)
        cls = get_method(name)
        run_loop(model, cls(cls.Config(lr=0.01, epochs=2, batch_size=128, **extra),
                            Context(view, model, torch.device("cpu"), gen, lambda: _null())))
        norms[name] = sum(float(p.detach().abs().sum()) for p in model.parameters())
    assert norms["l1_sparse"] < 0.9 * norms["ft"]


def _null():
    import contextlib

    return contextlib.nullcontext()
