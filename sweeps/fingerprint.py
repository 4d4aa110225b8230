"""Fingerprints: one (configuration, seed) runs once. A fingerprint hashes every field of a TrialConfig
that determines the result (method, full params with defaults, seeds, data, split, model, recipe,
eval, precision; the sweep's plug-ins by content and its checkpoints by content, when it has any)
and the code version of the method and of what trains its oracles."""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import sys
from typing import Any

# -- fingerprints --------------------------------------------------------------------------------

def method_code_version(method: str) -> str:
    """The oracle's code version (data, loop, models) plus this method's own source: for a built-in
    its module's source; for a plug-in's method the plug-in's SHA-256 (of all its files, for a
    package), so an edit anywhere in it is another version."""
    from unlearning.registry import METHODS

    return _code_version(method, METHODS.source_sha256(method))


@functools.lru_cache(maxsize=None)
def _code_version(method: str, source_sha256: str | None) -> str:
    from unlearning import __version__
    from unlearning.methods import get_method
    from unlearning.oracle import code_version

    src = source_sha256 or inspect.getsource(sys.modules[get_method(method).__module__])
    return hashlib.sha256(f"{__version__}|{code_version()}|{src}".encode()).hexdigest()[:12]


# fields of a TrialConfig that do not change what a trial computes
NOT_FINGERPRINTED = ("device", "cache_dir")


def fingerprint(trial_config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(fingerprint, the normalised TrialConfig dict). The fingerprint hashes every field that
    determines the result (method, full params with defaults, seeds, data, split, model, recipe,
    eval, precision, the plug-ins {name, sha256}) and the code version, so one (configuration,
    seed) never runs twice. A checkpoint counts by its content: its sha256 (which the sweep's
    spec loading fills in), not its path. Configs without plug-ins or checkpoints hash exactly as
    they did before either existed."""
    from unlearning.trial import load_trial_config

    cfg = load_trial_config(trial_config)
    full = cfg.model_dump(mode="json")
    full["params"] = cfg.method_config().model_dump(mode="json")
    key = {k: v for k, v in full.items() if k not in NOT_FINGERPRINTED}
    if key.get("checkpoints"):  # where a file lies is not what it holds
        key["checkpoints"] = {kind: ref and (ref["sha256"] or ref["path"])
                              for kind, ref in key["checkpoints"].items()}
    key["code_version"] = method_code_version(cfg.method)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()[:20], full
