"""The built-in methods, one short file each. Each registers itself with `register` (which is
`unlearning.register_method`, the door a plug-in's methods use too) into `unlearning.registry.METHODS`."""
from __future__ import annotations

import importlib
import pkgutil

from unlearning.methods.base import Context, Method, MethodConfig, Step, ce, masked_mean
from unlearning.registry import METHODS, register_method

register = register_method


def _import_builtins() -> None:
    """Import every method file of this folder (each registers itself). Called by the registry on
    its first use."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")


def get_method(name: str) -> type[Method]:
    """The method registered as `name`; UserError (one line listing the known ones) if none."""
    return METHODS.lookup(name)


def all_methods() -> dict[str, type[Method]]:
    """Every registered method (built-ins and loaded plug-ins), by name."""
    return {name: METHODS[name] for name in sorted(METHODS)}


__all__ = ["METHODS", "Context", "Method", "MethodConfig", "Step", "all_methods", "ce",
           "get_method", "masked_mean", "register"]
