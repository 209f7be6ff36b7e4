"""The checkpointed meta-gradient's schedule and arguments (pure Python).

`checkpoint_schedule(inner_steps, checkpoints)` says which inner steps'
fast weights the forward pass stores and, in order, which the backward pass
recomputes (`advance`) and differentiates (`reverse`). Replaying it on
integers checks that it is a valid adjoint sweep within its memory bound;
the known counts pin it. Exactness against second order, per backend, is in
`checkpointed_test.py`.
"""

import pytest

import kerameta
from kerameta.meta_gradients import Checkpointed
from kerameta.src.meta_gradients.checkpointed import DEFAULT_CHECKPOINTS
from kerameta.src.meta_gradients.checkpointed import checkpoint_schedule


def _replay(inner_steps, checkpoints):
    """Runs the schedule on step indices; returns the most copies held."""
    schedule = checkpoint_schedule(inner_steps, checkpoints)
    stored = list(schedule.stored)
    assert stored[0] == 0 and stored == sorted(set(stored))
    assert all(0 <= s < inner_steps for s in stored)
    bound = inner_steps if checkpoints is None else checkpoints
    assert len(stored) <= bound
    # `held[k]` stands for the fast weights before step `k`.
    held, reversed_steps, most, recomputed = set(stored), [], 0, 0
    for action in schedule.actions:
        if action[0] == "advance":
            _, start, stop = action
            assert start in held and start < stop, action
            assert stop not in held, action
            # Nothing after `stop` may still wait to be reversed.
            assert not reversed_steps or stop < reversed_steps[-1], action
            held.add(stop)
            recomputed += stop - start
        else:
            _, step = action
            assert step in held, action
            most = max(most, len(held))
            held.discard(step)
            reversed_steps.append(step)
        # At most `checkpoints` stored copies plus the one differentiated.
        assert len(held) <= bound + 1, (action, held)
    assert reversed_steps == list(reversed(range(inner_steps)))
    assert not held  # every copy is released
    assert recomputed == schedule.recomputed_steps
    return schedule, most


@pytest.mark.parametrize("inner_steps", [1, 2, 3, 5, 7, 12, 20])
def test_every_schedule_is_a_valid_reverse_sweep(inner_steps):
    for checkpoints in [None, *range(1, inner_steps + 2)]:
        schedule, _ = _replay(inner_steps, checkpoints)
        # Each step not stored is recomputed at least once.
        assert schedule.recomputed_steps >= inner_steps - len(schedule.stored)


def test_known_schedules():
    # Enough copies, or `None`: the weights before every step, no
    # recomputation (the behaviour before `checkpoints` existed).
    for checkpoints in (None, 5, 9):
        schedule = checkpoint_schedule(5, checkpoints)
        assert schedule.stored == (0, 1, 2, 3, 4)
        assert schedule.actions == tuple(
            ("reverse", s) for s in (4, 3, 2, 1, 0)
        )
    # One copy: every step recomputed from the initial weights.
    assert checkpoint_schedule(20, 1).stored == (0,)
    assert checkpoint_schedule(20, 1).recomputed_steps == 20 * 19 // 2
    # Five steps, two copies: the later part first, not divisible evenly.
    assert checkpoint_schedule(5, 2) == (
        (0, 3),
        (
            ("advance", 3, 4),
            ("reverse", 4),
            ("reverse", 3),
            ("advance", 0, 1),
            ("advance", 1, 2),
            ("reverse", 2),
            ("reverse", 1),
            ("reverse", 0),
        ),
    )
    # The default at 20 steps (the benchmark's point).
    schedule = checkpoint_schedule(20, DEFAULT_CHECKPOINTS)
    assert schedule.stored == (0, 5, 11, 17)
    assert schedule.recomputed_steps == 22


def test_more_copies_never_recompute_more():
    for inner_steps in (6, 20, 50):
        counts = [
            checkpoint_schedule(inner_steps, c).recomputed_steps
            for c in sorted({*range(1, 9), inner_steps - 1, inner_steps})
        ]
        assert counts == sorted(counts, reverse=True)
        assert counts[-1] == 0
    # Binomial, not uniform: 4 copies over 20 steps recompute 22 steps, a
    # stride of 5 (4 stored, 4 recomputed per segment) 16 but holds 8.
    assert [checkpoint_schedule(20, c).recomputed_steps for c in (2, 3)] == [
        50,
        29,
    ]


@pytest.mark.parametrize("checkpoints", [0, -1, 2.5, True, "4"])
def test_invalid_checkpoints_are_refused(checkpoints):
    with pytest.raises(
        ValueError,
        match=r"`checkpoints` is the number of copies .* positive integer, "
        r"or `None`.*Received: checkpoints=",
    ):
        Checkpointed(checkpoints=checkpoints)


@pytest.mark.parametrize("checkpoints", [None, 1, 7])
def test_config_round_trip(checkpoints):
    estimator = Checkpointed(checkpoints=checkpoints)
    assert estimator.get_config() == {"checkpoints": checkpoints}
    assert repr(estimator) == f"Checkpointed(checkpoints={checkpoints})"
    restored = kerameta.meta_gradients.deserialize(
        kerameta.meta_gradients.serialize(estimator)
    )
    assert type(restored) is Checkpointed
    assert restored.checkpoints == checkpoints


def test_configs_saved_without_checkpoints_load_with_the_default():
    # `.keras` files written before the argument existed.
    restored = Checkpointed.from_config({})
    assert restored.checkpoints == DEFAULT_CHECKPOINTS
    assert Checkpointed().checkpoints == DEFAULT_CHECKPOINTS
