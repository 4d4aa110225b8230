"""Gradient combiners: how a forget (unlearning) objective l_u and a retain objective l_r become the
one gradient the optimizer applies. Shared by EUPMU, UNGrad and LTU.

    combiner.before_backward(l_r, lr) -> logs       optional: react to this step's retain loss first
    combiner.backward(params, l_u, l_r) -> logs     writes p.grad for every p in params
    combiner.after_step(l_r, l_r_after, lr) -> logs  optional: react to the optimizer step

Four strategies:
  linear  w_u * l_u + w_r * l_r, one backward pass.
  pcgrad  both gradients (two passes); when they conflict (<g_u, g_r> < 0) remove the conflict by
          projection (PCGrad, Yu et al. 2020, arXiv 2001.06782): mode none | one_sided (only g_u is
          projected off g_r) | symmetric (each is projected off the other's original).
  ungrad  explicit unilateral surgery (EUPMU paper, arXiv 2510.22124): two passes,
          lambda* = max(0, (-<g_r, g_u> - eps) / ||g_r||^2), d = g_u + lambda* g_r, so <g_r, d> >= -eps.
  eupmu   implicit surgery: ONE pass on the Lagrangian l_u + lambda * l_r; the multiplier follows the
          observed change of the retain loss (a dual step, after the optimizer step or before the
          next backward, see `EUPMU`).

Gradients of the two objectives are flattened into one vector each (the per-tensor results are freed
as soon as they are copied), and the combined vector is handed back to the parameters as views, so the
peak is about three parameter-sized vectors. Nothing here reads a value back to the host: logs are 0-d
tensors that the loop converts once, at the end.
"""
from __future__ import annotations

from typing import Literal

import torch

Tensor = torch.Tensor
_TINY = 1e-12


# -- flat-gradient helpers ---------------------------------------------------------------------------

def flat_grad(loss: Tensor, params: list[Tensor], retain_graph: bool = False) -> Tensor:
    """d loss / d params as one flat float32 vector (zeros where a parameter is unused)."""
    gs = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                      for g, p in zip(gs, params)])


def write_grad(params: list[Tensor], flat: Tensor) -> None:
    """Hand a flat gradient back to the parameters (views of `flat`, cast to each parameter's dtype)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n


def cosine(a: Tensor, b: Tensor) -> Tensor:
    return (a @ b) / (a.norm() * b.norm()).clamp_min(_TINY)


def project_conflict(g_u: Tensor, g_r: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """PCGrad-style harmonisation. Where <g_u, g_r> < 0: one_sided replaces g_u by its projection
    off g_r; symmetric also replaces g_r by its projection off the ORIGINAL g_u. No branch on the
    host: the correction is multiplied by the (0-d) conflict indicator."""
    if mode == "none":
        return g_u, g_r
    dot = g_u @ g_r
    conflict = (dot < 0).to(g_u.dtype)
    new_u = g_u - conflict * dot / (g_r @ g_r).clamp_min(_TINY) * g_r
    new_r = g_r - conflict * dot / (g_u @ g_u).clamp_min(_TINY) * g_u if mode == "symmetric" else g_r
    return new_u, new_r


def ungrad_direction(g_u: Tensor, g_r: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Explicit unilateral surgery: (d, lambda*) with d = g_u + lambda* g_r the direction closest to
    g_u with <g_r, d> >= -eps. lambda* = 0 (d = g_u) when that already holds; also 0 if g_r = 0."""
    nr2 = g_r @ g_r
    lam = ((-(g_u @ g_r) - eps) / nr2.clamp_min(_TINY)).clamp_min(0.0)
    lam = torch.where(nr2 > 0, lam, torch.zeros_like(lam))
    return g_u + lam * g_r, lam


# -- combiners ---------------------------------------------------------------------------------------

class Combiner:
    """Writes the combined gradient of (l_u, l_r) into .grad. `passes`: backward passes per call."""

    passes: int = 1

    def backward(self, params: list[Tensor], l_u: Tensor, l_r: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def before_backward(self, l_r: Tensor, lr: float, valid: Tensor | None = None) -> dict[str, Tensor]:
        """Called before `backward` with the step's retain loss (only EUPMU's previous-batch form)."""
        return {}

    def after_step(self, l_r: Tensor, l_r_after: Tensor, lr: float,
                   valid: Tensor | None = None) -> dict[str, Tensor]:
        """Called after the optimizer step (only EUPMU's same-batch form)."""
        return {}


class Linear(Combiner):
    def __init__(self, w_u: float = 1.0, w_r: float = 1.0):
        self.w_u, self.w_r = w_u, w_r

    def backward(self, params, l_u, l_r):
        (self.w_u * l_u + self.w_r * l_r).backward()
        return {}


class PCGrad(Combiner):
    """Two passes; d = w_u * g_u' + w_r * g_r' after harmonisation. Logs the cosine between the forget
    and retain components before and after (after >= 0 whenever the mode is not none)."""

    passes = 2

    def __init__(self, mode: Literal["none", "one_sided", "symmetric"] = "symmetric",
                 w_u: float = 1.0, w_r: float = 1.0):
        self.mode, self.w_u, self.w_r = mode, w_u, w_r

    def backward(self, params, l_u, l_r):
        g_u = flat_grad(l_u, params, retain_graph=True)
        g_r = flat_grad(l_r, params)
        h_u, h_r = project_conflict(g_u, g_r, self.mode)
        write_grad(params, self.w_u * h_u + self.w_r * h_r)
        return {"cos_before": cosine(g_u, g_r).detach(), "cos_after": cosine(h_u, h_r).detach()}


class UNGrad(Combiner):
    """Two passes; d = g_u + lambda* g_r (retain loss enters only through the constraint), then,
    when `max_norm` is set, d scaled down to that norm if longer (the authors' `igs` clips the
    combined gradient to norm 1). Scaling by c <= 1 keeps <g_r, c d> >= -eps for eps >= 0; a
    negative eps (a guaranteed decrease) is kept only up to the factor c. `dot_after` is of the
    applied direction."""

    passes = 2

    def __init__(self, eps: float = 0.0, max_norm: float | None = None):
        self.eps, self.max_norm = eps, max_norm

    def backward(self, params, l_u, l_r):
        g_u = flat_grad(l_u, params, retain_graph=True)
        g_r = flat_grad(l_r, params)
        d, lam = ungrad_direction(g_u, g_r, self.eps)
        norm = d.norm()
        if self.max_norm is not None:  # no host sync: a 0-d factor min(1, max_norm / |d|)
            d = d * (self.max_norm / norm.clamp_min(_TINY)).clamp_max(1.0)
        write_grad(params, d)
        return {"lambda": lam.detach(), "cos_before": cosine(g_u, g_r).detach(),
                "cos_after": cosine(d, g_r).detach(), "dot_after": (g_r @ d).detach(),
                "norm_before_clip": norm.detach()}


class EUPMU(Combiner):
    """Implicit surgery: one backward pass on  a_u * l_u + a_r * l_r  with (a_u, a_r) = (1, lambda),
    or (1/(1+lambda), lambda/(1+lambda)) when `normalise` (the authors' EUPMU-fast weighting). The
    caller passes l_u and l_r already transformed by phi (identity or log).

    The dual step, from a retain loss before (l_r at theta_t) and after (at theta_{t+1}) a step:
        delta = (before - after) / (lr if per_lr else 1) + eps
        sgd:  lambda <- lambda - dual_lr * delta                        (the paper)
        adam: one Adam step on lambda with gradient delta + weight_decay * lambda  (authors' code)
    then, when `clamp`, lambda <- max(0, lambda) (the paper's projection). Without it lambda runs
    free and a negative value weighs the retain loss by 0 (what the authors' `eu` does: weights()
    uses max(lambda, 0) either way). Adam's L2 weight decay moves its fixed point: it settles where
    E[delta] = -weight_decay * lambda, i.e. the first-order retain increase it allows per unit lr is
    eps + weight_decay * lambda, not eps (tests/test_eupmu.py shows both forms).

    `estimate` says what "after" is, and so when the dual step happens:
      same_batch      `after_step(l_r, l_r_after, lr)` after the optimizer step, l_r_after from an
                      extra forward on the same batch at theta_{t+1}; the next step uses the result.
      previous_batch  `before_backward(l_r, lr)` BEFORE this step's backward (the authors'
                      `EU_fast` order): before = the retain loss remembered from the previous step
                      (its batch, at theta_{t-1}), after = this step's (at theta_t); this step already
                      uses the result. The first call only remembers. No extra forward.
    The hook of the other estimate does nothing, so a caller may call both.
    `valid` (0-d bool) skips the update when false (a batch without retain samples), without a host
    sync. Logs: `lambda` (the multiplier this step used); `l_r_before`, `l_r_after`, `delta` of the
    dual step; `lambda_next` (same batch: the multiplier the next step will use).
    """

    def __init__(self, eps: float, dual_lr: float, lambda_init: float = 1.0,
                 dual_opt: Literal["sgd", "adam"] = "sgd", per_lr: bool = True,
                 normalise: bool = False, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.01, clamp: bool = True,
                 estimate: Literal["same_batch", "previous_batch"] = "same_batch"):
        self.eps, self.dual_lr, self.dual_opt, self.per_lr = eps, dual_lr, dual_opt, per_lr
        self.estimate = estimate
        self.normalise, self.betas, self.wd, self.clamp = normalise, betas, weight_decay, clamp
        self.lam: Tensor | None = None
        self.lambda_init = float(lambda_init)
        self.prev: tuple[Tensor, Tensor, float] | None = None  # previous batch: (l_r, valid, lr)

    def _init(self, like: Tensor) -> None:
        if self.lam is None:
            z = torch.zeros((), dtype=torch.float32, device=like.device)
            self.lam, self.m, self.v, self.t = z + self.lambda_init, z.clone(), z.clone(), z.clone()

    def weights(self) -> tuple[Tensor, Tensor]:
        assert self.lam is not None, "weights() before _init()"
        lam = self.lam.clamp_min(0.0)
        return (1 / (1 + lam), lam / (1 + lam)) if self.normalise else (torch.ones_like(lam), lam)

    def backward(self, params, l_u, l_r):
        self._init(l_r)
        a_u, a_r = self.weights()
        (a_u * l_u + a_r * l_r).backward()
        return {"lambda": self.lam.clone()}

    def after_step(self, l_r, l_r_after, lr, valid=None):
        """Same-batch estimate: the dual step from l_r (theta_t) and l_r_after (theta_{t+1})."""
        if self.estimate != "same_batch":
            return {}
        self._init(l_r)
        l_r = l_r.detach().float()
        ok = torch.ones((), dtype=torch.bool, device=l_r.device) if valid is None else valid
        logs = self._dual_step(l_r, l_r_after.detach().float(), lr, ok)
        return {"lambda_next": self.lam.clone(), **logs}

    def before_backward(self, l_r, lr, valid=None):
        """Previous-batch estimate: the dual step from the remembered retain loss and this one, before
        this step's backward; then remember this one (with the lr of the step about to be taken, the
        step the next call measures)."""
        if self.estimate != "previous_batch":
            return {}
        self._init(l_r)
        l_r = l_r.detach().float()
        ok = torch.ones((), dtype=torch.bool, device=l_r.device) if valid is None else valid
        prev, self.prev = self.prev, (l_r, ok, lr)
        if prev is None:
            return {}
        before, prev_ok, prev_lr = prev
        return self._dual_step(before, l_r, prev_lr, ok & prev_ok)

    def _dual_step(self, before: Tensor, after: Tensor, lr: float, ok: Tensor) -> dict[str, Tensor]:
        assert self.lam is not None, "_dual_step() before _init()"
        delta = (before - after) / (lr if self.per_lr else 1.0) + self.eps
        delta = torch.where(ok, delta, torch.zeros_like(delta))
        if self.dual_opt == "sgd":
            new = self.lam - self.dual_lr * delta
        else:  # Adam with L2 weight decay (torch.optim.Adam semantics), written out for a 0-d tensor
            b1, b2 = self.betas
            g = delta + self.wd * self.lam
            t = self.t + 1
            m, v = b1 * self.m + (1 - b1) * g, b2 * self.v + (1 - b2) * g * g
            new = self.lam - self.dual_lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + 1e-8)
            self.m, self.v, self.t = (torch.where(ok, a, b) for a, b in ((m, self.m), (v, self.v), (t, self.t)))
        self.lam = torch.where(ok, new.clamp_min(0.0) if self.clamp else new, self.lam)
        return {"l_r_before": before, "l_r_after": after, "delta": delta}


def forward_keeping_stats(model: torch.nn.Module, x: Tensor) -> Tensor:
    """A forward pass in the model's current mode that leaves BatchNorm running statistics untouched
    (they are updated on throw-away copies): for extra measurement passes such as EUPMU's post-step
    retain loss, which must see the same batch statistics as the step but must not count twice."""
    bufs = {k: b.clone() for k, b in model.named_buffers()}
    return torch.func.functional_call(model, bufs, (x,), strict=False)
