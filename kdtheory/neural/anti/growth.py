r"""Growth operators of anti-distillation: a trained small teacher g(x, û) → a larger student w₁ = φ(û).

Petrushina, Grabovoy, Bakhteev & Strijov, "Anti-distillation: knowledge transfer from simple model
to a complex one": a teacher trained on D₁ (c₁ classes, n₁ inputs) initialises a wider student for
D₂ (c₂ ≥ c₁ classes, n₂ ≥ n₁ inputs).  One operator, :func:`grow`, covers every growth of the
work: wider Linear layers (and the next layer's inputs), more Conv2d feature maps (and the next
conv's inputs or, after a flatten, the next Linear's), a wider LSTM (all four gates, the recurrent
weights too), new classes (output rows) and a larger input (ψ below).

How it works.  Each *dimension* of the network (the input, every hidden width, the classes) gets
an index map m from student units to teacher units (−1: a new unit) and a count c(j) = #{k :
m(k) = m(j)}.  A student tensor is gathered from the teacher's along its axes; an axis that
*consumes* a dimension (a layer's input axis) divides by c, so that replicated units sum back to
the teacher's unit.  A position with any new index is the **extension**; the returned mask is
True where the student weight is a (possibly rescaled) teacher weight.

Schemes (``SCHEMES``) for the extension:

``zero``         the extension is 0 (the work's "zero initialisation");
``uniform``      U[0, θ];
``default-ext``  PyTorch's default initialisation, for the extension only;
``default``      PyTorch's default for everything: the teacher is ignored (the baseline);
``net2net``      function-preserving widening (Chen, Goodfellow & Shlens, "Net2Net", 2016): a new
                 hidden unit replicates a random teacher unit (its incoming weights and bias), and
                 the outgoing weights of every replicated unit are divided by its count.  For
                 widened layers the student computes exactly the teacher's function.  New classes
                 get zero rows (their logits are 0, the old logits are the teacher's exactly, so
                 the ranking and the ratios of the old-class probabilities are preserved, not the
                 probabilities); new inputs (padding) get zero weights.

Input growth ψ : R^{n₁} → R^{n₂} (:func:`psi`) for images (C, H, W) → (C', H', W'): a 1-channel
teacher's image is repeated on all C' channels; if H' = rH and W' = rW it is upsampled by nearest
neighbour (each pixel an r × r block), otherwise it is zero-padded to the centre.  The first layer
of the student spreads each teacher weight over its copies divided by their number, so an MLP
student computes f(ψ(x)) = g(x) exactly, and on any student input f(x') = g(ψ*(x')) with ψ*
(:func:`shrink`) the channel mean / r × r average pool / centre crop (for every scheme: the
input map is part of φ, not of the extension).  A CNN's convolutions see a different grid, so
there the identity holds only approximately (borders); an LSTM reading rows sees more time steps.

Every model here is a stack of Linear / Conv2d / one LSTM layer with parameter-free activations
and pooling (the students of :mod:`kdtheory.neural.models`: ``mlp``, ``cnn-small``, and
:class:`RowLSTM`); batch norm is refused.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from kdtheory.neural.models import build_model

__all__ = [
    "FAMILIES",
    "SCHEMES",
    "RowLSTM",
    "build_family",
    "grow",
    "hidden_extension",
    "psi",
    "shrink",
]

SCHEMES = ("zero", "uniform", "default-ext", "default", "net2net")
FAMILIES = ("mlp", "cnn", "lstm")


class RowLSTM(nn.Module):
    """An LSTM reading a (C, H, W) image row by row (H steps of C·W features) → Linear(hidden, K)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"RowLSTM needs image inputs (C, H, W); got {input_shape}")
        c, _, w = input_shape
        self.lstm = nn.LSTM(c * w, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        seq = x.permute(0, 2, 1, 3).reshape(n, h, c * w)
        out, _ = self.lstm(seq)
        return self.fc(out[:, -1])


def build_family(
    family: str, input_shape: tuple[int, ...], num_classes: int, width: int, *, seed: int
) -> nn.Module:
    """A network of ``family`` (``mlp``, ``cnn``, ``lstm``) with hidden size ``width``.

    ``mlp``: one hidden layer of ``width`` units; ``cnn``: ``cnn-small`` with ``width`` and
    2·``width`` feature maps and a hidden layer of 4·``width``; ``lstm``: :class:`RowLSTM`.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
    if not (isinstance(width, int) and width >= 1):
        raise ValueError(f"width must be an integer ≥ 1, got {width!r}")
    if family == "mlp":
        return build_model("mlp", input_shape, num_classes, seed=seed, hidden=width)
    if family == "cnn":
        return build_model(
            "cnn-small", input_shape, num_classes, seed=seed, width=width, hidden=4 * width
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RowLSTM(tuple(input_shape), num_classes, hidden=width)


# ------------------------------------------------------------------------------ ψ and ψ* ---


def _grid(n_t: int, n_s: int) -> tuple[torch.Tensor, int]:
    """Index map of one spatial axis (student → teacher, −1 outside) and its replication count."""
    if n_s < n_t:
        raise ValueError(f"the student's grid ({n_s}) is smaller than the teacher's ({n_t})")
    k = torch.arange(n_s)
    if n_s % n_t == 0:
        return k // (n_s // n_t), n_s // n_t
    off = (n_s - n_t) // 2
    m = k - off
    return torch.where((m >= 0) & (m < n_t), m, -1), 1


def _channels(c_t: int, c_s: int) -> tuple[torch.Tensor, int]:
    if c_t == c_s:
        return torch.arange(c_s), 1
    if c_t == 1:
        return torch.zeros(c_s, dtype=torch.long), c_s
    raise ValueError(f"input channels can grow from 1 or stay; got {c_t} → {c_s}")


def psi(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """ψ: teacher images (n, C, H, W) → student images (n, C', H', W') (see the module text)."""
    _, c, h, w = x.shape
    cs, hs, ws = shape
    mc, _ = _channels(c, cs)
    mh, _ = _grid(h, hs)
    mw, _ = _grid(w, ws)
    out = x[:, mc][:, :, mh.clamp(min=0)][:, :, :, mw.clamp(min=0)]
    inside = (mh >= 0)[:, None] & (mw >= 0)[None, :]
    return out * inside.to(x.dtype)


def shrink(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """ψ*: student images → teacher images: channel mean, r × r average pool or centre crop.

    ψ*(ψ(x)) = x; it is the input the grown MLP's first layer effectively sees.
    """
    _, c, h, w = x.shape
    ct, ht, wt = shape
    _channels(ct, c)
    if ct == 1 and c > 1:
        x = x.mean(dim=1, keepdim=True)
    for axis, (n_s, n_t) in ((2, (h, ht)), (3, (w, wt))):
        _grid(n_t, n_s)
        if n_s % n_t == 0:
            r = n_s // n_t
            shape_r = list(x.shape)
            shape_r[axis : axis + 1] = [n_t, r]
            x = x.reshape(shape_r).mean(dim=axis + 1)
        else:
            off = (n_s - n_t) // 2
            x = x.narrow(axis, off, n_t)
    return x


# ------------------------------------------------------------------------ axes of a model ---


@dataclass(frozen=True)
class _Axis:
    dim: str  # "input", "h1", ..., "classes"
    consumes: bool  # an input axis (divides by the count)
    gates: int = 1  # 4 for the stacked LSTM gates
    grid: tuple[int, int] | None = None  # spatial grid of a flattened conv map (consumer axis)


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not list(m.children())]


def _flat_grids(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Input shape (without batch) seen by each Linear, from one forward pass on zeros."""
    seen: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, mod in _leaves(model):
        if isinstance(mod, nn.Flatten):
            hooks.append(
                mod.register_forward_hook(
                    lambda _m, inp, _o, n=name: seen.__setitem__(n, tuple(inp[0].shape[1:]))
                )
            )
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    return seen


def _axes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, list[_Axis | None]]:
    """For each parameter, which dimension each of its axes produces or consumes."""
    leaves = _leaves(model)
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for _, m in leaves):
        raise ValueError("grow: batch-norm layers are not supported (no buffers to grow)")
    n_linear = sum(isinstance(m, nn.Linear) for _, m in leaves)
    grids = _flat_grids(model, input_shape)
    out: dict[str, list[_Axis | None]] = {}
    prev, hidden, seen_linear, pending_grid = "input", 0, 0, None

    def new_dim(last: bool) -> str:
        nonlocal hidden
        if last:
            return "classes"
        hidden += 1
        return f"h{hidden}"

    for name, mod in leaves:
        pre = f"{name}." if name else ""
        if isinstance(mod, nn.Flatten) and prev != "input" and len(grids.get(name, ())) == 3:
            pending_grid = grids[name][1:]
        elif isinstance(mod, nn.Conv2d):
            d = new_dim(False)
            out[pre + "weight"] = [_Axis(d, False), _Axis(prev, True), None, None]
            if mod.bias is not None:
                out[pre + "bias"] = [_Axis(d, False)]
            prev = d
        elif isinstance(mod, nn.Linear):
            seen_linear += 1
            d = new_dim(seen_linear == n_linear)
            out[pre + "weight"] = [_Axis(d, False), _Axis(prev, True, grid=pending_grid)]
            if mod.bias is not None:
                out[pre + "bias"] = [_Axis(d, False)]
            prev, pending_grid = d, None
        elif isinstance(mod, nn.LSTM):
            if mod.num_layers != 1 or mod.bidirectional or mod.proj_size:
                raise ValueError("grow: only a one-layer unidirectional LSTM is supported")
            d = new_dim(False)
            out[pre + "weight_ih_l0"] = [_Axis(d, False, gates=4), _Axis(prev, True)]
            out[pre + "weight_hh_l0"] = [_Axis(d, False, gates=4), _Axis(d, True)]
            for b in ("bias_ih_l0", "bias_hh_l0"):
                if getattr(mod, b, None) is not None:
                    out[pre + b] = [_Axis(d, False, gates=4)]
            prev = d
        elif any(True for _ in mod.parameters(recurse=False)):
            raise ValueError(f"grow: layer {type(mod).__name__} is not supported")
    return out


def _sizes(model: nn.Module, axes: dict[str, list[_Axis | None]]) -> dict[str, int]:
    params = dict(model.named_parameters())
    sizes: dict[str, int] = {}
    for name, ax in axes.items():
        for a, n in zip(ax, params[name].shape, strict=True):
            if a is not None and a.grid is None:
                sizes.setdefault(a.dim, n // a.gates)
    return sizes


# --------------------------------------------------------------------------------- growth ---


def _input_map(
    family_kind: str, shape_t: tuple[int, ...], shape_s: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map and counts of the input dimension (flat for an MLP, channels for a CNN, C·W rows)."""
    if len(shape_t) != len(shape_s):
        raise ValueError(f"teacher input {shape_t} and student input {shape_s} differ in rank")
    if len(shape_t) == 1:
        return _grid(shape_t[0], shape_s[0])[0], torch.ones(shape_s[0])
    (ct, ht, wt), (cs, hs, ws) = shape_t, shape_s
    mc, rc = _channels(ct, cs)
    if family_kind == "channels":
        return mc, torch.full((cs,), float(rc))
    mw, rw = _grid(wt, ws)
    if family_kind == "rows":
        m = mc[:, None] * wt + mw[None, :]
        m = torch.where(mw[None, :] >= 0, m, -1)
        return m.reshape(-1), torch.full((cs * ws,), float(rc * rw))
    mh, rh = _grid(ht, hs)
    m = (mc[:, None, None] * ht + mh[None, :, None]) * wt + mw[None, None, :]
    m = torch.where((mh[None, :, None] >= 0) & (mw[None, None, :] >= 0), m, -1)
    return m.reshape(-1), torch.full((cs * hs * ws,), float(rc * rh * rw))


def _hidden_map(
    n_t: int, n_s: int, replicate: bool, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    if n_s < n_t:
        raise ValueError(f"the student ({n_s} units) is narrower than the teacher ({n_t})")
    m = torch.arange(n_s)
    if not replicate:
        return torch.where(m < n_t, m, -1), torch.ones(n_s)
    if n_s > n_t:
        m[n_t:] = torch.randint(n_t, (n_s - n_t,), generator=gen)
    counts = torch.bincount(m, minlength=n_t).to(torch.float32)
    return m, counts[m]


def _axis_index(a: _Axis, maps: dict, sizes_t: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher index (−1: new) and divisor along one axis of a student tensor."""
    m, c = maps[a.dim]
    if a.gates > 1:
        n_t = sizes_t[a.dim]
        g = torch.arange(a.gates)
        m = torch.where(m[None, :] >= 0, g[:, None] * n_t + m[None, :], -1).reshape(-1)
        c = c.repeat(a.gates)
    if a.grid is not None:
        (gt, gs) = a.grid
        mh, rh = _grid(gt[0], gs[0])
        mw, rw = _grid(gt[1], gs[1])
        ms = mh[:, None] * gt[1] + mw[None, :]
        ms = torch.where((mh[:, None] >= 0) & (mw[None, :] >= 0), ms, -1).reshape(-1)
        s_t = gt[0] * gt[1]
        m = torch.where((m[:, None] >= 0) & (ms[None, :] >= 0), m[:, None] * s_t + ms, -1)
        m = m.reshape(-1)
        c = (c[:, None] * float(rh * rw)).expand(-1, ms.numel()).reshape(-1)
    return m, (c if a.consumes else torch.ones_like(c))


def grow(
    teacher: nn.Module,
    student: nn.Module,
    scheme: str,
    *,
    teacher_input_shape: tuple[int, ...],
    student_input_shape: tuple[int, ...],
    theta: float = 0.05,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """w₁ = φ(û): the student ``student`` (default-initialised, same family, every width ≥ the
    teacher's) with the teacher's weights in place and the extension set by ``scheme``.

    Parameters
    ----------
    teacher : nn.Module
        The trained teacher g(·, û) (not modified).
    student : nn.Module
        A freshly initialised larger network of the same family (not modified; its default
        weights are used by ``default-ext`` and ``default``).
    scheme : str
        One of ``SCHEMES``.
    teacher_input_shape, student_input_shape : tuple of int
        Input shapes (C, H, W) or (n,), for the input map ψ.
    theta : float
        θ > 0 of the ``uniform`` scheme U[0, θ].
    seed : int
        Seed of U[0, θ] and of Net2Net's choice of units to replicate.

    Returns
    -------
    (nn.Module, dict of str → bool Tensor)
        The grown student (a copy) and, per parameter, the mask of weights taken from the teacher
        (all False for ``default``).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}")
    if not (isinstance(theta, int | float) and math.isfinite(theta) and theta > 0):
        raise ValueError(f"theta must be a finite number > 0, got {theta!r}")
    out = copy.deepcopy(student)
    if scheme == "default":
        return out, {n: torch.zeros_like(p, dtype=torch.bool) for n, p in out.named_parameters()}
    ax_t = _axes(teacher, tuple(teacher_input_shape))
    ax_s = _axes(out, tuple(student_input_shape))
    if [(k, [a and (a.dim, a.gates) for a in v]) for k, v in ax_t.items()] != [
        (k, [a and (a.dim, a.gates) for a in v]) for k, v in ax_s.items()
    ]:
        raise ValueError("grow: teacher and student are not of the same architecture")
    p_t, p_s = dict(teacher.named_parameters()), dict(out.named_parameters())
    size_t, size_s = _sizes(teacher, ax_t), _sizes(out, ax_s)
    gen = torch.Generator().manual_seed(seed)
    kind = "flat"
    first = next(iter(ax_t))
    if first.endswith("weight") and p_t[first].dim() == 4:
        kind = "channels"
    elif first.endswith("weight_ih_l0"):
        kind = "rows"
    maps = {"input": _input_map(kind, tuple(teacher_input_shape), tuple(student_input_shape))}
    if maps["input"][0].numel() != size_s["input"]:
        raise ValueError("grow: the student's input size does not match student_input_shape")
    for d in size_t:
        if d.startswith("h"):
            maps[d] = _hidden_map(size_t[d], size_s[d], scheme == "net2net", gen)
    maps["classes"] = _hidden_map(size_t["classes"], size_s["classes"], False, gen)
    masks: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, axes in ax_s.items():
            value = p_t[name].detach().clone()
            keep = torch.ones_like(value, dtype=torch.bool)
            for i, a in enumerate(axes):
                if a is None:
                    continue
                if a.grid is not None:
                    a = _Axis(a.dim, a.consumes, grid=(ax_t[name][i].grid, a.grid))
                m, c = _axis_index(a, maps, size_t)
                shape = [1] * value.dim()
                shape[i] = -1
                value = value.index_select(i, m.clamp(min=0)) / c.view(shape)
                keep = keep.index_select(i, m.clamp(min=0)) & (m >= 0).view(shape)
            p = p_s[name]
            ext = p.detach().clone()
            if scheme in ("zero", "net2net"):
                ext.zero_()
            elif scheme == "uniform":
                ext.uniform_(0.0, theta, generator=gen)
            p.copy_(torch.where(keep, value, ext))
            masks[name] = keep
    return out, masks


def hidden_extension(
    student: nn.Module,
    masks: dict[str, torch.Tensor],
    input_shape: tuple[int, ...],
    old_classes: int,
) -> dict[str, torch.Tensor]:
    """The extension minus the rows of the new classes: the weights of the new hidden units (the
    block that a ``zero`` start leaves dead for ever) and of new (padded) inputs, if any (not dead:
    their gradient is the input times the back-propagated error).
    """
    out = {}
    for name, axes in _axes(student, tuple(input_shape)).items():
        ext = ~masks[name]
        if axes[0] is not None and axes[0].dim == "classes":
            ext = ext.clone()
            ext[old_classes:] = False
        out[name] = ext
    return out
