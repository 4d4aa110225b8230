"""The sampler of each ask: the spec's (`SamplerSpec.build`), seeded per configuration."""
from __future__ import annotations

import hashlib

import optuna

from sweeps.spec import SweepSpec


def make_sampler(spec: SweepSpec, index: int | None = None) -> optuna.samplers.BaseSampler:
    """The spec's sampler. `index` = how many configurations the sweep has sampled before this one:
    the driver builds a fresh sampler for every ask, seeded from (sampler.seed, index), so what the
    i-th configuration is depends only on the seed and the history, never on whether the driver was
    restarted in between (a resumed sweep continues the search instead of replaying it)."""
    seed = spec.sampler.seed
    if seed is not None and index is not None:
        seed = int.from_bytes(hashlib.sha256(f"{seed}/{index}".encode()).digest()[:4], "little")
    return spec.sampler.build(seed, len(spec.objectives))
