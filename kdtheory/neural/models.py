r"""Teacher and student networks; every model maps a batch of inputs to K logits.

Registry ``MODELS`` (name → builder), all taking ``(input_shape, num_classes, **options)``:

============  ======================================================================  =========
name          architecture                                                            inputs
============  ======================================================================  =========
``logreg``    logistic (softmax) regression: flatten → linear                         any
``mlp``       one hidden layer: flatten → linear(``hidden``) → ReLU → linear           any
``mlp-large`` two hidden layers of ``hidden`` units (default 128), the synthetic teacher any
``cnn-small`` conv3×3(8) → pool → conv3×3(16) → pool → linear(32) → linear           images
``cnn``       teacher CNN: two conv blocks (32, 64 channels, batch norm) → linear(256) images
``resnet``    small ResNet for CIFAR-10: stem + 3 stages of basic blocks (32/64/128)   images
============  ======================================================================  =========

The students (``logreg``, ``mlp``, ``cnn-small``) have no batch norm and no buffers, so the
hypergradient can call them with substituted parameters (``torch.func.functional_call``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["MODELS", "STUDENTS", "TEACHERS", "build_model", "count_parameters"]


def _flat_dim(input_shape: tuple[int, ...]) -> int:
    return math.prod(input_shape)


def _logreg(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(_flat_dim(input_shape), num_classes))


def _mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 100) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(_flat_dim(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _mlp_large(input_shape: tuple[int, ...], num_classes: int, hidden: int = 128) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(_flat_dim(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _require_image(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model {name!r} needs image inputs (C, H, W); got input shape {input_shape}"
        )
    return input_shape  # type: ignore[return-value]


class _ConvNet(nn.Module):
    """Two conv blocks (conv3×3 → [BN] → ReLU → maxpool2) then a hidden linear layer."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: int,
        hidden: int,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        c, h, w = _require_image("cnn", input_shape)

        def block(cin: int, cout: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            return [*layers, nn.ReLU(), nn.MaxPool2d(2)]

        self.features = nn.Sequential(*block(c, width), *block(width, 2 * width))
        flat = 2 * width * (h // 4) * (w // 4)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _cnn(
    input_shape: tuple[int, ...], num_classes: int, width: int = 32, hidden: int = 256
) -> nn.Module:
    return _ConvNet(input_shape, num_classes, width, hidden, batch_norm=True)


def _cnn_small(
    input_shape: tuple[int, ...], num_classes: int, width: int = 8, hidden: int = 32
) -> nn.Module:
    return _ConvNet(input_shape, num_classes, width, hidden, batch_norm=False)


class _BasicBlock(nn.Module):
    """y = ReLU(BN(conv(ReLU(BN(conv x)))) + shortcut x), the ResNet basic block."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _ResNet(nn.Module):
    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, width: int = 32, blocks: int = 1
    ) -> None:
        super().__init__()
        c, _, _ = _require_image("resnet", input_shape)
        self.stem = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers: list[nn.Module] = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            for j in range(blocks):
                layers.append(_BasicBlock(cin, cout, stride=2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "logreg": _logreg,
    "mlp": _mlp,
    "mlp-large": _mlp_large,
    "cnn-small": _cnn_small,
    "cnn": _cnn,
    "resnet": _ResNet,
}
TEACHERS = ("cnn", "resnet", "mlp-large", "mlp")
STUDENTS = ("logreg", "mlp", "cnn-small")


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, *, seed: int | None = None, **options
) -> nn.Module:
    """Build model ``name`` from ``MODELS`` for inputs of ``input_shape`` and K = ``num_classes``.

    Parameters
    ----------
    name : str
        A key of ``MODELS``.
    input_shape : tuple of int
        Shape of one input, e.g. ``(1, 28, 28)`` or ``(3,)``.
    num_classes : int
        K, the number of logits.
    seed : int or None
        When given, the weights are initialised under ``torch.manual_seed(seed)`` inside a forked
        RNG state, so the global RNG is left untouched and the same seed gives the same weights.
    **options
        Architecture options (``hidden``, ``width``, ``blocks``).

    Returns
    -------
    torch.nn.Module
        float32 model on the CPU.
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {name!r}")
    if seed is None:
        return MODELS[name](tuple(input_shape), num_classes, **options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](tuple(input_shape), num_classes, **options)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
