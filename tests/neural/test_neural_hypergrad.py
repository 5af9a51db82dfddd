"""Hypergradient against finite differences of the one-step-unrolled validation loss, the linear
trajectory model, Algorithm 1's schedule, and the gradient-based λ on the synthetic set."""

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kdtheory.neural.data import Split, make_synthetic  # noqa: E402
from kdtheory.neural.experiments.train import FitConfig, fit, predict_logits  # noqa: E402
from kdtheory.neural.lambda_path.hypergrad import hypergradient, lambda_from_raw, raw_from_lambda  # noqa: E402
from kdtheory.neural.lambda_path.optimiser import LambdaPathOptimizer, LinearTrajectory  # noqa: E402
from kdtheory.neural.models import build_model  # noqa: E402


def _problem(seed=0, n=12, nv=9, d=4, k=3):
    gen = torch.Generator().manual_seed(seed)
    model = build_model("mlp", (d,), k, seed=seed, hidden=5).double()
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    f = 2 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    xv = torch.randn(nv, d, generator=gen, dtype=torch.float64)
    yv = torch.randint(0, k, (nv,), generator=gen)
    return model, (x, y, f), (xv, yv)


def _unrolled_val_loss_by_hand(model, lam1, temp, tb, vb, lr, t_val, t2, tempered="both"):
    """L_val(w − γ ∇_w L_train(w, λ)) written out independently of kdtheory.neural.lambda_path.hypergrad
    (the student's softmax at T_s = T for tempered "both", at 1 for "teacher")."""
    x, y, f = tb
    xv, yv = vb
    m = copy.deepcopy(model)
    params = list(m.parameters())
    g = m(x)
    logq = torch.log_softmax(g / (temp if tempered == "both" else 1.0), 1)
    soft = -(torch.softmax(f / temp, 1) * logq).sum(1).mean() * (temp**2 if t2 else 1.0)
    hard = -torch.log_softmax(g, 1)[torch.arange(len(y)), y].mean()
    grads = torch.autograd.grad(lam1 * hard + (1 - lam1) * soft, params)
    with torch.no_grad():
        for p, gr in zip(params, grads, strict=True):
            p -= lr * gr
        gv = m(xv) / t_val
        return float(-torch.log_softmax(gv, 1)[torch.arange(len(yv)), yv].mean())


@pytest.mark.parametrize(
    ("lam1", "temp", "t_val", "t2", "tempered"),
    [(0.3, 2.0, 1.0, False, "both"), (0.8, 0.5, 0.1, True, "both"),
     (0.3, 2.0, 1.0, False, "teacher"), (0.6, 0.7, 0.5, True, "teacher")],
)  # fmt: skip
def test_hypergradient_equals_finite_differences(lam1, temp, t_val, t2, tempered):
    model, tb, vb = _problem()
    lr = 0.7
    raw = raw_from_lambda(lam1, temp, dtype=torch.float64)
    before = [p.detach().clone() for p in model.parameters()]
    hs = hypergradient(model, raw, tb, vb, lr=lr, t_val=t_val, t2_scaling=t2, tempered=tempered)

    def phi(a, b):
        return _unrolled_val_loss_by_hand(model, a, b, tb, vb, lr, t_val, t2, tempered)

    # float64 central differences, step h: truncation O(h²) ≈ 1e-10, rounding ≈ 1e-16/h ≈ 1e-11
    h = 1e-5
    d_lam = (phi(lam1 + h, temp) - phi(lam1 - h, temp)) / (2 * h)
    d_t = (phi(lam1, temp + h) - phi(lam1, temp - h)) / (2 * h)
    assert hs.grad_lambda[0] == pytest.approx(d_lam, rel=1e-6, abs=1e-10)
    assert hs.grad_lambda[1] == pytest.approx(d_t, rel=1e-6, abs=1e-10)
    assert abs(d_lam) > 1e-6 and abs(d_t) > 1e-6  # the check is not vacuous

    # in the unconstrained coordinates θ (λ₁ = sigmoid θ₁, T = exp θ₂)
    def phi_raw(t1, t2_):
        return phi(1 / (1 + math.exp(-t1)), math.exp(t2_))

    r0, r1 = float(raw[0]), float(raw[1])
    g0 = (phi_raw(r0 + h, r1) - phi_raw(r0 - h, r1)) / (2 * h)
    g1 = (phi_raw(r0, r1 + h) - phi_raw(r0, r1 - h)) / (2 * h)
    np.testing.assert_allclose(hs.grad_raw.numpy(), [g0, g1], rtol=1e-6, atol=1e-10)
    # the unrolled value itself, and the model's weights untouched
    assert hs.val_loss == pytest.approx(phi(lam1, temp), rel=1e-12)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)


def test_weight_grads_are_the_training_gradient():
    model, tb, vb = _problem(seed=1)
    raw = raw_from_lambda(0.4, 3.0, dtype=torch.float64)
    hs = hypergradient(model, raw, tb, vb, lr=0.1)
    x, y, f = tb
    lam1, temp = (float(v) for v in lambda_from_raw(raw))
    g = model(x)
    loss = (
        lam1 * torch.nn.functional.cross_entropy(g, y)
        - (1 - lam1) * (torch.softmax(f / temp, 1) * torch.log_softmax(g / temp, 1)).sum(1).mean()
    )
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for (name, _), gr in zip(model.named_parameters(), grads, strict=True):
        torch.testing.assert_close(hs.weight_grads[name], gr, rtol=1e-12, atol=1e-14)  # float64


def test_linear_predictor_reproduces_and_extrapolates_a_line():
    z = np.arange(1, 11, dtype=float)
    a, b = np.array([0.25, -1.5]), np.array([-3.0, 0.7])
    traj = z[:, None] * a + b
    line = LinearTrajectory.fit(z, traj)
    # exact data: least squares recovers the coefficients to rounding
    np.testing.assert_allclose(line.c1, a, rtol=1e-12)
    np.testing.assert_allclose(line.c2, b, rtol=1e-12)
    z_next = np.arange(11, 21, dtype=float)
    np.testing.assert_allclose(line.predict(z_next), z_next[:, None] * a + b, rtol=1e-12)
    # a 1-d trajectory and a single point (constant prediction)
    np.testing.assert_allclose(LinearTrajectory.fit(z, 2 * z + 1).predict(30.0), [61.0], rtol=1e-12)
    one = LinearTrajectory.fit(np.array([1.0]), np.array([[4.0, 5.0]]))
    np.testing.assert_allclose(one.predict(7.0), [4.0, 5.0])


def test_every_training_step_sees_a_full_minibatch(monkeypatch):
    model, (x, y, f), (xv, yv) = _problem(seed=1, n=10)
    opt = LambdaPathOptimizer(
        model.float(), f.float(), Split(x.float(), y), Split(xv.float(), yv), mode="fixed",
        batch_size=4,
    )  # fmt: skip
    real = opt._next_train_idx
    batches = []
    monkeypatch.setattr(opt, "_next_train_idx", lambda: batches.append(real()) or batches[-1])
    opt.run(6)
    # 10 examples, batches of 4: two disjoint full batches per permutation, the remainder of 2 dropped
    assert [len(b) for b in batches] == [4] * 6
    for a, b in zip(batches[::2], batches[1::2], strict=True):
        assert not set(a.tolist()) & set(b.tolist())
    # a batch larger than the split is the whole split
    opt = LambdaPathOptimizer(
        model.float(), f.float(), Split(x.float(), y), Split(xv.float(), yv), mode="fixed",
        batch_size=50,
    )  # fmt: skip
    assert sorted(opt._next_train_idx().tolist()) == list(range(10))


def test_proposed_schedule_follows_algorithm_1():
    model, (x, y, f), (xv, yv) = _problem(seed=2)
    model = model.float()
    tr = Split(x.float(), y)
    va = Split(xv.float(), yv)
    opt = LambdaPathOptimizer(
        model, f.float(), tr, va, mode="proposed", e1=3, e2=2, lr=0.2, meta_lr=0.1, batch_size=4
    )
    opt.run(10)
    rec = opt.record
    assert rec.phase == ["gradient"] * 3 + ["linear"] * 2 + ["gradient"] * 3 + ["linear"] * 2
    assert opt.hyper_steps == 6 and opt.train_steps == 10
    raw_used = np.column_stack(
        [np.log(np.array(rec.lambda1) / (1 - np.array(rec.lambda1))), np.log(rec.temperature)]
    )
    for fit_ in opt.fits:
        s = fit_["step"]  # 1-based index of the first linear step
        # θ after gradient steps 1…e₁−1 is the θ used by the next step
        np.testing.assert_allclose(fit_["traj"][:-1], raw_used[s - 3 : s - 1], rtol=1e-5, atol=1e-6)
        # the linear steps use c₁ z + c₂ at z = e₁ + 1, e₁ + 2 (float32 storage: 1e-5)
        pred = fit_["line"].predict(np.array([4.0, 5.0]))
        np.testing.assert_allclose(raw_used[s - 1 : s + 1], pred, rtol=1e-5, atol=1e-5)


def test_gradient_lambda_lowers_synthetic_validation_loss():
    torch.manual_seed(0)
    d = make_synthetic(seed=0, n_teacher=2000, n_student=15, n_val=200, n_test=10, noise=0.5)
    teacher = build_model("mlp-large", (3,), 2, seed=0)
    fit(teacher, d.teacher_split, config=FitConfig(epochs=10, lr=0.05, seed=0), quiet=True)
    f = predict_logits(teacher, d.train.x)
    start = (0.9, 1.0)

    def run(mode, lam1, temp):
        student = build_model("mlp", (3,), 2, seed=1, hidden=32)
        opt = LambdaPathOptimizer(
            student, f, d.train, d.val, mode=mode, lambda1=lam1, temperature=temp,
            lr=1.0, meta_lr=0.02, batch_size=15, val_batch_size=200, seed=0,
        )  # fmt: skip
        return opt.run(600)

    fixed = run("fixed", *start)
    grad = run("gradient", *start)
    assert grad.lambda1 < start[0]  # the teacher term gains weight on this set
    # same initial weights and batches: the λ-path student validates better than λ fixed at its
    # start, and retraining with the λ it found (held fixed) also beats the start
    assert grad.val_loss < fixed.val_loss - 0.02
    refit = run("fixed", grad.lambda1, grad.temperature)
    assert refit.val_loss < fixed.val_loss - 0.02
