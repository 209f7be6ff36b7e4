"""Meta-gradient estimators: how the outer gradient sees the inner loop."""

from kerameta.src.meta_gradients import ALL_OBJECTS as ALL_OBJECTS
from kerameta.src.meta_gradients import deserialize as deserialize
from kerameta.src.meta_gradients import get as get
from kerameta.src.meta_gradients import serialize as serialize
from kerameta.src.meta_gradients.checkpointed import (
    Checkpointed as Checkpointed,
)
from kerameta.src.meta_gradients.first_order import FirstOrder as FirstOrder
from kerameta.src.meta_gradients.implicit import Implicit as Implicit
from kerameta.src.meta_gradients.meta_gradient import InnerLoop as InnerLoop
from kerameta.src.meta_gradients.meta_gradient import (
    MetaGradient as MetaGradient,
)
from kerameta.src.meta_gradients.multi_step import MultiStep as MultiStep
from kerameta.src.meta_gradients.second_order import SecondOrder as SecondOrder
