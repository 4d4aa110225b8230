"""What the verbs share: `--set` parsing, finding a run directory and its spec, writing output whole."""
from __future__ import annotations

import re
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


_KEY = re.compile(r"[\w-]+(\.[\w-]+)*")  # a dotted path of names and list indices


def parse_sets(pairs: list[str]) -> list[tuple[str, Any]]:
    out = []
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not _KEY.fullmatch(key.strip()):
            raise UserError(f"--set expects path=value (a path like methods.rl.space.lr.high), got {pair!r}")
        out.append((key.strip(), parse_value(value)))
    return out


def resolve_run_dir(arg: str) -> Path:
    """A run directory given as a path, or by its sweep name (`quickstart` -> runs/quickstart)."""
    p = Path(arg).expanduser()
    if (p / "spec.yaml").is_file() or p.is_dir() or "/" in arg:
        return p
    named = Path("runs") / arg
    return named if named.is_dir() else p


def recorded_spec(run_dir: Path, *, writing: bool):
    """The spec a run directory recorded (spec.yaml, its shape checked: no data, no methods, no
    torch), checked against the directory's identity (sweeps.rundir.identity_problem): a verb that
    writes refuses a run directory that disagrees with itself (exit 2, nothing changed); one that
    only reads says so in one line on stderr and goes on. Every verb that opens a run directory
    comes through here."""
    from sweeps.rundir import identity_problem
    from sweeps.spec import load_spec

    path = run_dir / "spec.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir}: not a sweep directory (no spec.yaml)")
    try:
        spec = load_spec(read_yaml(path), read_only=True)
    except UserError as e:
        raise UserError(f"{path} does not load ({e})") from None
    problem = identity_problem(run_dir, spec)
    if problem and writing:
        raise UserError(f"{problem}; nothing was changed")
    if problem:
        print(f"unlearn-sweep: warning: {problem}", file=sys.stderr)
    return spec


def continue_spec(run_dir: Path, recorded, new, *, origin: str, hint: str):
    """The one rule for a spec that continues the sweep a run directory recorded (`run` on it, or
    `resume --set`): what extends the sweep may change (n_trials, seeds, resources, tracking, the
    failure budget, replicate, audit, description, base.device, base.cache_dir; seeds only while no
    trial is on record, `refuse_new_seeds`); what changes what
    was sampled (the space, methods, data, base, constraints, objectives, the sampler, seed_axes,
    select, ...) is refused in one line naming the key, its recorded value and the new one. n_trials
    never goes below the trials already on record: a smaller value is raised to that count, with a
    note (the record keeps what it has; the sweep has nothing left to run). Returns the spec to run."""
    from sweeps.spec import spec_difference
    from sweeps.study import refuse_new_seeds, trials_done

    diff = spec_difference(recorded.dump(), new.dump())
    if diff:
        key, old, value = diff
        raise UserError(f"{run_dir} already holds sweep {recorded.name!r} with a different {key} "
                        f"(recorded {old!r}, {origin} {value!r}); {hint}")
    done = trials_done(recorded, run_dir)
    refuse_new_seeds(run_dir, recorded, new, done)
    if new.n_trials < done:
        print(f"unlearn-sweep: note: n_trials {new.n_trials} is below the {done} trial(s) {run_dir} already "
              f"holds; it stays {done}", file=sys.stderr)
        new = new.model_copy(update={"n_trials": done})
    return new


def spec_from_dir(run_dir: Path, sets: list[tuple[str, Any]], *, read_only: bool = False,
                  extend: bool = True):
    """The spec a run directory holds (`recorded_spec`), with `sets` applied. `read_only` verbs
    (status, analyze, export, compare) check its shape only: a run directory copied to a laptop
    still analyzes, and quickly. A writing verb's `sets` go through `continue_spec` (`extend`), or
    through a rule of the verb's own (replicate: extend=False)."""
    from sweeps.spec import load_spec

    recorded = recorded_spec(run_dir, writing=not read_only)
    if read_only and not sets:
        return recorded
    new = load_spec(read_yaml(run_dir / "spec.yaml"), sets, read_only=read_only)
    if not extend:
        return new
    return continue_spec(run_dir, recorded, new, origin="--set",
                         hint="a change to what was sampled starts another sweep (`unlearn-sweep run` with "
                              "another --out)")


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


