"""Infer an architecture config from tensor shapes: block counts from keys, widths from shapes.

Tiny and full-size files go through the same code; what tensors cannot show (head counts of the
text encoder, RoPE splits) follows the rules in `configs`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from qwen_image_studio.models import configs

Shapes = Mapping[str, Sequence[int]]


def count_blocks(keys: Sequence[str] | Shapes, prefix: str) -> int:
    """Number of numbered blocks `prefix.N.` among the keys (max index + 1)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = [int(m.group(1)) for k in keys if (m := pattern.match(k))]
    return max(found) + 1 if found else 0


def _shape(shapes: Shapes, key: str) -> Sequence[int]:
    if key not in shapes:
        raise KeyError(key)
    return shapes[key]


def infer_dit_config(shapes: Shapes, *, zero_cond_t: bool = False) -> dict[str, Any]:
    """`QwenImageTransformer2DModel` kwargs for a DiT state dict (diffusers names)."""
    inner, in_channels = _shape(shapes, "img_in.weight")
    head_dim = _shape(shapes, "transformer_blocks.0.attn.norm_q.weight")[0]
    patch = 2
    return {
        "patch_size": patch,
        "in_channels": in_channels,
        "out_channels": _shape(shapes, "proj_out.weight")[0] // (patch * patch),
        "num_layers": count_blocks(shapes, "transformer_blocks"),
        "attention_head_dim": head_dim,
        "num_attention_heads": inner // head_dim,
        "joint_attention_dim": _shape(shapes, "txt_in.weight")[1],
        "guidance_embeds": False,
        "axes_dims_rope": list(configs.dit_rope_axes(head_dim)),
        "zero_cond_t": zero_cond_t,
        "use_additional_t_cond": any(k.startswith("time_text_embed.addition_t_embedding.") for k in shapes),
        "use_layer3d_rope": False,
    }


def infer_vae_config(shapes: Shapes) -> dict[str, Any]:
    """`AutoencoderKLQwenImage` kwargs for a VAE state dict (diffusers names)."""
    base_dim = _shape(shapes, "encoder.conv_in.weight")[0]
    z_dim = _shape(shapes, "post_quant_conv.weight")[0]
    n_flat = count_blocks(shapes, "encoder.down_blocks")
    dim_mult: list[int] = []
    temporal: list[bool] = []
    res_per_level: list[int] = []
    count = 0
    for i in range(n_flat):
        if f"encoder.down_blocks.{i}.resample.1.weight" in shapes:
            temporal.append(f"encoder.down_blocks.{i}.time_conv.weight" in shapes)
            res_per_level.append(count)
            count = 0
            continue
        if count == 0:
            dim_mult.append(_shape(shapes, f"encoder.down_blocks.{i}.conv1.weight")[0] // base_dim)
        count += 1
    res_per_level.append(count)
    if len(set(res_per_level)) != 1:
        raise ValueError(f"uneven residual blocks per level: {res_per_level}")
    cfg = configs.vae_config("full")
    cfg.update(
        {
            "base_dim": base_dim,
            "z_dim": z_dim,
            "dim_mult": dim_mult,
            "num_res_blocks": res_per_level[0],
            "temperal_downsample": temporal,
            "input_channels": _shape(shapes, "encoder.conv_in.weight")[1],
        }
    )
    if z_dim != len(configs.LATENTS_MEAN):
        cfg["latents_mean"], cfg["latents_std"] = [0.0] * z_dim, [1.0] * z_dim
    return cfg


def infer_text_encoder_config(shapes: Shapes) -> dict[str, Any]:
    """The config.json dict of a Qwen2.5-VL text encoder state dict (release names)."""
    vocab, hidden = _shape(shapes, "model.embed_tokens.weight")
    v_hidden = _shape(shapes, "visual.patch_embed.proj.weight")[0]
    head_dim, v_head_dim = configs.text_encoder_head_dims(hidden, v_hidden)
    merger_in = _shape(shapes, "visual.merger.mlp.0.weight")[1]
    cfg = configs.text_encoder_config(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=count_blocks(shapes, "model.layers"),
        intermediate_size=_shape(shapes, "model.layers.0.mlp.gate_proj.weight")[0],
        num_attention_heads=hidden // head_dim,
        num_key_value_heads=_shape(shapes, "model.layers.0.self_attn.k_proj.weight")[0] // head_dim,
        vision_depth=count_blocks(shapes, "visual.blocks"),
        vision_hidden_size=v_hidden,
        vision_intermediate_size=_shape(shapes, "visual.blocks.0.mlp.gate_proj.weight")[0],
        vision_num_heads=v_hidden // v_head_dim,
        vision_out_hidden_size=_shape(shapes, "visual.merger.mlp.2.weight")[0],
        tie_word_embeddings="lm_head.weight" not in shapes,
    )
    patch_shape = _shape(shapes, "visual.patch_embed.proj.weight")
    cfg["vision_config"].update(
        {
            "in_channels": patch_shape[1],
            "in_chans": patch_shape[1],
            "temporal_patch_size": patch_shape[2],
            "patch_size": patch_shape[3],
            "spatial_patch_size": patch_shape[3],
            "spatial_merge_size": math.isqrt(merger_in // v_hidden),
        }
    )
    return cfg
