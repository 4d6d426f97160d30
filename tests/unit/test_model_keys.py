"""The demo single files carry the release files' key names; only block counts and sizes differ.

The full-size architectures are built on the meta device from the built-in configs and mapped to
ComfyUI names with the same key maps the loaders use.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from safetensors import safe_open

from qwen_image_studio.demo.models import create_demo_models
from qwen_image_studio.models import arch, configs, keymaps
from qwen_image_studio.models.writing import (
    comfy_dit_state_dict,
    comfy_text_encoder_state_dict,
    comfy_vae_state_dict,
)

# Block containers whose count differs between tiny and full size (the VAE keeps its full structure).
BLOCKS = {
    "dit": (r"model\.diffusion_model\.transformer_blocks\.(\d+)\.",),
    "vae": (),
    "text_encoder": (r"model\.layers\.(\d+)\.", r"visual\.blocks\.(\d+)\."),
}
# Published sizes of the release single files (bytes): tensors in bf16 plus a JSON header under 1 MB.
RELEASE_FILE_BYTES = {
    "dit": 40_861_031_488,  # qwen_image_*_bf16.safetensors
    "vae": 253_806_246,  # qwen_image_vae.safetensors
    "text_encoder": 16_584_415_576,  # qwen_2.5_vl_7b.safetensors (lm_head.weight included)
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return create_demo_models(tmp_path_factory.mktemp("demo-models"))


@pytest.fixture(scope="module")
def full_size() -> dict[str, dict[str, torch.Size]]:
    """ComfyUI-named shapes of the full-size DiT, VAE and text encoder, built on the meta device."""
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    with init_empty_weights():
        dit = QwenImageTransformer2DModel(**configs.dit_config("full"))
        vae = AutoencoderKLQwenImage(**configs.vae_config("full"))
        te = Qwen2_5_VLForConditionalGeneration(
            configs.qwen_vl_config(configs.text_encoder_config_for("full"))
        )
    return {
        "dit": {k: v.shape for k, v in comfy_dit_state_dict(dit.state_dict()).items()},
        "vae": {k: v.shape for k, v in comfy_vae_state_dict(vae.state_dict()).items()},
        "text_encoder": {k: v.shape for k, v in comfy_text_encoder_state_dict(te.state_dict()).items()},
        "diffusers_vae": {k: v.shape for k, v in vae.state_dict().items()},
    }


def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118


def _split(keys: dict[str, tuple], patterns: tuple[str, ...]) -> tuple[dict, dict]:
    """(keys outside blocks -> ndim, {container: {block index: {suffix -> ndim}}})."""
    outside: dict[str, int] = {}
    blocks: dict[str, dict[int, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for key, shape in keys.items():
        for pattern in patterns:
            m = re.match(pattern, key)
            if m:
                blocks[pattern][int(m.group(1))][key[m.end() :]] = len(shape)
                break
        else:
            outside[key] = len(shape)
    return outside, blocks


@pytest.mark.parametrize("kind", ["dit", "vae", "text_encoder"])
def test_demo_file_names_equal_release_names(kind: str, demo: dict[str, Path], full_size: dict) -> None:
    tiny = _file_shapes(demo[kind])
    if kind == "dit":
        tiny.pop(keymaps.dit_to_comfy(keymaps.DIT_2511_FLAG), None)
    tiny_out, tiny_blocks = _split(tiny, BLOCKS[kind])
    full_out, full_blocks = _split(full_size[kind], BLOCKS[kind])
    assert tiny_out == full_out  # same names (and ranks) outside the blocks
    assert tiny_blocks.keys() == full_blocks.keys()
    for container in full_blocks:
        reference = full_blocks[container][0]
        assert all(block == reference for block in full_blocks[container].values())
        assert all(block == reference for block in tiny_blocks[container].values())
        assert sorted(tiny_blocks[container]) == list(range(len(tiny_blocks[container])))
        assert len(tiny_blocks[container]) < len(full_blocks[container])


def test_edit_dits_share_names_and_2511_carries_its_flag(demo: dict[str, Path]) -> None:
    t2i = set(_file_shapes(demo["dit"]))
    assert set(_file_shapes(demo["dit_edit_2509"])) == t2i
    flag = keymaps.dit_to_comfy(keymaps.DIT_2511_FLAG)
    assert set(_file_shapes(demo["dit_edit_2511"])) == t2i | {flag}
    assert all(k.startswith("model.diffusion_model.") for k in t2i)


@pytest.mark.parametrize("kind", ["dit", "vae", "text_encoder"])
def test_full_size_configs_give_the_release_file_sizes(kind: str, full_size: dict) -> None:
    tensor_bytes = sum(2 * torch.Size(s).numel() for s in full_size[kind].values())
    header = RELEASE_FILE_BYTES[kind] - tensor_bytes
    assert 0 < header < 1_000_000


def test_text_encoder_release_names(full_size: dict) -> None:
    names = full_size["text_encoder"]
    assert "lm_head.weight" in names and "model.embed_tokens.weight" in names
    assert "visual.merger.mlp.2.weight" in names
    assert all(
        k.startswith(("model.layers.", "model.embed_tokens.", "model.norm.", "visual.", "lm_head."))
        for k in names
    )
    assert names["model.layers.0.self_attn.k_proj.weight"] == (512, 3584)  # 4 KV heads x 128


def test_vae_map_agrees_with_diffusers_wan_converter(full_size: dict) -> None:
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    comfy = full_size["vae"]
    assert any(k.startswith("decoder.upsamples.") for k in comfy) and "conv1.weight" in comfy
    converted = convert_wan_vae_to_diffusers(dict.fromkeys(comfy, 0))
    assert set(converted) == set(full_size["diffusers_vae"])
    # and back: the inverse map restores every ComfyUI name
    layout = keymaps.vae_layout_from_keys(comfy)
    assert layout == keymaps.VaeLayout(num_levels=4, num_res_blocks=2)
    assert {keymaps.vae_to_comfy(keymaps.vae_from_comfy(k, layout), layout) for k in comfy} == set(comfy)
    assert keymaps.is_comfy_vae(comfy) and not keymaps.is_comfy_vae(full_size["diffusers_vae"])


def test_text_encoder_map_round_trips(full_size: dict) -> None:
    for key in full_size["text_encoder"]:
        module = keymaps.text_encoder_from_comfy(key)
        assert module.startswith(("model.language_model.", "model.visual.", "lm_head."))
        assert keymaps.text_encoder_to_comfy(module) == key
        assert keymaps.text_encoder_from_comfy(module) == module  # nested names pass through


@pytest.mark.parametrize("size", ["full", "tiny"])
def test_configs_are_recovered_from_shapes(size: str, full_size: dict, demo: dict[str, Path]) -> None:
    if size == "full":
        dit = {keymaps.dit_from_comfy(k): v for k, v in full_size["dit"].items()}
        vae, te = full_size["diffusers_vae"], full_size["text_encoder"]
    else:
        dit = {keymaps.dit_from_comfy(k): v for k, v in _file_shapes(demo["dit"]).items()}
        comfy_vae = _file_shapes(demo["vae"])
        vae = {keymaps.vae_from_comfy(k): v for k, v in comfy_vae.items()}
        te = _file_shapes(demo["text_encoder"])
    assert arch.infer_dit_config(dit) == configs.dit_config(size)  # type: ignore[arg-type]
    inferred_vae = arch.infer_vae_config(vae)
    inferred_vae.pop("input_channels")
    assert inferred_vae == configs.vae_config(size)  # type: ignore[arg-type]
    assert arch.infer_text_encoder_config(te) == configs.text_encoder_config_for(size)  # type: ignore[arg-type]


def test_full_text_encoder_config_is_the_release_one() -> None:
    cfg = configs.text_encoder_config_for("full")
    assert cfg["text_config"]["rope_scaling"]["mrope_section"] == [16, 24, 24]
    assert cfg["vision_config"]["fullatt_block_indexes"] == [7, 15, 23, 31]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"]) == (3584, 28, 4)
    tiny = configs.text_encoder_config_for("tiny")
    head_dim = tiny["hidden_size"] // tiny["num_attention_heads"]
    assert sum(tiny["rope_scaling"]["mrope_section"]) * 2 == head_dim
    assert (
        tiny["vision_config"]["out_hidden_size"]
        == tiny["hidden_size"]
        == configs.dit_config("tiny")["joint_attention_dim"]
    )
    assert tiny["vocab_size"] == 152064
    assert (
        sum(configs.dit_config("tiny")["axes_dims_rope"]) == configs.dit_config("tiny")["attention_head_dim"]
    )


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("dit", "dit"), ("dit_edit_2511", "dit"), ("vae", "vae"), ("text_encoder", "text_encoder")],
)
def test_detect_kind_of_demo_files(kind: str, expected: str, demo: dict[str, Path]) -> None:
    assert keymaps.detect_kind(_file_shapes(demo[kind])) == expected


def test_detect_kind_of_other_files() -> None:
    assert keymaps.detect_kind(["lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight"]) == "lora"
    assert keymaps.detect_kind(["diffusion_model.transformer_blocks.0.attn.to_q.lora_A.weight"]) == "lora"
    assert keymaps.detect_kind(["foo.weight"]) == "unknown"


def test_a_dit_named_for_another_model_version_is_flagged() -> None:
    from qwen_image_studio.models.configs import version_from_name, version_name_warning

    assert version_from_name("models/qwen_image_edit_2509_fp8_e4m3fn.safetensors") == "edit-2509"
    assert version_from_name("/m/Qwen-Image-Edit-2511/transformer") == "edit-2511"
    assert version_from_name("/m/Qwen-Image-Edit/transformer/diffusion_pytorch_model-00001-of-00002.safetensors") == "edit"
    assert version_from_name("/m/Qwen-Image/transformer/diffusion_pytorch_model.safetensors") == "original"
    assert version_from_name("/data/my_finetune.safetensors") is None  # says nothing: no warning
    assert version_name_warning("qwen_image_bf16.safetensors", "original") is None
    warning = version_name_warning("qwen_image_bf16.safetensors", "edit-2509")
    assert warning is not None and "--model_version original" in warning and "is edit-2509" in warning
    assert version_name_warning("/data/my_finetune.safetensors", "edit") is None
