"""N-way K-shot classification episodes sampled from any labelled set."""

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerameta.src.checks import check_positive_int
from kerameta.src.data.task_batches import TaskBatches

ALL_ROTATIONS = (0, 90, 180, 270)


def _as_examples(images: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels as NumPy arrays, from arrays or a dataset."""
    if labels is None:
        if isinstance(images, np.ndarray) or not isinstance(images, Iterable):
            raise ValueError(
                "Expected `labels` (one integer class per image), or "
                "`images` given as a dataset of (image, label) pairs such "
                "as a `tf.data.Dataset`. Received: labels=None and images "
                f"of type {type(images).__name__}."
            )
        images, labels = _collect_pairs(images)
    images = _stack("images", images)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            "Expected `labels` to be one integer class per image, shaped "
            f"(num_images,). Received: labels.shape={labels.shape}. "
            "One-hot labels can be converted with `labels.argmax(-1)`."
        )
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            "Expected integer class labels. Received: labels of dtype "
            f"{labels.dtype} (first values: {labels[:5].tolist()}). Map "
            "them to integers first, e.g. with "
            "`np.unique(labels, return_inverse=True)[1]`."
        )
    if (
        images.dtype == object
        or not (np.issubdtype(images.dtype, np.number) or images.dtype == bool)
        or np.issubdtype(images.dtype, np.complexfloating)
    ):
        raise ValueError(
            "Expected `images` to hold real numbers (e.g. uint8 or float32 "
            f"pixels). Received: images of dtype {images.dtype}."
        )
    if np.issubdtype(images.dtype, np.floating):
        bad = ~np.isfinite(images)
        if bad.any():
            raise ValueError(
                "Expected finite pixel values in `images`. Received: "
                f"{int(bad.sum())} NaN or infinite values, the first in "
                f"image {int(np.argwhere(bad)[0][0])}. Fix or drop those "
                "images."
            )
    if images.ndim < 2:
        raise ValueError(
            "Expected `images` shaped (num_images, *image_shape). Received: "
            f"images.shape={images.shape}."
        )
    if len(images) != len(labels):
        raise ValueError(
            "Expected one label per image. Received: "
            f"{len(images)} images and {len(labels)} labels."
        )
    return images, labels


def _stack(name: str, values: Any) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values
    values = list(values)
    shapes = {np.shape(v) for v in values}
    if len(shapes) > 1:
        shown = sorted(shapes, key=str)[:4]
        raise ValueError(
            f"Expected every one of the {name} to have the same shape. "
            f"Received shapes {', '.join(map(str, shown))}"
            f"{' and more' if len(shapes) > 4 else ''}. Resize them to one "
            "shape first (e.g. with `keras.layers.Resizing`)."
        )
    return np.stack([np.asarray(v) for v in values])


def _collect_pairs(dataset: Any) -> tuple[list, list]:
    """(image, label) pairs, or dicts with "image" and "label", to lists."""
    if hasattr(dataset, "as_numpy_iterator"):  # tf.data, without importing TF
        dataset = dataset.as_numpy_iterator()
    images, labels = [], []
    for element in dataset:
        if isinstance(element, dict):
            if not {"image", "label"} <= set(element):
                raise ValueError(
                    "Expected dataset elements to be (image, label) pairs "
                    "or dicts with keys 'image' and 'label'. Received a dict "
                    f"with keys {sorted(element)}."
                )
            image, label = element["image"], element["label"]
        else:
            try:
                image, label = element
            except (TypeError, ValueError):
                raise ValueError(
                    "Expected dataset elements to be (image, label) pairs "
                    "or dicts with keys 'image' and 'label'. Received an "
                    f"element of type {type(element).__name__}. Use "
                    "`as_supervised=True` with `tfds.load`."
                ) from None
        images.append(np.asarray(image))
        labels.append(np.asarray(label))
    if not images:
        raise ValueError("Expected a non-empty dataset. Received no elements.")
    return images, labels


def _check_rotations(rotations: Any) -> tuple[int, ...]:
    if rotations is True:
        return ALL_ROTATIONS
    if rotations is False or rotations is None:
        return (0,)
    try:
        values = tuple(int(r) for r in rotations)
        valid = len(values) > 0 and len(set(values)) == len(values)
        valid = valid and all(r in ALL_ROTATIONS for r in values)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            "Expected `rotations` to be a bool or distinct angles among "
            f"{ALL_ROTATIONS}. Received: rotations={rotations!r}"
        )
    return values


class FewShotTasks(TaskBatches):
    """Batches of N-way K-shot classification episodes from labelled images.

    Each task picks `ways` classes at random, then `shots` support and
    `query_shots` query examples of each, all distinct. Labels are remapped
    to `0..ways-1` in a random order per task, and the examples of each set
    are shuffled, so the position of an example says nothing of its class.
    With `rotations`, every class also appears rotated by 90, 180 and 270
    degrees as a class of its own (the usual Omniglot augmentation).

    Batches are `(x, query_y)` with `x = {"support_x": (T, ways * shots,
    *image_shape), "support_y": (T, ways * shots), "query_x": (T, ways *
    query_shots, *image_shape)}` and `query_y` shaped `(T, ways *
    query_shots)`, labels int32, where `T = tasks_per_batch`. Batch `i`
    depends only on `(seed, i)`, plus the epoch when `new_tasks_each_epoch`,
    so validation and test sets repeat exactly and any worker can build any
    batch. Sampling is vectorized NumPy: it needs no framework.

    Keep the classes of training, validation and test sets disjoint (see
    `kerameta.data.split_classes`).

    Args:
        images: `(num_images, *image_shape)` array, or a dataset of `(image,
            label)` pairs or `{"image", "label"}` dicts (e.g. a `tf.data`
            dataset from `tfds.load(..., as_supervised=True)`), read once
            into memory.
        labels: integer class of each image, `(num_images,)`; `None` when
            `images` is a dataset of pairs.
        ways: classes per task (N). Defaults to `5`.
        shots: support examples per class (K). Defaults to `1`.
        query_shots: query examples per class. Defaults to `shots`.
        tasks_per_batch: tasks in one batch (the meta-batch size). Defaults
            to `32`.
        num_batches: batches in one epoch. Defaults to `100`.
        seed: seed of the task sampler. Defaults to `0`.
        new_tasks_each_epoch: draw new tasks every epoch (for training);
            `False` repeats the same batches every epoch (for validation and
            testing). Defaults to `False`.
        rotations: `True` adds the images rotated by 90, 180 and 270 degrees
            as new classes; or a tuple of the angles to use, such as `(0,
            180)`. Images must be square. Defaults to `False`.
        **kwargs: `keras.utils.PyDataset` arguments (`workers`, ...).

    Example:

    ```python
    (x_train, y_train), (x_val, y_val), _ = (
        kerameta.datasets.omniglot.load_data()
    )
    train_tasks = kerameta.data.FewShotTasks(
        x_train, y_train, ways=5, shots=1, query_shots=15,
        tasks_per_batch=32, num_batches=100, rotations=True,
        new_tasks_each_epoch=True,
    )
    x, query_y = train_tasks[0]
    x["support_x"].shape  # (32, 5, 28, 28, 1)
    query_y.shape  # (32, 75)
    ```
    """

    def __init__(
        self,
        images: Any,
        labels: Any = None,
        *,
        ways: int = 5,
        shots: int = 1,
        query_shots: int | None = None,
        tasks_per_batch: int = 32,
        num_batches: int = 100,
        seed: int = 0,
        new_tasks_each_epoch: bool = False,
        rotations: bool | Sequence[int] = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_batches, seed, new_tasks_each_epoch, **kwargs)
        self.ways = check_positive_int("ways", ways)
        self.shots = check_positive_int("shots", shots)
        self.query_shots = check_positive_int(
            "query_shots", shots if query_shots is None else query_shots
        )
        self.tasks_per_batch = check_positive_int(
            "tasks_per_batch", tasks_per_batch
        )
        self.rotations = _check_rotations(rotations)
        images, labels = _as_examples(images, labels)
        if len(self.rotations) > 1 and (
            images.ndim < 3 or images.shape[1] != images.shape[2]
        ):
            raise ValueError(
                "Rotations need square images shaped (num_images, height, "
                "width, ...) with height == width. Received: images.shape="
                f"{images.shape}. Pass `rotations=False`."
            )
        self.images = images
        self.class_ids, compact = np.unique(labels, return_inverse=True)
        counts = np.bincount(compact)
        num_classes = len(self.class_ids) * len(self.rotations)
        if self.ways > num_classes:
            raise ValueError(
                f"`ways` ({self.ways}) is larger than the number of classes "
                f"({len(self.class_ids)} labels"
                + (
                    f" x {len(self.rotations)} rotations"
                    if len(self.rotations) > 1
                    else ""
                )
                + f" = {num_classes}). Lower `ways` or use more classes."
            )
        needed = self.shots + self.query_shots
        if counts.min() < needed:
            small = self.class_ids[counts < needed]
            raise ValueError(
                f"Every class needs shots + query_shots = {self.shots} + "
                f"{self.query_shots} = {needed} distinct examples, but "
                f"{len(small)} of {len(counts)} classes have fewer (e.g. "
                f"label {small[0]} has {counts[counts < needed][0]}). Lower "
                "`shots` or `query_shots`, or drop those classes."
            )
        # members[c, :counts[c]] are the indices of the examples of class c.
        order = np.argsort(compact, kind="stable")
        self.members = np.zeros((len(counts), counts.max()), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        column = np.arange(len(order)) - np.repeat(starts, counts)
        self.members[compact[order], column] = order
        self.counts = counts

    @classmethod
    def from_tfds(
        cls,
        name: str,
        split: str,
        *,
        data_dir: str | None = None,
        download: bool = True,
        preprocess: Callable[[np.ndarray, np.ndarray], tuple] | None = None,
        **kwargs: Any,
    ) -> "FewShotTasks":
        """Episodes from a TensorFlow Datasets dataset, read into memory.

        Loads `tfds.load(name, split=split, as_supervised=True)` once (so
        the dataset needs supervised keys, such as `("image", "label")`),
        optionally transforms the arrays, and samples episodes from them.
        Needs `tensorflow-datasets` (`pip install "kerameta[datasets]"`).

        Args:
            name: TFDS dataset name, e.g. `"omniglot"`.
            split: TFDS split, e.g. `"train"`. Keep the classes of the
                splits you sample from disjoint.
            data_dir: TFDS data directory. Defaults to TFDS's default.
            download: whether TFDS may download and prepare the dataset.
                Defaults to `True`.
            preprocess: optional `(images, labels) -> (images, labels)` on
                the NumPy arrays, e.g. to resize or rescale.
            **kwargs: `FewShotTasks` arguments (`ways`, `shots`, ...).

        Returns:
            A `FewShotTasks`.

        Example:

        ```python
        tasks = kerameta.data.FewShotTasks.from_tfds(
            "omniglot", "small1", ways=5, shots=1,
            preprocess=lambda x, y: (1.0 - x[..., :1] / 255.0, y),
        )
        ```
        """
        try:
            import tensorflow_datasets as tfds
        except ImportError as error:
            raise ImportError(
                "`FewShotTasks.from_tfds` needs tensorflow-datasets: pip "
                'install "kerameta[datasets]". Without it, pass NumPy '
                "arrays to `FewShotTasks`."
            ) from error
        dataset = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            as_supervised=True,
            download=download,
            batch_size=-1,
        )
        images, labels = tfds.as_numpy(dataset)
        if preprocess is not None:
            images, labels = preprocess(images, labels)
        return cls(images, labels, **kwargs)

    @property
    def num_classes(self) -> int:
        """Classes to draw from, counting each rotation as a class."""
        return len(self.class_ids) * len(self.rotations)

    def sample(
        self, rng: np.random.Generator, num_tasks: int
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """`num_tasks` episodes drawn with `rng`, as `(x, query_y)`."""
        n, k, q = self.ways, self.shots, self.query_shots
        # Classes of each task: the first `ways` of a random permutation.
        keys = rng.random((num_tasks, self.num_classes))
        classes = np.argpartition(keys, n - 1, axis=1)[:, :n]
        base, rotation = np.divmod(classes, len(self.rotations))
        # Distinct examples per (task, class): smallest random keys among
        # the class's members (padding gets +inf).
        width = self.members.shape[1]
        keys = rng.random((num_tasks, n, width))
        keys[np.arange(width) >= self.counts[base][..., None]] = np.inf
        if k + q < width:
            picks = np.argpartition(keys, k + q - 1, axis=-1)[..., : k + q]
        else:
            picks = np.argsort(keys, axis=-1)
        indices = self.members[base[..., None], picks]  # (T, N, K + Q)
        examples = self.images[indices]
        for position, angle in enumerate(self.rotations):
            if angle:
                mask = rotation == position
                examples[mask] = np.rot90(
                    examples[mask], angle // 90, axes=(2, 3)
                )
        labels = np.broadcast_to(
            np.arange(n, dtype=np.int32)[None, :, None], (num_tasks, n, k + q)
        )
        support_x, support_y = self._shuffled(
            rng, examples[:, :, :k], labels[:, :, :k]
        )
        query_x, query_y = self._shuffled(
            rng, examples[:, :, k:], labels[:, :, k:]
        )
        x = {"support_x": support_x, "support_y": support_y, "query_x": query_x}
        return x, query_y

    @staticmethod
    def _shuffled(rng, examples, labels):
        """Flattens (T, N, K, ...) to (T, N * K, ...) in a random order."""
        num_tasks = examples.shape[0]
        examples = examples.reshape(num_tasks, -1, *examples.shape[3:])
        labels = labels.reshape(num_tasks, -1)
        order = np.argsort(rng.random(labels.shape), axis=1)
        rows = np.arange(num_tasks)[:, None]
        return examples[rows, order], labels[rows, order]

    def __getitem__(self, index: int):
        return self.sample(self.rng(index), self.tasks_per_batch)


def split_classes(
    images: Any,
    labels: Any,
    num_classes: Sequence[int | None],
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Splits a labelled set into parts with disjoint classes.

    The distinct labels are shuffled with `seed`, then cut into consecutive
    groups of `num_classes[i]` classes; each part holds every example of its
    classes. One entry may be `None`: that part takes the classes left over.

    Args:
        images: `(num_images, ...)` array.
        labels: integer class of each image, `(num_images,)`.
        num_classes: number of classes of each part, e.g. `(1200, 100,
            None)` for training, validation and test classes.
        seed: seed of the shuffle. Defaults to `0`.

    Returns:
        A list of `(images, labels)` pairs, one per entry of `num_classes`,
        with the original labels.

    Example:

    ```python
    (x_train, y_train), (x_test, y_test) = kerameta.data.split_classes(
        images, labels, num_classes=(80, None), seed=0
    )
    ```
    """
    images, labels = _as_examples(images, labels)
    seed = check_positive_int("seed", seed, allow_zero=True)
    sizes = list(num_classes)
    if sizes.count(None) > 1 or any(
        s is not None
        and (isinstance(s, bool) or not isinstance(s, int) or s < 0)
        for s in sizes
    ):
        raise ValueError(
            "Expected `num_classes` to hold non-negative integers and at "
            f"most one `None`. Received: num_classes={num_classes!r}"
        )
    classes = np.unique(labels)
    fixed = sum(s for s in sizes if s is not None)
    if fixed > len(classes):
        raise ValueError(
            f"`num_classes` asks for {fixed} classes, but the labels hold "
            f"only {len(classes)}. Received: num_classes={num_classes!r}"
        )
    sizes = [len(classes) - fixed if s is None else s for s in sizes]
    shuffled = np.random.default_rng(seed).permutation(classes)
    parts = []
    start = 0
    for size in sizes:
        mask = np.isin(labels, shuffled[start : start + size])
        parts.append((images[mask], labels[mask]))
        start += size
    return parts
