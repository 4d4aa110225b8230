"""SamplerSpec -> an Optuna sampler. A leaf of sweeps/: it imports optuna only, so spec.py can
check a sampler's options while validating (`check_spec`) without importing the study layer; the
layers read spec -> space -> study, one way."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import optuna

if TYPE_CHECKING:
    from sweeps.spec import SweepSpec


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make_sampler(spec)


def _make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    s, n_obj = spec.sampler, len(spec.objectives)
    opts = dict(s.options)
    S = optuna.samplers
    if s.name == "tpe":
        opts.setdefault("multivariate", True)
        opts.setdefault("group", True)  # conditional spaces: one group per method
        opts.setdefault("n_startup_trials", min(10, max(2, spec.n_trials // 3)))
        return S.TPESampler(seed=s.seed, **opts)
    if s.name == "nsga2":
        return S.NSGAIISampler(seed=s.seed, **opts)
    if s.name == "nsga3":
        if n_obj < 2:
            raise ValueError("nsga3 needs two or more objectives")
        return S.NSGAIIISampler(seed=s.seed, **opts)
    if s.name == "gp":
        return S.GPSampler(seed=s.seed, **opts)
    # random, and grid (whose points are enqueued once when the study is created)
    return S.RandomSampler(seed=s.seed, **opts)
