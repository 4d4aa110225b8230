"""SCRUB (Kurmanji et al., NeurIPS 2023): the original model is a frozen teacher; the student starts
from it. For the first `msteps` epochs a max pass on D_f (minimise -KL(student||teacher) at
temperature T), then every epoch a min pass on D_r (gamma * CE + alpha * KL)."""
import itertools

import torch.nn.functional as F
from pydantic import Field

from unlearning.methods import Method, MethodConfig, register
from unlearning.methods.base import ce


class SCRUBConfig(MethodConfig):
    lr: float = Field(5e-4, gt=0)
    msteps: int = Field(2, ge=0)
    temperature: float = Field(4.0, gt=0)
    gamma: float = Field(0.99, ge=0)
    alpha: float = Field(0.001, ge=0)


def kl(student_logits, teacher_logits, t):
    """KL(teacher || student) of temperature-softened outputs, scaled by T^2 (Hinton distillation)."""
    s = F.log_softmax(student_logits.float() / t, dim=1)
    p = F.softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(s, p, reduction="batchmean") * t * t


@register
class SCRUB(Method):
    name = "scrub"
    Config = SCRUBConfig

    def batches(self, epoch):
        d, bs, aug = self.ctx.data, self.cfg.batch_size, self.cfg.augment
        passes = [d.batches("forget", bs, aug)] if epoch < self.cfg.msteps else []
        return itertools.chain(*passes, d.batches("retain", bs, aug))

    def step(self, model, batch):
        out = model(batch.x)
        teacher = self.ctx.original(batch.x).detach()
        div = kl(out, teacher, self.cfg.temperature)
        if batch.kind == "forget":
            return -div
        return self.cfg.gamma * ce(out, batch.y).mean() + self.cfg.alpha * div
