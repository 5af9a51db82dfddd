r"""``--figures optimal``: the theory's answer to the metaparameter question.

For a data model (α, ρ, Δ) and a teacher (logistic with ridge λ̃, or Bayes-optimal), which KD
metaparameters — the weight χ of the soft labels, the temperature T and the student's ridge λ —
minimise the student's test error ε_g, and how much does the best KD student then gain over the
best student without KD (χ = 0, λ optimised)?  At every point of three maps, for a full (η = 1)
and a sparse (η = 0.5) student, ε_g is minimised jointly over (λ, χ, T) in the box
:data:`BOUNDS` (:func:`kdtheory.sweep.optimise_point`):

1. ``optimal_1_lam_t``: over (α, λ̃), logistic teacher, ρ = 0.3;
2. ``optimal_2_rho_logistic``: over (α, ρ), logistic teacher λ̃ = 0.1;
3. ``optimal_3_rho_bayes``: over (α, ρ), Bayes-optimal teacher.

Each map shows χ*, T*, λ* (cells whose optimum lies on a bound of the box are marked), the optimal
ε_g and the gain ε_g(best without KD) − ε_g(best KD student), which is ≥ 0 since χ = 0 lies in the
box; the variant ``t1`` (T = 1, λ and χ optimised) tells how much T ≠ 1 is worth.  :func:`run_optimal` computes them with journalled sweeps (an interrupted run resumes), writes
``optimal_<k>_<name>.nc`` and ``.png`` atomically and prints one summary line per finding;
:func:`optimal_sweeps` builds the grids (:class:`Grids` sets their resolution).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdtheory.figures.headline import ETAS, STORY
from kdtheory.problem import BayesTeacher, LogisticTeacher, Problem, Student
from kdtheory.sweep import Axis, Optimise, Sweep

__all__ = [
    "BOUNDS",
    "MAPS",
    "VARIANTS",
    "Grids",
    "findings",
    "optimal_sweeps",
    "run_optimal",
    "summary_lines",
]

#: the box of the metaparameters: λ and T on a log scale
BOUNDS = (
    Optimise("lam", 1e-4, 10.0),
    Optimise("chi", 0.0, 1.0),
    Optimise("temperature", 0.1, 10.0),
)
#: variants: the student without KD, χ = 0 (T is then unused and held at 1; only λ is optimised),
#: and the best student at T = 1 (λ and χ optimised): is the optimum ever at T ≠ 1?
VARIANTS = {"nokd": {"chi": 0.0, "temperature": 1.0}, "t1": {"temperature": 1.0}}
#: the maps: stem → (teacher, second axis)
MAPS = {
    "optimal_1_lam_t": ("logistic", "lam_t"),
    "optimal_2_rho_logistic": ("logistic", "rho"),
    "optimal_3_rho_bayes": ("bayes", "rho"),
}
#: the logistic teacher's ridge on the (α, ρ) maps
LAM_T = 0.1


@dataclass(frozen=True)
class Grids:
    """Resolution of the maps: ``n`` × ``n`` points, α ∈ [0.5, 4], λ̃ ∈ [1e-3, 10] (log),
    ρ ∈ [0.1, 0.5]; the defaults (8 × 8) take about four minutes on 2 busy cores."""

    n: int = 8
    etas: tuple[float, ...] = ETAS

    def __post_init__(self):
        if self.n < 2:
            raise ValueError(f"--map-size must be ≥ 2, got {self.n}")
        if not self.etas or not all(0 < e <= 1 for e in self.etas):
            raise ValueError(f"Grids.etas must be values in (0, 1], got {self.etas}")


def grids_of(args) -> Grids:
    """The resolution that ``args`` asks for (``args.map_size`` points per axis, if given)."""
    size = getattr(args, "map_size", None)
    return Grids() if size is None else Grids(n=size)


def optimal_sweeps(args, grids: Grids | None = None) -> dict[str, Sweep]:
    """The sweeps of the three maps for every η, keyed by journal stem ``<map>_eta<η>``."""
    grids = grids or grids_of(args)
    alpha = Axis.parse(f"alpha:0.5:4:{grids.n}")
    second = {"lam_t": Axis.parse(f"lam_t:0.001:10:{grids.n}:log"),
              "rho": Axis.parse(f"rho:0.1:0.5:{grids.n}")}  # fmt: skip
    sweeps = {}
    for stem, (teacher, y) in MAPS.items():
        t = BayesTeacher() if teacher == "bayes" else LogisticTeacher(LAM_T)
        for eta in grids.etas:
            base = Problem(STORY, t, Student(0.05, 1.0, 1.0, eta))
            sweeps[f"{stem}_eta{eta:g}"] = Sweep(
                base, (alpha, second[y]), VARIANTS, BOUNDS, args.tol
            )
    return sweeps


def run_optimal(args, grids: Grids | None = None) -> list[Path]:
    """Compute, save and plot the three maps; print one summary line per finding.

    ``args`` carries ``out``, ``jobs``, ``scheduler``, ``tol``, ``quiet`` and ``map_size`` as
    parsed by ``python -m kdtheory.phase_diagram``; ``grids`` overrides the resolution.
    """
    import xarray as xr

    from kdtheory.journal import write_atomic
    from kdtheory.sweep import failure_summary, open_journals, run_sweep

    grids = grids or grids_of(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sweeps = optimal_sweeps(args, grids)
    wait = getattr(args, "wait", False)
    fix = "choose another --out, or delete the optimal_*.journal.jsonl files there"
    with contextlib.ExitStack() as stack:  # every journal opened (and locked) before any work
        journals = open_journals(stack, sweeps, out, wait=wait, fix=fix)
        res = {
            stem: run_sweep(sweep, journals[stem], jobs=args.jobs, scheduler=args.scheduler,
                            progress=not args.quiet, description=stem.removeprefix("optimal_"))
            for stem, sweep in sweeps.items()
        }  # fmt: skip
    datasets = {
        stem: xr.concat(
            [res[f"{stem}_eta{eta:g}"] for eta in grids.etas], dim="eta", combine_attrs="drop"
        ).assign_coords(eta=list(grids.etas))
        for stem in MAPS
    }
    files = []
    for stem, ds in datasets.items():
        ds.attrs.update(teacher=MAPS[stem][0], tol=args.tol,
                        bounds=str({o.name: (o.lo, o.hi) for o in BOUNDS}))  # fmt: skip
        path = out / f"{stem}.nc"
        write_atomic(path, lambda tmp, ds=ds: ds.to_netcdf(tmp, engine="scipy"))
        files.append(path)
    f = findings(datasets)
    for stem, ds in datasets.items():
        path = out / f"{stem}.png"
        _figure(ds, stem, f, path)
        files.append(path)
    print(f"wrote {', '.join(str(p) for p in files)}")
    print("\n".join(summary_lines(f)))
    for stem, ds in res.items():
        for line in failure_summary(ds):
            print(f"warning: {stem.removeprefix('optimal_')}: {line} (marked in the figures)")
    return files


# ----------------------------------------------------------------------------- the findings


def _ok(ds):
    """Mask of the cells where the optimum and both variants' optima converged."""
    return np.logical_and.reduce([ds[f"converged{s}"].values == 1 for s in ("", "_nokd", "_t1")])


def findings(datasets: dict) -> dict:
    """The numbers the captions and summary lines state, read off the computed maps."""
    f: dict = {}
    for stem, ds in datasets.items():
        ok = _ok(ds)
        chi = ds["chi_opt"].values[ok]
        kd = ok & (ds["chi_opt"].values >= 0.01)  # T matters only where the teacher is used
        temp = ds["temperature_opt"].values[kd]
        gain_t = (ds["eg_t1"] - ds["eg"]).values
        f[stem] = {
            "n": int(ok.sum()),
            "chi_below_1": float(np.mean(chi < 0.99)),
            "chi_min": float(chi.min()) if chi.size else math.nan,
            "chi_zero": float(np.mean(chi < 0.01)),
            "t_range": (float(temp.min()), float(temp.max())) if temp.size else (math.nan,) * 2,
            "t_off_1": float(np.mean(np.abs(np.log(temp)) > math.log(1.1))) if temp.size else 0.0,
            "gain_t_max": float(gain_t[ok].max()),
            "gain_t_median": float(np.median(gain_t[kd])) if temp.size else 0.0,
            "gain_max": float(ds["gain"].values[ok].max()),
            "gain_min": float(ds["gain"].values[ok].min()),
            "at_bound": {
                o.name: float(np.mean(ds[f"{o.name}_at_bound"].values[ok] == 1)) for o in BOUNDS
            },
        }
        if "lam_t" in ds.dims:  # T* and χ* from the under- to the over-regularised teacher
            good = (ds["converged"] == 1) & (ds["converged_nokd"] == 1) & (ds["converged_t1"] == 1)
            others = [d for d in ds["chi_opt"].dims if d != "lam_t"]
            f[stem]["lam_t"] = ds["lam_t"].values.tolist()
            t = ds["temperature_opt"].where(good & (ds["chi_opt"] >= 0.01))
            f[stem]["t_median"] = t.median(others).values.tolist()
            f[stem]["chi_median"] = ds["chi_opt"].where(good).median(others).values.tolist()
        i = np.unravel_index(np.nanargmax(np.where(ok, ds["gain"].values, np.nan)), ok.shape)
        where = {d: float(ds[d].values[k]) for d, k in zip(ds["gain"].dims, i, strict=True)}
        f[stem]["gain_where"] = where
    f["gain_min"] = min(f[s]["gain_min"] for s in datasets)
    return f


def _t(t: float) -> str:
    """A median T*, or why there is none (the teacher unused: χ* = 0 at every α and η)."""
    return f"{t:.2g}" if math.isfinite(t) else "none (χ* = 0)"


def _fmt_where(w: dict) -> str:
    names = {"alpha": "α", "lam_t": "λ̃", "rho": "ρ", "eta": "η"}
    return ", ".join(f"{names.get(k, k)} = {v:.3g}" for k, v in w.items())


def summary_lines(f: dict) -> list[str]:
    """One line per finding, with its numbers."""
    lt = f["optimal_1_lam_t"]
    maps = [s for s in MAPS if s in f]
    return [
        "1. χ* < 1: "
        + "; ".join(
            f"{s.removeprefix('optimal_')}: on {100 * f[s]['chi_below_1']:.0f}% of the points "
            f"(χ* = 0 on {100 * f[s]['chi_zero']:.0f}%, smallest χ* {f[s]['chi_min']:.2f})"
            for s in maps
        )
        + ".",
        "2. T* as the logistic teacher worsens (median over α and η, where χ* > 0, of T* at λ̃ = "
        + ", ".join(f"{x:.3g}" for x in lt["lam_t"])
        + "): "
        + ", ".join(_t(t) for t in lt["t_median"])
        + "; median χ*: "
        + ", ".join(f"{c:.2f}" for c in lt["chi_median"])
        + ".",
        "3. T* ≠ 1 (outside [0.9, 1.1], where χ* > 0) on "
        + "; ".join(
            f"{100 * f[s]['t_off_1']:.0f}% of {s.removeprefix('optimal_')} "
            f"(T* ∈ [{f[s]['t_range'][0]:.2g}, {f[s]['t_range'][1]:.2g}]; ε_g gain over the best "
            f"T = 1 student median {f[s]['gain_t_median']:.1e}, max {f[s]['gain_t_max']:.1e})"
            for s in maps
        )
        + ".",
        "4. Gain of the best KD student over the best student without KD: "
        + "; ".join(
            f"{s.removeprefix('optimal_')}: up to {f[s]['gain_max']:.4f} at "
            f"{_fmt_where(f[s]['gain_where'])}"
            for s in maps
        )
        + f"; smallest {f['gain_min']:.1e} (≥ 0 up to the optimiser's tolerance: χ = 0 is in the box).",
    ]


# ----------------------------------------------------------------------------- the figures

_PANELS = (
    ("chi_opt", r"optimal $\chi^*$", False),
    ("temperature_opt", r"optimal $T^*$", True),
    ("lam_opt", r"optimal $\lambda^*$", True),
    ("eg", r"optimal $\varepsilon_g$", False),
    ("gain", r"gain over best no-KD student", False),
)


def _figure(ds, stem: str, f: dict, path: Path) -> None:
    from matplotlib.colors import LogNorm

    from kdtheory import plotting

    y = MAPS[stem][1]
    etas = ds["eta"].values.tolist()
    fig, axes = plotting.plt.subplots(len(etas), len(_PANELS), figsize=(17, 3.2 * len(etas)),
                                      layout="constrained", squeeze=False)  # fmt: skip
    xs, ys = ds["alpha"].values, ds[y].values
    edges = _edges(xs, log=False), _edges(ys, log=y == "lam_t")
    for row, eta in zip(axes, etas, strict=True):
        one = ds.sel(eta=eta)
        ok = _ok(one.transpose(y, "alpha"))
        for ax, (name, title, log) in zip(row, _PANELS, strict=True):
            cell = ok
            if name == "temperature_opt":  # T matters only where the teacher is used
                cell = ok & (one["chi_opt"].transpose(y, "alpha").values >= 0.01)
            z = np.where(cell, one[name].transpose(y, "alpha").values, np.nan)
            kw = {"norm": LogNorm(*_log_limits(name))} if log else {}
            if name == "chi_opt":
                kw = {"vmin": 0.0, "vmax": 1.0}
            mesh = ax.pcolormesh(*edges, z, shading="flat", **kw)
            plotting.plt.colorbar(mesh, ax=ax)
            bound = f"{name.removesuffix('_opt')}_at_bound"
            if bound in one:
                hit = (one[bound].transpose(y, "alpha").values == 1) & cell
                yy, xx = np.meshgrid(ys, xs, indexing="ij")
                ax.plot(xx[hit], yy[hit], "o", mfc="none", mec="k", ms=6, label="at a bound")
            if (~ok).any():
                yy, xx = np.meshgrid(ys, xs, indexing="ij")
                ax.plot(xx[~ok], yy[~ok], "x", color="red", ms=5, label="not converged")
            if y == "lam_t":
                ax.set_yscale("log")
            ax.set_xlabel(plotting.label("alpha"))
            ax.set_ylabel(plotting.label(y))
            ax.set_title(f"{title}, η = {eta:g}", fontsize=9)
    v = f[stem]
    teacher = "Bayes-optimal teacher" if MAPS[stem][0] == "bayes" else "logistic teacher"
    fixed = "ρ = 0.3" if y == "lam_t" else (f"λ̃ = {LAM_T:g}" if MAPS[stem][0] != "bayes" else "")
    extra = ""
    if y == "lam_t":
        extra = (
            " Median T* over α and η along λ̃ = "
            + ", ".join(f"{x:.2g}" for x in v["lam_t"])
            + ": "
            + ", ".join(_t(t) for t in v["t_median"])
            + " (where χ* > 0); median χ*: "
            + ", ".join(f"{c:.2f}" for c in v["chi_median"])
            + "."
        )
    plotting.caption(
        fig,
        f"Optimal KD metaparameters, {teacher}, Δ = 1{', ' + fixed if fixed else ''}: ε_g minimised "
        "jointly over λ ∈ [1e-4, 10], χ ∈ [0, 1], T ∈ [0.1, 10] at every point (open circles: the "
        f"optimum lies on a bound of the box; T* is left blank where χ* = 0). χ* < 1 on {100 * v['chi_below_1']:.0f}% of the points "
        f"(χ* = 0, no KD at all, on {100 * v['chi_zero']:.0f}%); T* ranges over "
        f"[{v['t_range'][0]:.2g}, {v['t_range'][1]:.2g}] where χ* > 0 and lies outside [0.9, 1.1] "
        f"on {100 * v['t_off_1']:.0f}% of those points, but it gains little over the best student "
        f"at T = 1 (λ, χ optimised): median {v['gain_t_median']:.1e}, at most "
        f"{v['gain_t_max']:.1e} in ε_g.{extra} The best KD student beats the best student without KD "
        f"(λ optimised) by up to {v['gain_max']:.4f} ({_fmt_where(v['gain_where'])}); the gain is ≥ 0 "
        f"everywhere up to the optimiser's tolerance (smallest {v['gain_min']:.1e}). Where ε_g is flat "
        "along a valley of (λ, χ, T) the argmins are poorly determined even when ε_g is.",
    )
    plotting.save(fig, path)


def _edges(v, *, log: bool) -> np.ndarray:
    """Cell edges around the grid values ``v``: midpoints, geometric on a log axis."""
    u = np.log(v) if log else np.asarray(v, float)
    mid = (u[1:] + u[:-1]) / 2
    e = np.concatenate([[2 * u[0] - mid[0]], mid, [2 * u[-1] - mid[-1]]])
    return np.exp(e) if log else e


def _log_limits(name: str) -> tuple[float, float]:
    o = {b.name: b for b in BOUNDS}[name.removesuffix("_opt")]
    return o.lo, o.hi
