"""How a metric reads on an axis, and where its hypervolume reference lies: both from the metric
catalogue (sweeps/catalogue.py). Axis labels read "test accuracy TA (%) ↑"; the hypervolume's fixed
default reference point is the worst end of each objective's natural range, so hypervolumes of
different sweeps compare. A column the catalogue does not list still works: its raw name labels the
axis and its reference comes from the data (see `default_reference`).
"""
from __future__ import annotations

import math

import numpy as np

from sweeps.catalogue import Metric, get


def info(metric: str) -> Metric:
    """The catalogue's entry (a bare one, its name as its label, for a column it does not list)."""
    return get(metric)


def axis_label(metric: str, direction: str | None = None) -> str:
    """`test accuracy TA (%) ↑`: words, unit, and an arrow for the better direction (↑ higher is
    better, ↓ lower is better; `direction` overrides the catalogue's)."""
    i = info(metric)
    arrow = {"maximize": " ↑", "minimize": " ↓"}.get(direction or i.better or "", "")
    return f"{i.label}{f' ({i.unit})' if i.unit else ''}{arrow}"


def natural_reference(metric: str, direction: str) -> float | None:
    """The worst end of the metric's natural range for this direction (None when unbounded)."""
    i = info(metric)
    return i.hi if direction == "minimize" else i.lo


def default_reference(objectives, values: np.ndarray | None = None) -> tuple[list[float], list[bool]]:
    """The hypervolume's reference point, in the objectives' own units and directions: per objective
    the worst end of its natural range (UA, TA, ... : 0 or 100 %; gaps: 100 pp; utility_drop:
    +100 pp); for a metric with no bound on that side, the worst value in `values` (rows = points,
    columns = objectives, own units) plus 10% of their range (1 when they are all equal). Returns
    (point, from_data flags)."""
    ref, from_data = [], []
    for j, o in enumerate(objectives):
        r = natural_reference(o.metric, o.direction)
        if r is None:
            col = np.asarray(values[:, j] if values is not None and len(values) else [], dtype=float)
            col = col[np.isfinite(col)]
            if len(col):
                lo, hi = col.min(), col.max()
                span = (hi - lo) or 1.0
                r = hi + 0.1 * span if o.direction == "minimize" else lo - 0.1 * span
            else:
                r = math.nan
            from_data.append(True)
        else:
            from_data.append(False)
        ref.append(float(r))
    return ref, from_data


def hv_text(hv: float) -> str:
    """A hypervolume as text, with enough digits that a resume which adds a point to the front
    shows a change (9966.42 -> 9968.07; four significant digits printed both as 9966)."""
    return f"{hv:.7g}" if math.isfinite(hv) else "—"
