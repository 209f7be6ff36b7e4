"""Task datasets: batches of episodes for `fit`, `evaluate` and `predict`."""

from kerameta.src.data.episode_dataset import EpisodeDataset as EpisodeDataset
from kerameta.src.data.sinusoid import SinusoidTasks as SinusoidTasks
