"""What the verbs share: `--set` parsing, finding a run directory and its spec, writing output whole."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from unlearning.config import load_yaml_text, read_yaml
from unlearning.errors import UserError

EXIT_FAILED = 1  # the sweep ran but stopped on its failure budget, or no trial completed
RUN_HELP = "a run directory, or a sweep's name (quickstart = runs/quickstart)"
SET_FLAG = dict(action="append", default=[], metavar="PATH=VALUE",
                help="override any spec field before validation (n_trials=4, methods.rl.space.lr.high=0.1)")


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


def resolve_run_dir(arg: str) -> Path:
    """A run directory given as a path, or by its sweep name (`quickstart` -> runs/quickstart)."""
    p = Path(arg).expanduser()
    if (p / "spec.yaml").is_file() or p.is_dir() or "/" in arg:
        return p
    named = Path("runs") / arg
    return named if named.is_dir() else p


def spec_from_dir(run_dir: Path, sets: list[tuple[str, Any]], *, read_only: bool = False):
    """The spec a run directory holds. `read_only` verbs (status, analyze, export, compare) check
    its shape only (no data set, no methods, no torch): a run directory copied to a laptop still
    analyzes, and quickly."""
    from sweeps.spec import load_spec

    path = run_dir / "spec.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir}: not a sweep directory (no spec.yaml)")
    return load_spec(read_yaml(path), sets, read_only=read_only)


def sweep_sets(args) -> list[tuple[str, Any]]:
    sets = parse_sets(args.set)
    if getattr(args, "backend", None):
        sets.append(("resources.backend", args.backend))
    if getattr(args, "address", None):
        sets.append(("resources.address", args.address))
    if getattr(args, "keep_models", False):
        sets.append(("keep_models", True))
    return sets


PLUGIN_FLAG = dict(action="append", default=[], metavar="PATH|MODULE",
                   help="a plug-in: a .py file or an importable module registering methods, models or "
                        "data sets (docs/extending.md); repeatable")


def load_cli_plugins(args) -> list:
    """Import the `--plugin`s (files relative to the working directory) before anything names what
    they register; returns their `unlearning.Plugin` records. UserError (one line) for one that
    fails."""
    if not getattr(args, "plugin", None):
        return []
    from unlearning.plugins import load_plugins

    return load_plugins(args.plugin)


def with_cli_plugins(raw: dict[str, Any], args) -> dict[str, Any]:
    """A spec with the `--plugin`s added after its own `plugins` (files resolved from the working
    directory; `load_spec` imports them all, in that order)."""
    if not getattr(args, "plugin", None) or not isinstance(raw, dict):
        return raw
    from unlearning.plugins import plugin_name

    given = raw.get("plugins") or []
    return {**raw, "plugins": [*(given if isinstance(given, list) else [given]),
                               *(plugin_name(p) for p in args.plugin)]}


def emit(text: str, out: str | None) -> None:
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


