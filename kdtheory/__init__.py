"""kdtheory: exact asymptotics, finite-size checks and neural experiments for knowledge distillation.

The package namespace holds the problem vocabulary only (light to import); the solvers live in
``replica`` (N → ∞) and ``simulations`` (finite N), the neural code in ``kdtheory.neural``.
"""

from kdtheory.problem import (
    BayesTeacher,
    GaussianMixture,
    LogisticTeacher,
    MulticlassMixture,
    OracleTeacher,
    Problem,
    SoftmaxTeacher,
    Spectrum,
    Student,
)

__all__ = [
    "BayesTeacher",
    "GaussianMixture",
    "LogisticTeacher",
    "MulticlassMixture",
    "OracleTeacher",
    "Problem",
    "SoftmaxTeacher",
    "Spectrum",
    "Student",
]
__version__ = "0.1.0"
