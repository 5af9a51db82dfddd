"""The comparison methods and the table CLI: same start for every method, Hyperopt's bookkeeping,
skipped data sets reported, resume without recomputation, bad input refused."""

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kdtheory.neural import table  # noqa: E402
from kdtheory.neural.data import make_synthetic  # noqa: E402
from kdtheory.neural.methods import METHODS, Budget, KDExperiment  # noqa: E402
from kdtheory.neural.models import build_model  # noqa: E402


def _experiment(steps=30, trials=3):
    data = make_synthetic(seed=3, n_teacher=50, n_student=20, n_val=40, n_test=200)
    f = 2.0 * torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    budget = Budget(steps=steps, lr=0.5, batch_size=10, val_batch_size=40, trials=trials)
    return KDExperiment(lambda s: build_model("mlp", (3,), 2, seed=s, hidden=8), f, data, budget)


def test_budget_refuses_bad_values():
    with pytest.raises(ValueError, match="steps"):
        Budget(steps=0, lr=0.1, batch_size=8)
    with pytest.raises(ValueError, match="lr"):
        Budget(steps=5, lr=-1.0, batch_size=8)
    with pytest.raises(ValueError, match="start"):
        Budget(steps=5, lr=0.1, batch_size=8, start=(1.5, 1.0))


def test_methods_share_the_start_and_differ_only_in_lambda():
    exp = _experiment()
    plain = exp.run("without-kd", seed=2)
    assert (plain.lambda1, plain.hyper_steps, plain.train_steps) == (1.0, 0, 30)
    # the same method and seed reproduce exactly (CPU, deterministic kernels)
    again = exp.run("without-kd", seed=2)
    assert again.test_acc == plain.test_acc and again.val_loss == plain.val_loss
    # random: λ₁ ~ U(0, 1), T ~ U(0.1, 10) from the run's seed
    rnd = exp.run("random", seed=2)
    rng = np.random.default_rng(2)
    assert (rnd.lambda1, rnd.temperature) == (rng.uniform(0, 1), rng.uniform(0.1, 10))
    naive = exp.run("naive", seed=2)
    assert (naive.lambda1, naive.temperature) == (0.5, 1.0)
    grad = exp.run("gradient", seed=2)
    prop = exp.run("proposed", seed=2)
    assert grad.hyper_steps == 30 and prop.hyper_steps == 20  # e₁ = e₂ = 10: 10 + 10 of 30 steps
    assert len(grad.trajectory["lambda1"]) == 30
    assert grad.trajectory["lambda1"][0] == pytest.approx(0.5, rel=1e-6)  # Budget.start


def test_hyperopt_reports_its_best_trial_and_whole_budget(monkeypatch):
    exp = _experiment(trials=3)
    seen = []
    real = KDExperiment._train

    def recording(self, mode, lambda1, temperature, seed):
        opt, res = real(self, mode, lambda1, temperature, seed)
        seen.append((res.val_loss, lambda1, temperature))
        return opt, res

    monkeypatch.setattr(KDExperiment, "_train", recording)
    res = exp.run("hyperopt", seed=1)
    assert res.train_steps == 3 * 30 and res.trials == 3 and len(seen) == 3
    # the reported trial is the one with the lowest validation loss
    assert (res.val_loss, res.lambda1, res.temperature) == min(seen)
    monkeypatch.undo()
    assert 0.0 <= res.lambda1 <= 1.0 and 0.1 <= res.temperature <= 10.0
    # retraining with the reported λ from the same seed gives the reported student
    opt = exp.optimizer("fixed", res.lambda1, res.temperature, 1)
    r = opt.run(30)
    assert r.val_loss == res.val_loss
    assert opt.evaluate(exp.data.test)[1] == res.test_acc


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        _experiment().run("grid")


@pytest.fixture
def small_recipes(monkeypatch):
    syn = table.RECIPES["synthetic"]
    small = table.replace(
        syn,
        data_options={"n_teacher": 200, "n_student": 20, "n_val": 40, "n_test": 200},
        teacher_fit=table.replace(syn.teacher_fit, epochs=2),
        budget=table.replace(syn.budget, steps=20, batch_size=10, val_batch_size=40, trials=2),
    )
    monkeypatch.setitem(table.RECIPES, "synthetic", small)


def test_table_cli_writes_table_reports_skipped_and_resumes(tmp_path, small_recipes, monkeypatch):
    out = tmp_path / "t"
    argv = [
        "--datasets", "synthetic,fashion-mnist", "--runs", "2", "--quiet", "--out", str(out),
        "--root", f"fashion-mnist={tmp_path / 'absent'}", "--cache-dir", str(tmp_path / "c"),
    ]  # fmt: skip
    assert table.main(argv) == 0
    rows = list(csv.DictReader(open(out / "table.csv", encoding="utf-8")))
    ok = [r for r in rows if r["status"] == "ok"]
    assert [r["method"] for r in ok] == list(METHODS)
    assert all(r["runs"] == "2" for r in ok)
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert [r["dataset"] for r in skipped] == ["fashion-mnist"] and "absent" in skipped[0]["reason"]
    md = (out / "table.md").read_text(encoding="utf-8")
    assert "Skipped" in md and "Fashion-MNIST" in md and "Proposed" in md
    runs = list(csv.DictReader(open(out / "runs.csv", encoding="utf-8")))
    assert len(runs) == 2 * len(METHODS)
    # the table's mean and best are those of the per-run accuracies
    for r in ok:
        accs = [float(x["test_acc"]) for x in runs if x["method"] == r["method"]]
        assert float(r["acc_mean"]) == pytest.approx(np.mean(accs), rel=1e-12)
        assert float(r["acc_best"]) == max(accs)
    assert (out / "trajectories.png").stat().st_size > 0
    journal = (out / "journal-synthetic.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(journal) == 1 + 2 * len(METHODS)

    # rerun with one more run: only run 2 is trained, the journal keeps the first two
    calls = []
    real = table.KDExperiment.run

    def counting(self, method, seed=0):
        calls.append((method, seed))
        return real(self, method, seed)

    monkeypatch.setattr(table.KDExperiment, "run", counting)
    assert table.main([*argv[:3], "3", *argv[4:]]) == 0
    assert sorted(calls) == sorted((m, 2) for m in METHODS)
    lines = (out / "journal-synthetic.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines[: len(journal)] == journal
    assert json.loads(lines[-1])["index"][1] == 2


def test_table_student_learns_from_a_subset_and_teacher_from_all(
    tmp_path, monkeypatch, fashion_root
):
    root, _ = fashion_root
    fm = table.RECIPES["fashion-mnist"]
    small = table.replace(
        fm,
        data_options={"val_size": 10},
        teacher="mlp",
        teacher_fit=table.replace(fm.teacher_fit, epochs=1),
        student_options={"hidden": 8},
        student_size=10,
        budget=table.replace(fm.budget, steps=5, batch_size=5, val_batch_size=10),
    )
    monkeypatch.setitem(table.RECIPES, "fashion-mnist", small)
    seen = {}
    real = table.load_or_train_teacher

    def recording(data, *args, **kwargs):
        seen["teacher_n"] = len(data.teacher_split)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(table, "load_or_train_teacher", recording)
    out = tmp_path / "t"
    argv = ["--datasets", "fashion-mnist", "--runs", "1", "--methods", "without-kd,naive", "--quiet",
            "--out", str(out), "--root", f"fashion-mnist={root}", "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    assert table.main(argv) == 0
    # 40 generated images − 10 for validation: the teacher sees all 30, the student 1 per class
    assert seen["teacher_n"] == 30
    header = json.loads((out / "journal-fashion-mnist.jsonl").read_text().splitlines()[0])
    assert header["recipe"]["student_size"] == 10
    data = table._load(small, 0, {"fashion-mnist": str(root)})
    assert len(data.train) == 10 and sorted(data.train.y.tolist()) == list(range(10))


@pytest.mark.parametrize(
    "argv",
    [
        ["--datasets", "mnist"],
        ["--datasets", ""],
        ["--methods", "without-kd,grid"],
        ["--runs", "0"],
        ["--root", "imagenet=/x"],
        ["--device", "tpu"],
    ],
)
def test_table_bad_input_exits_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        table.main([*argv, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
