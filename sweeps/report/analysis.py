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

Evidence. A configuration's numbers are its means over n seeds, with the sample std and the 95%
Student-t interval (`<m>_ci`, the half-width). Replicated configurations (complete `replicate` runs)
are never ranked against single draws: once one is feasible, the front is theirs, each method's pick
is its best replicated one when it has one, and `top_configs` ranks them first. `evidence_text` says
it in one line (not yet evidence, when every result is one seed). The field's table adds each
method's avg. gap against the best method's, paired by seed, with a rank that ties where the seeds
cannot separate (`separation`), and flags rows worse than a method their objective contains.

The numbers only: sweeps.report.tables and .plots format them, sweeps.report.summary writes them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    if pts.ndim == 2 and pts.shape[1] == 2 and len(pts):
        return _pareto_mask_2d(pts)
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


def _pareto_mask_2d(pts: np.ndarray) -> np.ndarray:
    """pareto_mask for two objectives without a loop: in lexicographic order, a point is dominated
    iff an earlier one has a smaller second value, or the same one at a smaller first value (equal
    points do not dominate each other, as in the general case)."""
    order = np.lexsort(pts.T[::-1])
    x, y = pts[order, 0], pts[order, 1]
    prev_min = np.concatenate(([np.inf], np.minimum.accumulate(y)[:-1]))  # over the earlier points
    k = np.arange(len(y))
    new_min = (y < prev_min) | (k == 0)
    holder = np.maximum.accumulate(np.where(new_min, k, 0))  # first point to reach the running min
    first_x = np.concatenate(([np.inf], x[holder[:-1]]))
    dominated = (k > 0) & ((prev_min < y) | ((prev_min == y) & (first_x < x)))
    keep = np.zeros(len(pts), dtype=bool)
    keep[order] = ~dominated
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


def with_phase(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with `phase` filled in (a record from before `replicate` has none: all search)."""
    return runs.assign(phase=runs["phase"].fillna("search") if "phase" in runs else "search")


def complete_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The complete runs that count, one per (configuration, seed): a seed that ran twice (a new
    code version, a new fingerprint) counts its newest complete run."""
    ok = runs[runs["state"] == "COMPLETE"]
    if "ended_at" in ok:
        ok = ok.sort_values("ended_at", kind="stable", na_position="first")
    return ok.drop_duplicates(KEY + SEEDS, keep="last")


def per_config(runs: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """One row per configuration (see the module docstring): method, params_json, trial_number,
    state, error, n (complete seeds), n_runs, replicated, fingerprints (comma-separated, of its
    complete runs), `<m>` and `<m>_std` for every metric, `p_<param>`, feasible. Vectorised
    (groupby/agg): a 10,000-run record takes well under a second."""
    cols = ["method", "params_json", "trial_number", "state", "error", "n", "n_runs", "replicated",
            "fingerprints", "feasible"]
    if runs.empty:  # no run has landed yet: the same columns, so every reader finds its metric
        metrics = metric_columns(pd.DataFrame(columns=_ALL_METRICS))
        stat_cols = [c for m in metrics for c in (m, f"{m}_std", f"{m}_ci")]
        empty = pd.DataFrame(columns=cols + stat_cols)
        # typed, so that `configs[configs["feasible"]]` filters rows instead of picking columns
        return empty.astype({"feasible": bool, "n": int, "trial_number": int, "replicated": bool,
                             **dict.fromkeys(stat_cols, float)}).copy()  # copy: one block per dtype
    runs = with_phase(runs)
    metrics = metric_columns(runs)
    ok = complete_runs(runs)
    g_all = runs.groupby(KEY, sort=False)
    # replicated: a complete run beyond the search (phase "replicate"), so n counts more seeds
    rep = ok["phase"].eq("replicate").groupby([ok[k] for k in KEY], sort=False).any()
    out = pd.DataFrame({"trial_number": g_all["trial_number"].min(), "n_runs": g_all.size()})
    out["replicated"] = rep.reindex(out.index, fill_value=False).astype(bool)
    g = ok.groupby(KEY, sort=False)
    stats = g[metrics].agg(["mean", "std"])  # pandas' std: the sample std (ddof=1)
    stats.columns = [m if s == "mean" else f"{m}_std" for m, s in stats.columns]
    out = out.join(stats).join(g.size().rename("n"))
    half = t_half_width(out["n"].fillna(0).to_numpy())  # the 95% t-interval: mean ± <m>_ci
    out = pd.concat([out, pd.DataFrame({f"{m}_ci": out[f"{m}_std"].to_numpy(dtype=float) * half
                                        for m in metrics}, index=out.index)], axis=1)
    out = out.join(_joined(g, ok["fingerprint"]).rename("fingerprints"))
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


def _joined(g, col: pd.Series) -> pd.Series:
    """`g[col].agg(",".join)` for a groupby with sort=False, in one pass of Python over the rows
    (pandas' agg of a Python function builds a Series per group: 0.2 s for 10,000 groups)."""
    parts: list[list[str]] = [[] for _ in range(g.ngroups)]
    for code, value in zip(g.ngroup().tolist(), col.tolist()):
        if code == code and code >= 0:  # a row of no group (a null key) has NaN or -1
            parts[int(code)].append(value)
    return pd.Series([",".join(p) for p in parts], index=g.size().index, dtype=object)


CONFIDENCE = 0.95  # every interval the report shows: a two-sided 95% Student-t interval


def t_half_width(n) -> np.ndarray:
    """The factor that turns a sample std over n seeds into the half-width of the 95% t-interval
    of the mean, t(0.975, n - 1) / sqrt(n); NaN for n < 2 (one seed has no interval). The t (not
    the normal) quantile because n is small: 12.7 / sqrt(2) for n = 2, 2.26 / sqrt(10) for n = 10."""
    n = np.asarray(n, dtype=float)
    out = np.full(n.shape, math.nan)
    many = n >= 2
    if many.any():  # scipy.special, not scipy.stats: t.ppf is stdtrit, and stats takes 0.8 s to import
        from scipy.special import stdtrit

        out[many] = stdtrit(n[many] - 1, 0.5 + CONFIDENCE / 2) / np.sqrt(n[many])
    return out


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
    Adds `layer`. With `k`, peeling stops once the top k are known. Comparable evidence first: the
    replicated configurations are ranked among themselves, ahead of the others (ranked among
    themselves), never a replicated mean against a single draw."""
    rep = feas["replicated"].astype(bool) if "replicated" in feas else pd.Series(False, index=feas.index)
    if rep.any() and not rep.all():
        left = None if k is None else max(k - int(rep.sum()), 0)
        return pd.concat([_rank(feas[rep], spec, k), _rank(feas[~rep], spec, left)])
    return _rank(feas, spec, k)


def _rank(feas: pd.DataFrame, spec: SweepSpec, k: int | None) -> pd.DataFrame:
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
    if "replicated" in ordered:  # a method's replicated configurations first (comparable evidence)
        ordered = ordered.sort_values("replicated", ascending=False, kind="stable")
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
    evidence: str = ""  # one line: what the numbers rest on (`evidence_text`)


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
    # the front never mixes evidence: once a replicated configuration is feasible, it is the front
    # of the replicated configurations (the single-seed ones are not ranked against their means)
    rep = feas["replicated"].to_numpy(dtype=bool) if len(feas) else np.zeros(0, dtype=bool)
    pool = rep if rep.any() else np.ones(len(feas), dtype=bool)
    front = sort_objectives(feas[pool][pareto_mask(objs[pool] * signs(spec.objectives))], spec.objectives)
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
    a.evidence = evidence_text(a)
    return a


def evidence_text(a: "Analysis") -> str:
    """One line on what the numbers rest on: the seeds per configuration (n), and plainly when every
    result is a single seed (not yet evidence) or when the front and picks fall back to single-seed
    configurations after a replicate. Shown by the CLI's summary and the report."""
    c = a.configs[a.configs["state"] == "COMPLETE"] if len(a.configs) else a.configs
    if c.empty:
        return "evidence: no complete configuration yet"
    hint = "`unlearn-sweep replicate RUN --top K --seeds 0-4` reruns the best on more seeds"
    ns = sorted(set(c["n"].astype(int)))
    if ns == [1]:
        return f"evidence: every result is a single seed (n = 1): not yet evidence; {hint}"
    rep = c[c["replicated"]]
    if rep.empty:
        return (f"evidence: every result is a mean over its seeds (n = {_span(ns)}), shown with the "
                f"sample std; 95% t-intervals in trials.csv")
    others = c[~c["replicated"]]
    one = "single seed (n = 1): not yet evidence" if set(others["n"]) <= {1} else \
        f"n = {_span(sorted(set(others['n'].astype(int))))}"
    if not rep["feasible"].any():
        return (f"evidence: none of the {len(rep)} replicated configuration(s) (n = "
                f"{_span(sorted(set(rep['n'].astype(int))))}) is feasible on its mean; the front and "
                f"picks are of search seeds only, {one}")
    fallback = sorted({m for p in a.picks.values() for m, r in zip(p["method"], p["replicated"])
                       if not r})
    text = (f"evidence: the front and picks rank the {int(rep['feasible'].sum())} feasible replicated "
            f"configuration(s) (n = {_span(sorted(set(rep['n'].astype(int))))})")
    if len(others):
        text += f"; the {len(others)} other(s) are {one}, not ranked against them"
    if fallback:
        text += f"; picks from search seeds only: {', '.join(fallback)}"
    return text


def replication(a: "Analysis") -> pd.DataFrame:
    """What `replicate` found, one row per replicated configuration (trial order): trial_number,
    method, params_json, n_search (its search seeds) and n (all its seeds), per objective and
    constraint metric `<m>_search` (the mean over its search seeds: what the search saw), `<m>`,
    `<m>_std`, `<m>_ci` (over all its seeds), then feasible_search, feasible (on the replicated
    means) and on_front (on the front now)."""
    metrics = list(dict.fromkeys([o.metric for o in a.spec.objectives] +
                                 [c.metric for c in a.spec.constraints]))
    c = a.configs
    cols = ["trial_number", "method", "params_json", "n_search", "n",
            *[x for m in metrics for x in (f"{m}_search", m, f"{m}_std", f"{m}_ci")],
            "feasible_search", "feasible", "on_front"]
    if c.empty or not c["replicated"].any():
        return pd.DataFrame(columns=cols)
    rep = c[c["replicated"]].set_index(KEY)
    ok = complete_runs(with_phase(a.runs))
    search = ok[ok["phase"] == "search"].groupby(KEY)
    means = search[[m for m in metrics if m in ok]].mean().reindex(rep.index)
    out = rep.assign(n_search=search.size().reindex(rep.index, fill_value=0).astype(int))
    for m in metrics:
        out[f"{m}_search"] = means[m] if m in means else math.nan
    out["feasible_search"] = feasible_mask(means.reindex(columns=metrics), a.spec.constraints) & \
        (out["n_search"] > 0)
    on_front = set(zip(a.front["method"], a.front["params_json"])) if len(a.front) else set()
    out["on_front"] = [k in on_front for k in out.index]
    out = out.reset_index().sort_values("trial_number", kind="stable")
    return out[[x for x in cols if x in out]].reset_index(drop=True)


def _span(ns: list[int]) -> str:
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


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
    (|mean - Retrain's mean| over the same seeds, for UA, RA, TA, MIA); per method row (with
    Retrain on record) sep_best, sep_diff, sep_lo, sep_hi, sep_n, separated, rank, tie and
    under_searched: its avg. gap against the best method's of the same rule, paired by seed
    (`_separation_columns`). Original and Retrain are taken over the distinct oracle seeds
    (split_seed, train_seed) of the complete runs: n of them.
    `sweeps.report.tables` formats it (mean ± std (gap), best in bold) for markdown, LaTeX, CSV and
    JSON."""
    rows = []
    refs = _reference_rows(a.runs)
    for rule in a.rules:
        rows += [{"selection": rule.name, "rule": rule.text, **r} for r in refs]
        sep = _separation_columns(a, a.picks[rule.name])
        for _, c in a.picks[rule.name].iterrows():
            row = {"selection": rule.name, "rule": rule.text, "method": c["method"],
                   "trial": int(c["trial_number"]), "n": int(c["n"])}
            for m in FIELD_METRICS:
                row[m], row[f"{m}_std"] = c.get(m, math.nan), c.get(f"{m}_std", math.nan)
                if m in GAPPED:
                    row[f"{m}_gap"] = abs(row[m] - c.get(f"retrain_{m}", math.nan))
            row.update(sep.get(c["method"], {}))
            rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):  # integers stay integers in table.csv (Retrain and Original have no trial)
        table = table.astype({"trial": "Int64", "n": "Int64",
                              **{c: "Int64" for c in ("rank", "sep_n") if c in table}})
    return table


# -- methods side by side, with confidence ---------------------------------------------------------

# A method whose objective contains another's: some setting of its parameters IS the other method
# (EUPMU, random labels on the forget rows plus a multiplier on the retain loss, with phi identity
# and the multiplier held at 1 = RL; SalUn at mask ratio 1 = RL; l1-sparse at alpha 0 = FT; NegGrad+
# at beta 0 = GA). Tuned worse than the method it contains, its search (not the method) decided its
# row: `under_searched` flags it.
CONTAINS: dict[str, tuple[str, ...]] = {"eupmu": ("rl",), "salun": ("rl",), "l1_sparse": ("ft",),
                                        "neggrad_plus": ("ga",)}


def per_seed(runs: pd.DataFrame, method: str, params_json: str, metric: str = "avg_gap") -> pd.Series:
    """One configuration's `metric` per seed, indexed by (split_seed, train_seed, unlearn_seed): each
    seed has its own Original and Retrain, so two methods compare seed by seed."""
    ok = complete_runs(runs[(runs["method"] == method) & (runs["params_json"] == params_json)])
    if ok.empty or metric not in ok:
        return pd.Series(dtype=float)
    return pd.Series(ok[metric].to_numpy(dtype=float), index=pd.MultiIndex.from_frame(ok[SEEDS])).dropna()


def paired_interval(a: pd.Series, b: pd.Series) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n) of a - b over the seeds both have: the mean paired difference and its 95%
    Student-t interval, t(0.975, n - 1) * sd(d) / sqrt(n); NaN bounds for fewer than 2 pairs."""
    d = (a - b).dropna()  # aligned on the seed index: only the seeds both ran
    n = len(d)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = float(d.std(ddof=1)) * float(t_half_width([n])[0])
    return mean, mean - half, mean + half, n


def separation(values: dict[str, pd.Series]) -> pd.DataFrame:
    """Rows compared on a lower-is-better metric given per seed (`per_seed`), paired by seed. Index:
    the row names; columns: mean (over its own seeds), n, best (the smallest mean), diff, lo, hi,
    n_pairs (its paired difference to the best and the 95% t-interval of it: `paired_interval`),
    separated (the interval lies above 0: worse than the best beyond the noise), rank (1 + the rows
    it is separated from and worse than, each pair tested the same way: rows the data cannot tell
    apart share a rank) and tie (another row has the same rank)."""
    names = [k for k, v in values.items() if len(v)]
    out = pd.DataFrame(index=pd.Index(list(values), name="row"),
                       columns=["mean", "n", "best", "diff", "lo", "hi", "n_pairs", "separated", "rank", "tie"])
    if not names:
        return out
    means = {k: float(values[k].mean()) for k in names}
    best = min(names, key=lambda k: means[k])
    worse_than = {k: 0 for k in names}
    for i in names:
        for j in names:
            if i != j and paired_interval(values[i], values[j])[1] > 0:  # i worse than j: lo > 0
                worse_than[i] += 1
    for k in names:
        diff, lo, hi, n = (paired_interval(values[k], values[best]) if k != best
                           else (0.0, 0.0, 0.0, len(values[k])))  # the best against itself: 0 on every seed
        out.loc[k] = [means[k], len(values[k]), k == best, diff, lo, hi, n, bool(lo > 0), 1 + worse_than[k],
                      False]
    ranks = out["rank"].dropna()
    out.loc[ranks.index, "tie"] = ranks.map(ranks.value_counts()) > 1
    return out


def under_searched(means: dict[str, float],
                   contains: dict[str, tuple[str, ...]] | None = None) -> dict[str, str]:
    """Rows (method names) whose mean (lower is better) is worse than a method their objective
    contains (`CONTAINS`), each with the reason: its search, not the method, decided that row."""
    out = {}
    for m, inner in (CONTAINS if contains is None else contains).items():
        worse = [x for x in inner if x in means and m in means and means[m] > means[x]]
        if worse:
            out[m] = "; ".join(f"avg. gap {means[m]:.2f} worse than {x}'s {means[x]:.2f}, which its objective "
                               "contains: under-searched" for x in worse)
    return out


def _separation_columns(a: "Analysis", picks: pd.DataFrame) -> dict[str, dict]:
    """Per method of one selection rule: sep_best, sep_diff, sep_lo, sep_hi, sep_n (its avg. gap
    against the best method's, paired by seed), separated, rank, tie, under_searched (see
    `separation`, `under_searched`)."""
    if picks.empty or "avg_gap" not in a.runs:
        return {}
    values = {m: per_seed(a.runs, m, pj) for m, pj in zip(picks["method"], picks["params_json"])}
    sep = separation(values)
    flags = under_searched({m: v for m, v in sep["mean"].items() if pd.notna(v)})
    return {m: {"sep_best": r["best"], "sep_diff": r["diff"], "sep_lo": r["lo"], "sep_hi": r["hi"],
                "sep_n": r["n_pairs"], "separated": r["separated"], "rank": r["rank"], "tie": r["tie"],
                "under_searched": flags.get(m, "")} for m, r in sep.iterrows() if pd.notna(r["mean"])}


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
        row: dict[str, Any] = {"method": "Retrain" if name == "retrain" else "Original", "trial": None,
                               "n": len(refs)}
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
           "per_config", "replication", "separation", "top_configs"]
