"""Every use of Ray's private modules, in one place (pyproject.toml bounds Ray to the versions these
were checked on; tests/test_private_apis.py fails loudly, naming the Ray version, when one is gone).

Why private: Ray has no public way to (1) start an embedded instance on loopback only, (2) tell a
driver that joins a token-protected cluster to send its token after `import ray` read the mode,
(3) ask whether token authentication is on (for the dashboard hint), (4) find the session directory
of an embedded instance (for cluster/reaper.py), (5) keep the caller's signal handlers while
ray.init runs, (6) set the nice level of the workers an embedded instance starts (its raylet reads
RAY_worker_niceness, as Ray's own job manager sets it).
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

# the logger of Ray's notice that token authentication is on (not the user's business)
TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
WORKER_NICENESS_ENV = "RAY_worker_niceness"  # ray_constants.RAY_WORKER_NICENESS


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Start an embedded Ray with every server on 127.0.0.1 (GCS, raylet, object manager, workers,
    agents, metrics): Ray binds to the node's IP, which it takes to be loopback when its "cluster"
    support is off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read by the processes it starts and, here,
    by ray_constants). Restored afterwards, so a later connection to a real cluster is unaffected."""
    from ray._private import ray_constants

    old_env, old_flag = os.environ.get(_CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_ENV], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = old_env


def reload_auth_mode() -> None:
    """Have Ray read RAY_AUTH_MODE / the token again (it read them when it was imported)."""
    # ray's _raylet.pyi stub lists neither; the compiled module has both (test_private_apis.py)
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def ensure_token() -> None:
    """Create this user's token when token authentication is on and none exists (what ray.init does
    for a local cluster and `ray.cluster_utils.Cluster` does not): tests and benches."""
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled

    ensure_token_if_auth_enabled({}, create_token_if_missing=True)


def token_auth_enabled() -> bool:
    """Whether this process uses token authentication (False on a Ray without it)."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:
        return False
    return bool(is_token_auth_enabled())


def global_node():
    """The node this process started (ray.init(address="local")): its ports and addresses, for
    tests that check nothing listens beyond loopback."""
    import ray

    return ray._private.worker._global_node


def temp_root() -> str:
    """Where an embedded Ray started by this process will put its session directories
    (`<root>/session_<date>_<time>_<pid of the starting process>`): RAY_TMPDIR, TMPDIR or /tmp, plus
    /ray, as Ray computes it."""
    from ray._common.utils import get_default_ray_temp_dir

    return get_default_ray_temp_dir()


def session_dir() -> str:
    """The session directory of the Ray this process started (its processes keep their logs there)."""
    return global_node().get_session_dir_path()


@contextlib.contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """ray.init replaces the caller's SIGTERM handler three times over: with a Python handler that
    exits with status 15 (ray.init's own), one that kills Ray's processes and exits 1 (the head node
    it starts here), and, in C, absl's failure handler (the core worker's), which prints a stack and
    ends the process with SIGABRT. None of them says a word, and each bypassed the driver's clean
    stop. Inside the block Ray installs none of them in this process (its workers keep absl's
    handler: their crashes still print a stack), so the caller's handlers stay live throughout.
    Started on a thread (cluster/handover.py), ray.init would warn that it set no SIGTERM handler:
    none is wanted, so that warning is dropped."""
    from ray._private import ray_constants, utils

    original = utils.set_sigterm_handler, ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER
    utils.set_sigterm_handler = lambda handler: None
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True  # read when the core worker starts
    worker_log = logging.getLogger("ray._private.worker")
    worker_log.addFilter(_no_sigterm_notice)
    try:
        yield
    finally:
        utils.set_sigterm_handler, ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = original
        worker_log.removeFilter(_no_sigterm_notice)


def _no_sigterm_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("SIGTERM handler is not set")
