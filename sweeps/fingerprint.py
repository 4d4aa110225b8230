"""Fingerprints: one (configuration, seed) runs once. A fingerprint hashes every field of a TrialConfig
that determines the result (method, full params with defaults, seeds, data, split, model, recipe,
eval, precision) and the code version of the method and of what trains its oracles."""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import sys
from typing import Any

# -- fingerprints --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def method_code_version(method: str) -> str:
    """The oracle's code version (data, loop, models) plus this method's own source."""
    from unlearning import __version__
    from unlearning.methods import get_method
    from unlearning.oracle import code_version

    src = inspect.getsource(sys.modules[get_method(method).__module__])
    return hashlib.sha256(f"{__version__}|{code_version()}|{src}".encode()).hexdigest()[:12]


# fields of a TrialConfig that do not change what a trial computes
NOT_FINGERPRINTED = ("device", "cache_dir")


def fingerprint(trial_config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(fingerprint, the normalised TrialConfig dict). The fingerprint hashes every field that
    determines the result (method, full params with defaults, seeds, data, split, model, recipe,
    eval, precision) and the code version, so one (configuration, seed) never runs twice."""
    from unlearning.trial import load_trial_config

    cfg = load_trial_config(trial_config)
    full = cfg.model_dump(mode="json")
    full["params"] = cfg.method_config().model_dump(mode="json")
    key = {k: v for k, v in full.items() if k not in NOT_FINGERPRINTED}
    key["code_version"] = method_code_version(cfg.method)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()[:20], full


