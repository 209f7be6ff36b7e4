"""PyTorch side of the seam: `torch.func` in `torch.vmap`, or a task loop."""

import contextlib
import functools

import keras
import torch

from kerameta.src.backend import task_loop
from kerameta.src.backend.torch_distributed import MetaTrainer  # noqa: F401
from kerameta.src.backend.torch_distributed import all_replicas_sum  # noqa: F401
from kerameta.src.backend.torch_distributed import replica_count
from kerameta.src.backend.torch_distributed import replica_index  # noqa: F401
from kerameta.src.backend.torch_distributed import summed_over_replicas
from kerameta.src.backend.torch_kernels import channels_last_ops


def _zeros_for_none(grads, params):
    return [
        torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)
    ]


@torch.compile
def _compiled_call(fn, *args, **kwargs):
    return fn(*args, **kwargs)


def compiled(fn, jit_compile):
    """`fn` under `torch.compile` if `jit_compile` is True (`MetaTrainer`
    runs the step itself eagerly); eager under data parallelism."""
    if jit_compile is not True or replica_count() > 1:
        return fn
    return functools.partial(_compiled_call, fn)


def _local_value_and_grad(fn, has_aux=False):
    """The gradient of this process's tasks' `fn`."""

    def wrapped(params, *args):
        with torch.enable_grad():
            leaves = [
                torch.as_tensor(p).detach().requires_grad_(True) for p in params
            ]
            outputs = fn(leaves, *args)
            loss = outputs[0] if has_aux else outputs
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        outputs = keras.tree.map_structure(
            lambda x: x.detach() if torch.is_tensor(x) else x, outputs
        )
        return outputs, _zeros_for_none(grads, leaves)

    return wrapped


def value_and_grad(fn, has_aux=False):
    """Under data parallelism, the processes' sums: the whole batch's."""
    local = _local_value_and_grad(fn, has_aux)

    def wrapped(params, *args):
        outputs, grads = local(params, *args)
        if replica_count() > 1:
            loss = outputs[0] if has_aux else outputs
            value, *grads = summed_over_replicas([loss, *grads])
            outputs = (value, outputs[1]) if has_aux else value
        return outputs, grads

    return wrapped


def accumulate_over_tasks(fn):
    # On one process (kerameta accumulates only there).
    return task_loop.accumulated(fn, _local_value_and_grad, torch.stack)


def recompute(fn, inputs, after):
    return list(fn(list(inputs)))  # eager: runs when called


def vjp(fn, primals, cotangents):
    with torch.enable_grad():
        leaves = [
            torch.as_tensor(p).detach().requires_grad_(p.is_floating_point())
            for p in primals
        ]
        outputs = fn(leaves)
        pairs = [
            (o, c)
            for o, c in zip(outputs, cotangents)
            if o.requires_grad and c is not None
        ]
        wanted = [leaf for leaf in leaves if leaf.requires_grad]
        outputs, cotangents = zip(*pairs) if pairs and wanted else ((), ())
        grads = iter(
            torch.autograd.grad(
                outputs, wanted, grad_outputs=cotangents, allow_unused=True
            )
            if outputs
            else [None] * len(wanted)
        )
    grads = [next(grads) if leaf.requires_grad else None for leaf in leaves]
    return _zeros_for_none(grads, leaves)


class _CustomGradient(torch.autograd.Function):
    """`custom_gradient`'s node: the forward keeps only the residuals."""

    @staticmethod
    def forward(ctx, rule, num_inputs, *tensors):
        forward, backward, counts = rule
        # Under autograd's `no_grad`; detached, nothing joins the graph.
        inputs = [t.detach() for t in tensors[:num_inputs]]
        constants = list(tensors[num_inputs:])
        outputs, aux, residuals = forward(inputs, constants)
        counts["outputs"] = len(outputs)
        ctx.rule = (backward, residuals, constants, len(outputs))
        aux = [a.detach() for a in aux]
        ctx.mark_non_differentiable(*aux)
        return (*[o.detach() for o in outputs], *aux)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *cotangents):
        backward, residuals, constants, num_outputs = ctx.rule
        del ctx.rule  # frees the residuals
        with torch.enable_grad():
            input_cotangents = backward(
                residuals, constants, list(cotangents[:num_outputs])
            )
        return (None, None, *input_cotangents, *[None] * len(constants))


def custom_gradient(forward, backward):
    def wrapped(inputs, constants):
        inputs, constants = list(inputs), list(constants)
        counts = {}
        flat = _CustomGradient.apply(
            (forward, backward, counts), len(inputs), *inputs, *constants
        )
        num_outputs = counts["outputs"]
        return list(flat[:num_outputs]), list(flat[num_outputs:])

    return wrapped


def _looped(fn):
    loop = task_loop.looped(
        fn,
        num_tasks=lambda task_params, task_args: task_params[0].shape[0],
        unstack=lambda tensor, num: [tensor[t] for t in range(num)],
        stack=torch.stack,
    )

    def wrapped(*args):
        with channels_last_ops():  # copy-free channels_last convolutions
            return loop(*args)

    return wrapped


def _over_tasks(fn, vectorize, num_task_args):
    if not vectorize:
        return _looped(fn)
    return torch.vmap(fn, in_dims=(0, None) + (0,) * num_task_args)


def per_task_value_and_grad(fn, create_graph=True, vectorize=True):
    def task_grad(params, shared, *args):  # one task, in the loop
        if not create_graph or not all(p.requires_grad for p in params):
            params = [p.detach().requires_grad_(True) for p in params]
        loss = fn(params, shared, *args)
        grads = torch.autograd.grad(
            loss, params, create_graph=create_graph, allow_unused=True
        )
        return loss, _zeros_for_none(grads, params)

    def wrapped(task_params, shared, *task_args):
        if not vectorize:
            with torch.enable_grad():
                return _looped(task_grad)(task_params, shared, *task_args)
        if not create_graph:
            task_params = [p.detach() for p in task_params]
        grad_fn = torch.func.grad_and_value(fn)
        with torch.enable_grad():
            grads, values = _over_tasks(grad_fn, True, len(task_args))(
                task_params, shared, *task_args
            )
        if not create_graph:
            grads = [g.detach() for g in grads]
        return values, list(grads)

    return wrapped


def per_task_map(fn, vectorize=True):
    def wrapped(task_params, shared, *task_args):
        mapped = _over_tasks(fn, vectorize, len(task_args))
        return mapped(task_params, shared, *task_args)

    return wrapped


def _dot(tensors, vectors):
    return sum(torch.sum(t * v) for t, v in zip(tensors, vectors))


def per_task_hvp(fn, vectorize=True):
    def vectorized_hvp(params, shared, vectors, *args):
        def directional(p):
            return _dot(torch.func.grad(fn)(p, shared, *args), vectors)

        return torch.func.grad(directional)(params)

    def looped_hvp(params_and_vectors, shared, *args):
        half = len(params_and_vectors) // 2
        params = [
            p.detach().requires_grad_(True) for p in params_and_vectors[:half]
        ]
        loss = fn(params, shared, *args)
        grads = torch.autograd.grad(
            loss, params, create_graph=True, allow_unused=True
        )
        directional = _dot(
            _zeros_for_none(grads, params), params_and_vectors[half:]
        )
        products = (
            torch.autograd.grad(directional, params, allow_unused=True)
            if directional.requires_grad
            else [None] * len(params)
        )
        return _zeros_for_none(products, params)

    def wrapped(task_params, shared, vectors, *task_args):
        params = [p.detach() for p in task_params]
        vectors = [v.detach() for v in vectors]
        with torch.enable_grad():
            if vectorize:
                mapped = _over_tasks(vectorized_hvp, True, len(task_args) + 1)
                products = mapped(params, shared, vectors, *task_args)
            else:
                products = _looped(looped_hvp)(
                    [*params, *vectors], shared, *task_args
                )
        return [p.detach() for p in products]

    return wrapped


enable_grad = torch.enable_grad
no_grad = torch.no_grad


@contextlib.contextmanager
def random_scope(keys):
    """Seeds torch's global generator, which Keras's unseeded dropout draws
    from, with the call's seed states (`keys`), for this call only."""
    seed = int(torch.sum(keys.to(torch.int64) * torch.tensor([1, 2])))
    with torch.random.fork_rng(
        [keys.device.index or 0] if keys.is_cuda else []
    ):
        torch.manual_seed(seed & 0xFFFFFFFF)
        yield
