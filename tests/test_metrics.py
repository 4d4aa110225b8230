"""Tests for unlearning.metrics: accuracy, attack features, the SVC MIA, gaps, predict_probs (CPU)."""
import math

import numpy as np
import pytest
import torch
from sklearn.svm import SVC
from torch import nn

from unlearning.metrics import (
    METRIC_KEYS,
    MIA_KINDS,
    accuracy,
    avg_gap,
    forget_gap,
    mia_all,
    mia_efficacy,
    mia_features,
    predict_probs,
)

C = 10


def probs_with_conf(conf, y, num_classes=C):
    """Probability rows with p_y = conf and the rest of the mass spread evenly over other classes."""
    conf = np.asarray(conf, dtype=np.float64)
    p = np.tile(((1.0 - conf) / (num_classes - 1))[:, None], (1, num_classes))
    p[np.arange(len(y)), y] = conf
    return p


def split(rng, n, lo, hi):
    """n examples with random labels and true-class confidence uniform in [lo, hi]."""
    y = rng.integers(0, C, n)
    return probs_with_conf(rng.uniform(lo, hi, n), y), y


# --- accuracy -----------------------------------------------------------------------------------

def test_accuracy_labels_form():
    y = torch.tensor([0, 1, 2, 3])
    assert accuracy(y.clone(), y) == 100.0
    assert accuracy((y + 1) % 4, y) == 0.0
    assert accuracy(torch.tensor([0, 1, 0, 0]), y) == 50.0


def test_accuracy_logits_form():
    y = torch.tensor([0, 1, 2, 1])
    logits = torch.full((4, 3), -1.0)
    logits[torch.arange(4), y] = 2.0
    assert accuracy(logits, y) == 100.0
    logits[:2] = torch.tensor([0.0, 0.0, 5.0])  # two rows now predict class 2: both wrong
    assert accuracy(logits, y) == 50.0
    assert accuracy(logits.numpy(), y.numpy()) == 50.0


def test_accuracy_empty_is_nan_and_length_mismatch_raises():
    assert math.isnan(accuracy(torch.empty(0, 5), torch.empty(0, dtype=torch.long)))
    assert math.isnan(accuracy(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)))
    with pytest.raises(ValueError):
        accuracy(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))


# --- features -------------------------------------------------------------------------------------

def test_feature_shapes_and_simple_kinds():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    y = np.array([0, 1])
    for kind in MIA_KINDS:
        assert mia_features(p, y, kind).shape == ((2, 3) if kind == "prob" else (2, 1))
    np.testing.assert_allclose(mia_features(p, y, "confidence")[:, 0], [0.7, 0.3])
    np.testing.assert_array_equal(mia_features(p, y, "correctness")[:, 0], [1.0, 0.0])
    np.testing.assert_allclose(mia_features(torch.tensor(p), torch.tensor(y), "prob"), p)
    with pytest.raises(ValueError):
        mia_features(p, y, "loss")


def test_m_entropy_matches_the_formula():
    p = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    y = np.array([0, 1])
    want = [
        -0.3 * math.log(0.7) - 0.2 * math.log(0.8) - 0.1 * math.log(0.9),
        -0.8 * math.log(0.2) - 0.7 * math.log(0.3) - 0.1 * math.log(0.9),
    ]
    np.testing.assert_allclose(mia_features(p, y, "m_entropy")[:, 0], want, rtol=1e-9)


def test_entropy_matches_the_formula():
    p = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    want = [-(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)), math.log(3)]
    np.testing.assert_allclose(mia_features(p, np.array([0, 2]), "entropy")[:, 0], want, rtol=1e-9)


def test_entropies_finite_at_zero_and_one():
    p = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    y = np.array([0, 1])  # right with certainty; wrong with certainty (p_y = 0)
    ent = mia_features(p, y, "entropy")[:, 0]
    m_ent = mia_features(p, y, "m_entropy")[:, 0]
    assert np.isfinite(ent).all() and np.isfinite(m_ent).all()
    np.testing.assert_allclose(ent, [0.0, 0.0], atol=1e-9)
    assert m_ent[0] == pytest.approx(0.0, abs=1e-9)
    assert m_ent[1] > 20  # certain and wrong is the most "non-member-like" value, yet finite


# --- MIA efficacy ---------------------------------------------------------------------------------

def test_mia_separable_extremes():
    rng = np.random.default_rng(0)
    retain, retain_y = split(rng, 300, 0.95, 1.0)
    test, test_y = split(rng, 200, 0.05, 0.15)
    like_test, like_test_y = split(rng, 100, 0.05, 0.15)
    like_retain, like_retain_y = split(rng, 100, 0.95, 1.0)
    assert mia_efficacy(retain, retain_y, test, test_y, like_test, like_test_y) == 100.0
    assert mia_efficacy(retain, retain_y, test, test_y, like_retain, like_retain_y) == 0.0


def test_mia_indistinguishable_is_far_from_extremes():
    rng = np.random.default_rng(1)
    # Same confidence distribution for all three sets: the attack can only fit noise. Over seeds
    # 0..19 this gave 20..79; the wider bounds keep the test independent of libsvm details.
    sets = [split(rng, 500, 0.3, 1.0) for _ in range(3)]
    eff = mia_efficacy(*sets[0], *sets[1], *sets[2])
    assert 10.0 < eff < 90.0


@pytest.mark.parametrize("n_retain, n_test", [(400, 250), (150, 250)])
@pytest.mark.parametrize("kind", ["confidence", "entropy", "prob"])
def test_mia_matches_the_definition_step_by_step(n_retain, n_test, kind):
    rng = np.random.default_rng(2)
    retain, retain_y = split(rng, n_retain, 0.4, 1.0)
    test, test_y = split(rng, n_test, 0.1, 0.9)
    forget, forget_y = split(rng, 120, 0.2, 1.0)
    n = min(n_retain, n_test)  # first |test| retain; if retain is smaller, first |retain| test
    feats = {
        "confidence": lambda p, y: p[np.arange(len(y)), y][:, None],
        "entropy": lambda p, y: -(p * np.log(p)).sum(axis=1, keepdims=True),
        "prob": lambda p, y: p,
    }[kind]
    x = np.concatenate([feats(retain[:n], retain_y[:n]), feats(test[:n], test_y[:n])])
    labels = np.r_[np.ones(n), np.zeros(n)]
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, labels)
    want = 100.0 * np.mean(clf.predict(feats(forget, forget_y)) == 0)
    got = mia_efficacy(retain, retain_y, test, test_y, forget, forget_y, kind=kind)
    assert got == want


def test_only_the_first_len_test_retain_examples_matter():
    rng = np.random.default_rng(3)
    head, head_y = split(rng, 200, 0.8, 1.0)
    tail, tail_y = split(rng, 300, 0.0, 0.3)
    test, test_y = split(rng, 200, 0.0, 0.5)
    forget, forget_y = split(rng, 100, 0.3, 1.0)
    base = mia_efficacy(np.r_[head, tail], np.r_[head_y, tail_y], test, test_y, forget, forget_y)
    other_tail, other_tail_y = split(rng, 50, 0.4, 0.6)  # different values and length
    same = mia_efficacy(np.r_[head, other_tail], np.r_[head_y, other_tail_y], test, test_y,
                        forget, forget_y)
    assert same == base
    # Order matters: putting the low-confidence tail first changes the shadow members.
    flipped = mia_efficacy(np.r_[tail, head], np.r_[tail_y, head_y], test, test_y, forget, forget_y)
    assert flipped != base


def test_mia_accepts_torch_and_handles_empty_sets():
    rng = np.random.default_rng(4)
    (r, ry), (t, ty), (f, fy) = (split(rng, 60, 0.2, 1.0) for _ in range(3))
    want = mia_efficacy(r, ry, t, ty, f, fy)
    tt = [torch.from_numpy(a) for a in (r, ry, t, ty, f, fy)]
    assert mia_efficacy(*tt) == want
    assert math.isnan(mia_efficacy(r, ry, t, ty, f[:0], fy[:0]))
    with pytest.raises(ValueError):
        mia_efficacy(r[:0], ry[:0], t, ty, f, fy)


def test_mia_all_covers_every_kind():
    rng = np.random.default_rng(5)
    sets = [split(rng, 80, 0.2, 1.0) for _ in range(3)]
    args = [a for s in sets for a in s]
    res = mia_all(*args)
    assert set(res) == set(MIA_KINDS)
    assert res["confidence"] == mia_efficacy(*args)
    assert all(0.0 <= v <= 100.0 for v in res.values())


# --- gaps -----------------------------------------------------------------------------------------

def test_avg_gap_and_forget_gap():
    retrain = {"unlearn_acc": 5.0, "retain_acc": 100.0, "test_acc": 94.0, "mia_efficacy": 13.0}
    run = {"unlearn_acc": 7.0, "retain_acc": 99.0, "test_acc": 90.0, "mia_efficacy": 10.0, "x": 1}
    assert METRIC_KEYS == ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy")
    assert avg_gap(run, retrain) == pytest.approx((2 + 1 + 4 + 3) / 4)
    assert forget_gap(run, retrain) == pytest.approx((2 + 3) / 2)
    assert avg_gap(run, retrain, keys=("test_acc",)) == pytest.approx(4.0)
    assert avg_gap(retrain, retrain) == 0.0


def test_gap_missing_key_raises_naming_it():
    retrain = {"unlearn_acc": 5.0, "retain_acc": 100.0, "test_acc": 94.0, "mia_efficacy": 13.0}
    run = {k: v for k, v in retrain.items() if k != "test_acc"}
    with pytest.raises(KeyError, match="test_acc"):
        avg_gap(run, retrain)
    with pytest.raises(KeyError, match="mia_efficacy"):
        forget_gap(retrain, {"unlearn_acc": 5.0})


# --- predict_probs --------------------------------------------------------------------------------

def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(16, 4))


def test_predict_probs_rows_sum_to_one_and_match_eval_forward():
    model = make_model().train()
    x = torch.randn(37, 6)
    probs = predict_probs(model, x, batch_size=8)
    assert probs.shape == (37, 4) and probs.dtype == torch.float32 and probs.device.type == "cpu"
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(37))
    with torch.no_grad():
        want = torch.softmax(model.eval()(x), dim=1)  # eval mode: dropout off, BN running stats
    torch.testing.assert_close(probs, want)
    assert predict_probs(model, x[:0]).shape == (0, 4)


def test_predict_probs_restores_modes():
    model = make_model().train()
    model[1].eval()  # a caller freezing BatchNorm: the mixed state must survive
    before = [m.training for m in model.modules()]
    predict_probs(model, torch.randn(5, 6))
    assert [m.training for m in model.modules()] == before
    model.eval()
    predict_probs(model, torch.randn(5, 6))
    assert not any(m.training for m in model.modules())
