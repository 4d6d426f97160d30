"""Issue 15 item 2's figure: what the second image costs when the generation worker keeps the models.

On the demo models (CPU, fp32, or --device cuda with any --dit/--vae/--text_encoder), one worker process
(`stages/generate_worker.py`, started as the web UI starts it) renders the same request three times:
cold (every model loaded), warm (same prompt and LoRA: nothing loaded), and warm with another LoRA
strength (only the LoRA re-applied). For each: the request's wall time (request sent to reply), its
denoising time (first to last `generate` progress event), its render time (denoising plus the VAE decode
and PNG write) and the ratios. Target: a warm request costs at most 1.1x its denoising time; on the demo
the tiny VAE's CPU decode alone outweighs the tiny DiT's steps, so wall / render is what the worker adds.

Usage: python bench/generation_worker_bench.py [--steps 20] [--size 256]   (prints Markdown)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _times(events: Path) -> tuple[float, float]:
    """(denoising s: first to last `generate` progress event, render s: first progress to the image's
    artifact event, i.e. denoising + VAE decode + PNG write)."""
    found = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    times = [e["t"] for e in found if e["type"] == "progress" and e.get("phase") == "generate"]
    written = [e["t"] for e in found if e["type"] == "artifact"]
    return times[-1] - times[0], written[-1] - times[0]


def main() -> None:
    """Run the three requests and print the table."""
    from qwen_image_studio.demo.workspace import create_demo
    from qwen_image_studio.webui.jobs.generation_worker import GenerationWorker

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gen-bench-"))
    create_demo(root / "demo")
    comfy = root / "demo" / "models" / "comfyui"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
    from test_generate import _tiny_lora

    lora = _tiny_lora(root / "demo", root / "lora.safetensors")
    flags = ["--dit", str(comfy / "qwen_image_bf16.safetensors"), "--vae", str(comfy / "qwen_image_vae.safetensors"),
             "--text_encoder", str(comfy / "qwen_2.5_vl_7b.safetensors"), "--mixed_precision", "no",
             "--device", "cpu", "--prompt", "a red square", "--image_size", str(args.size), str(args.size),
             "--infer_steps", str(args.steps), "--save_path", str(root / "out"), "--lora_weight", str(lora)]  # fmt: skip
    worker = GenerationWorker(root, idle_timeout=300)
    rows = []
    try:
        for job, (label, strength) in enumerate(
            (
                ("cold: every model loaded", 1.0),
                ("warm: same request", 1.0),
                ("warm: another LoRA strength", 0.5),
            ),
            start=1,
        ):
            events = root / f"e{job}.jsonl"
            argv = [*flags, "--lora_multiplier", str(strength), "--events_file", str(events)]
            start = time.perf_counter()
            run = worker.submit(job, argv, root / f"log{job}.txt")
            code = run.wait(timeout=3600)
            wall = time.perf_counter() - start
            assert code == 0, (root / f"log{job}.txt").read_text(encoding="utf-8")
            rows.append((label, wall, *_times(events)))
    finally:
        worker.release()
        worker.close()
    print(f"Machine: {platform.processor() or platform.machine()}, {platform.system()}; demo models on the CPU, "
          f"{args.size}x{args.size}, {args.steps} steps, one tiny LoRA\n")  # fmt: skip
    print(
        "| request | wall s | denoising s | render s (denoise + decode + PNG) | wall / denoising | wall / render |"
    )
    print("|---|---|---|---|---|---|")
    for label, wall, denoise, render in rows:
        print(
            f"| {label} | {wall:.2f} | {denoise:.2f} | {render:.2f} | {wall / denoise:.2f}x | {wall / render:.2f}x |"
        )


if __name__ == "__main__":
    main()
