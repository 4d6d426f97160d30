"""The machine's NVIDIA GPUs, live, for the header's panel; and the peak GPU memory a job's stages recorded.

GPUs are read through NVIDIA's management library (NVML) with the nvidia-ml-py package (``import
pynvml``), never by parsing nvidia-smi's text. Without the package, the driver's library or a GPU the
state is "cpu_only"; NVML is initialised once per process (a machine without a driver stays without one
while the server runs). GPU indices are NVML's (PCI bus order; CUDA numbers GPUs the same way with
``CUDA_DEVICE_ORDER=PCI_BUS_ID``). Torch-free, like the rest of the web UI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..events import read_events

T = TypeVar("T")
PEAK_KEY = "peak_gpu_memory_bytes"  # in a stage's finished / failed event (stages/runner.py)

_lock = threading.Lock()
_library: Any = None  # pynvml, initialised
_failure: str | None = None  # why NVML cannot be used, once known


@dataclass(frozen=True)
class GpuReading:
    """One GPU now: memory in bytes, utilisation (percent of the last sample period a kernel ran), °C."""

    index: int
    name: str
    memory_used: int
    memory_total: int
    utilization: int | None  # None where NVML does not report it (some vGPU / MIG setups)
    temperature: int | None

    def as_json(self) -> dict[str, Any]:
        """The reading as a JSON object."""
        return asdict(self)


def nvml() -> tuple[Any, str | None]:
    """(the initialised pynvml module, None), or (None, why NVML cannot be used here)."""
    global _library, _failure
    with _lock:
        if _library is None and _failure is None:
            try:
                import pynvml
            except ImportError:
                _failure = "nvidia-ml-py is not installed"
            else:
                try:
                    pynvml.nvmlInit()
                    _library = pynvml
                except pynvml.NVMLError as exc:  # no driver library, driver not loaded, no permission
                    _failure = str(exc) or type(exc).__name__
        return _library, _failure


def _optional(library: Any, read: Callable[[], T]) -> T | None:
    try:
        return read()
    except library.NVMLError:  # NotSupported and the like: that value is not known
        return None


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_gpus(library: Any) -> list[GpuReading]:
    """Every GPU NVML sees, read now (`library`: the initialised pynvml module, or an object like it)."""
    readings = []
    for index in range(library.nvmlDeviceGetCount()):
        handle = library.nvmlDeviceGetHandleByIndex(index)
        memory = library.nvmlDeviceGetMemoryInfo(handle)
        readings.append(
            GpuReading(
                index=index,
                name=_text(library.nvmlDeviceGetName(handle)),
                memory_used=int(memory.used),
                memory_total=int(memory.total),
                utilization=_optional(
                    library, lambda h=handle: int(library.nvmlDeviceGetUtilizationRates(h).gpu)
                ),
                temperature=_optional(
                    library,
                    lambda h=handle: int(library.nvmlDeviceGetTemperature(h, library.NVML_TEMPERATURE_GPU)),
                ),
            )
        )
    return readings


def gpu_status(library: Any = None) -> dict[str, Any]:
    """``state`` ("gpu", "cpu_only" or "error"), ``gpus`` (readings) and ``reason`` (why not "gpu").

    `library` stands in for the initialised pynvml module (tests pass a fake of the library); by default
    NVML is initialised on the first call.
    """
    failure = None
    if library is None:
        library, failure = nvml()
    if library is None:
        return {"state": "cpu_only", "gpus": [], "reason": failure}
    try:
        gpus = read_gpus(library)
    except library.NVMLError as exc:  # a GPU lost from the bus, a driver reloaded under us
        return {"state": "error", "gpus": [], "reason": str(exc) or type(exc).__name__}
    if not gpus:
        return {"state": "cpu_only", "gpus": [], "reason": "NVML sees no GPU"}
    return {"state": "gpu", "gpus": [g.as_json() for g in gpus], "reason": None}


def job_gpu_peak(events_file: Path) -> dict[str, Any]:
    """The most GPU memory any stage of a job reserved (bytes, from the stages' finished or failed events)
    and that stage; both None when no stage recorded one (it ran on the CPU, or has not ended yet)."""
    peak, stage = None, None
    for event in read_events(events_file)[0]:
        value = event.get(PEAK_KEY)
        ended = event.get("type") in ("finished", "failed")
        if ended and isinstance(value, int) and value >= 0 and (peak is None or value > peak):
            peak, stage = value, event.get("stage")
    return {PEAK_KEY: peak, "peak_gpu_memory_stage": stage}
