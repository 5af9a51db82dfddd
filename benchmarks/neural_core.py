"""The neural core's training loop against a plain PyTorch loop, and inference-timing
reproducibility (issue 13).

**Training.** The study's MNIST student (one hidden layer of 300, Adam 1e-3) trained with the KD
loss (λ₁ = 0.1, T = 3.5, forward KL with T²) for one epoch over 8192 inputs of MNIST shape in
batches of 32 (256 steps), by

* **core**: ``kdtheory.neural.training.fit`` (the loop that ``neural.train``, the λ-path table and
  ``neural.compress`` share: seeded permutation, index slices of whole-data tensors, running loss
  and accuracy, progress bar off);
* **plain**: the textbook loop written here — the same model and initial weights, the same
  permutation, the same ``kd_loss``, ``zero_grad`` / ``backward`` / ``step`` and nothing else.

Both run in interleaved rounds in one process; the script reports the median wall time and the
median CPU time of the process (``time.process_time``, less sensitive to other load on a shared
machine) of each, their ratios (goal ≤ 1.1), and checks that both end at the same weights.

**Inference timing.** The teacher (MLP 1200-1200) and the student are timed twice with
``kdtheory.neural.timing.inference_times`` (batched and one input at a time, interleaved rounds,
medians of process CPU time), the two runs separated by the training rounds; it reports the
teacher/student ratio of each run and their relative difference (goal ≤ 20 %). Writes ``benchmarks/results/neural_core.json``.

``--cifar`` adds the CIFAR-10 preset's models of ``neural.compress`` (ResNet-50 teacher, the five
ResNet students) timed on generated 32×32 inputs: parameters and the teacher/student inference
ratio on this machine (timings only: no CIFAR-10 data here, so no accuracies).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from kdtheory.neural.data import Split
from kdtheory.neural.losses import kd_loss
from kdtheory.neural.models import build_model
from kdtheory.neural.timing import inference_times
from kdtheory.neural.training import FitConfig, fit

KD = {"lambda1": 0.1, "temperature": 3.5, "t2_scaling": True, "soft": "forward-kl"}


def _data(n: int, seed: int = 0) -> tuple[Split, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return Split(x, y), 3 * torch.randn(n, 10, generator=gen)


def core(train: Split, f: torch.Tensor, cfg: FitConfig) -> tuple[float, float, torch.nn.Module]:
    model = build_model("mlp", (1, 28, 28), 10, seed=cfg.seed, hidden=300)
    t0, c0 = time.perf_counter(), time.process_time()
    fit(model, train, config=cfg, teacher_logits=f, quiet=True, **KD)
    return time.perf_counter() - t0, time.process_time() - c0, model


def plain(train: Split, f: torch.Tensor, cfg: FitConfig) -> tuple[float, float, torch.nn.Module]:
    model = build_model("mlp", (1, 28, 28), 10, seed=cfg.seed, hidden=300)
    t0, c0 = time.perf_counter(), time.process_time()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    n = len(train)
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            loss = kd_loss(model(train.x[idx]), f[idx], train.y[idx], **KD)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t0, time.process_time() - c0, model


def timing_ratio(teacher, student, x) -> dict:
    times = inference_times({"teacher": teacher, "student": student}, x, device="cpu")
    t, s = times["teacher"], times["student"]
    return {
        "teacher": t.as_dict(),
        "student": s.as_dict(),
        "ratio_batch": t.batch.median / s.batch.median,
        "ratio_per_sample": t.single.median / s.single.median,
    }


def cifar_ratios(n: int = 64) -> dict:
    """Teacher/student inference ratios of the cifar10 preset's models on generated inputs."""
    from kdtheory.neural.experiments.compress import PRESETS, parse_student
    from kdtheory.neural.models import count_parameters

    preset = PRESETS["cifar10"]
    x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    teacher = build_model("resnet4", (3, 32, 32), 10, seed=0, **preset.teacher_options).eval()
    out = {}
    for spec in preset.grid.students:
        name, opts = parse_student(spec)
        student = build_model(name, (3, 32, 32), 10, seed=0, **opts).eval()
        times = inference_times({"teacher": teacher, "student": student}, x, batch_size=n,
                                rounds=3, device="cpu")  # fmt: skip
        t, s = times["teacher"], times["student"]
        out[spec] = {
            "params": count_parameters(student),
            "ratio_batch": t.batch.median / s.batch.median,
            "ratio_per_sample": t.single.median / s.single.median,
            "teacher_batch_s": t.batch.median,
        }
        print(
            f"  {spec:22s} {out[spec]['params']:>10,} parameters  ratio batched "
            f"{out[spec]['ratio_batch']:.1f}, one at a time {out[spec]['ratio_per_sample']:.1f}"
        )
    out["teacher_params"] = count_parameters(teacher)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--n", type=int, default=8192, help="training inputs (default 8192)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--cifar", action="store_true", help="also time the CIFAR-10 preset's models")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train, f = _data(args.n)
    cfg = FitConfig(epochs=1, batch_size=32, lr=1e-3, optimizer="adam", seed=0)
    load = [os.getloadavg()]
    teacher = build_model("mlp", (1, 28, 28), 10, seed=1, hidden=[1200, 1200]).eval()
    x_test = torch.randn(1024, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    student = build_model("mlp", (1, 28, 28), 10, seed=2, hidden=300).eval()
    first = timing_ratio(teacher, student, x_test)

    times = {"core": [], "plain": []}
    cpu = {"core": [], "plain": []}
    core(train, f, cfg), plain(train, f, cfg)  # warm-up (imports, allocator)
    for r in range(args.rounds):
        for name, fn in (("core", core), ("plain", plain))[:: 1 if r % 2 == 0 else -1]:
            t, c, model = fn(train, f, cfg)
            times[name].append(t)
            cpu[name].append(c)
            if name == "core":
                w_core = model.state_dict()
            else:
                w_plain = model.state_dict()
    load.append(os.getloadavg())
    same = max(float((w_core[k] - w_plain[k]).abs().max()) for k in w_core)
    second = timing_ratio(teacher, student, x_test)
    load.append(os.getloadavg())

    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    steps = -(-args.n // cfg.batch_size)
    print(
        f"training: {steps} steps of batch 32, mlp(300), KD loss; {args.rounds} interleaved rounds"
    )
    for k in ("core", "plain"):
        print(f"  {k:5s} median {med[k]:.3f} s  ({1e3 * med[k] / steps:.3f} ms/step)  all "
              + ", ".join(f"{t:.3f}" for t in times[k]))  # fmt: skip
    print(f"  ratio core / plain = {med['core'] / med['plain']:.3f} wall, "
          f"{med_cpu['core'] / med_cpu['plain']:.3f} CPU time   (goal ≤ 1.1)")  # fmt: skip
    print(f"  largest weight difference core vs plain after training: {same:.2e}")
    rel = {}
    for key in ("ratio_batch", "ratio_per_sample"):
        a, b = first[key], second[key]
        rel[key] = abs(a - b) / min(a, b)
        print(f"inference {key}: run 1 {a:.1f}, run 2 {b:.1f}, relative difference "
              f"{100 * rel[key]:.1f} %   (goal ≤ 20 %)")  # fmt: skip
    print("load average (1, 5, 15 min) at start / after training / end:", load)
    cifar = None
    if args.cifar:
        print("cifar10 preset, ResNet-50 teacher over each student, generated 32×32 inputs:")
        cifar = cifar_ratios()
    out = Path(__file__).parent / "results" / "neural_core.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "steps": steps, "rounds": args.rounds, "threads": args.threads, "times": times,
        "median": med, "ratio_core_over_plain": med["core"] / med["plain"], "cpu_times": cpu,
        "ratio_core_over_plain_cpu": med_cpu["core"] / med_cpu["plain"],
        "max_weight_difference": same, "inference_run1": first, "inference_run2": second,
        "inference_relative_difference": rel, "loadavg": load, "cifar": cifar,
    }, indent=2))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
