r"""Binary tasks on real images and their Gaussian model: the class means and pooled covariance.

The one place that turns labelled images into the model of docs/theory.md with a generic covariance,
x = y v/√N + Σ^{1/2} z.  For a pair of classes (``positive`` → y = +1, ``negative`` → y = −1):

1. *Pixels.*  Images are flattened to vectors of raw pixel values.  Pixels that are constant on the
   pair's training set carry nothing and are dropped; N is the number kept.
2. *Standardisation*, on the pair's full training set: every kept pixel j is mapped to
   (p_j − mean_j)/std_j with the training set's mean and standard deviation (the test images with
   the same numbers).
3. *Centring.*  With the class means c_± of the standardised training images, every input is shifted
   by −(c₊ + c₋)/2 (the model's bias is unpenalised, so the shift changes no fit), which leaves the
   class means at ±v/√N with v = √N (c₊ − c₋)/2.
4. *Covariance.*  The pooled within-class covariance Σ = [Σ_{y_μ=+1} (x_μ − c₊)(x_μ − c₊)ᵀ +
   Σ_{y_μ=−1} (x_μ − c₋)(x_μ − c₋)ᵀ]/(M₊ + M₋ − 2), the maximum-likelihood-unbiased estimate of a
   covariance shared by both classes.  Its spectrum σ_i and the projections μ_i = v·e_i make the
   :class:`~kdtheory.problem.Spectrum` (``Spectrum.from_covariance``); where Σ is singular (fewer
   images than pixels, or a pixel constant within both classes) its zero modes are lifted to
   ``ridge``·tr Σ/N.
5. *Basis.*  Every input is rotated into Σ's eigenbasis, x ← Eᵀx (E the eigenvectors, in the order of
   the spectrum).  The fits are rotation-equivariant (a ridge on ‖w‖², an unpenalised bias), so this
   changes no prediction; it puts the real images in the basis in which ``simulations.sample`` draws
   the Gaussian surrogate, so that m = w·v/N and q = wᵀΣw/(NΔ) have one formula for both
   (``simulations.data.overlap``).

:func:`estimate` does steps 1–5 from arrays of images; :func:`fashion_mnist_task` and
:func:`digits_task` load the images.  The result, a :class:`RealTask`, also draws training sets of
M = αN real images at class fraction ρ with labels flipped at rate θ (:meth:`RealTask.draw`) and
measures a classifier's error on the real test images, weighted to the class fraction ρ
(:meth:`RealTask.test_error`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdtheory.problem import GaussianMixture, Spectrum, check_real

__all__ = [
    "FASHION_MNIST_CLASSES",
    "RIDGE",
    "TASKS",
    "ClassMoments",
    "RealTask",
    "class_moments",
    "digits_task",
    "estimate",
    "fashion_mnist_task",
    "standardise",
]

FASHION_MNIST_CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "ankle boot")  # fmt: skip
#: the binary Fashion-MNIST tasks: name → (positive class, negative class)
TASKS = {
    "trouser-bag": (1, 8),  # easy
    "sneaker-boot": (7, 9),  # middle
    "tshirt-shirt": (0, 6),  # hard
}
#: relative floor of Σ's eigenvalues (``Spectrum.from_covariance``'s ``ridge``)
RIDGE = 1e-6


@dataclass(frozen=True, eq=False)
class RealTask:
    r"""A binary task on real images, standardised, centred and rotated into Σ's eigenbasis.

    Attributes
    ----------
    name : str
        The task's name.
    x_train, x_test : ndarray, shape (M_train, N), (M_test, N)
        The inputs after steps 1–5 of the module (float64, C-contiguous).
    y_train, y_test : ndarray
        Class labels ±1.
    spectrum : Spectrum
        σ_i (decreasing, zero modes lifted) and μ_i = v·e_i of the pooled within-class covariance.
    pixels : ndarray of int
        The kept pixels' indices in the flattened image.
    class_covariances : ndarray, shape (2, N, N)
        The covariances Σ₊, Σ₋ of each class on its own (in the same basis; Σ is their pooled
        average): for the diagnostic :meth:`class_gaussian_error`, which the theory does not use.
    info : dict
        Provenance and sizes (classes, counts, the ridge, the rank of Σ before the lift).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    spectrum: Spectrum
    pixels: np.ndarray
    class_covariances: np.ndarray
    info: dict

    @property
    def n(self) -> int:
        """N, the number of kept pixels."""
        return self.x_train.shape[1]

    @property
    def counts(self) -> tuple[int, int]:
        """Training images of the positive and the negative class."""
        return int((self.y_train > 0).sum()), int((self.y_train < 0).sum())

    def max_alpha(self, rho: float) -> float:
        """M_max/N, M_max the largest M with round(ρM) ≤ positives and M − round(ρM) ≤ negatives:
        the largest α at which :meth:`draw` finds its images."""
        pos, neg = self.counts
        m = np.arange(pos + neg + 1)
        m_pos = np.round(rho * m)  # numpy rounds as Python's round (half to even)
        return float(m[(m_pos <= pos) & (m - m_pos <= neg)].max()) / self.n

    def mixture(self, alpha: float, rho: float = 0.5, flip: float = 0.0) -> GaussianMixture:
        """The Gaussian model of this task: ``GaussianMixture(alpha, rho, flip=flip,
        covariance=self.spectrum)``."""
        return GaussianMixture(alpha, rho, flip=flip, covariance=self.spectrum)

    def draw(self, alpha: float, rho: float, flip: float, rng: np.random.Generator):
        r"""A training set of M = round(αN) real images: round(ρM) drawn without replacement from
        the positive class and the rest from the negative one, then each training label flipped
        with probability θ = ``flip`` (clean labels y kept for reference).

        Returns
        -------
        simulations.TrainingSet
            x (M × N), y, v = the projections μ_i (the model's mean in this basis), ŷ.
        """
        from simulations.data import TrainingSet

        data = self.mixture(alpha, rho, flip)  # validates α, ρ, θ
        m = round(data.alpha * self.n)
        m_pos = round(data.rho * m)
        pos, neg = self.counts
        if m < 2 or not (m_pos <= pos and m - m_pos <= neg):
            raise ValueError(
                f"alpha must give 2 ≤ M = αN with round(ρM) ≤ {pos} positives and the rest ≤ "
                f"{neg} negatives (alpha ≤ {self.max_alpha(data.rho):.4g} at rho = {data.rho:g}), "
                f"got alpha = {alpha!r}"
            )
        idx = np.concatenate(
            [
                rng.choice(np.flatnonzero(self.y_train > 0), m_pos, replace=False),
                rng.choice(np.flatnonzero(self.y_train < 0), m - m_pos, replace=False),
            ]
        )
        idx = idx[rng.permutation(m)]
        y = self.y_train[idx]
        y_hat = np.where(rng.random(m) < data.flip, -y, y) if data.flip > 0.0 else y
        v = np.array(self.spectrum.mean_projections)
        return TrainingSet(x=np.ascontiguousarray(self.x_train[idx]), y=y, v=v, y_hat=y_hat)

    def class_gaussian_error(self, w: np.ndarray, b: float, rho: float = 0.5) -> float:
        r"""The exact error of sign(w·x/√N + b) on Gaussian data with the task's class means and
        *class-wise* covariances, x | y ~ N(y v/√N, Σ_y): ε = ρ Φ(−(m + b)/s₊) + (1 − ρ)
        Φ(−(m − b)/s₋), m = w·v/N, s_y² = wᵀΣ_y w/N.  Against :meth:`test_error` it tells a gap
        due to Σ₊ ≠ Σ₋ from one due to non-Gaussian tails."""
        from scipy.special import ndtr

        rho = check_real("rho", rho, 0.0, 1.0, True, True)
        m = float(w @ self.spectrum.mean_projections) / self.n
        s_pos, s_neg = (math.sqrt(float(w @ c @ w) / self.n) for c in self.class_covariances)
        return float(rho * ndtr(-(m + b) / s_pos) + (1.0 - rho) * ndtr(-(m - b) / s_neg))

    def test_error(self, w: np.ndarray, b: float, rho: float = 0.5) -> tuple[float, float]:
        r"""The error of sign(w·x/√N + b) on the real test images at class fraction ρ, and its
        standard error: ε = ρ ε₊ + (1 − ρ) ε₋ with ε_± the error rates on the test images of each
        class (the test set reweighted to ρ); s.e.² = Σ ρ_±² ε_±(1 − ε_±)/M_±."""
        rho = check_real("rho", rho, 0.0, 1.0, True, True)
        h = self.x_test @ w / math.sqrt(self.n) + b
        out, var = 0.0, 0.0
        for sign, weight in ((1.0, rho), (-1.0, 1.0 - rho)):
            cls = self.y_test == sign
            err = float(np.mean(sign * h[cls] <= 0.0))
            out += weight * err
            var += weight**2 * err * (1.0 - err) / cls.sum()
        return out, math.sqrt(var)


def standardise(
    x_train: np.ndarray, x_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Steps 1–2 of the module: drop the pixels constant on the training set, then map every
    kept pixel j to (p_j − mean_j)/std_j with the training set's mean and standard deviation.

    Parameters
    ----------
    x_train, x_test : array_like, shape (M, …)
        Images (flattened), raw pixel values, finite.

    Returns
    -------
    x_train, x_test : ndarray, shape (M, N), float64
        The standardised inputs (N = the kept pixels).
    pixels : ndarray of int
        The kept pixels' indices in the flattened image.
    """
    xtr = np.asarray(x_train, dtype=np.float64).reshape(len(x_train), -1)
    xte = np.asarray(x_test, dtype=np.float64).reshape(len(x_test), -1)
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"x_test must have {xtr.shape[1]} pixels per image, got {xte.shape[1]}")
    if not (np.all(np.isfinite(xtr)) and np.all(np.isfinite(xte))):
        raise ValueError("x_train and x_test must be finite")
    std = xtr.std(axis=0)
    pixels = np.flatnonzero(std > 0.0)
    if pixels.size < 10:
        raise ValueError(f"x_train has {pixels.size} non-constant pixels; at least 10 are needed")
    mean, std = xtr[:, pixels].mean(axis=0), std[pixels]
    return (xtr[:, pixels] - mean) / std, (xte[:, pixels] - mean) / std, pixels


@dataclass(frozen=True, eq=False)
class ClassMoments:
    r"""The first two moments of labelled data, per class and pooled.

    Attributes
    ----------
    classes : ndarray, shape (K,)
        The labels, in the order of the rows below.
    counts : ndarray of int, shape (K,)
        M_c, the number of samples of each class.
    means : ndarray, shape (K, N)
        The class means c_k = (1/M_k) Σ_{y_μ = k} x_μ.
    covariances : ndarray, shape (K, N, N)
        Each class's own covariance Σ_k = Σ_{y_μ = k} (x_μ − c_k)(x_μ − c_k)ᵀ/(M_k − 1).
    pooled : ndarray, shape (N, N)
        The pooled within-class covariance Σ = Σ_μ (x_μ − c_{y_μ})(x_μ − c_{y_μ})ᵀ/(M − K)
        = Σ_k (M_k − 1) Σ_k/(M − K).
    """

    classes: np.ndarray
    counts: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    pooled: np.ndarray


def class_moments(x: np.ndarray, labels: np.ndarray, classes=None) -> ClassMoments:
    r"""Class means, class covariances and the pooled within-class covariance of ``x`` (M × N)
    with labels ``labels`` (M): the one estimator of these moments from real data (binary tasks
    here; a K-class mixture takes the same means, e.g. ``MulticlassMixture.from_class_means``).

    ``classes``: the labels to use, in order (default: the sorted distinct labels); each must
    have at least 2 samples, and no other label may occur.
    """
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ValueError(f"x must be M×N and labels of length M, got {x.shape} and {labels.shape}")
    classes = np.unique(labels) if classes is None else np.asarray(classes)
    members = [labels == c for c in classes]
    counts = np.array([int(m.sum()) for m in members])
    if len(classes) < 2 or counts.min() < 2 or counts.sum() != len(labels):
        raise ValueError(f"labels must hold ≥ 2 classes among {classes.tolist()} with ≥ 2 samples "
                         f"each and no other label; got counts {counts.tolist()} of {len(labels)}")  # fmt: skip
    means = np.stack([x[m].mean(axis=0) for m in members])
    centred = x.copy()
    for m, c in zip(members, means, strict=True):
        centred[m] -= c
    pooled = centred.T @ centred / (len(labels) - len(classes))
    covariances = np.stack([np.cov(centred[m], rowvar=False) for m in members])
    return ClassMoments(classes, counts, means, covariances, pooled)


def estimate(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    ridge: float = RIDGE,
    info: dict | None = None,
) -> RealTask:
    r"""Steps 1–5 of the module: standardise, centre, estimate v and Σ, rotate.

    Parameters
    ----------
    name : str
        The task's name.
    x_train, x_test : array_like, shape (M, …)
        Images (any shape per image; flattened), raw pixel values.
    y_train, y_test : array_like of ±1
        Class labels.
    ridge : float
        Zero modes of Σ are lifted to ``ridge``·tr Σ/N (0 < ridge ≤ 1).
    info : dict, optional
        Provenance added to :attr:`RealTask.info`.
    """
    xtr = np.asarray(x_train, dtype=np.float64).reshape(len(x_train), -1)
    xte = np.asarray(x_test, dtype=np.float64).reshape(len(x_test), -1)
    ytr, yte = np.asarray(y_train, dtype=np.float64), np.asarray(y_test, dtype=np.float64)
    for nm, y, x in (("y_train", ytr, xtr), ("y_test", yte, xte)):
        if y.shape != (x.shape[0],) or not np.all(np.abs(y) == 1.0):
            raise ValueError(f"{nm} must hold one label ±1 per image")
        if min((y > 0).sum(), (y < 0).sum()) < 2:
            raise ValueError(f"{nm} must hold at least 2 images of each class")
    xtr, xte, pixels = standardise(xtr, xte)
    n = pixels.size
    moments = class_moments(xtr, ytr, classes=(1.0, -1.0))
    c_pos, c_neg = moments.means
    mid = 0.5 * (c_pos + c_neg)
    xtr -= mid
    xte -= mid
    cov, class_cov = moments.pooled, moments.covariances
    v = math.sqrt(n) * 0.5 * (c_pos - c_neg)
    spectrum = Spectrum.from_covariance(cov, v, ridge=ridge)
    sigma, basis = np.linalg.eigh(0.5 * (cov + cov.T))
    basis = basis[:, np.argsort(sigma)[::-1]]  # the order of Spectrum.from_covariance
    rank = int((sigma > ridge * np.mean(np.maximum(sigma, 0.0))).sum())
    return RealTask(
        name=name,
        x_train=np.ascontiguousarray(xtr @ basis),
        y_train=ytr,
        x_test=np.ascontiguousarray(xte @ basis),
        y_test=yte,
        spectrum=spectrum,
        pixels=pixels,
        class_covariances=np.stack([basis.T @ c @ basis for c in class_cov]),
        info={**(info or {}), "n": n, "train": [int((ytr > 0).sum()), int((ytr < 0).sum())],
              "test": [int((yte > 0).sum()), int((yte < 0).sum())], "ridge": ridge,
              "rank": rank, "delta": spectrum.mean_eigenvalue,
              "whitened_signal": spectrum.whitened_signal, "signal": spectrum.signal},
    )  # fmt: skip


def _pair(x_tr, y_tr, x_te, y_te, pos: int, neg: int):
    keep_tr, keep_te = np.isin(y_tr, (pos, neg)), np.isin(y_te, (pos, neg))
    return (x_tr[keep_tr], np.where(y_tr[keep_tr] == pos, 1.0, -1.0),
            x_te[keep_te], np.where(y_te[keep_te] == pos, 1.0, -1.0))  # fmt: skip


def fashion_mnist_task(
    name: str, root: str | Path | None = None, *, ridge: float = RIDGE, arrays=None
) -> RealTask:
    """The binary Fashion-MNIST task ``name`` (a key of :data:`TASKS`) on the full training set
    of the pair (12 000 images, N ≤ 784 pixels) and its test images (2 000).

    ``arrays``: the four arrays of :func:`kdtheory.datafiles.fashion_mnist_arrays`, if already read.
    Raises ``DatasetNotFoundError`` when the files are absent.
    """
    from kdtheory.datafiles import fashion_mnist_arrays

    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {name!r}")
    pos, neg = TASKS[name]
    arrays = fashion_mnist_arrays(root) if arrays is None else arrays
    info = {"dataset": "fashion-mnist",
            "classes": [FASHION_MNIST_CLASSES[pos], FASHION_MNIST_CLASSES[neg]]}  # fmt: skip
    return estimate(name, *_pair(*arrays, pos, neg), ridge=ridge, info=info)


def digits_task(
    positive: int = 4, negative: int = 8, *, seed: int = 0, ridge: float = RIDGE
) -> RealTask:
    """Two classes of scikit-learn's bundled 8×8 digits (N ≤ 64 pixels; about 360 images, half of
    each class drawn by ``seed`` for training, the rest for testing): the embedded small task."""
    from sklearn.datasets import load_digits

    if not (positive in range(10) and negative in range(10) and positive != negative):
        raise ValueError(f"positive and negative must be two different digits 0…9, got "
                         f"{positive!r}, {negative!r}")  # fmt: skip
    d = load_digits()
    rng = np.random.default_rng(seed)
    train = np.zeros(len(d.target), dtype=bool)
    for k in (positive, negative):
        members = np.flatnonzero(d.target == k)
        train[rng.choice(members, members.size // 2, replace=False)] = True
    x, y = d.data, d.target
    info = {"dataset": "digits", "classes": [str(positive), str(negative)], "seed": seed}
    return estimate(f"digits-{positive}-{negative}",
                    *_pair(x[train], y[train], x[~train], y[~train], positive, negative),
                    ridge=ridge, info=info)  # fmt: skip
