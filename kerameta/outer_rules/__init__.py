"""Outer rules: how a batch's adaptation becomes the meta-update."""

from kerameta.src.outer_rules import ALL_OBJECTS as ALL_OBJECTS
from kerameta.src.outer_rules import deserialize as deserialize
from kerameta.src.outer_rules import get as get
from kerameta.src.outer_rules import serialize as serialize
from kerameta.src.outer_rules.outer_rule import OuterRule as OuterRule
from kerameta.src.outer_rules.reptile import ReptileRule as ReptileRule
