"""Files: atomic writes, checkpoints, and the teacher cache keyed by the configuration's content.

Every file is written to a temporary file and renamed (:func:`kdtheory.journal.write_atomic`).
A checkpoint holds ``{"state_dict", "config", "extra"}`` and is loaded with ``weights_only=True``.

Teacher checkpoints are cached per user, never in the working directory: by default in
``$XDG_CACHE_HOME/kdtheory/teachers``, or ``~/.cache/kdtheory/teachers`` when that variable is
unset (:func:`default_cache_dir`). The file name carries the content key, the first 12 hex digits
of SHA-256 of the configuration's sorted JSON; a cached checkpoint is reused only when its stored
configuration equals the requested one. One that cannot be used (unreadable, not a checkpoint,
weights of another shape, non-finite weights) raises :class:`DataError` naming the file;
``retrain=True`` (``--retrain-teacher``) trains the teacher again and overwrites it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from kdtheory.journal import write_atomic
from kdtheory.neural.data import DataError, DataSplits
from kdtheory.neural.models import build_model
from kdtheory.neural.training import FitConfig, fit

__all__ = [
    "atomic_write_bytes",
    "default_cache_dir",
    "load_checkpoint",
    "load_or_train_teacher",
    "save_checkpoint",
    "save_png",
]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (parents created) via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def save_png(fig, path: str | Path) -> None:
    """Save a matplotlib figure as PNG at ``path`` atomically and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def save_checkpoint(
    path: str | Path, state_dict: dict, config: dict, extra: dict | None = None
) -> None:
    """Atomically save ``{"state_dict", "config", "extra"}`` with ``torch.save``.

    ``config`` and ``extra`` must hold only JSON-like values (so that loading with
    ``weights_only=True`` accepts them); a ``.json`` copy of ``config`` is written alongside.
    """
    buf = io.BytesIO()
    cpu_state = {k: v.detach().cpu() for k, v in state_dict.items()}
    torch.save({"state_dict": cpu_state, "config": config, "extra": extra or {}}, buf)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_bytes(Path(path).with_suffix(".json"), json.dumps(config, indent=2).encode())


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------- teacher cache ---


def _config_hash(config: dict) -> str:
    """Content key of a configuration: SHA-256 of its sorted JSON, first 12 hex digits."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    """The per-user folder of teacher checkpoints: ``$XDG_CACHE_HOME/kdtheory/teachers``, or
    ``~/.cache/kdtheory/teachers`` when ``XDG_CACHE_HOME`` is unset or not an absolute path."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "kdtheory" / "teachers"


_RETRAIN = "; rerun with --retrain-teacher (retrain=True) to train the teacher again over it"


def _short(exc: BaseException) -> str:
    """``Type: the first sentence that says what is wrong``. torch's messages run to many lines;
    its weights-only refusal opens by advising ``weights_only=False``, which is not repeated."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    prefix = ""
    if lines and lines[0].startswith(("Weights only load failed", "Error(s) in loading")):
        prefix = "refused by the safe loader: " if lines[0].startswith("Weights") else ""
        skip = ("Please file an issue", "Check the documentation")
        lines = [ln for ln in lines[1:] if not ln.startswith(skip)] or lines[:1]
    first = lines[0].split(". ")[0][:200] if lines else ""
    return f"{type(exc).__name__}: {prefix}{first}" if first else type(exc).__name__


def _load_cached_teacher(path: Path, model: nn.Module, cfg: dict) -> dict | None:
    """Load the checkpoint ``path`` into ``model``; its ``extra`` dict, or None if it was saved
    for another configuration. Raises :class:`DataError` naming the file when it is unreadable,
    not a checkpoint, or its weights do not fit ``model`` or are not finite."""
    try:
        ckpt = load_checkpoint(path)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, … by case
        raise DataError(f"{path}: unreadable teacher checkpoint ({_short(exc)}){_RETRAIN}") from exc
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        what = f"dict with keys {list(ckpt)[:5]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DataError(f"{path}: not a teacher checkpoint (a {what}){_RETRAIN}")
    if ckpt.get("config") != cfg:
        return None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:  # keys, shapes, non-tensors
        raise DataError(
            f"{path}: its weights do not fit the {cfg['model']} teacher ({_short(exc)}){_RETRAIN}"
        ) from exc
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DataError(f"{path}: non-finite teacher weights in {', '.join(bad[:3])}{_RETRAIN}")
    extra = ckpt.get("extra")
    return extra if isinstance(extra, dict) else {}


def load_or_train_teacher(
    data: DataSplits,
    name: str,
    *,
    config: FitConfig,
    cache_dir: str | Path | None,
    data_config: dict,
    device: torch.device | str = "cpu",
    model_options: dict | None = None,
    retrain: bool = False,
    quiet: bool = False,
) -> tuple[nn.Module, dict]:
    """Train teacher ``name`` on ``data.teacher_split``, or load it from ``cache_dir``.

    The checkpoint ``teacher-<dataset>-<name>-<hash>.pt`` stores the state dict and the full
    configuration (data set and its options, model, :class:`FitConfig`, torch version); it is
    reused only if the stored configuration equals the requested one, and loaded with
    ``weights_only=True``. ``cache_dir`` None: no cache (see :func:`default_cache_dir`).

    Raises
    ------
    DataError
        The cached checkpoint cannot be used (unreadable, not a checkpoint, weights of another
        shape, non-finite weights) and ``retrain`` is False; the message names the file.

    Returns
    -------
    model : nn.Module
        The teacher on ``device``, in eval mode.
    info : dict
        ``loaded`` (bool), ``train_time_s`` (of the original training), ``history``, ``config``,
        ``checkpoint`` path.
    """
    device = torch.device(device)
    model_options = model_options or {}
    cfg = {
        "kind": "teacher",
        "data": data_config,
        "model": name,
        "model_options": model_options,
        "fit": asdict(config),
        "device_type": device.type,
    }
    model = build_model(name, data.input_shape, data.num_classes, seed=config.seed, **model_options)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"teacher-{data.name}-{name}-{_config_hash(cfg)}.pt"
        extra = None if retrain or not path.is_file() else _load_cached_teacher(path, model, cfg)
        if extra is not None:
            model.to(device).eval()
            return model, {
                "loaded": True,
                "checkpoint": str(path),
                "train_time_s": extra.get("train_time_s"),
                "history": extra.get("history"),
                "config": cfg,
            }
    split = data.teacher_split
    hist = fit(
        model,
        split,
        config=config,
        val=data.val,
        device=device,
        desc=f"teacher {name}",
        quiet=quiet,
    )
    model.eval()
    if path is not None:
        save_checkpoint(
            path,
            model.state_dict(),
            cfg,
            {"train_time_s": hist.train_time, "history": hist.as_dict()},
        )
    return model, {
        "loaded": False,
        "checkpoint": str(path) if path else None,
        "train_time_s": hist.train_time,
        "history": hist.as_dict(),
        "config": cfg,
    }
