"""The header's GPU panel on the server: NVML readings, the "cpu only" state, and a job's peak GPU memory.

The GPU path runs against a fake of NVIDIA's library (an object with pynvml's functions and error class,
answering as NVML does on a two-GPU machine), not a fake of our code; this machine has no GPU, so the real
library gives the "cpu_only" state (see also tests/integration/test_webui_gpu.py, through the API).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qwen_image_studio.stages.runner import gpu_peak
from qwen_image_studio.webui import gpu


class FakeNvml:
    """Stands in for the initialised `pynvml` module: NVML's calls, its error class and constants."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's own name
        pass

    def __init__(self, devices: list[dict[str, Any]], lost: bool = False) -> None:
        self.devices, self.lost = devices, lost

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802 - NVML's names
        if self.lost:
            raise self.NVMLError("GPU is lost")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:  # noqa: N802
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str | bytes:  # noqa: N802
        return handle["name"]

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> Any:  # noqa: N802
        return SimpleNamespace(total=handle["total"], used=handle["used"], free=handle["total"] - handle["used"])

    def nvmlDeviceGetUtilizationRates(self, handle: dict[str, Any]) -> Any:  # noqa: N802
        if handle["util"] is None:
            raise self.NVMLError_NotSupported("Not Supported")
        return SimpleNamespace(gpu=handle["util"], memory=0)

    def nvmlDeviceGetTemperature(self, handle: dict[str, Any], sensor: int) -> int:  # noqa: N802
        assert sensor == self.NVML_TEMPERATURE_GPU
        return handle["temp"]


TWO_GPUS = [
    {"name": "NVIDIA H100 80GB HBM3", "total": 85_520_809_984, "used": 12_345_678_848, "util": 97, "temp": 61},
    {"name": b"NVIDIA A100-SXM4-40GB", "total": 42_949_672_960, "used": 0, "util": None, "temp": 33},
]


def test_each_gpu_reads_memory_utilisation_and_temperature() -> None:
    status = gpu.gpu_status(FakeNvml(TWO_GPUS))
    assert status["state"] == "gpu" and status["reason"] is None
    assert status["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA H100 80GB HBM3",
            "memory_used": 12_345_678_848,
            "memory_total": 85_520_809_984,
            "utilization": 97,
            "temperature": 61,
        },
        {  # an older pynvml answers bytes; a vGPU may not report utilisation
            "index": 1,
            "name": "NVIDIA A100-SXM4-40GB",
            "memory_used": 0,
            "memory_total": 42_949_672_960,
            "utilization": None,
            "temperature": 33,
        },
    ]
    json.dumps(status)  # what the API sends


def test_no_gpu_and_a_lost_gpu() -> None:
    assert gpu.gpu_status(FakeNvml([])) == {"state": "cpu_only", "gpus": [], "reason": "NVML sees no GPU"}
    lost = gpu.gpu_status(FakeNvml(TWO_GPUS, lost=True))
    assert lost == {"state": "error", "gpus": [], "reason": "GPU is lost"}


def test_this_machine_without_a_driver_is_cpu_only() -> None:
    library, failure = gpu.nvml()
    if library is not None:
        pytest.skip("this machine has an NVIDIA driver")
    assert failure  # why: no nvidia-ml-py, or no NVML library (no driver)
    assert gpu.gpu_status() == {"state": "cpu_only", "gpus": [], "reason": failure}
    assert gpu.nvml() == (None, failure)  # remembered, not retried every poll


def write_events(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps({"t": 1.0, **e}) + "\n" for e in events) + '{"partial', encoding="utf-8")
    return path


def test_a_jobs_peak_is_the_largest_its_stages_recorded(tmp_path: Path) -> None:
    events = write_events(
        tmp_path / "events.jsonl",
        [
            {"stage": "cache_latents", "type": "started"},
            {"stage": "cache_latents", "type": "finished", "peak_gpu_memory_bytes": 2_000_000_000},
            {"stage": "cache_text_encoder_outputs", "type": "finished", "peak_gpu_memory_bytes": 15_100_000_000},
            {"stage": "train_network", "type": "progress", "peak_gpu_memory_bytes": 99_000_000_000},  # not an end
            {"stage": "train_network", "type": "failed", "reason": "out of GPU memory", "exit_code": 4,
             "peak_gpu_memory_bytes": 23_400_000_000},
        ],
    )
    assert gpu.job_gpu_peak(events) == {"peak_gpu_memory_bytes": 23_400_000_000, "peak_gpu_memory_stage": "train_network"}
    cpu = write_events(tmp_path / "cpu.jsonl", [{"stage": "train_network", "type": "finished"}])
    assert gpu.job_gpu_peak(cpu) == {"peak_gpu_memory_bytes": None, "peak_gpu_memory_stage": None}
    assert gpu.job_gpu_peak(tmp_path / "none.jsonl")["peak_gpu_memory_bytes"] is None  # not started yet


def test_a_stage_that_used_no_gpu_records_no_peak() -> None:
    import torch

    if torch.cuda.is_initialized():
        pytest.skip("CUDA is in use in this test process")
    assert gpu_peak() == {}
