"""Prompt files for sample images and `generate --from_file`: options, defaults, errors; generation flags."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from PIL import Image

from qwen_image_studio.data.prompt_files import (
    PromptDefaults,
    SamplePrompt,
    parse_prompt_line,
    parse_sample_prompts,
    resolve_prompt,
)
from qwen_image_studio.errors import ConfigError
from qwen_image_studio.params.cli import parse_args, to_argv
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.params.validate import ConfigProblems, validate_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_option_comments_and_blank_lines(tmp_path: Path) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "c0.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "c1.png")
    path = _write(
        tmp_path,
        "# a comment\n\n"
        "a red square --w 64 --h 48 --s 4 --d 7 --l 3.5 --n blurry, low quality --ci c0.png --ci c1.png\n"
        "   # indented comment\n"
        "a blue circle --g 1.0\n"
        "plain prompt\n",
    )
    first, second, third = parse_sample_prompts(path)
    assert first == SamplePrompt(
        "a red square", 64, 48, 4, 7, 3.5, "blurry, low quality",
        ((tmp_path / "c0.png").resolve(), (tmp_path / "c1.png").resolve()), f"{path} line 3",
    )  # fmt: skip
    assert (second.prompt, second.guidance_scale) == ("a blue circle", 1.0)  # --g is musubi's alias of --l
    assert third == SamplePrompt("plain prompt", where=f"{path} line 6")


def test_unknown_options_are_ignored_and_extra_spaces_tolerated() -> None:
    prompt = parse_prompt_line("  a cat   --fs 3.0  --w 32 --f 81 ", "x")
    assert (prompt.prompt, prompt.width, prompt.height) == ("a cat", 32, None)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a cat --w abc", "x: --w 'abc' is not a whole number"),
        ("a cat --l high", "x: --l 'high' is not a number"),
        ("a cat --w 50", "x: width 50 must be a multiple of 16"),
        ("a cat --h 0", "x: height 0 must be a multiple of 16"),
        ("a cat --s 1", "x: 1 inference steps; at least 2 are needed"),
        ("a cat --d -3", "x: seed -3 must not be negative"),
        ("a cat --l 0", "x: guidance scale 0.0 must be above 0"),
        ("a cat --n", "x: --n needs a value"),
        ("--w 64 --h 64", "x: the line has options but no prompt"),
        ("a cat --ci missing.png", "x: control image not found: missing.png"),
    ],
)
def test_bad_lines_name_the_place(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_prompt_line(line, "x")
    assert str(err.value).startswith(message)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prompt file not found"):
        parse_sample_prompts(tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match="holds no prompt"):
        parse_sample_prompts(_write(tmp_path, "# only a comment\n\n"))
    with pytest.raises(ConfigError, match=r"prompts.txt line 2: --s 'x'"):
        parse_sample_prompts(_write(tmp_path, "ok\nbad --s x\n"))


def test_defaults_come_from_the_configuration(tmp_path: Path) -> None:
    config = validate_config(
        {
            "image_size": [64, 48],
            "infer_steps": 3,
            "seed": 5,
            "guidance_scale": 2.0,
            "negative_prompt": "ugly",
        }
    )
    defaults = PromptDefaults.from_config(config)
    assert defaults == PromptDefaults(
        width=48, height=64, steps=3, seed=5, guidance_scale=2.0, negative_prompt="ugly"
    )
    values = resolve_prompt(parse_prompt_line("a cat --w 32 --d 0", "x"), defaults, "original")
    assert (values["width"], values["height"], values["steps"], values["seed"]) == (32, 64, 3, 0)
    assert (values["guidance_scale"], values["negative_prompt"]) == (2.0, "ugly")


def test_control_images_must_fit_the_model_version(tmp_path: Path) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "c.png")
    with_ci = parse_prompt_line(f"edit it --ci {tmp_path / 'c.png'}", "x")
    two_ci = parse_prompt_line(f"edit it --ci {tmp_path / 'c.png'} --ci {tmp_path / 'c.png'}", "x")
    plain = parse_prompt_line("a cat", "x")
    d = PromptDefaults()
    assert resolve_prompt(with_ci, d, "edit-2509")["control_paths"] == with_ci.control_images
    assert len(resolve_prompt(two_ci, d, "edit-2511")["control_paths"]) == 2
    with pytest.raises(ConfigError, match="needs a control image"):
        resolve_prompt(plain, d, "edit")
    with pytest.raises(ConfigError, match="control images need an edit --model_version"):
        resolve_prompt(with_ci, d, "original")
    with pytest.raises(ConfigError, match="edit takes one control image"):
        resolve_prompt(two_ci, d, "edit")


def test_generate_flags_parse_as_musubi_writes_them() -> None:
    argv = shlex.split(
        "--dit d --prompt 'a cat' --image_size 64 48 --infer_steps 3 --guidance_scale 1 --lora_weight "
        "a.safetensors b.safetensors --lora_multiplier 0.5 1.25 --control_image_path c.png --save_path out --edit_plus"
    )
    config, _ = parse_args(Stage.GENERATE, argv)
    assert config.image_size == [64, 48] and config.infer_steps == 3 and config.guidance_scale == 1.0
    assert config.lora_weight == ["a.safetensors", "b.safetensors"] and config.lora_multiplier == [0.5, 1.25]
    assert config.model_version == "edit-2509" and config.control_image_path == ["c.png"]
    back, _ = parse_args(Stage.GENERATE, to_argv(config, Stage.GENERATE))
    assert back == config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image_size": [64]}, "--image_size: give two numbers, height and width (got 1)"),
        (
            {"image_size": [64, 50]},
            "--image_size: 64 50: height and width must be multiples of 16 from 16 to 8192",
        ),
        ({"infer_steps": 1}, "--infer_steps: 1 is out of range; allowed 2 to 1000"),
        (
            {"lora_weight": ["a", "b"], "lora_multiplier": [1.0, 0.5, 2.0]},
            "--lora_multiplier: 3 values for 2 --lora_weight files; give one value, or one per file",
        ),
        ({"prompt": "a", "from_file": "p.txt"}, "give --prompt or --from_file, not both"),
    ],
)
def test_generation_parameter_rules(values: dict, message: str) -> None:
    with pytest.raises(ConfigProblems) as err:
        validate_config(values)
    assert str(err.value) == message
