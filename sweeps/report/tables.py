"""Tables for people and papers, from the numbers `sweeps.report.analysis` computes: the field's table
(SalUn's Table 1 layout: mean ± sample std over seeds, the gap to Retrain in parentheses, Original
and Retrain rows, best in bold, n per row, blind and oracle selection side by side) as markdown
(`DataFrame.to_markdown`), LaTeX (one booktabs table per selection rule, sized for a one-column
article), CSV and JSON; the front
table; our numbers beside a paper's. Formatting only: nothing here reads the record.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from sweeps.catalogue import CATALOGUE
from sweeps.report.analysis import Analysis
from sweeps.report.units import info
from sweeps.spec import REFERENCE_DIR, SweepSpec

# the field's table: (column label, metric), in catalogue order
FIELD = [(m.table, m.name) for m in CATALOGUE if m.table]
REFERENCE_ROWS = ("Retrain", "Original")
GROUP = {"blind": "Blind selection", "oracle": "Oracle selection"}
FORMATS = ("md", "latex", "csv", "json")


# -- cells ---------------------------------------------------------------------------------------

def fmt(mean, std=math.nan, gap=math.nan, digits: int = 2, latex: bool = False) -> str:
    """`94.21 ± 0.33 (0.45)`: mean, sample std (left out for n=1), gap to Retrain; — when unknown."""
    if mean is None or not math.isfinite(float(mean)):
        return "--" if latex else "—"
    s = f"{float(mean):.{digits}f}"
    if std is not None and math.isfinite(float(std)):
        s += (r"$\pm$" if latex else " ± ") + f"{float(std):.{digits}f}"
    if gap is not None and math.isfinite(float(gap)):
        s += f" ({float(gap):.{digits}f})"
    return s


def _best(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Bold marks within one selection group: among the methods (two or more), the smallest gap to
    Retrain for UA/RA/TA/MIA (or, with no Retrain, the better direction where the field has one);
    the smallest avg. gap and run time."""
    is_method = ~rows["method"].isin(REFERENCE_ROWS)
    none = pd.Series(False, index=rows.index)
    if is_method.sum() < 2:
        return none
    if info(metric).gap and rows.loc[is_method, f"{metric}_gap"].notna().any():
        score = rows[f"{metric}_gap"]
    elif info(metric).better == "maximize":
        score = -rows[metric]
    elif info(metric).better == "minimize":
        score = rows[metric]
    else:
        return none
    score = score.where(is_method)
    return (score == score.min()) & score.notna()


def paper_cells(table: pd.DataFrame, latex: bool = False, trials: bool = True
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells, bold): one row per method (Retrain, Original, then the methods), columns grouped by
    selection rule (blind, oracle), each group the FIELD columns (UA, RA, TA, MIA, Avg. gap,
    Time (s)), n[, trial]."""
    if table.empty:
        return pd.DataFrame(), pd.DataFrame()
    order = [m for m in REFERENCE_ROWS if m in set(table["method"])] + \
        sorted(set(table["method"]) - set(REFERENCE_ROWS))
    cells, bold = {}, {}
    for sel, rows in table.groupby("selection", sort=False):
        rows = rows.set_index("method", drop=False).reindex(order)
        group = GROUP.get(sel, sel)
        for label, m in FIELD:
            gap = rows[f"{m}_gap"] if f"{m}_gap" in rows else pd.Series(math.nan, index=rows.index)
            cells[(group, label)] = [fmt(a, s, g, latex=latex) for a, s, g in
                                     zip(rows[m], rows[f"{m}_std"], gap)]
            bold[(group, label)] = _best(rows.assign(method=rows.index), m).tolist()
        cells[(group, "n")] = [str(int(n)) if pd.notna(n) else "" for n in rows["n"]]
        bold[(group, "n")] = [False] * len(rows)
        if "rank" in rows:  # the separation from the best method (analysis.separation)
            cells[(group, SEP_LABEL)] = [separation_cell(r) for _, r in rows.iterrows()]
            cells[(group, "rank")] = [rank_cell(r) for _, r in rows.iterrows()]
            bold[(group, SEP_LABEL)] = bold[(group, "rank")] = [False] * len(rows)
        if trials:
            cells[(group, "trial")] = [str(int(t)) if pd.notna(t) else "" for t in rows["trial"]]
            bold[(group, "trial")] = [False] * len(rows)
    cols = pd.MultiIndex.from_tuples(list(cells), names=["", "Method"])
    return (pd.DataFrame(list(zip(*cells.values())), index=order, columns=cols),
            pd.DataFrame(list(zip(*bold.values())), index=order, columns=cols))


SEP_LABEL = "Δ avg. gap vs best [95% CI]"


def separation_cell(r) -> str:
    """`+0.88 [0.12, 1.64]`: a method's avg. gap minus the best method's, paired by seed, with the
    95% t-interval of that difference; `best` for the best; `+0.88 (n = 1)` when no interval exists."""
    if pd.isna(r.get("rank")):
        return ""
    if bool(r.get("sep_best")):
        return "best"
    if pd.isna(r["sep_lo"]):
        if pd.isna(r["sep_diff"]):
            return "no common seed"
        return f"{r['sep_diff']:+.2f} (n = {int(r['sep_n'])} paired)"
    return f"{r['sep_diff']:+.2f} [{r['sep_lo']:.2f}, {r['sep_hi']:.2f}]"


def rank_cell(r) -> str:
    """`1`, or `1=` when the data cannot separate it from another row of the same rank;
    ` (under-searched)` when its tuned result is worse than a method its objective contains."""
    if pd.isna(r.get("rank")):
        return ""
    text = f"{int(r['rank'])}" + ("=" if bool(r["tie"]) else "")
    return text + (" (under-searched)" if r.get("under_searched") else "")


# -- formats -------------------------------------------------------------------------------------

def to_markdown(table: pd.DataFrame) -> str:
    cells, bold = paper_cells(table)
    if cells.empty:
        return "_(no complete configuration yet)_\n"
    cells = cells.where(~bold, "**" + cells + "**")
    groups = cells.columns.get_level_values(0).unique()
    cells.columns = [f"{label} ({g.split()[0].lower()})" if len(groups) > 1 else label
                     for g, label in cells.columns]
    notes = [n for n in (evidence_note(table), separation_note(table)) if n]
    return cells.rename_axis("method").to_markdown() + "\n" + "".join(f"\n{n}\n" for n in notes)


def separation_note(table: pd.DataFrame) -> str:
    """What the Δ and rank columns mean, and every under-searched row with its reason."""
    if "rank" not in table or table["rank"].isna().all():
        return ""
    flags = [f"{r['method']} ({GROUP.get(r['selection'], r['selection']).split()[0].lower()}): "
             f"{r['under_searched']}" for _, r in table.iterrows()
             if isinstance(r.get("under_searched"), str) and r["under_searched"]]
    return ("_Δ avg. gap vs best: each method's avg. gap minus the best method's, paired by seed (each "
            "seed has its own Original and Retrain), with the 95% Student-t interval of the paired "
            "differences; rank: 1 + the methods it is worse than beyond that interval, `=` where the "
            "data cannot separate it from another (docs/metrics.md)._"
            + "".join(f"\n\n**Under-searched**: {f}." for f in flags))


def evidence_note(table: pd.DataFrame) -> str:
    """One line under the field's table when its method rows are single seeds (not yet evidence)
    or rest on different numbers of seeds (marked, never silently side by side); "" otherwise."""
    rows = table[~table["method"].isin(REFERENCE_ROWS)] if len(table) else table
    ns = sorted({int(n) for n in rows["n"].dropna()}) if len(rows) else []
    if ns == [1]:
        return "_Every row is a single seed (n = 1): not yet evidence; `unlearn-sweep replicate` adds seeds._"
    if len(ns) > 1:
        ones = sorted({str(m) for m, n in zip(rows["method"], rows["n"]) if pd.notna(n) and int(n) == 1})
        return (f"_Rows rest on different numbers of seeds (n = {', '.join(map(str, ns))}); "
                + (f"{', '.join(ones)}: a single seed, not yet evidence; " if ones else "")
                + "compare rows of equal n._")
    return ""


def to_latex(table: pd.DataFrame, captions: dict[str, str] | None = None, label: str | None = None) -> str:
    """The field's table as LaTeX that fits a one-column article (booktabs; nothing else): one
    `table` per selection rule (both side by side were 15 columns, 367pt too wide), 8 columns each
    (Method, UA, RA, TA, MIA, Avg. gap, Time (s), n), each cell the mean with the sample std as a
    subscript, the gap to Retrain in parentheses on a line below, bold = `_best`, Retrain and
    Original set apart by a rule. `captions`: selection rule -> caption (LaTeX); `label` gets
    `-<rule>` appended."""
    if table.empty:
        return "% no complete configuration yet\n"
    out = [LATEX_NOTE]
    for sel, rows in table.groupby("selection", sort=False):
        out.append(_latex_one(rows, (captions or {}).get(sel), f"{label}-{sel}" if label else None))
    return "\n".join(out)


LATEX_NOTE = ("% unlearn-sweep: the field's table, one table per selection rule; needs "
              "\\usepackage{booktabs} and \\usepackage{graphicx}\n")


def _latex_one(rows: pd.DataFrame, caption: str | None, label: str | None) -> str:
    order = [m for m in REFERENCE_ROWS if m in set(rows["method"])] + \
        sorted(set(rows["method"]) - set(REFERENCE_ROWS))
    rows = rows.set_index("method", drop=False).reindex(order)
    bold = {m: _best(rows.assign(method=rows.index), m) for _, m in FIELD}
    lines = [r"\begin{table}", r"\centering", r"\footnotesize", r"\setlength{\tabcolsep}{2.5pt}"]
    if caption:
        lines.append(rf"\caption{{{caption}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    # a typical table is narrower than the line; one with very long method names or huge numbers is
    # scaled down to the line's width instead of running into the margin
    lines += [r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
              r"\begin{tabular}{l" + "r" * (len(FIELD) + 1) + "}", r"\toprule",
              " & ".join(["Method", *(latex_escape(lab) for lab, _ in FIELD), "$n$"]) + r" \\", r"\midrule"]
    for i, (name, r) in enumerate(rows.iterrows()):
        if i and name not in REFERENCE_ROWS and rows.index[i - 1] in REFERENCE_ROWS:
            lines[-1] = r"\midrule"  # in place of the space after the references
        cells = [latex_escape(str(name))]
        gaps = [""]
        for _, m in FIELD:
            cells.append(_latex_cell(r[m], r[f"{m}_std"], bool(bold[m].loc[name]), _digits(m, r[m])))
            g = r.get(f"{m}_gap", math.nan)
            gaps.append(f"({g:.2f})" if name != "Retrain" and g is not None and pd.notna(g) else "")
        cells.append(str(int(r["n"])) if pd.notna(r["n"]) else "")
        lines.append(" & ".join(cells) + r" \\")
        if any(gaps):
            lines.append(" & ".join(gaps + [""]) + r" \\")
        lines.append(r"\addlinespace[2pt]")
    if lines[-1].startswith(r"\addlinespace"):
        lines.pop()
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _digits(metric: str, mean) -> int:
    """Decimals: 2 for percentages and gaps (as the field prints them); a run time keeps about
    three significant digits (1234 s, 56.7 s, 1.23 s), which is all its noise allows."""
    if metric != "runtime_s" or mean is None or pd.isna(mean):
        return 2
    return 0 if abs(mean) >= 100 else 1 if abs(mean) >= 10 else 2


def _latex_cell(mean, std, bold: bool, digits: int = 2) -> str:
    r"""`94.21$_{\pm0.33}$` (the std left out for n = 1), bold mean when `bold`, -- when unknown."""
    if mean is None or pd.isna(mean) or not math.isfinite(float(mean)):
        return "--"
    s = f"{float(mean):.{digits}f}"
    s = rf"\textbf{{{s}}}" if bold else s
    if std is not None and pd.notna(std) and math.isfinite(float(std)):
        s += rf"$_{{\pm{float(std):.{digits}f}}}$"
    return s


def latex_escape(text: str) -> str:
    out = text
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"), ("|", r"$|$"),
                 ("×", r"$\times$"), ("—", "---"), ("−", "-")):
        out = out.replace(a, b)
    return out


def caption(a: Analysis) -> str:
    rules = "; ".join(f"{GROUP[r.name].lower()}: {r.text}" for r in a.rules)
    return (f"Sweep {a.spec.name}: mean ± sample std over n seeds (per row); in parentheses the "
            f"absolute gap to Retrain's mean; bold: closest to Retrain (avg. gap, time: smallest) among "
            f"the methods. Each method's configuration is picked by the {rules}. UA, RA, TA, MIA in %, "
            f"time in seconds of the unlearning procedure.")


def latex_caption(a: Analysis, rule) -> str:
    """The caption of one selection rule's LaTeX table."""
    return latex_escape(
        f"Sweep {a.spec.name}, {GROUP[rule.name].lower()} (each method's configuration: {rule.text}). "
        "Mean with the sample std over n seeds as a subscript (none for n = 1); in parentheses below, "
        "the absolute gap to Retrain's mean; bold: closest to Retrain (avg. gap, time: smallest) "
        "among the methods. UA, RA, TA, MIA in %, time in seconds of the unlearning procedure."
        + (" " + evidence_note(a.table).strip("_").split(";")[0] + "." if evidence_note(a.table) else ""))


def table_records(table: pd.DataFrame) -> list[dict]:
    return [{k: plain(v) for k, v in r.items()} for r in table.to_dict(orient="records")]


def export(a: Analysis, fmt_: str) -> str:
    """The field's table as `md`, `latex`, `csv` (tidy: one row per selection x method, numeric)
    or `json` ({sweep, selection rules, rows})."""
    if fmt_ == "md":
        return to_markdown(a.table)
    if fmt_ == "latex":
        return to_latex(a.table, captions={r.name: latex_caption(a, r) for r in a.rules},
                        label=f"tab:{a.spec.name}")
    if fmt_ == "csv":
        return a.table.to_csv(index=False)
    if fmt_ == "json":
        return json.dumps({"sweep": a.spec.name, "selection_rule": a.spec.selection_rule,
                           "rules": {r.name: r.text for r in a.rules},
                           "rows": table_records(a.table)}, indent=2) + "\n"
    raise ValueError(f"unknown format {fmt_!r}; known: {', '.join(FORMATS)}")


def plain(v):
    """A JSON-safe scalar: numpy numbers to Python, NaN and inf to None."""
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


# -- other tables --------------------------------------------------------------------------------

def markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False) + "\n" if len(df) else "_(none)_\n"


def text_table(df: pd.DataFrame) -> str:
    """Plain aligned columns for a terminal."""
    return df.to_markdown(index=False, tablefmt="plain") if len(df) else "(empty front)"


def params_text(params_json: str, spec: SweepSpec, method: str) -> str:
    """The searched parameters of a configuration, `lr=0.0123, epsilon=0.05`."""
    p = json.loads(params_json)
    searched = spec.methods[method].space if method in spec.methods else p
    return ", ".join(f"{k}={_short(p[k])}" for k in searched if k in p and
                     (method not in spec.methods or spec.methods[method].space[k].type != "fixed"))


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def interval(mean, half) -> str:
    """`[1.84, 4.08]`: the 95% t-interval of a mean (`mean` ± `half`); — for n = 1 (none)."""
    if mean is None or half is None or pd.isna(mean) or pd.isna(half) or not math.isfinite(float(half)):
        return "—"
    return f"[{float(mean) - float(half):.2f}, {float(mean) + float(half):.2f}]"


def front_table(front: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """The front, one row per configuration: trial, method, n (its seeds), parameters, then per
    objective and constraint `mean ± sample std` and its 95% t-interval (— for n = 1; the interval
    columns are left out when no row has one)."""
    rows = []
    for _, r in front.iterrows():
        row = {"trial": int(r["trial_number"]), "method": r["method"], "n": int(r["n"]),
               "params": params_text(r["params_json"], spec, r["method"])}
        for m in dict.fromkeys([o.metric for o in spec.objectives] + [c.metric for c in spec.constraints]):
            row[m] = fmt(r.get(m), r.get(f"{m}_std"))
            row[f"{m} 95% CI"] = interval(r.get(m), r.get(f"{m}_ci"))
        rows.append(row)
    out = pd.DataFrame(rows)
    # a front of single seeds has no interval: its columns would be all dashes
    return out.drop(columns=[c for c in out.columns if c.endswith(" 95% CI") and (out[c] == "—").all()])


REPLICATION_TEXT = ("Each replicated configuration: what the search saw (the mean over its search "
                    "seeds) beside its mean ± sample std over all its seeds (n) and the 95% t-interval; "
                    "feasible on which means, and whether it is on the front now.")


def replication_table(a: Analysis) -> pd.DataFrame:
    """`analysis.replication` for people: trial, method, n (search -> all), per objective and
    constraint `search` and `replicated` (mean ± std [95% CI]), feasible (search -> now), on front."""
    from sweeps.report.analysis import replication

    r = replication(a)
    rows = []
    metrics = dict.fromkeys([o.metric for o in a.spec.objectives] + [c.metric for c in a.spec.constraints])
    for _, x in r.iterrows():
        row = {"trial": int(x["trial_number"]), "method": x["method"],
               "n": f"{int(x['n_search'])} -> {int(x['n'])}"}
        for m in metrics:
            row[f"{m} search"] = fmt(x[f"{m}_search"])
            row[f"{m} replicated"] = fmt(x[m], x[f"{m}_std"]) + " " + interval(x[m], x[f"{m}_ci"])
        row["feasible"] = f"{_yes(x['feasible_search'])} -> {_yes(x['feasible'])}"
        row["on front"] = _yes(x["on_front"])
        rows.append(row)
    return pd.DataFrame(rows)


def _yes(v) -> str:
    return "yes" if bool(v) else "no"


# -- the paper's numbers beside ours -------------------------------------------------------------

# metric -> its column in the reference CSVs (sweeps/reference/); their run time is `rte_min`, the
# papers' "RTE" column: minutes of unlearning, our runtime_s / 60 (not DeepUnlearn's rte)
PAPER_COLS = {"unlearn_acc": "ua", "retain_acc": "ra", "test_acc": "ta", "mia_efficacy": "mia_efficacy",
              "avg_gap": "avg_gap"}


def read_reference(table: str, scenario: str) -> pd.DataFrame:
    df = pd.read_csv(REFERENCE_DIR / table, comment="#")
    return df[df["scenario"] == scenario].reset_index(drop=True)


def reference_citation(table: str) -> list[str]:
    return [ln.lstrip("# ").rstrip() for ln in (REFERENCE_DIR / table).read_text().splitlines()
            if ln.startswith("#")]


def beside_paper(a: Analysis) -> pd.DataFrame:
    """Ours (the sweep's own rule: the oracle group of an oracle sweep, as the papers tuned) beside
    the paper's mean ± std, per metric; the run time in minutes as the papers report it."""
    assert a.spec.reference is not None  # called for a spec with a reference (summary.py)
    paper = read_reference(a.spec.reference.table, a.spec.reference.scenario)
    ours = a.table[a.table["selection"] == a.spec.selection_rule]
    rows = []
    for _, r in ours.iterrows():
        key = "retrain" if r["method"] == "Retrain" else str(r["method"])
        p = paper[paper["method"] == key]
        row = {"method": r["method"], "n": r["n"]}
        for m, col in PAPER_COLS.items():
            lab = info(m).table
            row[f"{lab} ours"] = fmt(r[m], r[f"{m}_std"])
            row[f"{lab} paper"] = (fmt(p.iloc[0][col], p.iloc[0].get(f"{col.split('_')[0]}_std", math.nan))
                                   if len(p) else "")
        row["Time ours (min)"] = fmt(r["runtime_s"] / 60, r["runtime_s_std"] / 60)
        row["Time paper (min)"] = fmt(p.iloc[0]["rte_min"]) if len(p) else ""
        rows.append(row)
    return pd.DataFrame(rows)
