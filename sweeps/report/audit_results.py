"""The audit's record in runs/<name>/audit/ (written by orchestrator/audit.py, read by anyone):

    tasks/<key>.parquet   one row per finished task (content-addressed key): its margins, relearn
                          count, node and timings; written under a temp name and renamed, so a
                          killed audit leaves whole files only and a resumed one skips them
    examples.parquet      per configuration x example: set (forget | retain | val), train or
                          validation index, label, which shadows held it, the shadows' scores and
                          U-LiRA statistics, the KLoM margins and score
    summary.parquet       per configuration: U-LiRA AUC / TPR, KLoM, relearn time, AIN, counts
    summary.md            the summary as a table (`audit_section` gives the same for a report)

`audit_summary(run_dir)` and `audit_section(run_dir)` are the hooks a report uses; both return None
when the run has no audit yet. Nothing here needs the data set, torch or Ray.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweeps.results import write_atomic

AUDIT_DIR = "audit"
_F = pa.float64()
TASK_SCHEMA = pa.schema([
    pa.field("key", pa.string()), pa.field("op", pa.string()), pa.field("role", pa.string()),
    pa.field("index", pa.int64()), pa.field("config_id", pa.string()), pa.field("method", pa.string()),
    pa.field("state", pa.string()), pa.field("error", pa.string()), pa.field("attempt", pa.int32()),
    pa.field("node", pa.string()), pa.field("cached", pa.bool_()), pa.field("train_runtime_s", _F),
    pa.field("unlearn_s", _F), pa.field("total_s", _F),
    *[pa.field(p, pa.list_(_F)) for p in ("forget", "retain", "val")],
    pa.field("relearn_steps", _F), pa.field("relearn_capped", pa.bool_()), pa.field("relearn_seconds", _F),
    pa.field("ended_at", pa.string()),
    pa.field("failure_kind", pa.string()),  # unlearning.errors.FailureKind of a FAIL row
])
EXAMPLE_SCHEMA = pa.schema([
    pa.field("config_id", pa.string()), pa.field("method", pa.string()), pa.field("set", pa.string()),
    pa.field("example", pa.int64()), pa.field("label", pa.int64()),
    pa.field("held_by", pa.list_(pa.int32())),  # shadows whose half S_k held the example
    pa.field("shadows", pa.list_(pa.int32())),  # the shadows the lists below are over, in order
    pa.field("score", pa.list_(_F)),  # phi = log p_y - log(1 - p_y) under each unlearned shadow
    pa.field("lr_online", pa.list_(_F)), pa.field("lr_offline", pa.list_(_F)),  # shadow as target
    pa.field("margin", pa.list_(_F)),  # KLoM: the unlearned originals' margins
    pa.field("margin_ref", pa.list_(_F)),  # KLoM: the reference Retrain models' margins
    pa.field("klom", _F),
])


def audit_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / AUDIT_DIR


def write_task(run_dir: Path, row: dict[str, Any]) -> Path:
    path = audit_dir(run_dir) / "tasks" / f"{row['key']}.parquet"
    cols = {f.name for f in TASK_SCHEMA}
    write_atomic(pa.Table.from_pylist([{k: v for k, v in row.items() if k in cols}], schema=TASK_SCHEMA),
                 path)
    return path


def done_tasks(run_dir: Path) -> set[str]:
    d = audit_dir(run_dir) / "tasks"
    if not d.is_dir():
        return set()
    return {p.stem for p in d.iterdir() if p.suffix == ".parquet" and not p.name.startswith(".")}


def read_tasks(run_dir: Path, keys: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """Task rows by key (all, or only `keys`)."""
    d = audit_dir(run_dir) / "tasks"
    out = {}
    for key in sorted(done_tasks(run_dir) if keys is None else keys & done_tasks(run_dir)):
        rows = pq.read_table(d / f"{key}.parquet").to_pylist()
        if rows:
            out[key] = rows[0]
    return out


def write_results(run_dir: Path, examples: list[dict[str, Any]], summary: list[dict[str, Any]],
                  meta: dict[str, Any]) -> None:
    d = audit_dir(run_dir)
    md = {b"unlearn_sweep.audit": json.dumps(meta).encode()}
    write_atomic(pa.Table.from_pylist(examples, schema=EXAMPLE_SCHEMA.with_metadata(md)),
                 d / "examples.parquet")
    write_atomic(pa.Table.from_pylist(summary).replace_schema_metadata(md), d / "summary.parquet")
    tmp = d / ".summary.md.tmp"
    tmp.write_text(_markdown(pd.DataFrame(summary), meta))
    tmp.replace(d / "summary.md")


def audit_summary(run_dir: str | Path) -> pd.DataFrame | None:
    """The per-configuration summary of the run's latest audit, or None when there is none."""
    p = audit_dir(run_dir) / "summary.parquet"
    return pq.read_table(p).to_pandas() if p.is_file() else None


def audit_section(run_dir: str | Path) -> str | None:
    """The summary as a markdown section for the sweep's report (None without an audit)."""
    p = audit_dir(run_dir) / "summary.parquet"
    if not p.is_file():
        return None
    t = pq.read_table(p)
    meta = json.loads((t.schema.metadata or {}).get(b"unlearn_sweep.audit", b"{}"))
    return "\n## Per-example audit\n\n" + _markdown(t.to_pandas(), meta)


COLUMNS = [("U-LiRA AUC", "ulira_auc"), ("TPR@1%", "ulira_tpr_at_1pct"), ("TPR@0.1%", "ulira_tpr_at_0.1pct"),
           ("offline AUC", "ulira_offline_auc"), ("KLoM forget", "klom_forget_mean"),
           ("KLoM retain", "klom_retain_mean"), ("KLoM val", "klom_val_mean"),
           ("RT", "relearn_steps"), ("RT Retrain", "relearn_steps_retrain"), ("AIN", "ain")]


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _label(r) -> str:
    """`trial 12 (top 1) ltu`: the configuration's trial number (as in every other table), its
    rank by the sweep's selection rule and its method; a baseline by its name."""
    if pd.isna(r.get("rank")):
        return str(r["method"])
    t = r.get("trial_number")
    return (f"trial {int(t)} " if t is not None and pd.notna(t) else "") + \
        f"(top {int(r['rank']) + 1}) {r['method']}"


def ain_caveat(df: pd.DataFrame) -> str | None:
    """The note AIN needs where Retrain relearned in 0 steps (random forgetting: Retrain's forget
    accuracy is already at the target), which makes AIN = 100 x RT + 1: a relearn time, no ratio."""
    if "relearn_steps_retrain" not in df or "ain" not in df:
        return None
    rt_r = pd.to_numeric(df["relearn_steps_retrain"], errors="coerce")
    if not (rt_r == 0).any():
        return None
    return ("AIN caveat: RT Retrain is 0 here (Retrain is already at the target forget accuracy, as "
            "on random forgetting), so AIN = (RT + 0.01) / 0.01 = 100 × RT + 1 restates the relearn "
            "time RT and says nothing about closeness to Retrain; read RT, or audit class-wise "
            "forgetting, where Retrain has to learn the forget set (docs/metrics.md).")


def _intro(meta: dict[str, Any]) -> str:
    n = meta.get("shadows", "?")
    return (f"{n} shadows (U-LiRA: each unlearned shadow audited against the other {n}-1, "
            f"{meta.get('variance', 'global')} variance), {n} unlearned originals against {n} "
            "reference Retrain models (KLoM, relearn time in optimizer steps; AIN = (RT + 0.01) / "
            "(RT_Retrain + 0.01)). U-LiRA AUC 0.5 and KLoM 0 = indistinguishable from Retrain; "
            f"kinds: {', '.join(meta.get('kinds', []))}; wall time {meta.get('wall_s', math.nan):.0f} s. "
            "Definitions: docs/metrics.md.")


def _markdown(df: pd.DataFrame, meta: dict[str, Any]) -> str:
    cols = [(h, c) for h, c in COLUMNS if c in df]
    head = ["configuration"] + [h for h, _ in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        name = _label(r) + (f": {r['params']}" if not pd.isna(r.get("rank")) and r.get("params") else "")
        lines.append("| " + " | ".join([name] + [_cell(r.get(c)) for _, c in cols]) + " |")
    caveat = ain_caveat(df)
    return _intro(meta) + "\n\n" + "\n".join(lines) + "\n" + (f"\n{caveat}\n" if caveat else "")


# the LaTeX table's column groups: (group, [(sub-header, column)])
LATEX_GROUPS = [("U-LiRA", [("AUC", "ulira_auc"), (r"TPR@1\%", "ulira_tpr_at_1pct"),
                            (r"@0.1\%", "ulira_tpr_at_0.1pct"), ("offl.", "ulira_offline_auc")]),
                ("KLoM", [("forget", "klom_forget_mean"), ("retain", "klom_retain_mean"),
                          ("val", "klom_val_mean")]),
                ("Relearn", [("RT", "relearn_steps"), ("RT$_r$", "relearn_steps_retrain"), ("AIN", "ain")])]


def audit_latex(run_dir: str | Path) -> str | None:
    """The audit's summary as a booktabs table sized for a one-column article (the export of
    `--format latex`; the markdown export's content): one row per configuration (trial, method),
    the metrics grouped U-LiRA / KLoM / relearn, the parameters and the caveats in the caption.
    None without an audit."""
    from sweeps.report.tables import latex_escape

    p = audit_dir(run_dir) / "summary.parquet"
    if not p.is_file():
        return None
    t = pq.read_table(p)
    meta = json.loads((t.schema.metadata or {}).get(b"unlearn_sweep.audit", b"{}"))
    df = t.to_pandas()
    groups = [(g, [(h, c) for h, c in cols if c in df]) for g, cols in LATEX_GROUPS]
    groups = [(g, cols) for g, cols in groups if cols]
    cols = [c for _, gc in groups for _, c in gc]
    configs = "; ".join(f"trial {int(r['trial_number'])}: {r['method']}"
                        + (f" ({r['params']})" if r.get("params") else "")
                        for _, r in df.iterrows() if not pd.isna(r.get("rank")) and pd.notna(r.get("trial_number")))
    caveat = ain_caveat(df)
    caption = latex_escape(f"Per-example audit of sweep {meta.get('sweep', '')}. " + _intro(meta)
                           + (f" Configurations: {configs}." if configs else "")
                           + (f" {caveat}" if caveat else ""))
    lines = [r"\begin{table}", r"\centering", r"\footnotesize", r"\setlength{\tabcolsep}{2.5pt}",
             rf"\caption{{{caption}}}", r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
             r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule",
             " & " + " & ".join(rf"\multicolumn{{{len(gc)}}}{{c}}{{{g}}}" for g, gc in groups) + r" \\"]
    at = 2
    rules = []
    for _, gc in groups:
        rules.append(rf"\cmidrule(lr){{{at}-{at + len(gc) - 1}}}")
        at += len(gc)
    lines += ["".join(rules), " & ".join(["Trial: method", *(h for _, gc in groups for h, _ in gc)]) + r" \\",
              r"\midrule"]
    for _, r in df.iterrows():
        t = r.get("trial_number")
        trial = "" if pd.isna(r.get("rank")) or t is None or pd.isna(t) else f"{int(t)}: "
        vals = [_cell(r.get(c)).replace("—", "--") for c in cols]
        lines.append(" & ".join([trial + latex_escape(str(r["method"])), *vals]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"
