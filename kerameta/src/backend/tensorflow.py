"""TensorFlow side of the seam: nested `GradientTape`s, one task at a time."""

import contextlib

import keras
import tensorflow as tf

from kerameta.src.episodes import validate_episode

REMAT_OF_GRADIENTS = False

_ZERO = tf.UnconnectedGradients.ZERO


def value_and_grad(fn, has_aux=False):
    def wrapped(params, *args):
        params = [tf.convert_to_tensor(p) for p in params]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            outputs = fn(params, *args)
            loss = outputs[0] if has_aux else outputs
        grads = tape.gradient(loss, params, unconnected_gradients=_ZERO)
        return outputs, grads

    return wrapped


def vjp(fn, primals, cotangents):
    cotangents = list(cotangents)
    # In a graph, `fn` would run as soon as `primals` exist (possibly long
    # before the cotangents, keeping its activations alive meanwhile):
    # recompute it only once the cotangents are known.
    with tf.control_dependencies([c for c in cotangents if c is not None]):
        primals = [tf.identity(p) for p in primals]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(primals)
        outputs = fn(primals)
    return tape.gradient(
        outputs,
        primals,
        output_gradients=cotangents,
        unconnected_gradients=_ZERO,
    )


def custom_gradient(forward, backward):
    def wrapped(inputs, constants):
        inputs, constants = list(inputs), list(constants)
        num_inputs = len(inputs)
        counts = {}

        @tf.custom_gradient
        def call(*tensors):
            inputs = list(tensors[:num_inputs])
            constants = list(tensors[num_inputs:])
            outputs, aux, residuals = forward(inputs, constants)
            counts["outputs"] = len(outputs)

            def grad_fn(*cotangents):
                cotangents = [
                    tf.zeros_like(o) if c is None else c
                    for o, c in zip(outputs, cotangents)
                ]
                input_cotangents = backward(residuals, constants, cotangents)
                return [*input_cotangents, *[None] * len(constants)]

            aux = [tf.stop_gradient(a) for a in aux]
            return [*outputs, *aux], grad_fn

        flat = call(*inputs, *constants)
        num_outputs = counts["outputs"]
        return list(flat[:num_outputs]), list(flat[num_outputs:])

    return wrapped


def _num_tasks(task_params, task_args):
    for tensor in list(task_args) + list(task_params):
        num_tasks = tensor.shape[0]
        if num_tasks is not None:
            return int(num_tasks)
    raise ValueError(
        "On the TensorFlow backend kerameta loops over the tasks of a batch, "
        "so the number of tasks per batch must be known when the step is "
        "traced, but it was `None`. Feed episodes with a fixed number of "
        "tasks per batch: a `kerameta.data` dataset, a `keras.utils."
        "PyDataset` whose batches all have the same size, a `tf.data."
        "Dataset` batched with `drop_remainder=True`, or a dict of arrays "
        "with a `batch_size` that divides the number of tasks."
    )


def _unstack(tensors, num_tasks):
    return [tf.unstack(t, num=num_tasks) for t in tensors]


def _stack(per_task):
    return tf.nest.map_structure(lambda *xs: tf.stack(xs), *per_task)


def per_task_value_and_grad(fn, create_graph=True, vectorize=False):
    if vectorize:
        raise ValueError(
            "`vectorize_tasks=True` is not supported on the TensorFlow "
            "backend: `tf.vectorized_map` measured hundreds of times slower "
            "than a loop under XLA. Use `vectorize_tasks='auto'` or `False`."
        )

    def wrapped(task_params, shared, *task_args):
        num_tasks = _num_tasks(task_params, task_args)
        params = _unstack(task_params, num_tasks)
        args = _unstack(task_args, num_tasks)
        results = []
        for t in range(num_tasks):
            params_t = [p[t] for p in params]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(params_t)
                loss = fn(params_t, shared, *[a[t] for a in args])
            grads = tape.gradient(loss, params_t, unconnected_gradients=_ZERO)
            if not create_graph:
                grads = [tf.stop_gradient(g) for g in grads]
            results.append((loss, grads))
        return _stack(results)

    return wrapped


def per_task_map(fn, vectorize=False):
    def wrapped(task_params, shared, *task_args):
        num_tasks = _num_tasks(task_params, task_args)
        params = _unstack(task_params, num_tasks)
        args = _unstack(task_args, num_tasks)
        return _stack(
            [
                fn([p[t] for p in params], shared, *[a[t] for a in args])
                for t in range(num_tasks)
            ]
        )

    return wrapped


def per_task_hvp(fn, vectorize=False):
    """Hessian-vector products of each task's loss, as constants."""
    del vectorize  # one task at a time, as `per_task_value_and_grad`

    def wrapped(task_params, shared, vectors, *task_args):
        num_tasks = _num_tasks(task_params, task_args)
        params = _unstack([tf.stop_gradient(p) for p in task_params], num_tasks)
        vectors = _unstack([tf.stop_gradient(v) for v in vectors], num_tasks)
        args = _unstack(task_args, num_tasks)
        results = []
        for t in range(num_tasks):
            params_t = [p[t] for p in params]
            with tf.GradientTape(watch_accessed_variables=False) as outer:
                outer.watch(params_t)
                with tf.GradientTape(watch_accessed_variables=False) as inner:
                    inner.watch(params_t)
                    loss = fn(params_t, shared, *[a[t] for a in args])
                grads = inner.gradient(
                    loss, params_t, unconnected_gradients=_ZERO
                )
                directional = tf.add_n(
                    [tf.reduce_sum(g * v[t]) for g, v in zip(grads, vectors)]
                )
            products = outer.gradient(
                directional, params_t, unconnected_gradients=_ZERO
            )
            results.append([tf.stop_gradient(p) for p in products])
        return [tf.stack(p) for p in zip(*results)]

    return wrapped


enable_grad = contextlib.nullcontext
no_grad = contextlib.nullcontext


def _exact_moments(x, axes, keepdims):
    # `tf.nn.moments` stops the gradient through the mean inside the
    # variance: first derivatives stay right, second derivatives do not.
    mean = tf.reduce_mean(x, axes, keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axes, keepdims=True)
    if not keepdims:
        mean = tf.squeeze(mean, axes)
        variance = tf.squeeze(variance, axes)
    return mean, variance


@contextlib.contextmanager
def second_order_safe():
    """Exact second derivatives through Keras batch statistics on TF."""
    from keras.src.backend.tensorflow import nn as keras_tf_nn

    original = keras_tf_nn._compute_moments
    keras_tf_nn._compute_moments = _exact_moments
    try:
        yield
    finally:
        keras_tf_nn._compute_moments = original


def _tasks_per_batch(data, batch_size=None):
    """The number of tasks per batch of `data`, if it can be known."""
    import keras

    if isinstance(data, keras.utils.PyDataset):
        data = data[0]
        if isinstance(data, (tuple, list)):
            data = data[0]
        return _tasks_per_batch(data)
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        spec = spec[0] if isinstance(spec, tuple) else spec
        if isinstance(spec, dict) and "support_x" in spec:
            return spec["support_x"].shape[0]
        return None
    if isinstance(data, (tuple, list)) and data:
        return _tasks_per_batch(data[0], batch_size)
    if isinstance(data, dict) and "support_x" in data:
        num_tasks = tf.TensorShape(getattr(data["support_x"], "shape", None))[0]
        if batch_size is None or num_tasks is None:
            return num_tasks
        if num_tasks <= batch_size:
            return num_tasks
        return batch_size if num_tasks % batch_size == 0 else None
    return None


def _validate_first_batch(data, require_query_y):
    """Checks the first batch of a `PyDataset` with its concrete shapes.

    The traced step sees the task axis as `None`, so there a task-count
    mismatch would only fail in `tf.ensure_shape`, without a message.
    """
    if not isinstance(data, keras.utils.PyDataset):
        return
    batch = data[0]
    batch = tuple(batch) if isinstance(batch, (list, tuple)) else (batch,)
    x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
    validate_episode(x, y, require_query_y=require_query_y)


def with_static_task_axis(tensors, num_tasks):
    """Gives the task axis of `tensors` its static size on TensorFlow.

    Keras's TF data adapters declare the batch (task) axis as `None`; the
    task loop needs it static, so it is set from the data seen in `fit`,
    `evaluate` or `predict`.
    """
    if num_tasks is None:
        return tensors
    return [
        tf.ensure_shape(t, [num_tasks] + t.shape.as_list()[1:])
        if t is not None and t.shape[0] is None
        else t
        for t in tensors
    ]


class MetaTrainer:
    """Runs the shared meta-step body inside Keras's `tf.function`."""

    def _remember_tasks_per_batch(self, mode, data, batch_size=None):
        _validate_first_batch(data, require_query_y=mode != "predict")
        hints = self.__dict__.setdefault("_static_tasks_per_batch", {})
        num_tasks = _tasks_per_batch(data, batch_size)
        if hints.get(mode) != num_tasks:
            hints[mode] = num_tasks
            # A traced step holds the old task count: trace again.
            if mode == "train":
                self.train_function = None
            elif mode == "test":
                self.test_function = None
            else:
                self.predict_function = None

    def fit(self, x=None, y=None, batch_size=None, *args, **kwargs):
        self._remember_tasks_per_batch("train", x, batch_size)
        validation_data = kwargs.get("validation_data")
        if validation_data is not None:
            self._remember_tasks_per_batch(
                "test", validation_data, kwargs.get("validation_batch_size")
            )
        return super().fit(x, y, batch_size, *args, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, *args, **kwargs):
        self._remember_tasks_per_batch("test", x, batch_size)
        return super().evaluate(x, y, batch_size, *args, **kwargs)

    def predict(self, x, batch_size=None, *args, **kwargs):
        self._remember_tasks_per_batch("predict", x, batch_size)
        return super().predict(x, batch_size, *args, **kwargs)

    def train_step(self, data):
        return self._meta_train_step(data)

    def test_step(self, data):
        return self._meta_test_step(data)

    def predict_step(self, data):
        return self._meta_predict_step(data)
