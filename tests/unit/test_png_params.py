"""PNG generation parameters: our ``parameters`` text (AUTOMATIC1111's layout) and ``qis_parameters`` JSON.

The layout other image tools read, rebuilt from its documented shape: the prompt lines, a line starting
``Negative prompt:``, then one line of ``Key: value`` pairs joined by ``, `` in which a value holding a
comma, a colon or a line break is a JSON string in double quotes. Pillow only: no model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from qwen_image_studio.data.png_params import (
    JSON_KEY,
    TEXT_KEY,
    parameters_text,
    read_parameters,
    to_config_values,
    write_png,
)
from qwen_image_studio.errors import ConfigError
from qwen_image_studio.params.validate import validate_config

PARAMS = {
    "source": "generate",
    "prompt": "一只红色的猫, sitting\non a mat",
    "negative_prompt": "blurry, low quality",
    "width": 768,
    "height": 512,
    "steps": 30,
    "guidance_scale": 4.5,
    "seed": 1234,
    "sampler": "flow-match euler",
    "model_version": "original",
    "flow_shift": 3.0,
    "model": "qwen_image_bf16.safetensors",
    "dit": "/models/qwen_image_bf16.safetensors",
    "vae": "/models/qwen_image_vae.safetensors",
    "text_encoder": "/models/qwen_2.5_vl_7b.safetensors",
    "loras": [
        {"path": "/loras/cat_style.safetensors", "name": "cat_style", "multiplier": 0.8},
        {"path": "/loras/mat.safetensors", "name": "mat", "multiplier": 1.0},
    ],
    "control_image_paths": [],
    "dtype": "float32",
    "device": "cpu",
}


def _png(path: Path, **chunks: str) -> Path:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, format="PNG", pnginfo=info)
    return path


def test_our_chunks_round_trip_with_pillow(tmp_path: Path) -> None:
    png = write_png(Image.new("RGB", (768, 512), "red"), tmp_path / "a.png", PARAMS)
    text = Image.open(png).text
    assert text[TEXT_KEY] == (
        "一只红色的猫, sitting\non a mat\n"
        "Negative prompt: blurry, low quality\n"
        'Steps: 30, Sampler: flow-match euler, CFG scale: 4.5, Seed: 1234, Size: 768x512, '
        "Model: qwen_image_bf16.safetensors, Model version: original, Flow shift: 3.0, "
        'Lora: "cat_style:0.8, mat:1"'
    )
    assert json.loads(text[JSON_KEY]) == {"format": 1, **PARAMS}
    assert read_parameters(png) == {**PARAMS, "chunk": JSON_KEY}


def test_the_text_alone_reads_back_to_the_same_settings(tmp_path: Path) -> None:
    png = _png(tmp_path / "t.png", parameters=parameters_text(PARAMS))
    read = read_parameters(png)
    assert read["chunk"] == TEXT_KEY
    for key in ("prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "seed", "model",
                "model_version", "flow_shift", "sampler"):  # fmt: skip
        assert read[key] == PARAMS[key], key
    assert read["loras"] == [{"name": "cat_style", "path": None, "multiplier": 0.8},
                             {"name": "mat", "path": None, "multiplier": 1.0}]  # fmt: skip
    assert read["extra"] == {}


def test_a_png_written_the_automatic1111_way_is_read(tmp_path: Path) -> None:
    text = (
        "masterpiece, a castle on a hill\nat dusk <lora:castles:0.7>\n"
        "Negative prompt: lowres, bad anatomy\nwatermark\n"
        'Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3141592, Size: 512x768, '
        'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "castles: a1b2c3d4e5f6", '
        "Version: v1.10.1"
    )
    png = _png(tmp_path / "a1111.png", parameters=text)
    read = read_parameters(png)
    assert read["prompt"] == "masterpiece, a castle on a hill\nat dusk <lora:castles:0.7>"
    assert read["negative_prompt"] == "lowres, bad anatomy\nwatermark"
    assert (read["steps"], read["guidance_scale"], read["seed"]) == (28, 7.0, 3141592)
    assert (read["width"], read["height"], read["model"], read["sampler"]) == (512, 768, "v1-5-pruned-emaonly",
                                                                                "DPM++ 2M")  # fmt: skip
    assert read["extra"] == {"Schedule type": "Karras", "Model hash": "6ce0161689",
                             "Lora hashes": "castles: a1b2c3d4e5f6", "Version": "v1.10.1"}  # fmt: skip
    values = to_config_values(read)
    assert values == {
        "prompt": read["prompt"], "negative_prompt": "lowres, bad anatomy\nwatermark", "infer_steps": 28,
        "guidance_scale": 7.0, "seed": 3141592, "image_size": [768, 512],
    }  # fmt: skip
    assert validate_config(values).image_size == [768, 512]  # the form takes them as they are


def test_a_prompt_alone_and_no_negative(tmp_path: Path) -> None:
    read = read_parameters(_png(tmp_path / "p.png", parameters="just a prompt, nothing else"))
    assert read["prompt"] == "just a prompt, nothing else" and read["negative_prompt"] is None
    assert to_config_values(read) == {"prompt": "just a prompt, nothing else", "negative_prompt": None}


def test_the_json_chunk_wins_and_a_broken_one_falls_back_to_the_text(tmp_path: Path) -> None:
    both = _png(tmp_path / "both.png", parameters="other\nSteps: 5, CFG scale: 2, Seed: 1",
                qis_parameters=json.dumps(PARAMS))  # fmt: skip
    assert read_parameters(both)["prompt"] == PARAMS["prompt"]
    broken = _png(tmp_path / "broken.png", parameters="other\nSteps: 5, CFG scale: 2, Seed: 1",
                  qis_parameters="{not json")  # fmt: skip
    read = read_parameters(broken)
    assert read["chunk"] == TEXT_KEY and (read["prompt"], read["steps"], read["seed"]) == ("other", 5, 1)


def test_our_parameters_map_to_the_schema_fields() -> None:
    values = to_config_values({**PARAMS, "chunk": JSON_KEY})
    assert values == {
        "prompt": PARAMS["prompt"], "negative_prompt": "blurry, low quality", "infer_steps": 30,
        "guidance_scale": 4.5, "seed": 1234, "model_version": "original", "image_size": [512, 768],
        "flow_shift": 3.0, "lora_weight": ["/loras/cat_style.safetensors", "/loras/mat.safetensors"],
        "lora_multiplier": [0.8, 1.0], "control_image_path": [],
    }  # fmt: skip
    config = validate_config(values)
    assert (config.infer_steps, config.lora_multiplier, config.flow_shift) == (30, [0.8, 1.0], 3.0)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: _png(d / "plain.png"), "holds no generation parameters"),
        (lambda d: (d / "x.png").write_bytes(b"not an image") and d / "x.png", "not a readable image"),
        (lambda d: d / "missing.png", "no such image"),
    ],
)
def test_files_without_parameters_are_one_line(tmp_path: Path, make, says: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError) as err:
        read_parameters(path)
    assert says in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
