"""The original model (trained on the whole training set) and the Retrain model (trained from scratch
on the retain set), trained once and cached on disk.

Cache key = a content hash of everything that determines the weights: the data tensors, the split
(Retrain only), the model name, the training recipe, `train_seed`, and the source of the training code.
A model given as a file (a released checkpoint, unlearning/checkpoints.py) is installed in the same
cache under its file's content hash and the model name, which alone determine it.
Files are written under a temporary name and renamed (a crash never leaves a torn file), loaded with
`weights_only=True` (a cache file cannot run code), and guarded by a lock file so two workers sharing a
cache directory train a model once.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from unlearning import data as data_mod
from unlearning import loop as loop_mod
from unlearning import models as models_mod
from unlearning.checkpoints import Checkpoints, check_state_dict, read_checkpoint
from unlearning.data import Dataset
from unlearning.errors import UserError
from unlearning.methods import Context, get_method
from unlearning.methods.base import MethodConfig
from unlearning.splits import MethodData, Split


class TrainRecipe(MethodConfig):
    """How the original and Retrain models are trained. The defaults suit digits + small_cnn; the
    paper presets use the reference protocol (182 epochs, lr 0.1, cosine, batch 256)."""

    epochs: int = Field(30, ge=1)
    lr: float = Field(0.05, gt=0)
    batch_size: int = Field(128, ge=1)
    schedule: Literal["constant", "cosine", "step"] = "cosine"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the source that determines trained weights: a change there invalidates the cache.
    Computed once per process: the code a process runs is the code it imported."""
    h = hashlib.sha256()
    for mod in (data_mod, loop_mod, models_mod, get_method("ft")):
        h.update(inspect.getsource(mod).encode())
    return h.hexdigest()[:12]


@dataclass
class Trained:
    model: torch.nn.Module
    runtime_s: float  # wall-clock training time when it was trained (not when loaded)
    history: list[dict]
    cached: bool  # loaded from the cache rather than trained now


def train_from_scratch(ds: Dataset, idx: torch.Tensor, model_name: str, recipe: TrainRecipe, seed: int,
                       device: torch.device, autocast, on_epoch: Callable[[dict], None] | None = None
                       ) -> Trained:
    """Train a fresh model on train-set indices `idx` with `recipe` (cross-entropy, the one loop);
    `on_epoch` gets each epoch's row as it ends (progress for a person waiting)."""
    torch.manual_seed(seed)
    model = models_mod.build_model(model_name, ds.in_shape, ds.num_classes).to(device)
    if device.type == "cuda" and len(ds.in_shape) == 3:
        # torch's stubs omit Module.to's memory_format keyword, which it takes (torch.nn.Module.to)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    gen = torch.Generator(device=device).manual_seed(seed)
    view = MethodData(ds, torch.empty(0, dtype=torch.long), idx, val=torch.empty(0, dtype=torch.long),
                      gen=gen, augment=recipe.augment)
    ft = get_method("ft")
    cfg = ft.Config(**{k: getattr(recipe, k) for k in MethodConfig.model_fields})
    method = ft(cfg, Context(view, model, device, gen, autocast))
    t0 = time.perf_counter()
    history, _ = loop_mod.run_loop(model, method, on_epoch=on_epoch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    model.eval()
    return Trained(model, time.perf_counter() - t0, history, cached=False)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def cache_key(key_parts: dict[str, Any]) -> str:
    """The file name stem of a cached model: a content hash of everything that determines it."""
    return hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:24]


def cache_files(cache_dir: Path, key: str) -> dict[str, bytes]:
    """The files of one cached model ({name: bytes}): what a worker sends so that another node's
    cache can hold the same model without training it (`install_files`)."""
    return {name: (cache_dir / name).read_bytes() for name in (f"{key}.pt", f"{key}.json")}


def install_files(cache_dir: Path, files: dict[str, Any]) -> int:
    """Put model files sent from elsewhere into this node's cache, atomically, unless already there.
    `files` maps a cache file name to its bytes or to a zero-argument callable returning them (the
    backend's handle: the bytes travel only when this node lacks the file). Names are plain cache
    names (hash.pt / hash.json), never paths. Returns how many files were written."""
    written = 0
    for name, blob in files.items():
        if "/" in name or name.startswith(".") or not name.endswith((".pt", ".json")):
            raise ValueError(f"install_files: {name!r} is not a cache file name")
        path = cache_dir / name
        if path.exists():
            continue
        data = blob() if callable(blob) else blob
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda p, data=data: p.write_bytes(data))
        written += 1
    return written


def _load_cached(weights: Path, meta: Path, model_name: str, ds: Dataset, device: torch.device
                 ) -> Trained:
    model = models_mod.build_model(model_name, ds.in_shape, ds.num_classes)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model = model.to(device).eval()
    if device.type == "cuda" and len(ds.in_shape) == 3:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # as above
    info = json.loads(meta.read_text())
    runtime = info["runtime_s"]  # None for an installed checkpoint: no one here trained it
    return Trained(model, float("nan") if runtime is None else runtime, info["history"], cached=True)


def cached_train(cache_dir: Path, key_parts: dict[str, Any], ds: Dataset, idx: torch.Tensor,
                 model_name: str, recipe: TrainRecipe, seed: int, device: torch.device, autocast,
                 on_epoch: Callable[[dict], None] | None = None) -> Trained:
    """`train_from_scratch`, memoised on disk under a hash of `key_parts` (the .pt is loaded with
    weights_only: a cache file cannot run code). A checkpoint's key is never trained: it must have
    been installed (`install_checkpoint`). `on_epoch`: as for train_from_scratch (never called when
    the model comes from the cache)."""
    key = cache_key(key_parts)
    weights, meta = cache_dir / f"{key}.pt", cache_dir / f"{key}.json"
    with _locked(weights):
        if weights.exists() and meta.exists():
            return _load_cached(weights, meta, model_name, ds, device)
        if "checkpoint" in key_parts:
            raise UserError(f"the {key_parts['kind']} checkpoint {key_parts['checkpoint'][:12]}... is "
                            f"not in the oracle cache {cache_dir}, and its file is not here")
        out = train_from_scratch(ds, idx, model_name, recipe, seed, device, autocast, on_epoch)
        _atomic_write(weights, lambda p: torch.save(out.model.state_dict(), p))
        info = {"key": key_parts, "runtime_s": out.runtime_s, "history": out.history,
                "device": str(device), "created": time.time()}
        _atomic_write(meta, lambda p: p.write_text(json.dumps(info)))
        return out


def oracle_key(ds: Dataset, model_name: str, recipe: TrainRecipe, seed: int, precision: str = "fp32"
               ) -> dict[str, Any]:
    """The cache-key parts every trained model shares; callers add `kind` (and `split` or whatever
    else selects the training examples). Audit shadows (unlearning/audit.py) use it too."""
    base = {"data": ds.content_hash(), "model": model_name, "recipe": recipe.model_dump(), "seed": seed,
            "code": code_version()}
    if precision != "fp32":
        base["precision"] = precision
    return {**base, **_outside_code(ds, model_name)}


def _outside_code(ds: Dataset, model_name: str) -> dict[str, Any]:
    """What determines a model beyond `code_version` when a name comes from outside unlearning/data.py
    and models.py (empty for theirs, so their keys are as they always were): a registered model's
    source hash (a plug-in edited under the same name builds another network), and the
    normalisation and augmentation a data set's loader chose (its tensors are in `data` already)."""
    out: dict[str, Any] = {}
    if (src := models_mod.MODELS.source_sha256(model_name)) is not None:
        out["model_source"] = src
    if ds.name not in data_mod.DATA_SETS or data_mod.DATA_SETS.module(ds.name) != data_mod.__name__:
        out["data_prep"] = {"mean": list(ds.mean), "std": list(ds.std), "crop_pad": ds.crop_pad,
                            "flip": ds.flip}
    return out


def checkpoint_parts(kind: Literal["original", "retrain"], sha256: str, model_name: str) -> dict[str, Any]:
    """The cache-key parts of a model given as a file: its content hash and the architecture it is
    loaded into determine it. No data, recipe, seed or code trained it, so none is in its key."""
    parts = {"kind": kind, "checkpoint": sha256, "model": model_name}
    if (src := models_mod.MODELS.source_sha256(model_name)) is not None:
        parts["model_source"] = src
    return parts


def oracle_parts(kind: Literal["original", "retrain"], ds: Dataset, split: Split, *, model_name: str,
                 recipe: TrainRecipe, train_seed: int, precision: str = "fp32",
                 checkpoint: str | None = None) -> tuple[dict[str, Any], torch.Tensor]:
    """(cache-key parts, training indices) of an oracle: the original (all training examples; does
    not depend on the split) or Retrain (the retain set of `split`). With `checkpoint` (the sha256 of
    an installed weights file), the parts of that file instead (`checkpoint_parts`)."""
    if checkpoint is not None:
        idx = torch.arange(len(ds.y_train)) if kind == "original" else split.retain
        return checkpoint_parts(kind, checkpoint, model_name), idx
    # An original given as a checkpoint changes only the original's key: Retrain is trained from
    # scratch on the retain set and never sees the original, so its key (and cached model) is the
    # same with or without one.
    base = oracle_key(ds, model_name, recipe, train_seed, precision)
    if kind == "original":
        return {**base, "kind": "original"}, torch.arange(len(ds.y_train))
    return {**base, "kind": "retrain", "split": split.digest()}, split.retain


OracleProgress = Callable[[str, dict], None]


def oracle(kind: Literal["original", "retrain"], ds: Dataset, split: Split, *, model_name: str,
           recipe: TrainRecipe, train_seed: int, device: torch.device, autocast, cache_dir: Path,
           precision: str = "fp32", checkpoint: str | None = None,
           progress: OracleProgress | None = None) -> Trained:
    """One cached oracle (see `oracle_parts`), trained here if this node's cache lacks it; with
    `checkpoint`, the installed weights file of that sha256. `progress(kind, event)` hears what
    happens: {"event": "train", "epochs": n, "examples": m} before training, then each epoch's row
    with "event": "epoch", or {"event": "cached", "runtime_s": s} when it was on disk (NaN for a
    released checkpoint, which no one trained here)."""
    key, idx = oracle_parts(kind, ds, split, model_name=model_name, recipe=recipe,
                            train_seed=train_seed, precision=precision, checkpoint=checkpoint)
    on_epoch = None
    if progress is not None:
        if not (cache_dir / f"{cache_key(key)}.pt").exists():
            progress(kind, {"event": "train", "epochs": recipe.epochs, "examples": len(idx)})
        on_epoch = lambda row: progress(kind, {**row, "event": "epoch", "epochs": recipe.epochs})  # noqa: E731
    out = cached_train(cache_dir, key, ds, idx, model_name, recipe, train_seed, device, autocast, on_epoch)
    if progress is not None and out.cached:
        progress(kind, {"event": "cached", "runtime_s": out.runtime_s})
    return out


def get_oracles(ds: Dataset, split: Split, *, model_name: str, recipe: TrainRecipe, train_seed: int,
                device: torch.device, autocast, cache_dir: Path, retrain: bool = True,
                precision: str = "fp32", checkpoints: dict[str, str] | None = None,
                progress: OracleProgress | None = None) -> tuple[Trained, Trained | None]:
    """(original, retrain or None). Both cached. `precision` is the one training actually used (bf16
    only on CUDA): bf16 oracles get their own keys, fp32 keys stay as they were. `checkpoints`
    ({"original" | "retrain": sha256}, from `install_checkpoints`) names installed weights files
    used instead of training. `progress`: see `oracle`."""
    pins = checkpoints or {}
    kw = dict(model_name=model_name, recipe=recipe, train_seed=train_seed, device=device,
              autocast=autocast, cache_dir=cache_dir, precision=precision, progress=progress)
    return (oracle("original", ds, split, checkpoint=pins.get("original"), **kw),
            oracle("retrain", ds, split, checkpoint=pins.get("retrain"), **kw) if retrain else None)


def install_checkpoint(cache_dir: Path, kind: Literal["original", "retrain"], path: str | Path,
                       model_name: str, ds: Dataset, *, sha256: str | None = None,
                       what: str | None = None, data: bytes | Callable[[], bytes] | None = None) -> str:
    """Put the weights file at `path` in the oracle cache as the `kind` model of `model_name`, after
    reading it safely and checking it against the model built for `ds`'s input shape and classes
    (`checkpoints.read_checkpoint`, `check_state_dict`); returns its sha256. With `sha256` given and
    already installed, the cached copy is checked and the file is not needed (a node that lacks
    it). `data`: the file's bytes (or a callable returning them: a backend's handle, called only
    when the cache lacks the model), sent by a machine that has the file. Raises UserError naming
    `what` (default `checkpoints.<kind>`)."""
    what = what or f"checkpoints.{kind}"
    model = models_mod.build_model(model_name, ds.in_shape, ds.num_classes)
    if sha256 is not None:
        key = cache_key(checkpoint_parts(kind, sha256, model_name))
        weights, meta = cache_dir / f"{key}.pt", cache_dir / f"{key}.json"
        if weights.exists() and meta.exists():
            cached = read_checkpoint(weights, what=what)
            check_state_dict(cached.state, model, what=what, path=str(path), model_name=model_name)
            return sha256
    ckpt = read_checkpoint(path, sha256=sha256, what=what, data=data() if callable(data) else data)
    check_state_dict(ckpt.state, model, what=what, path=ckpt.path, model_name=model_name)
    parts = checkpoint_parts(kind, ckpt.sha256, model_name)
    key = cache_key(parts)
    weights, meta = cache_dir / f"{key}.pt", cache_dir / f"{key}.json"
    with _locked(weights):
        if not (weights.exists() and meta.exists()):
            _atomic_write(weights, lambda p: torch.save(ckpt.state, p))
            info: dict[str, Any] = {"key": parts, "runtime_s": None, "history": [], "source": ckpt.path,
                    "created": time.time()}
            _atomic_write(meta, lambda p: p.write_text(json.dumps(info)))
    return ckpt.sha256


def install_checkpoints(checkpoints: Checkpoints | None, cache_dir: Path, model_name: str, ds: Dataset,
                        kinds: tuple[Literal["original", "retrain"], ...] = ("original", "retrain"),
                        files: Mapping[str, bytes | Callable[[], bytes]] | None = None) -> dict[str, str]:
    """`install_checkpoint` for each of `kinds` that `checkpoints` gives: {kind: sha256}, what
    `get_oracles` takes. `files`: checkpoint bytes by sha256 (a sweep's driver sends them: a node
    need not hold the files), used for a pinned checkpoint this node's cache lacks."""
    if checkpoints is None:
        return {}
    files = files or {}
    return {kind: install_checkpoint(cache_dir, kind, ref.path, model_name, ds, sha256=ref.sha256,
                                     data=files.get(ref.sha256) if ref.sha256 else None)
            for kind in kinds if (ref := getattr(checkpoints, kind)) is not None}


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy with no gradients: the teacher / reference a method may consult."""
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m
