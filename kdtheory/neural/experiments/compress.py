r"""The compression study of Khetarpaul et al. (2024): how small can the student be, at what cost?

    python -m kdtheory.neural.compress --preset digits              # minutes on 2 cores, no files
    python -m kdtheory.neural.compress --preset mnist --dataset fashion-mnist
    python -m kdtheory.neural.compress --preset mnist --data-root /data/mnist   # MNIST IDX files
    python -m kdtheory.neural.compress --preset cifar10 --data-root /data       # cifar-10-batches-py

A grid over student architecture × T × epochs × batch size × loss variant × n per class (the
student's reduced training set) is crossed with {KD, no KD}; each cell is trained over ``--seeds``
seeds from one cached teacher. The student minimises

    L = λ₁ CE(y, σ(g)) + (1 − λ₁) s(T) D(σ(f/T), σ(g/T))     (KD),     L = CE(y, σ(g))   (no KD),

with the soft term D and the factor s(T) ∈ {1, T²} given by the loss variant (``LOSSES``). Per
cell: test accuracy (mean ± s.e. over seeds), training time, parameters, serialised size in
bytes, and the teacher/student inference-time ratio, batched and one input at a time, both timed
on the CPU (the edge device the study has in mind) by :func:`kdtheory.neural.timing.inference_times`
with the teacher and the student interleaved in the same rounds. ``--quantize`` adds the int8 dynamically
quantised student (:func:`~kdtheory.neural.models.quantize_linear`) as extra rows.

Presets (``PRESETS``) vary one factor at a time around a centre (``--full-grid``: the product):

``mnist``    the study's MNIST table: teacher MLP 1200-1200 (1 epoch, batch 32); students one
             hidden layer of 50 / 300 / 600, T ∈ {1, 3.5, 10}, epochs {2, 3, 5}, batch
             {16, 32, 64} around (300, 3.5, 3, 32) — its 9 configurations. MNIST IDX files from
             ``--data-root``; ``--dataset fashion-mnist`` runs it on Fashion-MNIST.
``cifar10``  the study's CIFAR-10 table: teacher ResNet-50 (bottleneck [3, 4, 6, 3]); students
             [1,1,1,1], [2,2,0,0], [1,1,0,0] (basic blocks) and [1,1,1,1] with first-stage stride
             2 ("ideal") or 4; the ideal student also on 500 images per class.
``digits``   a small grid on scikit-learn's digits (the quick check; no files needed).

Axis flags (``--students``, ``--temperatures``, ``--epochs``, ``--batch-sizes``, ``--losses``,
``--n-per-class``, ``--kd``) replace a preset's values; the centre of an axis is the preset's
centre if listed, else the first value given. The study does not state its KD weight or which KL
it used; the presets take λ₁ = 0.1 and forward KL(σ(f/T) ‖ σ(g/T)) with T² (Hinton et al.).

Output in ``--out``: ``table.md``, ``cells.csv`` (one row per cell and precision), ``runs.csv`` (one
row per cell and seed), ``accuracy_vs_speedup.png`` (accuracy against the batched speed-up with the
KD and no-KD frontiers) and ``journal.jsonl``: a rerun of the same command (also after kill -9)
computes only what is missing. A cell that fails is journalled with its message, listed in the
outputs, and computed again by the next run; the grid finishes either way.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import io
import itertools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from kdtheory.journal import (
    POSITIVE,
    PROBABILITY,
    SIZE,
    Journal,
    check_output_dir,
    check_values,
    failed_cell,
    one_line_warnings,
)
from kdtheory.neural.checkpoints import (
    atomic_write_bytes,
    default_cache_dir,
    load_or_train_teacher,
    save_png,
)
from kdtheory.neural.cli import (
    MAX_EPOCHS,
    MAX_SEEDS,
    MAX_STEPS,
    Parser,
    ResourceError,
    add_cache_dir,
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
    load_dataset,
    load_fashion_mnist,
)
from kdtheory.neural.device import resolve_device, slot_device
from kdtheory.neural.losses import SOFT_TARGETS
from kdtheory.neural.models import (
    MODELS,
    build_model,
    count_parameters,
    model_size_bytes,
    quantize_linear,
)
from kdtheory.neural.timing import inference_times, set_threads
from kdtheory.neural.training import FitConfig, evaluate, fit, predict_logits
from kdtheory.sweep import map_points, worker_slot

__all__ = [
    "LOSSES",
    "PRESETS",
    "Cell",
    "Grid",
    "Preset",
    "frontier",
    "main",
    "parse_student",
    "run_study",
]

LOSSES = tuple(f"{s}{t}" for s in SOFT_TARGETS for t in ("", "-t2"))
STUDY_DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
#: (input shape, classes) of each data set of the study, known before its files are read
STUDY_SHAPES = {"digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10),
                "fashion-mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10)}  # fmt: skip
AXES = ("students", "temperatures", "epochs", "batch_sizes", "losses", "n_per_class")


# ----------------------------------------------------------------------------------- grid ---


def parse_student(spec: str, resnet_width: int = 64) -> tuple[str, dict]:
    """(model name, options) of a student written ``NAME[:ARG…]``.

    ``mlp:300`` and ``mlp:1200x1200`` (hidden widths); ``resnet4:1-1-1-1[:s2][:bottleneck]``
    (blocks per stage, first-stage stride, block type; width ``resnet_width``); ``logreg``,
    ``cnn-small``, ``cnn``, ``resnet`` (no arguments).

    Raises
    ------
    ValueError
        The spec names no model of the registry or its arguments do not parse.
    """
    name, *args = spec.split(":")
    bad = ValueError(
        f"student {spec!r} must be mlp:W[xW…], resnet4:B-B-B-B[:sS][:basic|bottleneck] or one of "
        "logreg, cnn-small, cnn, resnet"
    )
    try:
        if name == "mlp" and len(args) == 1:
            widths = [int(w) for w in args[0].split("x")]
            if min(widths) < 1:
                raise bad
            return name, {"hidden": widths}
        if name == "resnet4" and 1 <= len(args) <= 3:
            opts: dict = {"blocks": [int(b) for b in args[0].split("-")], "width": resnet_width}
            for a in args[1:]:
                if a in ("basic", "bottleneck") and "block" not in opts:
                    opts["block"] = a
                elif a.startswith("s") and "stride" not in opts:
                    opts["stride"] = int(a[1:])
                else:
                    raise bad
            if len(opts["blocks"]) != 4 or min(opts["blocks"]) < 0 or opts.get("stride", 1) < 1:
                raise bad
            return name, opts
    except ValueError:
        raise bad from None
    if name in MODELS and name not in ("mlp", "mlp-large", "resnet4") and not args:
        return name, {}
    raise bad


@dataclass(frozen=True)
class Cell:
    """One configuration of the grid (trained over several seeds).

    ``temperature`` and ``loss`` are None without KD; ``n_per_class`` None: the whole training
    split.
    """

    student: str
    temperature: float | None
    epochs: int
    batch_size: int
    kd: bool
    loss: str | None
    n_per_class: int | None

    def key(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Grid:
    """Axis values and their centre; :meth:`cells` lists the grid (one factor at a time around
    the centre unless ``full``), each configuration with and without KD (``kd``)."""

    students: tuple[str, ...]
    temperatures: tuple[float, ...]
    epochs: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    losses: tuple[str, ...]
    n_per_class: tuple[int | None, ...] = (None,)
    kd: tuple[bool, ...] = (True, False)
    centre: dict = field(default_factory=dict)
    full: bool = False

    def __post_init__(self) -> None:
        for axis in AXES:
            if not getattr(self, axis):
                raise ValueError(f"--{axis.replace('_', '-')} needs at least one value")
        if not self.kd:
            raise ValueError("--kd needs at least one of kd, no-kd")
        checks = [
            ("--temperatures", self.temperatures, lambda t: t > 0 and math.isfinite(t), "> 0"),
            ("--epochs", self.epochs, lambda e: e >= 1, "integers ≥ 1"),
            ("--batch-sizes", self.batch_sizes, lambda b: b >= 1, "integers ≥ 1"),
            ("--losses", self.losses, lambda v: v in LOSSES, f"in {', '.join(LOSSES)}"),
            ("--n-per-class", self.n_per_class, lambda n: n is None or n >= 1, "≥ 1 or all"),
        ]
        for flag, values, ok, allowed in checks:
            bad = [v for v in values if not ok(v)]
            if bad:
                raise ValueError(f"{flag} must be {allowed}; got {bad[0]!r}")

    def _centre(self, axis: str):
        values = getattr(self, axis)
        c = self.centre.get(axis)
        return c if c in values else values[0]

    def cells(self) -> list[Cell]:
        """The cells, configuration by configuration, each first with KD then without."""
        if self.full:
            configs = list(itertools.product(*(getattr(self, a) for a in AXES)))
        else:
            centre = tuple(self._centre(a) for a in AXES)
            configs = [centre]
            for i, axis in enumerate(AXES):
                configs += [(*centre[:i], v, *centre[i + 1 :]) for v in getattr(self, axis)]
        cells = []
        for student, t, epochs, batch, loss, n in configs:
            for kd in self.kd:
                cells.append(
                    Cell(student, t if kd else None, epochs, batch, kd, loss if kd else None, n)
                )
        return list(dict.fromkeys(cells))


@dataclass(frozen=True)
class Preset:
    """A named study: data set, teacher, the students' optimiser, λ₁, which outputs the KD soft
    term tempers (``tempered``, see :data:`~kdtheory.neural.losses.TEMPERED`) and the grid."""

    dataset: str
    teacher: str
    teacher_options: dict
    teacher_fit: FitConfig
    grid: Grid
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lambda1: float = 0.1
    tempered: str = "both"
    resnet_width: int = 64
    timing_inputs: int = 1024

    def describe(self) -> dict:
        return asdict(self)


_MLP_TEACHER = {"hidden": [1200, 1200]}
PRESETS = {
    "mnist": Preset(
        dataset="mnist",
        teacher="mlp",
        teacher_options=_MLP_TEACHER,
        teacher_fit=FitConfig(epochs=1, batch_size=32, lr=1e-3, optimizer="adam"),
        grid=Grid(
            students=("mlp:50", "mlp:300", "mlp:600"),
            temperatures=(1.0, 3.5, 10.0),
            epochs=(2, 3, 5),
            batch_sizes=(16, 32, 64),
            losses=("forward-kl-t2",),
            centre={"students": "mlp:300", "temperatures": 3.5, "epochs": 3, "batch_sizes": 32},
        ),
    ),
    "cifar10": Preset(
        dataset="cifar10",
        teacher="resnet4",
        teacher_options={"blocks": [3, 4, 6, 3], "block": "bottleneck"},
        teacher_fit=FitConfig(epochs=30, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4),
        grid=Grid(
            students=(
                "resnet4:1-1-1-1",
                "resnet4:2-2-0-0",
                "resnet4:1-1-0-0",
                "resnet4:1-1-1-1:s2",
                "resnet4:1-1-1-1:s4",
            ),
            temperatures=(4.0,),
            epochs=(20,),
            batch_sizes=(128,),
            losses=("forward-kl-t2",),
            n_per_class=(None, 500),
            centre={"students": "resnet4:1-1-1-1:s2", "n_per_class": None},
        ),
        lr=0.05,
        optimizer="sgd",
        weight_decay=5e-4,
        timing_inputs=128,  # a ResNet-50 forward pass on the CPU costs about 1 GFLOP per image
    ),
    "digits": Preset(
        dataset="digits",
        teacher="mlp",
        teacher_options=_MLP_TEACHER,
        teacher_fit=FitConfig(epochs=20, batch_size=32, lr=1e-3, optimizer="adam"),
        grid=Grid(
            students=("mlp:8", "mlp:32", "mlp:128"),
            temperatures=(1.0, 4.0),
            epochs=(10, 30),
            batch_sizes=(32,),
            losses=("forward-kl-t2",),
            centre={"students": "mlp:32", "temperatures": 4.0, "epochs": 30},
        ),
    ),
}


# ----------------------------------------------------------------------------------- data ---


def load_study_data(dataset: str, data_root: str | None, val_size: int | None) -> DataSplits:
    """The data set of the study with splits of seed 0 (MNIST: the IDX files in ``data_root``)."""
    opts = {} if val_size is None else {"val_size": val_size}
    if dataset == "mnist":
        if data_root is None:
            raise DatasetNotFoundError(
                "MNIST is not on this machine: pass --data-root to a folder with its IDX files "
                "(or run --dataset fashion-mnist)"
            )
        return replace(load_fashion_mnist(data_root, seed=0, **opts), name="mnist")
    return load_dataset(dataset, data_root=data_root, seed=0, **opts)


# ---------------------------------------------------------------------------------- cells ---


TIMING_ROUNDS = 5
TIMING_MIN_RUN_TIME = 0.05  # seconds of timed blocks per model, call and round


def _timing(models: dict, x: torch.Tensor, preset: Preset, rounds: int) -> dict[str, dict]:
    """CPU inference time of each model, interleaved in ``rounds`` rounds
    (:func:`~kdtheory.neural.timing.inference_times`, process CPU time): ``batch_s`` seconds per
    call on a batch of ``preset.timing_inputs`` inputs and ``per_sample_s`` per call on one input
    (medians), with their interquartile ranges."""
    t = inference_times(models, x[: preset.timing_inputs].cpu(),
                        batch_size=preset.timing_inputs, rounds=rounds, device="cpu",
                        min_run_time=TIMING_MIN_RUN_TIME)  # fmt: skip
    return {
        name: {"batch_s": v.batch.median, "per_sample_s": v.single.median,
               "batch_iqr_s": v.batch.iqr, "per_sample_iqr_s": v.single.iqr}
        for name, v in t.items()
    }  # fmt: skip


def _loss_options(loss: str | None) -> dict:
    if loss is None:
        return {}
    return {"soft": loss.removesuffix("-t2"), "t2_scaling": loss.endswith("-t2")}


def train_cell(
    cell: Cell,
    seed: int,
    preset: Preset,
    data: DataSplits,
    f_train: torch.Tensor | None,
    teacher: torch.nn.Module,
    *,
    device: torch.device,
    quantize: bool,
    repeats: int,
) -> dict:
    """Train the student of ``cell`` with ``seed`` (initial weights and minibatch order) and
    measure it; ``data.train`` is the cell's training set and ``f_train`` the teacher's logits on
    it. The teacher is timed with the student (and its int8 copy), interleaved in the same rounds,
    so that each speed-up is a ratio of measurements under the same load. Returns the journal
    record's values."""
    name, opts = parse_student(cell.student, preset.resnet_width)
    model = build_model(name, data.input_shape, data.num_classes, seed=seed, **opts)
    cfg = FitConfig(
        epochs=cell.epochs, batch_size=cell.batch_size, lr=preset.lr, momentum=preset.momentum,
        weight_decay=preset.weight_decay, optimizer=preset.optimizer, seed=seed,
    )  # fmt: skip
    kd = {}
    if cell.kd:
        kd = dict(teacher_logits=f_train, lambda1=preset.lambda1, temperature=cell.temperature,
                  tempered=preset.tempered, **_loss_options(cell.loss))  # fmt: skip
    hist = fit(model, data.train, config=cfg, device=device, quiet=True, **kd)
    _, acc = evaluate(model, data.test, device=device)
    models = {"teacher": teacher, "student": model}
    if quantize:
        q = quantize_linear(model)
        models["int8"] = q
    times = _timing(models, data.test.x, preset, repeats)
    t = times["student"]
    values = {
        "cell": cell.key(), "seed": seed, "status": "ok", "test_acc": acc,
        "train_time_s": hist.train_time, "params": count_parameters(model),
        "size_bytes": model_size_bytes(model), **t,
        **{f"teacher_{k}": v for k, v in times["teacher"].items()},
    }  # fmt: skip
    if quantize:
        _, q_acc = evaluate(q, data.test.to("cpu"), device="cpu")
        values["int8"] = {"test_acc": q_acc, "size_bytes": model_size_bytes(q), **times["int8"]}
    teacher.to(device)  # timed on the CPU
    return values


_TIMES = ("batch_s", "per_sample_s")


def _check_record(index: tuple, values: dict, cells: Sequence[Cell]) -> None:
    """Raise ``ValueError`` unless ``(index, values)`` is a record this study writes.

    ``index`` = (i, seed) with i the cell's place in ``cells``; ``values`` names the same cell and
    seed and is a failed cell (``status`` "error", its message) or a result whose accuracies lie in
    [0, 1], whose times are numbers > 0 and whose parameter count and size are integers ≥ 1.
    """
    if not (len(index) == 2 and 0 <= index[0] < len(cells) and index[1] >= 0):
        raise ValueError(f"index must be (cell in [0, {len(cells)}), seed ≥ 0), got {index!r}")
    named, expected = (values.get("cell"), values.get("seed")), (cells[index[0]].key(), index[1])
    if named != expected:
        raise ValueError(f"values of (cell, seed) {named!r} stored at {expected!r}")
    if failed_cell(values):
        return
    parts = [(values, (*_TIMES, *(f"teacher_{k}" for k in _TIMES), "train_time_s"))]
    if "int8" in values:
        if not isinstance(values["int8"], dict):
            raise ValueError("int8 must be an object")
        parts.append((values["int8"], _TIMES))
    for part, times in parts:
        ranges = {"test_acc": PROBABILITY, **dict.fromkeys(times, POSITIVE), "size_bytes": SIZE}
        if part is values:
            ranges["params"] = SIZE
        check_values(part, ranges, ok=True)  # a result: finite values in their ranges


def _failure(cell: Cell, seed: int, exc: BaseException, where: str = "") -> dict:
    reason = " ".join(f"{where}{type(exc).__name__}: {exc}".split())[:500]
    return {"cell": cell.key(), "seed": seed, "status": "error", "error": reason}


def _fingerprint(preset: Preset, cells: Sequence[Cell], quantize: bool, dev: torch.device) -> str:
    blob = json.dumps(
        {"preset": preset.describe(), "cells": [c.key() for c in cells], "quantize": quantize,
         "device": dev.type},
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_study(
    preset: Preset,
    seeds: int,
    *,
    out: str | Path,
    data_root: str | None = None,
    val_size: int | None = None,
    quantize: bool = False,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    retrain_teacher: bool = False,
    timing_repeats: int = TIMING_ROUNDS,
    quiet: bool = False,
    jobs: int = 1,
    scheduler: str | None = None,
) -> dict:
    """Run (or resume) the study ``preset`` over ``seeds`` seeds (0 … seeds − 1).

    The cells (cell, seed) run one after another in this process, on ``jobs`` local workers or on
    the Dask cluster at ``scheduler`` (:func:`kdtheory.sweep.map_points`; the teacher is trained or
    loaded once, before them, and sent to every worker); the results are the same.

    Returns ``{"teacher": {...}, "cells": [Cell], "records": [values], "skipped": reason or None,
    "written": [file name]}``.

    Raises
    ------
    ValueError
        ``out`` or ``cache_dir`` is not a writable folder (checked before any work), the journal in
        ``out`` belongs to another computation or is in use, or (:class:`DataError`) a cached
        teacher is unusable.
    """
    from tqdm import tqdm  # the plain bar: no notebook widget

    dev = resolve_device(device)
    cache = check_output_dir(cache_dir or default_cache_dir(), flag="--cache-dir")
    out = check_output_dir(out, flag="--out")
    cells = preset.grid.cells()
    try:
        data = load_study_data(preset.dataset, data_root, val_size)
    except (DatasetNotFoundError, DataError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        written = _write_outputs(out, preset, cells, [], {}, skipped=reason)
        return {"teacher": {}, "cells": cells, "records": [], "skipped": reason,
                "written": written}  # fmt: skip
    journal = Journal(
        out / "journal.jsonl",
        _fingerprint(preset, cells, quantize, dev),
        {"preset": preset.describe(), "cells": [c.key() for c in cells]},
        validate=lambda r: _check_record(tuple(r["index"]), r["values"], cells),
        superseded=lambda values: values.get("status") == "error",
        lock=True,
        fix="choose another --out, or rerun with --retrain-teacher if the teacher changed, or "
        "delete it",
    )
    with journal:
        todo = [(i, s) for i in range(len(cells)) for s in range(seeds)
                if journal.done.get((i, s), {}).get("status") != "ok"]  # fmt: skip
        try:
            teacher = _teacher(preset, data, cache, dev, retrain_teacher, timing_repeats, quiet)
        except DataError:  # an unusable cached teacher: the fix is --retrain-teacher
            raise
        except Exception as exc:  # fails the cells to compute, not the command
            journal.append([((i, s), _failure(cells[i], s, exc, "teacher: ")) for i, s in todo])
            teacher, todo = {}, []
        subsets: dict[int | None, tuple[DataSplits, torch.Tensor] | Exception] = {}
        for n in dict.fromkeys(cells[i].n_per_class for i, _ in todo):
            try:
                subsets[n] = _subset(data, n, teacher, dev)
            except Exception as exc:  # fails the cells of this training set only
                subsets[n] = exc
        remote = jobs > 1 or scheduler is not None
        shared = {
            "cells": cells, "preset": preset, "subsets": subsets, "device": dev,
            "teacher": teacher["model"] if todo else None, "quantize": quantize,
            "repeats": timing_repeats, "threads": 1 if remote else None,
        }  # fmt: skip
        if remote and todo:  # workers get CPU copies and move them to their own device
            shared = _to_cpu(shared)
        bar = tqdm(total=len(todo), disable=quiet, unit="fit", desc="compress")
        for (i, seed), values in map_points(_cell_task, todo, jobs, scheduler=scheduler,
                                            shared=shared):  # fmt: skip
            journal.append([((i, seed), values)])
            cell = cells[i]
            bar.set_description(f"{cell.student} {'KD' if cell.kd else 'no KD'} seed {seed}")
            bar.update(1)
        bar.close()
        records = [journal.done[(i, s)] for i in range(len(cells)) for s in range(seeds)
                   if (i, s) in journal.done]  # fmt: skip
    info = {k: v for k, v in teacher.items() if k != "model"}  # {} when the teacher failed
    written = _write_outputs(out, preset, cells, records, info, skipped=None)
    return {"teacher": info, "cells": cells, "records": records, "skipped": None,
            "written": written}  # fmt: skip


def _cell_task(shared: dict, item: tuple[int, int]) -> tuple[tuple[int, int], dict]:
    """One cell and seed of the grid, on this process's device (:func:`kdtheory.sweep.map_points`
    calls it in the driver or on a worker; ``shared`` holds the teacher and the training sets);
    an exception fails this cell and seed only."""
    i, seed = item
    cell = shared["cells"][i]
    try:
        if shared["threads"] is not None:
            set_threads(shared["threads"])
        dev = slot_device(shared["device"], worker_slot())
        subset = shared["subsets"][cell.n_per_class]
        if isinstance(subset, Exception):
            raise subset
        cell_data, f = subset
        teacher = shared["teacher"].to(dev)
        values = train_cell(
            cell, seed, shared["preset"], cell_data.to(dev), f.to(dev), teacher, device=dev,
            quantize=shared["quantize"], repeats=shared["repeats"],
        )  # fmt: skip
        _check_record((i, seed), values, shared["cells"])  # e.g. a NaN accuracy
    except Exception as exc:
        values = _failure(cell, seed, exc)
    return (i, seed), values


def _to_cpu(shared: dict) -> dict:
    """``shared`` with its tensors and the teacher on the CPU (what is sent to the workers)."""
    subsets = {n: v if isinstance(v, Exception) else (v[0].to("cpu"), v[1].cpu())
               for n, v in shared["subsets"].items()}  # fmt: skip
    teacher = copy.deepcopy(shared["teacher"]).to("cpu")
    return {**shared, "subsets": subsets, "teacher": teacher}


def _teacher(preset, data, cache, dev, retrain, repeats, quiet) -> dict:
    """The cached (or freshly trained) teacher, its test accuracy, size and CPU inference time."""
    data_cfg = {"dataset": preset.dataset, "seed": 0, "info": data.info}
    model, info = load_or_train_teacher(
        data.to(dev), preset.teacher, config=preset.teacher_fit, cache_dir=cache,
        data_config=data_cfg, device=dev, model_options=preset.teacher_options,
        retrain=retrain, quiet=quiet,
    )  # fmt: skip
    _, acc = evaluate(model, data.test, device=dev)
    tm = _timing({"teacher": model}, data.test.x, preset, repeats)["teacher"]
    model.to(dev)
    return {
        "model": model, "name": preset.teacher, "options": preset.teacher_options,
        "test_acc": acc, "params": count_parameters(model), "size_bytes": model_size_bytes(model),
        "train_time_s": info["train_time_s"], "loaded": info["loaded"], "time": tm,
        "timing_batch": min(preset.timing_inputs, len(data.test)),
    }  # fmt: skip


def _subset(data: DataSplits, n_per_class: int | None, teacher: dict, dev: torch.device):
    """(the cell's data: the student's training set reduced to ``n_per_class`` per class, the
    teacher's logits on it)."""
    if n_per_class is not None:
        data = data.student_subset(n_per_class * data.num_classes, seed=0)
    return data, predict_logits(teacher["model"], data.train.x, device=dev)


# -------------------------------------------------------------------------------- outputs ---


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto frontier of (speed-up, accuracy) points: those that no other point beats in both
    (higher speed-up and at least the accuracy, or the same speed-up and a higher accuracy),
    sorted by speed-up."""
    best, front = -math.inf, []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front[::-1]


def summarise(cells: Sequence[Cell], records: Sequence[dict]) -> list[dict]:
    """One row per cell and precision (float32, and int8 when quantised): seeds that succeeded,
    accuracy mean and s.e. (std/√n, ddof 1), mean training time, speed-ups teacher/student
    (ratio of the mean times over seeds), parameters and size."""
    rows = []
    for cell in cells:
        ok = [r for r in records if r["cell"] == cell.key() and r["status"] == "ok"]
        failed = [r for r in records if r["cell"] == cell.key() and r["status"] == "error"]
        precisions = [("float32", ok)]
        if ok and all("int8" in r for r in ok):
            precisions.append(("int8", [{**r, **r["int8"]} for r in ok]))
        for precision, rs in precisions:
            row = {**cell.key(), "precision": precision, "seeds": len(rs),
                   "failed": len(failed), "error": failed[0]["error"] if failed else ""}  # fmt: skip
            if rs:
                acc = np.array([r["test_acc"] for r in rs])
                row |= {
                    "acc_mean": float(acc.mean()),
                    "acc_se": float(acc.std(ddof=1) / math.sqrt(len(rs))) if len(rs) > 1 else math.nan,
                    "train_time_s": float(np.mean([r["train_time_s"] for r in rs])),
                    "params": rs[0]["params"],
                    "size_bytes": rs[0]["size_bytes"],
                    **{f"speedup_{k[:-2]}": float(np.mean([r[f"teacher_{k}"] for r in rs])
                                                  / np.mean([r[k] for r in rs])) for k in _TIMES},
                }  # fmt: skip
            rows.append(row)
    return rows


CELL_FIELDS = [
    "student", "temperature", "epochs", "batch_size", "kd", "loss", "n_per_class", "precision",
    "seeds", "acc_mean", "acc_se", "train_time_s", "speedup_batch", "speedup_per_sample", "params",
    "size_bytes", "failed", "error",
]  # fmt: skip
RUN_FIELDS = [
    "student", "temperature", "epochs", "batch_size", "kd", "loss", "n_per_class", "seed",
    "status", "test_acc", "train_time_s", "batch_s", "per_sample_s", "teacher_batch_s",
    "teacher_per_sample_s", "params", "size_bytes", "int8_test_acc", "int8_size_bytes",
    "int8_batch_s", "int8_per_sample_s", "error",
]  # fmt: skip


def _csv_bytes(header: list[str], rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore")
    w.writeheader()
    w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return buf.getvalue().encode()


def _fmt(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _markdown(preset: Preset, rows: list[dict], teacher: dict, skipped: str | None) -> str:
    title = f"Compression study on {preset.dataset} (Khetarpaul et al. 2024)"
    if skipped:
        return f"{title}\n\nSkipped (data files absent or unreadable): {skipped}\n"
    lines = [title, ""]
    if teacher:
        tt = teacher["time"]
        lines += [
            f"Teacher {teacher['name']} {teacher['options']}: {teacher['params']:,} parameters, "
            f"{teacher['size_bytes'] / 1e3:.1f} kB, test accuracy {100 * teacher['test_acc']:.2f} %, "
            f"CPU inference {1e3 * tt['batch_s']:.2f} ms per batch of {teacher['timing_batch']}, "
            f"{1e3 * tt['per_sample_s']:.3f} ms per single input (CPU time, medians; each "
            "student's speed-up divides the teacher's time measured with it, in the same rounds).",
            "",
            f"Students: λ₁ = {preset.lambda1:g} with KD, tempered = {preset.tempered} (which "
            "softmaxes the soft term divides by T); accuracy mean ± s.e. over seeds; "
            "speed-up = teacher / student CPU inference time.",
            "",
        ]  # fmt: skip
    lines += [
        "| student | T | epochs | batch | loss | n/class | KD | precision | accuracy % | seeds | "
        "training s | speed-up batched | speed-up one at a time | parameters | size kB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = (f"{100 * r['acc_mean']:.2f} ± {_fmt(100 * r['acc_se'], '.2f')}"
               if "acc_mean" in r else "failed")  # fmt: skip
        lines.append(
            f"| {r['student']} | {_fmt(r['temperature'], 'g')} | {r['epochs']} | "
            f"{r['batch_size']} | {r['loss'] or '–'} | {r['n_per_class'] or 'all'} | "
            f"{'yes' if r['kd'] else 'no'} | {r['precision']} | {acc} | {r['seeds']} | "
            f"{_fmt(r.get('train_time_s'), '.2f')} | {_fmt(r.get('speedup_batch'), '.1f')} | "
            f"{_fmt(r.get('speedup_per_sample'), '.1f')} | {_fmt(r.get('params'), ',')} | "
            f"{_fmt(r.get('size_bytes', math.nan) / 1e3, '.1f')} |"
        )
    failed = [r for r in rows if r["failed"] and r["precision"] == "float32"]
    if failed:
        lines += ["", "Failed cells (left out of the means; the next run computes them again):"]
        lines += [f"- {r['student']} KD={r['kd']} T={r['temperature']}: {r['failed']} seed(s); "
                  f"{r['error']}" for r in failed]  # fmt: skip
    return "\n".join(lines) + "\n"


def _plot(path: Path, rows: list[dict], title: str) -> bool:
    """Accuracy against the batched speed-up, KD and no-KD points and frontiers; False (nothing
    written) when no cell succeeded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator

    from kdtheory.plotting import log_ticks

    shown = [r for r in rows if "acc_mean" in r]
    if not shown:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kd, colour, label in ((True, "C0", "KD"), (False, "C3", "no KD")):
        pts = [r for r in shown if r["kd"] is kd]
        if not pts:
            continue
        for precision, marker in (("float32", "o"), ("int8", "^")):
            sel = [r for r in pts if r["precision"] == precision]
            if sel:
                ax.errorbar([r["speedup_batch"] for r in sel], [100 * r["acc_mean"] for r in sel],
                            yerr=[100 * np.nan_to_num(r["acc_se"]) for r in sel], fmt=marker,
                            color=colour, mfc=colour if precision == "float32" else "none",
                            label=f"{label} ({precision})", capsize=2)  # fmt: skip
        # the staircase: the best accuracy reachable at a speed-up of at least x
        front = frontier([(r["speedup_batch"], 100 * r["acc_mean"]) for r in pts])
        ax.step(*zip(*front, strict=True), where="pre", color=colour, alpha=0.6,
                label=f"{label} frontier")  # fmt: skip
    ax.set(xscale="log", xlabel="inference speed-up, teacher / student (batched, CPU)",
           ylabel="test accuracy %", title=title)  # fmt: skip
    log_ticks(ax, "x")  # plain numbers at each decade, or at 1-2-5 steps on a narrow range
    lo, hi = ax.get_xlim()
    for subs in ((1.0, 2.0, 5.0), tuple(range(1, 10))):  # at least three labels
        if sum(lo <= t <= hi for t in ax.get_xticks()) >= 3:
            break
        ax.xaxis.set_major_locator(LogLocator(base=10.0, subs=subs, numticks=12))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
    return True


def _write_outputs(out, preset, cells, records, teacher, skipped) -> list[str]:
    rows = summarise(cells, records) if not skipped else []
    runs = []
    for r in records:
        flat = {**r["cell"], **{k: v for k, v in r.items() if k not in ("cell", "int8")}}
        flat |= {f"int8_{k}": v for k, v in r.get("int8", {}).items()}
        runs.append(flat)
    atomic_write_bytes(out / "runs.csv", _csv_bytes(RUN_FIELDS, runs))
    atomic_write_bytes(out / "cells.csv", _csv_bytes(CELL_FIELDS, rows))
    atomic_write_bytes(out / "table.md", _markdown(preset, rows, teacher, skipped).encode())
    written = ["table.md", "cells.csv", "runs.csv"]
    if _plot(out / "accuracy_vs_speedup.png", rows, f"{preset.dataset}: accuracy vs speed-up"):
        written.append("accuracy_vs_speedup.png")
    return written


# ------------------------------------------------------------------------------------ CLI ---


def _list(kind, flag: str):
    """argparse type: a comma-separated list of ``kind`` values."""

    def parse(text: str):
        try:
            items = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            items = []
        if not items:
            raise argparse.ArgumentTypeError(f"{flag} takes a comma-separated list; got {text!r}")
        return tuple(dict.fromkeys(items))

    return parse


def _n_per_class(v: str) -> int | None:
    return None if v == "all" else int(v)


def _kd(v: str) -> bool:
    if v not in ("kd", "no-kd"):
        raise ValueError(v)
    return v == "kd"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m kdtheory.neural.compress",
        description="The compression study of Khetarpaul et al. (2024): students of several sizes "
        "trained with and without KD from one teacher; test accuracy, training time, inference "
        "speed-up teacher/student (batched and one at a time, CPU), parameters and size, per cell "
        "over seeds. Writes table.md, cells.csv, runs.csv, accuracy_vs_speedup.png to --out.",
    )
    p.add_argument(
        "--preset",
        default="digits",
        choices=tuple(PRESETS),
        help="the study's grid: mnist (9 configurations), cifar10, digits (quick)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        choices=STUDY_DATASETS,
        help="data set instead of the preset's (mnist preset: fashion-mnist)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="folder of the data files (mnist, fashion-mnist: IDX files; cifar10: a "
        "folder holding cifar-10-batches-py)",
    )
    p.add_argument(
        "--students",
        type=_list(str, "--students"),
        default=None,
        help="comma-separated students, e.g. mlp:300,mlp:1200x1200,"
        "resnet4:1-1-1-1:s2,resnet4:3-4-6-3:bottleneck (default: the preset's); each must train "
        "in the memory available (parameters × 16 bytes)",
    )
    p.add_argument(
        "--temperatures",
        type=_list(float, "--temperatures"),
        default=None,
        help="comma-separated T > 0 (default: the preset's)",
    )
    p.add_argument(
        "--epochs",
        type=_list(int, "--epochs"),
        default=None,
        help="comma-separated student epochs in [1, 10 000] (default: the preset's)",
    )
    p.add_argument(
        "--batch-sizes",
        type=_list(int, "--batch-sizes"),
        default=None,
        help="comma-separated minibatch sizes ≥ 1 (default: the preset's)",
    )
    p.add_argument(
        "--losses",
        type=_list(str, "--losses"),
        default=None,
        help=f"comma-separated KD loss variants of {', '.join(LOSSES)} "
        "(-t2: soft term times T²; default: the preset's)",
    )
    p.add_argument(
        "--n-per-class",
        type=_list(_n_per_class, "--n-per-class"),
        default=None,
        help="comma-separated training images per class for the student, or all "
        "(the teacher always learns from all; default: the preset's)",
    )
    p.add_argument(
        "--kd", type=_list(_kd, "--kd"), default=None, help="kd, no-kd or both (default: kd,no-kd)"
    )
    p.add_argument(
        "--full-grid",
        action="store_true",
        help="the product of the axes instead of one factor at a time",
    )
    p.add_argument(
        "--quantize",
        action="store_true",
        help="also evaluate the int8 dynamically quantised student (linear layers)",
    )
    p.add_argument(
        "--lambda1",
        type=float,
        default=None,
        help="λ₁ ∈ [0, 1), weight of the hard-label term with KD (default: preset's)",
    )
    add_tempered(p)
    p.add_argument(
        "--teacher-epochs",
        type=int,
        default=None,
        help="teacher epochs in [1, 10 000] (default: the preset's)",
    )
    p.add_argument(
        "--resnet-width",
        type=int,
        default=None,
        help="base channels of the resnet4 teacher and students (default: 64)",
    )
    p.add_argument(
        "--val-size",
        type=int,
        default=None,
        help="validation images taken from the training files (not digits)",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell (0 … seeds − 1; ≤ 1000)")
    p.add_argument(
        "--timing-repeats",
        type=int,
        default=TIMING_ROUNDS,
        help="interleaved timing rounds of teacher and student (≥ 1)",
    )
    add_device(p)
    add_threads(p)
    add_workers(p)
    add_cache_dir(p)
    p.add_argument(
        "--retrain-teacher",
        action="store_true",
        help="ignore a cached teacher (also an unusable one) and train it again",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default: results/neural/compress-<preset>)"
    )
    add_quiet(p, table=True)
    return p  # fmt: skip


def preset_from_args(args: argparse.Namespace) -> Preset:
    """The preset with the command line's overrides applied (``ValueError`` on bad values)."""
    preset = PRESETS[args.preset]
    grid = preset.grid
    width = args.resnet_width if args.resnet_width is not None else preset.resnet_width
    if args.students:
        for s in args.students:
            parse_student(s, width)
    overrides = {a: getattr(args, a) for a in (*AXES, "kd") if getattr(args, a) is not None}
    grid = replace(grid, full=args.full_grid, **overrides)
    changes: dict = {"grid": grid, "resnet_width": width, "tempered": args.tempered}
    if args.dataset is not None:
        changes["dataset"] = args.dataset
    if args.lambda1 is not None:
        changes["lambda1"] = args.lambda1
    if args.teacher_epochs is not None:
        changes["teacher_fit"] = replace(preset.teacher_fit, epochs=args.teacher_epochs)
    if preset.teacher == "resnet4":
        changes["teacher_options"] = {**preset.teacher_options, "width": width}
    return replace(preset, **changes)


def check_resources(preset: Preset, seeds: int, timing_repeats: int) -> None:
    """Before any work: counts within the caps of :mod:`kdtheory.neural.cli` (``--seeds`` ≤
    ``MAX_SEEDS``, epochs ≤ ``MAX_EPOCHS``, ``--timing-repeats`` ≤ ``MAX_STEPS``, cells × seeds ≤
    ``MAX_FITS``) and every model (teacher and students) small enough to train in the memory
    available (:func:`~kdtheory.neural.cli.check_model_memory`); ``ValueError`` naming the flag."""
    check_count("--seeds", seeds, MAX_SEEDS)
    check_count("--timing-repeats", timing_repeats, MAX_STEPS)
    check_count("--teacher-epochs", preset.teacher_fit.epochs, MAX_EPOCHS)
    g = preset.grid
    for e in g.epochs:
        check_count("--epochs", e, MAX_EPOCHS)
    sizes = [len(getattr(g, a)) for a in AXES]
    configs = math.prod(sizes) if g.full else 1 + sum(sizes)  # an upper bound: no enumeration
    check_fits(
        configs * len(g.kd) * seeds, f"{configs} configurations × {len(g.kd)} × {seeds} seeds"
    )
    shape, k = STUDY_SHAPES[preset.dataset]
    models = [("--resnet-width" if preset.teacher == "resnet4" else "--preset",
               f"teacher {preset.teacher}", preset.teacher, preset.teacher_options)]  # fmt: skip
    for s in g.students:
        models.append(("--students", s, *parse_student(s, preset.resnet_width)))
    for flag, label, name, opts in models:
        try:
            check_model_memory(flag, label, lambda n=name, o=opts: build_model(n, shape, k, **o))
        except ResourceError:
            raise
        except Exception:  # a model that cannot be built here: its cells fail and say why
            continue


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m kdtheory.neural.compress`` (returns the exit code)."""
    p = build_parser()
    args = p.parse_args(argv)
    for flag, v, low in (("--seeds", args.seeds, 1), ("--threads", args.threads, 1),
                         ("--teacher-epochs", args.teacher_epochs, 1),
                         ("--resnet-width", args.resnet_width, 1), ("--val-size", args.val_size, 1),
                         ("--timing-repeats", args.timing_repeats, 1)):  # fmt: skip
        if v is not None and v < low:
            p.error(f"{flag} must be an integer ≥ {low}; got {v}")
    check_workers(p, args)
    if args.lambda1 is not None and not 0.0 <= args.lambda1 < 1.0:
        p.error(f"--lambda1 must be in [0, 1) (1 is no KD: use --kd no-kd); got {args.lambda1}")
    try:
        preset = preset_from_args(args)
    except ValueError as exc:
        p.error(str(exc))
    if args.val_size is not None and preset.dataset == "digits":
        p.error("--val-size applies to mnist, fashion-mnist and cifar10, not digits")
    try:
        check_resources(preset, args.seeds, args.timing_repeats)
    except ValueError as exc:
        p.error(str(exc))
    try:
        resolve_device(args.device)
    except ValueError as exc:
        p.error(f"--device: {exc}")
    set_threads(args.threads)  # before any torch work
    out = Path(args.out or f"results/neural/compress-{args.preset}")
    try:
        with one_line_warnings(p.prog):
            res = run_study(
                preset, args.seeds, out=out, data_root=args.data_root, val_size=args.val_size,
                quantize=args.quantize, device=args.device, cache_dir=args.cache_dir,
                retrain_teacher=args.retrain_teacher, timing_repeats=args.timing_repeats,
                quiet=args.quiet, jobs=args.jobs, scheduler=args.scheduler,
            )  # fmt: skip
    except ValueError as exc:  # unwritable folders, another computation's journal, a bad cache
        p.error(str(exc))
    if not args.quiet:
        print((out / "table.md").read_text(encoding="utf-8"))
    if res["skipped"]:
        print(f"skipped {preset.dataset}: {res['skipped']}", file=sys.stderr)
    failed = [r for r in res["records"] if r["status"] == "error"]
    for r in failed:
        print(f"failed {r['cell']['student']} kd={r['cell']['kd']} seed {r['seed']}: "
              f"{r['error']}", file=sys.stderr)  # fmt: skip
    first, *rest = res["written"]
    print(f"wrote {out / first}, {', '.join(rest)}")
    if not any(r["status"] == "ok" for r in res["records"]):
        print("no cell of the study succeeded (see the reasons above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
