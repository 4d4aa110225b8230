"""Which parameters matter, per objective and per method: Optuna's importance evaluators on the
feasible configurations of the record (their means over seeds), a view that respects the sweep's
constraints (an infeasible corner of the space does not make a parameter look important).

Per method, because each method has its own parameters (`<method>.<param>` in the study): an
evaluator sees only the parameters every trial it is given has. Fixed dimensions are left out.

The evaluator: fANOVA (Optuna's default, and what optuna-dashboard shows: a random forest fitted to
the objective, its variance split by functional ANOVA; sound on the few trials of a typical sweep),
seeded, for a method with up to FANOVA_MAX configurations; PED-ANOVA above that (Optuna's fast
evaluator, Watanabe et al. 2023: how the top quantile's parameter distribution differs from the
whole's; it needs many trials, which such sweeps have), because fANOVA's cost grows quickly (per
objective 0.6 s at 100 trials, 24 s at 1,000, 180 s at 3,000 on this project's loaded 2-core CPU,
against 0.01-0.04 s for PED-ANOVA), and `analyze` must stay quick on a large record. Each row names
its evaluator and n. With few configurations (fewer than 10) the numbers are a hint, not a finding.
"""
from __future__ import annotations

import json
import warnings

import pandas as pd

from sweeps.report.analysis import Analysis
from sweeps.spec import CategoricalDim, FixedDim, IntDim, SweepSpec

FANOVA_MAX = 100
SAMPLE_MAX = 1000  # configurations per method the importances are estimated from
FEW = 10


def distributions(spec: SweepSpec, method: str) -> dict:
    """Optuna distributions of the method's searched (non-fixed) parameters, by the spec's names."""
    from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    out: dict[str, BaseDistribution] = {}
    for p, d in spec.methods[method].space.items():
        if isinstance(d, FixedDim):
            continue
        if isinstance(d, CategoricalDim):
            out[p] = CategoricalDistribution(d.choices)
        elif isinstance(d, IntDim):
            out[p] = IntDistribution(d.low, d.high, log=d.log, step=1 if d.log else (d.step or 1))
        else:
            out[p] = FloatDistribution(d.low, d.high, log=d.log, step=getattr(d, "step", None))
    return out


def param_importances(a: Analysis) -> pd.DataFrame:
    """Columns: method, objective, param, importance (summing to 1 per method and objective),
    evaluator, n (feasible configurations it saw), of (the method's feasible configurations: above
    SAMPLE_MAX, n of them drawn at random, seeded, since the figures are an estimate anyway and
    Optuna copies every trial it is given). Empty when no method has two feasible configurations
    with a searched parameter."""
    import numpy as np
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    c = a.configs
    feas = c[c["feasible"]] if len(c) else c
    rows = []
    for method, g in feas.groupby("method", sort=True):
        if method not in a.spec.methods:
            continue
        dists = distributions(a.spec, method)
        if not dists or len(g) < 2:
            continue
        total = len(g)
        if total > SAMPLE_MAX:
            g = g.iloc[np.sort(np.random.default_rng(0).choice(total, SAMPLE_MAX, replace=False))]
        evaluator = "fanova" if len(g) <= FANOVA_MAX else "ped-anova"
        # here, not above: optuna.importance imports scikit-learn's forests and SciPy (seconds on a
        # busy machine), which a record without two feasible configurations never needs
        from optuna.importance import (FanovaImportanceEvaluator, PedAnovaImportanceEvaluator,
                                       get_param_importances)
        # one study holding every objective (Optuna deep-copies each trial added), each objective
        # then ranked as a target: lower is better for PED-ANOVA, so a maximised one is negated
        objs = a.spec.objectives
        study = optuna.create_study(directions=[o.direction for o in objs] if len(objs) > 1 else None,
                                    direction=objs[0].direction if len(objs) == 1 else None)
        values = g[[o.metric for o in objs]].to_numpy(dtype=float).tolist()
        study.add_trials([optuna.trial.create_trial(params={k: p[k] for k in dists}, distributions=dists,
                                                    values=v)
                          for p, v in zip(map(json.loads, g["params_json"]), values)])
        for i, o in enumerate(objs):
            sign = -1.0 if o.direction == "maximize" else 1.0
            ev = FanovaImportanceEvaluator(seed=0) if evaluator == "fanova" else PedAnovaImportanceEvaluator()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = get_param_importances(study, evaluator=ev, target=_target(i, sign))
            except (ValueError, RuntimeError, ZeroDivisionError):  # nothing varies, too few trials
                continue
            rows += [{"method": method, "objective": o.metric, "param": k, "importance": float(v),
                      "evaluator": evaluator, "n": len(g), "of": total} for k, v in got.items()]
    return pd.DataFrame(rows, columns=["method", "objective", "param", "importance", "evaluator", "n", "of"])


def _target(i: int, sign: float):
    def value(t) -> float:
        return sign * t.values[i]
    return value


def importance_markdown(imp: pd.DataFrame) -> str:
    """One table per method: its parameters by their importance for each objective."""
    if imp.empty:
        return "_(no method has two feasible configurations with a searched parameter yet)_\n"
    out = []
    for method, g in imp.groupby("method", sort=True):
        n, of, ev = int(g["n"].iloc[0]), int(g["of"].iloc[0]), g["evaluator"].iloc[0]
        t = g.pivot(index="param", columns="objective", values="importance")
        t = t.loc[t.max(axis=1).sort_values(ascending=False).index]
        seen = f"{n} feasible configuration(s)" if n == of else \
            f"from {n} of {of} feasible configurations, drawn at random (seeded)"
        out.append(f"**{method}** ({seen}, {ev}"
                   + (f"; fewer than {FEW}: a hint, not a finding" if n < FEW else "") + ")\n\n"
                   + t.map(lambda v: f"{v:.2f}").rename_axis("parameter").to_markdown() + "\n")
    return "\n".join(out)


def parallel_html(a: Analysis) -> str | None:
    """parallel.html: per method, a parallel-coordinates view (plotly, plotly.js inline: opens
    offline) of its searched parameters and the objectives, one line per complete configuration,
    feasible ones in colour, infeasible ones grey (drag along an axis to select a range). None when
    no configuration is complete."""
    import html

    import numpy as np
    import plotly.graph_objects as go
    import plotly.io as pio

    c = a.configs
    ok = c[c["state"] == "COMPLETE"] if len(c) else c
    if ok.empty:
        return None
    figures: list[str] = []
    for method, g in ok.groupby("method", sort=True):
        if method not in a.spec.methods:
            continue
        dists = distributions(a.spec, method)
        params = [json.loads(p) for p in g["params_json"]]
        dims = []
        for name, d in dists.items():
            vals = [p.get(name) for p in params]
            if getattr(d, "choices", None) is not None:
                index = {ch: i for i, ch in enumerate(d.choices)}
                dims.append(dict(label=name, values=[index.get(v, -1) for v in vals],
                                 tickvals=list(range(len(d.choices))), ticktext=[str(x) for x in d.choices]))
            elif getattr(d, "log", False):
                dims.append(dict(label=f"log10 {name}", values=np.log10(np.asarray(vals, dtype=float))))
            else:
                dims.append(dict(label=name, values=np.asarray(vals, dtype=float)))
        for o in a.spec.objectives:
            dims.append(dict(label=f"{o.metric} {'↓' if o.direction == 'minimize' else '↑'}",
                             values=g[o.metric].to_numpy(dtype=float)))
        feasible = g["feasible"].to_numpy(dtype=float)
        fig = go.Figure(go.Parcoords(
            line=dict(color=feasible, colorscale=[[0, "#c8c8c8"], [1, "#1f77b4"]], cmin=0, cmax=1),
            dimensions=dims))
        fig.update_layout(title=f"{method}: {int(feasible.sum())} feasible (blue) of {len(g)} complete "
                                f"configuration(s), infeasible grey", height=420, template="plotly_white")
        figures.append(pio.to_html(fig, include_plotlyjs=not figures, full_html=False,
                                   config={"displaylogo": False}))
    name = html.escape(a.spec.name)
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{name}: parameters</title></head>'
            f'<body style="font-family:sans-serif;margin:1.5em"><h2>{name}: parameters and objectives</h2>'
            "<p>One line per complete configuration (means over its seeds); blue: feasible, grey: "
            "infeasible. Drag along an axis to keep a range; drag an axis title to reorder.</p>"
            + "".join(figures) + "</body></html>\n")
