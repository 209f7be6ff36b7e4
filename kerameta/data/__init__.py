"""Task datasets: batches of episodes for `fit`, `evaluate` and `predict`."""

from kerameta.src.data.episode_dataset import EpisodeDataset as EpisodeDataset
from kerameta.src.data.few_shot import FewShotTasks as FewShotTasks
from kerameta.src.data.few_shot import split_classes as split_classes
from kerameta.src.data.shard import shard_tasks as shard_tasks
from kerameta.src.data.sinusoid import SinusoidTasks as SinusoidTasks
