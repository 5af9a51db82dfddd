"""kdtheory.losses: the KD loss against its definition, derivatives by finite differences, prox."""

import itertools
import warnings

import numpy as np
import pytest

from kdtheory.losses import kd_cross, kd_d1, kd_d2, kd_loss, kd_prox, kd_prox_scalar

CHIS = (0.0, 0.3, 1.0)
TEMPS = (0.05, 1.0, 20.0)
YS = (1.0, -1.0)


def kd_loss_numpy(y, ht, h, chi, t):
    """Literal form of docs/theory.md, (1−χ) log(1+e^{−yh}) + χ H(sig(h̃/T), sig(h/T)), moderate
    |h| only."""
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    p, s = sig(ht / t), sig(h / t)
    return (1 - chi) * np.log1p(np.exp(-y * h)) + chi * (-p * np.log(s) - (1 - p) * np.log(1 - s))


def test_loss_equals_definition():
    for y, chi, t in itertools.product(YS, CHIS, (0.7, 1.0, 3.0)):
        for ht, h in itertools.product((-3.0, 0.2, 4.0), (-2.5, 0.0, 1.3)):
            assert kd_loss(y, ht, h, chi, t) == pytest.approx(
                kd_loss_numpy(y, ht, h, chi, t), rel=1e-12
            )


@pytest.mark.parametrize(("chi", "t"), list(itertools.product(CHIS, TEMPS)))
def test_derivatives_by_finite_differences(chi, t):
    # central differences with step e·T: truncation O(e²) ≈ 1e-10 relative, rounding ≈ 1e-16/e
    e = 1e-5 * t
    for y, ht, h in itertools.product(YS, (-7.0 * t, -0.3, 2.0 * t), (-5.0 * t, 0.1, 3.0 * t)):
        d1 = (kd_loss(y, ht, h + e, chi, t) - kd_loss(y, ht, h - e, chi, t)) / (2 * e)
        assert kd_d1(y, ht, h, chi, t) == pytest.approx(d1, rel=1e-6, abs=1e-9)
        d2 = (kd_d1(y, ht, h + e, chi, t) - kd_d1(y, ht, h - e, chi, t)) / (2 * e)
        assert kd_d2(y, ht, h, chi, t) == pytest.approx(d2, rel=1e-6, abs=1e-9)
        dx = (kd_d1(y, ht + e, h, chi, t) - kd_d1(y, ht - e, h, chi, t)) / (2 * e)
        assert kd_cross(y, ht, h, chi, t) == pytest.approx(dx, rel=1e-6, abs=1e-9)


def test_stable_at_extreme_preactivations():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for y, chi, t in itertools.product(YS, CHIS, TEMPS):
            for ht, h in itertools.product((-1e3 * t, 1e3 * t), (-1e3 * t, 1e3 * t)):
                vals = [f(y, ht, h, chi, t) for f in (kd_loss, kd_d1, kd_d2, kd_cross)]
                assert np.all(np.isfinite(vals))
                # large-|h| asymptotes: loss ~ linear in |h|, |∂ℓ| ≤ (1−χ) + χ/T
                assert abs(vals[1]) <= (1 - chi) + chi / t + 1e-12
    # logistic loss at h = -1000 with y = +1 is 1000 exactly (to rounding), not inf
    assert kd_loss(1.0, 0.0, -1000.0, 0.0, 1.0) == pytest.approx(1000.0, rel=1e-15)


@pytest.mark.parametrize("v", [1e-4, 0.3, 1.0, 1e4])
def test_prox_optimality(v):
    rng = np.random.default_rng(0)
    for chi, t in itertools.product(CHIS, TEMPS):
        y = rng.choice(YS, size=200)
        ht = rng.normal(scale=5, size=200)
        om = rng.normal(scale=30, size=200)
        h = kd_prox(y, ht, om, v, chi, t)
        args = list(zip(y, ht, h, strict=True))
        grad = (h - om) / v + np.array([kd_d1(*a, chi, t) for a in args])
        curv = 1 / v + np.array([kd_d2(*a, chi, t) for a in args])
        # |g/g'| (one Newton step) is the distance to the root; g itself carries rounding
        # ε·(B + |h−ω|/V), B = (1−χ) + χ/T the size of ∂ℓ, which g' turns into an error in h
        noise = 8 * np.finfo(float).eps * ((1 - chi) + chi / t + np.abs(h - om) / v) / curv
        assert np.all(np.abs(grad / curv) <= 1e-12 * (1 + np.abs(h)) + noise)
        # and it is the minimiser: neighbours have a larger objective
        for i in range(0, 200, 37):

            def obj(x, i=i, chi=chi, t=t, om=om, y=y, ht=ht):
                return (x - om[i]) ** 2 / (2 * v) + kd_loss(y[i], ht[i], x, chi, t)

            d = 1e-4 * (1 + abs(h[i]))
            assert obj(h[i]) <= min(obj(h[i] + d), obj(h[i] - d))
        assert kd_prox_scalar(y[0], ht[0], om[0], v, chi, t) == h[0]


@pytest.mark.parametrize("v", [0.05, 3.0, 11.5, 300.0])
def test_prox_converges_from_any_start(v):
    """Newton alone can cycle on the S-shaped ∂_hℓ when V is large (it did, from h₀ = ω at V ≈ 11):
    the safeguard must reach the root from cold, zero and far starting points on a dense ω grid."""
    from kdtheory.losses import _prox_p, sigmoid

    for chi, t in itertools.product(CHIS, (0.05, 1.0, 20.0)):
        om = np.linspace(-60.0, 60.0, 2401) * max(1.0, t)
        for y, ht in ((1.0, 3.0 * t), (-1.0, -0.5)):
            pt = sigmoid(ht / t)
            for start in ("omega", "zero", "far"):
                h = np.array(
                    [
                        _prox_p(
                            y,
                            pt,
                            w,
                            v,
                            chi,
                            t,
                            {"omega": w, "zero": 0.0, "far": w + 0.99 * v}[start],
                        )
                        for w in om
                    ]
                )
                g = (h - om) / v + np.array([kd_d1(y, ht, x, chi, t) for x in h])
                curv = 1 / v + np.array([kd_d2(y, ht, x, chi, t) for x in h])
                # distance to the root |g/g'| at rounding level of g (ε·(|ω| + V·B)/V, times 1/g')
                noise = 8 * np.finfo(float).eps * ((1 - chi) + chi / t + np.abs(om) / v) / curv
                assert np.all(np.abs(g / curv) <= 1e-12 * (1 + np.abs(h)) + noise), (chi, t, start)
