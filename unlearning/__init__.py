"""The science of unlearn-sweep: data, splits, models, the training loop, methods, metrics, trials.

Imports only torch, numpy, scikit-learn and pydantic: never optuna, ray or wandb.

The public API for extending it (docs/extending.md), the same door the built-ins use:

- `register_method(cls)`: a `Method` subclass with its `name`, `Config` (a `MethodConfig`) and `step`
- `register_model(name, factory)`: `factory(in_shape, num_classes) -> nn.Module`
- `register_dataset(name, loader)`: `loader(cfg: DataConfig) -> Dataset`; `dataset_from_arrays`
  builds a checked `Dataset` from numpy arrays; `load_dataset(cfg)` and `build_model(name, in_shape,
  num_classes)` give what a trial gets
- `load_plugins(specs)`: import files or modules that register things; `load_plugin_source` does
  the same from their source bytes (a worker without the files); `Plugin` is the record of one
- `METHODS`, `MODELS`, `DATA_SETS`: the registries (read-only views by name)
- `TrialConfig`, `run_trial`, `TrialResult`: run one trial (`checkpoints:` starts it from released
  models, `Checkpoints`)
- `load_unlearned(path)`: an unlearned model a sweep kept (runs/<name>/models/<fingerprint>.pt) as
  an `nn.Module`

Names are imported on first use, so `import unlearning` stays light.
"""
__version__ = "0.1.0"

_EXPORTS = {
    "register_method": "unlearning.registry", "register_model": "unlearning.registry",
    "register_dataset": "unlearning.registry", "METHODS": "unlearning.registry",
    "MODELS": "unlearning.registry", "DATA_SETS": "unlearning.registry",
    "load_plugins": "unlearning.plugins", "load_plugin_source": "unlearning.plugins",
    "Plugin": "unlearning.plugins",
    "Method": "unlearning.methods.base", "MethodConfig": "unlearning.methods.base",
    "Step": "unlearning.methods.base", "Context": "unlearning.methods.base",
    "DataConfig": "unlearning.data", "Dataset": "unlearning.data", "load_dataset": "unlearning.data",
    "build_model": "unlearning.models",
    "dataset_from_arrays": "unlearning.datafiles",
    "Checkpoints": "unlearning.checkpoints",
    "TrialConfig": "unlearning.trial", "TrialResult": "unlearning.trial", "run_trial": "unlearning.trial",
    "load_unlearned": "unlearning.kept",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'unlearning' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
