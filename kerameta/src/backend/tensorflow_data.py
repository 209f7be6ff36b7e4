"""TensorFlow's data feeding for meta-models: `PyDataset`s read by index.

Not a seam primitive (the engine never calls it): the TensorFlow
`MetaTrainer` wraps `fit`, `evaluate` and `predict` so that Keras reads a
`keras.utils.PyDataset` through `_indexed_py_dataset` (see there and the
Backends page of the docs).
"""

import functools

import numpy as np
import tensorflow as tf

from kerameta.src import compat
from kerameta.src.backend import SingleDeviceTrainer


@functools.cache
def _indexed_py_dataset(get_tf_dataset):
    """Keras's `PyDataset` source, with batches read by index in a `map`.

    Keras reads a `PyDataset` through `tf.data.Dataset.from_generator`; once
    such an iterator has run, every TensorFlow step of the process runs
    about twice as slowly on a CPU (a Conv-4 meta-step: 3.0 s after it, 6.2
    s with it; a `map` over the indices with `tf.numpy_function` leaves it
    at 3.0 s). Same batches, order, shuffling (reshuffled each epoch) and
    class weights; Keras's own source where it runs workers.
    """

    def indexed(adapter):
        dataset = get_tf_dataset(adapter)  # built, never iterated
        py_dataset, shuffle, enqueued = compat.py_dataset_adapter_settings(
            adapter
        )
        specs = tf.nest.flatten(dataset.element_spec)
        if enqueued or not all(isinstance(s, tf.TensorSpec) for s in specs):
            return dataset

        def batch(index):
            flat = tf.nest.flatten(
                compat.py_dataset_adapter_batch(adapter, int(index))
            )
            if len(flat) != len(specs):
                raise ValueError(
                    f"Batch {int(index)} of the PyDataset has {len(flat)} "
                    f"arrays; its first batches had {len(specs)} "
                    f"({dataset.element_spec}). Return the same structure "
                    "from every `__getitem__`."
                )
            return [np.asarray(array) for array in flat]

        def element(index):
            flat = tf.numpy_function(batch, [index], [s.dtype for s in specs])
            flat = [tf.ensure_shape(t, s.shape) for t, s in zip(flat, specs)]
            return tf.nest.pack_sequence_as(dataset.element_spec, flat)

        count = py_dataset.num_batches
        if count is None:  # endless, in order (as Keras's generator)
            indices = tf.data.Dataset.counter()
        else:
            indices = tf.data.Dataset.range(count)
            if shuffle:
                indices = indices.shuffle(count, reshuffle_each_iteration=True)
        return indices.map(element).prefetch(tf.data.AUTOTUNE)

    return indexed


class MetaTrainer(SingleDeviceTrainer):
    """`fit`, `evaluate`, `predict` read `PyDataset`s by index (see above)."""

    def fit(self, *args, **kwargs):
        with compat.swap_py_dataset_tf_source(_indexed_py_dataset):
            return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        with compat.swap_py_dataset_tf_source(_indexed_py_dataset):
            return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with compat.swap_py_dataset_tf_source(_indexed_py_dataset):
            return super().predict(*args, **kwargs)
