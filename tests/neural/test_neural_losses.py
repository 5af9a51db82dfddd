"""kdtheory.neural.losses: hand-computed values, the λ₁ = 1 limit, Lemma 1, gradient wrt T."""

import math

import pytest

torch = pytest.importorskip("torch")

from kdtheory.neural.losses import (  # noqa: E402
    KDLoss,
    hard_cross_entropy,
    kd_loss,
    soft_cross_entropy,
    validation_loss,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def tiny_batch():
    """Two samples whose softmaxes are simple fractions at T = 1 and T = 2.

    sample 0: g = (0, 2 ln 2) → σ(g) = (1/5, 4/5), σ(g/2) = (1/3, 2/3);
              f = (0, 2 ln 3) → σ(f/2) = (1/4, 3/4); y = 1.
    sample 1: g = (2 ln 3, 0) → σ(g) = (9/10, 1/10), σ(g/2) = (3/4, 1/4);
              f = (0, 0)      → σ(f/2) = (1/2, 1/2); y = 0.
    """
    g = torch.tensor([[0.0, 2 * LN2], [2 * LN3, 0.0]], dtype=torch.float64)
    f = torch.tensor([[0.0, 2 * LN3], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    return g, f, y


# the same quantities written out by hand from the fractions in tiny_batch's docstring
HARD = (-math.log(4 / 5) - math.log(9 / 10)) / 2
SOFT_T2 = (
    -(1 / 4 * math.log(1 / 3) + 3 / 4 * math.log(2 / 3))
    - (1 / 2 * math.log(3 / 4) + 1 / 2 * math.log(1 / 4))
) / 2


def test_kd_loss_equals_hand_computed_value():
    g, f, y = tiny_batch()
    # float64 throughout: agreement to rounding (1e-12)
    assert float(hard_cross_entropy(g, y)) == pytest.approx(HARD, rel=1e-12)
    assert float(soft_cross_entropy(g, f, 2.0)) == pytest.approx(SOFT_T2, rel=1e-12)
    lam = 0.3
    assert float(kd_loss(g, f, y, lam, 2.0)) == pytest.approx(
        lam * HARD + (1 - lam) * SOFT_T2, rel=1e-12
    )
    # Hinton's scaling multiplies the soft term by T² = 4
    assert float(kd_loss(g, f, y, lam, 2.0, t2_scaling=True)) == pytest.approx(
        lam * HARD + (1 - lam) * 4 * SOFT_T2, rel=1e-12
    )
    # the module form is the same function
    assert float(KDLoss(lam, 2.0)(g, f, y)) == pytest.approx(
        lam * HARD + (1 - lam) * SOFT_T2, rel=1e-12
    )


def test_validation_loss_hand_computed():
    g, _, y = tiny_batch()
    # CE(y, σ(g/2)): sample 0 → −ln(2/3), sample 1 → −ln(3/4)
    expected = (-math.log(2 / 3) - math.log(3 / 4)) / 2
    assert float(validation_loss(g, y, t_val=2.0)) == pytest.approx(expected, rel=1e-12)
    assert float(validation_loss(g, y)) == pytest.approx(HARD, rel=1e-12)


def test_lambda1_one_is_plain_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    f = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (7,), generator=gen)
    # plain CE written out: mean_i [log Σ_k e^{g_ik} − g_{i y_i}]
    plain = (torch.logsumexp(g, dim=1) - g[torch.arange(7), y]).mean()
    for lam in (1.0, torch.tensor(1.0, dtype=torch.float64)):  # float shortcut and tensor path
        for temp in (0.5, 3.0):
            # the tensor path adds 0 × soft term, exact up to rounding
            assert float(kd_loss(g, f, y, lam, temp)) == pytest.approx(float(plain), rel=1e-13)
    # the teacher is not needed at λ₁ = 1
    assert float(kd_loss(g, None, y, 1.0, 2.0)) == pytest.approx(float(plain), rel=1e-13)


def test_lambda1_zero_is_kl_plus_teacher_entropy():
    # Lemma 1 of Gorpinich et al.: at λ₁ = 0 the loss is D_KL(σ(f/T) ‖ σ(g/T)) + H(σ(f/T))
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    f = 3 * torch.randn(6, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (6,), generator=gen)
    t = 2.5
    p = torch.softmax(f / t, 1)
    q = torch.softmax(g / t, 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    entropy = -(p * p.log()).sum(1).mean()
    assert float(kd_loss(g, f, y, 0.0, t)) == pytest.approx(float(kl + entropy), rel=1e-12)


@pytest.mark.parametrize("t2", [False, True])
@pytest.mark.parametrize("temp", [0.3, 1.0, 4.0])
def test_gradient_wrt_temperature_by_finite_differences(temp, t2):
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    f = 2 * torch.randn(8, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=gen)
    lam = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(temp, dtype=torch.float64, requires_grad=True)
    d_lam, d_t = torch.autograd.grad(kd_loss(g, f, y, lam, t, t2_scaling=t2), (lam, t))

    def value(lam_v: float, t_v: float) -> float:
        return float(kd_loss(g, f, y, lam_v, t_v, t2_scaling=t2))

    # central differences, step h = 1e-6 T: truncation O(h²) ~ 1e-12, rounding ~ 1e-16 / h ~ 1e-10
    h = 1e-6 * temp
    fd_t = (value(0.4, temp + h) - value(0.4, temp - h)) / (2 * h)
    assert float(d_t) == pytest.approx(fd_t, rel=1e-6, abs=1e-9)
    # the loss is linear in λ₁, so a central difference is exact up to rounding
    fd_lam = (value(0.4 + 1e-4, temp) - value(0.4 - 1e-4, temp)) / 2e-4
    assert float(d_lam) == pytest.approx(fd_lam, rel=1e-8)


def test_kdloss_rejects_out_of_range():
    with pytest.raises(ValueError, match="lambda1"):
        KDLoss(1.5, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(0.5, 0.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        kd_loss(torch.zeros(2, 3), None, torch.zeros(2, dtype=torch.long), 0.5, 1.0)


# ------------------------------------------------------------- the soft-target axis: KL terms ---

# KL by hand from tiny_batch's fractions at T = 2: s = σ(g/2), t = σ(f/2)
_S = ((1 / 3, 2 / 3), (3 / 4, 1 / 4))
_T = ((1 / 4, 3 / 4), (1 / 2, 1 / 2))
FORWARD_T2 = (
    sum(
        sum(t * math.log(t / s) for s, t in zip(ss, tt, strict=True))
        for ss, tt in zip(_S, _T, strict=True)
    )
    / 2
)
REVERSE_T2 = (
    sum(
        sum(s * math.log(s / t) for s, t in zip(ss, tt, strict=True))
        for ss, tt in zip(_S, _T, strict=True)
    )
    / 2
)


def test_kl_divergences_match_hand_values():
    from kdtheory.neural.losses import kl_divergence

    g, f, _ = tiny_batch()
    fwd = kl_divergence(g, f, 2.0, direction="forward")
    rev = kl_divergence(g, f, 2.0, direction="reverse")
    assert fwd.item() == pytest.approx(FORWARD_T2, rel=1e-12)  # float64 round-off
    assert rev.item() == pytest.approx(REVERSE_T2, rel=1e-12)  # float64 round-off
    # KL(p ‖ p) = 0 in both directions
    assert kl_divergence(f, f, 2.0).item() == pytest.approx(0.0, abs=1e-15)  # round-off only
    with pytest.raises(ValueError, match="direction must be forward or reverse"):
        kl_divergence(g, f, 2.0, direction="sideways")


def test_forward_kl_has_the_cross_entropy_gradient():
    """∂/∂g KL(t ‖ s) = ∂/∂g CE(t, s) = (s − t)/(nT): the teacher's entropy does not depend on g."""
    g0 = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f = 3 * torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t_temp = 2.5
    grads = {}
    for soft in ("cross-entropy", "forward-kl"):
        g = g0.clone().requires_grad_(True)
        kd_loss(g, f, torch.zeros(7, dtype=torch.long), 0.0, t_temp, soft=soft).backward()
        grads[soft] = g.grad
    closed = (torch.softmax(g0 / t_temp, -1) - torch.softmax(f / t_temp, -1)) / (7 * t_temp)
    torch.testing.assert_close(grads["forward-kl"], closed, rtol=1e-12, atol=1e-14)  # round-off
    torch.testing.assert_close(grads["cross-entropy"], closed, rtol=1e-12, atol=1e-14)
    # the values differ by the mean teacher entropy H(σ(f/T))
    p = torch.softmax(f / t_temp, -1)
    entropy = -(p * p.log()).sum(-1).mean()
    ce = soft_cross_entropy(g0, f, t_temp)
    fwd = kd_loss(g0, f, torch.zeros(7, dtype=torch.long), 0.0, t_temp, soft="forward-kl")
    assert (ce - fwd).item() == pytest.approx(entropy.item(), rel=1e-12)  # float64 round-off


def test_reverse_kl_gradient_closed_form_and_t2_scaling():
    """∂/∂g_j KL(s ‖ t) = s_j [(log s_j − log t_j) − Σ_k s_k (log s_k − log t_k)] / (nT)."""
    g0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t_temp, y = 1.7, torch.zeros(4, dtype=torch.long)
    g = g0.clone().requires_grad_(True)
    kd_loss(g, f, y, 0.0, t_temp, soft="reverse-kl").backward()
    log_s, log_t = torch.log_softmax(g0 / t_temp, -1), torch.log_softmax(f / t_temp, -1)
    d = log_s - log_t
    closed = log_s.exp() * (d - (log_s.exp() * d).sum(-1, keepdim=True)) / (4 * t_temp)
    torch.testing.assert_close(g.grad, closed, rtol=1e-12, atol=1e-14)  # float64 round-off
    # T² scaling multiplies the soft term only
    for soft in ("forward-kl", "reverse-kl"):
        plain = kd_loss(g0, f, y, 0.25, t_temp, soft=soft)
        scaled = kd_loss(g0, f, y, 0.25, t_temp, soft=soft, t2_scaling=True)
        hard = 0.25 * hard_cross_entropy(g0, y)
        assert (scaled - hard).item() == pytest.approx(t_temp**2 * (plain - hard).item(), rel=1e-12)
    with pytest.raises(ValueError, match="soft must be one of cross-entropy, forward-kl"):
        kd_loss(g0, f, y, 0.5, t_temp, soft="js")
    with pytest.raises(ValueError, match="soft must be one of"):
        KDLoss(0.5, 2.0, soft="kl")
    assert KDLoss(0.5, 2.0, soft="reverse-kl")(g0, f, y).item() == pytest.approx(
        kd_loss(g0, f, y, 0.5, 2.0, soft="reverse-kl").item(),
        rel=1e-15,  # the same computation
    )


# ------------------------------------------------------------------ which output is tempered ---

SOFTS = ("cross-entropy", "forward-kl", "reverse-kl")


def _rand(shape, seed, scale=1.0):
    return scale * torch.randn(
        *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )


def test_tempered_teacher_is_the_plain_student_softmax_and_equals_both_at_t1():
    """tempered="teacher": CE(σ(f/T), σ(g)) by hand; at T = 1 every soft term is the same under
    both conventions, and at T ≠ 1 they differ."""
    g, f, y = _rand((6, 4), 10), _rand((6, 4), 11, 3.0), torch.arange(6) % 4
    t = 2.5
    by_hand = -(torch.softmax(f / t, -1) * torch.log_softmax(g, -1)).sum(-1).mean()
    got = soft_cross_entropy(g, f, t, tempered="teacher")
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-13)  # float64 round-off
    for soft in SOFTS:
        both = kd_loss(g, f, y, 0.3, 1.0, soft=soft, tempered="both")
        teacher = kd_loss(g, f, y, 0.3, 1.0, soft=soft, tempered="teacher")
        assert teacher.item() == pytest.approx(both.item(), rel=1e-15)  # the same arithmetic
        hot = [kd_loss(g, f, y, 0.3, t, soft=soft, tempered=c).item() for c in ("both", "teacher")]
        assert abs(hot[0] - hot[1]) > 1e-3  # the conventions do differ away from T = 1
    assert KDLoss(0.3, t, tempered="teacher")(g, f, y).item() == pytest.approx(
        kd_loss(g, f, y, 0.3, t, tempered="teacher").item(),
        rel=1e-15,  # the same computation
    )


@pytest.mark.parametrize("tempered", ["both", "teacher"])
@pytest.mark.parametrize("soft", SOFTS)
def test_tempered_gradients_match_finite_differences(tempered, soft):
    """torch.autograd.gradcheck (float64 central differences) wrt g, f, λ₁ and T."""
    g = _rand((3, 4), 20).requires_grad_(True)
    f = _rand((3, 4), 21, 2.0).requires_grad_(True)
    lam = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1])

    def loss(g, f, lam, t):
        return kd_loss(g, f, y, lam, t, soft=soft, tempered=tempered, t2_scaling=True)

    # gradcheck's default tolerances (atol 1e-5, rtol 1e-3) suit float64 central differences
    assert torch.autograd.gradcheck(loss, (g, f, lam, t))


def test_tempered_refuses_unknown_convention():
    g, f, y = _rand((2, 3), 30), _rand((2, 3), 31), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="tempered must be one of both, teacher; got 'student'"):
        kd_loss(g, f, y, 0.5, 2.0, tempered="student")
    with pytest.raises(ValueError, match="tempered must be one of both, teacher"):
        kd_loss(g, None, y, 1.0, 2.0, tempered="student")  # checked also without the soft term
    with pytest.raises(ValueError, match="tempered must be one of"):
        KDLoss(0.5, 2.0, tempered="")


def _ridge_kd_minimiser(x, f, t, lam, tempered):
    """argmin_W mean CE(σ(f/T), σ(Wx/T_s)) + λ/2 ‖W‖² (χ = 1, linear model, no bias): strictly
    convex, solved by Newton's method with the exact Hessian (float64)."""
    k = f.shape[1]
    w = torch.zeros(k * x.shape[1], dtype=torch.float64)
    y = torch.zeros(x.shape[0], dtype=torch.long)  # unused at λ₁ = 0

    def objective(w):
        g = x @ w.view(k, -1).T
        return kd_loss(g, f, y, 0.0, t, tempered=tempered) + 0.5 * lam * (w * w).sum()

    for _ in range(50):
        grad = torch.autograd.functional.jacobian(objective, w)
        if grad.norm() < 1e-13:
            break
        hess = torch.autograd.functional.hessian(objective, w)
        w = w - torch.linalg.solve(hess, grad)
    return w.view(k, -1), grad.norm().item()


def test_linear_model_both_at_lambda_is_teacher_at_lambda_t2_rescaled():
    """χ = 1, g = Wx: W*_both(λ) = T · W*_teacher(λT²) (the "both" loss of W is the "teacher"
    loss of W/T); with λ instead of λT² the relation fails."""
    x, f = _rand((40, 3), 40), _rand((40, 4), 41, 2.0)
    t, lam = 3.0, 0.05
    w_both, r1 = _ridge_kd_minimiser(x, f, t, lam, "both")
    w_teacher, r2 = _ridge_kd_minimiser(x, f, t, lam * t * t, "teacher")
    assert max(r1, r2) < 1e-12  # Newton converged to round-off
    torch.testing.assert_close(w_both, t * w_teacher, rtol=1e-9, atol=1e-11)  # Newton's round-off
    w_wrong, _ = _ridge_kd_minimiser(x, f, t, lam, "teacher")
    assert (w_both - t * w_wrong).abs().max() > 1e-2  # the λ ↔ λT² map is needed
