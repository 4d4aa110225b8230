"""The read-side CLI a researcher scripts against: --version, presets show, --json on status and
analyze, export, compare, run names resolving to runs/NAME, full method descriptions, choices in
--help. Records come from the fake task (no torch)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.runner import run_sweep
from sweeps.spec import PRESETS_DIR, load_spec
from tests.sweep_util import fake_task, small_spec


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    """A finished sweep `t` in <cwd>/runs/t, addressed by name."""
    root = tmp_path_factory.mktemp("cwd")
    spec = load_spec(small_spec(n_trials=6, seeds=[0, 1, 2]))
    run_sweep(spec, root / "runs" / "t", fn=fake_task, log=None)
    return root


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("unlearn-sweep 0.")


def test_presets_list_and_show_prints_a_spec_to_start_from(capsys, tmp_path):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "quickstart:" in out and "cifar10_random10:" in out
    assert main(["presets", "show", "quickstart"]) == 0
    text = capsys.readouterr().out
    assert text == (PRESETS_DIR / "quickstart.yaml").read_text()
    (tmp_path / "my_spec.yaml").write_text(text)  # what the README tells a new user to do
    assert load_spec(yaml.safe_load(text)).name == "quickstart"
    assert main(["presets", "show", "nope"]) == 2
    assert "no such preset" in capsys.readouterr().err


def test_status_and_analyze_by_name_with_json(named_run, capsys, monkeypatch):
    monkeypatch.chdir(named_run)
    assert main(["status", "t", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["sweep"] == "t" and st["study"] == {"COMPLETE": 6} and st["driver"]["running"] is False
    assert st["reference_point"] == [100.0, 0.0] and st["hypervolume"] > 0
    assert all(r["n"] == 3 for r in st["front"])
    assert main(["analyze", "t", "--json"]) == 0
    an = json.loads(capsys.readouterr().out)
    assert an["report"].endswith("report.md") and (named_run / an["report"]).is_file()
    assert set(an["picks"]) == {"blind", "oracle"} and an["table"][0]["method"] == "Retrain"
    assert main(["status", "t"]) == 0 and "Pareto front" in capsys.readouterr().out


def test_export_every_format(named_run, capsys, monkeypatch):
    monkeypatch.chdir(named_run)
    assert main(["export", "t", "--format", "latex", "--out", "table.tex"]) == 0
    tex = (named_run / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and "Retrain" in tex and "Original" in tex
    for fmt, probe in (("md", "| Retrain"), ("csv", "selection,rule,method"), ("json", '"rows"')):
        assert main(["export", "t", "--format", fmt]) == 0
        assert probe in capsys.readouterr().out
    assert main(["export", "nowhere"]) == 2


def test_compare_by_name_with_a_shared_reference(named_run, capsys, monkeypatch):
    monkeypatch.chdir(named_run)
    assert main(["compare", "t", "t", "--ref", "10,80", "--json", "--out", "cmp"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["reference_point"] == [10.0, 80.0]
    h = [r["hypervolume"] for r in c["runs"]]
    assert h[0] == h[1] > 0
    for name in ("compare.png", "compare.html", "compare.csv"):
        assert (named_run / "cmp" / name).stat().st_size > 0
    assert main(["compare", "t", "--ref", "1,x"]) == 2
    assert "--ref" in capsys.readouterr().err


def test_methods_print_whole_descriptions(capsys):
    from unlearning.methods import all_methods
    import sys

    assert main(["methods"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name, cls in all_methods().items():
        first = " ".join((sys.modules[cls.__module__].__doc__ or "").strip().split("\n\n")[0].split())
        assert first in out, name  # not cut at 150 characters
    assert main(["methods", "eupmu", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "eupmu" and "epsilon" in d["parameters"] and "Epsilon uses the PAPER's sign" in d["doc"]


def test_trial_help_lists_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["trial", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "eupmu" in out and "ltu" in out and "small_cnn" in out and "resnet18" in out and "cifar10" in out
    # the config still validates: a bad name is one line naming the known ones, exit 2
    assert main(["trial", "--method", "nope"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "unknown method" in line and "eupmu" in line


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path):
    """`unlearn-sweep methods | head -1`: the pipe closes under the writer (EPIPE). Exit 0, nothing on
    stderr (before: "error: Broken pipe", exit 1, as OSError was caught before BrokenPipeError)."""
    import os
    import subprocess
    import sys

    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first byte is written
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli", "methods"], stdout=w,
                       stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1], timeout=120)
    os.close(w)
    assert p.returncode == 0 and p.stderr == "", p.stderr
