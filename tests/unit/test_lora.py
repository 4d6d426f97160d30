"""The LoRA network: injection, maths, parameter groups, the file (keys, alpha, metadata, hash) and atomic saves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from qwen_image_studio.atomic import file_data_sha256, remove_stale_temp_files
from qwen_image_studio.errors import ConfigError
from qwen_image_studio.models import lora_keys
from qwen_image_studio.params.schema import StudioConfig
from qwen_image_studio.training.lora import LoRALinear, apply_lora, file_metadata, read_lora_file


@pytest.fixture
def dit() -> nn.Module:
    from diffusers import QwenImageTransformer2DModel

    from qwen_image_studio.models.configs import dit_config

    torch.manual_seed(0)
    return QwenImageTransformer2DModel(**dit_config("tiny")).eval()


def _inputs(dit: nn.Module) -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "hidden_states": torch.randn(1, 12, 64, generator=g),
        "encoder_hidden_states": torch.randn(1, 5, dit.config.joint_attention_dim, generator=g),
        "timestep": torch.tensor([0.4]),
        "img_shapes": [[(1, 3, 4)]],
        "return_dict": False,
    }


def test_lora_wraps_the_block_linears_and_starts_as_the_base_model(dit: nn.Module) -> None:
    before = dit(**_inputs(dit))[0]
    network = apply_lora(dit, rank=4, alpha=2.0)
    assert len(network) == 12 * dit.config.num_layers
    assert "lora_unet_transformer_blocks_0_attn_to_q" in network.layers
    assert "lora_unet_transformer_blocks_1_img_mlp_net_2" in network.layers
    assert isinstance(dit.transformer_blocks[0].attn.to_out[0], LoRALinear)
    trainable = {n for n, p in dit.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_down." in n or ".lora_up." in n for n in trainable)
    assert len(network.parameters()) == 2 * len(network)
    torch.testing.assert_close(dit(**_inputs(dit))[0], before)  # up starts at zero


def test_lora_update_is_up_down_times_alpha_over_rank_times_multiplier() -> None:
    base = nn.Linear(8, 6)
    layer = LoRALinear(base, rank=2, alpha=1.0, multiplier=0.5)
    nn.init.normal_(layer.lora_up.weight)
    x = torch.randn(3, 8)
    expected = base(x) + x @ layer.lora_down.weight.T @ layer.lora_up.weight.T * (1.0 / 2) * 0.5
    torch.testing.assert_close(layer(x), expected)
    assert not base.weight.requires_grad
    bound = 1 / 8**0.5  # kaiming_uniform(a=sqrt(5)) on fan_in 8
    assert float(layer.lora_down.weight.detach().abs().max()) <= bound


def test_under_autocast_lora_computes_in_the_autocast_dtype_and_keeps_float32_weights() -> None:
    base = nn.Linear(32, 16).to(torch.bfloat16)
    layer = LoRALinear(base, rank=4, alpha=4)
    nn.init.normal_(layer.lora_up.weight)
    x = torch.randn(5, 32, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    expected = base(x).float() + (x.float() @ layer.lora_down.weight.T @ layer.lora_up.weight.T)
    assert torch.allclose(out.float(), expected, rtol=0.05, atol=0.05)
    out.float().square().sum().backward()
    assert layer.lora_down.weight.grad is not None and layer.lora_down.weight.grad.dtype == torch.float32


def test_dropout_acts_on_the_down_output_in_training_only() -> None:
    layer = LoRALinear(nn.Linear(16, 16), rank=8, alpha=8, dropout=0.5)
    nn.init.normal_(layer.lora_up.weight)
    x = torch.randn(4, 16)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


def test_include_and_exclude_patterns(dit: nn.Module) -> None:
    network = apply_lora(dit, 4, 4, include_patterns=r".*img_mod\.1", exclude_patterns=r".*txt_mlp.*")
    names = set(network.layers)
    assert "lora_unet_transformer_blocks_0_img_mod_1" in names
    assert not any("txt_mlp" in n for n in names)
    with pytest.raises(ConfigError, match="--network_args"):
        apply_lora(nn.Sequential(nn.Linear(2, 2)), 4, 4)


def test_loraplus_groups_put_up_matrices_at_lr_times_ratio(dit: nn.Module) -> None:
    network = apply_lora(dit, 4, 4)
    (single,) = network.param_groups(1e-4)
    assert single["lr"] == 1e-4 and len(single["params"]) == 2 * len(network)
    down, up = network.param_groups(1e-4, 4.0)
    assert down["lr"] == 1e-4 and up["lr"] == pytest.approx(4e-4)
    assert all(p is m.lora_up.weight for p, m in zip(up["params"], network.modules(), strict=True))


def test_saved_file_has_lora_unet_keys_alpha_metadata_and_hash(dit: nn.Module, tmp_path: Path) -> None:
    network = apply_lora(dit, 4, 2.0)
    for m in network.modules():
        nn.init.normal_(m.lora_up.weight)
    config = StudioConfig(
        dit="/models/qwen_image_bf16.safetensors",
        output_name="x",
        network_dim=4,
        network_alpha=2.0,
        model_version="original",
    )
    path = network.save(
        tmp_path / "x.safetensors", torch.bfloat16, file_metadata(config, epoch=1, step=10, started_at=0.0)
    )
    tensors, meta = read_lora_file(path)
    name = lora_keys.lora_name("transformer_blocks.0.attn.to_q")
    assert tensors[name + lora_keys.DOWN].shape == (4, 32) and tensors[name + lora_keys.UP].shape == (32, 4)
    assert tensors[name + lora_keys.ALPHA].item() == 2.0
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    assert len(tensors) == 3 * len(network)
    assert meta["ss_network_module"] == "networks.lora_qwen_image"
    assert meta["ss_architecture"] == "qwen_image" and meta["ss_model_version"] == "original"
    assert meta["ss_base_model"] == "qwen_image_bf16.safetensors"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2" and meta["ss_steps"] == "10"
    assert '"learning_rate"' in meta["qis_training_config"]
    assert meta["sshs_model_hash"] == file_data_sha256(path)  # sha256 of the tensor data as stored
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_network_weights_load_back_and_a_rank_mismatch_is_named(dit: nn.Module, tmp_path: Path) -> None:
    network = apply_lora(dit, 4, 2.0)
    for m in network.modules():
        nn.init.normal_(m.lora_up.weight)
    path = network.save(tmp_path / "a.safetensors", torch.float32, {})
    from diffusers import QwenImageTransformer2DModel

    from qwen_image_studio.models.configs import dit_config

    other = apply_lora(QwenImageTransformer2DModel(**dit_config("tiny")), 4, 1.0)
    assert other.load_weights(path) == len(other)
    for (_, a), (_, b) in zip(network.layers.values(), other.layers.values(), strict=True):
        torch.testing.assert_close(a.lora_up.weight, b.lora_up.weight)
        assert b.scale == pytest.approx(2.0 / 4)  # the file's alpha wins
    wrong = apply_lora(QwenImageTransformer2DModel(**dit_config("tiny")), 8, 8)
    with pytest.raises(ConfigError, match="--network_weights.*rank 4.*--network_dim is 8"):
        wrong.load_weights(path)
    with pytest.raises(ConfigError, match="--network_weights: not found"):
        wrong.load_weights(tmp_path / "missing.safetensors")


_CHILD = textwrap.dedent("""
    import os, sys, time, torch
    from qwen_image_studio import atomic
    real_replace = os.replace
    def slow_replace(src, dst):
        print("WRITTEN", flush=True)  # the new file is complete under its temporary name
        time.sleep(60)
        real_replace(src, dst)
    os.replace = slow_replace
    atomic.atomic_save_safetensors({"w": torch.full((256, 256), 2.0)}, sys.argv[1], {"version": "new"})
""")


def test_kill_9_during_a_save_leaves_the_previous_file_intact(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from qwen_image_studio.atomic import atomic_save_safetensors

    path = tmp_path / "lora.safetensors"
    atomic_save_safetensors({"w": torch.ones(4, 4)}, path, {"version": "old"})
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and "WRITTEN" not in line:
            line = child.stdout.readline()
            if not line and child.poll() is not None:
                break
        assert "WRITTEN" in line, "the child never reached the replace"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    torch.testing.assert_close(load_file(str(path))["w"], torch.ones(4, 4))  # the last good file
    leftovers = list(tmp_path.glob(".lora.safetensors.*.tmp"))
    assert len(leftovers) == 1
    assert remove_stale_temp_files(tmp_path, "lora") == leftovers and not leftovers[0].exists()


def test_rank_and_module_dropout_act_in_training_only_like_the_reference_trainer() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    x = torch.randn(4, 5, 8)
    ranked = LoRALinear(base, rank=4, alpha=4, rank_dropout=0.5)
    nn.init.normal_(ranked.lora_up.weight)
    full = (x @ ranked.lora_down.weight.T).unsqueeze(-1) * ranked.lora_up.weight.T.unsqueeze(0).unsqueeze(0)
    update = ranked(x) - base(x)  # (4, 5, 6): per sample, a subset of ranks, scaled by 1 / (1 - 0.5)
    for i in range(4):
        fits = [
            torch.allclose(update[i], 2 * full[i, :, list(keep)].sum(dim=1), atol=1e-5)
            for keep in [[r for r in range(4) if m >> r & 1] for m in range(16)]
        ]
        assert any(fits), "each sample keeps whole ranks, the same for all its tokens"
    ranked.eval()
    torch.testing.assert_close(ranked(x) - base(x), full.sum(dim=2))
    skipped = LoRALinear(base, rank=4, alpha=4, module_dropout=0.5)
    nn.init.normal_(skipped.lora_up.weight)
    outcomes = {bool(torch.equal(skipped(x), base(x))) for _ in range(40)}
    assert outcomes == {True, False}  # some steps skip the update, others apply it
    skipped.eval()
    assert not torch.equal(skipped(x), base(x))


def test_dropout_network_args_are_validated() -> None:
    with pytest.raises(ValueError, match="rank_dropout must be a number from 0 to below 1"):
        StudioConfig(network_args=["rank_dropout=1.5"])
    assert StudioConfig(network_args=["module_dropout=0.1", "rank_dropout=0.2"]).network_arg_dict() == {
        "module_dropout": "0.1", "rank_dropout": "0.2"
    }
