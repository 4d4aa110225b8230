"""EUPMU (arXiv 2510.22124): unlearning under a bound on the first-order increase of the retain loss,
<g_r, d> >= -epsilon, solved implicitly: one backward pass on the Lagrangian phi(l_u) + lambda phi(l_r),
then a dual step on lambda from the observed change of the retain loss (unlearning/combine.py, EUPMU).

Defaults follow the authors' code (phi = log, Adam dual with weight decay 0.01, lambda starting at 0
and not projected at 0, same-batch estimate, delta not divided by the lr, their CIFAR-10 random-10%
recipe: lr 3e-3, dual lr 1, e = 0.01). The paper's form is phi=identity, dual_opt=sgd,
delta_per_lr=True (projection at 0). Adam's weight decay makes the authors' form keep the bound
epsilon + 0.01 lambda rather than epsilon; `dual_weight_decay: 0` removes that.

Epsilon uses the PAPER's sign (larger = looser). The authors' `eu_error` e has the opposite sign:
their delta = log l_r(before) - log l_r(after) - e, ours = (phi(l_r before) - phi(l_r after)) / s +
epsilon with s = lr if delta_per_lr else 1; so with phi=log, delta_per_lr=False: epsilon = -e exactly.
"""
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from unlearning import combine
from unlearning.methods import Method, MethodConfig, Step, register
from unlearning.methods.base import ce, random_labels


class SurgeryConfig(MethodConfig):
    """The objective EUPMU and UNGrad share: mixed batches, forget rows with random labels (redrawn
    every epoch) or negative CE, each part scaled by its share of the batch."""

    lr: float = Field(3e-3, gt=0)
    epsilon: float = 0.0  # the bound: <g_r, d> >= -epsilon (larger = looser)
    phi: Literal["identity", "log"] = "log"
    forget_loss: Literal["random_labels", "neg_ce"] = "random_labels"

    @model_validator(mode="after")
    def _log_needs_positive(self):
        if self.phi == "log" and self.forget_loss == "neg_ce":
            raise ValueError("forget_loss 'neg_ce' needs phi 'identity' (log of a negative loss)")
        return self


class EUPMUConfig(SurgeryConfig):
    epsilon: float = -0.01  # = the authors' e 0.01 (phi log, delta_per_lr False)
    dual_opt: Literal["sgd", "adam"] = "adam"  # sgd: the paper; adam: the authors' code
    dual_lr: float = Field(1.0, gt=0)
    # Adam only: L2 weight decay on lambda (the authors' 0.01). It makes the bound kept
    # epsilon + dual_weight_decay * lambda; 0 keeps epsilon (docs/methods.md)
    dual_weight_decay: float = Field(0.01, ge=0)
    # None = the authors' start for the estimate: 0.0 for same_batch (their `eu`), 1.0 for
    # previous_batch (their `EU_fast`); the paper does not state one
    lambda_init: float | None = Field(None, ge=0)
    # project lambda at 0 after each dual step? None = yes with sgd (the paper's max(0, .)), no with
    # adam (the authors' code lets it go negative; a negative lambda weighs the retain loss by 0)
    clamp_lambda: bool | None = None
    estimate: Literal["same_batch", "previous_batch"] = "same_batch"  # previous = "EUPMU-fast"
    normalise: bool = False  # weights 1/(1+w), w/(1+w) (what EUPMU-fast does)
    delta_per_lr: bool = False  # divide the observed decrease by the lr (paper) or not (code)

    def resolved(self) -> dict:
        """lambda_init and clamp_lambda with their defaults filled in (what the combiner gets)."""
        init = self.lambda_init if self.lambda_init is not None else \
            (0.0 if self.estimate == "same_batch" else 1.0)
        clamp = self.clamp_lambda if self.clamp_lambda is not None else self.dual_opt == "sgd"
        return {"lambda_init": init, "clamp": clamp}


def safe_phi(loss: torch.Tensor, present: torch.Tensor, phi: str) -> torch.Tensor:
    """phi(loss); for log, 0 (with a zero gradient, not NaN) when the part has no samples."""
    if phi == "identity":
        return loss
    return torch.log(torch.where(present, loss.clamp_min(1e-12), torch.ones_like(loss)))


@register
class EUPMU(Method):
    name = "eupmu"
    Config: ClassVar[type[SurgeryConfig]] = EUPMUConfig  # UNGrad reuses EUPMU with its own
    mode = "mixed"
    log_every = 1

    def make_combiner(self):
        c = self.cfg
        return combine.EUPMU(eps=c.epsilon, dual_lr=c.dual_lr, dual_opt=c.dual_opt, per_lr=c.delta_per_lr,
                             normalise=c.normalise, weight_decay=c.dual_weight_decay, estimate=c.estimate,
                             **c.resolved())

    def setup(self, model):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.combiner = self.make_combiner()

    def start_epoch(self, epoch, model):
        d = self.ctx.data
        self.labels = random_labels(len(d.ds.y_train), d.num_classes, self.ctx.gen, self.ctx.device)

    def objectives(self, logits, batch):
        """(phi(l_u), phi(l_r), retain rows present) for a mixed batch."""
        f, n = batch.forget, len(batch.forget)
        if self.cfg.forget_loss == "random_labels":
            per = ce(logits, torch.where(f, self.labels[batch.idx], batch.y))
            l_u = (per * f).sum() / n
        else:
            per = ce(logits, batch.y)
            l_u = -(per * f).sum() / n
        l_r, has_r = (per * ~f).sum() / n, (~f).any()
        return safe_phi(l_u, f.any(), self.cfg.phi), safe_phi(l_r, has_r, self.cfg.phi), has_r

    def step(self, model, batch):
        l_u, l_r, self.has_r = self.objectives(model(batch.x), batch)
        dual = self.combiner.before_backward(l_r, self.lr, self.has_r)  # previous_batch: the dual step
        logs = self.combiner.backward(self.params, l_u, l_r)
        self.l_r = l_r.detach()
        return Step((l_u + l_r).detach(), grads_ready=True,
                    logs={**dual, **logs, "l_u": l_u.detach(), "l_r": self.l_r})

    def after_update(self, model, batch, step):
        if self.cfg.estimate != "same_batch":
            return None
        with torch.no_grad(), self.ctx.autocast():  # one extra no-grad forward at theta_{t+1}
            after = self.objectives(combine.forward_keeping_stats(model, batch.x), batch)[1]
        return self.combiner.after_step(self.l_r, after, self.lr, self.has_r)
