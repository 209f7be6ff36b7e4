"""The GPU benchmark command (`benchmarks/gpu.py`) and its report section.

Cheap checks that run on any machine: the command stops with a clear
message where no GPU is visible, its time budget skips and stops
configurations, and `report.py` renders GPU results in their own tables
without touching the CPU ones.
"""

import pathlib
import sys
import time

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu  # noqa: E402
import report  # noqa: E402


def _no_processes(*args, **kwargs):
    raise AssertionError("no process may start before the GPU check")


@pytest.mark.parametrize("hidden", [True, False])
def test_gpu_command_stops_without_gpu(monkeypatch, tmp_path, hidden):
    if hidden:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    else:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.setattr(gpu.shutil, "which", lambda name: None)
        monkeypatch.setattr(gpu, "NVIDIA_PROC", tmp_path / "missing")
    monkeypatch.setattr(gpu.subprocess, "Popen", _no_processes)
    monkeypatch.setattr(gpu.subprocess, "run", _no_processes)
    output = tmp_path / "results.jsonl"
    with pytest.raises(SystemExit) as info:
        gpu.main(["--output", str(output)])
    assert "needs an NVIDIA GPU, but none is visible" in str(info.value.code)
    assert not output.exists()


def test_visible_gpus_reads_the_driver(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpu.shutil, "which", lambda name: None)
    (tmp_path / "0000:00:1e.0").mkdir()
    monkeypatch.setattr(gpu, "NVIDIA_PROC", tmp_path)
    assert gpu.visible_gpus() == ["0000:00:1e.0"]


def test_budget_skips_stops_and_reports_failures():
    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]
    start = time.monotonic()
    status, detail = gpu.Budget(0.5, 0.0).run(sleep, env=None)
    assert (status, "budget spent" in detail) == ("stopped", True)
    assert time.monotonic() - start < 10
    assert gpu.Budget(5.0, 60.0).run(sleep, env=None)[0] == "skipped"
    failing = [sys.executable, "-c", "raise SystemExit('no GPU build')"]
    status, detail = gpu.Budget(30.0, 0.0).run(failing, env=None)
    assert status == "failed" and "no GPU build" in detail


def _record(framework, device, run, median, **extra):
    record = {
        "run": run,
        "date": "2026-12-06T10:00:00+00:00",
        "problem": "conv4",
        "tasks": 32,
        "inner_steps": 1,
        "meta_gradient": "second_order",
        "device": device,
        "cpu": "AMD EPYC",
        "cores": 2,
        "python": "3.11.7",
        "versions": {"keras": "3.15.1"},
        "framework": framework,
        "backend": "jax" if framework == "kerameta" else "torch",
        "median_ms": median,
        "p10_ms": median,
        "p90_ms": median,
        "first_step_s": 12.0,
        "peak_rss_mb": 900.0,
    }
    if device == "gpu":
        record.update(device_name="NVIDIA H100", peak_device_mb=512.0)
    return {**record, **extra}


def test_report_renders_gpu_rows_apart_from_cpu_rows():
    cpu = [
        _record("kerameta", "cpu", "a", 5000.0),
        _record("torch-loop", "cpu", "a", 2500.0),
    ]
    gpu_records = [
        _record("kerameta", "gpu", "g", 20.0),
        _record("torch-loop", "gpu", "g", 300.0),
        {"run": "g", "date": "2026-12-06T10:05:00+00:00"}
        | {"framework": "note", "device": "gpu", "note": "torch: skipped"},
    ]
    cpu_only = report.render(cpu)
    assert "no GPU machine was available to the project on 2026-12-06" in (
        cpu_only
    )
    both = report.render(cpu + gpu_records)
    head, gpu_part = both.split("## On a GPU")
    assert head == cpu_only.split("## On a GPU")[0]
    assert "≥ 1.5×: MISSED" in head  # the CPU target still applies
    assert "NVIDIA H100" in gpu_part and "no GPU machine" not in gpu_part
    row = (
        "| jax | default | 20.0 | 20.0–20.0 | 12.0 | 512 | 300.0 | 512 | 15.0× "
    )
    assert row in gpu_part
    assert ": met" not in gpu_part and "MISSED" not in gpu_part
    assert "- torch: skipped" in gpu_part
