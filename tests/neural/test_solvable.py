"""The λ path on the solvable model: the torch student's objective is the theory's, the weight
decay enters the unrolled step, and a short end-to-end run."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student  # noqa: E402
from kdtheory.losses import kd_loss as kd_loss_scalar  # noqa: E402
from kdtheory.neural.experiments.solvable import (  # noqa: E402
    Judgement,
    LinearStudent,
    fit_at,
    make_testbed,
    run_lambda_path,
    summarise,
    theory_optimum,
    theory_point,
)
from kdtheory.neural.lambda_path.hypergrad import hypergradient, raw_from_lambda  # noqa: E402
from kdtheory.neural.lambda_path.optimiser import TEMPERATURE_BOX, LambdaPathOptimizer  # noqa: E402
from simulations import fit_student  # noqa: E402
from simulations.data import TrainingSet  # noqa: E402

PROBLEM = Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.5), Student(0.3, eta=0.75))


@pytest.fixture(scope="module")
def bed():
    return make_testbed(PROBLEM, 40, seed=3)


def _student_at(bed, w, b):
    """A float64 LinearStudent with W = w_S/√N, bias b."""
    model = LinearStudent(len(bed.subset)).double()
    with torch.no_grad():
        model.linear.weight.copy_(torch.as_tensor(w[bed.subset] / math.sqrt(bed.n))[None, :])
        model.linear.bias.fill_(b)
    return model


def test_torch_objective_is_the_fits_objective(bed):
    # Σ_μ ℓ_KD(y, h̃, h) + (λ/2)‖w‖², h = w·x/√N + b, with w zero off the subset S
    rng = np.random.default_rng(0)
    w = np.zeros(bed.n)
    w[bed.subset] = rng.standard_normal(len(bed.subset))
    b, chi, temp = 0.3, 0.6, 2.5
    h = bed.x @ w / math.sqrt(bed.n) + b
    direct = sum(
        kd_loss_scalar(y, ht, hm, chi, temp)
        for y, ht, hm in zip(bed.y, bed.teacher.h, h, strict=True)
    ) + 0.5 * PROBLEM.student.lam * (w @ w)
    torch_f = float(bed.objective(_student_at(bed, w, b), 1.0 - chi, temp).detach())
    assert torch_f == pytest.approx(direct, rel=1e-12)  # float64 sums of ~30 terms


def test_exact_fit_is_stationary_for_the_torch_objective(bed):
    # the minimiser of simulations.fit_student zeroes the torch gradient: same normalisation
    chi, temp = 0.7, 0.8
    student = Student(PROBLEM.student.lam, chi, temp, PROBLEM.student.eta)
    fit = fit_student(student, TrainingSet(bed.x, bed.y, bed.v), bed.teacher.h, bed.subset)
    model = _student_at(bed, fit.w, fit.b)
    grads = torch.autograd.grad(bed.objective(model, 1.0 - chi, temp), list(model.parameters()))
    # ∂F/∂w = ∂F/∂W / √N; the fit stops at ‖∇F‖ ≤ 1e-10 M, and a wrong λ scale would give O(1)
    grad_w = grads[0].numpy().ravel() / math.sqrt(bed.n)
    assert np.linalg.norm(grad_w) < 1e-8 and abs(float(grads[1])) < 1e-8
    # and a penalty off by the factor N/M would not be stationary
    assert np.linalg.norm(PROBLEM.student.lam * (len(bed.y) / bed.n - 1) * fit.w) > 1e-2


def test_weight_decay_enters_the_unrolled_step():
    gen = torch.Generator().manual_seed(0)
    model = LinearStudent(5).double()
    with torch.no_grad():
        model.linear.weight.normal_(generator=gen)
        model.linear.bias.fill_(0.2)
    x, xv = (
        torch.randn(12, 5, generator=gen, dtype=torch.float64),
        torch.randn(9, 5, dtype=torch.float64, generator=gen),
    )
    y, yv = torch.randint(0, 2, (12,), generator=gen), torch.randint(0, 2, (9,), generator=gen)
    f = 2 * torch.randn(12, 2, generator=gen, dtype=torch.float64)
    lr, mu, lam1, temp = 0.5, 0.3, 0.4, 1.7

    def phi(a, t):  # L_val(w − γ∇[L_train + (μ/2)‖W‖²]) by hand; the bias is not decayed
        wt, bias = (
            model.linear.weight.detach().clone().requires_grad_(),
            model.linear.bias.detach().clone().requires_grad_(),
        )
        g = torch.cat([torch.zeros(12, 1, dtype=x.dtype), x @ wt.T + bias], 1)
        hard = torch.nn.functional.cross_entropy(g, y)
        soft = -(torch.softmax(f / t, 1) * torch.log_softmax(g / t, 1)).sum(1).mean()
        loss = a * hard + (1 - a) * soft + 0.5 * mu * (wt * wt).sum()
        gw, gb = torch.autograd.grad(loss, [wt, bias])
        gv = torch.cat(
            [torch.zeros(9, 1, dtype=x.dtype), xv @ (wt - lr * gw).T + (bias - lr * gb)], 1
        )
        return float(torch.nn.functional.cross_entropy(gv, yv).detach())

    raw = raw_from_lambda(lam1, temp, dtype=torch.float64)
    hs = hypergradient(model, raw, (x, y, f), (xv, yv), lr=lr, weight_decay=mu)
    h = 1e-5  # float64 central differences: truncation ~1e-10, rounding ~1e-11
    d_lam = (phi(lam1 + h, temp) - phi(lam1 - h, temp)) / (2 * h)
    d_t = (phi(lam1, temp + h) - phi(lam1, temp - h)) / (2 * h)
    np.testing.assert_allclose(hs.grad_lambda, [d_lam, d_t], rtol=1e-6, atol=1e-10)
    assert hs.val_loss == pytest.approx(phi(lam1, temp), rel=1e-12)  # same value, float64
    without = hypergradient(model, raw, (x, y, f), (xv, yv), lr=lr)
    assert abs(without.val_loss - hs.val_loss) > 1e-4  # μ changed the stepped weights


def test_fixed_lambda_gradient_descent_reaches_the_exact_fit(bed):
    out = run_lambda_path(bed, "fixed", steps=400, start=(0.4, 2.0))
    exact = fit_at(bed, 0.6, 2.0)
    # float32 full-batch descent at rate ≥ lr·λN/M per step for 400 steps: converged to ~1e-5
    assert out.eg == pytest.approx(exact.eg, abs=2e-4)
    assert out.ce == pytest.approx(exact.ce, abs=2e-4)
    assert (out.eg_fit, out.ce_fit) == (exact.eg, exact.ce)


@pytest.mark.parametrize("mode", ["gradient", "proposed"])
def test_short_lambda_path_run(bed, mode):
    out = run_lambda_path(bed, mode, steps=25, meta_lr=0.1)
    assert out.chi_path.shape == out.temperature_path.shape == (25,)
    assert 0.0 < out.chi < 1.0 and TEMPERATURE_BOX[0] <= out.temperature <= TEMPERATURE_BOX[1]
    assert (out.chi, out.temperature) != (0.5, 1.0)  # λ moved
    assert 0.0 < out.eg < 0.5 and out.ce > 0.0 and out.q > 0.0


def test_theory_optimum_is_not_above_its_grid():
    p = PROBLEM.replace(eta=1.0)
    opt = theory_optimum(p, "eg", grid=(3, 3), starts=1)
    for chi in (0.0, 0.75, 1.0):  # the grid's χ = 1 − (1 − u)², u ∈ {0, ½, 1}
        for temp in (0.1, 1.0, 10.0):
            assert opt.eg <= theory_point(p, chi, temp)[0] + 1e-12  # search starts at the best
    assert 0.0 <= opt.chi <= 1.0 and opt.solves > 9


def test_bad_arguments():
    with pytest.raises(ValueError, match="LogisticTeacher"):
        make_testbed(Problem(GaussianMixture(2.0), BayesTeacher(), Student(0.1)), 40, seed=0)
    with pytest.raises(ValueError, match="objective"):
        theory_optimum(PROBLEM, "accuracy")
    with pytest.raises(ValueError, match="starts"):
        theory_optimum(PROBLEM, "ce", starts=0)
    with pytest.raises(ValueError, match="which"):
        make_testbed(PROBLEM, 20, seed=0).split("test")
    with pytest.raises(ValueError, match="weight_decay"):
        split = make_testbed(PROBLEM, 20, seed=0).split("val")
        LambdaPathOptimizer(
            LinearStudent(15), torch.zeros(len(split), 2), split, split, weight_decay=-1.0
        )


def test_summary_pairs_each_draw_with_the_theory_optimum_on_that_draw():
    def r(seed, method, eg):
        return dict(seed=seed, method=method, chi=0.5, temperature=1.0, eg=eg, ce=2 * eg,
                    theory_eg=0.2, theory_ce=0.4, wall_time_s=1.0)  # fmt: skip

    rows = [r(0, "theory-opt", 0.20), r(0, "gradient", 0.23), r(1, "theory-opt", 0.30),
            r(1, "gradient", 0.31)]  # fmt: skip
    s = summarise(Judgement(PROBLEM, 40, {}, rows, []))["gradient"]
    # paired differences 0.03 and 0.01: mean 0.02, s.e. = |0.03 − 0.01|/2
    assert s["d_eg"] == pytest.approx((0.02, 0.01), rel=1e-12)
    assert s["d_ce"] == pytest.approx((0.04, 0.02), rel=1e-12)
    assert s["eg"] == pytest.approx((0.27, 0.04), rel=1e-12)  # unpaired: draws differ by 0.08
