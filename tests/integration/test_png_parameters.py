"""A generated PNG says how it was made, and those settings make it again (demo models, CPU, float32).

The generate stage writes the ``parameters`` text (the layout other image tools read) and the
``qis_parameters`` JSON; reading them back with Pillow and mapping them to configuration values (the
"reuse these settings" action) gives a command line that renders a bit-identical image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_generate import _models, _tiny_lora

from qwen_image_studio.data.png_params import JSON_KEY, TEXT_KEY, read_parameters, to_config_values
from qwen_image_studio.params.cli import to_argv
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.params.validate import validate_config
from qwen_image_studio.stages.runner import main as run_stage


@pytest.fixture(autouse=True)
def _drop_log_handlers() -> object:
    """In-process runs point the root log handler at this test's captured stderr; do not leave it behind."""
    yield
    logging.getLogger().handlers.clear()


def _only_png(folder: Path) -> Path:
    (png,) = sorted(folder.glob("*.png"))
    return png


def test_the_png_reads_back_to_its_settings_and_makes_the_same_image_again(demo: Path, tmp_path: Path) -> None:
    lora = _tiny_lora(demo, tmp_path / "my_style.safetensors")
    argv = [*_models(demo), "--prompt", "a red square, 红色", "--negative_prompt", "blurry",
            "--image_size", "48", "64", "--infer_steps", "3", "--guidance_scale", "3", "--seed", "7",
            "--flow_shift", "2.5", "--lora_weight", str(lora), "--lora_multiplier", "0.8",
            "--save_path", str(tmp_path / "first")]  # fmt: skip
    assert run_stage(Stage.GENERATE, argv) == 0
    first = _only_png(tmp_path / "first")
    chunks = Image.open(first).text
    assert chunks["prompt"] == "a red square, 红色" and chunks["negative_prompt"] == "blurry"  # kept as before
    assert chunks[TEXT_KEY] == (
        "a red square, 红色\nNegative prompt: blurry\n"
        "Steps: 3, Sampler: flow-match euler, CFG scale: 3.0, Seed: 7, Size: 64x48, "
        'Model: qwen_image_bf16.safetensors, Model version: original, Flow shift: 2.5, Lora: "my_style:0.8"'
    )
    params = read_parameters(first)
    comfy = demo / "models" / "comfyui"
    assert params["chunk"] == JSON_KEY
    assert params["dit"] == str(comfy / "qwen_image_bf16.safetensors")
    assert (params["dtype"], params["device"], params["source"]) == ("float32", "cpu", "generate")
    values = to_config_values(params)
    assert values == {
        "prompt": "a red square, 红色", "negative_prompt": "blurry", "infer_steps": 3, "guidance_scale": 3.0,
        "seed": 7, "model_version": "original", "image_size": [48, 64], "flow_shift": 2.5,
        "lora_weight": [str(lora)], "lora_multiplier": [0.8], "control_image_path": [],
    }  # fmt: skip
    # "reuse these settings": the same models, the values read, another folder
    models = {"dit": params["dit"], "vae": params["vae"], "text_encoder": params["text_encoder"],
              "device": "cpu", "mixed_precision": "no"}  # fmt: skip
    config = validate_config({**models, **values, "save_path": str(tmp_path / "again")})
    assert run_stage(Stage.GENERATE, to_argv(config, Stage.GENERATE)) == 0
    again = _only_png(tmp_path / "again")
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(first)))  # bit-identical
    assert read_parameters(again) == params
    # a different strength is a different image (the LoRA is really part of what was recorded)
    other = validate_config({**models, **values, "lora_multiplier": [0.0], "save_path": str(tmp_path / "o")})
    assert run_stage(Stage.GENERATE, to_argv(other, Stage.GENERATE)) == 0
    assert not np.array_equal(np.asarray(Image.open(_only_png(tmp_path / "o"))), np.asarray(Image.open(first)))


def test_an_edit_png_records_its_control_images(demo: Path, tmp_path: Path) -> None:
    control = demo / "dataset" / "controls" / "demo_00.png"
    argv = [*_models(demo, "edit-2509"), "--prompt", "make it blue", "--control_image_path", str(control),
            "--image_size", "32", "32", "--infer_steps", "2", "--guidance_scale", "1",
            "--save_path", str(tmp_path)]  # fmt: skip
    assert run_stage(Stage.GENERATE, argv) == 0
    png = _only_png(tmp_path)
    assert "Control images: demo_00.png" in Image.open(png).text[TEXT_KEY]
    values = to_config_values(read_parameters(png))
    assert values["control_image_path"] == [str(control)] and values["model_version"] == "edit-2509"


def test_no_metadata_writes_no_parameters(demo: Path, tmp_path: Path) -> None:
    argv = [*_models(demo), "--prompt", "x", "--image_size", "32", "32", "--infer_steps", "2",
            "--no_metadata", "--save_path", str(tmp_path)]  # fmt: skip
    assert run_stage(Stage.GENERATE, argv) == 0
    assert Image.open(_only_png(tmp_path)).text == {}
