"""kdtheory.neural.experiments.train: a short digits run learns and is bit-reproducible; checkpoints; the CLI."""

import json
import os
import pickle
import shlex

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kdtheory.neural.data import DataError, load_digits  # noqa: E402
from kdtheory.neural.experiments import train  # noqa: E402
from kdtheory.neural.experiments.train import (  # noqa: E402
    FitConfig,
    default_cache_dir,
    evaluate,
    fit,
    load_checkpoint,
    load_or_train_teacher,
    main,
    predict_logits,
    save_checkpoint,
)
from kdtheory.neural.models import build_model  # noqa: E402


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


def test_cli_digits_writes_metrics_and_reuses_teacher(tmp_path, monkeypatch):
    out, work = tmp_path / "out", tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the default teacher cache is per user, never the working directory
    argv = ["--dataset", "digits", "--epochs", "2", "--teacher-epochs", "2", "--chi", "0.6",
            "--temperature", "3", "--tempered", "teacher", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert list(work.iterdir()) == []
    cached = list(
        (tmp_path / "xdg-cache" / "kdtheory" / "teachers").glob("teacher-digits-cnn-*.pt")
    )
    assert len(cached) == 1
    m = json.loads((out / "metrics.json").read_text())
    assert (out / "learning_curves.png").stat().st_size > 1000
    assert m["config"]["lambda1"] == pytest.approx(0.4)  # λ₁ = 1 − χ
    assert m["config"]["tempered"] == m["student_kd"]["tempered"] == "teacher"
    assert m["student_kd"]["lambda1"] == pytest.approx(0.4) and m["student_no_kd"]["lambda1"] == 1.0
    for key in ("teacher", "student_kd", "student_no_kd"):
        assert 0.5 < m[key]["test_acc"] <= 1.0  # all learn well above chance (0.1) on digits
        assert m[key]["train_time_s"] > 0
    assert m["inference_time_ratio_teacher_over_student"]["batch"] > 0
    assert not m["teacher"]["loaded_from_cache"] and m["teacher"]["checkpoint"] == str(cached[0])
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["teacher"]["loaded_from_cache"]


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "kdtheory" / "teachers"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unusable in ("", "relative/path"):  # the XDG spec ignores relative paths
        monkeypatch.setenv("XDG_CACHE_HOME", unusable)
        assert default_cache_dir() == tmp_path / "home" / ".cache" / "kdtheory" / "teachers"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "kdtheory" / "teachers"


# ------------------------------------------------------------------------- corrupt caches ---


@pytest.fixture(scope="module")
def cached_teacher(digits, tmp_path_factory):
    """A small cached teacher: (checkpoint bytes, file name, its config, the call's arguments)."""
    cfg = FitConfig(epochs=1, batch_size=256, lr=0.05, seed=0)
    kwargs = dict(config=cfg, data_config={"dataset": "digits"}, model_options={"hidden": 8})
    cache = tmp_path_factory.mktemp("cache")
    _, info = load_or_train_teacher(digits, "mlp", cache_dir=cache, quiet=True, **kwargs)
    path = cache / info["checkpoint"].rsplit("/", 1)[-1]
    return path.read_bytes(), path.name, info["config"], kwargs


class _Shell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _state(**changes):
    state = build_model("mlp", (1, 8, 8), 10, seed=0, hidden=8).state_dict()
    return {changes.get(k, k): v for k, v in state.items()}


CORRUPT = {
    "random bytes": (lambda p, raw, cfg: p.write_bytes(np.random.default_rng(0).bytes(4096)),
                     "unreadable teacher checkpoint"),
    "truncated": (lambda p, raw, cfg: p.write_bytes(raw[: len(raw) // 2]),
                  "unreadable teacher checkpoint"),
    "malicious pickle": (lambda p, raw, cfg: p.write_bytes(pickle.dumps(_Shell(p.parent / "x"), 2)),
                         "refused by the safe loader: .*posix.system"),
    "a list": (lambda p, raw, cfg: torch.save([1, 2, 3], p), r"not a teacher checkpoint \(a list"),
    "no weights": (lambda p, raw, cfg: torch.save({"config": cfg}, p), "not a teacher checkpoint"),
    "wrong shapes": (lambda p, raw, cfg: save_checkpoint(
        p, build_model("mlp", (1, 8, 8), 10, hidden=9).state_dict(), cfg), "size mismatch"),
    "wrong keys": (lambda p, raw, cfg: save_checkpoint(p, _state(**{"1.weight": "w"}), cfg),
                   "Missing key"),
    "NaN weights": (lambda p, raw, cfg: save_checkpoint(
        p, {k: v.fill_(float("nan")) for k, v in _state().items()}, cfg), "non-finite"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_teacher_cache_names_the_file_and_the_fix(digits, cached_teacher, tmp_path, case):
    raw, name, cfg, kwargs = cached_teacher
    path = tmp_path / name
    corrupt, needle = CORRUPT[case]
    corrupt(path, raw, cfg)
    with pytest.raises(DataError, match=needle) as exc:
        load_or_train_teacher(digits, "mlp", cache_dir=tmp_path, quiet=True, **kwargs)
    assert str(path) in str(exc.value) and "--retrain-teacher" in str(exc.value)
    assert not (tmp_path / "x").exists()  # the malicious pickle's command never ran
    # the fix that the message offers: train again over the file, which then loads
    _, info = load_or_train_teacher(digits, "mlp", cache_dir=tmp_path, retrain=True, quiet=True,
                                    **kwargs)  # fmt: skip
    assert not info["loaded"] and path.read_bytes() != b""
    _, info = load_or_train_teacher(digits, "mlp", cache_dir=tmp_path, quiet=True, **kwargs)
    assert info["loaded"]


def test_cli_corrupt_cache_one_line_exit_2_and_retrain(tmp_path, capsys):
    cache = tmp_path / "c"
    argv = ["--teacher", "mlp", "--epochs", "1", "--teacher-epochs", "1", "--cache-dir", str(cache),
            "--out", str(tmp_path / "o"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    (ckpt,) = cache.glob("teacher-*.pt")
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(ckpt) in err and "--retrain-teacher" in err
    assert main([*argv, "--retrain-teacher"]) == 0
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["teacher"][
        "checkpoint"
    ] == str(ckpt)


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--chi", "1.5", "--chi must be in [0, 1]"),
        ("--temperature", "0", "--temperature must be > 0"),
        ("--epochs", "0", "--epochs must be an integer ≥ 1"),
        ("--seed", "-1", "--seed must be an integer ≥ 0"),
        ("--tempered", "student", "argument --tempered: invalid choice: 'student'"),
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


@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_cli_unwritable_folders_refused_before_training(tmp_path, capsys, monkeypatch, flag, where):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before the output folders were checked")

    monkeypatch.setattr(train, "fit", no_training)
    (tmp_path / "f").write_text("x")
    bad = tmp_path / "f" if where == "a file" else tmp_path / "f" / "sub"
    paths = {"--out": str(tmp_path / "o"), "--cache-dir": str(tmp_path / "c"), flag: str(bad)}
    with pytest.raises(SystemExit) as exc:
        main(["--quiet", *(x for kv in paths.items() for x in kv)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {flag} {bad}" in err
    if flag == "--cache-dir":  # checked first: no empty --out folder left behind
        assert not (tmp_path / "o").exists()
    assert (tmp_path / "f").read_text() == "x" and not (tmp_path / "o" / "metrics.json").exists()
