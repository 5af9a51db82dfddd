r"""``python -m kdtheory.compare``: replica theory curves against finite-N simulations.

Default: the KD student's test error as a function of its teacher's ridge λ̃, for a logistic teacher
(a curve) and the Bayes-optimal teacher (flat in λ̃), with an unbalanced mixture (α = 2, ρ = 0.3,
Δ = 1) and a sparse student (λ = 0.03, χ = 1, T = 1, η = 0.5); simulation points with error bars
(N = 1000, 8 seeds) at a few values.  Any parameter can be swept with ``--x``; with label noise
(``--set flip=θ`` with θ > 0, or ``--x flip:…``) only the logistic teacher is drawn (the Bayes-optimal
teacher is defined without label noise).  ``--tempered teacher`` divides only the teacher's output
by T.  Writes the data
(NetCDF) and the figure (PNG) to ``--out`` under the stem ``--name`` (default compare_<parameter>);
theory and simulations are journalled, so a rerun resumes.

Everything (parameters, sizes, output folder and name, journals) is checked before any work.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np

from kdtheory.journal import Journal, JournalLockedError, check_name, check_output_dir
from kdtheory.phase_diagram import (
    DEFAULTS,
    TEMPERED,
    _Parser,
    base_problem,
    check_simulation_args,
    explain_failures,
    one_line_warnings,
    parse_set,
)
from kdtheory.sweep import Axis, Sweep, failure_summary, simulation_journal

COMPARE_DEFAULTS = {**DEFAULTS, "lam": 0.03}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m kdtheory.compare",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--x", default="lam_t:0.01:10:25:log", metavar="SPEC",
                   help="swept parameter, name:start:stop:num[:log|lin] (default: lam_t:0.01:10:25:log)")  # fmt: skip
    p.add_argument("--set", metavar="NAME=VALUE", action="append", default=[],
                   help="fix a parameter (repeatable); defaults: "
                   + ", ".join(f"{k}={v:g}" for k, v in COMPARE_DEFAULTS.items()))  # fmt: skip
    p.add_argument("--tempered", choices=TEMPERED, default="both",
                   help="which outputs T divides: both (default) or teacher (Student.tempered)")  # fmt: skip
    p.add_argument(
        "--n", type=int, default=1000,
        help="simulated dimension N (integer ≥ 10 with 8·α·N² bytes of data ≤ 2 GiB; default 1000)",
    )  # fmt: skip
    p.add_argument(
        "--seeds", type=int, default=8, help="independent datasets per point (1…1000; default 8)"
    )
    p.add_argument(
        "--points", type=int, default=6, help="simulated points along the axis (default 6)"
    )
    p.add_argument("--seed", type=int, default=0, help="root seed of the simulations (default 0)")
    p.add_argument(
        "--jobs", type=int, default=2, help="worker processes for the simulations (default 2)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("results"), help="output folder (default results/)"
    )
    p.add_argument("--name", help="file stem of the outputs (default: compare_<swept parameter>)")
    p.add_argument("--wait", action="store_true",
                   help="if another run is writing the same journal, wait for it (default: exit 2)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def sweeps(args) -> dict[str, tuple[Sweep, Sweep]]:
    """(dense theory sweep, sparse simulated sweep) for each teacher."""
    axis = Axis.parse(args.x)
    fixed = {**COMPARE_DEFAULTS, **parse_set(args.set)}
    if args.points < 1 or args.jobs < 1:
        raise ValueError("--points and --jobs must be ≥ 1")
    picks = np.unique(
        np.round(np.linspace(0, len(axis.values) - 1, min(args.points, len(axis.values))))
    )
    sparse = Axis(axis.name, tuple(axis.values[int(i)] for i in picks), axis.log)
    out = {}
    noisy = axis.name == "flip" or fixed["flip"] != 0.0  # the Bayes teacher needs θ = 0
    for teacher in ("logistic",) if noisy else ("logistic", "bayes"):
        if teacher == "bayes" and axis.name == "lam_t":
            flat = Axis("eta", (fixed["eta"],))  # the Bayes teacher has no λ̃: one point, drawn flat
            out[teacher] = (Sweep(base_problem(teacher, fixed, args.tempered), (flat,)),) * 2
        else:
            base = base_problem(teacher, fixed, args.tempered)
            out[teacher] = (Sweep(base, (axis,)), Sweep(base, (sparse,)))
        check_simulation_args(args.n, args.seeds, out[teacher][1], seed=args.seed, jobs=args.jobs,
                              flags=_SIM_FLAGS)  # fmt: skip
    return out


_SIM_FLAGS = {"n": "--n", "seeds": "--seeds", "seed": "--seed", "n_jobs": "--jobs"}


def stem(args) -> str:
    """The file stem: ``--name`` or compare_<swept parameter>."""
    return check_name(args.name) if args.name is not None else f"compare_{Axis.parse(args.x).name}"


def open_journals(args, plan: dict[str, tuple[Sweep, Sweep]]) -> dict[str, tuple[Journal, Journal]]:
    """(theory, simulation) journals per teacher in ``args.out``, locked and checked up front."""
    fix = "choose another --name or --out, or delete that file"
    out, name, journals = args.out, stem(args), {}
    try:
        for teacher, (dense, sparse) in plan.items():
            base = out / f"{name}_{teacher}"
            theory = dense.journal(f"{base}.journal.jsonl", wait=args.wait, fix=fix)
            journals[teacher] = (theory,)
            journals[teacher] += (simulation_journal(sparse, f"{base}.sim.journal.jsonl", n=args.n,
                                  seeds=args.seeds, seed=args.seed, wait=args.wait, fix=fix),)  # fmt: skip
    except BaseException:
        for js in journals.values():
            for j in js:
                j.close()
        raise
    return journals


def run(args, plan: dict[str, tuple[Sweep, Sweep]], journals: dict) -> list[Path]:
    """Compute, write and draw; ``plan`` from :func:`sweeps`, ``journals`` from
    :func:`open_journals` (both made before any work by :func:`main`)."""
    from kdtheory import plotting
    from kdtheory.sweep import run_sweep, simulate_points, write_atomic

    out = args.out
    name = Axis.parse(args.x).name
    fig, ax = plotting.plt.subplots(figsize=(6.6, 4.5))
    files, summary, drawn = [], [], False
    colours = {"logistic": "C0", "bayes": "C2"}
    for teacher, (dense, sparse) in plan.items():
        theory_journal, sim_journal = journals[teacher]
        theory = run_sweep(
            dense, theory_journal, progress=not args.quiet, description=f"theory ({teacher})"
        )
        at = run_sweep(sparse, progress=False)
        sim = simulate_points(sparse, at, n=args.n, seeds=args.seeds, seed=args.seed, jobs=args.jobs,
                              journal_path=sim_journal, progress=not args.quiet)  # fmt: skip
        theory = theory.merge(sim.rename({sparse.axes[0].name: f"{sparse.axes[0].name}_sim"})[
            [v for v in sim.data_vars if "sim" in v]])  # fmt: skip
        path = out / f"{stem(args)}_{teacher}.nc"
        write_atomic(path, lambda tmp, ds=theory: ds.to_netcdf(tmp, engine="scipy"))
        files.append(path)
        summary += [f"  {teacher} teacher: {line}" for line in failure_summary(theory)]
        if not np.isfinite(theory["eg"].values).any():
            continue
        drawn = True
        c = colours[teacher]
        label = "logistic teacher (λ̃)" if teacher == "logistic" else "Bayes-optimal teacher"
        if dense.axes[0].name == name:
            xs = theory[name].values
            plotting.curve(ax, xs, theory["eg"].values, theory["converged"].values, color=c,
                           label=f"theory, student of the {label}")  # fmt: skip
            plotting.curve(ax, sim[name].values, sim["eg_sim"].values, sem=sim["eg_sim_sem"].values,
                           style="o", color=c, label=f"simulation N={args.n}, {args.seeds} seeds")  # fmt: skip
        else:  # Bayes teacher along λ̃: a flat line and one simulated point drawn as a band
            y, m, s = (
                float(theory["eg"].values[0]),
                float(sim["eg_sim"].values[0]),
                float(sim["eg_sim_sem"].values[0]),
            )
            ax.axhline(y, color=c, label=f"theory, student of the {label}")
            ax.axhspan(m - s, m + s, color=c, alpha=0.2, label=f"simulation N={args.n} (±1 s.e.)")
    if Axis.parse(args.x).log:
        ax.set_xscale("log")
    ax.set_xlabel(plotting.label(name))
    ax.set_ylabel(r"student test error $\varepsilon_g$")
    fixed = {**COMPARE_DEFAULTS, **parse_set(args.set)}
    fixed.pop(name, None)
    shown = [f"{k}={v:g}" for k, v in fixed.items() if k != "lam_t" and (k, v) != ("flip", 0.0)]
    if args.tempered != "both":
        shown.append(f"tempered={args.tempered}")
    ax.set_title(", ".join(shown), fontsize=8)
    if drawn:
        ax.legend(fontsize=7)
    else:
        explain_failures(ax, theory, "eg")
    png = out / f"{stem(args)}.png"
    plotting.save(fig, png)
    files.append(png)
    print(f"wrote {', '.join(str(f) for f in files)}")
    if summary:
        print("\n".join(summary))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        stack.enter_context(one_line_warnings(parser.prog))
        try:  # every check before any work or any file
            plan = sweeps(args)
            stem(args)
            check_output_dir(args.out)
            journals = open_journals(args, plan)
            for js in journals.values():
                for j in js:
                    stack.callback(j.close)
        except JournalLockedError as exc:
            parser.error(f"{exc}, or rerun with --wait to queue behind it")
        except ValueError as exc:
            parser.error(str(exc))
        start = time.perf_counter()
        run(args, plan, journals)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
