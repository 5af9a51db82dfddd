"""One record check for every journal (``kdtheory.journal.check_values``): a record whose values
are non-finite where it claims a result, or outside the range of their quantity (ε = NaN with
converged = 1, ε = 5 with q = −1, ε = ∞), is skipped with a counted warning and its point computed
again, so that neither the Dataset/NetCDF nor the summary ever holds it — for a phase-diagram grid
and for the ``--figures selfdistil`` set."""

import json
import math
import shutil
import warnings

import numpy as np
import pytest
import xarray as xr

from kdtheory import GaussianMixture, LogisticTeacher, Problem, Student
from kdtheory.figures import selfdistil
from kdtheory.figures.selfdistil import LABELS, Grids, selfdistil_journal
from kdtheory.journal import (
    QUANTITY_RANGES,
    JournalWarning,
    Range,
    check_values,
    quantity_range,
)
from kdtheory.sweep import QUANTITIES, Axis, Sweep, run_sweep

#: the issue's forged records: changes to a clean record's values
FORGED = {
    "eg NaN, converged 1": {"eg": math.nan},
    "eg 5, q -1": {"eg": 5.0, "q": -1.0},
    "eg inf": {"eg": math.inf},
}

LINE = Sweep(
    Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05, 1.0, 1.0, 0.5)),
    (Axis("alpha", (1.0, 2.0)),),
    variants={"nokd": {"chi": 0.0}},
)


@pytest.fixture(scope="module")
def clean_line(tmp_path_factory):
    """A clean 2-point run with the no-KD variant: its journal's lines and its Dataset."""
    path = tmp_path_factory.mktemp("line") / "l.journal.jsonl"
    ds = run_sweep(LINE, path, progress=False)
    return path.read_bytes().splitlines(), ds


def _tampered(lines: list[bytes], changes: dict, where: int = -1) -> bytes:
    """The journal with the record on line ``where`` changed in place (not appended: the bad
    record is the only one of its point)."""
    lines = list(lines)
    record = json.loads(lines[where])
    record["values"].update(changes)
    lines[where] = json.dumps(record).encode()
    return b"\n".join(lines) + b"\n"


def _rerun_sweep(sweep, path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = run_sweep(sweep, path, progress=False)
    return ds, [str(w.message) for w in caught if issubclass(w.category, JournalWarning)]


@pytest.mark.parametrize("changes", FORGED.values(), ids=FORGED.keys())
def test_grid_record_out_of_range_is_skipped_counted_and_recomputed(tmp_path, clean_line, changes):
    lines, clean = clean_line
    path = tmp_path / "l.journal.jsonl"
    path.write_bytes(_tampered(lines, changes))
    ds, caught = _rerun_sweep(LINE, path)
    assert len(caught) == 1 and "skipped 1 invalid" in caught[0]
    # recomputed from another warm start: the fixed point to the solver's tolerance (steps 1e-10)
    for name in [*QUANTITIES, "gain"]:
        np.testing.assert_allclose(ds[name].values, clean[name].values, rtol=1e-8, atol=1e-10)
    assert (ds["converged"].values == 1).all() and ((ds["eg"] >= 0) & (ds["eg"] <= 1)).all()
    # the recomputed record was appended: a second rerun reads it and skips only the bad line
    assert len(path.read_bytes().splitlines()) == len(lines) + 1
    again, caught = _rerun_sweep(LINE, path)
    assert len(caught) == 1
    xr.testing.assert_identical(again, ds)


@pytest.mark.parametrize(
    "changes",
    [
        {"converged": 0},  # converged 0 with status 0 ("converged")
        {"status": 1},  # status max_iter with converged 1
        {"agreement": 1.5},
        {"V": -0.1},
        {"b": math.inf},  # a real quantity, but infinite in a converged record
        {"gain": 0.3},  # not eg_nokd − eg
        {"eg_nokd": math.nan},  # the variant's value missing though it converged
    ],
)
def test_grid_records_inconsistent_with_their_status_are_skipped(tmp_path, clean_line, changes):
    lines, clean = clean_line
    path = tmp_path / "l.journal.jsonl"
    path.write_bytes(_tampered(lines, changes, where=1))
    ds, caught = _rerun_sweep(LINE, path)
    assert len(caught) == 1
    for name in QUANTITIES:  # to the solver's tolerance, as above
        np.testing.assert_allclose(ds[name].values, clean[name].values, rtol=1e-8, atol=1e-10)


def test_a_failed_point_may_hold_nan_and_a_diverging_norm():
    """NaN (not computed) and +∞ (a diverging q) are allowed where no result is claimed; a value
    outside its range is not, whatever the status."""
    ranges = {k: quantity_range(k) for k in ("eg", "q", "b")}
    check_values({"eg": math.nan, "q": math.inf, "b": -math.inf}, ranges, ok=False)
    for bad in ({"eg": math.inf}, {"eg": -0.1}, {"q": -math.inf}):
        with pytest.raises(ValueError, match="must be a number in"):
            check_values({"eg": math.nan, "q": math.nan, "b": 0.0, **bad}, ranges, ok=False)
    with pytest.raises(ValueError, match="claims a result"):
        check_values({"eg": 0.2, "q": math.inf, "b": 0.0}, ranges, ok=True)
    with pytest.raises(ValueError, match="missing"):
        check_values({"eg": 0.2}, ranges, ok=True)
    with pytest.raises(ValueError, match="an integer in"):
        check_values({"iterations": 1.0}, {"iterations": quantity_range("iterations")}, ok=True)
    assert quantity_range("q_teacher_nokd", ["_nokd"]) is QUANTITY_RANGES["q_teacher"]
    assert 0.0 not in Range(0.0, lo_open=True) and str(Range(0.0, 1.0)) == "a number in [0, 1]"


# ----------------------------------------------------------------------------- selfdistil

GRID = Grids(alphas=(2.0,), thetas=(0.2,), stages=2)


def _record(index) -> dict:
    """A plausible converged record of the set (the journal path is under test, not the chain)."""
    hard = LABELS[index[2]] == "hard"
    return {
        "eg": [0.30, 0.28 if hard else 0.27], "eg_se": [0.0, 0.0], "lam": [0.5, 0.2],
        "temperature": [math.nan, selfdistil.HARD_TEMPERATURE if hard else 1.5],
        "m": [0.8, 0.7], "q": [1.2, 0.9], "b": [0.0, 0.01],
        "converged": 1, "solves": 40, "seconds": 0.5,
    }  # fmt: skip


@pytest.fixture
def fake_chains(monkeypatch):
    """``optimise_point`` replaced by :func:`_record`; returns the indices it was asked for."""
    calls = []

    def fake(data, stages, hard):
        index = (0, 0, LABELS.index("hard" if hard else "soft"))
        calls.append(index)
        return _record(index)

    monkeypatch.setattr(selfdistil, "optimise_point", fake)
    return calls


def _clean_journal(path):
    with selfdistil_journal(path, GRID) as j:
        j.append([((0, 0, k), _record((0, 0, k))) for k in range(len(LABELS))])
        return j.fingerprint


def _stage_changes(changes: dict) -> dict:
    """The forged changes as per-stage lists (stage 1 changed, stage 2 clean)."""
    return {k: [v, _record((0, 0, 0))[k][1]] for k, v in changes.items()}


@pytest.mark.parametrize("changes", FORGED.values(), ids=FORGED.keys())
def test_selfdistil_record_out_of_range_is_skipped_counted_and_recomputed(
    tmp_path, fake_chains, changes
):
    path = tmp_path / "selfdistil_chains.journal.jsonl"
    _clean_journal(path)
    with selfdistil_journal(path, GRID) as j:
        clean = selfdistil.compute(GRID, j, progress=False)
    path.write_bytes(_tampered(path.read_bytes().splitlines(), _stage_changes(changes)))
    with pytest.warns(JournalWarning, match="skipped 1 invalid"):
        journal = selfdistil_journal(path, GRID)
    with journal:
        ds = selfdistil.compute(GRID, journal, progress=False)
    assert fake_chains == [(0, 0, 1)]  # the tampered (last) record, and only it, computed again
    xr.testing.assert_identical(ds, clean)


def test_selfdistil_stage_one_has_no_temperature(tmp_path):
    path = tmp_path / "j.jsonl"
    _clean_journal(path)
    path.write_bytes(_tampered(path.read_bytes().splitlines(), {"temperature": [1.0, 1.5]}))
    with pytest.warns(JournalWarning, match="skipped 1"), selfdistil_journal(path, GRID) as j:
        assert list(j.done) == [(0, 0, 0)]


def test_selfdistil_netcdf_and_summary_never_hold_a_forged_record(
    tmp_path, fake_chains, capsys, monkeypatch
):
    """The issue's case through the CLI: ε = NaN marked converged in the journal; the NetCDF and
    the summary are those of the clean record (computed again).  No PNGs (seconds of drawing)."""
    from kdtheory.phase_diagram import main

    monkeypatch.setattr(selfdistil, "FIGURES", {})

    clean_dir, out = tmp_path / "clean", tmp_path / "out"
    clean_dir.mkdir()
    _clean_journal(clean_dir / "selfdistil_chains.journal.jsonl")
    with selfdistil_journal(clean_dir / "selfdistil_chains.journal.jsonl", GRID) as j:
        clean = selfdistil.compute(GRID, j, progress=False)
    expected = selfdistil.summary_lines(clean, selfdistil.findings(clean))
    shutil.copytree(clean_dir, out)
    path = out / "selfdistil_chains.journal.jsonl"
    forged = _stage_changes({"eg": math.nan})
    path.write_bytes(_tampered(path.read_bytes().splitlines(), forged, where=1))
    argv = ["--figures", "selfdistil", "--map-size", "1", "--stages", "2", "--jobs", "1"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    std = capsys.readouterr()
    assert "skipped 1 invalid" in std.err and fake_chains == [(0, 0, 0)]
    assert all(line in std.out for line in expected)
    with xr.open_dataset(out / "selfdistil.nc", engine="scipy") as ds:
        assert np.isfinite(ds["eg"].values).all()
        np.testing.assert_array_equal(ds["eg"].values, clean["eg"].values)


def test_headline_limit_journal_refuses_a_converged_optimum_without_its_values(tmp_path):
    from kdtheory.figures.headline import LIMIT_FIELDS, limit_journal

    good = dict.fromkeys(LIMIT_FIELDS, 0.2)
    good.update(converged_ridge=1, converged_kd=1, solves_kd=12)
    failed_kd = {**good, "converged_kd": 0, "eg_kd": math.nan, "lam_kd": math.nan}
    path = tmp_path / "limit.journal.jsonl"
    with limit_journal(path, [0.3], [0.5, 1.0]) as j:
        j.append([((0, 0), good), ((0, 1), failed_kd)])  # NaN allowed where not converged
    lines = path.read_bytes().splitlines()
    path.write_bytes(_tampered(lines, {"eg_kd": math.nan}, where=1))  # NaN claimed converged
    with (
        pytest.warns(JournalWarning, match="skipped 1"),
        limit_journal(path, [0.3], [0.5, 1.0]) as j,
    ):
        assert list(j.done) == [(0, 1)]
    path.write_bytes(_tampered(lines, {"eg_bayes": 1.5}, where=2))
    with (
        pytest.warns(JournalWarning, match="skipped 1"),
        limit_journal(path, [0.3], [0.5, 1.0]) as j,
    ):
        assert list(j.done) == [(0, 0)]


def test_simulation_journal_refuses_values_out_of_range(tmp_path):
    from kdtheory.sweep import SIM_KEYS, simulation_journal

    good = dict.fromkeys(SIM_KEYS, 0.2) | {"sim_failed": 0, "sim_status": 0, "sim_message": ""}
    all_failed = dict.fromkeys(SIM_KEYS, math.nan) | {"sim_failed": 4, "sim_status": 0}
    path = tmp_path / "sim.journal.jsonl"
    with simulation_journal(LINE, path, n=50, seeds=4) as j:
        j.append([((0,), good), ((1,), all_failed)])  # NaN where every seed failed: allowed
    lines = path.read_bytes().splitlines()
    for changes in ({"eg_sim": 5.0}, {"eg_sim": math.nan}, {"eg_sim_sem": -1.0}):
        path.write_bytes(_tampered(lines, changes, where=1))
        with pytest.warns(JournalWarning, match="skipped 1"):
            with simulation_journal(LINE, path, n=50, seeds=4) as j:
                assert list(j.done) == [(1,)]
