"""The Conv-4 profile's parsing and report (`benchmarks/profile_conv4.py`).

Cheap checks on synthetic profiler events: an HLO instruction's self time
excludes the instructions nested in it (a `while` around its body),
TensorFlow's ops are summed by type without the executor's bookkeeping, kinds
group numbered instructions, and the report shows each framework's
largest kinds with their shares.
"""

import pathlib
import sys
import types

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import profile_conv4  # noqa: E402


def _event(name, ts, dur, tid=1, hlo=True):
    args = {"hlo_op": name} if hlo else {}
    return {"ph": "X", "name": name, "ts": ts, "dur": dur, "pid": 1,
            "tid": tid, "args": args}  # fmt: skip


def test_self_time_excludes_nested_instructions():
    events = [
        _event("while.3", 0, 100),  # a loop whose body runs two ops
        _event("convolution.12", 10, 40),
        _event("fusion.2", 60, 30),
        _event("convolution.7", 200, 50, tid=2),  # another thread
        _event("PjitFunction", 0, 500, hlo=False),  # not an instruction
        {"ph": "i", "name": "marker", "ts": 5},
    ]
    seconds = profile_conv4.hlo_self_seconds(events, steps=2)
    assert seconds == pytest.approx(
        {"while": 15e-6, "convolution": 45e-6, "fusion": 15e-6}
    )


def _xplane(lines, plane="/host:CPU"):
    """A stand-in for TensorFlow's `XSpace`: `lines` of `(name, start ps,
    duration ps)` events."""
    names = sorted({name for line in lines for name, _, _ in line})
    ids = {name: i for i, name in enumerate(names)}
    return types.SimpleNamespace(
        planes=[
            types.SimpleNamespace(
                name=plane,
                event_metadata={
                    i: types.SimpleNamespace(name=n) for n, i in ids.items()
                },
                lines=[
                    types.SimpleNamespace(
                        events=[
                            types.SimpleNamespace(
                                metadata_id=ids[name],
                                offset_ps=start,
                                duration_ps=duration,
                            )
                            for name, start, duration in line
                        ]
                    )
                    for line in lines
                ],
            )
        ]
    )


def test_tensorflow_ops_are_summed_by_type_without_bookkeeping():
    ms = 10**9  # picoseconds
    space = _xplane(
        [
            [
                ("ExecutorState::Process", 0, 100 * ms),  # bookkeeping
                ("while/body:While", 0, 60 * ms),  # a loop around two ops
                ("conv/Conv2D:Conv2D", 10 * ms, 20 * ms),
                ("grad/Mul:Mul", 30 * ms, 10 * ms),
                ("ParallelFor", 12 * ms, 5 * ms),  # work handed to threads
            ],
            [("conv_1/Conv2D:Conv2D", 0, 40 * ms)],  # another thread
        ]
    )
    seconds = profile_conv4.tf_op_self_seconds(space, steps=2)
    assert seconds == pytest.approx(
        {"While": 0.015, "Conv2D": 0.03, "Mul": 0.005}
    )
    device = _xplane([[("conv/Conv2D:Conv2D", 0, ms)]], plane="/device:GPU:0")
    assert profile_conv4.tf_op_self_seconds(device, steps=1) == {}


@pytest.mark.parametrize(
    "name, kind",
    [
        ("convolution.12", "convolution"),
        ("transpose_copy_fusion.2", "transpose_copy_fusion"),
        ("conv_general_dilated.0", "conv_general_dilated"),
        ("copy", "copy"),
    ],
)
def test_kinds_group_numbered_instructions(name, kind):
    assert profile_conv4._kind(name) == kind


def test_report_lists_the_largest_kinds_with_shares():
    facts = {"cpu": "test CPU", "cores": 2, "date": "2026-12-06T00:00:00",
             "versions": {"keras": "3.15.0"}}  # fmt: skip
    kinds = {f"op{i}": float(i) for i in range(1, 11)}
    records = [
        {"framework": "torch-loop", "wall_s": 3.0, "kinds_s": kinds, **facts}
    ]
    text = profile_conv4.report(records)
    assert "## per-task PyTorch loop: wall 3.00 s, profiled 55.00 s" in text
    assert "| `op10` | 10.000 | 18% |" in text
    assert "| `op2` |" not in text  # past the top 8: in "the rest"
    assert "| the rest | 3.000 | 5% |" in text
