"""The seed's own command lines as subprocesses: cache -> cache -> train, and a 2-process DDP run (gloo)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import train_support as ts

from qwen_image_studio.training.lora import read_lora_file

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _model_flags(m: dict[str, Path]) -> list[str]:
    """--dit, --vae and --text_encoder pointing at the demo's single files."""
    return ["--dit", str(m["dit"]), "--vae", str(m["vae"]), "--text_encoder", str(m["te"])]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_seed_command_lines_cache_and_train_with_tensorboard(demo: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = ts.models(demo)
    toml = ts.dataset_toml(demo, tmp_path / "data", edit=False)
    py = sys.executable
    _run(py, "qwen_image_cache_latents.py", "--dataset_config", str(toml), "--vae", str(m["vae"]))
    _run(
        py,
        "qwen_image_cache_text_encoder_outputs.py",
        "--dataset_config",
        str(toml),
        "--text_encoder",
        str(m["te"]),
        "--batch_size",
        "1",
    )
    out, logs = tmp_path / "output", tmp_path / "logs"
    _run(
        py,
        "qwen_image_train_network.py",
        *_model_flags(m),
        "--dataset_config",
        str(toml),
        "--mixed_precision",
        "no",
        "--timestep_sampling",
        "shift",
        "--weighting_scheme",
        "none",
        "--discrete_flow_shift",
        "2.2",
        "--optimizer_type",
        "adamw",
        "--learning_rate",
        "1e-3",
        "--network_module",
        "networks.lora_qwen_image",
        "--network_dim",
        "4",
        "--network_args",
        "loraplus_lr_ratio=4",
        "--max_train_epochs",
        "2",
        "--save_every_n_epochs",
        "1",
        "--seed",
        "42",
        "--sdpa",
        "--gradient_checkpointing",
        "--persistent_data_loader_workers",
        "--output_dir",
        str(out),
        "--output_name",
        "demo",
        "--logging_dir",
        str(logs),
        "--log_with",
        "tensorboard",
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "demo-000001.safetensors",
        "demo-000002.safetensors",
        "demo.safetensors",
    ]
    tensors, meta = read_lora_file(out / "demo.safetensors")
    assert any(k.endswith(".lora_down.weight") for k in tensors) and meta["ss_network_args"]
    (run,) = list(logs.iterdir())
    acc = EventAccumulator(str(run))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/current", "loss/average", "loss/epoch", "lr/lora_down", "lr/lora_up"} <= scalars
    assert "timesteps" in acc.Tags()["histograms"]
    assert len(acc.Scalars("loss/current")) == 12  # 6 images, batch 1, 2 epochs
    assert acc.Scalars("lr/lora_up")[0].value == 4 * acc.Scalars("lr/lora_down")[0].value
    # ... and the chain ends with generating an image with the trained LoRA
    images = tmp_path / "images"
    _run(
        py,
        "-m",
        "qwen_image_studio.cli",
        "generate",
        *_model_flags(m),
        "--prompt",
        "a red square",
        "--image_size",
        "64",
        "64",
        "--infer_steps",
        "2",
        "--mixed_precision",
        "no",
        "--lora_weight",
        str(out / "demo.safetensors"),
        "--save_path",
        str(images),
    )
    (png,) = images.glob("*.png")
    from PIL import Image

    assert Image.open(png).size == (64, 64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_processes_train_with_ddp_and_save_one_lora(demo: Path, tmp_path: Path) -> None:
    # accelerate 1.15 starts several CPU processes only through torchrun (its --multi_gpu path); with --cpu
    # alone it launches a single process (multi-CPU there needs mpirun). Each process trains on the CPU (gloo).
    toml = ts.dataset_toml(demo, tmp_path / "data", edit=False)
    ts.cache(demo, toml)
    out = tmp_path / "out"
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    argv = ts.train_argv(
        demo, toml, out, max_train_steps=None, max_train_epochs=2, save_every_n_epochs=1, output_name="ddp"
    )
    proc = _run(
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "qwen_image_train_network.py",
        *argv,
    )
    assert proc.stderr.count("2 process(es)") == 2
    sums = re.findall(r"process (\d): LoRA weights checksum (\S+)", proc.stderr)
    assert sorted(r for r, _ in sums) == ["0", "1"] and sums[0][1] == sums[1][1]  # replicas stayed in step
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "ddp-000001.safetensors",
        "ddp-000002.safetensors",
        "ddp.safetensors",
    ]
    events = ts.events_of(out / "events.jsonl")
    steps = [e["step"] for e in events if e["type"] == "metric" and "loss" in e]
    assert steps == [1, 2, 3, 4, 5, 6]  # 6 batches shared by 2 processes: 3 steps per epoch, reported once
    assert len([e for e in events if e["type"] == "artifact"]) == 3
    tensors, _ = read_lora_file(out / "ddp.safetensors")
    assert any(float(v.abs().sum()) > 0 for k, v in tensors.items() if k.endswith(".lora_up.weight"))
