"""Inner optimizers: how each task's fast weights take an inner step."""

from kerameta.src.inner_optimizers import ALL_OBJECTS as ALL_OBJECTS
from kerameta.src.inner_optimizers import deserialize as deserialize
from kerameta.src.inner_optimizers import get as get
from kerameta.src.inner_optimizers import serialize as serialize
from kerameta.src.inner_optimizers.inner_optimizer import (
    InnerOptimizer as InnerOptimizer,
)
from kerameta.src.inner_optimizers.meta_sgd import MetaSGD as MetaSGD
from kerameta.src.inner_optimizers.sgd import SGD as SGD
