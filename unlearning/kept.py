"""Unlearned models kept after their trial: the winners a researcher takes away.

A sweep keeps them (`unlearn-sweep replicate`, `run --keep-models`) as two files per run, in
runs/<name>/models/:

    <fingerprint>.pt     the unlearned model's state dict, as torch.save(model.state_dict()) writes it
    <fingerprint>.json   the fingerprint, the exact TrialConfig, the model (name, input shape, classes,
                         the source hash of a plug-in model), the run's metrics, the .pt's sha256

    from unlearning import load_unlearned
    model = load_unlearned("runs/mine/models/0f3c9a6e41d2b7c85a10.pt")   # an nn.Module, eval mode

The .pt is a plain state dict, read with weights_only=True (it cannot run code) and checked against
the model the JSON names, parameter by parameter: it is also a valid `checkpoints.original` for
another sweep. Both files are written under temporary names and renamed, the JSON last: a JSON
means its .pt is whole.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearning.errors import UserError

if TYPE_CHECKING:  # torch is imported where a model is made or read: listing kept models needs none
    import torch


@dataclass(frozen=True)
class KeptModel:
    """An unlearned model on its way from a worker to the driver: the state dict's bytes and what
    rebuilding the module needs besides its name."""

    state: bytes  # torch.save(model.state_dict()), CPU tensors
    in_shape: tuple[int, ...]
    num_classes: int

    def as_payload(self) -> dict[str, Any]:
        """A plain dict for a task's result (it crosses process and node boundaries)."""
        return {"state": self.state, "in_shape": list(self.in_shape), "num_classes": self.num_classes}


def keep(model: "torch.nn.Module", in_shape, num_classes: int) -> KeptModel:
    """The model's state dict (on the CPU) as bytes, with its input shape and classes."""
    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}, buf)
    return KeptModel(buf.getvalue(), tuple(int(d) for d in in_shape), int(num_classes))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_unlearned(folder: str | Path, fingerprint: str, kept: Mapping[str, Any] | KeptModel,
                   info: Mapping[str, Any]) -> Path:
    """Write `<fingerprint>.pt` and `<fingerprint>.json` in `folder` (created); returns the .pt's
    path. `kept`: a KeptModel or its `as_payload()`; `info`: what the JSON holds besides the model
    (the TrialConfig as `config`, the metrics, ...)."""
    if isinstance(kept, KeptModel):
        kept = kept.as_payload()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pt = folder / f"{fingerprint}.pt"
    state = bytes(kept["state"])
    meta = {**info, "fingerprint": fingerprint, "sha256": hashlib.sha256(state).hexdigest(),
            "in_shape": list(kept["in_shape"]), "num_classes": int(kept["num_classes"])}
    _write_atomic(pt, state)
    _write_atomic(pt.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True).encode())
    return pt


def unlearned_info(path: str | Path) -> dict[str, Any]:
    """The JSON beside a kept model's .pt (`path` may name either file). UserError (one line) when
    it is missing or not what `save_unlearned` writes."""
    p = Path(path).expanduser()
    meta = p.with_suffix(".json")
    try:
        info = json.loads(meta.read_text())
    except FileNotFoundError:
        raise UserError(f"{meta}: no such file (a kept model is a .pt with its .json beside it)") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{meta}: not readable as a kept model's description ({e})") from None
    missing = [k for k in ("config", "in_shape", "num_classes", "sha256") if k not in (
        info if isinstance(info, dict) else {})]
    if missing:
        raise UserError(f"{meta}: not a kept model's description (no {missing[0]!r})")
    return info


def kept_models(folder: str | Path) -> list[dict[str, Any]]:
    """The descriptions (.json) of the models kept in `folder` (a run's models/), each with its
    .pt's path as `path`; those without their .pt are left out. Sorted by trial, then seed index."""
    out = []
    for meta in sorted(Path(folder).glob("*.json")):
        pt = meta.with_suffix(".pt")
        try:
            info = unlearned_info(meta)
        except UserError:
            continue
        if pt.is_file():
            out.append({**info, "path": str(pt)})
    return sorted(out, key=lambda i: (i.get("trial_number", -1), i.get("phase", ""), i.get("seed_index", 0)))


def load_unlearned(path: str | Path, device: "str | torch.device" = "cpu") -> "torch.nn.Module":
    """A kept unlearned model as an `nn.Module` in eval mode, on `device`. Its architecture is the
    model its TrialConfig names, built for the recorded input shape and classes (a plug-in's model
    needs that plug-in loaded, at the version the sweep ran: the source hash is checked). The
    weights are read with weights_only=True and must match the model exactly. UserError (one line)
    for every problem."""
    from unlearning.checkpoints import check_state_dict, read_checkpoint
    from unlearning.models import MODELS, build_model

    p = Path(path).expanduser()
    pt = p.with_suffix(".pt")
    info = unlearned_info(p)
    name = info["config"].get("model", "small_cnn")
    MODELS.lookup(name)  # unknown here (a plug-in not loaded): one line listing the known ones
    want, have = info.get("model_source"), MODELS.source_sha256(name)
    if want != have:
        raise UserError(f"{pt}: its model {name!r} was built by source {str(want)[:12]}..., but the "
                        f"{name!r} loaded here is {str(have)[:12]}... (load the plug-in the sweep ran with)")
    ckpt = read_checkpoint(pt, sha256=info["sha256"], what="unlearned model")
    model = build_model(name, tuple(info["in_shape"]), int(info["num_classes"]))
    check_state_dict(ckpt.state, model, what="unlearned model", path=str(pt), model_name=name)
    model.load_state_dict(ckpt.state)
    return model.to(device).eval()
