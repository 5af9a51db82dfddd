r"""``python -m kdtheory.phase_diagram``: phase diagrams and curves of knowledge distillation.

With no grid options it tells the four findings of Saglietti & Zdeborová, *Solvable model for
inheriting the regularization through knowledge distillation* (MSML 2022), plus the KD gain map, in
five figures with captions (``kdtheory.headline``; about a minute on 2 cores): 1. inheritance of the
teacher's regularisation, 2. the limit (best KD student against the best ridge student),
3. the Bayes-optimal teacher's student, 4. double descent at α = η, 5. the KD gain map.

Any other grid: ``--x name:start:stop:num[:log]`` (and ``--y`` for a map) over α, ρ, Δ, λ̃ (lam_t),
λ (lam), χ (chi), T (temperature), η (eta); ``--set`` the others; ``--optimise lam`` to minimise the
student's error over λ at every point.  Results go to ``--out`` as NetCDF (xarray) and PNG, written
atomically, with a journal that lets an interrupted run resume.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from kdtheory.headline import headline_sweeps, run_headline
from kdtheory.problem import (
    PARAMETERS,
    BayesTeacher,
    GaussianMixture,
    LogisticTeacher,
    Problem,
    Student,
)
from kdtheory.sweep import QUANTITIES, Axis, Optimise, Sweep

DEFAULTS = {"alpha": 2.0, "rho": 0.3, "delta": 1.0, "lam_t": 0.1, "lam": 0.05, "chi": 1.0,
            "temperature": 1.0, "eta": 0.5}  # fmt: skip
PLOTTABLE = [*QUANTITIES, "gain", "eg_nokd"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m kdtheory.phase_diagram",
        description=__doc__.split("\n\n")[0] + " Without --x: the headline figures.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "parameters: alpha (M/N > 0), rho (0 < ρ < 1), delta (noise Δ > 0), lam_t (teacher ridge "
            "λ̃ ≥ 0), lam (student ridge λ ≥ 0), chi (KD weight 0 ≤ χ ≤ 1), temperature (T > 0), "
            "eta (trained fraction 0 < η ≤ 1)\n"
            "examples:\n"
            "  python -m kdtheory.phase_diagram --x lam_t:0.01:10:20:log --optimise lam\n"
            "  python -m kdtheory.phase_diagram --teacher bayes --x alpha:0.5:5:30 "
            "--y temperature:0.2:10:30:log --quantity gain --jobs 2"
        ),
    )
    g = p.add_argument_group("grid")
    g.add_argument("--x", metavar="SPEC", help="first swept parameter: name:start:stop:num[:log|lin] "
                   "or name=v1,v2,… (dimensionless, like every parameter)")  # fmt: skip
    g.add_argument("--y", metavar="SPEC", help="second swept parameter (draws a map); same syntax")
    g.add_argument("--teacher", choices=["logistic", "bayes"], default="logistic",
                   help="logistic (L2, ridge lam_t) or Bayes-optimal teacher (default: logistic)")  # fmt: skip
    g.add_argument("--set", metavar="NAME=VALUE", action="append", default=[],
                   help="fix a parameter (repeatable); defaults: "
                   + ", ".join(f"{k}={v:g}" for k, v in DEFAULTS.items()))  # fmt: skip
    g.add_argument("--quantity", default="eg", choices=PLOTTABLE, metavar="Q",
                   help=f"quantity to plot (all are saved): {', '.join(PLOTTABLE)} (default: eg)")  # fmt: skip
    g.add_argument("--optimise", metavar="NAME[:LO:HI]",
                   help="at every point minimise the student error over lam (default range 1e-4…10), "
                   "chi (0…1) or temperature (0.1…20)")  # fmt: skip
    g.add_argument("--simulate", type=int, metavar="N", help="overlay finite-N simulations of dimension "
                   "N (1-D grids; integer ≥ 10)")  # fmt: skip
    g.add_argument("--seeds", type=int, default=8, help="seeds per simulated point (default: 8)")
    r = p.add_argument_group("run")
    r.add_argument("--jobs", type=int, default=2, help="local worker processes (default: 2)")
    r.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run on this Dask distributed scheduler instead of local workers")  # fmt: skip
    r.add_argument("--tol", type=float, default=1e-10,
                   help="fixed-point tolerance: largest relative change per step (default: 1e-10)")  # fmt: skip
    r.add_argument(
        "--out", type=Path, default=Path("results"), help="output folder (default: results/)"
    )
    r.add_argument("--name", help="file stem of the outputs (default: derived from the grid)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def base_problem(teacher: str, fixed: dict[str, float]) -> Problem:
    """The Problem at the fixed parameters (lam_t ignored for the Bayes teacher)."""
    v = {**DEFAULTS, **fixed}
    t = BayesTeacher() if teacher == "bayes" else LogisticTeacher(v["lam_t"])
    return Problem(
        GaussianMixture(v["alpha"], v["rho"], v["delta"]),
        t,
        Student(v["lam"], v["chi"], v["temperature"], v["eta"]),
    )


def parse_set(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in PARAMETERS:
            raise ValueError(
                f"--set {item!r}: expected NAME=VALUE with NAME in {', '.join(PARAMETERS)}"
            )
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--set {item!r}: {value!r} is not a number") from None
    return out


def custom_sweep(args) -> Sweep:
    """The Sweep that the command line asks for (raises ValueError on bad input)."""
    axes = [Axis.parse(args.x)] + ([Axis.parse(args.y)] if args.y else [])
    fixed = parse_set(args.set)
    if args.teacher == "bayes" and any(a.name == "lam_t" for a in axes):
        raise ValueError(
            "lam_t is the logistic teacher's ridge; it cannot be swept with --teacher bayes"
        )
    variants = {"nokd": {"chi": 0.0}} if args.quantity in ("gain", "eg_nokd") else {}
    opt = Optimise.parse(args.optimise) if args.optimise else None
    return Sweep(base_problem(args.teacher, fixed), tuple(axes), variants, opt, args.tol)


def check_run_args(args) -> None:
    if args.jobs < 1:
        raise ValueError(f"--jobs must be ≥ 1, got {args.jobs}")
    if not (args.tol > 0 and math.isfinite(args.tol)):
        raise ValueError(f"--tol must be a positive number, got {args.tol}")
    if args.simulate is not None:
        if args.simulate < 10:
            raise ValueError(f"--simulate N must be an integer ≥ 10, got {args.simulate}")
        if args.seeds < 1:
            raise ValueError(f"--seeds must be ≥ 1, got {args.seeds}")
        if args.y:
            raise ValueError("--simulate overlays 1-D grids only (drop --y)")
    if args.scheduler is not None and not args.scheduler.startswith(
        ("tcp://", "tls://", "inproc://")
    ):
        raise ValueError(f"--scheduler must look like tcp://host:port, got {args.scheduler!r}")


# ----------------------------------------------------------------------------- custom grids


def run_custom(args) -> list[Path]:
    from kdtheory import plotting
    from kdtheory.sweep import run_sweep, simulate_points, write_atomic

    sweep = custom_sweep(args)
    stem = args.name or "_".join(a.name for a in sweep.axes) + f"_{sweep.fingerprint()[:8]}"
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    ds = run_sweep(sweep, out / f"{stem}.journal.jsonl", jobs=args.jobs, scheduler=args.scheduler,
                   progress=not args.quiet, description=stem)  # fmt: skip
    if args.simulate:
        ds = simulate_points(sweep, ds, n=args.simulate, seeds=args.seeds, jobs=args.jobs,
                             journal_path=out / f"{stem}.sim.journal.jsonl", progress=not args.quiet)  # fmt: skip
    nc = out / f"{stem}.nc"
    write_atomic(nc, lambda tmp: ds.to_netcdf(tmp, engine="scipy"))
    png = out / f"{stem}.png"
    fig, ax = plotting.plt.subplots(figsize=(6.4, 4.4))
    q = args.quantity
    if len(sweep.axes) == 1:
        x = sweep.axes[0]
        conv = ds["converged"].values
        plotting.curve(
            ax, ds[x.name].values, ds[q].values, conv, style="o-", ms=3, label=plotting.label(q)
        )
        if f"{q}_sim" in ds:
            plotting.curve(ax, ds[x.name].values, ds[f"{q}_sim"].values, sem=ds[f"{q}_sim_sem"].values,
                           style="s", label=f"simulation N={args.simulate}, {args.seeds} seeds")  # fmt: skip
        if x.log:
            ax.set_xscale("log")
        ax.set_xlabel(plotting.label(x.name))
        ax.set_ylabel(plotting.label(q))
        ax.legend(fontsize=8)
    else:
        plotting.heatmap(
            ax, ds, q, x=sweep.axes[0].name, y=sweep.axes[1].name, diverging=q == "gain"
        )
    ax.set_title(_title(sweep), fontsize=9)
    plotting.save(fig, png)
    n_bad = int((ds["converged"].values != 1).sum())
    print(f"wrote {nc} and {png} ({ds['converged'].size} points, {n_bad} not converged)")
    return [nc, png]


def _title(sweep: Sweep) -> str:
    swept = {a.name for a in sweep.axes}
    fixed = {k: v for k, v in sweep.base.params.items() if k not in swept and not math.isnan(v)}
    if sweep.optimise is not None:
        fixed.pop(sweep.optimise.name, None)
    teacher = (
        "Bayes teacher" if isinstance(sweep.base.teacher, BayesTeacher) else "logistic teacher"
    )
    opt = f", {sweep.optimise.name} optimised" if sweep.optimise else ""
    return f"{teacher}{opt}: " + ", ".join(f"{k}={v:g}" for k, v in fixed.items())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_run_args(args)
        if args.x is None:
            if (
                args.y
                or args.set
                or args.optimise
                or args.quantity != "eg"
                or args.teacher != "logistic"
            ):
                raise ValueError(
                    "--y, --set, --optimise, --quantity and --teacher need --x (a custom grid)"
                )
            headline_sweeps(args)  # validate before writing anything
        else:
            custom_sweep(args)
    except ValueError as exc:
        parser.error(str(exc))
    start = time.perf_counter()
    if args.x is None:
        run_headline(args)
    else:
        run_custom(args)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
