"""Shared helpers of the training tests: cached demo datasets and in-process training runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qwen_image_studio.events import read_events
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.stages.runner import main as run_stage


def models(demo: Path) -> dict[str, Path]:
    """The demo's ComfyUI single files by role."""
    comfy = demo / "models" / "comfyui"
    return {
        "dit": comfy / "qwen_image_bf16.safetensors",
        "dit_2509": comfy / "qwen_image_edit_2509_bf16.safetensors",
        "dit_2511": comfy / "qwen_image_edit_2511_bf16.safetensors",
        "vae": comfy / "qwen_image_vae.safetensors",
        "te": comfy / "qwen_2.5_vl_7b.safetensors",
    }


def dataset_toml(demo: Path, folder: Path, edit: bool, batch_size: int = 1, num_repeats: int = 1) -> Path:
    """A dataset TOML over the demo images (and controls) with its cache in `folder`."""
    data = demo / "dataset"
    control = f'control_directory = "{data / "controls"}"\n' if edit else ""
    toml = folder / ("edit.toml" if edit else "t2i.toml")
    folder.mkdir(parents=True, exist_ok=True)
    toml.write_text(
        f"[general]\nresolution = [64, 64]\nenable_bucket = true\nbatch_size = {batch_size}\n"
        f"num_repeats = {num_repeats}\n\n[[datasets]]\n"
        f'image_directory = "{data / "images"}"\ncache_directory = "{folder / "cache"}"\n{control}',
        encoding="utf-8",
    )
    return toml


def cached_dataset(demo: Path, folder: Path) -> Path:
    """A text-to-image dataset TOML over the demo images (in `folder`) with both caches written."""
    toml = dataset_toml(demo, folder, edit=False)
    cache(demo, toml)
    return toml


def cache(demo: Path, toml: Path, model_version: str = "original") -> None:
    """Run both caching stages in this process."""
    m = models(demo)
    common = ["--dataset_config", str(toml), "--model_version", model_version, "--device", "cpu"]
    assert run_stage(Stage.CACHE_LATENTS, [*common, "--vae", str(m["vae"])]) == 0
    assert run_stage(Stage.CACHE_TEXT, [*common, "--text_encoder", str(m["te"])]) == 0


def train_argv(demo: Path, toml: Path, out: Path, dit: str = "dit", **flags: Any) -> list[str]:
    """A fast CPU training command line; keyword flags override (None drops a flag, True is a switch)."""
    m = models(demo)
    values: dict[str, Any] = {
        "dit": m[dit],
        "vae": m["vae"],
        "text_encoder": m["te"],
        "dataset_config": toml,
        "mixed_precision": "no",
        "optimizer_type": "adamw",
        "learning_rate": 1e-3,
        "network_dim": 4,
        "network_alpha": 4,
        "max_train_steps": 3,
        "save_every_n_epochs": None,
        "seed": 42,
        "max_data_loader_n_workers": 0,
        "no_persistent_data_loader_workers": True,
        "no_gradient_checkpointing": True,
        "log_with": "none",
        "output_dir": out,
        "output_name": "lora",
        "events_file": out / "events.jsonl",
    }
    values.update(flags)
    argv: list[str] = []
    for key, value in values.items():
        if value is None or value is False:
            continue
        argv.append(f"--{key}")
        if value is True:
            continue
        argv += [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
    return argv


def train(argv: list[str]) -> int:
    """Run the training stage in this process; returns its exit code."""
    return run_stage(Stage.TRAIN, argv)


def events_of(path: Path) -> list[dict[str, Any]]:
    """All events of an events file."""
    return read_events(path)[0]


def losses(path: Path) -> list[float]:
    """The per-step losses of a run's metric events, in step order."""
    return [e["loss"] for e in events_of(path) if e["type"] == "metric" and "loss" in e]


def failure(path: Path) -> str:
    """The reason of a failed event, if any."""
    return json.dumps([e for e in events_of(path) if e["type"] in ("failed", "warning")])


def eval_loss(dit: Path, toml: Path, lora: Path | None, model_version: str = "original") -> float:
    """Mean flow-matching loss over every cached item at t = 0.2, 0.5, 0.8 with fixed noise (no randomness)."""
    import torch

    from qwen_image_studio.models.loading import load_dit
    from qwen_image_studio.params.schema import StudioConfig
    from qwen_image_studio.training import flow_matching as fm
    from qwen_image_studio.training.data import collate, collect_items, load_cached
    from qwen_image_studio.training.lora import apply_lora

    config = StudioConfig(dataset_config=str(toml), model_version=model_version)
    model = load_dit(dit, dtype=torch.float32, model_version=model_version)
    if lora is not None:
        apply_lora(model, 8, 8).load_weights(lora)
    total, count = 0.0, 0
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for item in collect_items(config):
            batch = collate([load_cached(item, config.is_edit)])
            x0 = batch["latents"].float()
            _, _, _, h, w = x0.shape
            for t_value in (0.2, 0.5, 0.8):
                t = torch.tensor([t_value])
                noise = torch.randn(x0.shape, generator=generator)
                pred = model(
                    hidden_states=fm.pack_latents(fm.noisy_latents(x0, noise, t)),
                    encoder_hidden_states=batch["text"].float(),
                    timestep=t,
                    img_shapes=[[(1, h // 2, w // 2)]],
                    return_dict=False,
                )[0]
                total += float(((pred - fm.pack_latents(fm.flow_target(x0, noise))) ** 2).mean())
                count += 1
    return total / count
