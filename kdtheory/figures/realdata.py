r"""``--figures realdata``: the theory with the data's own covariance against real images.

For binary Fashion-MNIST tasks (:data:`kdtheory.realdata.TASKS`: trouser vs bag, sneaker vs ankle
boot, T-shirt vs shirt) the class means and the pooled within-class covariance of the pair's full
training set give the model x = y v/√N + Σ^{1/2} z (:mod:`kdtheory.realdata`).  At every
α = M/N of :attr:`Design.alphas` and in three variants (:data:`VARIANTS`: balanced, ρ = 0.3 by
subsampling, training labels flipped at θ = 0.2) the set computes the test error of the L2 logistic
teacher (λ̃) and of the KD student (λ, χ, T) trained on the teacher's outputs on the same M samples,
three ways (:data:`KINDS`):

``theory``
    ``replica.solve`` with the task's spectrum (N → ∞);
``real``
    the package's own fits (``simulations.fit_teacher`` / ``fit_student``) on M real training
    images drawn at random (:attr:`Design.seeds` subsets per α), tested on the real test images
    (reweighted to ρ); the same weights are also scored by the Gaussian model's exact error
    formula (``eg_model``), which separates a failure of the test distribution's Gaussianity from
    one of the training;
``gaussian``
    the same fits on Gaussian samples with the same means and covariance (the surrogate), N = the
    number of pixels, scored exactly.

Theory and surrogate differ only by finite N; surrogate and real data differ only by the data's
non-Gaussianity (universality, Pesce, Krzakala, Loureiro & Stephan, *Are Gaussian data all you
need?*, 2023).  The no-KD student is the student with χ = 0 at the same λ; with λ = λ̃ (the default)
it is the teacher itself, so the KD gain ε̃ − ε is paired on the same subsets.  At α =
:attr:`Design.grid_alpha` every KD student of the (χ, T) grid is fitted too, to ask whether the
theory names the best (χ, T) and the sign of the gain.

One figure per task (``realdata_<task>.png``: the three variants, teacher and student, theory line,
surrogate and real data with error bars, against α) and ``realdata_kd_gain.png`` (theory against real
KD gain over the grid); ``realdata.nc`` holds every number.  Journalled per cell (task, variant,
kind, subset, α): an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "KINDS",
    "VARIANTS",
    "Design",
    "check_data",
    "compute",
    "compute_cell",
    "design_of",
    "findings",
    "load_task",
    "realdata_journal",
    "run_realdata",
    "summary_lines",
]

#: the three ways of computing an error
KINDS = ("theory", "real", "gaussian")
#: the kind index of the theory's curve cells (on the finer ``Design.curve_alphas``)
CURVE = len(KINDS)
#: name → (ρ, θ): the class fraction and the training labels' flip probability
VARIANTS = {"balanced": (0.5, 0.0), "rho=0.3": (0.3, 0.0), "flip=0.2": (0.5, 0.2)}
#: per-cell fields: errors of teacher and student (real test images for ``real``, exact otherwise),
#: the Gaussian formula's error of the same weights, the test-set standard error (0 where exact),
#: and the exact error of the same weights on Gaussian data with class-wise covariances Σ₊, Σ₋
#: (:meth:`kdtheory.realdata.RealTask.class_gaussian_error`; = ``eg_model`` where Σ₊ = Σ₋ = Σ)
ROLE_FIELDS = ("eg", "eg_model", "test_se", "eg_classcov")
ROLES = ("teacher", "student")
FIELDS = tuple(f"{f}_{r}" for r in ROLES for f in ROLE_FIELDS)


@dataclass(frozen=True)
class Design:
    """What the set computes: the tasks, the α grid, subsets per α, the teacher's ridge λ̃, the
    student (λ, χ, T), the α of the (χ, T) grid and its values, the data folder and Σ's ridge."""

    tasks: tuple[str, ...] = ("trouser-bag", "sneaker-boot", "tshirt-shirt")
    alphas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    seeds: int = 4
    lam_t: float = 0.1
    lam: float = 0.1
    chi: float = 1.0
    temperature: float = 2.0
    grid_alpha: float = 2.0
    chis: tuple[float, ...] = (0.5, 1.0)
    temperatures: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    root: str | None = None
    ridge: float = 1e-6
    seed: int = 0
    variants: tuple[str, ...] = field(default=tuple(VARIANTS))
    curve_alphas: tuple[float, ...] = tuple(float(f"{a:.3g}") for a in np.geomspace(0.4, 10, 15))

    def __post_init__(self):
        from kdtheory.problem import LogisticTeacher, Student

        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"Design.tasks must be distinct task names, got {self.tasks}")
        for t in self.tasks:
            if t not in _FASHION and not _DIGITS.fullmatch(t):
                raise ValueError(f"Design.tasks must name tasks among {', '.join(sorted(_FASHION))} "
                                 f"or digits-P-N (P ≠ N digits), got {t!r}")  # fmt: skip
        for name in ("alphas", "curve_alphas"):
            a = getattr(self, name)
            if not a or sorted(set(a)) != list(a) or a[0] <= 0:
                raise ValueError(f"Design.{name} must be increasing values > 0, got {a}")
        if self.grid_alpha not in self.alphas:
            raise ValueError(f"Design.grid_alpha must be one of the alphas, got {self.grid_alpha}")
        if not (isinstance(self.seeds, int) and 1 <= self.seeds <= 100):
            raise ValueError(f"Design.seeds must be an integer in 1…100, got {self.seeds!r}")
        if not set(self.variants) <= set(VARIANTS) or not self.variants:
            raise ValueError(f"Design.variants must be among {', '.join(VARIANTS)}")
        LogisticTeacher(self.lam_t)
        for c in self.chis:
            for t in self.temperatures:
                Student(self.lam, c, t)
        Student(self.lam, self.chi, self.temperature)

    @property
    def grid(self) -> tuple[tuple[float, float], ...]:
        """The (χ, T) pairs of the grid, χ-major."""
        return tuple((c, t) for c in self.chis for t in self.temperatures)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.tasks), len(self.variants), len(KINDS), self.seeds, len(self.alphas))

    @property
    def cells(self) -> tuple[tuple[int, ...], ...]:
        """The computed cells (i_task, i_variant, i_kind, i_seed, i_alpha), theory at seed 0 only,
        and the theory's curves (i_task, i_variant, :data:`CURVE`, 0, i_curve_alpha) on the finer
        :attr:`curve_alphas` (teacher and default student only)."""
        out = []
        for i, _ in enumerate(self.tasks):
            for j, _ in enumerate(self.variants):
                for k, kind in enumerate(KINDS):
                    for s in range(1 if kind == "theory" else self.seeds):
                        out += [(i, j, k, s, a) for a in range(len(self.alphas))]
                out += [(i, j, CURVE, 0, c) for c in range(len(self.curve_alphas))]
        return tuple(out)

    def alpha_of(self, index: tuple[int, ...]) -> float:
        """The α of a cell."""
        grid = self.curve_alphas if index[2] == CURVE else self.alphas
        return grid[index[4]]

    def has_grid(self, index: tuple[int, ...]) -> bool:
        """Whether a cell fits the (χ, T) grid's students too."""
        return index[2] != CURVE and self.alphas[index[4]] == self.grid_alpha


def design_of(args) -> Design:
    """The default design with ``args.data_root`` as the data folder."""
    root = getattr(args, "data_root", None)
    return Design(root=None if root is None else str(root))


def check_data(design: Design) -> None:
    """ValueError (one line) if the Fashion-MNIST files are not where the design reads them."""
    from kdtheory.datafiles import DEFAULT_FASHION_MNIST_ROOT, DatasetNotFoundError, find_file

    if not any(t in _FASHION for t in design.tasks):
        return
    root = Path(design.root) if design.root is not None else DEFAULT_FASHION_MNIST_ROOT
    try:
        if not root.is_dir():
            raise DatasetNotFoundError(f"{root} is not a folder")
        for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # fmt: skip
            find_file(root, stem)
    except DatasetNotFoundError as exc:
        raise ValueError(
            f"--figures realdata needs Fashion-MNIST: {exc} (apt-get install dataset-fashion-mnist, "
            "or --data-root FOLDER with the IDX files)"
        ) from None


# ----------------------------------------------------------------------------- the data


def _fashion_names():
    from kdtheory.realdata import TASKS

    return set(TASKS)


_FASHION = _fashion_names()
_DIGITS = re.compile(r"digits-(\d)-(?!\1)(\d)")


@functools.lru_cache(maxsize=2)
def _fashion_arrays(root: str | None):
    from kdtheory.datafiles import fashion_mnist_arrays

    return fashion_mnist_arrays(root)


@functools.lru_cache(maxsize=8)
def load_task(name: str, root: str | None = None, ridge: float = 1e-6):
    """The :class:`~kdtheory.realdata.RealTask` ``name`` (a Fashion-MNIST task, or
    ``digits-P-N`` for two digits of scikit-learn's bundled set), cached per process."""
    from kdtheory.realdata import digits_task, fashion_mnist_task

    if name.startswith("digits-"):
        try:
            pos, neg = (int(d) for d in name.split("-")[1:])
        except ValueError:
            raise ValueError(f"a digits task is named digits-P-N, got {name!r}") from None
        return digits_task(pos, neg, ridge=ridge)
    return fashion_mnist_task(name, ridge=ridge, arrays=_fashion_arrays(root))


# ----------------------------------------------------------------------------- one cell


def _rng(design: Design, index: tuple[int, ...]) -> np.random.Generator:
    """The generator of a cell: the same subset (and flips) for the teacher and every student."""
    return np.random.default_rng(np.random.SeedSequence([design.seed, *index]))


def _fit_scores(task, data, train, fit, rho: float, real: bool) -> tuple[float, ...]:
    """:data:`ROLE_FIELDS` of a converged fit; NaNs otherwise."""
    from simulations.data import overlap

    if not fit.converged:
        return (math.nan,) * len(ROLE_FIELDS)
    model = float(data.error(fit.w @ train.v / train.n, overlap(data, fit.w, fit.w), fit.b))
    if not real:
        return model, model, 0.0, model
    eg, se = task.test_error(fit.w, fit.b, rho)
    return eg, model, se, task.class_gaussian_error(fit.w, fit.b, rho)


def compute_cell(design: Design, index: tuple[int, ...]) -> dict:
    """The journal record of one cell: the fields :data:`FIELDS`, ``grid`` (the students of the
    (χ, T) grid at the grid α, else empty), ``converged`` (0/1), ``seconds``."""
    import replica
    import simulations
    from kdtheory.problem import LogisticTeacher, Problem, Student

    start = time.perf_counter()
    i, j, k = index[:3]
    task = load_task(design.tasks[i], design.root, design.ridge)
    rho, flip = VARIANTS[design.variants[j]]
    alpha = design.alpha_of(index)
    kind = "theory" if k == CURVE else KINDS[k]
    teacher = LogisticTeacher(design.lam_t)
    students = [Student(design.lam, design.chi, design.temperature)]
    if design.has_grid(index):
        students += [Student(design.lam, c, t) for c, t in design.grid]
    data = task.mixture(alpha, rho, flip)
    scores, ok = [], True
    if kind == "theory":
        for n, s in enumerate(students):
            sol = replica.solve(Problem(data, teacher, s))
            ok = ok and bool(sol.converged)
            if n == 0:
                eg = float(sol.teacher.eg) if sol.converged else math.nan
                scores.append((eg, eg, 0.0, eg))
            eg = float(sol.student.eg) if sol.converged else math.nan
            scores.append((eg, eg, 0.0, eg))
    else:
        rng = _rng(design, index)
        if alpha > task.max_alpha(rho) and kind == "real":
            return _failed(design, index, f"α = {alpha:g} exceeds the training set's "
                                          f"{task.max_alpha(rho):.3g} at ρ = {rho:g}")  # fmt: skip
        train = (task.draw(alpha, rho, flip, rng) if kind == "real"
                 else simulations.sample(data, task.n, rng))  # fmt: skip
        tfit = simulations.fit_teacher(teacher, train)
        scores.append(_fit_scores(task, data, train, tfit, rho, kind == "real"))
        ok = tfit.converged
        for s in students:
            if not tfit.converged:
                scores.append((math.nan,) * len(ROLE_FIELDS))
                continue
            sfit = simulations.fit_student(s, train, tfit.h)
            ok = ok and sfit.converged
            scores.append(_fit_scores(task, data, train, sfit, rho, kind == "real"))
    values = {f"{f}_{r}": scores[n][m] for n, r in enumerate(ROLES)
              for m, f in enumerate(ROLE_FIELDS)}  # fmt: skip
    values["grid"] = [s[0] for s in scores[2:]]
    values["converged"] = int(ok)
    values["seconds"] = time.perf_counter() - start
    return values


def _failed(design: Design, index: tuple[int, ...], message: str) -> dict:
    values = dict.fromkeys(FIELDS, math.nan)
    grid = [math.nan] * len(design.grid) if design.has_grid(index) else []
    return {**values, "grid": grid, "converged": 0, "seconds": 0.0, "message": message[:500]}


# ----------------------------------------------------------------------------- the journal


def _describe(design: Design, digests: dict[str, str]) -> tuple[dict, str]:
    d = {k: list(v) if isinstance(v, tuple) else v for k, v in design.__dict__.items()}
    describe = {"realdata": {**d, "spectra": digests, "kinds": list(KINDS),
                             "variant_values": {v: list(VARIANTS[v]) for v in design.variants}}}  # fmt: skip
    return describe, hashlib.sha256(json.dumps(describe, sort_keys=True).encode()).hexdigest()[:16]


def realdata_journal(path, design: Design, digests: dict[str, str], *, wait: bool = False,
                     fix: str = "choose another --out"):  # fmt: skip
    """The locked journal of the set.  A record is valid if its index is a computed cell and its
    values are the fields of :func:`compute_cell`, each in its range
    (:func:`kdtheory.journal.check_values`): errors, standard errors and the grid's errors in
    [0, 1] (NaN only where ``converged`` = 0), a grid of the right length, ``converged`` 0 or 1,
    ``seconds`` ≥ 0."""
    from kdtheory.journal import Journal, check_values, quantity_range

    describe, fingerprint = _describe(design, digests)
    cells = set(design.cells)
    keys = {*FIELDS, "grid", "converged", "seconds"}
    error = quantity_range("eg")
    ranges = {**dict.fromkeys((*FIELDS, "grid"), error),
              "converged": quantity_range("converged")}  # fmt: skip

    def validate(record: dict) -> None:
        index, values = tuple(record["index"]), record["values"]
        if index not in cells:
            raise ValueError(f"index {list(index)} is not a cell of the set")
        if not keys <= set(values) <= {*keys, "message"}:
            raise ValueError("not the fields of the realdata set")
        n_grid = len(design.grid) if design.has_grid(index) else 0
        if not (isinstance(values["grid"], list) and len(values["grid"]) == n_grid):
            raise ValueError(f"grid must be a list of {n_grid} errors")
        check_values(values, {"converged": ranges["converged"]}, ok=True)
        check_values(values, ranges, ok=values["converged"] == 1)
        check_values(values, {"seconds": quantity_range("seconds")}, ok=True)
        if not isinstance(values.get("message", ""), str):
            raise ValueError("message must be a string")

    return Journal(path, fingerprint, describe, validate=validate, lock=True, wait=wait, fix=fix)


# ----------------------------------------------------------------------------- the set


def _task_info(design: Design) -> dict:
    out = {}
    for name in design.tasks:
        t = load_task(name, design.root, design.ridge)
        out[name] = {**t.info, "digest": t.spectrum.digest,
                     "max_alpha": {v: t.max_alpha(VARIANTS[v][0]) for v in design.variants}}  # fmt: skip
    return out


def compute(design: Design, journal=None, *, jobs: int = 1, progress: bool = True, info=None):
    """Every cell of the design (journalled: what ``journal`` holds is not recomputed), gathered
    in a Dataset over (task, variant, kind, seed, alpha) and, for the grid, (chi, temperature)."""
    import xarray as xr
    from tqdm import tqdm

    from kdtheory.sweep import map_points

    info = _task_info(design) if info is None else info
    done = dict(journal.done) if journal is not None else {}
    todo = [c for c in design.cells if c not in done]
    todo.sort(key=lambda c: (c[2] == CURVE, -design.alpha_of(c), c))  # the slow fits first
    task = functools.partial(_task, design)
    bar = tqdm(total=len(design.cells), initial=len(design.cells) - len(todo), desc="realdata",
               unit="cell", disable=not progress, leave=False)  # fmt: skip
    try:
        for index, values in map_points(task, todo, jobs):
            if journal is not None:
                journal.append([(index, values)])
            done[index] = values
            bar.update(1)
    finally:
        bar.close()
    dims = ("task", "variant", "kind", "seed", "alpha")
    gdims = ("task", "variant", "kind", "seed", "chi", "temperature")
    shape = design.shape
    arrays = {f: np.full(shape, np.nan) for f in (*FIELDS, "converged", "seconds")}
    grid = np.full((*shape[:4], len(design.chis), len(design.temperatures)), np.nan)
    messages = np.full(shape, "", dtype=object)
    a_grid = design.alphas.index(design.grid_alpha)
    curve = np.full((*shape[:2], len(design.curve_alphas), len(ROLES)), np.nan)
    for index, values in done.items():
        if index[2] == CURVE:
            ok = values["converged"] == 1
            curve[index[0], index[1], index[4]] = [
                values[f"eg_{r}"] if ok else np.nan for r in ROLES
            ]
            continue
        for f in arrays:
            arrays[f][index] = values[f]
        messages[index] = values.get("message", "")
        if index[4] == a_grid and values["grid"]:
            grid[index[:4]] = np.reshape(values["grid"], grid.shape[4:])
    ds = xr.Dataset(
        {f: (dims, v) for f, v in arrays.items()},
        coords={"task": list(design.tasks), "variant": list(design.variants), "kind": list(KINDS),
                "seed": list(range(design.seeds)), "alpha": list(design.alphas),
                "chi": list(design.chis), "temperature": list(design.temperatures)},
    )  # fmt: skip
    ds["eg_grid"] = (gdims, grid)
    ds["eg_curve"] = (("task", "variant", "alpha_curve", "role"), curve)
    ds = ds.assign_coords(alpha_curve=list(design.curve_alphas), role=list(ROLES))
    ds["eg_curve"].attrs["long_name"] = (
        "the theory's ε_g of teacher and KD student on a finer α grid"
    )
    ds["message"] = (dims, messages.astype(str))
    ds["rho"] = ("variant", [VARIANTS[v][0] for v in design.variants])
    ds["flip"] = ("variant", [VARIANTS[v][1] for v in design.variants])
    for name in ("delta", "whitened_signal", "signal", "n", "rank"):
        ds[name] = ("task", [float(info[t][name]) for t in design.tasks])
    ds["max_alpha"] = (("task", "variant"),
                       [[info[t]["max_alpha"][v] for v in design.variants] for t in design.tasks])  # fmt: skip
    ds.attrs.update(
        lam_t=design.lam_t, lam=design.lam, chi=design.chi, temperature=design.temperature,
        grid_alpha=design.grid_alpha, ridge=design.ridge, seeds=design.seeds,
        tempered="both", digests=json.dumps({t: info[t]["digest"] for t in design.tasks}),
        classes=json.dumps({t: info[t]["classes"] for t in design.tasks}),
        fingerprint=_describe(design, {t: info[t]["digest"] for t in design.tasks})[1],
    )  # fmt: skip
    return ds


def _task(design: Design, index):
    try:
        return index, compute_cell(design, index)
    except Exception as exc:  # one failed cell does not end the set
        return index, _failed(design, index, f"{type(exc).__name__}: {exc}")


def run_realdata(args, design: Design | None = None) -> list[Path]:
    """Compute, save and plot the set; print one summary line per finding.

    ``args`` carries ``out``, ``jobs``, ``quiet``, ``wait`` and ``data_root`` as parsed by
    ``python -m kdtheory.phase_diagram``; ``design`` overrides the default design.
    """
    from kdtheory.journal import write_atomic

    design = design or design_of(args)
    check_data(design)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = _task_info(design)
    digests = {t: info[t]["digest"] for t in design.tasks}
    fix = "choose another --out, or delete realdata.journal.jsonl there"
    with contextlib.ExitStack() as stack:
        journal = stack.enter_context(
            realdata_journal(out / "realdata.journal.jsonl", design, digests,
                             wait=getattr(args, "wait", False), fix=fix)
        )  # fmt: skip
        ds = compute(design, journal, jobs=args.jobs, progress=not args.quiet, info=info)
    nc = out / "realdata.nc"
    write_atomic(nc, lambda tmp: ds.to_netcdf(tmp, engine="scipy"))
    f = findings(ds)
    files = [nc]
    for name in design.tasks:
        path = out / f"realdata_{name}.png"
        plot_task(ds, name, f, path)
        files.append(path)
    path = out / "realdata_kd_gain.png"
    plot_gain(ds, f, path)
    files.append(path)
    print(f"wrote {', '.join(str(p) for p in files)}")
    print("\n".join(summary_lines(ds, f)))
    n_bad = int((ds["converged"].where(ds["seconds"].notnull()) == 0).sum())
    if n_bad:
        print(f"warning: {n_bad} cells did not converge (left out of the figures)")
    return files


# ----------------------------------------------------------------------------- the findings


def _stats(ds, name: str):
    """Mean over subsets and its standard error (the test-set s.e. added in quadrature for the
    real images, whose test set is shared by every subset), NaN where a cell did not converge."""
    v = ds[name].where(ds["converged"] == 1)
    mean = v.mean("seed")
    n = v.count("seed")
    sem = (v.std("seed", ddof=1) / np.sqrt(n)).where(n > 1, 0.0)
    role = name.rsplit("_", 1)[-1]
    if name == f"eg_{role}":  # the test set's own s.e. (0 for the exact kinds)
        se = ds[f"test_se_{role}"].where(ds["converged"] == 1).mean("seed")
        sem = np.sqrt(sem**2 + se**2)
    return mean, sem


def findings(ds) -> dict:
    """The numbers the captions and summary lines state, read off the computed set."""
    f: dict = {}
    for role in ROLES:
        mean, sem = _stats(ds, f"eg_{role}")
        model, _ = _stats(ds, f"eg_model_{role}")
        classcov, _ = _stats(ds, f"eg_classcov_{role}")
        theory = mean.sel(kind="theory")
        f[role] = {
            "real_minus_theory": mean.sel(kind="real") - theory,
            "gauss_minus_theory": mean.sel(kind="gaussian") - theory,
            "gauss_z": (mean.sel(kind="gaussian") - theory) / sem.sel(kind="gaussian"),
            "real_minus_gauss": mean.sel(kind="real") - mean.sel(kind="gaussian"),
            "real_model_minus_gauss": model.sel(kind="real") - mean.sel(kind="gaussian"),
            "real_minus_classcov": mean.sel(kind="real") - classcov.sel(kind="real"),
            "real_se": sem.sel(kind="real"),
        }
    # the KD gain ε̃ − ε, paired on the same subsets (the no-KD student at λ = λ̃ is the teacher)
    gain = (ds["eg_teacher"] - ds["eg_student"]).where(ds["converged"] == 1)
    f["gain"] = gain.mean("seed")
    f["gain_sem"] = (gain.std("seed", ddof=1) / np.sqrt(gain.count("seed"))).where(
        gain.count("seed") > 1, 0.0
    )
    grid_gain = ds["eg_teacher"].sel(alpha=ds.attrs["grid_alpha"]) - ds["eg_grid"]
    grid_gain = grid_gain.where(ds["converged"].sel(alpha=ds.attrs["grid_alpha"]) == 1)
    f["grid_gain"] = grid_gain.mean("seed")
    f["grid_gain_sem"] = (grid_gain.std("seed", ddof=1) / np.sqrt(grid_gain.count("seed"))).where(
        grid_gain.count("seed") > 1, 0.0
    )
    return f


def _best(gain_grid) -> tuple[float, float]:
    """(χ, T) of the largest gain on one task × variant grid."""
    v = gain_grid.values
    if not np.isfinite(v).any():
        return (math.nan, math.nan)
    i, j = np.unravel_index(int(np.nanargmax(v)), v.shape)
    return float(gain_grid["chi"].values[i]), float(gain_grid["temperature"].values[j])


def summary_lines(ds, f: dict) -> list[str]:
    """One line per task and variant: how close theory, surrogate and real data are; the sign of
    the KD gain; the best (χ, T)."""
    lines = []
    for task in ds["task"].values:
        for var in ds["variant"].values:
            sel = {"task": task, "variant": var}
            parts = []
            for role in ROLES:
                d = f[role]
                rt = d["real_minus_theory"].sel(sel).values
                gz = d["gauss_z"].sel(sel).values
                parts.append(f"{role}: real − theory {_span(rt)}, surrogate − theory "
                             f"{_span(d['gauss_minus_theory'].sel(sel).values)} "
                             f"(max |z| {np.nanmax(np.abs(gz)) if np.isfinite(gz).any() else math.nan:.1f})")  # fmt: skip
            gain = f["gain"].sel(sel)
            signs = [
                f"{_sign(x)}{_sign(y)}"
                for x, y in zip(gain.sel(kind="theory").values, gain.sel(kind="real").values,
                                strict=True)
            ]  # fmt: skip
            gg = f["grid_gain"].sel(sel)
            bt, br = _best(gg.sel(kind="theory")), _best(gg.sel(kind="real"))
            lines.append(
                f"{task}, {var}: " + "; ".join(parts) + f"; KD gain sign theory/real along α: "
                f"{' '.join(signs)}; best (χ, T) at α = {ds.attrs['grid_alpha']:g}: theory "
                f"{bt}, real {br}"
            )
    return lines


def _span(x) -> str:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return f"[{x.min():+.4f}, {x.max():+.4f}]" if x.size else "[n/a]"


def _sign(x) -> str:
    return "?" if not np.isfinite(x) else ("+" if x > 0 else "−" if x < 0 else "0")


# ----------------------------------------------------------------------------- the figures

_COLOURS = {"teacher": "C0", "student": "C1"}


def plot_variant(ax, ds, task: str, variant: str) -> None:
    """Teacher and student error against α on ``ax``: theory (line), Gaussian surrogate (open
    squares) and real images (filled circles), error bars one standard error."""
    from kdtheory import plotting

    sel = {"task": task, "variant": variant}
    for role in ROLES:
        mean, sem = _stats(ds.sel(sel), f"eg_{role}")
        model, _ = _stats(ds.sel(sel), f"eg_model_{role}")
        c = _COLOURS[role]
        name = "teacher" if role == "teacher" else "KD student"
        a = ds["alpha"].values
        curve = ds["eg_curve"].sel(sel | {"role": role}) if "eg_curve" in ds else None
        if curve is not None and np.isfinite(curve).any():
            ax.plot(ds["alpha_curve"], curve, "-", color=c,
                    label=f"{name}: theory")  # fmt: skip
        else:
            ax.plot(a, mean.sel(kind="theory"), "-", color=c, label=f"{name}: theory")
        ax.errorbar(a, mean.sel(kind="gaussian"), sem.sel(kind="gaussian"), fmt="s", mfc="none",
                    color=c, ms=5, capsize=2, label=f"{name}: Gaussian surrogate")  # fmt: skip
        ax.errorbar(a * 1.04, mean.sel(kind="real"), sem.sel(kind="real"), fmt="o", color=c,
                    ms=4, capsize=2, label=f"{name}: real images")  # fmt: skip
        ax.plot(a * 1.04, model.sel(kind="real"), "x", color=c, ms=4,
                label=f"{name}: real-trained w, Gaussian test")  # fmt: skip
        classcov, _ = _stats(ds.sel(sel), f"eg_classcov_{role}")
        ax.plot(a * 1.04, classcov.sel(kind="real"), "+", color=c, ms=6,
                label=f"{name}: real-trained w, Gaussian test with Σ₊, Σ₋")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    plotting.log_ticks(ax, "x")
    plotting.log_ticks(ax, "y")
    ax.set_xlabel(plotting.label("alpha"))
    ax.set_ylabel(r"test error $\varepsilon_g$")
    rho, flip = float(ds["rho"].sel(variant=variant)), float(ds["flip"].sel(variant=variant))
    ax.set_title(f"{variant}: ρ = {rho:g}, θ = {flip:g}", fontsize=9)


def plot_task(ds, task: str, f: dict, path: Path) -> None:
    """One figure per task: the variants side by side, with a caption of the numbers."""
    from kdtheory import plotting

    variants = list(ds["variant"].values)
    fig, axes = plotting.plt.subplots(1, len(variants), figsize=(4.4 * len(variants) + 2.6, 4),
                                      layout="constrained", squeeze=False)  # fmt: skip
    for ax, var in zip(axes[0], variants, strict=True):
        plot_variant(ax, ds, task, var)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    classes = json.loads(ds.attrs["classes"])[task]
    tsel = {"task": task}
    nums = []
    for var in variants:
        d = {r: f[r]["real_minus_theory"].sel(tsel).sel(variant=var).values for r in ROLES}
        g = f["gain"].sel(tsel).sel(variant=var)
        nums.append(f"{var}: real − theory teacher {_span(d['teacher'])}, student "
                    f"{_span(d['student'])}; KD gain theory {_span(g.sel(kind='theory').values)}, "
                    f"real {_span(g.sel(kind='real').values)}")  # fmt: skip
    n = int(ds["n"].sel(task=task))
    plotting.caption(
        fig,
        f"{classes[0]} (+1) vs {classes[1]} (−1), N = {n} standardised pixels, pooled "
        f"within-class covariance with Δ = tr Σ/N = {float(ds['delta'].sel(task=task)):.3f} and "
        f"whitened signal vᵀΣ⁻¹v/N = {float(ds['whitened_signal'].sel(task=task)):.3g}. Teacher: "
        f"L2 logistic, λ̃ = {ds.attrs['lam_t']:g}; KD student: λ = {ds.attrs['lam']:g}, χ = "
        f"{ds.attrs['chi']:g}, T = {ds.attrs['temperature']:g}, trained on the teacher's outputs "
        f"on the same M = αN samples. Lines: replica theory with the data's spectrum; open "
        f"squares: Gaussian samples with the same means and covariance; dots: real training "
        f"images, real test images (reweighted to ρ); crosses (pluses): the real-trained weights "
        f"scored by the Gaussian model (with class-wise covariances Σ₊, Σ₋). {ds.sizes['seed']} subsets per α, bars ±1 s.e. (real: subsets "
        f"and test set). " + "; ".join(nums) + ".",
        width=int((4.4 * len(variants) + 2.6) * 15),
    )
    plotting.save(fig, path)


def plot_gain(ds, f: dict, path: Path) -> None:
    """The KD gain ε̃ − ε over the (χ, T) grid at the grid α: real images (and the surrogate)
    against the theory, one panel per task."""
    from kdtheory import plotting

    tasks = list(ds["task"].values)
    fig, axes = plotting.plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4),
                                      layout="constrained", squeeze=False)  # fmt: skip
    markers = {"balanced": "o", "rho=0.3": "^", "flip=0.2": "s"}
    agree, total = 0, 0
    for ax, task in zip(axes[0], tasks, strict=True):
        lo, hi = 0.0, 0.0
        for var in ds["variant"].values:
            g = f["grid_gain"].sel(task=task, variant=var)
            s = f["grid_gain_sem"].sel(task=task, variant=var)
            th = g.sel(kind="theory").values.ravel()
            for kind, mfc in (("real", None), ("gaussian", "none")):
                y = g.sel(kind=kind).values.ravel()
                ax.errorbar(th, y, s.sel(kind=kind).values.ravel(), fmt=markers.get(var, "o"),
                            mfc=mfc, ms=4, capsize=1.5, color="C3" if kind == "real" else "C0",
                            label=f"{var}, {'real' if kind == 'real' else 'surrogate'}")  # fmt: skip
                lo, hi = min(lo, np.nanmin([*th, *y])), max(hi, np.nanmax([*th, *y]))
            real = g.sel(kind="real").values.ravel()
            ok = np.isfinite(th) & np.isfinite(real)
            agree += int((np.sign(th[ok]) == np.sign(real[ok])).sum())
            total += int(ok.sum())
        ax.plot([lo, hi], [lo, hi], ":", color="0.5")
        ax.axhline(0, color="0.8", lw=0.8)
        ax.axvline(0, color="0.8", lw=0.8)
        ax.set_xlabel("KD gain ε̃ − ε, theory")
        ax.set_ylabel("KD gain ε̃ − ε, measured")
        ax.set_title(task, fontsize=9)
    axes[0][0].legend(fontsize=6.5)
    best = []
    for task in tasks:
        for var in ds["variant"].values:
            gg = f["grid_gain"].sel(task=task, variant=var)
            best.append(f"{task} {var}: theory {_fmt(_best(gg.sel(kind='theory')))}, real "
                        f"{_fmt(_best(gg.sel(kind='real')))}")  # fmt: skip
    plotting.caption(
        fig,
        f"The KD gain over the teacher (= the no-KD student at λ = λ̃) at α = "
        f"{ds.attrs['grid_alpha']:g} for every (χ, T) with χ ∈ {_values(ds['chi'])}, T ∈ "
        f"{_values(ds['temperature'])}, paired on the same subsets: measured (red: real "
        f"images; blue open: Gaussian surrogate) against the theory; dotted: equality. The sign of "
        f"the real gain agrees with the theory's at {agree} of {total} points. Best (χ, T): "
        + "; ".join(best)
        + ".",
        width=int(4.2 * len(tasks) * 15),
    )
    plotting.save(fig, path)


def _values(coord) -> str:
    return "{" + ", ".join(f"{v:g}" for v in coord.values) + "}"


def _fmt(ct: tuple[float, float]) -> str:
    return f"({ct[0]:g}, {ct[1]:g})"
