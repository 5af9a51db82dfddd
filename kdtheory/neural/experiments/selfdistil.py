r"""Multi-stage self-distillation under label noise: a small neural counterpart of the replica chain.

    python -m kdtheory.neural.selfdistil --thetas 0,0.2,0.4 --stages 3 --seeds 3 \
        --train-size 10000 --epochs 20 --temperature 2 --out results/neural/selfdistil

A fraction θ of the Fashion-MNIST training labels is replaced by a uniformly drawn *other* class
(:func:`noisy_labels`, seeded). Stage 1 trains an MLP on the noisy labels ŷ (cross-entropy);
stage t ≥ 2 trains a fresh MLP of the same architecture on the same inputs with the package's KD
loss (:func:`kdtheory.neural.losses.kd_loss`) against stage t − 1's logits g_{t−1}:

    L_t = (1 − χ) CE(ŷ, σ(g_t)) + χ CE(σ(g_{t−1}/T), σ(g_t/T_s)),

T_s = T (``--tempered both``) or 1 (``--tempered teacher``, the convention of Takanami, Takahashi
& Sakata 2025); χ = 1 (default) is pure self-distillation. Measured per (θ, stage, seed) cell:
the accuracy on the clean test labels, on the clean validation labels, on the training inputs
against their clean and their noisy labels, and the agreement with the previous stage.

Output in ``--out`` (default ``results/neural/selfdistil``): ``selfdistil.nc`` (NetCDF; per cell
and the mean and standard error over seeds; the settings, ``tempered`` included, as attributes),
``selfdistil.png`` (clean test accuracy against stage for each θ, mean ± s.e.), ``table.md``,
``journal.jsonl`` and ``checkpoints/`` (each stage's weights, the next stage's teacher; saved
before the cell is journalled). A rerun of
the same command computes only the missing cells; more ``--stages``, ``--seeds`` or ``--thetas``
extend a finished run. A cell that fails is journalled with its message (the later stages of its
chain wait) and computed again by the next run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from kdtheory.journal import (
    NONNEGATIVE,
    PROBABILITY,
    Journal,
    check_output_dir,
    check_values,
    failed_cell,
    one_line_warnings,
    write_atomic,
)
from kdtheory.neural.checkpoints import (
    atomic_write_bytes,
    load_checkpoint,
    save_checkpoint,
    save_png,
)
from kdtheory.neural.cli import (
    MAX_EPOCHS,
    MAX_FITS,
    MAX_SEEDS,
    Parser,
    add_device,
    add_quiet,
    add_tempered,
    add_threads,
    add_workers,
    check_count,
    check_fits,
    check_model_memory,
    check_workers,
)
from kdtheory.neural.data import (
    DataError,
    DatasetNotFoundError,
    DataSplits,
    Split,
    load_fashion_mnist,
)
from kdtheory.neural.device import resolve_device, slot_device
from kdtheory.neural.models import build_model
from kdtheory.neural.timing import set_threads
from kdtheory.neural.training import FitConfig, evaluate, fit, predict_logits
from kdtheory.sweep import map_points, worker_slot

__all__ = ["SelfDistilConfig", "main", "noisy_labels", "run_selfdistil"]

PROG = "python -m kdtheory.neural.selfdistil"
THETA_SCALE = 1_000_000  # journal index of θ: round(θ · THETA_SCALE)
FRACTIONS = ("test_acc", "val_acc", "train_acc_clean", "train_acc_noisy", "agree_prev")


def noisy_labels(y: torch.Tensor, theta: float, num_classes: int, seed: int) -> torch.Tensor:
    """ŷ: round(θn) of the n labels, chosen at random, replaced by a uniformly drawn other class.

    ŷ_i = (y_i + s_i) mod K with s_i uniform on {1, …, K − 1} for the chosen i, ŷ_i = y_i for the
    others. For one ``seed`` the chosen sets are nested in θ and a chosen label's new class does
    not depend on θ (common random numbers across θ).

    Parameters
    ----------
    y : Tensor
        Clean labels in {0, …, K − 1}, shape (n,).
    theta : float
        θ ∈ [0, 1], the fraction replaced (θ = 1 − 1/K leaves no information in ŷ).
    num_classes : int
        K ≥ 2.
    seed : int
        Seed of the choice and of the new classes.
    """
    if not (isinstance(theta, int | float) and 0.0 <= theta <= 1.0):
        raise ValueError(f"theta must be in [0, 1], got {theta!r}")
    if not (isinstance(num_classes, int) and num_classes >= 2):
        raise ValueError(f"num_classes must be an integer ≥ 2, got {num_classes!r}")
    n = int(y.shape[0])
    rng = np.random.default_rng(seed)
    chosen = torch.from_numpy(rng.permutation(n)[: round(theta * n)])
    shift = torch.from_numpy(rng.integers(1, num_classes, size=n))
    out = y.clone()
    out[chosen] = (y[chosen] + shift[chosen].to(y.device)) % num_classes
    return out


@dataclass(frozen=True)
class SelfDistilConfig:
    """Everything a cell's result depends on except (θ, stage, seed).

    Attributes: ``train_size`` (training images kept, None: all), ``val_size`` (clean validation
    images taken from the training files), ``hidden`` (width of the MLP's one hidden layer),
    ``temperature`` T, ``tempered`` ("both" | "teacher"), ``chi`` χ ∈ (0, 1] of stages ≥ 2, and
    the optimiser (``epochs``, ``batch_size``, ``lr``, ``momentum``, ``weight_decay``: SGD with an
    L2 term λ/2 ‖w‖²). Data split and subset are fixed (seed 0); ``seed`` s draws the label noise,
    and stage t's initial weights and minibatch order use seed 1000 s + t.
    """

    data_root: str | None = None
    train_size: int | None = 10_000
    val_size: int = 1000
    hidden: int = 100
    temperature: float = 2.0
    tempered: str = "both"
    chi: float = 1.0
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0

    def fit_config(self, seed: int, stage: int) -> FitConfig:
        return FitConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
            weight_decay=self.weight_decay, seed=1000 * seed + stage,
        )  # fmt: skip


def _fingerprint(cfg: SelfDistilConfig, device: torch.device) -> str:
    blob = json.dumps({"config": asdict(cfg), "device": device.type}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _theta_key(theta: float) -> int:
    return round(theta * THETA_SCALE)


def _check_record(record: dict) -> None:
    """Raise ``ValueError`` unless the record is a cell this command writes: index (round(θ·10⁶),
    stage ≥ 1, seed ≥ 0) matching the values, then a failure (``error``) or finite fractions in
    [0, 1] (``agree_prev`` NaN at stage 1) and a training time ≥ 0."""
    index, values = record["index"], record["values"]
    if len(index) != 3 or not 0 <= index[0] <= THETA_SCALE or index[1] < 1 or index[2] < 0:
        raise ValueError(f"index must be (θ·10⁶, stage ≥ 1, seed ≥ 0), got {index!r}")
    named = [_theta_key(values.get("theta", -1.0)), values.get("stage"), values.get("seed")]
    if named != index:
        raise ValueError(f"values of {named!r} stored at {index!r}")
    if failed_cell(values):
        return
    first = index[1] == 1  # stage 1 has no previous stage to agree with: agree_prev is NaN
    if first and values.get("agree_prev") == values.get("agree_prev"):
        raise ValueError("agree_prev must be NaN at stage 1")
    ranges = {k: PROBABILITY for k in FRACTIONS if not (first and k == "agree_prev")}
    check_values(values, {**ranges, "train_time_s": NONNEGATIVE}, ok=True)


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).float().mean())


def _checkpoint(out: Path, theta: float, stage: int, seed: int) -> Path:
    return out / "checkpoints" / f"theta{theta:.6f}-seed{seed}-stage{stage}.pt"


def _train_stage(
    cfg: SelfDistilConfig,
    data: DataSplits,
    y_noisy: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    *,
    theta: float,
    stage: int,
    seed: int,
    device: torch.device,
) -> tuple[torch.nn.Module, dict, torch.Tensor]:
    """Train stage ``stage`` of the chain (θ, seed): on ŷ (stage 1) or with the KD loss against
    ``teacher_logits`` (stage ≥ 2). Returns the model, its journal values and its logits on the
    training inputs (the next stage's teacher logits)."""
    model = build_model(
        "mlp", data.input_shape, data.num_classes, seed=1000 * seed + stage, hidden=cfg.hidden
    )
    kd = {}
    if stage > 1:
        kd = dict(teacher_logits=teacher_logits, lambda1=1.0 - cfg.chi,
                  temperature=cfg.temperature, tempered=cfg.tempered)  # fmt: skip
    hist = fit(model, Split(data.train.x, y_noisy), config=cfg.fit_config(seed, stage),
               device=device, quiet=True, **kd)  # fmt: skip
    g = predict_logits(model, data.train.x, device=device)
    prev = teacher_logits.argmax(dim=1) if teacher_logits is not None else None
    values = {
        "theta": theta, "stage": stage, "seed": seed, "status": "ok",
        "test_acc": evaluate(model, data.test, device=device)[1],
        "val_acc": evaluate(model, data.val, device=device)[1],
        "train_acc_clean": _accuracy(g, data.train.y),
        "train_acc_noisy": _accuracy(g, y_noisy),
        "agree_prev": float("nan") if prev is None else float((g.argmax(1) == prev).float().mean()),
        "train_time_s": float(hist.train_time),
        "final_train_loss": float(hist.train_loss[-1]),
    }  # fmt: skip
    return model, values, g


def _stage_logits(
    path: Path, cfg: SelfDistilConfig, data: DataSplits, device: torch.device
) -> torch.Tensor:
    """Logits on the training inputs of the stage saved at ``path`` (a journalled stage, when a
    run resumes); ``DataError`` naming the file if it is missing or unusable."""
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=cfg.hidden)
    try:
        model.load_state_dict(load_checkpoint(path)["state_dict"])
    except (OSError, RuntimeError, KeyError) as exc:
        raise DataError(
            f"checkpoint {path} of a journalled stage is missing or unusable "
            f"({type(exc).__name__}); delete {path.parent.parent} and rerun"
        ) from None
    return predict_logits(model, data.train.x, device=device)


def _stage_failure(theta: float, stage: int, seed: int, exc: BaseException) -> dict:
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
    return {"theta": theta, "stage": stage, "seed": seed, "status": "error", "error": reason}


def _stage_task(shared: dict, item: tuple) -> tuple:
    """Stage ``st`` of the chain (θ, seed) on this process's device (:func:`kdtheory.sweep.map_points`
    calls it in the driver or on a worker); ``f`` the previous stage's logits (None at stage 1).
    Returns ((θ, seed, st), values, the model's state dict, its logits on the training inputs);
    an exception fails this cell only."""
    th, s, st, f = item
    try:
        if shared["remote"]:
            set_threads(1)
        dev = slot_device(shared["device"], worker_slot())
        data = shared["data"].to(dev)
        y_noisy = noisy_labels(data.train.y, th, data.num_classes, s)
        model, values, g = _train_stage(shared["cfg"], data, y_noisy,
                                        None if f is None else f.to(dev), theta=th, stage=st,
                                        seed=s, device=dev)  # fmt: skip
        _check_record({"index": [_theta_key(th), st, s], "values": values})
        state = model.state_dict()
        if shared["remote"]:
            state, g = {k: v.cpu() for k, v in state.items()}, g.cpu()
    except Exception as exc:
        return (th, s, st), _stage_failure(th, st, s, exc), None, None
    return (th, s, st), values, state, g


def run_selfdistil(
    cfg: SelfDistilConfig,
    thetas: Sequence[float],
    stages: int,
    seeds: int,
    *,
    out: str | Path,
    device: str = "auto",
    quiet: bool = False,
    command: str = "",
    jobs: int = 1,
    scheduler: str | None = None,
) -> dict:
    """Run (or resume) the self-distillation chains of every (θ, seed), stages 1 … ``stages``.

    Stage t of every chain runs in one wave, in this process, on ``jobs`` local workers or on
    the Dask cluster at ``scheduler`` (:func:`kdtheory.sweep.map_points`), with the same results;
    the driver saves each stage's checkpoint and keeps its logits for the next wave.

    Returns ``{"records": [values of the cells that succeeded], "failed": [values of failed
    cells], "written": [file name], "dataset": the xarray.Dataset written}``.

    Raises
    ------
    ValueError
        ``out`` is not a writable folder, or holds the journal of another configuration (or is in
        use by another run).
    DatasetNotFoundError, DataError
        The Fashion-MNIST files are absent or unreadable.
    """
    from tqdm import tqdm  # the plain bar: no notebook widget

    dev = resolve_device(device)
    data = load_fashion_mnist(  # first: absent files leave no empty --out behind
        cfg.data_root, seed=0, val_size=cfg.val_size, train_size=cfg.train_size
    ).to(dev)
    out = check_output_dir(out, flag="--out")
    journal = Journal(
        out / "journal.jsonl",
        _fingerprint(cfg, dev),
        {"config": asdict(cfg), "device": dev.type},
        validate=_check_record,
        superseded=lambda values: values.get("status") == "error",
        lock=True,
        fix="choose another --out or delete it",
    )
    cells = [(th, st, s) for th in thetas for s in range(seeds) for st in range(1, stages + 1)]

    def status(th, st, s):
        return journal.done.get((_theta_key(th), st, s), {}).get("status")

    remote = jobs > 1 or scheduler is not None
    shared = {"cfg": cfg, "data": data.to("cpu") if remote else data, "device": dev,
              "remote": remote}  # fmt: skip
    with journal:
        todo = [c for c in cells if status(*c) != "ok"]
        bar = tqdm(total=len(todo), disable=quiet, unit="fit", desc="selfdistil")
        # each chain's next stage; stage t of every chain runs in one wave, on the logits of its
        # stage t − 1 (kept from the wave before, or from the checkpoint of a journalled stage)
        following = {}
        for th in thetas:
            for s in range(seeds):
                chain = [st for st in range(1, stages + 1) if status(th, st, s) != "ok"]
                if chain:
                    following[th, s] = chain[0]
        logits: dict[tuple[float, int], torch.Tensor] = {}
        for stage in range(1, stages + 1):
            items = []
            for (th, s), st in following.items():
                if st != stage:
                    continue
                try:
                    f = logits.get((th, s))
                    if st > 1 and f is None:  # resume: the journalled previous stage
                        f = _stage_logits(_checkpoint(out, th, st - 1, s), cfg, data, dev)
                    items.append((th, s, st, f.cpu() if remote and f is not None else f))
                except Exception as exc:  # fails this cell; the chain's later stages wait
                    values = _stage_failure(th, st, s, exc)
                    journal.append([((_theta_key(th), st, s), values)])
                    bar.update(1 + stages - st)
            for (th, s, st), values, state, g in map_points(
                _stage_task, items, jobs, scheduler=scheduler, shared=shared
            ):
                bar.set_description(f"θ={th:g} seed {s} stage {st}")
                if values["status"] == "ok":
                    try:
                        meta = {"theta": th, "stage": st, "seed": s, **asdict(cfg)}
                        save_checkpoint(_checkpoint(out, th, st, s), state, meta)
                    except Exception as exc:
                        values = _stage_failure(th, st, s, exc)
                journal.append([((_theta_key(th), st, s), values)])
                bar.update(1)
                if values["status"] == "ok":
                    logits[th, s], following[th, s] = g.to(dev), st + 1
                else:
                    bar.update(stages - st)
                    del following[th, s]
        bar.close()
        records = [journal.done[(_theta_key(th), st, s)] for th, st, s in cells
                   if (_theta_key(th), st, s) in journal.done]  # fmt: skip
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] == "error"]
    ds = to_dataset(ok, cfg, thetas, stages, seeds, data.info, command)
    written = _write_outputs(out, ds, failed)
    return {"records": ok, "failed": failed, "written": written, "dataset": ds}


# ---------------------------------------------------------------------------------- outputs ---

VARIABLES = {
    "test_acc": "accuracy on the clean test labels",
    "val_acc": "accuracy on the clean validation labels",
    "train_acc_clean": "accuracy on the training inputs against their clean labels",
    "train_acc_noisy": "accuracy on the training inputs against the noisy labels trained on",
    "agree_prev": "fraction of training inputs classified as stage t − 1 does (nan at stage 1)",
    "train_time_s": "wall seconds of the training loop",
}
GAIN = "clean test accuracy minus that of stage 1 of the same (theta, seed)"


def to_dataset(records, cfg, thetas, stages, seeds, data_info, command=""):
    """The cells as an ``xarray.Dataset`` over (theta, stage, seed), nan where a cell is missing,
    with ``<name>_mean`` and ``<name>_se`` (s.e. = sample std / √n over the seeds present), and
    ``test_gain`` = test_acc − test_acc at stage 1 of the same (θ, seed) (a paired difference)."""
    import xarray as xr

    shape = (len(thetas), stages, seeds)
    arrays = {k: np.full(shape, np.nan) for k in VARIABLES}
    where = {_theta_key(th): i for i, th in enumerate(thetas)}
    for r in records:
        for k in VARIABLES:
            arrays[k][where[_theta_key(r["theta"])], r["stage"] - 1, r["seed"]] = r[k]
    arrays["test_gain"] = arrays["test_acc"] - arrays["test_acc"][:, :1]
    coords = {"theta": list(thetas), "stage": np.arange(1, stages + 1), "seed": np.arange(seeds)}
    ds = xr.Dataset(coords=coords)
    for k, desc in {**VARIABLES, "test_gain": GAIN}.items():
        a = arrays[k]
        n = np.sum(np.isfinite(a), axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):  # no seed (nan) or one (s.e. nan)
            mean = np.nansum(a, axis=2) / n
            var = np.nansum((a - mean[..., None]) ** 2, axis=2) / (n - 1)
            se = np.where(n > 1, np.sqrt(var / n), np.nan)
        ds[k] = (("theta", "stage", "seed"), a, {"long_name": desc})
        ds[k + "_mean"] = (("theta", "stage"), mean, {"long_name": f"mean over seeds: {desc}"})
        ds[k + "_se"] = (
            ("theta", "stage"),
            se,
            {"long_name": f"standard error over seeds: {desc}"},
        )
    ds["n_seeds"] = (("theta", "stage"), np.sum(np.isfinite(arrays["test_acc"]), axis=2))
    for k, v in asdict(cfg).items():
        ds.attrs[k] = "" if v is None else v  # NetCDF attributes: no None
    ds.attrs.update(
        dataset="fashion-mnist",
        model=f"mlp (one hidden layer of {cfg.hidden})",
        data=json.dumps(data_info or {}),
        command=command,
        noise="a fraction theta of the training labels replaced by a uniformly drawn other class",
    )
    return ds


def _pm(mean: float, se: float, sign: str = "") -> str:
    """A fraction as "mean ± s.e." in percent ("–" without a value, no ± with one seed)."""
    if not np.isfinite(mean):
        return "–"
    return f"{100 * mean:{sign}.2f}" + (f" ± {100 * se:.2f}" if np.isfinite(se) else "")


def _markdown(ds, failed) -> str:
    stages = [int(s) for s in ds.stage.values]
    lines = [
        f"Clean test accuracy (%), mean ± s.e. over seeds; T = {ds.attrs['temperature']:g}, "
        f"tempered = {ds.attrs['tempered']}, χ = {ds.attrs['chi']:g}.",
        "",
        "| θ | " + " | ".join(f"stage {s}" for s in stages) + " | seeds |",
        "|---|" + "---|" * len(stages) + "---|",
    ]
    for i, th in enumerate(ds.theta.values):
        m, se = ds.test_acc_mean.values[i], ds.test_acc_se.values[i]
        cells = [_pm(a, e) for a, e in zip(m, se, strict=True)]
        n = ds.n_seeds.values[i]
        lines.append(f"| {th:g} | " + " | ".join(cells) + f" | {n.min()}–{n.max()} |")
    lines += ["", "Gain over stage 1 (percentage points; paired over seeds):", ""]
    lines += ["| θ | " + " | ".join(f"stage {s}" for s in stages[1:]) + " |"]
    lines += ["|---|" + "---|" * (len(stages) - 1)]
    for i, th in enumerate(ds.theta.values):
        m, se = ds.test_gain_mean.values[i, 1:], ds.test_gain_se.values[i, 1:]
        cells = [_pm(a, e, sign="+") for a, e in zip(m, se, strict=True)]
        lines.append(f"| {th:g} | " + " | ".join(cells) + " |")
    lines += ["", "Accuracy on the training inputs against their clean labels (%):", ""]
    lines += ["| θ | " + " | ".join(f"stage {s}" for s in stages) + " |"]
    lines += ["|---|" + "---|" * len(stages)]
    for i, th in enumerate(ds.theta.values):
        m, se = ds.train_acc_clean_mean.values[i], ds.train_acc_clean_se.values[i]
        cells = [_pm(a, e) for a, e in zip(m, se, strict=True)]
        lines.append(f"| {th:g} | " + " | ".join(cells) + " |")
    if failed:
        lines += ["", "Failed cells (computed again by the next run):"]
        lines += [f"- θ = {r['theta']:g}, stage {r['stage']}, seed {r['seed']}: {r['error']}"
                  for r in failed]  # fmt: skip
    return "\n".join(lines) + "\n"


def _plot(path: Path, ds) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    stages = ds.stage.values
    for i, th in enumerate(ds.theta.values):
        for ax, name in zip(axes, ("test_acc", "train_acc_clean"), strict=True):
            ax.errorbar(stages, 100 * ds[name + "_mean"].values[i],
                        yerr=100 * ds[name + "_se"].values[i], marker="o", capsize=3,
                        label=f"θ = {th:g}")  # fmt: skip
    axes[0].set(ylabel="clean test accuracy (%)", title="test")
    axes[1].set(ylabel="accuracy vs clean training labels (%)", title="training inputs")
    for ax in axes:
        ax.set_xlabel("stage")
        ax.set_xticks(stages)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"Self-distillation on Fashion-MNIST with label noise θ: T = {ds.attrs['temperature']:g}, "
        f"tempered = {ds.attrs['tempered']}, χ = {ds.attrs['chi']:g} (mean ± s.e. over seeds)"
    )
    fig.tight_layout()
    save_png(fig, path)


def _write_outputs(out: Path, ds, failed) -> list[str]:
    write_atomic(out / "selfdistil.nc", lambda tmp: ds.to_netcdf(tmp, engine="scipy"))
    atomic_write_bytes(out / "table.md", _markdown(ds, failed).encode())
    _plot(out / "selfdistil.png", ds)
    return ["selfdistil.nc", "selfdistil.png", "table.md"]


# -------------------------------------------------------------------------------------- CLI ---


def _thetas(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"takes comma-separated θ in [0, 1]; got {text!r}")
    if len({_theta_key(v) for v in values}) != len(values):
        raise argparse.ArgumentTypeError(f"takes distinct θ; got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The ``selfdistil`` CLI's argument parser."""
    d = SelfDistilConfig()
    p = Parser(
        prog=PROG,
        description="Multi-stage self-distillation of an MLP on Fashion-MNIST with a fraction θ "
        "of the training labels replaced by another class: stage 1 on the noisy labels, stage t "
        "on stage t − 1's soft outputs (KD loss, χ, T, --tempered). Writes selfdistil.nc, "
        "selfdistil.png and table.md to --out; resumable.",
    )
    p.add_argument("--thetas", type=_thetas, default=[0.0, 0.2, 0.4],
                   help="comma-separated label-noise fractions θ ∈ [0, 1]")  # fmt: skip
    p.add_argument("--stages", type=int, default=3, help="stages per chain (≥ 1; θs × stages × "
                   "seeds ≤ 100 000 fits)")  # fmt: skip
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 … seeds − 1 (1 … 1000)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="T > 0")
    add_tempered(p)
    p.add_argument("--chi", type=float, default=d.chi,
                   help="χ ∈ (0, 1], weight of the soft term in stages ≥ 2")  # fmt: skip
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs per stage (1 … 10 000)")
    p.add_argument("--hidden", type=int, default=d.hidden, help="hidden units of the MLP (≥ 1; "
                   "it must train in the memory available)")  # fmt: skip
    p.add_argument("--train-size", type=int, default=d.train_size,
                   help="training images kept (≥ 1; 0: all 60 000 − --val-size)")  # fmt: skip
    p.add_argument("--val-size", type=int, default=d.val_size,
                   help="clean validation images taken from the training files (≥ 1)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="minibatch size (≥ 1)")
    p.add_argument("--lr", type=float, default=d.lr, help="SGD learning rate > 0")
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum in [0, 1)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="L2 coefficient λ ≥ 0 (penalty λ/2 ‖w‖²)")  # fmt: skip
    p.add_argument("--data-root", default=None,
                   help="folder of the Fashion-MNIST IDX files "
                   "(default /usr/share/datasets/fashion-mnist)")  # fmt: skip
    add_device(p)
    add_threads(p)
    add_workers(p)
    p.add_argument("--out", default="results/neural/selfdistil", help="output folder")
    add_quiet(p, table=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m kdtheory.neural.selfdistil`` (returns the exit code)."""
    p = build_parser()
    args = p.parse_args(argv)
    finite = math.isfinite
    checks = [
        ("--stages", args.stages >= 1, "must be an integer ≥ 1"),
        ("--seeds", args.seeds >= 1, "must be an integer ≥ 1"),
        ("--temperature", args.temperature > 0 and finite(args.temperature), "must be > 0"),
        ("--chi", 0.0 < args.chi <= 1.0, "must be in (0, 1]"),
        ("--epochs", args.epochs >= 1, "must be an integer ≥ 1"),
        ("--hidden", args.hidden >= 1, "must be an integer ≥ 1"),
        ("--train-size", args.train_size >= 0, "must be an integer ≥ 0 (0: all)"),
        ("--val-size", args.val_size >= 1, "must be an integer ≥ 1"),
        ("--batch-size", args.batch_size >= 1, "must be an integer ≥ 1"),
        ("--lr", args.lr > 0 and finite(args.lr), "must be > 0"),
        ("--momentum", 0.0 <= args.momentum < 1.0, "must be in [0, 1)"),
        ("--weight-decay", args.weight_decay >= 0 and finite(args.weight_decay), "must be ≥ 0"),
        ("--threads", args.threads >= 1, "must be an integer ≥ 1"),
    ]
    for flag, ok, why in checks:
        if not ok:
            p.error(f"{flag} {why}; got {getattr(args, flag[2:].replace('-', '_'))}")
    try:  # resources, before any work: caps of kdtheory.neural.cli and the MLP's memory
        check_count("--stages", args.stages, MAX_FITS)
        check_count("--seeds", args.seeds, MAX_SEEDS)
        check_count("--epochs", args.epochs, MAX_EPOCHS)
        check_fits(len(args.thetas) * args.stages * args.seeds, "--thetas × --stages × --seeds")
        check_model_memory("--hidden", str(args.hidden), lambda: build_model(
            "mlp", (1, 28, 28), 10, hidden=args.hidden))  # Fashion-MNIST  # fmt: skip
    except ValueError as exc:
        p.error(str(exc))
    try:
        resolve_device(args.device)
    except ValueError as exc:
        p.error(f"--device: {exc}")
    check_workers(p, args)
    set_threads(args.threads)  # before any torch work
    cfg = SelfDistilConfig(
        data_root=args.data_root, train_size=args.train_size or None, val_size=args.val_size,
        hidden=args.hidden, temperature=args.temperature, tempered=args.tempered, chi=args.chi,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay,
    )  # fmt: skip
    command = f"{PROG} " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        with one_line_warnings(p.prog):  # a journal's skipped lines: one counted warning
            res = run_selfdistil(cfg, args.thetas, args.stages, args.seeds, out=args.out,
                                 device=args.device, quiet=args.quiet, command=command,
                                 jobs=args.jobs, scheduler=args.scheduler)  # fmt: skip
    except DatasetNotFoundError as exc:
        p.error(f"Fashion-MNIST files absent: {exc}")
    except (DataError, ValueError) as exc:  # unreadable files, --out, another run's journal
        p.error(str(exc))
    out = Path(args.out)
    if not args.quiet:
        print((out / "table.md").read_text(encoding="utf-8"))
    for r in res["failed"]:
        print(f"failed θ={r['theta']:g} stage {r['stage']} seed {r['seed']}: {r['error']}",
              file=sys.stderr)  # fmt: skip
    first, *rest = res["written"]
    print(f"wrote {out / first}, {', '.join(rest)}")
    return 0 if res["records"] else 1


if __name__ == "__main__":
    sys.exit(main())
