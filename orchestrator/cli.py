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

from unlearning.config import read_yaml, set_path
from unlearning.errors import UserError

EXIT_USAGE = 2


def parse_value(text: str) -> Any:
    """`--set` values are YAML scalars or lists: 0.1, true, [1, 2], cosine."""
    try:
        return yaml.safe_load(text)
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

def cmd_methods(args) -> int:
    from unlearning.methods import all_methods

    for name, cls in all_methods().items():
        first = (sys.modules[cls.__module__].__doc__ or "").strip().split("\n\n")[0]
        doc = " ".join(first.split())
        print(f"{name}: {doc if len(doc) <= 150 else doc[:149] + '…'}")
        for field, info in cls.Config.model_fields.items():
            print(f"    {field} = {info.default!r}")
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
    """The spec a run directory holds. `read_only` verbs (status, analyze, export, compare) skip
    the checks that need the data set: a run directory copied to a laptop still analyzes."""
    from sweeps.spec import load_spec

    path = run_dir / "spec.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir}: not a sweep directory (no spec.yaml)")
    return load_spec(read_yaml(path), sets, check_data=not read_only)


def _sweep_sets(args) -> list[tuple[str, Any]]:
    sets = parse_sets(args.set)
    if getattr(args, "backend", None):
        sets.append(("resources.backend", args.backend))
    if getattr(args, "address", None):
        sets.append(("resources.address", args.address))
    return sets


def _run_and_report(spec, run_dir: Path) -> int:
    from orchestrator.runner import run_sweep
    from sweeps.analysis import summary_text, write_report

    summary = run_sweep(spec, run_dir)
    if spec.audit is not None:  # the spec asks for per-example audits of its top configurations
        from orchestrator.audit import run_audit

        run_audit(spec, run_dir)
    analysis, report = write_report(run_dir, spec)
    print(summary_text(analysis))
    print(f"report: {report}")
    print(f"record: {run_dir / 'trials'} ({summary['done']} trial(s) done, {summary['failed']} failed, "
          f"{summary['wall_s']:.1f}s)")
    return 0


def cmd_run(args) -> int:
    from sweeps.spec import load_spec, read_spec_source

    spec = load_spec(read_spec_source(args.spec), _sweep_sets(args))
    run_dir = Path(args.out) if args.out else Path("runs") / spec.name
    old = run_dir / "spec.yaml"
    if old.is_file() and yaml.safe_load(old.read_text()) != spec.dump():
        raise UserError(f"{run_dir} already holds a sweep with a different spec; continue it with "
                        f"`unlearn-sweep resume {run_dir}` or choose another --out")
    return _run_and_report(spec, run_dir)


def cmd_resume(args) -> int:
    run_dir = resolve_run_dir(args.dir)
    return _run_and_report(_spec_from_dir(run_dir, _sweep_sets(args)), run_dir)


def cmd_status(args) -> int:
    import optuna

    from sweeps.analysis import analyze, summary_text
    from sweeps.study import REQUEUED, DriverLock, _alive, storage_for

    run_dir = resolve_run_dir(args.dir)
    spec = _spec_from_dir(run_dir, [], read_only=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage_for(spec, run_dir))
        states: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            name = t.state.name + (" (re-enqueued)" if REQUEUED in t.user_attrs else "")
            states[name] = states.get(name, 0) + 1
    except KeyError:
        states = {}
    lock = DriverLock(run_dir).path
    pid, _, host = (lock.read_text().strip() if lock.is_file() else "").partition("@")
    if host and host != socket.gethostname():  # cannot check a process on another host
        driver = f"; lock held by pid {pid} on {host}"
    else:
        live = pid.isdigit() and _alive(int(pid))
        driver = f"; driver running (pid {pid})" if live else "; no driver running"
    print(f"sweep {spec.name} in {run_dir}: n_trials {spec.n_trials}, study "
          + (", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "empty") + driver)
    print(summary_text(analyze(run_dir, spec)))
    return 0


def cmd_analyze(args) -> int:
    from sweeps.analysis import summary_text, write_report

    run_dir = resolve_run_dir(args.dir)
    spec = _spec_from_dir(run_dir, [], read_only=True)
    analysis, report = write_report(run_dir, spec)
    print(summary_text(analysis))
    print(f"report: {report}")
    return 0


def cmd_audit(args) -> int:
    from pydantic import ValidationError

    from orchestrator.audit import run_audit
    from sweeps.audit_results import audit_dir
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

    for name in preset_names():
        raw = yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text()) or {}
        print(f"{name}: {str(raw.get('description', '')).strip().splitlines()[0] if raw.get('description') else ''}")
    return 0


# -- entry ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="unlearn-sweep", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("trial", help="run one unlearning trial")
    t.add_argument("--config", help="a YAML file holding a TrialConfig")
    t.add_argument("--method")
    t.add_argument("--data", help="digits | synthetic | cifar10 | cifar100 | svhn | tinyimagenet")
    t.add_argument("--data-root", dest="data_root")
    t.add_argument("--model")
    t.add_argument("--device")
    t.add_argument("--cache-dir", dest="cache_dir")
    t.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any config field (data.n_train=500) or method parameter (lr=0.01)")
    t.add_argument("--json", action="store_true", help="print the TrialResult as one JSON object")
    t.set_defaults(func=cmd_trial)

    m = sub.add_parser("methods", help="list the methods, their parameters and defaults")
    m.set_defaults(func=cmd_methods)

    setf = dict(action="append", default=[], metavar="PATH=VALUE",
                help="override any spec field before validation (n_trials=4, methods.rl.space.lr.high=0.1)")
    r = sub.add_parser("run", help="run a sweep from a spec file or a preset (see `presets`)")
    r.add_argument("spec", metavar="SPEC|PRESET")
    r.add_argument("--out", help="the run directory (default runs/<name>)")
    r.set_defaults(func=cmd_run)
    rs = sub.add_parser("resume", help="continue a sweep (after a crash, Ctrl-C, or with more trials)")
    rs.add_argument("dir", metavar="DIR")
    rs.set_defaults(func=cmd_resume)
    for p in (r, rs):
        p.add_argument("--backend", choices=["inline", "ray"], help="override resources.backend")
        p.add_argument("--address", help="an existing Ray cluster: auto, host:port or ray://host:port "
                       "(default: RAY_ADDRESS, else an embedded local Ray)")
        p.add_argument("--set", **setf)

    st = sub.add_parser("status", help="trial counts and the current Pareto front of a sweep")
    st.add_argument("dir", metavar="DIR")
    st.set_defaults(func=cmd_status)

    an = sub.add_parser("analyze", help="write the report (Pareto front, tables, plots) of a sweep")
    an.add_argument("dir", metavar="DIR")
    an.set_defaults(func=cmd_analyze)

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

    pr = sub.add_parser("presets", help="list the bundled sweep specs")
    pr.set_defaults(func=cmd_presets)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"unlearn-sweep: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("unlearn-sweep: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `unlearn-sweep methods | head`: the reader left, not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the exit-time flush quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
