"""The reference trainer's documented Qwen-Image command lines (its docs/qwen_image.md: latent caching,
text-encoder caching, training, for text-to-image and Edit-2511), run as subprocesses through our scripts
with only the paths filled in. Training adds `--max_train_steps 2` at the end (the CLI's last value wins),
so that 16 epochs on the demo take seconds; `accelerate launch` is the launcher the docs use, here with one
CPU process. The generation script's documented lines are in test_generate_script.py."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import train_support as ts

from qwen_image_studio.training.lora import read_lora_file

ROOT = Path(__file__).resolve().parents[2]

# As documented (the script paths are ours: the repository root instead of src/musubi_tuner/).
CACHE_LATENTS = """python qwen_image_cache_latents.py \\
    --dataset_config {toml} \\
    --vae {vae} \\
    --model_version {version}"""
CACHE_TEXT = """python qwen_image_cache_text_encoder_outputs.py \\
    --dataset_config {toml} \\
    --text_encoder {te} \\
    --batch_size 1 \\
    --model_version {version}"""
TRAIN = """accelerate launch --num_cpu_threads_per_process 1 --mixed_precision bf16 qwen_image_train_network.py \\
    --dit {dit} \\
    --vae {vae} \\
    --text_encoder {te} \\
    --model_version {version} \\
    --dataset_config {toml} \\
    --sdpa --mixed_precision bf16 \\
    --timestep_sampling shift \\
    --weighting_scheme none --discrete_flow_shift 2.2 \\
    --optimizer_type adamw8bit --learning_rate 5e-5 --gradient_checkpointing \\
    --max_data_loader_n_workers 2 --persistent_data_loader_workers \\
    --network_module networks.lora_qwen_image \\
    --network_dim 16 \\
    --max_train_epochs 16 --save_every_n_epochs 1 --seed 42 \\
    --output_dir {out} --output_name name-of-lora \\
    --max_train_steps 2"""


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a documented line from `cwd` (training logs to ./logs by default, as the seed says)."""
    argv = shlex.split(command.replace("\\\n", " "))  # a shell joins the continued lines
    argv = [str(ROOT / a) if a.startswith("qwen_image_") else a for a in argv]
    if argv[0] == "python":
        argv[0] = sys.executable
    else:  # accelerate launch, from this environment
        argv = [sys.executable, "-m", "accelerate.commands.launch", *argv[2:]]
        argv[argv.index("--num_cpu_threads_per_process") : argv.index("--num_cpu_threads_per_process")] = [
            "--num_processes", "1", "--num_machines", "1", "--dynamo_backend", "no", "--cpu",
        ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.parametrize(
    ("version", "dit", "edit"), [("original", "dit", False), ("edit-2511", "dit_2511", True)]
)
def test_the_documented_command_lines_run(
    demo: Path, tmp_path: Path, version: str, dit: str, edit: bool
) -> None:
    m = ts.models(demo)
    toml = ts.dataset_toml(demo, tmp_path / "data", edit=edit)
    out = tmp_path / "output"
    paths = {"toml": toml, "vae": m["vae"], "te": m["te"], "dit": m[dit], "out": out, "version": version}
    _run(CACHE_LATENTS.format(**paths), tmp_path)
    _run(CACHE_TEXT.format(**paths), tmp_path)
    arch = "qie" if edit else "qi"
    cache = tmp_path / "data" / "cache"
    assert (
        len(list(cache.glob(f"*_{arch}.safetensors")))
        == len(list(cache.glob(f"*_{arch}_te.safetensors")))
        > 0
    )
    _run(TRAIN.format(**paths), tmp_path)
    assert (out / "name-of-lora.safetensors").is_file()
    assert [p.name.split("_")[0] for p in (tmp_path / "logs").iterdir()] == ["name-of-lora"]  # TensorBoard
    tensors, meta = read_lora_file(out / "name-of-lora.safetensors")
    ranks = {t.shape[0] for k, t in tensors.items() if k.endswith(".lora_down.weight")}
    assert ranks == {16} and meta["ss_network_dim"] == "16"
