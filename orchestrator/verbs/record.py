"""The verbs that read a sweep's record: status, analyze, export, compare. They need only the run
directory (no data set, no Ray, no torch): a record copied to a laptop still reports."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from orchestrator.verbs.common import RUN_HELP, emit, resolve_run_dir, spec_from_dir
from unlearning.errors import UserError


def add_parsers(sub) -> None:
    run_help = RUN_HELP
    st = sub.add_parser("status", help="trial counts and the current Pareto front of a sweep")
    st.add_argument("dir", metavar="RUN", help=run_help)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    an = sub.add_parser("analyze", help="write the report (Pareto front, tables, plots) of a sweep")
    an.add_argument("dir", metavar="RUN", help=run_help)
    an.add_argument("--json", action="store_true",
                    help="print the analysis as JSON (the report is written too)")
    an.set_defaults(func=cmd_analyze)

    ex = sub.add_parser("export", help="the field's table of a sweep as markdown, LaTeX, CSV or JSON")
    ex.add_argument("dir", metavar="RUN", help=run_help)
    ex.add_argument("--format", choices=["md", "latex", "csv", "json"], default="md")
    ex.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    ex.set_defaults(func=cmd_export)

    cp = sub.add_parser("compare", help="several sweeps: fronts overlaid, hypervolume at one reference point")
    cp.add_argument("dirs", nargs="+", metavar="RUN", help=run_help)
    cp.add_argument("--ref", metavar="V1,V2,...", help="the reference point, one value per objective in "
                    "its own units (default: the worst end of each metric's natural range, e.g. 100 for "
                    "a minimised percent, 0 for a maximised one)")
    cp.add_argument("--out", metavar="DIR", help="where compare.png, compare.html, compare.csv go "
                    "(default runs/compare)")
    cp.add_argument("--json", action="store_true", help="machine-readable output")
    cp.set_defaults(func=cmd_compare)

    tr = sub.add_parser("trials", help="every trial of a sweep: state, method, parameters, n and values "
                        "(like `optuna trials`)")
    tr.add_argument("dir", metavar="RUN", help=run_help)
    tr.add_argument("--method", metavar="M[,M]", help="only these methods")
    tr.add_argument("--state", metavar="S[,S]", help="only these states: complete, fail, running, waiting "
                    "(re-enqueued trials are fail)")
    tr.add_argument("--json", action="store_true", help="one JSON object per trial, in a list")
    tr.set_defaults(func=cmd_trials)



def compact_if_free(run_dir: Path, scans, role: str, full: bool, read_at: str | None = None) -> str | None:
    """Merge the record's one-run files (full: its parts too) as the driver does, while no driver
    holds the lock (skipped when one does, or the disk refuses): the files were just read
    (`scans`; None: read them only if there is something to merge), so the next command reads a
    few files, not thousands. Whole or not at all (sweeps.results.compact). `read_at`: the record's
    stamp when `scans` were read (sweeps.answer_cache); when it is still that under the lock, the
    merge changed only how the same rows are stored, and the stamp after it is returned (what
    was computed from `scans` holds for it); else None."""
    from sweeps import answer_cache
    from sweeps import results as R
    from sweeps.rundir import DriverLock

    if scans is None:
        folders = [run_dir / "trials", run_dir / "history"]
        if not any(R.has_singles(f) for f in folders) and not (full and any(R.has_parts(f) for f in folders)):
            return None
    elif not scans["trials"].singles() and not scans["history"].singles() and not (
            full and len(scans["trials"].files) > 1):
        return None
    lock = DriverLock(run_dir, role=role)
    try:
        lock.acquire()
        try:
            same = read_at is not None and answer_cache.stamp(run_dir) == read_at
            R.compact(run_dir, scans, full=full)
            return answer_cache.stamp(run_dir) if same else None
        finally:
            lock.release()
    except (UserError, OSError):
        return None


def cmd_status(args) -> int:
    from orchestrator.control import holders, state_text
    from sweeps import answer_cache

    run_dir = resolve_run_dir(args.dir)
    spec = spec_from_dir(run_dir, [], read_only=True)
    # an unchanged record answers from what the last status or analyze kept (sweeps.answer_cache):
    # nothing of it is read, and pandas, pyarrow and Optuna are not imported
    before = answer_cache.stamp(run_dir, bool(spec.storage))
    answer = answer_cache.load(run_dir, before)
    if answer is None:
        from sweeps.report.summary import record_answer
        from sweeps.results import scan_record

        scans = scan_record(run_dir)  # the record is read once
        answer, _ = record_answer(run_dir, spec, scans)
        answer_cache.save(run_dir, before, answer, bool(spec.storage))
        # one-run files a driver did not merge (killed, an older version, a full disk): merged now
        # into a part (what they cost to read, not the record's size), so the next command reads a
        # few files; the answer is kept for the record as merged
        merged = compact_if_free(run_dir, scans, "status", full=False, read_at=before)
        if merged is not None:
            answer_cache.save(run_dir, merged, answer, bool(spec.storage))
    states, problems = answer["states"], answer["problems"]
    hs = holders(run_dir)
    if args.json:
        d = next((h for h in hs if h.lock.parent == run_dir), None)
        print(json.dumps({"run_dir": str(run_dir), "n_trials": spec.n_trials, "study": states,
                          "driver": {"pid": d.pid if d else None, "host": d.host if d else None,
                                     "running": d.live if d else False, "role": d.role if d else None},
                          "locks": [{"lock": str(h.lock), "role": h.role, "pid": h.pid, "host": h.host,
                                     "since": h.started, "running": h.live} for h in hs],
                          "record_problems": problems, **answer["json"]}, indent=2))
        return 0
    print(f"sweep {spec.name} in {run_dir}: n_trials {spec.n_trials}, study "
          + (", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "empty")
          + f"; {state_text(run_dir)}")
    for line in problems:
        print(f"record: {line}")
    print(answer["summary"])
    return 0


def cmd_analyze(args) -> int:
    from sweeps import answer_cache

    run_dir = resolve_run_dir(args.dir)
    spec = spec_from_dir(run_dir, [], read_only=True)
    report = run_dir / "report"
    # a report written from the record as it is now (by the driver at the end of the sweep, or an
    # earlier analyze) and left as written is that report: kept (sweeps.answer_cache)
    answer = answer_cache.load(run_dir, answer_cache.stamp(run_dir, bool(spec.storage)))
    if answer is None or answer.get("report") is None or answer["report"] != answer_cache.report_stamp(report):
        from sweeps.report.summary import report_answer

        compact_if_free(run_dir, None, "analyze", full=True)  # before it is read: the new stamp
        try:
            _, _, answer = report_answer(run_dir, spec)
        except OSError as e:
            raise UserError(f"{run_dir}/report: cannot write the report ({e.strerror or e})") from None
    problems = answer["problems"]
    for line in problems:
        print(f"record: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps({"report": str(report / "report.md"), "record_problems": problems, **answer["json"]},
                         indent=2))
        return 0
    print(answer["summary"])
    print(f"report: {report / 'report.md'}")
    return 0


def cmd_export(args) -> int:
    from sweeps.report.analysis import analyze
    from sweeps.report.audit_results import audit_section, audit_summary
    from sweeps.report.tables import export

    run_dir = resolve_run_dir(args.dir)
    text = export(analyze(run_dir, spec_from_dir(run_dir, [], read_only=True)), args.format)
    audit = audit_summary(run_dir)  # the per-example audit's summary goes with the table
    if audit is not None and args.format == "md":
        text += (audit_section(run_dir) or "") + "\n"  # None only if the audit went meanwhile
    elif audit is not None and args.format == "json":
        from sweeps.report.tables import plain

        doc = json.loads(text)
        doc["audit"] = [{k: plain(v) for k, v in r.items()} for r in audit.to_dict("records")]
        text = json.dumps(doc, indent=2) + "\n"
    elif audit is not None and args.format == "latex":
        from sweeps.report.audit_results import audit_latex

        text += "\n% the per-example audit (unlearn-sweep audit)\n" + (audit_latex(run_dir) or "")  # as above
    emit(text, args.out)
    return 0


def parse_ref(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--ref: expected numbers separated by commas (one per objective), got {text!r}"
                        ) from None


def cmd_compare(args) -> int:
    from sweeps.report import plots
    from sweeps.report.compare import compare, summary_text
    from sweeps.report.summary import write_file

    dirs = [resolve_run_dir(d) for d in args.dirs]
    c = compare([(d, spec_from_dir(d, [], read_only=True)) for d in dirs], ref=parse_ref(args.ref))
    out = Path(args.out) if args.out else Path("runs") / "compare"
    out.mkdir(parents=True, exist_ok=True)
    write_file(out / "compare.png", lambda p: plots.compare_png(c, p))
    write_file(out / "compare.html", plots.compare_html(c))
    write_file(out / "compare.csv", c.table.to_csv(index=False))
    if args.json:
        from sweeps.report.tables import table_records

        print(json.dumps({"reference_point": c.reference_point, "reference_from_data": c.reference_from_data,
                          "objectives": [o.model_dump() for o in c.analyses[0].spec.objectives],
                          "runs": table_records(c.table), "out": str(out)}, indent=2))
        return 0
    print(summary_text(c))
    print(f"plots: {out / 'compare.png'}, {out / 'compare.html'}")
    return 0




def cmd_trials(args) -> int:
    from sweeps.report.tables import plain
    from sweeps.report.trials import trial_rows, trials_text

    run_dir = resolve_run_dir(args.dir)
    spec = spec_from_dir(run_dir, [], read_only=True)
    rows, notice = trial_rows(spec, run_dir)
    if notice:
        print(f"record: {notice}", file=sys.stderr)
    wanted = lambda text: {x.strip().lower() for x in text.split(",") if x.strip()}  # noqa: E731
    if args.method:
        methods = wanted(args.method)
        unknown = methods - {m.lower() for m in spec.methods}
        if unknown:
            raise UserError(f"--method: {', '.join(sorted(unknown))} is not a method of sweep {spec.name} "
                            f"({', '.join(spec.methods)})")
        rows = [r for r in rows if str(r["method"]).lower() in methods]
    if args.state:
        states = wanted(args.state)
        known = {"complete", "fail", "running", "waiting", "pruned"}
        if states - known:
            raise UserError(f"--state: {', '.join(sorted(states - known))} is not a state ({', '.join(sorted(known))})")
        rows = [r for r in rows if r["state"].lower() in states]
    if args.json:
        print(json.dumps([{k: (plain(v) if not isinstance(v, (dict, list)) else v) for k, v in r.items()}
                          for r in rows], indent=2))
        return 0
    print(trials_text(spec, rows))
    return 0
