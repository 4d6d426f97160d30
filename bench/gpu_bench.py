"""Issue 6's GPU benchmark: s/step and peak VRAM of our trainer's memory options against diffusers+peft.

Full size (default, CUDA): the Qwen-Image DiT (60 blocks, 20.4 B parameters) with random bf16 weights built
on the GPU, 1024x1024 (4096 image tokens), batch 1, 128 text tokens, LoRA rank 16, bf16 autocast,
gradient checkpointing, AdamW. Configurations, each in its own process (an OOM or crash of one does not
stop the rest): the 8192^3 bf16 matmul (TFLOP/s, for the compute floor), the diffusers+peft baseline of
facts §8, our bf16, fp8_base+fp8_scaled, + blocks_to_swap 16, + blocks_to_swap 45.

``--tiny --device cpu`` runs the same logic on the tiny DiT in seconds (tests use it). Writes
gpu_bench.json and gpu_bench.md to --out (default: $OUT, else bench/out). Usage: bench/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STEP_TFLOP = 225.0  # model FLOPs of one full-size step (facts §8): forward, recompute, backward-to-inputs
FP8 = {"fp8": True, "scaled": True}
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("matmul", {"path": "matmul"}),
    ("baseline", {"path": "baseline"}),
    ("bf16", {"path": "ours"}),
    ("fp8", {"path": "ours", **FP8}),
    ("fp8_swap16", {"path": "ours", **FP8, "swap": 16}),
    ("fp8_swap45", {"path": "ours", **FP8, "swap": 45}),
    ("fp8_upcast", {"path": "ours", **FP8, "fp8_matmul": "upcast"}),
    # last, so that the time budget cuts these first: torch.compile of the blocks (one graph for all 60)
    ("bf16_compile", {"path": "ours", "compile": True, "timeout": 240}),
    ("fp8_compile", {"path": "ours", **FP8, "compile": True, "timeout": 240}),
    # --gradient_checkpointing_cpu_offload: the checkpointed block inputs wait in pinned CPU memory
    ("bf16_offload", {"path": "ours", "offload": True}),
    ("fp8_offload", {"path": "ours", **FP8, "offload": True}),
    ("fp8_swap45_offload", {"path": "ours", **FP8, "swap": 45, "offload": True}),
]
LABELS = {
    "matmul": "8192^3 bf16 matmul",
    "baseline": "diffusers+peft baseline (bf16)",
    "bf16": "ours: bf16",
    "fp8": "ours: fp8_base + fp8_scaled",
    "fp8_swap16": "ours: fp8 + blocks_to_swap 16",
    "fp8_swap45": "ours: fp8 + blocks_to_swap 45",
    "fp8_upcast": "ours: fp8, --fp8_matmul upcast (the reference trainer's matmuls)",
    "bf16_compile": "ours: bf16 + compile",
    "fp8_compile": "ours: fp8_base + fp8_scaled + compile",
    "bf16_offload": "ours: bf16 + checkpoint offload",
    "fp8_offload": "ours: fp8 + checkpoint offload",
    "fp8_swap45_offload": "ours: fp8 + blocks_to_swap 45 + checkpoint offload",
}
# name -> (time reference, max ratio, max peak GiB) from issue 6
TARGETS: dict[str, tuple[str, float, float]] = {
    "bf16": ("baseline", 0.7, 40.0),
    "fp8": ("bf16", 1.0, 21.0),
    "fp8_swap16": ("fp8", 1.1, 17.0),
    "fp8_swap45": ("fp8", 2.0, 9.0),
    "bf16_compile": ("baseline", 0.7, 40.0),
    "fp8_compile": ("bf16_compile", 1.0, 21.0),
    "bf16_offload": ("baseline", 0.7, 40.0),
    "fp8_offload": ("bf16", 1.0, 21.0),
    "fp8_swap45_offload": ("fp8", 2.0, 9.0),
}
REFERENCE = {  # the reference trainer on an H100 (facts §8): s/step, peak allocated GiB
    "bf16": (1.46, 42.3), "fp8": (1.74, 24.2), "fp8_swap16": (5.12, 19.2), "fp8_swap45": (12.03, 10.0),
}  # fmt: skip


def base_spec(tiny: bool, device: str) -> dict[str, Any]:
    """Sizes and step counts shared by every configuration."""
    if tiny:
        return {"device": device, "size": "tiny", "image": 64, "text": 8, "rank": 4, "warmup": 1, "steps": 2,
                "max_seconds": 5, "matmul_n": 256, "iters": 2, "threads": 1, "compile_backend": "aot_eager"}  # fmt: skip
    return {"device": device, "size": "full", "image": 1024, "text": 128, "rank": 16, "warmup": 2, "steps": 5,
            "max_seconds": 20, "matmul_n": 8192, "iters": 10}  # fmt: skip


def run_config(name: str, spec: dict[str, Any], timeout: float, env: dict[str, str]) -> dict[str, Any]:
    """One configuration in a fresh process; a crash, OOM or timeout becomes a failed result."""
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(HERE / "step_bench.py"), json.dumps({"name": name, **spec})],
                              capture_output=True, text=True, timeout=timeout, env=env)  # fmt: skip
        lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
        result = json.loads(lines[-1]) if lines else {"name": name, "ok": False,
                                                     "error": f"exit {proc.returncode}: {proc.stderr[-400:]}"}  # fmt: skip
        if not result.get("ok"):
            result["stderr_tail"] = proc.stderr[-1500:]
    except subprocess.TimeoutExpired:
        result = {"name": name, "ok": False, "error": f"timed out after {timeout:.0f} s"}
    result["wall_s"] = time.perf_counter() - started
    return result


def _ratio(results: dict[str, dict[str, Any]], name: str, ref: str) -> float | None:
    a, b = results.get(name, {}), results.get(ref, {})
    if a.get("ok") and b.get("ok") and b.get("s_per_step"):
        return a["s_per_step"] / b["s_per_step"]
    return None


def verdicts(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per target configuration: time ratio against its reference, peak, and met / not met for each."""
    out = {}
    for name, (ref, max_ratio, max_gib) in TARGETS.items():
        r = results.get(name, {})
        ratio = _ratio(results, name, ref)
        peak = r.get("peak_alloc_gib")
        out[name] = {
            "reference": ref,
            "ratio": ratio,
            "max_ratio": max_ratio,
            "time_met": None if ratio is None else ratio <= max_ratio,
            "peak_gib": peak,
            "max_gib": max_gib,
            "memory_met": None if peak is None else peak <= max_gib,
        }
    return out


def _f(value: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _met(flag: bool | None) -> str:
    return "n/a" if flag is None else ("met" if flag else "NOT met")


def markdown(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """The results as a Markdown section: one row per configuration, targets marked met / not met."""
    v = verdicts(results)
    mm = results.get("matmul", {})
    tflops = mm.get("tflops") if mm.get("ok") else None
    floor = STEP_TFLOP / tflops if tflops and not meta["tiny"] else None
    lines = [
        f"Date {meta['date']}, machine: {meta['machine']}, torch {meta.get('torch', '?')}"
        + (" — TINY logic check, figures not meaningful" if meta["tiny"] else ""),
        "",
        f"{mm.get('matmul_n', '?')}^3 matmul: {_f(tflops, '{:.1f}')} TFLOP/s"
        + (f" (fp8 with per-row scales: {mm['fp8_tflops']:.1f})" if mm.get("fp8_tflops") else "")
        + (f"; compute floor of a step ({STEP_TFLOP:.0f} TFLOP): {floor:.3f} s" if floor else ""),
        "",
        "| configuration | s/step | vs diffusers+peft | target (time) | peak allocated GiB | nvidia-smi peak GiB "
        "| target (memory) | reference trainer s/step, GiB | % of compute floor | host RSS peak GiB | first loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, label in LABELS.items():
        if name == "matmul":
            continue
        if name not in results:
            continue
        r = results[name]
        if not r.get("ok"):
            lines.append(f"| {label} | failed: {r.get('error', '?')} | | | | | | | | | |")
            continue
        if r.get("swap") is not None and f"swap{r['swap']}" not in name and "swap" in name:
            label += f" (swaps {r['swap']} of the tiny DiT's blocks)"
        if r.get("fp8_matmul"):
            label += f" [{r['fp8_matmul']} matmuls]"
        t = v.get(name)
        time_target = mem_target = ""
        if t:
            time_target = f"≤ {t['max_ratio']}x {t['reference']}: {_f(t['ratio'])}x, {_met(t['time_met'])}"
            mem_target = f"≤ {t['max_gib']:.0f}: {_met(t['memory_met'])}"
        ref = REFERENCE.get(name)
        share = f"{100 * floor / r['s_per_step']:.0f} %" if floor else "–"
        rss = r.get("rss_peak_mib")
        lines.append(
            f"| {label} | {r['s_per_step']:.3f} | {_f(_ratio(results, name, 'baseline'))}x | {time_target} "
            f"| {_f(r.get('peak_alloc_gib'))} | {_f(r.get('smi_peak_gib'))} | {mem_target} "
            f"| {'–' if ref is None else f'{ref[0]}, {ref[1]}'} | {share} | {_f(None if rss is None else rss / 1024)} "
            f"| {_f((r.get('losses') or [None])[0], '{:.4f}')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run every configuration (or --only some) within --budget seconds; print and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny DiT: checks the logic in seconds")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for all configurations together")
    ap.add_argument("--timeout", type=float, default=150.0, help="seconds for one configuration at most")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "out"))
    args = ap.parse_args(argv)
    chosen = [c for c in CONFIGS if not args.only or c[0] in args.only.split(",")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent / "src"), env.get("PYTHONPATH", "")]))
    base = base_spec(args.tiny, args.device)
    results: dict[str, dict[str, Any]] = {}
    deadline = time.perf_counter() + args.budget
    for name, extra in chosen:
        left = deadline - time.perf_counter()
        if left < 20:
            results[name] = {"name": name, "ok": False, "error": "skipped: time budget spent"}
            continue
        spec = {**base, **extra}
        timeout = min(float(spec.pop("timeout", args.timeout)), left)
        results[name] = run_config(name, spec, timeout, env)
        r = results[name]
        summary = f"{r.get('s_per_step', r.get('tflops', 0)):.3f}" if r.get("ok") else r.get("error")
        print(f"[{name}] {'ok' if r.get('ok') else 'FAILED'} in {r['wall_s']:.0f} s: {summary}", flush=True)
    torch_version = next((r["torch"] for r in results.values() if r.get("torch")), "?")
    device_name = next((r["device_name"] for r in results.values() if r.get("device_name")), None)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{device_name or 'no GPU'}, {os.cpu_count()} CPU cores, {platform.node()}",
        "torch": torch_version,
        "tiny": args.tiny,
    }
    text = markdown(results, meta)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_bench.md").write_text(text, encoding="utf-8")
    payload = {"meta": meta, "results": results, "verdicts": verdicts(results)}
    (out / "gpu_bench.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return 0 if all(r.get("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
