"""Journals that cannot lie: every record validated, bad lines skipped with one warning and never
applied, appends on a new line, one writer at a time (advisory lock)."""

import json
import string
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kdtheory import GaussianMixture, LogisticTeacher, Problem, Student
from kdtheory.journal import Journal, JournalLockedError, JournalMismatchError, JournalWarning
from kdtheory.sweep import QUANTITIES, Axis, Sweep, run_sweep

GRID = Sweep(
    Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05, 1.0, 1.0, 0.5)),
    (Axis("lam", (0.03, 0.3)), Axis("alpha", (1.0, 3.0))),
)
LINE = Sweep(GRID.base, (Axis("alpha", (1.0, 1.5, 2.0, 2.5)),))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean 2×2 run: its journal's bytes and its Dataset."""
    path = tmp_path_factory.mktemp("clean") / "g.journal.jsonl"
    ds = run_sweep(GRID, path, progress=False)
    return path.read_bytes(), ds


@pytest.fixture(scope="module")
def clean_line(tmp_path_factory):
    """A clean 4-point 1-D run: its journal's bytes and its Dataset."""
    path = tmp_path_factory.mktemp("line") / "l.journal.jsonl"
    ds = run_sweep(LINE, path, progress=False)
    return path.read_bytes(), ds


def _rerun(sweep, path):
    """Rerun the sweep on the journal at ``path``; return (Dataset, JournalWarnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = run_sweep(sweep, path, progress=False)
    return ds, [w for w in caught if issubclass(w.category, JournalWarning)]


def _assert_same_points(a, b):
    """Same points to the solver's tolerance (fixed-point steps of 1e-10): recomputed points start
    from other warm starts, so values agree to ~1e-9 and iteration counts may differ."""
    for name in [*QUANTITIES, "converged", "status", "message"]:
        if a[name].dtype.kind in "fc":
            np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-8, atol=1e-10)
        else:
            np.testing.assert_array_equal(a[name].values, b[name].values)


def _forged(clean_bytes: bytes, **changes) -> bytes:
    """The last record of a clean journal with its index or values changed."""
    record = json.loads(clean_bytes.splitlines()[-1])
    record["index"] = changes.pop("index", record["index"])
    record["values"].update(changes)
    return json.dumps(record).encode()


BAD_LINES = {
    "random bytes": b"\xff\xfe\x00\x81garbage\xc3",
    "unknown keys": b'{"foo": 1}',
    "a list": b"[1, 2]",
    "index -1 (the issue's reproduction)": b'{"index": [-1, -1], "values": {"eg": 0.999}}',
    "index out of the grid": b'{"index": [99, 99], "values": {"eg": 0.999}}',
    "index of the wrong rank": b'{"index": [0], "values": {"eg": 0.999}}',
    "a string for a number": b'{"index": [0, 0], "values": {"eg": "abc"}}',
    "a bool index": b'{"index": [true, false], "values": {}}',
    "not JSON": b'{"index": [0, 0], "values": {',
}


@pytest.mark.parametrize("bad", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_bad_line_is_skipped_with_one_warning_and_never_applied(tmp_path, clean, bad):
    data, ds = clean
    path = tmp_path / "g.journal.jsonl"
    path.write_bytes(data + bad + b"\n")
    again, caught = _rerun(GRID, path)
    assert len(caught) == 1 and "skipped 1 invalid or truncated line" in str(caught[0].message)
    xr.testing.assert_identical(again, ds)  # nothing recomputed, nothing applied


@pytest.mark.parametrize(
    "changes",
    [
        {"index": [-1, -1], "eg": 0.999},  # a complete record at a negative index (numpy wraps it)
        {"index": [2, 0], "eg": 0.999},  # one past the end of the first axis
        {"eg": "0.999"},  # a number as a string
        {"status": 17},  # not a status code
        {"converged": True},  # a bool is not a 0/1 int here
        {"iterations": 1.5},
        {"unknown_field": 1.0},
    ],
)
def test_forged_complete_records_are_refused(tmp_path, clean, changes):
    data, ds = clean
    path = tmp_path / "g.journal.jsonl"
    path.write_bytes(data + _forged(data, **changes) + b"\n")
    again, caught = _rerun(GRID, path)
    assert len(caught) == 1
    xr.testing.assert_identical(again, ds)


def test_first_record_of_an_index_wins(tmp_path, clean):
    """A valid-looking later record of a journalled point (e.g. appended by hand) does not
    replace the one computed first."""
    data, ds = clean
    path = tmp_path / "g.journal.jsonl"
    path.write_bytes(data + _forged(data, eg=0.999) + b"\n")
    again, caught = _rerun(GRID, path)
    assert caught == []  # the record itself is valid
    xr.testing.assert_identical(again, ds)


def test_truncated_last_line_does_not_swallow_the_next_record(tmp_path, clean):
    """Drop the last record and cut the one before it in the middle (a kill while writing): the
    rerun recomputes both and writes them on new lines; a third run reads every point back."""
    data, ds = clean
    lines = data.splitlines(keepends=True)
    path = tmp_path / "g.journal.jsonl"
    path.write_bytes(b"".join(lines[:-2]) + lines[-2][:40])
    again, caught = _rerun(GRID, path)
    assert len(caught) == 1
    _assert_same_points(again, ds)  # two points recomputed
    third, caught = _rerun(GRID, path)
    assert len(caught) == 1  # only the cut line is skipped; both recomputed records are read
    xr.testing.assert_identical(third, again)
    assert path.read_bytes().endswith(b"\n")


def test_header_cut_short_starts_afresh(tmp_path, clean):
    data, ds = clean
    path = tmp_path / "g.journal.jsonl"
    path.write_bytes(data[:25])  # killed while writing the header: no newline yet
    again, caught = _rerun(GRID, path)
    assert caught == []
    _assert_same_points(again, ds)  # recomputed
    assert json.loads(path.read_bytes().splitlines()[0])["fingerprint"] == GRID.fingerprint()


def test_journal_of_another_computation_is_refused(tmp_path, clean):
    path = tmp_path / "g.journal.jsonl"
    path.write_bytes(clean[0])
    with pytest.raises(JournalMismatchError, match="different computation; use --name"):
        LINE.journal(path, fix="use --name")
    # nothing was changed
    assert path.read_bytes() == clean[0]


def test_custom_validate_for_other_journals(tmp_path):
    """``validate`` (used by the neural table) rejects records its caller cannot use."""

    def validate(record):
        if not 0 <= record["index"][0] < 3:
            raise ValueError("method index out of range")

    path = tmp_path / "t.jsonl"
    with Journal(path, "fp", {"what": "table"}, validate=validate) as j:
        j.append([((0, 0), {"acc": 0.9}), ((2, 1), {"acc": 0.8})])
    with path.open("ab") as fh:
        fh.write(b'{"index": [7, 0], "values": {"acc": 1.0}}\n')
    with pytest.warns(JournalWarning, match="skipped 1"):
        j = Journal(path, "fp", {"what": "table"}, validate=validate)
    assert j.done == {(0, 0): {"acc": 0.9}, (2, 1): {"acc": 0.8}}


def test_lock_refuses_a_second_writer_and_wait_queues_behind_it(tmp_path):
    path = tmp_path / "l.journal.jsonl"
    first = LINE.journal(path)
    with pytest.raises(JournalLockedError, match="another run is writing"):
        LINE.journal(path)
    threading.Timer(0.3, first.close).start()
    t0 = time.perf_counter()
    with LINE.journal(path, wait=True):
        assert time.perf_counter() - t0 >= 0.2  # it waited for the first to close
    LINE.journal(path).close()  # released again


# ----------------------------------------------------------------------------- properties

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
_NAMES = LINE.quantity_names()
_RECORDS = st.fixed_dictionaries(
    {
        "index": st.lists(st.integers(-5, 5), max_size=3),
        "values": st.dictionaries(
            st.sampled_from([*_NAMES, "foo"]),
            st.integers(-3, 20) | st.floats() | st.text(max_size=3) | st.booleans(),
            min_size=len(_NAMES) - 1,
        ),
    }
)
_SETTINGS = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _rerun_with(clean_line, tail: bytes):
    data, ds = clean_line
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "l.journal.jsonl"
        path.write_bytes(data + tail)
        again, caught = _rerun(LINE, path)
    assert len(caught) <= 1
    return again, ds


@_SETTINGS
@given(garbage=st.binary(max_size=200))
def test_random_bytes_appended_never_change_the_result(clean_line, garbage):
    again, ds = _rerun_with(clean_line, garbage)
    xr.testing.assert_identical(again, ds)


@_SETTINGS
@given(items=st.lists(_JSON | _RECORDS, max_size=4))
def test_random_json_appended_never_changes_the_result(clean_line, items):
    tail = b"".join(json.dumps(x).encode() + b"\n" for x in items)
    again, ds = _rerun_with(clean_line, tail)
    xr.testing.assert_identical(again, ds)


def test_truncation_at_every_offset_loses_only_whole_records(clean_line, monkeypatch):
    """Cut the journal at every byte: the journal yields a subset of the clean records, each
    intact, and at most one skipped line; appending the missing ones (checked at every 10th cut
    and around every line end, to keep it fast) restores all of them."""
    data, _ = clean_line
    monkeypatch.setattr("os.fsync", lambda fd: None)  # thousands of appends: durability not tested
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "l.journal.jsonl"
        path.write_bytes(data)
        full = {i: json.dumps(v) for i, v in Journal(path, LINE.fingerprint(), {}).done.items()}
        assert len(full) == 4
        ends = [k for k, byte in enumerate(data) if byte == ord("\n")]
        appends = {*range(0, len(data) + 1, 10), *[e + d for e in ends for d in (-1, 0, 1, 2)]}
        for cut in range(len(data) + 1):
            path.write_bytes(data[:cut])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with LINE.journal(path) as j:
                    assert all(full[i] == json.dumps(v) for i, v in j.done.items())
                    assert len(caught) <= 1
                    if cut not in appends:
                        continue
                    j.append([(i, json.loads(v)) for i, v in full.items() if i not in j.done])
                reread = Journal(path, LINE.fingerprint(), {}).done
            assert {i: json.dumps(v) for i, v in reread.items()} == full


@settings(max_examples=4, deadline=None)
@given(cut=st.integers(0, 10_000))
@example(cut=0)
def test_truncated_journal_resumes_to_the_clean_result(clean_line, cut):
    data, ds = clean_line
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "l.journal.jsonl"
        path.write_bytes(data[: cut % (len(data) + 1)])
        again, caught = _rerun(LINE, path)
    assert len(caught) <= 1
    _assert_same_points(again, ds)
    assert np.isfinite(again["eg"].values).all()


def test_random_text_lines_are_counted_once(tmp_path, clean_line):
    data, _ = clean_line
    path = tmp_path / "l.journal.jsonl"
    noise = "\n".join(string.ascii_letters[i : i + 7] for i in range(5))
    path.write_bytes(data + noise.encode())
    with pytest.warns(JournalWarning, match="skipped 5 invalid or truncated"):
        LINE.journal(path).close()
