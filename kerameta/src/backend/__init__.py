"""The backend seam: the only package of kerameta that imports a framework.

`keras.config.backend()` is read once, at import time, and the matching
module's names are re-exported, the way Keras picks its `Trainer`. Every
other module of kerameta is written with `keras.ops`, `stateless_call` and
`StatelessScope`, and reaches JAX, TensorFlow or PyTorch only through the
names below:

- `value_and_grad(fn, has_aux=False)`: the outer (meta) gradient of
  `fn(params, *args)` with respect to the list `params`.
- `per_task_value_and_grad(fn, create_graph, vectorize)`: the inner-loop
  gradient, one per task: `fn(task_params, shared, *task_args)` is a scalar
  loss of one task; `task_params` and `task_args` carry a leading task axis.
- `per_task_map(fn, vectorize)`: the same without gradients (query forward).
- `per_task_hvp(fn, vectorize)`: each task's Hessian-vector products,
  `hvp(task_params, shared, vectors, *task_args) -> products` (constants:
  the implicit meta-gradient's conjugate-gradient solve).
- `vjp(fn, primals, cotangents)`: the vector-Jacobian product of
  `fn(primals) -> outputs` (lists of tensors) with `cotangents` (one per
  output): a list like `primals`, zeros where an input does not reach
  the outputs. It builds the graph of `fn` and drops it on return.
- `custom_gradient(forward, backward)`: a function `f(inputs, constants)
  -> (outputs, aux)` with a hand-written gradient (all are lists of
  tensors). `forward(inputs, constants) -> (outputs, aux, residuals)`
  runs without a graph; `backward(residuals, constants, cotangents)`
  returns the cotangents of `inputs` from those of `outputs`, and may
  differentiate (`vjp`) inside. `constants` (data, integer labels) get no
  gradient and `aux` is not differentiable. Everything the two functions
  read that depends on traced values must come in through `inputs` or
  `constants` (JAX traces them separately).
- `enable_grad()` / `no_grad()`: context managers (PyTorch only; no-ops
  elsewhere).
- `second_order_safe()`: a context manager under which Keras ops used by
  adaptation have exact second derivatives (TensorFlow's batch moments).
- `MetaTrainer`: the mixin that turns the backend-neutral meta-step body of
  `MetaModel` into Keras's `train_step` / `test_step` / `predict_step`.
"""

import keras

_BACKEND = keras.config.backend()

if _BACKEND == "jax":
    from kerameta.src.backend.jax import *  # noqa: F403
elif _BACKEND == "tensorflow":
    from kerameta.src.backend.tensorflow import *  # noqa: F403
elif _BACKEND == "torch":
    from kerameta.src.backend.torch import *  # noqa: F403
else:
    raise ValueError(
        "kerameta supports the Keras backends 'jax', 'tensorflow' and "
        f"'torch'. Received: KERAS_BACKEND={_BACKEND!r}. Set the "
        "environment variable KERAS_BACKEND to one of them before "
        "importing keras."
    )

BACKEND = _BACKEND
