"""How a metric reads on an axis and in a table: its name, unit, the field's short label and its
natural range. Used for axis labels ("test accuracy TA (%) ↑"), for the fixed default reference
point of the hypervolume (the worst end of the natural range, so hypervolumes of different sweeps
compare), and for the better direction of table columns. A metric not listed here still works:
its raw name labels the axis and its reference comes from the data (see `default_reference`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MetricInfo:
    name: str  # words, for axes
    unit: str = ""  # "%", "pp" (percentage points), "s", ...
    lo: float | None = None  # natural range; None = unbounded on that side
    hi: float | None = None
    better: str | None = None  # "minimize" | "maximize" when the field agrees; None = "closest to Retrain"


PCT = dict(unit="%", lo=0.0, hi=100.0)
INFO: dict[str, MetricInfo] = {
    "unlearn_acc": MetricInfo("unlearning accuracy UA", **PCT),
    "retain_acc": MetricInfo("retain accuracy RA", **PCT, better="maximize"),
    "test_acc": MetricInfo("test accuracy TA", **PCT, better="maximize"),
    "mia_efficacy": MetricInfo("MIA-efficacy", **PCT),
    "forget_acc": MetricInfo("forget accuracy", **PCT),
    "val_acc": MetricInfo("validation accuracy", **PCT, better="maximize"),
    # gaps between two percentages: 0..100 percentage points
    "avg_gap": MetricInfo("avg. gap to Retrain", "pp", 0.0, 100.0, "minimize"),
    "forget_gap": MetricInfo("forget gap to Retrain", "pp", 0.0, 100.0, "minimize"),
    "forget_val_gap": MetricInfo("|forget acc. − val. acc.|", "pp", 0.0, 100.0, "minimize"),
    "utility_drop": MetricInfo("TA drop from Original", "pp", -100.0, 100.0, "minimize"),
    "runtime_s": MetricInfo("unlearning run time", "s", 0.0, None, "minimize"),
    "retain_examples_seen": MetricInfo("retain examples seen", "", 0.0, None, "minimize"),
}


def info(metric: str) -> MetricInfo:
    return INFO.get(metric, MetricInfo(metric))


def axis_label(metric: str, direction: str | None = None) -> str:
    """`test accuracy TA (%) ↑`: words, unit, and an arrow for the better direction (↑ higher is
    better, ↓ lower is better)."""
    i = info(metric)
    arrow = {"maximize": " ↑", "minimize": " ↓"}.get(direction or i.better or "", "")
    return f"{i.name}{f' ({i.unit})' if i.unit else ''}{arrow}"


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
