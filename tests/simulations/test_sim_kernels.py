"""simulations.kernels: numba kernels against their numpy twins and against finite differences."""

import numpy as np
import pytest
from scipy.special import expit

from kdtheory.losses import kd_d1, kd_d2, kd_loss
from simulations import kernels as K

# (χ, T, T_s): logistic, mixed, pure distillation (both outputs tempered), then only the teacher's
CASES = [(0.0, 1.0, 1.0), (0.4, 0.7, 0.7), (1.0, 3.0, 3.0), (0.6, 2.5, 1.0), (1.0, 0.5, 1.0)]


def _problem(seed, m=150, k=60, n=90):
    """Random inputs with k < N columns (the sparse student's shape) and scale s = 1/√N."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k))
    y = rng.choice([-1.0, 1.0], size=m)
    ht = 3.0 * rng.standard_normal(m)
    theta = rng.standard_normal(k + 1)
    return x, y, ht, theta, 1.0 / np.sqrt(n)


def test_pointwise_twin_equals_kdtheory_losses():
    rng = np.random.default_rng(0)
    y = rng.choice([-1.0, 1.0], size=50)
    ht = 4 * rng.standard_normal(50)
    h = 6 * rng.standard_normal(50)
    for chi, t, ts in CASES:
        loss, d1, d2 = K.kd_pointwise_numpy(y, ht, h, chi, t, ts)
        for i in range(50):
            args = (y[i], ht[i], h[i], chi, t)
            # two float64 evaluations of the same formula: a few ulps apart
            ref = K._pointwise(y[i], ht[i], h[i], chi, t, ts)
            np.testing.assert_allclose((loss[i], d1[i], d2[i]), ref, rtol=1e-13, atol=1e-15)
            if ts == t:  # both outputs tempered: the public functions of kdtheory.losses
                assert loss[i] == pytest.approx(kd_loss(*args), rel=1e-13, abs=1e-15)
                assert d1[i] == pytest.approx(kd_d1(*args), rel=1e-13, abs=1e-15)
                assert d2[i] == pytest.approx(kd_d2(*args), rel=1e-13, abs=1e-15)


def test_tempered_teacher_is_the_cross_entropy_against_the_untempered_student():
    # χ = 1, T_s = 1: ℓ = H(p̃, sig(h)) = −p̃ log sig(h) − (1 − p̃) log sig(−h), p̃ = sig(h̃/T),
    # ∂_h ℓ = sig(h) − p̃, ∂²_h ℓ = sig(h) sig(−h), written out from the definition
    rng = np.random.default_rng(1)
    ht, h, t = 3 * rng.standard_normal(40), 3 * rng.standard_normal(40), 2.5
    pt, sh = expit(ht / t), expit(h)
    loss, d1, d2 = K.kd_pointwise_numpy(np.ones(40), ht, h, 1.0, t, 1.0)
    # log of sig(±h) at |h| ≲ 10 loses nothing; a few ulps between the two forms
    np.testing.assert_allclose(loss, -pt * np.log(sh) - (1 - pt) * np.log(1 - sh), rtol=1e-12)
    np.testing.assert_allclose(d1, sh - pt, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d2, sh * (1 - sh), rtol=1e-12)


@pytest.mark.parametrize(("chi", "t", "ts"), CASES)
def test_loss_grad_matches_twin(chi, t, ts):
    x, y, ht, theta, s = _problem(1)
    m, k = x.shape
    grad, h, curv = np.empty(k + 1), np.empty(m), np.empty(m)
    loss = K.loss_grad(x, y, ht, theta, theta[k], s, chi, t, ts, grad, h, curv)
    loss_np, grad_np, h_np, curv_np = K.loss_grad_numpy(x, y, ht, theta, theta[k], s, chi, t, ts)
    # sums of ≤ 150 terms summed in different orders: rounding ≤ ~1e-14 of the sum of |terms|
    assert loss == pytest.approx(loss_np, rel=1e-13)
    np.testing.assert_allclose(h, h_np, rtol=0, atol=1e-13 * np.abs(h_np).max())
    np.testing.assert_allclose(curv, curv_np, rtol=1e-12, atol=1e-15)
    scale = s * np.abs(x).T @ np.abs(K.kd_pointwise_numpy(y, ht, h_np, chi, t, ts)[1])
    np.testing.assert_allclose(grad[:k], grad_np[:k], rtol=0, atol=1e-13 * scale.max())
    assert grad[k] == pytest.approx(grad_np[k], rel=1e-12, abs=1e-13)


@pytest.mark.parametrize(("chi", "t", "ts"), CASES)
def test_hess_vec_and_small_kernels_match_twins(chi, t, ts):
    x, y, ht, theta, s = _problem(2)
    m, k = x.shape
    curv = K.kd_pointwise_numpy(y, ht, K.preact_numpy(x, theta, theta[k], s), chi, t, ts)[2]
    u = np.random.default_rng(3).standard_normal(k + 1)
    out, hu = np.empty(k + 1), np.empty(m)
    K.hess_vec(x, curv, u, s, out, hu)
    out_np, hu_np = K.hess_vec_numpy(x, curv, u, s)
    # reassociated sums (see above); the scale is the sum of |terms| of the largest component
    atol = 1e-13 * (s * np.abs(x).T @ np.abs(curv * hu_np)).max()
    np.testing.assert_allclose(out[:k], out_np[:k], rtol=0, atol=atol)
    assert out[k] == pytest.approx(out_np[k], rel=1e-12, abs=1e-13)
    np.testing.assert_allclose(hu, hu_np, rtol=0, atol=1e-13 * np.abs(hu_np).max())
    np.testing.assert_allclose(
        K.preact(x, u, 0.3, s, np.empty(m)), K.preact_numpy(x, u, 0.3, s), rtol=0, atol=1e-13
    )
    c = np.random.default_rng(4).standard_normal(m)
    np.testing.assert_allclose(
        K.row_combination(x, c, s, np.empty(k)), K.row_combination_numpy(x, c, s), atol=1e-12
    )
    h = K.preact_numpy(x, theta, theta[k], s)
    for tt in (0.0, 0.7, -2.0):
        np.testing.assert_allclose(
            K.line_derivs(y, ht, h, hu, tt, chi, t, ts),
            K.line_derivs_numpy(y, ht, h, hu, tt, chi, t, ts),
            rtol=1e-12,  # sums of 150 terms in the same order: a few ulps
        )


@pytest.mark.parametrize(("chi", "t", "ts"), CASES)
def test_gradient_and_hessian_by_finite_differences(chi, t, ts):
    x, y, ht, theta, s = _problem(5)
    m, k = x.shape
    grad, h, curv = np.empty(k + 1), np.empty(m), np.empty(m)

    def f(th):
        g = np.empty(k + 1)
        return K.loss_grad(x, y, ht, th, th[k], s, chi, t, ts, g, np.empty(m), np.empty(m)), g

    K.loss_grad(x, y, ht, theta, theta[k], s, chi, t, ts, grad, h, curv)
    rng = np.random.default_rng(6)
    for _ in range(4):
        u = rng.standard_normal(k + 1)
        u /= np.linalg.norm(u)
        e = 1e-4
        # central differences: truncation O(e²) ≈ 1e-8 relative, rounding ≈ 1e-16·L/e ≈ 1e-10
        fd = (f(theta + e * u)[0] - f(theta - e * u)[0]) / (2 * e)
        assert grad @ u == pytest.approx(fd, rel=1e-6, abs=1e-8)
        hu_fd = (f(theta + e * u)[1] - f(theta - e * u)[1]) / (2 * e)
        out = K.hess_vec(x, curv, u, s, np.empty(k + 1), np.empty(m))
        np.testing.assert_allclose(out, hu_fd, rtol=1e-6, atol=1e-6 * np.abs(hu_fd).max())
    # along a line: φ'(t) and φ''(t) of line_derivs against differences of φ
    dh = K.preact_numpy(x, u, u[k], s)
    e = 1e-4
    for tt in (0.0, 0.5):
        _, d1, d2 = K.line_derivs(y, ht, h, dh, tt, chi, t, ts)
        fp, d1p, _ = K.line_derivs(y, ht, h, dh, tt + e, chi, t, ts)
        fm, d1m, _ = K.line_derivs(y, ht, h, dh, tt - e, chi, t, ts)
        assert d1 == pytest.approx((fp - fm) / (2 * e), rel=1e-6, abs=1e-8)  # as above
        assert d2 == pytest.approx((d1p - d1m) / (2 * e), rel=1e-6, abs=1e-8)  # as above
