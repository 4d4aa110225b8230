"""Plots a person reads at a glance, from an `Analysis` (and the history table for epochs.png).

front.png / front.html: the first two objectives, axes in their units with the better direction;
mean over seeds with sample-std error bars; colour = method; the Pareto front as a step line; one
marker per selection rule (the blind and the oracle pick of each method). The axes are framed on the
feasible configurations: infeasible ones are drawn hollow, and those beyond the frame sit on its edge
as triangles pointing the way they lie, so they never squash the front into a corner. A constraint
on a plotted metric (or utility_drop, when TA is plotted and every configuration shares one
Original) is drawn as its bound, the infeasible side shaded. front.html is plotly, self-contained
(plotly.js inline, works offline): hover a point for its configuration, click the legend to hide a
method, drag to zoom.
history.png: each objective by trial, colour = method, hollow = infeasible, the best feasible so far.
epochs.png: UA, RA, TA per epoch of each method's picks (mean ± std over seeds), Retrain dashed;
drawn when the spec records them (`base.eval.eval_every`).
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from sweeps.catalogue import CATALOGUE
from sweeps.report import tables
from sweeps.report.analysis import Analysis
from sweeps.report.units import axis_label, hv_text, info
from sweeps.results import EPOCH_METRICS

MARKERS = {"blind": ("D", "diamond", "blind pick"), "oracle": ("*", "star", "oracle pick")}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
# metrics defined from a plotted one: utility_drop = original_test_acc - test_acc
DERIVED = {m.name: (m.drop_of, f"original_{m.drop_of}") for m in CATALOGUE if m.drop_of}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colors(methods) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(methods))}


def axes_of(a: Analysis) -> tuple[tuple[str, str | None], tuple[str, str]]:
    """((x metric, direction), (y metric, direction)); one objective: x is the trial number."""
    o = a.spec.objectives
    if len(o) > 1:
        return (o[0].metric, o[0].direction), (o[1].metric, o[1].direction)
    return ("trial_number", None), (o[0].metric, o[0].direction)


def _label(metric: str, direction: str | None) -> str:
    return "trial" if metric == "trial_number" else axis_label(metric, direction)


def frame(values: np.ndarray, fallback: np.ndarray, bounds=(), metric: str | None = None
          ) -> tuple[float, float]:
    """Axis limits around `values` (the feasible points' means; `fallback` when there are none),
    padded 8%, extended to a constraint bound that lies near, and kept within the metric's natural
    range (a gap never below 0, a percent never past 100). Error bars may cross the frame: a wide
    one must not squash the front."""
    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).any():
        v = np.asarray(fallback, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo or max(abs(hi), 1.0) * 0.1
    lo, hi = lo - 0.08 * span, hi + 0.08 * span
    for b in bounds:  # show a bound that is near the points (within one span)
        if lo - span <= b < lo:
            lo = b - 0.05 * span
        elif hi < b <= hi + span:
            hi = b + 0.05 * span
    i = info(metric) if metric else None
    if i is not None and i.lo is not None and lo < i.lo:
        lo = i.lo - 0.03 * span
    if i is not None and i.hi is not None and hi > i.hi:
        hi = i.hi + 0.03 * span
    return lo, hi


def _bounds(a: Analysis, metric: str) -> list[tuple[float, str, str]]:
    """Constraint bounds on a plotted metric: (value, side that is feasible: 'le'|'ge', label)."""
    out = []
    for c in a.spec.constraints:
        if c.metric == metric:
            if c.max is not None:
                out.append((c.max, "le", f"{c.metric} ≤ {c.max:g}"))
            if c.min is not None:
                out.append((c.min, "ge", f"{c.metric} ≥ {c.min:g}"))
        elif DERIVED.get(c.metric, ("",))[0] == metric:
            base = a.configs.get(DERIVED[c.metric][1])
            if base is None or base.dropna().empty or base.dropna().std(ddof=0) > 1e-9:
                continue  # each configuration has its own Original: no single line
            b0 = float(base.dropna().iloc[0])
            if c.max is not None:
                out.append((b0 - c.max, "ge", f"{c.metric} ≤ {c.max:g}"))
            if c.min is not None:
                out.append((b0 - c.min, "le", f"{c.metric} ≥ {c.min:g}"))
    return out


def _xy(df: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    if col == "trial_number":
        return df[col].to_numpy(dtype=float), np.zeros(len(df))
    std = df[f"{col}_std"] if f"{col}_std" in df else pd.Series(np.nan, index=df.index)
    return df[col].to_numpy(dtype=float), std.to_numpy(dtype=float)


def _bars(std: np.ndarray) -> np.ndarray | None:
    """Error bars, or None where there are none to draw (one seed each): matplotlib builds a
    segment per point even for zero-length bars (half a second for 10,000 points)."""
    std = np.nan_to_num(std)
    return std if std.any() else None


def _scene(a: Analysis) -> dict:
    """What both front plots draw: complete configurations, limits, bounds, front, picks."""
    (xc, xd), (yc, yd) = axes_of(a)
    ok = a.configs[a.configs["state"] == "COMPLETE"] if len(a.configs) else a.configs
    feas = ok[ok["feasible"]] if len(ok) else ok
    fx, _ = _xy(feas, xc)
    fy, _ = _xy(feas, yc)
    ax_, _ = _xy(ok, xc)
    ay_, _ = _xy(ok, yc)
    xb, yb = _bounds(a, xc), _bounds(a, yc)
    drawn, note = _drawn(a, ok)
    return {"x": (xc, xd), "y": (yc, yd), "ok": ok, "drawn": drawn, "note": note,
            "xlim": frame(fx, ax_, [b for b, *_ in xb], xc), "ylim": frame(fy, ay_, [b for b, *_ in yb], yc),
            "xb": xb, "yb": yb, "colors": colors(ok["method"].unique() if len(ok) else [])}


DRAW_MAX = 2000  # configurations drawn as points; above it the dominated ones are a sample


def _drawn(a: Analysis, ok: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The configurations drawn as points, and a line saying what was left out: all of them up to
    DRAW_MAX; above it every front configuration and pick, exactly, and a seeded random sample of
    the others (thousands of overlapping markers say no more, and cost seconds to draw and to
    carry as hover text)."""
    if len(ok) <= DRAW_MAX or not ok.index.is_unique:
        return ok, ""
    must = ok.index.isin(a.front.index)
    for p in a.picks.values():
        must |= ok.index.isin(p.index)
    rest = np.flatnonzero(~must)
    k = min(max(DRAW_MAX - int(must.sum()), 0), len(rest))
    sel = must.copy()
    sel[np.random.default_rng(0).choice(rest, k, replace=False)] = True
    return ok[sel], (f"drawn: every front configuration and pick, and a random {k} of the other "
                     f"{len(rest)} (seeded)")


def _front_line(a: Analysis, xc: str, xd: str | None, yc: str) -> tuple[np.ndarray, np.ndarray]:
    if a.front.empty or xc == "trial_number":
        return np.zeros(0), np.zeros(0)
    fr = a.front.sort_values(xc, ascending=xd != "maximize")
    return fr[xc].to_numpy(dtype=float), fr[yc].to_numpy(dtype=float)


def _pick_points(a: Analysis, xc: str, yc: str):
    """(rule, (matplotlib marker, plotly symbol, label), picks, x, y) per selection rule."""
    for r in a.rules:
        p = a.picks.get(r.name)
        if p is not None and not p.empty:
            yield r, MARKERS.get(r.name, ("s", "square", r.name)), p, _xy(p, xc)[0], _xy(p, yc)[0]


def _edge(v: np.ndarray, lim: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Values clipped into the frame, and -1/0/+1 for below/inside/above it."""
    side = np.where(v < lim[0], -1, np.where(v > lim[1], 1, 0))
    inset = 0.012 * (lim[1] - lim[0])
    return np.clip(v, lim[0] + inset, lim[1] - inset), side


# -- matplotlib ----------------------------------------------------------------------------------

def spread_text(a: Analysis) -> str:
    """What a point and its bars are: "mean ± sample std over seeds" only where some configuration
    has more than one seed; with one seed each, a single draw per configuration, no bars."""
    n = a.configs["n"] if len(a.configs) else pd.Series(dtype=int)
    return "mean ± sample std over seeds" if (n > 1).any() else "one seed per configuration (no error bars)"


# off-frame infeasible points: (side of the frame, the marker drawn there, its words in the legend)
EDGE_MARKERS = [((0, -1), "v", "below"), ((0, 1), "^", "above"), ((-1, 0), "<", "left of"),
                ((1, 0), ">", "right of")]


def front_png(a: Analysis, path: Path) -> None:
    fig = front_figure_mpl(a)
    fig.savefig(path)
    _plt().close(fig)


def front_figure_mpl(a: Analysis):
    """The matplotlib figure of front.png (the caller saves and closes it)."""
    plt = _plt()
    s = _scene(a)
    (xc, xd), (yc, yd) = s["x"], s["y"]
    fig, ax = plt.subplots(figsize=(8.4, 5.4), dpi=120)
    ok, xlim, ylim = s["ok"], s["xlim"], s["ylim"]
    outside = dict.fromkeys([mk for _, mk, _ in EDGE_MARKERS], 0)  # marker -> points drawn with it
    for method, g in s["drawn"].groupby("method", sort=True):
        col = s["colors"][method]
        f, inf = g[g["feasible"]], g[~g["feasible"]]
        x, xe = _xy(f, xc)
        y, ye = _xy(f, yc)
        ax.errorbar(x, y, xerr=_bars(xe), yerr=_bars(ye), fmt="o", ms=5, color=col,
                    ecolor=col, elinewidth=0.8, capsize=2, alpha=0.9, label=method, zorder=3)
        if len(inf):
            x, _ = _xy(inf, xc)
            y, _ = _xy(inf, yc)
            cx, sx = _edge(x, xlim)
            cy, sy = _edge(y, ylim)
            inside = (sx == 0) & (sy == 0)
            ax.scatter(cx[inside], cy[inside], s=30, facecolors="none", edgecolors=col, alpha=0.7, zorder=2)
            for (side_x, side_y), mk, _ in EDGE_MARKERS:
                # below or above the frame: a down or up triangle; only left or right of it: a side one
                sel = ~inside & (((sy == side_y) & (side_y != 0)) |
                                 ((sx == side_x) & (side_x != 0) & (sy == 0)))
                outside[mk] += int(sel.sum())
                ax.scatter(cx[sel], cy[sel], marker=mk, s=26, facecolors="none", edgecolors=col,
                           alpha=0.7, zorder=2)
    fx, fy = _front_line(a, xc, xd, yc)
    if len(fx):
        ax.step(fx, fy, where="post", color="black", lw=1.2, label="Pareto front", zorder=4)
    for r, (mk, _, text), p, x, y in _pick_points(a, xc, yc):
        # the blind pick a large hollow diamond, the oracle pick a filled star drawn inside it: where
        # both rules pick the same configuration, both marks stay visible
        cols = [s["colors"].get(m, "k") for m in p["method"]]
        style = _pick_style(mk)
        if style["hollow"]:
            ax.scatter(x, y, marker=mk, s=style["s"], facecolors="none", edgecolors=cols,
                       linewidths=2.0, zorder=5)
            ax.scatter([], [], marker=mk, s=style["s"] * 0.6, facecolors="none", edgecolors="black",
                       linewidths=1.5, label=f"{text} ({r.short})")
        else:
            ax.scatter(x, y, marker=mk, s=style["s"], c=cols, edgecolors="black", linewidths=0.8, zorder=6)
            ax.scatter([], [], marker=mk, s=style["s"] * 0.6, c="white", edgecolors="black",
                       linewidths=0.8, label=f"{text} ({r.short})")
    _shade_bounds(ax, s["xb"], "x", xlim)
    _shade_bounds(ax, s["yb"], "y", ylim)
    if len(ok) > int(ok["feasible"].sum()):
        ax.scatter([], [], s=30, facecolors="none", edgecolors="grey", label="infeasible (hollow)")
    for _, mk, where in EDGE_MARKERS:  # one entry per marker drawn, with the marker drawn
        if outside[mk]:
            ax.scatter([], [], marker=mk, s=26, facecolors="none", edgecolors="grey",
                       label=f"{outside[mk]} infeasible {where} the frame")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel(_label(xc, xd))
    ax.set_ylabel(_label(yc, yd))
    n_feas = int(ok["feasible"].sum()) if len(ok) else 0
    ax.set_title(f"{a.spec.name}: {n_feas} feasible of {len(ok)} complete configurations\n"
                 f"{spread_text(a)}; hypervolume {hv_text(a.hypervolume)}"
                 + (f"\n{s['note']}" if s["note"] else ""), fontsize=10)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] not in s["colors"])  # methods first
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def _pick_style(marker: str) -> dict:
    """The blind pick (a diamond): large and hollow; any other (the oracle star): filled, smaller."""
    return {"hollow": True, "s": 190} if marker == "D" else {"hollow": False, "s": 120}


def _shade_bounds(ax, bounds, axis: str, lim: tuple[float, float]) -> None:
    for b, side, text in bounds:
        if not lim[0] <= b <= lim[1]:  # beyond the frame: every point shown is on one side of it
            continue
        line = ax.axvline if axis == "x" else ax.axhline
        line(b, color="grey", lw=1, ls="--", zorder=1)
        # shade the infeasible side
        lo, hi = (min(lim[0], b), b) if side == "ge" else (b, max(lim[1], b))
        (ax.axvspan if axis == "x" else ax.axhspan)(lo, hi, color="grey", alpha=0.08, lw=0, zorder=0)
        if axis == "y":
            ax.annotate(f"{text}: feasible {'above' if side == 'ge' else 'below'}", (0.01, b),
                        xycoords=("axes fraction", "data"), fontsize=7, color="dimgrey",
                        va="bottom" if side == "ge" else "top")
        else:
            ax.annotate(f"{text}", (b, 0.99), xycoords=("data", "axes fraction"), fontsize=7,
                        color="dimgrey", rotation=90, ha="right", va="top")


def history_png(a: Analysis, path: Path) -> None:
    plt = _plt()
    objs = a.spec.objectives
    fig, axes = plt.subplots(len(objs), 1, figsize=(8.4, 2.7 * len(objs) + 0.6), dpi=120, squeeze=False,
                             sharex=True)
    ok = a.configs[a.configs["state"] == "COMPLETE"].sort_values("trial_number") if len(a.configs) \
        else a.configs
    cols = colors(ok["method"].unique() if len(ok) else [])
    for ax, o in zip(axes[:, 0], objs):
        if len(ok):
            f = ok[ok["feasible"]]
            lim = frame(f[o.metric], ok[o.metric], [b for b, *_ in _bounds(a, o.metric)], o.metric)
            for method, g in ok.groupby("method", sort=True):
                y, side = _edge(g[o.metric].to_numpy(dtype=float), lim)
                feas = g["feasible"].to_numpy()
                ax.scatter(g["trial_number"][feas], y[feas], s=18, color=cols[method], label=method, zorder=3)
                inf = ~feas
                for sd, mk in ((0, "o"), (-1, "v"), (1, "^")):
                    sel = inf & (side == sd)
                    ax.scatter(g["trial_number"][sel], y[sel], s=18, marker=mk, facecolors="none",
                               edgecolors=cols[method], zorder=2)
            if len(f):
                best = f[o.metric].cummin() if o.direction == "minimize" else f[o.metric].cummax()
                ax.step(f["trial_number"], best, where="post", color="black", lw=1,
                        label="best feasible so far")
            if len(ok) > len(f):
                ax.scatter([], [], s=18, facecolors="none", edgecolors="grey",
                           label="infeasible (hollow; ▲▼ beyond the frame)")
            ax.set_ylim(*lim)
        ax.set_ylabel(axis_label(o.metric, o.direction), fontsize=8)
        ax.grid(alpha=0.3)
    if axes[0, 0].get_legend_handles_labels()[0]:  # nothing complete yet: no legend to draw
        axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes[-1, 0].set_xlabel("trial")
    fig.suptitle(f"{a.spec.name}: objectives by trial (mean over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def epoch_curves(a: Analysis, history: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch UA/RA/TA of each pick, mean and sample std over its seeds: columns rule, method,
    trial, epoch, n, <m>, <m>_std. Empty when the record has none (eval_every off)."""
    need = {"fingerprint", "epoch", "kind", *EPOCH_METRICS}
    if history.empty or not need <= set(history.columns):
        return pd.DataFrame()
    h = history[(history["kind"] == "epoch") & history["unlearn_acc"].notna()]
    out: list[pd.DataFrame] = []
    seen: dict[tuple[str, int], int] = {}  # (method, trial) -> its index in out
    for r in a.rules:
        for _, p in a.picks.get(r.name, pd.DataFrame()).iterrows():
            key = (p["method"], int(p["trial_number"]))
            if key in seen:  # the blind and the oracle rule picked the same configuration
                out[seen[key]]["rule"] = "blind & oracle"
                continue
            fps = set(str(p["fingerprints"]).split(","))
            g = h[h["fingerprint"].isin(fps)].groupby("epoch")
            if not len(g):
                continue
            stats = g[list(EPOCH_METRICS)].agg(["mean", "std"])
            stats.columns = [m if s == "mean" else f"{m}_std" for m, s in stats.columns]
            seen[key] = len(out)
            out.append(stats.reset_index().assign(rule=r.name, method=p["method"],
                                                  trial=int(p["trial_number"]), n=g.size().to_numpy()))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def epochs_png(a: Analysis, history: pd.DataFrame, path: Path) -> bool:
    """Write epochs.png; False (and no file) when there are no per-epoch metrics."""
    curves = epoch_curves(a, history)
    if curves.empty:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), dpi=120)
    cols = colors(curves["method"].unique())
    styles = {"oracle": "-", "blind": "--", "blind & oracle": "-"}
    for ax, m in zip(axes, EPOCH_METRICS):
        for (rule, method), g in curves.groupby(["rule", "method"], sort=True):
            x, y, e = g["epoch"] + 1, g[m], g[f"{m}_std"].fillna(0)
            ax.plot(x, y, styles.get(rule, ":"), marker="o", ms=3, color=cols[method],
                    label=f"{method} ({rule} pick, trial {g['trial'].iloc[0]}, n={g['n'].max()})")
            ax.fill_between(x, y - e, y + e, color=cols[method], alpha=0.15, lw=0)
        ref = a.configs.get(f"retrain_{m}")
        if ref is not None and ref.notna().any():
            ax.axhline(float(ref.mean()), color="black", ls=":", lw=1, label="Retrain")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(axis_label(m, None))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6.5, loc="best")
    fig.suptitle(f"{a.spec.name}: per-epoch metrics of each method's picks "
                 f"({'mean ± std over seeds' if (curves['n'] > 1).any() else 'one seed each'})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# -- plotly --------------------------------------------------------------------------------------

def _hover_metrics(a: Analysis) -> list[str]:
    return list(dict.fromkeys([o.metric for o in a.spec.objectives] + [c.metric for c in a.spec.constraints]
                              + ["unlearn_acc", "retain_acc", "test_acc", "mia_efficacy", "avg_gap"]))


def hover_text(r: dict, a: Analysis, shown: list[str] | None = None) -> str:
    """A configuration's hover box, from one row of `configs` as a dict."""
    lines = [f"<b>trial {int(r['trial_number'])}: {html.escape(str(r['method']))}</b>"
             + ("" if r["feasible"] else " (infeasible)"),
             html.escape(tables.params_text(r["params_json"], a.spec, r["method"]))
             or "(no searched parameters)",
             f"n = {int(r['n'])} seed(s)"]
    for m in shown or _hover_metrics(a):
        if m in r and pd.notna(r[m]):
            i = info(m)
            lines.append(f"{i.label}: {tables.fmt(r[m], r.get(f'{m}_std'))}{' ' + i.unit if i.unit else ''}")
    return "<br>".join(lines)


def hover_texts(df: pd.DataFrame, a: Analysis) -> list[str]:
    """`hover_text` of every row, from plain dicts of the columns it shows (indexing a pandas row
    costs some 100x more, and a sweep of 10,000 configurations has as many points)."""
    shown = _hover_metrics(a)
    cols = [c for c in df.columns if c in ("trial_number", "method", "feasible", "params_json", "n")
            or c in shown or c.removesuffix("_std") in shown]
    return [hover_text(r, a, shown) for r in df[cols].to_dict("records")]


def front_figure(a: Analysis):
    import plotly.graph_objects as go

    s = _scene(a)
    (xc, xd), (yc, yd) = s["x"], s["y"]
    fig = go.Figure()
    for method, g in s["drawn"].groupby("method", sort=True):
        col = s["colors"][method]
        for feasible in (True, False):
            part = g[g["feasible"] == feasible]
            if part.empty:
                continue
            x, xe = _xy(part, xc)
            y, ye = _xy(part, yc)
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="markers", name=method if feasible else f"{method} (infeasible)",
                legendgroup=method, marker=dict(color=col if feasible else "rgba(0,0,0,0)", size=9,
                                                line=dict(color=col, width=1.5)),
                error_x=dict(type="data", array=np.nan_to_num(xe), visible=bool(feasible), thickness=1),
                error_y=dict(type="data", array=np.nan_to_num(ye), visible=bool(feasible), thickness=1),
                text=hover_texts(part, a), hovertemplate="%{text}<extra></extra>"))
    fx, fy = _front_line(a, xc, xd, yc)
    if len(fx):
        fig.add_trace(go.Scatter(x=fx, y=fy, mode="lines", line=dict(color="black", width=1.5, shape="hv"),
                                 name="Pareto front", hoverinfo="skip"))
    for r, (_, symbol, text), p, x, y in _pick_points(a, xc, yc):
        cols = [s["colors"].get(m, "black") for m in p["method"]]
        hollow = symbol == "diamond"  # as in front.png: a coinciding star shows inside the diamond
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers", name=f"{text} ({r.short})",
            marker=dict(symbol="diamond-open" if hollow else symbol, size=20 if hollow else 14,
                        color=cols, line=dict(color=cols if hollow else "black", width=2.5 if hollow else 1)),
            text=hover_texts(p, a), hovertemplate="%{text}<extra></extra>"))
    for bounds, axis in ((s["xb"], "x"), (s["yb"], "y")):
        lim = s["xlim"] if axis == "x" else s["ylim"]
        for b, side, text in bounds:
            lo, hi = (min(lim[0], b), b) if side == "ge" else (b, max(lim[1], b))
            if axis == "x":
                fig.add_vrect(x0=lo, x1=hi, fillcolor="grey", opacity=0.08, line_width=0)
                fig.add_vline(x=b, line=dict(color="grey", dash="dash", width=1), annotation_text=text)
            else:
                fig.add_hrect(y0=lo, y1=hi, fillcolor="grey", opacity=0.08, line_width=0)
                fig.add_hline(y=b, line=dict(color="grey", dash="dash", width=1),
                              annotation_text=f"{text}: feasible {'above' if side == 'ge' else 'below'}",
                              annotation_position="bottom left" if side == "le" else "top left")
    fig.update_layout(
        title=f"{a.spec.name}: trade-off, {spread_text(a)} (hypervolume {hv_text(a.hypervolume)})"
        + (f"<br><sup>{s['note']}</sup>" if s["note"] else ""),
        xaxis=dict(title=_label(xc, xd), range=list(s["xlim"])),
        yaxis=dict(title=_label(yc, yd), range=list(s["ylim"])),
        template="plotly_white", legend=dict(font=dict(size=11)), hoverlabel=dict(align="left"),
        width=1000, height=620)
    return fig


def front_html(a: Analysis) -> str:
    """The interactive page: the plotly figure (plotly.js inline: no network), the front table
    and the field's table."""
    import plotly.io as pio

    figure = pio.to_html(front_figure(a), include_plotlyjs=True, full_html=False,
                         config={"displaylogo": False, "responsive": True})
    front = tables.front_table(a.front, a.spec)
    cells, bold = tables.paper_cells(a.table)
    if not cells.empty:
        cells = cells.where(~bold, "<b>" + cells + "</b>")
    name = html.escape(a.spec.name)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{name}: trade-off</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1200px}}
table{{border-collapse:collapse;font-size:13px}}
td,th{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}}</style></head><body>
<h2>{name}: trade-off ({a.spec.selection_rule} selection)</h2>
<p>Hover a point for its configuration and metrics; click a legend entry to hide it; drag to zoom,
double-click to see every point. The axes open on the feasible configurations; infeasible ones are
hollow, and those beyond the first frame show when you zoom out. Hollow diamond: each method's blind
pick; star: its oracle pick (inside the diamond when both rules pick the same configuration).</p>
{figure}
<h3>Pareto front</h3>{front.to_html(index=False, border=0) if len(front) else "<p>(empty front)</p>"}
<h3>The field's table</h3><p>{html.escape(tables.caption(a))}</p>
{cells.to_html(border=0, escape=False) if not cells.empty else "<p>(no complete configuration yet)</p>"}
</body></html>
"""


# -- several runs --------------------------------------------------------------------------------

def _attained(front: pd.DataFrame, xc: str, xd: str, yc: str, xlim) -> tuple[np.ndarray, np.ndarray]:
    """The front's staircase, extended to the frame's worse x edge (what it dominates lies on the
    worse side of it)."""
    fr = front.sort_values(xc, ascending=xd != "maximize")
    x, y = fr[xc].to_numpy(dtype=float), fr[yc].to_numpy(dtype=float)
    if not len(x):
        return x, y
    edge = xlim[1] if xd != "maximize" else xlim[0]
    return np.append(x, edge), np.append(y, y[-1])


def _compare_scene(c) -> dict:
    o = c.analyses[0].spec.objectives
    (xc, xd), (yc, yd) = (o[0].metric, o[0].direction), (o[1].metric, o[1].direction)
    feas = [a.configs[a.configs["feasible"]] for a in c.analyses]
    both = pd.concat(feas) if feas else pd.DataFrame()
    fx = both[xc].to_numpy(dtype=float) if len(both) else np.zeros(0)
    fy = both[yc].to_numpy(dtype=float) if len(both) else np.zeros(0)
    return {"x": (xc, xd), "y": (yc, yd), "xlim": frame(fx, fx, metric=xc), "ylim": frame(fy, fy, metric=yc),
            "colors": {lab: PALETTE[i % len(PALETTE)] for i, lab in enumerate(c.labels)}}


def _compare_runs(c, s: dict):
    """Per run: label, analysis, colour, feasible configurations, (x, xerr), (y, yerr), staircase."""
    (xc, xd), (yc, _) = s["x"], s["y"]
    for label, a in zip(c.labels, c.analyses):
        f = a.configs[a.configs["feasible"]]
        yield (label, a, s["colors"][label], f, _xy(f, xc), _xy(f, yc),
               _attained(a.front, xc, xd, yc, s["xlim"]))


def _ref_text(c) -> str:
    objs = c.analyses[0].spec.objectives
    return ", ".join(f"{o.metric}={x:.4g}" for o, x in zip(objs, c.reference_point))


def compare_png(c, path: Path) -> None:
    """Fronts of several runs overlaid, each with the region it dominates shaded and its
    hypervolume (at the shared reference point) in the legend; one objective: best so far by trial."""
    plt = _plt()
    objs = c.analyses[0].spec.objectives
    fig, ax = plt.subplots(figsize=(8.4, 5.4), dpi=120)
    if len(objs) == 1:
        o = objs[0]
        for label, a in zip(c.labels, c.analyses):
            f = a.configs[a.configs["feasible"]].sort_values("trial_number")
            best = f[o.metric].cummin() if o.direction == "minimize" else f[o.metric].cummax()
            ax.step(f["trial_number"], best, where="post", label=f"{label}: hypervolume {hv_text(a.hypervolume)}")
        ax.set_xlabel("trial")
        ax.set_ylabel(axis_label(o.metric, o.direction))
    else:
        s = _compare_scene(c)
        (xc, xd), (yc, yd) = s["x"], s["y"]
        for label, a, col, _f, (x, xe), (y, ye), (sx, sy) in _compare_runs(c, s):
            ax.errorbar(x, y, xerr=np.nan_to_num(xe), yerr=np.nan_to_num(ye), fmt="o", ms=3.5, color=col,
                        elinewidth=0.6, capsize=1.5, alpha=0.45)
            if len(sx):
                ax.step(sx, sy, where="post", color=col, lw=1.6,
                        label=f"{label}: front of {len(a.front)}, hypervolume {hv_text(a.hypervolume)}")
                far = s["ylim"][0] if yd == "maximize" else s["ylim"][1]
                ax.fill_between(sx, sy, far, step="post", color=col, alpha=0.10, lw=0)
        ax.set_xlim(*s["xlim"])
        ax.set_ylim(*s["ylim"])
        ax.set_xlabel(axis_label(xc, xd))
        ax.set_ylabel(axis_label(yc, yd))
    ax.set_title(f"fronts of {len(c.labels)} run(s); hypervolume at the shared reference point "
                 f"({_ref_text(c)})", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no run has a feasible configuration yet: no legend
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def compare_html(c) -> str:
    import plotly.graph_objects as go
    import plotly.io as pio

    objs = c.analyses[0].spec.objectives
    fig = go.Figure()
    if len(objs) > 1:
        s = _compare_scene(c)
        (xc, xd), (yc, yd) = s["x"], s["y"]
        for label, a, col, f, (x, xe), (y, ye), (sx, sy) in _compare_runs(c, s):
            fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name=f"{label}: feasible", legendgroup=label,
                                     marker=dict(color=col, size=7, opacity=0.6),
                                     error_x=dict(type="data", array=np.nan_to_num(xe), thickness=1),
                                     error_y=dict(type="data", array=np.nan_to_num(ye), thickness=1),
                                     text=hover_texts(f, a),
                                     hovertemplate="%{text}<extra>" + html.escape(label) + "</extra>"))
            fig.add_trace(go.Scatter(x=sx, y=sy, mode="lines", line=dict(color=col, width=2, shape="hv"),
                                     legendgroup=label, hoverinfo="skip",
                                     name=f"{label}: front, hypervolume {hv_text(a.hypervolume)}"))
        fig.update_layout(xaxis=dict(title=axis_label(xc, xd), range=list(s["xlim"])),
                          yaxis=dict(title=axis_label(yc, yd), range=list(s["ylim"])))
    fig.update_layout(title=f"hypervolume at the shared reference point ({_ref_text(c)})",
                      template="plotly_white", width=1000, height=620, hoverlabel=dict(align="left"))
    figure = pio.to_html(fig, include_plotlyjs=True, full_html=False, config={"displaylogo": False})
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>compare</title></head>'
            f'<body style="font-family:sans-serif;margin:1.5em">{figure}'
            f'{c.table.to_html(index=False, border=0)}</body></html>\n')
