"""The neural experiments, each a module with its CLI, on top of the neural core.

:mod:`~kdtheory.neural.experiments.train` (one teacher or student),
:mod:`~kdtheory.neural.experiments.table` (the λ-path comparison table of Gorpinich et al.),
:mod:`~kdtheory.neural.experiments.compress` (the compression study),
:mod:`~kdtheory.neural.experiments.grow` (the anti-distillation study of Petrushina et al.),
:mod:`~kdtheory.neural.experiments.selfdistil` (multi-stage self-distillation under label noise)
and :mod:`~kdtheory.neural.experiments.solvable` (the λ path on the solvable model). None of them
re-implements training, timing, IO or its grid loop: they call the core. ``python -m
kdtheory.neural.<name>`` runs the CLI of each (train, table, compress, grow, selfdistil).
"""
