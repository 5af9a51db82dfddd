r"""``--figures selfdistil``: optimal multi-stage self-distillation under label noise.

The training labels of a mixture (α, ρ, Δ) are flipped with probability θ; stage 1 is an L2 logistic
regression on them, stage t ≥ 2 is trained only on stage t − 1's soft labels sig(h_{t−1}/T_t) on the
same inputs (χ = 1, tempered="teacher": the convention of Takanami, Takahashi & Sakata, *The effect
of optimal self-distillation in noisy Gaussian mixture model*, 2025).  At every point the chain is
optimised greedily, stage by stage (:func:`replica.optimise_chain`): λ̃ = argmin ε_1, then
(λ_t, T_t) = argmin ε_t given the earlier stages; ``soft`` searches T_t ∈ [0.02, 20], ``hard`` fixes
T_t = 0.02 (β = 1/T → ∞, nearly hard pseudo-labels) and searches λ_t alone.  ε_t is the clean-label
test error; the noiseless problem's Bayes error (θ = 0) bounds every stage from below.

Two lines through (α, θ) = (2, 0.2) at ρ = ½, Δ = 1 (:class:`Grids`): α ∈ {0.5, 1, 2, 3, 4, 6} at
θ = 0.2 and θ ∈ {0, 0.1, 0.2, 0.3, 0.4} at α = 2, three stages.  Four figures:

1. ``selfdistil_1_alpha``: optimal ε_t per stage against α (soft solid, hard dashed, Bayes bound);
2. ``selfdistil_2_theta``: the same against θ;
3. ``selfdistil_3_stages``: the gain ε_1 − ε_t of each stage, and how many stages pay (lower the
   error of the stage before by more than :data:`PAY`);
4. ``selfdistil_4_metaparameters``: the optimal λ_t and (soft) T_t against α.

:func:`run_selfdistil` computes them (one journalled optimisation per point and label kind: an
interrupted run resumes; a failed point is stored with its reason), writes ``selfdistil.nc`` and the
PNGs atomically and prints one summary line per finding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kdtheory.problem import GaussianMixture

__all__ = [
    "LABELS",
    "LAM_RANGE",
    "PAY",
    "TEMPERATURE_RANGE",
    "Grids",
    "compute",
    "findings",
    "grids_of",
    "optimise_point",
    "plot_errors",
    "run_selfdistil",
    "selfdistil_journal",
    "summary_lines",
]

#: the two searches of every student: soft labels (T_t optimised) and hard labels (T_t fixed small)
LABELS = ("soft", "hard")
#: the search boxes of ``replica.optimise_chain`` (its defaults) and the hard labels' temperature
LAM_RANGE = (1e-3, 1e2)
TEMPERATURE_RANGE = (0.02, 20.0)
HARD_TEMPERATURE = 0.02
#: a stage "pays" if it lowers the error of the stage before by more than this
PAY = 1e-4
#: per-stage fields of a point (lists of length ``stages``; T is NaN for stage 1)
STAGE_FIELDS = ("eg", "eg_se", "lam", "temperature", "m", "q", "b")
#: scalar fields of a point
SCALAR_FIELDS = ("converged", "solves", "seconds")


@dataclass(frozen=True)
class Grids:
    """The two lines of the set, through the crossing point (``alpha``, ``theta``): the ``alphas`` at
    θ = ``theta`` and the ``thetas`` at α = ``alpha``, at (ρ, Δ) = (``rho``, ``delta``), chains of
    ``stages`` stages (1 to 3: the exact-quadrature chains)."""

    alphas: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0)
    thetas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4)
    alpha: float = 2.0
    theta: float = 0.2
    rho: float = 0.5
    delta: float = 1.0
    stages: int = 3

    def __post_init__(self):
        from replica.chain import EXACT_STAGES

        if not (isinstance(self.stages, int) and 1 <= self.stages <= EXACT_STAGES):
            raise ValueError(f"--stages must be an integer in 1…{EXACT_STAGES}, got {self.stages}")
        if not self.alphas or not all(a > 0 for a in self.alphas):
            raise ValueError(f"Grids.alphas must be values > 0, got {self.alphas}")
        if not self.thetas or not all(0 <= t < 0.5 for t in self.thetas):
            raise ValueError(f"Grids.thetas must be values in [0, 0.5), got {self.thetas}")
        if self.alpha not in self.alphas or self.theta not in self.thetas:
            raise ValueError("the crossing point (alpha, theta) must lie on both lines")
        GaussianMixture(self.alpha, self.rho, self.delta, self.theta)  # checks ρ and Δ

    @property
    def alpha_values(self) -> tuple[float, ...]:
        return tuple(sorted(set(self.alphas)))

    @property
    def theta_values(self) -> tuple[float, ...]:
        return tuple(sorted(set(self.thetas)))

    @property
    def points(self) -> tuple[tuple[int, int], ...]:
        """Indices (i_α, i_θ) of the computed cells of the (α, θ) grid: the two lines."""
        a, t = self.alpha_values, self.theta_values
        cells = {(a.index(x), t.index(self.theta)) for x in self.alphas}
        cells |= {(a.index(self.alpha), t.index(y)) for y in self.thetas}
        return tuple(sorted(cells))

    def data(self, i: int, j: int) -> GaussianMixture:
        return GaussianMixture(self.alpha_values[i], self.rho, self.delta, self.theta_values[j])


def _nearest(values: tuple[float, ...], centre: float, n: int) -> tuple[float, ...]:
    """The ``n`` values closest to ``centre`` (ties: the smaller first), in increasing order."""
    return tuple(sorted(sorted(values, key=lambda v: (round(abs(v - centre), 12), v))[:n]))


def grids_of(args) -> Grids:
    """The grids that ``args`` ask for: ``args.map_size`` values per line nearest the crossing
    point (all by default), ``args.stages`` stages (3 by default)."""
    g = Grids()
    size, stages = getattr(args, "map_size", None), getattr(args, "stages", None)
    if size is not None:
        if size < 1:
            raise ValueError(f"--map-size must be ≥ 1 for --figures selfdistil, got {size}")
        g = replace(g, alphas=_nearest(g.alphas, g.alpha, size),
                    thetas=_nearest(g.thetas, g.theta, size))  # fmt: skip
    return g if stages is None else replace(g, stages=stages)


# ----------------------------------------------------------------------------- one point


def optimise_point(data: GaussianMixture, stages: int, hard: bool) -> dict:
    """The journal record of one optimal chain (:func:`replica.optimise_chain`): per-stage lists
    of :data:`STAGE_FIELDS`, ``converged`` (0/1), ``solves`` and ``seconds``; ``lam`` holds λ̃ then
    λ_2, …; ``temperature`` NaN for stage 1."""
    import replica

    start = time.perf_counter()
    opt = replica.optimise_chain(
        data, stages, hard=hard, hard_temperature=HARD_TEMPERATURE, lam_range=LAM_RANGE,
        temperature_range=TEMPERATURE_RANGE,
    )  # fmt: skip
    st = opt.solution.stages
    values = {
        "eg": [float(s.eg) for s in st],
        "eg_se": [float(s.eg_se) for s in st],
        "lam": [float(opt.teacher.lam), *(float(s.lam) for s in opt.students)],
        "temperature": [math.nan, *(float(s.temperature) for s in opt.students)],
        "m": [float(s.m) for s in st],
        "q": [float(s.q) for s in st],
        "b": [float(s.b) for s in st],
        "converged": int(bool(opt.solution.converged)),
        "solves": int(opt.solves),
        "seconds": time.perf_counter() - start,
    }
    if not opt.solution.converged:
        values["message"] = f"{opt.solution.status}: {opt.solution.message}"[:500]
    return values


def _failed(stages: int, exc: BaseException) -> dict:
    values = {k: [math.nan] * stages for k in STAGE_FIELDS}
    values.update(converged=0, solves=0, seconds=0.0)
    return {**values, "message": f"{type(exc).__name__}: {exc}"[:500]}


# ----------------------------------------------------------------------------- the journal


def _describe(g: Grids) -> tuple[dict, str]:
    describe = {
        "selfdistil": {
            "alphas": list(g.alpha_values),
            "thetas": list(g.theta_values),
            "points": [list(p) for p in g.points],
            "rho": g.rho,
            "delta": g.delta,
            "stages": g.stages,
            "lam_range": list(LAM_RANGE),
            "temperature_range": list(TEMPERATURE_RANGE),
            "hard_temperature": HARD_TEMPERATURE,
        }
    }
    return describe, hashlib.sha256(json.dumps(describe, sort_keys=True).encode()).hexdigest()[:16]


def selfdistil_journal(path, g: Grids, *, wait: bool = False, fix: str = "choose another --out"):
    """The locked journal of the set; a record is valid if its index (i_α, i_θ, i_labels) is a
    computed cell and its values are exactly the fields of :func:`optimise_point` (``message``
    optional) with lists of ``stages`` numbers, ``converged`` in {0, 1} and ``solves`` an int ≥ 0."""
    from kdtheory.journal import Journal
    from kdtheory.sweep import _check_index, _is_number

    describe, fingerprint = _describe(g)
    points = set(g.points)
    fields = {*STAGE_FIELDS, *SCALAR_FIELDS}

    def validate(record: dict) -> None:
        index, values = record["index"], record["values"]
        _check_index(index, (len(g.alpha_values), len(g.theta_values), len(LABELS)))
        if tuple(index[:2]) not in points:
            raise ValueError(f"index {index} is not a point of the lines")
        if not fields <= set(values) <= {*fields, "message"}:
            raise ValueError("not the fields of the selfdistil set")
        for k in STAGE_FIELDS:
            v = values[k]
            if not (isinstance(v, list) and len(v) == g.stages and all(map(_is_number, v))):
                raise ValueError(f"{k} must be a list of {g.stages} numbers")
        if values["converged"] not in (0, 1) or not _is_number(values["seconds"]):
            raise ValueError("converged must be 0 or 1 and seconds a number")
        if not (isinstance(values["solves"], int) and values["solves"] >= 0):
            raise ValueError("solves must be an int ≥ 0")
        if not isinstance(values.get("message", ""), str):
            raise ValueError("message must be a string")
        _check_point_values(values)

    return Journal(path, fingerprint, describe, validate=validate, lock=True, wait=wait, fix=fix)


def _check_point_values(values: dict) -> None:
    """Every per-stage value in its range (:func:`kdtheory.journal.check_values`), finite where
    the chain converged; stage 1 has no temperature (NaN)."""
    from kdtheory.journal import check_values, quantity_range

    ok = values["converged"] == 1
    t1, *ts = values["temperature"]
    if t1 == t1:
        raise ValueError("temperature of stage 1 must be NaN (the teacher has none)")
    stages = {k: values[k] for k in STAGE_FIELDS if k != "temperature"}
    stages["temperature"] = ts
    check_values(stages, {k: quantity_range(k) for k in STAGE_FIELDS}, ok=ok)
    check_values(values, {"seconds": quantity_range("seconds")}, ok=True)


def compute(g: Grids, journal=None, *, jobs: int = 1, progress: bool = True):
    """Optimise every point of the lines for soft and hard labels (journalled: what ``journal``
    holds is not recomputed) and gather them in a Dataset over (alpha, theta, labels, stage);
    cells off the lines are NaN (``computed`` = 0)."""
    import xarray as xr
    from tqdm import tqdm

    import replica
    from kdtheory.sweep import map_points

    shape = (len(g.alpha_values), len(g.theta_values), len(LABELS))
    done = dict(journal.done) if journal is not None else {}
    todo = [(i, j, k) for i, j in g.points for k in range(len(LABELS)) if (i, j, k) not in done]
    todo.sort(key=lambda x: x[2], reverse=True)  # the quick hard searches first

    def task(index):
        i, j, k = index
        try:
            return index, optimise_point(g.data(i, j), g.stages, LABELS[k] == "hard")
        except Exception as exc:  # one failed point does not end the set
            return index, _failed(g.stages, exc)

    bar = tqdm(total=len(g.points) * len(LABELS), initial=len(g.points) * len(LABELS) - len(todo),
               desc="selfdistil", unit="pt", disable=not progress, leave=False)  # fmt: skip
    try:
        results = map_points(task, todo, jobs)
        for index, values in results:
            if journal is not None:
                journal.append([(index, values)])
            done[index] = values
            bar.update(1)
    finally:
        bar.close()
    dims3, dims4 = ("alpha", "theta", "labels"), ("alpha", "theta", "labels", "stage")
    data = {k: (dims4, np.full((*shape, g.stages), np.nan)) for k in STAGE_FIELDS}
    data.update({k: (dims3, np.full(shape, np.nan)) for k in SCALAR_FIELDS})
    messages = np.full(shape, "", dtype=object)
    computed = np.zeros(shape[:2], dtype=np.int8)
    for (i, j, k), values in done.items():
        for name in STAGE_FIELDS:
            data[name][1][i, j, k] = values[name]
        for name in SCALAR_FIELDS:
            data[name][1][i, j, k] = values[name]
        messages[i, j, k] = values.get("message", "")
        computed[i, j] = 1
    ds = xr.Dataset(
        data,
        coords={"alpha": list(g.alpha_values), "theta": list(g.theta_values),
                "labels": list(LABELS), "stage": list(range(1, g.stages + 1))},
    )  # fmt: skip
    ds["message"] = (dims3, messages.astype(str))
    ds["computed"] = (("alpha", "theta"), computed)
    noiseless = [replica.bayes_error(GaussianMixture(a, g.rho, g.delta)) for a in g.alpha_values]
    ds["eg_bayes"] = ("alpha", noiseless)
    ds["eg_bayes"].attrs["long_name"] = (
        "Bayes error of the noiseless problem (θ = 0): a lower bound"
    )
    ds["gain"] = ds["eg"].isel(stage=0) - ds["eg"]
    ds["gain"].attrs["long_name"] = "ε_1 − ε_t: what stages 2… gain over the teacher"
    step = -ds["eg"].diff("stage")
    ds["stages_pay"] = (step > PAY).sum("stage").where(ds["converged"] == 1)
    ds["stages_pay"].attrs["long_name"] = f"number of stages t ≥ 2 with ε_(t−1) − ε_t > {PAY:g}"
    ds.attrs.update(
        rho=g.rho, delta=g.delta, stages=g.stages, chi=1.0, tempered="teacher",
        crossing_alpha=g.alpha, crossing_theta=g.theta, lam_range=list(LAM_RANGE),
        temperature_range=list(TEMPERATURE_RANGE), hard_temperature=HARD_TEMPERATURE, pay=PAY,
        fingerprint=_describe(g)[1],
    )  # fmt: skip
    return ds


# ----------------------------------------------------------------------------- the job


def run_selfdistil(args, grids: Grids | None = None) -> list[Path]:
    """Compute, save and plot the set; print one summary line per finding.

    ``args`` carries ``out``, ``jobs``, ``quiet``, ``wait``, ``map_size`` and ``stages`` as parsed
    by ``python -m kdtheory.phase_diagram``; ``grids`` overrides them.
    """
    from kdtheory import plotting

    g = grids or grids_of(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fix = "choose another --out, or delete selfdistil_chains.journal.jsonl there"
    with contextlib.ExitStack() as stack:
        journal = stack.enter_context(
            selfdistil_journal(out / "selfdistil_chains.journal.jsonl", g,
                               wait=getattr(args, "wait", False), fix=fix)
        )  # fmt: skip
        ds = compute(g, journal, jobs=args.jobs, progress=not args.quiet)
    f = findings(ds)
    files = plotting.write_figure_set(out, "selfdistil", ds, f, FIGURES, summary_lines)
    bad = ds["converged"].where(ds["computed"] == 1) == 0
    for i, j, k in zip(*np.nonzero(bad.values), strict=True):
        a, t, lab = (ds[d].values[x] for d, x in zip(bad.dims, (i, j, k), strict=True))
        print(f"warning: α = {a:g}, θ = {t:g}, {lab}: "
              f"{ds['message'].values[i, j, k] or 'not converged'} (left out of the figures)")  # fmt: skip
    return files


# ----------------------------------------------------------------------------- the findings


def _line(ds, name: str, along: str):
    """``ds[name]`` on the line along ``along`` (α at the crossing θ, or θ at the crossing α),
    NaN where the chain did not converge."""
    other = {"alpha": ("theta", ds.attrs["crossing_theta"]),
             "theta": ("alpha", ds.attrs["crossing_alpha"])}[along]  # fmt: skip
    one = ds.sel({other[0]: other[1]})
    keep = one["computed"] == 1
    return one[name].where(keep & (one["converged"] == 1), drop=False).where(keep, drop=True)


def findings(ds) -> dict:
    """The numbers the captions and summary lines state, read off the computed set."""
    ok = (ds["converged"] == 1) & (ds["computed"] == 1)
    soft, hard = ds.sel(labels="soft"), ds.sel(labels="hard")
    both = ok.sel(labels="soft") & ok.sel(labels="hard")
    f: dict = {"n": int(ok.sum()), "n_cells": int(ds["computed"].sum()) * len(LABELS)}
    lam_hi = LAM_RANGE[1]
    lam = ds["lam"].where(ok)
    f["lam_at_bound"] = float((lam >= 0.9 * lam_hi).sum()) / max(float(lam.notnull().sum()), 1.0)
    f["lam_min"] = float(lam.min())
    t = soft["temperature"].where(ok.sel(labels="soft")).isel(stage=slice(1, None))
    f["t_max"] = float(t.max()) if ds.sizes["stage"] > 1 else math.nan
    f["t_at_bound"] = (
        float((t <= 1.1 * TEMPERATURE_RANGE[0]).sum()) / max(float(t.notnull().sum()), 1.0)
        if ds.sizes["stage"] > 1
        else math.nan
    )
    diff = (soft["eg"] - hard["eg"]).where(both)
    f["soft_minus_hard"] = (float(diff.min()), float(diff.max()))
    gap = (ds["eg"] - ds["eg_bayes"]).where(ok)
    f["bayes_gap_min"] = float(gap.min())
    gain = ds["gain"].where(ok).isel(stage=-1)
    i = np.unravel_index(int(np.nanargmax(gain.values)), gain.shape)
    f["gain_max"] = float(gain.values[i])
    f["gain_where"] = {d: gain[d].values[k].item() for d, k in zip(gain.dims, i, strict=True)}
    f["pay"] = {
        lab: {
            along: [
                int(x) if np.isfinite(x) else -1
                for x in _line(ds.sel(labels=lab), "stages_pay", along).values
            ]
            for along in ("alpha", "theta")
        }
        for lab in LABELS
    }
    f["eg_last_vs_1"] = float((ds["eg"].isel(stage=-1) - ds["eg"].isel(stage=0)).where(ok).max())
    return f


def summary_lines(ds, f: dict) -> list[str]:
    """One line per finding, with its numbers."""
    k = ds.sizes["stage"]
    lines = [
        f"1. {f['n']} of {f['n_cells']} optimal chains converged; every stage's ε_t is above the "
        f"noiseless Bayes error (smallest gap {f['bayes_gap_min']:.2e}).",
        f"2. Optimal λ_t at the upper bound λ = {LAM_RANGE[1]:g} (the λ → ∞, mean-of-class limit) "
        f"for {100 * f['lam_at_bound']:.0f}% of the stages (smallest λ_t {f['lam_min']:.3g}).",
    ]
    if k > 1:
        lines += [
            f"3. Soft labels: optimal T_t at the lower bound T = {TEMPERATURE_RANGE[0]:g} (hard "
            f"labels) for {100 * f['t_at_bound']:.0f}% of the students (largest T_t "
            f"{f['t_max']:.3g}); ε_t(soft) − ε_t(hard) ∈ [{f['soft_minus_hard'][0]:.1e}, "
            f"{f['soft_minus_hard'][1]:.1e}].",
            f"4. Gain ε_1 − ε_{k}: up to {f['gain_max']:.4f} at α = {f['gain_where']['alpha']:g}, "
            f"θ = {f['gain_where']['theta']:g} ({f['gain_where']['labels']}); stages that pay "
            f"(> {PAY:g}), soft, along α: {f['pay']['soft']['alpha']}, along θ: "
            f"{f['pay']['soft']['theta']}.",
        ]
    return lines


# ----------------------------------------------------------------------------- the figures

_STYLE = {"soft": "-", "hard": "--"}
_MARK = {"soft": "o", "hard": "s"}


def _title(ds, along: str) -> str:
    fixed = (f"θ = {ds.attrs['crossing_theta']:g}" if along == "alpha"
             else f"α = {ds.attrs['crossing_alpha']:g}")  # fmt: skip
    return f"ρ = {ds.attrs['rho']:g}, Δ = {ds.attrs['delta']:g}, {fixed}"


def plot_errors(ax, ds, along: str) -> None:
    """Draw the optimal ε_t of every stage along α or θ (soft solid, hard dashed) and the
    noiseless Bayes error on ``ax``."""
    from kdtheory import plotting

    colours = plotting.plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for lab in LABELS:
        eg = _line(ds.sel(labels=lab), "eg", along)
        for t in ds["stage"].values:
            ax.plot(eg[along], eg.sel(stage=t), _STYLE[lab], marker=_MARK[lab], ms=4,
                    color=colours[t - 1], mfc="none" if lab == "hard" else None,
                    label=f"stage {t}, {lab}")  # fmt: skip
    bayes = _line(ds.sel(labels="soft"), "eg_bayes", along)
    x = bayes[along].values
    ax.plot(x, np.broadcast_to(bayes.values, x.shape), ":", color="k",
            label="Bayes error, noiseless")  # fmt: skip
    ax.set_xlabel(plotting.label(along) if along == "alpha" else r"flip probability $\theta$")
    ax.set_ylabel(r"optimal $\varepsilon_t$ (clean test labels)")
    ax.set_title(_title(ds, along), fontsize=9)
    ax.legend(fontsize=7, ncol=2)


def _table(ds, along: str) -> str:
    """ε_t per stage (soft) along a line, for the captions."""
    eg = _line(ds.sel(labels="soft"), "eg", along)
    name = "α" if along == "alpha" else "θ"
    return "; ".join(
        f"{name} = {v:g}: " + ", ".join(f"{e:.4f}" for e in eg.sel({along: v}).values)
        for v in eg[along].values
    )


def _figure_errors(along: str):
    def draw(ds, f: dict, path: Path) -> None:
        from kdtheory import plotting

        fig, ax = plotting.plt.subplots(figsize=(6.4, 4.4))
        plot_errors(ax, ds, along)
        line = "α" if along == "alpha" else "θ"
        plotting.caption(
            fig,
            f"Optimal self-distillation along {line}: the clean-label test error ε_t of stage t "
            "(1 = the L2 logistic teacher on the noisy labels) of the greedy optimal chain, λ̃ "
            "then (λ_t, T_t) chosen stage by stage (replica.optimise_chain); soft labels (T_t "
            f"optimised in [{TEMPERATURE_RANGE[0]:g}, {TEMPERATURE_RANGE[1]:g}], solid) and hard "
            f"labels (T_t = {HARD_TEMPERATURE:g}, dashed); dotted: the Bayes error of the noiseless "
            f"problem, a lower bound. Soft ε_t per stage: {_table(ds, along)}. Soft and hard differ "
            f"by {f['soft_minus_hard'][0]:.1e} … {f['soft_minus_hard'][1]:.1e} in ε_t.",
            width=100,
        )
        plotting.save(fig, path)

    return draw


def _figure_stages(ds, f: dict, path: Path) -> None:
    from kdtheory import plotting

    fig, axes = plotting.plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    colours = plotting.plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, along in zip(axes, ("alpha", "theta"), strict=True):
        for lab in LABELS:
            gain = _line(ds.sel(labels=lab), "gain", along)
            for t in ds["stage"].values[1:]:
                ax.plot(gain[along], gain.sel(stage=t), _STYLE[lab], marker=_MARK[lab], ms=4,
                        color=colours[t - 1], mfc="none" if lab == "hard" else None,
                        label=f"stage {t}, {lab}")  # fmt: skip
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xlabel(plotting.label(along) if along == "alpha" else r"flip probability $\theta$")
        ax.set_ylabel(r"gain $\varepsilon_1 - \varepsilon_t$")
        ax.set_title(_title(ds, along), fontsize=9)
        if ds.sizes["stage"] > 1:
            ax.legend(fontsize=7)
    pay = f["pay"]
    plotting.caption(
        fig,
        "How many stages pay: the gain ε_1 − ε_t of the optimal stages t ≥ 2 over the optimal "
        "teacher (soft solid, hard dashed). Number of stages whose error is lower than the stage "
        f"before by more than {PAY:g}, along α ({', '.join(f'{a:g}' for a in _line(ds, 'eg', 'alpha')['alpha'].values)}): "
        f"soft {pay['soft']['alpha']}, hard {pay['hard']['alpha']}; along θ "
        f"({', '.join(f'{t:g}' for t in _line(ds, 'eg', 'theta')['theta'].values)}): soft "
        f"{pay['soft']['theta']}, hard {pay['hard']['theta']} (−1: not converged). Largest gain "
        f"of the last stage {f['gain_max']:.4f} at α = {f['gain_where']['alpha']:g}, θ = "
        f"{f['gain_where']['theta']:g}.",
        width=150,
    )
    plotting.save(fig, path)


def _figure_metaparameters(ds, f: dict, path: Path) -> None:
    from kdtheory import plotting

    fig, axes = plotting.plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    colours = plotting.plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for lab in LABELS:
        lam = _line(ds.sel(labels=lab), "lam", "alpha")
        for t in ds["stage"].values:
            axes[0].plot(lam["alpha"], lam.sel(stage=t), _STYLE[lab], marker=_MARK[lab], ms=4,
                         color=colours[t - 1], mfc="none" if lab == "hard" else None,
                         label=f"λ_{t}, {lab}" if t > 1 else f"λ̃ (stage 1), {lab}")  # fmt: skip
    temp = _line(ds.sel(labels="soft"), "temperature", "alpha")
    for t in ds["stage"].values[1:]:
        axes[1].plot(temp["alpha"], temp.sel(stage=t), "-o", ms=4, color=colours[t - 1],
                     label=f"T_{t}, soft")  # fmt: skip
    for ax, bound, name in ((axes[0], LAM_RANGE, r"optimal $\lambda_t$"),
                            (axes[1], TEMPERATURE_RANGE, r"optimal $T_t$ (soft labels)")):  # fmt: skip
        for b in bound:
            ax.axhline(b, color="0.6", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_ylim(bound[0] / 2, bound[1] * 2)
        ax.set_xlabel(plotting.label("alpha"))
        ax.set_ylabel(name)
        ax.set_title(_title(ds, "alpha"), fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    plotting.caption(
        fig,
        "The optimal metaparameters of the greedy chain along α: the ridge λ_t of every stage "
        "(λ̃ for stage 1) and the soft-label temperature T_t of the students; dotted: the search "
        f"box λ ∈ [{LAM_RANGE[0]:g}, {LAM_RANGE[1]:g}], T ∈ [{TEMPERATURE_RANGE[0]:g}, "
        f"{TEMPERATURE_RANGE[1]:g}]. {_bounds_text(ds)} Where λ_t is at the upper bound the "
        "optimum is the λ → ∞ limit, in which a stage is the mean of its (pseudo-)labelled inputs "
        "(Hebbian) and the bound stands in for it; where T_t is at the lower bound the optimal "
        "soft labels are hard labels.",
        width=150,
    )
    plotting.save(fig, path)


def _bounds_text(ds) -> str:
    """Per stage along α: how many optimal λ_t (soft, hard) and soft T_t lie on the search box."""
    parts = []
    for t in ds["stage"].values:
        for lab in LABELS:
            lam = _line(ds.sel(labels=lab), "lam", "alpha").sel(stage=t).values
            lam = lam[np.isfinite(lam)]
            hi, lo = int((lam >= 0.9 * LAM_RANGE[1]).sum()), int((lam <= 1.1 * LAM_RANGE[0]).sum())
            name = "λ̃" if t == 1 else f"λ_{t} ({lab})"
            inner = lam[(lam < 0.9 * LAM_RANGE[1]) & (lam > 1.1 * LAM_RANGE[0])]
            rest = f", inside {inner.min():.3g}…{inner.max():.3g}" if inner.size else ""
            parts.append(f"{name} at the upper bound at {hi} and the lower at {lo} of "
                         f"{lam.size} α{rest}")  # fmt: skip
            if t == 1:
                break  # the teacher's search is the same for soft and hard
        if t > 1:
            temp = _line(ds.sel(labels="soft"), "temperature", "alpha").sel(stage=t).values
            temp = temp[np.isfinite(temp)]
            low = int((temp <= 1.1 * TEMPERATURE_RANGE[0]).sum())
            parts.append(f"T_{t} (soft) at the lower bound at {low} of {temp.size} α"
                         + (f" (largest {temp.max():.3g})" if temp.size else ""))  # fmt: skip
    return "Along α: " + "; ".join(parts) + "."


FIGURES = {
    "selfdistil_1_alpha": _figure_errors("alpha"),
    "selfdistil_2_theta": _figure_errors("theta"),
    "selfdistil_3_stages": _figure_stages,
    "selfdistil_4_metaparameters": _figure_metaparameters,
}
