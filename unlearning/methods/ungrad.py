"""UNGrad: EUPMU's constrained step solved explicitly (arXiv 2510.22124): two backward passes give g_u
and g_r, then d = g_u + lambda* g_r with lambda* = max(0, (-<g_r, g_u> - epsilon) / ||g_r||^2), the
direction closest to g_u whose first-order retain-loss increase is at most epsilon per unit lr
("unilateral": only the unlearning gradient is changed); the oracle EUPMU's multiplier should track.
Costs twice EUPMU's backward passes.

Defaults are the faithful form, as the paper and the authors' `igs` (ImplicitGradientSurgery in their
weight_methods.py) have it: the raw losses (phi = identity) and the combined gradient clipped to norm
1 (`max_grad_norm`; null = no clipping). phi = log is EUPMU's code practice, an option here."""
from typing import Literal

from pydantic import Field

from unlearning import combine
from unlearning.methods import register
from unlearning.methods.eupmu import EUPMU, SurgeryConfig


class UNGradConfig(SurgeryConfig):
    epsilon: float = Field(0.0)  # 0: project g_u off g_r only when they conflict
    phi: Literal["identity", "log"] = "identity"
    max_grad_norm: float | None = Field(1.0, gt=0)  # clip the combined gradient (as `igs`)


@register
class UNGrad(EUPMU):
    name = "ungrad"
    Config = UNGradConfig

    def make_combiner(self):
        return combine.UNGrad(eps=self.cfg.epsilon, max_norm=self.cfg.max_grad_norm)

    def after_update(self, model, batch, step):
        return None
