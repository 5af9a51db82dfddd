"""kdtheory.neural.models: parameter counts against hand counts, the four-stage ResNet's stages,
int8 dynamic quantisation round trip, serialised size."""

import pytest

torch = pytest.importorskip("torch")

from kdtheory.neural.models import (  # noqa: E402
    build_model,
    count_parameters,
    model_size_bytes,
    quantize_linear,
)


def _bn(c):  # batch-norm weight and bias
    return 2 * c


def _basic(cin, c, stride):
    """Hand count of a basic block: two 3×3 convs (no bias) + BN each, 1×1 shortcut if reshaped."""
    short = cin * c + _bn(c) if stride != 1 or cin != c else 0
    return 9 * cin * c + _bn(c) + 9 * c * c + _bn(c) + short


def _bottleneck(cin, c, stride):
    """Hand count of a bottleneck block: 1×1 (cin→c), 3×3 (c→c), 1×1 (c→4c), BN after each."""
    out = 4 * c
    short = cin * out + _bn(out) if stride != 1 or cin != out else 0
    return cin * c + _bn(c) + 9 * c * c + _bn(c) + c * out + _bn(out) + short


def _resnet4(blocks, block, width=64, cin=3, k=10, stride=1):
    total, cur = 9 * cin * width + _bn(width), width  # stem
    for i, n in enumerate(blocks):
        c = width * 2**i
        for j in range(n):
            s = (stride if i == 0 else 2) if j == 0 else 1
            total += (_basic if block == "basic" else _bottleneck)(cur, c, s)
            cur = c if block == "basic" else 4 * c
    return total + cur * k + k  # linear head


@pytest.mark.parametrize(
    ("name", "shape", "options", "count"),
    [
        # 784·300 + 300 + 300·10 + 10
        ("mlp", (1, 28, 28), {"hidden": 300}, 238_510),
        # the study's teacher: 784·1200 + 1200 + 1200·1200 + 1200 + 1200·10 + 10
        ("mlp", (1, 28, 28), {"hidden": (1200, 1200)}, 2_395_210),
        ("mlp-large", (1, 28, 28), {"hidden": 1200}, 2_395_210),
        # 64·8 + 8 + 8·4 + 4 + 4·10 + 10
        ("mlp", (64,), {"hidden": [8, 4]}, 606),
        # CIFAR ResNet-18 and ResNet-50 (3×3 stem, 10 classes): the published counts
        ("resnet4", (3, 32, 32), {"blocks": (2, 2, 2, 2)}, 11_173_962),
        ("resnet4", (3, 32, 32), {"blocks": (3, 4, 6, 3), "block": "bottleneck"}, 23_520_842),
        # stem 1856 + block(64→64) 73 984 + block(64→128, s2, shortcut) 230 144 + head 1290
        ("resnet4", (3, 32, 32), {"blocks": (1, 1, 0, 0)}, 307_274),
    ],
)
def test_parameter_counts_against_hand_counts(name, shape, options, count):
    assert count_parameters(build_model(name, shape, 10, **options)) == count


@pytest.mark.parametrize(
    ("blocks", "block", "stride"),
    [((1, 1, 1, 1), "basic", 2), ((2, 2, 0, 0), "basic", 1), ((1, 0, 2, 1), "bottleneck", 4),
     ((0, 0, 0, 0), "basic", 1)],
)  # fmt: skip
def test_resnet4_matches_the_hand_formula_and_skips_empty_stages(blocks, block, stride):
    model = build_model("resnet4", (3, 32, 32), 10, blocks=blocks, block=block, stride=stride,
                        width=8)  # fmt: skip
    assert count_parameters(model) == _resnet4(blocks, block, width=8, stride=stride)
    assert len(model.stages) == sum(blocks)
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    if blocks[0]:  # the first stage's stride sets its output resolution: 32 / stride
        h = model.stages[: blocks[0]](model.stem(x)).shape[-1]
        assert h == 32 // stride


def test_first_stage_stride_changes_resolution_not_parameters():
    counts = {s: count_parameters(build_model("resnet4", (3, 32, 32), 10, blocks=(1, 1, 1, 1),
                                              stride=s, width=8)) for s in (1, 2, 4)}  # fmt: skip
    # stride 1: stage 0 keeps 64→64 and needs no shortcut; stride 2, 4 add a 1×1 conv + BN
    assert counts[2] == counts[4] == counts[1] + 8 * 8 + 2 * 8


@pytest.mark.parametrize(
    ("options", "needle"),
    [({"blocks": (1, 1, 1)}, "blocks must be 4 integers"), ({"blocks": (1, -1, 1, 1)}, "blocks"),
     ({"block": "dense"}, "block must be basic or bottleneck"), ({"stride": 0}, "stride must be"),
     ({"width": 0}, "width must be")],
)  # fmt: skip
def test_resnet4_refuses_bad_options(options, needle):
    with pytest.raises(ValueError, match=needle):
        build_model("resnet4", (3, 32, 32), 10, **options)


def test_mlp_refuses_bad_widths_and_resnet4_needs_images():
    for hidden in (0, (), (10, 0)):
        with pytest.raises(ValueError, match="hidden must be an integer ≥ 1"):
            build_model("mlp", (4,), 2, hidden=hidden)
    with pytest.raises(ValueError, match="needs image inputs"):
        build_model("resnet4", (64,), 10)


def test_mlp_widths_reproduce_the_one_layer_weights():
    """hidden=h and hidden=(h,) build the same layers in the same order: same seed, same weights."""
    a = build_model("mlp", (1, 8, 8), 10, seed=3, hidden=16).state_dict()
    b = build_model("mlp", (1, 8, 8), 10, seed=3, hidden=(16,)).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_int8_quantisation_round_trip():
    model = build_model("mlp", (1, 28, 28), 10, seed=0, hidden=(300, 100))
    x = torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    q = quantize_linear(model)
    with torch.no_grad():
        ref, out = model(x), q(x)
    # int8 rounds each weight and activation to 1/255 of its range (half a step of error at most);
    # summed over the fan-in that stays within 5 % of the largest logit magnitude
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9  # ties aside, same class
    # weights of the three linear layers as int8: a quarter of float32 plus per-layer headers
    assert model_size_bytes(q) < 0.3 * model_size_bytes(model)
    assert model_size_bytes(model) >= 4 * count_parameters(model)  # float32: 4 bytes each
    # the float model is left untouched (still float32 linear layers, gradients available)
    assert type(model[1]) is torch.nn.Linear and model[1].weight.dtype == torch.float32
