"""The demo workspace: tiny models in the release layouts, a small dataset, and ready configurations."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..params.config_files import save_config
from ..params.schema import StudioConfig

MARKER = ".demo-complete"
# One prompt file per mode: edit versions render each line from its control image (``--ci``, relative to
# the prompt file's folder), text-to-image takes none (the stages reject either one in the other mode).
SAMPLE_PROMPTS = {
    "sample_prompts_t2i.txt": (
        "a red square on a white background --w 64 --h 64 --s 4 --d 1\n"
        "a blue circle on a yellow background --w 64 --h 64 --s 4 --d 2\n"
    ),
    "sample_prompts_edit.txt": (
        "a red square on a white background --ci dataset/controls/demo_00.png --w 64 --h 64 --s 4 --d 1\n"
        "a blue circle on a black background --ci dataset/controls/demo_01.png --w 64 --h 64 --s 4 --d 2\n"
    ),
}


def demo_configs(root: Path, models: dict[str, Path], dataset: dict[str, Path]) -> dict[str, StudioConfig]:
    """Configurations that run the whole pipeline on the demo files in seconds on a CPU."""
    common = {
        "vae": str(models["vae"]),
        "text_encoder": str(models["text_encoder"]),
        "output_dir": str(root / "output"),
        "logging_dir": str(root / "logs"),
        "mixed_precision": "no",  # bf16 matmuls are unusably slow on CPUs; tiny models train in fp32
        "optimizer_type": "adamw",
        "learning_rate": 1e-3,
        "network_dim": 4,
        "network_alpha": 4.0,
        "max_train_epochs": 2,
        "save_every_n_epochs": 1,
        "max_data_loader_n_workers": 0,
        "persistent_data_loader_workers": False,
        "sample_every_n_epochs": 1,
        "device": "cpu",
        "max_new_tokens": 24,  # captioning: the tiny random VLM writes nonsense, so a few tokens do
    }
    t2i = StudioConfig(
        **common,
        dit=str(models["dit"]),
        dataset_config=str(dataset["t2i_toml"]),
        validation_dataset_config=str(dataset["validation_toml"]),  # two held-out images
        validate_every_n_epochs=1,
        output_name="demo_t2i",
        sample_prompts=str(root / "sample_prompts_t2i.txt"),
    )
    edit = StudioConfig(
        **common,
        dit=str(models["dit_edit_2509"]),
        dataset_config=str(dataset["edit_toml"]),
        output_name="demo_edit",
        model_version="edit-2509",
        sample_prompts=str(root / "sample_prompts_edit.txt"),
    )
    return {"demo-t2i": t2i, "demo-edit": edit}


def create_demo(root: Path, seed: int = 0, force: bool = False) -> dict[str, Path]:
    """Write the demo workspace under `root` (models/, dataset/, configs/) and return the main paths."""
    from .dataset import create_demo_dataset
    from .models import create_demo_models

    root = Path(root).resolve()
    if (root / MARKER).exists() and not force:
        return demo_paths(root)
    for sub in ("models", "dataset", "configs"):
        if force and (root / sub).exists():
            shutil.rmtree(root / sub)
    root.mkdir(parents=True, exist_ok=True)
    models = create_demo_models(root / "models", seed=seed)
    dataset = create_demo_dataset(root / "dataset", seed=seed)
    for name, text in SAMPLE_PROMPTS.items():
        (root / name).write_text(text, encoding="utf-8")
    for name, config in demo_configs(root, _model_roles(models), dataset).items():
        save_config(config, root / "configs" / f"{name}.json", name=name)
    (root / MARKER).write_text(f"seed={seed}\n", encoding="utf-8")
    return demo_paths(root)


def _model_roles(models: dict[str, Path]) -> dict[str, Path]:
    """The demo factory's paths by role (single files are what users point at first)."""
    return {
        "dit": models["dit"],
        "dit_edit_2509": models["dit_edit_2509"],
        "vae": models["vae"],
        "text_encoder": models["text_encoder"],
    }


def demo_paths(root: Path) -> dict[str, Path]:
    """The main paths of an existing demo workspace."""
    return {
        "models": root / "models",
        "dataset": root / "dataset",
        "configs": root / "configs",
        "sample_prompts": root / "sample_prompts_t2i.txt",
        "sample_prompts_edit": root / "sample_prompts_edit.txt",
    }
