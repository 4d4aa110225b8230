"""SweepSpec: what a sweep tries, read from YAML and validated before anything runs.

Every problem is one UserError line that names the key's full YAML path
(`methods.eupmu.space.lr.low: ...`), so the CLI can print it and exit 2 with nothing written.
The models say most of it themselves (each search-space type is its own model, metrics are checked
against the catalogue, bounds, duplicates, the grid's steps); `check_spec` adds what needs more than
the spec: the base TrialConfig and its data on disk, the methods' own configs, the sampler.

Shape (docs/sweeps.md has the full reference):

    name: quickstart
    base: {data: {name: digits}, model: small_cnn, split: {fraction: 0.1}}   # a TrialConfig
    methods:                      # the method is itself a categorical choice; each has its own space
      rl: {space: {lr: {type: log-float, low: 1e-3, high: 1e-1}, epochs: {type: fixed, value: 3}}}
    objectives: [{metric: forget_gap, direction: minimize}, {metric: test_acc, direction: maximize}]
    constraints: [{metric: utility_drop, max: 5.0}]       # feasible when utility_drop <= 5
    sampler: {name: tpe, seed: 0}
    n_trials: 20
    seeds: [0, 1]                 # ints = unlearn_seed; or {split_seed, train_seed, unlearn_seed}
    resources: {backend: inline}
    tracking: {wandb: {mode: disabled}}
"""
from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, cast

from pydantic import (AfterValidator, BeforeValidator, Field, ValidationError, ValidationInfo,
                      field_validator, model_validator)
from pydantic_core import InitErrorDetails, PydanticCustomError

from sweeps import catalogue
from unlearning.audit_config import AuditConfig
from unlearning.config import SEED_MAX, StrictModel, one_line, read_yaml
from unlearning.errors import UserError

PRESETS_DIR = Path(__file__).parent / "presets"
REFERENCE_DIR = Path(__file__).parent / "reference"

# the metrics a spec may optimise, constrain or select by -> needs Retrain (from the catalogue: an
# objective or constraint on one that needs Retrain makes the selection rule "oracle")
METRICS: dict[str, bool] = {m.name: m.retrain for m in catalogue.CATALOGUE if m.objective}
SEED_KEYS = ("split_seed", "train_seed", "unlearn_seed")
MAX_SEEDS = 10_000  # seed entries in one list (`seeds`, `replicate.seeds`, `--seeds 0-9999`)
# the most trials one sweep may ask for: a record of 100,000 trials is tested to stay fast
# (docs/sweeps.md); 10**12 is a typo, not a plan
MAX_TRIALS = 100_000


def blind_metrics(m: dict[str, float]) -> dict[str, float]:
    """Metrics the sweep derives from a trial's own numbers (no Retrain)."""
    out = {}
    if "forget_acc" in m and "val_acc" in m:
        out["forget_val_gap"] = abs(m["forget_acc"] - m["val_acc"])
    return out


def error_at(loc: tuple[str | int, ...], message: str) -> ValidationError:
    """A validation error at a key below the model being validated (a validator's own errors sit at
    the model itself); pydantic prefixes the path above it, so the CLI's line names the full path."""
    return ValidationError.from_exception_data("SweepSpec", [InitErrorDetails(
        type=PydanticCustomError("spec", "{message}", {"message": message}), loc=loc, input=None)])


# -- the search space: one model per dimension type, discriminated on `type` ----------------------

DIM_TYPES = ("float", "log-float", "int", "log-int", "categorical", "fixed")
_DIM_KEYS = {"low", "high", "step", "choices", "value"}


class _Dim(StrictModel):
    @model_validator(mode="before")
    @classmethod
    def _keys_of_other_types(cls, v):
        # a key of another type: null means "not given" (spec.yaml files written before this model
        # was a union hold every key), anything else is a mistake worth its own message
        if isinstance(v, dict):
            other = _DIM_KEYS - set(cls.model_fields)
            v = {k: x for k, x in v.items() if not (k in other and x is None)}
            for k in v:
                if k in other:
                    raise error_at((k,), f"not used by type {v.get('type')}")
        return v


class _Range(_Dim):
    """low <= high (both finite); log scales need low > 0; a step, where allowed, is > 0."""

    log: ClassVar[bool] = False

    @field_validator("step", mode="after", check_fields=False)
    @classmethod
    def _positive_step(cls, v):
        if v is not None and v <= 0:
            raise ValueError("must be > 0")
        return v

    @model_validator(mode="after")
    def _bounds(self):
        if self.low > self.high:
            raise error_at(("low",), f"{self.low!r} is greater than high {self.high!r}")
        if self.log and self.low <= 0:
            raise error_at(("low",), f"a log scale needs low > 0, got {self.low!r}")
        return self


class FloatDim(_Range):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = None


class LogFloatDim(_Range):
    type: Literal["log-float"]
    low: float
    high: float
    log: ClassVar[bool] = True


class IntDim(_Range):
    type: Literal["int"]
    low: int
    high: int
    step: int | None = None

    @field_validator("low", "high", "step", mode="before")
    @classmethod
    def _integers(cls, v):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise ValueError(f"an int parameter needs integer bounds, got {v!r}")
        return v


class LogIntDim(IntDim):
    type: Literal["log-int"]  # type: ignore[assignment]
    log: ClassVar[bool] = True

    @field_validator("step")
    @classmethod
    def _unit_step(cls, v):
        if v not in (None, 1):  # Optuna refuses it when the trial asks, mid-sweep
            raise ValueError(f"a log scale takes no step (other than 1), got {v!r}")
        return v


class CategoricalDim(_Dim):
    type: Literal["categorical"]
    choices: list[Any]

    @field_validator("choices")
    @classmethod
    def _scalars(cls, v):
        if not v:
            raise ValueError("needs at least one choice")
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in v):
            raise ValueError("choices must be scalars (null, bool, int, float, str)")
        return v


class FixedDim(_Dim):
    type: Literal["fixed"]
    value: Any  # required (null is a value)


def _shorthand(v: Any) -> Any:
    # a bare scalar is shorthand for fixed, a list for categorical
    if isinstance(v, list):
        return {"type": "categorical", "choices": v}
    if not isinstance(v, dict):
        return {"type": "fixed", "value": v}
    if "type" not in v:
        raise error_at(("type",), f"required key is missing (one of {', '.join(DIM_TYPES)})")
    if v["type"] not in DIM_TYPES:
        raise error_at(("type",), f"{v['type']!r} is not a dimension type; known: {', '.join(DIM_TYPES)}")
    return v


# One searched (or fixed) parameter. float/int: low, high (step optional); log-float, log-int: low,
# high, low > 0, no step; categorical: choices (scalars); fixed: value.
Dim = Annotated[Union[FloatDim, LogFloatDim, IntDim, LogIntDim, CategoricalDim, FixedDim],
                Field(discriminator="type"), BeforeValidator(_shorthand)]


class MethodSpace(StrictModel):
    space: dict[str, Dim] = Field(default_factory=dict)


def _known_metric(name: str) -> str:
    if not catalogue.get(name).objective:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return name


class Objective(StrictModel):
    metric: Annotated[str, AfterValidator(_known_metric)]
    direction: Literal["minimize", "maximize"] = "minimize"


class Constraint(StrictModel):
    """A bound on a metric's mean over seeds: `max` (metric <= max) and/or `min` (metric >= min).
    Told to Optuna as constraint values (<= 0 is feasible) and used as the feasibility filter."""

    metric: Annotated[str, AfterValidator(_known_metric)]
    max: float | None = None
    min: float | None = None

    @field_validator("min")
    @classmethod
    def _feasible(cls, v, info: ValidationInfo):
        hi = info.data.get("max")
        if v is not None and hi is not None and v > hi:
            raise ValueError(f"{v:g} is above max {hi:g}: no trial could be feasible")
        return v

    @model_validator(mode="after")
    def _a_bound(self):
        if self.max is None and self.min is None:
            raise ValueError("give max and/or min")
        return self

    def values(self, value: float) -> dict[str, float]:
        out = {}
        if self.max is not None:
            out[f"{self.metric}<={self.max:g}"] = value - self.max
        if self.min is not None:
            out[f"{self.metric}>={self.min:g}"] = self.min - value
        return out


# TPE's random start-up: a fixed number, never derived from n_trials, so that a sweep extended later
# (`resume --set n_trials=20`) proposes exactly what an uninterrupted sweep of that size proposes.
# Optuna's own default is 10; 5 leaves the model-based search most of a 16-trial quickstart (which
# had 5 under the old rule, min(10, max(2, n_trials // 3)), and so proposes what it did).
TPE_STARTUP_TRIALS = 5


class SamplerSpec(StrictModel):
    name: Literal["tpe", "nsga2", "nsga3", "gp", "random", "grid"] = "tpe"
    seed: int | None = Field(0, ge=0, le=SEED_MAX)
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the Optuna sampler

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        return {"name": v} if isinstance(v, str) else v

    def build(self, seed: int | None, n_objectives: int):
        """The Optuna sampler with `seed` (sweeps.samplers.make_sampler derives it per configuration).
        grid: a random sampler (the grid's points are enqueued once when the study is created).
        Raises TypeError for an option the sampler does not take, ValueError for a bad value."""
        import optuna

        opts, S = dict(self.options), optuna.samplers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.name == "tpe":
                opts.setdefault("multivariate", True)
                opts.setdefault("group", True)  # conditional spaces: one group per method
                opts.setdefault("n_startup_trials", TPE_STARTUP_TRIALS)
                return S.TPESampler(seed=seed, **opts)
            if self.name == "nsga2":
                return S.NSGAIISampler(seed=seed, **opts)
            if self.name == "nsga3":
                if n_objectives < 2:
                    raise ValueError("nsga3 needs two or more objectives")
                return S.NSGAIIISampler(seed=seed, **opts)
            if self.name == "gp":
                return S.GPSampler(seed=seed, **opts)
            return S.RandomSampler(seed=seed, **opts)


class RaceSpec(StrictModel):
    """Search seeds raced (`race:` in a spec): a configuration runs on its first `seeds` seed(s); it
    is dropped there, its other seeds never run, when it is off beyond doubt: infeasible, or
    dominated by a configuration already told with every seed, by more than `margin` seed-to-seed
    standard deviations in every objective (for infeasible: in the constraint's metric). The
    deviations are pooled over the configurations told so far with every seed, so no configuration
    is dropped before `min_complete` of them have given the spread. A dropped configuration is
    recorded as such (its unrun seeds as PRUNED rows, failure kind `raced`; its Optuna trial
    PRUNED): never a result, never on a front. Needs two or more search seeds to do anything."""

    seeds: int = Field(1, ge=1)  # seeds a configuration runs before it may be dropped
    margin: float = Field(3.0, gt=0)  # in pooled seed-to-seed standard deviations
    min_complete: int = Field(3, ge=2)  # configurations told with every seed before any is dropped

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        return {} if v is True else v


class Resources(StrictModel):
    backend: Literal["ray", "inline"] = "ray"
    address: str | None = None  # an existing Ray cluster; None = embedded local Ray
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)  # fractional GPUs share a device
    max_concurrent: int | None = Field(None, ge=1)
    max_retries: int = Field(2, ge=0)
    timeout_s: float | None = Field(None, gt=0)
    # train every Original/Retrain the seeds need as tasks before the trials (each once, side by
    # side, sent to every node); false: each trial trains what its node's cache lacks, when it runs
    oracle_phase: bool = True
    # Ray: a worker starts its next trial while the previous one's MIA SVC runs on the CPU (the same
    # metrics); max_concurrent still caps the trials in flight, those finishing their SVC included
    overlap_mia: bool = True
    # an embedded Ray, CPU trials: the driver runs trials itself, one at a time, while Ray starts
    # (seconds); Ray's workers take the next ones once up (cluster/handover.py)
    first_trials_here: bool = True

    @model_validator(mode="after")
    def _whole_or_fraction(self):
        g = self.gpus_per_trial
        if g > 1 and g != int(g):
            raise ValueError(f"gpus_per_trial {g:g}: a fraction of one GPU (<= 1) or a whole number")
        return self


class WandbSpec(StrictModel):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "unlearn-sweep"
    entity: str | None = None
    dir: str | None = None  # default: the run directory
    tags: list[str] = Field(default_factory=list)
    notes: str | None = None


class TrackingSpec(StrictModel):
    wandb: WandbSpec = WandbSpec()


class ReferenceSpec(StrictModel):
    """A paper table to put beside our numbers (a CSV in sweeps/reference/)."""

    table: str
    scenario: str

    @field_validator("table")
    @classmethod
    def _bundled(cls, v):
        if not (REFERENCE_DIR / v).is_file():
            raise ValueError(f"{v!r} is not in sweeps/reference/")
        return v


class AuditSpec(AuditConfig):
    """`audit:` in a spec: what `unlearn-sweep audit` runs (and `run` after the sweep, when a spec
    has it). The science settings are unlearning.audit_config.AuditConfig's; here: which configurations
    and how many tasks at once."""

    top: int = Field(3, ge=1)  # the top K configurations by the sweep's selection rule
    max_concurrent: int | None = Field(None, ge=1)  # tasks at once; None = every backend slot


def parse_seeds(value: Any) -> list[int | dict[str, int]]:
    """Seed entries from `--seeds` or `replicate.seeds`: a list (ints or Seeds mappings), an int,
    or text: "0-9" (a range, both ends included), "0,1,2", or a mix ("0-4,7"). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a seed list: {value!r}")
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return value
    out: list[int | dict[str, int]] = []
    for part in str(value).replace(" ", "").split(","):
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f"not a seed list: {value!r} (expected e.g. 0-9 or 0,1,2)")
        first, last = int(lo), int(hi) if dash else int(lo)
        if last > SEED_MAX or last - first + 1 + len(out) > MAX_SEEDS:  # before the list is built
            raise ValueError(f"{part}: seeds are 0 to {SEED_MAX}, at most {MAX_SEEDS:,} of them")
        out += list(range(first, last + 1))
    if not out:
        raise ValueError("no seeds given")
    return out


def _seed_entries(seeds: list[int | dict[str, int]]) -> list[int | dict[str, int]]:
    for i, s in enumerate(seeds):
        if isinstance(s, dict):
            bad = sorted(set(s) - set(SEED_KEYS))
            if bad:
                raise error_at((i, bad[0]), "unknown key")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in s.values()):
                raise error_at((i,), "seeds are integers")
        for key, v in (s.items() if isinstance(s, dict) else [(None, s)]):
            if not 0 <= v <= SEED_MAX:
                raise error_at((i,) if key is None else (i, key), f"{v} is not a seed (0 to {SEED_MAX})")
    return seeds


# ints (which seeds they set: `seed_axes`) or mappings of split_seed, train_seed, unlearn_seed
SeedList = Annotated[list[int | dict[str, int]], Field(min_length=1, max_length=MAX_SEEDS),
                     AfterValidator(_seed_entries)]
SeedAxis = Literal["split", "train", "unlearn"]


class ReplicateSpec(StrictModel):
    """`replicate:` in a spec (and `unlearn-sweep replicate`): rerun the top configurations of the
    search on more seeds, in the same record, so tables report mean +- std over many seeds."""

    top: int = Field(1, ge=1)  # the top K configurations by the sweep's selection rule ...
    per_method: bool = False  # ... or the top K of each method (a paper's table: the best of each)
    seeds: SeedList  # same grammar as `seeds` (and seed_axes)
    # base.eval settings for the replicate runs only, e.g. {mia: true} when the search skipped the
    # SVC attack to go faster (the reported table then has MIA-efficacy)
    eval: dict[str, Any] = Field(default_factory=dict)

    @field_validator("seeds", mode="before")
    @classmethod
    def _text(cls, v):
        return parse_seeds(v)


class SweepSpec(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    methods: dict[str, MethodSpace]
    objectives: list[Objective] = Field(min_length=1)
    constraints: list[Constraint] = Field(default_factory=list)
    sampler: SamplerSpec = SamplerSpec()
    n_trials: int = Field(20, ge=1)  # at most MAX_TRIALS
    # the failure budget: stop (non-zero exit) after this many failed trials (null: no limit), or
    # when the first `fail_fast` trials all fail for the same reason (0: never)
    max_failures: int | None = Field(None, ge=1)
    fail_fast: int = Field(3, ge=0)
    seeds: SeedList = Field(default_factory=lambda: cast("list[int | dict[str, int]]", [0]))
    # which seeds an int entry of `seeds` (and of `replicate.seeds`) sets: [unlearn] keeps one
    # original/Retrain pair for every seed; [train, unlearn] gives each seed its own (the field's
    # protocol when results are reported as mean +- std over seeds)
    seed_axes: list[SeedAxis] = Field(default_factory=lambda: cast("list[SeedAxis]", ["unlearn"]),
                                      min_length=1)
    resources: Resources = Resources()
    tracking: TrackingSpec = TrackingSpec()
    storage: str | None = None  # an RDB URL for a shared study; default runs/<name>/study.journal
    reference: ReferenceSpec | None = None
    # how "the best" configurations are picked (replicate --top K, audit --top K, best per method):
    # null = Pareto layer, then the objectives in order; or one metric, e.g. DeepUnlearn's
    # {metric: du_norm, direction: minimize} (the smallest norm of its four objective terms)
    select: Objective | None = None
    audit: AuditSpec | None = None  # per-example audits of the top configurations (docs/metrics.md)
    replicate: ReplicateSpec | None = None  # after the search: its top configurations on more seeds
    race: RaceSpec | None = None  # drop a configuration after its first seed when it is far off
    # the researcher's own code: .py files (relative to the spec's folder) or module names, imported
    # before anything else in the spec is checked (its methods, base.model and base.data.name may be
    # theirs); `load_spec` records each as it loaded it (a file's absolute path)
    plugins: list[str] = Field(default_factory=list, exclude_if=lambda v: not v)
    # keep every trial's unlearned model in runs/<name>/models/ (replicate always keeps its own)
    keep_models: bool = Field(False, exclude_if=lambda v: not v)

    @field_validator("base")
    @classmethod
    def _no_trial_keys(cls, v):
        for key, where in (("method", "methods"), ("params", "methods.<name>.space"), ("seeds", "seeds"),
                           ("plugins", "plugins")):
            if key in v:
                raise error_at((key,), f"set this in `{where}`, not in base")
        return v

    @field_validator("methods", mode="before")
    @classmethod
    def _known_names(cls, v, info: ValidationInfo):
        """With the method registry in the validation context (`load_spec` gives it unless read_only):
        every method and each of its parameters must exist. Checked before the dimensions, so that
        `--set methods.ltu.space.lrr.low=0.1` names the unknown parameter, not a missing type."""
        known = (info.context or {}).get("methods")
        if known is None or not isinstance(v, dict):
            return v
        for name, ms in v.items():
            if name not in known:
                raise error_at((name,), f"unknown method; known: {', '.join(known)}")
            space = ms.get("space") if isinstance(ms, dict) else None
            fields = known[name].Config.model_fields
            for p in space if isinstance(space, dict) else ():
                if p not in fields:
                    raise error_at((name, "space", p), f"unknown parameter of {name}; known: "
                                   f"{', '.join(fields)}")
        return v

    @field_validator("methods")
    @classmethod
    def _some_method(cls, v):
        if not v:
            raise ValueError("at least one method is needed")
        return v

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, v):
        if len({o.metric for o in v}) != len(v):
            raise ValueError("a metric appears twice")
        return v

    @field_validator("n_trials")
    @classmethod
    def _a_plan(cls, v):
        if v > MAX_TRIALS:
            raise ValueError(f"{v:,} trials is more than one sweep takes (at most {MAX_TRIALS:,}; a "
                             "record that large stays fast, docs/sweeps.md)")
        return v

    @field_validator("constraints")
    @classmethod
    def _satisfiable(cls, v):
        """Entries on one metric are one range: the highest min must not be above the lowest max."""
        for i, c in enumerate(v):
            for j, other in enumerate(v[:i]):
                if other.metric != c.metric:
                    continue
                for lo, hi, at in ((c.min, other.max, j), (other.min, c.max, j)):
                    if lo is not None and hi is not None and lo > hi:
                        raise error_at((i,), f"{c.metric}: min {lo:g} and max {hi:g} (constraints.{at}) "
                                       "leave no value: no trial could be feasible")
        return v

    @model_validator(mode="after")
    def _grid_has_steps(self):
        if self.sampler.name == "grid":
            for name, ms in self.methods.items():
                for p, d in ms.space.items():
                    if isinstance(d, LogFloatDim) or (isinstance(d, FloatDim) and d.step is None):
                        raise error_at(("methods", name, "space", p, "step"), "the grid sampler needs a "
                                       "step (or categorical choices) for every float")
        return self

    # -- derived ---------------------------------------------------------------------------------
    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def selection_rule(self) -> str:
        """'oracle' when an objective or constraint peeks at Retrain, else 'blind'."""
        used = [o.metric for o in self.objectives] + [c.metric for c in self.constraints] + \
            ([self.select.metric] if self.select else [])
        return "oracle" if any(catalogue.get(m).retrain for m in used) else "blind"

    def seed_list(self, seeds: list[int | dict[str, int]] | None = None) -> list[dict[str, int]]:
        """Each seed entry (of `seeds`, or of the list given) as a full Seeds dict: an int sets the
        seeds named by `seed_axes` (unlearn_seed by default); seeds a mapping does not give are 0
        (`base` may not hold seeds: the model refuses it)."""
        base = {"split_seed": 0, "train_seed": 0, "unlearn_seed": 0}
        return [{**base, **{f"{a}_seed": s for a in self.seed_axes}} if isinstance(s, int)
                else {**base, **s} for s in (self.seeds if seeds is None else seeds)]

    def trial_config(self, method: str, params: dict[str, Any], seeds: dict[str, int]) -> dict[str, Any]:
        """The TrialConfig dict of one run: base + method + params + seeds (+ the plug-ins, by
        content, when the spec has any)."""
        cfg = copy.deepcopy(self.base)
        cfg.update(method=method, params=dict(params), seeds=dict(seeds))
        if self.plugins:
            cfg["plugins"] = [p.ref() for p in self.loaded_plugins()]
        return cfg

    def loaded_plugins(self) -> list:
        """The `unlearning.Plugin` records of `plugins`, as this process loaded them (`load_spec`
        loads them; a read-only spec has not). UserError when one is not loaded."""
        from unlearning.plugins import loaded_plugin

        out = []
        for name in self.plugins:
            p = loaded_plugin(name)
            if p is None:
                raise UserError(f"plugins: {name} is not loaded (read the spec with load_spec)")
            out.append(p)
        return out

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=False)


# -- loading -------------------------------------------------------------------------------------

def set_path_any(tree: Any, path: str, value: Any, _full: str | None = None) -> Any:
    """Copy of a nested dict/list with `a.b.0.c` set to value (dicts created on the way)."""
    full = path if _full is None else _full
    head, _, rest = path.partition(".")
    if isinstance(tree, list):
        try:
            i = int(head)
            tree[i]
        except (ValueError, IndexError):
            raise UserError(f"--set {full}: {head!r} is not an index of a list of {len(tree)}") from None
        items = list(tree)
        items[i] = set_path_any(items[i], rest, value, full) if rest else value
        return items
    out = dict(tree) if isinstance(tree, dict) else {}
    out[head] = set_path_any(out.get(head), rest, value, full) if rest else value
    return out


# spec fields a later run may change without it becoming another sweep: more trials, more seeds,
# other resources or tracking extend the same record (so does `race`: how many seeds a poor
# configuration runs, its raced runs typed in the record); so do where a trial runs and caches (base's
# EXTENSIBLE_BASE: not in a run's fingerprint either). Everything else (the space, the methods, the
# data, base, constraints, objectives, the sampler, seed_axes, select, ...) is what the sweep is.
EXTENSIBLE = ("n_trials", "seeds", "resources", "tracking", "description", "max_failures", "fail_fast",
              "replicate", "audit", "keep_models", "race",
              # where the plug-in files lie; what they hold is the run's identity (run.json), checked
              # by the driver (sweeps.rundir.check_inputs)
              "plugins")
EXTENSIBLE_BASE = ("device", "cache_dir")
ABSENT = "(absent)"


def sweep_identity(dump: dict[str, Any]) -> dict[str, Any]:
    """The part of a spec dump that defines its sweep: all but EXTENSIBLE (and base's
    EXTENSIBLE_BASE)."""
    out = {k: v for k, v in dump.items() if k not in EXTENSIBLE}
    if isinstance(out.get("base"), dict):
        out["base"] = {k: v for k, v in out["base"].items() if k not in EXTENSIBLE_BASE}
    return out


def spec_difference(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first (path, old value, new value) where two spec dumps are different sweeps; None when
    they are the same sweep, perhaps extended. A key one side lacks has the value ABSENT."""
    return _first_difference(sweep_identity(old), sweep_identity(new), "")


def _first_difference(old: Any, new: Any, path: str) -> tuple[str, Any, Any] | None:
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):  # entry by entry
        old, new = dict(enumerate(old)), dict(enumerate(new))
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return None if old == new else (path or "<root>", old, new)
    for k in sorted(set(old) | set(new), key=str):
        where = f"{path}.{k}" if path else str(k)
        if k not in old or k not in new:
            if old.get(k) != new.get(k):
                return where, old.get(k, ABSENT), new.get(k, ABSENT)
            continue
        found = _first_difference(old[k], new[k], where)
        if found:
            return found
    return None


def spec_fingerprint(spec: SweepSpec) -> str:
    """A hash of what defines the sweep (`sweep_identity`: what `spec_difference` compares), as
    validated: fields at their defaults are left out, so a field added by a later version (with its
    default) does not change the fingerprint of a spec.yaml written before."""
    ident = sweep_identity(spec.model_dump(mode="json", exclude_defaults=True))
    return hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def spec_folder(source: str | Path) -> Path | None:
    """The folder a spec file's relative paths (plug-ins, checkpoints) start from; None for a
    preset (the working directory)."""
    p = Path(source).expanduser()
    return p.resolve().parent if p.is_file() else None


def read_spec_source(source: str | Path) -> dict[str, Any]:
    """A YAML file path, or the name of a bundled preset."""
    p = Path(source)
    if not p.is_file():
        if str(source) in preset_names():
            p = PRESETS_DIR / f"{source}.yaml"
        else:
            raise UserError(f"{source}: no such file or preset (presets: {', '.join(preset_names())})")
    return read_yaml(p)


def load_spec(raw: dict[str, Any], sets: Sequence[tuple[str, Any]] = (), *, check_data: bool = True,
              read_only: bool = False, base: str | Path | None = None) -> SweepSpec:
    """Apply `--set` overrides, import the spec's plug-ins, then validate. Raises UserError (one
    line, with the YAML path). `base`: the folder the spec's relative paths (`plugins`,
    `base.checkpoints`) start from (`spec_folder`; default the working directory); they are
    recorded resolved. `check_data=False` skips what only a machine that runs trials has (the data
    root) and the reading of checkpoint files. `read_only` keeps only the shape (every key and
    type): the plug-ins are not imported, and the checks that load the methods and the base
    TrialConfig, and with them torch and sklearn (some 2 s), are skipped. The verbs that only read a
    record (status, analyze, export, compare) use it: they need none of that, the spec was checked
    when its sweep ran, and they work on a run directory copied anywhere."""
    for key, value in sets:
        raw = set_path_any(raw, key, value)
    context = None
    if not read_only:
        from unlearning.methods import all_methods

        folder = Path(base) if base is not None else Path.cwd()
        raw = _load_plugins(raw, folder)
        raw = _resolve_checkpoints(raw, folder, read=check_data)

        context = {"methods": all_methods()}
    try:
        spec = SweepSpec.model_validate(raw, context=context)
    except ValidationError as e:
        raise UserError(one_line(e, tags=DIM_TYPES, model=SweepSpec)) from None
    if not read_only:
        check_spec(spec, check_data=check_data)
    return spec


def _load_plugins(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Import the plug-ins `raw` names (before anything else is validated: the spec may name their
    methods, model and data set); `plugins` becomes what was loaded, each once: a file's absolute
    path, a module's name. A plug-in that fails is one UserError line (its file, line, exception)."""
    names = raw.get("plugins") if isinstance(raw, dict) else None
    if names is None:
        return raw
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise UserError("plugins: a list of .py files (relative to the spec's folder) or module names")
    from unlearning.plugins import load_plugins

    loaded = load_plugins(names, base=folder)
    return {**raw, "plugins": list(dict.fromkeys(p.name for p in loaded))}


def _resolve_checkpoints(raw: dict[str, Any], folder: Path, *, read: bool) -> dict[str, Any]:
    """`base.checkpoints.*` paths made absolute (from `folder`) and, with `read`, each file read
    safely (weights only; a state dict of finite tensors) and its sha256 filled in (a pinned one is
    checked): the fingerprint counts the file by its content, and a node finds it in its cache by
    it. One UserError line per bad file; nothing in it runs."""
    base = raw.get("base") if isinstance(raw, dict) else None
    given = base.get("checkpoints") if isinstance(base, dict) else None
    if not isinstance(given, dict):
        return raw
    from unlearning.checkpoints import read_checkpoint

    out = dict(given)
    for kind, ref in given.items():
        ref = {"path": ref} if isinstance(ref, str) else ref
        if not isinstance(ref, dict) or not isinstance(ref.get("path"), str):
            continue  # the model's validation names the problem
        path = (folder / Path(ref["path"]).expanduser()).resolve()
        ref = {**ref, "path": str(path)}
        if read:
            ref["sha256"] = read_checkpoint(path, sha256=ref.get("sha256"),
                                            what=f"base.checkpoints.{kind}").sha256
        out[kind] = ref
    assert isinstance(base, dict)  # `given` came from it
    return {**raw, "base": {**base, "checkpoints": out}}


def check_spec(spec: SweepSpec, *, check_data: bool = True) -> None:
    """What the models cannot say alone: the base TrialConfig and its data root on disk, each
    searched value against its method's own config, metrics against what the base computes (Retrain,
    the relearning attack), the storage URL's dialect and the sampler's options. `spec` was
    validated with the method registry in its context (`load_spec`)."""
    from unlearning.data import DISK_SETS, missing_root
    from unlearning.methods import all_methods
    from unlearning.trial import load_trial_config

    try:
        base = load_trial_config(spec.base)
    except UserError as e:
        raise UserError(f"base.{e}") from None
    if check_data and base.data.name in DISK_SETS and not base.data.download:
        if base.data.root is None:
            raise UserError(f"base.data.root: {base.data.name} needs a data root "
                            f"(--set base.data.root=/path/to/{base.data.name})")
        if not Path(base.data.root).expanduser().is_dir():
            raise UserError(f"base.data.root: {base.data.root} is not a folder")
    if check_data and (problem := missing_root(base.data)):  # mnist, fashion_mnist (default root)
        raise UserError(f"base.data.root: {problem}")

    known = all_methods()
    for name, ms in spec.methods.items():
        for pname, dim in ms.space.items():
            for where, value in _probe_values(dim):
                try:
                    known[name].Config(**{pname: value})
                except ValidationError as e:
                    msg = one_line(e).split(": ", 1)[-1]
                    raise UserError(f"methods.{name}.space.{pname}{where}: {value!r} is not a valid "
                                    f"{pname} ({msg})") from None

    uses: list[tuple[str, Objective | Constraint]] = [
        *((f"objectives.{i}", o) for i, o in enumerate(spec.objectives)),
        *((f"constraints.{i}", c) for i, c in enumerate(spec.constraints)),
        *([("select", spec.select)] if spec.select else [])]
    for path, item in uses:
        m = catalogue.get(item.metric)
        if m.relearn and base.eval.relearn is None:
            raise UserError(f"{path}.metric: {m.name} needs the relearning attack (set "
                            f"base.eval.relearn: true, or its settings)")
        if m.retrain and not base.retrain:
            raise UserError(f"{path}.metric: {m.name} needs Retrain but base.retrain is false (set "
                            f"base.retrain: true or use a blind metric such as forget_val_gap)")
    if spec.storage is not None:
        from sqlalchemy.engine import make_url

        try:  # parses the URL and loads its dialect; connects to nothing
            make_url(spec.storage).get_dialect()
        except Exception as e:  # noqa: BLE001 - ArgumentError, NoSuchModuleError, ...
            raise UserError(f"storage: not a usable RDB URL ({str(e).splitlines()[0]})") from None
    try:
        spec.sampler.build(spec.sampler.seed, len(spec.objectives))
    except TypeError as e:
        raise UserError(f"sampler.options: {e}") from None
    except ValueError as e:
        raise UserError(f"sampler: {e}") from None


def _probe_values(d: Dim) -> list[tuple[str, Any]]:
    """The values of a dimension its method's config must accept: the edges of a range, every
    choice, the fixed value (with where each sits below the dimension's path)."""
    if isinstance(d, FixedDim):
        return [(".value", d.value)]
    if isinstance(d, CategoricalDim):
        return [(f".choices.{i}", c) for i, c in enumerate(d.choices)]
    return [(".low", d.low), (".high", d.high)]


__all__ = ["AuditSpec", "CategoricalDim", "Constraint", "Dim", "FixedDim", "FloatDim", "IntDim",
           "LogFloatDim", "LogIntDim", "METRICS", "Objective", "SweepSpec", "blind_metrics", "load_spec",
           "preset_names", "read_spec_source", "set_path_any", "spec_difference", "spec_fingerprint",
           "spec_folder", "sweep_identity"]
