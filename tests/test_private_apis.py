"""Every private API of Optuna and Ray that we lean on, checked against the installed versions: when an
upgrade removes one, this fails naming the version and the name, instead of a sweep failing somewhere
later (pyproject.toml bounds both to the versions checked here)."""
from __future__ import annotations

import importlib.metadata as md

import pytest


def test_ray_private_names_exist_in_the_installed_ray():
    ray = pytest.importorskip("ray")
    from ray._private import ray_constants

    from cluster import ray_private

    where = f"ray {ray.__version__}: cluster/ray_private.py needs"
    assert hasattr(ray_constants, "ENABLE_RAY_CLUSTER"), f"{where} ray_constants.ENABLE_RAY_CLUSTER"
    from ray._raylet import AuthenticationTokenLoader, Config  # noqa: F401 - reload_auth_mode
    assert hasattr(AuthenticationTokenLoader, "instance") and hasattr(Config, "initialize"), where
    from ray._private.authentication import authentication_token_setup as setup, authentication_utils

    assert hasattr(setup, "ensure_token_if_auth_enabled"), f"{where} ensure_token_if_auth_enabled"
    assert hasattr(authentication_utils, "is_token_auth_enabled"), f"{where} is_token_auth_enabled"
    assert ray_private.TOKEN_SETUP_LOGGER == setup.__name__
    assert hasattr(ray._private.worker, "_global_node"), f"{where} ray._private.worker._global_node"
    import inspect

    from ray._private.node import Node

    assert hasattr(Node, "get_session_dir_path"), f"{where} Node.get_session_dir_path (session_dir)"
    assert ray_private.temp_root().endswith("/ray"), f"{where} ray._common.utils.get_default_ray_temp_dir"
    assert 'f"session_{date_str}_{os.getpid()}"' in inspect.getsource(Node), \
        f"{where} session directories named after the starting process's pid (cluster/reaper.py)"
    from ray._private import utils

    assert hasattr(utils, "set_sigterm_handler"), f"{where} utils.set_sigterm_handler"
    assert hasattr(ray_constants, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"), \
        f"{where} ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER"
    for module in (ray._private.worker, ray._private.node):  # where ray.init installs its handlers
        src = inspect.getsource(module)
        assert "signal.signal(signal.SIGTERM" not in src, f"{where}: {module.__name__} sets SIGTERM directly"
    with ray_private.loopback_only():  # sets and restores, without starting anything
        assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert isinstance(ray_private.token_auth_enabled(), bool)
    assert getattr(ray_constants, "RAY_WORKER_NICENESS", None) == ray_private.WORKER_NICENESS_ENV, \
        f"{where} ray_constants.RAY_WORKER_NICENESS"


def test_optuna_journal_format_is_the_one_sweeps_journal_reads():
    """sweeps/journal.py folds Optuna's journal records itself (a third of Optuna's replay time):
    its operation codes must be Optuna's. (tests/test_record_scale.py compares whole studies.)"""
    optuna = pytest.importorskip("optuna")
    from optuna.storages.journal._storage import JournalOperation

    from sweeps import journal as J

    ops = {op.name: op.value for op in JournalOperation}
    want = {"CREATE_STUDY": J.CREATE_STUDY, "DELETE_STUDY": J.DELETE_STUDY,
            "SET_STUDY_USER_ATTR": J.SET_STUDY_USER_ATTR, "SET_STUDY_SYSTEM_ATTR": J.SET_STUDY_SYSTEM_ATTR,
            "CREATE_TRIAL": J.CREATE_TRIAL, "SET_TRIAL_PARAM": J.SET_TRIAL_PARAM,
            "SET_TRIAL_STATE_VALUES": J.SET_TRIAL_STATE_VALUES,
            "SET_TRIAL_INTERMEDIATE_VALUE": J.SET_TRIAL_INTERMEDIATE_VALUE,
            "SET_TRIAL_USER_ATTR": J.SET_TRIAL_USER_ATTR, "SET_TRIAL_SYSTEM_ATTR": J.SET_TRIAL_SYSTEM_ATTR}
    assert {k: ops.get(k) for k in want} == want, f"optuna {optuna.__version__} changed its journal op codes"


def test_the_installed_versions_are_inside_the_declared_bounds():
    from packaging.requirements import Requirement

    declared = {Requirement(r).name: Requirement(r) for r in md.requires("unlearn-sweep") or []}
    for name in ("optuna", "ray"):
        req = declared[name]
        assert req.specifier, f"{name} has no version bound in pyproject.toml"
        assert req.specifier.contains(md.version(name)), f"{name} {md.version(name)} outside {req.specifier}"
