r"""The ``train`` CLI: one teacher and one student, with and without knowledge distillation.

CLI::

    python -m kdtheory.neural.train --dataset fashion-mnist --teacher cnn --student mlp \
        --chi 0.5 --temperature 4 --epochs 5 --teacher-epochs 3 --out results/fmnist

trains (or loads from ``--cache-dir``) the teacher, trains the student with KD

    L_train = λ₁ CE(y, σ(g)) + (1 − λ₁) CE(σ(f/T), σ(g/T)),   λ₁ = 1 − χ,

(``--tempered teacher``: σ(g) instead of σ(g/T) in the soft term) and without (λ₁ = 1) from the
same initial weights, and writes ``metrics.json`` and
``learning_curves.png`` to ``--out``. Run with ``--help`` for every flag.

The pieces live in the neural core: the training loop and evaluation in
:mod:`kdtheory.neural.training`, device choice in :mod:`kdtheory.neural.device`, checkpoints and
the per-user teacher cache in :mod:`kdtheory.neural.checkpoints` (a cached checkpoint that cannot
be used raises :class:`DataError` naming the file; ``--retrain-teacher`` trains the teacher again
and overwrites it), the CLI conventions in :mod:`kdtheory.neural.cli`. They are re-exported here,
so ``from kdtheory.neural.experiments.train import fit`` keeps working.

The teacher/student inference-time ratio is measured by
:func:`kdtheory.neural.timing.inference_times` (median of CPU time per call on the CPU, so that it
repeats on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from kdtheory.journal import check_output_dir
from kdtheory.neural.checkpoints import (
    atomic_write_bytes,
    default_cache_dir,
    load_checkpoint,
    load_or_train_teacher,
    save_checkpoint,
    save_png,
)
from kdtheory.neural.cli import (
    MAX_EPOCHS,
    Parser,
    ResourceError,
    add_quiet,
    add_tempered,
    add_threads,
    check_count,
    check_model_memory,
    fail,
)
from kdtheory.neural.data import (
    DATASETS,
    DataError,
    DatasetNotFoundError,
    DataSplits,
    load_dataset,
)
from kdtheory.neural.device import _sync, resolve_device
from kdtheory.neural.models import MODELS, build_model, count_parameters
from kdtheory.neural.timing import inference_times, set_threads
from kdtheory.neural.training import FitConfig, History, evaluate, fit, predict_logits

__all__ = [
    "FitConfig",
    "History",
    "atomic_write_bytes",
    "default_cache_dir",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_or_train_teacher",
    "main",
    "predict_logits",
    "resolve_device",
    "save_checkpoint",
    "save_png",
]

PROG = "kdtheory.neural.train"


def _fail(msg: str) -> None:
    fail(PROG, msg)


def build_parser() -> argparse.ArgumentParser:
    """The ``train`` CLI's argument parser."""
    p = Parser(
        prog="python -m kdtheory.neural.train",
        description=(
            "Train (or load) a teacher, then a student with knowledge distillation "
            "L = λ₁ CE(y, σ(g)) + (1 − λ₁) CE(σ(f/T), σ(g/T)) with λ₁ = 1 − χ, and the same student "
            "without distillation (λ₁ = 1) from the same initial weights. Writes metrics.json "
            "(accuracies, losses, train and inference times) and learning_curves.png to --out."
        ),
    )
    p.add_argument(
        "--dataset",
        default="digits",
        choices=DATASETS,
        help="data set (digits is embedded; no files needed)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="folder with the data files (fashion-mnist: IDX files, default /usr/share/datasets/fashion-mnist; "
        "cifar10*: a folder holding cifar-10-batches-py)",
    )
    p.add_argument(
        "--teacher",
        default=None,
        choices=tuple(MODELS),
        help="teacher model (default: cnn for images, mlp-large for synthetic)",
    )
    p.add_argument("--student", default="mlp", choices=tuple(MODELS), help="student model")
    p.add_argument(
        "--student-hidden",
        type=int,
        default=100,
        help="hidden units of an mlp / cnn-small student (≥ 1; it must train in the memory "
        "available)",
    )
    p.add_argument(
        "--chi", type=float, default=0.5, help="χ ∈ [0, 1], weight of the teacher term; λ₁ = 1 − χ"
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=4.0,
        help="T > 0, distillation temperature (dimensionless)",
    )
    add_tempered(p)
    p.add_argument(
        "--t2-scaling", action="store_true", help="multiply the soft term by T² (Hinton et al.)"
    )
    p.add_argument(
        "--t-val",
        type=float,
        default=1.0,
        help="T_val > 0, temperature of the validation loss CE(y, σ(g/T_val))",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=5,
        help="student epochs (passes over the student's training split, 1 … 10 000)",
    )
    p.add_argument("--teacher-epochs", type=int, default=5, help="teacher epochs (1 … 10 000)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="minibatch size in examples (≥ 1), teacher and student",
    )
    p.add_argument(
        "--lr", type=float, default=0.05, help="student learning rate γ > 0 (SGD with --momentum)"
    )
    p.add_argument(
        "--teacher-lr",
        type=float,
        default=0.05,
        help="teacher learning rate > 0 (SGD with --momentum)",
    )
    p.add_argument(
        "--momentum", type=float, default=0.9, help="SGD momentum in [0, 1), teacher and student"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data split, the initial weights and the minibatch order",
    )
    p.add_argument(
        "--val-size",
        type=int,
        default=None,
        help="validation images taken from the training files (fashion-mnist, cifar10*; default 5000)",
    )
    p.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="keep only this many training images (fashion-mnist; default all)",
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N"
    )
    p.add_argument(
        "--no-amp",
        action="store_true",
        help="disable mixed precision on CUDA (the CPU always runs float32)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="folder of teacher checkpoints, reused when the configuration matches (default: "
        "$XDG_CACHE_HOME/kdtheory/teachers, else ~/.cache/kdtheory/teachers)",
    )
    p.add_argument(
        "--retrain-teacher",
        action="store_true",
        help="ignore a cached teacher (also an unusable one) and train it again",
    )
    add_threads(p)
    p.add_argument(
        "--out",
        default="results/neural/train",
        help="output folder for metrics.json and learning_curves.png",
    )
    add_quiet(p)
    return p


def _validate(args: argparse.Namespace) -> None:
    checks = [
        ("--seed", args.seed >= 0, "must be an integer ≥ 0"),
        ("--chi", 0.0 <= args.chi <= 1.0, "must be in [0, 1]"),
        ("--temperature", args.temperature > 0 and math.isfinite(args.temperature), "must be > 0"),
        ("--t-val", args.t_val > 0 and math.isfinite(args.t_val), "must be > 0"),
        ("--epochs", args.epochs >= 1, "must be an integer ≥ 1"),
        ("--teacher-epochs", args.teacher_epochs >= 1, "must be an integer ≥ 1"),
        ("--batch-size", args.batch_size >= 1, "must be an integer ≥ 1"),
        ("--lr", args.lr > 0 and math.isfinite(args.lr), "must be > 0"),
        ("--teacher-lr", args.teacher_lr > 0 and math.isfinite(args.teacher_lr), "must be > 0"),
        ("--momentum", 0.0 <= args.momentum < 1.0, "must be in [0, 1)"),
        ("--student-hidden", args.student_hidden >= 1, "must be an integer ≥ 1"),
        ("--val-size", args.val_size is None or args.val_size >= 1, "must be an integer ≥ 1"),
        ("--train-size", args.train_size is None or args.train_size >= 1, "must be an integer ≥ 1"),
        ("--threads", args.threads >= 1, "must be an integer ≥ 1"),
    ]
    for flag, ok, why in checks:
        if not ok:
            _fail(f"{flag} {why}; got {getattr(args, flag[2:].replace('-', '_'))}")
    try:
        check_count("--epochs", args.epochs, MAX_EPOCHS)
        check_count("--teacher-epochs", args.teacher_epochs, MAX_EPOCHS)
    except ValueError as exc:
        _fail(str(exc))
    if args.train_size is not None and args.dataset != "fashion-mnist":
        _fail("--train-size applies to --dataset fashion-mnist only")
    if args.val_size is not None and args.dataset not in (
        "fashion-mnist",
        "cifar10",
        "cifar10-reduced",
    ):
        _fail("--val-size applies to fashion-mnist and cifar10* only")


def _data_options(args: argparse.Namespace) -> dict:
    opts = {}
    if args.val_size is not None:
        opts["val_size"] = args.val_size
    if args.train_size is not None:
        opts["train_size"] = args.train_size
    return opts


def _student_options(name: str, hidden: int) -> dict:
    return {"hidden": hidden} if name in ("mlp", "mlp-large", "cnn-small") else {}


def plot_learning_curves(curves: dict[str, dict], path: str | Path, title: str = "") -> None:
    """Save a two-panel PNG: training loss and validation accuracy per epoch for each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for label, h in curves.items():
        if not h:
            continue
        ax1.plot(h["epoch"], h["train_loss"], marker="o", label=label)
        if h.get("val_acc"):
            ax2.plot(h["epoch"], h["val_acc"], marker="o", label=label)
    ax1.set(xlabel="epoch", ylabel="training loss (its own L_train)", title="training loss")
    ax2.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)


def _student_run(
    data: DataSplits,
    name: str,
    options: dict,
    cfg: FitConfig,
    *,
    f_train: torch.Tensor | None,
    lambda1: float,
    temperature: float,
    t2: bool,
    t_val: float,
    device: torch.device,
    desc: str,
    quiet: bool,
    tempered: str = "both",
) -> tuple[nn.Module, dict]:
    model = build_model(name, data.input_shape, data.num_classes, seed=cfg.seed + 1, **options)
    hist = fit(
        model,
        data.train,
        config=cfg,
        val=data.val,
        teacher_logits=f_train,
        lambda1=lambda1,
        temperature=temperature,
        t2_scaling=t2,
        t_val=t_val,
        device=device,
        desc=desc,
        quiet=quiet,
        tempered=tempered,
    )
    test_loss, test_acc = evaluate(model, data.test, t_val=t_val, device=device, amp=cfg.amp)
    val_loss, val_acc = evaluate(model, data.val, t_val=t_val, device=device, amp=cfg.amp)
    return model, {
        "model": name,
        "model_options": options,
        "params": count_parameters(model),
        "lambda1": lambda1,
        "temperature": temperature,
        "tempered": tempered,
        "train_time_s": hist.train_time,
        "final_train_loss": hist.train_loss[-1],
        "val_loss": val_loss,
        "val_acc": val_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "history": hist.as_dict(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m kdtheory.neural.train`` (returns the exit code)."""
    args = build_parser().parse_args(argv)
    _validate(args)
    set_threads(args.threads)  # before any torch work
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        _fail(str(exc))
    data_opts = _data_options(args)
    try:
        data = load_dataset(args.dataset, data_root=args.data_root, seed=args.seed, **data_opts)
    except DatasetNotFoundError as exc:
        _fail(f"--dataset {args.dataset}: data files absent: {exc}")
    except (DataError, ValueError) as exc:
        _fail(f"--dataset {args.dataset}: {exc}")
    teacher_name = args.teacher or ("cnn" if data.is_image else "mlp-large")
    s_opts = _student_options(args.student, args.student_hidden)
    for flag, nm, opts in (("--teacher", teacher_name, {}), ("--student", args.student, s_opts)):
        size_flag = "--student-hidden" if opts else flag

        def build(n=nm, o=opts):
            return build_model(n, data.input_shape, data.num_classes, **o)

        try:  # on the meta device: the options checked and the size weighed, nothing allocated
            check_model_memory(size_flag, f"{args.student_hidden if opts else nm}", build)
        except ResourceError as exc:
            _fail(str(exc))
        except ValueError as exc:
            _fail(f"{flag} {nm}: {exc}")
    try:  # before any training; the cache first, so that a bad one leaves no empty --out behind
        args.cache_dir = str(check_output_dir(args.cache_dir or default_cache_dir(), "--cache-dir"))
        out = check_output_dir(args.out, flag="--out")
    except ValueError as exc:
        _fail(str(exc))
    lambda1 = 1.0 - args.chi
    amp = not args.no_amp
    t_cfg = FitConfig(
        epochs=args.teacher_epochs,
        batch_size=args.batch_size,
        lr=args.teacher_lr,
        momentum=args.momentum,
        seed=args.seed,
        amp=amp,
    )
    s_cfg = FitConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        seed=args.seed,
        amp=amp,
    )
    data_cfg = {"dataset": args.dataset, "seed": args.seed, "options": data_opts, "info": data.info}
    data = data.to(device)

    try:
        teacher, t_info = load_or_train_teacher(
            data,
            teacher_name,
            config=t_cfg,
            cache_dir=args.cache_dir,
            data_config=data_cfg,
            device=device,
            retrain=args.retrain_teacher,
            quiet=args.quiet,
        )
    except DataError as exc:  # an unusable cached checkpoint
        _fail(str(exc))
    t_test_loss, t_test_acc = evaluate(teacher, data.test, t_val=args.t_val, device=device, amp=amp)
    _sync(device)
    t0 = time.perf_counter()
    f_train = predict_logits(teacher, data.train.x, device=device, amp=amp)  # cached once
    _sync(device)
    logits_time = time.perf_counter() - t0

    common = dict(
        t2=args.t2_scaling, t_val=args.t_val, device=device, quiet=args.quiet,
        tempered=args.tempered,
    )  # fmt: skip
    student_kd, kd = _student_run(
        data, args.student, s_opts, s_cfg, f_train=f_train, lambda1=lambda1,
        temperature=args.temperature, desc="student KD", **common,
    )  # fmt: skip
    student_plain, plain = _student_run(
        data, args.student, s_opts, s_cfg, f_train=None, lambda1=1.0,
        temperature=args.temperature, desc="student no KD", **common,
    )  # fmt: skip
    inf = inference_times({"teacher": teacher, "student": student_kd}, data.test.x, device=device)
    inf_t, inf_s = inf["teacher"].as_dict(), inf["student"].as_dict()
    kd["inference"] = plain["inference"] = inf_s
    metrics = {
        "command": "python -m kdtheory.neural.train "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {**vars(args), "lambda1": lambda1, "teacher": teacher_name},
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "data": {k: v for k, v in (data.info or {}).items()},
        "teacher": {
            "model": teacher_name,
            "params": count_parameters(teacher),
            "loaded_from_cache": t_info["loaded"],
            "checkpoint": t_info["checkpoint"],
            "train_time_s": t_info["train_time_s"],
            "test_loss": t_test_loss,
            "test_acc": t_test_acc,
            "logits_time_s": logits_time,
            "inference": inf_t,
            "history": t_info["history"],
        },
        "student_kd": kd,
        "student_no_kd": plain,
        "inference_time_ratio_teacher_over_student": {
            "batch": inf_t["batch"]["median"] / inf_s["batch"]["median"],
            "per_sample": inf_t["single"]["median"] / inf_s["single"]["median"],
        },
    }
    atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=2).encode())
    plot_learning_curves(
        {
            f"teacher {teacher_name}": t_info["history"],
            f"student KD (λ₁={lambda1:g}, T={args.temperature:g})": kd["history"],
            "student no KD": plain["history"],
        },
        out / "learning_curves.png",
        title=f"{args.dataset}: teacher {teacher_name}, student {args.student}",
    )
    del student_plain
    # the result line is printed also with --quiet, which only hides the progress bars
    t_state = "loaded" if t_info["loaded"] else "{:.1f} s".format(t_info["train_time_s"])
    print(
        f"{args.dataset} on {device}: teacher {teacher_name} acc {t_test_acc:.4f} "
        f"({t_state}); "
        f"student {args.student} KD acc {kd['test_acc']:.4f} ({kd['train_time_s']:.1f} s), "
        f"no KD acc {plain['test_acc']:.4f} ({plain['train_time_s']:.1f} s); "
        f"inference ratio teacher/student {metrics['inference_time_ratio_teacher_over_student']['batch']:.1f} "
        f"(batch), {metrics['inference_time_ratio_teacher_over_student']['per_sample']:.1f} (per sample); "
        f"wrote {out / 'metrics.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
