"""The VRAM estimate: our trainer's measured H100 peaks, the direction of every option, and the GPU presets."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qwen_image_studio.memory.presets import PRESETS, preset_for
from qwen_image_studio.memory.vram_estimate import VramOptions, estimate_vram
from qwen_image_studio.params.schema import StudioConfig

BASE = VramOptions()  # 1024x1024, batch 1, bf16, gradient checkpointing, rank 8, adamw8bit
FP8 = replace(BASE, fp8_base=True, fp8_scaled=True)
MEASURED = VramOptions(network_dim=16, optimizer="adamw", text_tokens=128)  # bench/gpu_bench.py's runs
MEASURED_FP8 = replace(MEASURED, fp8_base=True, fp8_scaled=True)
GIB = 2**30 / 1e9


def gb(opts: VramOptions) -> float:
    return estimate_vram(opts).total_gb


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
    assert est.total_gb == pytest.approx(parts)
    assert all(
        v > 0 for v in (est.weights_gb, est.swap_buffer_gb, est.activations_gb, est.lora_gb, est.fixed_gb)
    )
    assert estimate_vram(BASE).as_json()["total_gb"] == round(gb(BASE), 1)


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


def test_the_estimator_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, qwen_image_studio.memory.vram_estimate, qwen_image_studio.memory.presets; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
