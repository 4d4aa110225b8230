"""Search seeds raced (the spec's `race`): whether a configuration whose first seed(s) have run is off
beyond doubt, so that its other seeds need not run.

Optuna's multi-objective studies cannot prune (no intermediate values), so the rule is ours, and it
looks only at what the search has told: the configurations told with every seed (their means and
seed-to-seed standard deviations). The spread of a metric is pooled over them (the root of the mean
variance), so a configuration is judged against the noise the sweep itself has measured; before
`min_complete` of them there is no spread, and nothing is dropped. A configuration is dropped when
  - infeasible beyond doubt: the mean of its first seeds is past a constraint's bound by more than
    `margin` spreads of that metric; or
  - dominated beyond doubt: a feasible configuration told with every seed is better than it by more
    than `margin` spreads in every objective.
A dropped configuration would not be on the front had it run its other seeds, unless its first
seeds were `margin` spreads off its own mean (about 3 in 1000 draws at margin 3 for one objective
and normal noise; dominance needs it in every objective at once).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sweeps.spec import RaceSpec, SweepSpec


@dataclass
class Told:
    number: int
    means: dict[str, float]
    feasible: bool


@dataclass
class Race:
    spec: SweepSpec
    rules: RaceSpec  # the spec's `race`
    told: list[Told] = field(default_factory=list)
    variances: dict[str, list[float]] = field(default_factory=dict)  # metric -> per-configuration

    @classmethod
    def of(cls, spec: SweepSpec) -> "Race | None":
        """The race of a spec, or None when it does not race (no `race`, or no seed left to save)."""
        if spec.race is None or len(spec.seed_list()) <= spec.race.seeds:
            return None
        return cls(spec, spec.race)

    @property
    def metrics(self) -> list[str]:
        """The metrics the rule reads: the objectives', then the constraints' (each once)."""
        return list(dict.fromkeys([o.metric for o in self.spec.objectives] +
                                  [c.metric for c in self.spec.constraints]))

    def add(self, number: int, means: dict[str, float], stds: dict[str, float], feasible: bool) -> None:
        """A configuration told with every seed: its means and sample standard deviations."""
        self.told.append(Told(number, dict(means), feasible))
        for m in self.metrics:
            s = stds.get(m)
            if s is not None and math.isfinite(s):
                self.variances.setdefault(m, []).append(s * s)

    def spread(self) -> dict[str, float] | None:
        """The pooled seed-to-seed standard deviation of every metric, or None before
        `min_complete` configurations have given it."""
        need = self.rules.min_complete
        if any(len(self.variances.get(m, [])) < need for m in self.metrics):
            return None
        return {m: math.sqrt(sum(v) / len(v)) for m, v in ((m, self.variances[m]) for m in self.metrics)}

    def verdict(self, first: dict[str, float]) -> str | None:
        """Why a configuration whose first seeds' means are `first` is dropped, or None to run its
        other seeds."""
        s = self.spread()
        if s is None or any(not math.isfinite(first.get(m, math.nan)) for m in self.metrics):
            return None
        k = self.rules.margin
        for c in self.spec.constraints:
            x = first[c.metric]
            if c.max is not None and x - c.max > k * s[c.metric]:
                return (f"infeasible beyond doubt: {c.metric} {x:.4g} > {c.max:g} by more than "
                        f"{k:g} x its seed spread {s[c.metric]:.3g}")
            if c.min is not None and c.min - x > k * s[c.metric]:
                return (f"infeasible beyond doubt: {c.metric} {x:.4g} < {c.min:g} by more than "
                        f"{k:g} x its seed spread {s[c.metric]:.3g}")
        for t in self.told:
            if t.feasible and all(_worse_by(o.direction, first[o.metric], t.means[o.metric])
                                  > k * s[o.metric] for o in self.spec.objectives):
                shown = ", ".join(f"{o.metric} {first[o.metric]:.4g} vs {t.means[o.metric]:.4g}"
                                  for o in self.spec.objectives)
                return (f"dominated beyond doubt by trial {t.number} ({shown}; each worse by more "
                        f"than {k:g} x its seed spread)")
        return None


def _worse_by(direction: str, x: float, y: float) -> float:
    """How much worse x is than y (positive: worse)."""
    return x - y if direction == "minimize" else y - x


def means_stds(rows: list[dict[str, Any]], metrics: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Means and sample standard deviations (ddof 1; NaN for one row or a missing value) of rows."""
    means, stds = {}, {}
    for m in metrics:
        got = [r.get(m) for r in rows]
        if not got or any(v is None for v in got):
            means[m] = stds[m] = math.nan
            continue
        vals = [float(v) for v in got if v is not None]
        mu = sum(vals) / len(vals)
        means[m] = mu
        stds[m] = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else math.nan
    return means, stds
