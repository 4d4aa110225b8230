"""The relearning attack (Chundawat et al., "Zero-shot machine unlearning", IEEE TIFS 2023): fine-tune
a COPY of a model on its forget set (or a seeded part of it) and count the optimizer steps until its
accuracy on the whole forget set is back at `target` x the original model's. A model that only hid
what it knew relearns fast; Retrain, which never saw the examples, is the yardstick:

    AIN = (RT_u + 0.01) / (RT_retrain + 0.01)       (anamnesis index; 1 = relearns like Retrain)

The audited model is never touched (ERASURE's reference code fine-tunes the unlearned model in place:
its deepcopy is commented out). Relearning runs through the one loop (`unlearning.loop.run_loop`),
which checks the target after every `check_every` steps through the `stop` hook and ends there;
never reaching it within `max_steps` gives RT = max_steps with `capped` set (a censored count).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from unlearning import metrics as M
from unlearning.audit_config import RelearnConfig
from unlearning.data import Dataset
from unlearning.loop import run_loop
from unlearning.methods.base import Context, Method, MethodConfig, ce
from unlearning.splits import MethodData


@dataclass
class Relearned:
    steps: int  # optimizer steps until the target was reached (max_steps when capped)
    capped: bool  # never reached within max_steps
    forget_acc: float  # forget accuracy when it stopped (percent)
    seconds: float  # wall time of the attack, evaluation included


def relearn_subset(cfg: RelearnConfig, forget: torch.Tensor) -> torch.Tensor:
    """The forget indices fine-tuned on: a seeded part (all of them at fraction 1), the same part
    for every model, so the counts compare."""
    n = max(1, round(cfg.fraction * len(forget))) if cfg.count is None else min(cfg.count, len(forget))
    g = torch.Generator().manual_seed(cfg.seed)
    return forget[torch.randperm(len(forget), generator=g)[:n]].sort().values


def ain(rt_unlearned: float, rt_retrain: float) -> float:
    """Anamnesis index of Chundawat et al.: (RT_u + 0.01) / (RT_retrain + 0.01)."""
    return (rt_unlearned + 0.01) / (rt_retrain + 0.01)


class _Relearn(Method):
    """Cross-entropy on the part of the forget set; `check_every` steps per loop epoch, then `stop`
    measures the forget accuracy. Not registered: an attack, not an unlearning method."""

    name = "relearn"

    def __init__(self, cfg, ctx, rcfg: RelearnConfig, x_eval, y_eval, target_acc: float):
        super().__init__(cfg, ctx)
        self.rcfg, self.x_eval, self.y_eval, self.target = rcfg, x_eval, y_eval, target_acc
        self.done, self.acc = 0, math.nan

    def batches(self, epoch):
        r, d = self.rcfg, self.ctx.data
        n = min(r.check_every, r.max_steps - self.done)
        drawn = 0
        while drawn < n:  # cycle over the (small) part: one epoch here is `check_every` steps
            for b in d.batches("forget", r.batch_size, augment=False):
                yield b
                drawn += 1
                if drawn == n:
                    break
        self.done += n

    def step(self, model, batch):
        return ce(model(batch.x), batch.y).mean()

    def stop(self, epoch, model):
        self.acc = forget_accuracy(model, self.x_eval, self.y_eval)
        return self.acc >= self.target


def forget_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return M.accuracy(M.predict_probs(model, x), y.cpu())


def _inputs(ds: Dataset, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    i = idx.to(ds.device)
    x = ds.prepare(ds.x_train[i])
    return (x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x), ds.y_train[i]


def train_accuracy(model: torch.nn.Module, ds: Dataset, idx: torch.Tensor) -> float:
    """Top-1 accuracy (percent) on training examples `idx` (e.g. the original's on the forget set)."""
    return forget_accuracy(model, *_inputs(ds, idx))


def relearn_time(model: torch.nn.Module, ds: Dataset, forget: torch.Tensor, target_acc: float,
                 cfg: RelearnConfig, device: torch.device, autocast) -> Relearned:
    """Steps a copy of `model` needs to get back to `target_acc` (percent) on the forget set.
    `model` is left exactly as it was (weights, buffers, mode)."""
    t0 = time.perf_counter()
    x_eval, y_eval = _inputs(ds, forget)
    twin = copy.deepcopy(model)
    for p in twin.parameters():
        p.requires_grad_(True)
    acc = forget_accuracy(twin, x_eval, y_eval)
    if acc >= target_acc:
        return Relearned(0, False, acc, time.perf_counter() - t0)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    view = MethodData(ds, relearn_subset(cfg, forget.cpu()), torch.empty(0, dtype=torch.long),
                      val=torch.empty(0, dtype=torch.long), gen=gen, augment=False)
    mcfg = MethodConfig(epochs=math.ceil(cfg.max_steps / cfg.check_every), lr=cfg.lr,
                        batch_size=cfg.batch_size, momentum=cfg.momentum, weight_decay=0.0,
                        augment=False)
    method = _Relearn(mcfg, Context(view, model, device, gen, autocast), cfg, x_eval, y_eval, target_acc)
    history, _ = run_loop(twin, method)
    reached = method.acc >= target_acc
    steps = sum(row["steps"] for row in history)
    return Relearned(steps if reached else cfg.max_steps, not reached, method.acc,
                     time.perf_counter() - t0)
