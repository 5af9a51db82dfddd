"""The neural journals' record checks go through ``kdtheory.journal.check_values``: a result
("ok") with a NaN, an infinite or an out-of-range value is refused (and so skipped with the
counted warning and computed again), a failed cell with its message is accepted."""

import math

import pytest

pytest.importorskip("torch")

from kdtheory.neural.experiments import grow, selfdistil, table


def _table_record(**changes):
    good = {"method": "naive", "seed": 0, "test_acc": 0.5, "test_loss": 0.7, "val_acc": 0.5,
            "val_loss": 0.7, "lambda1": 0.5, "temperature": 1.0, "train_steps": 20,
            "hyper_steps": 0, "wall_time_s": 0.1, "trials": 1, "trajectory": {},
            "teacher_test_acc": 0.9}  # fmt: skip
    return {**good, **changes}


@pytest.mark.parametrize(
    "changes",
    [{"test_loss": math.nan}, {"val_loss": math.inf}, {"test_loss": -0.1},
     {"temperature": 0.0}, {"wall_time_s": math.nan}, {"lambda1": math.nan}],
)  # fmt: skip
def test_table_result_values_must_be_finite_and_in_range(changes):
    table._check_record((1, 0), _table_record())
    with pytest.raises(ValueError):
        table._check_record((1, 0), _table_record(**changes))


def _stage(stage: int, **changes):
    good = {"theta": 0.2, "stage": stage, "seed": 0, "status": "ok", "test_acc": 0.8,
            "val_acc": 0.8, "train_acc_clean": 0.9, "train_acc_noisy": 0.7,
            "agree_prev": math.nan if stage == 1 else 0.95, "train_time_s": 1.5}  # fmt: skip
    return {"index": [200_000, stage, 0], "values": {**good, **changes}}


@pytest.mark.parametrize(
    ("stage", "changes"),
    [(2, {"agree_prev": math.nan}),  # stage ≥ 2 agrees with its predecessor: a number
     (1, {"agree_prev": 0.5}),  # stage 1 has no predecessor
     (1, {"test_acc": math.nan}), (2, {"train_time_s": math.inf}), (2, {"val_acc": 1.2})],
)  # fmt: skip
def test_selfdistil_stage_values(stage, changes):
    selfdistil._check_record(_stage(1))
    selfdistil._check_record(_stage(2))
    selfdistil._check_record(_stage(2, status="error", error="RuntimeError: x"))
    with pytest.raises(ValueError):
        selfdistil._check_record(_stage(stage, **changes))


def test_grow_cell_values():
    s = grow.Settings(families=("mlp",), schemes=("default",), seeds=2, epochs=1)
    validate = grow._validator(s)
    good = {"status": "ok", "test_loss": 0.4, "test_acc": 0.9, "L3": 0.5,
            "curve": {"val_loss": [1.0, 0.5], "val_acc": [0.5, 0.8], "ext_norm": [0, 0],
                      "ext_grad": [0, 0]},
            "corruption": {}, "probs": [], "train_s": 2.0}  # fmt: skip
    validate({"index": [0, 0, 0], "values": good})
    for bad in ({"L3": math.nan}, {"test_acc": 1.5}, {"train_s": -1.0},
                {"curve": {**good["curve"], "val_acc": [0.5, math.nan]}}):  # fmt: skip
        with pytest.raises(ValueError):
            validate({"index": [0, 0, 0], "values": {**good, **bad}})
