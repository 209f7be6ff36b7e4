"""The Conv-4 profile's parsing and report (`benchmarks/profile_conv4.py`).

Cheap checks on synthetic profiler events: an HLO instruction's self time
excludes the instructions nested in it (a `while` around its body), kinds
group numbered instructions, and the report shows each framework's
largest kinds with their shares.
"""

import pathlib
import sys

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
