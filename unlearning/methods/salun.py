"""SalUn (Fan et al., ICLR 2024): a weight-saliency mask (the top `ratio` of |grad of -CE over D_f|,
ranked globally at the original weights), then RL with gradients restricted to the mask.

Masked-out weights stay exactly at their original values: weight decay and momentum would otherwise
move them (a bug fixed in the reference code in 2026), so they are restored after every step.
"""
import torch
from pydantic import Field

from unlearning.methods import register
from unlearning.methods.base import ce
from unlearning.methods.rl import RL, MethodConfig


class SalUnConfig(MethodConfig):
    ratio: float = Field(0.5, gt=0, le=1)  # fraction of weights that may change


@register
class SalUn(RL):
    name = "salun"
    Config = SalUnConfig

    def setup(self, model):
        params = [p for p in model.parameters() if p.requires_grad]
        grads = [torch.zeros_like(p) for p in params]
        was_training = model.training
        model.eval()  # saliency of the original model as it predicts; BN statistics untouched
        for b in self.ctx.data.batches("forget", self.cfg.batch_size, augment=False):
            g = torch.autograd.grad(-ce(model(b.x), b.y).sum(), params)
            for acc, gi in zip(grads, g):
                acc += gi
        model.train(was_training)
        scores = torch.cat([g.abs().flatten() for g in grads])
        k = max(1, int(self.cfg.ratio * scores.numel()))
        cut = torch.topk(scores, k, sorted=False).values.min()
        self.masks = [g.abs() >= cut for g in grads]
        self.frozen = [p.detach().clone() for p in params]
        self.params = params

    def before_update(self, model):
        for p, m in zip(self.params, self.masks):
            if p.grad is not None:
                p.grad.mul_(m)

    def after_update(self, model, batch, step):
        with torch.no_grad():
            for p, m, p0 in zip(self.params, self.masks, self.frozen):
                p.copy_(torch.where(m, p, p0))
