"""Trade-off analysis of a finished (or running) sweep, from its Parquet record alone (no data set,
no Ray, no GPU).

Configurations. Runs are grouped by configuration (method + full parameters, `params_json`); the
search rows and the rows `replicate` adds on more seeds (phase "replicate") group together. A
configuration is COMPLETE when every seed of the spec's search phase has a COMPLETE run; its `n` is
the number of distinct (split_seed, train_seed, unlearn_seed) with a COMPLETE run (replicated
configurations have more), and its metrics are the mean and the SAMPLE standard deviation (ddof=1,
as papers report; NaN for n=1) over those seeds. Feasible = complete and every constraint of the
spec holds on the means (the rule the driver tells Optuna).

Selection. The front is the Pareto front of the feasible configurations; its hypervolume is taken
at a fixed reference point (`sweeps.report.units.default_reference`: the worst end of each
objective's natural range), so sweeps compare. Two picks per method, side by side in the field's table:
  blind:  the best by a metric that never looks at Retrain (`forget_val_gap`, minimised) among the
          configurations feasible under the spec's blind constraints; when the sweep's own rule is
          blind, its rule;
  oracle: the sweep's own rule when it is oracle (Pareto layer, then the objectives in order; or the
          spec's `select` metric); when the sweep is blind, the smallest avg_gap (needs Retrain).
`top_configs` ranks by the sweep's own rule, for `replicate` and `audit`.

The numbers only: sweeps.report.tables and .plots format them, sweeps.report.summary writes them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sweeps.catalogue import CATALOGUE, get
from sweeps.report.units import default_reference
from sweeps.results import METRIC_COLUMNS, REFERENCE_METRICS, read_results
from sweeps.spec import Objective, SweepSpec

SEEDS = ["split_seed", "train_seed", "unlearn_seed"]
KEY = ["method", "params_json"]
# the field's table: its metrics (catalogue order) and those shown with their gap to Retrain
FIELD_METRICS = tuple(m.name for m in CATALOGUE if m.table)
GAPPED = tuple(m.name for m in CATALOGUE if m.gap)
BLIND_PICK = Objective(metric="forget_val_gap", direction="minimize")
ORACLE_PICK = Objective(metric="avg_gap", direction="minimize")


# -- geometry ------------------------------------------------------------------------------------

def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Non-dominated rows of `points` (all objectives minimised; NaN counts as +inf). Points are
    visited in lexicographic order, so a point can only be dominated by one already kept: the cost
    is rows x front size."""
    pts = np.where(np.isnan(points), np.inf, np.asarray(points, dtype=float))
    keep = np.zeros(len(pts), dtype=bool)
    kept: list[int] = []
    for i in np.lexsort(pts.T[::-1]) if len(pts) else []:
        p = pts[i]
        if kept:
            f = pts[kept]
            if np.any(np.all(f <= p, axis=1) & np.any(f < p, axis=1)):
                continue
        keep[i] = True
        kept.append(i)
    return keep


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Volume dominated by `points` (minimised) and bounded by `ref`; exact, by slicing on the last
    objective (fast enough for the fronts of a sweep: tens of points, a few objectives). Tested
    against Optuna's own implementation."""
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


def signs(objectives) -> np.ndarray:
    """+1 for a minimised objective, -1 for a maximised one: `values * signs` is minimised."""
    return np.array([1.0 if o.direction == "minimize" else -1.0 for o in objectives])


def objective_matrix(df: pd.DataFrame, objectives) -> np.ndarray:
    """The objectives' mean columns in their own units (rows = configurations)."""
    if not len(df):
        return np.zeros((0, len(objectives)))
    return np.stack([df[o.metric].to_numpy(dtype=float) for o in objectives], axis=1)


def front_hypervolume(front: pd.DataFrame, objectives, ref: list[float]) -> float:
    """Hypervolume of a front at `ref` (both in the objectives' own units and directions)."""
    s = signs(objectives)
    return hypervolume(objective_matrix(front, objectives) * s, np.asarray(ref, dtype=float) * s)


# -- per configuration ---------------------------------------------------------------------------

_ALL_METRICS = [*METRIC_COLUMNS, *(m.name for m in CATALOGUE if m.column == "run"),
                *(f"{r}_{m}" for r in ("original", "retrain") for m in REFERENCE_METRICS)]


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """The record's metric columns in `runs`: the metric block, the run's own (runtime_s), then
    Original's and Retrain's."""
    run = [m.name for m in CATALOGUE if m.column == "run"]
    refs = [f"{r}_{m}" for r in ("original", "retrain") for m in REFERENCE_METRICS]
    return [m for m in dict.fromkeys((*METRIC_COLUMNS, *run, *refs)) if m in runs]


def per_config(runs: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """One row per configuration (see the module docstring): method, params_json, trial_number,
    state, error, n (complete seeds), n_runs, replicated, fingerprints (comma-separated, of its
    complete runs), `<m>` and `<m>_std` for every metric, `p_<param>`, feasible. Vectorised
    (groupby/agg): a 10,000-run record takes well under a second."""
    cols = ["method", "params_json", "trial_number", "state", "error", "n", "n_runs", "replicated",
            "fingerprints", "feasible"]
    if runs.empty:  # no run has landed yet: the same columns, so every reader finds its metric
        metrics = metric_columns(pd.DataFrame(columns=_ALL_METRICS))
        empty = pd.DataFrame(columns=cols + [c for m in metrics for c in (m, f"{m}_std")])
        # typed, so that `configs[configs["feasible"]]` filters rows instead of picking columns
        return empty.astype({"feasible": bool, "n": int, "trial_number": int, **dict.fromkeys(
            [c for m in metrics for c in (m, f"{m}_std")], float)})
    runs = runs.assign(phase=runs["phase"].fillna("search") if "phase" in runs else "search")
    metrics = metric_columns(runs)
    # a seed that ran twice (a new code version, a new fingerprint): the newest complete run counts
    ok = runs[runs["state"] == "COMPLETE"]
    if "ended_at" in ok:
        ok = ok.sort_values("ended_at", kind="stable", na_position="first")
    ok = ok.drop_duplicates(KEY + SEEDS, keep="last")
    g_all = runs.groupby(KEY, sort=False)
    out = pd.DataFrame({"trial_number": g_all["trial_number"].min(), "n_runs": g_all.size(),
                        "replicated": runs["phase"].eq("replicate").groupby([runs[k] for k in KEY],
                                                                            sort=False).any()})
    g = ok.groupby(KEY, sort=False)
    stats = g[metrics].agg(["mean", "std"])  # pandas' std: the sample std (ddof=1)
    stats.columns = [m if s == "mean" else f"{m}_std" for m, s in stats.columns]
    out = out.join(stats).join(g.size().rename("n"))
    out = out.join(g["fingerprint"].agg(",".join).rename("fingerprints"))
    p_cols = [c for c in runs.columns if c.startswith("p_")]
    if p_cols:
        out = out.join(g_all[p_cols].first())
    # complete: every seed its trial ran on (seeds_in_trial; the spec's seeds may have grown since,
    # and records from before that column count the spec's) has a complete search run
    search = runs[runs["phase"] == "search"]
    need = (search.groupby(KEY)["seeds_in_trial"].max() if "seeds_in_trial" in search else
            pd.Series(dtype=float)).reindex(out.index).fillna(len(spec.seed_list()))
    covered = ok[ok["phase"] == "search"].drop_duplicates(KEY + SEEDS).groupby(KEY).size()
    complete = covered.reindex(out.index, fill_value=0) >= need
    errors = runs[runs["state"] != "COMPLETE"].groupby(KEY)["error"].first().reindex(out.index)
    # an objective that is missing or not a finite number (NaN or inf in the record) cannot be
    # ranked: such a configuration is not complete (as the driver told Optuna), and says why
    why = pd.Series("", index=out.index)
    for o in reversed(spec.objectives):  # the first objective's reason wins
        v = out[o.metric].astype(float) if o.metric in out else pd.Series(np.nan, index=out.index)
        why = why.mask(~np.isfinite(v), f"objective {o.metric} is missing or not finite in the record")
    # raced (spec race): dropped after its first seeds, its other seeds recorded but never run
    raced = (runs["failure_kind"].eq("raced") if "failure_kind" in runs else pd.Series(False, index=runs.index)
             ).groupby([runs[k] for k in KEY], sort=False).any().reindex(out.index, fill_value=False)
    out["state"] = np.where(complete & why.eq(""), "COMPLETE", np.where(raced, "PRUNED", "FAIL"))
    out["error"] = np.where(complete, why, errors.fillna("missing seeds").astype(str))
    out["n"] = out["n"].fillna(0).astype(int)
    out["fingerprints"] = out["fingerprints"].fillna("")
    out["feasible"] = out["state"].eq("COMPLETE") & feasible_mask(out, spec.constraints)
    out = out.reset_index().sort_values("trial_number", kind="stable").reset_index(drop=True)
    return out[cols + [c for c in out.columns if c not in cols]]


def feasible_mask(df: pd.DataFrame, constraints) -> pd.Series:
    """Every constraint holds on the configuration's means (NaN never satisfies one)."""
    ok = pd.Series(True, index=df.index)
    for c in constraints:
        v = df[c.metric].astype(float) if c.metric in df else pd.Series(math.nan, index=df.index)
        if c.max is not None:
            ok &= v <= c.max
        if c.min is not None:
            ok &= v >= c.min
    return ok


# -- selection -----------------------------------------------------------------------------------

def sort_objectives(df: pd.DataFrame, objectives) -> pd.DataFrame:
    if df.empty:
        return df
    return df.sort_values([o.metric for o in objectives], ascending=[o.direction == "minimize" for o in
                                                                     objectives], kind="stable",
                          na_position="last")


def rank(feas: pd.DataFrame, spec: SweepSpec, k: int | None = None) -> pd.DataFrame:
    """`feas` ranked by the sweep's own rule: `select` if the spec sets one, else Pareto layer (the
    front is layer 0; peel it off and the next front is layer 1, ...) then the objectives in order.
    Adds `layer`. With `k`, peeling stops once the top k are known."""
    objs = objective_matrix(feas, spec.objectives) * signs(spec.objectives)
    layer = np.full(len(feas), np.iinfo(np.int64).max)
    left, depth = np.arange(len(feas)), 0
    while len(left) and (k is None or spec.select is not None or (layer < depth).sum() < k):
        mask = pareto_mask(objs[left])
        layer[left[mask]] = depth
        left, depth = left[~mask], depth + 1
    ranked = sort_objectives(feas.assign(layer=layer), spec.objectives)
    if spec.select is not None:
        return ranked.sort_values(spec.select.metric, ascending=spec.select.direction == "minimize",
                                  kind="stable", na_position="last")
    return ranked.sort_values("layer", kind="stable")


@dataclass(frozen=True)
class Rule:
    """How one column group of the field's table picks a configuration per method."""

    name: str  # "blind" | "oracle"
    text: str  # shown in the table's caption and the report
    short: str  # for plot legends
    by: Objective | None  # None = the sweep's own rule (`rank`)
    blind_constraints_only: bool = False


def selection_rules(spec: SweepSpec, has_retrain: bool) -> list[Rule]:
    sweep_text = ("the sweep's rule: select " + _obj_text(spec.select) if spec.select else
                  "the sweep's rule: Pareto layer, then " + ", ".join(_obj_text(o) for o in spec.objectives))
    rules = []
    if spec.selection_rule == "blind":
        rules.append(Rule("blind", sweep_text, "sweep rule", None))
    else:
        rules.append(Rule("blind", f"{_obj_text(BLIND_PICK)} among configurations meeting the blind "
                          f"constraints", _obj_text(BLIND_PICK), BLIND_PICK, blind_constraints_only=True))
    if spec.selection_rule == "oracle":
        rules.append(Rule("oracle", sweep_text, "sweep rule", None))
    elif has_retrain:
        rules.append(Rule("oracle", f"{_obj_text(ORACLE_PICK)} (peeks at Retrain)", _obj_text(ORACLE_PICK),
                          ORACLE_PICK))
    return rules


def _obj_text(o: Objective) -> str:
    return f"{o.metric} {'↓' if o.direction == 'minimize' else '↑'}"


def pick(configs: pd.DataFrame, spec: SweepSpec, rule: Rule) -> pd.DataFrame:
    """The best configuration of each method under `rule` (one row per method, sorted by name)."""
    if configs.empty:
        return configs.head(0)
    if rule.blind_constraints_only:
        blind = [c for c in spec.constraints if not get(c.metric).retrain]
        feas = configs[(configs["state"] == "COMPLETE") & feasible_mask(configs, blind)]
    else:
        feas = configs[configs["feasible"]]
    if rule.by is None:  # the sweep's rule: the first of `rank` (lexicographic best of layer 0)
        ordered = (sort_objectives(feas, [spec.select]) if spec.select else
                   sort_objectives(feas, spec.objectives))
    else:
        ordered = sort_objectives(feas, [rule.by, *spec.objectives])
    return ordered.groupby("method", sort=True).head(1).sort_values("method")


# -- the analysis --------------------------------------------------------------------------------

@dataclass
class Analysis:
    spec: SweepSpec
    runs: pd.DataFrame  # one row per run (configuration x seed), as in Parquet
    configs: pd.DataFrame  # one row per configuration, see `per_config`
    front: pd.DataFrame  # the Pareto front of the feasible configurations
    hypervolume: float  # of the front, at `reference_point`
    reference_point: list[float]  # objectives' own units; see sweeps.report.units.default_reference
    best: pd.DataFrame  # the pick of the sweep's own rule, one row per method
    table: pd.DataFrame  # the field's table, tidy: one row per (selection, method); see field_table
    picks: dict[str, pd.DataFrame] = field(default_factory=dict)  # rule name -> one row per method
    rules: list[Rule] = field(default_factory=list)
    run_dir: Path | None = None
    reference_from_data: list[bool] = field(default_factory=list)


def analyze(run_dir: str | Path, spec: SweepSpec, ref: list[float] | None = None) -> Analysis:
    """Read the record and compute everything above. `ref` overrides the hypervolume's reference
    point (the objectives' own units)."""
    return analyze_runs(read_results(run_dir).to_pandas(), spec, ref, run_dir=Path(run_dir))


def analyze_runs(runs: pd.DataFrame, spec: SweepSpec, ref: list[float] | None = None,
                 run_dir: Path | None = None) -> Analysis:
    configs = per_config(runs, spec)
    feas = configs[configs["feasible"]] if len(configs) else configs
    objs = objective_matrix(feas, spec.objectives)
    finite = np.all(np.isfinite(objs), axis=1)
    feas, objs = feas[finite], objs[finite]
    front = sort_objectives(feas[pareto_mask(objs * signs(spec.objectives))], spec.objectives)
    from_data = [False] * len(spec.objectives)
    if ref is None:
        ref, from_data = default_reference(spec.objectives, objs)
    hv = front_hypervolume(front, spec.objectives, ref) if all(map(math.isfinite, ref)) else math.nan
    has_retrain = "retrain_test_acc" in configs and configs["retrain_test_acc"].notna().any()
    rules = selection_rules(spec, bool(has_retrain))
    picks = {r.name: pick(configs, spec, r) for r in rules}
    best = pick(configs, spec, Rule("sweep", "", "", None))
    a = Analysis(spec, runs, configs, front, hv, list(ref), best, pd.DataFrame(), picks, rules,
                 run_dir, from_data)
    a.table = field_table(a)
    return a


def top_configs(a: Analysis, k: int) -> pd.DataFrame:
    """The top `k` feasible, complete configurations by the sweep's own objectives (so by its
    selection rule, blind or oracle): ranked by Pareto layer (the front is layer 0; peel it off and
    the next front is layer 1, ...), ties broken by the objectives in order; or by the spec's
    `select` metric when set. `replicate` and `audit` take their configurations from here. Columns
    `rank` (0-based) and `layer` are added."""
    feas = a.configs[a.configs["feasible"] & (a.configs["state"] == "COMPLETE")] if len(a.configs) \
        else a.configs
    if feas.empty or k <= 0:
        return feas.assign(rank=pd.Series(dtype=int), layer=pd.Series(dtype=int)).head(0)
    ranked = rank(feas, a.spec, k).head(k)
    return ranked.assign(rank=np.arange(len(ranked))).reset_index(drop=True)


# -- the field's table ---------------------------------------------------------------------------

def field_table(a: Analysis) -> pd.DataFrame:
    """The field's table (SalUn's Table 1 layout), tidy and numeric: one row per (selection rule,
    row), rows Retrain, Original, then each method's pick. Columns: selection, rule, method, trial,
    n, and per metric of FIELD_METRICS `<m>` (mean over seeds), `<m>_std` (sample std), `<m>_gap`
    (|mean - Retrain's mean| over the same seeds, for UA, RA, TA, MIA). Original and Retrain are
    taken over the distinct oracle seeds (split_seed, train_seed) of the complete runs: n of them.
    `sweeps.report.tables` formats it (mean ± std (gap), best in bold) for markdown, LaTeX, CSV and
    JSON."""
    rows = []
    refs = _reference_rows(a.runs)
    for rule in a.rules:
        rows += [{"selection": rule.name, "rule": rule.text, **r} for r in refs]
        for _, c in a.picks[rule.name].iterrows():
            row = {"selection": rule.name, "rule": rule.text, "method": c["method"],
                   "trial": int(c["trial_number"]), "n": int(c["n"])}
            for m in FIELD_METRICS:
                row[m], row[f"{m}_std"] = c.get(m, math.nan), c.get(f"{m}_std", math.nan)
                if m in GAPPED:
                    row[f"{m}_gap"] = abs(row[m] - c.get(f"retrain_{m}", math.nan))
            rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):  # integers stay integers in table.csv (Retrain and Original have no trial)
        table = table.astype({"trial": "Int64", "n": "Int64"})
    return table


def _reference_rows(runs: pd.DataFrame) -> list[dict]:
    """Retrain and Original over the distinct oracle seeds of the complete runs."""
    ok = runs[runs["state"] == "COMPLETE"] if len(runs) else runs
    cols = ["split_seed", "train_seed", "data", "model", "split"]
    if ok.empty or "retrain_test_acc" not in ok:
        return []
    refs = ok.drop_duplicates([c for c in cols if c in ok])
    has_retrain = refs["retrain_test_acc"].notna().any()
    out = []
    for name in (("retrain", "original") if has_retrain else ("original",)):
        row = {"method": "Retrain" if name == "retrain" else "Original", "trial": None, "n": len(refs)}
        for m in FIELD_METRICS:
            v = refs.get(f"{name}_{m}")
            if v is not None and v.notna().any():
                row[m], row[f"{m}_std"] = v.mean(), v.std()
            else:
                row[m], row[f"{m}_std"] = math.nan, math.nan
        gaps = []
        for m in GAPPED:
            gap = (refs[f"{name}_{m}"] - refs[f"retrain_{m}"]).abs() if has_retrain else None
            row[f"{m}_gap"] = abs(row[m] - refs[f"retrain_{m}"].mean()) if has_retrain else math.nan
            gaps.append(gap)
        if has_retrain and all(g is not None and g.notna().all() for g in gaps):
            per_seed = pd.concat(gaps, axis=1).mean(axis=1)  # avg_gap of each oracle seed
            row["avg_gap"], row["avg_gap_std"] = per_seed.mean(), per_seed.std()
        out.append(row)
    return out


__all__ = ["Analysis", "analyze", "analyze_runs", "field_table", "hypervolume", "pareto_mask",
           "per_config", "top_configs"]
