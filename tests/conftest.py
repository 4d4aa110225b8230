"""Shared test set-up: one oracle cache for the whole session (original and Retrain models are
trained once, then every test and subprocess reuses them), W&B off, small thread counts."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Before anything imports torch or wandb: one cache per test session, shared with subprocesses and
# with pytest-xdist's workers (they inherit it from the controller, which made it and deletes it).
# pytest-xdist: each worker takes its share of the cores for torch's threads (and its subprocesses'),
# set before anything imports torch; two workers at one thread per core each otherwise run four
# OpenMP threads on two cores, and CPU-bound tests took several times as long.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = (os.cpu_count() or 1) // max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

if "UNLEARN_SWEEP_CACHE" not in os.environ:
    os.environ["UNLEARN_SWEEP_CACHE"] = tempfile.mkdtemp(prefix="unlearn-sweep-test-cache-")
    atexit.register(shutil.rmtree, os.environ["UNLEARN_SWEEP_CACHE"], ignore_errors=True)
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def oracle_cache() -> Path:
    return Path(os.environ["UNLEARN_SWEEP_CACHE"])


def digits_config(method: str = "ft", **fields):
    """A TrialConfig on digits + small_cnn with the session cache; `fields` override top-level keys
    (params=..., split=..., seeds=...)."""
    from unlearning.trial import load_trial_config

    raw = {"method": method, "data": {"name": "digits"}, "model": "small_cnn", **fields}
    return load_trial_config(raw)


@pytest.fixture
def registries():
    """The registries, the loaded plug-ins and the import system restored after the test: what one
    test registers never leaks into another."""
    import sys

    from unlearning import plugins, registry

    for reg in registry.REGISTRIES.values():
        reg._load_builtins()
    saved = {key: dict(reg._entries) for key, reg in registry.REGISTRIES.items()}
    loaded, finders, modules = dict(plugins._LOADED), list(sys.meta_path), set(sys.modules)
    yield registry
    for key, reg in registry.REGISTRIES.items():
        reg._entries = saved[key]
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)
    sys.meta_path[:] = finders
    for m in set(sys.modules) - modules:
        if m.startswith("unlearn_plugin_") or m.startswith("labpkg"):
            del sys.modules[m]
