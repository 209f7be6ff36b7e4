"""Outer rules: how a batch's adaptation becomes the meta-update."""

from kerameta.src.outer_rules.outer_rule import OuterRule
from kerameta.src.outer_rules.reptile import ReptileRule
from kerameta.src.registry import Registry

ALL_OBJECTS = {cls.string_id: cls for cls in (OuterRule, ReptileRule)}

_REGISTRY = Registry(
    "outer_rule",
    OuterRule,
    ALL_OBJECTS,
    "kerameta.outer_rules.OuterRule",
    default=OuterRule,
)
get = _REGISTRY.get
serialize = _REGISTRY.serialize
deserialize = _REGISTRY.deserialize
