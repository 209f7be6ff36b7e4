"""`kerameta.data`: the sinusoid task family and episodes held in arrays."""

import math
import re
import warnings

import keras
import numpy as np
import pytest
from helpers import maml as compiled_maml
from helpers import mlp

import kerameta

SinusoidTasks = kerameta.data.SinusoidTasks
EpisodeDataset = kerameta.data.EpisodeDataset
EPISODE_KEYS = {"support_x", "support_y", "query_x"}


def _assert_batches_equal(a, b):
    (xa, ya), (xb, yb) = a, b
    assert set(xa) == set(xb) == EPISODE_KEYS
    for key in EPISODE_KEYS:
        np.testing.assert_array_equal(xa[key], xb[key])
    np.testing.assert_array_equal(ya, yb)


def _differ(a, b):
    return not np.array_equal(a[0]["support_x"], b[0]["support_x"])


# ----------------------------------------------------------------------
# SinusoidTasks
# ----------------------------------------------------------------------
def test_sinusoid_batch_shapes_and_dtypes():
    tasks = SinusoidTasks(
        shots=5, query_shots=7, tasks_per_batch=3, num_batches=4
    )
    assert len(tasks) == 4
    batch = tasks[0]
    assert isinstance(batch, tuple) and len(batch) == 2
    x, query_y = batch
    assert set(x) == EPISODE_KEYS
    assert x["support_x"].shape == (3, 5, 1)
    assert x["support_y"].shape == (3, 5, 1)
    assert x["query_x"].shape == (3, 7, 1)
    assert query_y.shape == (3, 7, 1)
    for array in (*x.values(), query_y):
        assert isinstance(array, np.ndarray)
        assert array.dtype == np.float32


def test_sinusoid_query_shots_default_to_shots():
    x, query_y = SinusoidTasks(shots=4, tasks_per_batch=2, num_batches=1)[0]
    assert x["query_x"].shape == (2, 4, 1)
    assert query_y.shape == (2, 4, 1)


def test_sinusoid_len_is_num_batches():
    assert len(SinusoidTasks(num_batches=7)) == 7
    assert len(SinusoidTasks()) == 100


def test_sinusoid_targets_follow_task_parameters():
    tasks = SinusoidTasks(shots=6, query_shots=9, tasks_per_batch=4, seed=3)
    for index in (0, 5):
        x, query_y = tasks[index]
        parameters = tasks.task_parameters(index)
        amplitude = parameters["amplitude"][:, None, None]
        phase = parameters["phase"][:, None, None]
        for inputs, targets in (
            (x["support_x"], x["support_y"]),
            (x["query_x"], query_y),
        ):
            expected = amplitude * np.sin(inputs.astype(np.float64) - phase)
            np.testing.assert_allclose(targets, expected, rtol=0, atol=1e-5)


def test_sinusoid_default_ranges():
    tasks = SinusoidTasks(shots=10, tasks_per_batch=25, num_batches=4)
    amplitude = np.concatenate(
        [tasks.task_parameters(i)["amplitude"] for i in range(4)]
    )
    phase = np.concatenate(
        [tasks.task_parameters(i)["phase"] for i in range(4)]
    )
    x = np.concatenate(
        [np.concatenate([b[0]["support_x"], b[0]["query_x"]]) for b in tasks]
    )
    assert amplitude.shape == phase.shape == (100,)
    # Within the ranges of the MAML paper, and spread over them.
    assert 0.1 <= amplitude.min() < 1.0 and 4.0 < amplitude.max() <= 5.0
    assert 0.0 <= phase.min() < 0.5 and math.pi - 0.5 < phase.max() <= math.pi
    assert -5.0 <= x.min() < -4.0 and 4.0 < x.max() <= 5.0


def test_sinusoid_custom_ranges():
    tasks = SinusoidTasks(
        shots=20,
        tasks_per_batch=10,
        num_batches=2,
        amplitude_range=(2, 3),
        phase_range=(0.5, 0.5),
        input_range=(1, 2),
    )
    for index in range(2):
        parameters = tasks.task_parameters(index)
        assert np.all(
            (parameters["amplitude"] >= 2) & (parameters["amplitude"] <= 3)
        )
        np.testing.assert_array_equal(parameters["phase"], 0.5)
        x, query_y = tasks[index]
        for inputs in (x["support_x"], x["query_x"]):
            assert np.all((inputs >= 1) & (inputs <= 2))


def test_sinusoid_is_deterministic_by_seed_and_index():
    a = SinusoidTasks(tasks_per_batch=3, num_batches=3, seed=5)
    b = SinusoidTasks(tasks_per_batch=3, num_batches=3, seed=5)
    # Any order, any instance: a batch depends on the seed and index only.
    later_first = b[2]
    _assert_batches_equal(a[2], later_first)
    _assert_batches_equal(a[0], b[0])
    _assert_batches_equal(a[0], a[0])
    for key in ("amplitude", "phase"):
        np.testing.assert_array_equal(
            a.task_parameters(1)[key], b.task_parameters(1)[key]
        )
    assert _differ(a[0], a[1])


def test_sinusoid_different_seeds_differ():
    a = SinusoidTasks(tasks_per_batch=3, num_batches=2, seed=0)
    b = SinusoidTasks(tasks_per_batch=3, num_batches=2, seed=1)
    assert _differ(a[0], b[0])
    assert not np.array_equal(
        a.task_parameters(0)["amplitude"], b.task_parameters(0)["amplitude"]
    )


def test_sinusoid_new_tasks_each_epoch():
    tasks = SinusoidTasks(
        tasks_per_batch=3, num_batches=2, seed=0, new_tasks_each_epoch=True
    )
    first_epoch = [tasks[0], tasks[1]]
    parameters = tasks.task_parameters(0)
    _assert_batches_equal(tasks[0], first_epoch[0])  # stable within an epoch
    tasks.on_epoch_end()
    assert _differ(tasks[0], first_epoch[0])
    assert _differ(tasks[1], first_epoch[1])
    assert not np.array_equal(
        tasks.task_parameters(0)["amplitude"], parameters["amplitude"]
    )
    # The new epoch is reproducible too.
    again = SinusoidTasks(
        tasks_per_batch=3, num_batches=2, seed=0, new_tasks_each_epoch=True
    )
    again.on_epoch_end()
    _assert_batches_equal(tasks[0], again[0])


def test_sinusoid_same_tasks_each_epoch():
    tasks = SinusoidTasks(tasks_per_batch=3, num_batches=2, seed=0)
    first = tasks[1]
    tasks.on_epoch_end()
    tasks.on_epoch_end()
    _assert_batches_equal(tasks[1], first)


def test_sinusoid_fit_draws_new_tasks_each_epoch():
    train = SinusoidTasks(
        shots=2, tasks_per_batch=2, num_batches=1, new_tasks_each_epoch=True
    )
    validation = SinusoidTasks(shots=2, tasks_per_batch=2, num_batches=1)
    first_train, first_validation = train[0], validation[0]
    maml = compiled_maml(mlp((1, 1)))
    history = maml.fit(train, validation_data=validation, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert _differ(train[0], first_train)
    _assert_batches_equal(validation[0], first_validation)


def test_sinusoid_index_out_of_range():
    tasks = SinusoidTasks(num_batches=2)
    for index in (2, -1):
        with pytest.raises(
            IndexError,
            match=rf"Batch index {index} is out of range for a dataset of 2 "
            "batches",
        ):
            tasks[index]


def test_sinusoid_passes_pydataset_arguments():
    tasks = SinusoidTasks(num_batches=2, workers=2, max_queue_size=3)
    assert tasks.workers == 2
    assert tasks.max_queue_size == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shots": 0}, "`shots` must be a positive integer. Received: shots=0"),
        ({"shots": 2.5}, "Received: shots=2.5"),
        ({"query_shots": -1}, "`query_shots` must be a positive integer"),
        ({"tasks_per_batch": True}, "Received: tasks_per_batch=True"),
        ({"num_batches": 0}, "`num_batches` must be a positive integer"),
        (
            {"amplitude_range": (5, 1)},
            "`amplitude_range` must satisfy low <= high. Received: "
            "amplitude_range=(5, 1)",
        ),
        (
            {"phase_range": 3.0},
            "`phase_range` must be a pair (low, high). Received: "
            "phase_range=3.0",
        ),
        ({"input_range": (1, 2, 3)}, "`input_range` must be a pair"),
        ({"input_range": ("a", 1)}, "`input_range` must be a pair"),
        (
            {"amplitude_range": (0, math.inf)},
            "`amplitude_range` must hold finite numbers that fit in float32 "
            "(the tasks are float32; |value| <= 3.4e+38). Received: "
            "amplitude_range=(0, inf)",
        ),
        (
            {"phase_range": (math.nan, 1.0)},
            "`phase_range` must hold finite numbers",
        ),
        (
            {"input_range": (-1e300, 1e300)},
            "`input_range` must hold finite numbers that fit in float32",
        ),
        (
            {"amplitude_range": (0, 1e39)},
            "Received: amplitude_range=(0, 1e+39)",
        ),
        ({"seed": -1}, "`seed` must be a non-negative integer"),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_sinusoid_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SinusoidTasks(**kwargs)


def test_sinusoid_extreme_but_valid_ranges_stay_finite():
    float32_max = float(np.finfo(np.float32).max)
    tasks = SinusoidTasks(
        shots=50,
        tasks_per_batch=4,
        num_batches=1,
        amplitude_range=(float32_max / 2, float32_max),
        input_range=(-1e30, 1e30),
    )
    x, query_y = tasks[0]
    for array in (*x.values(), query_y):
        assert np.all(np.isfinite(array))


@pytest.mark.parametrize("make", [SinusoidTasks, EpisodeDataset])
def test_seed_none_names_the_argument(make):
    if make is EpisodeDataset:
        array = np.zeros((2, 3, 1), "float32")
        args = (array, array, array)
    else:
        args = ()
    for seed in (None, 1.0, -1):
        with pytest.raises(
            ValueError,
            match=re.escape(
                f"`seed` must be a non-negative integer (NumPy's generators "
                f"take no negative seeds). Received: seed={seed!r}"
            ),
        ):
            make(*args, seed=seed)


# ----------------------------------------------------------------------
# EpisodeDataset
# ----------------------------------------------------------------------
def _arrays(num_tasks=5, shots=2, query_shots=3):
    """Episode arrays whose values tell the task and example apart."""
    task = np.arange(num_tasks, dtype="float32")[:, None, None]
    support = task * 100 + np.arange(shots, dtype="float32")[None, :, None]
    query = task * 100 + 50 + np.arange(query_shots)[None, :, None]
    query = query.astype("float32")
    return support, -support, query, -query


def test_episode_dataset_batches_in_order():
    support_x, support_y, query_x, query_y = _arrays()
    dataset = EpisodeDataset(
        support_x, support_y, query_x, query_y, tasks_per_batch=2
    )
    assert dataset.num_tasks == 5
    # 5 tasks in batches of 2: the final partial batch (task 4) is dropped,
    # so every batch has the same number of tasks.
    assert len(dataset) == 2
    for index, tasks in enumerate(([0, 1], [2, 3])):
        x, y = dataset[index]
        assert set(x) == EPISODE_KEYS
        np.testing.assert_array_equal(x["support_x"], support_x[tasks])
        np.testing.assert_array_equal(x["support_y"], support_y[tasks])
        np.testing.assert_array_equal(x["query_x"], query_x[tasks])
        np.testing.assert_array_equal(y, query_y[tasks])
    with pytest.raises(IndexError, match="Batch index 2 is out of range"):
        dataset[2]


def test_episode_dataset_defaults_to_one_task_per_batch():
    dataset = EpisodeDataset(*_arrays(num_tasks=3))
    assert len(dataset) == 3
    x, y = dataset[2]
    assert x["support_x"].shape == (1, 2, 1)
    assert y.shape == (1, 3, 1)


def test_episode_dataset_accepts_lists():
    support_x, support_y, query_x, query_y = _arrays(num_tasks=2)
    dataset = EpisodeDataset(
        support_x.tolist(),
        support_y.tolist(),
        query_x.tolist(),
        query_y.tolist(),
        tasks_per_batch=2,
    )
    np.testing.assert_array_equal(dataset[0][0]["query_x"], query_x)


def test_episode_dataset_without_shuffle_repeats_each_epoch():
    dataset = EpisodeDataset(*_arrays(), tasks_per_batch=2)
    first = dataset[1]
    dataset.on_epoch_end()
    _assert_batches_equal(dataset[1], first)


def _epoch_tasks(dataset):
    """The task ids served in one epoch, in order."""
    return [
        int(task)
        for index in range(len(dataset))
        for task in dataset[index][0]["support_x"][:, 0, 0] // 100
    ]


def test_episode_dataset_shuffle():
    arrays = _arrays(num_tasks=6)
    dataset = EpisodeDataset(*arrays, tasks_per_batch=2, shuffle=True, seed=1)
    epoch_0 = _epoch_tasks(dataset)
    # A permutation of all tasks, the same for the same seed.
    assert sorted(epoch_0) == list(range(6))
    assert epoch_0 != list(range(6))
    same = EpisodeDataset(*arrays, tasks_per_batch=2, shuffle=True, seed=1)
    assert _epoch_tasks(same) == epoch_0
    other = EpisodeDataset(*arrays, tasks_per_batch=2, shuffle=True, seed=2)
    assert _epoch_tasks(other) != epoch_0
    # Stable within an epoch; a new order after it.
    assert _epoch_tasks(dataset) == epoch_0
    dataset.on_epoch_end()
    epoch_1 = _epoch_tasks(dataset)
    assert sorted(epoch_1) == list(range(6))
    assert epoch_1 != epoch_0
    same.on_epoch_end()
    assert _epoch_tasks(same) == epoch_1
    # Shuffled batches keep each task's examples together.
    x, y = dataset[0]
    np.testing.assert_array_equal(x["support_y"], -x["support_x"])
    np.testing.assert_array_equal(y, -x["query_x"])


def test_episode_dataset_shuffle_with_partial_batch():
    dataset = EpisodeDataset(
        *_arrays(num_tasks=5), tasks_per_batch=2, shuffle=True, seed=0
    )
    seen = set()
    for _ in range(6):
        tasks = _epoch_tasks(dataset)
        assert len(tasks) == len(set(tasks)) == 4
        seen.update(tasks)
        dataset.on_epoch_end()
    # The dropped task changes with the order: over epochs all are used.
    assert seen == set(range(5))


def test_episode_dataset_without_query_y_predicts():
    support_x, support_y, query_x, _ = _arrays(num_tasks=4)
    dataset = EpisodeDataset(support_x, support_y, query_x, tasks_per_batch=2)
    batch = dataset[1]
    assert isinstance(batch, tuple) and len(batch) == 1
    np.testing.assert_array_equal(batch[0]["query_x"], query_x[2:])
    maml = compiled_maml(mlp((1, 1)))
    with warnings.catch_warnings():
        # Keras's torch backend converts the predictions with `np.array`,
        # which NumPy 2.4 warns about (torch's `__array__` has no `copy`).
        warnings.filterwarnings(
            "ignore",
            message="__array__ implementation doesn't accept a copy",
            category=DeprecationWarning,
        )
        predictions = maml.predict(dataset, verbose=0)
    assert predictions.shape == (4, 3, 1)
    assert np.all(np.isfinite(predictions))


@pytest.mark.parametrize(
    "shapes, message",
    [
        (
            {"query_y": (4, 3, 1)},
            "Expected every array to hold the same number of tasks along "
            "axis 0. Received shapes: support_x=(5, 2, 1), "
            "support_y=(5, 2, 1), query_x=(5, 3, 1), query_y=(4, 3, 1)",
        ),
        (
            {"support_x": ()},
            "Expected every array to hold the same number of tasks along "
            "axis 0. Received shapes: support_x=()",
        ),
        (
            {"support_y": (5, 3, 1)},
            "Expected `support_x` and `support_y` to hold the same number of "
            "examples per task (axis 1).",
        ),
        (
            {"query_y": (5, 4, 1)},
            "Expected `query_x` and `query_y` to hold the same number of "
            "examples per task (axis 1).",
        ),
        (
            {"support_x": (5, 2)},
            "Expected `support_x` to have rank >= 3, shaped (tasks, "
            "examples, *features).",
        ),
        (
            {"support_x": (5, 0, 1), "support_y": (5, 0, 1)},
            "The support set is empty",
        ),
    ],
    ids=[
        "task_count",
        "scalar",
        "support_shots",
        "query_shots",
        "rank",
        "empty_support",
    ],
)
def test_episode_dataset_mismatched_arrays(shapes, message):
    sizes = {
        "support_x": (5, 2, 1),
        "support_y": (5, 2, 1),
        "query_x": (5, 3, 1),
        "query_y": (5, 3, 1),
    }
    sizes.update(shapes)
    arrays = [np.zeros(s, "float32") for s in sizes.values()]
    with pytest.raises(ValueError, match=re.escape(message)):
        EpisodeDataset(*arrays)


def test_episode_dataset_errors_name_the_shapes_passed():
    array = np.zeros((5, 2, 1), "float32")
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        EpisodeDataset(array[..., 0], array, array)


@pytest.mark.parametrize(
    "tasks_per_batch, message",
    [
        (6, "`tasks_per_batch` (6) is larger than the number of tasks (5)."),
        (0, "`tasks_per_batch` must be a positive integer."),
        (2.0, "Received: tasks_per_batch=2.0"),
    ],
)
def test_episode_dataset_bad_tasks_per_batch(tasks_per_batch, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        EpisodeDataset(*_arrays(), tasks_per_batch=tasks_per_batch)


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "support_x",
            [[[0.0], [1.0]], [[0.0]]],
            "Expected `support_x` to be an array shaped (num_tasks, "
            "examples, ...), with as many examples in every task. Received "
            "a ragged nested sequence",
        ),
        (
            "support_y",
            np.full((2, 2, 1), "cat"),
            "Expected `support_y` to hold real numbers. Received: support_y "
            "of dtype <U3. Convert it to a numeric array first (string "
            "labels map to integers",
        ),
        (
            "query_x",
            np.zeros((2, 3, 1), complex),
            "Expected `query_x` to hold real numbers. Received: query_x of "
            "dtype complex128.",
        ),
        (
            "query_x",
            np.where(np.arange(6).reshape(2, 3, 1) == 4, np.nan, 0.0),
            "Expected finite values in `query_x`. Received: 1 NaN or "
            "infinite values, the first at index (1, 1, 0) (task 1).",
        ),
        (
            "query_y",
            np.full((2, 3, 1), np.inf, "float32"),
            "Expected finite values in `query_y`. Received: 6 NaN or "
            "infinite values, the first at index (0, 0, 0)",
        ),
    ],
    ids=["ragged", "strings", "complex", "nan", "inf"],
)
def test_episode_dataset_bad_values(key, value, message):
    arrays = dict(
        zip(
            ("support_x", "support_y", "query_x", "query_y"),
            _arrays(num_tasks=2),
        )
    )
    arrays[key] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        EpisodeDataset(**arrays)


# ----------------------------------------------------------------------
# EpisodeDataset(num_classes=...): class ids checked at construction
# ----------------------------------------------------------------------
def _classification_arrays(num_tasks=3, ways=4, shots=2):
    x = np.zeros((num_tasks, ways * shots, 2), "float32")
    y = np.tile(np.arange(ways, dtype="int32").repeat(shots), (num_tasks, 1))
    return x, y, x, y


def test_episode_dataset_num_classes_accepts_class_ids():
    support_x, support_y, query_x, query_y = _classification_arrays()
    dataset = EpisodeDataset(
        support_x, support_y, query_x, query_y, num_classes=4
    )
    assert dataset.num_classes == 4
    x, y = dataset[0]
    np.testing.assert_array_equal(x["support_y"], support_y[:1])
    np.testing.assert_array_equal(y, query_y[:1])
    # A trailing axis of 1, and no query labels (prediction), also pass.
    EpisodeDataset(
        support_x,
        support_y[..., None],
        query_x,
        query_y[..., None],
        num_classes=4,
    )
    EpisodeDataset(support_x, support_y, query_x, num_classes=4)
    # Without `num_classes`, targets are not read as labels (regression).
    EpisodeDataset(support_x, support_y + 0.5, query_x, query_y - 7)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda a: a.update(query_y=a["query_y"] - 1),
            "Expected `query_y` to hold class ids in [0, num_classes) = "
            "[0, 4). Received: 6 labels outside it, with values -1 (the "
            "first at task 0, example 0). Number the classes of each task "
            "0..3 (as `kerameta.data.FewShotTasks` does), or pass the right "
            "`num_classes`.",
        ),
        (
            lambda a: a["support_y"].__setitem__((2, 5), 9),
            "Expected `support_y` to hold class ids in [0, num_classes) = "
            "[0, 4). Received: 1 labels outside it, with values 9 (the "
            "first at task 2, example 5).",
        ),
        (
            lambda a: a.update(support_y=a["support_y"] + 0.5),
            "Expected `support_y` to hold integer class ids in [0, "
            "num_classes) = [0, 4). Received: support_y of dtype float64 "
            "(first values: [0.5, 0.5, 1.5, 1.5, 2.5]); a sparse loss would "
            "truncate them.",
        ),
        (
            lambda a: a.update(query_y=a["query_y"] == 1),
            "Expected `query_y` to hold integer class ids",
        ),
        (
            lambda a: a.update(support_y=np.eye(4)[a["support_y"]]),
            "With `num_classes`, expected `support_y` to hold one class id "
            "per example, shaped (num_tasks, examples) or (num_tasks, "
            "examples, 1). Received: support_y.shape=(3, 8, 4). For one-hot "
            "labels, pass `support_y.argmax(-1)`",
        ),
        (
            lambda a: a.update(num_classes=0),
            "`num_classes` must be a positive integer. Received: num_classes=0",
        ),
        (
            lambda a: a.update(num_classes=4.0),
            "Received: num_classes=4.0",
        ),
    ],
    ids=[
        "negative",
        "too_large",
        "float",
        "bool",
        "one_hot",
        "zero",
        "float_n",
    ],
)
def test_episode_dataset_num_classes_refuses_bad_labels(change, message):
    arrays = dict(
        zip(
            ("support_x", "support_y", "query_x", "query_y"),
            _classification_arrays(),
        ),
        num_classes=4,
    )
    arrays["support_y"] = arrays["support_y"].copy()
    change(arrays)
    with pytest.raises(ValueError, match=re.escape(message)):
        EpisodeDataset(**arrays)


# ----------------------------------------------------------------------
# shard_tasks
# ----------------------------------------------------------------------
def test_shard_tasks_shards_put_together_are_the_batch():
    tasks = SinusoidTasks(
        shots=2, tasks_per_batch=6, num_batches=3, new_tasks_each_epoch=True
    )
    shards = [kerameta.data.shard_tasks(tasks, 3, i) for i in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert [s.tasks_per_batch for s in shards] == [2, 2, 2]
    for epoch in (0, 1):
        for shard in shards:
            shard.epoch = epoch  # as `fit`'s SetTaskEpoch does
        assert tasks.epoch == epoch
        for index in range(3):
            parts = [shard[index] for shard in shards]
            x, query_y = tasks[index]
            for key in EPISODE_KEYS:
                np.testing.assert_array_equal(
                    np.concatenate([p[0][key] for p in parts]), x[key]
                )
            np.testing.assert_array_equal(
                np.concatenate([p[1] for p in parts]), query_y
            )
    assert _differ(shards[0][0], kerameta.data.shard_tasks(tasks, 3, 1)[0])


def test_shard_tasks_defaults_to_one_shard_without_a_process_group():
    episodes = EpisodeDataset(*_arrays(4), tasks_per_batch=2)
    shard = kerameta.data.shard_tasks(episodes)
    assert (shard.num_shards, shard.index, len(shard)) == (1, 0, 2)
    _assert_batches_equal(shard[1], episodes[1])


def test_shard_tasks_fits_like_its_dataset():
    tasks = SinusoidTasks(shots=2, tasks_per_batch=2, num_batches=2)
    history = compiled_maml(mlp()).fit(
        kerameta.data.shard_tasks(tasks, 2, 1), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])


def test_shard_tasks_errors():
    tasks = SinusoidTasks(shots=2, tasks_per_batch=6, num_batches=1)
    with pytest.raises(ValueError, match="6 is not a multiple of 4"):
        kerameta.data.shard_tasks(tasks, 4, 0)
    with pytest.raises(ValueError, match=re.escape("[0, num_shards) = [0, 2)")):
        kerameta.data.shard_tasks(tasks, 2, 2)
    with pytest.raises(ValueError, match="`index` must be a non-negative"):
        kerameta.data.shard_tasks(tasks, 2, -1)
    with pytest.raises(ValueError, match="Received: dataset of type list"):
        kerameta.data.shard_tasks([tasks[0]], 2, 0)

    class Batches(keras.utils.PyDataset):  # no `tasks_per_batch`
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return tasks[index]

    with pytest.raises(ValueError, match="6 is not a multiple of 5"):
        kerameta.data.shard_tasks(Batches(), 5, 0)[0]
