"""CPU RAM of loading a DiT and packing swapped blocks into host buffers: one copy of the weights (issue 6).

Writes (once) the synthetic full-width bf16 ComfyUI file of bench/load_rss.py (4 blocks of 3072), then, each
in a fresh child process, loads it as training does with --blocks_to_swap 3 (our loader, LoRA rank 16,
the block swapper's host buffers; the "device" is the CPU here, so the resident block stays in RAM too)
and reports peak and final RSS above the child's baseline after imports, against the file's size, and the
host buffers' size against the swapped blocks' tensors.

Usage: python bench/swap_rss.py [--dir /tmp/qis-bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from load_rss import write_file  # noqa: E402

CHILD = r"""
import json, resource, sys, time, torch
sys.path.insert(0, sys.argv[3])
import diffusers
from qwen_image_studio.memory.block_swap import BlockSwapper, frozen_tensors
from qwen_image_studio.memory.options import BlockPlan
from qwen_image_studio.memory.placement import place_dit
from qwen_image_studio.models.loading import load_dit
from qwen_image_studio.training.lora import apply_lora
def rss_kb(field='VmRSS:'):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1])
mode, path = sys.argv[1], sys.argv[2]
base, base_anon = rss_kb(), rss_kb('RssAnon:')
t = time.perf_counter()
dit = load_dit(path, dtype=torch.bfloat16, device='cpu').requires_grad_(False)
fp8 = mode == 'fp8_scaled+swap3'
place_dit(dit, torch.device('cpu'), torch.bfloat16, fp8=fp8, scaled=fp8, plan=BlockPlan.for_dit(dit, 3))
apply_lora(dit, 16, 16)
swapped_bytes = host = 0
if mode != 'load':
    blocks = dit.transformer_blocks
    swapped_bytes = sum(x.numel() * x.element_size() for b in list(blocks)[1:] for x in frozen_tensors(b)[0])
    swapper = BlockSwapper(blocks, BlockPlan.for_dit(dit, 3), 'cpu')
    host = swapper.host_bytes
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kb": base, "peak_kb": peak, "after_kb": rss_kb(), "seconds": seconds,
                  "anon_kb": rss_kb('RssAnon:') - base_anon, "file_kb": rss_kb('RssFile:'),
                  "swapped_bytes": swapped_bytes, "host_bytes": host}))
"""


def main() -> None:
    """Run the three modes and print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/qis-bench")
    args = ap.parse_args()
    path = Path(args.dir) / "dit_4blocks_bf16.safetensors"
    size = write_file(path, 4)
    src = str(HERE.parent / "src")
    print(f"date {time.strftime('%Y-%m-%d')}; file {path.name}: {size / 2**30:.2f} GiB\n")
    print("| path | peak RSS above baseline | ratio to file | RSS after | of which anonymous (not file pages) "
          "| host buffers | host buffers / swapped tensors | seconds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("load", "swap3", "fp8_scaled+swap3"):
        out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), src], capture_output=True, text=True,
                             check=True)  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        peak = (r["peak_kb"] - r["base_kb"]) * 1024
        after = (r["after_kb"] - r["base_kb"]) * 1024
        ratio = f"{r['host_bytes'] / r['swapped_bytes']:.4f}" if r["swapped_bytes"] else "–"
        print(f"| {mode} | {peak / 2**30:.2f} GiB | {peak / size:.2f}x | {after / 2**30:.2f} GiB "
              f"| {r['anon_kb'] / 2**20:.2f} GiB | {r['host_bytes'] / 2**30:.2f} GiB | {ratio} | {r['seconds']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
