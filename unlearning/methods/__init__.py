"""The method registry. Each method lives in its own short file and registers itself by name."""
from __future__ import annotations

import importlib
import pkgutil

from unlearning.errors import UserError
from unlearning.methods.base import Context, Method, MethodConfig, Step, ce, masked_mean

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a Method available by its `name`."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise RuntimeError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


_loaded = False


def _load_all() -> None:
    """Import every method file once (each registers itself); later registrations (plug-ins,
    tests) add to the same registry."""
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in pkgutil.iter_modules(__path__):
            if mod.name != "base":
                importlib.import_module(f"{__name__}.{mod.name}")


def get_method(name: str) -> type[Method]:
    _load_all()
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def all_methods() -> dict[str, type[Method]]:
    _load_all()
    return dict(sorted(METHODS.items()))


__all__ = ["METHODS", "Context", "Method", "MethodConfig", "Step", "all_methods", "ce",
           "get_method", "masked_mean", "register"]
