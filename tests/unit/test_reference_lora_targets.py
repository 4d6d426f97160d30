"""LoRA targets (issue 13, item 7): a LoRA written in the reference trainer's layout loads completely.

The reference's Qwen-Image network wraps every nn.Linear inside each ``QwenImageTransformerBlock`` (its
exclusion pattern ``.*(_mod_).*`` matches none of the block's module paths, so the modulation linears
``img_mod.1`` and ``txt_mod.1`` are trained too): 14 modules per block, named ``lora_unet_`` + the module
path with dots as underscores, each with ``.lora_down.weight`` [r, in], ``.lora_up.weight`` [out, r] and a
scalar ``.alpha``. Ours trains 12 per block by default; ``--network_args targets=musubi`` gives the 14.
The files here are rebuilt from those documented rules on the tiny demo DiT (2 blocks: 28 vs 24 modules).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwen_image_studio.errors import ConfigError
from qwen_image_studio.models.loading import load_dit
from qwen_image_studio.models.lora_apply import merge_loras, read_lora
from qwen_image_studio.models.lora_keys import select_targets, split_patterns
from qwen_image_studio.params.validate import ConfigProblems, validate_config
from qwen_image_studio.training.lora import apply_lora, linear_paths

BLOCK_LEAVES = {  # every nn.Linear of a Qwen-Image transformer block (what the reference wraps)
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",
    "attn.to_out.0", "attn.to_add_out", "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj",
    "txt_mlp.net.2", "img_mod.1", "txt_mod.1",
}  # fmt: skip


@pytest.fixture
def dit_path(demo: Path) -> Path:
    return demo / "models" / "comfyui" / "qwen_image_bf16.safetensors"


def _dit(path: Path) -> torch.nn.Module:
    return load_dit(path, dtype=torch.float32)


def reference_lora(dit: torch.nn.Module, path: Path, rank: int = 4, alpha: float = 2.0) -> dict:
    """A LoRA file as the reference trainer writes one for this DiT: every linear of every block."""
    g = torch.Generator().manual_seed(3)
    sd: dict[str, torch.Tensor] = {}
    for name, module in dit.named_modules():
        parts = name.split(".")
        if not (isinstance(module, torch.nn.Linear) and parts[0] == "transformer_blocks"):
            continue
        key = "lora_unet_" + name.replace(".", "_")
        sd[key + ".lora_down.weight"] = torch.randn(rank, module.in_features, generator=g) * 0.1
        sd[key + ".lora_up.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.1
        sd[key + ".alpha"] = torch.tensor(alpha)
    save_file(
        sd, str(path), metadata={"ss_network_module": "networks.lora_qwen_image", "ss_network_dim": "4"}
    )
    return sd


def test_target_sets_default_and_musubi(dit_path: Path) -> None:
    paths = list(linear_paths(_dit(dit_path)))
    default = select_targets(paths)
    musubi = select_targets(paths, targets="musubi")
    blocks = {p.split(".")[1] for p in musubi}
    assert len(blocks) == 2 and len(default) == 24 and len(musubi) == 28
    assert {p.split(".", 2)[2] for p in musubi} == BLOCK_LEAVES
    modulation = {f"transformer_blocks.{b}.{m}" for b in "01" for m in ("img_mod.1", "txt_mod.1")}
    assert set(musubi) - set(default) == modulation
    # the reference's spelling of the patterns, a Python list, is read too
    assert split_patterns("['.*img_mlp.*', '.*txt_mlp.*']") == [".*img_mlp.*", ".*txt_mlp.*"]
    assert split_patterns(".*img_mlp.*,.*txt_mlp.*") == [".*img_mlp.*", ".*txt_mlp.*"]
    no_mlp = select_targets(paths, exclude_patterns="['.*_mlp.*']", targets="musubi")
    assert len(no_mlp) == 28 - 8


def test_network_args_targets_is_checked() -> None:
    assert validate_config({"network_args": ["targets=musubi"]}).network_arg_dict()["targets"] == "musubi"
    with pytest.raises(ConfigProblems) as err:
        validate_config({"network_args": ["targets=all"]})
    assert "targets must be one of default, musubi (got 'all')" in str(err.value)


def test_network_weights_from_the_reference_loads_every_module(dit_path: Path, tmp_path: Path) -> None:
    """--network_weights with the reference's 28-module file on our default 24 targets: the 4 modulation
    modules are created, every key is loaded (none left out), and a save writes all 28 back unchanged."""
    dit = _dit(dit_path)
    base = {n: m.weight.detach().clone() for n, m in dit.named_modules() if isinstance(m, torch.nn.Linear)}
    sd = reference_lora(dit, tmp_path / "musubi_lora.safetensors")
    network = apply_lora(dit, rank=4, alpha=1.0)
    assert len(network) == 24
    loaded = network.load_weights(tmp_path / "musubi_lora.safetensors")
    assert loaded == len(network) == 28
    out = network.state_dict_for_file(torch.float32)
    assert set(out) == set(sd)  # every key of the file, and nothing else
    for key, tensor in sd.items():
        torch.testing.assert_close(out[key], tensor.float())
    mod = dit.get_submodule("transformer_blocks.1.img_mod.1")
    assert mod.rank == 4 and mod.scale == pytest.approx(2.0 / 4)  # the file's rank and alpha
    assert mod.lora_down.weight.requires_grad and mod.base.weight.requires_grad is False
    assert torch.equal(mod.base.weight, base["transformer_blocks.1.img_mod.1"])  # the base stays frozen
    assert any(p is mod.lora_down.weight for p in network.parameters())  # the optimizer sees them


def test_musubi_targets_need_no_creation(dit_path: Path, tmp_path: Path) -> None:
    dit = _dit(dit_path)
    reference_lora(dit, tmp_path / "musubi_lora.safetensors")
    network = apply_lora(dit, rank=4, alpha=2.0, target_set="musubi")
    assert len(network) == 28
    assert network.load_weights(tmp_path / "musubi_lora.safetensors") == 28


def test_a_module_the_dit_lacks_is_still_refused(dit_path: Path, tmp_path: Path) -> None:
    dit = _dit(dit_path)
    sd = reference_lora(dit, tmp_path / "lora.safetensors")
    sd["lora_unet_transformer_blocks_7_attn_to_q.lora_down.weight"] = torch.zeros(4, 8)
    sd["lora_unet_transformer_blocks_7_attn_to_q.lora_up.weight"] = torch.zeros(8, 4)
    save_file(sd, str(tmp_path / "other.safetensors"))
    network = apply_lora(dit, rank=4, alpha=1.0)
    with pytest.raises(ConfigError, match="not trained here, e.g. lora_unet_transformer_blocks_7_attn_to_q"):
        network.load_weights(tmp_path / "other.safetensors")


def test_generation_merges_all_28_modules(dit_path: Path, tmp_path: Path) -> None:
    """--lora_weight with the reference's file: each of the 28 linears, modulation included, gets exactly
    up @ down * alpha / rank added."""
    dit = _dit(dit_path)
    sd = reference_lora(dit, tmp_path / "musubi_lora.safetensors")
    before = {n: m.weight.detach().clone() for n, m in dit.named_modules() if isinstance(m, torch.nn.Linear)}
    assert merge_loras(dit, [read_lora(tmp_path / "musubi_lora.safetensors")], [0.5]) == 28
    for name, module in dit.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        key = "lora_unet_" + name.replace(".", "_")
        if key + ".lora_down.weight" in sd:
            delta = sd[key + ".lora_up.weight"] @ sd[key + ".lora_down.weight"] * (2.0 / 4) * 0.5
            torch.testing.assert_close(module.weight, before[name] + delta)
        else:
            assert torch.equal(module.weight, before[name])
    assert load_file(str(tmp_path / "musubi_lora.safetensors")).keys() == sd.keys()
