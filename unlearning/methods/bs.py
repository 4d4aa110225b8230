"""BS, boundary shrink (Chen et al., CVPR 2023): FGSM on a frozen copy of the original finds each
forget example's nearest wrong class; the model is fine-tuned on D_f toward those labels."""
import torch
from pydantic import Field

from unlearning.methods import Method, MethodConfig, register
from unlearning.methods.base import ce


class BSConfig(MethodConfig):
    lr: float = Field(1e-3, gt=0)
    fgsm_step: float = Field(0.1, gt=0)  # in normalised input units, as the reference attack


@register
class BS(Method):
    name = "bs"
    Config = BSConfig
    mode = "forget"

    def neighbour_labels(self, x, y):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(ce(self.ctx.original(x), y).sum(), x)
        x_adv = x.detach() + self.cfg.fgsm_step * g.sign()
        with torch.no_grad():
            logits = self.ctx.original(x_adv).float()
            logits.scatter_(1, y[:, None], float("-inf"))  # the nearest *wrong* class
        return logits.argmax(1)

    def step(self, model, batch):
        return ce(model(batch.x), self.neighbour_labels(batch.x, batch.y)).mean()
