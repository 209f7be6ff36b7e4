"""kerameta: gradient-based meta-learning for Keras 3 on JAX, TF and PyTorch."""

from kerameta import data as data
from kerameta import datasets as datasets
from kerameta import inner_optimizers as inner_optimizers
from kerameta import meta_gradients as meta_gradients
from kerameta import models as models
from kerameta.src.evaluation import MetaTestResult as MetaTestResult
from kerameta.src.evaluation import meta_test as meta_test
from kerameta.src.methods.co_learner import CoLearner as CoLearner
from kerameta.src.methods.gradient_sharing import (
    GradientSharing as GradientSharing,
)
from kerameta.src.methods.inner_optimizers import MetaSGD as MetaSGD
from kerameta.src.methods.task_weighting import (
    GradientAgreement as GradientAgreement,
)
from kerameta.src.methods.task_weighting import TaskWeighting as TaskWeighting
from kerameta.src.models.maml import MAML as MAML
from kerameta.src.models.meta_model import MetaModel as MetaModel
from kerameta.src.models.reptile import Reptile as Reptile
from kerameta.src.version import __version__ as __version__
