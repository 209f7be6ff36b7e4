"""`benchmarks/report.py` tables and the Omniglot benchmark's decay.

Cheap checks on any backend: TensorFlow's `jit_compile=True` records on a
CPU get their own *XLA* row (and stay out of the compile-time table,
which shows the defaults), PyTorch's a *torch.compile* row, the Omniglot
table says when a run decayed its meta learning rate and lists the rate
of each validation point, and the decay follows its half cosine over
whichever of the time budget or the iterations runs out first. TensorFlow's
oneDNN records get a *oneDNN* row; a record that asked for what `"auto"`
ran shares the default's row; each missed target is listed under its
table with its reason, and every miss in the recorded results has one.
"""

import math
import pathlib
import sys
import types

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import omniglot_maml  # noqa: E402
import report  # noqa: E402


def _speed_record(framework, median, **extra):
    record = {
        "run": "r",
        "date": "2026-12-07T07:00:00+00:00",
        "problem": "sinusoid",
        "tasks": 25,
        "inner_steps": 5,
        "meta_gradient": "second_order",
        "device": "cpu",
        "cpu": "AMD EPYC",
        "cores": 2,
        "python": "3.11.7",
        "versions": {"keras": "3.15.1"},
        "framework": framework,
        "backend": "tensorflow" if framework == "kerameta" else "torch",
        "median_ms": median,
        "p10_ms": median,
        "p90_ms": median,
        "first_step_s": 5.0,
        "peak_rss_mb": 600.0,
        "inner_loop": "unrolled",  # TensorFlow's default
    }
    return {**record, **extra}


def _rendered(default_ms, compiled_ms, **extra):
    """The report of a default and a `jit_compile=True` kerameta record
    and the PyTorch loop's (160 ms), all from one run."""
    return report.render(
        [
            _speed_record("kerameta", default_ms, jit_compile=False, **extra),
            _speed_record(
                "kerameta",
                compiled_ms,
                jit_compile=True,
                first_step_s=9.0,
                **extra,
            ),
            _speed_record("torch-loop", 160.0),
        ]
    )


def test_tensorflow_xla_records_get_their_own_row():
    text = _rendered(16.0, 8.0)
    assert "| tensorflow | default | 16.0 |" in text
    assert "| tensorflow | XLA | 8.0 |" in text
    assert "20.0× | ≥ 15×: met" in text
    assert "10.0× | ≥ 15×: MISSED" in text
    compile_table = text.split("## Compile time against inner steps")[1]
    compile_table = compile_table.split("\n## ")[0]
    assert "| tensorflow | unrolled | 5 | 5.0 | 16.0 |" in compile_table
    assert "9.0" not in compile_table


def test_torch_compile_records_get_their_own_row():
    text = _rendered(24.0, 8.0, backend="torch", threads=1)
    assert "| torch | 1 thread | 24.0 |" in text
    assert "| torch | torch.compile, 1 thread | 8.0 |" in text
    assert "20.0× | ≥ 8×: met" in text
    assert "6.7× | ≥ 8×: MISSED" in text


def test_tensorflow_onednn_records_get_their_own_row():
    text = report.render(
        [
            _speed_record("kerameta", 16.0, onednn=False),
            _speed_record("kerameta", 10.0, onednn=True, run="o"),
            _speed_record("torch-loop", 160.0, run="o"),
        ]
    )
    assert "| tensorflow | default | 16.0 |" in text
    assert "| tensorflow | oneDNN | 10.0 |" in text
    compile_table = text.split("## Compile time against inner steps")[1]
    assert "10.0" not in compile_table.split("\n## ")[0]


def test_an_option_that_ran_as_the_default_shares_its_row():
    # `accumulate_tasks=True` where "auto" accumulates: one row, the later
    # record's; "together" is another setting.
    ran = {"tasks": "accumulated", "inner_loop": "unrolled"}
    text = report.render(
        [
            _speed_record("kerameta", 18.0, accumulate_tasks=True, **ran),
            _speed_record("kerameta", 16.0, accumulate_tasks="auto", **ran),
            _speed_record(
                "kerameta", 20.0, accumulate_tasks=False, tasks="together"
            ),
        ]
    )
    assert "| tensorflow | default | 16.0 |" in text
    assert "18.0" not in text
    assert "| tensorflow | tasks together | 20.0 |" in text


def test_each_miss_is_listed_under_its_table_with_its_reason(monkeypatch):
    key = ("sinusoid", 5, "tensorflow", "speed")
    monkeypatch.setitem(report.MISS_REASONS, key, "a measured reason.")
    text = _rendered(16.0, 8.0)  # default missed, XLA met
    table = text.split("## Compile time")[0]
    assert "Why the misses:\n\n- *tensorflow, speed*: a measured reason." in (
        table
    )
    monkeypatch.delitem(report.MISS_REASONS, key)
    assert "- *tensorflow, speed*: no reason recorded yet." in (
        _rendered(16.0, 8.0)
    )
    assert "Why the misses" not in _rendered(8.0, 8.0)  # both met


def test_every_miss_in_the_recorded_results_has_a_reason():
    records = report.load(BENCHMARKS / "results.jsonl")
    assert "no reason recorded yet" not in report.render(records)


def _omniglot_record(decay, curve):
    return {
        "backend": "jax",
        "device": "cpu",
        "date": "2026-12-07T06:04:00+00:00",
        "machine": {"cpu": "AMD EPYC", "cores": 2},
        "settings": {
            "method": "maml",
            "tasks_per_batch": 16,
            "inner_learning_rate": 0.4,
            "meta_learning_rate": 0.003,
            "meta_learning_rate_decay": decay,
            "evaluation_inner_steps": 3,
            "test_inner_steps": 10,
            "time_budget_minutes": 50.0,
        },
        "iterations": curve[-1]["iterations"],
        "train_seconds": 3000.0,
        "median_step_seconds": 0.36,
        "test_accuracy": 0.9592,
        "test_confidence_interval": 0.0035,
        "sampler_episodes_per_second": 17901.0,
        "sampler_speedup_over_step": 399.0,
        "curve": curve,
    }


def test_omniglot_table_shows_the_decay_and_the_rates():
    point = {"iterations": 250, "seconds": 99.7, "val_accuracy": 0.7259}
    constant = _omniglot_record(None, [point])
    decayed = _omniglot_record(
        "cosine to 0.1x over the run", [{**point, "learning_rate": 0.003}]
    )
    text = report.render_omniglot([constant, decayed])
    assert "| 0.003 | 10 | 250 |" in text  # the constant rate
    assert "| 0.003, cosine | 10 | 250 |" in text
    assert "95.92% ± 0.35% | ≥ 95%: met" in text
    assert "| 250 | 1.7 | 72.59% |\n" in text  # no rate recorded
    assert "| 250 | 1.7 | 72.59% | 0.003 |" in text


class _Optimizer:
    learning_rate = 0.003


@pytest.mark.parametrize(
    "epoch,elapsed,expected",
    [
        (0, 0.0, 1.0),  # the initial rate
        (2, 0.0, 0.55),  # half the iterations: halfway down the cosine
        (1, 50.0, 0.55),  # half the time budget, fewer iterations
        (4, 0.0, 0.1),  # the iterations are done: the floor
        (1, 500.0, 0.1),  # past the budget: the floor, no further
    ],
)
def test_cosine_decay_follows_time_or_iterations(
    monkeypatch, epoch, elapsed, expected
):
    decay = omniglot_maml.CosineDecayOverBudget(
        iterations=400, iterations_per_epoch=100, budget_seconds=100.0
    )
    decay.set_model(types.SimpleNamespace(optimizer=_Optimizer()))
    clock = iter([1000.0, 1000.0 + elapsed])
    monkeypatch.setattr(omniglot_maml.time, "perf_counter", lambda: next(clock))
    decay.on_train_begin()
    decay.on_epoch_begin(epoch)
    rate = decay.model.optimizer.learning_rate
    assert math.isclose(rate, 0.003 * expected, rel_tol=1e-9)
