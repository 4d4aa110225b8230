"""Trade-off analysis of a finished (or running) sweep, from its Parquet record alone.

Rows are grouped by configuration (method + full parameters): the runs of its seeds give a mean and a
standard deviation. The constraints of the spec filter feasible configurations (on the means, as the
driver told Optuna); the Pareto front and its hypervolume are taken over the feasible ones; the best
configuration of each method is the one with the best first objective among its feasible ones
(ties: the next objectives). Outputs go to runs/<name>/report/: report.md, trials.csv, front.csv,
table.csv, front.png, history.png and front.html (self-contained: inline SVG, no network).
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sweeps.results import METRIC_COLUMNS, REFERENCE_METRICS, read_results
from sweeps.spec import REFERENCE_DIR, SweepSpec

FIELD = [("UA", "unlearn_acc"), ("RA", "retain_acc"), ("TA", "test_acc"), ("MIA", "mia_efficacy"),
         ("Avg. gap", "avg_gap"), ("RTE (s)", "runtime_s")]
PAPER_COLS = {"UA": "ua", "RA": "ra", "TA": "ta", "MIA": "mia_efficacy", "Avg. gap": "avg_gap"}


# -- geometry ------------------------------------------------------------------------------------

def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Non-dominated rows of `points` (all objectives minimised)."""
    n = len(points)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if not keep[i]:
            continue
        dominated = np.all(points <= points[i], axis=1) & np.any(points < points[i], axis=1)
        if dominated.any():
            keep[i] = False
    return keep


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Volume dominated by `points` (minimised) and bounded by `ref`; exact, by slicing on the last
    objective (fast enough for the fronts of a sweep: tens of points, a few objectives)."""
    pts = np.asarray([p for p in points if np.all(p < ref)], dtype=float)
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    if pts.shape[1] == 2:
        pts = pts[np.argsort(pts[:, 0])]
        vol, best_y = 0.0, ref[1]
        for x, y in pts:
            if y < best_y:
                vol += (ref[0] - x) * (best_y - y)
                best_y = y
        return float(vol)
    pts = pts[np.argsort(pts[:, -1])]
    vol = 0.0
    for i in range(len(pts)):
        top = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        if top > pts[i, -1]:
            vol += hypervolume(pts[: i + 1, :-1], ref[:-1]) * (top - pts[i, -1])
    return float(vol)


# -- the per-configuration table -----------------------------------------------------------------

@dataclass
class Analysis:
    spec: SweepSpec
    runs: pd.DataFrame  # one row per run (configuration x seed)
    configs: pd.DataFrame  # one row per configuration, means (<m>) and stds (<m>_std) over seeds
    front: pd.DataFrame
    hypervolume: float
    reference_point: list[float]
    best: pd.DataFrame  # best configuration per method
    table: pd.DataFrame  # the field's format, mean +- std over seeds


def _obj_matrix(df: pd.DataFrame, spec: SweepSpec) -> np.ndarray:
    cols = [df[o.metric].to_numpy(dtype=float) * (1 if o.direction == "minimize" else -1)
            for o in spec.objectives]
    return np.stack(cols, axis=1) if len(df) else np.zeros((0, len(cols)))


def per_config(runs: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame(columns=["config", "method", "trial_number", "state", "feasible"])
    metrics = [m for m in (*METRIC_COLUMNS, "runtime_s",
                           *[f"{r}_{m}" for r in ("original", "retrain") for m in REFERENCE_METRICS])
               if m in runs]
    out = []
    for (method, params), g in runs.groupby(["method", "params_json"], sort=False, dropna=False):
        ok = g[g["state"] == "COMPLETE"]
        row = {"method": method, "params_json": params, "trial_number": int(g["trial_number"].min()),
               "n_seeds": int(g["seed_index"].nunique()), "n_complete": len(ok),
               "fingerprints": ",".join(g["fingerprint"])}
        complete = len(ok) == len(g) and row["n_seeds"] >= len(spec.seeds)
        row["state"] = "COMPLETE" if complete else "FAIL"
        errs = g.loc[g["state"] != "COMPLETE", "error"].dropna()
        row["error"] = errs.iloc[0] if len(errs) else ("" if complete else "missing seeds")
        for m in metrics:
            vals = ok[m].astype(float)
            row[m] = vals.mean() if len(vals) else math.nan
            row[f"{m}_std"] = vals.std(ddof=0) if len(vals) > 1 else math.nan
        for k, v in json.loads(params).items():
            row[f"p_{k}"] = v
        feasible = complete
        for c in spec.constraints:
            v = row.get(c.metric, math.nan)
            feasible &= math.isfinite(v) and (c.max is None or v <= c.max) and (c.min is None or v >= c.min)
        row["feasible"] = bool(feasible)
        out.append(row)
    return pd.DataFrame(out).sort_values("trial_number").reset_index(drop=True)


def analyze(run_dir: str | Path, spec: SweepSpec) -> Analysis:
    runs = read_results(run_dir).to_pandas()
    configs = per_config(runs, spec)
    feas = configs[configs["feasible"]] if len(configs) else configs
    if len(feas):
        objs = _obj_matrix(feas, spec)
        finite = np.all(np.isfinite(objs), axis=1)
        feas, objs = feas[finite], objs[finite]
    if len(feas):
        mask = pareto_mask(objs)
        front = feas[mask].copy()
        lo, hi = objs.min(axis=0), objs.max(axis=0)
        ref = hi + np.where(hi > lo, 0.1 * (hi - lo), 1.0)
        hv = hypervolume(objs[mask], ref)
        ref_point = [float(r if o.direction == "minimize" else -r) for r, o in zip(ref, spec.objectives)]
    else:
        front, hv, ref_point = feas.copy(), 0.0, []
    front = _sort_objectives(front, spec)
    best = pd.concat([_sort_objectives(g, spec).head(1) for _, g in feas.groupby("method", sort=True)]
                     ) if len(feas) else feas.copy()
    return Analysis(spec, runs, configs, front, hv, ref_point, best, field_table(runs, best))


def top_configs(a: Analysis, k: int) -> pd.DataFrame:
    """The top `k` feasible, complete configurations by the sweep's own objectives (so by its
    selection rule, blind or oracle): ranked by Pareto layer (the front is layer 0; peel it off and
    the next front is layer 1, ...), ties broken by the objectives in order. `replicate` and `audit`
    take their configurations from here. Column `rank` (0-based) and `layer` are added."""
    feas = a.configs[a.configs["feasible"] & (a.configs["state"] == "COMPLETE")] if len(a.configs) \
        else a.configs
    if feas.empty or k <= 0:
        return feas.assign(rank=pd.Series(dtype=int), layer=pd.Series(dtype=int)).head(0)
    objs = _obj_matrix(feas, a.spec)
    objs = np.where(np.isfinite(objs), objs, np.inf)
    layer = np.full(len(feas), -1)
    left, depth = np.arange(len(feas)), 0
    while len(left):
        mask = pareto_mask(objs[left])
        layer[left[mask]] = depth
        left, depth = left[~mask], depth + 1
    ranked = _sort_objectives(feas.assign(layer=layer), a.spec)
    if a.spec.select is not None:
        ranked = ranked.sort_values(a.spec.select.metric, ascending=a.spec.select.direction == "minimize",
                                    kind="stable", na_position="last").head(k)
    else:
        ranked = ranked.sort_values("layer", kind="stable").head(k)
    return ranked.assign(rank=np.arange(len(ranked))).reset_index(drop=True)


def _sort_objectives(df: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    if df.empty:
        return df
    return df.sort_values([o.metric for o in spec.objectives],
                          ascending=[o.direction == "minimize" for o in spec.objectives])


def _pm(vals: pd.Series) -> tuple[float, float]:
    v = vals.dropna().astype(float)
    return (v.mean(), v.std(ddof=0) if len(v) > 1 else math.nan) if len(v) else (math.nan, math.nan)


def field_table(runs: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """UA, RA, TA, MIA, Avg. gap, RTE as mean and std over seeds: Retrain, Original, then the best
    configuration of each method (as the unlearning papers lay their tables out)."""
    rows = []
    ok = runs[runs["state"] == "COMPLETE"].drop_duplicates("fingerprint") if len(runs) else runs
    if len(ok):
        # one reference per distinct (split, train) seed pair
        refs = ok.drop_duplicates(["split_seed", "train_seed", "data", "model", "split"])
        for name in ("retrain", "original"):
            if f"{name}_test_acc" not in refs or refs[f"{name}_test_acc"].isna().all():
                continue
            row = {"method": name.capitalize() if name == "original" else "Retrain", "trial": ""}
            for label, m in FIELD:
                if m in REFERENCE_METRICS:
                    row[label], row[f"{label} std"] = _pm(refs[f"{name}_{m}"])
                elif m == "avg_gap":
                    row[label], row[f"{label} std"] = (0.0, math.nan) if name == "retrain" else (math.nan, math.nan)
                else:
                    row[label], row[f"{label} std"] = math.nan, math.nan
            rows.append(row)
    for _, b in best.iterrows():
        g = ok[ok["fingerprint"].isin(b["fingerprints"].split(","))]
        row = {"method": b["method"], "trial": int(b["trial_number"])}
        for label, m in FIELD:
            row[label], row[f"{label} std"] = _pm(g[m]) if m in g else (math.nan, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


# -- the paper's numbers beside ours -------------------------------------------------------------

def read_reference(table: str, scenario: str) -> pd.DataFrame:
    df = pd.read_csv(REFERENCE_DIR / table, comment="#")
    return df[df["scenario"] == scenario].reset_index(drop=True)


def reference_citation(table: str) -> list[str]:
    return [ln.lstrip("# ").rstrip() for ln in (REFERENCE_DIR / table).read_text().splitlines()
            if ln.startswith("#")]


def beside_paper(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in ours.iterrows():
        key = "retrain" if r["method"] == "Retrain" else str(r["method"])
        p = paper[paper["method"] == key]
        row = {"method": r["method"]}
        for label, col in PAPER_COLS.items():
            row[f"{label} ours"] = _fmt(r[label], r[f"{label} std"])
            row[f"{label} paper"] = (_fmt(p.iloc[0][col], p.iloc[0].get(f"{col.split('_')[0]}_std",
                                                                           math.nan)) if len(p) else "")
        row["RTE ours (min)"] = _fmt(r["RTE (s)"] / 60, r["RTE (s) std"] / 60)
        row["RTE paper (min)"] = _fmt(p.iloc[0]["rte_min"], math.nan) if len(p) else ""
        rows.append(row)
    return pd.DataFrame(rows)


# -- formatting ----------------------------------------------------------------------------------

def _fmt(mean, std=math.nan, digits: int = 2) -> str:
    if mean is None or not math.isfinite(float(mean)):
        return "—"
    s = f"{float(mean):.{digits}f}"
    if std is not None and math.isfinite(float(std)):
        s += f" ± {float(std):.{digits}f}"
    return s


def markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def formatted_field_table(t: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({"method": t["method"], "trial": t["trial"]}) if len(t) else pd.DataFrame()
    for label, _ in FIELD:
        if len(t):
            out[label] = [_fmt(m, s) for m, s in zip(t[label], t[f"{label} std"])]
    return out


def params_text(params_json: str, spec: SweepSpec, method: str) -> str:
    p = json.loads(params_json)
    searched = spec.methods[method].space if method in spec.methods else p
    return ", ".join(f"{k}={_short(p[k])}" for k in searched if k in p)


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def front_table(a: Analysis) -> pd.DataFrame:
    rows = []
    for _, r in a.front.iterrows():
        row = {"trial": int(r["trial_number"]), "method": r["method"],
               "params": params_text(r["params_json"], a.spec, r["method"])}
        for o in a.spec.objectives:
            row[o.metric] = _fmt(r[o.metric], r[f"{o.metric}_std"])
        for c in a.spec.constraints:
            if c.metric not in row:
                row[c.metric] = _fmt(r[c.metric], r[f"{c.metric}_std"])
        rows.append(row)
    return pd.DataFrame(rows)


def summary_text(a: Analysis) -> str:
    c = a.configs
    n_ok = int((c["state"] == "COMPLETE").sum()) if len(c) else 0
    n_feas = int(c["feasible"].sum()) if len(c) else 0
    objs = ", ".join(f"{o.direction} {o.metric}" for o in a.spec.objectives)
    lines = [f"sweep {a.spec.name}: {len(c)} configuration(s) x {len(a.spec.seeds)} seed(s), {n_ok} complete, "
             f"{n_feas} feasible; objectives: {objs}; selection rule: {a.spec.selection_rule}",
             f"Pareto front ({len(a.front)} configuration(s)), hypervolume {a.hypervolume:.4g}"
             + (f" (reference point {', '.join(f'{x:.4g}' for x in a.reference_point)})"
                if a.reference_point else "")]
    ft = front_table(a)
    if len(ft):
        widths = {col: max(len(col), *(len(str(v)) for v in ft[col])) for col in ft.columns}
        lines.append("  " + "  ".join(col.ljust(widths[col]) for col in ft.columns))
        for _, r in ft.iterrows():
            lines.append("  " + "  ".join(str(r[col]).ljust(widths[col]) for col in ft.columns))
    return "\n".join(lines)


# -- plots ---------------------------------------------------------------------------------------

def _axes_cols(spec: SweepSpec) -> tuple[str, str]:
    o = [x.metric for x in spec.objectives]
    return (o[0], o[1]) if len(o) > 1 else ("trial_number", o[0])


def plot_front_png(a: Analysis, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xcol, ycol = _axes_cols(a.spec)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    ok = a.configs[a.configs["state"] == "COMPLETE"] if len(a.configs) else a.configs
    for i, (method, g) in enumerate(ok.groupby("method", sort=True)):
        color = f"C{i}"
        f = g[g["feasible"]]
        ax.scatter(f[xcol], f[ycol], color=color, label=method, s=28, alpha=0.85)
        inf = g[~g["feasible"]]
        if len(inf):
            ax.scatter(inf[xcol], inf[ycol], color=color, marker="x", s=28, alpha=0.6,
                       label=f"{method} (infeasible)")
    if len(a.front) and xcol != "trial_number":
        fr = a.front.sort_values(xcol)
        ax.step(fr[xcol], fr[ycol], where="post", color="black", lw=1, label="Pareto front")
        ax.scatter(fr[xcol], fr[ycol], facecolors="none", edgecolors="black", s=70)
    ax.set_xlabel(xcol)
    ax.set_ylabel(ycol)
    ax.set_title(f"{a.spec.name}: trade-off ({a.spec.selection_rule} selection)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_history_png(a: Analysis, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objs = a.spec.objectives
    fig, axes = plt.subplots(len(objs), 1, figsize=(6.4, 2.6 * len(objs)), dpi=110, squeeze=False)
    ok = a.configs[a.configs["state"] == "COMPLETE"].sort_values("trial_number") if len(a.configs) \
        else a.configs
    for ax, o in zip(axes[:, 0], objs):
        if len(ok):
            ax.scatter(ok["trial_number"], ok[o.metric], s=14, alpha=0.7,
                       c=np.where(ok["feasible"], "C0", "C3"), label="trial (red: infeasible)")
            f = ok[ok["feasible"]]
            if len(f):
                best = f[o.metric].cummin() if o.direction == "minimize" else f[o.metric].cummax()
                ax.step(f["trial_number"], best, where="post", color="black", lw=1, label="best feasible")
        ax.set_ylabel(o.metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("trial")
    fig.suptitle(f"{a.spec.name}: objective history")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def front_html(a: Analysis) -> str:
    """A self-contained page: an inline SVG scatter (hover a point for its parameters and metrics,
    click a legend entry to hide a method) and the front table. No scripts or styles fetched."""
    xcol, ycol = _axes_cols(a.spec)
    W, H, L, B, T, Rm = 720, 480, 70, 50, 30, 170
    ok = a.configs[a.configs["state"] == "COMPLETE"] if len(a.configs) else a.configs
    xs, ys = ok[xcol].astype(float).to_numpy() if len(ok) else np.zeros(0), \
        ok[ycol].astype(float).to_numpy() if len(ok) else np.zeros(0)
    fin = np.isfinite(xs) & np.isfinite(ys)
    if fin.any():
        x0, x1, y0, y1 = xs[fin].min(), xs[fin].max(), ys[fin].min(), ys[fin].max()
    else:
        x0, x1, y0, y1 = 0.0, 1.0, 0.0, 1.0
    px = (x1 - x0) * 0.05 or 1.0
    py = (y1 - y0) * 0.05 or 1.0
    x0, x1, y0, y1 = x0 - px, x1 + px, y0 - py, y1 + py

    def sx(v):
        return L + (v - x0) / (x1 - x0) * (W - L - Rm)

    def sy(v):
        return H - B - (v - y0) / (y1 - y0) * (H - B - T)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
             f'font-size="11">', f'<rect x="{L}" y="{T}" width="{W - L - Rm}" height="{H - B - T}" '
             f'fill="none" stroke="#999"/>']
    for k in range(6):
        xv, yv = x0 + (x1 - x0) * k / 5, y0 + (y1 - y0) * k / 5
        parts.append(f'<text x="{sx(xv):.1f}" y="{H - B + 15}" text-anchor="middle">{xv:.3g}</text>')
        parts.append(f'<text x="{L - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
    parts.append(f'<text x="{(L + W - Rm) / 2}" y="{H - 12}" text-anchor="middle">{html.escape(xcol)}</text>')
    parts.append(f'<text x="16" y="{(T + H - B) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 16 {(T + H - B) / 2})">{html.escape(ycol)}</text>')
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    methods = sorted(ok["method"].unique()) if len(ok) else []
    if len(a.front) and xcol != "trial_number":
        fr = a.front.sort_values(xcol)
        pts = []
        for i, (_, r) in enumerate(fr.iterrows()):
            if i:
                pts.append(f"{sx(r[xcol]):.1f},{sy(pts_prev_y):.1f}")
            pts.append(f"{sx(r[xcol]):.1f},{sy(r[ycol]):.1f}")
            pts_prev_y = r[ycol]
        parts.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="black" stroke-width="1"/>')
    for _, r in ok.iterrows():
        if not (math.isfinite(float(r[xcol])) and math.isfinite(float(r[ycol]))):
            continue
        color = palette[methods.index(r["method"]) % len(palette)]
        tip = [f"trial {int(r['trial_number'])} ({r['method']}){'' if r['feasible'] else ' INFEASIBLE'}",
               params_text(r["params_json"], a.spec, r["method"])]
        tip += [f"{m} = {_fmt(r[m], r[f'{m}_std'])}" for m in
                dict.fromkeys([o.metric for o in a.spec.objectives] + [c.metric for c in a.spec.constraints]
                              + ["unlearn_acc", "retain_acc", "test_acc", "mia_efficacy"]) if m in r]
        on_front = r["trial_number"] in set(a.front["trial_number"]) if len(a.front) else False
        shape = (f'<circle cx="{sx(r[xcol]):.1f}" cy="{sy(r[ycol]):.1f}" r="{6 if on_front else 4}" '
                 f'fill="{color if r["feasible"] else "white"}" stroke="{"black" if on_front else color}"'
                 f' stroke-width="{1.5 if on_front else 1}">')
        parts.append(f'<g class="m-{html.escape(r["method"])}">{shape}<title>'
                     f'{html.escape(chr(10).join(tip))}</title></circle></g>')
    for i, m in enumerate(methods):
        y = T + 10 + 18 * i
        parts.append(f'<g style="cursor:pointer" onclick="toggle(\'m-{html.escape(m)}\', this)">'
                     f'<circle cx="{W - Rm + 20}" cy="{y}" r="5" fill="{palette[i % len(palette)]}"/>'
                     f'<text x="{W - Rm + 30}" y="{y + 4}">{html.escape(m)}</text></g>')
    y = T + 10 + 18 * len(methods)
    parts.append(f'<text x="{W - Rm + 14}" y="{y + 4}">hollow: infeasible</text>')
    parts.append(f'<text x="{W - Rm + 14}" y="{y + 22}">ringed + line: front</text>')
    parts.append("</svg>")
    table = front_table(a)
    tbl = table.to_html(index=False, border=0, escape=True) if len(table) else "<p>(empty front)</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(a.spec.name)}: trade-off</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}} .off{{opacity:0.3}}</style>
<script>function toggle(cls, el){{var hide=!el.classList.contains('off');el.classList.toggle('off');
document.querySelectorAll('g.'+cls).forEach(function(g){{g.style.display=hide?'none':'';}});}}</script>
</head><body><h2>{html.escape(a.spec.name)}: trade-off ({a.spec.selection_rule} selection)</h2>
<p>Hover a point for its parameters and metrics (mean ± std over {len(a.spec.seeds)} seed(s)); click a
legend entry to hide a method. Hypervolume of the feasible front: {a.hypervolume:.4g}.</p>
{''.join(parts)}
<h3>Pareto front</h3>{tbl}</body></html>
"""


# -- the report ----------------------------------------------------------------------------------

def write_report(run_dir: str | Path, spec: SweepSpec) -> tuple[Analysis, Path]:
    run_dir = Path(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    a = analyze(run_dir, spec)
    a.configs.to_csv(out / "trials.csv", index=False)
    front_table(a).to_csv(out / "front.csv", index=False)
    a.table.to_csv(out / "table.csv", index=False)
    plot_front_png(a, out / "front.png")
    plot_history_png(a, out / "history.png")
    (out / "front.html").write_text(front_html(a))
    md = [f"# Sweep `{spec.name}`\n", f"{spec.description}\n" if spec.description else "",
          "```\n" + summary_text(a) + "\n```\n\n",
          f"Selection rule: **{spec.selection_rule}** ("
          + ("an objective or constraint peeks at Retrain" if spec.selection_rule == "oracle"
             else "no objective or constraint uses Retrain") + ").\n\n",
          "Constraints (feasibility filter, on the mean over seeds): "
          + (", ".join(f"{c.metric}" + (f" <= {c.max:g}" if c.max is not None else "")
                       + (f" >= {c.min:g}" if c.min is not None else "") for c in spec.constraints)
             or "none") + ".\n",
          "\n## Pareto front\n\n", markdown(front_table(a)),
          "\n![trade-off](front.png)\n\nInteractive: [front.html](front.html)\n",
          "\n## Best configuration per method (field format, mean ± std over seeds)\n\n",
          "Best = the best first objective among a method's feasible configurations. "
          "Metrics in percent; RTE = unlearning wall-clock seconds on this machine.\n\n",
          markdown(formatted_field_table(a.table))]
    if spec.reference is not None and len(a.table):
        paper = read_reference(spec.reference.table, spec.reference.scenario)
        side = beside_paper(a.table, paper)
        side.to_csv(out / "beside_paper.csv", index=False)
        md += [f"\n## Beside the paper ({spec.reference.scenario})\n\n",
               "\n".join(f"> {ln}" for ln in reference_citation(spec.reference.table)) + "\n\n",
               markdown(side)]
    md += ["\n## Objective history\n\n![history](history.png)\n",
           "\nFiles: trials.csv (every configuration), front.csv, table.csv; the record itself is "
           "../trials/*.parquet (read with `sweeps.results.read_results`).\n"]
    (out / "report.md").write_text("".join(md))
    return a, out / "report.md"
