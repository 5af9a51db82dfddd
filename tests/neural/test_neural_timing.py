"""The timing utility: thread count and inference time with torch.utils.benchmark."""

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from kdtheory.neural.experiments import table, train  # noqa: E402
from kdtheory.neural.timing import (  # noqa: E402
    DEFAULT_THREADS,
    inference_time,
    inference_times,
    set_threads,
    time_call,
)

FAST = 0.01  # seconds of timed blocks: enough blocks for a median, short enough for the suite


def _stack(layers: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(256, 256) for _ in range(layers)])


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_time_call_positive_median_nonnegative_iqr(clock):
    x = torch.randn(64, 64)
    t = time_call(lambda: x @ x, min_run_time=FAST, clock=clock)
    assert t.median > 0 and t.iqr >= 0 and t.blocks >= 1
    assert math.isfinite(t.median) and math.isfinite(t.iqr)


def test_inference_times_fields_and_restored_mode():
    model = _stack(1).train()
    x = torch.randn(50, 256)
    res = inference_times({"m": model}, x, batch_size=1024, rounds=2, min_run_time=FAST)
    r = res["m"]
    assert set(res) == {"m"}
    assert model.training  # eval mode only during the measurement
    assert r.batch_size == 50  # capped at the number of inputs
    assert r.threads == torch.get_num_threads()
    assert r.clock == "cpu"  # "auto" on the CPU: CPU time, blind to other processes' load
    for t in (r.batch, r.single):
        assert t.median > 0 and t.iqr >= 0 and t.blocks >= 2  # ≥ one block per round
    assert r.per_input == pytest.approx(r.batch.median / 50)
    d = r.as_dict()
    assert d["batch"]["median"] == r.batch.median and d["per_input"] == r.per_input


def test_twenty_times_the_work_takes_longer():
    # 20 stacked 256×256 layers do 20× the multiply-adds and 20× the module calls of one: even
    # under heavy load on a shared machine (interleaved rounds, medians) that cannot reverse
    x = torch.randn(64, 256)
    res = inference_times({"one": _stack(1), "twenty": _stack(20)}, x, rounds=2, min_run_time=FAST)
    assert res["twenty"].batch.median > res["one"].batch.median
    assert res["twenty"].single.median > res["one"].single.median
    # and a batch of 64 inputs costs more than one input through the same model
    assert res["twenty"].batch.median > res["twenty"].single.median


def test_inference_time_single_model_is_inference_times():
    r = inference_time(_stack(2), torch.randn(8, 256), rounds=1, min_run_time=FAST)
    assert r.batch_size == 8 and r.batch.median > 0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"min_run_time": 0}, "min_run_time must be a finite number > 0"),
        ({"min_run_time": float("nan")}, "min_run_time must be a finite number > 0"),
        ({"min_run_time": float("inf")}, "min_run_time must be a finite number > 0"),
        ({"rounds": 0}, "rounds must be an integer ≥ 1"),
        ({"rounds": 1.5}, "rounds must be an integer ≥ 1"),
        ({"batch_size": 0}, "batch_size must be an integer ≥ 1"),
        ({"warmup": -1}, "warmup must be an integer ≥ 0"),
        ({"clock": "gpu"}, "clock must be one of auto, cpu, wall"),
    ],
)
def test_inference_times_rejects_bad_options(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        inference_times({"m": _stack(1)}, torch.randn(4, 256), **kwargs)


def test_inference_times_rejects_no_models_and_no_inputs():
    with pytest.raises(ValueError, match="models must hold at least one model"):
        inference_times({}, torch.randn(4, 256))
    with pytest.raises(ValueError, match="x must hold at least one input"):
        inference_times({"m": _stack(1)}, torch.randn(0, 256))


def test_time_call_rejects_bad_options():
    with pytest.raises(ValueError, match="min_run_time must be a finite number > 0"):
        time_call(lambda: None, min_run_time=-1.0)
    with pytest.raises(ValueError, match="threads must be an integer ≥ 1"):
        time_call(lambda: None, threads=0)
    with pytest.raises(ValueError, match="clock must be one of auto, cpu, wall"):
        time_call(lambda: None, clock="tsc")


def test_set_threads_sets_and_validates():
    before = torch.get_num_threads()
    try:
        set_threads(2)
        assert torch.get_num_threads() == 2
        set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in (0, -1, 1.0, "2"):
        with pytest.raises(ValueError, match="threads must be an integer ≥ 1"):
            set_threads(bad)


@pytest.mark.parametrize("module", [train, table])
def test_cli_threads_default_and_bad_value(module, capsys, tmp_path):
    assert module.build_parser().parse_args([]).threads == DEFAULT_THREADS
    assert "--threads" in module.build_parser().format_help()
    with pytest.raises(SystemExit) as exc:
        module.main(["--threads", "0", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads must be an integer ≥ 1" in err[0]
    assert not (tmp_path / "out").exists()
