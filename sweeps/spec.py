"""SweepSpec: what a sweep tries, read from YAML and validated before anything runs.

Every problem is one UserError line that names the key's full YAML path
(`methods.eupmu.space.lr.low: ...`), so the CLI can print it and exit 2 with nothing written.

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
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from unlearning.audit_config import AuditConfig
from unlearning.config import StrictModel, one_line, read_yaml
from unlearning.errors import UserError

PRESETS_DIR = Path(__file__).parent / "presets"
REFERENCE_DIR = Path(__file__).parent / "reference"

# metric -> needs Retrain (an objective or constraint on it makes the selection rule "oracle")
METRICS: dict[str, bool] = {
    "unlearn_acc": False, "retain_acc": False, "test_acc": False, "mia_efficacy": False,
    "forget_acc": False, "val_acc": False, "utility_drop": False, "runtime_s": False,
    "retain_examples_seen": False,
    # blind: |forget accuracy - validation accuracy| (how the EUPMU authors tuned, no Retrain needed)
    "forget_val_gap": False,
    "avg_gap": True, "forget_gap": True,
    # Tug of War and ToW-MIA (Zhao et al. 2024): 1 = Retrain's accuracies (MIA-efficacy)
    "tow": True, "tow_mia": True,
    # the relearning attack (needs base.eval.relearn): optimizer steps to relearn the forget set;
    # AIN = (steps + 0.01) / (Retrain's steps + 0.01)
    "relearn_steps": False, "ain": True,
    # DeepUnlearn (Cadet et al. 2024; eval.du_mia): a loss attack on forget vs validation, percent
    "du_mia": False, "indiscernibility": False, "du_indisc": False,
    # their objective terms vs Retrain and their selection score (the norm of the four terms)
    "du_retain": True, "du_forget": True, "du_val": True, "du_norm": True,
    "rte": True,  # t_Retrain / t_method
}
RELEARN_METRICS = ("relearn_steps", "ain")


def blind_metrics(m: dict[str, float]) -> dict[str, float]:
    """Metrics the sweep derives from a trial's own numbers (no Retrain)."""
    out = {}
    if "forget_acc" in m and "val_acc" in m:
        out["forget_val_gap"] = abs(m["forget_acc"] - m["val_acc"])
    return out


class Dim(StrictModel):
    """One searched (or fixed) parameter. float/int: low, high (step optional); log-*: low > 0;
    categorical: choices; fixed: value."""

    type: Literal["float", "log-float", "int", "log-int", "categorical", "fixed"]
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    choices: list[Any] | None = None
    value: Any = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        # a bare scalar or list is shorthand for fixed / categorical
        if isinstance(v, list):
            return {"type": "categorical", "choices": v}
        if not isinstance(v, dict):
            return {"type": "fixed", "value": v}
        return v


class MethodSpace(StrictModel):
    space: dict[str, Dim] = Field(default_factory=dict)


class Objective(StrictModel):
    metric: str
    direction: Literal["minimize", "maximize"] = "minimize"


class Constraint(StrictModel):
    """A bound on a metric's mean over seeds: `max` (metric <= max) and/or `min` (metric >= min).
    Told to Optuna as constraint values (<= 0 is feasible) and used as the feasibility filter."""

    metric: str
    max: float | None = None
    min: float | None = None

    def values(self, value: float) -> dict[str, float]:
        out = {}
        if self.max is not None:
            out[f"{self.metric}<={self.max:g}"] = value - self.max
        if self.min is not None:
            out[f"{self.metric}>={self.min:g}"] = self.min - value
        return out


class SamplerSpec(StrictModel):
    name: Literal["tpe", "nsga2", "nsga3", "gp", "random", "grid"] = "tpe"
    seed: int | None = 0
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the Optuna sampler

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        return {"name": v} if isinstance(v, str) else v


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
        out += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    if not out:
        raise ValueError("no seeds given")
    return out


class ReplicateSpec(StrictModel):
    """`replicate:` in a spec (and `unlearn-sweep replicate`): rerun the top configurations of the
    search on more seeds, in the same record, so tables report mean +- std over many seeds."""

    top: int = Field(1, ge=1)  # the top K configurations by the sweep's selection rule ...
    per_method: bool = False  # ... or the top K of each method (a paper's table: the best of each)
    seeds: list[int | dict[str, int]] = Field(min_length=1)  # same grammar as `seeds` (and seed_axes)
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
    n_trials: int = Field(20, ge=1)
    # the failure budget: stop (non-zero exit) after this many failed trials (null: no limit), or
    # when the first `fail_fast` trials all fail for the same reason (0: never)
    max_failures: int | None = Field(None, ge=1)
    fail_fast: int = Field(3, ge=0)
    seeds: list[int | dict[str, int]] = Field(default_factory=lambda: [0], min_length=1)
    # which seeds an int entry of `seeds` (and of `replicate.seeds`) sets: [unlearn] keeps one
    # original/Retrain pair for every seed; [train, unlearn] gives each seed its own (the field's
    # protocol when results are reported as mean +- std over seeds)
    seed_axes: list[Literal["split", "train", "unlearn"]] = Field(default_factory=lambda: ["unlearn"],
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

    @field_validator("methods")
    @classmethod
    def _some_method(cls, v):
        if not v:
            raise ValueError("at least one method is needed")
        return v

    # -- derived ---------------------------------------------------------------------------------
    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def selection_rule(self) -> str:
        """'oracle' when an objective or constraint peeks at Retrain, else 'blind'."""
        used = [o.metric for o in self.objectives] + [c.metric for c in self.constraints] + \
            ([self.select.metric] if self.select else [])
        return "oracle" if any(METRICS[m] for m in used) else "blind"

    def seed_list(self, seeds: list[int | dict[str, int]] | None = None) -> list[dict[str, int]]:
        """Each seed entry (of `seeds`, or of the list given) as a full Seeds dict: an int sets the
        seeds named by `seed_axes` (unlearn_seed by default); seeds a mapping does not give are 0
        (`base` may not hold seeds: check_spec refuses it)."""
        base = {"split_seed": 0, "train_seed": 0, "unlearn_seed": 0}
        return [{**base, **{f"{a}_seed": s for a in self.seed_axes}} if isinstance(s, int)
                else {**base, **s} for s in (self.seeds if seeds is None else seeds)]

    def trial_config(self, method: str, params: dict[str, Any], seeds: dict[str, int]) -> dict[str, Any]:
        """The TrialConfig dict of one run: base + method + params + seeds."""
        cfg = copy.deepcopy(self.base)
        cfg.update(method=method, params=dict(params), seeds=dict(seeds))
        return cfg

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
        out = list(tree)
        out[i] = set_path_any(out[i], rest, value, full) if rest else value
        return out
    out = dict(tree) if isinstance(tree, dict) else {}
    out[head] = set_path_any(out.get(head), rest, value, full) if rest else value
    return out


# spec fields a later run may change without it becoming another sweep: more trials, more seeds,
# other resources or tracking extend the same record
EXTENSIBLE = ("n_trials", "seeds", "resources", "tracking", "description", "max_failures", "fail_fast",
              "replicate", "audit")


def spec_conflict(old: dict[str, Any], new: dict[str, Any], _path: str = "") -> str | None:
    """The first path where two spec dumps differ in a way that makes them different sweeps
    (None: the same sweep, perhaps extended)."""
    keys = sorted(set(old) | set(new)) if isinstance(old, dict) and isinstance(new, dict) else None
    if keys is None:
        return None if old == new else (_path or "<root>")
    for k in keys:
        if not _path and k in EXTENSIBLE:
            continue
        where = f"{_path}.{k}" if _path else str(k)
        if k not in old or k not in new:
            if old.get(k) != new.get(k):
                return where
            continue
        found = spec_conflict(old[k], new[k], where)
        if found:
            return found
    return None


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_spec_source(source: str | Path) -> dict[str, Any]:
    """A YAML file path, or the name of a bundled preset."""
    p = Path(source)
    if not p.is_file():
        if str(source) in preset_names():
            p = PRESETS_DIR / f"{source}.yaml"
        else:
            raise UserError(f"{source}: no such file or preset (presets: {', '.join(preset_names())})")
    return read_yaml(p)


def load_spec(raw: dict[str, Any], sets: list[tuple[str, Any]] = (), *, check_data: bool = True,
              read_only: bool = False) -> SweepSpec:
    """Apply `--set` overrides, then validate. Raises UserError (one line, with the YAML path).
    `check_data=False` skips what only a machine that runs trials has (the data root). `read_only`
    keeps only the shape (every key and type): the checks that load the methods and the base
    TrialConfig, and with them torch and sklearn (some 2 s), are skipped. The verbs that only read a
    record (status, analyze, export, compare) use it: they need none of that, the spec was checked
    when its sweep ran, and they work on a run directory copied anywhere."""
    for key, value in sets:
        raw = set_path_any(raw, key, value)
    try:
        spec = SweepSpec(**raw)
    except ValidationError as e:
        raise UserError(one_line(e)) from None
    if not read_only:
        check_spec(spec, check_data=check_data)
    return spec


def check_spec(spec: SweepSpec, *, check_data: bool = True) -> None:
    """Checks that need more than types: names, ranges, the methods' own configs, Retrain."""
    from unlearning.data import DISK_SETS, missing_root
    from unlearning.methods import all_methods
    from unlearning.trial import load_trial_config

    for key in ("method", "params", "seeds"):
        if key in spec.base:
            where = {"method": "methods", "params": "methods.<name>.space", "seeds": "seeds"}[key]
            raise UserError(f"base.{key}: set this in `{where}`, not in base")
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
    check_seeds(spec.seeds, "seeds")
    if spec.replicate is not None:
        check_seeds(spec.replicate.seeds, "replicate.seeds")

    known = all_methods()
    for name, ms in spec.methods.items():
        if name not in known:
            raise UserError(f"methods.{name}: unknown method; known: {', '.join(known)}")
        fields = known[name].Config.model_fields
        for pname, dim in ms.space.items():
            path = f"methods.{name}.space.{pname}"
            if pname not in fields:
                raise UserError(f"{path}: unknown parameter of {name}; known: {', '.join(fields)}")
            _check_dim(path, dim)
            for label, value in _dim_probe_values(dim):
                try:
                    known[name].Config(**{pname: value})
                except ValidationError as e:
                    msg = one_line(e).split(": ", 1)[-1]
                    raise UserError(f"{path}{label}: {value!r} is not a valid {pname} ({msg})") from None

    for kind, items in (("objectives", spec.objectives), ("constraints", spec.constraints),
                        ("select", [spec.select] if spec.select else [])):
        for i, item in enumerate(items):
            if item.metric not in METRICS:
                raise UserError(f"{kind}.{i}.metric: unknown metric {item.metric!r}; known: "
                                f"{', '.join(METRICS)}")
            if item.metric in RELEARN_METRICS and base.eval.relearn is None:
                raise UserError(f"{kind}.{i}.metric: {item.metric} needs the relearning attack "
                                f"(set base.eval.relearn: true, or its settings)")
            if METRICS[item.metric] and not base.retrain:
                raise UserError(f"{kind}.{i}.metric: {item.metric} needs Retrain but base.retrain is "
                                f"false (set base.retrain: true or use a blind metric such as "
                                f"forget_val_gap)")
    for i, c in enumerate(spec.constraints):
        if c.max is None and c.min is None:
            raise UserError(f"constraints.{i}: give max and/or min")
        if c.max is not None and c.min is not None and c.min > c.max:
            raise UserError(f"constraints.{i}.min: {c.min:g} is above max {c.max:g}: no trial could "
                            "be feasible")
    if len({o.metric for o in spec.objectives}) != len(spec.objectives):
        raise UserError("objectives: a metric appears twice")
    if spec.sampler.name == "grid":
        for name, ms in spec.methods.items():
            for pname, dim in ms.space.items():
                if dim.type in ("float", "log-float") and dim.step is None:
                    raise UserError(f"methods.{name}.space.{pname}.step: the grid sampler needs a step "
                                    f"(or categorical choices) for every float")
    if spec.storage is not None:
        from sqlalchemy.engine import make_url

        try:  # parses the URL and loads its dialect; connects to nothing
            make_url(spec.storage).get_dialect()
        except Exception as e:  # noqa: BLE001 - ArgumentError, NoSuchModuleError, ...
            raise UserError(f"storage: not a usable RDB URL ({str(e).splitlines()[0]})") from None
    if spec.reference is not None:
        p = REFERENCE_DIR / spec.reference.table
        if not p.is_file():
            raise UserError(f"reference.table: {spec.reference.table!r} is not in sweeps/reference/")
    _check_sampler(spec)


def check_seeds(seeds: list[int | dict[str, int]], path: str) -> None:
    from unlearning.trial import Seeds

    for i, s in enumerate(seeds):
        if isinstance(s, dict):
            bad = set(s) - set(Seeds.model_fields)
            if bad:
                raise UserError(f"{path}.{i}.{sorted(bad)[0]}: unknown key")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in s.values()):
                raise UserError(f"{path}.{i}: seeds are integers")


def _check_dim(path: str, d: Dim) -> None:
    need = {"float": ("low", "high"), "log-float": ("low", "high"), "int": ("low", "high"),
            "log-int": ("low", "high"), "categorical": ("choices",), "fixed": ()}[d.type]
    allowed = set(need) | ({"step"} if d.type in ("float", "int", "log-int") else set()) | \
        ({"value"} if d.type == "fixed" else set())
    for key in ("low", "high", "step", "choices"):
        if key in need and getattr(d, key) is None:
            raise UserError(f"{path}.{key}: required for type {d.type}")
        if key not in allowed and getattr(d, key) is not None:
            raise UserError(f"{path}.{key}: not used by type {d.type}")
    if d.type == "fixed" and "value" not in d.model_fields_set:
        raise UserError(f"{path}.value: required for type fixed")
    if d.type == "categorical":
        if not d.choices:
            raise UserError(f"{path}.choices: needs at least one choice")
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in d.choices):
            raise UserError(f"{path}.choices: choices must be scalars (null, bool, int, float, str)")
    if d.low is None:
        return
    if d.type in ("int", "log-int"):
        for key in ("low", "high", "step"):
            v = getattr(d, key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise UserError(f"{path}.{key}: an int parameter needs integer bounds, got {v!r}")
    for key in ("low", "high"):
        if not math.isfinite(getattr(d, key)):
            raise UserError(f"{path}.{key}: must be finite")
    if d.low > d.high:
        raise UserError(f"{path}.low: {d.low!r} is greater than high {d.high!r}")
    if d.type.startswith("log-") and d.low <= 0:
        raise UserError(f"{path}.low: a log scale needs low > 0, got {d.low!r}")
    if d.step is not None and d.step <= 0:
        raise UserError(f"{path}.step: must be > 0")


def _dim_probe_values(d: Dim) -> list[tuple[str, Any]]:
    if d.type == "fixed":
        return [(".value", d.value)]
    if d.type == "categorical":
        return [(f".choices.{i}", c) for i, c in enumerate(d.choices)]
    return [(".low", d.low), (".high", d.high)]


def _check_sampler(spec: SweepSpec) -> None:
    from sweeps.samplers import make_sampler

    try:
        make_sampler(spec)
    except TypeError as e:
        raise UserError(f"sampler.options: {e}") from None
    except ValueError as e:
        raise UserError(f"sampler: {e}") from None


__all__ = ["AuditSpec", "Constraint", "Dim", "METRICS", "Objective", "SweepSpec", "blind_metrics",
           "load_spec", "preset_names", "read_spec_source", "set_path_any"]
