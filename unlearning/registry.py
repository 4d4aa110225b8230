"""The registries of methods, models and data sets: one door, used by the built-ins and by plug-ins.

    from unlearning import (DataConfig, Dataset, Method, MethodConfig, register_dataset,
                            register_method, register_model)

    @register_method                     # a Method subclass: its `name`, `Config` and `step`
    class Mine(Method):
        name = "mine"
        ...

    @register_model("my_net")            # (in_shape, num_classes) -> nn.Module; in_shape = (C, H, W)
    def my_net(in_shape, num_classes): ...

    @register_dataset("my_data")         # (DataConfig) -> Dataset (`dataset_from_arrays` builds one)
    def my_data(cfg): ...

A name belongs to the module that registered it. A second module registering the same name (a plug-in
shadowing a built-in, two plug-ins) is a UserError naming both; the same module registering it again
(a plug-in loaded anew after an edit) replaces it. Names are identifiers (letters, digits, `_`, `-`),
since they become keys of specs and columns of records. `METHODS`, `MODELS` and `DATA_SETS` are
read-only views; their built-ins are imported on first use.

This module imports nothing heavy at import time (`import unlearning` stays cheap for the CLI).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from unlearning.errors import UserError

T = TypeVar("T")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_LOCK = threading.RLock()  # registrations and plug-in loads: one at a time


@dataclass(frozen=True)
class Entry:
    obj: Any
    module: str  # the module that registered it (a plug-in's module name while one loads)
    origin: str  # where it came from, for messages: the module's file, else its name
    sha256: str | None  # its source's hash; None for the package's own (unlearning.*)


def _origin(module: str) -> str:
    return getattr(sys.modules.get(module), "__file__", None) or module


def _source_sha256(module: str) -> str | None:
    """The hash of a registering module's file: code outside this package that determines results
    (a model's architecture), so caches keyed on a name can tell its versions apart."""
    if module == "unlearning" or module.startswith("unlearning."):
        return None  # ours: covered by the code versions (oracle.code_version, the fingerprint's)
    try:
        return hashlib.sha256(Path(_origin(module)).read_bytes()).hexdigest()
    except OSError:
        return hashlib.sha256(module.encode()).hexdigest()  # no file (an interactive session)


def _module_of(obj: Any) -> str:
    while isinstance(obj, functools.partial):
        obj = obj.func
    return getattr(obj, "__module__", None) or "<unknown>"


@dataclass
class _Staging:
    """A plug-in being loaded: what it registers waits here and enters the registries only when its
    import has succeeded (a plug-in that fails half-way leaves nothing behind)."""

    module: str
    origin: str
    sha256: str
    pending: dict[tuple[str, str], tuple["Registry", Entry]] = field(default_factory=dict)


_STAGING: _Staging | None = None


class Registry(Mapping[str, T]):
    """Name -> object for one kind ("method", "model", "data set"); read-only to everyone but `add`."""

    def __init__(self, kind: str, builtins: Callable[[], None]):
        self.kind = kind
        self._builtins = builtins
        self._entries: dict[str, Entry] = {}
        self._loaded = False

    def _load_builtins(self) -> None:
        # flag first: the built-in modules register themselves through `add`, which calls this again
        if not self._loaded:
            self._loaded = True
            self._builtins()

    # -- reading ----------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> T:
        self._load_builtins()
        return self._entries[name].obj

    def __iter__(self) -> Iterator[str]:
        self._load_builtins()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._entries)

    def lookup(self, name: str) -> T:
        """The object registered as `name`; UserError (one line listing the known names) if none."""
        self._load_builtins()
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}")
        return self._entries[name].obj

    def origin(self, name: str) -> str:
        """Where `name` was registered: a file path (or a module name)."""
        self._load_builtins()
        return self._entries[name].origin

    def module(self, name: str) -> str:
        """The module that registered `name` (for a plug-in, its module name in sys.modules)."""
        self._load_builtins()
        return self._entries[name].module

    def source_sha256(self, name: str) -> str | None:
        """The SHA-256 of the source that registered `name` (a plug-in's `Plugin.sha256`, or the
        registering module's file); None for the built-ins of this package."""
        self._load_builtins()
        return self._entries[name].sha256

    # -- writing ----------------------------------------------------------------------------------
    def add(self, name: str, obj: T, module: str) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise UserError(f"{self.kind} name {name!r} is not an identifier (letters, digits, _ and -, "
                            "not starting with a digit or -)")
        with _LOCK:
            if not module.startswith("unlearning."):  # a plug-in shadowing a built-in is caught
                self._load_builtins()  # whatever the import order (a built-in importing another, not)
            stage = _STAGING
            entry = Entry(obj, module, _origin(module), _source_sha256(module)) if stage is None else \
                Entry(obj, stage.module, stage.origin, stage.sha256)
            staged = stage.pending.get((self.kind, name)) if stage is not None else None
            clash = staged[1] if staged is not None else self._entries.get(name)
            # the same source loaded from a new place after the old one is gone (a lab moved while the
            # process lives) is the same code: it replaces the old entry; two copies present are a clash
            moved = staged is None and clash is not None and clash.sha256 is not None \
                and clash.sha256 == entry.sha256 and not Path(clash.origin).exists()
            if clash is not None and clash.module != entry.module and not moved:
                raise UserError(f"{self.kind} {name!r} is registered twice: by {clash.origin} and by "
                                f"{entry.origin}")
            if stage is None:
                self._entries[name] = entry
            else:
                stage.pending[(self.kind, name)] = (self, entry)

    def _remove_module(self, module: str) -> None:
        for name in [n for n, e in self._entries.items() if e.module == module]:
            del self._entries[name]

    def __repr__(self) -> str:
        return f"<{self.kind} registry: {', '.join(self)}>"


@contextlib.contextmanager
def staged(module: str, origin: str, sha256: str) -> Iterator[dict[str, list[str]]]:
    """While the body runs (a plug-in's import), what is registered is attributed to `module` (shown
    as `origin`, its source hashing to `sha256`) and held back; when the body returns it replaces
    everything `module` registered before, and the yielded dict is filled with the names by kind
    ({"methods": [...], ...}). When the body raises, nothing it registered remains."""
    global _STAGING
    with _LOCK:
        for reg in REGISTRIES.values():
            reg._load_builtins()  # never attribute a built-in to the plug-in importing it
        stage, outer = _Staging(module, origin, sha256), _STAGING
        names: dict[str, list[str]] = {kind: [] for kind in REGISTRIES}
        _STAGING = stage
        try:
            yield names
        finally:
            _STAGING = outer
        for reg in REGISTRIES.values():
            reg._remove_module(module)
        by_kind = {reg.kind: key for key, reg in REGISTRIES.items()}
        for (kind, name), (reg, entry) in stage.pending.items():
            reg._entries[name] = entry
            names[by_kind[kind]].append(name)


def _builtin_methods() -> None:
    importlib.import_module("unlearning.methods")._import_builtins()


def _import(*modules: str) -> Callable[[], None]:
    def load() -> None:
        for m in modules:
            importlib.import_module(m)
    return load


METHODS: Registry = Registry("method", _builtin_methods)
MODELS: Registry = Registry("model", _import("unlearning.models"))
DATA_SETS: Registry = Registry("data set", _import("unlearning.data", "unlearning.datafiles"))
REGISTRIES = {"methods": METHODS, "models": MODELS, "data_sets": DATA_SETS}


# -- the door ------------------------------------------------------------------------------------

def register_method(cls: type[T]) -> type[T]:
    """Class decorator: make a `Method` subclass available by its `name`. Its `Config` (a
    `MethodConfig` subclass) is what a trial's `params` are validated against and what a sweep
    searches. Returns the class unchanged."""
    from unlearning.config import StrictModel
    from unlearning.methods.base import Method, MethodConfig
    from unlearning.splits import BATCH_MODES

    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UserError(f"register_method: {cls!r} is not a subclass of unlearning.Method")
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(cls.__dict__.get("name"), str):  # an inherited name would shadow the parent
        raise UserError(f"method class {where} sets no `name` of its own (name = \"...\")")
    # the loop needs MethodConfig's fields; a method served from the oracle cache (Retrain) has none
    base = StrictModel if cls.from_oracle else MethodConfig
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, base)):
        raise UserError(f"method {cls.name!r} ({where}): Config must subclass unlearning."
                        f"{base.__name__}")
    if cls.mode not in BATCH_MODES:
        raise UserError(f"method {cls.name!r} ({where}): mode {cls.mode!r} is not one of "
                        f"{', '.join(BATCH_MODES)}")
    METHODS.add(cls.name, cls, cls.__module__)
    return cls


def _register_callable(registry: Registry, what: str, name: str, f: Callable | None):
    """register_model / register_dataset: a decorator when `f` is None, else registers `f`."""
    def add(f: Callable) -> Callable:
        if not callable(f):
            raise UserError(f"{registry.kind} {name!r}: the {what} {f!r} is not callable")
        registry.add(name, f, _module_of(f))
        return f

    return add if f is None else add(f)


def register_model(name: str, factory: Callable | None = None):
    """Register a model factory `factory(in_shape, num_classes) -> nn.Module` (in_shape = (C, H, W);
    the module maps a float batch (N, C, H, W) to logits (N, num_classes)). As a decorator:
    `@register_model("name")`; or called: `register_model("name", factory)`. Returns the factory."""
    return _register_callable(MODELS, "factory", name, factory)


def register_dataset(name: str, loader: Callable | None = None):
    """Register a data set loader `loader(cfg: DataConfig) -> Dataset` (tensors as the built-ins
    give them; `unlearning.dataset_from_arrays` builds one from numpy arrays and checks them). A
    decorator, `@register_dataset("name")`, or called: `register_dataset("name", loader)`. Then
    `data: {name: ...}` selects it; the loader reads what it needs from `cfg` (e.g. `cfg.root`)."""
    return _register_callable(DATA_SETS, "loader", name, loader)


def names() -> dict[str, list[str]]:
    """Every registered name by kind: {"methods": [...], "models": [...], "data_sets": [...]}."""
    return {kind: sorted(reg) for kind, reg in REGISTRIES.items()}
