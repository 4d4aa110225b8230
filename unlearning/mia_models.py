"""Small differentiable membership-inference models: LTU's forgetting feedback (arXiv 2407.10494).

Each is an MLP on per-example output features (the sorted log-softmax, top 10, and log p_y), trained
to tell members (label 1) from non-members (label 0) on a bootstrap resample of each group, full
batch, with Adam. Frozen afterwards; `member_logits` stays differentiable in the model's outputs, so a
loss such as softplus(logit) pushes examples toward looking like non-members.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def features(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits.float(), 1)
    top = logp.sort(1, descending=True).values[:, :10]
    return torch.cat([top, logp.gather(1, y[:, None])], 1).clamp_min(-30.0)


@torch.no_grad()
def model_features(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 1024):
    return torch.cat([features(model(x[s:s + chunk]), y[s:s + chunk]) for s in range(0, len(x), chunk)])


def train_attacks(members: torch.Tensor, non_members: torch.Tensor, k: int, hidden: int, steps: int,
                  gen: torch.Generator, lr: float = 1e-2) -> list[torch.nn.Module]:
    """K attack MLPs on feature tensors, each on its own balanced bootstrap (n = the smaller group)."""
    dev, n = members.device, min(len(members), len(non_members))
    target = torch.cat([torch.ones(n, device=dev), torch.zeros(n, device=dev)])
    nets: list[torch.nn.Module] = []
    for _ in range(k):
        pick = [a[torch.randint(len(a), (n,), generator=gen, device=dev)] for a in (members, non_members)]
        x = torch.cat(pick)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, 1)).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                F.binary_cross_entropy_with_logits(net(x).squeeze(1), target).backward()
                opt.step()
        nets.append(net.requires_grad_(False).eval())
    return nets


def member_logits(nets: list[torch.nn.Module], logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each attack's member logit, shape (K, N) (differentiable in `logits`)."""
    f = features(logits, y)
    return torch.stack([net(f).squeeze(1) for net in nets])
