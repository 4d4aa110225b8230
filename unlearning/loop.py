"""THE training loop. Every method, the original model and Retrain run through `run_loop`.

Read top to bottom: build the optimizer and schedule, then for each epoch let the method draw its
batches and compute a loss, backpropagate (unless the method wrote gradients itself), step, and let
the method react. No host synchronisation inside an epoch: the NaN check and the loss average are
read once per epoch.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable

import torch

from unlearning.errors import FailureKind, TrialFailed
from unlearning.methods.base import Method, MethodConfig, Step


def make_optimizer(params, cfg: MethodConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Per-epoch LR multiplier: constant; cosine to 0; step (x0.1 at 50% and 75%, as 91/136 of 182)."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return 0.1 ** sum(epoch >= round(f * epochs) for f in (0.5, 0.75))
    return 1.0


def autocast_factory(device: torch.device, precision: str) -> Callable[[], Any]:
    """bf16 autocast on CUDA when asked; a no-op elsewhere (CPU bf16 is slower than fp32 here)."""
    if precision == "bf16" and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_loop(model: torch.nn.Module, method: Method, *, on_epoch: Callable[[dict], None] | None = None
             ) -> tuple[list[dict], list[dict]]:
    """Train `model` in place with `method`. Returns (per-epoch rows, per-step rows).

    Raises TrialFailed when a loss or the weights become non-finite (checked once per epoch). Ends
    early after an epoch where `method.stop` says so (the relearning attack stops at its target).
    """
    cfg, ctx = method.cfg, method.ctx
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg)
    epochs_rows: list[dict] = []
    step_rows: list[dict] = []
    model.train()
    method.setup(model)
    t_start, global_step = time.perf_counter(), 0
    for epoch in range(cfg.epochs):
        method.lr = cfg.lr * lr_factor(cfg.schedule, epoch, cfg.epochs)
        for group in opt.param_groups:
            group["lr"] = method.lr
        method.start_epoch(epoch, model)
        loss_sum = torch.zeros((), device=ctx.device)
        finite = torch.ones((), dtype=torch.bool, device=ctx.device)
        n = 0
        for batch in method.batches(epoch):
            opt.zero_grad(set_to_none=True)
            with ctx.autocast():
                out = method.step(model, batch)
            step = out if isinstance(out, Step) else Step(out)
            if not step.grads_ready:
                step.loss.backward()
            method.before_update(model)
            opt.step()
            logs = method.after_update(model, batch, step) or {}
            loss = step.loss.detach().float()
            loss_sum += loss
            finite &= torch.isfinite(loss)
            n += 1
            global_step += 1
            if method.log_every and global_step % method.log_every == 0:
                step_rows.append({"epoch": epoch, "step": global_step, **step.logs, **logs})
        _sync(ctx.device)
        if not bool(finite) or not all(torch.isfinite(p).all() for p in params):
            raise TrialFailed(f"non-finite loss or weights in epoch {epoch} (method {method.name})",
                              FailureKind.DIVERGED)
        row = {"epoch": epoch, "loss": float(loss_sum) / max(n, 1), "steps": n,
               "lr": opt.param_groups[0]["lr"], "elapsed_s": time.perf_counter() - t_start}
        epochs_rows.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if method.stop(epoch, model):
            break
    return epochs_rows, _to_floats(step_rows)


def _to_floats(rows: list[dict]) -> list[dict]:
    """Step logs may hold 0-d tensors (no sync while training); read them once at the end."""
    return [{k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in r.items()} for r in rows]
