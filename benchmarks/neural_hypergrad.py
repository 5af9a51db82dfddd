"""Cost of the one-step unrolled hypergradient against a plain training step (issue 6).

For three students (the synthetic set's MLP, the Fashion-MNIST MLP, the CIFAR small CNN; inputs of
the right shape drawn at random, as timings do not depend on the values) it times, in interleaved
rounds on the same process:

* **plain**: one SGD step of w on L_train (forward, backward, update) — the baseline;
* **hyper**: one step of the gradient-based method: ∇_θ L_val(w − γ∇_w L_train) by differentiating
  through the step (``kdtheory.neural.lambda_path.hypergrad``), plus the w and θ updates;
* **finite differences**: the same hypergradient by central differences in θ₁ and θ₂ (four
  unrolled validation losses, each on a copy of the model) — the obvious alternative.

Then the whole-run cost of the proposed method (Algorithm 1, e₁ = e₂ = 10) against the pure
gradient-based method over the same number of steps. Prints a table and writes
``benchmarks/results/neural_hypergrad.json``. On CUDA the peak memory of each kind of step is
reported too (``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch

from kdtheory.journal import write_atomic
from kdtheory.neural.data import Split
from kdtheory.neural.device import resolve_device
from kdtheory.neural.lambda_path.hypergrad import lambda_from_raw
from kdtheory.neural.lambda_path.optimiser import LambdaPathOptimizer
from kdtheory.neural.losses import kd_loss, validation_loss
from kdtheory.neural.models import build_model

CASES = {
    # name: (model, options, input shape, classes, n_train, batch, val batch)
    "synthetic mlp(32)": ("mlp", {"hidden": 32}, (3,), 2, 30, 30, 200),
    "fashion-mnist mlp(100)": ("mlp", {"hidden": 100}, (1, 28, 28), 10, 8192, 128, 500),
    "cifar10 cnn-small": ("cnn-small", {}, (3, 32, 32), 10, 4096, 128, 500),
}


def _optimizer(case, mode: str, device, seed: int = 0) -> LambdaPathOptimizer:
    name, opts, shape, k, n, batch, vbatch = case
    gen = torch.Generator().manual_seed(seed)
    tr = Split(torch.randn(n, *shape, generator=gen), torch.randint(0, k, (n,), generator=gen))
    va = Split(
        torch.randn(2 * vbatch, *shape, generator=gen),
        torch.randint(0, k, (2 * vbatch,), generator=gen),
    )
    f = 3 * torch.randn(n, k, generator=gen)
    student = build_model(name, shape, k, seed=seed, **opts)
    return LambdaPathOptimizer(
        student, f, tr, va, mode=mode, lambda1=0.5, temperature=2.0, lr=0.05,
        batch_size=batch, val_batch_size=vbatch, device=device,
    )  # fmt: skip


def _fd_hypergradient(opt: LambdaPathOptimizer, h: float = 1e-3) -> torch.Tensor:
    """Central differences of θ ↦ L_val(w − γ∇_w L_train(w, λ(θ))) on copies of the model."""
    idx = opt._next_train_idx()
    x, y, f = opt.train_split.x[idx], opt.train_split.y[idx], opt.f[idx]
    xv, yv = opt._next_val_batch()

    def phi(raw: torch.Tensor) -> float:
        m = copy.deepcopy(opt.model)
        lam1, temp = lambda_from_raw(raw)
        loss = kd_loss(m(x), f, y, float(lam1), float(temp))
        grads = torch.autograd.grad(loss, list(m.parameters()))
        with torch.no_grad():
            for p, g in zip(m.parameters(), grads, strict=True):
                p.sub_(opt.lr * g)
            return float(validation_loss(m(xv), yv, opt.t_val))

    out = torch.zeros(2)
    for i in range(2):
        e = torch.zeros(2)
        e[i] = h
        out[i] = (phi(opt.raw + e) - phi(opt.raw - e)) / (2 * h)
    return out


def _time(fn, steps: int, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / steps


def _peak(fn, device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=40, help="steps per timing (default: %(default)s)")
    ap.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds (default: %(default)s)"
    )
    ap.add_argument("--run-steps", type=int, default=400, help="steps of the whole-run comparison")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="benchmarks/results/neural_hypergrad.json")
    args = ap.parse_args()
    device = resolve_device(args.device)
    report = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "loadavg_start": os.getloadavg(), "cases": {}}  # fmt: skip
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{'student':<24} {'plain ms':>9} {'hyper ms':>9} {'hyper/plain':>11} {'FD ms':>9} {'FD/hyper':>9}"
    )
    for label, case in CASES.items():
        opt = _optimizer(case, "gradient", device)
        lam1, temp = opt.lambda1, opt.temperature
        kinds = {
            "plain": lambda opt=opt, a=lam1, b=temp: opt._plain_step(a, b),
            "hyper": lambda opt=opt: opt._hyper_step(),
            "fd": lambda opt=opt: _fd_hypergradient(opt),
        }
        for fn in kinds.values():  # warm-up
            fn()
        times = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for k, fn in kinds.items():
                times[k].append(_time(fn, args.steps, device))
        med = {k: statistics.median(v) for k, v in times.items()}
        peaks = {k: _peak(fn, device) for k, fn in kinds.items()}
        row = {
            "plain_ms": 1e3 * med["plain"],
            "hyper_ms": 1e3 * med["hyper"],
            "fd_ms": 1e3 * med["fd"],
            "hyper_over_plain": med["hyper"] / med["plain"],
            "fd_over_hyper": med["fd"] / med["hyper"],
            "peak_mib": peaks,
        }
        # whole runs: proposed (Algorithm 1) against gradient-based, same steps, same start
        walls = {}
        for mode in ("gradient", "proposed", "fixed"):
            walls[mode] = _optimizer(case, mode, device).run(args.run_steps).wall_time_s
        row["run_wall_s"] = walls
        row["proposed_over_gradient"] = walls["proposed"] / walls["gradient"]
        row["gradient_over_fixed"] = walls["gradient"] / walls["fixed"]
        report["cases"][label] = row
        print(
            f"{label:<24} {row['plain_ms']:9.2f} {row['hyper_ms']:9.2f} {row['hyper_over_plain']:11.2f} "
            f"{row['fd_ms']:9.2f} {row['fd_over_hyper']:9.2f}"
        )
    print(
        f"\nwhole runs of {args.run_steps} steps (wall s): proposed / gradient-based, gradient / fixed λ"
    )
    for label, row in report["cases"].items():
        w = row["run_wall_s"]
        print(
            f"{label:<24} gradient {w['gradient']:.2f}  proposed {w['proposed']:.2f}  fixed {w['fixed']:.2f}"
            f"  proposed/gradient {row['proposed_over_gradient']:.2f}  gradient/fixed {row['gradient_over_fixed']:.2f}"
        )
    report["loadavg_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    print(
        f"load average {report['loadavg_start'][0]:.2f} → {report['loadavg_end'][0]:.2f}; wrote {out}"
    )


if __name__ == "__main__":
    main()
