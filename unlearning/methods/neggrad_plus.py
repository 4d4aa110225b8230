"""NegGrad+: minimise beta * CE(D_r) - (1 - beta) * CE(D_f) on paired batches (Kurmanji et al. 2023)."""
from pydantic import Field

from unlearning.methods import Method, MethodConfig, masked_mean, register
from unlearning.methods.base import ce


class NegGradPlusConfig(MethodConfig):
    beta: float = Field(0.95, ge=0, le=1)  # weight of the retain term


@register
class NegGradPlus(Method):
    name = "neggrad_plus"
    Config = NegGradPlusConfig
    mode = "paired"

    def step(self, model, batch):
        loss = ce(model(batch.x), batch.y)
        b = self.cfg.beta
        return b * masked_mean(loss, ~batch.forget) - (1 - b) * masked_mean(loss, batch.forget)
