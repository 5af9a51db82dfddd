r"""``python -m kdtheory.phase_diagram``: phase diagrams and curves of knowledge distillation.

With no grid options it tells the four findings of Saglietti & Zdeborová, *Solvable model for
inheriting the regularization through knowledge distillation* (MSML 2022), plus the KD gain map, in
five figures with captions (``kdtheory.figures.headline``; about a minute on 2 cores): 1. inheritance of the
teacher's regularisation, 2. the limit (best KD student against the best ridge student),
3. the Bayes-optimal teacher's student, 4. double descent at α = η, 5. the KD gain map.

Any other grid: ``--x name:start:stop:num[:log]`` (and ``--y`` for a map) over α, ρ, Δ, θ (flip, the
probability that a training label is flipped), λ̃ (lam_t), λ (lam), χ (chi), T (temperature), η (eta);
``--set`` the others; ``--tempered teacher`` divides only the teacher's output by T (default
``both``; a choice for the whole run, recorded in the NetCDF attributes); ``--optimise lam`` to minimise the
student's error over λ at every point (repeat it to optimise several jointly).  ``--figures optimal``
(instead of the default headline): the optimal metaparameters (χ*, T*, λ*) over (α, λ̃) and (α, ρ)
(``kdtheory.figures.optimal``; minutes); ``--figures selfdistil``: optimal multi-stage self-distillation
under label noise, ε_t per stage against α and θ, soft against hard labels
(``kdtheory.figures.selfdistil``; minutes); ``--figures realdata``: the theory with the data's own
covariance against binary Fashion-MNIST tasks and a Gaussian surrogate (``kdtheory.figures.realdata``;
needs the data set; minutes); ``--figures multiclass``: K-class softmax distillation and "dark
knowledge" (``kdtheory.figures.multiclass``; minutes).  Results go to ``--out`` as NetCDF (xarray) and PNG, written
atomically, with a journal that lets an interrupted run resume.

Everything is checked before any work: parameters, output folder and name, the grid size (at most
``kdtheory.sweep.MAX_POINTS`` points) and the simulation size (``simulations.runner``'s caps).  A
point whose solve fails is stored with its status and reason, and the summary lists them.  A second
run into the same journal stops with exit code 2 (or waits, with ``--wait``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import textwrap
import time
from pathlib import Path

from kdtheory.figures.headline import headline_sweeps, run_headline
from kdtheory.figures.multiclass import grids_of as multiclass_grids
from kdtheory.figures.multiclass import run_multiclass_figures
from kdtheory.figures.optimal import optimal_sweeps, run_optimal
from kdtheory.figures.realdata import check_data as realdata_check
from kdtheory.figures.realdata import design_of as realdata_design
from kdtheory.figures.realdata import run_realdata
from kdtheory.figures.selfdistil import grids_of as selfdistil_grids
from kdtheory.figures.selfdistil import run_selfdistil
from kdtheory.journal import (
    Journal,
    JournalLockedError,
    JournalMismatchError,
    check_name,
    check_output_dir,
    one_line_warnings,
)
from kdtheory.problem import (
    PARAMETERS,
    BayesTeacher,
    GaussianMixture,
    LogisticTeacher,
    Problem,
    Student,
)
from kdtheory.sweep import MAX_POINTS, QUANTITIES, Axis, Optimise, Sweep, failure_summary

DEFAULTS = {"alpha": 2.0, "rho": 0.3, "delta": 1.0, "flip": 0.0, "lam_t": 0.1, "lam": 0.05,
            "chi": 1.0, "temperature": 1.0, "eta": 0.5}  # fmt: skip
#: ``--tempered`` choices (``Student.tempered``): which outputs the temperature divides
TEMPERED = ("both", "teacher")
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
            "parameters: alpha (M/N > 0), rho (0 < ρ < 1), delta (noise Δ > 0), flip (label noise "
            "0 ≤ θ ≤ 1; logistic teacher only), lam_t (teacher ridge λ̃ ≥ 0), lam (student ridge λ ≥ 0), chi (KD weight 0 ≤ χ ≤ 1), temperature (T > 0), "
            "eta (trained fraction 0 < η ≤ 1)\n"
            f"limits: ranges start < stop, at most {MAX_POINTS} points per grid (journal and Dataset "
            "memory); --simulate N with 8·α·N² bytes of data ≤ 2 GiB, --seeds ≤ 1000\n"
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
    g.add_argument("--tempered", choices=TEMPERED, default="both",
                   help="both: H(sig(h̃/T), sig(h/T)) (Saglietti & Zdeborová); teacher: "
                   "H(sig(h̃/T), sig(h)) (Takanami et al.); default: both")  # fmt: skip
    g.add_argument("--set", metavar="NAME=VALUE", action="append", default=[],
                   help="fix a parameter (repeatable); defaults: "
                   + ", ".join(f"{k}={v:g}" for k, v in DEFAULTS.items()))  # fmt: skip
    g.add_argument("--quantity", default="eg", choices=PLOTTABLE, metavar="Q",
                   help=f"quantity to plot (all are saved): {', '.join(PLOTTABLE)} (default: eg)")  # fmt: skip
    g.add_argument("--optimise", metavar="NAME[:LO:HI]", action="append",
                   help="at every point minimise the student error over lam (default range 1e-4…10), "
                   "chi (0…1) or temperature (0.1…20); repeat it to optimise jointly, e.g. "
                   "--optimise lam --optimise chi --optimise temperature:0.1:10")  # fmt: skip
    g.add_argument("--simulate", type=int, metavar="N", help="overlay finite-N simulations of dimension "
                   "N (1-D grids; integer ≥ 10)")  # fmt: skip
    g.add_argument("--seeds", type=int, default=8, help="seeds per simulated point (default: 8)")
    g.add_argument("--figures", choices=["headline", "optimal", "selfdistil", "realdata", "multiclass"],
                   default="headline",
                   help="without --x: the headline figures (default), the optimal-metaparameter "
                   "maps (kdtheory.figures.optimal: optimal χ*, T*, λ* over (α, λ̃) and (α, ρ); minutes) or "
                   "optimal self-distillation under label noise (kdtheory.figures.selfdistil: optimal "
                   "error per stage against α and θ, soft and hard labels; minutes), the theory against "
                   "real images (kdtheory.figures.realdata: three binary Fashion-MNIST tasks, "
                   "theory, Gaussian surrogate and real data against α; needs Fashion-MNIST; "
                   "minutes) or K-class softmax distillation (kdtheory.figures.multiclass: the best "
                   "KD student against the best without KD for orthogonal and structured class "
                   "means, the optimal temperature, inheritance, the oracle teacher's student; "
                   "minutes)")  # fmt: skip
    g.add_argument("--map-size", type=int, metavar="N",
                   help="points per axis of the --figures optimal maps (default 8; ≥ 2); for "
                   "--figures selfdistil the N values of each line nearest (α, θ) = (2, 0.2) "
                   "(default: all, 6 and 5; ≥ 1)")  # fmt: skip
    g.add_argument("--stages", type=int, metavar="K",
                   help="stages of the --figures selfdistil chains, teacher included (1–3; "
                   "default 3)")  # fmt: skip
    g.add_argument("--ks", metavar="K[,K…]",
                   help="--figures multiclass: the numbers of classes K of the orthogonal and "
                   "two-close cells, K = 3 at α ∈ {0.5, 2}, the others at α = 2 (distinct, 2…6; "
                   "default: K = 3, and K = 4 for two-close centroids only; 3,4,5 is the stored "
                   "run docs/data/multiclass.nc)")  # fmt: skip
    g.add_argument("--data-root", type=Path, metavar="DIR",
                   help="--figures realdata: the folder of the Fashion-MNIST IDX files (default "
                   "/usr/share/datasets/fashion-mnist, Debian package dataset-fashion-mnist)")  # fmt: skip
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
    r.add_argument("--wait", action="store_true",
                   help="if another run is writing the same journal, wait for it (default: exit 2)")  # fmt: skip
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def base_problem(teacher: str, fixed: dict[str, float], tempered: str = "both") -> Problem:
    """The Problem at the fixed parameters (lam_t ignored for the Bayes teacher); ``tempered`` is
    ``Student.tempered``."""
    v = {**DEFAULTS, **fixed}
    t = BayesTeacher() if teacher == "bayes" else LogisticTeacher(v["lam_t"])
    return Problem(
        GaussianMixture(v["alpha"], v["rho"], v["delta"], v["flip"]),
        t,
        Student(v["lam"], v["chi"], v["temperature"], v["eta"], tempered),
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
    opts = tuple(Optimise.parse(o) for o in args.optimise or ())
    base = base_problem(args.teacher, fixed, args.tempered)
    return Sweep(base, tuple(axes), variants, opts, args.tol)


def max_alpha(sweep: Sweep) -> float:
    """The largest α of a sweep (base, axes, variants): what the simulation-size cap depends on."""
    alphas = [sweep.base.data.alpha, *[v.get("alpha", 0.0) for v in sweep.variants.values()]]
    alphas += [max(a.values) for a in sweep.axes if a.name == "alpha"]
    return max(alphas)


def check_simulation_args(n: int, seeds: int, sweep: Sweep, *, seed: int = 0, jobs: int = 1,
                          flags: dict[str, str] | None = None) -> None:  # fmt: skip
    """The caps of ``simulations.runner.check_run_arguments`` at the sweep's largest α."""
    from simulations.runner import check_run_arguments

    check_run_arguments(n, seeds, seed=seed, n_jobs=jobs, alpha=max_alpha(sweep), names=flags)


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


def explain_failures(ax, ds, quantity: str) -> bool:
    """If ``quantity`` has no finite value, write why on the axes (the failure summary) instead of
    leaving them empty; returns True if it did."""
    import numpy as np

    if np.isfinite(np.asarray(ds[quantity].values, dtype=float)).any():
        return False
    lines = failure_summary(ds) or ["no point computed"]
    text = "\n".join(textwrap.fill(line, 60) for line in lines[:4])
    ax.text(0.5, 0.5, f"no value of {quantity}:\n{text}", ha="center", va="center", fontsize=7,
            transform=ax.transAxes)  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    return True


def custom_stem(args, sweep: Sweep) -> str:
    """The file stem: ``--name``, or what the files hold, e.g. ``eg_vs_lam_t_<hash>`` (a curve) or
    ``gain_vs_alpha_and_temperature_<hash>`` (a map), with 8 hex digits of the sweep's fingerprint."""
    if args.name is not None:
        return check_name(args.name)
    swept = "_and_".join(a.name for a in sweep.axes)
    return f"{args.quantity}_vs_{swept}_{sweep.fingerprint()[:8]}"


def open_journals(args, sweep: Sweep, stem: str) -> tuple[Journal, Journal | None]:
    """The theory (and simulation) journals in ``args.out``, locked and checked before any work."""
    from kdtheory.sweep import simulation_journal

    fix = "choose another --name or --out, or delete that file"
    theory = sweep.journal(args.out / f"{stem}.journal.jsonl", wait=args.wait, fix=fix)
    if not args.simulate:
        return theory, None
    try:
        sim = simulation_journal(sweep, args.out / f"{stem}.sim.journal.jsonl", n=args.simulate,
                                 seeds=args.seeds, wait=args.wait, fix=fix)  # fmt: skip
    except BaseException:
        theory.close()
        raise
    return theory, sim


def run_custom(
    args, sweep: Sweep, stem: str, journals: tuple[Journal, Journal | None]
) -> list[Path]:
    from kdtheory import plotting
    from kdtheory.sweep import run_sweep, simulate_points, write_atomic

    out = args.out
    ds = run_sweep(sweep, journals[0], jobs=args.jobs, scheduler=args.scheduler,
                   progress=not args.quiet, description=stem)  # fmt: skip
    if args.simulate:
        ds = simulate_points(sweep, ds, n=args.simulate, seeds=args.seeds, jobs=args.jobs,
                             journal_path=journals[1], progress=not args.quiet)  # fmt: skip
    nc = out / f"{stem}.nc"
    write_atomic(nc, lambda tmp: ds.to_netcdf(tmp, engine="scipy"))
    png = out / f"{stem}.png"
    fig, ax = plotting.plt.subplots(figsize=(6.4, 4.4))
    q = args.quantity
    if explain_failures(ax, ds, q):  # nothing to draw: the axes say why
        ax.set_xlabel(plotting.label(sweep.axes[0].name))
    elif len(sweep.axes) == 1:
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
    for line in failure_summary(ds):
        print(f"  {line}")
    return [nc, png]


def _title(sweep: Sweep) -> str:
    swept = {a.name for a in sweep.axes}
    fixed = {k: v for k, v in sweep.base.params.items() if k not in swept and not math.isnan(v)}
    if fixed.get("flip") == 0.0:  # no label noise: as before θ existed
        del fixed["flip"]
    for o in sweep.optimise:
        fixed.pop(o.name, None)
    teacher = (
        "Bayes teacher" if isinstance(sweep.base.teacher, BayesTeacher) else "logistic teacher"
    )
    opt = f", {', '.join(o.name for o in sweep.optimise)} optimised" if sweep.optimise else ""
    if sweep.base.student.tempered != "both":
        opt += f", tempered={sweep.base.student.tempered}"
    return f"{teacher}{opt}: " + ", ".join(f"{k}={v:g}" for k, v in fixed.items())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        stack.enter_context(one_line_warnings(parser.prog))
        try:  # every check before any work or any file
            check_run_args(args)
            if args.x is None:
                if (
                    args.y
                    or args.set
                    or args.optimise
                    or args.quantity != "eg"
                    or args.teacher != "logistic"
                    or args.tempered != "both"
                    or args.name
                ):
                    raise ValueError(
                        "--y, --set, --optimise, --quantity, --teacher, --tempered and --name need "
                        "--x (a custom grid)"
                    )
                if args.map_size is not None and args.figures == "headline":
                    raise ValueError("--map-size sets the grids of --figures optimal or selfdistil")
                if args.stages is not None and args.figures != "selfdistil":
                    raise ValueError("--stages sets the chains of --figures selfdistil")
                if args.data_root is not None and args.figures != "realdata":
                    raise ValueError("--data-root sets the data of --figures realdata")
                if args.ks is not None and args.figures != "multiclass":
                    raise ValueError("--ks sets the K of --figures multiclass")
                if args.figures == "multiclass":
                    if (
                        args.simulate
                        or args.scheduler
                        or args.map_size is not None
                        or args.tol != parser.get_default("tol")
                    ):
                        raise ValueError("--simulate, --scheduler, --map-size and --tol do not "
                                         "apply to --figures multiclass (local workers, its own "
                                         "grids and tolerance; tests/test_multiclass_vs_simulation.py "
                                         "checks the theory by simulation)")  # fmt: skip
                    multiclass_grids(args)
                elif args.figures == "selfdistil":
                    if args.simulate or args.scheduler or args.tol != parser.get_default("tol"):
                        raise ValueError("--simulate, --scheduler and --tol do not apply to "
                                         "--figures selfdistil (local workers, the chain solver's "
                                         "own tolerance; notebook 08 checks it by simulation)")  # fmt: skip
                    selfdistil_grids(args)
                elif args.figures == "realdata":
                    if (args.simulate or args.scheduler or args.map_size is not None
                            or args.tol != parser.get_default("tol")):  # fmt: skip
                        raise ValueError("--simulate, --scheduler, --map-size and --tol do not "
                                         "apply to --figures realdata (it simulates by itself, on "
                                         "local workers)")  # fmt: skip
                    realdata_check(realdata_design(args))
                elif args.figures == "optimal":
                    if args.simulate:
                        raise ValueError("--simulate is for the headline and custom grids; the "
                                         "optimal set is validated by benchmarks/optimal_validation.py")  # fmt: skip
                    sweeps = optimal_sweeps(args)
                else:
                    sweeps = headline_sweeps(args)
                if args.simulate:
                    check_simulation_args(args.simulate, args.seeds, sweeps["inheritance"],
                                          jobs=args.jobs, flags=_SIM_FLAGS)  # fmt: skip
                check_output_dir(args.out)
            else:
                if (
                    args.figures != "headline"
                    or args.map_size is not None
                    or args.stages is not None
                    or args.data_root is not None
                    or args.ks is not None
                ):
                    raise ValueError("--figures and --map-size name a set of the main job; they "
                                     "take no --x")  # fmt: skip
                sweep = custom_sweep(args)
                if args.simulate:
                    check_simulation_args(args.simulate, args.seeds, sweep, jobs=args.jobs,
                                          flags=_SIM_FLAGS)  # fmt: skip
                stem = custom_stem(args, sweep)
                check_output_dir(args.out)
                journals = open_journals(args, sweep, stem)
                for j in journals:
                    if j is not None:
                        stack.callback(j.close)
        except JournalLockedError as exc:
            parser.error(f"{exc}, or rerun with --wait to queue behind it")
        except ValueError as exc:
            parser.error(str(exc))
        start = time.perf_counter()
        if args.x is None:
            run, prefix = {
                "optimal": (run_optimal, "optimal"),
                "selfdistil": (run_selfdistil, "selfdistil"),
                "realdata": (run_realdata, "realdata"),
                "multiclass": (run_multiclass_figures, "multiclass"),
                "headline": (run_headline, "headline"),
            }[args.figures]
            try:
                run(args)
            except (JournalLockedError, JournalMismatchError) as exc:
                parser.error(f"{exc} (the {prefix} set writes {prefix}_*.journal.jsonl in --out)")
        else:
            run_custom(args, sweep, stem, journals)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


_SIM_FLAGS = {"n": "--simulate N", "seeds": "--seeds", "n_jobs": "--jobs"}


if __name__ == "__main__":
    raise SystemExit(main())
