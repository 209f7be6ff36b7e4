"""The per-task Python loop of the TensorFlow and PyTorch seams.

Framework-free: each backend passes `num_tasks(params, args)`,
`unstack(tensor, num_tasks)` and `stack(list)`. Task arguments may be
structures of tensors (a model with several inputs).
"""

import keras


def stack_tasks(per_task, stack):
    """Stacks a list of like structures (lists, tuples, dicts of tensors)."""
    first = per_task[0]
    if isinstance(first, dict):
        return {k: stack_tasks([s[k] for s in per_task], stack) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(
            stack_tasks(list(items), stack) for items in zip(*per_task)
        )
    return stack(per_task)


def looped(rule, num_tasks, unstack, stack):
    """Maps `rule(params_t, shared, *args_t)` over the tasks, restacked."""

    def wrapped(task_params, shared, *task_args):
        flat = keras.tree.flatten(list(task_args))
        count = num_tasks(task_params, flat)
        params = [unstack(p, count) for p in task_params]
        args = [unstack(a, count) for a in flat]
        results = []
        for t in range(count):
            task = keras.tree.pack_sequence_as(
                list(task_args), [a[t] for a in args]
            )
            results.append(rule([p[t] for p in params], shared, *task))
        return stack_tasks(results, stack)

    return wrapped


def accumulated(fn, value_and_grad, stack):
    """Sums `value_and_grad(fn)` over the tasks, one task at a time.

    `fn(params, task, *args)` is one task's `(value, aux)`, `task` its
    index (an `int`) and `args` its slices of the task arguments. Returns
    `((sum of values, aux stacked), sum of gradients)`; each task's graph
    is freed before the next runs (eagerly).
    """

    def wrapped(params, *task_args):
        count = task_args[0].shape[0]
        value, grads, auxes = None, None, []
        for t in range(count):
            (task_value, aux), task_grads = value_and_grad(fn, has_aux=True)(
                params, t, *[a[t] for a in task_args]
            )
            auxes.append(aux)
            if value is None:
                value, grads = task_value, list(task_grads)
            else:
                value = value + task_value
                grads = [g + h for g, h in zip(grads, task_grads)]
        return (value, stack_tasks(auxes, stack)), grads

    return wrapped


def mapped(fn, stack):
    """Stacks `fn(task, *args)` over the tasks, one task at a time.

    `task` is the task's index (an `int`) and `args` its slices of the task
    arguments; the outputs may be structures of tensors.
    """

    def wrapped(*task_args):
        count = task_args[0].shape[0]
        return stack_tasks(
            [fn(t, *[a[t] for a in task_args]) for t in range(count)], stack
        )

    return wrapped
