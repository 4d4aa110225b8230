"""A released model a trial starts from: the Original (and optionally Retrain) given as a file.

    TrialConfig(..., checkpoints={"original": "released/resnet18_cifar10.pt"})

The file is a PyTorch state dict (`torch.save(model.state_dict(), path)`) read with
`torch.load(weights_only=True)`: tensors and plain containers only, so a file crafted to run code
when unpickled is refused before anything in it runs. It must fit the trial's model exactly: the
same parameter and buffer names with the same shapes (the first mismatch is the error), all values
finite. Once checked it is installed in the oracle cache under its content hash
(`oracle.install_checkpoint`), where a trial finds it as it finds a trained oracle.

Every problem is one UserError line naming the config key and the file.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field, model_validator

from unlearning.config import StrictModel
from unlearning.errors import UserError
from unlearning.files import file_problem


class CheckpointRef(StrictModel):
    """A weights file; a bare path is accepted for `{path: ...}`. `sha256` pins its content (a
    paper's published hash): a file that hashes otherwise is refused. A node whose oracle cache
    already holds the pinned checkpoint does not need the file."""

    path: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="before")
    @classmethod
    def _bare_path(cls, v):
        return {"path": v} if isinstance(v, (str, Path)) else v


class Checkpoints(StrictModel):
    """The models a trial starts from instead of training them. Retrain does not depend on the
    Original (it is trained from scratch on the retain set), so giving only `original` still trains
    Retrain, and shares it with every trial of the same data, split, recipe and seed."""

    original: CheckpointRef | None = None
    retrain: CheckpointRef | None = None


@dataclass(frozen=True)
class Checkpoint:
    """A checked state dict and where it came from."""

    path: str
    sha256: str
    state: dict[str, torch.Tensor]


def read_checkpoint(path: str | Path, *, sha256: str | None = None, what: str = "checkpoint",
                    data: bytes | None = None) -> Checkpoint:
    """Read a state dict with weights_only=True; `what` names it in messages (a config key).
    Raises UserError: a missing or non-regular file, a hash other than `sha256`, a file torch cannot
    read, one that would run code or build objects, or one that is not {name: finite tensor}.
    `data`: the file's bytes, sent from a machine that has it (`path` then only names it)."""
    p = Path(path).expanduser()
    if data is None:
        if (problem := file_problem(p)) is not None:
            raise UserError(f"{what}: {p}: {problem}")
        try:
            data = p.read_bytes()
        except OSError as e:
            raise UserError(f"{what}: {p}: cannot be read ({e.strerror or e})") from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise UserError(f"{what}: {p} has sha256 {digest}, expected {sha256}")
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols; the error says more
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        _, _, why = str(e).partition("WeightsUnpickler error:")
        why = " ".join(why.split()).split(". ")[0] or type(e).__name__
        raise UserError(f"{what}: {p} is not a plain weights file ({why}); refused, nothing in it ran"
                        ) from None
    except Exception as e:  # noqa: BLE001 - not a torch file at all, torn
        text = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise UserError(f"{what}: {p} cannot be read as a PyTorch file ({text})") from None
    return Checkpoint(str(p), digest, _state_dict(state, p, what))


def _a(v) -> str:
    """What `v` is, with its article: "a mapping", "an int", "a Tensor"."""
    name = "mapping" if isinstance(v, Mapping) else type(v).__name__
    return f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}"


def _state_dict(obj, p: Path, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise UserError(f"{what}: {p} holds {_a(obj)}, not a state dict "
                        "({name: tensor}, as torch.save(model.state_dict(), path) writes)")
    for k, v in obj.items():
        if not isinstance(k, str):
            raise UserError(f"{what}: {p} has a key {k!r} that is not a parameter name")
        if not isinstance(v, torch.Tensor):
            nested = isinstance(v, Mapping) and v and all(isinstance(t, torch.Tensor) for t in v.values())
            hint = (f" (a training checkpoint? save its {k!r}: torch.save(ckpt[{k!r}], path))" if nested
                    else "")
            raise UserError(f"{what}: {p}: {k!r} holds {_a(v)}, not a tensor{hint}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise UserError(f"{what}: {p}: {k!r} holds NaN or infinite values")
    return dict(obj)


def check_state_dict(state: Mapping[str, torch.Tensor], model: torch.nn.Module, *, what: str,
                     path: str, model_name: str) -> None:
    """UserError naming the first mismatch between `state` and `model.state_dict()` (parameters
    and buffers): a key the model has and the file lacks, a shape that differs (in the model's
    order), then a key the file has and the model lacks."""
    want = model.state_dict()
    for k, t in want.items():
        if k not in state:
            hint = " (keys start with 'module.': saved from DataParallel; strip the prefix)" if \
                f"module.{k}" in state else ""
            raise UserError(f"{what}: {path} lacks {k!r}, which the model {model_name} has{hint}")
        if tuple(state[k].shape) != tuple(t.shape):
            raise UserError(f"{what}: {path}: {k!r} has shape {tuple(state[k].shape)}, the model "
                            f"{model_name}'s {tuple(t.shape)}")
    for k in state:
        if k not in want:
            raise UserError(f"{what}: {path} has {k!r}, which the model {model_name} does not have")
