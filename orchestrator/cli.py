"""`unlearn-sweep`: the command line. Bad input is one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import yaml

from unlearning.config import load_yaml_text, read_yaml, set_path
from unlearning.errors import Aborted, UserError
from unlearning.redact import scrub_text

EXIT_USAGE = 2


def parse_value(text: str) -> Any:
    """`--set` values are YAML scalars or lists: 0.1, true, [1, 2], cosine (no aliases)."""
    try:
        return load_yaml_text(text)
    except yaml.YAMLError:
        return text


def parse_sets(pairs: list[str]) -> list[tuple[str, Any]]:
    out = []
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UserError(f"--set expects field=value, got {pair!r}")
        out.append((key.strip(), parse_value(value)))
    return out


# -- trial ---------------------------------------------------------------------------------------

def trial_config_from_args(args) -> "TrialConfig":  # noqa: F821
    from unlearning.trial import TrialConfig, load_trial_config

    raw: dict[str, Any] = read_yaml(args.config) if args.config else {}
    for flag, path in (("method", "method"), ("data", "data.name"), ("model", "model"),
                       ("data_root", "data.root"), ("device", "device"), ("cache_dir", "cache_dir")):
        if getattr(args, flag) is not None:
            raw = set_path(raw, path, getattr(args, flag))
    for key, value in parse_sets(args.set):
        # a top-level TrialConfig field, or else a parameter of the method
        target = key if key.split(".")[0] in TrialConfig.model_fields else f"params.{key}"
        raw = set_path(raw, target, value)
    return load_trial_config(raw)


def cmd_trial(args) -> int:
    from unlearning.trial import run_trial

    cfg = trial_config_from_args(args)
    progress = None
    if not args.json:
        progress = lambda row: print(f"  epoch {row['epoch']:>3}  loss {row['loss']:.4f}  "  # noqa: E731
                                     f"{row['elapsed_s']:.1f}s", file=sys.stderr)
    result = run_trial(cfg, on_epoch=progress)
    if args.json:
        print(result.model_dump_json())
    else:
        print(format_result(result))
    return 0 if result.state == "COMPLETE" else 1


def format_result(r) -> str:
    keys = ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy")
    head = f"{'':10}" + "".join(f"{k:>14}" for k in (*keys, "avg_gap", "runtime_s"))
    lines = [f"method {r.method}  state {r.state}  device {r.device_name}"]
    if r.error:
        lines.append(f"error: {r.error}")
        return "\n".join(lines)
    lines.append(head)
    rows = [(r.method, r.metrics)] + [(k, v) for k, v in r.reference.items()]
    for name, m in rows:
        lines.append(f"{name:10}" + "".join(f"{m.get(k, float('nan')):>14.2f}"
                                            for k in (*keys, "avg_gap", "runtime_s")))
    lines.append(f"retain examples seen: {int(r.metrics['retain_examples_seen'])}   "
                 f"params: {json.dumps(r.params)}")
    return "\n".join(lines)


# -- methods -------------------------------------------------------------------------------------

def method_docs() -> list[dict[str, Any]]:
    """Every method: name, its description (the first paragraph of its module's docstring, whole),
    the full docstring, and its parameters with their defaults."""
    from unlearning.methods import all_methods

    out = []
    for name, cls in all_methods().items():
        doc = (sys.modules[cls.__module__].__doc__ or "").strip()
        out.append({"name": name, "description": " ".join(doc.split("\n\n")[0].split()), "doc": doc,
                    "parameters": {f: {"default": info.default, "type": _type_name(info.annotation)}
                                   for f, info in cls.Config.model_fields.items()}})
    return out


def _type_name(ann) -> str:
    import typing

    if typing.get_origin(ann) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(ann))
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


def cmd_methods(args) -> int:
    import textwrap

    docs = method_docs()
    if args.name:
        docs = [d for d in docs if d["name"] == args.name]
        if not docs:
            known = ", ".join(d["name"] for d in method_docs())
            raise UserError(f"{args.name}: unknown method; known: {known}")
    if args.json:
        print(json.dumps(docs if not args.name else docs[0], indent=2, default=repr))
        return 0
    for d in docs:
        text = d["doc"] if args.name else d["description"]
        print(f"{d['name']}:")
        for para in text.split("\n\n"):
            print(textwrap.fill(" ".join(para.split()), width=100, initial_indent="    ",
                                subsequent_indent="    ", break_on_hyphens=False))
        print("  parameters:")
        for f, p in d["parameters"].items():
            print(f"    {f} = {p['default']!r}  ({p['type']})")
    return 0


# -- sweeps --------------------------------------------------------------------------------------

def resolve_run_dir(arg: str) -> Path:
    """A run directory given as a path, or by its sweep name (`quickstart` -> runs/quickstart)."""
    p = Path(arg).expanduser()
    if (p / "spec.yaml").is_file() or p.is_dir() or "/" in arg:
        return p
    named = Path("runs") / arg
    return named if named.is_dir() else p


def _spec_from_dir(run_dir: Path, sets: list[tuple[str, Any]], *, read_only: bool = False):
    """The spec a run directory holds. `read_only` verbs (status, analyze, export, compare) check
    its shape only (no data set, no methods, no torch): a run directory copied to a laptop still
    analyzes, and quickly."""
    from sweeps.spec import load_spec

    path = run_dir / "spec.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir}: not a sweep directory (no spec.yaml)")
    return load_spec(read_yaml(path), sets, read_only=read_only)


def _sweep_sets(args) -> list[tuple[str, Any]]:
    sets = parse_sets(args.set)
    if getattr(args, "backend", None):
        sets.append(("resources.backend", args.backend))
    if getattr(args, "address", None):
        sets.append(("resources.address", args.address))
    return sets


EXIT_FAILED = 1  # the sweep ran but stopped on its failure budget, or no trial completed


def _run_and_report(spec, run_dir: Path, args) -> int:
    from orchestrator.runner import run_sweep

    summary = run_sweep(spec, run_dir, force=getattr(args, "force", False),
                        attach=getattr(args, "attach", None))
    if spec.replicate is not None and not summary["stop_failed"]:  # search, then its best on more seeds
        from orchestrator.runner import replicate_sweep

        rs = spec.replicate
        replicate_sweep(spec, run_dir, top=rs.top, seeds=rs.seeds, per_method=rs.per_method, eval=rs.eval)
    if spec.audit is not None:  # the spec asks for per-example audits of its top configurations
        from orchestrator.audit import run_audit

        run_audit(spec, run_dir)
    from sweeps.report.summary import summary_text, write_report  # pandas & co.: after trials, not before
    from sweeps.results import failure_reasons, read_results

    analysis, report = write_report(run_dir, spec)
    print(summary_text(analysis))
    reasons = failure_reasons(read_results(run_dir))
    if reasons:
        print("failures on record (reason: runs):")
        for reason, n in reasons:
            print(f"  {n:>5}  {reason}")
    print(f"report: {report}")
    print(f"record: {run_dir / 'trials'} ({summary['done']} trial(s) done, {summary['failed']} failed, "
          f"{summary['wall_s']:.1f}s)")
    if summary["stopped"] and summary["stop_failed"]:
        print(f"unlearn-sweep: the sweep stopped early: {summary['stopped']}", file=sys.stderr)
        return EXIT_FAILED
    if summary["failed"] and not summary["done"] and not analysis_has_complete(analysis):
        print("unlearn-sweep: no trial completed; the reasons are above", file=sys.stderr)
        return EXIT_FAILED
    return 0


def analysis_has_complete(analysis) -> bool:
    c = analysis.configs
    return bool(len(c)) and bool((c["state"] == "COMPLETE").any())


def cmd_run(args) -> int:
    from sweeps.spec import load_spec, read_spec_source, spec_conflict

    spec = load_spec(read_spec_source(args.spec), _sweep_sets(args))
    run_dir = Path(args.out).expanduser() if args.out else Path("runs") / spec.name
    old = run_dir / "spec.yaml"
    if old.is_file():
        try:  # re-validated, so fields added since it was written compare by their defaults
            before = load_spec(read_yaml(old), check_data=False).dump()
        except UserError as e:
            raise UserError(f"{old} no longer loads ({e}); resume it by hand or choose another --out"
                            ) from None
        conflict = spec_conflict(before, spec.dump())
        if conflict:  # n_trials, seeds, resources ... may change: that extends the same sweep
            raise UserError(f"{run_dir} already holds sweep {spec.name!r} with a different {conflict}; "
                            f"continue it with `unlearn-sweep resume {run_dir}` or choose another --out")
    return _run_and_report(spec, run_dir, args)


def cmd_resume(args) -> int:
    run_dir = resolve_run_dir(args.dir)
    return _run_and_report(_spec_from_dir(run_dir, _sweep_sets(args)), run_dir, args)


def _driver_state(run_dir: Path) -> str:
    from sweeps.rundir import DriverLock, alive

    owner = DriverLock(run_dir).owner()
    if not owner:
        return "no driver running"
    pid, host = owner.get("pid"), owner.get("host")
    if host != socket.gethostname():  # a process on another host cannot be checked from here
        return f"lock held by pid {pid} on {host} since {owner.get('started', '?')} (not checkable here)"
    if isinstance(pid, int) and alive(pid):
        return f"driver running (pid {pid}, since {owner.get('started', '?')})"
    return f"no driver running (a stale lock of pid {pid} is left; the next run takes it over)"


def cmd_status(args) -> int:
    from sweeps.report.analysis import analyze_runs
    from sweeps.report.summary import summary_text, to_json
    from sweeps.results import record_problems, scan_record
    from sweeps.rundir import DriverLock, alive
    from sweeps.study import superseded

    run_dir = resolve_run_dir(args.dir)
    spec = _spec_from_dir(run_dir, [], read_only=True)
    scans = scan_record(run_dir)  # the record is read once
    study, problems = record_problems(spec, run_dir, scans)
    states: dict[str, int] = {}
    sup = superseded(study) if study is not None else set()
    for t in (study.get_trials(deepcopy=False) if study is not None else []):
        name = t.state.name + (" (re-enqueued)" if t.number in sup else "")
        states[name] = states.get(name, 0) + 1
    analysis = analyze_runs(scans["trials"].table.to_pandas(), spec, run_dir=run_dir)
    if args.json:
        owner = DriverLock(run_dir).owner() or {}
        pid, host = owner.get("pid"), owner.get("host")
        live = (isinstance(pid, int) and alive(pid)) if host in (None, socket.gethostname()) else None
        print(json.dumps({"run_dir": str(run_dir), "n_trials": spec.n_trials, "study": states,
                          "driver": {"pid": pid, "host": host, "running": live},
                          "record_problems": problems, **to_json(analysis)}, indent=2))
        return 0
    print(f"sweep {spec.name} in {run_dir}: n_trials {spec.n_trials}, study "
          + (", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "empty")
          + f"; {_driver_state(run_dir)}")
    for line in problems:
        print(f"record: {line}")
    print(summary_text(analysis))
    return 0


def cmd_analyze(args) -> int:
    from sweeps import results as R
    from sweeps.report.summary import summary_text, to_json, write_report
    from sweeps.results import record_problems
    from sweeps.rundir import DriverLock

    run_dir = resolve_run_dir(args.dir)
    spec = _spec_from_dir(run_dir, [], read_only=True)
    scans = R.scan_record(run_dir)  # read once, for the problems and the compaction
    _, problems = record_problems(spec, run_dir, scans)
    for line in problems:
        print(f"record: {line}", file=sys.stderr)
    lock = DriverLock(run_dir)
    try:  # compact a large record while no driver writes to it; skipped when one does
        lock.acquire()
        try:
            R.compact(run_dir, scans)
        finally:
            lock.release()
    except (UserError, OSError):
        pass
    try:
        analysis, report = write_report(run_dir, spec)
    except OSError as e:
        raise UserError(f"{run_dir}/report: cannot write the report ({e.strerror or e})") from None
    if args.json:
        print(json.dumps({"report": str(report), "record_problems": problems, **to_json(analysis)},
                         indent=2))
        return 0
    print(summary_text(analysis))
    print(f"report: {report}")
    return 0


def cmd_export(args) -> int:
    from sweeps.report.analysis import analyze
    from sweeps.report.audit_results import audit_section, audit_summary
    from sweeps.report.tables import export

    run_dir = resolve_run_dir(args.dir)
    text = export(analyze(run_dir, _spec_from_dir(run_dir, [], read_only=True)), args.format)
    audit = audit_summary(run_dir)  # the per-example audit's summary goes with the table
    if audit is not None and args.format == "md":
        text += audit_section(run_dir) + "\n"
    elif audit is not None and args.format == "json":
        from sweeps.report.tables import plain

        doc = json.loads(text)
        doc["audit"] = [{k: plain(v) for k, v in r.items()} for r in audit.to_dict("records")]
        text = json.dumps(doc, indent=2) + "\n"
    elif audit is not None and args.format == "latex":
        text += "\n% the per-example audit (unlearn-sweep audit)\n" + audit.style.hide(axis="index") \
            .format(precision=3, na_rep="--", escape="latex").format_index(escape="latex", axis=1) \
            .to_latex(hrules=True)
    _emit(text, args.out)
    return 0


def _emit(text: str, out: str | None) -> None:
    """To stdout, or to a file written under a temp name and renamed (never half-written)."""
    if not out:
        sys.stdout.write(text)
        return
    path = Path(out).expanduser()
    if not path.parent.is_dir():
        raise UserError(f"--out: {path.parent} is not a folder")
    from sweeps.report.summary import write_file

    write_file(path, text)
    print(f"wrote {path}", file=sys.stderr)


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
    c = compare([(d, _spec_from_dir(d, [], read_only=True)) for d in dirs], ref=parse_ref(args.ref))
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


def cmd_replicate(args) -> int:
    from orchestrator.runner import REPLICATE_SETS, replicate_sweep
    from sweeps.report.summary import summary_text, write_report

    run_dir = resolve_run_dir(args.dir)
    sets = _sweep_sets(args)
    for key, _ in sets:
        if not key.startswith(REPLICATE_SETS):
            raise UserError(f"--set {key}: replicate reruns the sweep's own configurations; only "
                            f"{', '.join(p.rstrip('.') + ('.*' if p.endswith('.') else '') for p in REPLICATE_SETS)}"
                            " may change")
    spec = _spec_from_dir(run_dir, sets)
    out = replicate_sweep(spec, run_dir, top=args.top, seeds=args.seeds, per_method=args.per_method,
                          force=args.force)
    analysis, report = write_report(run_dir, spec)
    print(summary_text(analysis))
    print(f"report: {report}")
    print(f"replicate: {out['done']} configuration(s) done, {out['failed']} failed, {out['reused']} run(s) "
          f"already on record, {out['wall_s']:.1f}s")
    return EXIT_FAILED if out["failed"] and not out["done"] else 0


def cmd_audit(args) -> int:
    from pydantic import ValidationError

    from orchestrator.audit import run_audit
    from sweeps.report.audit_results import audit_dir
    from sweeps.spec import AuditSpec
    from unlearning.config import one_line

    run_dir = resolve_run_dir(args.dir)
    spec = _spec_from_dir(run_dir, _sweep_sets(args))
    over = {k: v for k, v in (("top", args.top), ("shadows", args.shadows)) if v is not None}
    if args.kind:
        over["kinds"] = [k.strip() for k in args.kind.split(",") if k.strip()]
    try:
        audit = AuditSpec(**{**(spec.audit.model_dump() if spec.audit else {}), **over})
    except ValidationError as e:
        raise UserError(f"audit: {one_line(e)}") from None
    out = run_audit(spec, run_dir, audit)
    print((audit_dir(run_dir) / "summary.md").read_text())
    print(f"audit: {audit_dir(run_dir)} ({out['tasks']} task(s), {out['ran']} run now, "
          f"{out['wall_s']:.1f}s)")
    return 0


def cmd_presets(args) -> int:
    from sweeps.spec import PRESETS_DIR, preset_names

    if args.action == "show":
        if not args.name:
            raise UserError(f"presets show: name a preset ({', '.join(preset_names())})")
        if args.name not in preset_names():
            raise UserError(f"{args.name}: no such preset (presets: {', '.join(preset_names())})")
        sys.stdout.write((PRESETS_DIR / f"{args.name}.yaml").read_text())
        return 0
    import textwrap

    for name in preset_names():
        raw = read_yaml(PRESETS_DIR / f"{name}.yaml")
        print(f"{name}:")
        print(textwrap.fill(" ".join(str(raw.get("description", "")).split()), width=100,
                            initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False))
    print("\nprint one to start a spec from: unlearn-sweep presets show NAME > my_spec.yaml", file=sys.stderr)
    return 0


# -- entry ---------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with bad usage as one line (not the usage block plus a line) and exit code 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)",
              file=sys.stderr)
        sys.exit(EXIT_USAGE)


class Registry:
    """The names a registry holds, for `--help` (`%(choices)s`), read on first use so that every
    other verb starts without importing torch. Not a filter: argparse accepts any value
    (`__contains__` is always true) and the config validates it, so a bad name is one UserError
    line naming the key and its known values, like every other bad input."""

    def __init__(self, load):
        self._load, self._items = load, None

    def __iter__(self):
        if self._items is None:
            self._items = list(self._load())
        return iter(self._items)

    def __contains__(self, item) -> bool:
        return True


def _methods():
    from unlearning.methods import all_methods

    return all_methods()


def _models():
    from unlearning.models import MODELS

    return sorted(MODELS)


def _datasets():
    import typing

    from unlearning.data import DataConfig

    return typing.get_args(DataConfig.model_fields["name"].annotation)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("unlearn-sweep")
    except PackageNotFoundError:  # run from a source tree without installing
        from unlearning import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="unlearn-sweep", description=__doc__)
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("trial", help="run one unlearning trial")
    t.add_argument("--config", help="a YAML file holding a TrialConfig")
    t.add_argument("--method", choices=Registry(_methods), metavar="METHOD", help="one of: %(choices)s")
    t.add_argument("--data", choices=Registry(_datasets), metavar="DATA", help="one of: %(choices)s")
    t.add_argument("--data-root", dest="data_root", help="the folder holding a disk data set's files")
    t.add_argument("--model", choices=Registry(_models), metavar="MODEL", help="one of: %(choices)s")
    t.add_argument("--device", help="auto (default) | cpu | cuda | cuda:N")
    t.add_argument("--cache-dir", dest="cache_dir", help="the oracle cache (default $UNLEARN_SWEEP_CACHE "
                   "or ~/.cache/unlearn-sweep)")
    t.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any config field (data.n_train=500) or method parameter (lr=0.01)")
    t.add_argument("--json", action="store_true", help="print the TrialResult as one JSON object")
    t.set_defaults(func=cmd_trial)

    m = sub.add_parser("methods", help="the methods: descriptions, parameters and defaults")
    m.add_argument("name", nargs="?", metavar="METHOD", help="print this method's whole documentation")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(func=cmd_methods)

    setf = dict(action="append", default=[], metavar="PATH=VALUE",
                help="override any spec field before validation (n_trials=4, methods.rl.space.lr.high=0.1)")
    run_help = "a run directory, or a sweep's name (quickstart = runs/quickstart)"
    r = sub.add_parser("run", help="run a sweep from a spec file or a preset (see `presets`)")
    r.add_argument("spec", metavar="SPEC|PRESET")
    r.add_argument("--out", help="the run directory (default runs/<name>)")
    r.set_defaults(func=cmd_run)
    rs = sub.add_parser("resume", help="continue a sweep (after a crash, Ctrl-C, or with more trials)")
    rs.add_argument("dir", metavar="RUN", help=run_help)
    rs.set_defaults(func=cmd_resume)
    for p in (r, rs):
        p.add_argument("--force", action="store_true",
                       help="take over a driver.lock written on another host (only if that driver is gone)")
        p.add_argument("--attach", metavar="STUDY",
                       help="join an existing study of that name in the spec's shared storage on purpose")
        p.add_argument("--backend", choices=["inline", "ray"], help="override resources.backend")
        p.add_argument("--address", help="an existing Ray cluster: auto, host:port or ray://host:port "
                       "(default: RAY_ADDRESS, else an embedded local Ray)")
        p.add_argument("--set", **setf)

    st = sub.add_parser("status", help="trial counts and the current Pareto front of a sweep")
    st.add_argument("dir", metavar="RUN", help=run_help)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)

    an = sub.add_parser("analyze", help="write the report (Pareto front, tables, plots) of a sweep")
    an.add_argument("dir", metavar="RUN", help=run_help)
    an.add_argument("--json", action="store_true",
                    help="print the analysis as JSON (the report is written too)")
    an.set_defaults(func=cmd_analyze)

    rp = sub.add_parser("replicate", help="rerun a sweep's top configurations on more seeds, in the "
                        "same record (mean ± std over many seeds in every table)")
    rp.add_argument("dir", metavar="RUN", help=run_help)
    rp.add_argument("--top", type=int, default=1, help="the top K configurations by the sweep's "
                    "selection rule (default 1)")
    rp.add_argument("--per-method", dest="per_method", action="store_true",
                    help="the top K of each method instead (a paper's table: the best of each)")
    rp.add_argument("--seeds", required=True, help="seeds as in the spec: 0-9, 0,1,2 (an int sets the "
                    "spec's seed_axes, by default unlearn_seed)")
    rp.add_argument("--force", action="store_true", help="as for run")
    rp.add_argument("--backend", choices=["inline", "ray"], help="override resources.backend")
    rp.add_argument("--address", help="an existing Ray cluster (as for run)")
    rp.add_argument("--set", **setf)
    rp.set_defaults(func=cmd_replicate)

    au = sub.add_parser("audit", help="per-example audits (U-LiRA, KLoM, relearn time) of a sweep's "
                        "top configurations: shadow and oracle models trained as parallel tasks")
    au.add_argument("dir", metavar="RUN", help="a run directory or a sweep name (runs/NAME)")
    au.add_argument("--top", type=int, help="audit the top K configurations (default: spec or 3)")
    au.add_argument("--shadows", type=int, help="N shadow / original / reference models (default 16)")
    au.add_argument("--kind", help="comma-separated: ulira,klom,relearn (default: all three)")
    au.add_argument("--backend", choices=["inline", "ray"], help="override resources.backend")
    au.add_argument("--address", help="an existing Ray cluster (as for run)")
    au.add_argument("--set", **setf)
    au.set_defaults(func=cmd_audit)

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

    pr = sub.add_parser("presets", help="list the bundled sweep specs; `presets show NAME` prints one")
    pr.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    pr.add_argument("name", nargs="?", metavar="NAME", help="the preset to print as YAML (with show)")
    pr.set_defaults(func=cmd_presets)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 1 the sweep failed (failure budget, no trial completed) or could not
    write its record; 2 bad input (one line, nothing written); 128 + N stopped by signal N."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a reader that left (a closed pipe) is caught below
        return code
    except UserError as e:
        print(f"unlearn-sweep: error: {scrub_text(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except Aborted as e:
        print(f"unlearn-sweep: error: {scrub_text(str(e))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", 2)
        print(f"unlearn-sweep: interrupted ({'SIGINT' if signum == 2 else getattr(e, 'args', [''])[0]}); "
              "`unlearn-sweep resume` continues", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # `unlearn-sweep status x | head -1`: the reader left, not an error
        # (an OSError too: caught first). Point stdout at nothing so the exit-time flush is quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the file system refused something not foreseen: still one line
        if os.environ.get("UNLEARN_SWEEP_DEBUG"):
            raise
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"unlearn-sweep: error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
