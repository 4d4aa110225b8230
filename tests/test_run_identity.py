"""A run directory knows what it holds (run.json: the sweep, the fingerprint of its spec, its study, the
version that made it) and every command that opens one checks it: spec.yaml replaced by another
sweep's, or a journal holding another study, is named in one line (reported by the verbs that read,
refused by those that write). `run` and `resume` share one rule for what may change: what extends
the sweep, never what was sampled; n_trials never below what is on record; a sweep with nothing
left to run starts no backend. Driven through the CLI (`main`) with the fast fake trial function."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import unlearning.tasks
from orchestrator import runner
from orchestrator.cli import main
from sweeps import results as R
from sweeps.spec import load_spec, spec_fingerprint
from tests.sweep_util import small_spec
from tests.tasks import fake_run_task

STATUS_LIKE = [["status"], ["analyze"], ["export"], ["status", "--json"]]


@pytest.fixture(autouse=True)
def fake_trials(monkeypatch):
    monkeypatch.setattr(unlearning.tasks, "run_task", fake_run_task)
    monkeypatch.setenv("FAKE_TASK_SECONDS", "0")


def _run(tmp_path: Path, capsys, name: str = "t", **over) -> Path:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(small_spec(name=name, **over)))
    run_dir = tmp_path / name
    assert main(["run", str(spec), "--out", str(run_dir)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return run_dir


def _files(run_dir: Path) -> dict[str, bytes]:
    """Every file of the record (report/ aside: `analyze` writes it, whatever it found; and the
    answer kept beside it, derived data like report/: sweeps/answer_cache.py)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.parts[len(run_dir.parts)] not in ("report", ".answer.cache.json")}


def test_run_json_records_the_sweep_its_spec_fingerprint_its_study_and_the_version(tmp_path, capsys):
    run_dir = _run(tmp_path, capsys, n_trials=2)
    ident = json.loads((run_dir / "run.json").read_text())
    recorded = load_spec(yaml.safe_load((run_dir / "spec.yaml").read_text()), read_only=True)
    assert ident["sweep"] == "t" and ident["study_name"] == "t" and ident["version"]
    assert ident["spec_fingerprint"] == spec_fingerprint(recorded)
    # what extends a sweep leaves its fingerprint alone; what defines it does not
    more = load_spec(small_spec(n_trials=9, seeds=[0, 1], description="more", resources={"backend": "ray"}),
                     read_only=True)
    other = load_spec(small_spec(n_trials=2, sampler={"name": "tpe", "seed": 1}), read_only=True)
    assert spec_fingerprint(more) == ident["spec_fingerprint"] != spec_fingerprint(other)


@pytest.mark.parametrize("damage", ["another sweep's spec.yaml",
                                    pytest.param("an edited space", marks=pytest.mark.slow),
                                    pytest.param("another study's journal", marks=pytest.mark.slow)])
def test_a_run_directory_that_disagrees_with_itself_is_named_read_and_refused_written(tmp_path, capsys,
                                                                                     damage):
    run_dir = _run(tmp_path, capsys, n_trials=2)
    other = _run(tmp_path, capsys, name="u", n_trials=2)
    if damage == "another sweep's spec.yaml":
        (run_dir / "spec.yaml").write_bytes((other / "spec.yaml").read_bytes())
        needle = "spec.yaml is sweep 'u' but this run directory was created for sweep 't'"
    elif damage == "an edited space":
        raw = yaml.safe_load((run_dir / "spec.yaml").read_text())
        raw["methods"]["ft"]["space"]["lr"]["high"] = 0.5
        (run_dir / "spec.yaml").write_text(yaml.safe_dump(raw))
        needle = "spec.yaml is not the spec this run was started with"
    else:
        (run_dir / "study.journal").write_bytes((other / "study.journal").read_bytes())
        needle = "study.journal holds study 'u', not 't' (run.json)"
    before = _files(run_dir)
    for verb in STATUS_LIKE:  # read-only verbs: say so in one line, then report as they can
        assert main([verb[0], str(run_dir), *verb[1:]]) == 0
        err = capsys.readouterr().err
        assert needle in err and err.count("unlearn-sweep: warning:") == 1, err
    for argv in (["resume", str(run_dir)], ["run", str(tmp_path / "t.yaml"), "--out", str(run_dir)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
    assert _files(run_dir) == before  # nothing written, nothing locked


def test_resume_set_refuses_what_changes_the_sweep_naming_the_key_and_both_values(tmp_path, capsys):
    """Before: `resume --set methods...lr.high=...` exited 0 and rewrote spec.yaml, so later trials
    came from another space in the same record."""
    run_dir = _run(tmp_path, capsys, n_trials=2)
    before = _files(run_dir)
    for key, value, old in (("methods.ft.space.lr.high", "0.5", "0.1"), ("sampler.seed", "3", "0"),
                            ("seed_axes", "[train, unlearn]", "['unlearn']"),
                            ("constraints.0.max", "9", "5.0"), ("base.model", "mlp", "'small_cnn'")):
        assert main(["resume", str(run_dir), "--set", f"{key}={value}"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"with a different {key} (recorded {old}, --set " in err, err
    assert _files(run_dir) == before


def test_run_and_resume_share_the_rule_what_extends_a_sweep_is_allowed(tmp_path, capsys):
    run_dir = _run(tmp_path, capsys, n_trials=2)
    assert main(["resume", str(run_dir), "--set", "n_trials=3", "--set", "description=more trials",
                 "--set", "fail_fast=0", "--set", "base.device=cpu"]) == 0
    capsys.readouterr()
    spec = load_spec(yaml.safe_load((run_dir / "spec.yaml").read_text()), read_only=True)
    assert spec.n_trials == 3 and spec.seeds == [0]
    # the same rule for `run`: another sampler seed in the spec file is refused, naming both values
    raw = small_spec(n_trials=3, sampler={"name": "tpe", "seed": 7})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(tmp_path / "t.yaml"), "--out", str(run_dir)]) == 2
    assert "with a different sampler.seed (recorded 0, this spec 7)" in capsys.readouterr().err


@pytest.mark.slow
def test_n_trials_below_the_record_is_kept_and_a_finished_sweep_starts_no_backend(tmp_path, capfd,
                                                                                  monkeypatch):
    """Before: `resume --set n_trials=3` with 6 done rewrote spec.yaml to 3, and `run` on a finished
    sweep (`make demo` twice) started Ray and the oracle phase to run nothing, then lowered n_trials
    in spec.yaml (20 -> 16 after an earlier `resume --set n_trials=20`)."""
    capsys = capfd  # the driver's lines go to the process's stderr
    run_dir = _run(tmp_path, capsys, n_trials=4)
    assert main(["resume", str(run_dir), "--set", "n_trials=6"]) == 0
    capsys.readouterr()

    def no_backend(*a, **kw):
        raise AssertionError("a backend was started for a sweep with nothing left to run")

    monkeypatch.setattr(runner, "make_backend", no_backend)
    before = R.read_results(run_dir).num_rows
    for argv in (["resume", str(run_dir), "--set", "n_trials=3"],
                 ["run", str(tmp_path / "t.yaml"), "--out", str(run_dir)],  # n_trials 4 in the file
                 ["resume", str(run_dir)]):
        assert main(argv) == 0
        out = capsys.readouterr()
        assert "nothing left to run: the study holds 6 trial(s)" in out.err and "report:" in out.out, out.err
        assert yaml.safe_load((run_dir / "spec.yaml").read_text())["n_trials"] == 6
    assert R.read_results(run_dir).num_rows == before == 6
    assert "n_trials 3 is below the 6 trial(s)" in (main(["resume", str(run_dir), "--set", "n_trials=3"]) == 0
                                                   and capsys.readouterr().err)


def test_the_ctrl_c_line_names_the_run_directory(tmp_path, capsys, monkeypatch):
    run_dir = _run(tmp_path, capsys, n_trials=2)

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.Driver, "run", interrupted)
    assert main(["resume", str(run_dir), "--set", "n_trials=3"]) == 130
    err = capsys.readouterr().err
    assert err == f"unlearn-sweep: interrupted (SIGINT); `unlearn-sweep resume {run_dir}` continues\n"


@pytest.mark.parametrize("verb", ["run", "resume"])
def test_seeds_added_to_a_sweep_with_trials_are_refused_in_one_line_and_nothing_changes(tmp_path, capsys, verb):
    """A trial's value was told to Optuna as the mean over the recorded seeds: other seeds would rank
    n = 1 and n = 2 as like for like and call the old configurations complete on seeds they never ran."""
    run_dir = _run(tmp_path, capsys, n_trials=2)
    before = _files(run_dir)
    args = [str(tmp_path / "t.yaml"), "--out", str(run_dir)] if verb == "run" else [str(run_dir)]
    assert main([verb, *args, "--set", "n_trials=4", "--set", "seeds=[0,1]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seeds: " in err
    assert "holds 2 trial(s) told to Optuna as means over seeds [0]" in err
    assert "unlearn-sweep replicate" in err and _files(run_dir) == before
    # the same seeds in another order are the same runs: allowed
    two = _run(tmp_path, capsys, name="two", n_trials=2, seeds=[0, 1])
    assert main(["resume", str(two), "--set", "n_trials=3", "--set", "seeds=[1,0]"]) == 0
    assert len(R.read_results(two)) == 6


def test_the_api_refuses_other_seeds_too(tmp_path):
    from orchestrator.runner import run_sweep
    from tests.sweep_util import fake_task
    from unlearning.errors import UserError

    run_sweep(load_spec(small_spec(n_trials=2)), tmp_path, fn=fake_task, log=None)
    n = len(R.read_results(tmp_path))
    with pytest.raises(UserError, match=r"^seeds: .* would rank n = 1 and n = 2 as like for like"):
        run_sweep(load_spec(small_spec(n_trials=4, seeds=[0, 1])), tmp_path, fn=fake_task, log=None)
    assert len(R.read_results(tmp_path)) == n
