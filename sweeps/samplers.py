"""SamplerSpec -> an Optuna sampler. A leaf of sweeps/: it imports optuna only, so spec.py can
check a sampler's options while validating (`check_spec`) without importing the study layer; the
layers read spec -> space -> study, one way."""
from __future__ import annotations

import hashlib
import warnings
from typing import TYPE_CHECKING

import optuna

if TYPE_CHECKING:
    from sweeps.spec import SweepSpec


def make_sampler(spec: SweepSpec, index: int | None = None) -> optuna.samplers.BaseSampler:
    """The spec's sampler. `index` = how many configurations the sweep has sampled before this one:
    the driver builds a fresh sampler for every ask, seeded from (sampler.seed, index), so what the
    i-th configuration is depends only on the seed and the history, never on whether the driver was
    restarted in between (a resumed sweep continues the search instead of replaying it)."""
    seed = spec.sampler.seed
    if seed is not None and index is not None:
        seed = int.from_bytes(hashlib.sha256(f"{seed}/{index}".encode()).digest()[:4], "little")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make_sampler(spec, seed)


def _make_sampler(spec: SweepSpec, seed: int | None) -> optuna.samplers.BaseSampler:
    s, n_obj = spec.sampler, len(spec.objectives)
    opts = dict(s.options)
    S = optuna.samplers
    if s.name == "tpe":
        opts.setdefault("multivariate", True)
        opts.setdefault("group", True)  # conditional spaces: one group per method
        opts.setdefault("n_startup_trials", min(10, max(2, spec.n_trials // 3)))
        return S.TPESampler(seed=seed, **opts)
    if s.name == "nsga2":
        return S.NSGAIISampler(seed=seed, **opts)
    if s.name == "nsga3":
        if n_obj < 2:
            raise ValueError("nsga3 needs two or more objectives")
        return S.NSGAIIISampler(seed=seed, **opts)
    if s.name == "gp":
        return S.GPSampler(seed=seed, **opts)
    # random, and grid (whose points are enqueued once when the study is created)
    return S.RandomSampler(seed=seed, **opts)
