"""A model's metrics on a split, in percent: UA, RA, TA, MIA-efficacy (and the blind forget/validation
accuracies, DeepUnlearn's loss attack), then the gaps to Retrain that a trial reports.

Two parts, so a long-lived worker can overlap them: `model_outputs` needs the model and its device
(one forward pass per set); `score` needs only those outputs and the CPU (the MIA SVC).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, field_validator

from unlearning import metrics as M
from unlearning.audit_config import RelearnConfig
from unlearning.config import StrictModel
from unlearning.data import Dataset
from unlearning.errors import FailureKind, TrialFailed
from unlearning.relearn import ain
from unlearning.splits import Split


class EvalConfig(StrictModel):
    mia: bool = True
    mia_kind: Literal["confidence", "correctness", "entropy", "m_entropy", "prob"] = "confidence"
    batch_size: int = Field(1024, ge=1)
    # every k epochs (and after the last) the unlearning loop also records UA, RA, TA (no MIA) in the
    # per-epoch history; 0 = off. Costs one forward pass over the forget, retain, test and val sets.
    eval_every: int = Field(0, ge=0)
    # the relearning attack (off by default): `true` or its settings; adds relearn_steps (and AIN
    # against Retrain's relearn time) to the trial's metrics
    relearn: RelearnConfig | None = None

    @field_validator("relearn", mode="before")
    @classmethod
    def _relearn_shorthand(cls, v):
        return {} if v is True else (None if v is False else v)
    # DeepUnlearn's loss attack, forget vs validation: du_mia, indiscernibility and, with Retrain,
    # their objective terms du_retain, du_forget, du_val, du_indisc and du_norm
    du_mia: bool = False


@torch.no_grad()
def _probs(model, ds: Dataset, x_raw: torch.Tensor, idx: torch.Tensor, cfg: EvalConfig, amp: bool):
    idx, chunk = idx.to(x_raw.device), 8 * cfg.batch_size
    fmt = torch.channels_last if x_raw.is_cuda else torch.contiguous_format
    out = [M.predict_probs(model, ds.prepare(x_raw[idx[s:s + chunk]]).contiguous(memory_format=fmt),
                           cfg.batch_size, amp) for s in range(0, len(idx), chunk)]
    return torch.cat(out) if out else torch.empty(0, ds.num_classes)


@dataclass
class Outputs:
    """A model's softmax outputs (CPU tensors) and labels on the forget, retain, test and val sets:
    everything `score` needs, so the metrics can be computed after the model has moved on."""

    probs: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]


def model_outputs(model, ds: Dataset, split: Split, cfg: EvalConfig, amp: bool = False) -> Outputs:
    """The device part of `evaluate`: one forward pass over each set. Raises TrialFailed (diverged)
    when the model's outputs are not finite: that, not a scikit-learn complaint about NaN inputs to
    the MIA, is the reason a user needs."""
    p = {name: _probs(model, ds, x, idx, cfg, amp) for name, x, idx in (
        ("forget", ds.x_train, split.forget), ("retain", ds.x_train, split.retain),
        ("test", ds.x_test, split.test), ("val", ds.x_val, split.val))}
    bad = {name: int((~torch.isfinite(v)).any(1).sum()) for name, v in p.items() if len(v)}
    if any(bad.values()):
        where = ", ".join(f"{n} {k}/{len(p[n])}" for n, k in bad.items() if k)
        raise TrialFailed(f"diverged: the model's outputs are not finite (NaN/inf) on {where} examples",
                          FailureKind.DIVERGED)
    y = {"forget": ds.y_train[split.forget.to(ds.device)].cpu(),
         "retain": ds.y_train[split.retain.to(ds.device)].cpu(),
         "test": ds.y_test[split.test.to(ds.device)].cpu(), "val": ds.y_val[split.val.to(ds.device)].cpu()}
    return Outputs(p, y)


def score(o: Outputs, cfg: EvalConfig) -> dict[str, float]:
    """The CPU part of `evaluate`: UA, RA, TA, MIA-efficacy (the SVC, seconds at CIFAR size) and the
    DeepUnlearn attack from `model_outputs`. Pure: the same outputs give the same numbers."""
    p, y = o.probs, o.labels
    forget_acc = M.accuracy(p["forget"], y["forget"])
    out = {"unlearn_acc": 100.0 - forget_acc, "forget_acc": forget_acc,
           "retain_acc": M.accuracy(p["retain"], y["retain"]), "test_acc": M.accuracy(p["test"], y["test"]),
           "val_acc": M.accuracy(p["val"], y["val"]) if len(y["val"]) else float("nan")}
    if cfg.mia:
        t0 = time.perf_counter()
        out["mia_efficacy"] = M.mia_efficacy(p["retain"], y["retain"], p["test"], y["test"],
                                             p["forget"], y["forget"], kind=cfg.mia_kind)
        out["mia_seconds"] = time.perf_counter() - t0
    if cfg.du_mia:
        out.update(M.deepunlearn_mia(p["forget"], y["forget"], p["val"], y["val"]))
    return out


def evaluate(model, ds: Dataset, split: Split, cfg: EvalConfig, amp: bool = False) -> dict[str, float]:
    """UA, RA, TA, MIA-efficacy (and forget/val accuracy for blind objectives), in percent: `score`
    of `model_outputs`. Raises TrialFailed when the model diverged."""
    return score(model_outputs(model, ds, split, cfg, amp), cfg)


def derived(metrics: dict[str, float], reference: dict[str, dict[str, float]]) -> dict[str, float]:
    """Gaps to Retrain (when it exists), ToW and ToW-MIA (Zhao et al. 2024; 1 = Retrain), AIN (when
    the relearning attack ran), and the utility drop from the original (percentage points)."""
    out = {"utility_drop": reference["original"]["test_acc"] - metrics["test_acc"]}
    r = reference.get("retrain")
    if r is not None:
        out["tow"] = M.tow(metrics, r)
        if "mia_efficacy" in metrics:
            out["avg_gap"] = M.avg_gap(metrics, r)
            out["forget_gap"] = M.forget_gap(metrics, r)
            out["tow_mia"] = M.tow(metrics, r, forget_key="mia_efficacy")
        if "relearn_steps" in metrics and "relearn_steps" in r:
            out["ain"] = ain(metrics["relearn_steps"], r["relearn_steps"])
    if r is not None and "du_indisc" in metrics:
        out.update(M.deepunlearn_terms(metrics, r))
    return out
