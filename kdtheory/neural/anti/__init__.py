r"""Anti-distillation's initialisation φ of a larger student from a smaller teacher (Petrushina,
Grabovoy, Bakhteev & Strijov, *Anti-distillation: knowledge transfer from simple model to a complex
one*).

:mod:`~kdtheory.neural.anti.growth` (the growth operators: wider layers, new classes, a larger
input ψ; Net2Net) and :mod:`~kdtheory.neural.anti.phi` (φ by optimisation, the work's section-4
objective). The experiment and its CLI (``python -m kdtheory.neural.grow``) are
:mod:`kdtheory.neural.experiments.grow`.
"""

from kdtheory.neural.anti.growth import SCHEMES, grow, psi, shrink
from kdtheory.neural.anti.phi import PhiObjective, fit_phi

__all__ = ["SCHEMES", "PhiObjective", "fit_phi", "grow", "psi", "shrink"]
