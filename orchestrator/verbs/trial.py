"""`unlearn-sweep trial` and `unlearn-sweep methods`: one trial, and the methods' documentation."""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from orchestrator.verbs.common import PLUGIN_FLAG, load_cli_plugins, parse_sets
from unlearning.config import read_yaml, set_path
from unlearning.errors import UserError

if TYPE_CHECKING:  # imported where it is used: the CLI starts without torch
    from unlearning.trial import TrialConfig


def add_parsers(sub) -> None:
    t = sub.add_parser("trial", help="run one unlearning trial")
    t.add_argument("--config", help="a YAML file holding a TrialConfig")
    t.add_argument("--plugin", **PLUGIN_FLAG)
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
    m.add_argument("--plugin", **PLUGIN_FLAG)
    m.set_defaults(func=cmd_methods)


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
    from unlearning.registry import MODELS

    return sorted(MODELS)


def _datasets():
    from unlearning.registry import DATA_SETS

    return sorted(DATA_SETS)


def trial_config_from_args(args) -> TrialConfig:
    from unlearning.trial import TrialConfig, load_trial_config

    plugins = load_cli_plugins(args)  # first: the config may name what they register
    raw: dict[str, Any] = read_yaml(args.config) if args.config else {}
    if plugins:
        raw = set_path(raw, "plugins", [p.ref() for p in plugins])
    for flag, path in (("method", "method"), ("data", "data.name"), ("model", "model"),
                       ("data_root", "data.root"), ("device", "device"), ("cache_dir", "cache_dir")):
        if getattr(args, flag) is not None:
            raw = set_path(raw, path, getattr(args, flag))
    sets = parse_sets(args.set)
    for key, _ in sets:
        if key.split(".")[0] not in TrialConfig.model_fields:
            _check_param(key, raw.get("method", TrialConfig.model_fields["method"].default))
    for key, value in sets:
        # a top-level TrialConfig field, or else a parameter of the method
        target = key if key.split(".")[0] in TrialConfig.model_fields else f"params.{key}"
        raw = set_path(raw, target, value)
    return load_trial_config(raw)


def _check_param(key: str, method: str) -> None:
    """`--set KEY=...` that is no TrialConfig field must be a parameter of the method: else one line
    naming the nearest key and both lists (`lrr` -> did you mean lr?)."""
    from unlearning.config import did_you_mean
    from unlearning.methods import all_methods
    from unlearning.trial import TrialConfig

    cls = all_methods().get(method)
    if cls is None:  # the config names the unknown method in its own line
        return
    params, fields = list(cls.Config.model_fields), list(TrialConfig.model_fields)
    if key in params:
        return
    hint = did_you_mean(key, [*params, *fields])
    hint = hint if "did you mean" in hint else ""
    raise UserError(f"--set {key}: neither a parameter of {method} nor a trial field{hint} ({method}'s "
                    f"parameters: {', '.join(params)}; trial fields: {', '.join(fields)})")


def cmd_trial(args) -> int:
    from unlearning.trial import run_trial

    cfg = trial_config_from_args(args)
    # progress on stderr (also with --json, whose stdout stays one JSON object): the oracles'
    # training can take minutes on a real data set, and silence reads as a hang
    result = run_trial(cfg, on_epoch=epoch_line, on_oracle=OracleLines(sys.stderr))
    if args.json:
        print(result.model_dump_json())
    else:
        print(format_result(result))
    return 0 if result.state == "COMPLETE" else 1


def epoch_line(row: dict) -> None:
    """One line per unlearning epoch; UA, RA, TA too where `eval.eval_every` measured them."""
    accs = "".join(f"  {lab} {row[k]:.2f}" for lab, k in (("UA", "unlearn_acc"), ("RA", "retain_acc"),
                                                          ("TA", "test_acc")) if row.get(k) is not None)
    print(f"  epoch {row['epoch'] + 1:>3}  loss {row['loss']:.4f}{accs}  {row['elapsed_s']:.1f}s",
          file=sys.stderr, flush=True)


class OracleLines:
    """What the oracle training says, as lines: the model it trains (not in the cache), each epoch
    with the time left, or that it came from the cache."""

    NAMES = {"original": "Original", "retrain": "Retrain"}

    def __init__(self, stream):
        self.stream = stream

    def __call__(self, kind: str, ev: dict) -> None:
        name = self.NAMES.get(kind, kind)
        if ev["event"] == "train":
            line = (f"{name}: training {ev['epochs']} epoch(s) on {ev['examples']} examples (not in the "
                    "oracle cache yet; cached for every later trial)")
        elif ev["event"] == "cached":
            t = ev["runtime_s"]
            line = f"{name}: from the oracle cache " + (f"(trained in {t:.1f}s)" if t == t  # NaN: released
                                                        else "(a released checkpoint)")
        else:
            done, n, t = ev["epoch"] + 1, ev["epochs"], ev["elapsed_s"]
            left = t / done * (n - done)
            line = f"  {name} epoch {done:>3}/{n}  loss {ev['loss']:.4f}  {t:.1f}s, about {left:.0f}s left"
        print(line, file=self.stream, flush=True)


def _cell(v) -> str:
    import math

    return f"{v:>14.2f}" if isinstance(v, (int, float)) and math.isfinite(v) else f"{'—':>14}"


def format_result(r) -> str:
    keys = ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy")
    head = f"{'':10}" + "".join(f"{k:>14}" for k in (*keys, "avg_gap", "runtime_s"))
    lines = [f"method {r.method}  state {r.state}  device {r.device_name}"]
    if r.error:
        lines.append(f"error: {r.error}")
        return "\n".join(lines)
    lines.append(head)
    # the references as they are (— where a metric does not apply: a reference has no avg_gap or
    # runtime of unlearning); Retrain once when it is the method itself
    rows = [(r.method, r.metrics)] + [(k, v) for k, v in r.reference.items() if k != r.method]
    for name, m in rows:
        lines.append(f"{name:10}" + "".join(_cell(m.get(k)) for k in (*keys, "avg_gap", "runtime_s")))
    lines.append(f"retain examples seen: {int(r.metrics['retain_examples_seen'])}   "
                 f"params: {json.dumps(r.params)}")
    return "\n".join(lines)


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

    load_cli_plugins(args)
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


