"""kerameta: gradient-based meta-learning for Keras 3 on JAX, TF and PyTorch."""

from kerameta import data as data
from kerameta import datasets as datasets
from kerameta import meta_gradients as meta_gradients
from kerameta import models as models
from kerameta.src.evaluation import MetaTestResult as MetaTestResult
from kerameta.src.evaluation import meta_test as meta_test
from kerameta.src.models.maml import MAML as MAML
from kerameta.src.models.meta_model import MetaModel as MetaModel
from kerameta.src.version import __version__ as __version__
