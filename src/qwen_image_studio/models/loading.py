"""Load the DiT, VAE and text encoder from any release layout, tiny or full size, through one path.

Each loader resolves the files, checks that they hold the expected kind of model, infers the
architecture from the tensors, builds the module with empty weights and assigns the tensors read
(memory-mapped) from the files straight in the target dtype and device.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
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
Quantizer = Callable[[str, torch.Tensor], "tuple[torch.Tensor, torch.Tensor] | None"]


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
    quantize: Quantizer | None = None,
) -> dict[str, Any]:
    """The tensors of a prepared model under module names, read to `device` and cast to `dtype`.

    fp8 weights are dequantised, except those whose module name passes `keep_fp8`: they stay float8 and
    their scale (or None) is returned under ``<name>#scale`` for the caller to build fp8 layers from.
    `quantize(name, tensor)` may return (fp8 weight, scales) for a tensor just read: it is returned the
    same way, so that a model can be stored in fp8 while it loads (one full-precision tensor at a time).
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
                if quantize is not None and tensor.dtype != torch.float8_e4m3fn:
                    quantized = quantize(new, tensor)
                    if quantized is not None:
                        tensor, out[new + KEPT_SCALE] = quantized
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
    quantize: Quantizer | None = None,
) -> Any:
    """A `QwenImageTransformer2DModel` from a ComfyUI file, diffusers folder or shards.

    fp8 weights are dequantised to `dtype`, unless `keep_fp8` (``--fp8_base``): then the block linears of
    an fp8 file become Fp8Linear layers holding the file's fp8 weights and scales as they are.
    `quantize` (see `_read_state_dict`) stores the weights it accepts in fp8 as they are read: with
    ``--fp8_base`` the device never holds the full-precision model.
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
    keep = is_block_linear_weight if keep_fp8 else None
    state = _read_state_dict(prepared, dtype, device, keep, quantize)
    kept = _install_fp8_linears(model, state, dtype, prepared) if keep_fp8 or quantize else 0
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


def is_block_linear_weight(name: str) -> bool:
    """Whether a DiT state-dict name is the weight of a layer inside a transformer block."""
    return name.startswith("transformer_blocks.") and name.endswith(".weight")


def _install_fp8_linears(
    model: torch.nn.Module, state: dict[str, Any], dtype: torch.dtype, prepared: _Prepared
) -> int:
    """Replace the Linear of every kept fp8 weight in `state` by an Fp8Linear holding it; returns the count."""
    from qwen_image_studio.models.fp8_linear import Fp8Linear

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
def _text_encoder_prepared(path: str | Path, flag: str) -> tuple[_Prepared, dict[str, Any]]:
    """A text-encoder file prepared for reading, and the config.json dict inferred from its tensors."""
    prepared = _prepare(
        path,
        kind="text_encoder",
        component="text_encoder",
        flag=flag,
        rename=lambda _: keymaps.text_encoder_from_comfy,
    )
    release_shapes = {keymaps.text_encoder_to_comfy(k): v for k, v in _shapes(prepared).items()}
    return prepared, _infer(prepared, arch.infer_text_encoder_config, release_shapes)


def _text_encoder_skeleton(cfg_json: dict[str, Any]) -> Any:
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = configs.qwen_vl_config(cfg_json)
    return _build(lambda: Qwen2_5_VLForConditionalGeneration(config))


def load_text_encoder(
    path: str | Path, *, dtype: torch.dtype, device: str | torch.device = "cpu", flag: str = "--text_encoder"
) -> Any:
    """A transformers `Qwen2_5_VLForConditionalGeneration` from a ComfyUI file, text_encoder/ folder or shards.

    The whole model, lm_head and vision tower included. Encoding prompts needs less: see
    `load_prompt_encoder`.
    """
    prepared, cfg_json = _text_encoder_prepared(path, flag)
    model = _text_encoder_skeleton(cfg_json)
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


TE_LAYERS = "model.language_model.layers."  # module-name prefix of the language model's decoder layers
QUANTIZE_SLICES = 8
"""A weight is quantised to fp8 in this many slices of rows (per-row scales: the same bits as in one go), so
its float32 temporaries stay at a quarter of its bf16 size (34 MB for a full-size MLP weight)."""


class _NoLogits(torch.nn.Module):
    """Stands in for lm_head: prompt encoding reads hidden states, never logits (it gets a (..., 0) tensor).

    The release lm_head is 152064 x 3584 (1.09 GB in bf16), and its logits for every token of a batch
    (152064 values per token) would cost more activation memory than the hidden states themselves.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states.new_empty(*hidden_states.shape[:-1], 0)


class _NotLoaded(torch.nn.Module):
    """Stands in for a part of the model that was not loaded; using it fails with a clear message."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def _fail(self) -> RuntimeError:
        return RuntimeError(f"the text encoder's {self.what} was not loaded (text-to-image needs none)")

    @property
    def dtype(self) -> torch.dtype:
        raise self._fail()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise self._fail()


@contextlib.contextmanager
def _host_reader(prepared: _Prepared) -> Iterator[Callable[[str], tuple[torch.Tensor, torch.Tensor | None]]]:
    """`get(file key) -> (tensor as stored, its fp8 scale or None)`, memory-mapped on the host.

    Files are opened for one group of tensors at a time: once a layer's tensors are on the device, the
    host pages they were read from are released with the mapping (host RAM holds about one layer, not a
    growing part of the file, unless the tensors are kept on the CPU).
    """
    from safetensors import SafetensorError, safe_open

    info = prepared.files.tensors
    with contextlib.ExitStack() as stack:
        handles: dict[Path, Any] = {}

        def tensor(key: str) -> torch.Tensor:
            file = info[key].file
            if file not in handles:
                handles[file] = stack.enter_context(safe_open(str(file), framework="pt", device="cpu"))
            return handles[file].get_tensor(key)

        def get(key: str) -> tuple[torch.Tensor, torch.Tensor | None]:
            try:
                if not fp8.is_fp8_code(info[key].dtype):
                    return tensor(key), None
                scale_key = fp8.weight_scale_key(key, info)
                return tensor(key), tensor(scale_key) if scale_key else None
            except (SafetensorError, OSError) as exc:
                raise prepared.files.error(
                    f"cannot read tensors (truncated or changed file?): {exc}"
                ) from None

        yield get


def _to_device(
    tensor: torch.Tensor,
    scale: torch.Tensor | None,
    stored_fp8: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """A tensor read from a file on `device` in `dtype` (fp8 ones dequantised there), as `_read_state_dict` does."""
    tensor = tensor.to(device)
    if stored_fp8:
        return fp8.dequantize(tensor, None if scale is None else scale.to(device), dtype)
    if tensor.is_floating_point() and tensor.dtype != dtype:
        return tensor.to(dtype)
    return tensor


def _quantize_in_slices(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, (out, 1) float32 scales): `quantize_weight` per row, run on `QUANTIZE_SLICES` row slices."""
    from qwen_image_studio.models.fp8_linear import FP8, quantize_weight

    rows = -(-weight.shape[0] // QUANTIZE_SLICES)
    if rows >= weight.shape[0]:
        return quantize_weight(weight)
    out = torch.empty(weight.shape, dtype=FP8, device=weight.device)
    scales = torch.empty(weight.shape[0], 1, dtype=torch.float32, device=weight.device)
    for start in range(0, weight.shape[0], rows):
        rows_fp8, rows_scale = quantize_weight(weight[start : start + rows])
        out[start : start + rows], scales[start : start + rows] = rows_fp8, rows_scale
        del rows_fp8, rows_scale
    return out, scales


def _is_linear_weight(module: torch.nn.Module, name: str) -> bool:
    if not name.endswith(".weight"):
        return False
    try:
        return isinstance(module.get_submodule(name[: -len(".weight")]), torch.nn.Linear)
    except AttributeError:
        return False


def load_prompt_encoder(
    path: str | Path,
    *,
    dtype: torch.dtype,
    device: str | torch.device = "cpu",
    fp8_linears: bool = False,
    vision: bool = True,
    flag: str = "--text_encoder",
    lm_head: bool = False,
) -> Any:
    """The Qwen2.5-VL text encoder as prompt encoding uses it, put on `device` one decoder layer at a time.

    With `lm_head` (captioning, which generates text) lm_head is loaded too, in `dtype` like the embedding.

    Prompt encoding reads the last hidden state, so lm_head is never loaded (`_NoLogits`, 1.09 GB at full
    size), and without `vision` (text-to-image) neither is the vision tower (1.35 GB). The weights are read
    memory-mapped on the host, one group at a time (the embedding, norm and vision tower, then each decoder
    layer) and go to `device` in `dtype`. With `fp8_linears` (``--fp8_vl``) each decoder-layer linear is
    quantised on `device` as soon as its weight is there (per output row, bit for bit what
    `quantize_linears` does to the loaded model) and becomes an `Fp8Linear`; the linears an fp8 file
    stores in float8_e4m3fn stay as stored, with the file's scales. Without `fp8_linears`, the values are
    those `load_text_encoder` loads, bit for bit.

    Device memory at full size, computed and measured: bench/RESULTS.md, "Text-encoder device memory".
    Activations come on top (small for prompts; the vision tower's for edit-mode control images). A file
    in another dtype than `dtype` adds one tensor in its own dtype while it is cast, an fp8 file loaded
    without `fp8_linears` one float32 tensor while it is dequantised.
    Host RAM holds the file pages of one group at a time (plus the model itself when `device` is the CPU).
    """
    device = torch.device(device)
    prepared, cfg_json = _text_encoder_prepared(path, flag)
    model = _text_encoder_skeleton(cfg_json)
    if not lm_head:
        model.lm_head = _NoLogits()
    skipped: tuple[str, ...] = () if lm_head else ("lm_head.",)
    if not vision:
        model.model.visual = _NotLoaded("vision tower")
        skipped += ("model.visual.",)
    layers = model.model.language_model.layers
    rest: dict[str, str] = {}
    per_layer: list[dict[str, str]] = [{} for _ in layers]
    for new, old in prepared.names.items():
        index, _, local = new.removeprefix(TE_LAYERS).partition(".")
        if new.startswith(TE_LAYERS) and index.isdigit() and int(index) < len(layers):
            per_layer[int(index)][local] = old
        elif not new.startswith(skipped):
            rest[new] = old
    info = prepared.files.tensors

    dequantized = sum(fp8.is_fp8_code(info[old].dtype) for old in rest.values())
    with _host_reader(prepared) as get:  # embedding, final norm, vision tower: as they stay
        state = {
            new: _to_device(*get(old), fp8.is_fp8_code(info[old].dtype), device, dtype)
            for new, old in rest.items()
        }
    _assign(model, prepared, state, frozenset(k for k in model.state_dict() if k not in state))
    del state

    kept = quantized = 0
    for layer, names in zip(layers, per_layer, strict=True):
        state = {}
        with _host_reader(prepared) as get:
            for local, old in names.items():
                tensor, scale = get(old)
                linear = fp8_linears and _is_linear_weight(layer, local)
                if linear and tensor.dtype == torch.float8_e4m3fn:  # the file's fp8, as stored
                    state[local] = tensor.to(device)
                    state[local + KEPT_SCALE] = None if scale is None else scale.to(device)
                    kept += 1
                    continue
                stored_fp8 = fp8.is_fp8_code(info[old].dtype)
                dequantized += stored_fp8
                placed = _to_device(tensor, scale, stored_fp8, device, dtype)
                if linear:  # the only full-precision weight on the device beyond the fp8 model
                    state[local], state[local + KEPT_SCALE] = _quantize_in_slices(placed)
                    quantized += 1
                elif fp8_linears and placed is tensor:  # on the CPU, a view of the file's mapping: a
                    state[local] = placed.clone()  # copy lets the pages read for quantising go with it
                else:
                    state[local] = placed
                del placed
            tensor = scale = None  # no host view outlives its group
        if fp8_linears:
            _install_fp8_linears(layer, state, dtype, prepared)
        _assign(layer, prepared, state, frozenset())
        del state

    if lm_head and cfg_json["tie_word_embeddings"]:
        model.lm_head.weight = model.get_input_embeddings().weight
    unloaded = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if unloaded:
        raise prepared.files.error(f"lacks tensor {unloaded[0]!r}; the file looks incomplete")
    model.to(device).eval()
    model.requires_grad_(False)
    notes = (["lm_head loaded"] if lm_head else ["lm_head not loaded"]) + ([] if vision else ["vision tower not loaded (text-to-image)"])
    if fp8_linears:
        notes.append(
            f"{kept + quantized} decoder-layer linears in float8_e4m3fn"
            + (f" ({kept} as stored in the file)" if kept else " (one scale per output row)")
        )
    if dequantized:
        notes.append(f"{dequantized} fp8 weights of the file dequantised")
    logger.info(
        "%s: %s, %d layers x %d, %s",
        flag,
        prepared.files.path,
        cfg_json["num_hidden_layers"],
        cfg_json["hidden_size"],
        ", ".join(notes),
    )
    return model


def prompt_encoder_device_bytes(
    config_json: dict[str, Any], *, fp8_linears: bool, vision: bool, dtype: torch.dtype = torch.bfloat16
) -> tuple[int, int]:
    """(bytes `load_prompt_encoder` leaves on the device, most bytes it holds there beyond those while loading).

    Counted from the parameters of the architecture (`config_json`, e.g. ``configs.text_encoder_config()``)
    for a file stored in `dtype`: with `fp8_linears` each decoder-layer linear weight takes one byte a value
    plus a float32 scale per row; everything else `dtype`, buffers as they are; no lm_head, and no vision
    tower without `vision`. The loading extra is the largest such weight in `dtype` plus its float32 row
    slices being quantised (two slices and one in fp8 live at once; counted as three slices).
    """
    model = _text_encoder_skeleton(config_json)
    resident = extra = 0
    for name, module in model.named_modules():
        if name.startswith("lm_head") or (not vision and name.startswith("model.visual")):
            continue
        params = dict(module.named_parameters(recurse=False))
        if fp8_linears and name.startswith(TE_LAYERS) and isinstance(module, torch.nn.Linear):
            out_features, in_features = params.pop("weight").shape
            resident += out_features * in_features + out_features * 4
            rows = -(-out_features // QUANTIZE_SLICES)
            extra = max(extra, out_features * in_features * dtype.itemsize + 3 * rows * in_features * 4)
        resident += sum(p.numel() * dtype.itemsize for p in params.values())
        resident += sum(b.numel() * b.element_size() for b in module.buffers(recurse=False))
    return resident, extra
