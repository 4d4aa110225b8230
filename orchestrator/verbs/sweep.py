"""The verbs that run sweeps: run, resume, replicate, audit, and the presets they start from."""
from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.verbs.common import (EXIT_FAILED, PLUGIN_FLAG, RUN_HELP, SET_FLAG, continue_spec,
                                       recorded_spec, resolve_run_dir, spec_from_dir, sweep_sets,
                                       with_cli_plugins)
from unlearning.config import read_yaml
from unlearning.errors import UserError


def add_parsers(sub) -> None:
    setf, run_help = SET_FLAG, RUN_HELP
    r = sub.add_parser("run", help="run a sweep from a spec file or a preset (see `presets`)")
    r.add_argument("spec", metavar="SPEC|PRESET")
    r.add_argument("--out", help="the run directory (default runs/<name>)")
    r.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="print the plan (as `plan`) and start nothing")
    r.add_argument("--no-probe", dest="no_probe", action="store_true", help="with --dry-run: no timing probe")
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
    rp.add_argument("--set", **{**setf, "help": "override base.eval.*, base.device, base.cache_dir, resources.* "
                                "or tracking.* for these runs (base.eval.mia=true, resources.max_concurrent=2); "
                                "nothing that would make other configurations"})
    rp.set_defaults(func=cmd_replicate)

    au = sub.add_parser("audit", help="per-example audits (U-LiRA, KLoM, relearn time) of a sweep's "
                        "top configurations: shadow and oracle models trained as parallel tasks")
    au.add_argument("dir", metavar="RUN", help="a run directory or a sweep name (runs/NAME)")
    au.add_argument("--top", type=int, help="audit the top K configurations (default: spec or 3)")
    au.add_argument("--shadows", type=int, help="N shadow / original / reference models (default 16)")
    au.add_argument("--kind", help="comma-separated: ulira,klom,relearn (default: all three)")
    au.add_argument("--backend", choices=["inline", "ray"], help="override resources.backend")
    au.add_argument("--address", help="an existing Ray cluster (as for run)")
    au.add_argument("--set", **{**setf, "help": "override the audit's settings or resources "
                                "(audit.klom_examples=500, audit.relearn.max_steps=400, resources.max_concurrent=2)"})
    au.set_defaults(func=cmd_audit)

    pl = sub.add_parser("plan", help="before spending compute: the resolved search space, configurations "
                        "x seeds = runs, the oracles to train, a time estimate; starts and writes nothing")
    pl.add_argument("spec", metavar="SPEC|PRESET|RUN", help="a spec file, a preset, or a run directory to continue")
    pl.add_argument("--out", help="the run directory (default runs/<name>)")
    pl.add_argument("--backend", choices=["inline", "ray"], help="override resources.backend")
    pl.add_argument("--set", **setf)
    pl.add_argument("--no-probe", dest="no_probe", action="store_true",
                    help="no timing probe (the estimate then needs runs on record)")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.set_defaults(func=cmd_plan)

    sp = sub.add_parser("stop", help="stop a running sweep, replicate or audit from another shell, "
                        "gracefully (as Ctrl-C: trials re-enqueued, `resume` continues)")
    sp.add_argument("dir", metavar="RUN", help=run_help)
    sp.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                    help="how long to wait for it to let go of its lock (default 60; 0: do not wait)")
    sp.set_defaults(func=cmd_stop)

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
    _to_wandb(spec, run_dir, analysis, report)
    print(summary_text(analysis))
    if spec.replicate is not None:
        print(replication_text(analysis))
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


def replication_text(analysis) -> str:
    """What replication found, for the terminal: per replicated configuration its search-seed value
    beside its replicated mean ± std [95% CI] and n, feasible then and now, on the front or not."""
    from sweeps.report import tables

    rep = tables.replication_table(analysis)
    if rep.empty:
        return "replication: no configuration has a complete replicated run yet"
    return "replication (search seeds -> all seeds; mean ± sample std [95% t-interval]):\n" + "\n".join(
        "  " + ln for ln in rep.to_markdown(index=False, tablefmt="plain", disable_numparse=True).splitlines())


def _to_wandb(spec, run_dir: Path, analysis, report: Path) -> None:
    """With W&B on, the sweep-level run beside the per-trial ones (orchestrator/tracking.py)."""
    from orchestrator.tracking import log_sweep_report

    log_sweep_report(spec, run_dir, analysis, report.parent,
                     warn=lambda msg: print(f"[{spec.name}] {msg}", file=sys.stderr))


def analysis_has_complete(analysis) -> bool:
    c = analysis.configs
    return bool(len(c)) and bool((c["state"] == "COMPLETE").any())


def cmd_run(args) -> int:
    if getattr(args, "dry_run", False):
        return cmd_plan(args)
    from sweeps.spec import load_spec, read_spec_source, spec_folder

    spec = load_spec(with_cli_plugins(read_spec_source(args.spec), args), sweep_sets(args),
                     base=spec_folder(args.spec))
    run_dir = Path(args.out).expanduser() if args.out else Path("runs") / spec.name
    args.continue_with = f"`unlearn-sweep resume {run_dir}` continues"
    if (run_dir / "spec.yaml").is_file():  # the same sweep, perhaps extended; or refused
        recorded = recorded_spec(run_dir, writing=True)  # re-validated: fields added since take defaults
        spec = continue_spec(run_dir, recorded, spec, origin="this spec",
                             hint=f"continue it with `unlearn-sweep resume {run_dir}` or choose another --out")
    return _run_and_report(spec, run_dir, args)


def cmd_resume(args) -> int:
    run_dir = resolve_run_dir(args.dir)
    args.continue_with = f"`unlearn-sweep resume {run_dir}` continues"
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
    spec = spec_from_dir(run_dir, sets, extend=False)  # its own rule, above; spec.yaml is left as it is
    args.continue_with = "running the same command again continues"
    out = replicate_sweep(spec, run_dir, top=args.top, seeds=args.seeds, per_method=args.per_method,
                          force=args.force)
    analysis, report = write_report(run_dir, spec)
    _to_wandb(spec, run_dir, analysis, report)
    print(summary_text(analysis))
    print(replication_text(analysis))
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
    args.continue_with = "running the same command again continues"
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




def cmd_stop(args) -> int:
    """SIGTERM to the process holding the run's lock (orchestrator/control.py); exit 0 once it has
    gone, 1 when nothing runs there or it is still stopping after --wait."""
    from orchestrator.control import NothingToStop, stop

    run_dir = resolve_run_dir(args.dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    try:
        return 0 if stop(run_dir, wait_s=max(args.wait, 0.0)) else EXIT_FAILED
    except NothingToStop as e:
        print(f"unlearn-sweep: {e}", file=sys.stderr)
        return EXIT_FAILED


def cmd_plan(args) -> int:
    """`plan` and `run --dry-run`: orchestrator/plan.py, printed; nothing started or written."""
    import json

    from orchestrator.plan import make_plan, plan_text
    from sweeps.spec import load_spec, read_spec_source

    source = Path(args.spec).expanduser()
    if (source / "spec.yaml").is_file() or (not source.exists() and (Path("runs") / args.spec / "spec.yaml").is_file()
                                            and not args.spec.endswith((".yaml", ".yml"))):
        run_dir = resolve_run_dir(args.spec)  # a run to continue: its own spec, as `resume` takes it
        spec = spec_from_dir(run_dir, sweep_sets(args))
    else:
        spec = load_spec(read_spec_source(args.spec), sweep_sets(args))
        run_dir = Path(args.out).expanduser() if args.out else Path("runs") / spec.name
    p = make_plan(spec, run_dir, do_probe=not getattr(args, "no_probe", False))
    print(json.dumps(p, indent=2, default=str) if getattr(args, "json", False) else plan_text(p))
    return 0
