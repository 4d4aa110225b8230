"""LTU, Learning to Unlearn (Mark He Huang, Lin Geng Foo, Jun Liu; ECCV 2024, arXiv 2407.10494), from
the paper's abstract and summaries (no full text or official code was available). Only a seeded
subset D_r^ of m retain examples is reachable: the data door is narrowed to it before anything runs.
Per step:
  1. meta-tune: theta' = theta - meta_lr * grad L_tune(theta; support), support = half of a forget
     batch (random labels, redrawn every epoch) + half of a D_r^ batch (true labels);
  2. meta-test at theta' on the other halves: remembering = CE on the D_r^ query; forgetting = the
     mean over the K frozen MIA models of each one's BCE(member logit, non-member) on the audit half
     of the forget batch (each attack is its own feedback: averaging logits first would let one
     confident attack cancel another);
  3. meta-update of theta with l_u = w_forget * forgetting + w_tune * L_tune(forget part) and
     l_r = w_remember * remembering + w_tune * L_tune(retain part), combined by the shared combiner
     (pcgrad with `harmonization`, or eupmu's implicit surgery with the previous-batch estimate).
The K MIA models (unlearning/mia_models.py) are trained in `setup` on the ORIGINAL model's outputs:
members = D_r^, non-members = the held-out validation set.
NOT CONFIRMED by the paper (all exposed or documented in docs/methods.md): the tuning loss, the
support/query split, one epoch = one pass over D_f with D_r^ cycled, K, the MIA features and
architecture, first-order default, inner_steps, the term weights, the harmonization mode.
"""
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import functional_call

from unlearning import combine
from unlearning import mia_models as mia
from unlearning.methods import Method, MethodConfig, Step, masked_mean, register
from unlearning.methods.base import ce, random_labels
from unlearning.splits import Batch, retain_subset


class LTUConfig(MethodConfig):
    retain_subset: int = Field(500, ge=1)  # m, the accessible retain examples
    meta_lr: float = Field(0.01, gt=0)  # inner (meta-tune) learning rate; `lr` is the outer one
    inner_steps: int = Field(1, ge=1)
    first_order: bool = True
    mia_models: int = Field(3, ge=1)  # K
    mia_hidden: int = Field(64, ge=1)
    mia_steps: int = Field(200, ge=1)
    harmonization: Literal["none", "one_sided", "symmetric"] = "symmetric"
    combiner: Literal["pcgrad", "eupmu"] = "pcgrad"
    epsilon: float = 0.0  # eupmu combiner only (per unit lr, identity phi)
    dual_lr: float = Field(0.1, gt=0)  # eupmu combiner only
    w_tune: float = Field(1.0, ge=0)
    w_remember: float = Field(1.0, ge=0)
    w_forget: float = Field(1.0, ge=0)


@register
class LTU(Method):
    name = "ltu"
    Config = LTUConfig
    mode = "forget"
    log_every = 1

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        d = ctx.data  # narrow the door first: nothing below can reach another retain index
        d.restrict_retain(retain_subset(d.retain.cpu(), cfg.retain_subset, ctx.gen.initial_seed()))

    def setup(self, model):
        c, d = self.cfg, self.ctx.data
        self.params = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
        m = d.gather(d.retain)  # members: D_r^; non-members: held-out validation data
        self.mias = mia.train_attacks(mia.model_features(self.ctx.original, m.x, m.y),
                                      mia.model_features(self.ctx.original, *d.val_batch()),
                                      c.mia_models, c.mia_hidden, c.mia_steps, self.ctx.gen)
        kw = dict(eps=c.epsilon, dual_lr=c.dual_lr, dual_opt="sgd", lambda_init=1.0,
                  estimate="previous_batch")
        self.combiner = combine.PCGrad(c.harmonization) if c.combiner == "pcgrad" else combine.EUPMU(**kw)

    def start_epoch(self, epoch, model):
        d = self.ctx.data
        self.labels = random_labels(len(d.ds.y_train), d.num_classes, self.ctx.gen, self.ctx.device)

    def batches(self, epoch):
        """One pass over D_f in half-batches, each joined by a half-batch of D_r^ (cycled)."""
        d, half = self.ctx.data, max(1, self.cfg.batch_size // 2)
        order = d.retain[torch.randperm(len(d.retain), generator=self.ctx.gen, device=d.retain.device)]
        for i, fb in enumerate(d.batches("forget", half, self.cfg.augment)):
            ridx = order[(torch.arange(half, device=order.device) + i * half) % len(order)]
            rb = d.gather(ridx, augment=self.cfg.augment)
            yield Batch(torch.cat([fb.x, rb.x]), torch.cat([fb.y, rb.y]), torch.cat([fb.idx, rb.idx]),
                        torch.cat([fb.forget, rb.forget]), "mixed")

    def tune_losses(self, model, weights, x, y, idx, f):
        per = ce(functional_call(model, weights, (x,)), torch.where(f, self.labels[idx], y))
        return masked_mean(per, f), masked_mean(per, ~f)

    def step(self, model, batch):
        c = self.cfg
        s, q = slice(0, None, 2), slice(1, None, 2)  # support / query rows (static, no host sync)
        xs, ys, ids, fs = batch.x[s], batch.y[s], batch.idx[s], batch.forget[s]
        fast, tune = self.params, None
        for _ in range(c.inner_steps):
            t_f, t_r = self.tune_losses(model, fast, xs, ys, ids, fs)
            tune = (t_f, t_r) if tune is None else tune
            g = torch.autograd.grad(t_f + t_r, list(fast.values()), create_graph=not c.first_order,
                                    retain_graph=True, allow_unused=True)
            fast = {n: w if gi is None else w - c.meta_lr * (gi.detach() if c.first_order else gi)
                    for (n, w), gi in zip(fast.items(), g)}
        out = functional_call(model, fast, (batch.x[q],))
        yq, fq = batch.y[q], batch.forget[q]
        remember = masked_mean(ce(out, yq), ~fq)
        member_logits = mia.member_logits(self.mias, out, yq)  # (K, query rows)
        forget = masked_mean(F.softplus(member_logits).mean(0), fq)  # mean over K of BCE(., 0)
        l_u = c.w_forget * forget + c.w_tune * tune[0]
        l_r = c.w_remember * remember + c.w_tune * tune[1]
        logs = self.combiner.before_backward(l_r, self.lr)  # eupmu: previous-batch estimate
        logs.update(self.combiner.backward(list(self.params.values()), l_u, l_r))
        p_member = masked_mean(torch.sigmoid(member_logits).mean(0), fq)
        logs.update(l_remember=remember.detach(), l_forget=forget.detach(), l_tune_f=tune[0].detach(),
                    l_tune_r=tune[1].detach(), audit_member_p=p_member.detach())
        return Step((l_u + l_r).detach(), grads_ready=True, logs=logs)
