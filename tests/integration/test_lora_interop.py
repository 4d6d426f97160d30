"""One LoRA file, three loaders: diffusers' load_lora_weights, our generator, and ComfyUI's key rules.

A random LoRA in the trainer's form (``lora_unet_...lora_down/lora_up`` + ``.alpha``, named by
``lora_keys``) is applied (a) by diffusers to ``QwenImagePipeline.from_pretrained(<demo diffusers folder>)``
and (b) by our generator (our loaders on the ComfyUI single files + ``lora_apply`` merge). The images must
be equal, and differ from the image without the LoRA. ComfyUI is not installable here; its rules are
reproduced from its source: ``comfy/lora.py`` ``model_lora_keys_unet`` maps ``lora_unet_{key with . -> _}``
to every ``diffusion_model.{key}.weight`` of the model, and ``comfy/weight_adapter/lora.py`` reads
``{name}.lora_up.weight`` / ``{name}.lora_down.weight`` / ``{name}.alpha`` and adds
``strength * alpha / rank * up @ down`` to the weight.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from qwen_image_studio.data.prompt_files import SamplePrompt
from qwen_image_studio.events import EventWriter
from qwen_image_studio.models.loading import load_dit, load_vae
from qwen_image_studio.models.lora_apply import linear_paths, merge_loras, read_lora
from qwen_image_studio.models.lora_convert import convert_lora
from qwen_image_studio.models.lora_keys import ALPHA, DOWN, UP, lora_name, select_targets
from qwen_image_studio.params.validate import validate_config
from qwen_image_studio.training.sampling import (
    build_pipeline,
    generate_images,
    prepare_sample_embeddings,
    render,
)

PROMPT, NEGATIVE = "a red square on a white background", "blurry"
SIZE, STEPS, SEED, CFG = 64, 4, 1, 4.0
CPU = torch.device("cpu")


def _random_lora(path: Path, dit: torch.nn.Module, seed: int, rank: int = 4, alpha: float = 2.0) -> Path:
    """A LoRA on the default targets with random non-zero down and up matrices."""
    g = torch.Generator().manual_seed(seed)
    linears = linear_paths(dit)
    sd = {}
    for module in select_targets(linears):
        layer = linears[module]
        name = lora_name(module)
        sd[name + DOWN] = torch.randn(rank, layer.in_features, generator=g) * 0.3
        sd[name + UP] = torch.randn(layer.out_features, rank, generator=g) * 0.3
        sd[name + ALPHA] = torch.tensor(alpha)
    save_file(sd, str(path))
    return path


@pytest.fixture(scope="module")
def setup(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both generators loaded once, two LoRA files and the images without LoRA."""
    from diffusers import QwenImagePipeline

    comfy = demo / "models" / "comfyui"
    tmp = tmp_path_factory.mktemp("lora_interop")
    config = validate_config({
        "dit": str(comfy / "qwen_image_bf16.safetensors"), "vae": str(comfy / "qwen_image_vae.safetensors"),
        "text_encoder": str(comfy / "qwen_2.5_vl_7b.safetensors"), "device": "cpu", "mixed_precision": "no",
        "image_size": [SIZE, SIZE], "infer_steps": STEPS, "seed": SEED, "guidance_scale": CFG,
        "negative_prompt": NEGATIVE,
    })  # fmt: skip
    prepared = prepare_sample_embeddings(config, [SamplePrompt(PROMPT)])
    dit = load_dit(config.dit, dtype=torch.float32)  # type: ignore[arg-type]
    vae = load_vae(config.vae, dtype=torch.float32)  # type: ignore[arg-type]
    pipe = QwenImagePipeline.from_pretrained(
        demo / "models" / "diffusers" / "Qwen-Image", dtype=torch.float32
    )
    pipe.set_progress_bar_config(disable=True)
    s = {"config": config, "prepared": prepared, "dit": dit, "vae": vae, "pipe": pipe, "tmp": tmp,
         "base_state": copy.deepcopy(dit.state_dict()),
         "lora_a": _random_lora(tmp / "a.safetensors", dit, seed=1),
         "lora_b": _random_lora(tmp / "b.safetensors", dit, seed=2, rank=2, alpha=2.0)}  # fmt: skip
    s["diffusers_base"] = _diffusers(s)
    s["own_base"] = _own(s, [], [])
    return s


def _diffusers(s: dict[str, Any]) -> np.ndarray:
    out = s["pipe"](
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        true_cfg_scale=CFG,
        height=SIZE,
        width=SIZE,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(SEED),
        output_type="np",
    )
    return out.images[0]


def _own(s: dict[str, Any], files: list[Path], multipliers: list[float]) -> np.ndarray:
    """Our generator: base weights, LoRAs merged, diffusers' loop around our components; an HWC array in [0, 1]."""
    dit = s["dit"]
    dit.load_state_dict(s["base_state"])
    merge_loras(dit, [read_lora(f) for f in files], multipliers)
    pipe = build_pipeline(dit, s["vae"], "original")
    return render(pipe, s["prepared"].prompts[0], CPU, torch.float32, output_type="np")


def _max_diff_255(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max() * 255)


def test_diffusers_and_our_generator_make_the_same_image(setup: dict[str, Any]) -> None:
    s = setup
    s["pipe"].load_lora_weights(str(s["lora_a"]), adapter_name="a")
    try:
        theirs = _diffusers(s)
    finally:
        s["pipe"].unload_lora_weights()
    ours = _own(s, [s["lora_a"]], [1.0])
    diff = _max_diff_255(theirs, ours)
    print(f"max pixel difference diffusers vs own, LoRA applied: {diff:.5f} / 255")
    assert diff < 0.5
    assert _max_diff_255(s["diffusers_base"], s["own_base"]) < 0.5  # the two generators agree without LoRA
    assert _max_diff_255(theirs, s["diffusers_base"]) > 8  # and the LoRA changes the image clearly
    # the PNG our generator writes holds the same pixels diffusers' PIL output has (up to rounding)
    png = generate_images(s["dit"], s["vae"], s["prepared"], [s["tmp"] / "own.png"], EventWriter(None, "t"),
                          CPU, torch.float32)[0]  # fmt: skip
    own_png = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    theirs_png = np.asarray(s["pipe"].numpy_to_pil(theirs[None])[0], dtype=np.int16)
    print(
        f"PNG max difference: {np.abs(own_png - theirs_png).max()}; "
        f"LoRA vs no LoRA: {_max_diff_255(theirs, s['diffusers_base']):.1f} / 255"
    )
    assert own_png.shape == (SIZE, SIZE, 3) and np.abs(own_png - theirs_png).max() <= 1


def test_multiplier_zero_is_the_base_model(setup: dict[str, Any]) -> None:
    s = setup
    np.testing.assert_array_equal(_own(s, [s["lora_a"]], [0.0]), s["own_base"])


def test_two_loras_add_as_in_diffusers(setup: dict[str, Any]) -> None:
    s = setup
    pipe = s["pipe"]
    pipe.load_lora_weights(str(s["lora_a"]), adapter_name="a")
    pipe.load_lora_weights(str(s["lora_b"]), adapter_name="b")
    try:
        pipe.set_adapters(["a", "b"], adapter_weights=[0.7, -0.5])
        theirs = _diffusers(s)
    finally:
        pipe.unload_lora_weights()
    ours = _own(s, [s["lora_a"], s["lora_b"]], [0.7, -0.5])
    assert _max_diff_255(theirs, ours) < 0.5
    assert _max_diff_255(ours, _own(s, [s["lora_a"]], [0.7])) > 1  # the second LoRA contributes


def test_converted_peft_file_gives_the_same_image_in_diffusers(setup: dict[str, Any]) -> None:
    s = setup
    peft = convert_lora(s["lora_a"], s["tmp"] / "a_peft.safetensors", "diffusers")
    s["pipe"].load_lora_weights(str(peft), adapter_name="p")
    try:
        theirs = _diffusers(s)
    finally:
        s["pipe"].unload_lora_weights()
    assert _max_diff_255(theirs, _own(s, [s["lora_a"]], [1.0])) < 0.5


def _comfyui_key_map(dit_file: Path) -> dict[str, str]:
    """ComfyUI's lora_unet_ map for a diffusion-model file: lora name -> model state-dict key."""
    with safe_open(str(dit_file), framework="pt") as f:
        keys = [k.removeprefix("model.") for k in f.keys() if k.startswith("model.diffusion_model.")]  # noqa: SIM118
    weights = [k for k in keys if k.endswith(".weight")]
    names = {
        "lora_unet_" + k[len("diffusion_model.") : -len(".weight")].replace(".", "_"): k for k in weights
    }
    assert len(names) == len(weights)  # no two modules collapse onto one lora_unet_ name
    return names


def test_our_keys_are_in_comfyuis_form_and_merge_the_same(setup: dict[str, Any]) -> None:
    s = setup
    key_map = _comfyui_key_map(Path(s["config"].dit))
    with safe_open(str(s["lora_a"]), framework="pt") as f:
        lora = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    names = {k.split(".", 1)[0] for k in lora}
    assert names <= key_map.keys()
    state = copy.deepcopy(s["base_state"])
    for name in names:  # ComfyUI's regular LoRA: up/down/alpha, strength * alpha / rank * up @ down
        target = key_map[name]
        assert target == f"diffusion_model.{_module(s, name)}.weight"
        up, down, alpha = (
            lora[name + ".lora_up.weight"],
            lora[name + ".lora_down.weight"],
            lora[name + ".alpha"],
        )
        key = target.removeprefix("diffusion_model.")
        state[key] = state[key] + 1.0 * (alpha.item() / down.shape[0]) * (up @ down)
    s["dit"].load_state_dict(s["base_state"])
    merge_loras(s["dit"], [read_lora(s["lora_a"])])
    for key, value in s["dit"].state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=1e-5, atol=1e-6, msg=key)
    s["dit"].load_state_dict(s["base_state"])


def _module(s: dict[str, Any], name: str) -> str:
    return next(p for p in linear_paths(s["dit"]) if lora_name(p) == name)
