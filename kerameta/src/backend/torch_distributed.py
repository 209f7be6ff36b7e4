"""PyTorch data parallelism: one process per device, started by `torchrun`.

On when `torch.distributed` has an initialized process group of more than
one process (the script calls `torch.distributed.init_process_group()`).
Each process then meta-trains on its shard of every task batch, and:

- `all_replicas_sum` sums batch-wide statistics over the processes, and is
  differentiable (its backward sums the cotangents, also under
  `create_graph=True`): the engine's batch means and task weights are
  those of the whole batch;
- `value_and_grad` (torch.py) returns the processes' sums of the objective
  and of its gradient: each process's objective is its share, so the sum
  is the whole batch's, and every process applies the same update (Keras's
  torch optimizers do not sum over processes, as TensorFlow's do);
- `MetaTrainer` copies process 0's weights to the others before the first
  step, and reads the metrics from the processes' summed states (as
  TensorFlow does), so every process logs the whole batch's loss and
  metrics and callbacks decide alike.
"""

import keras
import torch
from torch import distributed as dist

from kerameta.src.backend import SingleDeviceTrainer


def replica_count() -> int:
    """The processes of the default group; 1 without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def replica_index() -> int:
    """This process's rank; 0 without a process group."""
    return dist.get_rank() if replica_count() > 1 else 0


class _AllReplicasSum(torch.autograd.Function):
    """A sum over processes whose backward is the same sum, of cotangents."""

    @staticmethod
    def forward(tensor):
        summed = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(summed)
        return summed

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, cotangent):
        # Through `apply`, so a `create_graph=True` backward records it.
        return _AllReplicasSum.apply(cotangent)


def all_replicas_sum(x):
    if replica_count() == 1:
        return x
    return _AllReplicasSum.apply(torch.as_tensor(x))


def summed_over_replicas(tensors: list) -> list:
    """The processes' sums of `tensors` (no gradient), one call per dtype."""
    tensors = [torch.as_tensor(t).detach() for t in tensors]
    if replica_count() == 1:
        return tensors
    summed = list(tensors)
    for dtype in {t.dtype for t in tensors}:
        positions = [i for i, t in enumerate(tensors) if t.dtype == dtype]
        flat = torch.cat([tensors[i].reshape(-1) for i in positions])
        dist.all_reduce(flat)
        for i, part in zip(
            positions,
            torch.split(flat, [tensors[i].numel() for i in positions]),
        ):
            summed[i] = part.view_as(tensors[i])
    return summed


class MetaTrainer(SingleDeviceTrainer):
    """The single-device trainer, with the processes kept in step.

    Under `jit_compile=True` the train step runs eagerly and the engine
    compiles its parts (`compiled` in torch.py): Keras compiles the whole
    step, where torch.compile stops at the outer `torch.autograd.grad` and
    retraces every enclosing frame (a 5-step sinusoid step: 128 s, against
    19 s). Test and predict steps take no outer gradient: Keras's, whole.
    """

    def make_train_function(self, force=False):
        compile_parts, self.jit_compile = self.jit_compile, False
        try:
            return super().make_train_function(force)
        finally:
            self.jit_compile = compile_parts

    def _synchronize_replicas(self):
        if replica_count() == 1 or self.__dict__.get("_replicas_synchronized"):
            return
        variables = [*self.trainable_variables, *self.non_trainable_variables]
        if self.optimizer is not None and self.optimizer.built:
            variables += list(self.optimizer.variables)
        with torch.no_grad():
            for variable in variables:
                value = variable.value.detach().clone().contiguous()
                dist.broadcast(value, src=0)
                variable.assign(value)
        self.__dict__["_replicas_synchronized"] = True

    def train_step(self, data):
        self._synchronize_replicas()
        return super().train_step(data)

    def test_step(self, data):
        self._synchronize_replicas()
        return super().test_step(data)

    def predict_step(self, data):
        self._synchronize_replicas()
        return super().predict_step(data)

    def get_metrics_result(self):
        # As TensorFlow's metrics (on-read variables, aggregated by sum):
        # the results of the processes' summed states, so every process
        # logs the whole batch's metrics.
        variables = [
            v
            for v in self.metrics_variables
            if v.aggregation in ("sum", "mean")
        ]
        if replica_count() == 1 or not variables:
            return super().get_metrics_result()
        local = [v.value.detach().clone() for v in variables]
        try:
            for v, total in zip(variables, summed_over_replicas(local)):
                mean = v.aggregation == "mean"
                v.assign(total / replica_count() if mean else total)
            return keras.tree.map_structure(
                lambda x: x.clone() if torch.is_tensor(x) else x,
                super().get_metrics_result(),
            )
        finally:
            for v, value in zip(variables, local):
                v.assign(value)
