"""Retrain: train from scratch on the retain set with the original model's recipe: the gold standard
every gap is measured against. Served from the oracle cache (unlearning/oracle.py), so a Retrain trial
reports the cached model and the wall-clock time its training took."""
from unlearning.config import StrictModel
from unlearning.methods import Method, register


class RetrainConfig(StrictModel):
    """No parameters of its own: Retrain uses the trial's `train` recipe."""


@register
class Retrain(Method):
    name = "retrain"
    Config = RetrainConfig
    from_oracle = True
