"""Resource checks of the neural CLIs, before any work: counts against the documented caps of
``kdtheory.neural.cli`` and model sizes (parameters counted on the meta device × 16 bytes) against
the memory available; a refusal is one line, exit code 2, naming the flag."""

import importlib
import os

import pytest

torch = pytest.importorskip("torch")

from kdtheory.neural import cli  # noqa: E402
from kdtheory.neural.cli import (  # noqa: E402
    MAX_EPOCHS,
    MAX_FITS,
    MAX_SEEDS,
    TRAINING_COPIES,
    ResourceError,
    available_memory,
    check_count,
    check_fits,
    check_model_memory,
)
from kdtheory.neural.models import build_model, count_parameters  # noqa: E402


def test_counts_at_the_cap_pass_and_one_more_is_refused():
    check_count("--seeds", MAX_SEEDS, MAX_SEEDS)
    check_count("--seeds", None, MAX_SEEDS)  # not given
    for bad in (MAX_SEEDS + 1, 0, True, 2.0):
        with pytest.raises(ResourceError, match=r"--seeds must be an integer in \[1, 1_000\]"):
            check_count("--seeds", bad, MAX_SEEDS)
    check_fits(MAX_FITS, "cells × seeds")
    with pytest.raises(ResourceError, match="cells × seeds make 100_001 fits"):
        check_fits(MAX_FITS + 1, "cells × seeds")


def test_parameters_counted_on_the_meta_device_are_the_closed_form():
    """An MLP 64 → h₁ → h₂ → 10 has 64h₁ + h₁ + h₁h₂ + h₂ + 10h₂ + 10 parameters, also when the
    widths would need petabytes (nothing is allocated on the meta device)."""
    for h1, h2 in ((3, 5), (10**8, 10**8)):
        n = check_model_memory(
            "--students", "x", lambda a=h1, b=h2: build_model("mlp", (1, 8, 8), 10, hidden=[a, b]),
            available=2**62,
        )  # fmt: skip
        assert n == 64 * h1 + h1 + h1 * h2 + h2 + 10 * h2 + 10
    real = build_model("mlp", (1, 8, 8), 10, hidden=[3, 5])
    assert count_parameters(real) == 64 * 3 + 3 + 15 + 5 + 50 + 10


def test_memory_refusal_at_exactly_one_byte_short():
    def build():
        return build_model("mlp", (1, 8, 8), 10, hidden=[7])

    n = 64 * 7 + 7 + 70 + 10
    need = n * 4 * TRAINING_COPIES
    assert check_model_memory("--hidden", "7", build, available=need) == n
    with pytest.raises(ResourceError, match=f"--hidden 7: {n:_} parameters need about"):
        check_model_memory("--hidden", "7", build, available=need - 1)


def test_available_memory_is_positive_and_at_most_the_physical_memory():
    avail = available_memory()
    if avail is None:  # neither /proc/meminfo nor sysconf: the check is skipped
        pytest.skip("no memory figure on this platform")
    assert 0 < avail <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


HUGE = "100000000x100000000"  # 10¹⁶ parameters: 1.6 × 10¹⁷ bytes to train, on any machine
CASES = [
    ("compress", ["--students", f"mlp:{HUGE}"], "--students mlp:" + HUGE),
    ("compress", ["--seeds", "1000000"], "--seeds must be an integer in [1, 1_000]"),
    ("compress", ["--epochs", "1000000000"], "--epochs must be an integer in [1, 10_000]"),
    ("compress", ["--teacher-epochs", "20000"], "--teacher-epochs must be an integer in"),
    ("compress", ["--full-grid", "--temperatures", ",".join(map(str, range(1, 60))),
                  "--epochs", ",".join(map(str, range(1, 60))), "--seeds", "30"],
     "make 626_580 fits"),  # digits: 3 students × 59 T × 59 epochs, × 2 (KD or not) × 30
    ("grow", ["--seeds", "5000"], "--seeds must be an integer in [2, 1_000]"),
    ("grow", ["--epochs", "100000"], "--epochs must be an integer in [1, 10_000]"),
    ("selfdistil", ["--hidden", "10000000000"], "--hidden 10000000000: "),
    ("selfdistil", ["--seeds", "1000000"], "--seeds must be an integer in [1, 1_000]"),
    ("selfdistil", ["--stages", "1000", "--seeds", "1000"], "make 3_000_000 fits"),
    ("table", ["--runs", "1000000"], "--runs must be an integer in [1, 1_000]"),
    ("table", ["--steps", "100000000"], "--steps must be an integer in [1, 10_000_000]"),
    ("train", ["--epochs", "1000000000"], "--epochs must be an integer in [1, 10_000]"),
    ("train", ["--student-hidden", "10000000000"], "--student-hidden 10000000000: "),
]  # fmt: skip


@pytest.mark.parametrize(("tool", "extra", "needle"), CASES)
def test_cli_refuses_before_any_work(tmp_path, capsys, monkeypatch, tool, extra, needle):
    mod = importlib.import_module(f"kdtheory.neural.experiments.{tool}")
    work = []
    for name in ("run_study", "run", "run_selfdistil", "run_table", "load_or_train_teacher"):
        if hasattr(mod, name):  # the function that starts the work: must never be reached
            monkeypatch.setattr(mod, name, lambda *a, **k: work.append(a))
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        mod.main(["--out", str(out), "--quiet", *extra] if tool != "grow" else
                 ["--out", str(out), *extra])  # fmt: skip
    assert exc.value.code == 2 and work == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ": error: " in err and needle in err
    assert cli.MAX_EPOCHS == MAX_EPOCHS  # the caps are the documented ones
