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
    # not a MethodConfig: a from_oracle method never runs, so it has none of the loop's fields
    # (register_method allows a plain StrictModel for it)
    Config = RetrainConfig  # type: ignore[assignment]
    from_oracle = True
