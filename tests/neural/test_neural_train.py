"""kdtheory.neural.train: a short digits run learns and is bit-reproducible; checkpoints; the CLI."""

import json

import pytest

torch = pytest.importorskip("torch")

from kdtheory.neural.data import load_digits  # noqa: E402
from kdtheory.neural.models import build_model  # noqa: E402
from kdtheory.neural.train import (  # noqa: E402
    FitConfig,
    evaluate,
    fit,
    load_checkpoint,
    load_or_train_teacher,
    main,
    predict_logits,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


def _student_run(digits, seed, *, teacher_logits=None, lambda1=1.0):
    model = build_model("mlp", digits.input_shape, 10, seed=seed, hidden=32)
    cfg = FitConfig(epochs=4, batch_size=64, lr=0.05, momentum=0.9, seed=seed)
    hist = fit(
        model,
        digits.train,
        config=cfg,
        val=digits.val,
        teacher_logits=teacher_logits,
        lambda1=lambda1,
        temperature=3.0,
        quiet=True,
    )
    return model, hist


def test_short_digits_run_learns_and_is_reproducible(digits):
    m1, h1 = _student_run(digits, seed=5)
    _, acc = evaluate(m1, digits.test)
    # chance is 0.1; an MLP reaches ≈ 0.95 after 4 epochs — 0.8 leaves room for other BLAS builds
    assert acc > 0.8
    assert h1.train_loss[-1] < h1.train_loss[0]
    m2, h2 = _student_run(digits, seed=5)
    # same seed → bit-identical weights and curves (same process, same threads)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert h1.train_loss == h2.train_loss and h1.val_acc == h2.val_acc
    m3, _ = _student_run(digits, seed=6)
    assert not torch.equal(m1[1].weight, m3[1].weight)


def test_kd_student_learns_from_cached_teacher_logits(digits, tmp_path):
    cfg = FitConfig(epochs=3, batch_size=64, lr=0.05, seed=0)
    data_cfg = {"dataset": "digits", "seed": 0}
    teacher, info = load_or_train_teacher(
        digits, "cnn", config=cfg, cache_dir=tmp_path, data_config=data_cfg, quiet=True
    )
    assert not info["loaded"]
    f = predict_logits(teacher, digits.train.x)
    assert f.shape == (len(digits.train), 10)
    model, _ = _student_run(digits, seed=1, teacher_logits=f, lambda1=0.3)
    assert evaluate(model, digits.test)[1] > 0.8  # chance 0.1; see the test above
    # the same config is loaded from the checkpoint (weights_only=True) with identical weights
    again, info2 = load_or_train_teacher(
        digits, "cnn", config=cfg, cache_dir=tmp_path, data_config=data_cfg, quiet=True
    )
    assert info2["loaded"]
    assert torch.equal(predict_logits(again, digits.train.x), f)
    # another config is a different checkpoint: trained, not loaded
    cfg2 = FitConfig(epochs=1, batch_size=64, lr=0.05, seed=0)
    _, info3 = load_or_train_teacher(
        digits, "cnn", config=cfg2, cache_dir=tmp_path, data_config=data_cfg, quiet=True
    )
    assert not info3["loaded"] and info3["checkpoint"] != info["checkpoint"]


def test_checkpoint_roundtrip_weights_only(tmp_path):
    model = build_model("cnn-small", (1, 8, 8), 10, seed=0)
    cfg = {"model": "cnn-small", "epochs": 3, "nested": {"lr": 0.1, "ok": True}}
    save_checkpoint(tmp_path / "m.pt", model.state_dict(), cfg, {"history": {"loss": [1.0, 0.5]}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.pt"]  # no temp files left
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["config"] == cfg and ckpt["extra"]["history"]["loss"] == [1.0, 0.5]
    fresh = build_model("cnn-small", (1, 8, 8), 10, seed=1)
    fresh.load_state_dict(ckpt["state_dict"])
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(fresh(x), model(x))
    assert json.loads((tmp_path / "m.json").read_text()) == cfg


def test_cli_digits_writes_metrics_and_reuses_teacher(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["--dataset", "digits", "--epochs", "2", "--teacher-epochs", "2", "--chi", "0.6",
            "--temperature", "3", "--out", str(out), "--cache-dir", str(cache), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (out / "learning_curves.png").stat().st_size > 1000
    assert m["config"]["lambda1"] == pytest.approx(0.4)  # λ₁ = 1 − χ
    assert m["student_kd"]["lambda1"] == pytest.approx(0.4) and m["student_no_kd"]["lambda1"] == 1.0
    for key in ("teacher", "student_kd", "student_no_kd"):
        assert 0.5 < m[key]["test_acc"] <= 1.0  # all learn well above chance (0.1) on digits
        assert m[key]["train_time_s"] > 0
    assert m["inference_time_ratio_teacher_over_student"]["batch"] > 0
    assert not m["teacher"]["loaded_from_cache"]
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["teacher"]["loaded_from_cache"]


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--chi", "1.5", "--chi must be in [0, 1]"),
        ("--temperature", "0", "--temperature must be > 0"),
        ("--epochs", "0", "--epochs must be an integer ≥ 1"),
        ("--dataset", "cifar10", "--dataset cifar10: data files absent"),
        ("--student", "cnn-small", None),  # valid for digits images: handled below
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, capsys, flag, value, needle):
    if needle is None:
        argv = ["--dataset", "synthetic", flag, value]
        needle = "--student cnn-small: model 'cnn' needs image inputs"
    else:
        argv = [flag, value]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not out.exists() and not (tmp_path / "c").exists()  # nothing half-written
