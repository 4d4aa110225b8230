"""Settings of the per-example audits and of the relearning attack (pydantic only, no torch: a sweep
spec's `audit:` section and a trial's `eval.relearn` validate without loading the science). The
definitions they set are in unlearning/audit.py, unlearning/relearn.py and docs/metrics.md."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from unlearning.config import StrictModel

KINDS: tuple[Literal["ulira", "klom", "relearn"], ...] = ("ulira", "klom", "relearn")


class RelearnConfig(StrictModel):
    """Settings of the attack. Defaults: the whole forget set, SGD lr 0.01 momentum 0.9, batch 32,
    at most 200 steps, target 95% of the original's forget accuracy, checked after every step."""

    fraction: float = Field(1.0, gt=0.0, le=1.0)  # part of the forget set fine-tuned on ...
    count: int | None = Field(None, ge=1)  # ... or an exact number of examples (then fraction unused)
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    batch_size: int = Field(32, ge=1)
    max_steps: int = Field(200, ge=1)
    check_every: int = Field(1, ge=1)  # steps between two checks of the forget accuracy
    target: float = Field(0.95, gt=0.0, le=1.0)  # fraction of the original's forget accuracy
    seed: int = 0  # draws the part (the same part for every model, so counts compare)

    @model_validator(mode="after")
    def _check(self):
        if self.check_every > self.max_steps:
            raise ValueError("check_every must not exceed max_steps")
        return self


class AuditConfig(StrictModel):
    """How an audit is run (the science; `sweeps.spec.AuditSpec` adds which configurations)."""

    shadows: int = Field(16, ge=2)  # N: shadows for U-LiRA, and originals / references for KLoM
    kinds: list[Literal["ulira", "klom", "relearn"]] = Field(default_factory=lambda: list(KINDS),
                                                             min_length=1)
    seed: int = 0  # draws the halves S_k and the KLoM example subsets
    baselines: bool = True  # also audit `original` (no unlearning) and `retrain`
    # U-LiRA's Gaussians: one variance per group pooled over examples (robust with few shadows, as
    # Carlini et al. advise below 64), or one per example
    variance: Literal["global", "per_example"] = "global"
    klom_bins: int = Field(20, ge=2)
    klom_examples: int = Field(1000, ge=1)  # retain and validation examples KLoM scores (each)
    relearn: RelearnConfig = RelearnConfig()
