"""l1-sparse: FT plus alpha_t * ||theta||_1, alpha_t decaying linearly to 0 over the epochs
(Jia et al., NeurIPS 2023, "Model sparsity can simplify machine unlearning")."""
from pydantic import Field

from unlearning.methods import Method, MethodConfig, register
from unlearning.methods.base import ce


class L1SparseConfig(MethodConfig):
    alpha: float = Field(5e-4, ge=0)  # initial l1 weight (the reference searches 1e-4..1e-3)


@register
class L1Sparse(Method):
    name = "l1_sparse"
    Config = L1SparseConfig
    mode = "retain"

    def start_epoch(self, epoch, model):
        self.alpha_t = self.cfg.alpha * (1 - epoch / self.cfg.epochs)

    def step(self, model, batch):
        l1 = sum(p.abs().sum() for p in model.parameters())
        return ce(model(batch.x), batch.y).mean() + self.alpha_t * l1
