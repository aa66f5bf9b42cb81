"""Tests for fc_jax.runs.schedule: pure functions of (schedule, seed, epoch)."""

import json

import numpy as np
import pytest

from fc_jax.runs.schedule import (
    Halving,
    Pbt,
    Schedule,
    check_schedule,
    chunks_of,
    epoch_indices,
    epoch_learning_rate,
    rung_budgets,
    schedule_from_record,
    schedule_record,
    train_subsample,
)


def test_epoch_learning_rate_is_the_course_decay():
    assert epoch_learning_rate(1e-2, 0.5, 0) == 1e-2
    lr = 1e-2
    for _ in range(3):
        lr *= 0.5
    assert epoch_learning_rate(1e-2, 0.5, 3) == lr  # the same float64 products, bit for bit


@pytest.mark.parametrize(
    "epochs,halving,budgets",
    [
        (10, None, [10]),
        (10, Halving(3, 1), [1, 3, 9, 10]),
        (9, Halving(3, 1), [1, 3, 9]),
        (10, Halving(2, 4), [4, 8, 10]),
        (3, Halving(3, 5), [3]),
    ],
)
def test_rung_budgets(epochs, halving, budgets):
    assert rung_budgets(epochs, halving) == budgets


@pytest.mark.parametrize("steps,requested,chunks", [(12, 5, 4), (12, 1, 1), (7, 3, 1), (6, 50, 6)])
def test_chunks_divide_the_epoch(steps, requested, chunks):
    assert chunks_of(steps, requested) == chunks and steps % chunks == 0


@pytest.mark.parametrize(
    "schedule,match",
    [
        (Schedule(num_epochs=0), "num_epochs must be an integer >= 1"),
        (Schedule(batch_size=2.5), "batch_size must be an integer >= 1"),
        (Schedule(batch_size=500), "larger than the training set"),
        (Schedule(chunks_per_epoch=True), "chunks_per_epoch"),
        (Schedule(seed=-3), "seed must be an integer"),
        (Schedule(num_train_samples=0), "num_train_samples"),
        (Schedule(halving=Halving(eta=1)), "eta must be an integer >= 2"),
        (Schedule(halving=Halving(min_epochs=0)), "min_epochs"),
    ],
)
def test_check_schedule_names_the_bad_entry(schedule, match):
    with pytest.raises(ValueError, match=match):
        check_schedule(schedule, num_train=100)


def test_epoch_indices_depend_only_on_seed_and_epoch():
    s = Schedule(batch_size=10, seed=4)
    a = epoch_indices(s, [0, 1], 2, 50, 5)
    assert a.shape == (5, 10) and a.min() >= 0 and a.max() < 50  # shared: one draw for all lanes
    np.testing.assert_array_equal(a, epoch_indices(s, [7, 8, 9], 2, 50, 5))
    assert not np.array_equal(a, epoch_indices(s, [0, 1], 3, 50, 5))
    per_lane = epoch_indices(s._replace(independent_batches=True), [0, 1, 0], 2, 50, 5)
    assert per_lane.shape == (3, 5, 10)
    np.testing.assert_array_equal(per_lane[0], per_lane[2])
    assert not np.array_equal(per_lane[0], per_lane[1])


def test_permutation_sampling_visits_every_example_once_per_pass():
    s = Schedule(batch_size=10, replace=False)
    idx = epoch_indices(s, [0], 0, 50, 5)
    assert sorted(idx.ravel().tolist()) == list(range(50))


def test_train_subsample():
    s = Schedule(seed=1, num_train_samples=20)
    rows = train_subsample(s, 3, 100)
    assert len(set(rows.tolist())) == 20
    np.testing.assert_array_equal(rows, train_subsample(s, 3, 100))
    assert train_subsample(s, 3, 20) == slice(None)  # not smaller than the data: all rows
    assert train_subsample(s._replace(num_train_samples=None), 0, 100) == slice(None)


@pytest.mark.parametrize(
    "schedule",
    [
        Schedule(),
        Schedule(num_epochs=9, halving=Halving(2, 3), seeds=2, image_shape=(3, 8, 8), flip=True),
        Schedule(pbt=Pbt(1, 0.5, ("learning_rate", "reg")), num_train_samples=None),
    ],
)
def test_a_schedule_record_is_json_and_rebuilds_the_same_schedule(schedule):
    record = json.loads(json.dumps(schedule_record(schedule)))
    assert schedule_from_record(record) == schedule
    assert set(record) == set(Schedule._fields)
    assert record["halving"] is None or record["halving"] == schedule.halving._asdict()


def test_a_schedule_record_with_an_unknown_entry_is_refused():
    with pytest.raises(ValueError, match=r"unknown entries \['eta'\]"):
        schedule_from_record({**schedule_record(Schedule()), "eta": 3})
