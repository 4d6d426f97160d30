"""LoRA files in every form users have: reading, merging with multipliers, conversion, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from qwen_image_studio.errors import ConfigError, ModelFileError
from qwen_image_studio.models import configs
from qwen_image_studio.models.lora_apply import (
    METADATA_KEY,
    linear_paths,
    merge_loras,
    multipliers_for,
    read_lora,
)
from qwen_image_studio.models.lora_convert import convert_lora, dit_linear_paths
from qwen_image_studio.models.lora_keys import ALPHA, DOWN, UP, lora_name, select_targets

RANK, ALPHA_VALUE = 4, 2.0


@pytest.fixture(scope="module")
def dit() -> torch.nn.Module:
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    return QwenImageTransformer2DModel(**configs.dit_config("tiny")).eval()


def _factors(
    model: torch.nn.Module, seed: int = 0, rank: int = RANK
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    linears = linear_paths(model)
    return {
        p: (
            torch.randn(rank, linears[p].in_features, generator=g),
            torch.randn(linears[p].out_features, rank, generator=g),
        )
        for p in select_targets(linears)
    }


def _write(
    path: Path, form: str, factors: dict, alpha: float | None = ALPHA_VALUE, meta: dict | None = None
) -> Path:
    sd: dict[str, torch.Tensor] = {}
    for module, (down, up) in factors.items():
        if form == "lora_unet":
            name, d, u = lora_name(module), DOWN, UP
        elif form == "comfyui":
            name, d, u = f"diffusion_model.{module}", ".lora_A.weight", ".lora_B.weight"
        elif form == "peft_default":
            name, d, u = f"base_model.model.{module}", ".lora_A.default.weight", ".lora_B.default.weight"
        else:
            name, d, u = f"transformer.{module}", ".lora_A.weight", ".lora_B.weight"
        sd[name + d], sd[name + u] = down.clone(), up.clone()
        if alpha is not None:
            sd[name + ALPHA] = torch.tensor(alpha)
    save_file(sd, str(path), metadata=meta)
    return path


def _merged(model: torch.nn.Module, files: list[Path], multipliers: list[float] | None = None) -> dict:
    import copy

    clone = copy.deepcopy(model)
    merge_loras(clone, [read_lora(f) for f in files], multipliers)
    return {k: v.clone() for k, v in clone.state_dict().items()}


def _expected(model: torch.nn.Module, parts: list[tuple[dict, float]]) -> dict:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for factors, m in parts:
        for module, (down, up) in factors.items():
            state[f"{module}.weight"] += m * (ALPHA_VALUE / RANK) * up @ down
    return state


def _assert_states_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5, msg=k)


def test_every_form_merges_to_the_same_weights(dit: torch.nn.Module, tmp_path: Path) -> None:
    factors = _factors(dit)
    peft_meta = {METADATA_KEY: json.dumps({"transformer.r": RANK, "transformer.lora_alpha": ALPHA_VALUE})}
    files = [
        _write(tmp_path / "kohya.safetensors", "lora_unet", factors),
        _write(tmp_path / "comfy.safetensors", "comfyui", factors),
        _write(
            tmp_path / "peft_alpha_in_header.safetensors", "diffusers", factors, alpha=None, meta=peft_meta
        ),
        _write(tmp_path / "peft_default.safetensors", "peft_default", factors),
    ]
    forms = [read_lora(f).form for f in files]
    assert forms == ["lora_unet", "comfyui", "diffusers", "diffusers"]
    expected = _expected(dit, [(factors, 1.0)])
    for f in files:
        _assert_states_close(_merged(dit, [f]), expected)


def test_no_alpha_means_scale_one(dit: torch.nn.Module, tmp_path: Path) -> None:
    factors = _factors(dit)
    lora = read_lora(_write(tmp_path / "x.safetensors", "diffusers", factors, alpha=None))
    assert {p.scale for p in lora.pairs.values()} == {1.0}


def test_multipliers_zero_and_two_loras_add(dit: torch.nn.Module, tmp_path: Path) -> None:
    a, b = _factors(dit, 1), _factors(dit, 2)
    fa = _write(tmp_path / "a.safetensors", "lora_unet", a)
    fb = _write(tmp_path / "b.safetensors", "comfyui", b)
    _assert_states_close(_merged(dit, [fa], [0.0]), {k: v for k, v in dit.state_dict().items()})
    _assert_states_close(_merged(dit, [fa, fb], [0.7, -0.4]), _expected(dit, [(a, 0.7), (b, -0.4)]))
    _assert_states_close(_merged(dit, [fa, fb], [0.5]), _expected(dit, [(a, 0.5), (b, 0.5)]))


def test_multiplier_rules() -> None:
    assert multipliers_for(2, None) == [1.0, 1.0]
    assert multipliers_for(3, [0.5]) == [0.5, 0.5, 0.5]
    assert multipliers_for(2, [0.5, 2.0]) == [0.5, 2.0]
    with pytest.raises(ConfigError, match="--lora_multiplier: 3 values for 2 --lora_weight files"):
        multipliers_for(2, [1.0, 1.0, 1.0])


def test_conversion_round_trip_keeps_the_update_and_header(dit: torch.nn.Module, tmp_path: Path) -> None:
    factors = _factors(dit)
    src = _write(tmp_path / "src.safetensors", "lora_unet", factors, meta={"ss_network_dim": "4"})
    peft = convert_lora(src, tmp_path / "peft.safetensors", "diffusers")
    back = convert_lora(peft, tmp_path / "back.safetensors", "comfyui")
    with safe_open(str(peft), framework="pt") as f:
        keys, header = set(f.keys()), f.metadata()
    assert all(k.startswith("transformer.") and ".lora_A." in k or ".lora_B." in k for k in keys)
    config = json.loads(header[METADATA_KEY])
    assert (config["transformer.r"], config["transformer.lora_alpha"], header["ss_network_dim"]) == (
        4,
        4,
        "4",
    )
    assert read_lora(back).form == "lora_unet"
    expected = _expected(dit, [(factors, 1.0)])
    for f in (peft, back):
        _assert_states_close(_merged(dit, [f]), expected)
    assert set(dit_linear_paths(2)) == set(linear_paths(dit))
    with pytest.raises(ConfigError, match="is the input file"):
        convert_lora(src, src, "comfyui")


def _message(path: Path) -> str:
    with pytest.raises(ModelFileError) as err:
        read_lora(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"--lora_weight: {path}: ")
    return text.split(": ", 2)[2]


def test_errors_are_one_line_and_name_flag_and_file(dit: torch.nn.Module, tmp_path: Path) -> None:
    from qwen_image_studio.models.keymaps import dit_to_comfy

    assert _message(tmp_path / "missing.safetensors") == "does not exist"
    (tmp_path / "text.safetensors").write_text("not a safetensors file")
    assert _message(tmp_path / "text.safetensors").startswith("is not a readable .safetensors file")
    dit_file = tmp_path / "dit.safetensors"
    save_file({dit_to_comfy(k): v.contiguous() for k, v in dit.state_dict().items()}, str(dit_file))
    assert _message(dit_file).startswith("is not a LoRA file: it is a Qwen-Image DiT (diffusion model)")

    factors = _factors(dit)
    module = next(iter(factors))
    down, up = factors[module]
    bad_rank = dict(factors) | {module: (down, up[:, :2])}
    assert _message(_write(tmp_path / "r.safetensors", "lora_unet", bad_rank)) == (
        f"rank mismatch in module {lora_name(module)}: lora_down has rank 4, lora_up has rank 2"
    )
    sd = {lora_name(module) + DOWN: down}
    save_file(sd, str(tmp_path / "half.safetensors"))
    assert (
        _message(tmp_path / "half.safetensors") == f"module {lora_name(module)} lacks its up (lora_B) matrix"
    )
    sd = {lora_name(module) + DOWN: down, lora_name(module) + UP: up, "dora_scale": torch.ones(1)}
    save_file(sd, str(tmp_path / "extra.safetensors"))
    assert (
        _message(tmp_path / "extra.safetensors")
        == "holds tensors that are not LoRA factors or alphas: dora_scale"
    )


def test_keys_of_another_model_or_size_are_refused_before_any_change(
    dit: torch.nn.Module, tmp_path: Path
) -> None:
    factors = _factors(dit)
    foreign = {f"single_blocks.{i}.linear1": factors[next(iter(factors))] for i in range(4)}
    path = _write(tmp_path / "flux.safetensors", "lora_unet", dict(factors) | foreign)
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    with pytest.raises(ModelFileError) as err:
        merge_loras(
            dit, [read_lora(_write(tmp_path / "ok.safetensors", "lora_unet", factors)), read_lora(path)]
        )
    assert (
        "4 of 28 LoRA modules match no Linear layer of this DiT: lora_unet_single_blocks_0_linear1, "
        in str(err.value)
    )
    assert "(and 1 more); is it a LoRA for another model?" in str(err.value)
    _assert_states_close({k: v for k, v in dit.state_dict().items()}, before)
    module = next(iter(factors))
    wide = dict(factors) | {module: (torch.zeros(RANK, 7), torch.zeros(3, RANK))}
    with pytest.raises(
        ModelFileError, match=f"module {module}: the LoRA maps 7 -> 3 features but the DiT's layer"
    ):
        merge_loras(dit, [read_lora(_write(tmp_path / "w.safetensors", "comfyui", wide))])


def test_convert_command(dit: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qwen_image_studio.cli import main

    src = _write(tmp_path / "src.safetensors", "comfyui", _factors(dit))
    assert main(["lora", "convert", str(src), str(tmp_path / "out.safetensors"), "--to", "comfyui"]) == 0
    assert read_lora(tmp_path / "out.safetensors").form == "lora_unet"
    assert (
        main(["lora", "convert", str(tmp_path / "no.safetensors"), str(tmp_path / "x"), "--to", "diffusers"])
        == 2
    )
    assert (
        capsys.readouterr().err.strip()
        == f"error: lora convert: {tmp_path / 'no.safetensors'}: does not exist"
    )
