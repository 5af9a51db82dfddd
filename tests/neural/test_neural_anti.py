"""The anti-distillation experiment and CLI (kdtheory.neural.experiments.grow, python -m kdtheory.neural.grow)."""

import csv
import math

import pytest

torch = pytest.importorskip("torch")

from kdtheory.neural.anti.growth import build_family, grow, psi  # noqa: E402
from kdtheory.neural.data import Split  # noqa: E402
from kdtheory.neural.experiments import grow as anti  # noqa: E402
from kdtheory.neural.experiments.grow import GrowthTask, Settings, main, run, run_cell  # noqa: E402

SMALL = [
    "--families", "mlp", "--schemes", "zero,default,net2net", "--seeds", "2",
    "--epochs", "2", "--teacher-epochs", "2", "--teacher-width", "4", "--student-width", "8",
]  # fmt: skip


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_digits_run_tables_figures_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMALL, "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    for f in ("table.csv", "table.md", "curves.csv", "corruption.csv", "journal.jsonl",
              "learning_curves_mlp.png", "corruption_mlp.png", "extension_mlp.png"):  # fmt: skip
        assert f in names
    rows = {r["scheme"]: r for r in _rows(out / "table.csv")}
    # dead extension: the zero start keeps the new units at exactly 0 with zero gradient
    assert float(rows["zero"]["ext_norm_end"]) == 0.0
    assert float(rows["zero"]["ext_grad_max"]) == 0.0
    assert float(rows["default"]["ext_grad_end"]) > 0 and float(rows["net2net"]["ext_norm_end"]) > 0
    # the baseline has no paired difference to itself; the others have one per seed
    assert math.isnan(float(rows["default"]["d_test_acc"]))
    assert not math.isnan(float(rows["zero"]["d_test_acc"]))
    curves = _rows(out / "curves.csv")
    assert len(curves) == 3 * 2 * (2 + 1)  # schemes × seeds × (epoch 0 + 2 epochs)
    assert "6 cells computed" in capsys.readouterr().out
    # resume: nothing is computed again, the outputs are rewritten identically
    before = (out / "table.csv").read_bytes()
    assert main([*SMALL, "--out", str(out)]) == 0
    assert "0 cells computed" in capsys.readouterr().out
    assert (out / "table.csv").read_bytes() == before


def test_a_failed_cell_is_isolated_and_recomputed(tmp_path, monkeypatch, capsys):
    real = anti.run_cell

    def flaky(task, family, scheme, seed, s, teacher):
        if scheme == "net2net" and seed == 1:
            raise RuntimeError("boom")
        return real(task, family, scheme, seed, s, teacher)

    monkeypatch.setattr(anti, "run_cell", flaky)
    out = tmp_path / "run"
    assert main([*SMALL, "--out", str(out)]) == 1  # some cell failed
    assert "net2net/seed 1: RuntimeError: boom" in (out / "table.md").read_text()
    rows = {r["scheme"]: r for r in _rows(out / "table.csv")}
    assert rows["net2net"]["seeds"] == "1" and rows["zero"]["seeds"] == "2"
    monkeypatch.setattr(anti, "run_cell", real)
    capsys.readouterr()
    assert main([*SMALL, "--out", str(out)]) == 0
    assert "1 cells computed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--seeds", "1"], "--seeds must be an integer ≥ 2"),
        (["--student-width", "2"], "--student-width must be ≥ --teacher-width"),
        (["--theta", "0"], "--theta must be a finite number > 0"),
        (["--schemes", "ones"], "choose from"),
        (["--preset", "cifar10"], "invalid choice"),
        (["--threads", "0"], "--threads must be an integer ≥ 1"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([*SMALL, "--out", str(out), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and err.startswith("kdtheory.neural.grow: error:") and message in err
    )
    assert not out.exists()


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main([*SMALL, "--out", str(f)])
    assert exc.value.code == 2 and "is a file" in capsys.readouterr().err


def test_cifar_preset_skipped_without_data(tmp_path, capsys):
    code = main([*SMALL, "--preset", "cifar", "--data-root", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 0 and "skipped" in capsys.readouterr().out


@pytest.mark.parametrize("family", ["mlp", "cnn", "lstm"])
def test_fashion_to_cifar_cell_on_generated_batches(family):
    """Result 4's growth (1×28×28, 10 classes → 3×32×32, 10 classes) on random tensors."""
    gen = torch.Generator().manual_seed(0)

    def split(n, shape):
        return Split(
            torch.randn(n, *shape, generator=gen), torch.randint(0, 10, (n,), generator=gen)
        )

    t_shape, s_shape = (1, 28, 28), (3, 32, 32)
    task = GrowthTask(split(40, t_shape), split(20, t_shape), split(40, s_shape),
                      split(20, s_shape), split(20, s_shape), t_shape, s_shape, 10, 10, "gen")  # fmt: skip
    s = Settings(epochs=1, teacher_epochs=1, teacher_width=4, student_width=8, phi_steps=1, n_mc=1)
    teacher = anti._teacher(task, family, 0, s)
    for scheme in ("zero", "phi"):
        v = run_cell(task, family, scheme, 0, s, teacher)
        assert v["status"] == "ok" and len(v["curve"]["val_acc"]) == 2
        assert len(v["probs"]) == 20 and len(v["corruption"]["pixels"]) == len(anti.CORRUPTION)
    if family == "mlp":  # ψ = channel copy + zero pad: the grown MLP reproduces the teacher
        _, ws = s.widths(family)
        g, _ = grow(teacher, build_family(family, s_shape, 10, ws, seed=1), "zero",
                    teacher_input_shape=t_shape, student_input_shape=s_shape)  # fmt: skip
        x = task.teacher_val.x
        with torch.no_grad():
            # float32 sums over 784 inputs, reordered: ~1e-6 relative
            assert torch.allclose(g(psi(x, s_shape)), teacher(x), atol=1e-4)


def test_settings_run_directly(tmp_path):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(60, 1, 8, 8, generator=gen)
    y = torch.randint(0, 4, (60,), generator=gen)
    d = Split(x, y)
    t = Split(x[y < 2], y[y < 2])
    task = GrowthTask(t, t, d, d, d, (1, 8, 8), (1, 8, 8), 2, 4, "gen")
    s = Settings(families=("lstm",), schemes=("zero", "default"), seeds=2, epochs=1,
                 teacher_epochs=1, teacher_width=4, student_width=6)  # fmt: skip
    res = run(task, s, tmp_path, log=lambda _m: None)
    assert len(res.results) == 4 and not res.failed
    assert res.results[("lstm", "zero", 0)]["curve"]["ext_grad"] == [0.0, 0.0]


def test_presets_on_digits():
    t = anti.make_task("classes", "digits")
    assert t.teacher_classes == 5 and t.student_classes == 10
    assert int(t.teacher_train.y.max()) == 4 and int(t.train.y.max()) == 9
    assert len(t.test) > 0 and t.teacher_shape == t.student_shape == (1, 8, 8)
    t = anti.make_task("input", "digits")
    assert t.teacher_shape == (1, 4, 4) and t.student_shape == (1, 8, 8)
    # the teacher sees ψ*(x): each of its pixels is the mean of a 2 × 2 block
    x = t.train.x[:3]
    block = x[:, 0, 2:4, 6:8].mean(dim=(1, 2))
    assert torch.allclose(t.teacher_train.x[:3, 0, 1, 3], block, atol=1e-6)  # float32 mean of 4
    with pytest.raises(ValueError, match="preset must be one of"):
        anti.make_task("bigger", "digits")
