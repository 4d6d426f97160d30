"""qwen_image_generate_image.py (issue 13, items 6 and 3): the reference trainer's generation command lines.

The command lines are the ones its Qwen-Image documentation shows (docs/qwen_image.md, "Inference"), run
on the demo models with the image size and step count cut down for the CPU. Every flag its parser
defines is either accepted with the same meaning or refused by name in one line that says why.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from qwen_image_studio.params.cli import build_parser, parse_args
from qwen_image_studio.params.spec import STAGE_SCRIPTS, Stage
from qwen_image_studio.stages.runner import main as run_stage

ROOT = Path(__file__).resolve().parents[2]

# Every flag the reference's qwen_image_generate_image.py defines (its parser, read on 2026-06-24).
REFERENCE_FLAGS = (
    "dit", "num_layers", "disable_numpy_memmap", "edit", "edit_plus", "model_version", "vae",
    "vae_enable_tiling", "text_encoder", "lora_weight", "lora_multiplier", "include_patterns",
    "exclude_patterns", "save_merged_model", "guidance_scale", "prompt", "negative_prompt",
    "automatic_prompt_lang_for_layered", "image_size", "output_layers", "control_image_path", "mask_path",
    "resize_control_to_image_size", "resize_control_to_official_size", "infer_steps", "save_path", "seed",
    "embedded_cfg_scale", "flow_shift", "fp8", "fp8_scaled", "text_encoder_cpu", "device", "attn_mode",
    "blocks_to_swap", "use_pinned_memory_for_block_swap", "output_type", "no_metadata", "latent_path",
    "lycoris", "append_original_name", "compile", "compile_backend", "compile_mode", "compile_dynamic",
    "compile_fullgraph", "compile_cache_size_limit", "rcm_threshold", "rcm_relative_threshold",
    "rcm_kernel_size", "rcm_dilate_size", "rcm_debug_save", "from_file", "interactive", "bell",
)  # fmt: skip
REFUSED = {  # flag (with a value when it takes one) -> a word of the reason it gives
    "--mask_path m.png": "inpainting", "--rcm_threshold 0.2": "consistency mask",
    "--rcm_relative_threshold": "consistency mask", "--rcm_kernel_size 3": "consistency mask",
    "--rcm_dilate_size 1": "consistency mask", "--rcm_debug_save": "consistency mask",
    "--resize_control_to_image_size": "official pipeline", "--interactive": "console",
    "--lycoris": "LyCORIS", "--automatic_prompt_lang_for_layered en": "Layered", "--output_layers 4": "Layered",
    "--compile_backend eager": "torch.compile", "--compile_mode max-autotune": "torch.compile",
    "--compile_dynamic true": "torch.compile", "--compile_fullgraph": "torch.compile",
    "--compile_cache_size_limit 64": "cache size limit", "--attn_mode sageattn": "SageAttention",
    "--model_version layered": "Layered",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _drop_log_handlers() -> object:
    yield
    logging.getLogger().handlers.clear()


def _models(demo: Path, dit: str = "qwen_image_bf16.safetensors") -> list[str]:
    comfy = demo / "models" / "comfyui"
    return ["--dit", str(comfy / dit), "--vae", str(comfy / "qwen_image_vae.safetensors"),
            "--text_encoder", str(comfy / "qwen_2.5_vl_7b.safetensors"),
            "--device", "cpu", "--mixed_precision", "no"]  # fmt: skip


def _reference_lora(demo: Path, path: Path) -> Path:
    """A LoRA in the reference's layout: all 14 linears of every block, modulation included."""
    from qwen_image_studio.models.loading import load_dit

    dit = load_dit(demo / "models" / "comfyui" / "qwen_image_bf16.safetensors", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for name, module in dit.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("transformer_blocks."):
            key = "lora_unet_" + name.replace(".", "_")
            sd[key + ".lora_down.weight"] = torch.randn(2, module.in_features, generator=g) * 0.1
            sd[key + ".lora_up.weight"] = torch.randn(module.out_features, 2, generator=g) * 0.1
            sd[key + ".alpha"] = torch.tensor(2.0)
    save_file(sd, str(path))
    return path


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert run_stage(Stage.GENERATE, argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_the_launcher_is_registered_and_lists_refused_flags() -> None:
    assert STAGE_SCRIPTS[Stage.GENERATE] == "qwen_image_generate_image.py"
    out = subprocess.run(
        [sys.executable, "qwen_image_generate_image.py", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("usage: qwen_image_generate_image.py"), out.stderr
    assert "--mask_path" in out.stdout and "not supported" in out.stdout
    assert "--control_text_encoder_size" in out.stdout


def test_every_reference_flag_is_accepted_or_refused_by_name() -> None:
    known = {s for action in build_parser(Stage.GENERATE)._actions for s in action.option_strings}
    assert [f for f in REFERENCE_FLAGS if f"--{f}" not in known] == []


@pytest.mark.parametrize("given", sorted(REFUSED))
def test_refused_flags_say_why_in_one_line(
    given: str, demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*_models(demo), "--prompt", "x", "--save_path", str(tmp_path), *given.split()]
    line = _error(argv, capsys)
    assert line.startswith(f"error: {given.split()[0]}") and "not supported here" in line
    assert REFUSED[given] in line
    assert not list(tmp_path.iterdir())


def test_accepted_spellings_and_no_ops() -> None:
    config, _ = parse_args(
        Stage.GENERATE,
        ["--fp8", "--attn_mode", "flash", "--compile", "--compile_backend", "inductor", "--compile_mode",
         "default", "--compile_dynamic", "auto", "--resize_control_to_official_size",
         "--use_pinned_memory_for_block_swap", "--disable_numpy_memmap", "--embedded_cfg_scale", "3.5",
         "--edit_plus"],
    )  # fmt: skip
    assert config.fp8_base and config.flash_attn and config.compile
    assert config.model_version == "edit-2509" and config.resize_control_to_official_size
    torch_mode, _ = parse_args(Stage.GENERATE, ["--attn_mode", "torch"])
    assert not (torch_mode.flash_attn or torch_mode.xformers) and torch_mode.sdpa
    for stage in (Stage.CACHE_TEXT, Stage.TRAIN):  # accepted (a no-op) wherever an edit control is encoded
        config, _ = parse_args(stage, ["--resize_control_to_official_size", "--control_text_encoder_size",
                                       "reference"])  # fmt: skip
        assert config.resize_control_to_official_size and config.control_text_encoder_size == "reference"


def test_documented_text_to_image_command(demo: Path, tmp_path: Path) -> None:
    """The docs' standard inference command, with a LoRA in the reference's layout (28 modules)."""
    lora = _reference_lora(demo, tmp_path / "lora.safetensors")
    out = tmp_path / "out"
    argv = [*_models(demo), "--prompt", "A cat", "--negative_prompt", " ", "--image_size", "64", "48",
            "--infer_steps", "3", "--guidance_scale", "4.0", "--attn_mode", "sdpa", "--save_path", str(out),
            "--output_type", "images", "--seed", "1234", "--lora_multiplier", "1.0", "--lora_weight", str(lora)]  # fmt: skip
    assert run_stage(Stage.GENERATE, argv) == 0
    (png,) = out.iterdir()
    assert png.name.endswith("_00_1234.png") and Image.open(png).size == (48, 64)


def test_output_type_latent_and_decoding_it_give_the_same_image(demo: Path, tmp_path: Path) -> None:
    """latent: a safetensors file with key 'latent' (1, 16, 1, H/8, W/8) and the reference's metadata keys;
    latent_images: that file and the PNG; --latent_path: the file decoded, equal to the PNG."""
    common = [*_models(demo), "--prompt", "A cat", "--image_size", "64", "48", "--infer_steps", "2",
              "--seed", "7", "--flow_shift", "3.0"]  # fmt: skip
    assert (
        run_stage(Stage.GENERATE, [*common, "--save_path", str(tmp_path / "a"), "--output_type", "latent"])
        == 0
    )
    (latent_file,) = (tmp_path / "a").iterdir()
    assert latent_file.name.endswith("_00_7_latent.safetensors")
    with safe_open(str(latent_file), framework="pt") as fh:
        assert list(fh.keys()) == ["latent"]
        assert tuple(fh.get_tensor("latent").shape) == (1, 16, 1, 8, 6)
        meta = fh.metadata()
    assert {k: meta[k] for k in ("seeds", "prompt", "height", "width", "infer_steps")} == {
        "seeds": "7", "prompt": "A cat", "height": "64", "width": "48", "infer_steps": "2"
    }  # fmt: skip
    assert {"embedded_cfg_scale", "guidance_scale"} <= set(meta)

    assert run_stage(Stage.GENERATE, [*common, "--save_path", str(tmp_path / "b"), "--output_type",
                                      "latent_images", "--no_metadata"]) == 0  # fmt: skip
    files = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert [f.split("_", 1)[1] for f in files] == ["00_7.png", "00_7_latent.safetensors"]
    png_b = tmp_path / "b" / files[0]
    assert not Image.open(png_b).text  # --no_metadata
    with safe_open(str(tmp_path / "b" / files[1]), framework="pt") as fh:
        assert not fh.metadata()

    assert run_stage(Stage.GENERATE, [*common, "--save_path", str(tmp_path / "c")]) == 0
    (png_c,) = (tmp_path / "c").iterdir()
    assert np.array_equal(np.asarray(Image.open(png_b)), np.asarray(Image.open(png_c)))

    decode = [*_models(demo), "--latent_path", str(latent_file), "--save_path", str(tmp_path / "d")]
    assert run_stage(Stage.GENERATE, decode) == 0
    (png_d,) = (tmp_path / "d").iterdir()
    assert png_d.name.endswith(f"_00_7_{latent_file.stem}.png")  # seed from the header, the file's name
    assert np.array_equal(np.asarray(Image.open(png_d)), np.asarray(Image.open(png_c)))


def test_documented_edit_command(demo: Path, tmp_path: Path) -> None:
    """The docs' edit command (--model_version edit-2511 --resize_control_to_official_size) with the
    reference's --append_original_name and --text_encoder_cpu."""
    control = demo / "dataset" / "controls" / "demo_00.png"
    out = tmp_path / "out"
    argv = [*_models(demo, "qwen_image_edit_2511_bf16.safetensors"), "--model_version", "edit-2511",
            "--control_image_path", str(control), "--prompt", "Change the background to a beach",
            "--resize_control_to_official_size", "--image_size", "64", "64", "--infer_steps", "2",
            "--save_path", str(out), "--append_original_name", "--text_encoder_cpu", "--vae_enable_tiling"]  # fmt: skip
    assert run_stage(Stage.GENERATE, argv) == 0
    (png,) = out.iterdir()
    assert png.name.endswith("_00_42_demo_00.png")


def test_num_layers_is_checked_against_the_file(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*_models(demo), "--prompt", "x", "--image_size", "32", "32", "--infer_steps", "2",
            "--save_path", str(tmp_path)]  # fmt: skip
    assert run_stage(Stage.GENERATE, [*argv, "--num_layers", "60"]) == 2  # said once the DiT is read
    errors = [line for line in capsys.readouterr().err.splitlines() if not line[:2].isdigit()]  # no log lines
    assert errors == [
        "error: --num_layers 60: the --dit file has 2 blocks (the block count is read from the file; "
        "leave the flag out)"
    ]
    assert run_stage(Stage.GENERATE, [*argv, "--num_layers", "2"]) == 0


def test_lora_include_exclude_patterns(demo: Path, tmp_path: Path) -> None:
    """--exclude_patterns drops LoRA modules by name: excluding every module gives the plain model's image."""
    lora = _reference_lora(demo, tmp_path / "lora.safetensors")
    common = [*_models(demo), "--prompt", "A cat", "--image_size", "32", "32", "--infer_steps", "2"]

    def image(name: str, *extra: str) -> np.ndarray:
        assert run_stage(Stage.GENERATE, [*common, "--save_path", str(tmp_path / name), *extra]) == 0
        (png,) = (tmp_path / name).iterdir()
        return np.asarray(Image.open(png))

    plain = image("plain")
    with_lora = image("lora", "--lora_weight", str(lora))
    excluded = image("excluded", "--lora_weight", str(lora), "--exclude_patterns", "lora_unet_")
    only_mod = image("mod", "--lora_weight", str(lora), "--include_patterns", "_mod_1")
    assert not np.array_equal(plain, with_lora) and np.array_equal(plain, excluded)
    assert not np.array_equal(plain, only_mod) and not np.array_equal(with_lora, only_mod)
