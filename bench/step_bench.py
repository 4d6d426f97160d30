"""One benchmark configuration in its own process: LoRA training steps of the Qwen-Image DiT, or a matmul.

Usage: python bench/step_bench.py '<json spec>'  (the drivers bench/gpu_bench.py and bench/cpu_options.py
build the spec). Prints one JSON line with the result as its last line. Spec keys:

- name; path: "ours" (our trainer's parts: fp8 layers, LoRA, checkpointing, block swapper), "baseline"
  (diffusers + peft, facts §8) or "matmul"; device: "cuda" or "cpu"; size: "full" or "tiny" (random
  weights built directly on the device);
- fp8, scaled, fp8_matmul (auto/native/upcast), swap, checkpointing, offload, compile; image (pixels),
  text (tokens), rank;
- warmup, steps, max_seconds (timed steps stop at whichever comes first, after at least two);
- matmul_n for the matmul.

Imports only what the GPU image has besides diffusers (no pydantic): the bench must run there bare.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

BASELINE_TARGETS = [
    "to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out",
    "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2",
]  # fmt: skip
GIB = 2**30


def rss_mib() -> float:
    """Resident set size of this process now, in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class SmiPoller:
    """Polls nvidia-smi's memory.used of one GPU in a thread; `peak_mib` is None where there is none."""

    def __init__(self, index: int = 0, period: float = 0.2) -> None:
        self.index, self.period = index, period
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float | None:
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", f"--id={self.index}"],
                capture_output=True, text=True, timeout=5,
            )  # fmt: skip
            return float(out.stdout.strip().splitlines()[0])
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is not None:
                self.peak_mib = max(self.peak_mib or 0.0, value)
            self._stop.wait(self.period)

    def __enter__(self) -> SmiPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def sync(device: Any) -> None:
    """Wait for the device's queued work."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_matmul(spec: dict[str, Any]) -> dict[str, Any]:
    """TFLOP/s of an n^3 matrix product (bf16 on CUDA, fp32 on the CPU)."""
    import torch

    device = torch.device(spec["device"])
    n = int(spec.get("matmul_n", 8192))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    iters = int(spec.get("iters", 10))
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    seconds = (time.perf_counter() - start) / iters
    result = {"tflops": 2 * n**3 / seconds / 1e12, "matmul_n": n, "seconds": seconds}
    try:  # the fp8 tensor-core rate, with per-row scales as --fp8_matmul native uses them
        a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
        sa, sb = torch.ones(n, 1, device=device), torch.ones(1, n, device=device)
        out = torch.bfloat16 if device.type == "cuda" else torch.float32
        for _ in range(3):
            torch._scaled_mm(a8, b8.t(), scale_a=sa, scale_b=sb, out_dtype=out)
        sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            torch._scaled_mm(a8, b8.t(), scale_a=sa, scale_b=sb, out_dtype=out)
        sync(device)
        result["fp8_tflops"] = 2 * n**3 / ((time.perf_counter() - start) / iters) / 1e12
    except (RuntimeError, AttributeError, NotImplementedError) as exc:
        result["fp8_error"] = str(exc).splitlines()[0]
    return result


def build_dit(spec: dict[str, Any], device: Any, dtype: Any) -> Any:
    """The DiT with random weights, built directly on `device` in `dtype`."""
    import torch
    from diffusers import QwenImageTransformer2DModel

    from qwen_image_studio.models.configs import dit_config

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = QwenImageTransformer2DModel(**dit_config(spec["size"]))
    finally:
        torch.set_default_dtype(default)
    return model.requires_grad_(False)


def prepare_ours(
    spec: dict[str, Any], model: Any, device: Any, dtype: Any
) -> tuple[list[Any], dict[str, Any]]:
    """Our trainer's setup: fp8 block linears, LoRA, checkpointing (+offload), block swap, compile."""
    from qwen_image_studio.memory.block_swap import BlockSwapper
    from qwen_image_studio.memory.checkpointing import enable_checkpointing
    from qwen_image_studio.memory.options import BlockPlan
    from qwen_image_studio.memory.placement import place_dit
    from qwen_image_studio.memory.setup import compile_blocks
    from qwen_image_studio.models.fp8_linear import use_native_matmul
    from qwen_image_studio.training.lora import apply_lora

    layers = len(model.transformer_blocks)
    swap = min(int(spec.get("swap", 0)), layers - 1)
    fp8 = spec.get("fp8", False)
    native = fp8 and use_native_matmul(spec.get("fp8_matmul", "auto"), device, dtype)
    plan = BlockPlan(layers, swap)
    place_dit(
        model,
        device,
        dtype,
        fp8=fp8,
        scaled=spec.get("scaled", False),
        plan=plan,
        native=native,
    )
    network = apply_lora(model, spec["rank"], spec["rank"])
    if spec.get("checkpointing", True):
        enable_checkpointing(model, cpu_offload=spec.get("offload", False))
    info: dict[str, Any] = {"swap": swap, "fp8_matmul": ("native" if native else "upcast") if fp8 else None}
    if swap:
        swapper = BlockSwapper(model.transformer_blocks, plan, device).attach(model)
        info |= {
            "host_swap_gib": swapper.host_bytes / GIB,
            "pinning": sorted({h.how for h in swapper.host.values()}),
        }
        model._bench_swapper = swapper  # keep it alive
    if spec.get("compile"):
        compile_blocks(model, backend=spec.get("compile_backend", "inductor"))
    return network.parameters(), info


def prepare_baseline(spec: dict[str, Any], model: Any) -> list[Any]:
    """diffusers + peft as facts §8 describes: LoRA on the 12 attention/MLP linears, diffusers' checkpointing."""
    from peft import LoraConfig

    model.add_adapter(
        LoraConfig(
            r=spec["rank"],
            lora_alpha=spec["rank"],
            init_lora_weights="gaussian",
            target_modules=BASELINE_TARGETS,
        )
    )
    if spec.get("checkpointing", True):
        model.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # peft makes them bf16 like the base; train them in fp32 under autocast, as we do
        p.data = p.data.float()
    return params


def run_training(spec: dict[str, Any]) -> dict[str, Any]:
    """Time LoRA training steps of the DiT (one image, one caption) and measure memory."""
    import diffusers  # noqa: F401 - imported before the RSS baseline
    import torch

    import qwen_image_studio.memory.setup  # noqa: F401
    import qwen_image_studio.training.lora  # noqa: F401

    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    base_rss = rss_mib()
    t0 = time.perf_counter()
    model = build_dit(spec, device, dtype)
    info: dict[str, Any] = {"build_s": time.perf_counter() - t0}
    if spec["path"] == "baseline":
        params = prepare_baseline(spec, model)
    else:
        params, extra = prepare_ours(spec, model, device, dtype)
        info |= extra
    model.train()
    info["setup_s"] = time.perf_counter() - t0
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    cfg = model.config
    side = spec["image"] // 16  # VAE /8, patch 2
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(1, side * side, cfg.in_channels, generator=g).to(device, dtype)
    text = torch.randn(1, spec["text"], cfg.joint_attention_dim, generator=g).to(device, dtype)
    target = torch.randn(1, side * side, x.shape[-1], generator=g).to(device)
    t = torch.full((1,), 0.5, device=device, dtype=dtype)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def step() -> float:
        with autocast:
            pred = model(
                hidden_states=x,
                encoder_hidden_states=text,
                timestep=t,
                img_shapes=[[(1, side, side)]],
                return_dict=False,
            )[0]
        loss = torch.nn.functional.mse_loss(pred.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        info["resident_gib"] = torch.cuda.memory_allocated(device) / GIB
    poller = SmiPoller(device.index or 0) if cuda else contextlib.nullcontext()
    times: list[float] = []
    losses: list[float] = []
    with poller:
        for _ in range(int(spec.get("warmup", 2))):
            losses.append(step())
        sync(device)
        start = time.perf_counter()
        while len(times) < int(spec.get("steps", 5)):
            begin = time.perf_counter()
            losses.append(step())
            sync(device)
            times.append(time.perf_counter() - begin)
            if len(times) >= 2 and time.perf_counter() - start > float(spec.get("max_seconds", 30)):
                break
    info |= {
        "s_per_step": statistics.median(times),
        "step_times": times,
        "losses": losses,
        "rss_base_mib": base_rss,
        "rss_peak_mib": peak_rss_mib(),
    }
    if cuda:
        info["peak_alloc_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        info["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / GIB
        info["smi_peak_gib"] = None if poller.peak_mib is None else poller.peak_mib / 1024
    return info


def main() -> None:
    """Run the spec given as the first argument and print its JSON result as the last line."""
    spec = json.loads(sys.argv[1])
    result: dict[str, Any] = {"name": spec["name"], "spec": spec}
    try:
        import torch

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        if os.environ.get("QIS_BENCH_FAIL") == spec["name"]:
            raise RuntimeError("failure injected by QIS_BENCH_FAIL")
        result["torch"] = torch.__version__
        if spec["device"] == "cuda":
            result["device_name"] = torch.cuda.get_device_name(0)
        result |= run_matmul(spec) if spec["path"] == "matmul" else run_training(spec)
        result["ok"] = True
    except Exception as exc:  # noqa: BLE001 - a failed configuration is a result (OOM included)
        result |= {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        traceback.print_exc()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
