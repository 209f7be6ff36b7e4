"""PyTorch side of the seam: `torch.func` in `torch.vmap`, or a task loop."""

import contextlib

import torch

REMAT_OF_GRADIENTS = True


def _zeros_for_none(grads, params):
    return [
        torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)
    ]


def value_and_grad(fn, has_aux=False):
    def wrapped(params, *args):
        with torch.enable_grad():
            leaves = [
                torch.as_tensor(p).detach().requires_grad_(True) for p in params
            ]
            outputs = fn(leaves, *args)
            loss = outputs[0] if has_aux else outputs
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        grads = _zeros_for_none(grads, leaves)
        outputs = _detach(outputs)
        return outputs, grads

    return wrapped


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
        grads = iter(
            torch.autograd.grad(
                [o for o, _ in pairs],
                wanted,
                grad_outputs=[c for _, c in pairs],
                allow_unused=True,
            )
            if pairs and wanted
            else [None] * len(wanted)
        )
    grads = [next(grads) if leaf.requires_grad else None for leaf in leaves]
    return _zeros_for_none(grads, leaves)


class _CustomGradient(torch.autograd.Function):
    """`custom_gradient`'s node: the forward keeps only the residuals."""

    @staticmethod
    def forward(ctx, rule, num_inputs, *tensors):
        forward, backward, counts = rule
        # Autograd runs this under `no_grad`; the inputs are detached so
        # that nothing the forward computes joins the outer graph.
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


def _detach(structure):
    if isinstance(structure, torch.Tensor):
        return structure.detach()
    if isinstance(structure, (list, tuple)):
        return type(structure)(_detach(s) for s in structure)
    if isinstance(structure, dict):
        return {k: _detach(v) for k, v in structure.items()}
    return structure


def _stack(per_task):
    first = per_task[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(per_task)
    return type(first)(_stack(list(items)) for items in zip(*per_task))


def per_task_value_and_grad(fn, create_graph=True, vectorize=True):
    def vectorized(task_params, shared, *task_args):
        if not create_graph:
            task_params = [p.detach() for p in task_params]
        in_dims = (0, None) + (0,) * len(task_args)
        with torch.enable_grad():
            grads, values = torch.vmap(
                torch.func.grad_and_value(fn), in_dims=in_dims
            )(task_params, shared, *task_args)
        if not create_graph:
            grads = [g.detach() for g in grads]
        return values, list(grads)

    def looped(task_params, shared, *task_args):
        results = []
        with torch.enable_grad():
            for t in range(task_params[0].shape[0]):
                params_t = [p[t] for p in task_params]
                if not create_graph or not all(
                    p.requires_grad for p in params_t
                ):
                    params_t = [
                        p.detach().requires_grad_(True) for p in params_t
                    ]
                loss = fn(params_t, shared, *[a[t] for a in task_args])
                grads = torch.autograd.grad(
                    loss, params_t, create_graph=create_graph, allow_unused=True
                )
                results.append((loss, _zeros_for_none(grads, params_t)))
        values, grads = _stack(results)
        return values, list(grads)

    return vectorized if vectorize else looped


def per_task_map(fn, vectorize=True):
    def vectorized(task_params, shared, *task_args):
        in_dims = (0, None) + (0,) * len(task_args)
        return torch.vmap(fn, in_dims=in_dims)(task_params, shared, *task_args)

    def looped(task_params, shared, *task_args):
        return _stack(
            [
                fn(
                    [p[t] for p in task_params],
                    shared,
                    *[a[t] for a in task_args],
                )
                for t in range(task_params[0].shape[0])
            ]
        )

    return vectorized if vectorize else looped


def _dot(tensors, vectors):
    return sum(torch.sum(t * v) for t, v in zip(tensors, vectors))


def per_task_hvp(fn, vectorize=True):
    """Hessian-vector products of each task's loss, as constants."""

    def vectorized(task_params, shared, vectors, *task_args):
        task_params = [p.detach() for p in task_params]
        vectors = [v.detach() for v in vectors]

        def task_hvp(params, shared, vectors, *args):
            def directional(p):
                return _dot(torch.func.grad(fn)(p, shared, *args), vectors)

            return torch.func.grad(directional)(params)

        in_dims = (0, None, 0) + (0,) * len(task_args)
        with torch.enable_grad():
            products = torch.vmap(task_hvp, in_dims=in_dims)(
                task_params, shared, vectors, *task_args
            )
        return [p.detach() for p in products]

    def looped(task_params, shared, vectors, *task_args):
        results = []
        with torch.enable_grad():
            for t in range(task_params[0].shape[0]):
                params_t = [
                    p[t].detach().requires_grad_(True) for p in task_params
                ]
                loss = fn(params_t, shared, *[a[t] for a in task_args])
                grads = torch.autograd.grad(
                    loss, params_t, create_graph=True, allow_unused=True
                )
                grads = _zeros_for_none(grads, params_t)
                directional = _dot(grads, [v[t].detach() for v in vectors])
                products = (
                    torch.autograd.grad(
                        directional, params_t, allow_unused=True
                    )
                    if directional.requires_grad
                    else [None] * len(params_t)
                )
                results.append(
                    [p.detach() for p in _zeros_for_none(products, params_t)]
                )
        return [torch.stack(list(p)) for p in zip(*results)]

    return vectorized if vectorize else looped


enable_grad = torch.enable_grad
no_grad = torch.no_grad
second_order_safe = contextlib.nullcontext


def with_static_task_axis(tensors, num_tasks):
    del num_tasks  # shapes are always concrete here
    return tensors


class MetaTrainer:
    """Runs the shared meta-step body eagerly; adaptation needs autograd."""

    def train_step(self, data):
        return self._meta_train_step(data)

    def test_step(self, data):
        with torch.enable_grad():
            return self._meta_test_step(data)

    def predict_step(self, data):
        with torch.enable_grad():
            return self._meta_predict_step(data)
