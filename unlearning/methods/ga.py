"""GA: gradient ascent on the forget set (minimise -CE on D_f); touches no retain data."""
from pydantic import Field

from unlearning.methods import Method, MethodConfig, register
from unlearning.methods.base import ce


class GAConfig(MethodConfig):
    lr: float = Field(1e-4, gt=0)  # ascent diverges fast: the reference codes search 1e-5..1e-3


@register
class GA(Method):
    name = "ga"
    Config = GAConfig
    mode = "forget"

    def step(self, model, batch):
        return -ce(model(batch.x), batch.y).mean()
