r"""The anti-distillation experiment and the ``python -m kdtheory.neural.grow`` CLI.

Petrushina, Grabovoy, Bakhteev & Strijov, "Anti-distillation: knowledge transfer from simple model
to a complex one": a teacher trained on a simpler set D₁ initialises, through φ
(:func:`kdtheory.neural.anti.growth.grow`, or the section-4 objective of :mod:`kdtheory.neural.anti.phi`), a
wider student that is then trained on D₂.  Hypothesis 1: students started at φ(û) are more robust
and more accurate than students with default weights.

For each architecture family, seed s and scheme (``zero``, ``uniform``, ``default-ext``,
``default``, ``net2net``, and ``phi``: the section-4 minimiser started from ``default-ext``) one
cell trains the teacher (seed s, cached in memory), grows the student and trains it by plain SGD
(no momentum, so that training epoch by epoch is one SGD run), and records

* the learning curve (validation loss and accuracy per epoch) — the work's result 1;
* the norm ‖w_ext‖ and the full-training-set gradient norm ‖∇_ext L‖ of the *extended block* (the
  weights of the new hidden units, the same positions for every scheme) per epoch: under ``zero``
  the new units are dead (zero output, zero gradient, forever), see :func:`~kdtheory.neural.anti.growth.grow`;
* test accuracy and loss under a fraction p ∈ {0, …, 50 %} of the pixels replaced by uniform noise
  over the data range, and under Gaussian noise N(0, σ²) — result 2 (same draws for every cell);
* L₃^δ(w*, D₂) (uniform noise in the L∞ ball of radius δ, Monte Carlo) and the test softmax
  (prediction variance across seeds).

Presets: ``classes`` (result 3: the teacher on the first half of the classes, the student on all),
``input`` (the teacher on ψ*-shrunk images: 2 × 2 average pool), ``cifar`` (result 4: the teacher
on Fashion-MNIST 1×28×28, the student on CIFAR-10 3×32×32 through ψ = channel copy + zero pad;
skipped, exit 0, when either set is absent).  Outputs in ``--out``: ``table.csv``/``table.md``
(per family and scheme: mean ± s.e. over seeds, and the difference to ``default`` paired by seed),
``curves.csv``, ``corruption.csv``, figures ``learning_curves_<family>.png``,
``corruption_<family>.png``, ``extension_<family>.png``, and the journal ``journal.jsonl`` (a rerun
resumes; failed cells are recorded and computed again).  Exit status: 0, or 1 when a cell
failed (listed at the end of ``table.md``), or 2 for bad input (one line, nothing written).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from kdtheory.journal import (
    NONNEGATIVE,
    PROBABILITY,
    Journal,
    check_output_dir,
    check_values,
    one_line_warnings,
    write_atomic,
)
from kdtheory.neural.anti.growth import (
    FAMILIES,
    SCHEMES,
    build_family,
    grow,
    hidden_extension,
    psi,
    shrink,
)
from kdtheory.neural.anti.phi import PhiObjective, fit_phi, perturb, perturbed_loss
from kdtheory.neural.checkpoints import save_png
from kdtheory.neural.cli import (
    MAX_EPOCHS,
    MAX_SEEDS,
    MAX_STEPS,
    Parser,
    ResourceError,
    add_threads,
    add_workers,
    check_count,
    check_fits,
    check_model_memory,
    check_workers,
)
from kdtheory.neural.data import DatasetNotFoundError, Split, load_dataset
from kdtheory.neural.timing import set_threads
from kdtheory.neural.training import FitConfig, evaluate, fit, predict_logits
from kdtheory.sweep import map_points

__all__ = ["ALL_SCHEMES", "GrowthTask", "Settings", "main", "make_task", "run", "run_cell"]

ALL_SCHEMES = (*SCHEMES, "phi")
PRESETS = ("classes", "input", "cifar")
CORRUPTION = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
SIGMAS = (0.0, 0.25, 0.5, 1.0, 2.0)
PROG = "kdtheory.neural.grow"


@dataclass(frozen=True)
class GrowthTask:
    """D₁ (the teacher's train/val) and D₂ (the student's train/val/test) with shapes and c₁, c₂."""

    teacher_train: Split
    teacher_val: Split
    train: Split
    val: Split
    test: Split
    teacher_shape: tuple[int, ...]
    student_shape: tuple[int, ...]
    teacher_classes: int
    student_classes: int
    name: str = ""


@dataclass(frozen=True)
class Settings:
    """Everything a cell depends on (its fingerprint)."""

    preset: str = "classes"
    dataset: str = "digits"
    families: tuple[str, ...] = FAMILIES
    schemes: tuple[str, ...] = ALL_SCHEMES
    seeds: int = 5
    epochs: int = 20
    teacher_epochs: int = 20
    lr: float = 0.1
    batch_size: int = 32
    teacher_width: int = 16
    student_width: int = 32
    theta: float = 0.05
    delta: float = 0.5
    n_mc: int = 4
    phi_steps: int = 30
    phi_lambdas: tuple[float, float, float, float] = (0.4, 0.4, 0.1, 0.1)
    train_size: int | None = None

    def widths(self, family: str) -> tuple[int, int]:
        """Teacher and student hidden sizes (a CNN's base width is a quarter: 4 → 8 maps)."""
        if family == "cnn":
            return max(1, self.teacher_width // 4), max(1, self.student_width // 4)
        return self.teacher_width, self.student_width


def _select(split: Split, keep: torch.Tensor) -> Split:
    return Split(split.x[keep], split.y[keep])


def make_task(
    preset: str, dataset: str, *, data_root: str | None = None, train_size: int | None = None
) -> GrowthTask:
    """Load the data of a preset (raises ``DatasetNotFoundError`` when files are absent)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    opts = {"train_size": train_size} if (dataset == "fashion-mnist" and train_size) else {}
    if preset == "cifar":
        cf = load_dataset("cifar10", data_root=data_root, seed=0)  # absent here: fail fast
        fm = load_dataset(
            "fashion-mnist",
            data_root=None,
            seed=0,
            **({"train_size": train_size} if train_size else {}),
        )
        return GrowthTask(
            fm.train,
            fm.val,
            cf.train,
            cf.val,
            cf.test,
            fm.input_shape,
            cf.input_shape,
            10,
            10,
            "fashion-mnist→cifar10",
        )
    d = load_dataset(dataset, data_root=data_root, seed=0, **opts)
    c, h, w = d.input_shape
    if preset == "classes":
        c1 = d.num_classes // 2
        return GrowthTask(
            _select(d.train, d.train.y < c1),
            _select(d.val, d.val.y < c1),
            d.train,
            d.val,
            d.test,
            d.input_shape,
            d.input_shape,
            c1,
            d.num_classes,
            f"{dataset}: classes 0–{c1 - 1} → 0–{d.num_classes - 1}",
        )
    small = (c, h // 2, w // 2)
    return GrowthTask(
        Split(shrink(d.train.x, small), d.train.y),
        Split(shrink(d.val.x, small), d.val.y),
        d.train,
        d.val,
        d.test,
        small,
        d.input_shape,
        d.num_classes,
        d.num_classes,
        f"{dataset}: {h // 2}×{w // 2} → {h}×{w} inputs",
    )


# ---------------------------------------------------------------------------------- cells ---


def _ext_norms(model: nn.Module, ext: dict[str, torch.Tensor], train: Split) -> tuple[float, float]:
    """‖w_ext‖ and ‖∇_ext L(w, D₂)‖ (full training set, mean CE)."""
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(train.x), train.y).backward()
    w2 = g2 = 0.0
    for name, p in model.named_parameters():
        m = ext[name]
        w2 += float(p.detach()[m].pow(2).sum())
        g2 += float(p.grad[m].pow(2).sum())
    model.zero_grad(set_to_none=True)
    return math.sqrt(w2), math.sqrt(g2)


def _teacher(task: GrowthTask, family: str, seed: int, s: Settings) -> nn.Module:
    wt, _ = s.widths(family)
    model = build_family(family, task.teacher_shape, task.teacher_classes, wt, seed=seed)
    cfg = FitConfig(
        epochs=s.teacher_epochs, batch_size=s.batch_size, lr=s.lr, momentum=0.0, seed=seed
    )
    fit(model, task.teacher_train, config=cfg, quiet=True)
    return model


def _phi(model: nn.Module, mask: dict, task: GrowthTask, s: Settings, seed: int) -> None:
    """Replace the weights of ``model`` by the section-4 minimiser started at them."""
    x1 = psi(task.teacher_train.x, task.student_shape)
    lo, hi = float(task.train.x.min()), float(task.train.x.max())
    start = parameters_to_vector(model.parameters()).detach()
    flat_mask = torch.cat([mask[n].reshape(-1) for n, _ in model.named_parameters()])
    obj = PhiObjective(
        model,
        start,
        flat_mask,
        x1,
        task.teacher_train.y,
        lambdas=s.phi_lambdas,
        delta=s.delta,
        low=lo,
        high=hi,
        probes=1,
        seed=seed,
    )
    w = fit_phi(obj, steps=s.phi_steps, lr=1e-2)
    torch.nn.utils.vector_to_parameters(w, model.parameters())


def run_cell(
    task: GrowthTask, family: str, scheme: str, seed: int, s: Settings, teacher: nn.Module
) -> dict:
    """Grow, train and measure one student (see the module text); returns the journal values."""
    _, ws = s.widths(family)
    fresh = build_family(family, task.student_shape, task.student_classes, ws, seed=10_000 + seed)
    shapes = {"teacher_input_shape": task.teacher_shape, "student_input_shape": task.student_shape}
    _, zmask = grow(teacher, fresh, "zero", **shapes)
    ext = hidden_extension(fresh, zmask, task.student_shape, task.teacher_classes)
    base = "default-ext" if scheme == "phi" else scheme
    model, mask = grow(teacher, fresh, base, theta=s.theta, seed=seed, **shapes)
    if scheme == "phi":
        _phi(model, mask, task, s, seed)
    curve = {"val_loss": [], "val_acc": [], "ext_norm": [], "ext_grad": []}
    vl, va = evaluate(model, task.val)
    en, eg = _ext_norms(model, ext, task.train)
    for key, v in zip(curve, (vl, va, en, eg), strict=True):
        curve[key].append(v)
    t0 = time.perf_counter()
    for epoch in range(1, s.epochs + 1):
        cfg = FitConfig(
            epochs=1, batch_size=s.batch_size, lr=s.lr, momentum=0.0, seed=1000 * seed + epoch
        )
        h = fit(model, task.train, config=cfg, val=task.val, quiet=True)
        en, eg = _ext_norms(model, ext, task.train)
        for key, v in zip(curve, (h.val_loss[-1], h.val_acc[-1], en, eg), strict=True):
            curve[key].append(v)
    train_s = time.perf_counter() - t0
    test_loss, test_acc = evaluate(model, task.test)
    lo, hi = float(task.train.x.min()), float(task.train.x.max())
    corr = {"pixels": [], "gaussian": []}
    with torch.no_grad():
        for kind, levels in (("pixels", CORRUPTION), ("gaussian", SIGMAS)):
            for level in levels:
                gen = torch.Generator().manual_seed(777)  # the same draws in every cell
                xc = perturb(task.test.x, kind, level, low=lo, high=hi, generator=gen)
                corr[kind].append(list(evaluate(model, Split(xc, task.test.y))))
        gen = torch.Generator().manual_seed(778)
        l3 = perturbed_loss(
            lambda xx: nn.functional.cross_entropy(model(xx), task.test.y),
            task.test.x,
            "uniform",
            s.delta,
            n_mc=s.n_mc,
            low=lo,
            high=hi,
            generator=gen,
        )
    probs = torch.softmax(predict_logits(model, task.test.x), dim=1)
    return {
        "status": "ok",
        "test_loss": test_loss,
        "test_acc": test_acc,
        "L3": float(l3),
        "curve": curve,
        "corruption": corr,
        "probs": np.round(probs.numpy(), 5).tolist(),
        "train_s": train_s,
    }


# ------------------------------------------------------------------------------------ run ---


def _fingerprint(s: Settings, task: GrowthTask) -> str:
    blob = json.dumps(
        {"settings": asdict(s), "task": task.name, "n": len(task.train)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _validator(s: Settings):
    def validate(record: dict) -> None:
        f, sc, seed = record["index"]
        if not (0 <= f < len(s.families) and 0 <= sc < len(s.schemes) and 0 <= seed < s.seeds):
            raise ValueError("index outside the grid")
        v = record["values"]
        if v.get("status") == "error":
            if not isinstance(v.get("error"), str):
                raise ValueError("a failure names its error")
            return
        need = {"status", "test_loss", "test_acc", "L3", "curve", "corruption", "probs", "train_s"}
        if set(v) != need or v["status"] != "ok":
            raise ValueError("not a cell record")
        # a result: finite accuracies in [0, 1], cross-entropies and times ≥ 0
        ranges = {"test_acc": PROBABILITY, "test_loss": NONNEGATIVE, "L3": NONNEGATIVE}
        check_values(v, {**ranges, "train_s": NONNEGATIVE}, ok=True)
        check_values(v["curve"], {"val_acc": PROBABILITY, "val_loss": NONNEGATIVE}, ok=True)
        if len(v["curve"]["val_acc"]) != s.epochs + 1:
            raise ValueError("learning curve of another length")

    return validate


@dataclass
class RunResult:
    results: dict = field(default_factory=dict)  # (family, scheme, seed) → values
    computed: int = 0
    failed: list = field(default_factory=list)


def _teacher_task(shared: dict, item: tuple[int, int]):
    """((family index, seed), the trained teacher or the exception that stopped it)."""
    fi, seed = item
    s: Settings = shared["settings"]
    try:
        if shared["remote"]:
            set_threads(1)
        return item, _teacher(shared["task"], s.families[fi], seed, s)
    except Exception as exc:  # fails the cells of this teacher only
        return item, exc


def _cell_task(shared: dict, item: tuple[int, int, int]):
    """((family, scheme, seed) indices, journal values, wall seconds) of one cell, grown from the
    teacher of its family and seed in ``shared``; an exception fails this cell only."""
    fi, si, seed = item
    s: Settings = shared["settings"]
    t0 = time.perf_counter()
    try:
        if shared["remote"]:
            set_threads(1)
        teacher = shared["teachers"][fi, seed]
        if isinstance(teacher, Exception):
            raise teacher
        values = run_cell(shared["task"], s.families[fi], s.schemes[si], seed, s, teacher)
        _validator(s)({"index": [fi, si, seed], "values": values})  # e.g. a NaN result
    except Exception as exc:
        values = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    return item, values, time.perf_counter() - t0


def run(
    task: GrowthTask,
    s: Settings,
    out: Path,
    *,
    log=print,
    jobs: int = 1,
    scheduler: str | None = None,
) -> RunResult:
    """All cells of ``s`` on ``task`` with the journal ``out/journal.jsonl``; then the outputs.

    The teachers (one per family and seed with cells to compute), then the cells, run in this
    process, on ``jobs`` local workers or on the Dask cluster at ``scheduler``
    (:func:`kdtheory.sweep.map_points`); the results are the same.
    """
    res = RunResult()
    journal = Journal(
        out / "journal.jsonl",
        _fingerprint(s, task),
        {"settings": asdict(s)},
        validate=_validator(s),
        lock=True,
        superseded=lambda v: v.get("status") == "error",
    )
    with journal:
        todo = [
            (fi, si, seed)
            for fi in range(len(s.families))
            for seed in range(s.seeds)
            for si in range(len(s.schemes))
            if journal.done.get((fi, si, seed), {}).get("status") != "ok"
        ]
        shared = {"task": task, "settings": s, "remote": jobs > 1 or scheduler is not None}
        groups = list(dict.fromkeys((fi, seed) for fi, _, seed in todo))
        shared["teachers"] = dict(
            map_points(_teacher_task, groups, jobs, scheduler=scheduler, shared=shared)
        )
        for (fi, si, seed), values, wall in map_points(
            _cell_task, todo, jobs, scheduler=scheduler, shared=shared
        ):
            family, scheme = s.families[fi], s.schemes[si]
            if values["status"] != "ok":
                log(f"{PROG}: cell {family}/{scheme}/seed {seed} failed: {values['error']}")
            journal.append([((fi, si, seed), values)])
            res.computed += 1
            if values["status"] == "ok":
                log(f"{family:5s} {scheme:12s} seed {seed}: acc {values['test_acc']:.4f} "
                    f"({wall:.1f} s)")  # fmt: skip
        for (fi, si, seed), v in journal.done.items():
            key = (s.families[fi], s.schemes[si], seed)
            if v.get("status") == "ok":
                res.results[key] = v
            else:
                res.failed.append((*key, v.get("error", "")))
    write_outputs(res, s, task, out)
    return res


# -------------------------------------------------------------------------------- outputs ---


def _mse(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (s.d. / √n; nan for n < 2)."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.nan
    return float(a.mean()), se


def summary_rows(res: RunResult, s: Settings) -> list[dict]:
    """One row per (family, scheme): means ± s.e., paired differences to ``default``, variance."""
    rows = []
    for family in s.families:
        for scheme in s.schemes:
            cells = {
                seed: res.results[(family, scheme, seed)]
                for seed in range(s.seeds)
                if (family, scheme, seed) in res.results
            }
            if not cells:
                continue
            row = {"family": family, "scheme": scheme, "seeds": len(cells)}
            for key in ("test_acc", "test_loss", "L3"):
                row[key], row[key + "_se"] = _mse([c[key] for c in cells.values()])
                base = {sd: res.results.get((family, "default", sd)) for sd in cells}
                diffs = [c[key] - base[sd][key] for sd, c in cells.items() if base[sd]]
                row[f"d_{key}"], row[f"d_{key}_se"] = (
                    _mse(diffs) if scheme != "default" else (math.nan, math.nan)
                )
            row["acc_p50"], row["acc_p50_se"] = _mse(
                [c["corruption"]["pixels"][-1][1] for c in cells.values()]
            )
            probs = np.array([c["probs"] for c in cells.values()])
            row["pred_var"] = (
                float(probs.var(axis=0, ddof=1).sum(axis=1).mean()) if len(cells) > 1 else math.nan
            )
            row["ext_norm_end"] = float(
                np.mean([c["curve"]["ext_norm"][-1] for c in cells.values()])
            )
            row["ext_grad_end"] = float(
                np.mean([c["curve"]["ext_grad"][-1] for c in cells.values()])
            )
            row["ext_grad_max"] = float(
                np.max([max(c["curve"]["ext_grad"]) for c in cells.values()])
            )
            rows.append(row)
    return rows


def _fmt(m: float, se: float, digits: int = 4) -> str:
    if math.isnan(m):
        return "—"
    return f"{m:.{digits}f}" if math.isnan(se) else f"{m:.{digits}f} ± {se:.{digits}f}"


def _markdown(rows: list[dict], s: Settings, task: GrowthTask, res: RunResult) -> str:
    head = (
        f"# Anti-distillation: {task.name}\n\n{s.seeds} seeds, {s.epochs} epochs of SGD "
        f"(lr {s.lr}, batch {s.batch_size}), widths {s.teacher_width} → {s.student_width}, "
        f"θ = {s.theta}, δ = {s.delta}. Mean ± s.e. over seeds; Δ = scheme − default, "
        "paired by seed. pred. var = Σ_k Var_seeds p_k(x), averaged over the test set; "
        "‖∇ ext‖ = gradient norm of the new units' weights at the end (0: dead).\n\n"
    )
    cols = [
        "family",
        "scheme",
        "accuracy",
        "Δ accuracy",
        "loss",
        "Δ loss",
        "L₃^δ",
        "Δ L₃^δ",
        "acc. at 50 % pixels",
        "pred. var",
        "‖ext‖",
        "‖∇ ext‖",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["family"],
                    r["scheme"],
                    _fmt(r["test_acc"], r["test_acc_se"]),
                    _fmt(r["d_test_acc"], r["d_test_acc_se"]),
                    _fmt(r["test_loss"], r["test_loss_se"]),
                    _fmt(r["d_test_loss"], r["d_test_loss_se"]),
                    _fmt(r["L3"], r["L3_se"]),
                    _fmt(r["d_L3"], r["d_L3_se"]),
                    _fmt(r["acc_p50"], r["acc_p50_se"]),
                    f"{r['pred_var']:.4f}",
                    f"{r['ext_norm_end']:.3g}",
                    f"{r['ext_grad_end']:.3g}",
                ]
            )
            + " |"
        )
    tail = ""
    if res.failed:
        tail = "\n\nFailed cells:\n\n" + "\n".join(
            f"- {f}/{sc}/seed {sd}: {e}" for f, sc, sd, e in res.failed
        )
    return head + "\n".join(lines) + tail + "\n"


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def _band(ax, x, runs, label):
    a = np.asarray(runs, dtype=float)
    m = a.mean(axis=0)
    se = a.std(axis=0, ddof=1) / math.sqrt(len(a)) if len(a) > 1 else np.zeros_like(m)
    ax.plot(x, m, label=label)
    ax.fill_between(x, m - se, m + se, alpha=0.2)


def write_outputs(res: RunResult, s: Settings, task: GrowthTask, out: Path) -> None:
    """Tables (CSV, Markdown), long CSVs and figures from the results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary_rows(res, s)
    _write_text(out / "table.csv", _csv(rows))
    _write_text(out / "table.md", _markdown(rows, s, task, res))
    curves, corr = [], []
    for (family, scheme, seed), v in sorted(res.results.items()):
        c = v["curve"]
        for e in range(len(c["val_acc"])):
            curves.append(
                {
                    "family": family,
                    "scheme": scheme,
                    "seed": seed,
                    "epoch": e,
                    **{k: c[k][e] for k in c},
                }
            )
        for kind, levels in (("pixels", CORRUPTION), ("gaussian", SIGMAS)):
            for level, (loss, acc) in zip(levels, v["corruption"][kind], strict=True):
                corr.append(
                    {
                        "family": family,
                        "scheme": scheme,
                        "seed": seed,
                        "noise": kind,
                        "level": level,
                        "loss": loss,
                        "acc": acc,
                    }
                )
    _write_text(out / "curves.csv", _csv(curves))
    _write_text(out / "corruption.csv", _csv(corr))
    for family in s.families:
        per = {
            sc: [
                res.results[(family, sc, sd)]
                for sd in range(s.seeds)
                if (family, sc, sd) in res.results
            ]
            for sc in s.schemes
        }
        per = {k: v for k, v in per.items() if v}
        if not per:
            continue
        epochs = np.arange(s.epochs + 1)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for sc, cells in per.items():
            _band(axes[0], epochs, [c["curve"]["val_acc"] for c in cells], sc)
            _band(axes[1], epochs, [c["curve"]["val_loss"] for c in cells], sc)
        for ax, lab in zip(axes, ("validation accuracy", "validation loss"), strict=True):
            ax.set_xlabel("epoch")
            ax.set_ylabel(lab)
        axes[0].legend()
        fig.suptitle(f"{task.name}, {family}: mean ± s.e. over seeds")
        save_png(fig, out / f"learning_curves_{family}.png")
        plt.close(fig)
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        for sc, cells in per.items():
            _band(
                axes[0],
                100 * np.array(CORRUPTION),
                [[a for _, a in c["corruption"]["pixels"]] for c in cells],
                sc,
            )
            _band(
                axes[1],
                100 * np.array(CORRUPTION),
                [[lo for lo, _ in c["corruption"]["pixels"]] for c in cells],
                sc,
            )
            _band(
                axes[2],
                np.array(SIGMAS),
                [[a for _, a in c["corruption"]["gaussian"]] for c in cells],
                sc,
            )
        axes[0].set(xlabel="pixels replaced by noise (%)", ylabel="test accuracy")
        axes[1].set(xlabel="pixels replaced by noise (%)", ylabel="test loss")
        axes[2].set(xlabel="Gaussian noise σ", ylabel="test accuracy")
        axes[0].legend()
        fig.suptitle(f"{task.name}, {family}: robustness")
        save_png(fig, out / f"corruption_{family}.png")
        plt.close(fig)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for sc, cells in per.items():
            _band(axes[0], epochs, [c["curve"]["ext_norm"] for c in cells], sc)
            _band(axes[1], epochs, [c["curve"]["ext_grad"] for c in cells], sc)
        axes[0].set(xlabel="epoch", ylabel="‖w_ext‖ (new units)")
        axes[1].set(xlabel="epoch", ylabel="‖∇_ext L‖", yscale="symlog")
        axes[0].legend()
        fig.suptitle(f"{task.name}, {family}: the extended block")
        save_png(fig, out / f"extension_{family}.png")
        plt.close(fig)


# ------------------------------------------------------------------------------------ CLI ---


def _list(choices: Sequence[str]):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(t for t in text.split(",") if t)
        bad = [t for t in items if t not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(
                f"choose from {', '.join(choices)} (comma-separated); got {text!r}"
            )
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Anti-distillation (Petrushina, Grabovoy, Bakhteev & Strijov): a teacher "
        "trained on a simpler set initialises a wider student by each growth scheme; the students "
        "are trained on the full set and compared (learning curves, accuracy, robustness to "
        "corrupted inputs). Writes table.md, table.csv, curves.csv, corruption.csv and figures "
        "to --out; a rerun resumes from its journal.",
    )
    d = Settings()
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default=d.preset,
        help="classes: teacher on half the classes (result 3 and, with it, results 1 "
        "and 2); input: teacher on 2×2-pooled images; cifar: Fashion-MNIST → "
        "CIFAR-10 (result 4) (default: %(default)s)",
    )
    p.add_argument(
        "--dataset",
        choices=("digits", "fashion-mnist"),
        default=d.dataset,
        help="data set of the classes and input presets (default: %(default)s)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="folder holding cifar-10-batches-py (preset cifar; default: none)",
    )
    p.add_argument(
        "--out",
        default="results/neural/grow",
        help="output folder: journal, tables, figures (default: %(default)s)",
    )
    p.add_argument(
        "--families",
        type=_list(FAMILIES),
        default=d.families,
        help=f"comma-separated architecture families of {', '.join(FAMILIES)} (default: all)",
    )
    p.add_argument(
        "--schemes",
        type=_list(ALL_SCHEMES),
        default=d.schemes,
        help=f"comma-separated initialisations of {', '.join(ALL_SCHEMES)} (default: all)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=d.seeds,
        help="seeds per family and scheme (≥ 2: paired differences need two; default: %(default)s)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=d.epochs,
        help="student training epochs on D₂ (≥ 1; default: %(default)s)",
    )
    p.add_argument(
        "--teacher-epochs",
        type=int,
        default=d.teacher_epochs,
        help="teacher training epochs on D₁ (≥ 1; default: %(default)s)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=d.lr,
        help="SGD learning rate of teacher and student, no momentum (> 0; default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="minibatch size (≥ 1; default: %(default)s)",
    )
    p.add_argument(
        "--teacher-width",
        type=int,
        default=d.teacher_width,
        help="teacher hidden units (a CNN's base width is a quarter; ≥ 1; default: %(default)s)",
    )
    p.add_argument(
        "--student-width",
        type=int,
        default=d.student_width,
        help="student hidden units, ≥ --teacher-width (default: %(default)s)",
    )
    p.add_argument(
        "--theta",
        type=float,
        default=d.theta,
        help="θ of the uniform scheme's new weights U[0, θ] (> 0; default: %(default)s)",
    )
    p.add_argument(
        "--delta",
        type=float,
        default=d.delta,
        help="δ of L₃^δ, the L∞ radius of the input noise (> 0; default: %(default)s)",
    )
    p.add_argument(
        "--phi-steps",
        type=int,
        default=d.phi_steps,
        help="optimiser steps of the phi scheme's section-4 objective (≥ 0; default: %(default)s)",
    )
    p.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="Fashion-MNIST training images kept (default: all)",
    )
    add_threads(p)
    add_workers(p)
    return p  # fmt: skip


def _settings(a: argparse.Namespace) -> Settings:
    for name, low in (
        ("seeds", 2),
        ("epochs", 1),
        ("teacher_epochs", 1),
        ("batch_size", 1),
        ("teacher_width", 1),
        ("student_width", 1),
        ("phi_steps", 0),
    ):
        if getattr(a, name) < low:
            raise ValueError(
                f"--{name.replace('_', '-')} must be an integer ≥ {low}, got {getattr(a, name)}"
            )
    for name, low, cap in (("seeds", 2, MAX_SEEDS), ("epochs", 1, MAX_EPOCHS),
                           ("teacher_epochs", 1, MAX_EPOCHS), ("phi_steps", 0, MAX_STEPS)):  # fmt: skip
        check_count(f"--{name.replace('_', '-')}", getattr(a, name), cap, low=low)
    check_fits(len(a.families) * len(a.schemes) * a.seeds, "--families × --schemes × --seeds")
    if a.student_width < a.teacher_width:
        raise ValueError(
            f"--student-width must be ≥ --teacher-width ({a.teacher_width}), got {a.student_width}"
        )
    for name in ("lr", "theta", "delta"):
        v = getattr(a, name)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{name} must be a finite number > 0, got {v}")
    return Settings(
        preset=a.preset,
        dataset=a.dataset,
        families=a.families,
        schemes=a.schemes,
        seeds=a.seeds,
        epochs=a.epochs,
        teacher_epochs=a.teacher_epochs,
        lr=a.lr,
        batch_size=a.batch_size,
        teacher_width=a.teacher_width,
        student_width=a.student_width,
        theta=a.theta,
        delta=a.delta,
        phi_steps=a.phi_steps,
        train_size=a.train_size,
    )


def check_memory(task: GrowthTask, s: Settings) -> None:
    """Before any training: every family's teacher and student small enough to train in the
    memory available (:func:`~kdtheory.neural.cli.check_model_memory`; ``ValueError`` naming
    ``--teacher-width`` or ``--student-width``)."""
    for family in s.families:
        for flag, value, width, shape, k in (
            ("--teacher-width", s.teacher_width, s.widths(family)[0], task.teacher_shape,
             task.teacher_classes),
            ("--student-width", s.student_width, s.widths(family)[1], task.student_shape,
             task.student_classes),
        ):  # fmt: skip

            def build(f=family, w=width, sh=shape, c=k):
                return build_family(f, sh, c, w, seed=0)

            try:
                check_model_memory(flag, f"{value} ({family})", build)
            except ResourceError:
                raise
            except Exception:  # a model that cannot be built here: its cells fail and say why
                continue


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2: bad input, nothing written)."""
    p = build_parser()
    a = p.parse_args(argv)
    try:
        s = _settings(a)
        if a.threads < 1:
            raise ValueError(f"--threads must be an integer ≥ 1, got {a.threads}")
        check_workers(p, a)
        out = check_output_dir(a.out)
    except ValueError as exc:
        p.exit(2, f"{PROG}: error: {exc}\n")
    set_threads(a.threads)  # before any torch work
    try:
        task = make_task(s.preset, s.dataset, data_root=a.data_root, train_size=s.train_size)
    except DatasetNotFoundError as exc:
        if s.preset == "cifar":
            print(f"{PROG}: skipped: {exc}")
            return 0
        p.exit(2, f"{PROG}: error: {exc}\n")
    try:
        check_memory(task, s)
    except ValueError as exc:
        p.exit(2, f"{PROG}: error: {exc}\n")
    t0 = time.perf_counter()
    try:
        with one_line_warnings(PROG):
            res = run(task, s, out, jobs=a.jobs, scheduler=a.scheduler)
    except ValueError as exc:  # a locked or foreign journal
        p.exit(2, f"{PROG}: error: {exc}\n")
    print(
        f"{PROG}: {res.computed} cells computed, {len(res.results)} done, "
        f"{len(res.failed)} failed, {time.perf_counter() - t0:.0f} s; tables and figures in {out}"
    )
    return 1 if res.failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
