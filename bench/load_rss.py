"""Peak RSS of loading a DiT ComfyUI single file, against the file's size (issue 3).

Writes a synthetic bf16 single file with the full-size block width (3072) and a few blocks, then, each in
a fresh child process, loads it (1) with our loader (`models.loading.load_dit`) and (2) the naive way
(`safetensors.torch.load_file` + `load_state_dict`), and reports the peak RSS above the child's baseline
after imports. Usage: python bench/load_rss.py [--layers 4] [--dir /tmp/qis-bench]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time, torch
from pathlib import Path
def rss_kb():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
mode, path = sys.argv[1], sys.argv[2]
import diffusers, safetensors.torch  # imports before the baseline
from qwen_image_studio.models.loading import load_dit
base = rss_kb()
t = time.perf_counter()
if mode == 'ours':
    model = load_dit(path, dtype=torch.bfloat16, device='cpu')
else:
    from accelerate import init_empty_weights
    from qwen_image_studio.models.loading import inspect_dit
    cfg = inspect_dit(path).config
    with init_empty_weights():
        model = diffusers.QwenImageTransformer2DModel(**cfg)
    sd = safetensors.torch.load_file(path)
    sd = {k.removeprefix('model.diffusion_model.'): v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    del sd
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kb": base, "peak_kb": peak, "after_kb": rss_kb(), "seconds": seconds}))
"""


def write_file(path: Path, layers: int) -> int:
    """A random bf16 DiT single file with `layers` full-width blocks; returns its size in bytes."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import QwenImageTransformer2DModel
    from safetensors.torch import save_file

    from qwen_image_studio.models.configs import dit_config

    if not path.exists():
        cfg = {**dit_config("full"), "num_layers": layers}
        with init_empty_weights():
            model = QwenImageTransformer2DModel(**cfg)
        gen = torch.Generator().manual_seed(0)
        state = {
            f"model.diffusion_model.{k}": (torch.randn(v.shape, generator=gen) * 0.02).to(torch.bfloat16)
            for k, v in model.state_dict().items()
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path))
        del state
    return path.stat().st_size


def main() -> None:
    """Run both loaders and print a Markdown table row per loader."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dir", default="/tmp/qis-bench")
    args = ap.parse_args()
    path = Path(args.dir) / f"dit_{args.layers}blocks_bf16.safetensors"
    size = write_file(path, args.layers)
    print(
        f"file: {path} ({size / 2**30:.2f} GiB); machine: {platform.node()}, {platform.processor() or 'cpu'}"
    )
    rows = {}
    for mode in ("naive", "ours"):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(path)], capture_output=True, text=True, check=True
        )
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    print("| loader | peak RSS above baseline | ratio to file size | seconds |")
    print("|---|---|---|---|")
    for mode, r in rows.items():
        extra = (r["peak_kb"] - r["base_kb"]) * 1024
        print(f"| {mode} | {extra / 2**30:.2f} GiB | {extra / size:.2f}x | {r['seconds']:.1f} |")
    print(f"date: {time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main()
