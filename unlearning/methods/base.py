"""What a method is: a pydantic Config and a `step`, plus optional hooks the one loop calls.

A method file is short: it declares which batches it wants (`mode`), computes a loss in `step`, and
overrides a hook only where its algorithm needs one. The loop (unlearning/loop.py) does the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from unlearning.config import StrictModel
from unlearning.splits import Batch, MethodData


class MethodConfig(StrictModel):
    """Optimisation settings every method shares (the reference protocol's defaults: SGD, momentum
    0.9, weight decay 5e-4, batch 256). Methods subclass it to add their own fields."""

    epochs: int = Field(5, ge=1)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(256, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["constant", "cosine", "step"] = "constant"
    augment: bool = True


@dataclass
class Step:
    """What `step` may return instead of a bare loss: `grads_ready=True` when the method has written
    the gradients itself (gradient surgery); `logs` are scalars for the per-step history."""

    loss: torch.Tensor
    grads_ready: bool = False
    logs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a method is given: the data it may touch, the frozen original model (teacher, mask
    source), the device, and its own random generator (seeded by unlearn_seed)."""

    data: MethodData
    original: torch.nn.Module
    device: torch.device
    gen: torch.Generator
    autocast: Any  # a context-manager factory (bf16 on CUDA, or a no-op)


class Method:
    """Base of all methods. Subclasses set `name`, `Config`, `mode` and implement `step`."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    mode: ClassVar[str] = "retain"  # batches: forget | retain | mixed | paired (see MethodData)
    log_every: ClassVar[int] = 0  # >0: record step logs to the per-step history every N steps
    # True: the method IS an oracle model (Retrain), served from the oracle cache; nothing runs
    from_oracle: ClassVar[bool] = False

    def __init__(self, cfg: MethodConfig, ctx: Context):
        self.cfg, self.ctx = cfg, ctx
        self.lr = cfg.lr  # this epoch's learning rate (the schedule applied): set by the loop


    # -- hooks, in the order the loop calls them ------------------------------------------------
    def setup(self, model: torch.nn.Module) -> None:
        """Once, before the first epoch (e.g. SalUn's saliency mask)."""

    def start_epoch(self, epoch: int, model: torch.nn.Module) -> None:
        """Before each epoch (e.g. redraw random labels); `self.lr` is already this epoch's."""

    def batches(self, epoch: int):
        return self.ctx.data.batches(self.mode, self.cfg.batch_size, self.cfg.augment)

    def step(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor | Step:
        raise NotImplementedError

    def before_update(self, model: torch.nn.Module) -> None:
        """After gradients exist, before the optimizer step (e.g. mask gradients)."""

    def after_update(self, model: torch.nn.Module, batch: Batch, step: Step) -> dict[str, Any] | None:
        """After the optimizer step; may return scalars for the per-step history."""

    def stop(self, epoch: int, model: torch.nn.Module) -> bool:
        """After each epoch: True ends training early (no method does; the relearning attack does)."""
        return False


# -- small shared pieces of loss arithmetic ------------------------------------------------------

def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values where mask is true; 0 (not NaN) when the mask is empty."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy in float32."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def random_labels(n: int, num_classes: int, gen: torch.Generator, device) -> torch.Tensor:
    """A random label per train-set index (uniform over classes, as the reference RL code draws)."""
    return torch.randint(0, num_classes, (n,), generator=gen, device=device)
