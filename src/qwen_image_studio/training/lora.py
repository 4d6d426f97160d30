"""LoRA on the DiT's block linears, and its file: ``lora_unet_...`` keys with ``.alpha``, metadata and a hash.

Each targeted ``nn.Linear`` (see :mod:`lora_keys`) is replaced in its parent by a :class:`LoRALinear` that
keeps the frozen original as ``base`` and adds ``up(dropout(down(x))) * alpha / rank * multiplier``; down is
Kaiming-uniform, up is zero, so training starts from the base model exactly. In training, as in the
reference trainer: ``--network_dropout`` drops elements of down(x); ``rank_dropout`` (network_args) drops
whole ranks per sample and rescales by 1 / (1 - p); ``module_dropout`` skips a layer's update for a step. The LoRA layers live inside
the transformer (DDP then sees their parameters); :class:`LoRANetwork` is the handle on them: parameter
groups (LoRA+), the file's state dict, loading ``--network_weights`` (a module of that file outside the
target set, such as the reference trainer's ``img_mod.1``, gets a LoRA layer of the file's rank, so every
key of the file is loaded and trained on).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_save_safetensors, tensors_data_sha256
from ..errors import ConfigError
from ..models import lora_keys

log = logging.getLogger(__name__)

NETWORK_MODULE = "networks.lora_qwen_image"
ARCHITECTURE = "qwen_image"
HASH_KEY = "sshs_model_hash"
SAVE_DTYPES = {"float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update."""

    def __init__(
        self,
        base: nn.Module,
        rank: int,
        alpha: float,
        dropout: float | None = None,
        multiplier: float = 1.0,
        rank_dropout: float | None = None,
        module_dropout: float | None = None,
    ) -> None:
        super().__init__()
        in_features, out_features = base.in_features, base.out_features
        self.base = base
        self.rank = rank
        self.multiplier = multiplier
        self.dropout = dropout or 0.0
        self.rank_dropout = rank_dropout or 0.0
        self.module_dropout = module_dropout or 0.0
        self.lora_down = nn.Linear(in_features, rank, bias=False)
        self.lora_up = nn.Linear(rank, out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.register_buffer("alpha", torch.tensor(float(alpha)), persistent=True)
        self._scale = float(alpha) / rank  # a Python float: reading the buffer would sync the GPU per call
        base.requires_grad_(False)

    def set_alpha(self, alpha: float) -> None:
        """Change alpha (e.g. to the one of a --network_weights file)."""
        self.alpha.fill_(alpha)
        self._scale = alpha / self.rank

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[arg-type]
        self._scale = float(self.alpha) / self.rank

    @property
    def in_features(self) -> int:
        """Input width of the wrapped layer."""
        return self.base.in_features

    @property
    def out_features(self) -> int:
        """Output width of the wrapped layer."""
        return self.base.out_features

    @property
    def scale(self) -> float:
        """alpha / rank."""
        return self._scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """base(x) + up(dropout(down(x))) * alpha / rank * multiplier."""
        out = self.base(x)
        if self.multiplier == 0:
            return out
        # Under autocast the matmuls run in the autocast dtype anyway: no float32 copy of x on the way. The
        # scale multiplies the small up matrix, and the sum happens inside the up matmul (addmm): no extra
        # passes over the layer's output, which is large (tokens x width), forward or backward.
        # the CPU generator decides (no GPU sync), and checkpointing's recompute replays its state
        if self.module_dropout and self.training and float(torch.rand(())) < self.module_dropout:
            return out
        autocast = torch.is_autocast_enabled(x.device.type)
        h = self.lora_down(x if autocast else x.to(self.lora_down.weight.dtype))
        scale = self.scale * self.multiplier
        if self.training:
            if self.dropout:
                h = nn.functional.dropout(h, p=self.dropout)
            if self.rank_dropout:  # one mask per sample, shared by its tokens
                shape = (h.shape[0], *([1] * (h.ndim - 2)), h.shape[-1])
                h = h * (torch.rand(shape, device=h.device) >= self.rank_dropout).to(h.dtype)
                scale /= 1.0 - self.rank_dropout
        up = self.lora_up.weight * scale
        h = h.reshape(-1, h.shape[-1])
        if not autocast:
            h, up = h.to(out.dtype), up.to(out.dtype)
        return torch.addmm(out.reshape(-1, out.shape[-1]), h, up.t()).view(out.shape)


def linear_paths(model: nn.Module) -> list[str]:
    """Module paths of every nn.Linear (plain or stored in fp8) below `model`, in model order."""
    from ..models.fp8_linear import Fp8Linear

    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear | Fp8Linear)]


class LoRANetwork:
    """The LoRA layers injected into one transformer, by file name (``lora_unet_...``)."""

    def __init__(
        self,
        layers: dict[str, tuple[str, LoRALinear]],
        rank: int,
        alpha: float,
        model: nn.Module | None = None,
        layer_options: dict[str, Any] | None = None,
    ) -> None:
        self.layers = layers  # lora name -> (module path, layer)
        self.rank = rank
        self.alpha = alpha
        self.model = model  # the transformer the layers live in (to add a layer a loaded file needs)
        self.layer_options = layer_options or {}  # dropout, multiplier, rank/module dropout of new layers

    def add_layers(self, paths: list[str], ranks: dict[str, int], alphas: dict[str, float]) -> None:
        """Wrap more of the model's linears (module paths) with LoRA layers of the given ranks and alphas;
        the layers stay in model order."""
        if self.model is None:
            raise ValueError("this LoRANetwork was built without its model")
        for path in paths:
            layer = wrap_linear(self.model, path, ranks[path], alphas[path], self.layer_options)
            self.layers[lora_keys.lora_name(path)] = (path, layer)
        order = {p: i for i, p in enumerate(linear_paths(self.model))}
        self.layers = dict(sorted(self.layers.items(), key=lambda kv: order.get(kv[1][0], len(order))))

    def __len__(self) -> int:
        return len(self.layers)

    def modules(self) -> Iterator[LoRALinear]:
        """The LoRA layers in model order."""
        for _, layer in self.layers.values():
            yield layer

    def parameters(self) -> list[nn.Parameter]:
        """All trainable parameters (down then up of each layer)."""
        return [p for m in self.modules() for p in (m.lora_down.weight, m.lora_up.weight)]

    def param_groups(self, lr: float, loraplus_lr_ratio: float | None = None) -> list[dict[str, Any]]:
        """Optimizer groups: one at `lr`, or with LoRA+ the down matrices at lr and the up matrices at lr x ratio."""
        downs = [m.lora_down.weight for m in self.modules()]
        ups = [m.lora_up.weight for m in self.modules()]
        if not loraplus_lr_ratio or loraplus_lr_ratio == 1:
            return [{"params": downs + ups, "lr": lr, "name": "lora"}]
        return [
            {"params": downs, "lr": lr, "name": "lora_down"},
            {"params": ups, "lr": lr * loraplus_lr_ratio, "name": "lora_up"},
        ]

    def state_dict_for_file(self, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
        """``lora_unet_X.lora_down.weight`` [r, in], ``.lora_up.weight`` [out, r] and ``.alpha`` in `dtype`."""
        out: dict[str, torch.Tensor] = {}
        for name, (_, m) in self.layers.items():
            out[name + lora_keys.DOWN] = m.lora_down.weight.detach().to("cpu", dtype).contiguous()
            out[name + lora_keys.UP] = m.lora_up.weight.detach().to("cpu", dtype).contiguous()
            out[name + lora_keys.ALPHA] = m.alpha.detach().to("cpu", dtype).clone()
        return out

    def load_state_dict_from_file(
        self, tensors: dict[str, torch.Tensor], source: str = "--network_weights", create: bool = False
    ) -> int:
        """Copy LoRA tensors in the file layout into the layers; returns how many layers were set.

        With `create`, a module of the file that the target set lacks but the model has (e.g. the
        reference trainer's ``img_mod.1`` / ``txt_mod.1``) gets a LoRA layer of the file's rank first."""
        names = {
            k.rsplit(".lora_", 1)[0] if ".lora_" in k else k.removesuffix(lora_keys.ALPHA) for k in tensors
        }
        unknown = sorted(n for n in names if n not in self.layers)
        if unknown and create and self.model is not None:
            self._create_for_file(unknown, tensors, source)
            unknown = sorted(n for n in names if n not in self.layers)
        if unknown:
            raise ConfigError(
                f"{source}: {len(unknown)} LoRA module(s) of the file are not trained here, e.g. "
                f"{unknown[0]} (other targets or another model?)"
            )
        loaded = 0
        for name, (_, m) in self.layers.items():
            down, up = tensors.get(name + lora_keys.DOWN), tensors.get(name + lora_keys.UP)
            if down is None or up is None:
                continue
            if tuple(down.shape) != tuple(m.lora_down.weight.shape) or tuple(up.shape) != tuple(
                m.lora_up.weight.shape
            ):
                raise ConfigError(
                    f"{source}: {name} has rank {down.shape[0]} but --network_dim is {m.rank}; "
                    "use the file's rank"
                )
            with torch.no_grad():
                m.lora_down.weight.copy_(down.to(m.lora_down.weight.dtype))
                m.lora_up.weight.copy_(up.to(m.lora_up.weight.dtype))
                alpha = tensors.get(name + lora_keys.ALPHA)
                if alpha is not None and float(alpha) != float(m.alpha):
                    if not loaded:
                        log.warning(
                            "%s: the file's alpha %g replaces --network_alpha %g",
                            source,
                            float(alpha),
                            float(m.alpha),
                        )
                    m.set_alpha(float(alpha))
            loaded += 1
        return loaded

    def load_weights(self, path: str | Path) -> int:
        """Load a LoRA file written by :meth:`save` (``--network_weights``); returns the layers set."""
        from safetensors.torch import load_file

        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"--network_weights: not found: {p}")
        try:
            tensors = load_file(str(p))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise ConfigError(f"--network_weights: {p} is not a readable safetensors file ({exc})") from None
        if not any(k.startswith(lora_keys.LORA_PREFIX) for k in tensors):
            raise ConfigError(f"--network_weights: {p} holds no lora_unet_... tensors")
        loaded = self.load_state_dict_from_file(tensors, create=True)
        missing = len(self.layers) - loaded
        if missing:
            log.warning(
                "--network_weights: %d of %d LoRA modules not in %s start from scratch",
                missing,
                len(self.layers),
                p,
            )
        return loaded

    def _create_for_file(self, names: list[str], tensors: dict[str, torch.Tensor], source: str) -> None:
        """Add the layers a file's modules need (names the model's linears have; the others stay unknown)."""
        assert self.model is not None
        paths = {lora_keys.lora_name(p): p for p in linear_paths(self.model)}
        new = [n for n in names if n in paths and n + lora_keys.DOWN in tensors and n + lora_keys.UP in tensors]
        if not new:
            return
        ranks = {paths[n]: int(tensors[n + lora_keys.DOWN].shape[0]) for n in new}
        alphas = {
            paths[n]: float(tensors[n + lora_keys.ALPHA]) if n + lora_keys.ALPHA in tensors else self.alpha
            for n in new
        }
        self.add_layers([paths[n] for n in new], ranks, alphas)
        log.info(
            "%s: %d module(s) of the file are outside the target set (e.g. %s); "
            "LoRA layers were added for them, so every module of the file is loaded and trained",
            source,
            len(new),
            paths[new[0]],
        )

    @property
    def file_alpha(self) -> float:
        """The alpha the layers use (``--network_alpha``, or the one loaded with ``--network_weights``)."""
        return float(next(self.modules()).alpha)

    def save(self, path: Path, dtype: torch.dtype, metadata: dict[str, str]) -> Path:
        """Write the LoRA file atomically with `metadata` plus its content hash (``sshs_model_hash``)."""
        tensors = self.state_dict_for_file(dtype)
        meta = {**metadata, HASH_KEY: tensors_data_sha256(tensors)}
        return atomic_save_safetensors(tensors, path, meta)


def apply_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    dropout: float | None = None,
    include_patterns: str | None = None,
    exclude_patterns: str | None = None,
    multiplier: float = 1.0,
    rank_dropout: float | None = None,
    module_dropout: float | None = None,
    target_set: str | None = None,
) -> LoRANetwork:
    """Freeze `model` and wrap its target linears (lora_keys.select_targets; `target_set` "default" or
    "musubi") with trainable LoRA layers."""
    model.requires_grad_(False)
    targets = lora_keys.select_targets(linear_paths(model), include_patterns, exclude_patterns, target_set)
    if not targets:
        raise ConfigError("--network_args: include/exclude patterns leave no module to train")
    options = {
        "dropout": dropout,
        "multiplier": multiplier,
        "rank_dropout": rank_dropout,
        "module_dropout": module_dropout,
    }
    layers: dict[str, tuple[str, LoRALinear]] = {}
    for path in targets:
        layers[lora_keys.lora_name(path)] = (path, wrap_linear(model, path, rank, alpha, options))
    log.info("LoRA: %d modules, rank %d, alpha %g", len(layers), rank, alpha)
    return LoRANetwork(layers, rank, alpha, model, options)


def wrap_linear(model: nn.Module, path: str, rank: int, alpha: float, options: dict[str, Any]) -> LoRALinear:
    """Replace the linear at `path` in `model` by a LoRALinear around it (on the linear's device)."""
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    base = getattr(parent, attr)
    device = next(iter([*base.parameters(), *base.buffers()])).device
    layer = LoRALinear(base, rank, alpha, **options)
    layer.to(device=device)  # LoRA weights stay float32 (autocast handles the compute dtype)
    setattr(parent, attr, layer)
    return layer


def file_metadata(
    config: Any, *, epoch: int, step: int, started_at: float, alpha: float | None = None
) -> dict[str, str]:
    """The safetensors metadata of a LoRA file: kohya-style ``ss_*`` keys plus the full configuration."""
    settings = config.model_dump(mode="json")
    alpha = config.network_alpha if alpha is None else alpha
    return {
        "format": "pt",
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": str(config.network_dim),
        "ss_network_alpha": f"{alpha:g}",
        "ss_network_dropout": "" if config.network_dropout is None else f"{config.network_dropout:g}",
        "ss_network_args": json.dumps(config.network_arg_dict()),
        "ss_architecture": ARCHITECTURE,
        "ss_model_version": config.model_version,
        "ss_base_model": Path(config.dit).name if config.dit else "",
        "ss_output_name": config.output_name or "",
        "ss_epoch": str(epoch),
        "ss_steps": str(step),
        "ss_seed": str(config.seed),
        "ss_learning_rate": f"{config.learning_rate:g}",
        "ss_lr_scheduler": config.lr_scheduler,
        "ss_optimizer": config.optimizer_type,
        "ss_mixed_precision": config.mixed_precision,
        "ss_timestep_sampling": config.timestep_sampling,
        "ss_weighting_scheme": config.weighting_scheme,
        "ss_discrete_flow_shift": f"{config.discrete_flow_shift:g}",
        "ss_training_started_at": f"{started_at:.0f}",
        "ss_training_finished_at": f"{time.time():.0f}",
        "qis_training_config": json.dumps(settings, ensure_ascii=False, sort_keys=True),
        "qis_hash_algorithm": "sha256 of the safetensors tensor-data section (kohya sshs_model_hash)",
    }


def read_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a LoRA file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})  # noqa: SIM118
