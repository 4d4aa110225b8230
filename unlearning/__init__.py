"""The science of unlearn-sweep: data, splits, models, the training loop, methods, metrics, trials.

Imports only torch, numpy, scikit-learn and pydantic: never optuna, ray or wandb.
"""
__version__ = "0.1.0"
