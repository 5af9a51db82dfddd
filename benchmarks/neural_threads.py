"""The torch thread count of the neural recipes on this CPU, and the table's wall time (issue 12).

Part 1, threads. Each recipe is a fixed piece of the real work of a neural CLI:

* teachers of ``neural.train`` / ``neural.table``: epochs of :func:`~kdtheory.neural.training.fit` —
  the CNN on digits (``neural.train``'s default), the CNN on Fashion-MNIST-shaped inputs (random
  values: times do not depend on them), the synthetic set's MLP(128, 128);
* the ``neural.train`` student: KD epochs of the MLP(100) on digits;
* the table's methods: fixed-λ steps and hypergradient steps of
  :class:`~kdtheory.neural.lambda_path.optimiser.LambdaPathOptimizer` for the synthetic recipe (MLP(32), 30
  points) and the Fashion-MNIST recipe (MLP(100), batches of 128).

Two worker processes, with 1 and 2 inter-op threads (the pool can be sized only before torch
starts it), run recipes on request; every round runs each recipe under the four configurations
(1 or 2 intra-op threads) × (1 or 2 inter-op threads) back to back, in a rotating order, so that
the machine's load is shared alike. Printed per recipe: the median time with 1 thread, the
median (and range) of the paired ratios t(2 threads) / t(1 thread) and t(2 inter-op) / t(1).

Part 2, the table (``--table``): ``python -m kdtheory.neural.table --datasets synthetic --runs 1``
timed as a whole (fresh process, fresh teacher cache), alternating: the default of this checkout
against, with ``--base DIR``, the code of another checkout (e.g. ``git worktree add /tmp/base
<commit>``) with its defaults, else against ``--threads 2`` (torch's own choice on 2 cores).

    python benchmarks/neural_threads.py                   # part 1, about 2–4 minutes
    python benchmarks/neural_threads.py --table --base /tmp/base --table-rounds 1

Writes ``benchmarks/results/neural_threads.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kdtheory.journal import write_atomic

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ recipes ---


def _recipes() -> dict:
    """name → callable doing one fixed piece of the recipe's work (built once per worker)."""
    import torch

    from kdtheory.neural.data import DataSplits, Split, load_dataset
    from kdtheory.neural.experiments.table import RECIPES
    from kdtheory.neural.lambda_path.optimiser import LambdaPathOptimizer
    from kdtheory.neural.models import build_model
    from kdtheory.neural.training import FitConfig, fit

    digits = load_dataset("digits", seed=0)
    syn_recipe = RECIPES["synthetic"]
    synthetic = load_dataset("synthetic", seed=0, **syn_recipe.data_options)
    gen = torch.Generator().manual_seed(0)
    fm_x = torch.rand(512, 1, 28, 28, generator=gen)
    fm_y = torch.randint(0, 10, (512,), generator=gen)
    fm = Split(fm_x, fm_y)
    cfg = FitConfig(epochs=20, batch_size=128, lr=0.05)

    def teacher(name, data_split, shape, k, epochs=1):
        def run():
            model = build_model(name, shape, k, seed=0)
            fit(model, data_split, config=FitConfig(epochs=epochs, batch_size=128), quiet=True)

        return run

    f_digits = 3 * torch.randn(len(digits.train), digits.num_classes, generator=gen)

    def student_digits():
        model = build_model("mlp", digits.input_shape, digits.num_classes, seed=1, hidden=100)
        fit(model, digits.train, config=cfg, teacher_logits=f_digits, lambda1=0.5,
            temperature=4.0, quiet=True)  # fmt: skip

    def path(data: DataSplits | tuple, mode: str, steps: int, student: dict, budget) -> callable:
        train, val, shape, k = data
        f = 3 * torch.randn(len(train), k, generator=gen)

        def run():
            model = build_model("mlp", shape, k, seed=0, **student)
            LambdaPathOptimizer(
                model, f, train, val, mode=mode, lambda1=0.5, temperature=2.0, lr=budget.lr,
                batch_size=budget.batch_size, val_batch_size=budget.val_batch_size,
                meta_lr=budget.meta_lr,
            ).run(steps)  # fmt: skip

        return run

    syn = (synthetic.train, synthetic.val, synthetic.input_shape, synthetic.num_classes)
    fm_val = Split(fm_x[:500], fm_y[:500])
    fmd = (Split(fm_x, fm_y), fm_val, (1, 28, 28), 10)
    fm_budget = RECIPES["fashion-mnist"].budget
    return {
        "teacher cnn, digits (train)": teacher("cnn", digits.teacher_split, digits.input_shape, 10, 2),
        "teacher cnn, fashion-mnist shape": teacher("cnn", fm, (1, 28, 28), 10),
        "teacher mlp-large, synthetic (table)": teacher(
            "mlp-large", synthetic.teacher_split, synthetic.input_shape, synthetic.num_classes, 4
        ),
        "student mlp(100) KD, digits (train)": student_digits,
        "table fixed λ, synthetic": path(syn, "fixed", 1000, {"hidden": 32}, syn_recipe.budget),
        "table hypergradient, synthetic": path(syn, "gradient", 300, {"hidden": 32}, syn_recipe.budget),
        "table fixed λ, fashion-mnist": path(fmd, "fixed", 200, {"hidden": 100}, fm_budget),
        "table hypergradient, fashion-mnist": path(fmd, "gradient", 60, {"hidden": 100}, fm_budget),
    }  # fmt: skip


def worker(interop: int) -> None:
    """A process with ``interop`` inter-op threads that runs recipes on request.

    Prints the recipe names (one JSON line) once built and warmed up; then reads lines
    ``<recipe index> <threads>`` from stdin and answers each with the seconds it took.
    """
    import torch

    torch.set_num_interop_threads(interop)  # only possible before any parallel work
    recipes = list(_recipes().items())
    for _, fn in recipes:  # warm-up with each thread count
        for t in (1, 2):
            torch.set_num_threads(t)
            fn()
    print(json.dumps([name for name, _ in recipes]), flush=True)
    for line in sys.stdin:
        index, threads = (int(v) for v in line.split())
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        recipes[index][1]()
        print(time.perf_counter() - t0, flush=True)


CONFIGS = [(1, 1), (1, 2), (2, 1), (2, 2)]  # (intra-op threads, inter-op threads)


def threads_part(rounds: int) -> dict:
    """Every recipe under the four (threads, interop) configurations back to back, per round."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    workers = {
        i: subprocess.Popen([sys.executable, __file__, "--worker", str(i)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for i in (1, 2)
    }  # fmt: skip
    try:
        ready = [json.loads(w.stdout.readline()) for w in workers.values()]  # both warmed up
        names = ready[0]
        rows = []
        for r in range(rounds):
            for index, name in enumerate(names):
                shift = (r + index) % len(CONFIGS)  # rotate the order: no config always first
                for threads, interop in CONFIGS[shift:] + CONFIGS[:shift]:
                    w = workers[interop]
                    w.stdin.write(f"{index} {threads}\n")
                    w.stdin.flush()
                    rows.append({"recipe": name, "threads": threads, "interop": interop,
                                 "round": r, "seconds": float(w.stdout.readline())})  # fmt: skip
            print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait()
    summary = {}
    print(
        f"{'recipe':<38} {'1 thread s':>10} {'2 thr / 1':>9} {'(range)':>13} {'2 interop / 1':>13}"
    )
    for name in names:
        sec = {(x["round"], x["threads"], x["interop"]): x["seconds"]
               for x in rows if x["recipe"] == name}  # fmt: skip
        thr = [sec[r, 2, i] / sec[r, 1, i] for r in range(rounds) for i in (1, 2)]
        inter = [sec[r, t, 2] / sec[r, t, 1] for r in range(rounds) for t in (1, 2)]
        one = statistics.median(sec[r, 1, 1] for r in range(rounds))
        s = {"one_thread_s": one, "two_over_one_threads": statistics.median(thr),
             "two_over_one_threads_range": [min(thr), max(thr)],
             "two_over_one_interop": statistics.median(inter),
             "two_over_one_interop_range": [min(inter), max(inter)]}  # fmt: skip
        summary[name] = s
        rng = "{:.2f}–{:.2f}".format(*s["two_over_one_threads_range"])
        print(f"{name:<38} {one:10.3f} {s['two_over_one_threads']:9.2f} {rng:>13} "
              f"{s['two_over_one_interop']:13.2f}")  # fmt: skip
    return {"rows": rows, "summary": summary}


def table_part(rounds: int, base: str | None) -> dict:
    """Wall time of the synthetic table (one run) per variant, in alternating fresh processes."""
    variants = {"this checkout (default threads)": (str(ROOT), [])}
    if base:
        variants["base checkout (its defaults)"] = (str(Path(base).resolve()), [])
    else:
        variants["this checkout --threads 2"] = (str(ROOT), ["--threads", "2"])
    env0 = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    walls: dict[str, list[float]] = {k: [] for k in variants}
    tables: dict[str, str] = {}
    loads: list[dict] = []
    for r in range(rounds):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            path, extra = variants[name]
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "kdtheory.neural.table", "--datasets", "synthetic",
                       "--runs", "1", "--out", f"{tmp}/out", "--cache-dir", f"{tmp}/cache",
                       "--quiet", *extra]  # fmt: skip
                env = dict(env0, PYTHONPATH=path)
                t0 = time.perf_counter()
                subprocess.run(cmd, env=env, cwd=tmp, check=True, capture_output=True)
                walls[name].append(time.perf_counter() - t0)
                tables[name] = Path(f"{tmp}/out/table.md").read_text(encoding="utf-8")
            load = os.getloadavg()[0]
            loads.append({"round": r, "variant": name, "wall_s": walls[name][-1], "load1": load})
            print(
                f"round {r}: {name}: {walls[name][-1]:.1f} s (load average {load:.1f})", flush=True
            )
    ref = "this checkout (default threads)"
    for name, w in walls.items():
        paired = [a / b for a, b in zip(w, walls[ref], strict=True)]  # same round, same load
        print(f"{name:<34} median {statistics.median(w):7.1f} s; per round × default: "
              + ", ".join(f"{v:.2f}" for v in paired))  # fmt: skip
    acc = {name: [line for line in t.splitlines() if line.startswith("| ")][:8]
           for name, t in tables.items()}  # fmt: skip
    same = len({tuple(v) for v in acc.values()}) == 1
    print("accuracy tables identical across variants:", same)
    return {"walls_s": walls, "runs": loads, "accuracy_rows": acc, "identical_accuracies": same}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=5, help="rounds of part 1")
    ap.add_argument("--no-threads", action="store_true", help="skip part 1")
    ap.add_argument("--table", action="store_true", help="run part 2 (the synthetic table)")
    ap.add_argument("--table-rounds", type=int, default=1, help="alternating rounds of part 2")
    ap.add_argument("--base", default=None, help="another checkout timed in part 2")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/neural_threads.json"))
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    report = {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    if not args.no_threads:
        report["threads"] = threads_part(args.rounds)
    if args.table:
        report["table"] = table_part(args.table_rounds, args.base)
    report["loadavg_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    print(
        f"load average {report['loadavg_start'][0]:.2f} → {report['loadavg_end'][0]:.2f}; wrote {out}"
    )


if __name__ == "__main__":
    main()
