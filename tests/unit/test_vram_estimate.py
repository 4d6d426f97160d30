"""The memory estimate: our trainer's measured H100 peaks, the direction of every option, the GPU presets,
and the estimate for the chosen files (their architecture read from safetensors headers, no tensor loaded):
the release-size DiT gives the calibrated figures, the demo's tiny DiT a tiny one; where the stages run."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from qwen_image_studio.memory.presets import PRESETS, preset_for
from qwen_image_studio.memory.vram_estimate import (
    FULL_DIT,
    FULL_TEXT_ENCODER_GB,
    DitShape,
    VramOptions,
    estimate_ram,
    estimate_vram,
    text_encoder_gb,
)
from qwen_image_studio.models import configs, keymaps
from qwen_image_studio.models.lora_keys import select_targets
from qwen_image_studio.params.schema import StudioConfig
from qwen_image_studio.webui.vram import vram_for

BASE = VramOptions.from_config(StudioConfig())  # 1024x1024, batch 1, bf16, checkpointing, rank 8, adamw8bit
FP8 = replace(BASE, fp8_base=True, fp8_scaled=True)
MEASURED = VramOptions.from_config(  # bench/gpu_bench.py's runs
    StudioConfig(network_dim=16, optimizer_type="adamw"), text_tokens=128
)
MEASURED_FP8 = replace(MEASURED, fp8_base=True, fp8_scaled=True)
GIB = 2**30 / 1e9
DTYPE_BYTES = {"BF16": 2, "F32": 4, "F8_E4M3": 1}
NO_GPU: dict[str, Any] = {"state": "cpu_only", "gpus": [], "reason": "no driver"}
H100: dict[str, Any] = {  # what webui.gpu.gpu_status() answers on an H100 (as NVML reports it)
    "state": "gpu",
    "reason": None,
    "gpus": [
        {
            "index": 0,
            "name": "NVIDIA H100 80GB HBM3",
            "memory_used": 0,
            "memory_total": 85_520_809_984,
            "utilization": 0,
            "temperature": 30,
        }
    ],
}


def gb(opts: VramOptions) -> float:
    return estimate_vram(opts).total_gb


# ---- the calibrated estimate ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("opts", "smi_gib"),
    [  # nvidia-smi peaks of our trainer on an H100, 2026-11-26 (bench/RESULTS.md)
        (MEASURED, 43.59),
        (MEASURED_FP8, 25.77),
        (replace(MEASURED_FP8, blocks_to_swap=16), 21.45),
        (replace(MEASURED_FP8, blocks_to_swap=45), 11.77),
        # not fitted, predicted: checkpoint offload
        (replace(MEASURED, checkpoint_offload=True), 42.21),
        (replace(MEASURED_FP8, checkpoint_offload=True), 24.32),
        (replace(MEASURED_FP8, blocks_to_swap=45, checkpoint_offload=True), 10.32),
    ],
)
def test_the_measured_table(opts: VramOptions, smi_gib: float) -> None:
    assert gb(opts) == pytest.approx(smi_gib * GIB, abs=0.1)


def test_parts_add_up() -> None:
    est = estimate_vram(replace(FP8, blocks_to_swap=16))
    parts = est.weights_gb + est.swap_buffer_gb + est.activations_gb + est.lora_gb + est.fixed_gb
    assert est.total_gb == pytest.approx(parts) and est.text_encoder_gb == 0
    assert all(
        v > 0 for v in (est.weights_gb, est.swap_buffer_gb, est.activations_gb, est.lora_gb, est.fixed_gb)
    )
    assert estimate_vram(BASE).as_json()["total_gb"] == round(gb(BASE), 1)
    # the text encoder on the GPU for the sample prompts: before the first step, so instead of activations
    small, big = replace(BASE, text_encoder_gb=0.5), replace(BASE, text_encoder_gb=14.14)
    assert gb(small) == gb(BASE)
    big_est = estimate_vram(big)
    assert big_est.total_gb == pytest.approx(gb(BASE) - big_est.activations_gb + 14.14)


def test_each_option_moves_the_estimate_the_right_way() -> None:
    assert gb(replace(BASE, width=1328, height=1328)) > gb(BASE) > gb(replace(BASE, width=512, height=512))
    assert gb(replace(BASE, batch_size=2)) > gb(BASE)
    assert gb(replace(BASE, network_dim=64)) > gb(replace(BASE, network_dim=16)) > gb(BASE)
    assert gb(replace(BASE, optimizer="adamw")) > gb(BASE)  # 8-bit states save memory
    assert gb(replace(BASE, gradient_checkpointing=False)) > gb(BASE) + 10
    assert gb(replace(BASE, edit=True)) > gb(BASE)  # control-image tokens
    assert gb(replace(BASE, blocks_to_swap=16)) < gb(BASE)
    assert gb(replace(BASE, checkpoint_offload=True)) < gb(BASE)
    assert gb(replace(FP8, fp8_upcast=True)) > gb(FP8)  # block scales kept for upcasting
    ema = gb(replace(BASE, ema_on_device=True)) - gb(BASE)  # a float32 copy of the LoRA weights
    assert ema == pytest.approx(BASE.dit.lora_params_per_rank * BASE.network_dim * 4 / 1e9, rel=0.02)


@given(st.integers(1, 58), st.integers(1, 58))
def test_more_swapped_blocks_never_need_more(a: int, extra: int) -> None:
    """Once swapping (its buffer paid), each further swapped block saves memory."""
    b = min(59, a + extra)
    for opts in (BASE, FP8):
        assert gb(replace(opts, blocks_to_swap=b)) <= gb(replace(opts, blocks_to_swap=a)) + 1e-9


@given(
    st.sampled_from([256, 512, 768, 1024, 1328]),
    st.sampled_from([256, 512, 768, 1024, 1328]),
    st.integers(1, 8),
    st.integers(1, 128),
)
def test_the_estimate_is_positive_and_finite(w: int, h: int, batch: int, rank: int) -> None:
    total = gb(replace(BASE, width=w, height=h, batch_size=batch, network_dim=rank))
    assert 0 < total < 1000


@given(st.integers(1, 60), st.integers(1, 3072), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_a_smaller_dit_never_needs_more(layers: int, hidden: int, block: float, lora: float) -> None:
    """Any DiT no larger than the release's in each dimension needs no more than it, with any options."""
    shape = DitShape(
        num_layers=layers,
        hidden=hidden,
        block_params=int(FULL_DIT.block_params * block),
        other_params=int(FULL_DIT.other_params * block),
        lora_params_per_rank=int(FULL_DIT.lora_params_per_rank * lora),
    )
    for opts in (BASE, FP8, replace(FP8, blocks_to_swap=16), replace(BASE, gradient_checkpointing=False)):
        assert 0.5 <= gb(replace(opts, dit=shape)) <= gb(opts) + 1e-9
        assert estimate_ram(replace(opts, dit=shape)) <= estimate_ram(opts) + 1e-9


def test_presets_fit_their_gpu_and_are_valid_values() -> None:
    assert [p.gpu_gb for p in PRESETS] == [12, 16, 24, 48, 80]
    estimates = [p.estimate_gb() for p in PRESETS]
    for preset, estimate in zip(PRESETS, estimates, strict=True):
        assert estimate <= preset.gpu_gb + 1e-6, (preset.gpu_gb, estimate)
        StudioConfig(**preset.values)  # the schema accepts what the form will be given
    assert estimates == sorted(estimates)  # a bigger GPU never gets a tighter preset
    assert preset_for(12).values["blocks_to_swap"] == 45 and preset_for(24).values["blocks_to_swap"] == 16
    assert preset_for(12).values["fp8_base"] and not preset_for(48).values["fp8_base"]
    with pytest.raises(KeyError):
        preset_for(20)


def test_presets_change_only_their_own_options(tmp_path: Path) -> None:
    """A preset is an update of the configuration: what it does not set (the matmul mode, the rank) stays."""
    upcast = StudioConfig(fp8_matmul="upcast", network_dim=32)
    for preset in PRESETS:
        expected = VramOptions.from_config(StudioConfig(**{**upcast.model_dump(), **preset.values}))
        assert preset.estimate_gb(upcast) == estimate_vram(expected).total_gb
    fp8 = preset_for(24)
    assert fp8.estimate_gb(upcast) > fp8.estimate_gb()  # the upcast scales and the larger rank count
    # the form's answer for each preset is the same update of the form's values
    answer = vram_for({"fp8_matmul": "upcast", "network_dim": 32}, tmp_path, H100)
    assert [r["estimate_gb"] for r in answer["presets"]] == [round(p.estimate_gb(upcast), 1) for p in PRESETS]


def test_one_bad_form_value_does_not_hide_the_others(tmp_path: Path) -> None:
    """The form may hold a value that fails its rule while it is typed: that one counts as the default, the
    others (and values that only a cross-field rule refuses) still move the estimate."""
    fp8 = vram_for({"fp8_base": True, "fp8_scaled": True, "blocks_to_swap": 16}, tmp_path, NO_GPU)
    for bad in ({"network_dim": "eight"}, {"network_dim": 0}, {"blocks_to_swap": "x"}, {"no_such_field": 1}):
        answer = vram_for({"fp8_base": True, "fp8_scaled": True, "blocks_to_swap": 16, **bad}, tmp_path, NO_GPU)
        expected = fp8 if "blocks_to_swap" not in bad else vram_for(
            {"fp8_base": True, "fp8_scaled": True}, tmp_path, NO_GPU
        )
        assert answer["estimate"] == expected["estimate"], bad
    swapped = vram_for({"blocks_to_swap": 16, "min_timestep": 900, "max_timestep": 100}, tmp_path, NO_GPU)
    assert swapped["estimate"] == estimate_vram(replace(BASE, blocks_to_swap=16)).as_json()


def test_the_estimator_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, qwen_image_studio.memory.vram_estimate, qwen_image_studio.memory.presets, "
        "qwen_image_studio.webui.vram, qwen_image_studio.webui.gpu; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# ---- the chosen files: headers of the release's size, the demo's tiny models ----------------------------
def write_header_only(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> Path:
    """A safetensors file with these tensors' header and the file length they need, no tensor data written
    (a sparse file: a 40 GB release-size DiT takes no disk)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = math.prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        fh.truncate(8 + len(blob) + offset)
    return path


def meta_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def release_dit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release's ComfyUI DiT file (qwen_image_bf16.safetensors): its real architecture's header."""
    from diffusers import QwenImageTransformer2DModel

    with torch.device("meta"):
        model = QwenImageTransformer2DModel(**configs.dit_config("full"))
    shapes = {keymaps.dit_to_comfy(k): s for k, s in meta_shapes(model).items()}
    return write_header_only(tmp_path_factory.mktemp("release") / "qwen_image_bf16.safetensors", shapes)


@pytest.fixture(scope="module")
def release_text_encoder_shapes() -> dict[str, tuple[int, ...]]:
    """Qwen2.5-VL-7B's tensors under the release names (qwen_2.5_vl_7b.safetensors), on the meta device."""
    from qwen_image_studio.models.loading import _text_encoder_skeleton

    model = _text_encoder_skeleton(configs.text_encoder_config_for("full"))
    return {keymaps.text_encoder_to_comfy(k): s for k, s in meta_shapes(model).items()}


def test_the_release_dit_header_gives_the_full_size_shape(release_dit: Path) -> None:
    from qwen_image_studio.webui.write_check import _linear_shapes

    assert release_dit.stat().st_size > 40e9  # the release's length, sparse
    linears = _linear_shapes(release_dit)
    shape = DitShape.from_linears(linears, select_targets(linears))
    assert shape == FULL_DIT
    assert shape.params == pytest.approx(20.4e9, rel=0.01)
    assert shape.lora_params_per_rank == 110_592 * 60  # r * (in + out) of the twelve default linears
    modulation = select_targets(linears, include_patterns=r".*_mod\.1")
    assert DitShape.from_linears(linears, modulation).lora_params_per_rank == 153_600 * 60  # the reference's set


def test_the_release_size_header_gives_the_calibrated_estimate(release_dit: Path, tmp_path: Path) -> None:
    measured = {"dit": str(release_dit), "network_dim": 16, "optimizer_type": "adamw"}
    answer = vram_for(measured, tmp_path, H100)
    assert answer["dit"] == {"source": "file", "num_layers": 60, "hidden": 3072, "params": FULL_DIT.params}
    calibrated = estimate_vram(replace(MEASURED, text_tokens=256)).as_json()  # the form assumes 256 text tokens
    assert answer["estimate"] == calibrated  # the measured bf16 run's 46.8 GB, at 128 text tokens
    assert answer["estimate"]["total_gb"] == pytest.approx(43.59 * GIB, abs=0.15)
    assert answer["fits"] == [48, 80] and answer["this_gpu"] == {
        "name": "NVIDIA H100 80GB HBM3",
        "total_gb": 85.5,
        "fits": True,
    }
    # each preset, applied to these values: the smallest card one of them makes fit is named
    rows = answer["presets"]
    assert [r["gpu_gb"] for r in rows] == [12, 16, 24, 48, 80]
    assert all(r["estimate_gb"] <= r["gpu_gb"] for r in rows)
    assert answer["preset"] == rows[0] and 10 < rows[0]["estimate_gb"] <= 12
    # the same file with the defaults (rank 8, adamw8bit) and the release's text encoder (its file unread)
    defaults = vram_for({"dit": str(release_dit)}, tmp_path, H100)
    assert defaults["estimate"] == estimate_vram(BASE).as_json()
    assert defaults["text_encoder"] == {"source": "default", "gb": 14.14}
    assert defaults["cache_text_gb"] == pytest.approx(14.6, abs=0.05)  # the caching stage, on the GPU
    # sample prompts: the text encoder joins the DiT on the GPU before the first step
    sampling = vram_for({"dit": str(release_dit), "sample_prompts": "p.txt"}, tmp_path, H100)
    assert sampling["estimate"]["text_encoder_gb"] == 14.1
    assert sampling["peak_gb"] == pytest.approx(gb(BASE) - estimate_vram(BASE).activations_gb + 14.14, abs=0.1)
    assert sampling["fits"] == [80]
    fp8_vl = vram_for({"dit": str(release_dit), "sample_prompts": "p.txt", "fp8_vl": True}, tmp_path, H100)
    assert fp8_vl["peak_gb"] < sampling["peak_gb"] - 6


def test_the_text_encoder_counts_as_the_loader_does(release_text_encoder_shapes: dict, tmp_path: Path) -> None:
    from qwen_image_studio.models.loading import prompt_encoder_device_bytes

    te_file = write_header_only(tmp_path / "qwen_2.5_vl_7b.safetensors", release_text_encoder_shapes)
    read = vram_for({"text_encoder": str(te_file), "model_version": "edit-2509"}, tmp_path, H100)
    assert read["text_encoder"] == {"source": "file", "gb": FULL_TEXT_ENCODER_GB[(False, True)]}

    linears = {k.removesuffix(".weight"): list(s) for k, s in release_text_encoder_shapes.items() if len(s) == 2}
    cfg = configs.text_encoder_config_for("full")
    for (fp8, vision), table in FULL_TEXT_ENCODER_GB.items():
        resident, extra = prompt_encoder_device_bytes(cfg, fp8_linears=fp8, vision=vision)
        ours = text_encoder_gb(linears, fp8=fp8, vision=vision)
        assert ours == pytest.approx((resident + extra) / 1e9, abs=0.01), (fp8, vision)
        assert ours == pytest.approx(table, abs=0.01), (fp8, vision)


def demo_params(demo: Path, name: str) -> dict[str, Any]:
    return json.loads((demo / "configs" / f"{name}.json").read_text())["params"]


def test_the_demo_tiny_models_give_a_tiny_estimate(demo: Path) -> None:
    params = demo_params(demo, "demo-t2i")
    assert params["device"] == "cpu"
    on_cpu = vram_for(params, demo, NO_GPU)  # this machine: no GPU, every stage on the CPU
    assert on_cpu["dit"] == {"source": "file", "num_layers": 2, "hidden": 32, "params": 90_112}
    assert on_cpu["text_encoder"]["source"] == "file" and on_cpu["text_encoder"]["gb"] < 0.05
    assert on_cpu["vae_gb"] is not None and on_cpu["vae_gb"] < 0.05  # read from the file, tiny
    assert (on_cpu["gpu_present"], on_cpu["device"], on_cpu["cache_text_gb"]) == (False, "cpu", None)
    assert on_cpu["estimate"]["weights_gb"] < 0.01 and on_cpu["estimate"]["activations_gb"] < 0.01
    assert 0.5 <= on_cpu["peak_gb"] < 0.6  # on a GPU: about the CUDA context
    assert 0.5 < on_cpu["ram_gb"] < 1  # the process's own RSS, above which the tiny models add little
    assert on_cpu["fits"] == [8, 12, 16, 24, 32, 48, 80] and on_cpu["preset"] is None
    assert on_cpu["this_gpu"] is None
    # the same values on a machine with a GPU (--device cpu: caching and sample prompts stay on the CPU)
    on_gpu = vram_for(params, demo, H100)
    assert on_gpu["gpu_present"] and on_gpu["this_gpu"]["fits"] and on_gpu["device"] == "cpu"
    assert on_gpu["estimate"] == on_cpu["estimate"]
    # the diffusers folders of the demo (sharded transformer and text encoder) read the same
    folders = {**params, "dit": str(demo / "models/diffusers/Qwen-Image"), "device": None}
    folders["text_encoder"] = str(demo / "models/diffusers/Qwen-Image")
    from_folders = vram_for(folders, demo, H100)
    assert from_folders["dit"] == on_cpu["dit"] and from_folders["device"] == "gpu"
    assert from_folders["text_encoder"] == on_cpu["text_encoder"]
    assert from_folders["cache_text_gb"] == pytest.approx(0.5, abs=0.05)


def test_unreadable_files_fall_back_to_the_release_sizes(demo: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\xff" * 64)  # an absurd header length
    nested = tmp_path / "nested.safetensors"
    nested.write_bytes(struct.pack("<Q", 2000) + b"[" * 2000)  # JSON nested too deeply for the parser
    for value in (str(bad), str(nested), "missing.safetensors", str(tmp_path), "a\x00b", 42, None):
        answer = vram_for({"dit": value, "text_encoder": value, "vae": value}, tmp_path, NO_GPU)
        assert answer["dit"]["source"] == "default" and answer["text_encoder"]["source"] == "default"
        assert answer["estimate"] == estimate_vram(BASE).as_json()
        assert (answer["vae_gb"] is None) == (value not in (str(bad), str(nested), str(tmp_path)))  # file sizes
    # a text encoder's file given as the DiT is not a DiT
    te_file = demo / "models/comfyui/qwen_2.5_vl_7b.safetensors"
    assert vram_for({"dit": str(te_file)}, demo, NO_GPU)["dit"]["source"] == "default"
