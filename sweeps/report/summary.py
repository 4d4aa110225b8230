"""A sweep's analysis for people: the one-screen summary the CLI prints, the JSON of `analyze
--json`, and the report on disk (`write_report`): runs/<name>/report/ report.md, table.md,
table.tex, table.csv, trials.csv, front.csv, replication.csv (after `replicate`), front.png,
front.html, history.png, epochs.png (when the spec records per-epoch metrics,
`base.eval.eval_every`), importances.csv and parallel.html (sweeps/report/importance.py).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from sweeps.report import importance, plots, tables
from sweeps.report.analysis import Analysis
from sweeps.report.audit_results import audit_section
from sweeps.report.tables import plain
from sweeps.report.units import hv_text
from sweeps.spec import SweepSpec
from unlearning.redact import scrub_text

# -- text ----------------------------------------------------------------------------------------

def summary_text(a: Analysis) -> str:
    """The one-screen summary the CLI prints: counts, the front with n per row, the picks."""
    c = a.configs
    n_ok = int((c["state"] == "COMPLETE").sum()) if len(c) else 0
    n_feas = int(c["feasible"].sum()) if len(c) else 0
    n_raced = int((c["state"] == "PRUNED").sum()) if len(c) else 0
    objs = ", ".join(f"{o.direction} {o.metric}" for o in a.spec.objectives)
    ref = ", ".join(f"{o.metric}={x:.4g}" for o, x in zip(a.spec.objectives, a.reference_point))
    n_rep = int(c["replicated"].sum()) if len(c) else 0
    lines = [f"sweep {a.spec.name}: {len(c)} configuration(s) x {len(a.spec.seeds)} search seed(s)"
             + (f" ({n_rep} replicated on more)" if n_rep else "") + f", {n_ok} complete, "
             + (f"{n_raced} raced out after their first seed(s), " if n_raced else "")
             + f"{n_feas} feasible; objectives: {objs}; selection rule: {a.spec.selection_rule}",
             a.evidence,
             f"Pareto front ({len(a.front)} configuration(s)), hypervolume {hv_text(a.hypervolume)} at "
             f"reference point ({ref}); each value: mean ± sample std over n seeds, [95% t-interval]"]
    if a.runs.empty:
        lines.append("  no run on record yet: the sweep is starting (its oracle phase trains the Original "
                     "and Retrain models first) or was stopped before its first trial landed")
    else:
        lines += ["  " + ln for ln in tables.text_table(tables.front_table(a.front, a.spec)).splitlines()]
    for r in a.rules:
        p = a.picks[r.name]
        if len(p):
            lines.append(f"{r.name} pick ({r.text}): " + ", ".join(
                f"{m} trial {int(t)} (n = {int(n)})" for m, t, n in zip(p["method"], p["trial_number"], p["n"])))
    return "\n".join(lines)


def to_json(a: Analysis) -> dict:
    """What `analyze --json` prints: counts, the reference point, hypervolume, the front and the
    picks (metric means, stds and n), all plain JSON (NaN -> null)."""
    def rows(df: pd.DataFrame) -> list[dict]:
        keep = ["trial_number", "method", "params_json", "n", "replicated", "feasible",
                *[c for o in a.spec.objectives for c in (o.metric, f"{o.metric}_std", f"{o.metric}_ci")]]
        out = []
        for r in df[[k for k in keep if k in df]].to_dict(orient="records"):
            r["params"] = json.loads(r.pop("params_json"))
            out.append({k: plain(v) for k, v in r.items()})
        return out

    c = a.configs
    return {"sweep": a.spec.name, "selection_rule": a.spec.selection_rule, "evidence": a.evidence,
            "configurations": len(c), "complete": int((c["state"] == "COMPLETE").sum()) if len(c) else 0,
            "feasible": int(c["feasible"].sum()) if len(c) else 0,
            "raced": int((c["state"] == "PRUNED").sum()) if len(c) else 0,
            "objectives": [o.model_dump() for o in a.spec.objectives],
            "reference_point": [plain(x) for x in a.reference_point],
            "hypervolume": plain(a.hypervolume), "front": rows(a.front),
            "picks": {r.name: {"rule": r.text, "configs": rows(a.picks[r.name])} for r in a.rules},
            "table": tables.table_records(a.table)}


# -- the answer of status and analyze -------------------------------------------------------------

def record_answer(run_dir: Path, spec: SweepSpec, scans) -> tuple[dict, Analysis]:
    """What `status` and `analyze` print about the record as read (`scans`, sweeps.results.scan_record),
    as plain JSON (what sweeps.answer_cache keeps): "states" (the study's trials by state, re-enqueued
    ones apart), "problems" (record_problems' lines), "summary" (summary_text) and "json" (to_json);
    and the analysis. The rows in read_results' order, so status and analyze agree to the byte."""
    from sweeps.journal import state_name, superseded
    from sweeps.results import record_problems

    study, problems = record_problems(spec, run_dir, scans)
    states: dict[str, int] = {}
    sup = superseded(study) if study is not None else set()
    for t in (study.get_trials(deepcopy=False) if study is not None else []):
        name = state_name(t) + (" (re-enqueued)" if t.number in sup else "")
        states[name] = states.get(name, 0) + 1
    a = _analysis(run_dir, spec, scans)
    return {"states": states, "problems": problems, "summary": summary_text(a), "json": to_json(a)}, a


def _analysis(run_dir: Path, spec: SweepSpec, scans) -> Analysis:
    """The analysis of the trial rows as read, in read_results' order (so status and analyze agree
    to the byte)."""
    from sweeps.report.analysis import analyze_runs
    from sweeps.results import in_row_order

    return analyze_runs(in_row_order(scans["trials"].table).to_pandas(), spec, run_dir=run_dir)


# -- the report ----------------------------------------------------------------------------------

def write_report(run_dir: str | Path, spec: SweepSpec) -> tuple[Analysis, Path]:
    """Analyze the record and write report/ (files in the module docstring) as a whole: built in a
    folder beside it, then put in its place (`replace_folder`), so report/ is the previous report or
    the new one, never a mix (a failure or a signal half-way leaves the previous one as it was).
    Returns (analysis, path of report.md). The answer (`record_answer`, with the report's stamp) is
    kept beside the record (sweeps.answer_cache), so `status` and `analyze` on the record as it is
    answer from it."""
    a, path, _ = report_answer(Path(run_dir), spec, answer_needed=False)
    return a, path


def report_answer(run_dir: Path, spec: SweepSpec, answer_needed: bool = True) -> tuple[Analysis, Path, dict]:
    """`write_report`, also returning the answer it kept (`record_answer` plus "report": the stamp
    of the report/ it wrote). Not `answer_needed` and a record that cannot be stamped (a study in a
    database): the answer is neither computed (the study is not read) nor kept ({})."""
    from sweeps import answer_cache
    from sweeps.results import scan_record

    shared = bool(spec.storage)
    before = answer_cache.stamp(run_dir, shared)  # before the record is read (answer_cache.save)
    scans = scan_record(run_dir)
    if answer_needed or before is not None:
        answer, a = record_answer(run_dir, spec, scans)
    else:
        answer, a = {}, _analysis(run_dir, spec, scans)
    _remove_stale_builds(run_dir)
    out = run_dir / f".report.{os.getpid()}.tmp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        _write_report_files(out, run_dir, spec, a, scans["history"].table)
        replace_folder(out, run_dir / "report")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if answer:
        answer["report"] = answer_cache.report_stamp(run_dir / "report")
        answer_cache.save(run_dir, before, answer, shared)
    return a, run_dir / "report" / "report.md", answer


def _remove_stale_builds(run_dir: Path) -> None:
    """Report folders a killed process was building (its pid gone)."""
    from sweeps.rundir import alive

    for p in run_dir.glob(".report.*.tmp"):
        pid = p.name.split(".")[2]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
    for p in run_dir.glob(".report.old-*"):
        shutil.rmtree(p, ignore_errors=True)


def replace_folder(new: Path, dest: Path) -> None:
    """Put folder `new` in the place of folder `dest` (which may not exist). Where the file system
    can (Linux's renameat2 with RENAME_EXCHANGE: ext4, xfs, btrfs, tmpfs), the two swap in one step;
    elsewhere (NFS) `dest` is renamed aside and `new` renamed into place, a moment without either."""
    if dest.exists() and _exchange(new, dest):
        shutil.rmtree(new, ignore_errors=True)  # it holds the previous report now
        return
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dest)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); False where that is not available."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without it
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _write_report_files(out: Path, run_dir: Path, spec: SweepSpec, a: Analysis, history_table) -> None:
    history = history_table.to_pandas()
    write_file(out / "trials.csv", a.configs.to_csv(index=False))
    write_file(out / "front.csv", tables.front_table(a.front, spec).to_csv(index=False))
    for fmt, name in (("csv", "table.csv"), ("md", "table.md"), ("latex", "table.tex")):
        write_file(out / name, tables.export(a, fmt))
    write_file(out / "front.png", lambda p: plots.front_png(a, p))
    write_file(out / "history.png", lambda p: plots.history_png(a, p))
    write_file(out / "front.html", plots.front_html(a))
    has_epochs = write_file(out / "epochs.png", lambda p: plots.epochs_png(a, history, p))
    imp = importance.param_importances(a)
    write_file(out / "importances.csv", imp.to_csv(index=False))
    parallel = importance.parallel_html(a)
    write_file(out / "parallel.html", parallel if parallel is not None else lambda p: False)
    rep = tables.replication_table(a)
    if len(rep):
        write_file(out / "replication.csv", rep.to_csv(index=False))
    md = [f"# Sweep `{spec.name}`\n\n", f"{spec.description}\n\n" if spec.description else "",
          f"**{a.evidence}**\n\n",
          "```\n" + summary_text(a) + "\n```\n\n",
          f"Selection rule: **{spec.selection_rule}** ("
          + ("an objective or constraint peeks at Retrain" if spec.selection_rule == "oracle"
             else "no objective or constraint uses Retrain") + "). ",
          "Constraints (feasibility filter, on the mean over seeds): "
          + (", ".join(f"{c.metric}" + (f" <= {c.max:g}" if c.max is not None else "")
                       + (f" >= {c.min:g}" if c.min is not None else "") for c in spec.constraints)
             or "none") + ".\n",
          "\n## Pareto front\n\n", tables.markdown(tables.front_table(a.front, spec)),
          "\n![trade-off](front.png)\n\nInteractive: [front.html](front.html)\n",
          "\n## The field's table\n\n", tables.caption(a) + "\n\n", tables.export(a, "md"),
          "\nAlso as LaTeX ([table.tex](table.tex)) and CSV ([table.csv](table.csv)); "
          "`unlearn-sweep export` writes any of them.\n",
          *([f"\n## Replication\n\n{tables.REPLICATION_TEXT} Also [replication.csv](replication.csv).\n\n",
             tables.markdown(rep)] if len(rep) else [])]
    if spec.reference is not None and len(a.table):
        side = tables.beside_paper(a)
        write_file(out / "beside_paper.csv", side.to_csv(index=False))
        md += [f"\n## Beside the paper ({spec.reference.scenario})\n\n",
               "\n".join(f"> {ln}" for ln in tables.reference_citation(spec.reference.table)) + "\n\n",
               tables.markdown(side)]
    audit = audit_section(run_dir)
    if audit:  # `unlearn-sweep audit` (or the spec's audit:) has run
        md += [audit + "\n"]
    md += ["\n## Parameter importances (feasible configurations)\n\n",
           "How much of each objective's variation over the feasible configurations each searched "
           "parameter explains, per method (Optuna's evaluators; sweeps/report/importance.py says which "
           "and why). Also [importances.csv](importances.csv); every configuration on parallel axes, "
           "infeasible ones grey: [parallel.html](parallel.html).\n\n", importance.importance_markdown(imp)]
    md += ["\n## Objective history\n\n![history](history.png)\n"]
    if has_epochs:
        md += ["\n## Per-epoch UA, RA, TA of the picks\n\n![epochs](epochs.png)\n"]
    md += ["\nFiles: trials.csv (every configuration, with n, the sample std and the 95% t-interval's "
           "half-width `<metric>_ci`), front.csv, "
           "table.{md,tex,csv}; the record itself is ../trials/*.parquet (read with "
           "`sweeps.results.read_results`).\n"]
    write_file(out / "report.md", "".join(md))


def _scrubbed(text: str) -> str:
    """scrub_text, but not over plotly.js, which the HTML pages carry inline: the library's own
    4.8 MB, the same in every report, holds nothing of the user's, and scrubbing it took half a
    second a page."""
    if len(text) < 1_000_000 or "plotly" not in text:
        return scrub_text(text)
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    return js.join(scrub_text(part) for part in text.split(js))


def write_file(path: Path, content) -> bool:
    """Write `content` (a str, or `fn(tmp)` that writes a file) under a temp name with the same
    suffix (matplotlib reads the format from it), then rename it over `path`: a reader never sees
    half a file. `fn` returning False writes nothing and removes a stale `path`. Returns whether
    `path` exists now."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        # text leaves the process here: the one scrubber cuts out anything that looks like a secret
        wrote = tmp.write_text(_scrubbed(content)) if isinstance(content, str) else content(tmp)
        if wrote is False:
            path.unlink(missing_ok=True)
            return False
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal: no temp file left behind
        tmp.unlink(missing_ok=True)
        raise
    return True


__all__ = ["record_answer", "replace_folder", "report_answer", "summary_text", "to_json", "write_file",
           "write_report"]
