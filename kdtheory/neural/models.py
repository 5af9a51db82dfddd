r"""Teacher and student networks; every model maps a batch of inputs to K logits.

Registry ``MODELS`` (name → builder), all taking ``(input_shape, num_classes, **options)``:

============  ======================================================================  =========
name          architecture                                                            inputs
============  ======================================================================  =========
``logreg``    logistic (softmax) regression: flatten → linear                         any
``mlp``       flatten → [linear(h) → ReLU] for each h in ``hidden`` (an int or a       any
              sequence of widths, default 100) → linear
``mlp-large`` two hidden layers of ``hidden`` units (default 128), the synthetic teacher any
``cnn-small`` conv3×3(8) → pool → conv3×3(16) → pool → linear(32) → linear           images
``cnn``       teacher CNN: two conv blocks (32, 64 channels, batch norm) → linear(256) images
``resnet``    small ResNet for CIFAR-10: stem + 3 stages of basic blocks (32/64/128)   images
``resnet4``   four-stage ResNet: ``blocks`` per stage (0 skips the stage), ``block``   images
              ``"basic"`` or ``"bottleneck"``, first-stage ``stride``; ResNet-50 =
              bottleneck ``(3, 4, 6, 3)``, ResNet-18 = basic ``(2, 2, 2, 2)``
============  ======================================================================  =========

The students (``logreg``, ``mlp``, ``cnn-small``) have no batch norm and no buffers, so the
hypergradient can call them with substituted parameters (``torch.func.functional_call``).
:func:`quantize_linear` gives the int8 dynamically quantised copy of a model (its linear layers)
and :func:`model_size_bytes` the size of a model's serialised weights.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "MODELS",
    "STUDENTS",
    "TEACHERS",
    "build_model",
    "count_parameters",
    "model_size_bytes",
    "quantize_linear",
]


def _flat_dim(input_shape: tuple[int, ...]) -> int:
    return math.prod(input_shape)


def _logreg(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(_flat_dim(input_shape), num_classes))


def _mlp(
    input_shape: tuple[int, ...], num_classes: int, hidden: int | Sequence[int] = 100
) -> nn.Module:
    widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    if not widths or any(not isinstance(h, int) or h < 1 for h in widths):
        raise ValueError(
            f"hidden must be an integer ≥ 1 or a non-empty sequence of them; got {hidden!r}"
        )
    layers: list[nn.Module] = [nn.Flatten()]
    d = _flat_dim(input_shape)
    for h in widths:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, num_classes))


def _mlp_large(input_shape: tuple[int, ...], num_classes: int, hidden: int = 128) -> nn.Module:
    return _mlp(input_shape, num_classes, (hidden, hidden))


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


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """The residual branch's identity, or a strided 1×1 conv + BN where the shape changes."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class _BasicBlock(nn.Module):
    """y = ReLU(BN(conv(ReLU(BN(conv x)))) + shortcut x), the ResNet basic block."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

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


class _Bottleneck(nn.Module):
    """y = ReLU(BN(conv1×1(ReLU(BN(conv3×3(ReLU(BN(conv1×1 x)))))) + shortcut x): the ResNet-50
    block, ``planes`` channels inside and 4·``planes`` out; the stride is on the 3×3 conv."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = self.expansion * planes
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class _ResNet4(nn.Module):
    """Four-stage ResNet for small images (He et al.'s CIFAR variant: a 3×3 stem, no max pool).

    Stage i ∈ {0, 1, 2, 3} has ``blocks[i]`` blocks of ``width``·2^i inner channels (×4 out for
    bottleneck blocks); its first block has stride ``stride`` (i = 0) or 2 (i > 0). A stage with
    0 blocks is skipped and the next stage continues from the channels before it. Global average
    pooling and a linear layer give the K logits.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        blocks: Sequence[int] = (2, 2, 2, 2),
        block: str = "basic",
        stride: int = 1,
        width: int = 64,
    ) -> None:
        super().__init__()
        c, _, _ = _require_image("resnet4", input_shape)
        blocks = tuple(blocks)
        if len(blocks) != 4 or any(not isinstance(b, int) or b < 0 for b in blocks):
            raise ValueError(f"blocks must be 4 integers ≥ 0 (one per stage); got {blocks!r}")
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be basic or bottleneck; got {block!r}")
        for name, v in (("stride", stride), ("width", width)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer ≥ 1; got {v!r}")
        self.stem = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers: list[nn.Module] = []
        cin = width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            for j in range(n):
                s = (stride if i == 0 else 2) if j == 0 else 1
                if block == "basic":
                    layers.append(_BasicBlock(cin, planes, s))
                    cin = planes
                else:
                    layers.append(_Bottleneck(cin, planes, s))
                    cin = _Bottleneck.expansion * planes
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
    "resnet4": _ResNet4,
}
TEACHERS = ("cnn", "resnet", "resnet4", "mlp-large", "mlp")
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
        Architecture options (``hidden``, ``width``, ``blocks``, ``block``, ``stride``).

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


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's serialised ``state_dict`` (``torch.save``): its size on disk."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def quantize_linear(model: nn.Module) -> nn.Module:
    """An int8 copy of ``model`` with dynamically quantised linear layers (CPU inference only).

    ``torch.ao.quantization.quantize_dynamic``: each ``nn.Linear`` weight W is stored as int8,
    W ≈ s (W_q − z) with one scale s and zero point z per tensor; activations are quantised on
    the fly per batch. Other layers stay float32. ``model`` itself is left unchanged.
    """
    import copy
    import warnings

    float_model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():  # torch ≥ 2.9 points to torchao, which is not a dependency
        warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(float_model, {nn.Linear}, dtype=torch.qint8)
