"""FT: fine-tune on the retain set with cross-entropy (catastrophic forgetting of D_f)."""
from unlearning.methods import Method, MethodConfig, register
from unlearning.methods.base import ce


@register
class FT(Method):
    name = "ft"
    Config = MethodConfig
    mode = "retain"

    def step(self, model, batch):
        return ce(model(batch.x), batch.y).mean()
