"""Load the DiT, VAE and text encoder from any release layout, tiny or full size, through one path.

Each loader resolves the files, checks that they hold the expected kind of model, infers the
architecture from the tensors, builds the module with empty weights and assigns the tensors read
(memory-mapped) from the files straight in the target dtype and device.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qwen_image_studio.models import arch, configs, fp8, keymaps
from qwen_image_studio.models.files import ModelFiles, resolve_model_files

logger = logging.getLogger(__name__)

KIND_FLAGS = {"dit": "--dit", "vae": "--vae", "text_encoder": "--text_encoder"}
VARIANT_2511 = "edit-2511"
KEPT_SCALE = "#scale"  # suffix of the scale entries _read_state_dict returns for fp8 weights it keeps


@dataclass
class _Prepared:
    files: ModelFiles
    names: dict[str, str]  # module key -> file key
    fp8: bool


def _check_kind(files: ModelFiles, expected: str) -> None:
    keys = [k for k in files.tensors if not fp8.is_fp8_auxiliary(k)]
    found = keymaps.detect_kind(keys)
    if found == expected:
        return
    what = keymaps.KIND_NAMES[found]
    hint = f" (pass it as {KIND_FLAGS[found]})" if found in KIND_FLAGS else ""
    raise files.error(f"is {what}{hint}, not {keymaps.KIND_NAMES[expected]}")


def _prepare(
    path: str | Path,
    *,
    kind: str,
    component: str,
    flag: str,
    rename: Callable[[list[str]], Callable[[str], str]],
) -> _Prepared:
    files = resolve_model_files(path, component=component, flag=flag)
    _check_kind(files, kind)
    keys = [k for k in files.tensors if not fp8.is_fp8_auxiliary(k) and not k.endswith(keymaps.DIT_2511_FLAG)]
    try:
        names = keymaps.rename_keys(keys, rename(keys))
    except ValueError as exc:
        raise files.error(str(exc)) from None
    has_fp8 = any(fp8.is_fp8_code(files.tensors[k].dtype) for k in keys)
    return _Prepared(files, names, has_fp8)


def _shapes(prepared: _Prepared) -> dict[str, tuple[int, ...]]:
    return {new: prepared.files.tensors[old].shape for new, old in prepared.names.items()}


def _infer(
    prepared: _Prepared, fn: Callable[..., dict[str, Any]], shapes: Mapping[str, Any], **kw: Any
) -> dict:
    try:
        return fn(shapes, **kw)
    except KeyError as exc:
        raise prepared.files.error(f"lacks tensor {exc.args[0]!r}; the file looks incomplete") from None
    except ValueError as exc:
        raise prepared.files.error(f"unsupported architecture ({exc})") from None


def _read_state_dict(
    prepared: _Prepared,
    dtype: torch.dtype,
    device: str | torch.device,
    keep_fp8: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """The tensors of a prepared model under module names, read to `device` and cast to `dtype`.

    fp8 weights are dequantised, except those whose module name passes `keep_fp8`: they stay float8 and
    their scale (or None) is returned under ``<name>#scale`` for the caller to build fp8 layers from.
    """
    from safetensors import SafetensorError, safe_open

    info = prepared.files.tensors
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        handles: dict[Path, Any] = {}

        def get(key: str) -> torch.Tensor:
            file = info[key].file
            if file not in handles:
                handles[file] = stack.enter_context(safe_open(str(file), framework="pt", device=str(device)))
            return handles[file].get_tensor(key)

        try:
            for new, old in prepared.names.items():
                tensor = get(old)
                if fp8.is_fp8_code(info[old].dtype):
                    scale_key = fp8.weight_scale_key(old, info)
                    scale = get(scale_key) if scale_key else None
                    if keep_fp8 is not None and tensor.dtype == torch.float8_e4m3fn and keep_fp8(new):
                        out[new + KEPT_SCALE] = scale
                    else:
                        tensor = fp8.dequantize(tensor, scale, dtype)
                elif tensor.is_floating_point() and tensor.dtype != dtype:
                    tensor = tensor.to(dtype)
                out[new] = tensor
        except (SafetensorError, OSError) as exc:
            raise prepared.files.error(f"cannot read tensors (truncated or changed file?): {exc}") from None
    return out


def _assign(
    module: torch.nn.Module,
    prepared: _Prepared,
    state: dict[str, torch.Tensor],
    allow_missing: frozenset[str],
) -> None:
    try:
        result = module.load_state_dict(state, strict=not allow_missing, assign=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:400]
        raise prepared.files.error(f"tensors do not fit the inferred architecture: {detail}") from None
    if allow_missing:
        missing = set(result.missing_keys) - allow_missing
        if missing or result.unexpected_keys:
            raise prepared.files.error(
                f"tensors do not fit the inferred architecture: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(result.unexpected_keys)[:3]}"
            )


def _build(factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    from accelerate import init_empty_weights

    with init_empty_weights():
        return factory()


# ---- DiT -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DitInfo:
    """What a DiT file is, read from its header: blocks, variant, fp8, and the inferred config."""

    path: Path
    num_layers: int
    variant: str | None  # "edit-2511" when the file says so; t2i / edit / 2509 files look alike
    fp8: bool
    config: dict[str, Any]


def _dit_prepared(path: str | Path, flag: str) -> tuple[_Prepared, bool]:
    prepared = _prepare(
        path, kind="dit", component="transformer", flag=flag, rename=lambda _: keymaps.dit_from_comfy
    )
    has_flag = any(k.endswith(keymaps.DIT_2511_FLAG) for k in prepared.files.tensors)
    config_2511 = bool((prepared.files.config or {}).get("zero_cond_t", False))
    return prepared, has_flag or config_2511


def inspect_dit(path: str | Path, *, flag: str = "--dit") -> DitInfo:
    """Describe a DiT file or folder without loading weights (raises ModelFileError like `load_dit`)."""
    prepared, is_2511 = _dit_prepared(path, flag)
    cfg = _infer(prepared, arch.infer_dit_config, _shapes(prepared), zero_cond_t=is_2511)
    variant = VARIANT_2511 if is_2511 else None
    return DitInfo(prepared.files.path, cfg["num_layers"], variant, prepared.fp8, cfg)


def load_dit(
    path: str | Path,
    *,
    dtype: torch.dtype,
    device: str | torch.device = "cpu",
    model_version: str | None = None,
    flag: str = "--dit",
    keep_fp8: bool = False,
) -> Any:
    """A `QwenImageTransformer2DModel` from a ComfyUI file, diffusers folder or shards.

    fp8 weights are dequantised to `dtype`, unless `keep_fp8` (``--fp8_base``): then the block linears of
    an fp8 file become Fp8Linear layers holding the file's fp8 weights and scales as they are.
    """
    from diffusers import QwenImageTransformer2DModel

    if model_version is not None and model_version not in configs.MODEL_VERSIONS:
        raise ValueError(f"unknown model_version {model_version!r}; expected one of {configs.MODEL_VERSIONS}")
    prepared, is_2511 = _dit_prepared(path, flag)
    if is_2511 and model_version is not None and model_version not in configs.ZERO_COND_T_VERSIONS:
        raise prepared.files.error(
            f"is a Qwen-Image-Edit-2511 DiT (it carries {keymaps.DIT_2511_FLAG}) but --model_version is "
            f"{model_version}; use --model_version {VARIANT_2511}"
        )
    zero_cond_t = model_version in configs.ZERO_COND_T_VERSIONS if model_version else is_2511
    cfg = _infer(prepared, arch.infer_dit_config, _shapes(prepared), zero_cond_t=zero_cond_t)
    model = _build(lambda: QwenImageTransformer2DModel(**cfg))
    keep = _is_block_linear_weight if keep_fp8 else None
    state = _read_state_dict(prepared, dtype, device, keep)
    kept = _install_fp8_linears(model, state, dtype, prepared) if keep_fp8 else 0
    _assign(model, prepared, state, frozenset())
    model.to(device).eval()
    logger.info(
        "%s: %s, %d blocks x %d, %s%s",
        flag,
        prepared.files.path,
        cfg["num_layers"],
        cfg["num_attention_heads"] * cfg["attention_head_dim"],
        "Qwen-Image-Edit-2511 (zero_cond_t)" if zero_cond_t else "Qwen-Image / Edit / Edit-2509",
        _fp8_note(prepared.fp8, kept),
    )
    return model


def _fp8_note(has_fp8: bool, kept: int) -> str:
    if not has_fp8:
        return ""
    if kept:
        return f", {kept} fp8 block linears kept in fp8 with their scales (the rest dequantised)"
    return ", fp8 weights dequantised"


def _is_block_linear_weight(name: str) -> bool:
    return name.startswith("transformer_blocks.") and name.endswith(".weight")


def _install_fp8_linears(
    model: torch.nn.Module, state: dict[str, Any], dtype: torch.dtype, prepared: _Prepared
) -> int:
    """Replace the Linear of every kept fp8 weight in `state` by an Fp8Linear holding it; returns the count."""
    from qwen_image_studio.memory.fp8_linear import Fp8Linear

    count = 0
    for scale_key in [k for k in state if k.endswith(KEPT_SCALE)]:
        name = scale_key[: -len(KEPT_SCALE)]
        path = name[: -len(".weight")]
        scale = state.pop(scale_key)
        weight = state.pop(name)
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        linear = getattr(parent, attr, None)
        if not isinstance(linear, torch.nn.Linear) or tuple(linear.weight.shape) != tuple(weight.shape):
            state[name] = fp8.dequantize(weight, scale, dtype)  # not a Linear weight: plain tensor
            continue
        try:
            scales = fp8.linear_scales(scale, tuple(weight.shape)).to(weight.device)
        except ValueError as exc:
            raise prepared.files.error(f"{name}: {exc}") from None
        bias = state.pop(path + ".bias", None)
        layer = Fp8Linear.from_quantized(weight, scales, bias, dtype)
        setattr(parent, attr, layer)
        state.update({f"{path}.{k}": v for k, v in layer.state_dict(keep_vars=True).items()})
        count += 1
    return count


# ---- VAE -------------------------------------------------------------------------------------------
def _vae_rename(keys: list[str]) -> Callable[[str], str]:
    if not keymaps.is_comfy_vae(keys):
        return lambda k: k
    layout = keymaps.vae_layout_from_keys(keys)
    return lambda k: keymaps.vae_from_comfy(k, layout)


def load_vae(
    path: str | Path, *, dtype: torch.dtype, device: str | torch.device = "cpu", flag: str = "--vae"
) -> Any:
    """An `AutoencoderKLQwenImage` from a ComfyUI/Wan-named file, a diffusers vae/ folder or a pipeline root."""
    from diffusers import AutoencoderKLQwenImage

    prepared = _prepare(path, kind="vae", component="vae", flag=flag, rename=_vae_rename)
    cfg = _infer(prepared, arch.infer_vae_config, _shapes(prepared))
    folder_cfg = prepared.files.config or {}
    for key in ("latents_mean", "latents_std"):
        if isinstance(folder_cfg.get(key), list) and len(folder_cfg[key]) == cfg["z_dim"]:
            cfg[key] = folder_cfg[key]
    model = _build(lambda: AutoencoderKLQwenImage(**cfg))
    _assign(model, prepared, _read_state_dict(prepared, dtype, device), frozenset())
    model.to(device).eval()
    logger.info("%s: %s, base_dim %d, z_dim %d", flag, prepared.files.path, cfg["base_dim"], cfg["z_dim"])
    return model


# ---- text encoder ------------------------------------------------------------------------------------
def load_text_encoder(
    path: str | Path, *, dtype: torch.dtype, device: str | torch.device = "cpu", flag: str = "--text_encoder"
) -> Any:
    """A transformers `Qwen2_5_VLForConditionalGeneration` from a ComfyUI file, text_encoder/ folder or shards."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    prepared = _prepare(
        path,
        kind="text_encoder",
        component="text_encoder",
        flag=flag,
        rename=lambda _: keymaps.text_encoder_from_comfy,
    )
    release_shapes = {keymaps.text_encoder_to_comfy(k): v for k, v in _shapes(prepared).items()}
    cfg_json = _infer(prepared, arch.infer_text_encoder_config, release_shapes)
    config = configs.qwen_vl_config(cfg_json)
    model = _build(lambda: Qwen2_5_VLForConditionalGeneration(config))
    tied = frozenset({"lm_head.weight"}) if cfg_json["tie_word_embeddings"] else frozenset()
    _assign(model, prepared, _read_state_dict(prepared, dtype, device), tied)
    if tied:
        model.lm_head.weight = model.get_input_embeddings().weight
    model.to(device).eval()
    logger.info(
        "%s: %s, %d layers x %d, vision %d blocks%s",
        flag,
        prepared.files.path,
        cfg_json["num_hidden_layers"],
        cfg_json["hidden_size"],
        cfg_json["vision_config"]["depth"],
        ", fp8 weights dequantised" if prepared.fp8 else "",
    )
    return model
