"""Co-learners: outer-loop-only heads that augment the meta-gradient."""

from kerameta.src.co_learners.co_learner import CoLearner
from kerameta.src.registry import Registry

# `CoLearner` needs a head and a feature layer: it has no string id that
# `get` could build, only instances and configs.
ALL_OBJECTS = {}

_REGISTRY = Registry("co_learner", CoLearner, ALL_OBJECTS, "kerameta.CoLearner")
get = _REGISTRY.get
serialize = _REGISTRY.serialize
deserialize = _REGISTRY.deserialize
