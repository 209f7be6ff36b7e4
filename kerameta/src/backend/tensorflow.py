"""TensorFlow side of the seam: nested `GradientTape`s, one task at a time."""

import functools

import tensorflow as tf

from kerameta.src import compat
from kerameta.src.backend import task_loop
from kerameta.src.backend.tensorflow_data import MetaTrainer  # noqa: F401


def _gradient(tape, target, sources, **kwargs):
    zero = tf.UnconnectedGradients.ZERO
    return tape.gradient(target, sources, unconnected_gradients=zero, **kwargs)


def value_and_grad(fn, has_aux=False):
    def wrapped(params, *args):
        params = [tf.convert_to_tensor(p) for p in params]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            outputs = fn(params, *args)
            loss = outputs[0] if has_aux else outputs
        return outputs, _gradient(tape, loss, params)

    return wrapped


def _task_major(task_fn, count):
    """`task_fn(t) -> (sums, outputs)` over `count` tasks, in a loop.

    Task 0 is traced as it is (it gives the outputs' structure and shapes),
    the others in one `tf.while_loop`: two traced copies of a task, not one
    per task. Returns the `sums` added over the tasks and the `outputs`
    stacked. Nothing differentiates through the loop.

    One task runs at a time: each waits for the previous task's results.
    Otherwise TensorFlow's executor starts a task as soon as its inputs
    are ready, which they all are from the start (a `while_loop` runs up
    to 10 iterations at once, and task 0 sits outside the loop), and holds
    the activations of several tasks at once. Measured (2-core CPU,
    2026-12-07): the Conv-4 benchmark's peak memory 861 MiB in two runs
    against 974 and 1418 MiB, its step 7% slower (3.08 and 3.28 s against
    2.86 and 3.03 s); a small conv net's step memory 38 MiB against 71.
    """
    sums, outputs = task_fn(tf.constant(0))
    arrays = [
        tf.TensorArray(x.dtype, size=count, element_shape=x.shape).write(0, x)
        for x in tf.nest.flatten(outputs)
    ]

    def body(t, sums, arrays):
        with tf.control_dependencies([*sums, *[a.flow for a in arrays]]):
            t = tf.identity(t)  # after the previous task
        task_sums, task_outputs = task_fn(t)
        flat = tf.nest.flatten(task_outputs)
        return (
            t + 1,
            [a + b for a, b in zip(sums, task_sums)],
            [array.write(t, x) for array, x in zip(arrays, flat)],
        )

    _, sums, arrays = tf.while_loop(
        lambda t, *_: t < count,
        body,
        (tf.constant(1), list(sums), arrays),
        maximum_iterations=count - 1,
        parallel_iterations=1,
    )
    stacked = [array.stack() for array in arrays]
    return sums, tf.nest.pack_sequence_as(outputs, stacked)


def _loops_in_graph(count):
    """Whether a task loop runs as `_task_major` (else a Python loop)."""
    return tf.inside_function() and count >= 3


def accumulate_over_tasks(fn):
    """Task by task in `_task_major`; eagerly, a Python loop."""
    looped = task_loop.accumulated(fn, value_and_grad, tf.stack)
    grad_fn = value_and_grad(fn, has_aux=True)

    def wrapped(params, *task_args):
        count = int(task_args[0].shape[0])
        if not _loops_in_graph(count):
            return looped(params, *task_args)

        def task(t):
            (value, aux), grads = grad_fn(params, t, *[a[t] for a in task_args])
            return [value, *grads], aux

        (value, *grads), aux = _task_major(task, count)
        return (value, aux), grads

    return wrapped


def map_over_tasks(fn):
    """Task by task in `_task_major`; eagerly, a Python loop."""
    looped = task_loop.mapped(fn, tf.stack)

    def wrapped(*task_args):
        count = int(task_args[0].shape[0])
        if not _loops_in_graph(count):
            return looped(*task_args)
        return _task_major(
            lambda t: ([], fn(t, *[a[t] for a in task_args])), count
        )[1]

    return wrapped


def fori_loop(lower, upper, body, carry):
    if upper <= lower:  # no step: nothing to trace
        return carry
    # A known trip count: XLA compiles the loop and its gradient.
    return tf.while_loop(
        lambda i, _: i < upper,
        lambda i, carry: (i + 1, body(i, carry)),
        (tf.constant(lower), carry),
        maximum_iterations=upper - lower,
    )[1]


def recompute(fn, inputs, after):
    # In a graph, `fn` waits for `after` (else activations linger) and is
    # never merged with an earlier identical computation.
    with tf.control_dependencies([a for a in after if a is not None]):
        inputs = [tf.identity(p) for p in inputs]
    return list(fn(inputs))


def vjp(fn, primals, cotangents):
    cotangents = list(cotangents)
    primals = recompute(lambda primals: primals, primals, cotangents)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(primals)
        outputs = fn(primals)
    return _gradient(tape, outputs, primals, output_gradients=cotangents)


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
        if tensor.shape[0] is not None:
            return int(tensor.shape[0])
    raise ValueError(
        "On the TensorFlow backend kerameta loops over the tasks of a batch, "
        "so the number of tasks per batch must be known when the step is "
        "traced, but it was `None`. Feed episodes with a fixed number of "
        "tasks per batch: a `kerameta.data` dataset, a `keras.utils."
        "PyDataset` whose batches all have the same size, a `tf.data."
        "Dataset` batched with `drop_remainder=True`, or a dict of arrays "
        "with a `batch_size` that divides the number of tasks."
    )


_looped = functools.partial(
    task_loop.looped,
    num_tasks=_num_tasks,
    unstack=lambda tensor, num: tf.unstack(tensor, num=num),
    stack=tf.stack,
)


def per_task_value_and_grad(fn, create_graph=True, vectorize=False):
    if vectorize:
        raise ValueError(
            "`vectorize_tasks=True` is not supported on the TensorFlow "
            "backend: `tf.vectorized_map` measured hundreds of times slower "
            "than a loop under XLA. Use `vectorize_tasks='auto'` or `False`."
        )

    def task_grad(params, shared, *args):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            loss = fn(params, shared, *args)
        grads = _gradient(tape, loss, params)
        if not create_graph:
            grads = [tf.stop_gradient(g) for g in grads]
        return loss, grads

    return _looped(task_grad)


def per_task_map(fn, vectorize=False):
    return _looped(fn)


def per_task_hvp(fn, vectorize=False):
    def task_hvp(params_and_vectors, shared, *args):
        both = [tf.stop_gradient(x) for x in params_and_vectors]
        params, vectors = both[: len(both) // 2], both[len(both) // 2 :]
        with tf.GradientTape(watch_accessed_variables=False) as outer:
            outer.watch(params)
            with tf.GradientTape(watch_accessed_variables=False) as inner:
                inner.watch(params)
                loss = fn(params, shared, *args)
            grads = _gradient(inner, loss, params)
            directional = tf.add_n(
                [tf.reduce_sum(g * v) for g, v in zip(grads, vectors)]
            )
        products = _gradient(outer, directional, params)
        return [tf.stop_gradient(p) for p in products]

    loop = _looped(task_hvp)
    return lambda task_params, shared, vectors, *task_args: loop(
        [*task_params, *vectors], shared, *task_args
    )


def _exact_moments(x, axes, keepdims):
    # `tf.nn.moments` stops the gradient through the mean inside the
    # variance: first derivatives stay right, second derivatives do not.
    mean = tf.reduce_mean(x, axes, keepdims=True)
    variance = tf.reduce_mean(tf.square(x - mean), axes, keepdims=True)
    if not keepdims:
        mean = tf.squeeze(mean, axes)
        variance = tf.squeeze(variance, axes)
    return mean, variance


def second_order_safe():
    """Exact second derivatives through Keras's batch moments."""
    return compat.swap_tf_compute_moments(_exact_moments)


def with_static_task_axis(tensors, num_tasks):
    """Sets the task axis Keras's TF adapters leave `None` to `num_tasks`."""

    def ensure(t):
        if num_tasks is None or t is None or t.shape[0] is not None:
            return t
        return tf.ensure_shape(t, [num_tasks] + t.shape.as_list()[1:])

    return tf.nest.map_structure(ensure, tensors)


def _replica_context():
    """The replica context of a `tf.distribute` step with several replicas.

    `None` outside one: on one device, and in the cross-replica context
    (under `strategy.scope()` but outside `strategy.run`), where the code
    sees the whole batch.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def replica_count():
    context = _replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def all_replicas_sum(x):
    context = _replica_context()
    if context is None:
        return x
    # Differentiable: the gradient of an all-reduce sum is the all-reduce
    # sum of the cotangents.
    return context.all_reduce(tf.distribute.ReduceOp.SUM, x)


def replica_index():
    context = _replica_context()
    return 0 if context is None else context.replica_id_in_sync_group
