"""Tests for unlearning.models: registry, shapes, parameter counts, a few training steps (CPU)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from unlearning.errors import UserError
from unlearning.models import MODELS, build_model, count_params
from unlearning.registry import register_model

NAMES = ["lenet", "mlp", "resnet18", "resnet18_imagenet", "small_cnn", "vgg16_bn"]
BIG = {"resnet18", "vgg16_bn"}


def test_registry_lists_exactly_the_six_models():
    assert sorted(MODELS) == NAMES


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "in_shape, num_classes", [((1, 8, 8), 10), ((3, 32, 32), 10), ((3, 32, 32), 100)]
)
def test_logits_shape(name, in_shape, num_classes):
    torch.manual_seed(0)
    model = build_model(name, in_shape, num_classes)
    assert isinstance(model, nn.Module)
    # The two big nets at 32x32 are slow-ish on CPU; a batch of 2 still exercises BatchNorm.
    batch = 2 if name in BIG and in_shape[1] >= 32 else 4
    out = model(torch.randn(batch, *in_shape))
    assert out.shape == (batch, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_single_example(name):
    # Evaluation often scores one example at a time; BN must use running stats, not fail.
    model = build_model(name, (1, 8, 8), 10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize("name", ["lenet", "small_cnn", "resnet18", "resnet18_imagenet", "vgg16_bn"])
def test_conv_models_handle_64x64(name):
    model = build_model(name, (3, 64, 64), 200).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 200)


def test_resnet18_param_count():
    n = count_params(build_model("resnet18", (3, 32, 32), 10))
    assert abs(n - 11.17e6) / 11.17e6 < 0.01


def test_small_cnn_is_small():
    assert count_params(build_model("small_cnn", (1, 8, 8), 10)) < 150_000
    assert count_params(build_model("small_cnn", (3, 64, 64), 200)) < 150_000


def test_count_params_counts_every_element():
    assert count_params(nn.Linear(3, 2)) == 3 * 2 + 2


@pytest.mark.parametrize("name", ["lenet", "small_cnn", "resnet18", "resnet18_imagenet", "vgg16_bn"])
def test_conv_models_use_batchnorm(name):
    model = build_model(name, (3, 32, 32), 10)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_vgg16_bn_pools_depend_on_input_size():
    def pools(in_shape):
        model = build_model("vgg16_bn", in_shape, 10)
        return sum(isinstance(m, nn.MaxPool2d) for m in model.modules())

    assert pools((1, 8, 8)) == 3  # 8 -> 4 -> 2 -> 1, the last two pools are skipped
    assert pools((3, 32, 32)) == 5
    # 13 conv layers regardless of size.
    model = build_model("vgg16_bn", (1, 8, 8), 10)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 13


def test_unknown_name_raises_one_line_user_error():
    with pytest.raises(UserError) as info:
        build_model("x", (1, 8, 8), 10)
    msg = str(info.value)
    assert msg == "unknown model 'x'; known: lenet, mlp, resnet18, resnet18_imagenet, small_cnn, vgg16_bn"
    assert "\n" not in msg


@pytest.mark.parametrize(
    "in_shape, num_classes", [((8, 8), 10), ((1, 0, 8), 10), ((1, 8.0, 8), 10), ((1, 8, 8), 0)]
)
def test_bad_shape_or_classes_raise_user_error(in_shape, num_classes):
    with pytest.raises(UserError):
        build_model("mlp", in_shape, num_classes)


def test_numpy_ints_accepted():
    model = build_model("mlp", tuple(np.array([1, 8, 8])), np.int64(10))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_duplicate_registration_rejected_naming_both_sources():
    with pytest.raises(UserError) as e:
        register_model("mlp")(lambda in_shape, num_classes: nn.Identity())
    assert "model 'mlp' is registered twice" in str(e.value) and "unlearning/models.py" in str(e.value)
    assert __file__ in str(e.value) or __name__ in str(e.value)
    assert sorted(MODELS) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_trains_a_few_steps(name):
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    if name in ("mlp", "small_cnn"):
        # The small models should start fitting a fixed batch within a few steps.
        assert losses[-1] < losses[0]
