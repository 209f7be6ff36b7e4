"""Task weightings: how the tasks of a batch weigh in the outer loss."""

from kerameta.src.task_weightings import ALL_OBJECTS as ALL_OBJECTS
from kerameta.src.task_weightings import deserialize as deserialize
from kerameta.src.task_weightings import get as get
from kerameta.src.task_weightings import serialize as serialize
from kerameta.src.task_weightings.gradient_agreement import (
    GradientAgreement as GradientAgreement,
)
from kerameta.src.task_weightings.task_weighting import (
    TaskWeighting as TaskWeighting,
)
