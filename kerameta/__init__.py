"""kerameta: gradient-based meta-learning for Keras 3 on JAX, TF and PyTorch."""

from kerameta import data as data
from kerameta import meta_gradients as meta_gradients
from kerameta.src.models.maml import MAML as MAML
from kerameta.src.models.meta_model import MetaModel as MetaModel
from kerameta.src.version import __version__ as __version__
