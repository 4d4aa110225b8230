"""The audits' science on hand-made numbers (unlearning/audit.py, unlearning/relearn.py, metrics.tow):
U-LiRA's leave-one-out statistics and attack quality, KLoM's binned KL (its argument order, floor
and range), the shadow halves, the relearning attack on a real model (never mutated), ToW and AIN,
and the trial options that switch them on. The known answers on digits are in
tests/test_audit_known.py; the distributed job in tests/test_audit_run.py."""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from unlearning import metrics as M
from unlearning.audit import (attack_quality, klom, margins, shadow_members, ulira_statistics)
from unlearning.audit_config import AuditConfig, RelearnConfig
from unlearning.data import DataConfig, load_dataset
from unlearning.relearn import ain, relearn_subset, relearn_time
from unlearning.splits import SplitConfig, make_split


# -- scores ------------------------------------------------------------------------------------

class _Fixed(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[: len(x)]


def test_margin_is_the_logit_scaled_confidence_and_stays_finite():
    ds = load_dataset(DataConfig(name="digits"))
    z = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [80.0, -80.0, 0.0]]).repeat(1, 4)[:, :10]
    idx = torch.arange(3)
    y = ds.y_train[idx]
    got = margins(_Fixed(z), ds, "train", idx)
    p = torch.softmax(z.double(), 1).gather(1, y[:, None]).squeeze(1)
    expected = (p.log() - torch.log1p(-p)).numpy()
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-5)
    assert np.isfinite(got).all()  # p_y rounds to 1 in float64 for the 80-logit row, phi does not


# -- U-LiRA ------------------------------------------------------------------------------------

def _members(n_shadows, n_forget, seed=0):
    return np.array([shadow_members(n_forget, seed, k) for k in range(n_shadows)])


def test_shadow_halves_are_half_seeded_and_do_not_depend_on_n():
    a, b = shadow_members(101, 0, 3), shadow_members(101, 0, 3)
    assert a.sum() == 50 and (a == b).all()
    assert not (shadow_members(101, 0, 4) == a).all() and not (shadow_members(101, 1, 3) == a).all()
    assert (_members(16, 101)[:8] == _members(8, 101)).all()  # the first 8 of 16 are the 8


def test_exchangeable_scores_give_auc_near_half_and_a_shift_is_found():
    rng = np.random.default_rng(0)
    n, f = 16, 400
    m = _members(n, f)
    base = rng.normal(0, 1, f)  # per-example difficulty
    null = base + rng.normal(0, 0.5, (n, f))
    on, off = ulira_statistics(null, m)
    q = attack_quality(on, m)
    assert abs(q["auc"] - 0.5) < 0.04 and q["pairs"] == n * f
    leaky = null + 0.5 * m  # unlearned examples keep half a sigma of their training
    assert attack_quality(ulira_statistics(leaky, m)[0], m)["auc"] > 0.7
    assert attack_quality(ulira_statistics(leaky, m, "per_example")[0], m)["auc"] > 0.65
    # offline: distance from the never-seen Gaussian in either direction (over-forgetting too)
    assert attack_quality(ulira_statistics(null - 1.0 * m, m)[1], m)["auc"] > 0.7


def test_the_audited_shadow_never_informs_its_own_gaussians():
    """Row j is computed from the other shadows only: changing shadow j's labels leaves it as is."""
    rng = np.random.default_rng(1)
    s, m = rng.normal(size=(8, 50)), _members(8, 50)
    flipped = m.copy()
    flipped[3] = ~flipped[3]
    for variance in ("global", "per_example"):
        a, b = ulira_statistics(s, m, variance)[0], ulira_statistics(s, flipped, variance)[0]
        np.testing.assert_allclose(a[3], b[3], rtol=1e-12)  # (up to float rounding)
        assert not np.allclose(np.nan_to_num(a[4]), np.nan_to_num(b[4]))


def test_examples_missing_a_group_are_left_out_not_guessed():
    s = np.arange(12.0).reshape(3, 4)
    m = np.array([[1, 1, 0, 0], [1, 1, 0, 1], [1, 0, 1, 1]], bool)  # example 0: never OUT
    on, off = ulira_statistics(s, m)
    assert np.isnan(on[:, 0]).all() and np.isnan(off[:, 0]).all()
    with pytest.raises(ValueError, match="same"):
        ulira_statistics(s, m[:, :3])


def test_tpr_at_low_fpr_is_read_off_the_roc_curve():
    # 4 negatives, 4 positives; the top score is a negative: TPR at FPR 0 is 0, at 25% it is 1
    stat = np.array([9.0, 1, 2, 3, 8, 7, 6, 5])
    lab = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    q = attack_quality(stat, lab, fprs=(0.0, 0.25))
    assert q["auc"] == pytest.approx(0.75) and q["tpr@0"] == 0.0 and q["tpr@0.25"] == 1.0
    assert math.isnan(attack_quality(stat, np.ones(8, bool))["auc"])


# -- KLoM --------------------------------------------------------------------------------------

def test_klom_identical_is_zero_disjoint_is_the_floor_bound():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5))
    np.testing.assert_allclose(klom(x, x), 0.0, atol=1e-12)
    far = klom(x, x + 1000.0)  # clipped to +-100, still disjoint: every p bin has q = floor
    np.testing.assert_allclose(far, math.log(1 / 1e-5) - math.log(1 + 20 * 1e-5), rtol=1e-3)
    np.testing.assert_allclose(klom(np.ones((4, 3)), np.ones((6, 3))), 0.0)  # one value, width 1


def test_klom_is_kl_of_unlearned_given_oracle_in_that_order():
    """p = unlearned (first argument), q = the oracles: a hand-computed two-bin case. p puts 3/4 in
    the low bin, q 1/4: KL(p || q) = 3/4 log 3 + 1/4 log(1/3); the swapped order gives the same
    here, so a second case with an empty q bin shows the asymmetry (q floored, p not)."""
    p = np.array([[0.0], [0.0], [0.0], [1.0]])
    q = np.array([[0.0], [1.0], [1.0], [1.0]])
    kl = 0.75 * math.log(3) + 0.25 * math.log(1 / 3)
    assert klom(p, q, bins=2)[0] == pytest.approx(kl)
    p2, q2 = np.array([[0.0], [1.0]]), np.array([[0.0], [0.0]])
    forward = klom(p2, q2, bins=2)[0]  # p has mass where q has none: floored, large
    backward = klom(q2, p2, bins=2)[0]  # q's only bin has p mass 1/2: log 2
    assert backward == pytest.approx(math.log(2))
    q_floor = np.array([1.0, 1e-5]) / (1 + 1e-5)
    assert forward == pytest.approx(0.5 * math.log(0.5 / q_floor[0]) + 0.5 * math.log(0.5 / q_floor[1]))


def test_klom_bins_cover_the_pooled_range_top_edge_included():
    p = np.array([[0.0], [10.0]])  # the maximum lands in the last bin, not outside it
    assert klom(p, p.copy(), bins=20)[0] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        klom(np.zeros((3, 2)), np.zeros((3, 4)))


# -- the relearning attack, ToW, AIN -----------------------------------------------------------

@pytest.fixture(scope="module")
def digits_forget():
    ds = load_dataset(DataConfig(name="digits"))
    return ds, make_split(ds, SplitConfig(), 0).forget  # 129 examples of every class


def test_relearning_never_touches_the_model_and_counts_steps(digits_forget):
    from unlearning.models import build_model

    ds, forget = digits_forget
    torch.manual_seed(0)
    model = build_model("mlp", ds.in_shape, ds.num_classes).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = RelearnConfig(count=16, lr=0.05, max_steps=300)  # an untrained MLP, 16 of 129 examples
    r = relearn_time(model, ds, forget, 60.0, cfg, torch.device("cpu"), contextlib.nullcontext)
    assert not r.capped and 1 <= r.steps < 300 and r.forget_acc >= 60.0
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])  # the audited model is left as it was
    assert not model.training
    capped = relearn_time(model, ds, forget, 60.0, cfg.model_copy(update={"max_steps": 2}),
                          torch.device("cpu"), contextlib.nullcontext)
    assert capped.capped and capped.steps == 2
    done = relearn_time(model, ds, forget, 0.0, cfg, torch.device("cpu"), contextlib.nullcontext)
    assert done.steps == 0 and not done.capped  # already there: nothing to relearn
    sub = relearn_subset(cfg, forget)
    assert len(sub) == 16 and torch.isin(sub, forget).all()
    assert (relearn_subset(cfg, forget) == sub).all()  # the same part for every model


def test_tow_and_ain_formulas():
    r = {"forget_acc": 90.0, "retain_acc": 99.0, "test_acc": 95.0, "mia_efficacy": 20.0}
    u = {"forget_acc": 80.0, "retain_acc": 97.0, "test_acc": 94.0, "mia_efficacy": 10.0}
    assert M.tow(r, r) == 1.0
    assert M.tow(u, r) == pytest.approx(0.9 * 0.98 * 0.99)
    assert M.tow(u, r, forget_key="mia_efficacy") == pytest.approx(0.9 * 0.98 * 0.99)
    with pytest.raises(KeyError):
        M.tow({"retain_acc": 1.0}, r)
    assert ain(0, 0) == 1.0 and ain(4.99, 9.99) == pytest.approx(0.5)


def test_retrain_trial_has_tow_one_and_relearn_metrics_when_asked(oracle_cache):
    from tests.conftest import digits_config
    from unlearning.trial import run_trial

    r = run_trial(digits_config("retrain", cache_dir=str(oracle_cache), eval={"relearn": True}))
    assert r.state == "COMPLETE", r.error
    assert r.metrics["tow"] == 1.0 and r.metrics["tow_mia"] == 1.0 and r.metrics["avg_gap"] == 0.0
    assert r.metrics["ain"] == 1.0 and r.metrics["relearn_steps"] == r.reference["retrain"]["relearn_steps"]
    off = run_trial(digits_config("retrain", cache_dir=str(oracle_cache)))
    assert "relearn_steps" not in off.metrics and "ain" not in off.metrics  # off by default


def test_settings_reject_unknown_keys_and_bad_values():
    from unlearning.trial import EvalConfig

    assert EvalConfig(relearn=True).relearn == RelearnConfig() and EvalConfig(relearn=False).relearn is None
    with pytest.raises(ValueError, match="stpes"):
        RelearnConfig(stpes=3)
    with pytest.raises(ValueError, match="check_every"):
        RelearnConfig(check_every=10, max_steps=5)
    with pytest.raises(ValueError):
        AuditConfig(kinds=["lira"])
