r"""``--figures multiclass``: K-class softmax distillation in the solvable model ("dark knowledge").

With two classes a soft label is one number per sample; with K classes the teacher's relative
probabilities of the *wrong* classes could tell the student which classes resemble each other — the
"dark knowledge" of Hinton, Vinyals & Dean, *Distilling the knowledge in a neural network* (2015).
The replica theory of the K-class model (docs/theory.md, ``replica.solve`` on a
:class:`~kdtheory.MulticlassMixture`) answers, at uniform ρ, Δ = 1, four questions, each printed as
one line with its numbers (a fifth where the set has two K or more):

1. *Dark knowledge* (``multiclass_1_gain``): the best KD student, min over (λ̃, χ, T, λ) in
   :data:`KD_BOX` of ε_g (Nelder–Mead, the protocol of the headline's limit figure with T added),
   against the best student without KD, min over λ of ε_g(χ = 0) — which is the teacher's own
   optimum, since a χ = 0 student at λ is the teacher at λ̃ = λ — for orthogonal centroids (no
   class resembles another) and structured Gram matrices (two close classes; a Fashion-MNIST
   triple with two close classes and one with three nearly equidistant ones), along α.  The gain is also given as the fraction of
   the gap to the oracle error that KD closes.
2. *The optimal temperature* T* of the best KD student against the class similarity.
3. *Inheritance*: the λ̃ of the best KD student against the teacher's own optimum λ̃*.
4. *The oracle teacher* (soft labels = the true posterior) at α < 1: how far its best student
   (min over χ, T, λ) and its plain copy (χ = 1, T = 1, λ = 10⁻³) stay above the oracle error —
   Menon et al.'s variance argument (*A statistical perspective on distillation*, 2021) says
   Bayes soft labels lower the variance of the student's risk, not that they reach the oracle.
5. *Along K* (``multiclass_1_gain``, lower row): the gain (± its QMC standard error, :func:`gain_se`)
   and T* of finding 1 at α = 2 against the number of classes K, ρ_c = 1/K: K = 3, 4 for two
   close classes by default, K = 3, 4, 5 for orthogonal and two-close centroids with ``--ks 3,4,5``.

Every Gram matrix is scaled to the same mean squared distance between centroids as s·I (2s), so the
structures differ in *which* classes are close, not in how far apart the classes are on average.
The Fashion-MNIST Gram matrix (``docs/data/fashion_mnist_gram.json``, :func:`fashion_mnist_gram`)
is that of the class means of the training images in units of the mean within-class pixel
variance; a triple of classes is re-centred on its own mean before scaling.

:func:`run_multiclass_figures` computes the cells (one journalled optimisation each: an interrupted
run resumes), writes ``multiclass.nc`` and the PNGs atomically and prints the four lines.
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

from kdtheory.problem import MulticlassMixture, OracleTeacher, Problem, SoftmaxTeacher, Student

__all__ = [
    "FASHION_MNIST_CLASSES",
    "KD_BOX",
    "STRUCTURES",
    "Grids",
    "best_kd_student",
    "best_oracle_student",
    "compute",
    "fashion_mnist_gram",
    "findings",
    "gain_se",
    "gram_of",
    "grids_of",
    "load_fashion_mnist_gram",
    "run_multiclass_figures",
    "summary_lines",
    "teacher_optimum",
]

#: search box of the best KD student (λ̃, χ > 0, T, λ); λ̃ and λ also bound the ridge searches
KD_BOX = {"lam_t": (1e-3, 1e2), "chi": (0.01, 1.0), "temperature": (0.1, 20.0), "lam": (1e-4, 1e2)}
#: the Fashion-MNIST class names, in label order
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
#: structure name → (description, K or None for "any K")
STRUCTURES = {
    "orthogonal": "orthogonal centroids, G = s I (no class resembles another)",
    "two_close": "two close classes: G = s I with cosine 0.8 between classes 0 and 1",
    "fmnist_close": "Fashion-MNIST pullover, coat, sneaker (two close classes: squared distances "
    "in the ratio 0.06 : 0.9 : 1)",
    "fmnist_apart": "Fashion-MNIST trouser, pullover, sandal (nearly equidistant: 0.78 : 0.91 : 1)",
}
_TRIPLES = {"fmnist_close": (2, 4, 7), "fmnist_apart": (1, 2, 5)}
_TWO_CLOSE_COSINE = 0.8
_GRAM_FILE = Path(__file__).resolve().parents[2] / "docs" / "data" / "fashion_mnist_gram.json"


# ----------------------------------------------------------------------------- Gram matrices


def fashion_mnist_gram(root: str | Path = "/usr/share/datasets/fashion-mnist") -> dict:
    r"""The Gram matrix of Fashion-MNIST's class means, from the training images in ``root``.

    Pixels x ∈ [0, 1]^{784} (bytes/255); μ_c the mean image of class c minus the overall mean;
    Δ = the mean over pixels of the within-class variance, (1/(nN)) Σ_μ ‖x_μ − μ_{c_μ} − x̄‖²;
    G_cc' = μ_c·μ_c'/Δ, i.e. the model's x = v_c/√N + √Δ z with noise rescaled to Δ = 1 and
    v_c/√N = μ_c/√Δ.  Reads the IDX files with ``kdtheory.neural.data.read_idx`` (the ``neural``
    extra).  Returns ``{"classes", "rho", "delta", "gram"}`` (lists).
    """
    from kdtheory.neural.data import read_idx

    root = Path(root)
    x = read_idx(root / "train-images-idx3-ubyte.gz").reshape(60000, -1) / 255.0
    y = read_idx(root / "train-labels-idx1-ubyte.gz").astype(np.int64)
    mean = x.mean(0)
    mu = np.stack([x[y == c].mean(0) for c in range(10)]) - mean
    delta = float(((x - mean - mu[y]) ** 2).mean())
    return {
        "classes": list(FASHION_MNIST_CLASSES),
        "rho": (np.bincount(y, minlength=10) / y.size).tolist(),
        "delta": delta,
        "gram": (mu @ mu.T / delta).tolist(),
    }


def load_fashion_mnist_gram() -> np.ndarray:
    """The stored 10×10 Fashion-MNIST Gram matrix (``docs/data/fashion_mnist_gram.json``)."""
    with open(_GRAM_FILE) as fh:
        return np.array(json.load(fh)["gram"], dtype=np.float64)


def _distance_scaled(g: np.ndarray, s: float) -> np.ndarray:
    """g scaled so that the mean of ‖v_c − v_c'‖²/N = G_cc + G_c'c' − 2G_cc' over pairs c < c' is 2s."""
    k = g.shape[0]
    d = np.diag(g)[:, None] + np.diag(g)[None, :] - 2 * g
    mean = d[np.triu_indices(k, 1)].mean()
    return g * (2.0 * s / mean)


def gram_of(structure: str, k: int, s: float) -> np.ndarray:
    """The K×K Gram matrix of a named structure (:data:`STRUCTURES`), scaled to a mean squared
    centroid distance 2s (that of s·I).  The Fashion-MNIST triples have K = 3 only."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {', '.join(STRUCTURES)}, got {structure!r}")
    if structure == "orthogonal":
        return s * np.eye(k)
    if structure == "two_close":
        g = np.eye(k)
        g[0, 1] = g[1, 0] = _TWO_CLOSE_COSINE
        return _distance_scaled(g, s)
    if k != 3:
        raise ValueError(f"the structure {structure!r} has K = 3, got K = {k}")
    idx = list(_TRIPLES[structure])
    g = load_fashion_mnist_gram()[np.ix_(idx, idx)]
    c = np.eye(3) - 1.0 / 3.0  # re-centre the triple on its own mean (uniform ρ)
    return _distance_scaled(c @ g @ c, s)


# ----------------------------------------------------------------------------- the grids


@dataclass(frozen=True)
class Grids:
    """The cells of the set.  Defaults: K = 3 at α ∈ {0.5, 2} for orthogonal, two-close and the
    Fashion-MNIST triple with two close classes, and K = 4 at α = 2 for two-close centroids (the K
    axis), s = 2; the oracle at α = 0.5 for orthogonal and two-close centroids; 60 (KD) and 25
    (oracle) Nelder–Mead evaluations per optimisation.  A solve takes 1.5–2.5 CPU-seconds at K = 3
    (tensor Gauss–Hermite), ≈ 2.3 at K = 4 and ≈ 3 at K = 5 (scrambled Sobol points, fixed seeds):
    a KD cell ≈ 120 CPU-seconds at K = 3, 150–170 at K = 4, 185–212 at K = 5; the default set ≈ 1040
    (:func:`grids_of` with ``--ks 3,4,5``, the stored run, ``fmnist_apart`` and more α are heavier
    options)."""

    alphas: tuple[float, ...] = (0.5, 2.0)
    structures: tuple[str, ...] = ("orthogonal", "two_close", "fmnist_close")
    ks: tuple[int, ...] = (3, 4)  #: K of the orthogonal and two-close cells (triples: K = 3)
    k_alphas: tuple[float, ...] = (2.0,)  #: α of the cells with K ≠ 3 (K = 3: every α of alphas)
    #: the structures with cells at K ≠ 3 (of orthogonal and two_close)
    k_structures: tuple[str, ...] = ("two_close",)
    s: float = 2.0  #: centroid strength: mean squared distance 2s
    oracle_alphas: tuple[float, ...] = (0.5,)
    oracle_structures: tuple[str, ...] = ("orthogonal", "two_close")
    tol: float = 1e-8  #: fixed-point tolerance of every solve
    maxfev: int = 60  #: Nelder–Mead evaluations of a best KD student (4 coordinates)
    oracle_maxfev: int = 25  #: Nelder–Mead evaluations of an oracle's best student (3 coordinates)

    def __post_init__(self):
        for name in ("structures", "oracle_structures"):
            bad = [x for x in getattr(self, name) if x not in STRUCTURES]
            if bad:
                raise ValueError(f"Grids.{name}: unknown {bad}; allowed {', '.join(STRUCTURES)}")
        if not all(a > 0 for a in (*self.alphas, *self.oracle_alphas, *self.k_alphas)):
            raise ValueError("Grids.alphas, oracle_alphas and k_alphas must be > 0")
        bad = [x for x in self.k_structures if x not in ("orthogonal", "two_close")]
        if bad:
            raise ValueError(
                f"Grids.k_structures: {bad} not allowed; allowed orthogonal, two_close"
            )
        if not all(isinstance(k, int) and k >= 2 for k in self.ks) or not self.ks:
            raise ValueError(f"Grids.ks must hold ints ≥ 2, got {self.ks}")
        if not (self.s > 0 and 0 < self.tol < 1e-3 and min(self.maxfev, self.oracle_maxfev) >= 5):
            raise ValueError(
                "Grids: s > 0, 0 < tol < 1e-3 and maxfev, oracle_maxfev ≥ 5 are required"
            )

    @property
    def cells(self) -> list[tuple[str, str, int, float]]:
        """(kind, structure, K, α): kind "kd" (findings 1–3) or "oracle" (finding 4)."""
        out = []
        for st in self.structures:
            for k in self.ks if st in ("orthogonal", "two_close") else (3,):
                if k == 3:
                    out += [("kd", st, k, a) for a in self.alphas]
                elif st in self.k_structures:
                    out += [("kd", st, k, a) for a in self.k_alphas]
        for st in self.oracle_structures:
            out += [("oracle", st, 3, a) for a in self.oracle_alphas]
        return list(dict.fromkeys(out))

    def data(self, structure: str, k: int, alpha: float) -> MulticlassMixture:
        """The mixture of a cell: uniform ρ, Δ = 1, no label noise."""
        return MulticlassMixture(alpha, gram_of(structure, k, self.s))


# ----------------------------------------------------------------------------- the protocols


def _solve(p: Problem, tol: float):
    import replica

    return replica.solve(p, tol=tol)


def teacher_optimum(data: MulticlassMixture, *, tol: float = 1e-8) -> dict:
    """λ̃* = argmin over λ̃ ∈ :data:`KD_BOX` of the softmax teacher's ε̃_g and ε̃_g(λ̃*): bounded
    Brent search in log λ̃ to 0.02.  A χ = 0 student at λ is the teacher at λ̃ = λ, so this is also
    the best student without KD."""
    from scipy.optimize import minimize_scalar

    n, se = [0], {}

    def eg(x):
        n[0] += 1
        sol = _solve(Problem(data, SoftmaxTeacher(math.exp(x)), Student(1.0, 0.0)), tol)
        se[float(x)] = sol.teacher.eg_se if sol.converged else math.nan
        return sol.teacher.eg if sol.converged else 1.0

    lo, hi = KD_BOX["lam_t"]
    res = minimize_scalar(eg, bounds=(math.log(lo), math.log(hi)), method="bounded",
                          options={"xatol": 0.02})  # fmt: skip
    return {"lam_t": math.exp(res.x), "eg": float(res.fun), "eg_se": float(se[float(res.x)]),
            "solves": n[0]}  # fmt: skip


def _nelder_mead(fun, x0, steps, bounds, maxfev):
    from scipy.optimize import minimize

    lo, hi = np.array(bounds).T
    x0 = np.clip(x0, lo, hi)
    simplex = np.clip(x0 + np.vstack([np.zeros(len(x0)), np.diag(steps)]), lo, hi)
    return minimize(fun, x0, method="Nelder-Mead", bounds=bounds,
                    options={"initial_simplex": simplex, "xatol": 2e-2, "fatol": 1e-6,
                             "maxfev": maxfev})  # fmt: skip


def best_kd_student(
    data: MulticlassMixture, start: float, *, tol: float = 1e-8, maxfev: int = 60
) -> dict:
    """min over (λ̃, χ, T, λ) in :data:`KD_BOX` of the KD student's ε_g (``tempered="both"``).

    Nelder–Mead in (log λ̃, χ, log T, log λ) from (s, 1, 2, s/2), s = ``start`` (the teacher's
    optimum λ̃* is a good s), steps (1, −0.3, 0.7, −1), to 0.02 in each coordinate and 1e-6 in
    ε_g, at most ``maxfev`` solves; an unconverged solve counts as ε_g = 1.  Returns ε_g, the
    argmin, the teacher's ε̃_g there, ε_g at T = 1 with the other coordinates at the argmin, the
    standard error of ε_g (QMC at K > 3; 0 at K ≤ 3) and the number of solves.
    """
    keys = ("lam_t", "chi", "temperature", "lam")
    bounds = [(math.log(a), math.log(b)) if k != "chi" else (a, b) for k, (a, b) in KD_BOX.items()]
    state = {"n": 0, "best": None}

    def problem(x):
        lam_t, chi, t, lam = math.exp(x[0]), float(x[1]), math.exp(x[2]), math.exp(x[3])
        return Problem(data, SoftmaxTeacher(lam_t), Student(lam, chi, t))

    def eg(x):
        sol = _solve(problem(x), tol)
        state["n"] += 1
        if not sol.converged:
            return 1.0
        if state["best"] is None or sol.student.eg < state["best"].student.eg:
            state["best"] = sol
        return sol.student.eg

    x0 = [math.log(start), 1.0, math.log(2.0), math.log(0.5 * start)]
    _nelder_mead(eg, x0, [1.0, -0.3, 0.7, -1.0], bounds, maxfev)
    best = state["best"]
    if best is None:
        return {**{k: math.nan for k in (*keys, "eg", "eg_se", "eg_teacher", "eg_t1")},
                "solves": state["n"]}  # fmt: skip
    st = best.problem.student
    at_t1 = _solve(Problem(data, best.problem.teacher, replace(st, temperature=1.0)), tol)
    return {
        "eg": float(best.student.eg),
        "eg_se": float(best.student.eg_se),
        "lam_t": best.problem.teacher.lam,
        "chi": st.chi,
        "temperature": st.temperature,
        "lam": st.lam,
        "eg_teacher": float(best.teacher.eg),
        "eg_t1": float(at_t1.student.eg) if at_t1.converged else math.nan,
        "solves": state["n"] + 1,
    }


def best_oracle_student(data: MulticlassMixture, *, tol: float = 1e-8, maxfev: int = 25) -> dict:
    """The oracle teacher's students: the best one, min over (χ, T, λ) in :data:`KD_BOX` of ε_g
    (Nelder–Mead in (χ, log T, log λ) from (1, 1, 0.01)), and the plain copy χ = 1, T = 1,
    λ = 10⁻³; with the oracle error."""
    keys = ("chi", "temperature", "lam")
    bounds = [KD_BOX["chi"], *(tuple(map(math.log, KD_BOX[k])) for k in keys[1:])]
    state = {"n": 0, "best": None}

    def eg(x):
        st = Student(math.exp(x[2]), float(x[0]), math.exp(x[1]))
        sol = _solve(Problem(data, OracleTeacher(), st), tol)
        state["n"] += 1
        if not sol.converged:
            return 1.0
        if state["best"] is None or sol.student.eg < state["best"].student.eg:
            state["best"] = sol
        return sol.student.eg

    _nelder_mead(eg, [1.0, 0.0, math.log(0.01)], [-0.3, 0.7, 1.0], bounds, maxfev)
    copy = _solve(Problem(data, OracleTeacher(), Student(1e-3, 1.0, 1.0)), tol)
    best = state["best"]
    out = {
        "eg_oracle": float(data.oracle_error()),
        "eg_copy": float(copy.student.eg) if copy.converged else math.nan,
        "solves": state["n"] + 1,
    }
    if best is None:
        return out | {"eg": math.nan, "chi": math.nan, "temperature": math.nan, "lam": math.nan}
    st = best.problem.student
    return out | {"eg": float(best.student.eg), "chi": st.chi, "temperature": st.temperature,
                  "lam": st.lam}  # fmt: skip


#: the fields of one cell's record (NaN where a kind does not have them); eg_se_* are the standard
#: errors of the QMC estimates (K > 3; 0 at K ≤ 3)
FIELDS = (
    "eg_ridge", "eg_se_ridge", "lam_ridge", "eg_kd", "eg_se_kd", "lam_t", "chi", "temperature",
    "lam", "eg_teacher", "eg_t1", "eg_oracle", "eg_copy", "solves", "seconds", "cpu_seconds",
)  # fmt: skip


def compute_cell(g: Grids, cell: tuple[str, str, int, float]) -> dict:
    """One cell's optimisations: kind "kd" → the teacher's optimum (= the best student without KD)
    and the best KD student; kind "oracle" → :func:`best_oracle_student`."""
    kind, structure, k, alpha = cell
    start, cpu = time.perf_counter(), time.process_time()
    data = g.data(structure, k, alpha)
    out = dict.fromkeys(FIELDS, math.nan)
    out["eg_oracle"] = float(data.oracle_error())
    if kind == "kd":
        ridge = teacher_optimum(data, tol=g.tol)
        kd = best_kd_student(data, ridge["lam_t"], tol=g.tol, maxfev=g.maxfev)
        out |= {"eg_ridge": ridge["eg"], "lam_ridge": ridge["lam_t"], "eg_kd": kd["eg"]}
        out |= {"eg_se_ridge": ridge["eg_se"], "eg_se_kd": kd["eg_se"]}
        out |= {key: kd[key] for key in ("lam_t", "chi", "temperature", "lam", "eg_teacher")}
        out |= {"eg_t1": kd["eg_t1"], "solves": ridge["solves"] + kd["solves"]}
    else:
        o = best_oracle_student(data, tol=g.tol, maxfev=g.oracle_maxfev)
        out |= {"eg_kd": o["eg"], "chi": o["chi"], "temperature": o["temperature"],
                "lam": o["lam"], "eg_copy": o["eg_copy"], "solves": o["solves"]}  # fmt: skip
    out["seconds"] = time.perf_counter() - start
    out["cpu_seconds"] = time.process_time() - cpu
    return {key: float(v) for key, v in out.items()}


# ----------------------------------------------------------------------------- journal, compute


def _describe(g: Grids) -> tuple[dict, str]:
    describe = {"multiclass": {"cells": [list(c) for c in g.cells], "s": g.s, "tol": g.tol,
                               "maxfev": g.maxfev, "oracle_maxfev": g.oracle_maxfev, "box": {k: list(v) for k, v in KD_BOX.items()},
                               "gram": hashlib.sha256(_GRAM_FILE.read_bytes()).hexdigest()[:16]}}  # fmt: skip
    return describe, hashlib.sha256(json.dumps(describe, sort_keys=True).encode()).hexdigest()[:16]


def multiclass_journal(path, g: Grids, *, wait: bool = False, fix: str = "choose another --out"):
    """The locked journal of the set: a record's index is a cell number, its values the
    :data:`FIELDS` (numbers)."""
    from kdtheory.journal import Journal
    from kdtheory.sweep import _check_index, _is_number

    describe, fingerprint = _describe(g)

    def validate(record: dict) -> None:
        _check_index(record["index"], (len(g.cells),))
        values = record["values"]
        if set(values) != set(FIELDS) or not all(_is_number(values[k]) for k in FIELDS):
            raise ValueError("not the fields of a multiclass cell")

    return Journal(path, fingerprint, describe, validate=validate, lock=True, wait=wait, fix=fix)


def compute(g: Grids, journal=None, *, jobs: int = 1, progress: bool = True):
    """Every cell of ``g`` (journalled: what ``journal`` holds is not recomputed), as a Dataset on
    the dimension ``cell`` with coordinates kind, structure, K, alpha."""
    import xarray as xr
    from tqdm import tqdm

    from kdtheory.sweep import map_points

    cells = g.cells
    done = dict(journal.done) if journal is not None else {}
    # longest first (larger K, KD before oracle): the workers finish together
    order = sorted(range(len(cells)), key=lambda i: (-cells[i][2], cells[i][0] == "oracle"))
    todo = [(i,) for i in order if (i,) not in done]

    def task(index):
        return index, compute_cell(g, cells[index[0]])

    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="multiclass", unit="cell",
               disable=not progress, leave=False)  # fmt: skip
    try:
        for index, values in map_points(task, todo, jobs):
            if journal is not None:
                journal.append([(index, values)])
            done[index] = values
            bar.update(1)
    finally:
        bar.close()
    ds = xr.Dataset(
        {key: ("cell", [done[(i,)][key] for i in range(len(cells))]) for key in FIELDS},
        coords={
            "cell": np.arange(len(cells)),
            "kind": ("cell", [c[0] for c in cells]),
            "structure": ("cell", [c[1] for c in cells]),
            "K": ("cell", [c[2] for c in cells]),
            "alpha": ("cell", [c[3] for c in cells]),
        },
    )
    ds["gain"] = ds["eg_ridge"] - ds["eg_kd"]
    ds["gain"].attrs["long_name"] = "ε_g without KD (best λ) − ε_g of the best KD student"
    ds["gap_closed"] = ds["gain"] / (ds["eg_ridge"] - ds["eg_oracle"])
    ds["gap_closed"].attrs["long_name"] = "fraction of the gap to the oracle error closed by KD"
    ds.attrs.update(s=g.s, delta=1.0, tol=g.tol, maxfev=g.maxfev, tempered="both",
                    fingerprint=_describe(g)[1])  # fmt: skip
    return ds


# ----------------------------------------------------------------------------- the findings


def findings(ds) -> dict:
    """The numbers of the four summary lines, read off the computed set."""
    kd = ds.where(ds["kind"] == "kd", drop=True)
    orc = ds.where(ds["kind"] == "oracle", drop=True)
    f: dict = {}
    rows = {}
    for i in range(kd.sizes["cell"]):
        one = kd.isel(cell=i)
        rows[(str(one.structure.values), int(one.K), float(one.alpha))] = {
            k: float(one[k]) for k in ("gain", "gap_closed", "temperature", "lam_t", "lam_ridge",
                                       "eg_kd", "eg_ridge", "eg_t1", "chi", "eg_se_ridge",
                                       "eg_se_kd")}  # fmt: skip
    f["kd"] = rows
    # along K: the (structure, α) computed at two K or more → {K: row}
    groups: dict = {}
    for (st, k, a), v in rows.items():
        groups.setdefault((st, a), {})[k] = v
    f["along_k"] = {key: dict(sorted(g.items())) for key, g in groups.items() if len(g) > 1}
    f["oracle"] = {
        (str(orc.structure.values[i]), float(orc.alpha.values[i])): {
            "above": float(orc.eg_kd.values[i] - orc.eg_oracle.values[i]),
            "copy_above": float(orc.eg_copy.values[i] - orc.eg_oracle.values[i]),
            "lam": float(orc.lam.values[i]),
        }
        for i in range(orc.sizes["cell"])
    }
    return f


def _by_structure(rows: dict, key: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for (st, _, _), v in rows.items():
        out.setdefault(st, []).append(v[key])
    return out


def gain_se(row: dict) -> float:
    """An upper bound on the QMC standard error of a gain: √(s.e.(ε_g no KD)² + s.e.(ε_g KD)²)
    (the two estimates share the Sobol points, so their errors are positively correlated and the
    error of the difference is smaller; 0 at K ≤ 3)."""
    return math.hypot(row["eg_se_ridge"], row["eg_se_kd"])


def summary_lines(ds, f: dict) -> list[str]:
    """One line per finding, with its numbers (line 5, along K, where two K or more were
    computed)."""
    rows = f["kd"]

    def span(values):
        v = [x for x in values if math.isfinite(x)]
        return f"{min(v):.2g}…{max(v):.2g}" if v else "n/a"

    gains = _by_structure(rows, "gain")
    closed = _by_structure(rows, "gap_closed")
    temps = _by_structure(rows, "temperature")
    ratio = {st: [v["lam_t"] / v["lam_ridge"] for (s2, _, _), v in rows.items() if s2 == st]
             for st in gains}  # fmt: skip
    t_gain = {st: [v["eg_t1"] - v["eg_kd"] for (s2, _, _), v in rows.items() if s2 == st]
              for st in gains}  # fmt: skip
    line1 = "1. dark knowledge: best-KD gain over the best student without KD, " + "; ".join(
        f"{st} {span(gains[st])} ({span(closed[st])} of the gap to the oracle)" for st in gains
    )
    line2 = "2. optimal temperature T*: " + "; ".join(
        f"{st} {span(temps[st])} (ε_g(T=1) − ε_g(T*) {span(t_gain[st])})" for st in temps
    )
    line3 = "3. inheritance: λ̃ of the best KD student / the teacher's own optimum λ̃*: " + "; ".join(
        f"{st} {span(ratio[st])}" for st in ratio
    )
    orc = f["oracle"]
    line4 = "4. oracle teacher: best student − oracle error " + "; ".join(
        f"{st} α={a:g}: {v['above']:.3g} (copy χ=1,T=1,λ=1e-3: {v['copy_above']:.3g})"
        for (st, a), v in orc.items()
    )
    lines = [line1, line2, line3, line4]
    if f["along_k"]:
        lines.append("5. along K: " + "; ".join(
            f"{st} α={a:g}: " + ", ".join(
                f"K={k} gain {v['gain']:.2g}"
                + (f" ± {gain_se(v):.1g}" if gain_se(v) > 0 else "")
                + f" ({v['gap_closed']:.2g} of the gap) T* {v['temperature']:.2g}"
                for k, v in by_k.items())
            for (st, a), by_k in f["along_k"].items()))  # fmt: skip
    return lines


# ----------------------------------------------------------------------------- figures


def _figure_gain(ds, f: dict, path: Path) -> None:
    from kdtheory import plotting

    along_k = f["along_k"]
    rows = 2 if along_k else 1
    fig, axes = plotting.plt.subplots(rows, 2, figsize=(11, 4 * rows), layout="constrained",
                                      squeeze=False)  # fmt: skip
    kd = ds.where(ds["kind"] == "kd", drop=True)
    for st in dict.fromkeys(kd.structure.values.tolist()):  # along α: (structure, K) at 2 α or more
        for k in sorted(set(kd.K.values.astype(int).tolist())):
            one = kd.where((kd.structure == st) & (kd.K == k), drop=True)
            if one.sizes["cell"] < 2:
                continue
            order = np.argsort(one.alpha.values)
            lab = f"{st}, K={k}"
            axes[0, 0].plot(one.alpha.values[order], one.gain.values[order], "o-", label=lab)
            axes[0, 1].plot(one.alpha.values[order], one.temperature.values[order], "o-",
                            label=lab)  # fmt: skip
    for (st, a), by_k in along_k.items():  # along K, with the QMC standard errors of the gain
        ks = list(by_k)
        lab = f"{st}, α={a:g}"
        axes[1, 0].errorbar(ks, [v["gain"] for v in by_k.values()],
                            yerr=[gain_se(v) for v in by_k.values()], fmt="o-", capsize=3,
                            label=lab)  # fmt: skip
        axes[1, 1].plot(ks, [v["temperature"] for v in by_k.values()], "o-", label=lab)
    gain_label = r"$\varepsilon_g^{\rm no\,KD} - \varepsilon_g^{\rm KD}$ (best of each)"
    for r in range(rows):
        axes[r, 0].set_ylabel(gain_label)
        axes[r, 1].set_ylabel(r"optimal temperature $T^*$")
        axes[r, 1].set_yscale("log")
        for ax in axes[r]:
            ax.set_xlabel(plotting.label("alpha") if r == 0 else "number of classes $K$")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    if along_k:
        for ax in axes[1]:
            ax.set_xticks(sorted({k for by_k in along_k.values() for k in by_k}))
    lines = summary_lines(ds, f)
    plotting.caption(fig, " ".join(lines[:2] + lines[4:]))
    plotting.save(fig, path)


def _figure_oracle(ds, f: dict, path: Path) -> None:
    from kdtheory import plotting

    fig, ax = plotting.plt.subplots(figsize=(6.4, 4.4))
    orc = ds.where(ds["kind"] == "oracle", drop=True)
    for st in dict.fromkeys(orc.structure.values.tolist()):
        one = orc.where(orc.structure == st, drop=True)
        order = np.argsort(one.alpha.values)
        a = one.alpha.values[order]
        (line,) = ax.plot(a, one.eg_kd.values[order], "o-", label=f"{st}: best student")
        ax.plot(a, one.eg_copy.values[order], "s--", color=line.get_color(),
                label=f"{st}: copy (χ=1, T=1, λ=1e-3)")  # fmt: skip
        ax.plot(a, one.eg_oracle.values[order], ":", color=line.get_color(), label=f"{st}: oracle")
    ax.set_xlabel(plotting.label("alpha"))
    ax.set_ylabel(r"$\varepsilon_g$")
    ax.legend(fontsize=8)
    plotting.caption(fig, summary_lines(ds, f)[3])
    plotting.save(fig, path)


FIGURES = {"multiclass_1_gain": _figure_gain, "multiclass_4_oracle": _figure_oracle}


# ----------------------------------------------------------------------------- the job


def grids_of(args) -> Grids:
    """The grids that ``args`` ask for: with ``args.ks`` (``--ks``, e.g. "3,4,5") the K of the
    orthogonal *and* two-close cells (K ≠ 3 at α = 2), the default :class:`Grids` (K = 3, 4 for
    two-close centroids only) otherwise."""
    text = getattr(args, "ks", None)
    if text is None:
        return Grids()
    try:
        ks = tuple(int(x) for x in str(text).split(","))
    except ValueError:
        raise ValueError(
            f"--ks (--figures multiclass) must be comma-separated integers in 2…6, got {text!r}"
        ) from None
    if not ks or len(set(ks)) != len(ks) or not all(2 <= k <= 6 for k in ks):
        raise ValueError(
            f"--ks (--figures multiclass) must be distinct integers in 2…6, got {text!r}"
        )
    return replace(Grids(), ks=ks, k_structures=("orthogonal", "two_close"))


def run_multiclass_figures(args, grids: Grids | None = None) -> list[Path]:
    """Compute, save and plot the set; print one summary line per finding.

    ``args`` carries ``out``, ``jobs``, ``quiet``, ``wait`` and ``ks`` as parsed by
    ``python -m kdtheory.phase_diagram``; ``grids`` overrides :func:`grids_of` ``(args)``.
    """
    from kdtheory import plotting

    g = grids or grids_of(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fix = "choose another --out, or delete multiclass.journal.jsonl there"
    with contextlib.ExitStack() as stack:
        journal = stack.enter_context(
            multiclass_journal(out / "multiclass.journal.jsonl", g,
                               wait=getattr(args, "wait", False), fix=fix)
        )  # fmt: skip
        ds = compute(g, journal, jobs=args.jobs, progress=not getattr(args, "quiet", False))
    f = findings(ds)
    files = plotting.write_figure_set(out, "multiclass", ds, f, FIGURES, summary_lines)
    return files
