"""Properties of spec loading and of the CLI's `--set` (hypothesis): ANY input gives a valid spec or
one line and exit code 2; never a traceback, never anything written. The default run tries a few
dozen inputs per property; the slow-marked twins a few hundred."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.runner import run_sweep
from orchestrator.verbs import sweep as sweep_verbs
from sweeps.spec import SweepSpec, load_spec
from tests.sweep_util import fake_task, small_spec
from unlearning.errors import UserError

FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))

# the paths a user sets, and a few that do not exist
PATHS = ["n_trials", "seeds", "seeds.0", "seed_axes", "sampler", "sampler.name", "sampler.seed",
         "sampler.options", "methods.ft.space.lr.low", "methods.ft.space.lr.high", "methods.ft.space.lr",
         "methods.rl.space.lr.type", "methods.rl.space.epochs", "methods.nope", "objectives",
         "objectives.0.metric", "objectives.1.direction", "constraints", "constraints.0.max",
         "constraints.0.min", "constraints.1", "resources.backend", "resources.max_concurrent",
         "resources.cpus_per_trial", "base.model", "base.data.name", "base.split", "base.train.epochs",
         "base.device", "description", "name", "tracking.wandb.mode", "max_failures", "fail_fast",
         "replicate", "replicate.seeds", "select", "storage", "audit.top", "nope", "methods", "base",
         "", ".", "a..b", "methods.ft.space.lr.low.x", "seeds.99"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**80, max_value=2**80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["tpe", "random", "ft", "rl", "inline", "ray", "minimize", "utility_drop",
                                     "0-9", "0-99999999999", "log-float", "float", "categorical", "fixed"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=8)
# what a shell hands `--set`: YAML scalars and lists, and text that is neither
set_text = st.one_of(values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
                     st.text(max_size=20))


def _put(raw: dict, path: str, value) -> dict:
    """A copy of raw with the dotted `path` set (intermediate levels created; a bad index ignored)."""
    raw = copy.deepcopy(raw)
    node, keys = raw, path.split(".")
    for k in keys[:-1]:
        if isinstance(node, list):
            if not (k.isdigit() and int(k) < len(node)):
                return raw
            node = node[int(k)]
        elif isinstance(node, dict):
            node = node.setdefault(k, {})
        else:
            return raw
    if isinstance(node, dict):
        node[keys[-1]] = value
    elif isinstance(node, list) and keys[-1].isdigit() and int(keys[-1]) < len(node):
        node[int(keys[-1])] = value
    return raw


def _one_line_or_spec(load) -> SweepSpec | None:
    try:
        return load()
    except UserError as e:
        text = str(e)
        assert text and "\n" not in text and "Traceback" not in text, text
        return None


# -- spec loading -----------------------------------------------------------------------------------

def _spec_documents_load_or_are_one_line(edits):
    raw = small_spec()
    for path, value in edits:
        raw = _put(raw, path, value)
    spec = _one_line_or_spec(lambda: load_spec(raw))
    if spec is not None:  # a valid spec is what it says, and dumps to one that loads again
        assert math.isfinite(spec.n_trials) and all(isinstance(s, (int, dict)) for s in spec.seeds)
        assert load_spec(spec.dump()).dump() == spec.dump()


edits = st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=4)


@FAST
@given(edits)
def test_any_spec_document_is_a_valid_spec_or_one_line(e):
    _spec_documents_load_or_are_one_line(e)


@pytest.mark.slow
@SLOW
@given(edits)
def test_any_spec_document_is_a_valid_spec_or_one_line_many(e):
    _spec_documents_load_or_are_one_line(e)


# -- the CLI: run SPEC --set ..., resume DIR --set ... --------------------------------------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("recorded") / "t"
    run_sweep(load_spec(small_spec(n_trials=2)), run_dir, fn=fake_task, log=None)
    return run_dir


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()} if d.exists() else {}


def _cli_sets(sets, where: Path, recorded: Path, capsys, monkeypatch):
    """`run SPEC --out NEW --set ...` and `resume RECORDED --set ...`, the sweep itself replaced by a
    stub: exit 0 (valid) or 2 with one line; the new directory never made, the record untouched."""
    monkeypatch.setattr(sweep_verbs, "_run_and_report", lambda spec, run_dir, args: 0)
    spec_file = where / "spec.yaml"
    if not spec_file.exists():
        spec_file.write_text(yaml.safe_dump(small_spec()))
    flags = [a for k, v in sets for a in ("--set", f"{k}={v}")]
    before = _snapshot(recorded)
    for argv in (["run", str(spec_file), "--out", str(where / "new"), *flags],
                 ["resume", str(recorded), *flags]):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: a value it takes for an option (`--set -x`)
            code = e.code
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        assert code in (0, 2), (code, err)
        if code == 2:
            assert err.count("\n") == 1 and err.startswith("unlearn-sweep"), err
        assert not (where / "new").exists()
    assert _snapshot(recorded) == before


set_pairs = st.lists(st.tuples(st.sampled_from(PATHS) | st.text(max_size=10), set_text), min_size=1, max_size=3)


@FAST
@given(set_pairs)
@example(sets=[("0\n0", "")])  # found by the slow run: a key with a newline printed two lines
def test_any_set_is_a_spec_or_one_line_exit_2_and_nothing_written(tmp_path, recorded, capsys, monkeypatch,
                                                                  sets):
    _cli_sets(sets, tmp_path, recorded, capsys, monkeypatch)


@pytest.mark.slow
@SLOW
@given(set_pairs)
def test_any_set_is_a_spec_or_one_line_exit_2_and_nothing_written_many(tmp_path, recorded, capsys,
                                                                       monkeypatch, sets):
    _cli_sets(sets, tmp_path, recorded, capsys, monkeypatch)


@FAST
@given(st.text(max_size=300) | values.map(lambda v: yaml.safe_dump(v)))
def test_any_spec_file_is_a_spec_or_one_line(tmp_path, capsys, monkeypatch, text):
    monkeypatch.setattr(sweep_verbs, "_run_and_report", lambda spec, run_dir, args: 0)
    f = tmp_path / "any.yaml"
    f.write_text(text)
    code = main(["run", str(f), "--out", str(tmp_path / "new")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    assert not (tmp_path / "new").exists()
