"""`FewShotTasks`, `split_classes`, the backbones and `meta_test`."""

import math
import re

import keras
import numpy as np
import pytest

import kerameta

FewShotTasks = kerameta.data.FewShotTasks
SIDE = 4


def _traceable_images(num_classes, per_class):
    """Images whose pixels reveal their index and their rotation."""
    count = num_classes * per_class
    base = np.arange(SIDE * SIDE, dtype=np.float32).reshape(SIDE, SIDE)
    images = (
        base[None] + 100.0 * np.arange(count, dtype=np.float32)[:, None, None]
    )
    labels = np.repeat(np.arange(num_classes) * 3 + 7, per_class)  # not 0..C
    return images[..., None], labels


def _identify(image):
    """(index, quarter turns) of an image made by `_traceable_images`."""
    index = int(image.min() // 100)
    base = image[..., 0] - 100.0 * index
    original = np.arange(SIDE * SIDE, dtype=np.float32).reshape(SIDE, SIDE)
    for turns in range(4):
        if np.array_equal(np.rot90(original, turns), base):
            return index, turns
    raise AssertionError("not an image of the set")


def _check_task(x, query_y, t, images_labels, ways, shots, query_shots):
    """One task: labels, class consistency, distinct examples."""
    labels = images_labels
    seen = {}
    indices = []
    for key_x, y, per_class in (
        ("support_x", x["support_y"][t], shots),
        ("query_x", query_y[t], query_shots),
    ):
        np.testing.assert_array_equal(
            np.bincount(y, minlength=ways), [per_class] * ways
        )
        for image, label in zip(x[key_x][t], y):
            index, turns = _identify(image)
            indices.append((index, turns))
            identity = (labels[index], turns)
            assert seen.setdefault(int(label), identity) == identity
    # Each episode label is a distinct (class, rotation); no repeats.
    assert len(set(seen.values())) == ways
    assert len(set(indices)) == len(indices)


def test_episode_shapes_labels_and_distinct_examples():
    images, labels = _traceable_images(num_classes=12, per_class=6)
    tasks = FewShotTasks(
        images,
        labels,
        ways=5,
        shots=2,
        query_shots=3,
        tasks_per_batch=4,
        num_batches=3,
    )
    assert len(tasks) == 3
    x, query_y = tasks[1]
    assert x["support_x"].shape == (4, 10, SIDE, SIDE, 1)
    assert x["support_y"].shape == (4, 10)
    assert x["query_x"].shape == (4, 15, SIDE, SIDE, 1)
    assert query_y.shape == (4, 15)
    assert x["support_x"].dtype == np.float32
    assert x["support_y"].dtype == query_y.dtype == np.int32
    for t in range(4):
        _check_task(x, query_y, t, labels, ways=5, shots=2, query_shots=3)
        # No rotations asked for.
        assert all(_identify(im)[1] == 0 for im in x["support_x"][t])


def test_order_within_an_episode_is_shuffled():
    images, labels = _traceable_images(num_classes=10, per_class=5)
    tasks = FewShotTasks(images, labels, ways=5, shots=2, tasks_per_batch=50)
    x, query_y = tasks[0]
    sorted_rows = sum(
        np.array_equal(np.sort(row), row) for row in x["support_y"]
    )
    assert sorted_rows < 10  # 2 in 10**2 chance per row of being sorted
    assert not all(np.array_equal(query_y[0], row) for row in query_y)


def test_rotations_are_classes_of_their_own():
    images, labels = _traceable_images(num_classes=1, per_class=4)
    with pytest.raises(ValueError, match="larger than the number of classes"):
        FewShotTasks(images, labels, ways=4, shots=1)
    tasks = FewShotTasks(
        images, labels, ways=4, shots=1, rotations=True, tasks_per_batch=3
    )
    assert tasks.num_classes == 4
    x, query_y = tasks[0]
    for t in range(3):
        _check_task(x, query_y, t, labels, ways=4, shots=1, query_shots=1)
        turns = {_identify(im)[1] for im in x["support_x"][t]}
        assert turns == {0, 1, 2, 3}
    half = FewShotTasks(images, labels, ways=2, shots=1, rotations=(0, 180))
    x, _ = half[0]
    assert {_identify(im)[1] for im in x["support_x"][0]} == {0, 2}


def test_batches_depend_only_on_seed_index_and_epoch():
    images, labels = _traceable_images(num_classes=20, per_class=4)

    def make(**kwargs):
        return FewShotTasks(images, labels, ways=5, num_batches=4, **kwargs)

    a, b = make(seed=3), make(seed=3)
    np.testing.assert_array_equal(a[2][0]["query_x"], b[2][0]["query_x"])
    assert not np.array_equal(a[1][0]["query_x"], a[2][0]["query_x"])
    assert not np.array_equal(make(seed=4)[2][1], a[2][1]) or not (
        np.array_equal(make(seed=4)[2][0]["query_x"], a[2][0]["query_x"])
    )
    # Validation/test sets: the same tasks every epoch.
    before = a[0][0]["query_x"].copy()
    a.on_epoch_end()
    np.testing.assert_array_equal(a[0][0]["query_x"], before)
    # Training sets: new tasks each epoch, reproducibly.
    train, again = (
        make(new_tasks_each_epoch=True),
        make(new_tasks_each_epoch=True),
    )
    first = train[0][0]["query_x"].copy()
    train.on_epoch_end()
    again.on_epoch_end()
    assert not np.array_equal(train[0][0]["query_x"], first)
    np.testing.assert_array_equal(
        train[0][0]["query_x"], again[0][0]["query_x"]
    )


def test_unequal_class_sizes_and_pairs_input():
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate([3, 9, 4])])
    images = rng.random((len(labels), 2, 2)).astype("float32")
    pairs = list(zip(images, labels))
    tasks = FewShotTasks(pairs, ways=3, shots=1, query_shots=2, num_batches=5)
    for index in range(5):
        x, query_y = tasks[index]
        assert x["support_x"].shape == (32, 3, 2, 2)
        np.testing.assert_array_equal(np.bincount(query_y[0]), [2, 2, 2])
    dict_elements = [{"image": i, "label": lab} for i, lab in pairs]
    same = FewShotTasks(dict_elements, ways=3, num_batches=5)
    np.testing.assert_array_equal(
        same[0][0]["support_x"],
        FewShotTasks(images, labels, ways=3, num_batches=5)[0][0]["support_x"],
    )


def test_tf_data_input(backend):
    if backend != "tensorflow":
        pytest.skip("tf.data needs TensorFlow (installed with that backend)")
    tf = pytest.importorskip("tensorflow")
    images, labels = _traceable_images(num_classes=6, per_class=3)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    tasks = FewShotTasks(dataset, ways=3, shots=1, query_shots=2)
    reference = FewShotTasks(images, labels, ways=3, shots=1, query_shots=2)
    np.testing.assert_array_equal(
        tasks[0][0]["query_x"], reference[0][0]["query_x"]
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ways": 7}, r"`ways` \(7\) is larger than the number of classes"),
        (
            {"shots": 2, "query_shots": 3},
            r"shots \+ query_shots = 2 \+ 3 = 5 distinct examples",
        ),
        ({"shots": 0}, "`shots` must be a positive integer"),
        ({"rotations": (0, 45)}, "Expected `rotations`"),
        ({"tasks_per_batch": 1.5}, "`tasks_per_batch` must be a positive"),
        ({"query_shots": 0}, "Received: query_shots=0"),
        ({"num_batches": -2}, "Received: num_batches=-2"),
        ({"seed": -1}, "`seed` must be a non-negative integer"),
    ],
)
def test_bad_episode_settings(kwargs, match):
    images, labels = _traceable_images(num_classes=6, per_class=4)
    settings = {"ways": 5, "shots": 1} | kwargs
    with pytest.raises(ValueError, match=match):
        FewShotTasks(images, labels, **settings)


def test_bad_images_and_labels():
    images, labels = _traceable_images(num_classes=3, per_class=2)
    with pytest.raises(ValueError, match="Expected integer class labels"):
        FewShotTasks(images, labels.astype("float32"), ways=2)
    with pytest.raises(ValueError, match="Expected integer class labels"):
        FewShotTasks(images, np.array(["a", "b"] * 3), ways=2)
    with pytest.raises(ValueError, match="one label per image"):
        FewShotTasks(images, labels[:-1], ways=2)
    mixed = [np.zeros((4, 4)), np.zeros((5, 5)), np.zeros((4, 4))]
    with pytest.raises(ValueError, match=r"same shape.*\(4, 4\), \(5, 5\)"):
        FewShotTasks(mixed, [0, 1, 1], ways=2)
    with pytest.raises(ValueError, match="Rotations need square images"):
        FewShotTasks(np.zeros((6, 4, 5)), [0, 0, 1, 1, 2, 2], rotations=True)
    with pytest.raises(ValueError, match="Expected `labels`"):
        FewShotTasks(images, ways=2)
    with pytest.raises(ValueError, match=r"\(image, label\) pairs"):
        FewShotTasks([images[0], images[1]], ways=2)
    with pytest.raises(
        ValueError,
        match=r"Expected `images` to hold real numbers \(e\.g\. uint8 or "
        r"float32 pixels\)\. Received: images of dtype <U1\.",
    ):
        FewShotTasks(np.full(images.shape, "a"), labels, ways=2)
    with pytest.raises(ValueError, match="dtype complex64"):
        FewShotTasks(images.astype("complex64"), labels, ways=2)
    with_nan = images.copy()
    with_nan[4, 1, 2, 0] = np.nan
    with pytest.raises(
        ValueError,
        match=r"Expected finite pixel values in `images`\. Received: 1 NaN "
        r"or infinite values, the first in image 4\.",
    ):
        FewShotTasks(with_nan, labels, ways=2)


def test_any_integer_class_ids_become_episode_labels_0_to_ways():
    # Negative and huge ids are class names, not indices: each episode
    # numbers its classes 0..ways-1.
    images, labels = _traceable_images(num_classes=4, per_class=3)
    ids = np.array([-5, 0, 2**40, -(2**40)])[
        np.unique(labels, return_inverse=True)[1]
    ]
    tasks = FewShotTasks(images, ids, ways=3, shots=1, query_shots=2)
    x, query_y = tasks[0]
    for labels_ in (x["support_y"], query_y):
        assert labels_.dtype == np.int32
        assert labels_.min() == 0 and labels_.max() == 2
    for t in range(len(query_y)):
        _check_task(x, query_y, t, ids, ways=3, shots=1, query_shots=2)


@pytest.mark.parametrize("seed", [-1, 1.5, None])
def test_split_classes_bad_seed(seed):
    images, labels = _traceable_images(num_classes=4, per_class=2)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"`seed` must be a non-negative integer. Received: seed={seed!r}"
        ),
    ):
        kerameta.data.split_classes(images, labels, (2, None), seed=seed)


def test_split_classes_is_disjoint_and_seeded():
    images, labels = _traceable_images(num_classes=30, per_class=2)
    parts = kerameta.data.split_classes(images, labels, (20, 4, None), seed=1)
    classes = [set(y.tolist()) for _, y in parts]
    assert [len(c) for c in classes] == [20, 4, 6]
    assert not (classes[0] & classes[1] or classes[0] & classes[2])
    assert set.union(*classes) == set(labels.tolist())
    for x, y in parts:
        assert len(x) == len(y) == 2 * len(set(y.tolist()))
    again = kerameta.data.split_classes(images, labels, (20, 4, None), seed=1)
    np.testing.assert_array_equal(parts[1][1], again[1][1])
    other = kerameta.data.split_classes(images, labels, (20, 4, None), seed=2)
    assert set(other[1][1].tolist()) != classes[1]
    with pytest.raises(ValueError, match="only 30"):
        kerameta.data.split_classes(images, labels, (20, 20))
    with pytest.raises(ValueError, match="at most one `None`"):
        kerameta.data.split_classes(images, labels, (None, None))


# ----------------------------------------------------------------------
# Backbones
# ----------------------------------------------------------------------
@pytest.mark.parametrize("downsampling", ["max_pool", "strided"])
def test_conv4_shapes_and_names(downsampling):
    net = kerameta.models.conv4(
        (28, 28, 1), num_classes=5, downsampling=downsampling
    )
    assert net.output_shape == (None, 5)
    names = [layer.name for layer in net.layers]
    assert "head" in names and "block4_bn" in names
    # Convolutions, BN (gamma, beta and the two moving statistics), head:
    # the 28 x 28 maps end 1 x 1 x 64 either way.
    conv = (9 * 1 * 64 + 64) + 3 * (9 * 64 * 64 + 64)
    assert net.count_params() == conv + 4 * 4 * 64 + (64 * 5 + 5)
    logits = net(np.zeros((2, 28, 28, 1), "float32"), training=True)
    assert tuple(logits.shape) == (2, 5)


def test_conv4_and_mlp_errors():
    with pytest.raises(ValueError, match="`downsampling`"):
        kerameta.models.conv4(downsampling="avg")
    with pytest.raises(ValueError, match=r"\(height, width, channels\)"):
        kerameta.models.conv4(input_shape=(28, 28))
    with pytest.raises(ValueError, match="`filters` must be a positive"):
        kerameta.models.conv4(filters=0)
    with pytest.raises(ValueError, match="positive integer layer widths"):
        kerameta.models.mlp(hidden_units=(40, 0))
    mlp = kerameta.models.mlp()
    assert [layer.name for layer in mlp.layers] == [
        "hidden1",
        "hidden2",
        "head",
    ]
    assert mlp.count_params() == 1 * 40 + 40 + 40 * 40 + 40 + 40 + 1


# ----------------------------------------------------------------------
# meta_test
# ----------------------------------------------------------------------
def _linear_meta_model(inner_learning_rate=0.0):
    net = keras.Sequential(
        [
            keras.Input((SIDE, SIDE, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    maml = kerameta.MAML(
        net, inner_steps=1, inner_learning_rate=inner_learning_rate
    )
    maml.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return maml


def test_meta_test_scores_each_episode():
    images, labels = _traceable_images(num_classes=9, per_class=4)
    images = images / images.max()
    tasks = FewShotTasks(
        images,
        labels,
        ways=3,
        shots=1,
        query_shots=3,
        tasks_per_batch=4,
        num_batches=3,
    )
    maml = _linear_meta_model()  # a zero step: predictions = net(query_x)
    result = kerameta.meta_test(maml, tasks, episodes=10)
    expected = []
    for index in range(3):
        x, query_y = tasks[index]
        logits = maml.model.predict(
            x["query_x"].reshape(-1, SIDE, SIDE, 1), verbose=0
        ).reshape(4, 9, 3)
        expected.append((logits.argmax(-1) == query_y).mean(axis=1))
    expected = np.concatenate(expected)[:10]
    np.testing.assert_allclose(result.per_episode, expected)
    assert result.episodes == 10
    assert result.mean == pytest.approx(expected.mean())
    assert result.confidence_interval == pytest.approx(
        1.96 * expected.std(ddof=1) / math.sqrt(10)
    )
    assert result.metric == "accuracy" and result.inner_steps == 1
    assert "episodes" in str(result) and "%" in str(result)


def test_meta_test_inner_steps_and_metrics():
    images, labels = _traceable_images(num_classes=9, per_class=4)
    images = images / images.max()
    tasks = FewShotTasks(images, labels, ways=3, tasks_per_batch=5)
    maml = _linear_meta_model(inner_learning_rate=0.5)
    with pytest.raises(ValueError, match="predictions shaped like"):
        kerameta.meta_test(maml, tasks, metric="mean_squared_error")
    five = kerameta.meta_test(maml, tasks, episodes=20, inner_steps=5)
    assert five.inner_steps == 5
    assert maml.evaluation_inner_steps == 1  # restored
    assert kerameta.meta_test(maml, tasks, episodes=None).episodes == 500

    def first_query_correct(y_true, y_pred):
        return (y_pred[:, 0].argmax(-1) == y_true[:, 0]).astype(float)

    custom = kerameta.meta_test(maml, tasks, 20, metric=first_query_correct)
    assert custom.metric == "first_query_correct"
    assert set(np.unique(custom.per_episode)) <= {0.0, 1.0}


def test_meta_test_mean_squared_error():
    tasks = kerameta.data.SinusoidTasks(shots=5, tasks_per_batch=4, seed=2)
    maml = kerameta.MAML(
        kerameta.models.mlp(),
        inner_learning_rate=0.01,
        evaluation_inner_steps=2,
    )
    maml.compile(optimizer="sgd", loss="mse")
    result = kerameta.meta_test(
        maml, tasks, episodes=6, metric="mean_squared_error"
    )
    expected = []
    for index in range(2):
        x, query_y = tasks[index]
        predictions = maml.predict_on_batch(x)
        expected.append(((predictions - query_y) ** 2).mean(axis=(1, 2)))
    assert result.inner_steps == 2
    np.testing.assert_allclose(
        result.per_episode, np.concatenate(expected)[:6], rtol=1e-6
    )
    assert str(result).startswith("mean_squared_error: ")
    assert "% ±" not in str(result)


def test_meta_test_errors():
    images, labels = _traceable_images(num_classes=9, per_class=4)
    tasks = FewShotTasks(
        images, labels, ways=3, tasks_per_batch=5, num_batches=2
    )
    maml = _linear_meta_model()
    with pytest.raises(ValueError, match="holds 10 episodes, fewer than"):
        kerameta.meta_test(maml, tasks, episodes=600)
    with pytest.raises(ValueError, match="`metric`"):
        kerameta.meta_test(maml, tasks, metric="f1")
    with pytest.raises(ValueError, match="`episodes`"):
        kerameta.meta_test(maml, tasks, episodes=0)
    with pytest.raises(ValueError, match="one score per episode"):
        kerameta.meta_test(maml, tasks, 5, metric=lambda t, p: p.mean())
    uncompiled = kerameta.MAML(
        keras.Sequential(
            [
                keras.Input((SIDE, SIDE, 1)),
                keras.layers.Flatten(),
                keras.layers.Dense(3),
            ]
        )
    )
    with pytest.raises(ValueError, match="must be compiled"):
        kerameta.meta_test(uncompiled, tasks)
