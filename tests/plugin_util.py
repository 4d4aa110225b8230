"""Plug-ins written the way a researcher would, outside the package (into a test's tmp_path), and the
data they use. The `registries` fixture (conftest.py) gives each test the registries as it found them."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

METHOD_SRC = textwrap.dedent('''
    """Weighted NegGrad: beta * CE(retain) - (1 - beta) * CE(forget), on paired batches."""
    from pydantic import Field

    from unlearning import Method, MethodConfig, register_method
    from unlearning.methods import ce, masked_mean


    class WeightedNegGradConfig(MethodConfig):
        beta: float = Field(0.9, ge=0, le=1)


    @register_method
    class WeightedNegGrad(Method):
        name = "{name}"
        Config = WeightedNegGradConfig
        mode = "paired"

        def step(self, model, batch):
            loss = ce(model(batch.x), batch.y)
            b = self.cfg.beta
            return b * masked_mean(loss, ~batch.forget) - (1 - b) * masked_mean(loss, batch.forget)
''')

MODEL_SRC = textwrap.dedent('''
    """A two-layer perceptron."""
    from torch import nn

    from unlearning import register_model


    @register_model("{name}")
    def tiny_mlp(in_shape, num_classes):
        c, h, w = in_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64), nn.ReLU(), nn.Linear(64, num_classes))
''')

RAISES_SRC = textwrap.dedent('''
    """A method whose step fails."""
    from unlearning import Method, MethodConfig, register_method


    @register_method
    class Broken(Method):
        name = "{name}"
        Config = MethodConfig

        def step(self, model, batch):
            raise ArithmeticError("the plug-in's step gave up")
''')


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def digits_npz(path: Path, *, with_val: bool = False) -> dict[str, np.ndarray]:
    """scikit-learn's digits as uint8 (N, 8, 8) images in an .npz (a stratified-free 80/20 cut)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    cut = int(0.8 * len(y))
    arrays = {"x_train": x[:cut], "y_train": y[:cut], "x_test": x[cut:], "y_test": y[cut:]}
    if with_val:
        arrays = {"x_train": x[:1200], "y_train": y[:1200], "x_val": x[1200:cut], "y_val": y[1200:cut],
                  "x_test": x[cut:], "y_test": y[cut:]}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays
