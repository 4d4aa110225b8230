"""One-time process costs kept out of the timed unlearning (its run time is a reported metric, RTE):
imports, autograd's engine, kernel selection and allocator pools, paid once per worker process."""
from __future__ import annotations

import copy

import torch

from unlearning.data import Dataset

_WARM = False


def warm_up() -> None:
    """The first optimizer built in a process imports torch._dynamo (about a second), the first
    backward pass initialises autograd's engine, the first MIA imports sklearn's SVC (about a
    second): pay them here, once."""
    global _WARM
    if not _WARM:
        import sklearn.svm  # noqa: F401 - imported lazily by unlearning.metrics

        w = torch.zeros(2, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
        (w * w).sum().backward()
        opt.step()
        torch.optim.Adam([w], lr=0.1).step()
        _WARM = True


_WARM_KERNELS: set[tuple] = set()


def warm_kernels(model: torch.nn.Module, ds: Dataset, batch_size: int, autocast, precision: str,
                 steps: int = 3) -> None:
    """A few training steps of a throwaway copy of `model` on batches of the training shape, once per
    process for each architecture, input shape, batch size, device and precision. A process's first
    steps at a shape pick its kernels (cuDNN autotuning with benchmark on, oneDNN primitives on a CPU)
    and grow the allocator's pools, which would otherwise be timed as the first trial's unlearning.
    `model` itself is untouched; the copy may draw from the global random streams, which the caller
    seeds afterwards."""
    n = min(batch_size, len(ds.x_train))
    key = (type(model).__name__, tuple(tuple(p.shape) for p in model.parameters()), tuple(ds.in_shape),
           n, str(ds.device), precision)
    if key in _WARM_KERNELS or n < 2 or not any(p.requires_grad for p in model.parameters()):
        return
    probe = copy.deepcopy(model).train()
    opt = torch.optim.SGD([p for p in probe.parameters() if p.requires_grad], lr=0.0, momentum=0.9)
    x = ds.prepare(ds.x_train[:n])
    if x.is_cuda:  # the layout MethodData gives training batches
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = torch.nn.functional.cross_entropy(probe(x).float(), ds.y_train[:n])
        loss.backward()
        opt.step()
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    _WARM_KERNELS.add(key)
