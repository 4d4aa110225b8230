"""Forget/retain splits (seeded by `split_seed`, indices recorded) and `MethodData`, the only door
through which a method reaches training data: it hands out batches of the forget set and of the retain
indices the method is allowed (all of them, or a seeded subset of m), and records every index it gave
out, so `retain_examples_seen` is measured, not claimed.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterator, Literal, cast

import numpy as np
import torch
from pydantic import Field, model_validator

from unlearning.config import StrictModel
from unlearning.data import Dataset, augment
from unlearning.errors import UserError


class SplitConfig(StrictModel):
    """Which training examples are forgotten. Random: a count or a fraction of the training set
    (exactly one of them), drawn by `rule`; class: every training example of `forget_class` (the test
    set then drops that class)."""

    scenario: Literal["random", "class"] = "random"
    forget_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    forget_count: int | None = Field(None, gt=0)
    forget_class: int | None = Field(None, ge=0)
    # randperm: the first k of torch.randperm(n) seeded by the seed; train_test_split: the test part
    # of scikit-learn's train_test_split(range(n), test_size=k, random_state=seed), DeepUnlearn's
    # draw (a fraction rounds up there, as scikit-learn rounds it)
    rule: Literal["randperm", "train_test_split"] = "randperm"
    # None: the trial's split_seed; an int: this split for every trial seed (DeepUnlearn draws one
    # split, random_state 123, for all its model seeds)
    seed: int | None = None

    @model_validator(mode="after")
    def _one_way(self):
        if self.scenario == "random":
            if self.forget_class is not None:
                raise ValueError("forget_class is only for scenario 'class'")
            if self.forget_fraction is not None and self.forget_count is not None:
                raise ValueError("give forget_fraction or forget_count, not both")
            if self.forget_fraction is None and self.forget_count is None:
                object.__setattr__(self, "forget_fraction", 0.1)
        else:
            if self.forget_class is None:
                raise ValueError("scenario 'class' needs forget_class")
            if self.rule != "randperm":
                raise ValueError("rule is for scenario 'random' (a class is forgotten whole)")
            if self.forget_fraction is not None or self.forget_count is not None:
                raise ValueError("scenario 'class' takes forget_class, not a fraction or count")
        return self


@dataclass(frozen=True)
class Split:
    """Indices (sorted, int64, CPU) into the data set's train/test/val tensors."""

    forget: torch.Tensor
    retain: torch.Tensor
    test: torch.Tensor  # the test examples that count (class-wise: all but the forgotten class)
    val: torch.Tensor

    def digest(self) -> str:
        h = hashlib.sha256()
        for t in (self.forget, self.retain, self.test, self.val):
            h.update(t.numpy().tobytes() + b"|")
        return h.hexdigest()[:16]


def make_split(ds: Dataset, cfg: SplitConfig, split_seed: int) -> Split:
    """The forget/retain split of `ds` for `cfg`, a pure function of (data, cfg, split_seed)."""
    n = len(ds.y_train)
    y_tr, y_te, y_va = ds.y_train.cpu(), ds.y_test.cpu(), ds.y_val.cpu()
    all_test, all_val = torch.arange(len(y_te)), torch.arange(len(y_va))
    if cfg.scenario == "class":
        c = cfg.forget_class
        assert c is not None  # SplitConfig._one_way: scenario 'class' has a forget_class
        if c >= ds.num_classes:
            raise UserError(f"split.forget_class: {c} is out of range for {ds.name} "
                            f"({ds.num_classes} classes: 0..{ds.num_classes - 1})")
        forget = torch.nonzero(y_tr == c).flatten()
        test, val = all_test[y_te != c], all_val[y_va != c]
    else:
        seed = split_seed if cfg.seed is None else cfg.seed
        rounding = math.ceil if cfg.rule == "train_test_split" else round
        # SplitConfig._one_way: a random scenario has a count or a fraction
        k = cfg.forget_count if cfg.forget_count is not None else rounding(cast(float, cfg.forget_fraction) * n)
        if not 0 < k < n:
            raise UserError(f"split: forgetting {k} of {n} training examples leaves no forget or "
                            "no retain set")
        if cfg.rule == "train_test_split":
            from sklearn.model_selection import train_test_split

            drawn = train_test_split(np.arange(n), test_size=k, random_state=seed)[1]
            forget = torch.from_numpy(np.sort(drawn))
        else:
            forget = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values
        test, val = all_test, all_val
    keep = torch.ones(n, dtype=torch.bool)
    keep[forget] = False
    return Split(forget, torch.nonzero(keep).flatten(), test, val)


def retain_subset(retain: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    """A seeded subset of m retain indices (sorted): LTU's accessible retain set."""
    if not 0 < m <= len(retain):
        raise UserError(f"retain_subset: {m} is out of range (1..{len(retain)})")
    g = torch.Generator().manual_seed(seed)
    return retain[torch.randperm(len(retain), generator=g)[:m]].sort().values


@dataclass
class Batch:
    """x: normalised inputs; y: labels; idx: train-set indices; forget: which rows are forget
    examples; kind: 'forget', 'retain' or 'mixed' (what the batch was drawn from)."""

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    forget: torch.Tensor
    kind: str


# what `MethodData.batches` serves, and so what a Method's `mode` may be
BATCH_MODES = ("forget", "retain", "mixed", "paired")


class MethodData:
    """What a method may touch. Every gather goes through `_gather`, which marks the indices as
    seen; evaluation uses the Dataset directly and is not counted."""

    def __init__(self, ds: Dataset, forget: torch.Tensor, retain: torch.Tensor, *, val: torch.Tensor,
                 gen: torch.Generator, augment: bool = True):
        dev = ds.device
        self.ds, self.gen, self.augment = ds, gen, augment
        self.forget, self.retain = forget.to(dev), retain.to(dev)
        self.val = val.to(dev)  # held-out data, never training data: MIA models' non-members (LTU)
        self.num_classes = ds.num_classes
        self.seen = torch.zeros(len(ds.y_train), dtype=torch.bool, device=dev)

    def _gather(self, idx: torch.Tensor, forget: torch.Tensor, kind: str, train_aug: bool) -> Batch:
        self.seen[idx] = True
        x = self.ds.x_train[idx]
        if train_aug and self.augment:
            x = augment(x, self.ds.crop_pad, self.ds.flip, self.gen)
        x = self.ds.prepare(x)
        if x.is_cuda:  # matches channels-last models: cuDNN's fast NHWC kernels, no layout copies
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(x, self.ds.y_train[idx], idx, forget, kind)

    def gather(self, idx: torch.Tensor, augment: bool = False) -> Batch:
        """Fixed examples (e.g. a whole small subset), no augmentation by default. After
        `restrict_retain`, indices outside forget + the allowed retain subset are refused."""
        if getattr(self, "_restricted", False) and not bool(
                torch.isin(idx, torch.cat([self.forget, self.retain])).all()):
            raise ValueError("gather: index outside the forget set and the allowed retain subset")
        f = torch.isin(idx, self.forget)
        return self._gather(idx, f, "mixed", augment)

    def val_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ds.prepare(self.ds.x_val[self.val]), self.ds.y_val[self.val]

    def _perm(self, n: int) -> torch.Tensor:
        return torch.randperm(n, device=self.ds.device, generator=self.gen)

    def batches(self, mode: str, batch_size: int, augment: bool = True) -> Iterator[Batch]:
        """One epoch of batches. mode (one of BATCH_MODES): 'forget' | 'retain' (shuffled passes over
        one set), 'mixed' (both sets shuffled together; `forget` marks rows, shapes stay static),
        'paired' (each retain batch joined by a forget batch of the same size, the forget set
        cycled)."""
        if mode in ("forget", "retain"):
            pool = self.forget if mode == "forget" else self.retain
            order = pool[self._perm(len(pool))]
            is_f = torch.full((batch_size,), mode == "forget", device=order.device)
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                yield self._gather(idx, is_f[:len(idx)], mode, augment)
        elif mode == "mixed":
            pool = torch.cat([self.forget, self.retain])
            flags = torch.cat([torch.ones_like(self.forget, dtype=torch.bool),
                               torch.zeros_like(self.retain, dtype=torch.bool)])
            p = self._perm(len(pool))
            pool, flags = pool[p], flags[p]
            for s in range(0, len(pool), batch_size):
                yield self._gather(pool[s:s + batch_size], flags[s:s + batch_size], "mixed", augment)
        elif mode == "paired":
            r = self.retain[self._perm(len(self.retain))]
            f = self.forget[self._perm(len(self.forget))]
            nf = len(f)
            for i, s in enumerate(range(0, len(r), batch_size)):
                ri = r[s:s + batch_size]
                fi = f[(torch.arange(len(ri), device=f.device) + i * batch_size) % nf]
                idx = torch.cat([fi, ri])
                flags = torch.arange(len(idx), device=f.device) < len(fi)
                yield self._gather(idx, flags, "mixed", augment)
        else:
            raise ValueError(f"unknown batch mode {mode!r}")

    def restrict_retain(self, subset: torch.Tensor) -> None:
        """Narrow, for good, the retain indices this door hands out to `subset` (a part of the current
        retain set: LTU's accessible D_r^ of size m). `seen` is kept, so the trial's count stays true."""
        subset = subset.to(self.retain.device)
        if not bool(torch.isin(subset, self.retain).all()):
            raise ValueError("restrict_retain: the subset is not part of the retain set")
        self.retain, self._restricted = subset, True

    def retain_examples_seen(self, full_retain: torch.Tensor) -> int:
        """Distinct retain examples (of the full retain set) handed to the method."""
        return int(self.seen[full_retain.to(self.seen.device)].sum())
