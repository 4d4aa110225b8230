"""Search spaces -> `trial.suggest_*`. The method is a categorical choice ("method"); each method's
parameters live under their own names ("<method>.<param>") so two methods may search the same
parameter (lr) over different ranges without confusing the sampler. Fixed values never reach Optuna.
"""
from __future__ import annotations

import itertools
from typing import Any

import optuna

from sweeps.spec import CategoricalDim, Dim, FixedDim, FloatDim, IntDim, LogFloatDim, SweepSpec


def optuna_name(method: str, param: str) -> str:
    return f"{method}.{param}"


def suggest_dim(trial: optuna.Trial, name: str, d: Dim) -> Any:
    if isinstance(d, FixedDim):
        return d.value
    if isinstance(d, CategoricalDim):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, (FloatDim, LogFloatDim)):
        step = d.step if isinstance(d, FloatDim) else None
        return trial.suggest_float(name, float(d.low), float(d.high), log=d.log,
                                   step=None if step is None else float(step))
    return trial.suggest_int(name, int(d.low), int(d.high), log=d.log, step=int(d.step or 1))


def suggest(trial: optuna.Trial, spec: SweepSpec) -> tuple[str, dict[str, Any]]:
    """Sample (method, that method's parameters) for one trial."""
    method = trial.suggest_categorical("method", list(spec.methods))
    space = spec.methods[method].space
    return method, {p: suggest_dim(trial, optuna_name(method, p), d) for p, d in space.items()}


def decode(spec: SweepSpec, optuna_params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The inverse of `suggest` for a finished trial's `params` (fixed values filled back in)."""
    method = optuna_params["method"]
    space = spec.methods[method].space
    return method, {p: (d.value if d.type == "fixed" else optuna_params[optuna_name(method, p)])
                    for p, d in space.items()}


def _grid_values(d: Dim) -> list[Any]:
    if isinstance(d, FixedDim):
        return [None]  # not an Optuna parameter
    if isinstance(d, CategoricalDim):
        return list(d.choices)
    step = (d.step if isinstance(d, (FloatDim, IntDim)) else None) or 1  # log-float: refused on a grid
    n = int(round((d.high - d.low) / step))
    vals = [d.low + i * step for i in range(n + 1)]
    return [float(v) if isinstance(d, (FloatDim, LogFloatDim)) else int(v) for v in vals]


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every configuration of a grid sweep as Optuna params (for enqueue_trial), method by method."""
    points = []
    for method, ms in spec.methods.items():
        names = [p for p, d in ms.space.items() if d.type != "fixed"]
        for combo in itertools.product(*(_grid_values(ms.space[p]) for p in names)):
            points.append({"method": method, **{optuna_name(method, p): v for p, v in zip(names, combo)}})
    return points


def grid_size(spec: SweepSpec) -> int:
    return len(grid_points(spec))
