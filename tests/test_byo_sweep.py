"""Bring your own, swept: plug-ins named in a spec or on the command line, shipped in every task's
payload to workers that lack the files, part of the run's identity (fingerprints, run.json, a
changed plug-in refused); a released original in a spec; the winners' models kept and loaded back.

The same sweep on a two-node Ray cluster, where only the driver's machine holds the plug-in files, is
tests/test_cluster_byo.py (slow); here it runs inline, and a worker without the files is a fresh
process given only a task's payload."""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import orchestrator.runner  # noqa: F401 - imported before any capsys: its log default is sys.stderr
from orchestrator.cli import main
from sweeps.results import read_results
from tests.plugin_util import METHOD_SRC, MODEL_SRC, RAISES_SRC, digits_npz, write

SPEC = """\
name: byo
plugins: [my_lab/unlearn_methods.py, my_lab/models.py]
base:
  data: {{name: npz, root: {npz}}}
  model: tiny_mlp
  train: {{epochs: 5}}
methods:
  wneg: {{space: {{beta: [0.6, 0.9], epochs: 1}}}}
objectives: [{{metric: forget_gap}}, {{metric: test_acc, direction: maximize}}]
sampler: grid
n_trials: 2
seeds: [0]
resources: {{backend: inline}}
tracking: {{wandb: {{mode: disabled}}}}
"""


def make_lab(root: Path, spec: str = SPEC) -> Path:
    """A researcher's folder: a method, a model, an .npz data set and a spec naming them."""
    lab = root / "lab"
    write(lab / "my_lab", "unlearn_methods.py", METHOD_SRC.format(name="wneg"))
    write(lab / "my_lab", "models.py", MODEL_SRC.format(name="tiny_mlp"))
    digits_npz(root / "data" / "digits.npz")
    return write(lab, "spec.yaml", spec.format(npz=root / "data" / "digits.npz"))


def rows(run_dir) -> list[dict]:
    return sorted(read_results(run_dir).to_pylist(), key=lambda r: r["fingerprint"])


METRICS = ("unlearn_acc", "retain_acc", "test_acc", "mia_efficacy", "avg_gap", "forget_gap",
           "original_test_acc", "retrain_test_acc")


def test_a_spec_names_its_plugins_and_its_sweep_records_them(tmp_path, registries, monkeypatch, capsys):
    spec = make_lab(tmp_path)
    monkeypatch.chdir(tmp_path)  # plug-in paths start from the spec's folder, not from here
    run = tmp_path / "runs" / "byo"
    assert main(["run", str(spec), "--out", str(run)]) == 0
    t = rows(run)
    assert len(t) == 2 and all(r["state"] == "COMPLETE" for r in t)
    assert sorted(json.loads(r["params_json"])["beta"] for r in t) == [0.6, 0.9]
    files = {n: (spec.parent / "my_lab" / n) for n in ("unlearn_methods.py", "models.py")}
    shas = {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in files.items()}
    ident = json.loads((run / "run.json").read_text())
    assert [(p["name"], p["path"], p["sha256"]) for p in ident["plugins"]] == [
        (n, str(files[n]), shas[n]) for n in ("unlearn_methods.py", "models.py")]
    assert ident["plugins"][0]["methods"] == ["wneg"] and ident["plugins"][1]["models"] == ["tiny_mlp"]
    # each trial's config names the plug-ins by content; the recorded spec by where they were
    cfg = json.loads(t[0]["config_json"])
    assert cfg["plugins"] == sorted([{"name": n, "sha256": s} for n, s in shas.items()], key=lambda r: r["name"])
    import yaml
    recorded = yaml.safe_load((run / "spec.yaml").read_text())
    assert recorded["plugins"] == [str(files["unlearn_methods.py"]), str(files["models.py"])]
    # resume from anywhere: the recorded spec names the files; nothing to do, nothing run again
    monkeypatch.chdir(tmp_path / "data")
    assert main(["resume", str(run)]) == 0
    assert rows(run) == t
    assert not (run / "models").exists()  # a search keeps no model unless asked: --keep-models
    kept = tmp_path / "kept"
    assert main(["run", str(spec), "--out", str(kept), "--keep-models"]) == 0
    assert sorted(p.stem for p in (kept / "models").glob("*.pt")) == [r["fingerprint"] for r in rows(kept)]
    assert [r["fingerprint"] for r in rows(kept)] == [r["fingerprint"] for r in t]  # not part of identity
    # the audit of a plug-in sweep: its shadows are the plug-in's model, unlearned by its method
    assert main(["audit", str(run), "--top", "1", "--shadows", "2", "--kind", "relearn"]) == 0
    capsys.readouterr()
    # `methods` and `trial` take the plug-ins too
    assert main(["methods", "wneg", "--plugin", str(files["unlearn_methods.py"])]) == 0
    assert "Weighted NegGrad" in capsys.readouterr().out
    assert main(["trial", "--plugin", str(files["unlearn_methods.py"]), "--plugin", str(files["models.py"]),
                 "--method", "wneg", "--model", "tiny_mlp", "--set", f"data.root={tmp_path / 'data' / 'digits.npz'}",
                 "--set", "data.name=npz", "--set", "train.epochs=5", "--set", "epochs=1", "--set", "beta=0.6",
                 "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    [same] = [r for r in t if json.loads(r["params_json"])["beta"] == 0.6]
    assert single["metrics"]["test_acc"] == same["test_acc"]  # the sweep's trial, run by hand


def released_original(path: Path) -> Path:
    """A tiny_mlp original trained elsewhere, in plain PyTorch, saved as a state dict."""
    from unlearning.data import DataConfig, load_dataset
    from unlearning.models import build_model

    ds = load_dataset(DataConfig(name="npz", root=str(path.parent.parent / "data" / "digits.npz")))
    torch.manual_seed(0)
    model = build_model("tiny_mlp", ds.in_shape, ds.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(50):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(ds.prepare(ds.x_train)), ds.y_train).backward()
        opt.step()
    torch.save(model.state_dict(), path)
    return path


def test_a_worker_without_the_files_runs_the_shipped_payload_to_the_same_result(tmp_path, registries):
    """What a Ray worker on another node gets: the payload alone (here pickled to a fresh process in
    another folder with an empty oracle cache, the lab and its released original deleted first)
    holds the plug-ins' source and the checkpoint's bytes; its result is the driver's."""
    from orchestrator.shipping import Shipment
    from sweeps.spec import load_spec, spec_folder
    from unlearning.config import read_yaml
    from unlearning.plugins import load_plugins
    from unlearning.tasks import run_task
    from unlearning.trial import untimed

    spec_file = make_lab(tmp_path, SPEC.replace("  model: tiny_mlp\n",
                                                "  model: tiny_mlp\n  checkpoints: {{original: released.pt}}\n"))
    load_plugins(["my_lab/models.py"], base=spec_file.parent)  # tiny_mlp, to train the released one
    released_original(spec_file.parent / "released.pt")
    spec = load_spec(read_yaml(spec_file), base=spec_folder(spec_file))
    payload = spec.trial_config("wneg", {"beta": 0.7, "epochs": 1}, spec.seed_list()[0])

    class Bytes:  # a backend whose handles are the bytes themselves (picklable)
        share = staticmethod(lambda blob: blob)

    shipped = Shipment(spec, Bytes())(payload)
    assert [p["name"] for p in shipped["plugin_sources"]] == spec.plugins
    sha = hashlib.sha256((spec_file.parent / "released.pt").read_bytes()).hexdigest()
    assert list(shipped["checkpoint_files"]) == [sha] and payload["checkpoints"]["original"]["sha256"] == sha
    here = run_task(dict(shipped))()
    assert here["state"] == "COMPLETE", here.get("error")
    (tmp_path / "payload.pkl").write_bytes(pickle.dumps(shipped))
    import shutil

    shutil.rmtree(spec_file.parent)
    worker = tmp_path / "elsewhere"
    worker.mkdir()
    # as many threads as here (a Ray worker has its cpus_per_trial, inline sets the same): float sums
    # are then summed in the same order
    code = ("import json, pickle, sys, torch\nfrom unlearning.tasks import run_task\n"
            f"torch.set_num_threads({torch.get_num_threads()})\n"
            "print(json.dumps(run_task(pickle.load(open(sys.argv[1], 'rb')))()))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "payload.pkl")], cwd=worker,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": "", "UNLEARN_SWEEP_CACHE": str(worker / "cache")})
    assert out.returncode == 0, out.stderr[-3000:]
    there = json.loads(out.stdout.strip().splitlines()[-1])
    installed = [json.loads(p.read_text()) for p in (worker / "cache").glob("*.json")]
    assert [i["key"]["checkpoint"] for i in installed if "checkpoint" in i["key"]] == [sha]
    a, b = untimed(here), untimed(there)
    for key in ("state", "metrics", "reference", "params", "history", "config"):
        assert a[key] == b[key], key


def _old_fingerprint(raw: dict) -> str:
    """The fingerprint rule before plug-ins and checkpoints existed (main before issue 21)."""
    from unlearning import __version__
    from unlearning.methods import get_method
    from unlearning.oracle import code_version
    from unlearning.trial import load_trial_config

    cfg = load_trial_config(raw)
    key = cfg.model_dump(mode="json")
    key["params"] = cfg.method_config().model_dump(mode="json")
    key = {k: v for k, v in key.items() if k not in ("device", "cache_dir")}
    src = inspect.getsource(sys.modules[get_method(cfg.method).__module__])
    key["code_version"] = hashlib.sha256(f"{__version__}|{code_version()}|{src}".encode()).hexdigest()[:12]
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def test_without_plugins_or_checkpoints_every_quickstart_fingerprint_is_what_it_was(tmp_path, registries):
    from sweeps.fingerprint import fingerprint
    from sweeps.spec import load_spec, read_spec_source

    spec = load_spec(read_spec_source("quickstart"))
    for method in spec.methods:
        for seeds in spec.seed_list([0, 1, {"split_seed": 2, "train_seed": 3, "unlearn_seed": 4}]):
            raw = spec.trial_config(method, {}, seeds)
            assert "plugins" not in raw
            fp, cfg = fingerprint(raw)
            assert fp == _old_fingerprint(raw) and "plugins" not in cfg and "checkpoints" not in cfg


def test_plugins_and_checkpoints_count_by_content_in_the_fingerprint(tmp_path, registries):
    from sweeps.fingerprint import fingerprint, method_code_version
    from unlearning.plugins import load_plugins

    m = write(tmp_path / "a", "m.py", METHOD_SRC.format(name="fp_neg"))
    [p1] = load_plugins([str(m)])
    raw = {"method": "fp_neg", "data": {"name": "digits"}, "plugins": [p1.ref()]}
    fp1, v1 = fingerprint(raw)[0], method_code_version("fp_neg")
    m.write_text(m.read_text() + "\n# an edit\n")
    [p2] = load_plugins([str(m)])
    with pytest.raises(Exception, match="is not loaded in this process at that version"):
        fingerprint(raw)  # the old version's config never validates against the new code
    fp2 = fingerprint({**raw, "plugins": [p2.ref()]})[0]
    assert fp2 != fp1 and method_code_version("fp_neg") != v1
    # a package's method: an edit to any file of the package is another code version
    pkg = tmp_path / "pkg" / "labpkg_fp"
    write(pkg, "__init__.py", "from . import methods\n")
    write(pkg, "methods.py", METHOD_SRC.format(name="pkg_neg"))
    write(pkg, "helpers.py", "SCALE = 1.0\n")
    sys.path.insert(0, str(tmp_path / "pkg"))
    try:
        [v1] = load_plugins(["labpkg_fp"])
        c1 = method_code_version("pkg_neg")
        (pkg / "helpers.py").write_text("SCALE = 2.0\n")
        [v2] = load_plugins(["labpkg_fp"])
    finally:
        sys.path.remove(str(tmp_path / "pkg"))
        for m in [m for m in sys.modules if m.startswith("labpkg_fp")]:
            del sys.modules[m]
    assert v1.sha256 != v2.sha256 and method_code_version("pkg_neg") != c1
    # a checkpoint by its bytes: moved elsewhere, the same; other bytes, another fingerprint
    base = {"method": "ft", "data": {"name": "digits"}}
    fp = lambda path, sha: fingerprint({**base, "checkpoints": {"original": {"path": path, "sha256": sha}}})[0]  # noqa: E731
    assert fp("/a/x.pt", "a" * 64) == fp("/b/y.pt", "a" * 64) != fp("/a/x.pt", "b" * 64)
    assert fp("/a/x.pt", "a" * 64) != fingerprint(base)[0]


def test_a_plugin_edited_between_two_runs_is_refused_in_one_line(tmp_path, registries, capsys):
    spec = make_lab(tmp_path)
    run = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(run)]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "driver.lock"}
    method = spec.parent / "my_lab" / "unlearn_methods.py"
    method.write_text(method.read_text().replace("b = self.cfg.beta", "b = self.cfg.beta * 0.5"))
    capsys.readouterr()
    for argv in (["run", str(spec), "--out", str(run)], ["resume", str(run)],
                 ["replicate", str(run), "--seeds", "0-1"], ["audit", str(run), "--shadows", "2"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "plug-in unlearn_methods.py has changed since this sweep ran" in err, err
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "driver.lock"}
    assert after == before  # nothing written
    # the edited plug-in is another sweep: into another run directory it runs every trial again
    assert main(["run", str(spec), "--out", str(tmp_path / "run2")]) == 0
    assert {r["fingerprint"] for r in rows(tmp_path / "run2")}.isdisjoint(r["fingerprint"] for r in rows(run))


def test_a_moved_lab_continues_its_sweep_by_content(tmp_path, registries):
    """Where the files lie is not the run's identity: the same plug-ins elsewhere continue it (the
    fingerprints are the same, nothing runs again) and the record learns their new place."""
    import shutil

    spec = make_lab(tmp_path)
    run = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(run)]) == 0
    t = rows(run)
    moved = tmp_path / "moved"
    shutil.move(spec.parent, moved)
    assert main(["run", str(moved / "spec.yaml"), "--out", str(run)]) == 0
    assert rows(run) == t
    ident = json.loads((run / "run.json").read_text())
    assert str(tmp_path / "lab") in ident["plugins"][0]["path"]  # run.json: where it first ran
    assert str(moved / "my_lab" / "unlearn_methods.py") in (run / "spec.yaml").read_text()  # resume: now


def _evil(marker: Path):
    from tests.test_checkpoints import _Touch

    return lambda p: torch.save({"w": _Touch(str(marker))}, p)


@pytest.mark.parametrize("case", ["missing", "syntax", "raises", "duplicate", "not_a_state_dict",
                                  "runs_code", "wrong_architecture"])
def test_bad_plugins_and_checkpoints_are_one_line_exit_2_and_nothing_written(tmp_path, registries, capsys,
                                                                            case):
    spec = make_lab(tmp_path)
    lab = spec.parent
    extra, sets = [], []
    marker = tmp_path / "ran"
    if case == "missing":
        extra, needle = ["--plugin", str(lab / "nowhere.py")], "nowhere.py: no such file"
    elif case == "syntax":
        write(lab, "bad.py", "x = 1\ndef broken(:\n")
        extra, needle = ["--plugin", str(lab / "bad.py")], f"plug-in {lab / 'bad.py'}, line 2: SyntaxError"
    elif case == "raises":
        write(lab, "bad.py", "import math\n\nmath.sqrt(-1)\n")
        extra, needle = ["--plugin", str(lab / "bad.py")], f"{lab / 'bad.py'}, line 3: ValueError: math domain"
    elif case == "duplicate":
        write(lab / "other", "models.py", MODEL_SRC.format(name="tiny_mlp"))
        extra = ["--plugin", str(lab / "other" / "models.py")]  # after the spec's own
        needle = (f"plug-in {lab / 'other' / 'models.py'}, line 8: model 'tiny_mlp' is registered twice: "
                  f"by {lab / 'my_lab' / 'models.py'} and by {lab / 'other' / 'models.py'}")
    else:
        path = tmp_path / "original.pt"
        if case == "not_a_state_dict":
            torch.save([torch.zeros(3)], path)
            needle = f"base.checkpoints.original: {path} holds a list, not a state dict"
        elif case == "runs_code":
            _evil(marker)(path)
            needle = "base.checkpoints.original: " + str(path) + " is not a plain weights file"
        else:  # found by the probe: the architecture is known where the data set is
            torch.save({"0.weight": torch.zeros(3, 3)}, path)
            needle = f"base: checkpoints.original: {path} lacks '1.weight', which the model tiny_mlp has"
        sets = ["--set", f"base.checkpoints.original={path}"]
    run = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(run), *extra, *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err, err
    assert not run.exists() and not marker.exists()


def test_a_plugin_that_fails_to_import_on_a_worker_fails_its_probe_and_trials_in_one_line(tmp_path,
                                                                                        registries):
    """A plug-in that imports on the driver but not where a task runs (a package that node lacks):
    the probe's failure (which the driver turns into `base: ...`, exit 2) and a trial's FAIL row
    carry its file, line and exception."""
    from unlearning.plugins import load_plugins, ship

    p = write(tmp_path, "picky.py", "import os\nif os.environ.get('NODE_LACKS_IT'):\n"
              "    raise ImportError('needs a package this node lacks')\n" + METHOD_SRC.format(name="picky"))
    shipped = ship(load_plugins([str(p)]))
    config = {"method": "picky", "data": {"name": "digits"}, "params": {"epochs": 1}}
    (tmp_path / "payloads.pkl").write_bytes(pickle.dumps([
        {"task": "probe", "config": config, "plugin_sources": shipped}, {**config, "plugin_sources": shipped}]))
    code = ("import json, pickle, sys\nfrom unlearning.tasks import run_task\n"
            "probe, trial = pickle.load(open(sys.argv[1], 'rb'))\n"
            "print(json.dumps([run_task(probe), run_task(trial)()]))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "payloads.pkl")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": "", "NODE_LACKS_IT": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    probe, trial = json.loads(out.stdout.strip().splitlines()[-1])
    why = f"plug-in {p}, line 3: ImportError: needs a package this node lacks"
    assert not probe["ok"] and probe["failure"] == {"kind": "user_error", "message": why}
    assert trial["state"] == "FAIL" and trial["error"] == why


def test_a_plugin_method_that_raises_in_a_trial_is_a_fail_row_and_the_sweep_goes_on(tmp_path, registries):
    spec = make_lab(tmp_path, SPEC.replace("wneg: {{space:", "broken: {{space: {{epochs: 1}}}}\n  wneg: {{space:")
                    .replace("n_trials: 2", "n_trials: 4\nfail_fast: 0")
                    .replace("[my_lab/unlearn_methods.py,", "[my_lab/unlearn_methods.py, my_lab/broken.py,"))
    write(spec.parent / "my_lab", "broken.py", RAISES_SRC.format(name="broken"))
    run = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(run)]) == 0
    t = rows(run)
    failed = [r for r in t if r["method"] == "broken"]
    assert failed and all(r["state"] == "FAIL" and "ArithmeticError: the plug-in's step gave up" in r["error"]
                          and "broken.py" in r["error"] for r in failed)
    assert [r["state"] for r in t if r["method"] == "wneg"] == ["COMPLETE", "COMPLETE"]


def test_a_sweep_from_a_saved_original_scores_as_the_cached_original_it_was_saved_from(tmp_path, registries,
                                                                                     oracle_cache):
    """The released-model path end to end: a spec's base.checkpoints.original (relative to the
    spec's folder), read and hashed by the driver, shipped to the worker, installed in its cache;
    Retrain still trained (the same one); every metric the same as from the cached original."""
    from sweeps.spec import load_spec, spec_folder
    from unlearning.config import read_yaml
    from unlearning.data import load_dataset
    from unlearning.oracle import cache_key, oracle_parts
    from unlearning.splits import make_split
    from unlearning.trial import load_trial_config

    spec = make_lab(tmp_path)
    plain = tmp_path / "plain"
    assert main(["run", str(spec), "--out", str(plain)]) == 0
    s = load_spec(read_yaml(spec), base=spec_folder(spec))
    cfg = load_trial_config(s.trial_config("wneg", {}, s.seed_list()[0]))
    ds = load_dataset(cfg.data)
    parts, _ = oracle_parts("original", ds, make_split(ds, cfg.split, 0), model_name=cfg.model,
                            recipe=cfg.train, train_seed=0)
    state = torch.load(oracle_cache / f"{cache_key(parts)}.pt", weights_only=True)
    torch.save(state, spec.parent / "released.pt")  # as a paper's code would save it
    spec.write_text(spec.read_text().replace("  model: tiny_mlp\n",
                                             "  model: tiny_mlp\n  checkpoints: {original: released.pt}\n"))
    started = tmp_path / "started"
    assert main(["run", str(spec), "--out", str(started)]) == 0
    a, b = rows(plain), rows(started)
    assert len(a) == len(b) == 2 and all(r["state"] == "COMPLETE" for r in b)
    key = lambda r: r["params_json"]  # noqa: E731
    for x, y in zip(sorted(a, key=key), sorted(b, key=key)):
        assert x["fingerprint"] != y["fingerprint"]  # another original: another run
        assert {m: x[m] for m in METRICS} == {m: y[m] for m in METRICS}
    sha = hashlib.sha256((spec.parent / "released.pt").read_bytes()).hexdigest()
    assert json.loads(b[0]["config_json"])["checkpoints"]["original"] == {
        "path": str(spec.parent / "released.pt"), "sha256": sha}
    assert json.loads((started / "run.json").read_text())["checkpoints"]["original"]["sha256"] == sha


def test_replicate_keeps_each_seeds_model_and_a_kept_model_reproduces_its_recorded_metrics(
        tmp_path, registries, capsys):
    from sweeps.spec import load_spec
    from unlearning import load_unlearned
    from unlearning.config import read_yaml
    from unlearning.data import load_dataset
    from unlearning.evaluate import evaluate
    from unlearning.splits import make_split
    from unlearning.trial import load_trial_config

    spec = make_lab(tmp_path)
    run = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(run)]) == 0
    assert not (run / "models").exists()  # a search keeps none unless asked
    assert main(["replicate", str(run), "--top", "1", "--seeds", "0-2"]) == 0
    t = [r for r in rows(run) if r["state"] == "COMPLETE"]
    picked = [r for r in t if r["phase"] == "replicate"]
    number = picked[0]["trial_number"]
    mine = sorted((r for r in t if r["trial_number"] == number), key=lambda r: r["unlearn_seed"])
    assert [r["unlearn_seed"] for r in mine] == [0, 1, 2]
    kept = sorted(p.stem for p in (run / "models").glob("*.pt"))
    assert kept == sorted(r["fingerprint"] for r in mine)  # seed 0 (on record) run again for its model
    assert [r["phase"] for r in mine] == ["search", "replicate", "replicate"]  # its recorded row stands
    assert not list((run / "models").glob(".*"))  # no temporary file left
    # the verb writes one out (a .pt and its .json) to take away
    out = tmp_path / "winner.pt"
    assert main(["model", str(run), "--trial", str(number), "--seed", "1", "--out", str(out)]) == 0
    assert out.read_bytes() == (run / "models" / f"{mine[1]['fingerprint']}.pt").read_bytes()
    assert main(["model", str(run), "--trial", str(number)]) == 2  # three seeds: which one?
    assert "name one with --seed" in capsys.readouterr().err
    load_spec(read_yaml(run / "spec.yaml"))  # (the plug-ins, for rebuilding the model)
    assert json.loads(out.with_suffix(".json").read_text())["seeds"]["unlearn_seed"] == 1
    for row in mine:
        path = run / "models" / f"{row['fingerprint']}.pt"
        model = load_unlearned(path)
        info = json.loads(path.with_suffix(".json").read_text())
        assert info["fingerprint"] == row["fingerprint"] and info["config"] == json.loads(row["config_json"])
        cfg = load_trial_config(info["config"])
        ds = load_dataset(cfg.data)
        got = evaluate(model, ds, make_split(ds, cfg.split, cfg.seeds.split_seed), cfg.eval)
        for m in ("unlearn_acc", "retain_acc", "test_acc"):
            assert got[m] == row[m] == info["metrics"][m], m  # exactly
        state = torch.load(path, weights_only=True)  # a plain state dict: any torch code loads it
        assert set(state) == set(model.state_dict())
    # a kept file altered since, or a plug-in model not loaded here: one line each
    from unlearning.errors import UserError

    altered = bytearray(out.read_bytes())
    altered[len(altered) // 2] ^= 0xFF
    out.write_bytes(bytes(altered))
    with pytest.raises(UserError, match=r"winner.pt has sha256 .*, expected"):
        load_unlearned(out)
    registries.MODELS._entries.pop("tiny_mlp")
    with pytest.raises(UserError, match="unknown model 'tiny_mlp'"):
        load_unlearned(run / "models" / f"{mine[0]['fingerprint']}.pt")
