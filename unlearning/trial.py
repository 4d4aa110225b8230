"""The unit of work: TrialConfig -> run_trial -> TrialResult.

A trial loads its data (cached per process), draws the forget split (split_seed), gets the original
and Retrain models from the oracle cache (train_seed), runs the method on a copy of the original
(unlearn_seed) through the one loop, and evaluates UA, RA, TA, MIA-efficacy and the gaps to Retrain.
Failures inside a started trial (NaN, out of memory) come back as a FAIL result, never an exception;
bad input raises UserError before anything runs.
"""
from __future__ import annotations

import copy
import os
import platform
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, Field, ValidationError, model_validator

from unlearning import metrics as M
from unlearning.config import StrictModel, one_line
from unlearning.data import DataConfig, Dataset, load_dataset
from unlearning.errors import TrialFailed, UserError
from unlearning.loop import autocast_factory, run_loop
from unlearning.methods import Context, get_method
from unlearning.models import MODELS
from unlearning.oracle import TrainRecipe, code_version, frozen_copy, get_oracles
from unlearning.splits import MethodData, Split, SplitConfig, make_split


class Seeds(StrictModel):
    """Separate seeds: which samples are forgotten, the original model, the method's randomness.
    A replication axis, never searched."""

    split_seed: int = 0
    train_seed: int = 0
    unlearn_seed: int = 0


class EvalConfig(StrictModel):
    mia: bool = True
    mia_kind: Literal["confidence", "correctness", "entropy", "m_entropy", "prob"] = "confidence"
    batch_size: int = Field(1024, ge=1)
    # DeepUnlearn's loss attack, forget vs validation: du_mia, indiscernibility and, with Retrain,
    # their objective terms du_retain, du_forget, du_val, du_indisc and du_norm
    du_mia: bool = False


class TrialConfig(StrictModel):
    """Everything one trial needs. Immutable; unknown keys are errors (method parameters included)."""

    method: str = "ft"
    params: dict[str, Any] = Field(default_factory=dict)  # the method's Config fields
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    model: str = "small_cnn"
    train: TrainRecipe = TrainRecipe()  # recipe of the original and Retrain models
    seeds: Seeds = Seeds()
    retrain: bool = True  # train the Retrain oracle (needed for avg_gap / forget_gap)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["fp32", "bf16"] = "fp32"
    eval: EvalConfig = EvalConfig()
    cache_dir: str | None = None  # oracle cache; default $UNLEARN_SWEEP_CACHE or ~/.cache/unlearn-sweep

    @model_validator(mode="after")
    def _check_names(self):
        # UserError (not ValueError) passes through pydantic untouched: one line, already pathed
        cls = get_method(self.method)
        if self.model not in MODELS:
            raise UserError(f"unknown model {self.model!r}; known: {', '.join(sorted(MODELS))}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise UserError(f"device: {self.device!r} is not a device (auto, cpu, cuda or cuda:N)"
                                ) from None
        try:
            cls.Config(**self.params)
        except ValidationError as e:
            raise UserError(one_line(e, "params")) from None
        return self

    def method_config(self):
        return get_method(self.method).Config(**self.params)


def load_trial_config(raw: dict[str, Any]) -> TrialConfig:
    """Validate a plain dict; any problem becomes one UserError line naming the key."""
    try:
        return TrialConfig(**raw)
    except ValidationError as e:
        raise UserError(one_line(e)) from None


class TrialResult(BaseModel):
    """What a trial returns: state COMPLETE or FAIL, metrics in percent, history, provenance."""

    state: Literal["COMPLETE", "FAIL"]
    error: str | None = None
    method: str
    params: dict[str, Any]  # the method's full config, defaults filled in
    config: dict[str, Any]  # the whole TrialConfig
    metrics: dict[str, float] = Field(default_factory=dict)
    reference: dict[str, dict[str, float]] = Field(default_factory=dict)  # original / retrain metrics
    history: list[dict[str, Any]] = Field(default_factory=list)  # per epoch
    step_history: list[dict[str, Any]] = Field(default_factory=list)  # per step (methods that log)
    runtime_s: float = float("nan")  # the unlearning procedure alone
    total_s: float = float("nan")
    device: str = ""
    device_name: str = ""
    peak_mem_bytes: int = 0
    node: str = Field(default_factory=platform.node)
    code_version: str = ""
    started_at: str = ""
    ended_at: str = ""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def default_cache_dir() -> Path:
    return Path(os.environ.get("UNLEARN_SWEEP_CACHE", Path.home() / ".cache" / "unlearn-sweep"))


# -- evaluation ----------------------------------------------------------------------------------

@torch.no_grad()
def _probs(model, ds: Dataset, x_raw: torch.Tensor, idx: torch.Tensor, cfg: EvalConfig, amp: bool):
    idx, chunk = idx.to(x_raw.device), 8 * cfg.batch_size
    fmt = torch.channels_last if x_raw.is_cuda else torch.contiguous_format
    out = [M.predict_probs(model, ds.prepare(x_raw[idx[s:s + chunk]]).contiguous(memory_format=fmt),
                           cfg.batch_size, amp) for s in range(0, len(idx), chunk)]
    return torch.cat(out) if out else torch.empty(0, ds.num_classes)


def evaluate(model, ds: Dataset, split: Split, cfg: EvalConfig, amp: bool = False) -> dict[str, float]:
    """UA, RA, TA, MIA-efficacy (and forget/val accuracy for blind objectives), in percent."""
    p = {name: _probs(model, ds, x, idx, cfg, amp) for name, x, idx in (
        ("forget", ds.x_train, split.forget), ("retain", ds.x_train, split.retain),
        ("test", ds.x_test, split.test), ("val", ds.x_val, split.val))}
    y = {"forget": ds.y_train[split.forget.to(ds.device)].cpu(),
         "retain": ds.y_train[split.retain.to(ds.device)].cpu(),
         "test": ds.y_test[split.test.to(ds.device)].cpu(), "val": ds.y_val[split.val.to(ds.device)].cpu()}
    forget_acc = M.accuracy(p["forget"], y["forget"])
    out = {"unlearn_acc": 100.0 - forget_acc, "forget_acc": forget_acc,
           "retain_acc": M.accuracy(p["retain"], y["retain"]), "test_acc": M.accuracy(p["test"], y["test"]),
           "val_acc": M.accuracy(p["val"], y["val"]) if len(split.val) else float("nan")}
    if cfg.mia:
        t0 = time.perf_counter()
        out["mia_efficacy"] = M.mia_efficacy(p["retain"], y["retain"], p["test"], y["test"],
                                             p["forget"], y["forget"], kind=cfg.mia_kind)
        out["mia_seconds"] = time.perf_counter() - t0
    if cfg.du_mia:
        out.update(M.deepunlearn_mia(p["forget"], y["forget"], p["val"], y["val"]))
    return out


# -- the trial -----------------------------------------------------------------------------------

def run_trial(cfg: TrialConfig, on_epoch: Callable[[dict], None] | None = None, *,
              method_data: Callable[..., MethodData] = MethodData) -> TrialResult:
    """Run one trial. Raises UserError for bad input discovered while loading (missing data root,
    forget class out of range); every failure after that is a FAIL result with the reason.

    `method_data` builds the method's data door (called as MethodData is); the default is the
    device-resident one. bench/trial_throughput.py passes a CPU-DataLoader door to measure the
    reference codebases' way with the same method and the same loop."""
    started, t_all = datetime.now(timezone.utc).isoformat(), time.perf_counter()
    method_cls = get_method(cfg.method)
    mcfg = cfg.method_config()
    device = resolve_device(cfg.device)
    base = dict(method=cfg.method, params=mcfg.model_dump(), config=cfg.model_dump(),
                device=str(device), code_version=code_version(), started_at=started,
                device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
    ds = load_dataset(cfg.data, device)
    split = make_split(ds, cfg.split, cfg.seeds.split_seed)
    autocast = autocast_factory(device, cfg.precision)
    amp = cfg.precision == "bf16"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # batch shapes are static: tune each conv once
        torch.cuda.reset_peak_memory_stats(device)
    try:
        original, retrained = get_oracles(
            ds, split, model_name=cfg.model, recipe=cfg.train, train_seed=cfg.seeds.train_seed,
            device=device, autocast=autocast, cache_dir=Path(cfg.cache_dir or default_cache_dir()),
            retrain=cfg.retrain or getattr(method_cls, "from_oracle", False),
            precision=cfg.precision if device.type == "cuda" else "fp32")
        step_history: list[dict] = []
        if getattr(method_cls, "from_oracle", False):
            model, runtime, history, seen = retrained.model, retrained.runtime_s, retrained.history, \
                len(split.retain)
        else:
            model = copy.deepcopy(original.model).train()
            gen = torch.Generator(device=device).manual_seed(cfg.seeds.unlearn_seed)
            torch.manual_seed(cfg.seeds.unlearn_seed)
            view = method_data(ds, split.forget, split.retain, val=split.val, gen=gen,
                               augment=getattr(mcfg, "augment", True))
            method = method_cls(mcfg, Context(view, frozen_copy(original.model), device, gen, autocast))
            t0 = time.perf_counter()
            history, step_history = run_loop(model, method, on_epoch=on_epoch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            runtime = time.perf_counter() - t0
            seen = view.retain_examples_seen(split.retain)
        model.eval()
        metrics = evaluate(model, ds, split, cfg.eval, amp)
        reference = {"original": _reference_metrics(cfg, "original", original, ds, split, amp)}
        if retrained is not None:
            reference["retrain"] = _reference_metrics(cfg, "retrain", retrained, ds, split, amp)
        metrics.update(derived(metrics, reference), runtime_s=runtime, retain_examples_seen=float(seen))
        if retrained is not None:  # DeepUnlearn's RTE: t_Retrain (when it was trained) / t_method
            metrics["rte"] = M.run_time_efficiency(retrained.runtime_s, runtime)
        done = dict(state="COMPLETE", metrics=metrics, reference=reference, history=history,
                    step_history=step_history, runtime_s=runtime)
    except TrialFailed as e:
        done = dict(state="FAIL", error=str(e))
    except torch.OutOfMemoryError as e:
        done = dict(state="FAIL", error=f"out of memory: {str(e).splitlines()[0]}")
    except Exception as e:  # a bug or a broken environment: still data, with the traceback's tail
        tb = traceback.format_exc().strip().splitlines()
        where = tb[-3].strip() if len(tb) > 2 else ""
        done = dict(state="FAIL", error=f"{type(e).__name__}: {e} [{where}]")
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return TrialResult(**done, total_s=time.perf_counter() - t_all, peak_mem_bytes=peak,
                       ended_at=datetime.now(timezone.utc).isoformat(), **base)


_REFERENCE_METRICS: dict[str, dict[str, float]] = {}  # per process, see _reference_metrics


def _reference_metrics(cfg: TrialConfig, kind: str, trained, ds: Dataset, split: Split, amp: bool
                       ) -> dict[str, float]:
    """`evaluate` of the original or Retrain model, memoised per process: a long-lived worker pays
    their evaluation and MIA SVCs once, not every trial. The key holds everything the numbers depend
    on except the method (data, split, model, recipe, seeds, eval, precision, device, cache) plus the
    stored training runtime, which tells one training of the oracle from another."""
    key = repr((kind, cfg.data, cfg.split, cfg.model, cfg.train, cfg.seeds.split_seed,
                cfg.seeds.train_seed, cfg.eval, amp, str(ds.device),
                str(cfg.cache_dir or default_cache_dir()), trained.runtime_s))
    if key not in _REFERENCE_METRICS:
        if len(_REFERENCE_METRICS) >= 64:
            _REFERENCE_METRICS.clear()
        _REFERENCE_METRICS[key] = evaluate(trained.model, ds, split, cfg.eval, amp)
    return dict(_REFERENCE_METRICS[key])


def derived(metrics: dict[str, float], reference: dict[str, dict[str, float]]) -> dict[str, float]:
    """Gaps to Retrain (when it exists) and the utility drop from the original (percentage points)."""
    out = {"utility_drop": reference["original"]["test_acc"] - metrics["test_acc"]}
    r = reference.get("retrain")
    if r is not None and "mia_efficacy" in metrics:
        out["avg_gap"] = M.avg_gap(metrics, r)
        out["forget_gap"] = M.forget_gap(metrics, r)
    if r is not None and "du_indisc" in metrics:
        out.update(M.deepunlearn_terms(metrics, r))
    return out


def run_trial_payload(payload: dict[str, Any], on_epoch: Callable[[dict], None] | None = None
                      ) -> dict[str, Any]:
    """Worker entry point (what a backend runs): a TrialConfig as a plain dict in, a TrialResult as a
    JSON-safe dict out. Input the trial cannot use becomes a FAIL result, so a sweep goes on."""
    try:
        cfg = load_trial_config(payload)
        return run_trial(cfg, on_epoch=on_epoch).model_dump(mode="json")
    except UserError as e:
        return TrialResult(state="FAIL", error=str(e), method=str(payload.get("method", "")),
                           params=dict(payload.get("params", {})), config=payload
                           ).model_dump(mode="json")
