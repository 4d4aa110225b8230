"""`unlearn-sweep model`: the unlearned models a sweep kept (replicate, `run --keep-models`), listed,
described, or written out to take away. Reads only the run directory (no torch, no data)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from orchestrator.verbs.common import RUN_HELP, resolve_run_dir, spec_from_dir
from unlearning.errors import UserError


def add_parsers(sub) -> None:
    m = sub.add_parser("model", help="the unlearned models a sweep kept (replicate, run --keep-models): "
                       "list them, or write one out (--out) to load with unlearning.load_unlearned")
    m.add_argument("dir", metavar="RUN", help=RUN_HELP)
    which = m.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, help="the configuration's trial number (as in the report)")
    which.add_argument("--best", action="store_true", help="the sweep's best configuration, by its "
                       "selection rule (the one `replicate --top 1` takes)")
    m.add_argument("--seed", type=int, help="which seed: an int as in the spec's `seeds` (its seed_axes "
                   "say which seeds it sets); needed when the trial has models for several")
    m.add_argument("--out", metavar="FILE.pt", help="write the model here (a state dict), its .json "
                   "beside it")
    m.add_argument("--json", action="store_true", help="print the description(s) as JSON")
    m.set_defaults(func=cmd_model)


def _seeds(info: dict[str, Any]) -> str:
    s = info.get("seeds") or {}
    return "/".join(str(s.get(k, "?")) for k in ("split_seed", "train_seed", "unlearn_seed"))


def _line(info: dict[str, Any]) -> str:
    m = info.get("metrics") or {}
    nums = "  ".join(f"{short} {m[k]:.2f}" for k, short in (("unlearn_acc", "UA"), ("retain_acc", "RA"),
                                                     ("test_acc", "TA")) if isinstance(m.get(k), (int, float)))
    return f"trial {info.get('trial_number', '?'):>4}  seeds {_seeds(info):>8}  {info.get('method', '?'):<14} " \
           f"{nums}  {info['path']}"


def pick(models: list[dict[str, Any]], trial: int, seed: int | None, spec) -> dict[str, Any]:
    """The kept model of `trial` at `seed` (an int seed entry, as `spec.seed_list` reads it): one
    UserError line when there is none or the choice is ambiguous."""
    mine = [i for i in models if i.get("trial_number") == trial]
    if not mine:
        # a description without a trial number (a model put there by hand) has none to offer
        have = sorted({n for i in models if (n := i.get("trial_number")) is not None})
        raise UserError(f"trial {trial}: no model kept (models kept for trials: "
                        f"{', '.join(map(str, have)) or 'none'}; replicate keeps them, or run --keep-models)")
    if seed is not None:
        want = spec.seed_list([seed])[0]
        mine = [i for i in mine if (i.get("seeds") or {}) == want]
        if not mine:
            seeds = ", ".join(f"{k}={v}" for k, v in want.items())
            raise UserError(f"trial {trial}: no model kept for seed {seed} ({seeds})")
    if len({json.dumps(i.get("seeds"), sort_keys=True) for i in mine}) > 1:
        raise UserError(f"trial {trial} has models for several seeds (split/train/unlearn: "
                        f"{', '.join(_seeds(i) for i in mine)}): name one with --seed")
    return mine[0]


def best_trial(run_dir: Path, spec) -> int:
    """The trial number of the sweep's best configuration by its own selection rule."""
    from sweeps.report.analysis import analyze, top_configs

    top = top_configs(analyze(run_dir, spec), 1)
    if top.empty:
        raise UserError(f"{run_dir}: no complete feasible configuration on record")
    return int(top.iloc[0]["trial_number"])


def cmd_model(args) -> int:
    from unlearning.kept import kept_models

    run_dir = resolve_run_dir(args.dir)
    spec = spec_from_dir(run_dir, [], read_only=True)
    models = kept_models(run_dir / "models")
    if args.best:
        args.trial = best_trial(run_dir, spec)
    if args.trial is None:
        if args.out or args.seed is not None:
            raise UserError("model: --seed and --out need --trial N or --best")
        if args.json:
            print(json.dumps(models, indent=1))
        elif not models:
            print(f"{run_dir}: no model kept (replicate keeps them, or run --keep-models)")
        for info in models if not args.json else ():
            print(_line(info))
        return 0
    info = pick(models, args.trial, args.seed, spec)
    if args.out:
        out = Path(args.out).expanduser()
        if out.suffix != ".pt":
            raise UserError(f"--out: {out} should end in .pt (its .json goes beside it)")
        if not out.parent.is_dir():
            raise UserError(f"--out: {out.parent} is not a folder")
        src = Path(info["path"])
        for a, b in ((src, out), (src.with_suffix(".json"), out.with_suffix(".json"))):  # .json last
            tmp = b.with_name(f".{b.name}.tmp")
            shutil.copyfile(a, tmp)
            tmp.replace(b)
        print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(_line(info))
    print(f"  fingerprint {info['fingerprint']}  params {json.dumps(info.get('params', {}), sort_keys=True)}")
    print(f"  load it:  from unlearning import load_unlearned; model = load_unlearned({info['path']!r})")
    return 0
