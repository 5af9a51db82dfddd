"""kdtheory.neural.experiments.selfdistil: the label noise, the chain end to end on generated files, resume,
bad input."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
xr = pytest.importorskip("xarray")

from kdtheory.neural.checkpoints import load_checkpoint  # noqa: E402
from kdtheory.neural.data import load_fashion_mnist  # noqa: E402
from kdtheory.neural.experiments import selfdistil  # noqa: E402
from kdtheory.neural.experiments.selfdistil import main, noisy_labels  # noqa: E402
from kdtheory.neural.models import build_model  # noqa: E402
from kdtheory.neural.training import evaluate  # noqa: E402


def test_noisy_labels_count_other_class_nesting_and_uniformity():
    k, n = 10, 20_000
    y = torch.arange(n) % k
    assert torch.equal(noisy_labels(y, 0.0, k, seed=3), y)
    low, high = noisy_labels(y, 0.2, k, seed=3), noisy_labels(y, 0.45, k, seed=3)
    for theta, yy in ((0.2, low), (0.45, high)):
        assert int((yy != y).sum()) == round(theta * n)  # exactly round(θn) replaced
    changed = low != y
    assert torch.equal(high[changed], low[changed])  # nested: same draws for the same seed
    assert not torch.equal(noisy_labels(y, 0.2, k, seed=4), low)  # another seed, another draw
    shift = (noisy_labels(y, 1.0, k, seed=0) - y) % k
    counts = torch.bincount(shift, minlength=k).numpy()
    assert counts[0] == 0  # never the clean class
    expected = n / (k - 1)
    sd = math.sqrt(n * (1 / (k - 1)) * (1 - 1 / (k - 1)))
    assert np.all(np.abs(counts[1:] - expected) < 5 * sd)  # uniform over the other classes: 5 s.d.
    with pytest.raises(ValueError, match=r"theta must be in \[0, 1\], got 1.5"):
        noisy_labels(y, 1.5, k, seed=0)
    with pytest.raises(ValueError, match="num_classes must be an integer ≥ 2"):
        noisy_labels(y, 0.1, 1, seed=0)


def _argv(root, out, *extra):
    return [
        "--data-root", str(root), "--val-size", "8", "--train-size", "0", "--thetas", "0,0.5",
        "--stages", "2", "--seeds", "2", "--epochs", "1", "--hidden", "4", "--batch-size", "8",
        "--temperature", "3", "--tempered", "teacher", "--chi", "0.75", "--quiet",
        "--out", str(out), *extra,
    ]  # fmt: skip


def test_chain_end_to_end_resume_and_extend(tmp_path, fashion_root, monkeypatch):
    root, _ = fashion_root
    out = tmp_path / "sd"
    calls = []
    real_fit = selfdistil.fit

    def recording(model, train, **kw):
        calls.append((kw["config"].seed, kw.get("lambda1", 1.0), kw.get("tempered")))
        return real_fit(model, train, **kw)

    monkeypatch.setattr(selfdistil, "fit", recording)
    assert main(_argv(root, out)) == 0
    # 2 θ × 2 seeds × 2 stages; stage t of seed s uses seed 1000 s + t; KD with λ₁ = 1 − χ
    assert sorted(calls) == sorted(
        [(1000 * s + 1, 1.0, None) for s in (0, 1)] * 2
        + [(1000 * s + 2, 0.25, "teacher") for s in (0, 1)] * 2
    )
    ds = xr.load_dataset(out / "selfdistil.nc")
    assert (out / "selfdistil.png").stat().st_size > 1000
    assert "| 0.5 |" in (out / "table.md").read_text(encoding="utf-8")
    assert ds.attrs["tempered"] == "teacher" and ds.attrs["temperature"] == 3.0
    assert ds.test_acc.shape == (2, 2, 2) and np.all(np.isfinite(ds.test_acc.values))
    acc = ds.test_acc.values
    np.testing.assert_allclose(ds.test_acc_mean.values, acc.mean(axis=2), rtol=1e-12)  # a mean
    se = acc.std(axis=2, ddof=1) / math.sqrt(2)
    np.testing.assert_allclose(ds.test_acc_se.values, se, rtol=1e-9, atol=1e-15)  # its s.e.
    gain = acc[:, 1] - acc[:, 0]  # paired over seeds
    np.testing.assert_allclose(ds.test_gain_mean.values[:, 1], gain.mean(axis=1), atol=1e-15)
    se = gain.std(axis=1, ddof=1) / math.sqrt(2)
    np.testing.assert_allclose(ds.test_gain_se.values[:, 1], se, rtol=1e-9, atol=1e-15)
    assert np.all(np.isnan(ds.agree_prev.values[:, 0])) and np.all(ds.agree_prev.values[:, 1] >= 0)
    # at θ = 0 the noisy labels are the clean ones
    np.testing.assert_array_equal(ds.train_acc_clean.values[0], ds.train_acc_noisy.values[0])
    # the checkpoint of (θ = 0.5, seed 1, stage 1) is the model whose test accuracy was recorded
    data = load_fashion_mnist(root, seed=0, val_size=8)
    model = build_model("mlp", data.input_shape, 10, hidden=4)
    ckpt = next((out / "checkpoints").glob("theta0.500000-seed1-stage1.pt"))
    model.load_state_dict(load_checkpoint(ckpt)["state_dict"])
    assert evaluate(model, data.test)[1] == pytest.approx(float(acc[1, 0, 1]), abs=1e-12)

    calls.clear()
    assert main(_argv(root, out)) == 0
    assert calls == []  # everything journalled: nothing trained again
    assert main(_argv(root, out, "--stages", "3")) == 0
    assert sorted(calls) == [(1000 * s + 3, 0.25, "teacher") for s in (0, 0, 1, 1)]
    ds3 = xr.load_dataset(out / "selfdistil.nc")
    np.testing.assert_array_equal(ds3.test_acc.values[:, :2], acc)  # stages 1-2 kept as they were


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--thetas", "0,1.5"], "--thetas: takes comma-separated θ in [0, 1]; got '0,1.5'"),
     (["--thetas", "0.2,0.2"], "--thetas: takes distinct θ"),
     (["--stages", "0"], "--stages must be an integer ≥ 1; got 0"),
     (["--chi", "0"], "--chi must be in (0, 1]; got 0.0"),
     (["--temperature", "-1"], "--temperature must be > 0"),
     (["--tempered", "student"], "argument --tempered: invalid choice: 'student'"),
     (["--weight-decay", "-0.1"], "--weight-decay must be ≥ 0"),
     (["--device", "cuda:x"], "--device")],
)  # fmt: skip
def test_bad_flags_one_line_exit_2_nothing_written(tmp_path, fashion_root, capsys, extra, needle):
    root, _ = fashion_root
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        main([*_argv(root, out), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m kdtheory.neural.selfdistil: error: ")
    assert needle in err
    assert not out.exists()


def test_absent_files_and_another_configuration_refused(tmp_path, fashion_root, capsys):
    out = tmp_path / "x"
    with pytest.raises(SystemExit) as exc:
        main(_argv(tmp_path / "nowhere", out))
    assert exc.value.code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Fashion-MNIST files absent" in err
    root, _ = fashion_root
    assert main(_argv(root, out, "--stages", "1", "--thetas", "0")) == 0
    with pytest.raises(SystemExit) as exc:  # same --out, another temperature: refused
        main(_argv(root, out, "--stages", "1", "--thetas", "0", "--temperature", "2"))
    assert exc.value.code == 2
    assert "journal of a different computation" in capsys.readouterr().err


def test_failed_stage_is_journalled_its_chain_waits_and_the_next_run_computes_it(
    tmp_path, fashion_root, monkeypatch, capsys
):
    root, _ = fashion_root
    out = tmp_path / "f"
    real = selfdistil._train_stage

    def failing(cfg, data, y, f, *, theta, stage, seed, device):
        if (theta, stage, seed) == (0.5, 2, 1):
            raise FloatingPointError("loss is nan")
        return real(cfg, data, y, f, theta=theta, stage=stage, seed=seed, device=device)

    monkeypatch.setattr(selfdistil, "_train_stage", failing)
    argv = _argv(root, out, "--stages", "3")
    assert main(argv) == 0  # the other chains succeeded
    err = capsys.readouterr().err
    assert "failed θ=0.5 stage 2 seed 1: FloatingPointError: loss is nan" in err
    ds = xr.load_dataset(out / "selfdistil.nc")
    assert np.isfinite(ds.test_acc.values[1, 0, 1])  # stage 1 of the chain is kept
    assert np.all(np.isnan(ds.test_acc.values[1, 1:, 1]))  # stages 2 and 3 are missing
    assert ds.n_seeds.values[1].tolist() == [2, 1, 1] and ds.n_seeds.values[0].tolist() == [2] * 3
    assert "θ = 0.5, stage 2, seed 1: FloatingPointError" in (out / "table.md").read_text("utf-8")

    calls = []

    def counting(cfg, data, y, f, *, theta, stage, seed, device):
        calls.append((theta, stage, seed))
        return real(cfg, data, y, f, theta=theta, stage=stage, seed=seed, device=device)

    monkeypatch.setattr(selfdistil, "_train_stage", counting)
    assert main(argv) == 0
    assert calls == [(0.5, 2, 1), (0.5, 3, 1)]  # from the journalled stage 1's checkpoint
    assert np.all(np.isfinite(xr.load_dataset(out / "selfdistil.nc").test_acc.values))
    assert "Failed" not in (out / "table.md").read_text("utf-8")

    # a journalled stage whose checkpoint was deleted: the chain's next stage fails, naming it
    (out / "checkpoints" / "theta0.000000-seed0-stage3.pt").unlink()
    calls.clear()
    assert main(_argv(root, out, "--stages", "4", "--thetas", "0")) == 0
    assert "checkpoint" in capsys.readouterr().err and "theta0.000000-seed0-stage3.pt" in (
        out / "table.md"
    ).read_text("utf-8")
    assert calls == [(0.0, 4, 1)]  # seed 0 could not start stage 4; seed 1 could
