"""Every release layout of the demo models loads to the factory's tensors; bad files fail in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwen_image_studio.demo.models import TinyModels, build_tiny_models, create_demo_models, write_fp8_dit
from qwen_image_studio.errors import ModelFileError
from qwen_image_studio.models import keymaps
from qwen_image_studio.models.fp8 import dequantize, quantize_fp8
from qwen_image_studio.models.loading import inspect_dit, load_dit, load_text_encoder, load_vae

LOADERS = {"dit": load_dit, "vae": load_vae, "text_encoder": load_text_encoder}
FLAGS = {"dit": "--dit", "vae": "--vae", "text_encoder": "--text_encoder"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return create_demo_models(tmp_path_factory.mktemp("demo-models"), seed=0)


@pytest.fixture(scope="module")
def tiny() -> TinyModels:
    return build_tiny_models(seed=0)


def _assert_same_tensors(loaded: torch.nn.Module, reference: torch.nn.Module, dtype: torch.dtype) -> None:
    got, want = loaded.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    for key, value in got.items():
        assert value.dtype == dtype, key
        assert torch.equal(value, want[key].to(dtype)), key


# (model kind, reference module on TinyModels, path relative to the demo root)
FORMS = [
    ("dit", "dit", "comfyui/qwen_image_bf16.safetensors"),
    ("dit", "dit_edit_2509", "comfyui/qwen_image_edit_2509_bf16.safetensors"),
    ("dit", "dit_edit_2511", "comfyui/qwen_image_edit_2511_bf16.safetensors"),
    ("dit", "dit", "diffusers/Qwen-Image"),
    ("dit", "dit_edit_2509", "diffusers/Qwen-Image-Edit-2509"),
    ("dit", "dit", "diffusers/Qwen-Image/transformer"),
    ("dit", "dit", "diffusers/Qwen-Image/transformer/diffusion_pytorch_model-00001-of-00003.safetensors"),
    ("dit", "dit", "diffusers/Qwen-Image/transformer/diffusion_pytorch_model.safetensors.index.json"),
    ("vae", "vae", "comfyui/qwen_image_vae.safetensors"),
    ("vae", "vae", "diffusers/Qwen-Image"),
    ("vae", "vae", "diffusers/Qwen-Image-Edit-2509/vae"),
    ("vae", "vae", "diffusers/Qwen-Image/vae/diffusion_pytorch_model.safetensors"),
    ("text_encoder", "text_encoder", "comfyui/qwen_2.5_vl_7b.safetensors"),
    ("text_encoder", "text_encoder", "diffusers/Qwen-Image"),
    ("text_encoder", "text_encoder", "diffusers/Qwen-Image-Edit-2509/text_encoder"),
    ("text_encoder", "text_encoder", "diffusers/Qwen-Image/text_encoder/model-00002-of-00002.safetensors"),
    ("text_encoder", "text_encoder", "diffusers/Qwen-Image/text_encoder/model.safetensors.index.json"),
]


@pytest.mark.parametrize(("kind", "reference", "rel"), FORMS, ids=[f"{f[0]}:{f[2]}" for f in FORMS])
def test_every_form_loads_the_factory_tensors(
    kind: str, reference: str, rel: str, demo: dict[str, Path], tiny: TinyModels
) -> None:
    root = demo["comfyui"].parent
    model = LOADERS[kind](root / rel, dtype=torch.float32)
    _assert_same_tensors(model, getattr(tiny, reference), torch.float32)
    assert not model.training


def test_bf16_load_keeps_the_file_values(demo: dict[str, Path], tiny: TinyModels) -> None:
    _assert_same_tensors(load_dit(demo["dit"], dtype=torch.bfloat16), tiny.dit, torch.bfloat16)
    _assert_same_tensors(
        load_text_encoder(demo["text_encoder"], dtype=torch.bfloat16), tiny.text_encoder, torch.bfloat16
    )


def test_loaded_models_compute_like_the_factory_models(demo: dict[str, Path]) -> None:
    reference = build_tiny_models(seed=0)  # a private copy: cast to fp32 below
    torch.manual_seed(0)
    dit = load_dit(demo["dit"], dtype=torch.float32)
    kwargs = {
        "hidden_states": torch.randn(1, 16, 64),
        "encoder_hidden_states": torch.randn(1, 5, 32),
        "encoder_hidden_states_mask": torch.ones(1, 5, dtype=torch.long),
        "timestep": torch.tensor([0.5]),
        "img_shapes": [[(1, 4, 4)]],
    }
    with torch.no_grad():
        assert torch.equal(dit(**kwargs).sample, reference.dit.float()(**kwargs).sample)

    te = load_text_encoder(demo["text_encoder"], dtype=torch.float32)
    ids = torch.tensor([[151644, 8948, 198, 151645]])
    with torch.no_grad():
        got = te(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        want = reference.text_encoder.float()(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    assert torch.equal(got, want)

    vae = load_vae(demo["vae"], dtype=torch.float32)
    image = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        got = vae.encode(image).latent_dist.mode()
        assert torch.equal(got, reference.vae.float().encode(image).latent_dist.mode())


def test_2511_flag_is_dropped_and_reported(demo: dict[str, Path]) -> None:
    path = demo["dit_edit_2511"]
    assert inspect_dit(path).variant == "edit-2511"
    assert inspect_dit(demo["dit"]).variant is None
    assert inspect_dit(demo["dit"]).num_layers == 2
    assert load_dit(path, dtype=torch.float32).config.zero_cond_t is True
    assert load_dit(path, dtype=torch.float32, model_version="edit-2511").config.zero_cond_t is True
    with pytest.raises(ModelFileError) as err:
        load_dit(path, dtype=torch.float32, model_version="edit-2509")
    message = str(err.value)
    assert "--dit" in message and str(path) in message and "edit-2511" in message and "\n" not in message
    # a 2511 run may use a file without the flag; the version decides
    assert load_dit(demo["dit"], dtype=torch.float32, model_version="edit-2511").config.zero_cond_t is True
    assert load_dit(demo["dit"], dtype=torch.float32, model_version="edit-2509").config.zero_cond_t is False


@pytest.mark.parametrize(
    ("kind", "wrong", "words"),
    [
        ("dit", "vae", "VAE"),
        ("dit", "text_encoder", "text encoder"),
        ("vae", "text_encoder", "text encoder"),
        ("vae", "dit", "DiT"),
        ("text_encoder", "dit", "DiT"),
        ("text_encoder", "vae", "VAE"),
    ],
)
def test_wrong_kind_is_named(kind: str, wrong: str, words: str, demo: dict[str, Path]) -> None:
    with pytest.raises(ModelFileError) as err:
        LOADERS[kind](demo[wrong], dtype=torch.float32)
    message = str(err.value)
    assert message.startswith(f"{FLAGS[kind]}: {demo[wrong]}")
    assert words in message and f"pass it as {FLAGS[wrong]}" in message and "\n" not in message


def _error(kind: str, path: Path) -> str:
    with pytest.raises(ModelFileError) as err:
        LOADERS[kind](path, dtype=torch.float32)
    message = str(err.value)
    assert message.startswith(f"{FLAGS[kind]}: {path}") and "\n" not in message
    return message


def test_missing_and_unsupported_paths(tmp_path: Path) -> None:
    assert "does not exist" in _error("dit", tmp_path / "nope.safetensors")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    assert "not a .safetensors" in _error("vae", ckpt)
    assert "no .safetensors" in _error("text_encoder", tmp_path)


@pytest.mark.parametrize("kind", ["dit", "vae", "text_encoder"])
def test_truncated_and_garbage_files(kind: str, demo: dict[str, Path], tmp_path: Path) -> None:
    data = demo[kind].read_bytes()
    cut = tmp_path / demo[kind].name
    cut.write_bytes(data[: len(data) - 1000])
    assert "truncated" in _error(kind, cut)
    cut.write_bytes(data[:100])
    assert "truncated" in _error(kind, cut)
    cut.write_bytes(b"<html>not a model</html>" * 10)
    assert "truncated or not a valid safetensors" in _error(kind, cut)


def test_incomplete_shards_and_pipeline_folders(demo: dict[str, Path], tmp_path: Path) -> None:
    repo = tmp_path / "Qwen-Image"
    shutil.copytree(demo["diffusers_t2i"] / "transformer", repo / "transformer")
    (repo / "model_index.json").write_text(json.dumps({"_class_name": "QwenImagePipeline"}))
    (repo / "transformer" / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    assert "missing" in _error("dit", repo)
    assert "incomplete" in _error(
        "dit", repo / "transformer" / "diffusion_pytorch_model-00001-of-00003.safetensors"
    )
    assert "no vae/ subfolder" in _error("vae", repo)


def test_lora_file_is_not_a_model(tmp_path: Path) -> None:
    lora = tmp_path / "my_lora.safetensors"
    save_file({"lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight": torch.zeros(4, 32)}, str(lora))
    assert "LoRA" in _error("dit", lora)


@pytest.mark.parametrize(
    ("scaled", "suffix"), [(False, ".weight_scale"), (True, ".weight_scale"), (True, ".scale_weight")]
)
def test_fp8_dit_loads_dequantised(
    scaled: bool, suffix: str, demo: dict[str, Path], tiny: TinyModels, tmp_path: Path
) -> None:
    path = write_fp8_dit(
        demo["dit"], tmp_path / "qwen_image_fp8.safetensors", scaled=scaled, scale_suffix=suffix
    )
    stored = load_file(str(path))
    q_key = keymaps.dit_to_comfy("transformer_blocks.0.attn.to_q.weight")
    assert stored[q_key].dtype == torch.float8_e4m3fn
    assert (q_key.removesuffix(".weight") + suffix in stored) == scaled
    info = inspect_dit(path)
    assert info.fp8
    model = load_dit(path, dtype=torch.float32)
    got, want = model.state_dict(), tiny.dit.state_dict()
    assert got.keys() == want.keys()
    for key, value in got.items():
        ref = want[key].float()
        assert value.dtype == torch.float32
        error = (value - ref).norm() / ref.norm().clamp(min=1e-12)
        assert error < 0.08, (key, float(error))
    assert torch.equal(got["img_in.weight"], want["img_in.weight"].float())  # outside blocks: untouched


def test_diffusers_loads_the_demo_pipeline(demo: dict[str, Path]) -> None:
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline.from_pretrained(
        demo["diffusers_t2i"], dtype=torch.float32, local_files_only=True
    )
    assert pipe.scheduler.config.use_dynamic_shifting and pipe.scheduler.config.shift_terminal == 0.02
    assert pipe.tokenizer.convert_tokens_to_ids("<|im_start|>") == 151644
    image = pipe(
        "a red square",
        num_inference_steps=2,  # one step divides by zero in the shift_terminal stretch
        height=32,
        width=32,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()


def test_fp8_scaled_text_encoder_loads_dequantised(
    demo: dict[str, Path], tiny: TinyModels, tmp_path: Path
) -> None:
    state = load_file(str(demo["text_encoder"]))
    out = quantize_fp8(state, scaled=True, scale_suffix=".scale_weight", targets=("model.layers.",))
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)  # ComfyUI's marker of this layout
    path = tmp_path / "qwen_2.5_vl_7b_fp8_scaled.safetensors"
    save_file(out, str(path))
    got = load_text_encoder(path, dtype=torch.float32).state_dict()
    want = tiny.text_encoder.state_dict()
    key = "model.language_model.layers.0.mlp.down_proj.weight"
    error = (got[key] - want[key].float()).norm() / want[key].float().norm()
    assert 0 < error < 0.08
    assert torch.equal(got["lm_head.weight"], want["lm_head.weight"].float())


@pytest.mark.parametrize("scale_shape", [(), (6, 1), (6,), (6, 4), (6, 4, 1)])
def test_dequantize_scale_layouts(scale_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    weight = torch.randn(6, 16)
    scale = torch.rand(scale_shape) + 0.5
    blocks = scale.reshape(6, -1, 1) if scale.numel() > 1 else scale
    quantized = (weight.reshape(6, -1, 16 // max(1, scale.numel() // 6)) / blocks).to(torch.float8_e4m3fn)
    restored = dequantize(quantized.reshape(6, 16), scale, torch.float32)
    assert restored.dtype == torch.float32
    assert (restored - weight).norm() / weight.norm() < 0.08
