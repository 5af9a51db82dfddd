r"""Gorpinich et al.'s comparison table: accuracy of each way of choosing λ = (λ₁, T), per data set.

    python -m kdtheory.neural.table --datasets synthetic,fashion-mnist --runs 5

For every data set and run it trains (or loads) the teacher, caches its logits once, and trains the
same student with each method of :mod:`kdtheory.neural.lambda_path.methods` under the same step budget. Output
in ``--out`` (default ``results/neural/table``):

``table.md``, ``table.csv``
    accuracy as "mean (best)" over runs per method and data set, and the cost of each method
    (training steps, hypergradient steps, wall time, wall time relative to training without KD);
``runs.csv``
    one row per (data set, method, run): accuracies, losses, final λ₁ and T, costs;
``trajectories.png``
    λ₁ and T along training for the gradient-based and proposed methods (run 0);
``journal-<dataset>.jsonl``
    finished runs; an interrupted table resumes with the same command and recomputes nothing.

A data set whose files are absent is reported as skipped (in the output and the files), never
dropped silently. An exception in one (data set, method, run) cell fails that cell only: it is
journalled with its message, listed in the outputs, and computed again by the next run of the
command. The recipe of each data set (teacher, student, budget) is ``RECIPES``; ``--steps`` and
``--trials`` override the budget. Teachers are cached in ``--cache-dir`` (default: the per-user
folder of :func:`kdtheory.neural.checkpoints.default_cache_dir`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from kdtheory.journal import (
    COUNT,
    NONNEGATIVE,
    POSITIVE,
    PROBABILITY,
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
    MAX_FITS,
    MAX_SEEDS,
    MAX_STEPS,
    Parser,
    add_cache_dir,
    add_device,
    add_quiet,
    add_tempered,
    add_threads,
    add_workers,
    check_count,
    check_fits,
    check_workers,
)
from kdtheory.neural.data import DataError, DatasetNotFoundError, DataSplits, load_dataset
from kdtheory.neural.device import resolve_device, slot_device
from kdtheory.neural.lambda_path.methods import LABELS, METHODS, Budget, KDExperiment
from kdtheory.neural.models import build_model
from kdtheory.neural.timing import set_threads
from kdtheory.neural.training import FitConfig, evaluate, predict_logits
from kdtheory.sweep import map_points, worker_slot

__all__ = ["RECIPES", "Recipe", "main", "run_table"]

TABLE_DATASETS = ("synthetic", "fashion-mnist", "cifar10-reduced", "cifar10")
TITLES = {
    "synthetic": "Synthetic dataset",
    "fashion-mnist": "Fashion-MNIST",
    "cifar10-reduced": "Reduced CIFAR-10",
    "cifar10": "CIFAR-10",
}


@dataclass(frozen=True)
class Recipe:
    """How one data set enters the table: data options, teacher, student and the shared budget.

    ``student_size``: the student learns from a class-balanced subset of this many training
    examples and the teacher from all of them (None: both from the whole training split).
    ``per_run_data``: each run draws its own data set (seed = run) and trains its own teacher
    (the synthetic set, where both are cheap); otherwise data and teacher are fixed (seed 0) and
    runs differ in the student's initial weights, minibatch order and random draws.
    """

    dataset: str
    teacher: str
    teacher_fit: FitConfig
    student: str
    budget: Budget
    student_options: dict = field(default_factory=dict)
    data_options: dict = field(default_factory=dict)
    student_size: int | None = None
    per_run_data: bool = False

    def describe(self) -> dict:
        return asdict(self)


RECIPES = {
    # 30 labelled points for the student, 10 000 for the teacher (Gorpinich et al.: "much smaller")
    "synthetic": Recipe(
        dataset="synthetic",
        data_options={"n_teacher": 10_000, "n_student": 30, "n_val": 200, "n_test": 10_000},
        teacher="mlp-large",
        teacher_fit=FitConfig(epochs=20, batch_size=128, lr=0.05, momentum=0.9),
        student="mlp",
        student_options={"hidden": 32},
        budget=Budget(
            steps=1000, lr=0.5, batch_size=30, val_batch_size=200, meta_lr=0.05, trials=10
        ),
        per_run_data=True,
    ),
    # the teacher of `python -m kdtheory.neural.train --dataset fashion-mnist` on all 55 000
    # training images, the student on 5 000 of them (500 per class); γ = 0.2 chosen from
    # {0.05, 0.1, 0.2, 0.4} by the validation accuracy without KD (3 seeds), then γ_λ from
    # {0.02, 0.005, 0.002} by that of one gradient-based and one proposed run (seed 1)
    "fashion-mnist": Recipe(
        dataset="fashion-mnist",
        teacher="cnn",
        teacher_fit=FitConfig(epochs=3, batch_size=128, lr=0.05, momentum=0.9),
        student="mlp",
        student_options={"hidden": 100},
        student_size=5000,
        budget=Budget(
            steps=3000, lr=0.2, batch_size=128, val_batch_size=500, meta_lr=0.002, trials=6
        ),
    ),
    # not measured on this machine (no CIFAR-10 files here): a ResNet teacher, the small CNN student
    **{
        name: Recipe(
            dataset=name,
            teacher="resnet",
            teacher_fit=FitConfig(
                epochs=30, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4
            ),
            student="cnn-small",
            budget=Budget(
                steps=steps, lr=0.05, batch_size=128, val_batch_size=500, meta_lr=0.02, trials=6
            ),
        )
        for name, steps in (("cifar10-reduced", 4000), ("cifar10", 10_000))
    },
}


def _fingerprint(recipe: Recipe, device: torch.device) -> str:
    blob = json.dumps(
        {"recipe": recipe.describe(), "device": device.type}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _load(recipe: Recipe, seed: int, roots: dict[str, str]) -> DataSplits:
    root = roots.get("cifar10" if recipe.dataset.startswith("cifar10") else recipe.dataset)
    data = load_dataset(recipe.dataset, data_root=root, seed=seed, **recipe.data_options)
    return data if recipe.student_size is None else data.student_subset(recipe.student_size, seed)


def _teacher_logits(
    recipe: Recipe,
    data: DataSplits,
    seed: int,
    cache_dir: Path,
    device: torch.device,
    retrain: bool = False,
    quiet: bool = True,
) -> tuple[torch.Tensor, float]:
    """(f on the student's training inputs, the teacher's test accuracy), from the cached (or a
    freshly trained) teacher."""
    data_cfg = {
        "dataset": recipe.dataset,
        "seed": seed,
        "options": recipe.data_options,
        "info": data.info,
    }
    teacher, _ = load_or_train_teacher(
        data.to(device), recipe.teacher, config=replace(recipe.teacher_fit, seed=seed),
        cache_dir=cache_dir, data_config=data_cfg, device=device, retrain=retrain, quiet=quiet,
    )  # fmt: skip
    f = predict_logits(teacher, data.train.x.to(device), device=device)
    return f, evaluate(teacher, data.test.to(device), device=device)[1]


def _thin(traj: dict, keep: int = 1000) -> dict:
    """Every k-th entry of the trajectory lists so that at most ``keep`` remain (plus the last)."""
    n = len(traj.get("step", []))
    if n <= keep:
        return traj
    idx = sorted(set(range(0, n, -(-n // keep))) | {n - 1})
    return {k: [v[i] for i in idx] for k, v in traj.items()}


_FRACTIONS = ("test_acc", "val_acc", "lambda1", "teacher_test_acc")
_COUNTS = ("train_steps", "hyper_steps", "trials")
#: the range of every number of a result (:func:`kdtheory.journal.check_values`): accuracies and
#: λ₁ in [0, 1], cross-entropies and times ≥ 0, T > 0, step counts ints ≥ 0
_RANGES = {
    **dict.fromkeys(_FRACTIONS, PROBABILITY),
    **dict.fromkeys(("test_loss", "val_loss", "wall_time_s"), NONNEGATIVE),
    "temperature": POSITIVE,
    **dict.fromkeys(_COUNTS, COUNT),
}


def _check_record(index: tuple, values: dict) -> None:
    """Raise ``ValueError`` unless ``(index, values)`` is a record this table writes.

    ``index`` = (i, run) with i the method's place in ``METHODS``; ``values`` names the same
    method and seed and is either a failed cell (``status`` "error" and its message) or a result
    whose accuracies and λ₁ lie in [0, 1], whose losses and times are finite numbers ≥ 0, T > 0
    and whose step counts are integers ≥ 0 (:data:`_RANGES`).
    """
    if not (
        isinstance(index, tuple)
        and len(index) == 2
        and all(type(i) is int for i in index)
        and 0 <= index[0] < len(METHODS)
        and index[1] >= 0
    ):
        raise ValueError(f"index must be (method in [0, {len(METHODS)}), run ≥ 0), got {index!r}")
    if not isinstance(values, dict):
        raise ValueError(f"values must be an object, got {type(values).__name__}")
    named, expected = (values.get("method"), values.get("seed")), (METHODS[index[0]], index[1])
    if named != expected:
        raise ValueError(f"values of (method, run) {named!r} stored at {expected!r}")
    if failed_cell(values, default="ok"):
        return
    check_values(values, _RANGES, ok=True)  # a result: finite values in their ranges
    if not isinstance(values.get("trajectory"), dict):
        raise ValueError("trajectory must be an object")


def _open_journal(path: Path, fingerprint: str, header: dict) -> Journal:
    """The journal at ``path``, locked, its records checked by :func:`_check_record` (invalid
    ones are skipped with a warning that counts them and their cells computed again); a failed
    cell's record is superseded by a later result of the same cell."""
    return Journal(
        path,
        fingerprint,
        header,
        validate=lambda record: _check_record(tuple(record["index"]), record["values"]),
        superseded=lambda values: values.get("status") == "error",
        lock=True,
        fix="choose another --out, or rerun with --retrain-teacher if the teacher changed, or "
        "delete it",
    )


def _failure(method: str, run: int, exc: BaseException, where: str = "") -> dict:
    """The journal record of a failed cell: its method, run and one-line reason."""
    reason = " ".join(f"{where}{type(exc).__name__}: {exc}".split())[:500]
    return {"method": method, "seed": run, "status": "error", "error": reason}


def run_table(
    datasets: Sequence[str],
    runs: int,
    *,
    methods: Sequence[str] = METHODS,
    out: str | Path = "results/neural/table",
    roots: dict[str, str] | None = None,
    steps: int | None = None,
    trials: int | None = None,
    cache_dir: str | Path | None = None,
    retrain_teacher: bool = False,
    device: str = "auto",
    quiet: bool = False,
    tempered: str = "both",
    jobs: int = 1,
    scheduler: str | None = None,
) -> dict:
    """Run (or resume) the table.

    Each data set's teachers are trained or loaded first, once per data seed; then its cells
    (method, run) run in this process, on ``jobs`` local workers or on the Dask cluster at
    ``scheduler`` (:func:`kdtheory.sweep.map_points`), with the same results.

    ``cache_dir`` None: the per-user folder :func:`~kdtheory.neural.checkpoints.default_cache_dir`.
    ``retrain_teacher``: train the teachers again over their cached checkpoints. ``tempered``:
    which softmaxes the KD soft term tempers in every method (``"both"`` or ``"teacher"``, part
    of each recipe's budget and so of its journal's fingerprint).

    Returns ``{"results": {dataset: [record]}, "skipped": {dataset: reason}, "failed": [(dataset,
    method, run, reason)], "written": [file name]}``; a record is a ``MethodResult`` dict or a
    failed cell (``status`` "error", ``error``).

    Raises
    ------
    ValueError
        ``out`` or ``cache_dir`` is not a writable folder (checked before any work), a journal of
        another computation is in ``out``, or (:class:`DataError`) a cached teacher is unusable.
    """
    from tqdm import tqdm  # the plain bar: no notebook widget (and no IProgress warning)

    dev = resolve_device(device)
    cache = check_output_dir(cache_dir or default_cache_dir(), flag="--cache-dir")
    out = check_output_dir(out, flag="--out")  # after the cache: a bad cache leaves no empty out
    roots = roots or {}
    results: dict[str, list[dict]] = {}
    skipped: dict[str, str] = {}
    bar = tqdm(total=len(datasets) * runs * len(methods), disable=quiet, unit="run", desc="table")
    for name in datasets:
        recipe = RECIPES[name]
        budget = replace(
            recipe.budget,
            **({"steps": steps} if steps else {}),
            **({"trials": trials} if trials else {}),
            tempered=tempered,
        )
        recipe = replace(recipe, budget=budget)
        with _open_journal(
            out / f"journal-{name}.jsonl", _fingerprint(recipe, dev), {"recipe": recipe.describe()}
        ) as journal:
            fixed = None  # (data, teacher logits, teacher accuracy) when the same every run
            prepared: dict[int, tuple[DataSplits, torch.Tensor, float]] = {}
            todo: list[tuple[str, int]] = []
            for run in range(runs):
                run_todo = [m for m in methods if _status(journal, m, run) != "ok"]
                retried = [m for m in run_todo if _status(journal, m, run) == "error"]
                if retried:
                    print(f"{name} run {run}: computing the failed {', '.join(retried)} again",
                          file=sys.stderr)  # fmt: skip
                bar.update(len(methods) - len(run_todo))
                if not run_todo:
                    continue
                data_seed = run if recipe.per_run_data else 0
                if fixed is None:
                    try:
                        data = _load(recipe, data_seed, roots)
                    except (DatasetNotFoundError, DataError) as exc:
                        flag = "cifar10" if name.startswith("cifar10") else name
                        skipped[name] = f"{type(exc).__name__}: {exc} [table: --root {flag}=PATH]"
                        bar.update(len(run_todo) + (runs - run - 1) * len(methods))
                        break
                    bar.set_description(f"{name} teacher")
                    try:
                        f, t_acc = _teacher_logits(
                            recipe, data, data_seed, cache, dev, retrain_teacher, quiet
                        )
                    except DataError:  # an unusable cached teacher: the fix is --retrain-teacher
                        raise
                    except Exception as exc:  # fails this run's cells, not the table
                        failures = [_failure(m, run, exc, "teacher: ") for m in run_todo]
                        journal.append([((METHODS.index(r["method"]), run), r) for r in failures])
                        bar.update(len(run_todo))
                        continue
                    if not recipe.per_run_data:
                        fixed = data, f, t_acc
                prepared[run] = fixed if fixed is not None else (data, f, t_acc)
                todo += [(m, run) for m in run_todo]
            remote = jobs > 1 or scheduler is not None
            shared = {"recipe": recipe, "runs": prepared, "device": dev,
                      "quiet": quiet or remote, "threads": 1 if remote else None}  # fmt: skip
            if remote and todo:  # CPU copies (a fixed data set is sent once: pickle memoises it)
                cpu = {id(v): (v[0].to("cpu"), v[1].cpu(), v[2]) for v in prepared.values()}
                shared["runs"] = {r: cpu[id(v)] for r, v in prepared.items()}
            for (m, run), values in map_points(_cell_task, todo, jobs, scheduler=scheduler,
                                               shared=shared):  # fmt: skip
                journal.append([((METHODS.index(m), run), values)])
                bar.set_description(f"{name} {m} run {run}")
                bar.update(1)
            cells = [(METHODS.index(m), run) for run in range(runs) for m in methods]
            results[name] = [journal.done[c] for c in cells if c in journal.done]
    bar.close()
    written = _write_outputs(out, datasets, methods, results, skipped, tempered)
    return {"results": results, "skipped": skipped, "failed": _failed(results), "written": written}


def _cell_task(shared: dict, item: tuple[str, int]) -> tuple[tuple[str, int], dict]:
    """One (method, run) cell on this process's device (:func:`kdtheory.sweep.map_points` calls
    it in the driver or on a worker; ``shared`` holds each run's data and teacher logits); an
    exception fails this cell only."""
    m, run = item
    try:
        if shared["threads"] is not None:
            set_threads(shared["threads"])
        dev = slot_device(shared["device"], worker_slot())
        recipe = shared["recipe"]
        data, f, t_acc = shared["runs"][run]
        shape, k, opts = data.input_shape, data.num_classes, recipe.student_options

        def make_student(seed):
            return build_model(recipe.student, shape, k, seed=seed, **opts)

        exp = KDExperiment(make_student, f, data, recipe.budget, device=dev, quiet=shared["quiet"])
        values = exp.run(m, seed=run).as_dict()
        values["trajectory"] = _thin(values["trajectory"])
        values["teacher_test_acc"] = t_acc
        _check_record((METHODS.index(m), run), values)  # e.g. a NaN accuracy
    except Exception as exc:
        values = _failure(m, run, exc)
    return (m, run), values


def _failed(results: dict[str, list[dict]]) -> list[tuple[str, str, int, str]]:
    """(data set, method, run, reason) of every failed cell."""
    return [(d, r["method"], r["seed"], r["error"]) for d, rows in results.items()
            for r in rows if r.get("status") == "error"]  # fmt: skip


def _status(journal: Journal, method: str, run: int) -> str | None:
    """ "ok", "error" or None (not computed) for the cell (method, run) of ``journal``."""
    values = journal.done.get((METHODS.index(method), run))
    return None if values is None else values.get("status", "ok")


# --------------------------------------------------------------------------------- outputs ---


def summarise(rows: list[dict], methods: Sequence[str]) -> dict[str, dict]:
    """Per method: runs, accuracy mean/std/best, mean costs per run, and cost relative to no KD
    (over the cells that succeeded; failed cells are listed apart)."""
    out: dict[str, dict] = {}
    for m in methods:
        rs = [r for r in rows if r["method"] == m and r.get("status", "ok") == "ok"]
        if not rs:
            continue
        acc = np.array([r["test_acc"] for r in rs])
        out[m] = {
            "runs": len(rs),
            "acc_mean": float(acc.mean()),
            "acc_std": float(acc.std(ddof=1)) if len(rs) > 1 else float("nan"),
            "acc_best": float(acc.max()),
            "train_steps": float(np.mean([r["train_steps"] for r in rs])),
            "hyper_steps": float(np.mean([r["hyper_steps"] for r in rs])),
            "wall_time_s": float(np.mean([r["wall_time_s"] for r in rs])),
            "lambda1": float(np.mean([r["lambda1"] for r in rs])),
            "temperature": float(np.mean([r["temperature"] for r in rs])),
        }
    if "without-kd" in out:
        base = out["without-kd"]["wall_time_s"]
        for s in out.values():
            s["wall_vs_without_kd"] = s["wall_time_s"] / base
    return out


def _csv_bytes(header: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def _markdown(datasets, methods, summaries, skipped, failed, tempered="both") -> str:
    shown = [d for d in datasets if summaries.get(d)]
    if shown:
        which = "both outputs" if tempered == "both" else "the teacher's output only"
        lines = [f"Test accuracy, mean (best) over runs; the KD soft term tempers {which}.", ""]
        lines += _accuracy_lines(shown, methods, summaries)
    else:
        lines = ["No cell of the table succeeded: no accuracy to show."]
    if failed:
        lines += ["", "Failed cells (left out of the means; the next run computes them again):"]
        lines += [f"- {TITLES[d]}, {LABELS[m]}, run {r}: {why}" for d, m, r, why in failed]
    if skipped:
        lines += ["", "Skipped (data files absent or unreadable):"]
        lines += [f"- {TITLES[d]}: {why}" for d, why in skipped.items()]
    return "\n".join(lines) + "\n"


def _accuracy_lines(shown, methods, summaries) -> list[str]:
    """The accuracy table and the cost table of the data sets ``shown`` (Markdown lines)."""
    lines = []
    lines.append("| Method | " + " | ".join(TITLES[d] for d in shown) + " |")
    lines.append("|---|" + "---|" * len(shown))
    for m in methods:
        cells = []
        for d in shown:
            s = summaries[d].get(m)
            cells.append(f"{s['acc_mean']:.3f} ({s['acc_best']:.3f})" if s else "–")
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    lines += ["", "Cost per run (means): SGD steps of w, hypergradient steps, wall time.", ""]
    lines.append(
        "| Data set | Method | runs | steps | hypergradient steps | wall s | × without KD | final λ₁ | final T |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for d in shown:
        for m, s in summaries[d].items():
            rel = s.get("wall_vs_without_kd", float("nan"))
            lines.append(
                f"| {TITLES[d]} | {LABELS[m]} | {s['runs']} | {s['train_steps']:.0f} | "
                f"{s['hyper_steps']:.0f} | {s['wall_time_s']:.2f} | {rel:.2f} | "
                f"{s['lambda1']:.3f} | {s['temperature']:.2f} |"
            )
    ratios = [
        f"{TITLES[d]}: {summaries[d]['proposed']['wall_time_s'] / summaries[d]['gradient']['wall_time_s']:.2f}"
        for d in shown
        if {"proposed", "gradient"} <= summaries[d].keys()
    ]
    if ratios:
        lines += ["", "Wall-time ratio proposed / gradient-based: " + "; ".join(ratios) + "."]
    return lines


def _plot_trajectories(path: Path, results: dict[str, list[dict]]) -> bool:
    """Draw λ₁ and T along training (run 0) to ``path``; False (nothing written) if no data set
    has a trajectory (no gradient-based or proposed run succeeded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [d for d, rows in results.items() if any(r.get("trajectory") for r in rows)]
    if not shown:
        return False
    fig, axes = plt.subplots(len(shown), 2, figsize=(10, 3.2 * len(shown)), squeeze=False)
    for row, d in zip(axes, shown, strict=True):
        for r in results[d]:
            if r["seed"] != 0 or not r.get("trajectory"):
                continue
            t = r["trajectory"]
            style = "-" if r["method"] == "gradient" else "--"
            row[0].plot(t["step"], t["lambda1"], style, label=LABELS[r["method"]])
            row[1].plot(t["step"], t["temperature"], style, label=LABELS[r["method"]])
        row[0].set(ylabel="λ₁", title=f"{TITLES[d]}: λ₁ (run 0)", ylim=(-0.02, 1.02))
        row[1].set(ylabel="T", title=f"{TITLES[d]}: T (run 0)", yscale="log")
        for ax in row:
            ax.set_xlabel("SGD step")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    save_png(fig, path)
    return True


RUN_FIELDS = [
    "method", "seed", "test_acc", "test_loss", "val_acc", "val_loss", "lambda1", "temperature",
    "train_steps", "hyper_steps", "wall_time_s", "trials", "teacher_test_acc", "status", "error",
]  # fmt: skip
TABLE_FIELDS = [
    "runs", "acc_mean", "acc_std", "acc_best", "train_steps", "hyper_steps", "wall_time_s",
    "wall_vs_without_kd", "lambda1", "temperature",
]  # fmt: skip


def _write_outputs(out: Path, datasets, methods, results, skipped, tempered="both") -> list[str]:
    """Write the table's files to ``out``; the names of those written."""
    summaries = {d: summarise(rows, methods) for d, rows in results.items() if rows}
    failed = _failed(results)
    runs_rows = [[d] + [{"status": "ok", **r}.get(k) for k in RUN_FIELDS]
                 for d, rows in results.items() for r in rows]  # fmt: skip
    atomic_write_bytes(out / "runs.csv", _csv_bytes(["dataset", *RUN_FIELDS], runs_rows))
    table_rows = []
    for d in datasets:
        if d in skipped:
            table_rows.append([d, "", "", "skipped", skipped[d]] + [""] * len(TABLE_FIELDS))
        for m in methods:
            if m in summaries.get(d, {}):
                s = summaries[d][m]
                table_rows.append(
                    [d, m, LABELS[m], "ok", ""] + [s.get(k, "") for k in TABLE_FIELDS]
                )
            bad = [(r, why) for dd, mm, r, why in failed if (dd, mm) == (d, m)]
            if bad:
                why = (
                    f"runs {', '.join(str(r) for r, _ in bad)} failed; run {bad[0][0]}: {bad[0][1]}"
                )
                table_rows.append([d, m, LABELS[m], "error", why] + [""] * len(TABLE_FIELDS))
    header = ["dataset", "method", "label", "status", "reason", *TABLE_FIELDS]
    atomic_write_bytes(out / "table.csv", _csv_bytes(header, table_rows))
    md = _markdown(datasets, methods, summaries, skipped, failed, tempered)
    atomic_write_bytes(out / "table.md", md.encode())
    written = ["table.md", "table.csv", "runs.csv"]
    if _plot_trajectories(out / "trajectories.png", results):
        written.append("trajectories.png")
    return written


# ------------------------------------------------------------------------------------- CLI ---


def _csv_list(value: str, allowed: Sequence[str], flag: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if not items or bad:
        raise argparse.ArgumentTypeError(
            f"{flag} takes a comma-separated subset of {','.join(allowed)}; got {value!r}"
        )
    return list(dict.fromkeys(items))


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m kdtheory.neural.table",
        description="The table of Gorpinich, Bakhteev & Strijov (2021–2022): test accuracy of each "
        "way of choosing the KD metaparameters "
        "(λ₁, T), mean (best) over runs, with the cost of each method.",
    )
    p.add_argument(
        "--datasets",
        default="synthetic,fashion-mnist",
        type=lambda v: _csv_list(v, TABLE_DATASETS, "--datasets"),
        help=f"comma-separated subset of {','.join(TABLE_DATASETS)} (default: %(default)s)",
    )
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        type=lambda v: _csv_list(v, METHODS, "--methods"),
        help="comma-separated subset of %(default)s",
    )
    p.add_argument(
        "--runs",
        type=int,
        default=5,
        help="runs per method and data set, 1 … 1000 (default: %(default)s)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="override the SGD steps per training run (1 … 10 000 000)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help="override Hyperopt's number of trials (1 … 100 000)",
    )
    p.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="DATASET=PATH",
        help="data folder, e.g. --root cifar10=/data/cifar-10-batches-py "
        "(fashion-mnist default: /usr/share/datasets/fashion-mnist)",
    )
    add_tempered(p)
    add_cache_dir(p)
    p.add_argument(
        "--retrain-teacher",
        action="store_true",
        help="ignore cached teachers (also unusable ones) and train them again",
    )
    add_device(p)
    add_threads(p)
    add_workers(p)
    p.add_argument(
        "--out", default="results/neural/table", help="output folder (default: %(default)s)"
    )
    add_quiet(p, table=True)
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m kdtheory.neural.table`` (returns the exit code)."""
    p = build_parser()
    args = p.parse_args(argv)
    for flag, v in (("--runs", args.runs), ("--steps", args.steps), ("--trials", args.trials),
                    ("--threads", args.threads)):  # fmt: skip
        if v is not None and v < 1:
            p.error(f"{flag} must be an integer ≥ 1; got {v}")
    try:  # resources, before any work: the caps of kdtheory.neural.cli
        check_count("--runs", args.runs, MAX_SEEDS)
        check_count("--steps", args.steps, MAX_STEPS)
        check_count("--trials", args.trials, MAX_FITS)
        trials = (args.trials or 10) if "hyperopt" in args.methods else 1  # recipes: ≤ 10 trials
        check_fits(len(args.datasets) * args.runs * len(args.methods) * trials,
                   "--datasets × --runs × --methods (× Hyperopt's --trials)")  # fmt: skip
    except ValueError as exc:
        p.error(str(exc))
    check_workers(p, args)
    set_threads(args.threads)  # before any torch work
    roots = {}
    for spec in args.root:
        key, sep, path = spec.partition("=")
        key = "cifar10" if key == "cifar10-reduced" else key
        if not sep or key not in ("fashion-mnist", "cifar10") or not path:
            p.error(f"--root takes fashion-mnist=PATH or cifar10=PATH; got {spec!r}")
        roots[key] = path
    try:
        resolve_device(args.device)
    except ValueError as exc:
        p.error(f"--device: {exc}")
    try:
        with one_line_warnings(p.prog):  # a journal's skipped lines: one counted warning
            res = run_table(
                args.datasets, args.runs, methods=args.methods, out=args.out, roots=roots,
                steps=args.steps, trials=args.trials, cache_dir=args.cache_dir,
                retrain_teacher=args.retrain_teacher, device=args.device, quiet=args.quiet,
                tempered=args.tempered, jobs=args.jobs, scheduler=args.scheduler,
            )  # fmt: skip
    except ValueError as exc:  # unwritable folders, another computation's journal, a bad cache
        p.error(str(exc))
    out = Path(args.out)
    if not args.quiet:
        print((out / "table.md").read_text(encoding="utf-8"))
    for d, why in res["skipped"].items():
        print(f"skipped {d}: {why}", file=sys.stderr)
    for d, m, run, why in res["failed"]:
        print(f"failed {d} {m} run {run}: {why}", file=sys.stderr)
    first, *rest = res["written"]
    print(f"wrote {out / first}, {', '.join(rest)}")
    if not any(r.get("status", "ok") == "ok" for rows in res["results"].values() for r in rows):
        print("no cell of the table succeeded (see the reasons above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
