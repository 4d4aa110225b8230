"""The unit of work: TrialConfig -> run_trial -> TrialResult.

A trial loads its data (cached per process), draws the forget split (split_seed), gets the original
and Retrain models from the oracle cache (train_seed), runs the method on a copy of the original
(unlearn_seed) through the one loop, and evaluates UA, RA, TA, MIA-efficacy and the gaps to Retrain.
Failures inside a started trial (NaN, out of memory) come back as a FAIL result, never an exception;
bad input raises UserError before anything runs.
"""
from __future__ import annotations

import copy
import math
import os
import platform
import time
import traceback
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from unlearning import metrics as M
from unlearning.audit_config import RelearnConfig
from unlearning.checkpoints import Checkpoints
from unlearning.config import StrictModel, one_line
from unlearning.data import DataConfig, Dataset, load_dataset
from unlearning.errors import TrialFailed, UserError
from unlearning.loop import autocast_factory, run_loop
from unlearning.methods import Context, get_method
from unlearning.models import MODELS, build_model
from unlearning.oracle import (TrainRecipe, Trained, cache_files, cache_key, cached_train, code_version,
                               frozen_copy, get_oracles, install_checkpoints, install_files, oracle_parts)
from unlearning.relearn import ain, relearn_time
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
    # every k epochs (and after the last) the unlearning loop also records UA, RA, TA (no MIA) in the
    # per-epoch history; 0 = off. Costs one forward pass over the forget, retain, test and val sets.
    eval_every: int = Field(0, ge=0)
    # the relearning attack (off by default): `true` or its settings; adds relearn_steps (and AIN
    # against Retrain's relearn time) to the trial's metrics
    relearn: RelearnConfig | None = None

    @field_validator("relearn", mode="before")
    @classmethod
    def _relearn_shorthand(cls, v):
        return {} if v is True else (None if v is False else v)
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
    # released models to start from instead of training them (unlearning/checkpoints.py); left out
    # of the dump when absent, so configs without one keep their fingerprints
    checkpoints: Checkpoints | None = Field(None, exclude_if=lambda v: v is None)

    @model_validator(mode="after")
    def _check_names(self):
        # UserError (not ValueError) passes through pydantic untouched: one line, already pathed
        cls = get_method(self.method)
        MODELS.lookup(self.model)
        if self.checkpoints is not None and self.checkpoints.retrain is not None and not (
                self.retrain or getattr(cls, "from_oracle", False)):
            raise UserError("checkpoints.retrain: given, but this trial uses no Retrain (retrain: false)")
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


# what differs between two runs of the same trial: how long things took and when
TIMINGS = frozenset({"runtime_s", "total_s", "mia_seconds", "relearn_seconds", "rte", "elapsed_s",
                     "started_at", "ended_at"})


def untimed(result: TrialResult | dict[str, Any]) -> dict[str, Any]:
    """A trial result (or its JSON dict) without its timings, at every depth: what two runs of the
    same configuration and seeds agree on exactly (a reproducibility check's operand)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in TIMINGS}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return strip(result.model_dump(mode="json") if isinstance(result, TrialResult) else result)


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


@dataclass
class Outputs:
    """A model's softmax outputs (CPU tensors) and labels on the forget, retain, test and val sets:
    everything `score` needs, so the metrics can be computed after the model has moved on."""

    probs: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]


def model_outputs(model, ds: Dataset, split: Split, cfg: EvalConfig, amp: bool = False) -> Outputs:
    """The device part of `evaluate`: one forward pass over each set. Raises TrialFailed when the
    model's outputs are not finite (it diverged): that, not a scikit-learn complaint about NaN inputs
    to the MIA, is the reason a user needs."""
    p = {name: _probs(model, ds, x, idx, cfg, amp) for name, x, idx in (
        ("forget", ds.x_train, split.forget), ("retain", ds.x_train, split.retain),
        ("test", ds.x_test, split.test), ("val", ds.x_val, split.val))}
    bad = {name: int((~torch.isfinite(v)).any(1).sum()) for name, v in p.items() if len(v)}
    if any(bad.values()):
        where = ", ".join(f"{n} {k}/{len(p[n])}" for n, k in bad.items() if k)
        raise TrialFailed(f"diverged: the model's outputs are not finite (NaN/inf) on {where} examples")
    y = {"forget": ds.y_train[split.forget.to(ds.device)].cpu(),
         "retain": ds.y_train[split.retain.to(ds.device)].cpu(),
         "test": ds.y_test[split.test.to(ds.device)].cpu(), "val": ds.y_val[split.val.to(ds.device)].cpu()}
    return Outputs(p, y)


def score(o: Outputs, cfg: EvalConfig) -> dict[str, float]:
    """The CPU part of `evaluate`: UA, RA, TA, MIA-efficacy (the SVC, seconds at CIFAR size) and the
    DeepUnlearn attack from `model_outputs`. Pure: the same outputs give the same numbers."""
    p, y = o.probs, o.labels
    forget_acc = M.accuracy(p["forget"], y["forget"])
    out = {"unlearn_acc": 100.0 - forget_acc, "forget_acc": forget_acc,
           "retain_acc": M.accuracy(p["retain"], y["retain"]), "test_acc": M.accuracy(p["test"], y["test"]),
           "val_acc": M.accuracy(p["val"], y["val"]) if len(y["val"]) else float("nan")}
    if cfg.mia:
        t0 = time.perf_counter()
        out["mia_efficacy"] = M.mia_efficacy(p["retain"], y["retain"], p["test"], y["test"],
                                             p["forget"], y["forget"], kind=cfg.mia_kind)
        out["mia_seconds"] = time.perf_counter() - t0
    if cfg.du_mia:
        out.update(M.deepunlearn_mia(p["forget"], y["forget"], p["val"], y["val"]))
    return out


def evaluate(model, ds: Dataset, split: Split, cfg: EvalConfig, amp: bool = False) -> dict[str, float]:
    """UA, RA, TA, MIA-efficacy (and forget/val accuracy for blind objectives), in percent: `score`
    of `model_outputs`. Raises TrialFailed when the model diverged."""
    return score(model_outputs(model, ds, split, cfg, amp), cfg)


def _epoch_eval(cfg: TrialConfig, model, ds: Dataset, split: Split, amp: bool, epochs: int,
                on_epoch: Callable[[dict], None] | None) -> Callable[[dict], None] | None:
    """The loop's per-epoch callback: with `eval.eval_every` = k, after every k-th and the last epoch
    add UA, RA, TA (forget/retain/test accuracy, no MIA) to the epoch's row, which is the row the
    history records; then pass the row on. Evaluation draws no random numbers and restores every
    module's train/eval mode (`predict_probs`), so the trained model is the same with or without it."""
    k = cfg.eval.eval_every
    if not k:
        return on_epoch
    quick = cfg.eval.model_copy(update={"mia": False})

    def hook(row: dict) -> None:
        if (row["epoch"] + 1) % k == 0 or row["epoch"] + 1 == epochs:
            m = evaluate(model, ds, split, quick, amp)
            row.update({key: m[key] for key in ("unlearn_acc", "retain_acc", "test_acc")})
        if on_epoch is not None:
            on_epoch(row)

    return hook


# -- the trial -----------------------------------------------------------------------------------

def run_trial(cfg: TrialConfig, on_epoch: Callable[[dict], None] | None = None, *,
              method_data: Callable[..., MethodData] = MethodData) -> TrialResult:
    """Run one trial. Raises UserError for bad input discovered while loading (missing data root,
    forget class out of range); every failure after that is a FAIL result with the reason.

    `method_data` builds the method's data door (called as MethodData is); the default is the
    device-resident one. bench/trial_throughput.py passes a CPU-DataLoader door to measure the
    reference codebases' way with the same method and the same loop."""
    return start_trial(cfg, on_epoch, method_data=method_data)()


def start_trial(cfg: TrialConfig, on_epoch: Callable[[dict], None] | None = None, *,
                method_data: Callable[..., MethodData] = MethodData) -> Callable[[], TrialResult]:
    """`run_trial` in two parts. Everything that needs the device runs now: the unlearning, the
    forward passes of evaluation, the reference models' metrics, the relearning attack. The returned
    callable does the rest on the CPU alone (the MIA SVC, seconds at CIFAR size; the gaps) and
    returns the TrialResult, the same one `run_trial` gives. A long-lived worker runs it on a
    background thread while its next trial uses the device (cluster/ray_backend.py)."""
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
    cache_dir = Path(cfg.cache_dir or default_cache_dir())
    pins = install_checkpoints(cfg.checkpoints, cache_dir, cfg.model, ds)  # bad file: UserError
    try:
        original, retrained = get_oracles(
            ds, split, model_name=cfg.model, recipe=cfg.train, train_seed=cfg.seeds.train_seed,
            device=device, autocast=autocast, cache_dir=cache_dir,
            retrain=cfg.retrain or getattr(method_cls, "from_oracle", False),
            precision=cfg.precision if device.type == "cuda" else "fp32", checkpoints=pins)
        if getattr(method_cls, "from_oracle", False):
            u = Unlearned(retrained.model, retrained.runtime_s, retrained.history, [], len(split.retain))
        else:
            model = copy.deepcopy(original.model).train()
            u = unlearn(cfg, original, ds, split.forget, split.retain, split.val, device, autocast,
                        seed=cfg.seeds.unlearn_seed, method_data=method_data, model=model,
                        on_epoch=_epoch_eval(cfg, model, ds, split, amp, mcfg.epochs, on_epoch))
        outputs = model_outputs(u.model, ds, split, cfg.eval, amp)
        reference = {"original": _reference_metrics(cfg, "original", original, ds, split, amp)}
        if retrained is not None:
            reference["retrain"] = _reference_metrics(cfg, "retrain", retrained, ds, split, amp,
                                                      target=reference["original"]["forget_acc"])
        relearn = {} if cfg.eval.relearn is None else _relearn_metrics(
            u.model, ds, split, cfg.eval.relearn, device, autocast, reference["original"]["forget_acc"])
        # a Retrain given as a checkpoint has no training time here: no RTE
        retrain_s = None if retrained is None or math.isnan(retrained.runtime_s) else retrained.runtime_s
        u = replace(u, model=None)  # the tail needs no model: free it for the next trial
        rest = lambda: _complete(cfg, outputs, reference, relearn, u, retrain_s)  # noqa: E731
    except Exception as e:  # noqa: BLE001 - every failure of a started trial is data
        failed = _failure(e)
        rest = lambda: failed  # noqa: E731
    # read now: the worker's next trial resets the device's peak statistics
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0

    def finish() -> TrialResult:
        try:
            done = rest()
        except Exception as e:  # noqa: BLE001
            done = _failure(e)
        return TrialResult(**done, total_s=time.perf_counter() - t_all, peak_mem_bytes=peak,
                           ended_at=datetime.now(timezone.utc).isoformat(), **base)

    return finish


def _complete(cfg: TrialConfig, outputs: Outputs, reference: dict[str, dict[str, float]],
              relearn: dict[str, float], u: "Unlearned", retrain_s: float | None) -> dict[str, Any]:
    """The CPU tail of a trial: its metrics from the model's outputs (the MIA SVC), then the gaps."""
    metrics = {**score(outputs, cfg.eval), **relearn}
    metrics.update(derived(metrics, reference), runtime_s=u.runtime_s,
                   retain_examples_seen=float(u.retain_examples_seen))
    if retrain_s is not None:  # DeepUnlearn's RTE: t_Retrain (when it was trained) / t_method
        metrics["rte"] = M.run_time_efficiency(retrain_s, u.runtime_s)
    return dict(state="COMPLETE", metrics=metrics, reference=reference, history=u.history,
                step_history=u.step_history, runtime_s=u.runtime_s)


def _failure(e: Exception) -> dict[str, Any]:
    """A started trial's failure as the fields of a FAIL result, with the reason a user needs."""
    if isinstance(e, TrialFailed):
        return dict(state="FAIL", error=str(e))
    if isinstance(e, torch.OutOfMemoryError):
        return dict(state="FAIL", error=f"out of memory: {str(e).splitlines()[0]}")
    # a bug or a broken environment: still data, with the traceback's tail
    tb = traceback.format_exc().strip().splitlines()
    where = tb[-3].strip() if len(tb) > 2 else ""
    return dict(state="FAIL", error=f"{type(e).__name__}: {e} [{where}]")


@dataclass
class Unlearned:
    model: torch.nn.Module | None  # in eval mode
    runtime_s: float  # the unlearning procedure alone
    history: list[dict]
    step_history: list[dict]
    retain_examples_seen: int


def unlearn(cfg: TrialConfig, original: Trained, ds: Dataset, forget: torch.Tensor, retain: torch.Tensor,
            val: torch.Tensor, device: torch.device, autocast, *, seed: int,
            method_data: Callable[..., MethodData] = MethodData,
            on_epoch: Callable[[dict], None] | None = None,
            model: torch.nn.Module | None = None) -> Unlearned:
    """Run `cfg`'s method (not a from-oracle one) on a copy of `original` (or on `model`, a copy the
    caller made), forgetting `forget` with `retain` as the retain set, through the one loop; `seed`
    drives the method's randomness. The trial and the audit's shadows (unlearning/audit.py) both
    unlearn here. Raises TrialFailed."""
    method_cls, mcfg = get_method(cfg.method), cfg.method_config()
    model = copy.deepcopy(original.model).train() if model is None else model.train()
    # one-time process costs stay out of the timed part (RTE); before the seeding below, which they
    # would otherwise shift
    warm_up()
    warm_kernels(model, ds, mcfg.batch_size, autocast, cfg.precision)
    gen = torch.Generator(device=device).manual_seed(seed)
    torch.manual_seed(seed)
    view = method_data(ds, forget, retain, val=val, gen=gen, augment=getattr(mcfg, "augment", True))
    method = method_cls(mcfg, Context(view, frozen_copy(original.model), device, gen, autocast))
    t0 = time.perf_counter()
    history, step_history = run_loop(model, method, on_epoch=on_epoch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return Unlearned(model.eval(), time.perf_counter() - t0, history, step_history,
                     view.retain_examples_seen(retain))


def _relearn_metrics(model, ds: Dataset, split: Split, rcfg: RelearnConfig, device, autocast,
                     original_forget_acc: float) -> dict[str, float]:
    r = relearn_time(model, ds, split.forget, rcfg.target * original_forget_acc, rcfg, device, autocast)
    return {"relearn_steps": float(r.steps), "relearn_capped": float(r.capped),
            "relearn_seconds": r.seconds}


_REFERENCE_METRICS: dict[str, dict[str, float]] = {}  # per process, see _reference_metrics


def _reference_metrics(cfg: TrialConfig, kind: str, trained, ds: Dataset, split: Split, amp: bool,
                       target: float | None = None) -> dict[str, float]:
    """`evaluate` of the original or Retrain model, memoised per process: a long-lived worker pays
    their evaluation and MIA SVCs once, not every trial. The key holds everything the numbers depend
    on except the method (data, split, model, recipe, seeds, eval, precision, device, cache) plus the
    stored training runtime, which tells one training of the oracle from another. With the relearning
    attack on, `target` (the original's forget accuracy) gives Retrain its relearn time too."""
    key = repr((kind, cfg.data, cfg.split, cfg.model, cfg.train, cfg.checkpoints, cfg.seeds.split_seed,
                cfg.seeds.train_seed, cfg.eval, amp, str(ds.device),
                str(cfg.cache_dir or default_cache_dir()), trained.runtime_s, target))
    if key not in _REFERENCE_METRICS:
        if len(_REFERENCE_METRICS) >= 64:
            _REFERENCE_METRICS.clear()
        out = evaluate(trained.model, ds, split, cfg.eval, amp)
        if cfg.eval.relearn is not None and target is not None:
            out.update(_relearn_metrics(trained.model, ds, split, cfg.eval.relearn, ds.device,
                                        autocast_factory(ds.device, cfg.precision), target))
        _REFERENCE_METRICS[key] = out
    return dict(_REFERENCE_METRICS[key])


def derived(metrics: dict[str, float], reference: dict[str, dict[str, float]]) -> dict[str, float]:
    """Gaps to Retrain (when it exists), ToW and ToW-MIA (Zhao et al. 2024; 1 = Retrain), AIN (when
    the relearning attack ran), and the utility drop from the original (percentage points)."""
    out = {"utility_drop": reference["original"]["test_acc"] - metrics["test_acc"]}
    r = reference.get("retrain")
    if r is not None:
        out["tow"] = M.tow(metrics, r)
        if "mia_efficacy" in metrics:
            out["avg_gap"] = M.avg_gap(metrics, r)
            out["forget_gap"] = M.forget_gap(metrics, r)
            out["tow_mia"] = M.tow(metrics, r, forget_key="mia_efficacy")
        if "relearn_steps" in metrics and "relearn_steps" in r:
            out["ain"] = ain(metrics["relearn_steps"], r["relearn_steps"])
    if r is not None and "du_indisc" in metrics:
        out.update(M.deepunlearn_terms(metrics, r))
    return out


_WARM = False


def warm_up() -> None:
    """One-time process costs kept out of the timed unlearning (RTE is a reported metric): the first
    optimizer built in a process imports torch._dynamo (about a second), the first backward pass
    initialises autograd's engine, the first MIA imports sklearn's SVC (about a second)."""
    global _WARM
    if not _WARM:
        import sklearn.svm  # noqa: F401 - imported lazily by unlearning.metrics

        w = torch.zeros(2, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
        (w * w).sum().backward()
        opt.step()
        torch.optim.Adam([w], lr=0.1).step()
        _WARM = True


_WARM_KERNELS: set[tuple] = set()


def warm_kernels(model: torch.nn.Module, ds: Dataset, batch_size: int, autocast, precision: str,
                 steps: int = 3) -> None:
    """A few training steps of a throwaway copy of `model` on batches of the training shape, once per
    process for each architecture, input shape, batch size, device and precision. A process's first
    steps at a shape pick its kernels (cuDNN autotuning with benchmark on, oneDNN primitives on a CPU)
    and grow the allocator's pools, which would otherwise be timed as the first trial's unlearning.
    `model` itself is untouched; the copy may draw from the global random streams, which the caller
    seeds afterwards."""
    n = min(batch_size, len(ds.x_train))
    key = (type(model).__name__, tuple(tuple(p.shape) for p in model.parameters()), tuple(ds.in_shape),
           n, str(ds.device), precision)
    if key in _WARM_KERNELS or n < 2 or not any(p.requires_grad for p in model.parameters()):
        return
    probe = copy.deepcopy(model).train()
    opt = torch.optim.SGD([p for p in probe.parameters() if p.requires_grad], lr=0.0, momentum=0.9)
    x = ds.prepare(ds.x_train[:n])
    if x.is_cuda:  # the layout MethodData gives training batches
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = torch.nn.functional.cross_entropy(probe(x).float(), ds.y_train[:n])
        loss.backward()
        opt.step()
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    _WARM_KERNELS.add(key)


def probe(cfg: TrialConfig) -> dict[str, Any]:
    """Everything a trial does before it trains, as far as it goes without training: the device
    exists, the data set's files are found and read, the split can be drawn, the model accepts the
    inputs, the checkpoints given fit it (and are installed in the oracle cache). Raises UserError
    with the reason; returns what was found."""
    device = resolve_device(cfg.device)
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
    install_checkpoints(cfg.checkpoints, Path(cfg.cache_dir or default_cache_dir()), cfg.model, ds)
    # no warm_up() here: a trial warms its own process before its timer, and this check is on the
    # path to a sweep's first submitted trial (about a second of imports)
    return {"ok": True, "device": str(device), "data": repr(ds), "forget": len(split.forget),
            "retain": len(split.retain), "load_s": time.perf_counter() - t0}


def oracle_task(cfg: TrialConfig, kind: Literal["original", "retrain"]) -> dict[str, Any]:
    """Train (or find in this node's cache) one oracle of `cfg`'s data, split, model, recipe and
    seeds, and return its cache files so the driver can hand them to workers elsewhere:
    {"ok": True, "files": {name: bytes}, "trained": bool, "runtime_s": float, "node": str}."""
    device = resolve_device(cfg.device)
    ds = load_dataset(cfg.data, device)
    split = make_split(ds, cfg.split, cfg.seeds.split_seed)
    cache_dir = Path(cfg.cache_dir or default_cache_dir())
    pins = install_checkpoints(cfg.checkpoints, cache_dir, cfg.model, ds, kinds=(kind,))
    parts, idx = oracle_parts(kind, ds, split, model_name=cfg.model, recipe=cfg.train,
                              train_seed=cfg.seeds.train_seed,
                              precision=cfg.precision if device.type == "cuda" else "fp32",
                              checkpoint=pins.get(kind))
    warm_up()
    t = cached_train(cache_dir, parts, ds, idx, cfg.model, cfg.train, cfg.seeds.train_seed, device,
                     autocast_factory(device, cfg.precision))
    return {"ok": True, "files": cache_files(cache_dir, cache_key(parts)), "trained": not t.cached,
            "runtime_s": t.runtime_s, "node": platform.node(), "kind": kind}


def _task_error(e: Exception) -> dict[str, Any]:
    text = str(e) if isinstance(e, UserError) else \
        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return {"ok": False, "error": text}


def run_task(payload: dict[str, Any], on_epoch: Callable[[dict], None] | None = None
             ) -> dict[str, Any] | Callable[[], dict[str, Any]]:
    """The task function a backend runs:
      - a TrialConfig dict: a trial. It returns once its device part is done, as its CPU tail (the
        contract in cluster/backend.py): a callable that computes the rest and returns the JSON-safe
        TrialResult. The payload may carry "shared_files"
        ({cache file name: bytes or a callable returning them}): oracles trained elsewhere, put in
        this node's cache first when it lacks them;
      - {"task": "probe", "config": ...}: the driver's up-front check ({"ok", "error"});
      - {"task": "oracle", "kind": "original" | "retrain", "config": ...}: the oracle phase."""
    task = payload.get("task")
    if task in ("probe", "oracle"):
        try:
            cfg = load_trial_config(payload["config"])
            return probe(cfg) if task == "probe" else oracle_task(cfg, payload["kind"])
        except TrialFailed as e:  # an oracle whose training diverged
            return {"ok": False, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - a missing data set, a broken environment: one line
            return _task_error(e)
    shared = payload.get("shared_files")
    if shared:
        payload = {k: v for k, v in payload.items() if k != "shared_files"}
        try:
            install_files(Path(payload.get("cache_dir") or default_cache_dir()), shared)
        except Exception:  # noqa: BLE001 - the trial then trains what it lacks itself
            pass
    return start_trial_payload(payload, on_epoch)


def start_trial_payload(payload: dict[str, Any], on_epoch: Callable[[dict], None] | None = None
                        ) -> Callable[[], dict[str, Any]]:
    """`start_trial` on a plain dict: the device part now; the callable returned gives the
    TrialResult as a JSON-safe dict. Input the trial cannot use becomes a FAIL result, so a sweep
    goes on."""
    try:
        finish = start_trial(load_trial_config(payload), on_epoch=on_epoch)
    except UserError as e:
        failed = TrialResult(state="FAIL", error=str(e), method=str(payload.get("method", "")),
                             params=dict(payload.get("params", {})), config=payload
                             ).model_dump(mode="json")
        return lambda: failed
    return lambda: finish().model_dump(mode="json")


def run_trial_payload(payload: dict[str, Any], on_epoch: Callable[[dict], None] | None = None
                      ) -> dict[str, Any]:
    """Worker entry point in one piece: a TrialConfig as a plain dict in, a TrialResult as a
    JSON-safe dict out (`start_trial_payload` and its tail, back to back)."""
    return start_trial_payload(payload, on_epoch)()
