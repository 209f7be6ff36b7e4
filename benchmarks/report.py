"""Turns the benchmark JSONL files into `benchmarks/RESULTS.md`.

For every problem and inner-step count, the latest result of each framework
(the three kerameta backends and the PyTorch task-loop baseline) goes into
one Markdown table, with the speed-up over the baseline timed in the same
run of `meta_iteration.py` and the issue's target. The Omniglot runs of
`omniglot_maml.py` (`benchmarks/omniglot_results.jsonl`) get a table of
their own: test accuracy, budget, wall time and the validation curve.
Usage:

```bash
python benchmarks/report.py [--input benchmarks/results.jsonl]
                            [--omniglot benchmarks/omniglot_results.jsonl]
                            [--output benchmarks/RESULTS.md]
```
"""

from __future__ import annotations

import argparse
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent

# Minimum speed-ups over the PyTorch task loop that issue #2 asks for on a
# 2-core CPU, by (problem, inner steps, backend).
TARGETS = {
    ("sinusoid", 5, "jax"): 50.0,
    ("sinusoid", 5, "torch"): 5.0,
    ("sinusoid", 5, "tensorflow"): 10.0,
    ("conv4", 1, "jax"): 5.0,
}
TITLES = {
    "sinusoid": "Sinusoid MLP (1-40-40-1), 25 tasks, 10 support + 10 query",
    "conv4": (
        "Conv-4 (64 filters, BN), 28x28x1, 5-way 1-shot, 15 queries, 32 tasks"
    ),
}
BACKEND_ORDER = ("jax", "tensorflow", "torch")


def load(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def latest(records: list[dict]) -> dict[tuple, dict]:
    """The last kerameta record of each (problem, steps, estimator, backend)."""
    table = {}
    for record in records:
        if record["framework"] == "kerameta":
            table[_config(record) + (record["backend"],)] = record
    return table


def _config(record: dict) -> tuple:
    return (record["problem"], record["inner_steps"], record["meta_gradient"])


def same_run_baseline(records: list[dict], record: dict) -> dict | None:
    """The PyTorch task-loop result timed in the same run as `record`."""
    for candidate in reversed(records):
        if (
            candidate["framework"] == "torch-loop"
            and candidate["run"] == record["run"]
            and _config(candidate) == _config(record)
        ):
            return candidate
    return None


def _row(record: dict, baseline: dict | None, target: float | None) -> str:
    speedup = verdict = baseline_ms = "—"
    if baseline is not None:
        value = baseline["median_ms"] / record["median_ms"]
        baseline_ms = f"{baseline['median_ms']:.1f}"
        speedup = f"{value:.1f}×"
        if target is not None:
            verdict = f"≥ {target:g}×: {'met' if value >= target else 'MISSED'}"
    return (
        f"| {record['backend']} | {record['median_ms']:.1f} "
        f"| {record['p10_ms']:.1f}–{record['p90_ms']:.1f} "
        f"| {record['first_step_s']:.1f} "
        f"| {record['peak_rss_mb']:.0f} | {baseline_ms} | {speedup} "
        f"| {verdict} |"
    )


def render(records: list[dict]) -> str:
    table = latest(records)
    first = records[-1]
    versions = {}
    for record in records:
        versions.update(record.get("versions", {}))
    lines = [
        "# Benchmark results",
        "",
        "Written by `benchmarks/report.py` from `benchmarks/results.jsonl`;",
        "regenerate with `python benchmarks/meta_iteration.py` on each",
        "backend, then `python benchmarks/report.py`.",
        "",
        f"- Machine: {first['cpu']}, {first['cores']} cores, "
        f"{first['device'].upper()} only, Python {first['python']}.",
        "- Versions: "
        + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
        + ".",
        "- *median ms*: time per meta-iteration (inner loop, meta-gradient "
        "and the Adam update) through `MAML.fit`, synchronised on the loss, "
        "after warm-up; *p10–p90*: its spread. *first step s* includes "
        "tracing and compilation. *peak RSS*: the process's peak host "
        "memory, the framework included.",
        "- *baseline ms*: the plain PyTorch per-task loop "
        "(`torch.autograd.grad(create_graph=True)`, "
        "`benchmarks/torch_loop_baseline.py`) timed in the same run, in its "
        "own process; *speed-up* = baseline ms / median ms.",
        "",
    ]
    groups = sorted({key[:3] for key in table}, key=lambda k: (k[0], k[1]))
    groups.sort(key=lambda k: k[0] != "sinusoid")
    for problem, steps, estimator in groups:
        lines += [
            f"## {TITLES.get(problem, problem)}: {steps} inner "
            f"step{'s' if steps != 1 else ''}, "
            f"{estimator.replace('_', ' ')}",
            "",
            "| backend | median ms | p10–p90 ms | first step s "
            "| peak RSS MiB | baseline ms | speed-up | target |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for backend in BACKEND_ORDER:
            record = table.get((problem, steps, estimator, backend))
            if record is not None:
                lines.append(
                    _row(
                        record,
                        same_run_baseline(records, record),
                        TARGETS.get((problem, steps, backend)),
                    )
                )
        lines.append("")
    return "\n".join(lines)


# Meta-test accuracy targets of issue #3, by (device kind, backend).
OMNIGLOT_TARGETS = {("cpu", "jax"): 0.95, ("gpu", "jax"): 0.98}


def render_omniglot(records: list[dict]) -> str:
    """The Omniglot section: one row per run, then each run's curve."""
    lines = [
        "## Omniglot MAML, 5-way 1-shot (`omniglot_maml.py`)",
        "",
        "Real Omniglot (1200 / 100 / 323 characters, 90-degree rotations as "
        "extra classes), the strided Conv-4 of Finn et al., one inner step, "
        "mean cross-entropy, Adam; training query set of `shots` "
        "examples per class. *test accuracy*: `kerameta.meta_test` on 600 "
        "test episodes (15 queries per class) with *test steps* inner steps, "
        "± the 95% confidence interval. A run stops at its iteration count "
        "or its time budget. *sampler x*: how many times faster the episode "
        "sampler builds a batch than the meta-step that consumes it.",
        "",
        "| backend | machine | meta-batch | alpha | meta-lr | test steps "
        "| iterations | budget min | train min | median step s "
        "| test accuracy | target | sampler episodes/s | sampler x |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for record in records:
        settings = record["settings"]
        machine = record["machine"]
        device = "gpu" if record.get("device", "cpu") == "gpu" else "cpu"
        target = OMNIGLOT_TARGETS.get((device, record["backend"]))
        accuracy = record["test_accuracy"]
        verdict = "—"
        if target is not None:
            verdict = (
                f"≥ {target:.0%}: {'met' if accuracy >= target else 'missed'}"
            )
        budget = settings.get("time_budget_minutes")
        test_steps = settings.get(
            "test_inner_steps", settings["evaluation_inner_steps"]
        )
        lines.append(
            f"| {record['backend']} | {machine['cpu']}, "
            f"{machine['cores']} cores | {settings['tasks_per_batch']} "
            f"| {settings['inner_learning_rate']} "
            f"| {settings.get('meta_learning_rate', 0.001):g} "
            f"| {test_steps} "
            f"| {record['iterations']} | {budget if budget else '—'} "
            f"| {record['train_seconds'] / 60:.1f} "
            f"| {record['median_step_seconds']:.2f} "
            f"| {accuracy:.2%} ± {record['test_confidence_interval']:.2%} "
            f"| {verdict} | {record['sampler_episodes_per_second']:,.0f} "
            f"| {record['sampler_speedup_over_step']:,.0f} |"
        )
    lines.append("")
    for record in records:
        lines += [
            f"Validation accuracy ({record['backend']}, {record['date']}):",
            "",
            "| meta-iterations | minutes | validation accuracy |",
            "|---:|---:|---:|",
        ]
        lines += [
            f"| {point['iterations']} | {point['seconds'] / 60:.1f} "
            f"| {point['val_accuracy']:.2%} |"
            for point in record["curve"]
        ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", default=str(HERE / "results.jsonl"))
    parser.add_argument(
        "--omniglot", default=str(HERE / "omniglot_results.jsonl")
    )
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args(argv)
    records = load(pathlib.Path(args.input))
    if not records:
        raise SystemExit(f"No results in {args.input}: run the benchmark.")
    text = render(records)
    omniglot = pathlib.Path(args.omniglot)
    if omniglot.is_file() and omniglot.read_text().strip():
        text += "\n" + render_omniglot(load(omniglot))
    pathlib.Path(args.output).write_text(text)
    print(f"Wrote {args.output} from {len(records)} results.")


if __name__ == "__main__":
    main()
