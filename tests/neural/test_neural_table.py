"""The comparison methods and the table CLI: same start for every method, Hyperopt's bookkeeping,
skipped data sets reported, resume without recomputation, bad input refused."""

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kdtheory.neural.data import make_synthetic  # noqa: E402
from kdtheory.neural.experiments import table  # noqa: E402
from kdtheory.neural.lambda_path.methods import METHODS, Budget, KDExperiment  # noqa: E402
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
    with pytest.raises(ValueError, match="tempered must be one of both, teacher"):
        Budget(steps=5, lr=0.1, batch_size=8, tempered="student")


def test_budget_tempered_reaches_the_optimiser_and_its_steps():
    """Budget(tempered="teacher"): the optimiser's plain step is w − γ ∇_w L with the student's
    plain softmax in the soft term."""
    exp = _experiment()
    exp.budget = Budget(steps=1, lr=0.5, batch_size=20, tempered="teacher")
    opt = exp.optimizer("fixed", 0.25, 3.0, seed=0)
    assert opt.tempered == "teacher"
    w0 = [p.detach().clone() for p in opt.model.parameters()]
    x, y, f = exp.data.train.x, exp.data.train.y, exp.f  # batch 20 = the whole training split
    g = opt.model(x)
    soft = -(torch.softmax(f / 3.0, 1) * torch.log_softmax(g, 1)).sum(1).mean()
    hard = torch.nn.functional.cross_entropy(g, y)
    grads = torch.autograd.grad(0.25 * hard + 0.75 * soft, list(opt.model.parameters()))
    opt._plain_step(0.25, 3.0)
    for p, p0, gr in zip(opt.model.parameters(), w0, grads, strict=True):
        torch.testing.assert_close(p.detach(), p0 - 0.5 * gr, rtol=1e-5, atol=1e-6)  # float32


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
        ["--tempered", "student"],
    ],
)
def test_table_bad_input_exits_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        table.main([*argv, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------- failures and journals ---


def _synthetic_argv(out, *extra):
    return ["--datasets", "synthetic", "--runs", "1", "--methods", "without-kd,naive,gradient",
            "--quiet", "--out", str(out), *extra]  # fmt: skip


def _rows(path):
    return list(csv.DictReader(open(path, encoding="utf-8")))


def test_table_failed_cell_is_journalled_listed_and_computed_again(
    tmp_path, small_recipes, monkeypatch, capsys
):
    real = table.KDExperiment.run

    def naive_fails(self, method, seed=0):
        if method == "naive":
            raise RuntimeError("boom\nsecond line")
        return real(self, method, seed)

    monkeypatch.setattr(table.KDExperiment, "run", naive_fails)
    work, out = tmp_path / "work", tmp_path / "t"
    work.mkdir()
    monkeypatch.chdir(work)
    assert table.main(_synthetic_argv(out)) == 0  # the table finishes
    captured = capsys.readouterr()
    assert "failed synthetic naive run 0: RuntimeError: boom second line" in captured.err
    assert "trajectories.png" in captured.out and (out / "trajectories.png").exists()
    rows = {(r["method"], r["status"]): r for r in _rows(out / "table.csv")}
    assert set(rows) == {("without-kd", "ok"), ("gradient", "ok"), ("naive", "error")}
    assert (
        rows["naive", "error"]["reason"] == "runs 0 failed; run 0: RuntimeError: boom second line"
    )
    runs = {r["method"]: r for r in _rows(out / "runs.csv")}
    assert runs["naive"]["status"] == "error" and runs["naive"]["test_acc"] == ""
    assert runs["gradient"]["status"] == "ok" and 0.0 <= float(runs["gradient"]["test_acc"]) <= 1
    md = (out / "table.md").read_text(encoding="utf-8")
    assert "- Synthetic dataset, Naive metaparameters, run 0: RuntimeError: boom" in md
    records = [json.loads(x) for x in (out / "journal-synthetic.jsonl").read_text().splitlines()]
    (naive,) = [r["values"] for r in records[1:] if r["index"] == [METHODS.index("naive"), 0]]
    assert naive == {"method": "naive", "seed": 0, "status": "error",
                     "error": "RuntimeError: boom second line"}  # fmt: skip
    # the teacher went to the per-user cache, nothing to the working directory
    assert list(work.iterdir()) == []
    assert list((tmp_path / "xdg-cache" / "kdtheory" / "teachers").glob("teacher-synthetic-*.pt"))

    # the next run computes the failed cell, and only it, again
    calls = []

    def counting(self, method, seed=0):
        calls.append(method)
        return real(self, method, seed)

    monkeypatch.setattr(table.KDExperiment, "run", counting)
    assert table.main(_synthetic_argv(out)) == 0
    assert calls == ["naive"]
    assert "computing the failed naive again" in capsys.readouterr().err
    assert {r["status"] for r in _rows(out / "table.csv")} == {"ok"}
    assert "Failed" not in (out / "table.md").read_text(encoding="utf-8")
    # the journal now holds the failure and, later, the result: the result supersedes it
    calls.clear()
    assert table.main(_synthetic_argv(out)) == 0
    assert calls == [] and {r["status"] for r in _rows(out / "table.csv")} == {"ok"}


def test_table_failed_teacher_fails_its_cells_and_exit_1(tmp_path, small_recipes, monkeypatch):
    def diverges(*args, **kwargs):
        raise FloatingPointError("teacher loss is nan")

    monkeypatch.setattr(table, "_teacher_logits", diverges)
    out = tmp_path / "t"
    assert table.main(_synthetic_argv(out, "--cache-dir", str(tmp_path / "c"))) == 1
    reasons = {r["method"]: r["reason"] for r in _rows(out / "table.csv")}
    assert set(reasons) == {"without-kd", "naive", "gradient"}
    assert all("teacher: FloatingPointError: teacher loss is nan" in r for r in reasons.values())
    assert not (out / "trajectories.png").exists()


def _valid_record():
    return {"method": "naive", "seed": 0, "test_acc": 0.5, "test_loss": 0.7, "val_acc": 0.5,
            "val_loss": 0.7, "lambda1": 0.5, "temperature": 1.0, "train_steps": 20,
            "hyper_steps": 0, "wall_time_s": 0.1, "trials": 1, "trajectory": {},
            "teacher_test_acc": 0.9}  # fmt: skip


@pytest.mark.parametrize(
    ("index", "change"),
    [
        ((-1, -1), {}),
        ((99, 0), {}),
        ((1,), {}),
        ((1, 0.5), {}),
        ((1, 0), {"method": "random"}),
        ((1, 0), {"seed": 3}),
        ((1, 0), {"test_acc": "abc"}),
        ((1, 0), {"test_acc": 1.5}),
        ((1, 0), {"train_steps": True}),
        ((1, 0), {"train_steps": -1}),
        ((1, 0), {"status": "maybe"}),
        ((1, 0), {"status": "error"}),  # a failed cell needs its message
        ((1, 0), {"trajectory": None}),
    ],
)
def test_journal_record_validator_refuses_bad_records(index, change):
    table._check_record((1, 0), _valid_record())  # the valid record passes
    with pytest.raises(ValueError):
        table._check_record(index, {**_valid_record(), **change})


def test_table_ignores_invalid_journal_records(tmp_path, small_recipes, monkeypatch, capsys):
    out = tmp_path / "t"
    argv = _synthetic_argv(out, "--cache-dir", str(tmp_path / "c"))
    assert table.main(argv) == 0
    clean = _rows(out / "runs.csv")
    journal = out / "journal-synthetic.jsonl"
    lie = {**_valid_record(), "test_acc": 0.999}
    bad = [
        {"index": [-1, -1], "values": {"eg": 0.999}},
        {"index": [99, 0], "values": lie},
        {"index": [1, 0], "values": {**lie, "test_acc": "abc"}},  # would override the naive run
    ]
    with open(journal, "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(b) + "\n" for b in bad)
    calls = []
    real = table.KDExperiment.run

    def counting(self, method, seed=0):
        calls.append(method)
        return real(self, method, seed)

    monkeypatch.setattr(table.KDExperiment, "run", counting)
    capsys.readouterr()
    assert table.main(argv) == 0
    assert "skipped 3 invalid or truncated line(s)" in capsys.readouterr().err
    assert calls == []  # the valid records stand; the invalid ones are never applied
    # the recomputed table equals the clean one (CPU runs are bit-reproducible) except wall time
    again = _rows(out / "runs.csv")
    drop = ("wall_time_s",)
    strip = [{k: v for k, v in r.items() if k not in drop} for r in clean]
    assert [{k: v for k, v in r.items() if k not in drop} for r in again] == strip


def test_table_every_dataset_skipped_claims_no_files_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "t"
    argv = ["--datasets", "fashion-mnist", "--runs", "1", "--quiet", "--out", str(out),
            "--root", f"fashion-mnist={tmp_path / 'absent'}", "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    assert table.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == f"wrote {out / 'table.md'}, table.csv, runs.csv\n"
    assert (
        "no cell of the table succeeded" in captured.err and "skipped fashion-mnist" in captured.err
    )
    # (the journal's advisory lock file stays: deleting it while another run waits is racy)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["journal-fashion-mnist.jsonl.lock", "runs.csv", "table.csv", "table.md"]
    md = (out / "table.md").read_text(encoding="utf-8")
    assert md.startswith("No cell of the table succeeded") and "| Method |" not in md


def test_table_corrupt_teacher_cache_exit_2_and_retrain(tmp_path, small_recipes, capsys):
    cache = tmp_path / "c"
    assert table.main(_synthetic_argv(tmp_path / "t", "--cache-dir", str(cache))) == 0
    (ckpt,) = cache.glob("teacher-*.pt")
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated
    again = _synthetic_argv(tmp_path / "t2", "--cache-dir", str(cache))  # a fresh journal
    with pytest.raises(SystemExit) as exc:
        table.main(again)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(ckpt) in err and "--retrain-teacher" in err
    assert table.main([*again, "--retrain-teacher"]) == 0


@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_table_unwritable_folders_refused_before_work(tmp_path, capsys, monkeypatch, flag, where):
    loaded = []
    monkeypatch.setattr(table, "_load", lambda *a: loaded.append(a))
    (tmp_path / "f").write_text("x")
    bad = tmp_path / "f" if where == "a file" else tmp_path / "f" / "sub"
    paths = {"--out": str(tmp_path / "o"), "--cache-dir": str(tmp_path / "c"), flag: str(bad)}
    with pytest.raises(SystemExit) as exc:
        table.main(["--datasets", "synthetic", *(x for kv in paths.items() for x in kv)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {flag} {bad}" in err
    if flag == "--cache-dir":  # checked first: no empty --out folder left behind
        assert not (tmp_path / "o").exists()
    assert loaded == [] and (tmp_path / "f").read_text() == "x"
