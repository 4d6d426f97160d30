"""Generation parameters in PNG text chunks: the ``parameters`` text other image tools read, and our JSON.

Every PNG that generation and training samples write carries two chunks (``--no_metadata``: none):

- ``parameters``: the layout AUTOMATIC1111's web UI writes and Forge, ComfyUI readers, Civitai and image
  browsers parse. The prompt (its lines as written), then ``Negative prompt: ...`` when there is one, then
  one line of ``Key: value`` pairs joined by ``, ``::

      a red square
      Negative prompt: blurry
      Steps: 25, Sampler: flow-match euler, CFG scale: 4.0, Seed: 42, Size: 1024x768,
      Model: qwen_image_bf16.safetensors, Model version: original, Flow shift: 3.0, Lora: "mine:0.8"

  (the last line is one line in the file). Keys: ``Steps``, ``Sampler`` (always ``flow-match euler``),
  ``CFG scale`` (true CFG with the negative prompt; 1.0 is off), ``Seed``, ``Size`` (width x height),
  ``Model`` (the DiT file's name), ``Model version`` (original, edit, edit-2509, edit-2511), ``Flow shift``
  (only when fixed with ``--flow_shift``; absent means the shift follows the image size), ``Lora`` (``name:
  strength`` per LoRA file, names are the file stems, joined by ``, ``), ``Control images`` (file names),
  ``Training step`` (training samples). A value that holds ``,``, ``:`` or a line break is written as a
  JSON string in double quotes, as that layout does.
- ``qis_parameters``: a JSON object with everything needed to generate the same image again: ``prompt``,
  ``negative_prompt`` (null when none), ``width``, ``height``, ``steps``, ``guidance_scale``, ``seed``,
  ``sampler``, ``model_version``, ``flow_shift`` (null: follows the image size), ``model`` (the DiT's
  file name), ``dit`` / ``vae`` / ``text_encoder`` (the paths used), ``loras`` (``path``, ``name``,
  ``multiplier`` each), ``control_image_paths``, ``dtype`` and ``device`` (bit-identical results need
  the same), ``source`` (``generate`` or ``sample``) and, for training samples, ``step``; ``format`` is 1.

``read_parameters`` prefers the JSON chunk and else parses the ``parameters`` text (of our PNGs or another
tool's); ``to_config_values`` maps what it read to the schema's field names (for "reuse these settings").
The older chunks ``prompt`` and ``negative_prompt`` are still written beside them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from ..errors import ConfigError

TEXT_KEY = "parameters"
JSON_KEY = "qis_parameters"
FORMAT = 1
SAMPLER = "flow-match euler"
NEGATIVE = "Negative prompt:"
VERSIONS = ("original", "edit", "edit-2509", "edit-2511")
# one "Key: value" pair of the last line; a value is a JSON string in quotes or runs to the next comma
_PAIR = re.compile(r'\s*(\w[\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")
MIN_PAIRS = 3  # a last line with fewer pairs is part of the prompt


def _quote(value: str) -> str:
    """A value as the layout writes it: as it is, or a JSON string when it holds ``,``, ``:`` or a newline."""
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ",:\n") else value


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def _number(value: float) -> str:
    return repr(float(value))


def parameters_text(params: dict[str, Any]) -> str:
    """The ``parameters`` chunk's text for a parameters dict (the ``qis_parameters`` keys)."""
    pairs: list[tuple[str, str]] = [
        ("Steps", str(params["steps"])),
        ("Sampler", params.get("sampler") or SAMPLER),
        ("CFG scale", _number(params["guidance_scale"])),
        ("Seed", str(params["seed"])),
        ("Size", f"{params['width']}x{params['height']}"),
    ]
    if params.get("model"):
        pairs.append(("Model", str(params["model"])))
    if params.get("model_version"):
        pairs.append(("Model version", str(params["model_version"])))
    if params.get("flow_shift") is not None:
        pairs.append(("Flow shift", _number(params["flow_shift"])))
    loras = params.get("loras") or []
    if loras:
        pairs.append(("Lora", ", ".join(f"{lora['name']}:{lora['multiplier']:g}" for lora in loras)))
    controls = params.get("control_image_paths") or []
    if controls:
        pairs.append(("Control images", ", ".join(Path(c).name for c in controls)))
    if params.get("step") is not None:
        pairs.append(("Training step", str(params["step"])))
    lines = [str(params.get("prompt") or "")]
    if params.get("negative_prompt"):
        lines.append(f"{NEGATIVE} {params['negative_prompt']}")
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in pairs))
    return "\n".join(lines)


def add_to(info: PngInfo, params: dict[str, Any]) -> PngInfo:
    """Add the ``parameters`` text and the ``qis_parameters`` JSON of `params` to a PNG's chunks."""
    info.add_text(TEXT_KEY, parameters_text(params))
    info.add_text(JSON_KEY, json.dumps({"format": FORMAT, **params}, sort_keys=True))
    return info


def write_png(image: Image.Image, path: str | Path, params: dict[str, Any]) -> Path:
    """Save `image` as a PNG at `path` with the parameter chunks (not atomic; generation uses its own)."""
    target = Path(path)
    image.save(target, format="PNG", pnginfo=add_to(PngInfo(), params))
    return target


def parse_parameters_text(text: str) -> dict[str, Any]:
    """The settings a ``parameters`` text holds (our keys or another tool's): prompt, negative_prompt,
    width, height, steps, guidance_scale, seed, sampler, model, model_version, flow_shift, loras (names and
    strengths, no paths), ``extra`` (every other pair, as text)."""
    lines = text.replace("\r\n", "\n").split("\n")
    pairs: dict[str, str] = {}
    if lines and len(_PAIR.findall(lines[-1])) >= MIN_PAIRS:
        pairs = {k.strip(): _unquote(v) for k, v in _PAIR.findall(lines.pop())}
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in lines:
        if not in_negative and line.startswith(NEGATIVE):
            in_negative = True
            line = line[len(NEGATIVE) :].lstrip()
        (negative_lines if in_negative else prompt_lines).append(line)
    out: dict[str, Any] = {
        "prompt": "\n".join(prompt_lines).strip(),
        "negative_prompt": "\n".join(negative_lines).strip() if in_negative else None,
    }
    known = {
        "Steps": ("steps", int),
        "CFG scale": ("guidance_scale", float),
        "Seed": ("seed", int),
        "Sampler": ("sampler", str),
        "Model": ("model", str),
        "Flow shift": ("flow_shift", float),
        "Training step": ("step", int),
    }
    extra: dict[str, str] = {}
    for key, value in pairs.items():
        if key in known:
            name, kind = known[key]
            try:
                out[name] = kind(value)
            except ValueError:
                extra[key] = value
        elif key == "Size" and (m := _SIZE.match(value)):
            out["width"], out["height"] = int(m.group(1)), int(m.group(2))
        elif key == "Model version" and value in VERSIONS:
            out["model_version"] = value
        elif key == "Lora":
            out["loras"] = _loras(value)
        elif key == "Control images":
            out["control_image_paths"] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            extra[key] = value
    out["extra"] = extra
    return out


def _loras(value: str) -> list[dict[str, Any]]:
    out = []
    for part in value.split(","):
        name, _, strength = part.strip().rpartition(":")
        try:
            out.append({"name": name.strip(), "path": None, "multiplier": float(strength)})
        except ValueError:
            out.append({"name": part.strip(), "path": None, "multiplier": 1.0})
    return [lora for lora in out if lora["name"]]


def read_parameters(path: str | Path) -> dict[str, Any]:
    """The generation settings a PNG carries: its ``qis_parameters`` JSON when present and readable, else
    its ``parameters`` text parsed; ``chunk`` says which. ConfigError (one line) when it has neither."""
    p = Path(path).expanduser()
    try:
        with Image.open(p) as image:
            image.load()  # text chunks after the image data are read with it
            texts = {k: v for k, v in image.info.items() if isinstance(v, str)}
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConfigError(f"{p}: not a readable image ({exc})") from None
    raw = texts.get(JSON_KEY)
    if raw:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if isinstance(data, dict) and "prompt" in data:
            data.pop("format", None)
            return {**data, "chunk": JSON_KEY}
    if texts.get(TEXT_KEY):
        return {**parse_parameters_text(texts[TEXT_KEY]), "chunk": TEXT_KEY}
    raise ConfigError(
        f"{p}: holds no generation parameters (no '{TEXT_KEY}' or '{JSON_KEY}' text chunk)"
    )


def to_config_values(params: dict[str, Any]) -> dict[str, Any]:
    """Read parameters as configuration values (schema field names): prompt, negative_prompt, image_size
    [H, W], infer_steps, guidance_scale, seed, model_version, flow_shift, lora_weight and lora_multiplier
    (the LoRAs whose path is known), control_image_path. Values the parameters lack are left out."""
    out: dict[str, Any] = {}
    simple = {
        "prompt": "prompt",
        "negative_prompt": "negative_prompt",
        "steps": "infer_steps",
        "guidance_scale": "guidance_scale",
        "seed": "seed",
        "model_version": "model_version",
    }
    for key, field in simple.items():
        if params.get(key) is not None:
            out[field] = params[key]
    if "negative_prompt" in params and "negative_prompt" not in out:
        out["negative_prompt"] = None
    if params.get("width") and params.get("height"):
        out["image_size"] = [int(params["height"]), int(params["width"])]
    if "flow_shift" in params or params.get("chunk") == JSON_KEY:
        out["flow_shift"] = params.get("flow_shift")
    loras = [lora for lora in params.get("loras") or [] if lora.get("path")]
    if loras or params.get("chunk") == JSON_KEY:
        out["lora_weight"] = [str(lora["path"]) for lora in loras]
        out["lora_multiplier"] = [float(lora["multiplier"]) for lora in loras]
    controls = params.get("control_image_paths")
    if controls and all(Path(c).is_absolute() for c in controls):
        out["control_image_path"] = [str(c) for c in controls]
    elif params.get("chunk") == JSON_KEY:
        out["control_image_path"] = [str(c) for c in controls or []]
    return out
