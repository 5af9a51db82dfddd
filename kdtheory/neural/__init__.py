r"""Neural knowledge distillation: data, models, KD losses, training and the λ-path optimiser.

Everything here needs PyTorch (the ``neural`` extra: ``pip install 'kdtheory[neural]'``); the
top-level ``kdtheory`` package never imports this subpackage, so ``import kdtheory`` stays light.

Notation (as in Gorpinich et al., 2021–2022): f the teacher's logits, g the student's, σ the
softmax over the K
classes, λ₁ = 1 − χ the weight of the hard-label term, T the distillation temperature and T_val
the validation temperature:

    L_train = λ₁ CE(y, σ(g)) + (1 − λ₁) CE(σ(f/T), σ(g/T)),     L_val = CE(y, σ(g/T_val)).

Layout (one idea per file). The core: :mod:`~kdtheory.neural.data` (readers, splits),
:mod:`~kdtheory.neural.models` (the model registry), :mod:`~kdtheory.neural.losses` (KD losses),
:mod:`~kdtheory.neural.device` (device choice, autocast), :mod:`~kdtheory.neural.training` (the
one training loop and evaluation), :mod:`~kdtheory.neural.timing` (threads, inference time),
:mod:`~kdtheory.neural.checkpoints` (atomic files, checkpoints, the teacher cache) and
:mod:`~kdtheory.neural.cli` (the CLI conventions). On the core, two methods:
:mod:`kdtheory.neural.lambda_path` (the λ-path optimiser of Gorpinich et al. and the methods it is
compared with) and :mod:`kdtheory.neural.anti` (anti-distillation's growth operators and φ).
On top, :mod:`kdtheory.neural.experiments` (train, table, compress, grow, selfdistil, solvable),
each with its CLI, ``python -m kdtheory.neural.<name>``.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "kdtheory.neural needs PyTorch: install the `neural` extra, e.g. "
        "pip install torch==2.13.0 && pip install -e '.[neural]'"
    ) from exc
