"""simulations.fit.fit_gd: fixed-budget gradient descent, its limit, and the start's effect."""

import math

import numpy as np
import pytest

from kdtheory import LogisticTeacher
from simulations import fit_gd, fit_teacher, newton_cg

LAM = 3.0  # strong ridge: GD contracts fast enough for a test of a few thousand steps


def _grad_numpy(x, y, w, b, lam):
    """∇F of Σ log(1 + e^{−y h}) + (λ/2)‖w‖², h = x·w/√N + b, written out independently."""
    s = 1.0 / math.sqrt(x.shape[1])
    h = s * x @ w + b
    r = -y / (1.0 + np.exp(y * h))  # ∂_h log(1 + e^{−yh})
    return s * x.T @ r + lam * w, r.sum()


def test_zero_and_one_step(train):
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=train.n), 0.3
    f0 = fit_gd(train.x, train.y, lam=LAM, steps=0, lr=0.5, w0=w0, b0=b0)
    assert np.array_equal(f0.w, w0) and f0.b == b0 and f0.status == "max_iter"
    f1 = fit_gd(train.x, train.y, lam=LAM, steps=1, lr=0.5, w0=w0, b0=b0)
    gw, gb = _grad_numpy(train.x, train.y, w0, b0, LAM)
    # one step is θ − (γ/M)∇F; float64 sums of 400 terms
    np.testing.assert_allclose(f1.w, w0 - 0.5 / train.m * gw, rtol=1e-12, atol=1e-12)
    assert f1.b == pytest.approx(b0 - 0.5 / train.m * gb, rel=1e-12)


@pytest.mark.parametrize("start", ["zero", "random"])
def test_converges_to_the_newton_fit_from_any_start(train, start):
    """F is strictly convex: the end point does not depend on the start."""
    ref = fit_teacher(LogisticTeacher(lam=LAM), train)
    rng = np.random.default_rng(1)
    w0 = None if start == "zero" else 3 * rng.normal(size=train.n)
    fit = fit_gd(train.x, train.y, lam=LAM, steps=4000, lr=2.0, w0=w0, b0=0.0)
    # linear convergence with factor ≤ 1 − γμ/M per step (μ ≥ λ): 4000 steps leave < 1e-9
    assert np.abs(fit.w - ref.w).max() <= 1e-7 * np.abs(ref.w).max()
    assert fit.b == pytest.approx(ref.b, abs=1e-7)
    assert fit.status == "converged"


def test_a_teacher_on_fewer_features_helps_only_at_a_finite_budget(train):
    """η growth: the start (w_T on the first half of the features, 0 elsewhere; b_T) beats the
    zero start after a few steps, and the advantage vanishes as the budget grows."""
    n, k = train.n, train.n // 2
    ref = fit_teacher(LogisticTeacher(lam=LAM), train)
    t = newton_cg(train.x[:, :k], train.y, None, lam=LAM, scale=1 / math.sqrt(n))
    w0 = np.zeros(n)
    w0[:k] = t.w

    def dist(steps, w, b):
        f = fit_gd(train.x, train.y, lam=LAM, steps=steps, lr=2.0, w0=w, b0=b)
        return np.linalg.norm(f.w - ref.w) + abs(f.b - ref.b)

    gains = [dist(s, None, 0.0) - dist(s, w0, t.b) for s in (5, 50, 3000)]
    assert gains[0] > 0 and gains[1] > 0
    # the two runs contract to the same point: the gain at 3000 steps is below 1e-6 of the first
    assert abs(gains[2]) < 1e-6 * gains[0]


def test_bad_input(train):
    with pytest.raises(ValueError, match="steps must be an int ≥ 0"):
        fit_gd(train.x, train.y, lam=1.0, steps=-1, lr=1.0)
    with pytest.raises(ValueError, match="lr must be in"):
        fit_gd(train.x, train.y, lam=1.0, steps=1, lr=0.0)
    with pytest.raises(ValueError, match="w0 must have shape"):
        fit_gd(train.x, train.y, lam=1.0, steps=1, lr=1.0, w0=np.zeros(3))


def test_non_finite_inputs_and_labels_are_refused(train):
    x, y = train.x.copy(), train.y.copy()
    x[3, 5] = np.nan
    with pytest.raises(ValueError, match="x must be finite"):
        fit_gd(x, y, lam=1.0, steps=1, lr=1.0)
    x[3, 5] = np.inf
    with pytest.raises(ValueError, match="x must be finite"):
        fit_gd(x, y, lam=1.0, steps=1, lr=1.0)
    y[:3] = [1, 5, -3]  # the labels
    with pytest.raises(ValueError, match="y must hold labels ±1 only, got 5"):
        fit_gd(train.x, y, lam=1.0, steps=1, lr=1.0)
    y = train.y.copy()
    y[0] = np.nan
    with pytest.raises(ValueError, match="y must hold labels ±1"):
        fit_gd(train.x, y, lam=1.0, steps=1, lr=1.0)
    w0 = np.zeros(train.n)
    w0[0] = np.nan
    with pytest.raises(ValueError, match="w0 must be finite"):
        fit_gd(train.x, train.y, lam=1.0, steps=1, lr=1.0, w0=w0)
    with pytest.raises(ValueError, match="b0 must be a finite number"):
        fit_gd(train.x, train.y, lam=1.0, steps=1, lr=1.0, b0=math.inf)
    with pytest.raises(ValueError, match="scale must be in"):
        fit_gd(train.x, train.y, lam=1.0, steps=1, lr=1.0, scale=math.nan)


@pytest.mark.parametrize("lr", [1e6, 3.0 * 400 / LAM])
def test_divergence_is_its_own_status(train, lr):
    """Far from the minimiser the logistic curvature vanishes and θ ← (1 − γλ/M)θ + O(γ): with
    γλ/M = 3 (or 10⁶·λ/M) the factor has modulus > 1 and the iterates explode."""
    assert train.m == 400
    fit = fit_gd(train.x, train.y, lam=LAM, steps=500, lr=lr)
    assert fit.status == "diverged" and not fit.converged
    assert fit.iterations < 500  # stopped where it blew up, not at the budget
    assert math.isnan(fit.train_loss) and math.isnan(fit.train_error)  # not the old 0.0
    assert np.isfinite(fit.w).all() and math.isfinite(fit.b)  # the last finite iterate, kept


def test_a_step_below_the_stability_bound_does_not_diverge(train):
    """γ = 2 < 2/L (L ≤ (s²‖x‖₂²/4 + λ)/M + 1/4 for these data): no divergence at any budget."""
    s2 = 1.0 / train.n
    bound = (s2 * np.linalg.norm(train.x, 2) ** 2 / 4 + LAM) / train.m + 0.25
    assert 2.0 < 2.0 / bound
    assert fit_gd(train.x, train.y, lam=LAM, steps=50, lr=2.0).status == "max_iter"
