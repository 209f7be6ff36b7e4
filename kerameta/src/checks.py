"""Argument checks shared across kerameta (Keras-style messages)."""

import math
import numbers
import os
from typing import Any


def check_positive_int(name: str, value: Any, allow_zero: bool = False) -> int:
    """Returns `value` as an int if it is a positive (or zero) integer."""
    low = 0 if allow_zero else 1
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < low
    ):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(
            f"`{name}` must be a {kind} integer. Received: {name}={value!r}"
        )
    return int(value)


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    include_high: bool = True,
) -> float:
    """Returns `value` as a float, or raises a Keras-style `ValueError`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or (low is not None and value < low)
        or (
            high is not None
            and (value > high or (value == high and not include_high))
        )
    ):
        bounds = []
        if low is not None:
            bounds.append(f">= {low}")
        if high is not None:
            bounds.append(f"{'<=' if include_high else '<'} {high}")
        expected = "a finite number" + (
            f" {' and '.join(bounds)}" if bounds else ""
        )
        raise ValueError(
            f"`{name}` must be {expected}. Received: {name}={value!r}"
        )
    return float(value)


def check_positive_number(name: str, value: Any) -> float:
    """Returns `value` as a float if it is a finite number `> 0`."""
    value = check_number(name, value, low=0.0)
    if value == 0:
        raise ValueError(
            f"`{name}` must be a finite number > 0. Received: {name}={value!r}"
        )
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Returns `value` if it is one of `choices`, or raises."""
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {list(choices)}. Received: "
            f"{name}={value!r}"
        )
    return value


def environment_switch(name: str, on: str, off: str) -> bool:
    """Reads the on/off environment variable `name` (default on).

    `on` and `off` say what `'1'` and `'0'` do, for the error message.
    """
    value = os.environ.get(name, "1").strip().lower()
    if value not in ("0", "1", "false", "true"):
        raise ValueError(
            f"The environment variable {name} must be '1' ({on}, the "
            f"default) or '0' ({off}). Received: {name}={os.environ[name]!r}"
        )
    return value in ("1", "true")
