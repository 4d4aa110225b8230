"""Data sets as tensors, seeded hold-outs, on-device augmentation, splits and the audited view."""
from __future__ import annotations

import pytest
from pydantic import ValidationError
import torch

from unlearning.data import DataConfig, augment, load_dataset
from unlearning.errors import DataError, UserError
from unlearning.splits import MethodData, SplitConfig, make_split, retain_subset


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="digits"))


def test_digits_is_the_real_handwriting_with_a_seeded_three_way_split(digits):
    n = len(digits.y_train) + len(digits.y_val) + len(digits.y_test)
    assert n == 1797 and digits.in_shape == (1, 8, 8) and digits.num_classes == 10
    assert 355 <= len(digits.y_test) <= 365 and 0.09 < len(digits.y_val) / (n - len(digits.y_test)) < 0.11
    again = load_dataset(DataConfig(name="digits", seed=0, val_fraction=0.1))
    assert torch.equal(again.x_val, digits.x_val)
    other = load_dataset(DataConfig(name="digits", seed=1))
    assert not torch.equal(other.x_val, digits.x_val)
    # every class is held out in proportion
    assert set(digits.y_val.tolist()) == set(range(10))


def test_synthetic_is_cifar_shaped_any_size_and_learnable():
    ds = load_dataset(DataConfig(name="synthetic", n_train=400, n_test=100))
    assert ds.x_train.dtype == torch.uint8 and ds.in_shape == (3, 32, 32)
    assert len(ds.y_train) + len(ds.y_val) == 400 and len(ds.y_test) == 100
    # class structure: a nearest-class-mean classifier on raw pixels beats chance by far
    x = ds.x_train.float().flatten(1)
    means = torch.stack([x[ds.y_train == c].mean(0) for c in range(10)])
    pred = torch.cdist(ds.x_test.float().flatten(1), means).argmin(1)
    assert (pred == ds.y_test).float().mean() > 0.5


def test_prepare_normalises_to_float32(digits):
    x = digits.prepare(digits.x_train[:5])
    assert x.dtype == torch.float32 and x.shape == (5, 1, 8, 8)


def test_augmentation_keeps_shapes_and_is_seeded():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    a = augment(x, 2, True, torch.Generator().manual_seed(0))
    b = augment(x, 2, True, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    # a crop is a shifted window of the zero-padded image: its values are a subset of x's and zeros
    assert set(a.unique().tolist()) <= set(x.unique().tolist()) | {0.0}
    assert torch.equal(augment(x, 0, False, None), x)


def test_disk_data_without_a_root_or_with_a_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="needs a data root"):
        load_dataset(DataConfig(name="cifar10"))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path / "nope")))


# -- splits ----------------------------------------------------------------------------------------

def test_random_split_by_fraction_and_count_is_seeded_and_disjoint(digits):
    n = len(digits.y_train)
    s = make_split(digits, SplitConfig(forget_fraction=0.1), split_seed=3)
    assert len(s.forget) == round(0.1 * n) and len(s.forget) + len(s.retain) == n
    assert not set(s.forget.tolist()) & set(s.retain.tolist())
    assert torch.equal(s.forget, make_split(digits, SplitConfig(forget_fraction=0.1), 3).forget)
    assert not torch.equal(s.forget, make_split(digits, SplitConfig(forget_fraction=0.1), 4).forget)
    assert len(make_split(digits, SplitConfig(forget_count=50), 0).forget) == 50
    assert s.digest() != make_split(digits, SplitConfig(forget_fraction=0.1), 4).digest()


def test_classwise_split_drops_the_class_from_test_and_val(digits):
    s = make_split(digits, SplitConfig(scenario="class", forget_class=3), 0)
    assert (digits.y_train[s.forget] == 3).all() and (digits.y_train[s.retain] != 3).all()
    assert (digits.y_test[s.test] != 3).all() and len(s.test) < len(digits.y_test)
    assert (digits.y_val[s.val] != 3).all()


@pytest.mark.parametrize("bad", [{"forget_fraction": 0.0}, {"forget_fraction": 1.0},
                                 {"forget_fraction": 0.1, "forget_count": 5},
                                 {"scenario": "class"}, {"forget_class": 2}])
def test_bad_split_configs_are_rejected(bad):
    with pytest.raises(ValidationError):
        SplitConfig(**bad)


def test_forget_class_out_of_range_is_a_user_error(digits):
    with pytest.raises(UserError, match="out of range"):
        make_split(digits, SplitConfig(scenario="class", forget_class=10), 0)


def test_method_data_batches_cover_their_sets_and_record_what_they_hand_out(digits):
    s = make_split(digits, SplitConfig(), 0)
    sub = retain_subset(s.retain, 40, seed=0)
    view = MethodData(digits, s.forget, sub, val=s.val, gen=torch.Generator().manual_seed(0))
    got = torch.cat([b.idx for b in view.batches("retain", 16)])
    assert sorted(got.tolist()) == sub.tolist()
    mixed = list(view.batches("mixed", 32))
    idx = torch.cat([b.idx for b in mixed])
    flags = torch.cat([b.forget for b in mixed])
    assert sorted(idx.tolist()) == sorted(s.forget.tolist() + sub.tolist())
    assert torch.equal(flags, torch.isin(idx, s.forget))
    for b in view.batches("paired", 16):
        assert b.forget.sum() == (~b.forget).sum()
    assert view.retain_examples_seen(s.retain) == 40
    assert not view.seen[torch.tensor(sorted(set(s.retain.tolist()) - set(sub.tolist())))].any()
