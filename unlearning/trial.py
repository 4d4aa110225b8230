"""The unit of work: TrialConfig -> run_trial -> TrialResult.

A trial loads its data (cached per process), draws the forget split (split_seed), gets the original
and Retrain models from the oracle cache (train_seed), runs the method on a copy of the original
(unlearn_seed) through the one loop, and evaluates UA, RA, TA, MIA-efficacy and the gaps to Retrain
(unlearning/evaluate.py). Failures inside a started trial (NaN, out of memory) come back as a FAIL
result carrying a typed `Failure`, never an exception; bad input raises UserError before anything
runs. What a backend worker runs around it (probe, oracle tasks, JSON payloads) is unlearning/tasks.py.
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
from typing import Any, Callable, Literal, Mapping

import torch
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, computed_field,
                      field_validator, model_validator)

from unlearning import metrics as M
from unlearning.audit_config import RelearnConfig
from unlearning.checkpoints import Checkpoints
from unlearning.config import SEED_MAX, StrictModel, one_line
from unlearning.data import DataConfig, Dataset, load_dataset
from unlearning.errors import Failure, FailureKind, TrialFailed, UserError
from unlearning.evaluate import EvalConfig, Outputs, derived, evaluate, model_outputs, score
from unlearning.kept import keep
from unlearning.loop import autocast_factory, run_loop
from unlearning.methods import Context, MethodConfig, get_method
from unlearning.models import MODELS
from unlearning.oracle import (TrainRecipe, Trained, code_version, frozen_copy, get_oracles,
                               install_checkpoints)
from unlearning.relearn import relearn_time
from unlearning.splits import MethodData, Split, SplitConfig, make_split
from unlearning.warmup import warm_kernels, warm_up


class Seeds(StrictModel):
    """Separate seeds: which samples are forgotten, the original model, the method's randomness.
    A replication axis, never searched."""

    split_seed: int = Field(0, ge=0, le=SEED_MAX)
    train_seed: int = Field(0, ge=0, le=SEED_MAX)
    unlearn_seed: int = Field(0, ge=0, le=SEED_MAX)


class PluginRef(StrictModel):
    """A plug-in a trial's code comes from, by content: its file's (or module's) name and the SHA-256
    of its source (`unlearning.Plugin.ref()`)."""

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="before")
    @classmethod
    def _not_a_path(cls, v):
        if isinstance(v, str):
            raise UserError(f"plugins: {v!r}: a trial config names its plug-ins by {{name, sha256}} "
                            "(Plugin.ref()); load a plug-in file with --plugin or unlearning.load_plugins")
        return v


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
    # the plug-ins of the sweep this trial belongs to (sorted): they must be loaded, at these
    # versions, where the config is validated; left out when none (fingerprints stay as they were)
    plugins: list[PluginRef] = Field(default_factory=list, exclude_if=lambda v: not v)

    @field_validator("plugins")
    @classmethod
    def _sorted(cls, v: list[PluginRef]) -> list[PluginRef]:
        return sorted(v, key=lambda r: (r.name, r.sha256))

    @model_validator(mode="after")
    def _check_names(self):
        # UserError (not ValueError) passes through pydantic untouched: one line, already pathed
        _check_plugins(self.plugins)
        cls = get_method(self.method)
        MODELS.lookup(self.model)
        if self.checkpoints is not None and self.checkpoints.retrain is not None and not (
                self.retrain or cls.from_oracle):
            raise UserError("checkpoints.retrain: given, but this trial uses no Retrain (retrain: false)")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise UserError(f"device: {self.device!r} is not a device (auto, cpu, cuda or cuda:N)"
                                ) from None
        try:
            self._method_config = cls.Config(**self.params)
        except ValidationError as e:
            raise UserError(one_line(e, "params", model=cls.Config)) from None
        return self

    _method_config: MethodConfig = PrivateAttr()  # validated once, with the config

    def method_config(self) -> MethodConfig:
        """The method's own Config (defaults filled in), as validated with this TrialConfig."""
        return self._method_config


def _check_plugins(refs: list[PluginRef]) -> None:
    """Each plug-in a config names is loaded in this process at that version: a config never runs
    with other code than its sweep's (a plug-in edited on one node, loaded from a stale file)."""
    if not refs:
        return
    from unlearning.plugins import loaded

    here = {p.sha256 for p in loaded()}
    for ref in refs:
        if ref.sha256 not in here:
            raise UserError(f"plugins: {ref.name} (sha256 {ref.sha256[:12]}...) is not loaded in this "
                            "process at that version (load it first: --plugin, or unlearning.load_plugins)")


def load_trial_config(raw: dict[str, Any]) -> TrialConfig:
    """Validate a plain dict; any problem becomes one UserError line naming the key."""
    try:
        return TrialConfig(**raw)
    except ValidationError as e:
        raise UserError(one_line(e, model=TrialConfig)) from None


class TrialResult(BaseModel):
    """What a trial returns: state COMPLETE, or FAIL with its `failure`; metrics in percent,
    history, provenance. Immutable."""

    model_config = ConfigDict(frozen=True)

    state: Literal["COMPLETE", "FAIL"]
    failure: Failure | None = None  # set exactly when state is FAIL
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
    # the unlearned model (unlearning.kept.KeptModel), when the trial was asked to keep it: never in
    # the JSON (nor the record, nor W&B); unlearning/tasks.py sends it to the driver beside the result
    kept_model: Any = Field(None, exclude=True, repr=False)

    # in the JSON too: readers of a result find the reason at the top level. The ignore is pydantic's
    # documented one: mypy does not support decorators above @property
    @computed_field  # type: ignore[prop-decorator]
    @property
    def error(self) -> str | None:
        """The failure's message (None for a complete trial)."""
        return self.failure.message if self.failure else None


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
              method_data: Callable[..., MethodData] = MethodData,
              on_oracle: Callable[[str, dict], None] | None = None, keep_model: bool = False,
              checkpoint_files: Mapping[str, Any] | None = None) -> TrialResult:
    """Run one trial. Raises UserError for bad input discovered while loading (missing data root,
    forget class out of range); every failure after that is a FAIL result with the reason.

    `method_data` builds the method's data door (called as MethodData is); the default is the
    device-resident one. bench/trial_throughput.py passes a CPU-DataLoader door to measure the
    reference codebases' way with the same method and the same loop. `on_oracle(kind, event)`: the
    Original's and Retrain's training as it goes (unlearning.oracle.oracle says what it hears).
    `keep_model`: the result's `kept_model` holds the unlearned model (unlearning.kept).
    `checkpoint_files`: the bytes of the config's checkpoints by sha256, where their files are not
    (`oracle.install_checkpoints`)."""
    return start_trial(cfg, on_epoch, method_data=method_data, on_oracle=on_oracle, keep_model=keep_model,
                       checkpoint_files=checkpoint_files)()


def start_trial(cfg: TrialConfig, on_epoch: Callable[[dict], None] | None = None, *,
                method_data: Callable[..., MethodData] = MethodData,
                on_oracle: Callable[[str, dict], None] | None = None, keep_model: bool = False,
                checkpoint_files: Mapping[str, Any] | None = None) -> Callable[[], TrialResult]:
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
    pins = install_checkpoints(cfg.checkpoints, cache_dir, cfg.model, ds,  # bad file: UserError
                               files=checkpoint_files)
    kept = None
    try:
        original, retrained = get_oracles(
            ds, split, model_name=cfg.model, recipe=cfg.train, train_seed=cfg.seeds.train_seed,
            device=device, autocast=autocast, cache_dir=cache_dir,
            retrain=cfg.retrain or method_cls.from_oracle,
            precision=cfg.precision if device.type == "cuda" else "fp32", checkpoints=pins,
            progress=on_oracle)
        if method_cls.from_oracle:
            assert retrained is not None  # get_oracles(retrain=True) returns it
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
        if keep_model:
            assert u.model is not None  # freed only below
            kept = keep(u.model, ds.in_shape, ds.num_classes)
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
                           ended_at=datetime.now(timezone.utc).isoformat(),
                           kept_model=kept if done["state"] == "COMPLETE" else None, **base)

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


def failure_of(e: BaseException) -> Failure:
    """The typed failure of an exception raised inside a started run (a trial, an oracle, an audit
    task), with the reason a user needs. Call it inside the `except` block (it reads the traceback)."""
    if isinstance(e, TrialFailed):
        return e.failure()
    if isinstance(e, UserError):
        return Failure(kind=FailureKind.USER_ERROR, message=str(e))
    if isinstance(e, torch.OutOfMemoryError):
        return Failure(kind=FailureKind.OUT_OF_MEMORY, message=f"out of memory: {str(e).splitlines()[0]}")
    # a bug or a broken environment: still data, with the traceback's tail
    tb = traceback.format_exc().strip().splitlines()
    where = tb[-3].strip() if len(tb) > 2 else ""
    return Failure(kind=FailureKind.ERROR, message=f"{type(e).__name__}: {e} [{where}]")


def _failure(e: BaseException) -> dict[str, Any]:
    return dict(state="FAIL", failure=failure_of(e))


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
