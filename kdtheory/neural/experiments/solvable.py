r"""The λ path on the solvable model: Gorpinich et al.'s optimiser judged against the exact optimum.

The student is the linear classifier of docs/theory.md, h(x) = w·x/√N + b, trained in torch with
the package's KD loss (:func:`kdtheory.neural.losses.kd_loss`) on a finite-N draw of the Gaussian
mixture (:func:`simulations.sample`), distilled from a logistic teacher fitted by
:func:`simulations.fit_teacher`. With two classes and logits (0, h) the softmax is
(1 − sig h, sig h), so the torch loss is the theory's ℓ_KD = (1 − χ) ℓ(y, h) + χ H(sig(h̃/T), sig(h/T))
with λ₁ = 1 − χ. The parameters are W = w/√N (so that the curvature of the loss is O(1) in every
direction), and the batch-mean loss carries the weight decay μ = λN/M on W, biases not decayed:

    M [mean_μ ℓ_KD + (μ/2)‖W‖²] = Σ_μ ℓ_KD + (λ/2)‖w‖²,

the objective of :func:`simulations.fit_student` and of the replica theory at the same λ.
The λ path (:class:`~kdtheory.neural.lambda_path.optimiser.LambdaPathOptimizer`, gradient-based or
Algorithm 1) minimises the validation cross-entropy at T_val = 1, whose population value is
:meth:`kdtheory.problem.GaussianMixture.cross_entropy` of the student's (m, q, b); the theory's
optimum of the same objective is :func:`theory_optimum` (replica solves and a bounded search over
(χ, log T)). The trained student's test error and loss on fresh data are exact given the centroid v:
m = w·v/N, q = ‖w‖²/N.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize
from torch import nn

import replica
from kdtheory.neural.data import Split
from kdtheory.neural.lambda_path.optimiser import TEMPERATURE_BOX, LambdaPathOptimizer
from kdtheory.neural.losses import kd_loss
from kdtheory.problem import (
    GaussianMixture,
    LogisticTeacher,
    Problem,
    check_choice,
    check_integer,
    check_real,
)
from simulations.data import TrainingSet, draw_subset, n_samples, sample
from simulations.fit import Fit, fit_student, fit_teacher

__all__ = [
    "ExactFit",
    "Judgement",
    "LinearStudent",
    "PathOutcome",
    "Testbed",
    "TheoryOptimum",
    "fit_at",
    "judge",
    "make_testbed",
    "run_lambda_path",
    "summarise",
    "theory_landscape",
    "theory_optimum",
    "theory_point",
    "validation_optimum",
]

OBJECTIVES = ("ce", "eg")


def binary_logits(h: torch.Tensor) -> torch.Tensor:
    """Logits (0, h) of shape (n, 2) from h of shape (n, 1): softmax = (1 − sig h, sig h)."""
    return torch.cat([torch.zeros_like(h), h], dim=1)


class LinearStudent(nn.Module):
    """The theory's student h(x) = x·W + b (W = w/√N), started at W = 0, b = 0; logits (0, h).

    Parameters
    ----------
    n_features : int
        Number of trained inputs k = round(ηN).
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return binary_logits(self.linear(x))


@dataclass(frozen=True, eq=False)
class Testbed:
    r"""One draw of the solvable model: training and validation sets, teacher, student's inputs.

    Attributes
    ----------
    problem : Problem
        (α, ρ, Δ), the logistic teacher's λ̃, the student's λ and η (its χ, T are what is chosen).
    n : int
        Dimension N.
    x, y : ndarray
        Training inputs (M × N) and labels ±1.
    x_val, y_val : ndarray
        Validation inputs and labels, drawn from the same mixture (same centroid v).
    v : ndarray
        The centroid (test metrics are exact given v).
    subset : ndarray
        The student's trained coordinates S (all of range(N) at η = 1).
    teacher : Fit
        The teacher fitted on (x, y); ``teacher.h`` are its training preactivations h̃_μ.
    """

    problem: Problem
    n: int
    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    v: np.ndarray
    subset: np.ndarray
    teacher: Fit

    @property
    def weight_decay(self) -> float:
        """μ = λN/M: batch-mean loss + (μ/2)‖W‖² is (1/M)[Σ ℓ_KD + (λ/2)‖w‖²]."""
        return self.problem.student.lam * self.n / self.x.shape[0]

    def split(self, which: str) -> Split:
        """``"train"`` or ``"val"`` as a torch :class:`Split` (student's inputs, class y = (1 + y)/2)."""
        check_choice("which", which, ("train", "val"))
        x, y = (self.x, self.y) if which == "train" else (self.x_val, self.y_val)
        xs = torch.as_tensor(x[:, self.subset], dtype=torch.float32)
        return Split(xs, torch.as_tensor((y > 0).astype(np.int64)))

    def teacher_logits(self) -> torch.Tensor:
        """f = (0, h̃_μ) on the training set, shape (M, 2)."""
        return binary_logits(torch.as_tensor(self.teacher.h, dtype=torch.float32)[:, None])

    def order_parameters(self, model: LinearStudent) -> tuple[float, float, float]:
        """(m, q, b) of a trained student: w_S = √N W, m = w·v/N, q = ‖w‖²/N."""
        w = model.linear.weight.detach().double().cpu().numpy().ravel() * math.sqrt(self.n)
        b = float(model.linear.bias.detach().double().cpu())
        return float(w @ self.v[self.subset]) / self.n, float(w @ w) / self.n, b

    def objective(self, model: LinearStudent, lambda1: float, temperature: float) -> torch.Tensor:
        """M [mean_μ ℓ_KD + (μ/2)‖W‖²] = Σ_μ ℓ_KD + (λ/2)‖w‖² on the training set (the fit's F)."""
        dtype = model.linear.weight.dtype
        x = torch.as_tensor(self.x[:, self.subset], dtype=dtype)
        f = binary_logits(torch.as_tensor(self.teacher.h, dtype=dtype)[:, None])
        mean = kd_loss(model(x), f, self.split("train").y, lambda1, temperature)
        w = model.linear.weight
        return x.shape[0] * (mean + 0.5 * self.weight_decay * (w * w).sum())


def make_testbed(problem: Problem, n: int, *, seed: int, val_ratio: float = 1.0) -> Testbed:
    r"""Draw M = round(αN) training and round(val_ratio · M) validation samples (same v) and fit the
    logistic teacher on the training set.

    Parameters
    ----------
    problem : Problem
        Must have a :class:`~kdtheory.problem.LogisticTeacher`.
    n : int
        Dimension N.
    seed : int
        Seed of the draw (v, labels, noise, the student's subset).
    val_ratio : float
        Validation size relative to M.
    """
    if not isinstance(problem, Problem) or not isinstance(problem.teacher, LogisticTeacher):
        raise ValueError("problem must be a Problem with a LogisticTeacher")
    val_ratio = check_real("val_ratio", val_ratio, 0.0, 100.0, lo_open=True)
    rng = np.random.default_rng(check_integer("seed", seed, 0))
    data = problem.data
    m = n_samples(data, n)
    m_val = max(1, round(val_ratio * m))
    both = sample(GaussianMixture((m + m_val) / n, data.rho, data.delta), n, rng)
    train = TrainingSet(x=both.x[:m], y=both.y[:m], v=both.v)
    teacher = fit_teacher(problem.teacher, train)
    if not teacher.converged:
        raise RuntimeError(f"teacher fit did not converge: {teacher.status}")
    return Testbed(
        problem=problem, n=n, x=train.x, y=train.y, x_val=both.x[m:], y_val=both.y[m:],
        v=both.v, subset=draw_subset(n, problem.student.eta, rng), teacher=teacher,
    )  # fmt: skip


@dataclass
class PathOutcome:
    r"""Where one λ-path run ended and how good its student is on fresh data.

    Attributes
    ----------
    mode : str
        ``gradient`` or ``proposed`` (Algorithm 1).
    chi, temperature : float
        Final χ = 1 − λ₁ and T.
    eg, ce : float
        Test error and population cross-entropy of the trained student (exact given v).
    eg_fit, ce_fit : float
        The same for the exact minimiser at the final (χ, T) (:func:`simulations.fit_student`):
        what the path's choice is worth once training has converged.
    m, q, b : float
        The trained student's order parameters.
    val_loss : float
        Final validation cross-entropy.
    wall_time_s : float
        Wall time of the training steps.
    chi_path, temperature_path : ndarray
        (χ, T) used by every step.
    """

    mode: str
    chi: float
    temperature: float
    eg: float
    ce: float
    eg_fit: float
    ce_fit: float
    m: float
    q: float
    b: float
    val_loss: float
    wall_time_s: float
    chi_path: np.ndarray = field(repr=False)
    temperature_path: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class ExactFit:
    """The exact minimiser at one (χ, T) on a testbed: test error, population CE (exact given v)
    and the validation cross-entropy the λ path sees."""

    chi: float
    temperature: float
    eg: float
    ce: float
    val_ce: float


def fit_at(bed: Testbed, chi: float, temperature: float) -> ExactFit:
    r"""Fit the student exactly (:func:`simulations.fit_student`) at (χ, T) on ``bed`` and score it.

    val_ce = mean over the validation set of log(1 + e^{−y h}), h = w·x/√N + b.
    """
    student = dataclasses.replace(bed.problem.student, chi=chi, temperature=temperature)
    fit = fit_student(student, TrainingSet(bed.x, bed.y, bed.v), bed.teacher.h, bed.subset)
    if not fit.converged:
        raise RuntimeError(f"student fit at chi={chi:g}, T={temperature:g}: {fit.status}")
    data = bed.problem.data
    m, q = float(fit.w @ bed.v) / bed.n, float(fit.w @ fit.w) / bed.n
    h_val = bed.x_val @ fit.w / math.sqrt(bed.n) + fit.b
    return ExactFit(
        chi, temperature, float(data.error(m, q, fit.b)), float(data.cross_entropy(m, q, fit.b)),
        float(np.mean(np.logaddexp(0.0, -bed.y_val * h_val))),
    )  # fmt: skip


def validation_optimum(bed: Testbed, start: tuple[float, float] = (0.5, 1.0)) -> ExactFit:
    r"""argmin over χ ∈ [0, 1], T ∈ [0.1, 10] of the exact minimiser's validation cross-entropy.

    The bilevel problem the λ path approximates, solved on the same data without the one-step
    truncation (bounded Nelder–Mead on (χ, log T) from ``start`` = (χ, T), each point an exact fit):
    its distance to the λ path's end is the short-horizon bias, its distance to the theory's
    optimum the finite validation set's noise.
    """
    lo, hi = math.log(TEMPERATURE_BOX[0]), math.log(TEMPERATURE_BOX[1])

    def value(x: np.ndarray) -> float:
        return fit_at(bed, float(x[0]), float(math.exp(x[1]))).val_ce

    x0 = np.array([start[0], math.log(start[1])])
    res = minimize(
        value, x0, method="Nelder-Mead", bounds=[(0.0, 1.0), (lo, hi)],
        options={"xatol": 1e-3, "fatol": 1e-8, "initial_simplex": _simplex(*x0)},
    )  # fmt: skip
    return fit_at(bed, float(res.x[0]), float(math.exp(res.x[1])))


def run_lambda_path(
    bed: Testbed,
    mode: str,
    *,
    steps: int = 2000,
    lr: float = 1.0,
    meta_lr: float = 0.05,
    start: tuple[float, float] = (0.5, 1.0),
    batch_size: int | None = None,
    e1: int = 10,
    e2: int = 10,
    seed: int = 0,
) -> PathOutcome:
    r"""Train the linear student with the λ path on ``bed`` and score it on fresh data.

    Parameters
    ----------
    bed : Testbed
        Data, teacher, λ (as weight decay λN/M on W).
    mode : str
        ``"gradient"`` (rule (2) at every step) or ``"proposed"`` (Algorithm 1), or ``"fixed"``.
    steps : int
        Steps of W (and of λ where the mode says so).
    lr, meta_lr : float
        γ of W (the unrolled step) and Adam's rate on θ = (logit λ₁, log T).
    start : (float, float)
        Initial (λ₁, T).
    batch_size : int or None
        Training minibatch; None: the whole training set (deterministic gradient descent, so that
        what remains is the bias of the rule, not minibatch noise). Validation: always all of it.
    e1, e2 : int
        Algorithm 1's cycle.
    seed : int
        Seed of the minibatch order.
    """
    train, val = bed.split("train"), bed.split("val")
    model = LinearStudent(len(bed.subset))
    opt = LambdaPathOptimizer(
        model, bed.teacher_logits(), train, val, mode=mode, lambda1=start[0],
        temperature=start[1], lr=lr, meta_lr=meta_lr, batch_size=batch_size or len(train),
        val_batch_size=len(val), e1=e1, e2=e2, weight_decay=bed.weight_decay, seed=seed,
    )  # fmt: skip
    res = opt.run(steps)
    data = bed.problem.data
    m, q, b = bed.order_parameters(model)
    chi, temp = 1.0 - res.lambda1, res.temperature
    exact = fit_at(bed, chi, temp)
    return PathOutcome(
        mode=mode, chi=chi, temperature=temp, eg=float(data.error(m, q, b)),
        ce=float(data.cross_entropy(m, q, b)), eg_fit=exact.eg, ce_fit=exact.ce,
        m=m, q=q, b=b, val_loss=res.val_loss,
        wall_time_s=res.wall_time_s, chi_path=1.0 - np.asarray(res.record.lambda1),
        temperature_path=np.asarray(res.record.temperature),
    )  # fmt: skip


# ----------------------------------------------------------------------------- theory ---
@dataclass(frozen=True)
class TheoryOptimum:
    r"""The theory's best (χ, T) of one objective over χ ∈ [0, 1], T ∈ [0.1, 10].

    Attributes
    ----------
    objective : str
        ``"ce"`` (population cross-entropy, the λ path's target) or ``"eg"`` (test error).
    chi, temperature : float
        The optimum.
    eg, ce : float
        The student's ε_g and population cross-entropy there.
    solves : int
        Replica solves used (coarse grid and Nelder–Mead).
    at_bound : tuple of str
        The bounds the optimum sits on, e.g. ``("chi=1",)``.
    """

    objective: str
    chi: float
    temperature: float
    eg: float
    ce: float
    solves: int
    at_bound: tuple[str, ...]


def theory_point(
    problem: Problem, chi: float, temperature: float, init: replica.Solution | None = None
) -> tuple[float, float, replica.Solution]:
    """(ε_g, population CE, solution) of the student at (χ, T); NaN where the solve fails."""
    sol = replica.solve(problem.replace(chi=chi, temperature=temperature), init=init)
    if not sol.converged:
        return math.nan, math.nan, sol
    return sol.student.eg, replica.population_loss(sol).student, sol


def theory_landscape(
    problem: Problem, chis: np.ndarray, temperatures: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ε_g and population CE of the student on the grid, arrays of shape (len(T), len(χ)).

    Each row (one T) is warm-started along χ from the previous point.
    """
    eg = np.full((len(temperatures), len(chis)), np.nan)
    ce = np.full_like(eg, np.nan)
    for i, t in enumerate(temperatures):
        init = None
        for j, c in enumerate(chis):
            eg[i, j], ce[i, j], sol = theory_point(problem, float(c), float(t), init)
            init = sol if sol.converged else None
    return eg, ce


def theory_optimum(
    problem: Problem, objective: str = "ce", *, grid: tuple[int, int] = (9, 9), starts: int = 3
) -> TheoryOptimum:
    r"""Minimise the student's population CE (or ε_g) over χ ∈ [0, 1], T ∈ [0.1, 10] in theory.

    The search variables are (u, log T), u = 1 − √(1 − χ): at large T the loss turns steep near
    χ = 1 (the soft term's pull on h is χ/T against the hard term's 1 − χ), which u spreads out.
    A coarse grid (``grid`` = (points in u, points in log T)) gives its local minima (cells not
    above any of their four neighbours); a bounded Nelder–Mead search starts from the ``starts``
    best of them (the landscape can have one minimum at low and one at high T), every solve
    warm-started from the last one; the best end point is returned.
    """
    check_choice("objective", objective, OBJECTIVES)
    grid = (check_integer("grid[0]", grid[0], 2), check_integer("grid[1]", grid[1], 2))
    starts = check_integer("starts", starts, 1)
    lo, hi = math.log(TEMPERATURE_BOX[0]), math.log(TEMPERATURE_BOX[1])
    chis, temps = _chi(np.linspace(0.0, 1.0, grid[0])), np.exp(np.linspace(lo, hi, grid[1]))
    eg, ce = theory_landscape(problem, chis, temps)
    table = np.where(
        np.isfinite(ce if objective == "ce" else eg), ce if objective == "ce" else eg, np.inf
    )
    padded = np.pad(table, 1, constant_values=np.inf)
    centre = padded[1:-1, 1:-1]
    local = (
        (centre <= padded[:-2, 1:-1]) & (centre <= padded[2:, 1:-1])
        & (centre <= padded[1:-1, :-2]) & (centre <= padded[1:-1, 2:]) & np.isfinite(centre)
    )  # fmt: skip
    cells = sorted(zip(*np.nonzero(local), strict=True), key=lambda ij: table[ij])[:starts]
    state = {"init": None, "solves": table.size}

    def value(x: np.ndarray) -> float:
        e, c, sol = theory_point(problem, _chi(x[0]), float(math.exp(x[1])), state["init"])
        state["solves"] += 1
        if sol.converged:
            state["init"] = sol
        out = c if objective == "ce" else e
        return out if math.isfinite(out) else math.inf

    best = None
    for i, j in cells:
        x0 = np.array([1.0 - math.sqrt(1.0 - chis[j]), math.log(temps[i])])
        res = minimize(
            value, x0, method="Nelder-Mead", bounds=[(0.0, 1.0), (lo, hi)],
            options={"xatol": 1e-4, "fatol": 1e-10, "initial_simplex": _simplex(*x0)},
        )  # fmt: skip
        if best is None or res.fun < best.fun:
            best = res
    chi, temp = _chi(best.x[0]), float(math.exp(best.x[1]))
    e, c, _ = theory_point(problem, chi, temp)
    bounds = []
    if chi <= 1e-3:
        bounds.append("chi=0")
    if chi >= 1.0 - 1e-3:
        bounds.append("chi=1")
    if best.x[1] <= lo + 1e-3:
        bounds.append(f"T={TEMPERATURE_BOX[0]:g}")
    if best.x[1] >= hi - 1e-3:
        bounds.append(f"T={TEMPERATURE_BOX[1]:g}")
    return TheoryOptimum(objective, chi, temp, e, c, state["solves"] + 1, tuple(bounds))


def _chi(u):
    """χ = 1 − (1 − u)², the inverse of u = 1 − √(1 − χ) (float for a scalar)."""
    out = 1.0 - (1.0 - np.asarray(u, dtype=float)) ** 2
    return float(out) if out.ndim == 0 else out


def _simplex(chi: float, log_t: float) -> np.ndarray:
    """A start simplex of side 0.1 in χ and 0.3 in log T, pointing into the box."""
    dc = 0.1 if chi < 0.5 else -0.1
    dt = 0.3 if log_t < 0.0 else -0.3
    return np.array([[chi, log_t], [chi + dc, log_t], [chi, log_t + dt]])


# ------------------------------------------------------------------------- comparison ---
@dataclass
class Judgement:
    r"""The λ path on one problem over several seeds, against the theory's optimum.

    Attributes
    ----------
    problem : Problem
        The problem (its χ, T are not used).
    n : int
        Dimension N.
    optimum : dict
        ``"ce"`` and ``"eg"``: the theory's :class:`TheoryOptimum` of each objective.
    rows : list of dict
        One per (seed, method), method ∈ modes ∪ {"oracle-local", "oracle", "theory-opt"}: ``chi``,
        ``temperature``, ``eg`` and ``ce`` of the student on fresh data (trained by the λ path; for
        the oracles the exact minimiser at the validation optimum of :func:`validation_optimum`,
        searched from the λ path's start (``oracle-local``) and the better of that and a search
        from the theory's optimum (``oracle``); for ``theory-opt`` the exact minimiser at the
        theory's CE optimum, all on the same draw), ``theory_eg`` and ``theory_ce`` at that (χ, T)
        (N → ∞), ``wall_time_s``.
    paths : list of PathOutcome
        The λ-path runs (trajectories), in the order of the rows.
    """

    problem: Problem
    n: int
    optimum: dict[str, TheoryOptimum]
    rows: list[dict]
    paths: list[PathOutcome]


def judge(
    problem: Problem,
    n: int,
    seeds: int | list[int],
    *,
    modes: tuple[str, ...] = ("gradient", "proposed"),
    oracle: bool = True,
    **path_options,
) -> Judgement:
    r"""Run the λ path (each of ``modes``) on ``seeds`` draws of the solvable model and compare.

    Parameters
    ----------
    problem : Problem
        Data, logistic teacher, student's λ and η.
    n : int
        Dimension N.
    seeds : int or list of int
        Number of draws (seeds 0 … seeds − 1) or the seeds themselves.
    modes : tuple of str
        λ-path modes (``"gradient"``, ``"proposed"``).
    oracle : bool
        Also solve the bilevel problem exactly on each draw (:func:`validation_optimum`).
    **path_options
        Passed to :func:`run_lambda_path` (steps, lr, meta_lr, start, …).
    """
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    optimum = {obj: theory_optimum(problem, obj) for obj in OBJECTIVES}
    star = optimum["ce"]
    rows, paths = [], []

    def row(seed, method, chi, temp, eg, ce, wall):
        t_eg, t_ce, _ = theory_point(problem, chi, temp)
        rows.append(
            dict(seed=seed, method=method, chi=chi, temperature=temp, eg=eg, ce=ce,
                 theory_eg=t_eg, theory_ce=t_ce, wall_time_s=wall)
        )  # fmt: skip

    for seed in seed_list:
        bed = make_testbed(problem, n, seed=seed)
        at_star = fit_at(bed, star.chi, star.temperature)
        row(seed, "theory-opt", star.chi, star.temperature, at_star.eg, at_star.ce, 0.0)
        if oracle:
            t0 = time.perf_counter()
            local = validation_optimum(bed, start=path_options.get("start", (0.5, 1.0)))
            wall = time.perf_counter() - t0
            row(seed, "oracle-local", local.chi, local.temperature, local.eg, local.ce, wall)
            far = validation_optimum(bed, start=(star.chi, star.temperature))
            best = min(local, far, key=lambda f: f.val_ce)
            wall = time.perf_counter() - t0
            row(seed, "oracle", best.chi, best.temperature, best.eg, best.ce, wall)
        for mode in modes:
            out = run_lambda_path(bed, mode, seed=seed, **path_options)
            paths.append(out)
            row(seed, mode, out.chi, out.temperature, out.eg, out.ce, out.wall_time_s)
    return Judgement(problem, n, optimum, rows, paths)


def summarise(judgement: Judgement) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and standard error over seeds of every numeric column, per method.

    ``d_eg`` and ``d_ce`` are paired: the method's ε_g (CE) minus that of the exact minimiser at
    the theory's optimum on the same draw (``theory-opt``), which removes the draw's own shift.
    """
    ref = {r["seed"]: r for r in judgement.rows if r["method"] == "theory-opt"}
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for method in dict.fromkeys(r["method"] for r in judgement.rows):
        sel = [r for r in judgement.rows if r["method"] == method]
        sel = [dict(r, d_eg=r["eg"] - ref[r["seed"]]["eg"], d_ce=r["ce"] - ref[r["seed"]]["ce"])
               for r in sel]  # fmt: skip
        cols = {}
        keys = ("chi", "temperature", "eg", "ce", "d_eg", "d_ce", "theory_eg", "theory_ce")
        for key in (*keys, "wall_time_s"):
            v = np.array([r[key] for r in sel], dtype=float)
            sem = v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else math.nan
            cols[key] = (float(v.mean()), float(sem))
        out[method] = cols
    return out
