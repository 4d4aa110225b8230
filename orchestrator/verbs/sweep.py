"""The verbs that run sweeps: run, resume, replicate, audit, and the presets they start from."""
from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.verbs.common import (EXIT_FAILED, PLUGIN_FLAG, RUN_HELP, SET_FLAG, resolve_run_dir,
                                       spec_from_dir, sweep_sets, with_cli_plugins)
from unlearning.config import read_yaml
from unlearning.errors import UserError


def add_parsers(sub) -> None:
    setf, run_help = SET_FLAG, RUN_HELP
    r = sub.add_parser("run", help="run a sweep from a spec file or a preset (see `presets`)")
    r.add_argument("spec", metavar="SPEC|PRESET")
    r.add_argument("--out", help="the run directory (default runs/<name>)")
    r.add_argument("--plugin", **PLUGIN_FLAG)
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
        p.add_argument("--keep-models", dest="keep_models", action="store_true",
                       help="keep every trial's unlearned model in RUN/models/ (spec key keep_models)")

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

    pr = sub.add_parser("presets", help="list the bundled sweep specs; `presets show NAME` prints one")
    pr.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    pr.add_argument("name", nargs="?", metavar="NAME", help="the preset to print as YAML (with show)")
    pr.set_defaults(func=cmd_presets)


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
    from sweeps.spec import load_spec, read_spec_source, spec_conflict, spec_folder

    spec = load_spec(with_cli_plugins(read_spec_source(args.spec), args), sweep_sets(args),
                     base=spec_folder(args.spec))
    run_dir = Path(args.out).expanduser() if args.out else Path("runs") / spec.name
    old = run_dir / "spec.yaml"
    if old.is_file():
        try:  # re-validated, so fields added since it was written compare by their defaults
            before = load_spec(read_yaml(old), read_only=True).dump()  # its plug-ins may have moved
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
    return _run_and_report(spec_from_dir(run_dir, sweep_sets(args)), run_dir, args)


def cmd_replicate(args) -> int:
    from orchestrator.runner import REPLICATE_SETS, replicate_sweep
    from sweeps.report.summary import summary_text, write_report

    run_dir = resolve_run_dir(args.dir)
    sets = sweep_sets(args)
    for key, _ in sets:
        if not key.startswith(REPLICATE_SETS):
            raise UserError(f"--set {key}: replicate reruns the sweep's own configurations; only "
                            f"{', '.join(p.rstrip('.') + ('.*' if p.endswith('.') else '') for p in REPLICATE_SETS)}"
                            " may change")
    spec = spec_from_dir(run_dir, sets)
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
    spec = spec_from_dir(run_dir, sweep_sets(args))
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


