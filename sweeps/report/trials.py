"""Every trial of a sweep as a row a person (or a script) reads: what `unlearn-sweep trials` prints,
like `optuna trials`, with what the record knows beside what the study knows.

A row: `number` (Optuna's trial number, also the record's `trial_number`), `state` (the study's:
COMPLETE, FAIL, RUNNING, WAITING; a trial whose parameters were enqueued again is FAIL with
`superseded` set, a proposal of a configuration already on record has `duplicate_of`), `method`,
`params` (its searched parameters, by the spec's names), `n` (seeds with a complete run, replicates
included), `values` and `stds` (each objective's mean and sample std over those seeds), `feasible`,
`error` and `failure_kind` (a failed trial's reason). Read only: the journal is folded as
`status` folds it (sweeps/journal.py), the record as `analyze` reads it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from sweeps.spec import CategoricalDim, IntDim, SweepSpec

STATE_ORDER = ("COMPLETE", "FAIL", "RUNNING", "WAITING", "PRUNED")


def trial_rows(spec: SweepSpec, run_dir: Path) -> tuple[list[dict[str, Any]], str | None]:
    """(rows ordered by trial number, a one-line notice about the study or None)."""
    from sweeps.report.analysis import per_config
    from sweeps.results import read_results
    from sweeps.study import DUPLICATE, load_study_readonly, superseded

    configs = per_config(read_results(run_dir).to_pandas(), spec)
    by_number = {int(r["trial_number"]): r for r in configs.to_dict("records")} if len(configs) else {}
    study, notice = load_study_readonly(spec, run_dir)
    rows = []
    if study is None:  # no journal yet, or a storage that does not answer: the record alone
        for number, c in sorted(by_number.items()):
            rows.append(_row(spec, number, c["state"], c["method"], json.loads(c["params_json"]), c))
        return rows, notice
    sup = superseded(study)
    for t in study.get_trials(deepcopy=False):
        c = by_number.get(t.number)
        method, params = _decode(spec, t.params, internal=not hasattr(t, "distributions"))
        if c is not None:
            method, params = c["method"], _searched(spec, c["method"], json.loads(c["params_json"]))
        row = _row(spec, t.number, t.state.name, method, params, c, t.user_attrs)
        if t.number in sup:
            row["superseded"] = True
        if DUPLICATE in t.user_attrs:
            row["duplicate_of"] = int(t.user_attrs[DUPLICATE])
        rows.append(row)
    return rows, notice


def _row(spec: SweepSpec, number: int, state: str, method: str | None, params: dict[str, Any],
         c: dict[str, Any] | None, attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    attrs = attrs or {}
    values = {o.metric: _num(c.get(o.metric)) if c else None for o in spec.objectives}
    stds = {o.metric: _num(c.get(f"{o.metric}_std")) if c else None for o in spec.objectives}
    error = attrs.get("error") or (c.get("error") if c and c.get("state") != "COMPLETE" else None) or None
    return {"number": number, "state": state, "method": method, "params": params,
            "n": int(c["n"]) if c else 0, "values": values, "stds": stds,
            "feasible": bool(c["feasible"]) if c else False, "error": error,
            "failure_kind": attrs.get("failure_kind")}


def _num(v) -> float | None:
    return float(v) if v is not None and not pd.isna(v) and math.isfinite(float(v)) else None


def _searched(spec: SweepSpec, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters the spec searches for `method` (fixed ones left out), as the record holds them."""
    space = spec.methods[method].space if method in spec.methods else {}
    return {k: params[k] for k, d in space.items() if d.type != "fixed" and k in params} if space else params


def _decode(spec: SweepSpec, raw: dict[str, Any], internal: bool) -> tuple[str | None, dict[str, Any]]:
    """(method, searched parameters) of a trial's Optuna params (`<method>.<param>`); `internal`: the
    journal's representation (a categorical's index), as `sweeps.journal` reads it."""
    if "method" not in raw:
        return None, {}
    names = list(spec.methods)
    method = names[int(raw["method"])] if internal and isinstance(raw["method"], (int, float)) \
        and 0 <= int(raw["method"]) < len(names) else raw["method"]
    out = {}
    for p, d in (spec.methods[method].space.items() if method in spec.methods else ()):
        v = raw.get(f"{method}.{p}")
        if v is None:
            continue
        if internal and isinstance(d, CategoricalDim):
            v = d.choices[int(v)]
        elif isinstance(d, IntDim):
            v = int(v)
        out[p] = v
    return str(method), out


def trials_text(spec: SweepSpec, rows: list[dict[str, Any]]) -> str:
    """An aligned table: trial, state, method, n, each objective (mean ± std), feasible, parameters."""
    from sweeps.report.tables import fmt

    if not rows:
        return f"sweep {spec.name}: no trial yet"
    table = []
    for r in rows:
        state = r["state"] + (" (re-enqueued)" if r.get("superseded") else "") + \
            (f" (duplicate of {r['duplicate_of']})" if "duplicate_of" in r else "")
        line = {"trial": r["number"], "state": state, "method": r["method"] or "—", "n": r["n"]}
        for o in spec.objectives:
            line[f"{o.metric} {'↓' if o.direction == 'minimize' else '↑'}"] = fmt(r["values"][o.metric],
                                                                              r["stds"][o.metric])
        line["feasible"] = "yes" if r["feasible"] else ("no" if r["n"] else "—")
        line["params"] = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in r["params"].items())
        if r.get("error"):
            line["params"] += f"  [{' '.join(str(r['error']).split())[:80]}]"
        table.append(line)
    counts = pd.Series([r["state"] for r in rows]).value_counts()
    head = f"sweep {spec.name}: {len(rows)} trial(s): " + ", ".join(
        f"{counts[s]} {s.lower()}" for s in STATE_ORDER if s in counts)
    # numbers as formatted (tabulate would reparse "1.20" as 1.2)
    return head + "\n" + pd.DataFrame(table).to_markdown(index=False, tablefmt="plain", disable_numparse=True)
