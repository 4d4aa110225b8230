"""What a backend worker runs: `run_task`, the task function the orchestrator hands every backend.

Payloads and results are JSON-like dicts (they cross process and node boundaries):
  - a TrialConfig dict: a trial. `run_task` returns once its device part is done, as its CPU tail (the
    contract in cluster/backend.py): a callable that computes the rest and returns the JSON-safe
    TrialResult. The payload may carry "shared_files" ({cache file name: bytes or a callable
    returning them}): oracles trained elsewhere, put in this node's cache first when it lacks them;
    and "keep_model": true, for the unlearned model in the result as "kept_model"
    (`unlearning.kept.KeptModel.as_payload()`: the state dict's bytes, beside the TrialResult);
  - {"task": "probe", "config": ...}: the driver's up-front check of the base config. With
    "oracles" ([{"kind", "config"}], the oracle phase's models), run in the driver process while its
    workers start on this machine: the data on the CPU, and "cached" in the result lists the
    indices of the oracles this machine's cache already holds (a file check, no model loaded), so
    the oracle phase skips them. "gpus" (default true): whether the workers see this machine's GPU;
    when they may not, an oracle for a CUDA device is not looked up (its precision would be a guess);
  - {"task": "oracle", "kind": "original" | "retrain", "config": ...}: the oracle phase.
Probe and oracle results are {"ok": True, ...} or {"ok": False, "failure": Failure dict}.

Every payload may also carry what a node without the user's files needs, loaded first, before the
config is validated (its method, model and data set may be a plug-in's): "plugin_sources"
(`unlearning.plugins.ship`: the plug-ins' source) and "checkpoint_files" ({sha256: bytes or a
callable returning them}: the config's released checkpoints, installed in this node's cache).

A result whose failure is an out-of-memory carries `retire_worker: True` (cluster/backend.py): the
backend replaces the worker's process, whose device allocator may be fragmented.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import torch

from unlearning.data import load_dataset
from unlearning.errors import FailureKind, UserError
from unlearning.loop import autocast_factory
from unlearning.models import build_model
from unlearning.oracle import (cache_files, cache_key, cached_train, install_checkpoints, install_files,
                               oracle_parts)
from unlearning.plugins import load_shipped
from unlearning.splits import make_split
from unlearning.trial import (TrialConfig, TrialResult, default_cache_dir, failure_of, load_trial_config,
                              resolve_device, start_trial)
from unlearning.warmup import warm_up


def probe(cfg: TrialConfig, checkpoint_files: Mapping[str, Any] | None = None, *,
          on: torch.device | None = None) -> dict[str, Any]:
    """Everything a trial does before it trains, as far as it goes without training: the device
    exists, the data set's files are found and read, the split can be drawn, the model accepts the
    inputs, the checkpoints given fit it (and are installed in the oracle cache). Raises UserError
    with the reason; returns what was found. `on`: where to load the data and build the model
    instead of the config's device (which must still exist): the CPU, for a check in the driver."""
    device = resolve_device(cfg.device)
    device = on or device
    t0 = time.perf_counter()
    ds = load_dataset(cfg.data, device)
    split = make_split(ds, cfg.split, cfg.seeds.split_seed)
    model = build_model(cfg.model, ds.in_shape, ds.num_classes).to(device)
    x = ds.prepare(ds.x_train[split.retain[:2].to(device)])
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except RuntimeError as e:
        raise UserError(f"model: {cfg.model} cannot take {ds.name}'s inputs of shape "
                        f"{tuple(ds.in_shape)} ({str(e).splitlines()[0]})") from None
    if tuple(out.shape) != (len(x), ds.num_classes):
        raise UserError(f"model: {cfg.model} gives outputs of shape {tuple(out.shape)} for "
                        f"{ds.num_classes} classes")
    install_checkpoints(cfg.checkpoints, Path(cfg.cache_dir or default_cache_dir()), cfg.model, ds,
                        files=checkpoint_files)
    # no warm_up() here: a trial warms its own process before its timer, and this check is on the
    # path to a sweep's first submitted trial (about a second of imports)
    return {"ok": True, "device": str(device), "data": repr(ds), "forget": len(split.forget),
            "retain": len(split.retain), "load_s": time.perf_counter() - t0}


def cached_oracles(oracles: list[dict[str, Any]], gpus: bool = True) -> list[int]:
    """The indices of `oracles` ({"kind", "config"}) whose model files this machine's cache holds,
    under the key a worker here would look up: the file check that lets the oracle phase skip a
    task (and its model load) for a model that is there. Anything that cannot be told here (a
    config that does not load, an uninstallable checkpoint, a CUDA device the workers may not see
    when `gpus` is false) counts as not held: the oracle task then says what is wrong."""
    held = []
    for i, o in enumerate(oracles):
        try:
            cfg = load_trial_config(o["config"])
            device = resolve_device(cfg.device)
            if device.type == "cuda" and not gpus:
                continue
            ds = load_dataset(cfg.data, "cpu")
            split = make_split(ds, cfg.split, cfg.seeds.split_seed)
            cache_dir = Path(cfg.cache_dir or default_cache_dir())
            pins = install_checkpoints(cfg.checkpoints, cache_dir, cfg.model, ds, kinds=(o["kind"],))
            parts, _ = oracle_parts(o["kind"], ds, split, model_name=cfg.model, recipe=cfg.train,
                                    train_seed=cfg.seeds.train_seed,
                                    precision=cfg.precision if device.type == "cuda" else "fp32",
                                    checkpoint=pins.get(o["kind"]))
        except Exception:  # noqa: BLE001 - see the docstring
            continue
        key = cache_key(parts)
        if (cache_dir / f"{key}.pt").is_file() and (cache_dir / f"{key}.json").is_file():
            held.append(i)
    return held


def oracle_task(cfg: TrialConfig, kind: Literal["original", "retrain"],
                checkpoint_files: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train (or find in this node's cache) one oracle of `cfg`'s data, split, model, recipe and
    seeds, and return its cache files so the driver can hand them to workers elsewhere:
    {"ok": True, "files": {name: bytes}, "trained": bool, "runtime_s": float, "node": str}."""
    device = resolve_device(cfg.device)
    ds = load_dataset(cfg.data, device)
    split = make_split(ds, cfg.split, cfg.seeds.split_seed)
    cache_dir = Path(cfg.cache_dir or default_cache_dir())
    pins = install_checkpoints(cfg.checkpoints, cache_dir, cfg.model, ds, kinds=(kind,),
                               files=checkpoint_files)
    parts, idx = oracle_parts(kind, ds, split, model_name=cfg.model, recipe=cfg.train,
                              train_seed=cfg.seeds.train_seed,
                              precision=cfg.precision if device.type == "cuda" else "fp32",
                              checkpoint=pins.get(kind))
    warm_up()
    t = cached_train(cache_dir, parts, ds, idx, cfg.model, cfg.train, cfg.seeds.train_seed, device,
                     autocast_factory(device, cfg.precision))
    return {"ok": True, "files": cache_files(cache_dir, cache_key(parts)), "trained": not t.cached,
            "runtime_s": t.runtime_s, "node": platform.node(), "kind": kind}


# what a payload carries beside its config: taken out before the config is validated
SENT = ("plugin_sources", "checkpoint_files", "shared_files", "keep_model")


def run_task(payload: dict[str, Any], on_epoch: Callable[[dict], None] | None = None
             ) -> dict[str, Any] | Callable[[], dict[str, Any]]:
    """The task function a backend runs (the module docstring lists the payloads)."""
    sent = {k: payload[k] for k in SENT if k in payload}
    payload = {k: v for k, v in payload.items() if k not in SENT}
    files = sent.get("checkpoint_files")
    task = payload.get("task")
    if task in ("probe", "oracle"):
        try:
            load_shipped(sent.get("plugin_sources") or ())
            cfg = load_trial_config(payload["config"])
            if task == "oracle":
                return oracle_task(cfg, payload["kind"], files)
            if "oracles" not in payload:
                return probe(cfg, files)
            return {**probe(cfg, files, on=torch.device("cpu")),
                    "cached": cached_oracles(payload["oracles"], gpus=payload.get("gpus", True))}
        except Exception as e:  # noqa: BLE001 - a missing data set, a diverged oracle: one line, typed
            failure = failure_of(e)
            return {"ok": False, "failure": failure.model_dump(mode="json"),
                    "retire_worker": failure.kind == FailureKind.OUT_OF_MEMORY}
    shared = sent.get("shared_files")
    if shared:
        try:
            install_files(Path(payload.get("cache_dir") or default_cache_dir()), shared)
        except Exception:  # noqa: BLE001 - the trial then trains what it lacks itself
            pass
    return start_trial_payload(payload, on_epoch, plugins=sent.get("plugin_sources") or (),
                               keep_model=bool(sent.get("keep_model")), checkpoint_files=files)


def _as_dict(result: TrialResult) -> dict[str, Any]:
    out = result.model_dump(mode="json")
    if result.failure is not None and result.failure.kind == FailureKind.OUT_OF_MEMORY:
        out["retire_worker"] = True
    if result.kept_model is not None:
        out["kept_model"] = result.kept_model.as_payload()
    return out


def start_trial_payload(payload: dict[str, Any], on_epoch: Callable[[dict], None] | None = None, *,
                        plugins=(), keep_model: bool = False,
                        checkpoint_files: Mapping[str, Any] | None = None
                        ) -> Callable[[], dict[str, Any]]:
    """`start_trial` on a plain dict: the device part now; the callable returned gives the
    TrialResult as a JSON-safe dict. `plugins` (`unlearning.plugins.ship`'s) are loaded first. Input
    the trial cannot use (a plug-in that does not import here included) becomes a FAIL result
    (user_error), so a sweep goes on."""
    try:
        load_shipped(plugins)
        finish = start_trial(load_trial_config(payload), on_epoch=on_epoch, keep_model=keep_model,
                             checkpoint_files=checkpoint_files)
    except UserError as e:
        failed = _as_dict(TrialResult(state="FAIL", failure=failure_of(e),
                                      method=str(payload.get("method", "")),
                                      params=dict(payload.get("params", {})), config=payload))
        return lambda: failed
    return lambda: _as_dict(finish())


def run_trial_payload(payload: dict[str, Any], on_epoch: Callable[[dict], None] | None = None
                      ) -> dict[str, Any]:
    """Worker entry point in one piece: a TrialConfig as a plain dict in, a TrialResult as a
    JSON-safe dict out (`start_trial_payload` and its tail, back to back)."""
    return start_trial_payload(payload, on_epoch)()
