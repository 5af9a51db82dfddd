r"""Choosing the KD metaparameters λ = (λ₁, T): the λ-path optimiser of Gorpinich, Bakhteev & Strijov
(2021–2022) and the methods it is compared with.

:mod:`~kdtheory.neural.lambda_path.hypergrad` (the one-step unrolled hypergradient, rule (2)),
:mod:`~kdtheory.neural.lambda_path.optimiser` (the optimiser object and Algorithm 1) and
:mod:`~kdtheory.neural.lambda_path.methods` (without KD, naive, random, gradient, Hyperopt,
proposed: the comparison of the table).
"""

from kdtheory.neural.lambda_path.hypergrad import HyperStep, hypergradient
from kdtheory.neural.lambda_path.methods import Budget, KDExperiment, MethodResult
from kdtheory.neural.lambda_path.optimiser import (
    LambdaPathOptimizer,
    LambdaPathResult,
    LinearTrajectory,
)

__all__ = [
    "Budget",
    "HyperStep",
    "KDExperiment",
    "LambdaPathOptimizer",
    "LambdaPathResult",
    "LinearTrajectory",
    "MethodResult",
    "hypergradient",
]
