"""Plug-ins: a method, a model and a data set defined outside the package, loaded from files or
modules (or from their source bytes, as a worker without the files does), used by name like the
built-ins; every failure to load is one line with the file and line; names stay unique."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.plugin_util import METHOD_SRC, MODEL_SRC, RAISES_SRC, digits_npz, write
from unlearning.errors import UserError
from unlearning.plugins import load_plugin_source, load_plugins
from unlearning.trial import load_trial_config, run_trial, untimed


def trial(method: str, model: str, npz, **over):
    return load_trial_config({"method": method, "model": model, "data": {"name": "npz", "root": str(npz)},
                              "train": {"epochs": 5}, "params": {"epochs": 1}, **over})


def test_a_method_model_and_npz_data_set_from_outside_the_package_run_a_complete_trial(tmp_path, registries):
    lab = tmp_path / "my_lab"
    m = write(lab, "unlearn_methods.py", METHOD_SRC.format(name="wneg"))
    n = write(lab, "models.py", MODEL_SRC.format(name="tiny_mlp"))
    digits_npz(lab / "digits.npz")
    loaded = load_plugins([str(m), "my_lab/models.py"], base=tmp_path)
    assert [p.path for p in loaded] == [str(m.resolve()), str(n.resolve())]
    assert loaded[0].sha256 == hashlib.sha256(m.read_bytes()).hexdigest()  # what sha256sum prints
    assert (loaded[0].methods, loaded[0].models, loaded[1].models) == (("wneg",), (), ("tiny_mlp",))
    assert json.loads(json.dumps(loaded[0].record()))["files"] == ["unlearn_methods.py"]

    r = run_trial(trial("wneg", "tiny_mlp", lab / "digits.npz", params={"epochs": 1, "beta": 0.8}))
    assert r.state == "COMPLETE", r.error
    assert r.params["beta"] == 0.8 and r.config["data"]["name"] == "npz"
    assert {"unlearn_acc", "retain_acc", "test_acc", "mia_efficacy", "avg_gap"} <= set(r.metrics)
    assert r.reference["original"]["test_acc"] > 80  # the plug-in model learned the npz digits
    # the method's config is validated like a built-in's
    with pytest.raises(UserError, match="params.beta"):
        trial("wneg", "tiny_mlp", lab / "digits.npz", params={"beta": 2})


def test_a_plugin_loads_once_and_an_edited_one_replaces_its_old_names(tmp_path, registries):
    src = METHOD_SRC.format(name="once") + "\nimport os\nos.environ['PLUGIN_RUNS'] = " \
        "str(int(os.environ.get('PLUGIN_RUNS', '0')) + 1)\n"
    p = write(tmp_path, "m.py", src)
    os.environ.pop("PLUGIN_RUNS", None)
    first, again = load_plugins([str(p)]), load_plugins([str(p)])
    assert first == again and os.environ["PLUGIN_RUNS"] == "1"
    p.write_text(src.replace('"once"', '"twice"'))
    [edited] = load_plugins([str(p)])
    assert edited.methods == ("twice",) and edited.sha256 != first[0].sha256
    assert "twice" in registries.METHODS and "once" not in registries.METHODS


@pytest.mark.parametrize("body, line, needle", [
    ("x = 1\ndef broken(:\n", 2, "SyntaxError"),
    ("import math\n\nmath.sqrt(-1)\n", 3, "ValueError: math domain error"),
    ("import no_such_module_anywhere\n", 1, "ModuleNotFoundError"),
    ("from unlearning import register_method\n\n@register_method\nclass NotAMethod:\n    pass\n", 3,
     "is not a subclass of unlearning.Method"),
    (MODEL_SRC.format(name="bad name!"), 8, "is not an identifier"),
])
def test_a_plugin_that_fails_to_import_is_one_line_with_its_file_and_line(tmp_path, registries, body,
                                                                          line, needle):
    p = write(tmp_path, "bad_plugin.py", body)
    with pytest.raises(UserError) as e:
        load_plugins([str(p)])
    msg = str(e.value)
    assert msg.startswith(f"plug-in {p.resolve()}, line {line}: ") and needle in msg, msg
    assert "\n" not in msg


def test_a_failed_plugin_leaves_nothing_registered(tmp_path, registries):
    src = MODEL_SRC.format(name="half_model") + "\nraise RuntimeError('late')\n"
    p = write(tmp_path, "half.py", src)
    line = src.splitlines().index("raise RuntimeError('late')") + 1
    with pytest.raises(UserError, match=f"half.py, line {line}: RuntimeError: late"):
        load_plugins([str(p)])
    assert "half_model" not in registries.MODELS
    assert not any(m.startswith("unlearn_plugin_half") for m in sys.modules)


@pytest.mark.parametrize("spec, needle", [
    ("nowhere/missing.py", "no such file"),
    ("my.lab.models_that_do_not_exist", "no module named"),
    ("not a module", "neither a .py file nor a module name"),
    ("folder/", "a plug-in file is a .py file"),
])
def test_a_missing_plugin_is_one_line(tmp_path, registries, spec, needle):
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match=needle):
        load_plugins([spec], base=tmp_path)


def test_a_fifo_named_as_a_plugin_is_refused_not_read(tmp_path, registries):
    os.mkfifo(tmp_path / "pipe.py")  # reading it would block until a writer came
    with pytest.raises(UserError, match=r"pipe.py: a FIFO \(named pipe\), not a file"):
        load_plugins(["pipe.py"], base=tmp_path)


def test_a_plugin_shadowing_a_builtin_or_another_plugin_names_both_files(tmp_path, registries):
    import unlearning.methods.ga as ga

    p = write(tmp_path, "shadow.py", METHOD_SRC.format(name="ga"))
    with pytest.raises(UserError) as e:
        load_plugins([str(p)])
    assert f"method 'ga' is registered twice: by {ga.__file__} and by {p.resolve()}" in str(e.value)
    assert registries.METHODS["ga"] is ga.GA

    a = write(tmp_path / "a", "models.py", MODEL_SRC.format(name="shared_net"))
    b = write(tmp_path / "b", "models.py", MODEL_SRC.format(name="shared_net"))
    load_plugins([str(a)])
    with pytest.raises(UserError) as e:
        load_plugins([str(b)])
    assert f"model 'shared_net' is registered twice: by {a.resolve()} and by {b.resolve()}" in str(e.value)
    assert registries.MODELS.origin("shared_net") == str(a.resolve())


def test_a_plugin_method_that_raises_in_a_trial_is_a_fail_result(tmp_path, registries):
    load_plugins([str(write(tmp_path, "broken.py", RAISES_SRC.format(name="broken_step"))),
                  str(write(tmp_path, "models.py", MODEL_SRC.format(name="tiny_mlp")))])
    digits_npz(tmp_path / "digits.npz")
    r = run_trial(trial("broken_step", "tiny_mlp", tmp_path / "digits.npz"))
    assert r.state == "FAIL" and "ArithmeticError: the plug-in's step gave up" in r.error
    assert "broken.py" in r.error  # the traceback's last line points into the plug-in


def test_a_model_factory_that_returns_no_module_is_one_line(tmp_path, registries):
    load_plugins([str(write(tmp_path, "m.py", "from unlearning import register_model\n"
                                              "register_model('not_a_net', lambda s, k: [s, k])\n"))])
    from unlearning.models import build_model

    with pytest.raises(UserError, match=r"model 'not_a_net' \(.*m.py\): its factory returned a list"):
        build_model("not_a_net", (1, 8, 8), 10)


def test_a_plugin_method_is_documented_and_searchable_like_a_builtin(tmp_path, registries):
    from orchestrator.verbs.trial import method_docs
    from sweeps.spec import load_spec
    from tests.sweep_util import small_spec

    load_plugins([str(write(tmp_path, "m.py", METHOD_SRC.format(name="wneg_doc")))])
    [doc] = [d for d in method_docs() if d["name"] == "wneg_doc"]
    assert doc["description"].startswith("Weighted NegGrad") and doc["parameters"]["beta"]["default"] == 0.9
    raw = small_spec()
    raw["methods"] = {"wneg_doc": {"space": {"beta": {"type": "float", "low": 0.5, "high": 1.0}}}}
    assert load_spec(raw).methods["wneg_doc"].space["beta"]
    raw["methods"]["wneg_doc"]["space"] = {"gamma": {"type": "float", "low": 0.5, "high": 1.0}}
    with pytest.raises(UserError, match="methods.wneg_doc.space.gamma: unknown parameter"):
        load_spec(raw)


def test_a_package_plugin_is_hashed_over_every_file(tmp_path, registries, monkeypatch):
    pkg = tmp_path / "labpkg"
    write(pkg, "__init__.py", '"""My lab."""\nfrom . import nets\n')
    write(pkg, "nets.py", MODEL_SRC.format(name="pkg_net"))
    write(pkg, "sub/__init__.py", "")
    monkeypatch.syspath_prepend(str(tmp_path))
    [p] = load_plugins(["labpkg"])
    assert p.models == ("pkg_net",) and p.path == str(pkg) and p.module == "labpkg"
    manifest = "".join(f"{hashlib.sha256((pkg / rel).read_bytes()).hexdigest()}  {rel}\n"
                       for rel in ("__init__.py", "nets.py", "sub/__init__.py"))
    assert p.sha256 == hashlib.sha256(manifest.encode()).hexdigest()


def test_source_bytes_load_the_same_names_and_a_wrong_hash_is_refused(tmp_path, registries):
    p = write(tmp_path, "m.py", METHOD_SRC.format(name="from_bytes"))
    source = p.read_bytes()
    with pytest.raises(UserError, match="a different version"):
        load_plugin_source(str(p), source, "0" * 64)
    q = load_plugin_source(str(p), source, hashlib.sha256(source).hexdigest())
    assert q.methods == ("from_bytes",) and q.sha256 == hashlib.sha256(source).hexdigest()
    assert load_plugins([str(p)]) == [q]  # the same plug-in: not imported twice


WORKER = textwrap.dedent('''
    import json, pickle, sys, torch
    from unlearning.plugins import load_plugin_source
    # as many threads as the driver's process: float sums then add up in the same order
    torch.set_num_threads(int(sys.argv[2]))
    from unlearning.trial import load_trial_config, run_trial, untimed
    shipped = pickle.load(open(sys.argv[1], "rb"))
    names = [load_plugin_source(p["name"], p["sources"], p["sha256"], path=p["path"]).record()
             for p in shipped["plugins"]]
    r = run_trial(load_trial_config(shipped["config"]))
    print(json.dumps({"plugins": names, "result": untimed(r)}))
''')


def test_a_process_without_the_plugin_files_runs_the_same_trial_from_their_source(tmp_path, registries):
    """What a Ray worker on another node will do: the plug-ins' source bytes arrive, the files do
    not exist there, and the trial's result is the one the driver's process gets."""
    lab, elsewhere = tmp_path / "lab", tmp_path / "worker"
    elsewhere.mkdir()
    write(lab / "labpkg", "__init__.py", "from .nets import *\n")
    write(lab / "labpkg", "nets.py", MODEL_SRC.format(name="shipped_net"))
    m = write(lab, "methods.py", METHOD_SRC.format(name="shipped_neg"))
    digits_npz(tmp_path / "data" / "digits.npz")
    sys.path.insert(0, str(lab))
    try:
        loaded = load_plugins([str(m), "labpkg"])
    finally:
        sys.path.remove(str(lab))
    cfg = trial("shipped_neg", "shipped_net", tmp_path / "data" / "digits.npz")
    here = run_trial(cfg)
    assert here.state == "COMPLETE", here.error
    (tmp_path / "shipped.pkl").write_bytes(pickle.dumps({
        "plugins": [{"name": p.name, "sources": dict(p.sources), "sha256": p.sha256, "path": p.path}
                    for p in loaded], "config": cfg.model_dump(mode="json")}))
    import shutil

    shutil.rmtree(lab)  # the worker has never seen the files
    out = subprocess.run([sys.executable, "-c", WORKER, str(tmp_path / "shipped.pkl"),
                          str(torch.get_num_threads())], cwd=elsewhere,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    there = json.loads(out.stdout.strip().splitlines()[-1])
    assert [p["sha256"] for p in there["plugins"]] == [p.sha256 for p in loaded]
    assert [p["methods"] + p["models"] for p in there["plugins"]] == [["shipped_neg"], ["shipped_net"]]
    a, b = untimed(here), there["result"]
    for key in ("state", "metrics", "reference", "history", "params"):
        assert a[key] == b[key], key


def test_the_source_loader_refuses_a_module_outside_its_plugin_with_import_error():
    # InspectLoader's contract: linecache catches ImportError (a KeyError escaped it before)
    import linecache

    from unlearning.plugins import _SourceFinder

    finder = _SourceFinder("lab_m", {"lab_m.py": b"x = 1\n"}, "/nowhere/lab_m.py")
    assert finder.get_source("lab_m") == "x = 1\n"
    with pytest.raises(ImportError):
        finder.get_source("other")
    with pytest.raises(ImportError):
        finder.get_code("other")
    assert linecache.getlines("<lab>", {"__name__": "other", "__loader__": finder}) == []
