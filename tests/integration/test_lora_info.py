"""LoRA details (``models/lora_info``): the trained demo LoRA, its diffusers-form conversion, a reference-style
LoRA with modulation targets and mixed ranks, and files that are no LoRA (one line each).

The facts are read from the safetensors header (no tensor is loaded) and must agree with what the LoRA
loader (``lora_apply.read_lora``, which loads every tensor) finds in the same file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import train_support as ts
from safetensors.torch import save_file

from qwen_image_studio.errors import ModelFileError
from qwen_image_studio.models.lora_apply import read_lora
from qwen_image_studio.models.lora_convert import convert_lora
from qwen_image_studio.models.lora_info import lora_info, target_group
from qwen_image_studio.models.lora_keys import ALPHA, DOWN, UP, lora_name

DEMO_BLOCKS = 2  # the demo DiT's transformer blocks


@pytest.fixture(scope="session")
def trained_lora(demo: Path, t2i: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LoRA a 3-step demo training writes (rank 4, alpha 4, bf16, the trainer's header)."""
    out = tmp_path_factory.mktemp("trained_lora")
    assert ts.train(ts.train_argv(demo, t2i, out)) == 0, ts.failure(out / "events.jsonl")
    return out / "lora.safetensors"


def test_the_trained_demo_lora(trained_lora: Path) -> None:
    info = lora_info(trained_lora)
    loaded = read_lora(trained_lora)
    assert (info.form, loaded.form) == ("kohya", "lora_unet")
    assert info.form_label == "ComfyUI / kohya (lora_unet_)"
    assert info.modules == len(loaded.pairs) == 12 * DEMO_BLOCKS
    assert (info.rank, info.ranks, loaded.ranks) == (4, [4], [4])
    assert info.alphas == [4.0] and info.alpha_source == "tensors"
    assert info.dtypes == ["BF16"] and info.file_size == trained_lora.stat().st_size
    assert info.targets == {"attention": 8 * DEMO_BLOCKS, "mlp": 4 * DEMO_BLOCKS, "modulation": 0, "other": 0}
    assert info.blocks == DEMO_BLOCKS
    assert (info.model_version, info.base_model) == ("original", "qwen_image_bf16.safetensors")
    assert info.training["ss_network_dim"] == "4" and info.training["ss_steps"] == "3"
    assert info.training["ss_network_module"] == "networks.lora_qwen_image"
    assert info.training_config is not None and info.training_config["learning_rate"] == 1e-3
    assert info.hash and len(info.hash) == 64
    assert info.validation_loss is None  # trained without a validation dataset
    assert json.loads(json.dumps(info.as_json()))["modules"] == info.modules  # JSON-ready


def test_a_validation_loss_in_the_header_is_read(trained_lora: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    from qwen_image_studio.models.lora_info import VALIDATION_LOSS_KEY

    with safe_open(str(trained_lora), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118
    for raw, read in (("0.125", 0.125), ("nan", None), ("not a number", None)):
        save_file(tensors, str(tmp_path / "v.safetensors"), metadata={**meta, VALIDATION_LOSS_KEY: raw})
        assert lora_info(tmp_path / "v.safetensors").validation_loss == read


def test_its_diffusers_form(trained_lora: Path, tmp_path: Path) -> None:
    peft = convert_lora(trained_lora, tmp_path / "peft.safetensors", "diffusers")
    info = lora_info(peft)
    assert (info.form, read_lora(peft).form) == ("diffusers", "diffusers")
    assert info.modules == 12 * DEMO_BLOCKS and info.ranks == [4]
    # the scale alpha / rank is folded into lora_B; the header's lora_alpha says so (alpha = rank)
    assert info.alphas == [4.0] and info.alpha_source == "header"
    assert info.targets["attention"] == 8 * DEMO_BLOCKS and info.blocks == DEMO_BLOCKS
    assert info.training["ss_network_dim"] == "4" and info.model_version == "original"  # the header is kept


def test_a_reference_style_lora_with_modulation_and_mixed_ranks(tmp_path: Path) -> None:
    """musubi's default network also trains img_mod.1 / txt_mod.1; a LoRA may mix ranks (e.g. resized)."""
    sd = {}
    modules = {"transformer_blocks.0.attn.to_q": (8, 16, 16), "transformer_blocks.0.img_mod.1": (2, 16, 96),
               "transformer_blocks.1.txt_mod.1": (2, 16, 96), "transformer_blocks.1.img_mlp.net.2": (8, 64, 16),
               "proj_out": (8, 16, 64)}  # fmt: skip
    for module, (rank, fan_in, fan_out) in modules.items():
        name = lora_name(module)
        sd[name + DOWN] = torch.zeros(rank, fan_in, dtype=torch.float16)
        sd[name + UP] = torch.zeros(fan_out, rank, dtype=torch.float16)
        sd[name + ALPHA] = torch.tensor(float(rank) / 2, dtype=torch.float16)
    file = tmp_path / "musubi.safetensors"
    save_file(sd, str(file), metadata={"ss_network_dim": "8", "ss_network_module": "networks.lora_qwen_image"})
    info = lora_info(file)
    assert (info.modules, info.ranks, info.rank) == (5, [2, 8], 8)
    assert info.alphas == [1.0, 4.0] and info.dtypes == ["F16"]
    assert info.targets == {"attention": 1, "mlp": 1, "modulation": 2, "other": 1} and info.blocks == 2
    assert info.model_version is None and info.training_config is None
    assert info.training == {"ss_network_dim": "8", "ss_network_module": "networks.lora_qwen_image"}


def test_target_groups_in_both_namings() -> None:
    assert target_group("lora_unet_transformer_blocks_3_attn_add_k_proj") == "attention"
    assert target_group("transformer_blocks.3.txt_mlp.net.0.proj") == "mlp"
    assert target_group("lora_unet_transformer_blocks_3_img_mod_1") == "modulation"
    assert target_group("lora_unet_img_in") == "other"


def test_files_that_are_no_lora_are_one_line(demo: Path, trained_lora: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file at all, just text" * 10)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(trained_lora.read_bytes()[:50])
    cases = {
        garbage: "is not a .safetensors file",
        truncated: "is not a .safetensors file",
        demo / "models" / "comfyui" / "qwen_image_bf16.safetensors": "is not a LoRA file: it is a Qwen-Image DiT",
        tmp_path / "missing.safetensors": "does not exist",
        tmp_path: "is a folder",
    }
    for path, says in cases.items():
        with pytest.raises(ModelFileError) as err:
            lora_info(path)
        text = str(err.value)
        assert text.startswith(f"{path}: ") and says in text and "\n" not in text, text
