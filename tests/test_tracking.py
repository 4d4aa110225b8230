"""Trackers: W&B offline runs hold what was logged; a broken W&B warns once and the sweep goes on;
secrets never reach the files."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

from orchestrator.tracking import NullTracker, WandbTracker, make_tracker, scrub

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # the shape of a W&B API key


def drive(tracker, n=2, epochs=3):
    """What the runner does: start every trial, interleave their epochs, finish them."""
    for i in range(n):
        tracker.start(f"fp{i}", i, {"lr": 0.01 * (i + 1), "epochs": epochs, "api_key": FAKE_KEY},
                      {"method": "ft", "params": {"lr": 0.01 * (i + 1)}, "seeds": {"split_seed": i},
                       "env": {"WANDB_API_KEY": FAKE_KEY}, "note": f"key is {FAKE_KEY}"})
    for e in range(epochs):
        for i in range(n):
            tracker.log(f"fp{i}", {"epoch": e, "loss": 1.0 / (e + 1) + i, "nested": {"acc": 50.0 + e}})
    for i in range(n):
        tracker.finish(f"fp{i}", {"state": "COMPLETE", "metrics": {"unlearn_acc": 10.0 + i, "test_acc": 90.0},
                                  "runtime_s": 1.5, "node": "n1", "error": None})
    tracker.close()


def test_offline_run_per_trial_holds_metrics_and_no_secret(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # conftest's kill switch
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    tracker = make_tracker({"wandb": {"mode": "offline", "project": "unit"}}, "sweepA", tmp_path)
    assert isinstance(tracker, WandbTracker) and tracker.active
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a healthy tracker warns about nothing
        drive(tracker)
    from tests.wandb_offline import offline_runs

    runs = sorted(offline_runs(tmp_path / "wandb"), key=lambda r: r["name"])
    assert [r["name"] for r in runs] == ["sweepA-0", "sweepA-1"]
    for i, run in enumerate(runs):
        assert run["group"] == "sweepA" and run["project"] == "unit"
        assert run["config"]["lr"] == pytest.approx(0.01 * (i + 1)) and run["config"]["trial_number"] == i
        assert run["config"]["fingerprint"] == f"fp{i}"
        assert run["config"]["api_key"] == "<redacted>"
        hist = [h for h in run["history"] if "epoch" in h]
        assert [h["epoch"] for h in hist] == [0, 1, 2]
        assert [h["loss"] for h in hist] == pytest.approx([1.0 + i, 0.5 + i, 1 / 3 + i])
        assert hist[-1]["nested/acc"] == 52.0
        assert run["summary"]["unlearn_acc"] == 10.0 + i and run["summary"]["state"] == "COMPLETE"
        assert run["exit_code"] == 0
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert FAKE_KEY.encode() not in f.read_bytes(), f"API key written to {f}"


def broken_cases(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    yield "bad mode", lambda: make_tracker({"wandb": {"mode": "sideways"}}, "s", tmp_path)
    yield "unwritable dir", lambda: make_tracker({"wandb": {"mode": "offline", "dir": str(blocker / "sub")}},
                                                 "s", tmp_path)

    def no_wandb():
        monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
        return make_tracker({"wandb": {"mode": "offline"}}, "s", tmp_path)
    yield "import error", no_wandb

    def init_raises():
        import wandb

        def boom(*a, **k):
            raise RuntimeError(f"backend exploded, key {FAKE_KEY}")
        monkeypatch.setattr(wandb, "init", boom)
        return make_tracker({"wandb": {"mode": "offline"}}, "s", tmp_path)
    yield "init fails", init_raises


@pytest.mark.parametrize("case", ["bad mode", "unwritable dir", "import error", "init fails"])
def test_broken_wandb_warns_once_and_goes_on(tmp_path, monkeypatch, case):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    make = dict(broken_cases(tmp_path, monkeypatch))[case]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = make()
        drive(tracker, n=3)
    ours = [w for w in caught if "W&B tracking off" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert FAKE_KEY not in str(ours[0].message)
    assert not list(tmp_path.glob("**/offline-run-*"))


def test_disabled_and_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # kill switch beats the spec
    assert isinstance(make_tracker({"wandb": {"mode": "offline"}}, "s", tmp_path), NullTracker)
    monkeypatch.delenv("WANDB_MODE")
    assert isinstance(make_tracker({"wandb": {"mode": "disabled"}}, "s", tmp_path), NullTracker)
    assert isinstance(make_tracker({"wandb": False}, "s", tmp_path), NullTracker)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert isinstance(make_tracker({}, "s", tmp_path), NullTracker)
    monkeypatch.delenv("WANDB_MODE")
    t = make_tracker({}, "s", tmp_path)  # offline by default, under out_dir; nothing started yet
    assert isinstance(t, WandbTracker) and t.mode == "offline" and t.dir == Path(tmp_path)
    drive(NullTracker())


def test_scrub(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    got = scrub({"lr": 0.1, "WANDB_API_KEY": "x" * 10, "nested": {"db_password": "p", "token": None},
                 "text": f"a {FAKE_KEY} b", "list": [{"secret": "s"}, 3], "tokens_per_batch": 5})
    assert got["lr"] == 0.1 and got["WANDB_API_KEY"] == "<redacted>"
    assert got["nested"] == {"db_password": "<redacted>", "token": None}
    assert got["text"] == "a <redacted> b" and got["list"] == [{"secret": "<redacted>"}, 3]
    assert got["tokens_per_batch"] == "<redacted>"  # conservative: anything named like a token goes


@pytest.mark.parametrize("text, scrubbed", [
    ("my password hunter2 and more", "my password <redacted> and more"),
    ("Password: hunter2", "Password: <redacted>"),
    ("the pwd is hunter2", "the pwd is <redacted>"),
    ('{"password": "hunter2"}', '{"password": "<redacted>"}'),  # a config as JSON text
    ("api_key=abcd1234 then", "api_key=<redacted> then"),
    ("the secret is xyzzy42", "the secret is <redacted>"),
    ("token: abc123def", "token: <redacted>"),
    # what is left alone: these words not naming a value, and values under 4 characters
    ("token budget of 5, a secret sauce, keyword search, passport", None),
    ("token: 12", None), ("lr 0.01 password", None),
])
def test_scrub_text_cuts_a_secret_named_in_prose(text, scrubbed):
    from unlearning.redact import scrub_text

    assert scrub_text(text, secrets=[]) == (text if scrubbed is None else scrubbed)
