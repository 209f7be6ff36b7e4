"""Step memory of the checkpointed meta-gradient where weights dominate.

The Conv-4 benchmark (`meta_gradient_memory.py`) has small weights (113k)
and large activations, so how many copies of the fast weights the
checkpointed meta-gradient keeps alive barely shows there. This one uses
an MLP `width`-`width`-1 (4 MiB of weights per task at the default 1024)
on 2 tasks of 5 support and 5 query examples, so each copy of the fast
weights is 8 MiB: memory shows how many copies are alive at once.

It prints one line: the step memory (peak resident memory of 3
meta-iterations after a warm-up, minus the resident memory before them,
with the C heap trimmed first, as in `meta_gradient_memory.py`). Run one
configuration per process (Linux only, it reads `/proc/self/status`):

    KERAS_BACKEND=torch python benchmarks/checkpointed_weights_memory.py \\
        --inner-steps 20 --checkpoints 4

PyTorch allocates through glibc `malloc`, whose `mmap` threshold rises with
the sizes freed; `MALLOC_MMAP_THRESHOLD_=1048576` fixes it, so that freed
copies leave the resident memory and the count of live copies shows.
"""

import argparse
import ctypes
import time

import numpy as np


def _resident_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument(
        "--checkpoints", default="4", help="an integer, or 'none'"
    )
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args(argv)
    import keras

    import kerameta

    checkpoints = None if args.checkpoints == "none" else int(args.checkpoints)
    width, tasks = args.width, 2
    network = keras.Sequential(
        [
            keras.Input((width,)),
            keras.layers.Dense(width, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    maml = kerameta.MAML(
        network,
        inner_steps=args.inner_steps,
        inner_learning_rate=0.01,
        meta_gradient=kerameta.meta_gradients.Checkpointed(checkpoints),
    )
    maml.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    x = {
        "support_x": rng.normal(size=(tasks, 5, width)).astype("float32"),
        "support_y": rng.normal(size=(tasks, 5, 1)).astype("float32"),
        "query_x": rng.normal(size=(tasks, 5, width)).astype("float32"),
    }
    y = rng.normal(size=(tasks, 5, 1)).astype("float32")
    start = time.perf_counter()
    maml.train_on_batch(x, y)
    first = time.perf_counter() - start
    maml.train_on_batch(x, y)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _resident_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets the peak (VmHWM)
    for _ in range(3):
        maml.train_on_batch(x, y)
    copy = 4 * tasks * (width * width + 2 * width + 1) / 2**20
    print(
        f"{keras.config.backend()}: inner_steps={args.inner_steps} "
        f"checkpoints={checkpoints} step memory "
        f"{_resident_mib('VmHWM') - before:.0f} MiB (one copy of the fast "
        f"weights: {copy:.0f} MiB; first step {first:.1f} s)"
    )


if __name__ == "__main__":
    main()
