"""The main job's named figure sets (``python -m kdtheory.phase_diagram --figures NAME``).

One module a set: :mod:`~kdtheory.figures.headline` (the default run: the four findings of
Saglietti & Zdeborová (2022) and the KD gain map), :mod:`~kdtheory.figures.optimal` (the optimal
metaparameters over (α, λ̃) and (α, ρ)), :mod:`~kdtheory.figures.selfdistil` (optimal
multi-stage self-distillation under label noise), :mod:`~kdtheory.figures.realdata` (the theory
with the data's own covariance against binary Fashion-MNIST tasks) and
:mod:`~kdtheory.figures.multiclass` (K-class softmax distillation: "dark knowledge", the optimal
temperature, the oracle teacher). They build on the library core
(:mod:`kdtheory.sweep`, :mod:`kdtheory.journal`, :mod:`kdtheory.plotting`) and the solvers
(``replica``, ``simulations``); nothing below imports them.
"""
