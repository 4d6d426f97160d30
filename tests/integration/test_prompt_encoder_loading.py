"""`load_prompt_encoder`: the text encoder for prompt encoding, put on its device one layer at a time.

No GPU here, so device memory is measured on the CPU with `DeviceBytes`: it counts every storage a torch
op allocates and drops it when it is freed (storage finalizers), which is what `torch.cuda.memory_allocated`
would see on a GPU. The file is memory-mapped by safetensors (`set_` on a mapped storage, not an
allocation), so only what the loader places counts, as on a GPU; the file is float32 and the load bfloat16
so that every placed tensor is a fresh copy, as a host-to-device copy is. The one CPU-only extra: the
transient float32 parameters ``init_empty_weights`` creates while building the skeleton, one at a time
before anything is read (smaller than any peak below).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from qwen_image_studio.demo.models import create_demo_models
from qwen_image_studio.errors import ModelFileError
from qwen_image_studio.models import configs
from qwen_image_studio.models.fp8 import quantize_fp8
from qwen_image_studio.models.fp8_linear import Fp8Linear, quantize_linears, relative_error
from qwen_image_studio.models.loading import (
    load_prompt_encoder,
    load_text_encoder,
    prompt_encoder_device_bytes,
)
from qwen_image_studio.models.writing import comfy_text_encoder_state_dict

IDS = torch.tensor([[151644, 8948, 198, 151645, 33, 77, 1024, 151644]])


class DeviceBytes(TorchDispatchMode):
    """Live and peak bytes of the storages torch ops allocate on `device` while the mode is active."""

    def __init__(self, device: str = "cpu") -> None:
        super().__init__()
        self.device = torch.device(device)
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        seen = set()
        for leaf in tree_leaves((args, kwargs)):
            if isinstance(leaf, torch.Tensor):
                seen.add(leaf.untyped_storage()._cdata)
            elif isinstance(leaf, torch.UntypedStorage):  # set_(storage): a memory-mapped file region
                seen.add(leaf._cdata)
        out = func(*args, **kwargs)
        for leaf in tree_leaves(out):
            if not isinstance(leaf, torch.Tensor) or leaf.device != self.device:
                continue
            storage = leaf.untyped_storage()
            key = storage._cdata
            if key in seen or key in self.live:
                continue
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)
        return out


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct storages behind a module's parameters and buffers."""
    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in model.state_dict().values()}
    storages.update({b.untyped_storage()._cdata: b.untyped_storage().nbytes() for b in model.buffers()})
    return sum(storages.values())


# Six decoder layers as wide as they need to be for the layers (not the 152k-token embedding) to make up
# most of the model, as at full size: 983k weights a layer (1.97 MB in bf16), 131k in the embedding.
LAYERED = {
    "vocab_size": 512,
    "hidden_size": 256,
    "num_hidden_layers": 6,
    "intermediate_size": 1024,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vision_depth": 2,
    "vision_hidden_size": 16,
    "vision_intermediate_size": 32,
    "vision_num_heads": 2,
}


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A float32 ComfyUI-named text-encoder file of the LAYERED architecture, and its config.json dict."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    cfg = configs.text_encoder_config(**LAYERED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2_5_VLForConditionalGeneration(configs.qwen_vl_config(cfg))
    path = tmp_path_factory.mktemp("layered") / "qwen_2.5_vl_layered_fp32.safetensors"
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(comfy_text_encoder_state_dict(state), str(path))
    return path, cfg


@pytest.fixture(scope="module")
def demo_te(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_demo_models(tmp_path_factory.mktemp("demo-te"), seed=0)["text_encoder"]


def _layer_bytes_bf16(cfg: dict[str, Any]) -> int:
    from transformers import Qwen2_5_VLForConditionalGeneration

    from qwen_image_studio.models.loading import _build

    model = _build(lambda: Qwen2_5_VLForConditionalGeneration(configs.qwen_vl_config(cfg)))
    return sum(p.numel() * 2 for p in model.model.language_model.layers[0].parameters())


def test_fp8_load_holds_less_than_one_bf16_layer_beyond_the_fp8_model(
    layered: tuple[Path, dict[str, Any]],
) -> None:
    path, cfg = layered
    layer = _layer_bytes_bf16(cfg)
    for vision in (False, True):
        resident, extra = prompt_encoder_device_bytes(cfg, fp8_linears=True, vision=vision)
        with DeviceBytes() as acct:
            te = load_prompt_encoder(path, dtype=torch.bfloat16, fp8_linears=True, vision=vision)
        linears = [m for m in te.model.language_model.modules() if isinstance(m, Fp8Linear)]
        assert len(linears) == 7 * LAYERED["num_hidden_layers"]
        assert not any(isinstance(m, torch.nn.Linear) for m in te.model.language_model.modules())
        assert model_bytes(te) == resident == acct.current, "nothing but the model is left allocated"
        assert acct.peak <= resident + extra, (acct.peak, resident, extra)
        assert acct.peak - resident < layer, "more than one bf16 decoder layer beyond the fp8 model"
        assert extra < layer / 2

    # The instrument sees what the old path cost: the whole bf16 model (lm_head, vision tower) first.
    with DeviceBytes() as acct:
        te = load_text_encoder(path, dtype=torch.bfloat16)
        quantize_linears(te.model.language_model, compute_dtype=torch.bfloat16)
    full_bf16 = prompt_encoder_device_bytes(cfg, fp8_linears=False, vision=True)[0] + 512 * 256 * 2
    assert acct.peak >= full_bf16 > resident + 3 * layer


def test_full_precision_load_places_the_model_and_nothing_else(layered: tuple[Path, dict[str, Any]]) -> None:
    path, cfg = layered
    for vision in (False, True):
        resident, extra = prompt_encoder_device_bytes(cfg, fp8_linears=False, vision=vision)
        with DeviceBytes() as acct:
            te = load_prompt_encoder(path, dtype=torch.bfloat16, vision=vision)
        assert extra == 0
        assert model_bytes(te) == resident == acct.current == acct.peak


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return (
        torch.equal(a.view(torch.uint8), b.view(torch.uint8)) if a.element_size() == 1 else torch.equal(a, b)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fp8_linears", [False, True])
def test_same_tensors_and_hidden_states_as_the_whole_model(
    demo_te: Path, dtype: torch.dtype, fp8_linears: bool
) -> None:
    """Without fp8 the loaded values are load_text_encoder's; with fp8, what quantize_linears made of them."""
    reference = load_text_encoder(demo_te, dtype=dtype)
    if fp8_linears:
        quantize_linears(reference.model.language_model, compute_dtype=dtype)
    want_state = reference.state_dict()
    with torch.no_grad():
        want = reference(input_ids=IDS, output_hidden_states=True).hidden_states[-1]
    for vision in (False, True):
        te = load_prompt_encoder(demo_te, dtype=dtype, fp8_linears=fp8_linears, vision=vision)
        got_state = te.state_dict()
        expected = {
            k
            for k in want_state
            if not k.startswith("lm_head.") and (vision or not k.startswith("model.visual."))
        }
        assert got_state.keys() == expected
        assert all(_equal(got_state[k], want_state[k]) for k in expected)
        with torch.no_grad():
            out = te(input_ids=IDS, output_hidden_states=True)
        assert torch.equal(out.hidden_states[-1], want)
        assert out.logits.shape == (*IDS.shape, 0)  # no lm_head: no logits
    with pytest.raises(RuntimeError, match="vision tower was not loaded"):
        load_prompt_encoder(demo_te, dtype=dtype, vision=False).model.visual(torch.zeros(4, 8))


def test_fp8_scaled_file_keeps_its_fp8_weights_as_stored(demo_te: Path, tmp_path: Path) -> None:
    state = load_file(str(demo_te))
    out = quantize_fp8(state, scaled=True, scale_suffix=".scale_weight", targets=("model.layers.",))
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)  # ComfyUI's marker of this layout
    path = tmp_path / "qwen_2.5_vl_7b_fp8_scaled.safetensors"
    save_file(out, str(path))
    with DeviceBytes() as acct:
        te = load_prompt_encoder(path, dtype=torch.float32, fp8_linears=True, vision=False)
    cfg = configs.text_encoder_config_for("tiny")
    resident, _ = prompt_encoder_device_bytes(cfg, fp8_linears=True, vision=False, dtype=torch.float32)
    assert model_bytes(te) == resident
    # kept fp8 weights are views of the file's mapping here (on a GPU: fp8 copies); never anything more
    assert acct.peak <= resident, "no full-precision copy of a kept weight"
    layer = te.model.language_model.layers[1]
    for name in ("self_attn.q_proj", "mlp.down_proj"):
        linear = layer.get_submodule(name)
        assert isinstance(linear, Fp8Linear) and not linear.native
        stored = out[f"model.layers.1.{name}.weight"]
        assert _equal(linear.weight_fp8, stored)
        scale = out[f"model.layers.1.{name}.scale_weight"]
        assert torch.equal(linear.weight_scale, scale.expand(stored.shape[0], 1))
    full = load_prompt_encoder(demo_te, dtype=torch.float32, vision=False)
    with torch.no_grad():
        got = te(input_ids=IDS, output_hidden_states=True).hidden_states[-1]
        want = full(input_ids=IDS, output_hidden_states=True).hidden_states[-1]
    assert 0 < relative_error(want, got) < 0.1


def test_incomplete_file_is_named(demo_te: Path, tmp_path: Path) -> None:
    state = load_file(str(demo_te))
    del state["model.layers.1.post_attention_layernorm.weight"]
    path = tmp_path / "incomplete.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelFileError, match="post_attention_layernorm"):
        load_prompt_encoder(path, dtype=torch.float32)


def test_full_size_device_memory() -> None:
    """The figures of `load_prompt_encoder`'s docstring, from Qwen2.5-VL-7B's parameter counts."""
    cfg = configs.text_encoder_config()
    gb = {
        (fp8_linears, vision): tuple(
            round(n / 1e9, 2)
            for n in prompt_encoder_device_bytes(cfg, fp8_linears=fp8_linears, vision=vision)
        )
        for fp8_linears in (True, False)
        for vision in (False, True)
    }
    assert gb == {
        (True, False): (7.62, 0.24),
        (True, True): (8.97, 0.24),
        (False, False): (14.14, 0.0),
        (False, True): (15.49, 0.0),
    }
    layer = _layer_bytes_bf16(cfg)
    assert round(layer / 1e9, 3) == 0.466
    extra = prompt_encoder_device_bytes(cfg, fp8_linears=True, vision=False)[1]
    assert extra < 0.52 * layer  # about half a bf16 decoder layer beyond the fp8 model, never one
