"""One table of the mistakes users make, and the error each one gets.

Every row runs on every backend (unless it is about one backend): the
input, the call, the expected exception type and a fragment of its
message. The message must name what was received (NumPy types and shapes,
never a tracer) and how to fix it. Rows are checked on the host before
Keras traces a step, so they fail fast.
"""

import keras
import numpy as np
import pytest
from helpers import episodes
from helpers import maml
from helpers import mlp

import kerameta

BACKEND = keras.backend.backend()


def _fit(meta, x, y, **kwargs):
    kwargs.setdefault("batch_size", 2)
    meta.fit(x, y, epochs=1, verbose=0, **kwargs)


def _classifier(num_classes=3):
    return maml(
        mlp((1, 8, num_classes)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def _labels(values):
    x, _ = episodes()
    labels = np.asarray(values, "float32").reshape(2, 4, 1)
    x["support_y"] = np.zeros((2, 3, 1), "float32")
    return x, labels


def target_wider_than_output():
    x, y = episodes(query_y=(2, 4, 3))
    _fit(maml(), x, y)


def support_target_wider_than_output():
    x, y = episodes(support_y=(2, 3, 3))
    _fit(maml(), x, y)


def zero_tasks():
    x, y = episodes((0, 3, 1), (0, 3, 1), (0, 4, 1), (0, 4, 1))
    _fit(maml(), x, y)


def labels_out_of_range():
    x, y = _labels([0, 1, 2, 3, 0, 1, 2, 0])
    _fit(_classifier(), x, y)


def negative_labels():
    x, y = _labels([0, 1, -1, 2, 0, 1, 2, 0])
    _fit(_classifier(), x, y)


def fractional_labels():
    x, y = _labels([0, 1, 1.5, 2, 0, 1, 2, 0])
    _fit(_classifier(), x, y)


def one_hot_targets_with_a_sparse_loss():
    x, _ = episodes()
    x["support_y"] = np.zeros((2, 3, 1), "float32")
    _fit(_classifier(), x, np.zeros((2, 4, 3), "float32"))


def x_is_an_array():
    x, y = episodes()
    maml().fit(x["query_x"], y, batch_size=2, verbose=0)


def predict_without_support_set():
    x, _ = episodes()
    maml().predict({"query_x": x["query_x"]}, verbose=0)


def tasks_per_batch_vary_on_tensorflow():
    x, y = episodes((5, 3, 1), (5, 3, 1), (5, 4, 1), (5, 4, 1))
    _fit(maml(), x, y, batch_size=2)


def stateful_recurrent_layer():
    net = keras.Sequential(
        [
            keras.Input((3, 1), batch_size=4),
            keras.layers.SimpleRNN(4, stateful=True),
            keras.layers.Dense(1),
        ]
    )
    kerameta.MAML(net)


def channels_last_convolutions_vectorized_on_torch():
    net = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3, data_format="channels_last"),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    kerameta.MAML(net, vectorize_tasks=True)


def loss_per_output_for_one_output():
    meta = maml(loss={"out": "mse"})
    _fit(meta, *episodes())


def loss_weights_without_several_losses():
    kerameta.MAML(mlp()).compile(loss="mse", loss_weights=[1.0, 2.0])


def subclassed_model_built_by_shape():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

    net = Net()
    with pytest.warns(UserWarning, match="does not have a `build"):
        net.build((None, 1))
    kerameta.MAML(net)


# (case, backends it applies to, exception, message fragment)
CASES = [
    (
        target_wider_than_output,
        None,
        ValueError,
        r"`query_y` does not match the model's output: each example's "
        r"target is shaped \(3,\) but the model predicts \(1,\)",
    ),
    (
        support_target_wider_than_output,
        None,
        ValueError,
        r"`support_y` does not match the model's output.*support_y\.shape="
        r"\(2, 3, 3\)",
    ),
    (
        zero_tasks,
        None,
        ValueError,
        r"The batch has no tasks \(axis 0 is empty\): support_x\.shape="
        r"\(0, 3, 1\)",
    ),
    (
        labels_out_of_range,
        None,
        ValueError,
        r"`query_y` holds class labels outside \[0, 3\) for a model with 3 "
        r"outputs: from 0\.0 to 3\.0",
    ),
    (
        negative_labels,
        None,
        ValueError,
        r"class labels outside \[0, 3\).*from -1\.0 to 2\.0",
    ),
    (
        fractional_labels,
        None,
        ValueError,
        r"`query_y` holds non-integer class labels for a sparse loss, e\.g\. "
        r"\[1\.5\], which would be truncated",
    ),
    (
        one_hot_targets_with_a_sparse_loss,
        None,
        ValueError,
        r"`query_y` does not fit the model's output for a sparse loss.*"
        r"Received: query_y\.shape=\(2, 4, 3\)",
    ),
    (
        x_is_an_array,
        None,
        ValueError,
        r"Received: x of type ndarray",
    ),
    (
        predict_without_support_set,
        None,
        ValueError,
        r"Missing: \['support_x', 'support_y'\]",
    ),
    (
        tasks_per_batch_vary_on_tensorflow,
        {"tensorflow"},
        ValueError,
        r"every batch must hold the same number of tasks.*5 tasks in "
        r"batches of 2 leave a last batch of 1",
    ),
    (
        stateful_recurrent_layer,
        None,
        ValueError,
        r"has stateful recurrent layers \['simple_rnn.*'\] \(`stateful=True`\)",
    ),
    (
        channels_last_convolutions_vectorized_on_torch,
        {"torch"},
        ValueError,
        r"`vectorize_tasks=True` cannot work on the PyTorch backend with "
        r"this model: the model has channels_last convolutions",
    ),
    (
        loss_per_output_for_one_output,
        None,
        ValueError,
        r"`loss` has one loss per output \(a dict with keys \['out'\]\), but "
        r"the model's targets do not match it: a single output",
    ),
    (
        loss_weights_without_several_losses,
        None,
        ValueError,
        r"`loss_weights` weighs the losses of a model with several outputs",
    ),
    (
        subclassed_model_built_by_shape,
        None,
        ValueError,
        r"call it once on a batch instead, e\.g\. `model\(x\[:1\]\)`",
    ),
]


@pytest.mark.parametrize(
    "case, backends, error, message",
    CASES,
    ids=[case[0].__name__ for case in CASES],
)
def test_mistake_gets_a_clear_error(case, backends, error, message):
    if backends is not None and BACKEND not in backends:
        pytest.skip(f"about {', '.join(sorted(backends))} only")
    with pytest.raises(error, match=message) as raised:
        case()
    assert "Tracer" not in str(raised.value)
    assert "SymbolicTensor" not in str(raised.value)


def test_tasks_per_batch_may_vary_elsewhere():
    if BACKEND == "tensorflow":
        pytest.skip("TensorFlow refuses it (see the table)")
    tasks_per_batch_vary_on_tensorflow()  # runs: no error


class _Ragged(keras.utils.PyDataset):
    """Two full batches of 2 tasks, then a last one of 1."""

    def __init__(self):
        super().__init__()

    def __len__(self):
        return 3

    def __getitem__(self, index):
        tasks = 1 if index == 2 else 2
        return episodes(
            (tasks, 3, 1), (tasks, 3, 1), (tasks, 4, 1), (tasks, 4, 1)
        )


def test_a_dataset_with_a_short_last_batch():
    meta = maml()
    if BACKEND != "tensorflow":
        meta.fit(_Ragged(), epochs=1, verbose=0)  # shapes are concrete
        return
    with pytest.raises(
        ValueError,
        match=r"the first and last batches of this dataset hold \[1, 2\] "
        r"tasks\. Serve full batches only",
    ):
        meta.fit(_Ragged(), epochs=1, verbose=0)
