"""simulations.softmax_kernels: numba kernels against their numpy twins and finite differences."""

import numpy as np
import pytest
from scipy.special import softmax

from simulations import softmax_kernels as S

# (χ, T_s): softmax regression, mixed at a tempered student, pure distillation at T_s = 1 and < 1
CASES = [(0.0, 1.0), (0.4, 2.5), (1.0, 1.0), (0.7, 0.6), (1.0, 3.0)]


def _rows(seed, m=60, k=5, spread=4.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=m)
    pt = softmax(spread * rng.standard_normal((m, k)), axis=1)
    h = spread * rng.standard_normal((m, k))
    return y, pt, h


@pytest.mark.parametrize(("chi", "ts"), CASES)
def test_grad_and_hessian_kernels_match_numpy_twins(chi, ts):
    y, pt, h = _rows(1)
    m, k = h.shape
    g, p, ps = np.empty((m, k)), np.empty((m, k)), np.empty((m, k))
    loss = S.kd_softmax_grad(y, pt, h, chi, ts, g, p, ps)
    loss_np, g_np, p_np, ps_np = S.kd_softmax_numpy(y, pt, h, chi, ts)
    # the same formulas in two float64 orders of summation: a few ulps of Σ over 60 rows
    assert loss == pytest.approx(loss_np.sum(), rel=1e-13)
    np.testing.assert_allclose(g, g_np, rtol=1e-12, atol=1e-15)
    a = np.random.default_rng(2).standard_normal((m, k))
    out = S.kd_softmax_hess_apply(p_np, ps_np, a, chi, ts, np.empty((m, k)))
    np.testing.assert_allclose(out, S.kd_softmax_hess_apply_numpy(p_np, ps_np, a, chi, ts),
                               rtol=1e-12, atol=1e-15)  # fmt: skip
    f, d1, d2 = S.kd_softmax_line(y, pt, h, a, 0.3, chi, ts)
    ref = S.kd_softmax_line_numpy(y, pt, h, a, 0.3, chi, ts)
    np.testing.assert_allclose((f, d1, d2), ref, rtol=1e-12)


@pytest.mark.parametrize(("chi", "ts"), CASES)
def test_gradient_and_hessian_against_finite_differences(chi, ts):
    y, pt, h = _rows(3, m=8)
    _, g, p, ps = S.kd_softmax_numpy(y, pt, h, chi, ts)
    eps = 1e-6
    rng = np.random.default_rng(4)
    for _ in range(3):
        d = rng.standard_normal(h.shape)
        lp = S.kd_softmax_numpy(y, pt, h + eps * d, chi, ts)
        lm = S.kd_softmax_numpy(y, pt, h - eps * d, chi, ts)
        # central differences: error O(eps²·ℓ''') ≈ 1e-12 against terms O(1); 1e-7 leaves room
        # for the cancellation of two O(10) sums at eps = 1e-6 (≈ 1e-15·10/1e-6 = 1e-8)
        assert (lp[0].sum() - lm[0].sum()) / (2 * eps) == pytest.approx((g * d).sum(), abs=1e-7)
        hd = S.kd_softmax_hess_apply_numpy(p, ps, d, chi, ts)
        np.testing.assert_allclose((lp[1] - lm[1]) / (2 * eps), hd, atol=1e-7)


def test_loss_is_the_cross_entropy_written_out():
    # ℓ = −(1−χ) log softmax(h)_y − χ Σ_k p̃_k log softmax(h/T_s)_k, from the definition
    y, pt, h = _rows(5, spread=2.0)
    chi, ts = 0.3, 1.7
    loss, *_ = S.kd_softmax_numpy(y, pt, h, chi, ts)
    ref = -(1 - chi) * np.log(softmax(h, axis=1)[np.arange(h.shape[0]), y]) - chi * (
        pt * np.log(softmax(h / ts, axis=1))
    ).sum(1)
    np.testing.assert_allclose(loss, ref, rtol=1e-12)  # |h| ≲ 8: no log underflow, a few ulps


def test_two_classes_is_the_binary_kd_loss():
    # K = 2: softmax(h) = (sig(h₁ − h₂), sig(h₂ − h₁)); ℓ equals the binary ℓ_KD at y = ±1,
    # h = h₁ − h₂, p̃ = sig(h̃/T), and ∂ℓ/∂h₁ = −∂ℓ/∂h₂ = ∂ℓ_KD/∂h
    from simulations.kernels import kd_pointwise_numpy

    rng = np.random.default_rng(6)
    m, chi, t, ts = 40, 0.6, 2.0, 2.0
    h, ht = 3 * rng.standard_normal((m, 2)), 3 * rng.standard_normal((m, 2))
    y = rng.integers(0, 2, size=m)
    pt = softmax(ht / t, axis=1)
    loss, g, _, _ = S.kd_softmax_numpy(y, pt, h, chi, ts)
    ref, d1, _ = kd_pointwise_numpy(
        np.where(y == 0, 1.0, -1.0), ht[:, 0] - ht[:, 1], h[:, 0] - h[:, 1], chi, t, ts
    )
    np.testing.assert_allclose(loss, ref, rtol=1e-12)  # two forms of the same softplus
    np.testing.assert_allclose(g[:, 0], d1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g[:, 1], -d1, rtol=1e-12, atol=1e-15)


def test_extreme_logits_stay_finite():
    y, pt, _ = _rows(7, m=4, k=3)
    h = np.array([[1e3, -1e3, 0.0], [-800.0, 800.0, 1.0], [0.0, 0.0, 0.0], [5e2, 5e2, -5e2]])
    g, p, ps = np.empty((4, 3)), np.empty((4, 3)), np.empty((4, 3))
    loss = S.kd_softmax_grad(y, pt, h, 0.5, 0.5, g, p, ps)
    assert np.isfinite(loss) and np.all(np.isfinite(g))
