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
  step, and gathers the tasks' losses and predictions before the metrics
  see them, so every process logs the whole batch's loss and metrics and
  callbacks decide alike.
"""

import dataclasses

import keras
import torch
from torch import distributed as dist

from kerameta.src.backend import MetaTrainer as _SingleDeviceTrainer


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


def _gathered(tensor):
    """The processes' `tensor`s, concatenated along the task axis."""
    tensor = torch.as_tensor(tensor).detach().contiguous()
    parts = [torch.empty_like(tensor) for _ in range(replica_count())]
    dist.all_gather(parts, tensor)
    return torch.cat(parts)


class MetaTrainer(_SingleDeviceTrainer):
    """The single-device trainer, with the processes kept in step."""

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

    def _update_metrics(self, aux, episode, applied=None):
        if replica_count() == 1:
            return super()._update_metrics(aux, episode, applied)
        # Every process updates its metrics with the whole batch, so their
        # states (and the logs callbacks read) are equal. The metrics read
        # `query_y` and the predictions; `query_x` stays local.
        aux = dict(aux)
        for key in ("task_losses", "co_losses", "y_pred", "task_weights"):
            if aux.get(key) is not None:
                aux[key] = keras.tree.map_structure(_gathered, aux[key])
        logs = aux.get("estimator_logs") or {}
        if logs:
            means = summed_over_replicas(list(logs.values()))
            aux["estimator_logs"] = {
                name: value / replica_count()
                for name, value in zip(logs, means)
            }
        episode = dataclasses.replace(
            episode,
            query_y=keras.tree.map_structure(_gathered, episode.query_y),
        )
        return super()._update_metrics(aux, episode, applied)
