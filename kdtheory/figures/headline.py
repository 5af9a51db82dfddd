r"""The main job's default figures: the four findings of Saglietti & Zdeborová and the KD gain map.

Saglietti & Zdeborová, *Solvable model for inheriting the regularization through knowledge
distillation*, MSML 2022 (PMLR 145), told with the replica theory of this package (the model and its
equations: docs/theory.md) on an unbalanced mixture (α, ρ, Δ) = (2, 0.3, 1), temperature T = 1:

1. *Inheritance* (``headline_1_inheritance``): at fixed student ridge λ and χ = 1, the student's
   error ε_g follows its logistic teacher's ridge λ̃ and is smallest near the teacher's own optimum
   λ̃* = argmin ε̃_g ("a better teacher makes a better student"); a mixed student (χ = 0.5) prefers
   an over-regularised teacher.
2. *The limit* (``headline_2_limit``): the best KD student of a logistic teacher, min over
   (λ̃, χ > 0, λ) of ε_g, against the best L2 ("ridge") logistic student, min over λ of ε_g(χ = 0),
   for several ρ and η = 1, 0.5.  At ρ = ½ both reach the Bayes error (ridge as λ → ∞).
3. *The Bayes-optimal teacher* (``headline_3_bayes_teacher``): how much of the gap between the best
   student without KD and the Bayes error of the student's ηN features its KD student closes, for a
   full (η = 1) and a sparse (η = 0.5) student.
4. *Double descent* (``headline_4_double_descent``): ε_g(α) of a sparse KD student (η = 0.5) peaks
   at its interpolation threshold α = η when λ is small; its own ridge removes the peak; without KD
   the error has a plateau up to the separability threshold α_c(η) of its ηN features.
5. *KD gain map* (``headline_5_gain_map``): ε_g(χ = 0) − ε_g(χ = 1) of the Bayes teacher's sparse
   student over (α, λ).

:func:`run_headline` computes them (journalled sweeps: an interrupted run resumes), writes
``headline_<k>_<name>.nc`` and ``.png`` atomically into ``args.out`` and prints one summary line per
finding; :func:`headline_sweeps` builds the grids (``python -m kdtheory.phase_diagram`` validates
them before it writes anything).  :class:`Grids` sets their resolution.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kdtheory.problem import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from kdtheory.sweep import Axis, Optimise, Sweep, map_points

__all__ = [
    "ETAS",
    "KD_BOUNDS",
    "STORY",
    "STUDENT_LAMS",
    "Grids",
    "best_kd_student",
    "best_ridge_student",
    "headline_sweeps",
    "run_headline",
    "run_limit",
    "teacher_optimum",
]

#: the mixture of the story (unbalanced: the L2 student is not Bayes-optimal there)
STORY = GaussianMixture(alpha=2.0, rho=0.3, delta=1.0)
#: a full and a sparse student
ETAS = (1.0, 0.5)
#: fixed student ridges of the inheritance curves
STUDENT_LAMS = (1e-3, 0.01, 0.03)
#: search box of the best KD student: λ̃, χ (> 0) and λ
KD_BOUNDS = {"lam_t": (1e-3, 1e2), "chi": (0.01, 1.0), "lam": (1e-4, 1e4)}
#: search range of the best ridge student's λ (ρ = ½: the optimum is λ → ∞)
RIDGE = Optimise("lam", 1e-4, 1e4)


@dataclass(frozen=True)
class Grids:
    """Resolution of the headline's grids (the defaults take about a minute on 2 cores)."""

    n_lam_t: int = 21  #: λ̃ ∈ [0.01, 10], log-spaced (inheritance)
    n_lam: int = 26  #: λ ∈ [1e-4, 10], log-spaced (Bayes teacher's student; 26 holds λ = 1e-3)
    alpha_step: float = 0.1  #: α ∈ [0.1, 3] (double descent), halved on [0.3, 0.8] around α = η
    n_map: int = 20  #: (α, λ) map, n_map × n_map
    rhos: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.45, 0.48, 0.5)  #: the limit's mixtures
    limit_etas: tuple[float, ...] = ETAS  #: the limit's students (η = 1 must be among them)

    def __post_init__(self):
        for name in ("n_lam_t", "n_lam", "n_map"):
            if getattr(self, name) < 3:
                raise ValueError(f"Grids.{name} must be ≥ 3, got {getattr(self, name)}")
        if (
            not 0 < self.alpha_step <= 0.4
            or abs(0.4 / self.alpha_step - round(0.4 / self.alpha_step)) > 1e-9
        ):
            raise ValueError(
                f"Grids.alpha_step must divide 0.4 (so the α grid holds α = η = 0.5), got {self.alpha_step}"
            )
        if 1.0 not in self.limit_etas or not all(0 < e <= 1 for e in self.limit_etas):
            raise ValueError(
                f"Grids.limit_etas must hold 1 and values in (0, 1], got {self.limit_etas}"
            )
        if not self.rhos or not all(0 < r < 1 for r in self.rhos):
            raise ValueError(f"Grids.rhos must be values in (0, 1), got {self.rhos}")


# ----------------------------------------------------------------------------- what is computed


def headline_sweeps(args, grids: Grids = Grids()) -> dict[str, Sweep]:
    """The sweeps behind figures 1, 3, 4 and 5 (figure 2 is :func:`run_limit`), keyed by journal stem."""
    tol = args.tol
    lam_t = Axis.parse(f"lam_t:0.01:10:{grids.n_lam_t}:log")
    sweeps = {}
    for eta in ETAS:
        # 1. the student's error along its teacher's λ̃ at fixed λ; χ = 1 and 0.5 (mixed)
        sweeps[f"headline_1_inheritance_eta{eta:g}"] = Sweep(
            Problem(STORY, LogisticTeacher(0.1), Student(STUDENT_LAMS[0], 1.0, 1.0, eta)),
            (lam_t, Axis("lam", STUDENT_LAMS)),
            variants={"mixed": {"chi": 0.5}},
            tol=tol,
        )
    bayes = Problem(STORY, BayesTeacher(), Student(0.01, 1.0, 1.0, 1.0))
    etas = Axis("eta", ETAS)
    # 3. the Bayes teacher's student (χ = 1) and the student without KD, along λ and at the best λ
    sweeps["headline_3_bayes_teacher"] = Sweep(
        bayes,
        (Axis.parse(f"lam:0.0001:10:{grids.n_lam}:log"), etas),
        {"nokd": {"chi": 0.0}},
        tol=tol,
    )
    sweeps["headline_3_bayes_teacher_best"] = Sweep(
        bayes, (etas,), {"nokd": {"chi": 0.0}}, Optimise("lam", 1e-4, 10.0), tol
    )
    # 4. ε_g(α) of the sparse student, small and moderate λ, with and without KD
    step = grids.alpha_step
    coarse = np.arange(0.1, 3.0 + 1e-9, step)
    fine = np.arange(0.3, 0.8 + 1e-9, step / 2)  # resolves the peak at α = η = 0.5
    alphas = tuple(float(a) for a in np.unique(np.round(np.concatenate([coarse, fine]), 9)))
    sweeps["headline_4_double_descent"] = Sweep(
        Problem(STORY, LogisticTeacher(0.1), Student(1e-4, 1.0, 1.0, 0.5)),
        (Axis("alpha", alphas), Axis("lam", (1e-4, 0.01))),
        {"nokd": {"chi": 0.0}},
        tol=tol,
    )
    # 5. KD gain of the Bayes teacher's sparse student over (λ, α)
    sweeps["headline_5_gain_map"] = Sweep(
        Problem(STORY, BayesTeacher(), Student(0.05, 1.0, 1.0, 0.5)),
        (Axis.parse(f"lam:0.001:10:{grids.n_map}:log"), Axis.parse(f"alpha:0.25:5:{grids.n_map}")),
        {"nokd": {"chi": 0.0}},
        tol=tol,
    )
    return sweeps


def teacher_optimum(data: GaussianMixture, *, tol: float = 1e-10) -> tuple[float, float]:
    """λ̃* = argmin over λ̃ ∈ [1e-3, 10] of the logistic teacher's ε̃_g, and ε̃_g(λ̃*) (bounded Brent
    search in log λ̃, to 1e-4 in log λ̃)."""
    from scipy.optimize import minimize_scalar

    import replica

    def eg(x):
        p = Problem(data, LogisticTeacher(math.exp(x)), Student(1.0))
        return replica.solve_teacher(p, tol=tol, strict=True).teacher.eg

    res = minimize_scalar(
        eg, bounds=(math.log(1e-3), math.log(10.0)), method="bounded", options={"xatol": 1e-4}
    )
    return math.exp(res.x), float(res.fun)


def best_ridge_student(data: GaussianMixture, eta: float, *, tol: float = 1e-10) -> dict:
    """min over λ ∈ [1e-4, 1e4] of the L2 logistic student's ε_g (χ = 0), with its λ."""
    from kdtheory.sweep import _solve_optimised

    p = Problem(data, BayesTeacher(), Student(1.0, 0.0, 1.0, eta))  # χ = 0: the teacher is unused
    sol, lam = _solve_optimised(p, RIDGE, None, tol)
    return {
        "eg_ridge": float(sol.student.eg) if sol.converged else math.nan,
        "lam_ridge": lam,
        "converged_ridge": int(sol.converged),
    }


def best_kd_student(
    data: GaussianMixture,
    eta: float,
    *,
    temperature: float = 1.0,
    start: float = 0.2,
    tol: float = 1e-10,
) -> dict:
    """min over (λ̃, χ, λ) in :data:`KD_BOUNDS` of the KD student's ε_g with a logistic teacher.

    Nelder–Mead in (log λ̃, χ, log λ) from (0.4 s, 1, 0.5 s), s = ``start`` (the best ridge λ is a
    good s), with steps (1, −0.3, −1), to 1e-2 in each coordinate and 1e-7 in ε_g; every solve is warm-started from the last converged
    one, an unconverged point counts as ε_g = 1.  Returns ε_g, the argmin, the teacher's ε̃_g there
    and the number of solves.
    """
    from scipy.optimize import minimize

    import replica

    bounds = [
        (math.log(a), math.log(b)) if k != "chi" else (a, b) for k, (a, b) in KD_BOUNDS.items()
    ]
    lo, hi = np.array(bounds).T
    state = {"init": None, "n": 0, "best": None}

    def eg(x):
        lam_t, chi, lam = math.exp(x[0]), float(x[1]), math.exp(x[2])
        p = Problem(data, LogisticTeacher(lam_t), Student(lam, chi, temperature, eta))
        sol = replica.solve(p, init=state["init"], tol=tol)
        state["n"] += 1
        if not sol.converged:
            return 1.0
        state["init"] = sol
        if state["best"] is None or sol.student.eg < state["best"].student.eg:
            state["best"] = sol
        return sol.student.eg

    x0 = np.clip([math.log(0.4 * start), 1.0, math.log(0.5 * start)], lo, hi)
    simplex = np.clip(x0 + np.vstack([np.zeros(3), np.diag([1.0, -0.3, -1.0])]), lo, hi)
    minimize(
        eg,
        x0,
        method="Nelder-Mead",
        bounds=bounds,
        options={"initial_simplex": simplex, "xatol": 1e-2, "fatol": 1e-7, "maxfev": 600},
    )
    best = state["best"]
    if best is None:
        return {
            "eg_kd": math.nan,
            "lam_t_kd": math.nan,
            "chi_kd": math.nan,
            "lam_kd": math.nan,
            "eg_teacher_kd": math.nan,
            "converged_kd": 0,
            "solves_kd": state["n"],
        }
    st = best.problem.student
    return {
        "eg_kd": float(best.student.eg),
        "lam_t_kd": best.problem.teacher.lam,
        "chi_kd": st.chi,
        "lam_kd": st.lam,
        "eg_teacher_kd": float(best.teacher.eg),
        "converged_kd": 1,
        "solves_kd": state["n"],
    }


def _limit_point(rho: float, eta: float, tol: float) -> dict:
    import replica

    data = replace(STORY, rho=rho)
    ridge = best_ridge_student(data, eta, tol=tol)
    start = min(max(ridge["lam_ridge"], 1e-3), 1e3) if math.isfinite(ridge["lam_ridge"]) else 0.1
    kd = best_kd_student(data, eta, start=start, tol=tol)
    return {**ridge, **kd, "eg_bayes": replica.bayes_error(data, eta)}


#: fields of one point of the limit figure (:func:`_limit_point`)
LIMIT_FIELDS = ("eg_ridge", "lam_ridge", "converged_ridge", "eg_kd", "lam_t_kd", "chi_kd", "lam_kd",
                "eg_teacher_kd", "converged_kd", "solves_kd", "eg_bayes")  # fmt: skip


def _limit_describe(rhos, etas, tol: float) -> tuple[dict, str]:
    """The header of the limit's journal and its fingerprint."""
    describe = {
        "limit": {
            "alpha": STORY.alpha,
            "delta": STORY.delta,
            "rhos": list(rhos),
            "etas": list(etas),
            "bounds": KD_BOUNDS,
            "ridge": [RIDGE.lo, RIDGE.hi],
            "tol": tol,
        }
    }
    return describe, hashlib.sha256(json.dumps(describe, sort_keys=True).encode()).hexdigest()[:16]


def limit_journal(path, rhos, etas, *, tol: float = 1e-10, wait: bool = False,
                  fix: str = "choose another --out"):  # fmt: skip
    """The locked journal of :func:`run_limit`; a record is valid if its index lies on the
    (ρ, η) grid and its values are exactly :data:`LIMIT_FIELDS` (plus an optional ``message``)
    with numbers, ``converged_*`` in {0, 1} and ``solves_kd`` an int ≥ 0."""
    from kdtheory.journal import Journal
    from kdtheory.sweep import _check_index, _is_number

    rhos, etas = tuple(float(r) for r in rhos), tuple(float(e) for e in etas)
    describe, fingerprint = _limit_describe(rhos, etas, tol)

    def validate(record: dict) -> None:
        _check_index(record["index"], (len(rhos), len(etas)))
        values = record["values"]
        if not set(LIMIT_FIELDS) <= set(values) <= {*LIMIT_FIELDS, "message"}:
            raise ValueError("not the fields of the limit figure")
        if not all(_is_number(values[k]) for k in LIMIT_FIELDS):
            raise ValueError("the fields of the limit figure are numbers")
        if not isinstance(values.get("message", ""), str):
            raise ValueError("message must be a string")
        if values["converged_ridge"] not in (0, 1) or values["converged_kd"] not in (0, 1):
            raise ValueError("converged_* must be 0 or 1")
        if not (isinstance(values["solves_kd"], int) and values["solves_kd"] >= 0):
            raise ValueError("solves_kd must be an int ≥ 0")
        _check_limit_values(values)

    return Journal(path, fingerprint, describe, validate=validate, lock=True, wait=wait, fix=fix)


def _check_limit_values(values: dict) -> None:
    """Each optimum's values in their ranges (:func:`kdtheory.journal.check_values`), finite where
    it converged; the Bayes error always finite."""
    from kdtheory.journal import check_values, quantity_range

    groups = {
        "converged_ridge": ("eg_ridge", "lam_ridge"),
        "converged_kd": ("eg_kd", "lam_t_kd", "chi_kd", "lam_kd", "eg_teacher_kd"),
    }
    for flag, names in groups.items():
        check_values(values, {k: quantity_range(k) for k in names}, ok=values[flag] == 1)
    check_values(values, {"eg_bayes": quantity_range("eg_bayes")}, ok=True)


def run_limit(
    rhos,
    etas=ETAS,
    *,
    tol: float = 1e-10,
    journal_path=None,
    jobs: int = 1,
    progress: bool = True,
):
    """Best KD student (:func:`best_kd_student`) and best ridge student (:func:`best_ridge_student`)
    at (α, Δ) = (2, 1) for every ρ in ``rhos`` and η in ``etas``, with ``gain = eg_ridge − eg_kd``
    and the Bayes error of the ηN features; journalled like ``run_sweep`` (a rerun resumes)."""
    import xarray as xr
    from tqdm import tqdm

    from kdtheory.journal import Journal

    rhos, etas = tuple(float(r) for r in rhos), tuple(float(e) for e in etas)
    if journal_path is None or isinstance(journal_path, Journal):
        journal = journal_path
    else:
        journal = limit_journal(journal_path, rhos, etas, tol=tol)
    fingerprint = _limit_describe(rhos, etas, tol)[1]
    done = dict(journal.done) if journal else {}
    todo = [(i, j) for i in range(len(rhos)) for j in range(len(etas)) if (i, j) not in done]
    bar = tqdm(
        total=len(rhos) * len(etas),
        initial=len(done),
        desc="limit",
        unit="pt",
        disable=not progress,
        leave=False,
    )

    def task(index):
        try:
            return index, _limit_point(rhos[index[0]], etas[index[1]], tol)
        except Exception as exc:  # one failed point does not end the figure
            values = dict.fromkeys(LIMIT_FIELDS, math.nan)
            values.update(converged_ridge=0, converged_kd=0, solves_kd=0)
            return index, {**values, "message": f"{type(exc).__name__}: {exc}"[:500]}

    try:
        results = map_points(task, todo, jobs)
        for index, values in results:
            if journal:
                journal.append([(index, values)])
            done[index] = values
            bar.update(1)
    finally:
        bar.close()
        if journal is not None and journal is not journal_path:  # opened here: release its lock
            journal.close()
    data = {n: (("rho", "eta"), np.full((len(rhos), len(etas)), np.nan)) for n in LIMIT_FIELDS}
    for (i, j), values in done.items():
        for n in LIMIT_FIELDS:
            data[n][1][i, j] = values[n]
    ds = xr.Dataset(data, coords={"rho": list(rhos), "eta": list(etas)})
    ds["gain"] = ds["eg_ridge"] - ds["eg_kd"]
    ds["gain"].attrs["long_name"] = "best ridge student's ε_g minus best KD student's ε_g"
    ds.attrs.update(
        alpha=STORY.alpha, delta=STORY.delta, temperature=1.0, tol=tol, fingerprint=fingerprint
    )
    return ds


# ----------------------------------------------------------------------------- the job


def run_headline(args, grids: Grids = Grids()) -> list[Path]:
    """Compute, save and plot the five figures; print one summary line per finding.

    ``args`` carries ``out`` (folder), ``jobs``, ``scheduler``, ``tol``, ``quiet``, ``simulate``
    (N, or None) and ``seeds``, as parsed by ``python -m kdtheory.phase_diagram``.
    """
    import xarray as xr

    from kdtheory.journal import write_atomic
    from kdtheory.sweep import failure_summary, open_journals, run_sweep, simulate_points

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sweeps = headline_sweeps(args, grids)
    wait = getattr(args, "wait", False)
    fix = "choose another --out, or delete the headline_*.journal.jsonl files there"
    with contextlib.ExitStack() as stack:  # every journal opened (and locked) before any work
        journals = open_journals(stack, sweeps, out, wait=wait, fix=fix)
        limit_j = stack.enter_context(
            limit_journal(
                out / "headline_2_limit.journal.jsonl",
                grids.rhos,
                grids.limit_etas,
                tol=args.tol,
                wait=wait,
                fix=fix,
            )
        )
        res = {
            stem: run_sweep(
                sweep,
                journals[stem],
                jobs=args.jobs,
                scheduler=args.scheduler,
                progress=not args.quiet,
                description=stem.removeprefix("headline_"),
            )
            for stem, sweep in sweeps.items()
        }
        limit = run_limit(
            grids.rhos,
            grids.limit_etas,
            tol=args.tol,
            journal_path=limit_j,
            jobs=args.jobs,
            progress=not args.quiet,
        )
    lam_t_star, eg_t_star = teacher_optimum(STORY, tol=args.tol)

    inh = xr.concat(
        [res[f"headline_1_inheritance_eta{eta:g}"] for eta in ETAS], dim="eta", combine_attrs="drop"
    ).assign_coords(eta=list(ETAS))
    inh.attrs.update(lam_t_star=lam_t_star, eg_teacher_star=eg_t_star, tol=args.tol)
    if args.simulate:
        stem = f"headline_1_inheritance_eta{ETAS[0]:g}"
        sub = Sweep(sweeps[stem].problem((0, 1)), (sweeps[stem].axes[0],), tol=args.tol)
        sim = simulate_points(
            sub,
            inh.sel(eta=ETAS[0], lam=STUDENT_LAMS[1], drop=True),
            n=args.simulate,
            seeds=args.seeds,
            jobs=args.jobs,
            journal_path=out / f"{stem}.sim.journal.jsonl",
            progress=not args.quiet,
        )
        for name in ("eg_sim", "eg_sim_sem", "sim_status", "sim_message"):
            if name in sim:
                inh[name] = sim[name]
        inh.attrs.update(
            sim_n=args.simulate, sim_seeds=args.seeds, sim_eta=ETAS[0], sim_lam=STUDENT_LAMS[1]
        )
    bayes = xr.merge(
        [
            res["headline_3_bayes_teacher"],
            res["headline_3_bayes_teacher_best"].rename(
                {v: f"{v}_best" for v in res["headline_3_bayes_teacher_best"].data_vars}
            ),
        ],
        combine_attrs="drop",
    )
    datasets = {
        "headline_1_inheritance": inh,
        "headline_2_limit": limit,
        "headline_3_bayes_teacher": bayes,
        "headline_4_double_descent": res["headline_4_double_descent"],
        "headline_5_gain_map": res["headline_5_gain_map"],
    }
    files = []
    for stem, ds in datasets.items():
        path = out / f"{stem}.nc"
        write_atomic(path, lambda tmp, ds=ds: ds.to_netcdf(tmp, engine="scipy"))
        files.append(path)
    f = findings(datasets)
    for stem, draw in zip(
        datasets,
        (
            _figure_inheritance,
            _figure_limit,
            _figure_bayes_teacher,
            _figure_double_descent,
            _figure_gain_map,
        ),
        strict=True,
    ):
        path = out / f"{stem}.png"
        draw(datasets[stem], f, path)
        files.append(path)
    print(f"wrote {', '.join(str(p) for p in files)}")
    print("\n".join(summary_lines(f)))
    failures = [
        f"{stem.removeprefix('headline_')}: {line}"
        for stem, ds in res.items()
        for line in failure_summary(ds)
    ]
    n_limit = int(
        (limit["converged_kd"].values != 1).sum() + (limit["converged_ridge"].values != 1).sum()
    )
    if n_limit:
        failures.append(f"limit: {n_limit} optimisations found no converged solve")
    for line in failures:
        print(f"warning: {line} (marked in the figures and the files)")
    return files


# ----------------------------------------------------------------------------- the findings


def _argmin(x, y) -> tuple[float, float]:
    y = np.asarray(y, float)
    if not np.isfinite(y).any():
        return math.nan, math.nan
    k = int(np.nanargmin(y))
    return float(np.asarray(x)[k]), float(y[k])


def findings(datasets: dict) -> dict:
    """The numbers each caption and summary line states, read off the computed data."""
    import replica

    inh, limit, bayes = (
        datasets[k]
        for k in ("headline_1_inheritance", "headline_2_limit", "headline_3_bayes_teacher")
    )
    dd, gain = datasets["headline_4_double_descent"], datasets["headline_5_gain_map"]
    f = {"lam_t_star": inh.attrs["lam_t_star"], "eg_teacher_star": inh.attrs["eg_teacher_star"]}
    lt = inh["lam_t"].values
    # 1. argmin over λ̃ of each student's curve
    f["argmin"] = {
        (eta, lam, chi): _argmin(lt, inh[f"eg{suffix}"].sel(eta=eta, lam=lam).values)
        for eta in inh["eta"].values.tolist()
        for lam in inh["lam"].values.tolist()
        for chi, suffix in ((1.0, ""), (0.5, "_mixed"))
    }
    # the student without KD (it does not see the teacher) at the smallest λ of figure 1
    small = float(inh["lam"].values.min())
    f["nokd_small_lam"] = (
        small,
        {
            eta: float(bayes["eg_nokd"].sel(eta=eta).sel(lam=small, method="nearest"))
            for eta in bayes["eta"].values.tolist()
        },
    )
    # 2. KD against ridge
    f["limit"] = {
        (rho, eta): {k: float(limit[k].sel(rho=rho, eta=eta)) for k in limit.data_vars}
        for rho in limit["rho"].values.tolist()
        for eta in limit["eta"].values.tolist()
    }
    # 3. gap closed by the Bayes teacher's student
    f["bayes"] = {}
    for eta in bayes["eta"].values.tolist():
        kd, plain = float(bayes["eg_best"].sel(eta=eta)), float(bayes["eg_nokd_best"].sel(eta=eta))
        bound = replica.bayes_error(STORY, eta)
        f["bayes"][eta] = {
            "kd": kd,
            "nokd": plain,
            "bayes": bound,
            "lam_kd": float(bayes["lam_opt_best"].sel(eta=eta)),
            "lam_nokd": float(bayes["lam_opt_nokd_best"].sel(eta=eta)),
            "closed": (plain - kd) / (plain - bound),
        }
    # 4. double descent: the peak of ε_g(α) at small λ, the same α at larger λ, the no-KD plateau
    alpha = dd["alpha"].values
    eta = json.loads(dd.attrs["fixed"])["eta"]
    small, large = dd["lam"].values.min(), dd["lam"].values.max()
    eg_small = dd["eg"].sel(lam=small).values
    k = int(np.nanargmax(eg_small))
    peak_alpha, peak = float(alpha[k]), float(eg_small[k])
    at_eta = int(np.argmin(np.abs(alpha - eta)))
    nokd = dd["eg_nokd"].sel(lam=small).values
    plateau = np.abs(nokd - nokd[at_eta]) < 0.005
    end = at_eta
    while end + 1 < len(alpha) and plateau[end + 1]:
        end += 1
    f["dd"] = {
        "eta": eta,
        "lam_small": float(small),
        "lam_large": float(large),
        "peak_alpha": float(peak_alpha),
        "peak": float(peak),
        "step": float(alpha[1] - alpha[0]),
        "at_eta_large": float(dd["eg"].sel(lam=large).values[at_eta]),
        "max_large": float(np.nanmax(dd["eg"].sel(lam=large).values)),
        "plateau": float(nokd[at_eta]),
        "plateau_end": float(alpha[end]),
        "alpha_c": replica.separability_threshold(STORY.rho, STORY.delta, eta),
    }
    # 5. the gain map
    g = np.where(
        gain["converged"].values * gain["converged_nokd"].values == 1, gain["gain"].values, np.nan
    )
    i, j = np.unravel_index(np.nanargmax(g), g.shape)
    f["map"] = {
        "positive": float(np.nanmean(g > 0)),
        "max": float(g[i, j]),
        "alpha": float(gain["alpha"].values[j]),
        "lam": float(gain["lam"].values[i]),
        "min": float(np.nanmin(g)),
    }
    return f


def _range(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2g}" if f"{lo:.2g}" == f"{hi:.2g}" else f"{lo:.2g}–{hi:.2g}"


def _inheritance_numbers(f: dict) -> dict:
    a = f["argmin"]
    kd = [v[0] for k, v in a.items() if k[2] == 1.0]
    mixed = [v[0] for k, v in a.items() if k[2] == 0.5]
    factor = max(max(x / f["lam_t_star"], f["lam_t_star"] / x) for x in kd)
    return {"kd": _range(kd), "mixed": _range(mixed), "factor": factor}


#: the first summary line: what the symbols of the findings' lines mean
SYMBOLS_LINE = (
    "Symbols: ρ = P(y = +1) (the clusters' balance), α = M/N (samples per dimension), λ̃ the "
    "teacher's ridge (λ̃* its best value, ε̃_g the teacher's test error there), λ the student's "
    "ridge, χ the weight of the teacher's soft labels in the student's loss (χ = 0: no KD), η the "
    "fraction of the N weights the student trains, ε_g the student's test error."
)


def summary_lines(f: dict) -> list[str]:
    """What the symbols mean (:data:`SYMBOLS_LINE`), then one line per finding, with its numbers."""
    inh = _inheritance_numbers(f)
    lams = sorted({k[1] for k in f["argmin"]})
    etas = sorted({k[0] for k in f["argmin"]}, reverse=True)
    lim, rhos = f["limit"], sorted({k[0] for k in f["limit"]})
    r0 = 0.3 if (0.3, 1.0) in lim else rhos[0]
    p = lim[(r0, 1.0)]
    half = lim.get((0.5, 1.0))
    b, dd, m = f["bayes"], f["dd"], f["map"]
    gains = "; ".join(
        f"η = {eta:g}: " + ", ".join(f"{lim[(r, eta)]['gain']:+.4f}" for r in rhos)
        for eta in sorted({k[1] for k in lim}, reverse=True)
    )
    return [
        SYMBOLS_LINE,
        f"1. Inheritance: the logistic teacher is best at λ̃* = {f['lam_t_star']:.3g} "
        f"(ε̃_g = {f['eg_teacher_star']:.4f}); KD students (χ = 1, λ ∈ {{{', '.join(f'{x:g}' for x in lams)}}}, "
        f"η ∈ {{{', '.join(f'{x:g}' for x in etas)}}}) are best with a teacher at λ̃ = {inh['kd']}, within a "
        f"factor {inh['factor']:.2g} of λ̃*; mixed students (χ = 0.5) prefer an over-regularised teacher, "
        f"λ̃ = {inh['mixed']}.",
        f"2. The limit: best KD student of a logistic teacher vs best ridge student at ρ = {r0:g}, "
        f"η = 1: {p['eg_kd']:.4f} (λ̃ = {p['lam_t_kd']:.2g}, χ = {p['chi_kd']:.2g}, λ = {p['lam_kd']:.2g}) vs "
        f"{p['eg_ridge']:.4f} (λ = {p['lam_ridge']:.2g}): KD better by {p['gain']:.4f}; gain (ridge − KD) "
        f"for ρ = {', '.join(f'{r:g}' for r in rhos)}: {gains}"
        + (
            f"; at ρ = 0.5 both reach the Bayes error ({half['eg_kd']:.4f}, {half['eg_ridge']:.4f} vs "
            f"{half['eg_bayes']:.4f})."
            if half
            else "."
        ),
        "3. Bayes-optimal teacher: "
        + "; ".join(
            f"η = {eta:g}: best student without KD {v['nokd']:.4f} → KD {v['kd']:.4f} vs Bayes error "
            f"{v['bayes']:.4f}{' on the ηN features' if eta < 1 else ''}: closes {100 * v['closed']:.0f}% of the gap"
            for eta, v in sorted(b.items(), reverse=True)
        )
        + ".",
        f"4. Double descent (η = {dd['eta']:g}, χ = 1): at λ = {dd['lam_small']:g} ε_g peaks at "
        f"{dd['peak']:.3f} at α = {dd['peak_alpha']:.3g} (interpolation threshold α = η); at λ = "
        f"{dd['lam_large']:g} it is {dd['at_eta_large']:.3f} there (max {dd['max_large']:.3f}): no peak; "
        f"without KD (χ = 0, λ = {dd['lam_small']:g}) a plateau at {dd['plateau']:.3f} up to α ≈ "
        f"{dd['plateau_end']:.3g}, the separability threshold of the ηN features being α_c = {dd['alpha_c']:.3g}.",
        f"5. KD gain map (Bayes teacher, η = 0.5): gain > 0 on {100 * m['positive']:.0f}% of the (α, λ) "
        f"map, largest {m['max']:.4f} at α = {m['alpha']:.2f}, λ = {m['lam']:.3g}; lowest {m['min']:.4f}.",
    ]


# ----------------------------------------------------------------------------- the figures


def _figure_inheritance(inh, f: dict, path: Path) -> None:
    from kdtheory import plotting

    fig, axes = plotting.plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    lt, star = inh["lam_t"].values, f["lam_t_star"]
    for ax, eta in zip(axes, inh["eta"].values.tolist(), strict=True):
        ds = inh.sel(eta=eta)
        teacher = ds["eg_teacher"].isel(lam=0)
        plotting.curve(
            ax,
            lt,
            teacher.values,
            ds["converged"].isel(lam=0).values,
            style="-",
            color="0.55",
            lw=2.5,
            label=r"teacher $\tilde\varepsilon_g(\tilde\lambda)$",
        )
        ax.axvline(
            star,
            color="0.55",
            ls=":",
            lw=1.2,
            label=rf"teacher's optimum $\tilde\lambda^* = {star:.2g}$",
        )
        for c, lam in enumerate(ds["lam"].values.tolist()):
            one = ds.sel(lam=lam)
            for chi, suffix, style in ((1.0, "", "-"), (0.5, "_mixed", "--")):
                plotting.curve(
                    ax,
                    lt,
                    one[f"eg{suffix}"].values,
                    one[f"converged{suffix}"].values,
                    style=style,
                    color=f"C{c}",
                    lw=1.4,
                    label=rf"student $\chi={chi:g}$, $\lambda={lam:g}$",
                )
                x, y = f["argmin"][(eta, lam, chi)]
                ax.plot(x, y, "*", color=f"C{c}", ms=11, mec="k", mew=0.5)
        if "eg_sim" in inh and eta == inh.attrs.get("sim_eta"):
            plotting.curve(
                ax,
                lt,
                inh["eg_sim"].values,
                sem=inh["eg_sim_sem"].values,
                style="s",
                color="C1",
                ms=4,
                label=f"simulation N={inh.attrs['sim_n']}, "
                rf"$\chi=1$, $\lambda={inh.attrs['sim_lam']:g}$",
            )
        ax.set_xscale("log")
        plotting.log_ticks(ax, "x")
        ax.set_xlabel(plotting.label("lam_t"))
        ax.set_ylabel(r"test error $\varepsilon_g$, $\tilde\varepsilon_g$")
        ax.set_title(
            ("full student" if eta == 1 else "sparse student") + rf", $\eta = {eta:g}$", fontsize=10
        )
    axes[1].legend(fontsize=7, loc="upper left", ncol=2)
    inh_n = _inheritance_numbers(f)
    small, nokd = f["nokd_small_lam"]
    plotting.caption(
        fig,
        "Inheritance: at a fixed student ridge λ and χ = 1 (solid), the student's error follows its "
        f"teacher's: its best teacher (★) has λ̃ = {inh_n['kd']}, near the teacher's own optimum "
        f"λ̃* = {star:.2g} (dotted; within a factor {inh_n['factor']:.2g}): a better teacher makes a better "
        f"student. Mixed students (χ = 0.5, dashed) are best with an over-regularised teacher "
        f"(λ̃ = {inh_n['mixed']}): the soft labels are only half of their loss and the hard-label half "
        f"already overfits at small λ (without KD, λ = {small:g}: ε$_g$ = "
        f"{nokd[1.0]:.3f} at η = 1, {nokd[0.5]:.3f} at η = 0.5), so the mix "
        "wants a smoother teacher. (α, ρ, Δ) = (2, 0.3, 1), T = 1; Saglietti & Zdeborová (2022).",
    )
    plotting.save(fig, path)


def _figure_limit(limit, f: dict, path: Path) -> None:
    from kdtheory import plotting

    fig, axes = plotting.plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    rho = limit["rho"].values
    for eta, style in zip(limit["eta"].values.tolist(), ("-", "--"), strict=False):
        ds = limit.sel(eta=eta)
        excess = {k: ds[f"eg_{k}"].values - ds["eg_bayes"].values for k in ("ridge", "kd")}
        axes[0].plot(
            rho,
            excess["ridge"],
            "o" + style,
            color="C3",
            label=rf"best ridge student (min over $\lambda$), $\eta={eta:g}$",
        )
        axes[0].plot(
            rho,
            excess["kd"],
            "s" + style,
            color="C0",
            ms=4,
            label=rf"best KD student (min over $\tilde\lambda, \chi, \lambda$), $\eta={eta:g}$",
        )
        axes[1].plot(rho, 1e3 * ds["gain"].values, "o" + style, color="k", label=rf"$\eta={eta:g}$")
    axes[0].set_ylabel(r"excess error $\varepsilon_g - \varepsilon_{\rm Bayes}(\eta)$")
    axes[0].legend(fontsize=7)
    axes[1].axhline(0.0, color="0.6", lw=0.8)
    axes[1].set_ylabel(r"KD gain $10^3\,(\varepsilon_g^{\rm ridge} - \varepsilon_g^{\rm KD})$")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel(r"fraction of the positive cluster $\rho$")
    lim = f["limit"]
    r0 = 0.3 if (0.3, 1.0) in lim else float(rho[0])
    p, half = lim[(r0, 1.0)], lim.get((0.5, 1.0))
    r1 = max(r for r, e in lim if e == 1.0 and r < 0.5)
    near = lim[(r1, 1.0)]
    sparse = (
        max(v["gain"] for (r, e), v in lim.items() if e < 1) if any(e < 1 for _, e in lim) else 0
    )
    plotting.caption(
        fig,
        "The limit: the best KD student of a logistic teacher (min over λ̃, χ > 0, λ) against the best "
        "ridge (L2 logistic) student (min over λ), α = 2, Δ = 1, T = 1. For unbalanced clusters KD wins: "
        f"at ρ = {r0:g}, η = 1, ε$_g$ = {p['eg_kd']:.4f} (λ̃ = {p['lam_t_kd']:.2g}, χ = {p['chi_kd']:.2g}, "
        f"λ = {p['lam_kd']:.2g}) against {p['eg_ridge']:.4f} (λ = {p['lam_ridge']:.2g}), a gain of "
        f"{p['gain']:.4f}, falling continuously to 0 as ρ → ½ ({near['gain']:.4f} at ρ = {r1:g}); a "
        f"sparse student (η = 0.5) gains at most {sparse:.1e}."
        + (
            f" At ρ = ½ both reach the Bayes error ({half['eg_bayes']:.4f}; ridge as λ → ∞), so the "
            "claim of Saglietti & Zdeborová's talk (2021) that 'a KD student cannot beat an explicit "
            "regularization of the same type' holds for balanced clusters only."
            if half
            else ""
        )
        + " The gain is as small as the finite-N offsets: benchmarks/kd_vs_ridge.py checks it with "
        "simulations paired by seed.",
    )
    plotting.save(fig, path)


def _figure_bayes_teacher(ds, f: dict, path: Path) -> None:
    from kdtheory import plotting

    fig, axes = plotting.plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
    lam = ds["lam"].values
    for ax, eta in zip(axes, ds["eta"].values.tolist(), strict=True):
        one, v = ds.sel(eta=eta), f["bayes"][eta]
        plotting.curve(
            ax,
            lam,
            one["eg_nokd"].values,
            one["converged_nokd"].values,
            style="-",
            color="C3",
            label=r"student without KD ($\chi=0$)",
        )
        plotting.curve(
            ax,
            lam,
            one["eg"].values,
            one["converged"].values,
            style="-",
            color="C2",
            label=r"KD student of the Bayes-optimal teacher ($\chi=1$)",
        )
        ax.plot(v["lam_nokd"], v["nokd"], "*", color="C3", ms=11, mec="k", mew=0.5)
        ax.plot(
            v["lam_kd"], v["kd"], "*", color="C2", ms=11, mec="k", mew=0.5, label=r"best $\lambda$"
        )
        ax.axhline(
            v["bayes"],
            color="k",
            ls="--",
            lw=1,
            label="Bayes error" + (r" on the $\eta N$ features" if eta < 1 else ""),
        )
        top = float(np.nanmax(one["eg_nokd"].values[: len(lam) // 2]))
        ax.set_ylim(v["bayes"] - 0.006, top + 0.01)  # the region of the optima; λ → ∞ gives ε_g = ρ
        ax.set_xscale("log")
        plotting.log_ticks(ax, "x")
        ax.set_xlabel(plotting.label("lam"))
        ax.set_ylabel(plotting.label("eg"))
        ax.set_title(
            ("full student" if eta == 1 else "sparse student") + rf", $\eta = {eta:g}$: "
            f"KD closes {100 * v['closed']:.0f}% of the gap",
            fontsize=10,
        )
    # one legend above both panels: inside either it covered a curve
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncol=4, fontsize=8)
    full, sparse = f["bayes"][1.0], f["bayes"][0.5]
    plotting.caption(
        fig,
        "The Bayes-optimal teacher: its KD student against the best student without KD, (α, ρ, Δ) = "
        f"(2, 0.3, 1), T = 1. A full student (η = 1) nearly closes the gap: {full['nokd']:.4f} → "
        f"{full['kd']:.4f} against the Bayes error {full['bayes']:.4f} ({100 * full['closed']:.0f}%; as "
        "λ → 0 it copies its teacher). A sparse student (η = 0.5) closes only a little of it: "
        f"{sparse['nokd']:.4f} → {sparse['kd']:.4f} against {sparse['bayes']:.4f} for the Bayes estimator "
        f"on its ηN features ({100 * sparse['closed']:.0f}%): it cannot copy a teacher that uses all N.",
    )
    plotting.save(fig, path)


def _figure_double_descent(ds, f: dict, path: Path) -> None:
    from kdtheory import plotting

    dd = f["dd"]
    fig, ax = plotting.plt.subplots(figsize=(7.5, 4.6), layout="constrained")
    alpha = ds["alpha"].values
    for lam, style in ((dd["lam_small"], "-"), (dd["lam_large"], "--")):
        one = ds.sel(lam=lam)
        plotting.curve(
            ax,
            alpha,
            one["eg"].values,
            one["converged"].values,
            style=style,
            color="C0",
            label=rf"KD student $\chi=1$, $\lambda={lam:g}$",
        )
        plotting.curve(
            ax,
            alpha,
            one["eg_nokd"].values,
            one["converged_nokd"].values,
            style=style,
            color="C3",
            label=rf"without KD $\chi=0$, $\lambda={lam:g}$",
        )
    ax.axvline(dd["eta"], color="C0", ls=":", lw=1, label=r"interpolation threshold $\alpha=\eta$")
    ax.axvline(
        dd["alpha_c"],
        color="C3",
        ls=":",
        lw=1,
        label=rf"separability threshold $\alpha_c(\eta)={dd['alpha_c']:.2f}$",
    )
    ax.set_xlabel(plotting.label("alpha"))
    ax.set_ylabel(plotting.label("eg"))
    ax.set_title(
        r"sparse student $\eta = 0.5$, logistic teacher $\tilde\lambda = 0.1$", fontsize=10
    )
    ax.legend(fontsize=7)
    plotting.caption(
        fig,
        f"Double descent: at small ridge (λ = {dd['lam_small']:g}) the KD student's error peaks at its "
        f"interpolation threshold α = η (ε$_g$ = {dd['peak']:.3f} at α = {dd['peak_alpha']:.3g}), where it "
        f"can fit all its soft labels; its own ridge removes the peak (λ = {dd['lam_large']:g}: "
        f"{dd['at_eta_large']:.3f}). Without KD there is no peak at α = η but a plateau (ε$_g$ ≈ "
        f"{dd['plateau']:.3f} up to α ≈ {dd['plateau_end']:.3g}) while the hard labels stay linearly "
        f"separable, up to α$_c$(η) = {dd['alpha_c']:.3g}. (ρ, Δ) = (0.3, 1), T = 1.",
    )
    plotting.save(fig, path)


def _figure_gain_map(ds, f: dict, path: Path) -> None:
    from kdtheory import plotting

    m = f["map"]
    fig, ax = plotting.plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    plotting.heatmap(ax, ds, "gain", x="alpha", y="lam", diverging=True)
    ax.set_title(
        r"KD gain of the Bayes teacher's student, $\chi=1$, $T=1$, $\eta=0.5$", fontsize=10
    )
    plotting.caption(
        fig,
        "KD gain ε$_g$(χ = 0) − ε$_g$(χ = 1) of the Bayes-optimal teacher's sparse student (η = 0.5) over "
        f"(α, λ), ρ = 0.3, Δ = 1: KD helps on {100 * m['positive']:.0f}% of the map, most "
        f"({m['max']:.4f}) at α = {m['alpha']:.2f}, λ = {m['lam']:.3g}: with little data and little "
        f"ridge, where the student alone overfits. KD hurts above the contour (large λ) and near "
        f"α = η at the smallest λ, the KD student's interpolation peak (figure 4); lowest "
        f"{m['min']:.4f}. Colours saturate at the 98th percentile of |gain|.",
    )
    plotting.save(fig, path)
