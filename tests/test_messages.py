"""Messages a new user reads (issue 18): the nearest key for a typo, the line of a YAML error, --help
examples that the verb accepts, and `trial` saying what it does while it trains the oracles."""
from __future__ import annotations

import re

import pytest
import yaml

from orchestrator.cli import build_parser, main
from orchestrator.runner import REPLICATE_SETS
from orchestrator.verbs.common import parse_sets
from sweeps.spec import load_spec
from tests.sweep_util import small_spec


@pytest.mark.parametrize("setting, hint", [
    ("n_trails=4", "n_trails: unknown key; did you mean n_trials?"),
    ("resources.max_concurent=2", "resources.max_concurent: unknown key; did you mean max_concurrent?"),
    ("base.train.epoch=2", "base.train.epoch: unknown key; did you mean epochs?"),
    ("methods.eupmu.space.lr.lowx=0.1", "methods.eupmu.space.lr.lowx: unknown key; did you mean low?"),
    ("zzz=1", "zzz: unknown key; known: name, description, base, methods,"),
])
def test_an_unknown_key_names_the_nearest_known_one(setting, hint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "quickstart", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert hint in err and len(err.splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_trial_set_of_an_unknown_parameter_lists_the_known_ones(capsys):
    assert main(["trial", "--method", "ft", "--set", "lrr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "--set lrr: neither a parameter of ft nor a trial field; did you mean lr?" in err
    assert "ft's parameters: epochs, lr, batch_size" in err and "trial fields: method, params" in err
    assert main(["trial", "--method", "ltu", "--set", "metalr=0.1"]) == 2
    assert "did you mean meta_lr?" in capsys.readouterr().err


def test_bad_yaml_says_on_which_line(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\nmethods:\n  ft: {space: {lr: 0.1}\nobjectives: [a\n")
    assert main(["run", str(spec)]) == 2
    assert re.search(r"s\.yaml: not valid YAML \(line 4, column 1: .*expected ',' or '}'", capsys.readouterr().err)
    spec.write_text("name: x\n  foo: 1\n")
    assert main(["run", str(spec)]) == 2
    assert "(line 2, column 6: mapping values are not allowed here)" in capsys.readouterr().err


def _set_examples(verb: str) -> list[str]:
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    action = next(a for a in sub.choices[verb]._actions if "--set" in a.option_strings)
    return re.findall(r"([a-z_.]+=[\w.]+)", action.help)


def test_replicate_and_audit_help_show_only_settings_they_accept():
    rep = _set_examples("replicate")
    assert rep and all(k.startswith(REPLICATE_SETS) for k, _ in parse_sets(rep))
    aud = _set_examples("audit")
    assert aud and "n_trials=4" not in aud
    spec = load_spec(small_spec(), parse_sets(aud))  # every example validates against a sweep's spec
    assert spec.audit is not None and spec.resources.max_concurrent == 2


def test_trial_text_has_no_nan_and_retrain_once():
    from orchestrator.verbs.trial import format_result
    from unlearning.trial import TrialResult

    m = {"unlearn_acc": 8.0, "retain_acc": 96.0, "test_acc": 91.0, "mia_efficacy": 9.0, "avg_gap": 0.0,
         "runtime_s": 4.5, "retain_examples_seen": 10.0}
    ref = {k: m[k] for k in ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy")}
    r = TrialResult(state="COMPLETE", method="retrain", params={}, config={}, metrics=m,
                    reference={"original": ref, "retrain": ref})
    text = format_result(r)
    rows = [ln.split()[0] for ln in text.splitlines()[2:-1]]
    assert "nan" not in text.lower() and rows == ["retrain", "original"]
    assert re.search(r"^original .* — +— *$", text, flags=re.M)  # a reference has no gap or runtime


def test_trial_prints_the_oracles_training_and_per_epoch_accuracies(tmp_path, capsys):
    # before: minutes of silence while the Original and Retrain trained; no UA/RA/TA per epoch
    assert main(["trial", "--method", "ft", "--data", "digits", "--model", "mlp", "--cache-dir", str(tmp_path),
                 "--set", "train.epochs=2", "--set", "epochs=2", "--set", "eval.eval_every=1",
                 "--set", "eval.mia=false"]) == 0
    err = capsys.readouterr().err
    assert "Original: training 2 epoch(s) on" in err and "Retrain: training 2 epoch(s) on" in err
    assert re.search(r"Original epoch +2/2 +loss [\d.]+ +[\d.]+s, about 0s left", err)
    assert re.search(r"epoch +1 +loss [\d.]+ +UA [\d.]+ +RA [\d.]+ +TA [\d.]+", err)
    assert main(["trial", "--method", "ft", "--data", "digits", "--model", "mlp", "--cache-dir", str(tmp_path),
                 "--set", "train.epochs=2", "--set", "epochs=1", "--set", "eval.mia=false", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "Original: from the oracle cache" in err and yaml.safe_load(out)["state"] == "COMPLETE"
