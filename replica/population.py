r"""Population losses of the asymptotic teacher and student: the cross-entropy on fresh data.

A linear classifier h(x) = w·x/√N + b on a fresh sample of the mixture has h | y ~ N(y m + b, Δq),
so its expected loss against the hard (clean, cluster) label, Σ_y P(y) E log(1 + e^{−y h}) — also
under label noise θ, which affects training only — depends on (m, q, b) only
(:meth:`kdtheory.problem.GaussianMixture.cross_entropy`). At the replica fixed point these are the
order parameters of the solution.
"""

from __future__ import annotations

from typing import NamedTuple

from replica.solver import Solution

__all__ = ["PopulationLoss", "population_loss"]


class PopulationLoss(NamedTuple):
    """Population cross-entropy CE = Σ_y P(y) E log(1 + e^{−y h}) of the teacher and the student."""

    teacher: float
    student: float


def population_loss(solution: Solution) -> PopulationLoss:
    r"""CE(m, q, b) of the teacher (m̃, q̃, b̃) and of the student (m, q, b) of ``solution``.

    The validation loss of the λ path at T_val = 1 on an infinite validation set.
    """
    if not isinstance(solution, Solution):
        raise ValueError(f"solution must be a replica Solution, got {type(solution).__name__}")
    data, t, s = solution.problem.data, solution.teacher, solution.student
    return PopulationLoss(
        teacher=float(data.cross_entropy(t.m, t.q, t.b)),
        student=float(data.cross_entropy(s.m, s.q, s.b)),
    )
