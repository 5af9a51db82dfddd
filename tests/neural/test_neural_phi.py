"""The section-4 objective of anti-distillation (kdtheory.neural.anti.phi) against exact values."""

import math

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn.utils import parameters_to_vector  # noqa: E402

from kdtheory.neural.anti.phi import (  # noqa: E402
    PhiObjective,
    fit_phi,
    hessian_frobenius_sq,
    hessian_spectral_sq,
    perturb,
)


def _tiny(seed=0):
    """A smooth (tanh) 3 → 4 → 3 network in float64: 31 weights, Hessian by autograd."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    return model, x, y


def _objective(lambdas, hessian="frobenius", perturbation="uniform", **kw):
    model, x, y = _tiny()
    w0 = parameters_to_vector(model.parameters()).detach()
    mask = torch.zeros_like(w0, dtype=torch.bool)
    mask[:10] = True
    obj = PhiObjective(
        model,
        w0,
        mask,
        x,
        y,
        lambdas=lambdas,
        hessian=hessian,
        perturbation=perturbation,
        delta=0.3,
        n_mc=3,
        low=-2.0,
        high=2.0,
        probes=3,
        iters=300,  # see the gap in the finite-difference test
        **kw,
    )
    return obj, w0


def _exact_hessian():
    obj, w0 = _objective((0.5, 0.5, 0, 0))
    f = lambda w: obj.loss_f(w, obj.x, obj.y)  # noqa: E731
    return f, w0, torch.autograd.functional.hessian(f, w0)


def test_spectral_norm_by_power_iteration_matches_the_exact_hessian():
    f, w0, h = _exact_hessian()
    exact = torch.linalg.matrix_norm(h, ord=2) ** 2
    eig = torch.linalg.eigvalsh(h).abs().sort(descending=True).values
    ratio = (eig[1] / eig[0]).item()
    assert ratio < 0.8  # the gap of this H (0.79): 80 steps shrink the error by ratio^160 < 1e-15
    est = hessian_spectral_sq(f, w0, iters=80, generator=torch.Generator().manual_seed(0))
    # λ² from a unit v with error ε in angle: relative error O(ε²) = O(ratio^2k), plus rounding
    assert est.item() == pytest.approx(exact.item(), rel=1e-6)


def test_frobenius_norm_by_hutchinson_within_its_standard_error():
    f, w0, h = _exact_hessian()
    exact = (h**2).sum().item()
    h2 = h @ h
    var = 2 * ((h2**2).sum() - (h2.diagonal() ** 2).sum()).item()  # Var ‖Hz‖², Rademacher z
    probes = 400
    est = hessian_frobenius_sq(f, w0, probes=probes, generator=torch.Generator().manual_seed(1))
    # unbiased; 4 standard errors: a false failure has probability < 1e-4
    assert abs(est.item() - exact) < 4 * math.sqrt(var / probes)
    # one probe per unit vector would be exact; here check the estimator is not trivially exact
    assert est.item() != exact


TERMS = {
    "L_f": (1.0, 0, 0, 0),
    "L_2": (0, 1.0, 0, 0),
    "L_3": (0, 0, 1.0, 0),
    "L_4": (0, 0, 0, 1.0),
}


@pytest.mark.parametrize(
    "term,hessian,perturbation",
    [
        ("L_f", "frobenius", "uniform"),
        ("L_2", "frobenius", "uniform"),
        ("L_3", "frobenius", "uniform"),
        ("L_3", "frobenius", "pixels"),
        ("L_4", "frobenius", "uniform"),
        ("L_4", "spectral", "uniform"),
    ],
)
def test_each_term_gradient_matches_finite_differences(term, hessian, perturbation):
    lam = (0.5, 0.5, 0, 0) if term in ("L_f", "L_2") else (0.5, 0.25, 0.25, 0)
    if term == "L_4":
        lam = (0, 0.5, 0, 0.5)
    obj, w0 = _objective(lam, hessian=hessian, perturbation=perturbation)
    # off the start (so that L_2 has a gradient); the Hessian terms at w0, where the top two
    # |eigenvalues| of H are 0.71 and 0.56: the power-iteration vector error (0.79)^k is ~1e-31
    shift = 0.0 if term == "L_4" else 0.1
    w = w0 + shift * torch.randn(
        w0.shape, generator=torch.Generator().manual_seed(5), dtype=w0.dtype
    )
    w.requires_grad_(True)
    value = obj.terms(w)[term]
    (g,) = torch.autograd.grad(value, w)
    u = torch.randn(w.shape, generator=torch.Generator().manual_seed(6), dtype=w.dtype)
    eps = 1e-5
    with torch.no_grad():
        fd = (obj.terms(w + eps * u)[term] - obj.terms(w - eps * u)[term]) / (2 * eps)
    # central differences in float64: O(eps²) truncation + O(1e-16/eps) rounding ≈ 1e-10
    # relative; the spectral term adds the power-iteration error (negligible, see above)
    assert (g @ u).item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-9)


def test_objective_is_the_simplex_combination_of_its_terms():
    obj, w0 = _objective((0.1, 0.2, 0.3, 0.4))
    w = w0 + 0.05
    t = obj.terms(w)
    total = 0.1 * t["L_f"] + 0.2 * t["L_2"] + 0.3 * t["L_3"] + 0.4 * t["L_4"]
    assert obj(w).item() == pytest.approx(total.item(), rel=1e-12)  # same float64 ops
    # L_2 counts only the masked places
    assert t["L_2"].item() == pytest.approx(10 * 0.05**2, rel=1e-12)


def test_fit_phi_lowers_the_objective_and_keeps_the_teacher_places_close():
    obj, w0 = _objective((0.5, 0.5, 0, 0))
    w = fit_phi(obj, steps=60, lr=0.02)
    assert obj(w) < obj(w0)
    assert fit_phi(obj, steps=0).equal(w0)


def test_perturbations():
    x = torch.zeros(2000, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    u = perturb(x, "uniform", 0.3, low=0, high=1, generator=gen)
    assert u.abs().max() <= 0.3 and u.abs().max() > 0.29  # 2000 draws fill [−δ, δ]
    p = perturb(x, "pixels", 0.25, low=2.0, high=3.0, generator=gen)
    hit = p != 0
    assert torch.all((p[hit] >= 2) & (p[hit] <= 3))
    # binomial(2000, 0.25): s.d. 19.4; 5 s.d.
    assert abs(int(hit.sum()) - 500) < 5 * 19.4
    assert torch.equal(perturb(x, "pixels", 0.0, low=2, high=3), x)


def test_bad_input():
    with pytest.raises(ValueError, match="sum to 1"):
        _objective((0.5, 0.5, 0.5, 0))
    with pytest.raises(ValueError, match="λ₂ must be > 0"):
        _objective((1.0, 0, 0, 0))
    with pytest.raises(ValueError, match="hessian must be"):
        _objective((0.5, 0.5, 0, 0), hessian="trace")
    with pytest.raises(ValueError, match="delta must be in"):
        perturb(torch.zeros(3), "pixels", 1.5, low=0, high=1)
    with pytest.raises(ValueError, match="perturbation must be"):
        perturb(torch.zeros(3), "salt", 0.1, low=0, high=1)
