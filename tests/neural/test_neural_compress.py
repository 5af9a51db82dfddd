"""kdtheory.neural.experiments.compress: the grid parser and presets, the study end to end on small data,
resume, failed cells, skipped data, bad input."""

import csv
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neural_files import write_cifar_folder  # noqa: E402

from kdtheory.neural.experiments import compress  # noqa: E402
from kdtheory.neural.experiments.compress import (  # noqa: E402
    PRESETS,
    Cell,
    Grid,
    frontier,
    main,
    parse_student,
)

# the rows of Khetarpaul et al.'s MNIST table: (hidden width, T, epochs, batch)
STUDY_MNIST = {
    (50, 3.5, 3, 32), (300, 3.5, 3, 16), (300, 3.5, 3, 64), (300, 3.5, 2, 32), (300, 10.0, 3, 32),
    (300, 1.0, 3, 32), (300, 3.5, 3, 32), (300, 3.5, 5, 32), (600, 3.5, 3, 32),
}  # fmt: skip


@pytest.fixture(autouse=True)
def _short_timing(monkeypatch):
    """Timing blocks of 1 ms: the tests check the bookkeeping, not the speed."""
    monkeypatch.setattr(compress, "TIMING_MIN_RUN_TIME", 1e-3)


def _rows(path):
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_mnist_preset_is_the_study_table_with_and_without_kd():
    cells = PRESETS["mnist"].grid.cells()
    kd = {(int(c.student.split(":")[1]), c.temperature, c.epochs, c.batch_size)
          for c in cells if c.kd}  # fmt: skip
    assert kd == STUDY_MNIST and sum(c.kd for c in cells) == 9
    # without KD T is irrelevant: the 9 configurations collapse to 7 (T = 1, 10 coincide)
    plain = [c for c in cells if not c.kd]
    assert len(plain) == 7 and all(c.temperature is None and c.loss is None for c in plain)
    full = compress.replace(PRESETS["mnist"].grid, full=True).cells()
    assert len(full) == 3**4 + 3**3  # width × T × epochs × batch with KD; width × epochs × batch


def test_cifar10_preset_has_the_study_students_and_the_reduced_set():
    cells = PRESETS["cifar10"].grid.cells()
    kd = [c for c in cells if c.kd]
    assert {c.student for c in kd} == {
        "resnet4:1-1-1-1", "resnet4:2-2-0-0", "resnet4:1-1-0-0", "resnet4:1-1-1-1:s2",
        "resnet4:1-1-1-1:s4",
    }  # fmt: skip
    reduced = [c for c in cells if c.n_per_class == 500]
    assert [(c.student, c.kd) for c in reduced] == [("resnet4:1-1-1-1:s2", True),
                                                     ("resnet4:1-1-1-1:s2", False)]  # fmt: skip
    assert len(cells) == 12
    p = PRESETS["cifar10"]
    assert p.teacher_options == {"blocks": [3, 4, 6, 3], "block": "bottleneck"}


def test_grid_one_factor_at_a_time_and_centre_rule():
    g = Grid(students=("a",), temperatures=(2.0, 5.0), epochs=(1, 3), batch_sizes=(8,),
             losses=("forward-kl",), kd=(True,), centre={"temperatures": 5.0, "epochs": 9})  # fmt: skip
    # centre T = 5 (listed); centre epochs = 1 (9 is not listed: the first value)
    assert g.cells() == [
        Cell("a", 5.0, 1, 8, True, "forward-kl", None),
        Cell("a", 2.0, 1, 8, True, "forward-kl", None),
        Cell("a", 5.0, 3, 8, True, "forward-kl", None),
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("mlp:300", ("mlp", {"hidden": [300]})),
     ("mlp:1200x1200", ("mlp", {"hidden": [1200, 1200]})),
     ("resnet4:1-1-0-0", ("resnet4", {"blocks": [1, 1, 0, 0], "width": 64})),
     ("resnet4:3-4-6-3:bottleneck:s2",
      ("resnet4", {"blocks": [3, 4, 6, 3], "width": 64, "block": "bottleneck", "stride": 2})),
     ("cnn-small", ("cnn-small", {}))],
)  # fmt: skip
def test_parse_student(spec, expected):
    assert parse_student(spec) == expected


@pytest.mark.parametrize(
    "spec", ["mlp", "mlp:0", "mlp:3x", "resnet4:1-1-1", "resnet4:1-1-1-1:s0", "resnet4:1-1-1-1:x",
             "resnet4:1-1-1-1:s2:s4", "cnn:3", "vit", ""],
)  # fmt: skip
def test_parse_student_refuses(spec):
    with pytest.raises(ValueError, match="must be mlp:W"):
        parse_student(spec)


def test_frontier_by_hand():
    pts = [(1.0, 90.0), (2.0, 95.0), (4.0, 93.0), (8.0, 80.0), (3.0, 94.0), (8.0, 85.0)]
    # (1, 90) is beaten by (2, 95) (faster and more accurate); (8, 80) by (8, 85); the others
    # each trade accuracy for speed-up
    assert frontier(pts) == [(2.0, 95.0), (3.0, 94.0), (4.0, 93.0), (8.0, 85.0)]


def _digits_argv(out, *extra):
    return [
        "--preset", "digits", "--students", "mlp:4,mlp:16", "--temperatures", "2",
        "--epochs", "2", "--teacher-epochs", "1", "--seeds", "3", "--timing-repeats", "1",
        "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip


def test_digits_study_end_to_end_quantised_and_resumed(tmp_path, monkeypatch, capsys):
    out = tmp_path / "d"
    assert main(_digits_argv(out, "--quantize")) == 0
    cells = _rows(out / "cells.csv")
    runs = _rows(out / "runs.csv")
    # 2 students × {KD, no KD}; the preset's centre mlp:32 is not listed: the first, mlp:4, is
    assert len(runs) == 4 * 3 and {r["status"] for r in runs} == {"ok"}
    assert [(r["student"], r["kd"], r["precision"]) for r in cells] == [
        (s, kd, p) for s in ("mlp:4", "mlp:16") for kd in ("True", "False")
        for p in ("float32", "int8")
    ]  # fmt: skip
    for c in cells:
        mine = [r for r in runs if (r["student"], r["kd"]) == (c["student"], c["kd"])]
        key = "test_acc" if c["precision"] == "float32" else "int8_test_acc"
        acc = np.array([float(r[key]) for r in mine])
        assert float(c["acc_mean"]) == pytest.approx(acc.mean(), rel=1e-12)  # the same mean
        se = acc.std(ddof=1) / math.sqrt(3)
        assert float(c["acc_se"]) == pytest.approx(se, rel=1e-9, abs=1e-15)  # the same s.e.
        b = "batch_s" if c["precision"] == "float32" else "int8_batch_s"
        ratio = np.mean([float(r["teacher_batch_s"]) for r in mine]) / np.mean(
            [float(r[b]) for r in mine]
        )
        assert float(c["speedup_batch"]) == pytest.approx(ratio, rel=1e-12)  # ratio of means
    by = {(c["student"], c["precision"]): c for c in cells}
    # hand counts: 64·4 + 4 + 4·10 + 10 and 64·16 + 16 + 16·10 + 10
    assert by[("mlp:4", "float32")]["params"] == "310"
    assert by[("mlp:16", "float32")]["params"] == "1210"
    # int8 weights: smaller serialised size than float32
    assert int(by[("mlp:16", "int8")]["size_bytes"]) < int(by[("mlp:16", "float32")]["size_bytes"])
    md = (out / "table.md").read_text(encoding="utf-8")
    assert "| mlp:16 | 2 | 2 | 32 | forward-kl-t2 | all | yes | int8 |" in md
    assert (out / "accuracy_vs_speedup.png").stat().st_size > 0

    # kill -9 in the middle of a record: the cut line is skipped, only that fit is computed again
    journal = out / "journal.jsonl"
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join(lines[:-2]) + b"\n" + lines[-2][:20])
    calls = []
    real = compress.train_cell

    def counting(cell, seed, *a, **k):
        calls.append((cell.student, cell.kd, seed))
        return real(cell, seed, *a, **k)

    monkeypatch.setattr(compress, "train_cell", counting)
    capsys.readouterr()
    assert main(_digits_argv(out, "--quantize")) == 0
    assert "warning:" in capsys.readouterr().err  # the cut line, counted on one line
    assert calls == [("mlp:16", False, 2)]
    calls.clear()
    assert main(_digits_argv(out, "--quantize")) == 0
    assert calls == []  # everything journalled: nothing trained


def test_failed_cell_is_journalled_listed_and_computed_again(tmp_path, monkeypatch, capsys):
    out = tmp_path / "f"
    real = compress.train_cell

    def failing(cell, seed, *a, **k):
        if cell.student == "mlp:4" and cell.kd and seed == 1:
            raise RuntimeError("out of luck")
        return real(cell, seed, *a, **k)

    monkeypatch.setattr(compress, "train_cell", failing)
    assert main(_digits_argv(out)) == 0
    err = capsys.readouterr().err
    assert "failed mlp:4 kd=True seed 1: RuntimeError: out of luck" in err
    cells = {(c["student"], c["kd"]): c for c in _rows(out / "cells.csv")}
    assert cells[("mlp:4", "True")]["seeds"] == "2" and cells[("mlp:4", "True")]["failed"] == "1"
    assert "Failed cells" in (out / "table.md").read_text(encoding="utf-8")
    monkeypatch.setattr(compress, "train_cell", real)
    assert main(_digits_argv(out)) == 0
    cells = {(c["student"], c["kd"]): c for c in _rows(out / "cells.csv")}
    assert cells[("mlp:4", "True")]["seeds"] == "3" and cells[("mlp:4", "True")]["failed"] == "0"


def test_mnist_preset_on_generated_fashion_files(tmp_path, fashion_root):
    root, _ = fashion_root
    out = tmp_path / "m"
    argv = ["--preset", "mnist", "--dataset", "fashion-mnist", "--data-root", str(root),
            "--val-size", "10", "--seeds", "1", "--timing-repeats", "1", "--quiet",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    cells = _rows(out / "cells.csv")
    kd = {(int(c["student"].split(":")[1]), float(c["temperature"]), int(c["epochs"]),
           int(c["batch_size"])) for c in cells if c["kd"] == "True"}  # fmt: skip
    assert kd == STUDY_MNIST and len(cells) == 16
    assert all(c["seeds"] == "1" for c in cells)


def test_tempered_reaches_the_kd_fits_and_the_outputs(tmp_path, monkeypatch):
    """--tempered teacher: every KD fit gets it, the no-KD fit has no soft term; recorded in the
    journal's header and table.md; another convention is another computation (fingerprint)."""
    seen = []
    real = compress.fit

    def recording(*args, **kwargs):
        seen.append((kwargs.get("lambda1", 1.0), kwargs.get("tempered")))
        return real(*args, **kwargs)

    monkeypatch.setattr(compress, "fit", recording)
    out = tmp_path / "t"
    argv = ["--preset", "digits", "--students", "mlp:4", "--temperatures", "2", "--epochs", "1",
            "--teacher-epochs", "1", "--seeds", "1", "--timing-repeats", "1", "--quiet",
            "--out", str(out), "--tempered", "teacher"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(seen) == [(0.1, "teacher"), (1.0, None)]  # the preset's λ₁ = 0.1 with KD
    header = json.loads((out / "journal.jsonl").read_text().split("\n")[0])
    assert header["preset"]["tempered"] == "teacher"
    assert "tempered = teacher" in (out / "table.md").read_text(encoding="utf-8")
    with pytest.raises(SystemExit) as exc:  # the journal of the other convention is refused
        main([*argv[:-1], "both"])
    assert exc.value.code == 2


def test_mnist_without_files_and_cifar10_without_data_are_skipped(tmp_path, capsys):
    for preset in ("mnist", "cifar10"):
        out = tmp_path / preset
        assert main(["--preset", preset, "--quiet", "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"skipped {preset}" in err
        assert "Skipped (data files absent" in (out / "table.md").read_text(encoding="utf-8")
        assert not (out / "accuracy_vs_speedup.png").exists()


def test_cifar10_preset_end_to_end_on_generated_batches(tmp_path):
    write_cifar_folder(tmp_path / "data", per_batch=20)
    out = tmp_path / "c"
    argv = ["--preset", "cifar10", "--data-root", str(tmp_path / "data"), "--val-size", "10",
            "--resnet-width", "4", "--teacher-epochs", "1", "--epochs", "1", "--batch-sizes", "16",
            "--n-per-class", "all,3", "--kd", "kd", "--seeds", "1", "--timing-repeats", "1",
            "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    runs = _rows(out / "runs.csv")
    # 5 students at the centre's n/class, the centre also on 3 per class; KD only (the no-KD
    # twins run the same code, checked on digits above)
    assert len(runs) == 6 and {r["status"] for r in runs} == {"ok"}
    md = (out / "table.md").read_text(encoding="utf-8")
    assert (
        "Teacher resnet4" in md and "| resnet4:1-1-1-1:s2 | 4 | 1 | 16 | forward-kl-t2 | 3 |" in md
    )


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--temperatures", "0"], "--temperatures must be > 0"),
     (["--temperatures", "a"], "--temperatures takes a comma-separated list"),
     (["--epochs", "0"], "--epochs must be integers ≥ 1"),
     (["--students", "mlp:0"], "student 'mlp:0' must be"),
     (["--losses", "kl"], "--losses must be in cross-entropy"),
     (["--n-per-class", "some"], "--n-per-class takes"),
     (["--kd", "maybe"], "--kd takes"),
     (["--tempered", "student"], "argument --tempered: invalid choice: 'student'"),
     (["--seeds", "0"], "--seeds must be an integer ≥ 1"),
     (["--lambda1", "1"], "--lambda1 must be in [0, 1)"),
     (["--val-size", "5"], "--val-size applies to mnist"),
     (["--device", "cuda:7x"], "--device"),
     (["--preset", "imagenet"], "invalid choice")],
)  # fmt: skip
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, extra, needle):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(out), "--quiet", *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m kdtheory.neural.compress: error: ")
    assert needle in err
    assert not out.exists()


def test_out_a_file_refused_before_work(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(f), "--quiet"])
    assert exc.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("index", "change"),
    [((9, 0), {}), ((0, 1), {}), ((0, 0), {"test_acc": 1.5}), ((0, 0), {"batch_s": 0.0}),
     ((0, 0), {"params": 0}), ((0, 0), {"status": "maybe"}), ((0, 0), {"int8": {"test_acc": 2}}),
     ((0, 0), {"status": "error"})],
)  # fmt: skip
def test_journal_record_validator(index, change):
    cells = [Cell("mlp:4", 2.0, 1, 8, True, "forward-kl", None)]
    good = {"cell": cells[0].key(), "seed": 0, "status": "ok", "test_acc": 0.5,
            "train_time_s": 1.0, "params": 10, "size_bytes": 100, "batch_s": 1e-3,
            "per_sample_s": 1e-4, "teacher_batch_s": 1e-2, "teacher_per_sample_s": 1e-3}  # fmt: skip
    compress._check_record((0, 0), good, cells)  # a valid record passes
    with pytest.raises(ValueError):
        compress._check_record(index, {**good, **change}, cells)
    json.dumps(good)  # records are JSON
