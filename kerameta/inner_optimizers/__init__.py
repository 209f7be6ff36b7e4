"""Inner optimizers: how each task's fast weights take an inner step."""

from kerameta.src.methods.inner_optimizers import SGD as SGD
from kerameta.src.methods.inner_optimizers import (
    InnerOptimizer as InnerOptimizer,
)
from kerameta.src.methods.inner_optimizers import MetaSGD as MetaSGD
from kerameta.src.methods.inner_optimizers import get as get
