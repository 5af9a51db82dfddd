"""Progress bars of the neural CLIs: they count the work that takes the time (teacher steps,
Hyperopt trials, λ-path steps), are cleared when done, and are off when asked to be quiet."""

from dataclasses import replace
from typing import ClassVar

import pytest

torch = pytest.importorskip("torch")
import tqdm as tqdm_package  # noqa: E402

from kdtheory.neural import training  # noqa: E402
from kdtheory.neural.data import make_synthetic  # noqa: E402
from kdtheory.neural.experiments import table  # noqa: E402
from kdtheory.neural.lambda_path import methods  # noqa: E402
from kdtheory.neural.lambda_path import optimiser as lambda_path  # noqa: E402
from kdtheory.neural.lambda_path.methods import Budget, KDExperiment  # noqa: E402
from kdtheory.neural.models import build_model  # noqa: E402


class Recorder(tqdm_package.tqdm):
    """The plain tqdm bar, recording every bar: description, total, final count, options."""

    bars: ClassVar[list] = []

    def __init__(self, *args, **kwargs):
        self.options = dict(kwargs)
        super().__init__(*args, **kwargs)
        Recorder.bars.append(self)


@pytest.fixture
def bars(monkeypatch):
    Recorder.bars = []
    for module in (training, lambda_path, methods):
        monkeypatch.setattr(module, "tqdm", Recorder)
    monkeypatch.setattr(tqdm_package, "tqdm", Recorder)  # the table's bar (imported when run)
    return Recorder.bars


def _experiment(quiet: bool) -> KDExperiment:
    data = make_synthetic(seed=3, n_teacher=50, n_student=20, n_val=40, n_test=200)
    f = 2.0 * torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    budget = Budget(steps=25, lr=0.5, batch_size=10, val_batch_size=40, trials=3)
    make = lambda s: build_model("mlp", (3,), 2, seed=s, hidden=8)  # noqa: E731
    return KDExperiment(make, f, data, budget, quiet=quiet)


def test_hyperopt_counts_trials_and_steps(bars):
    _experiment(quiet=False).run("hyperopt", seed=0)
    trials = [b for b in bars if b.desc == "hyperopt"]
    runs = [b for b in bars if b.desc.startswith("fixed")]
    assert len(trials) == 1 and trials[0].total == 3 and trials[0].n == 3  # one tick per trial
    assert len(runs) == 3 and all(b.total == 25 and b.n == 25 for b in runs)  # one per step
    # cleared when done, and shown (tqdm's own `disable` turns True on close: check the option)
    assert all(b.options["leave"] is False and b.options["disable"] is False for b in bars)


def test_lambda_path_bar_counts_steps_and_quiet_disables(bars):
    _experiment(quiet=False).run("proposed", seed=0)
    assert [(b.desc, b.total, b.n) for b in bars] == [("proposed", 25, 25)]
    bars.clear()
    _experiment(quiet=True).run("hyperopt", seed=0)
    assert bars and all(b.options["disable"] is True for b in bars)


def test_table_shows_teacher_epochs_not_only_methods(bars, tmp_path, monkeypatch):
    small = replace(
        table.RECIPES["synthetic"],
        data_options={"n_teacher": 300, "n_student": 30, "n_val": 50, "n_test": 100},
        teacher_fit=replace(table.RECIPES["synthetic"].teacher_fit, epochs=3),
    )
    monkeypatch.setitem(table.RECIPES, "synthetic", small)
    table.run_table(["synthetic"], 1, methods=["without-kd"], steps=5, out=tmp_path / "t",
                    cache_dir=None, quiet=False)  # fmt: skip
    recipe = table.RECIPES["synthetic"]
    n_teacher = recipe.data_options["n_teacher"]
    steps = recipe.teacher_fit.epochs * -(-n_teacher // recipe.teacher_fit.batch_size)
    teacher = [b for b in bars if b.desc.startswith("teacher")]
    # the teacher's bar moves every SGD step (the table's own bar counts methods only)
    assert len(teacher) == 1 and teacher[0].total == teacher[0].n == steps
    assert teacher[0].options.get("leave") is False
    outer = [b for b in bars if b.options.get("unit") == "run"]
    assert len(outer) == 1 and outer[0].n == 1
