r"""KD losses as small composable functions (and one module), torchdistill-style.

With g the student's logits, f the teacher's, y the class index, σ the softmax over the K classes,
λ₁ = 1 − χ and T > 0 (all losses are means over the batch; Gorpinich et al. write sums, which only
rescales the learning rate):

    hard_cross_entropy  CE(y, σ(g))                    = −log σ(g)_y
    soft_cross_entropy  CE(σ(f/T), σ(g/T))             = −Σ_k σ(f/T)_k log σ(g/T)_k
    kl_divergence       KL(σ(f/T) ‖ σ(g/T)) (forward) or KL(σ(g/T) ‖ σ(f/T)) (reverse)
    kd_loss             λ₁ CE(y, σ(g)) + (1 − λ₁) s(T) D(σ(f/T), σ(g/T_s)),   s(T) = 1 or T²
    validation_loss     CE(y, σ(g/T_val))

with the soft term D one of ``SOFT_TARGETS``: the cross-entropy (default), the forward KL or the
reverse KL. Khetarpaul et al. (2024) write "KL_div(s, t)" without saying which.

Which outputs are tempered (``TEMPERED``): ``"both"`` (default, Hinton et al., Gorpinich et al.)
divides the student's logits by T too, T_s = T; ``"teacher"`` tempers only the teacher's soft
labels, T_s = 1, as Takanami, Takahashi & Sakata (2025) do. At T = 1 the two coincide; for a
model linear in its weights, g = Wx, the "both" loss of W is the "teacher" loss of W/T, so at
χ = 1 the minimiser with weight decay λ under "both" is T times the one with λT² under "teacher".

The T² factor (``t2_scaling=True``) is Hinton et al.'s: it keeps the soft-term gradient wrt g of
order one as T grows (that gradient scales as 1/T). The default soft term is Gorpinich et al.'s
cross-entropy, not the KL divergence; forward KL = CE − H(σ(f/T)) differs by the teacher's
entropy, which does not depend on the student, so gradients wrt the student's weights agree
(gradients wrt T do not). The reverse KL(σ(g/T) ‖ σ(f/T)) is mode-seeking: its gradient wrt g_j is
(1/T) s_j [(log s_j − log t_j) − Σ_k s_k (log s_k − log t_k)] with s = σ(g/T), t = σ(f/T).
λ₁ and T may be Python floats or 0-d tensors (differentiable, for the hypergradient). Logits are
cast to float32 (float64 stays float64), so the losses are safe under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SOFT_TARGETS",
    "TEMPERED",
    "KDLoss",
    "hard_cross_entropy",
    "kd_loss",
    "kl_divergence",
    "soft_cross_entropy",
    "student_temperature",
    "validation_loss",
]

Scalar = float | torch.Tensor
SOFT_TARGETS = ("cross-entropy", "forward-kl", "reverse-kl")
TEMPERED = ("both", "teacher")


def _up(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def hard_cross_entropy(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """CE(y, σ(g)) = −log σ(g)_y, averaged over the batch.

    Parameters
    ----------
    student_logits : Tensor
        g, shape (n, K).
    targets : Tensor
        y, int64 class indices, shape (n,).
    """
    return F.cross_entropy(_up(student_logits), targets)


def student_temperature(temperature: Scalar, tempered: str) -> Scalar:
    """T_s, the temperature of the student's softmax: T for ``"both"``, 1 for ``"teacher"``."""
    if tempered not in TEMPERED:
        raise ValueError(f"tempered must be one of {', '.join(TEMPERED)}; got {tempered!r}")
    return temperature if tempered == "both" else 1.0


def soft_cross_entropy(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: Scalar,
    *,
    tempered: str = "both",
) -> torch.Tensor:
    """CE(σ(f/T), σ(g/T_s)) = −Σ_k σ(f/T)_k log σ(g/T_s)_k, averaged over the batch.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor
        g and f, shape (n, K).
    temperature : float or Tensor
        T > 0.
    tempered : str
        ``"both"`` (T_s = T) or ``"teacher"`` (T_s = 1), see ``TEMPERED``.
    """
    ts = student_temperature(temperature, tempered)
    g, f = _up(student_logits), _up(teacher_logits).to(_up(student_logits).dtype)
    p = torch.softmax(f / temperature, dim=-1)
    return -(p * torch.log_softmax(g / ts, dim=-1)).sum(dim=-1).mean()


def kl_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: Scalar,
    *,
    direction: str = "forward",
    tempered: str = "both",
) -> torch.Tensor:
    """KL divergence between the tempered softmaxes, averaged over the batch.

    forward: KL(t ‖ s) = Σ_k t_k (log t_k − log s_k); reverse: KL(s ‖ t) = Σ_k s_k (log s_k −
    log t_k); with s = σ(g/T_s), t = σ(f/T).

    Parameters
    ----------
    student_logits, teacher_logits : Tensor
        g and f, shape (n, K).
    temperature : float or Tensor
        T > 0.
    direction : str
        ``"forward"`` (the teacher's distribution first, as in Hinton et al.) or ``"reverse"``.
    tempered : str
        ``"both"`` (T_s = T) or ``"teacher"`` (T_s = 1), see ``TEMPERED``.
    """
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be forward or reverse; got {direction!r}")
    ts = student_temperature(temperature, tempered)
    g, f = _up(student_logits), _up(teacher_logits).to(_up(student_logits).dtype)
    log_s = torch.log_softmax(g / ts, dim=-1)
    log_t = torch.log_softmax(f / temperature, dim=-1)
    log_p, log_q = (log_t, log_s) if direction == "forward" else (log_s, log_t)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()


def _soft_term(
    g: torch.Tensor, f: torch.Tensor, temperature: Scalar, soft: str, tempered: str
) -> torch.Tensor:
    """D(σ(f/T), σ(g/T_s)) for D = ``soft`` in ``SOFT_TARGETS``."""
    if soft == "cross-entropy":
        return soft_cross_entropy(g, f, temperature, tempered=tempered)
    if soft in ("forward-kl", "reverse-kl"):
        return kl_divergence(g, f, temperature, direction=soft.split("-")[0], tempered=tempered)
    raise ValueError(f"soft must be one of {', '.join(SOFT_TARGETS)}; got {soft!r}")


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    lambda1: Scalar,
    temperature: Scalar,
    *,
    t2_scaling: bool = False,
    soft: str = "cross-entropy",
    tempered: str = "both",
) -> torch.Tensor:
    """The distillation loss λ₁ CE(y, σ(g)) + (1 − λ₁) s(T) D(σ(f/T), σ(g/T_s)).

    Parameters
    ----------
    student_logits : Tensor
        g, shape (n, K).
    teacher_logits : Tensor or None
        f, shape (n, K) (cached once, see :func:`kdtheory.neural.training.predict_logits`); may be
        None only when λ₁ is the float 1.0 (plain cross-entropy).
    targets : Tensor
        y, int64 class indices, shape (n,).
    lambda1 : float or Tensor
        λ₁ = 1 − χ ∈ [0, 1], the weight of the hard-label term.
    temperature : float or Tensor
        T > 0.
    t2_scaling : bool
        Multiply the soft term by T² (Hinton et al.); default False (Gorpinich et al.'s loss).
    soft : str
        The soft term D, one of ``SOFT_TARGETS``: ``"cross-entropy"`` (default, Gorpinich et
        al.'s loss), ``"forward-kl"`` KL(σ(f/T) ‖ σ(g/T)) or ``"reverse-kl"`` KL(σ(g/T) ‖ σ(f/T)).
    tempered : str
        Which softmaxes are tempered (``TEMPERED``): ``"both"`` (T_s = T, default) or
        ``"teacher"`` (T_s = 1: the student's plain σ(g) against the teacher's σ(f/T)).

    Returns
    -------
    Tensor
        0-d loss; differentiable wrt g and, when they are tensors, wrt λ₁ and T.
    """
    student_temperature(temperature, tempered)  # checks tempered also when λ₁ = 1
    hard = hard_cross_entropy(student_logits, targets)
    if isinstance(lambda1, float | int) and float(lambda1) == 1.0:
        return hard
    if teacher_logits is None:
        raise ValueError("teacher_logits are required when lambda1 < 1")
    term = _soft_term(student_logits, teacher_logits, temperature, soft, tempered)
    if t2_scaling:
        term = term * (temperature * temperature)
    return lambda1 * hard + (1 - lambda1) * term


def validation_loss(
    student_logits: torch.Tensor, targets: torch.Tensor, t_val: float = 1.0
) -> torch.Tensor:
    """L_val = CE(y, σ(g/T_val)), averaged over the batch.

    Parameters
    ----------
    student_logits : Tensor
        g, shape (n, K).
    targets : Tensor
        y, int64 class indices.
    t_val : float
        T_val > 0, the validation temperature (1 in Gorpinich et al. unless stated).
    """
    return F.cross_entropy(_up(student_logits) / t_val, targets)


class KDLoss(nn.Module):
    """Module form of :func:`kd_loss` with fixed λ₁ and T: ``KDLoss(0.3, 4.0)(g, f, y)``.

    Parameters
    ----------
    lambda1 : float
        λ₁ = 1 − χ ∈ [0, 1].
    temperature : float
        T > 0.
    t2_scaling : bool
        Multiply the soft term by T².
    soft : str
        The soft term, one of ``SOFT_TARGETS``.
    tempered : str
        ``"both"`` or ``"teacher"``, see ``TEMPERED``.
    """

    def __init__(
        self,
        lambda1: float = 1.0,
        temperature: float = 1.0,
        *,
        t2_scaling: bool = False,
        soft: str = "cross-entropy",
        tempered: str = "both",
    ) -> None:
        super().__init__()
        if not 0.0 <= lambda1 <= 1.0:
            raise ValueError(f"lambda1 must be in [0, 1], got {lambda1!r}")
        if not temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.lambda1 = float(lambda1)
        self.temperature = float(temperature)
        self.t2_scaling = t2_scaling
        if soft not in SOFT_TARGETS:
            raise ValueError(f"soft must be one of {', '.join(SOFT_TARGETS)}; got {soft!r}")
        self.soft = soft
        student_temperature(self.temperature, tempered)
        self.tempered = tempered

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        return kd_loss(
            student_logits,
            teacher_logits,
            targets,
            self.lambda1,
            self.temperature,
            t2_scaling=self.t2_scaling,
            soft=self.soft,
            tempered=self.tempered,
        )

    def extra_repr(self) -> str:
        return (
            f"lambda1={self.lambda1}, temperature={self.temperature}, "
            f"t2_scaling={self.t2_scaling}, soft={self.soft!r}, tempered={self.tempered!r}"
        )
