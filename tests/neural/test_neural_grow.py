"""Growth operators of anti-distillation (kdtheory.neural.anti.growth): blocks, masks, Net2Net, ψ."""

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from kdtheory.neural.anti.growth import (  # noqa: E402
    build_family,
    grow,
    hidden_extension,
    psi,
    shrink,
)

IMG = (1, 8, 8)
# float32 sums of up to a few hundred terms, reordered by the replication: ~1e-7 relative each
TOL = 1e-5


def _pair(family, t_shape=IMG, s_shape=IMG, c_t=5, c_s=10, w_t=4, w_s=8):
    teacher = build_family(family, t_shape, c_t, w_t, seed=0)
    student = build_family(family, s_shape, c_s, w_s, seed=1)
    return teacher, student


def _grow(teacher, student, scheme, t_shape=IMG, s_shape=IMG, **kw):
    return grow(
        teacher, student, scheme, teacher_input_shape=t_shape, student_input_shape=s_shape, **kw
    )


def test_mlp_widening_copies_the_teacher_block_and_masks_it():
    t, s = _pair("mlp")
    g, mask = _grow(t, s, "zero")
    w1, w2 = g[1].weight, g[3].weight
    assert w1.shape == (8, 64) and w2.shape == (10, 8)
    assert torch.equal(w1[:4], t[1].weight) and torch.equal(g[1].bias[:4], t[1].bias)
    assert torch.equal(w2[:5, :4], t[3].weight) and torch.equal(g[3].bias[:5], t[3].bias)
    expected = torch.zeros(10, 8, dtype=torch.bool)
    expected[:5, :4] = True
    assert torch.equal(mask["3.weight"], expected)
    assert mask["1.weight"][:4].all() and not mask["1.weight"][4:].any()
    # zero scheme: every weight outside the mask is exactly 0
    for name, p in g.named_parameters():
        assert torch.all(p[~mask[name]] == 0)
    # the inputs are not modified
    assert torch.equal(s[1].weight, build_family("mlp", IMG, 10, 8, seed=1)[1].weight)


def test_extension_initialisers():
    t, s = _pair("mlp")
    theta = 0.3
    g, mask = _grow(t, s, "uniform", theta=theta)
    ext = torch.cat([p[~mask[n]] for n, p in g.named_parameters()])
    assert ext.min() >= 0 and ext.max() <= theta
    # 8·64 − 4·64 + ... ≈ 600 draws: the range is nearly filled (P(max < 0.9θ) = 0.9^600)
    assert ext.max() > 0.9 * theta and ext.min() < 0.1 * theta
    g, mask = _grow(t, s, "default-ext")
    for name, p in g.named_parameters():
        assert torch.equal(p[~mask[name]], dict(s.named_parameters())[name][~mask[name]])
        assert torch.equal(
            p[mask[name]], dict(_grow(t, s, "zero")[0].named_parameters())[name][mask[name]]
        )
    g, mask = _grow(t, s, "default")
    assert not any(m.any() for m in mask.values())
    for (_, p), (_, q) in zip(g.named_parameters(), s.named_parameters(), strict=True):
        assert torch.equal(p, q)


def test_lstm_widening_keeps_each_gate_block():
    t, s = _pair("lstm")
    g, mask = _grow(t, s, "zero")
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        ps, pt = getattr(g.lstm, name), getattr(t.lstm, name)
        assert ps.shape[0] == 4 * 8
        for gate in range(4):
            block_s = ps[gate * 8 : gate * 8 + 4]
            block_t = pt[gate * 4 : (gate + 1) * 4]
            if name == "weight_hh_l0":  # recurrent inputs grow too: columns 4..7 are new
                assert torch.equal(block_s[:, :4], block_t)
                assert torch.all(block_s[:, 4:] == 0)
            else:
                assert torch.equal(block_s, block_t)
            assert torch.all(ps[gate * 8 + 4 : (gate + 1) * 8] == 0)
        assert mask[f"lstm.{name}"].sum() == pt.numel()


def test_conv_widening_maps_the_flattened_channels():
    t, s = _pair("cnn")
    g, mask = _grow(t, s, "zero")
    conv2_s, conv2_t = g.features[3].weight, t.features[3].weight  # (16, 8, 3, 3), (8, 4, 3, 3)
    assert torch.equal(conv2_s[:8, :4], conv2_t) and torch.all(conv2_s[:, 4:] == 0)
    lin_s, lin_t = g.head[1].weight, t.head[1].weight  # 8×8 → 2×2 grid: 4 positions per channel
    assert lin_s.shape == (32, 16 * 4) and lin_t.shape == (16, 8 * 4)
    # column c·4 + s of the student is column c·4 + s of the teacher for the teacher's channels
    assert torch.equal(lin_s[:16, : 8 * 4], lin_t)
    assert torch.all(lin_s[:, 8 * 4 :] == 0)
    assert mask["head.1.weight"].sum() == lin_t.numel()


@pytest.mark.parametrize("family", ["mlp", "cnn", "lstm"])
def test_net2net_preserves_the_teachers_function(family):
    """Replicated units carry equal activations and their outgoing weights are divided by the
    count, so every sum over units is the teacher's; new class rows are 0."""
    t, s = _pair(family, w_t=3, w_s=8)
    g, mask = _grow(t, s, "net2net", seed=3)
    x = torch.randn(11, *IMG)
    with torch.no_grad():
        out, ref = g(x), t(x)
    assert torch.allclose(out[:, :5], ref, atol=TOL, rtol=TOL)
    assert torch.all(out[:, 5:] == 0)
    # only the new class rows are outside the mask (replicas are teacher weights)
    assert (
        sum(int((~m).sum()) for m in mask.values())
        == 5 * (g.fc if family == "lstm" else (g[3] if family == "mlp" else g.head[3])).in_features
        + 5
    )


def test_net2net_replicas_really_differ_from_the_zero_scheme():
    t, s = _pair("mlp", w_t=3, w_s=8)
    g, _ = _grow(t, s, "net2net", seed=3)
    w1 = g[1].weight
    # each new unit is a copy of some teacher unit
    for j in range(3, 8):
        assert any(torch.equal(w1[j], t[1].weight[i]) for i in range(3))


def test_input_growth_psi_and_its_adjoint():
    t_shape, s_shape = (1, 4, 4), (3, 8, 8)
    x = torch.randn(6, *t_shape)
    xs = psi(x, s_shape)
    assert xs.shape == (6, 3, 8, 8)
    assert torch.equal(xs[:, 2, 5, 3], x[:, 0, 2, 1])  # channel copy, pixel (5,3) ← (2,1)
    assert torch.allclose(shrink(xs, t_shape), x, atol=1e-6)  # mean of equal copies
    # padding (6×6 → 8×8): a zero border, the centre is x
    xp = psi(torch.randn(2, 1, 6, 6), (1, 8, 8))
    assert torch.all(xp[:, :, 0] == 0) and torch.all(xp[:, :, :, 7] == 0)


@pytest.mark.parametrize("scheme", ["zero", "net2net"])
def test_mlp_input_growth_is_exact_through_psi(scheme):
    t_shape, s_shape = (1, 4, 4), (3, 8, 8)
    t, s = _pair("mlp", t_shape, s_shape)
    g, mask = _grow(t, s, scheme, t_shape, s_shape)
    x = torch.randn(5, *t_shape)
    x2 = torch.randn(5, *s_shape)
    with torch.no_grad():
        assert torch.allclose(g(psi(x, s_shape))[:, :5], t(x), atol=TOL)  # f(ψ(x)) = g(x)
        assert torch.allclose(g(x2)[:, :5], t(shrink(x2, t_shape)), atol=TOL)  # f = g ∘ ψ*
    # every first-layer input weight of the teacher's units is derived from the teacher
    assert mask["1.weight"][:4].all()


def test_hidden_extension_excludes_new_class_rows():
    t, s = _pair("mlp")
    g, mask = _grow(t, s, "zero")
    hid = hidden_extension(g, mask, IMG, old_classes=5)
    assert not hid["3.weight"][5:].any() and hid["3.weight"][:5, 4:].all()
    assert hid["1.weight"][4:].all() and not hid["3.bias"].any()


def test_bad_input():
    t, s = _pair("mlp")
    with pytest.raises(ValueError, match="scheme must be one of"):
        _grow(t, s, "ones")
    with pytest.raises(ValueError, match="theta must be"):
        _grow(t, s, "uniform", theta=0.0)
    with pytest.raises(ValueError, match="narrower"):
        _grow(s, build_family("mlp", IMG, 10, 2, seed=0), "zero")
    with pytest.raises(ValueError, match="same architecture"):
        _grow(t, build_family("lstm", IMG, 10, 8, seed=0), "zero")
    bn = build_family("mlp", IMG, 5, 4, seed=0)
    bn.append(nn.BatchNorm1d(5))
    with pytest.raises(ValueError, match="batch-norm"):
        _grow(bn, s, "zero")
    with pytest.raises(ValueError, match="family must be"):
        build_family("rnn", IMG, 5, 4, seed=0)


# ---------------------------------------------------------------------- dead extensions ---


def _tanh_mlp(width, classes, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.Tanh(), nn.Linear(width, classes))


@pytest.mark.parametrize("family", ["mlp", "tanh", "cnn", "lstm"])
def test_zero_extension_gets_zero_gradient_after_a_step(family):
    """Zero in-weights, bias and out-weights: the new unit's output is 0 and its outgoing
    weights are 0, so no gradient reaches it (ReLU'(0) = 0 in PyTorch; for tanh the path back
    goes through the zero outgoing weights) — after an SGD step it is still exactly 0."""
    if family == "tanh":
        t, s = _tanh_mlp(4, 5, 0), _tanh_mlp(8, 10, 1)
    else:
        t, s = _pair(family)
    g, mask = _grow(t, s, "zero")
    hid = hidden_extension(g, mask, IMG, old_classes=5)
    x, y = torch.randn(32, *IMG), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(g.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(g(x), y).backward()
        for name, p in g.named_parameters():
            assert torch.all(p.grad[hid[name]] == 0), name
        opt.step()
    for name, p in g.named_parameters():
        assert torch.all(p[hid[name]] == 0), name
    # a uniform start is not dead: the same block gets a gradient
    u, umask = _grow(t, s, "uniform", theta=0.1)
    nn.functional.cross_entropy(u(x), y).backward()
    hid_u = hidden_extension(u, umask, IMG, old_classes=5)
    assert sum(float(p.grad[hid_u[n]].abs().sum()) for n, p in u.named_parameters()) > 0
