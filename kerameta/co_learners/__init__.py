"""Co-learners: outer-loop-only heads that augment the meta-gradient (CML)."""

from kerameta.src.co_learners import ALL_OBJECTS as ALL_OBJECTS
from kerameta.src.co_learners import deserialize as deserialize
from kerameta.src.co_learners import get as get
from kerameta.src.co_learners import serialize as serialize
from kerameta.src.co_learners.co_learner import CoLearner as CoLearner
