"""kdtheory.sweep.map_points, the runner of every grid of independent cells: items with a shared
object, serially and on local workers, and the worker slots (one per running item)."""

import time

import pytest

from kdtheory.sweep import map_points, worker_slot


def _interval(shared, item):
    t0 = time.perf_counter()
    time.sleep(0.2)
    return item, worker_slot(), t0, time.perf_counter(), shared


def test_local_workers_hold_distinct_slots_while_they_overlap():
    out = list(map_points(_interval, list(range(6)), 2, shared="s"))
    assert sorted(r[0] for r in out) == list(range(6)) and {r[4] for r in out} == {"s"}
    assert {r[1] for r in out} <= {0, 1}
    # time.perf_counter is system-wide on Linux (CLOCK_MONOTONIC): intervals compare across workers
    for a in out:
        for b in out:
            if a[0] < b[0] and a[2] < b[3] and b[2] < a[3]:  # both running at once
                assert a[1] != b[1]
    assert [r[1] for r in map_points(_interval, [0, 1], 1, shared=None)] == [0, 0]  # serial: 0


def test_map_points_refuses_jobs_below_one():
    with pytest.raises(ValueError, match="jobs must be ≥ 1"):
        map_points(abs, [1], 0)
