r"""Gorpinich et al.'s comparison of ways to choose the KD metaparameters λ = (λ₁, T).

Every method trains the same student, from the same initial weights and minibatch order, for the
same number of SGD steps on L_train = λ₁ CE(y, σ(g)) + (1 − λ₁) CE(σ(f/T), σ(g/T)); they differ
only in how λ is chosen:

``without-kd``  λ₁ = 1 (plain cross-entropy; T is irrelevant).
``naive``       λ₁ = 0.5, T = 1.
``random``      λ₁ ~ U(0, 1), T ~ U(0.1, 10), drawn from the run's seed.
``gradient``    λ follows the one-step hypergradient at every step (rule (2)).
``hyperopt``    Hyperopt's TPE over the same box; each trial is a whole training run with λ fixed
                and the full step budget, scored by L_val = CE(y, σ(g/T_val)) on the validation
                split; the best trial's student is reported.
``proposed``    Algorithm 1: e₁ hypergradient steps, a least-squares line through the λ path,
                e₂ steps with λ on the line, repeated.

The external criterion is the test accuracy. Usage in a notebook::

    exp = KDExperiment(lambda seed: build_model("mlp", (3,), 2, seed=seed, hidden=32),
                       f_train, data, Budget(steps=1000, lr=0.5, batch_size=30))
    res = exp.run("proposed", seed=0)
    res.test_acc, res.lambda1, res.temperature, res.trajectory["lambda1"]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kdtheory.neural.data import DataSplits
from kdtheory.neural.lambda_path.optimiser import (
    TEMPERATURE_BOX,
    LambdaPathOptimizer,
    LambdaPathResult,
)
from kdtheory.neural.losses import student_temperature

__all__ = ["LABELS", "METHODS", "Budget", "KDExperiment", "MethodResult"]

METHODS = ("without-kd", "naive", "random", "gradient", "hyperopt", "proposed")
LABELS = {
    "without-kd": "Without distillation",
    "naive": "Naive metaparameters",
    "random": "Random metaparameters",
    "gradient": "Gradient-based optimization",
    "hyperopt": "Hyperopt",
    "proposed": "Proposed",
}
FIXED = {"without-kd": (1.0, 1.0), "naive": (0.5, 1.0)}


@dataclass(frozen=True)
class Budget:
    """Training settings shared by every method on one data set.

    Attributes
    ----------
    steps : int
        SGD steps of w per training run (every method; every Hyperopt trial).
    lr : float
        γ, the SGD learning rate of w (and the step unrolled by the hypergradient).
    batch_size, val_batch_size : int
        Minibatch sizes of L_train and of L_val in the hypergradient.
    meta_lr : float
        γ_λ, Adam's learning rate on θ = (logit λ₁, log T).
    start : (float, float)
        (λ₁, T) where the gradient-based and proposed methods start.
    e1, e2 : int
        Algorithm 1's gradient and linear-prediction steps per cycle.
    trials : int
        Hyperopt evaluations (each a full training run of ``steps``).
    t_val : float
        T_val of L_val.
    tempered : str
        Which softmaxes the soft term tempers, ``"both"`` or ``"teacher"``
        (:data:`~kdtheory.neural.losses.TEMPERED`).
    """

    steps: int
    lr: float
    batch_size: int
    val_batch_size: int = 512
    meta_lr: float = 0.05
    start: tuple[float, float] = (0.5, 1.0)
    e1: int = 10
    e2: int = 10
    trials: int = 8
    t_val: float = 1.0
    tempered: str = "both"

    def __post_init__(self) -> None:
        student_temperature(1.0, self.tempered)  # refuses an unknown convention
        for name in ("steps", "batch_size", "val_batch_size", "e1", "e2", "trials"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} must be an integer ≥ 1; got {v!r}")
        for name in ("lr", "meta_lr", "t_val"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number > 0; got {v!r}")
        lam1, temp = self.start
        if not (0.0 <= lam1 <= 1.0 and TEMPERATURE_BOX[0] <= temp <= TEMPERATURE_BOX[1]):
            raise ValueError(
                f"start must be (λ₁ in [0, 1], T in {list(TEMPERATURE_BOX)}); got {self.start!r}"
            )


@dataclass
class MethodResult:
    """One method's run: accuracy, the λ it ended with, and its cost.

    ``train_steps`` counts SGD steps of w over all training runs (Hyperopt: trials × steps),
    ``hyper_steps`` the steps that computed a hypergradient, ``wall_time_s`` the training time
    (evaluation excluded). ``trajectory`` holds λ₁ and T per step (gradient and proposed).
    """

    method: str
    seed: int
    test_acc: float
    test_loss: float
    val_acc: float
    val_loss: float
    lambda1: float
    temperature: float
    train_steps: int
    hyper_steps: int
    wall_time_s: float
    trials: int = 1
    trajectory: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class KDExperiment:
    """A student family, the cached teacher logits and the data: run any method of ``METHODS``.

    Parameters
    ----------
    make_student : callable
        ``make_student(seed) -> nn.Module``; the same seed must give the same initial weights (as
        :func:`~kdtheory.neural.models.build_model` with ``seed=``). No batch norm.
    teacher_logits : Tensor
        f on ``data.train.x``, shape (n, K), computed once.
    data : DataSplits
        Training, validation and test splits.
    budget : Budget
        Steps, learning rates, batch sizes, Algorithm 1's e₁/e₂, Hyperopt trials.
    device : torch.device, str or None
        Where to train (default: CPU).
    quiet : bool
        No progress bars (default); otherwise a bar per training run that moves every step and,
        for Hyperopt, one over its trials.
    """

    def __init__(
        self,
        make_student: Callable[[int], nn.Module],
        teacher_logits: torch.Tensor,
        data: DataSplits,
        budget: Budget,
        *,
        device: torch.device | str | None = None,
        quiet: bool = True,
    ) -> None:
        self.make_student = make_student
        self.quiet = quiet
        self.device = torch.device(device or "cpu")
        self.data = data.to(self.device)
        self.f = teacher_logits.to(self.device)
        self.budget = budget

    def optimizer(
        self, mode: str, lambda1: float, temperature: float, seed: int
    ) -> LambdaPathOptimizer:
        """A :class:`LambdaPathOptimizer` on a fresh student (initial weights from ``seed``)."""
        b = self.budget
        return LambdaPathOptimizer(
            self.make_student(seed).to(self.device), self.f, self.data.train, self.data.val,
            mode=mode, lambda1=lambda1, temperature=temperature, lr=b.lr, meta_lr=b.meta_lr,
            batch_size=b.batch_size, val_batch_size=b.val_batch_size, e1=b.e1, e2=b.e2,
            t_val=b.t_val, seed=seed, device=self.device, tempered=b.tempered,
        )  # fmt: skip

    def _train(
        self, mode: str, lambda1: float, temperature: float, seed: int
    ) -> tuple[LambdaPathOptimizer, LambdaPathResult]:
        opt = self.optimizer(mode, lambda1, temperature, seed)
        desc = f"{mode} λ₁={lambda1:.2f} T={temperature:.2f}" if mode == "fixed" else mode
        return opt, opt.run(self.budget.steps, quiet=self.quiet, desc=desc)

    def _result(
        self, method: str, seed: int, opt: LambdaPathOptimizer, res: LambdaPathResult, **extra
    ) -> MethodResult:
        test_loss, test_acc = opt.evaluate(self.data.test)
        values = dict(
            method=method, seed=seed, test_acc=test_acc, test_loss=test_loss,
            val_acc=res.val_acc, val_loss=res.val_loss, lambda1=res.lambda1,
            temperature=res.temperature, train_steps=res.train_steps,
            hyper_steps=res.hyper_steps, wall_time_s=res.wall_time_s,
        )  # fmt: skip
        values.update(extra)
        return MethodResult(**values)

    def run(self, method: str, seed: int = 0) -> MethodResult:
        """Train with ``method`` (one of ``METHODS``); ``seed`` fixes weights, batches and draws."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
        if method in FIXED:
            return self._result(method, seed, *self._train("fixed", *FIXED[method], seed))
        if method == "random":
            rng = np.random.default_rng(seed)
            lam1, temp = float(rng.uniform(0.0, 1.0)), float(rng.uniform(*TEMPERATURE_BOX))
            return self._result(method, seed, *self._train("fixed", lam1, temp, seed))
        if method == "hyperopt":
            return self._hyperopt(seed)
        opt, res = self._train(method, *self.budget.start, seed)
        rec = res.record
        traj = {"step": rec.step, "lambda1": rec.lambda1, "temperature": rec.temperature}
        return self._result(method, seed, opt, res, trajectory=traj)

    def _hyperopt(self, seed: int) -> MethodResult:
        """TPE over λ₁ ∈ [0, 1], T ∈ [0.1, 10]; minimise the final L_val of a full training run."""
        from hyperopt import STATUS_OK, Trials, fmin, hp, tpe

        best: dict = {}
        wall = 0.0
        steps = 0
        trials = tqdm(
            total=self.budget.trials, desc="hyperopt", unit="trial", leave=False, disable=self.quiet
        )

        def objective(point: dict) -> dict:
            nonlocal wall, steps
            opt, res = self._train("fixed", float(point["lambda1"]), float(point["T"]), seed)
            trials.update(1)
            wall += res.wall_time_s
            steps += res.train_steps
            loss = res.val_loss if math.isfinite(res.val_loss) else 1e30
            if not best or loss < best["loss"]:
                best.update(loss=loss, opt=opt, res=res)
            return {"loss": loss, "status": STATUS_OK}

        space = {"lambda1": hp.uniform("lambda1", 0.0, 1.0), "T": hp.uniform("T", *TEMPERATURE_BOX)}
        t0 = time.perf_counter()
        try:
            fmin(
                objective, space, algo=tpe.suggest, max_evals=self.budget.trials, trials=Trials(),
                rstate=np.random.default_rng(seed), show_progressbar=False,
            )  # fmt: skip
        finally:
            trials.close()
        overhead = time.perf_counter() - t0 - wall  # TPE's own time
        return self._result(
            "hyperopt", seed, best["opt"], best["res"], train_steps=steps, hyper_steps=0,
            wall_time_s=wall + max(overhead, 0.0), trials=self.budget.trials,
        )  # fmt: skip
