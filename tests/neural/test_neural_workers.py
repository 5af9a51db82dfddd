"""The neural grids on the one runner (kdtheory.sweep.map_points): a compress grid on 2 local
workers (and, with -m slow, on a local Dask cluster) gives the serial table; the device of a
worker slot."""

import csv

import pytest

torch = pytest.importorskip("torch")

from kdtheory.neural.device import slot_device  # noqa: E402
from kdtheory.neural.experiments import compress  # noqa: E402
from kdtheory.neural.experiments.compress import main  # noqa: E402

# the columns that measure time (CPU or wall clock) differ from run to run; all others must not
TIMING = {"train_time_s", "speedup_batch", "speedup_per_sample", "batch_s", "per_sample_s",
          "teacher_batch_s", "teacher_per_sample_s"}  # fmt: skip


def _table(out, name):
    with open(out / name, encoding="utf-8") as fh:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]


def _argv(out, cache, *extra):
    return [
        "--preset", "digits", "--students", "mlp:8", "--temperatures", "2",
        "--epochs", "2", "--teacher-epochs", "1", "--seeds", "2", "--timing-repeats", "1",
        "--quiet", "--cache-dir", str(cache), "--out", str(out), *extra,
    ]  # fmt: skip


def _serial(tmp_path, monkeypatch):
    """The grid in this process; its teacher, trained here, is cached for the other runs."""
    monkeypatch.setattr(compress, "TIMING_MIN_RUN_TIME", 1e-3)  # timing is not compared
    cache = tmp_path / "cache"
    assert main(_argv(tmp_path / "serial", cache)) == 0
    return cache


def _same_tables(tmp_path, other):
    for name in ("runs.csv", "cells.csv"):
        serial = _table(tmp_path / "serial", name)
        assert len(serial) == (4 if name == "runs.csv" else 2)  # KD/no KD (× 2 seeds)
        assert {r.get("status", "ok") for r in serial} == {"ok"}
        # the same seeds, data and teacher: the same weights, hence identical accuracies
        assert _table(tmp_path / other, name) == serial


def test_compress_grid_on_two_local_workers_gives_the_serial_table(tmp_path, monkeypatch):
    cache = _serial(tmp_path, monkeypatch)
    assert main(_argv(tmp_path / "jobs", cache, "--jobs", "2")) == 0
    _same_tables(tmp_path, "jobs")


@pytest.mark.slow  # a local Dask cluster of 2 processes, each importing torch: ~30 s on 2 cores
def test_compress_grid_on_a_local_dask_cluster_gives_the_serial_table(tmp_path, monkeypatch):
    distributed = pytest.importorskip("dask.distributed")
    cache = _serial(tmp_path, monkeypatch)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:  # fmt: skip
        assert main(_argv(tmp_path / "dask", cache, "--scheduler", cluster.scheduler_address)) == 0
    _same_tables(tmp_path, "dask")


def test_slot_device_spreads_cuda_slots_over_the_gpus_without_cuda():
    cuda = torch.device("cuda")
    assert [slot_device(cuda, k, count=2) for k in range(4)] == [
        torch.device("cuda", i) for i in (0, 1, 0, 1)
    ]
    assert slot_device(torch.device("cuda", 1), 0, count=2) == torch.device("cuda", 1)  # as given
    assert slot_device(torch.device("cpu"), 3) == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        slot_device(cuda, 0, count=0)
