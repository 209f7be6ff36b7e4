"""Task weightings: how the tasks of a batch weigh in the outer loss."""

from kerameta.src.registry import Registry
from kerameta.src.task_weightings.gradient_agreement import GradientAgreement
from kerameta.src.task_weightings.task_weighting import TaskWeighting

ALL_OBJECTS = {cls.string_id: cls for cls in (TaskWeighting, GradientAgreement)}

_REGISTRY = Registry(
    "task_weighting",
    TaskWeighting,
    ALL_OBJECTS,
    "kerameta.TaskWeighting",
    default=TaskWeighting,
)
get = _REGISTRY.get
serialize = _REGISTRY.serialize
deserialize = _REGISTRY.deserialize
