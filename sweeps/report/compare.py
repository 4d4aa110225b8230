"""Several sweeps side by side: their fronts overlaid, a table, and the hypervolume of each at ONE
reference point shared by all, so the numbers compare (a run whose front dominates another's gets
a larger one; a run compared with itself gets the same). The point is `--ref` when given, else the
fixed default of `sweeps.report.units.default_reference` (the worst end of each objective's natural
range: 100 for a minimised percent or gap, 0 for a maximised percent), taken from the data of all
the runs together only for a metric with no natural bound (run time). Each run's best value per
objective comes from the configurations its front ranks: its replicated means once replication has
run, never a single-seed draw beside them; the summary ends with each run's evidence line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sweeps.report.analysis import Analysis, analyze_runs, objective_matrix, per_config
from sweeps.report.tables import fmt
from sweeps.report.units import default_reference, hv_text
from sweeps.results import read_results
from sweeps.spec import SweepSpec
from unlearning.errors import UserError


@dataclass
class Comparison:
    labels: list[str]
    analyses: list[Analysis]
    reference_point: list[float]
    reference_from_data: list[bool]
    table: pd.DataFrame  # one row per run


def labels_for(run_dirs: list[Path]) -> list[str]:
    """Run directory names, made unique ("qs", "qs (2)") when the same one is given twice."""
    out: list[str] = []
    for d in run_dirs:
        name = Path(d).name or str(d)
        out.append(name if name not in out else f"{name} ({sum(x.split(' (')[0] == name for x in out) + 1})")
    return out


def compare(runs: list[tuple[Path, SweepSpec]], ref: list[float] | None = None) -> Comparison:
    """Analyze each (run directory, spec) at one shared reference point. All runs must have the
    same objectives (metrics and directions, in order): a UserError names the first that differs."""
    if not runs:
        raise UserError("compare: give at least one run")
    first = runs[0][1].objectives
    for d, spec in runs[1:]:
        if [(o.metric, o.direction) for o in spec.objectives] != [(o.metric, o.direction) for o in first]:
            raise UserError(f"{d}: objectives {_objs(spec.objectives)} differ from {runs[0][0]}'s "
                            f"{_objs(first)}; hypervolumes would not compare")
    if ref is not None and len(ref) != len(first):
        raise UserError(f"--ref: {len(ref)} value(s) for {len(first)} objective(s) ({_objs(first)})")
    records = [read_results(d).to_pandas() for d, _ in runs]
    from_data = [False] * len(first)
    if ref is None:  # one point for all: natural bounds, else the pooled feasible values
        configs = [per_config(r, spec) for r, (_, spec) in zip(records, runs)]
        values = np.concatenate([objective_matrix(c[c["feasible"]], first) for c in configs])
        ref, from_data = default_reference(first, values)
    analyses = [analyze_runs(r, spec, ref=ref, run_dir=Path(d)) for r, (d, spec) in zip(records, runs)]
    labels = labels_for([d for d, _ in runs])
    rows = []
    for label, (_d, spec), a in zip(labels, runs, analyses):
        c = a.configs
        row = {"run": label, "sweep": spec.name, "configurations": len(c),
               "complete": int((c["state"] == "COMPLETE").sum()) if len(c) else 0,
               "feasible": int(c["feasible"].sum()) if len(c) else 0, "front": len(a.front),
               "hypervolume": a.hypervolume}
        feas = c[c["feasible"]] if len(c) else c
        if len(feas) and feas["replicated"].any():  # as the front: a replicated mean, never a draw
            feas = feas[feas["replicated"]]
        for o in first:  # numbers, so compare.csv reads as data; summary_text formats them
            best = None
            if len(feas) and feas[o.metric].notna().any():
                col = feas[o.metric]
                best = feas.loc[col.idxmin() if o.direction == "minimize" else col.idxmax()]
            row[f"best_{o.metric}"] = float(best[o.metric]) if best is not None else math.nan
            row[f"best_{o.metric}_std"] = float(best.get(f"{o.metric}_std", math.nan)) \
                if best is not None else math.nan
            row[f"best_{o.metric}_n"] = int(best["n"]) if best is not None else 0
        rows.append(row)
    return Comparison(labels, analyses, list(ref), from_data, pd.DataFrame(rows))


def _objs(objectives) -> str:
    return ", ".join(f"{o.direction} {o.metric}" for o in objectives)


def summary_text(c: Comparison) -> str:
    objs = c.analyses[0].spec.objectives
    ref = ", ".join(f"{o.metric}={x:.4g}{' (from the data)' if d else ''}"
                    for o, x, d in zip(objs, c.reference_point, c.reference_from_data))
    t = c.table.assign(hypervolume=[hv_text(h) for h in c.table["hypervolume"]])
    for o in objs:
        m = f"best_{o.metric}"
        t[f"best {o.metric}"] = [f"{fmt(v, s)} (n={n})" if n else "—"
                                 for v, s, n in zip(t[m], t[f"{m}_std"], t[f"{m}_n"])]
        t = t.drop(columns=[m, f"{m}_std", f"{m}_n"])
    empty = [lab for lab, a in zip(c.labels, c.analyses) if a.runs.empty]
    note = (f"\nno run on record yet in: {', '.join(empty)} (a sweep still in its oracle phase, or "
            "stopped before its first trial landed)") if empty else ""
    evidence = "".join(f"\n{lab}: {a.evidence}" for lab, a in zip(c.labels, c.analyses) if a.evidence)
    return (f"hypervolume at the shared reference point ({ref})\n"
            + t.to_markdown(index=False, tablefmt="plain") + note + evidence)
