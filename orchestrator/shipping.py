"""What every task of a sweep carries to a node that has nothing but the package: the source of the
spec's plug-ins and the bytes of its released checkpoints.

Nodes share no file system: the researcher's files exist on the driver's machine only. The driver
puts each file in the backend's shared store once (`Backend.share`, Ray's object store) and every
payload holds handles on them (`plugin_sources`, `checkpoint_files`, read by unlearning/tasks.py and
unlearning/audit.py before the payload's config is validated). A handle moves its bytes only when a
worker calls it, and a worker calls it only when its process lacks that plug-in version or its
node's cache lacks that checkpoint: a long-lived worker pays once.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cluster.backend import Backend
from sweeps.spec import SweepSpec
from unlearning.errors import UserError
from unlearning.files import file_problem


class Shipment:
    """`shipment(payload)` -> the payload with what its worker may lack (the payload itself when the
    spec has neither plug-ins nor checkpoints)."""

    def __init__(self, spec: SweepSpec, backend: Backend):
        from unlearning.plugins import ship

        self.plugins = ship(spec.loaded_plugins(), backend.share) if spec.plugins else []
        self.checkpoints = {sha: backend.share(blob) for sha, blob in checkpoint_bytes(spec).items()}

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        if not (self.plugins or self.checkpoints):
            return payload
        out = dict(payload)
        if self.plugins:
            out["plugin_sources"] = self.plugins
        if self.checkpoints:
            out["checkpoint_files"] = self.checkpoints
        return out


def checkpoint_bytes(spec: SweepSpec) -> dict[str, bytes]:
    """{sha256: the file's bytes} of `base.checkpoints`, read here on the driver. Each must still
    hold what `load_spec` read (its sha256 pinned in the spec): one UserError line otherwise."""
    out = {}
    for kind, ref in (spec.base.get("checkpoints") or {}).items():
        if not ref:
            continue
        ref = {"path": ref} if isinstance(ref, str) else ref
        what = f"base.checkpoints.{kind}"
        if not ref.get("sha256"):
            raise UserError(f"{what}: no sha256 (read the spec with sweeps.spec.load_spec, which "
                            "fills it in)")
        p = Path(ref["path"])
        if (problem := file_problem(p)) is not None:
            raise UserError(f"{what}: {p}: {problem}")
        blob = p.read_bytes()
        if hashlib.sha256(blob).hexdigest() != ref["sha256"]:
            raise UserError(f"{what}: {p} has changed since the spec was read (its sha256 is no "
                            f"longer {ref['sha256'][:12]}...)")
        out[ref["sha256"]] = blob
    return out
