"""The built-in models, and `build_model`: an image classifier by name.

Contract for every registered factory (`unlearning.register_model`, the door built-ins and plug-ins
share): ``factory(in_shape, num_classes) -> nn.Module`` where ``in_shape = (channels, height,
width)``; the module maps a float tensor ``(N, C, H, W)`` to logits ``(N, num_classes)``. Models are
plain ``nn.Module``s; they do not normalise their inputs (the data layer does), so a trial can swap
models without touching data handling.

Supported input sizes: from 8x8 grayscale (scikit-learn digits, ``(1, 8, 8)``) up to ``(3, 64, 64)``
and beyond; any number of input channels.
"""
from __future__ import annotations

import operator

import torch
from torch import nn

from unlearning.errors import UserError
from unlearning.registry import MODELS, register_model

InShape = tuple[int, int, int]


def build_model(name: str, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build the model registered as ``name`` for inputs of ``in_shape`` (C, H, W).

    Raises :class:`UserError` (one-line message) for an unknown name, an ``in_shape`` that is not
    three positive ints, ``num_classes < 1``, or a factory that returns something other than an
    ``nn.Module``.
    """
    factory = MODELS.lookup(name)
    shape = _positive_ints(in_shape)
    if shape is None or len(shape) != 3:
        raise UserError(f"in_shape must be three positive ints (C, H, W), got {in_shape!r}")
    classes = _positive_ints([num_classes])
    if classes is None:
        raise UserError(f"num_classes must be a positive int, got {num_classes!r}")
    model = factory(shape, classes[0])
    if not isinstance(model, nn.Module):
        raise UserError(f"model {name!r} ({MODELS.origin(name)}): its factory returned a "
                        f"{type(model).__name__}, not a torch.nn.Module")
    return model


def _positive_ints(values) -> tuple[int, ...] | None:
    """``values`` as a tuple of Python ints if each is a positive integer, else None."""
    try:
        # operator.index accepts numpy integers (shapes often come from arrays) but rejects floats.
        out = tuple(operator.index(v) for v in values)
    except TypeError:
        return None
    return out if all(v > 0 for v in out) else None


def count_params(model: nn.Module) -> int:
    """Total number of parameter elements (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    # 3x3 "same" conv; no bias because the BatchNorm right after has its own shift.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


# --------------------------------------------------------------------------------------------- mlp


@register_model("mlp")
def mlp(in_shape: InShape, num_classes: int) -> nn.Module:
    """Flatten -> Linear(256) -> ReLU -> Linear(256) -> ReLU -> Linear(num_classes)."""
    c, h, w = in_shape
    hidden = 256
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


# ---------------------------------------------------------------------------------------- small_cnn


@register_model("small_cnn")
def small_cnn(in_shape: InShape, num_classes: int) -> nn.Module:
    """conv32-BN-ReLU, conv64-BN-ReLU, maxpool2, conv128-BN-ReLU, global avg pool, linear.

    About 94k parameters, so it trains in seconds on CPU on digits. Needs H, W >= 2 (one max-pool);
    the global pool makes it independent of the input size beyond that.
    """
    c = in_shape[0]
    return nn.Sequential(
        *_conv_bn_relu(c, 32),
        *_conv_bn_relu(32, 64),
        nn.MaxPool2d(2),
        *_conv_bn_relu(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


# ----------------------------------------------------------------------------------------- resnet18


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; a 1x1 conv-BN shortcut when shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem: 3x3 stride-1 conv and no max-pool, so small images keep
    enough resolution. Stages of two BasicBlocks at widths 64/128/256/512 (strides 1/2/2/2), then a
    global average pool and a linear layer. Any H, W >= 1 works; 8x8 ends at 1x1 in the last stage.
    """

    def __init__(self, in_channels: int, num_classes: int, stem: nn.Module | None = None) -> None:
        super().__init__()
        self.stem = stem if stem is not None else nn.Sequential(*_conv_bn_relu(in_channels, 64))
        stages: list[nn.Module] = []
        c_in = 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


@register_model("resnet18")
def resnet18(in_shape: InShape, num_classes: int) -> nn.Module:
    """CIFAR-style ResNet-18 (about 11.17M parameters at 3 channels, 10 classes)."""
    return ResNet18(in_shape[0], num_classes)


class ResNet18ImageNet(ResNet18):
    """torchvision's stock ResNet-18 layout (``torchvision.models.resnet18(num_classes=k)``, what
    DeepUnlearn trains on 32x32 inputs): the ImageNet stem, a 7x7 stride-2 conv, BN, ReLU and a 3x3
    stride-2 max-pool, so a 32x32 image enters the first stage at 8x8 and leaves the last at 1x1.
    The stages, pool and head are the CIFAR model's; the initialisation is torchvision's (Kaiming
    normal, fan-out, for convolutions; BN weight 1 and bias 0; PyTorch's default for the linear head).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
                             nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        super().__init__(in_channels, num_classes, stem)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


@register_model("resnet18_imagenet")
def resnet18_imagenet(in_shape: InShape, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 (11,181,642 parameters at 3 channels, 10 classes). Needs H, W >= 2
    (the stem divides the side by four; adaptive pooling takes any size after that)."""
    return ResNet18ImageNet(in_shape[0], num_classes)


# -------------------------------------------------------------------------------------------- lenet


@register_model("lenet")
def lenet(in_shape: InShape, num_classes: int) -> nn.Module:
    """LeNet-style: LeNet-5's two 5x5 convolutions (6 and 16 channels, each BN - ReLU - maxpool2)
    and a wider fully connected head, 512 - 256 - num_classes. The convolutions are padded (2), so
    any side >= 4 works; 28x28 Fashion-MNIST ends at 16x7x7 (538k parameters at 1 channel). The
    wide head lets this CPU model memorise its training set, so forgetting is measurable (LeNet-5's
    own 120 - 84 head barely separates train from test on Fashion-MNIST); BatchNorm keeps it stable
    at the protocol's learning rate of 0.1."""
    c, h, w = in_shape
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2, bias=False), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * (h // 4) * (w // 4), 512), nn.ReLU(inplace=True),
        nn.Linear(512, 256), nn.ReLU(inplace=True),
        nn.Linear(256, num_classes),
    )


# ----------------------------------------------------------------------------------------- vgg16_bn

# Numbers are conv widths, "M" a 2x2 max-pool.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


@register_model("vgg16_bn")
def vgg16_bn(in_shape: InShape, num_classes: int) -> nn.Module:
    """VGG-16 with BatchNorm, global average pool, and a single linear layer 512 -> num_classes.

    A max-pool that would shrink the smaller spatial side below 1 is left out (decided here from
    ``in_shape``), so 8x8 inputs keep three pools and 32x32 inputs keep all five.
    """
    c, h, w = in_shape
    size = min(h, w)
    layers: list[nn.Module] = []
    for item in _VGG16_CFG:
        if item == "M":
            if size // 2 >= 1:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        else:
            layers += _conv_bn_relu(c, int(item))
            c = int(item)
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)
    )
