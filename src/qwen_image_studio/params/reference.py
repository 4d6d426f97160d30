"""Reference-trainer (musubi-tuner) flags that the schema does not declare: other spellings we accept, and
the flags and values we refuse, each with the one line that says why.

Every flag of the reference's ``qwen_image_generate_image.py`` is either a schema parameter (same name,
same meaning), an alias below, or refused here by name (``error: --mask_path: not supported here: ...``).
The stage parsers add these flags (so ``--help`` lists them with their reason); a refused flag raises
ConfigError as soon as argparse meets it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .spec import Stage

G = Stage.GENERATE

# Reference spellings of our flags: stage -> {flag: (field, value it sets)}.
ALIASES: dict[Stage, dict[str, tuple[str, Any]]] = {
    G: {"fp8": ("fp8_base", True)},
}

_LAYERED = "it is an option of Qwen-Image-Layered, which is not offered here"
_RCM = (
    "the reference consistency mask needs the reference's own denoising loop; generation here runs "
    "diffusers' Qwen-Image pipelines, which have none"
)
_COMPILE = (
    "--compile compiles each DiT block with torch.compile's defaults here (backend inductor, mode default, "
    "dynamic shapes auto); other compile settings are not offered"
)


@dataclass(frozen=True)
class Refused:
    """A reference flag we do not offer: why, whether it takes a value, and values that change nothing."""

    reason: str
    takes_value: bool = True
    accepted: tuple[str, ...] = ()  # values equal to what we do anyway (accepted silently)


REFUSED: dict[Stage, dict[str, Refused]] = {
    G: {
        "mask_path": Refused(
            "inpainting masks need the reference's own denoising loop; generation here runs diffusers' "
            "Qwen-Image pipelines, which take no mask"
        ),
        "rcm_threshold": Refused(_RCM),
        "rcm_relative_threshold": Refused(_RCM, takes_value=False),
        "rcm_kernel_size": Refused(_RCM),
        "rcm_dilate_size": Refused(_RCM),
        "rcm_debug_save": Refused(_RCM, takes_value=False),
        "resize_control_to_image_size": Refused(
            "control images are sized as the official pipeline does (1024x1024 area for the VAE, "
            "--control_text_encoder_size for the text encoder); resizing them to --image_size is not offered"
        ),
        "interactive": Refused(
            "prompts are not read from the console here; give --prompt or --from_file", takes_value=False
        ),
        "lycoris": Refused(
            "LyCORIS networks are not supported; LoRA files in the kohya/musubi, ComfyUI and diffusers "
            "forms merge without it",
            takes_value=False,
        ),
        "automatic_prompt_lang_for_layered": Refused(_LAYERED),
        "output_layers": Refused(_LAYERED),
        "compile_backend": Refused(_COMPILE, accepted=("inductor",)),
        "compile_mode": Refused(_COMPILE, accepted=("default",)),
        "compile_dynamic": Refused(_COMPILE, accepted=("auto",)),
        "compile_fullgraph": Refused(_COMPILE, takes_value=False),
        "compile_cache_size_limit": Refused(
            "the torch.compile cache size limit is raised as far as the blocks need here; "
            "it is not set by hand"
        ),
    },
}

# Values of declared flags we refuse (any stage that has the flag): (field, value) -> why.
REFUSED_VALUES: dict[tuple[str, str], str] = {
    ("attn_mode", "sageattn"): "SageAttention is not offered; use sdpa (the default), flash or xformers",
    ("model_version", "layered"): "Qwen-Image-Layered is not offered; the versions are original, edit, "
    "edit-2509 and edit-2511",
}


class _RefusedAction(argparse.Action):
    """Raises ConfigError naming the flag and why it is refused (unless its value changes nothing)."""

    def __init__(self, option_strings: list[str], dest: str, refused: Refused, **kwargs: Any) -> None:
        self.refused = refused
        super().__init__(option_strings, dest, nargs="?" if refused.takes_value else 0, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        if isinstance(values, str) and values in self.refused.accepted:
            return
        raise ConfigError(f"{option}: not supported here: {self.refused.reason}")


def add_reference_flags(parser: argparse.ArgumentParser, stage: Stage) -> None:
    """Add a stage's reference aliases and refused flags to its parser (refused ones raise when met)."""
    aliases = ALIASES.get(stage, {})
    refused = REFUSED.get(stage, {})
    if not aliases and not refused:
        return
    group = parser.add_argument_group("reference-trainer flags (other spellings, and those not supported)")
    for flag, (field, value) in aliases.items():
        group.add_argument(
            f"--{flag}",
            dest=field,
            action="store_const",
            const=value,
            help=f"the reference trainer's spelling of --{field}",
        )
    for flag, why in refused.items():
        accepted = f" (accepted: {', '.join(why.accepted)}, which changes nothing)" if why.accepted else ""
        group.add_argument(
            f"--{flag}",
            dest=f"_refused_{flag}",
            action=_RefusedAction,
            refused=why,
            metavar="VALUE",
            help=f"not supported: {why.reason}{accepted}".replace("%", "%%"),
        )


def check_refused_values(values: dict[str, Any], flags: dict[str, str] | None = None) -> None:
    """Raise ConfigError for a refused value of a declared flag (e.g. --attn_mode sageattn)."""
    for (field, value), why in REFUSED_VALUES.items():
        if str(values.get(field)) == value:
            flag = (flags or {}).get(field, field)
            raise ConfigError(f"--{flag} {value}: not supported here: {why}")


def refused_flags(stage: Stage) -> Sequence[str]:
    """The reference flags a stage refuses (without dashes)."""
    return tuple(REFUSED.get(stage, {}))
