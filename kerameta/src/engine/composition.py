"""What composes with what: one table of refused combinations, one check.

Every switch of a meta-model composes with every other, except the rows
of `RULES`. The meta-model checks them in one place, `check`, at
construction (`stage="construction"`) and in `compile` (`stage="compile"`,
for rules that depend on `jit_compile`). The docs' table of refused
combinations (docs/methods/index.md) is `markdown_table()`, and a test
keeps the two equal.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setup:
    """The resolved components of a meta-model, as the rules see them."""

    meta_gradient: Any
    outer_rule: Any
    inner_optimizer: Any
    gradient_sharing: Any
    co_learner: Any
    adapted_mask: tuple[bool, ...]
    backend: str
    vectorize_tasks: bool
    jit_compile: Any = "auto"
    random_layers: bool = False


@dataclass(frozen=True)
class Rule:
    """One refused combination.

    Attributes:
        family: the family of the refusing component (`"meta_gradient"` or
            `"outer_rule"`).
        string_id: the refusing component's string id (its subclasses
            inherit the rule), or `"*"` for every component that needs
            second derivatives.
        conflict: what it cannot be combined with, for the docs table.
        applies: `applies(setup) -> bool`: whether `setup` has the conflict.
        reason: why, and what to use instead (a clause of the error);
            `{inner_optimizer}` stands for the inner optimizer's name.
        stage: `"construction"` or `"compile"`.
    """

    family: str
    string_id: str
    conflict: str
    applies: Callable[[Setup], bool]
    reason: str
    stage: str = "construction"


def _learns_inner_weights(setup: Setup) -> bool:
    return bool(setup.inner_optimizer.trainable_weights)


def _shares(setup: Setup) -> bool:
    return setup.gradient_sharing is not None


def _co_learns(setup: Setup) -> bool:
    return setup.co_learner is not None


def _meta_learns_nothing(setup: Setup) -> bool:
    proximal = getattr(setup.meta_gradient, "proximal", None)
    return proximal is None and all(setup.adapted_mask)


def _random_layers(setup: Setup) -> bool:
    return setup.random_layers


def _torch_compile(setup: Setup) -> bool:
    return setup.backend == "torch" and setup.jit_compile is True


def _torch_compile_of_task_loop(setup: Setup) -> bool:
    return _torch_compile(setup) and not setup.vectorize_tasks


_NOT_YET = 'is not supported with it yet: use "second_order" or "multi_step"'

RULES: tuple[Rule, ...] = (
    Rule(
        "meta_gradient",
        "implicit",
        "an inner optimizer with learned weights (Meta-SGD)",
        _learns_inner_weights,
        "its inner optimizer ({inner_optimizer}) has learned weights, "
        "which get no implicit "
        'meta-gradient: use inner_optimizer="sgd"',
    ),
    Rule(
        "meta_gradient",
        "implicit",
        "gradient sharing",
        _shares,
        f"gradient sharing {_NOT_YET}",
    ),
    Rule(
        "meta_gradient",
        "implicit",
        "a co-learner",
        _co_learns,
        f"the co-learner {_NOT_YET}",
    ),
    Rule(
        "meta_gradient",
        "implicit",
        "every weight adapted, without `proximal`",
        _meta_learns_nothing,
        "every trainable weight is adapted, so nothing would be "
        "meta-learned (the solution of the inner problem does not depend "
        "on where it starts): adapt only the head, with "
        "`adapted_layers=[...]` (ANIL), or give `Implicit(proximal=...)` "
        "for the proximal (iMAML) form",
    ),
    Rule(
        "meta_gradient",
        "implicit",
        "random layers (Dropout, GaussianNoise, ...)",
        _random_layers,
        "its meta-gradient assumes the inner loop converges to a minimum "
        "of one support loss, and random layers draw a new loss at every "
        "step: use `meta_gradient='checkpointed'` (exact, memory flat in "
        "the inner steps) or remove the random layers",
    ),
    Rule(
        "meta_gradient",
        "checkpointed",
        "gradient sharing",
        _shares,
        "gradient sharing mixes the tasks' inner gradients and records "
        "their batch means at every step, which the step-by-step "
        "recomputation of the backward pass cannot repeat: use "
        "`meta_gradient='second_order'` (exact) or "
        "`kerameta.meta_gradients.MultiStep` (less memory) with "
        "`gradient_sharing`, or drop `gradient_sharing`",
    ),
    Rule(
        "meta_gradient",
        "checkpointed",
        "`jit_compile=True` on PyTorch",
        _torch_compile,
        "it cannot run under `jit_compile=True` on PyTorch: torch.compile "
        "does not trace its hand-written backward pass. Use "
        "`jit_compile=False` (or 'auto', eager on PyTorch), or "
        "`meta_gradient='second_order'` with torch.compile",
        stage="compile",
    ),
    Rule(
        "meta_gradient",
        "*",
        "`jit_compile=True` on PyTorch with `vectorize_tasks=False`",
        _torch_compile_of_task_loop,
        "`jit_compile=True` (torch.compile) cannot differentiate twice "
        "through the per-task loop that this model uses "
        "(`vectorize_tasks=False`). Use `jit_compile=False`, a first-order "
        "meta-gradient, or a model that can be vectorized (channels_first "
        "convolutions)",
        stage="compile",
    ),
    Rule(
        "outer_rule",
        "reptile",
        "an inner optimizer with learned weights (Meta-SGD)",
        _learns_inner_weights,
        "no meta-gradient reaches the inner loop, so the learned weights of "
        "the inner optimizer (e.g. Meta-SGD's rates) would never train: use "
        "`inner_optimizer='sgd'` with Reptile, or `kerameta.MAML` with "
        "Meta-SGD",
    ),
)

_SUBJECTS = {
    "meta_gradient": "The {} meta-gradient",
    "outer_rule": "The {} outer rule",
}


def _refuses(rule: Rule, setup: Setup) -> bool:
    component = getattr(setup, rule.family)
    if rule.string_id == "*":
        return bool(getattr(component, "second_derivatives", False))
    return getattr(component, "string_id", None) == rule.string_id


def check(setup: Setup, stage: str = "construction") -> None:
    """Raises a `ValueError` naming every refused combination in `setup`.

    Args:
        setup: the resolved components.
        stage: `"construction"` or `"compile"`: which rules to check.
    """
    reasons: dict[str, list[str]] = {}
    for rule in RULES:
        if rule.stage != stage or not _refuses(rule, setup):
            continue
        if rule.applies(setup):
            component = getattr(setup, rule.family)
            name = getattr(component, "string_id", type(component).__name__)
            subject = _SUBJECTS[rule.family].format(name.replace("_", "-"))
            reason = rule.reason.format(
                inner_optimizer=repr(setup.inner_optimizer.name)
            )
            reasons.setdefault(subject, []).append(reason)
    if reasons:
        raise ValueError(
            " ".join(
                f"{subject} cannot be used here: {'; '.join(clauses)}."
                for subject, clauses in reasons.items()
            )
        )


def markdown_table() -> str:
    """The refused combinations as the Markdown table of the docs."""
    lines = [
        "| component | cannot be combined with | checked at |",
        "|---|---|---|",
    ]
    for rule in RULES:
        string_id = (
            "any second-order estimator"
            if rule.string_id == "*"
            else f'`{rule.family}="{rule.string_id}"`'
        )
        stage = "`compile`" if rule.stage == "compile" else "construction"
        lines.append(f"| {string_id} | {rule.conflict} | {stage} |")
    return "\n".join(lines)
