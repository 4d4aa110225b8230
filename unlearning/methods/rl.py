"""RL (random labels): forget examples relabelled uniformly at random (redrawn every epoch), mixed and
shuffled with the retain set, trained with cross-entropy (Golatkar et al.; as in the SalUn code)."""
import torch

from unlearning.methods import Method, MethodConfig, register
from unlearning.methods.base import ce, random_labels


@register
class RL(Method):
    name = "rl"
    Config = MethodConfig
    mode = "mixed"

    def start_epoch(self, epoch, model):
        d = self.ctx.data
        self.labels = random_labels(len(d.ds.y_train), d.num_classes, self.ctx.gen, self.ctx.device)

    def step(self, model, batch):
        y = torch.where(batch.forget, self.labels[batch.idx], batch.y)
        return ce(model(batch.x), y).mean()
