"""kerameta: gradient-based meta-learning for Keras 3 on JAX, TF and PyTorch."""

from kerameta import co_learners as co_learners
from kerameta import data as data
from kerameta import datasets as datasets
from kerameta import gradient_sharing as gradient_sharing
from kerameta import inner_optimizers as inner_optimizers
from kerameta import meta_gradients as meta_gradients
from kerameta import models as models
from kerameta import outer_rules as outer_rules
from kerameta import task_weightings as task_weightings
from kerameta.src.co_learners.co_learner import CoLearner as CoLearner
from kerameta.src.evaluation import MetaTestResult as MetaTestResult
from kerameta.src.evaluation import meta_test as meta_test
from kerameta.src.gradient_sharing.gradient_sharing import (
    GradientSharing as GradientSharing,
)
from kerameta.src.inner_optimizers.meta_sgd import MetaSGD as MetaSGD
from kerameta.src.models.maml import MAML as MAML
from kerameta.src.models.meta_model import MetaModel as MetaModel
from kerameta.src.models.reptile import Reptile as Reptile
from kerameta.src.task_weightings.gradient_agreement import (
    GradientAgreement as GradientAgreement,
)
from kerameta.src.task_weightings.task_weighting import (
    TaskWeighting as TaskWeighting,
)
from kerameta.src.version import __version__ as __version__
