"""Issue 6's CPU figures: tiny-DiT LoRA step time and peak RSS of each memory option against the plain path.

Each option runs in a fresh child process (bench/step_bench.py) on the demo-sized DiT (2 blocks, width 32)
with random weights, fp32, one CPU thread, 256 image tokens (256x256 px), 32 text tokens, LoRA rank 4,
AdamW. Ratios are against the plain path measured in the same run. The losses of the options that only
move data (swap, offload, checkpointing) must equal the plain path's exactly; fp8 changes them a little.

Usage: python bench/cpu_options.py [--steps 30] [--json out.json]   (prints a Markdown section)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_bench import run_config  # noqa: E402

OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("plain", {}),
    ("fp8_base", {"fp8": True}),
    ("fp8_base + fp8_scaled", {"fp8": True, "scaled": True}),
    ("blocks_to_swap 1", {"swap": 1}),
    ("gradient_checkpointing", {"checkpointing": True}),
    ("checkpointing + cpu offload", {"checkpointing": True, "offload": True}),
    ("checkpointing + blocks_to_swap 1", {"checkpointing": True, "swap": 1}),
]


def machine() -> str:
    """CPU model and core count."""
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, no GPU"


def main() -> int:
    """Run every option, then print the Markdown table of ratios against the plain path."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3, help="rounds over all options; the best median counts")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    base = {"path": "ours", "device": "cpu", "size": "tiny", "image": 256, "text": 32, "rank": 4, "warmup": 3,
            "steps": args.steps, "max_seconds": 30, "threads": 1, "checkpointing": False}  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent / "src"), env.get("PYTHONPATH", "")]))
    results: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeat):  # rounds interleave the options, so that load changes hit them alike
        for name, extra in OPTIONS:
            r = run_config(name, {**base, **extra}, 300, env)
            print(f"[{name}] {r.get('s_per_step', r.get('error'))}", file=sys.stderr, flush=True)
            best = results.get(name)
            if best is None or (r.get("ok") and r["s_per_step"] < best.get("s_per_step", float("inf"))):
                results[name] = r
    plain = results["plain"]
    print(f"Date {time.strftime('%Y-%m-%d')}, machine: {machine()}, torch {plain.get('torch', '?')}; per option "
          f"the best of {args.repeat} fresh processes' medians of {args.steps} steps after 3 warm-up steps.\n")  # fmt: skip
    print("| option | s/step | ratio to plain | peak RSS MiB | ratio to plain | RSS above imports MiB "
          "| losses vs plain |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if not r.get("ok"):
            print(f"| {name} | failed: {r.get('error')} | | | | | |")
            continue
        same = r["losses"] == plain["losses"]
        rel = max(abs(a - b) / abs(b) for a, b in zip(r["losses"], plain["losses"], strict=True))
        loss_note = "identical" if same else f"max rel. diff {rel:.1e}"
        print(f"| {name} | {r['s_per_step'] * 1000:.1f} ms | {r['s_per_step'] / plain['s_per_step']:.2f}x "
              f"| {r['rss_peak_mib']:.0f} | {r['rss_peak_mib'] / plain['rss_peak_mib']:.2f}x "
              f"| {r['rss_peak_mib'] - r['rss_base_mib']:.0f} | {loss_note} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0 if all(r.get("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
