"""Evaluation metrics for unlearning: accuracies, the SVC membership-inference attack, gaps to Retrain.

Every score is on the percent scale (0..100). UA = 100 - accuracy on the forget set; RA and TA =
accuracy on the retain and test sets; MIA-efficacy = the population SVC attack of the l1-sparse and
SalUn tables (Jia et al. 2023, Fan et al. 2024); avg_gap = mean absolute difference to the Retrain
model over those four numbers.
All functions are pure; only :func:`predict_probs` touches a model, and it restores the model's mode.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch

METRIC_KEYS = ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy")
MIA_KINDS = ("correctness", "confidence", "entropy", "m_entropy", "prob")
# Keeps log() finite at p = 0 and p = 1; far below any probability that changes an attack's decision.
_EPS = 1e-12


def _np(a) -> np.ndarray:
    """A torch tensor (any device) or array-like as a NumPy array, without copying when avoidable."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def accuracy(logits_or_preds, y) -> float:
    """Top-1 accuracy in percent (0..100).

    ``logits_or_preds``: logits ``(N, C)`` or predicted labels ``(N,)`` (torch or NumPy);
    ``y``: true labels ``(N,)``. Returns ``nan`` for ``N == 0`` (an accuracy of nothing is undefined,
    and 0 or 100 would silently bias an average). Raises ``ValueError`` if the lengths differ.
    """
    out, y = _np(logits_or_preds), _np(y).reshape(-1)
    preds = out.argmax(axis=1) if out.ndim == 2 else out.reshape(-1)
    if len(preds) != len(y):
        raise ValueError(f"accuracy: {len(preds)} predictions but {len(y)} labels")
    if len(y) == 0:
        return float("nan")
    return float(100.0 * np.mean(preds == y))


def mia_features(probs, y, kind: str) -> np.ndarray:
    """Attack features from softmax probabilities ``probs (N, C)`` and int labels ``y (N,)``.

    ``kind``: ``"confidence"`` p_y; ``"correctness"`` 1.0 if argmax == y else 0.0; ``"entropy"``
    -sum_k p_k log p_k; ``"m_entropy"`` the modified entropy of Song & Mittal (2021),
    -(1 - p_y) log p_y - sum_{k != y} p_k log(1 - p_k); each of these has shape ``(N, 1)``.
    ``"prob"`` is the whole vector ``(N, C)``. Returns float64; always finite (probabilities are
    clamped to [eps, 1 - eps] inside the logs). Unknown kind -> ``ValueError``.
    """
    p = _np(probs).astype(np.float64, copy=False)
    y = _np(y).astype(np.int64).reshape(-1)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"mia_features: probs {p.shape} must be (N, C) with N = {len(y)} labels")
    rows = np.arange(len(y))
    if kind == "confidence":
        return p[rows, y].reshape(-1, 1)
    if kind == "correctness":
        return (p.argmax(axis=1) == y).astype(np.float64).reshape(-1, 1)
    if kind == "prob":
        return p.copy()
    pc = np.clip(p, _EPS, 1.0 - _EPS)
    if kind == "entropy":
        return -(p * np.log(pc)).sum(axis=1).reshape(-1, 1)
    if kind == "m_entropy":
        # The reference code uses log p where log(1 - p) belongs for k != y; this is the paper's formula.
        others = p * np.log(1.0 - pc)
        others[rows, y] = 0.0
        py = p[rows, y]
        return (-(1.0 - py) * np.log(pc[rows, y]) - others.sum(axis=1)).reshape(-1, 1)
    raise ValueError(f"mia_features: unknown kind {kind!r}; expected one of {MIA_KINDS}")


def mia_efficacy(retain_probs, retain_y, test_probs, test_y, forget_probs, forget_y,
                 kind: str = "confidence") -> float:
    """MIA-efficacy in percent: how many forget examples an SVC attack calls non-members.

    Shadow members (label 1) are the FIRST ``len(test)`` retain examples in the order given; shadow
    non-members (label 0) are the test examples. If retain has fewer examples than test, all of
    retain and the first ``len(retain)`` test examples are used, so the two classes stay balanced.
    An ``SVC(C=3, gamma="auto", kernel="rbf")`` is fitted on :func:`mia_features` of ``kind`` and
    applied to the forget set; the result is 100 x the fraction predicted non-member. Higher means
    more forgotten; compare with Retrain's value. Empty forget set -> ``nan``; empty retain or test
    set -> ``ValueError`` (no attack can be trained).
    """
    n_forget = len(_np(forget_y))
    if n_forget == 0:
        return float("nan")
    n = min(len(_np(retain_y)), len(_np(test_y)))
    if n == 0:
        raise ValueError("mia_efficacy: the retain and test sets must both be non-empty")
    members = mia_features(_np(retain_probs)[:n], _np(retain_y)[:n], kind)
    non_members = mia_features(_np(test_probs)[:n], _np(test_y)[:n], kind)
    x = np.concatenate([members, non_members])
    labels = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    from sklearn.svm import SVC  # here, not at import: the driver and read-only verbs never fit one

    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(x, labels)
    pred = attack.predict(mia_features(forget_probs, forget_y, kind))
    return float(100.0 * np.mean(pred == 0))


def mia_all(retain_probs, retain_y, test_probs, test_y, forget_probs, forget_y) -> dict[str, float]:
    """:func:`mia_efficacy` for every kind in :data:`MIA_KINDS`, as ``{kind: efficacy}``."""
    args = (retain_probs, retain_y, test_probs, test_y, forget_probs, forget_y)
    return {kind: mia_efficacy(*args, kind=kind) for kind in MIA_KINDS}


def avg_gap(metrics: Mapping[str, float], retrain: Mapping[str, float],
            keys: Iterable[str] = METRIC_KEYS) -> float:
    """Mean over ``keys`` of ``|metrics[k] - retrain[k]|`` (the tables' "Avg. Gap"; lower is better).

    A key missing from either mapping raises ``KeyError`` naming the key and the mapping.
    """
    keys = tuple(keys)
    if not keys:
        raise ValueError("avg_gap: no keys given")
    for name, m in (("metrics", metrics), ("retrain", retrain)):
        missing = [k for k in keys if k not in m]
        if missing:
            raise KeyError(f"avg_gap: {name} lacks {', '.join(missing)}")
    return float(np.mean([abs(float(metrics[k]) - float(retrain[k])) for k in keys]))


def forget_gap(metrics: Mapping[str, float], retrain: Mapping[str, float]) -> float:
    """Mean of ``|UA - UA_r|`` and ``|MIA - MIA_r|``: the gap on forgetting alone (keys
    ``unlearn_acc`` and ``mia_efficacy``). Missing key -> ``KeyError``."""
    return avg_gap(metrics, retrain, keys=("unlearn_acc", "mia_efficacy"))


def tow(metrics: Mapping[str, float], retrain: Mapping[str, float], forget_key: str = "forget_acc"
        ) -> float:
    """Tug of War (Zhao et al., NeurIPS 2024), in [0, 1], 1 = Retrain's accuracies exactly:
    (1 - |A_f - A_f^r| / 100) (1 - |RA - RA^r| / 100) (1 - |TA - TA^r| / 100), A_f = forget accuracy.
    ``forget_key="mia_efficacy"`` gives ToW-MIA (the forget term compares MIA-efficacy instead).
    A missing key -> ``KeyError``; NaN passes through."""
    out = 1.0
    for k in (forget_key, "retain_acc", "test_acc"):
        if k not in metrics or k not in retrain:
            raise KeyError(f"tow: {k} is missing")
        out *= 1.0 - abs(float(metrics[k]) - float(retrain[k])) / 100.0
    return out


@torch.no_grad()
def predict_probs(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024,
                  amp: bool = False) -> torch.Tensor:
    """Softmax probabilities ``(N, C)`` of ``model`` on ``x``, as float32 on the CPU.

    Runs in eval mode in batches of ``batch_size`` on ``x``'s device (the model must already be
    there); the softmax is taken in float32 even under autocast. ``amp=True`` enables bfloat16
    autocast, and only when ``x`` is on CUDA. Every submodule's train/eval flag is restored after.
    """
    if batch_size < 1:
        raise ValueError(f"predict_probs: batch_size must be >= 1, got {batch_size}")
    # Remember each submodule's flag, not just the root's: callers may freeze BatchNorm selectively.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    use_amp = amp and x.is_cuda
    try:
        # An empty x still yields a (0, C) result by running the model on an empty batch.
        chunks = x.split(batch_size) if len(x) else (x,)
        out = []
        for chunk in chunks:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                logits = model(chunk)
            out.append(torch.softmax(logits.float(), dim=1).cpu())
        return torch.cat(out)
    finally:
        for m, training in modes:
            m.training = training


# -- DeepUnlearn's attack, objective and run-time efficiency (Cadet et al. 2024, arXiv 2410.01276) ---
# The same quantities as their code (xcadet/deepunlearn, munl/evaluation and munl/hpsearch), on the
# percent scale of this module: their fractions x 100, so du_norm = 100 x their selection score.

DU_SEED = 123  # DeepUnlearn's random_state for the attack's subsample and cross-validation splits


def per_example_loss(probs, y) -> np.ndarray:
    """Cross-entropy -log p_y of each example (float64), from softmax probabilities ``(N, C)``;
    p_y is clamped at 1e-12, so a loss is at most 27.6."""
    p = mia_features(probs, y, "confidence").reshape(-1)
    return -np.log(np.clip(p, _EPS, 1.0))


def loss_mia(forget_losses, heldout_losses, n_splits: int = 10, seed: int = DU_SEED) -> float:
    """DeepUnlearn's membership attack, in percent: the accuracy of a logistic regression telling
    forget examples from held-out ones by their loss alone. The larger set is subsampled (seeded)
    to the size n of the smaller; accuracy is the mean over ``n_splits`` StratifiedShuffleSplit
    folds (10% test each) of sklearn ``LogisticRegression()``. 50 = the attack cannot tell the sets
    apart; 100 (or 0) = it always can. Fewer than 10 examples in either set -> ``nan``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    a = np.asarray(forget_losses, dtype=np.float64).reshape(-1)
    b = np.asarray(heldout_losses, dtype=np.float64).reshape(-1)
    n = min(len(a), len(b))
    if n < 10:
        return float("nan")
    rng = np.random.default_rng(seed)
    a, b = (s if len(s) == n else rng.choice(s, n, replace=False) for s in (a, b))
    x = np.concatenate([a, b]).reshape(-1, 1)
    members = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    cv = StratifiedShuffleSplit(n_splits=n_splits, test_size=0.1, random_state=seed)
    return float(100.0 * cross_val_score(LogisticRegression(), x, members, cv=cv,
                                         scoring="accuracy").mean())


def indiscernibility(mia: float) -> float:
    """100 x (1 - |MIA - 50| / 50) for an attack accuracy ``mia`` in percent: 100 when the attack
    is at chance, 0 when it is always right (or always wrong)."""
    return 100.0 - 2.0 * abs(float(mia) - 50.0)


def deepunlearn_mia(forget_probs, forget_y, val_probs, val_y, seed: int = DU_SEED) -> dict[str, float]:
    """The attack on forget vs validation examples: ``du_mia`` (accuracy, percent), its
    ``indiscernibility`` and ``du_indisc`` = 100 - indiscernibility (DeepUnlearn's fourth objective
    term, which needs no Retrain model)."""
    mia = loss_mia(per_example_loss(forget_probs, forget_y), per_example_loss(val_probs, val_y),
                   seed=seed)
    ind = indiscernibility(mia)
    return {"du_mia": mia, "indiscernibility": ind, "du_indisc": 100.0 - ind}


def deepunlearn_terms(metrics: Mapping[str, float], retrain: Mapping[str, float]) -> dict[str, float]:
    """DeepUnlearn's objective against the Retrain model of the same seed: ``du_retain`` =
    |RA - RA_r| / 3, ``du_forget`` = |FA - FA_r| / 3 (FA = forget accuracy), ``du_val`` =
    |val acc - val acc_r| / 3, with ``du_indisc`` (from :func:`deepunlearn_mia`) the fourth term, and
    ``du_norm``, the Euclidean norm of the four: their rule for the best trial (smallest wins).
    Needs keys retain_acc, forget_acc, val_acc in both and du_indisc in ``metrics`` (KeyError)."""
    terms = {f"du_{name}": abs(float(metrics[key]) - float(retrain[key])) / 3.0
             for name, key in (("retain", "retain_acc"), ("forget", "forget_acc"), ("val", "val_acc"))}
    four = [*terms.values(), float(metrics["du_indisc"])]
    return {**terms, "du_norm": float(np.sqrt(np.sum(np.square(four))))}


def run_time_efficiency(retrain_s: float, method_s: float) -> float:
    """DeepUnlearn's RTE = t_Retrain / t_method (how many times faster than retraining; Retrain = 1).
    ``nan`` when either time is not positive."""
    return float(retrain_s) / float(method_s) if retrain_s > 0 and method_s > 0 else float("nan")
