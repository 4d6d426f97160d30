"""The edit-mode processor (Qwen2.5-VL text + image inputs), available offline and without torchvision.

diffusers' ``QwenImageEditPipeline`` and ``QwenImageEditPlusPipeline`` take a ``processor`` component
(typed ``Qwen2VLProcessor``) and call ``processor(text=[...], images=[...], padding=True,
return_tensors="pt")``: it expands each ``<|image_pad|>`` into one token per 2x2 group of 14-px patches
and returns ``pixel_values`` and ``image_grid_thw`` for the vision tower.

transformers' ``Qwen2VLProcessor`` cannot be built here: its video processor needs torchvision, which is not
installable beside the CPU torch. ``QwenImageEditProcessor`` is a ``Qwen2VLProcessor`` subclass (so diffusers
accepts it) whose only parts are the tokenizer and the PIL image processor ``Qwen2VLImageProcessorPil``
with Qwen2.5-VL-7B-Instruct's ``preprocessor_config.json`` settings.

Loading a pipeline: diffusers loads the ``processor`` folder with the class named in ``model_index.json``
(``Qwen2VLProcessor``), which needs torchvision. Our loaders therefore pass the object explicitly::

    pipe = QwenImageEditPlusPipeline.from_pretrained(root, processor=load_processor(root), ...)

``load_processor`` reads a real ``processor/`` folder (transformers 4 or 5 layout) or one written by
``save_processor``; the folders ``save_processor`` writes name ``Qwen2VLProcessor`` as their class, so
stock transformers (with torchvision) loads them too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase, Qwen2VLProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin

from qwen_image_studio.errors import ModelFileError
from qwen_image_studio.models.tokenizer import (
    CHAT_TEMPLATE,
    build_tokenizer,
    load_tokenizer_folder,
    resolve_tokenizer,
    write_built_tokenizer_files,
)

# Qwen2.5-VL-7B-Instruct's preprocessor_config.json (min/max pixels = 4 and 16384 patches of 28x28).
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MIN_PIXELS = 3136
MAX_PIXELS = 12845056
IMAGE_MEAN: tuple[float, ...] = tuple(OPENAI_CLIP_MEAN)
IMAGE_STD: tuple[float, ...] = tuple(OPENAI_CLIP_STD)
STOCK_PROCESSOR_CLASS = "Qwen2VLProcessor"
PROCESSOR_SUBFOLDERS: tuple[str, ...] = ("", "processor")
_CONFIG_FILES = ("processor_config.json", "preprocessor_config.json")
# Image-processor settings read from a processor folder; everything else there is ignored.
_IMAGE_KEYS = (
    "min_pixels",
    "max_pixels",
    "size",
    "patch_size",
    "temporal_patch_size",
    "merge_size",
    "image_mean",
    "image_std",
    "do_resize",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "do_convert_rgb",
)


class QwenImageEditProcessor(Qwen2VLProcessor):
    """A Qwen2VLProcessor without a video processor: text and images only, no torchvision needed."""

    def __init__(
        self,
        image_processor: Qwen2VLImageProcessorPil | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        if tokenizer is None or image_processor is None:
            raise ValueError("QwenImageEditProcessor needs an image processor and a tokenizer")
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def to_dict(self) -> dict[str, Any]:
        """The processor config, naming the stock class so that transformers with torchvision loads it too."""
        output = super().to_dict()
        output["processor_class"] = STOCK_PROCESSOR_CLASS
        if isinstance(output.get("image_processor"), dict):
            output["image_processor"]["processor_class"] = STOCK_PROCESSOR_CLASS
        return output

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | Path, subfolder: str = "", **kwargs: Any
    ) -> QwenImageEditProcessor:
        """Load a local processor folder (as `load_processor`); download options are ignored."""
        return load_processor(Path(pretrained_model_name_or_path) / subfolder)

    def num_image_tokens(self, height: int, width: int) -> int:
        """How many <|image_pad|> tokens an image of this size becomes."""
        return self._get_num_multimodal_tokens(image_sizes=[(height, width)])["num_image_tokens"][0]


def build_image_processor(**overrides: Any) -> Qwen2VLImageProcessorPil:
    """The PIL image processor with Qwen2.5-VL-7B-Instruct's settings (overrides win)."""
    settings: dict[str, Any] = {
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
    }
    settings.update(overrides)
    return Qwen2VLImageProcessorPil(**settings)


def build_processor(tokenizer: PreTrainedTokenizerBase | None = None) -> QwenImageEditProcessor:
    """The edit-mode processor: the given tokenizer (built offline by default) and the PIL image processor."""
    return QwenImageEditProcessor(
        image_processor=build_image_processor(),
        tokenizer=tokenizer if tokenizer is not None else build_tokenizer(),
        chat_template=CHAT_TEMPLATE,
    )


def save_processor(directory: str | Path, processor: QwenImageEditProcessor | None = None) -> Path:
    """Save the processor (built one by default) as a diffusers `processor/` folder; returns the folder."""
    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    (processor or build_processor()).save_pretrained(str(folder))
    if processor is None:  # the built tokenizer as the release folders hold it (faster to load)
        write_built_tokenizer_files(folder)
    return folder


def _processor_folder(root: Path) -> Path | None:
    """The first of `root` and `root/processor` that holds a processor config."""
    for sub in PROCESSOR_SUBFOLDERS:
        folder = root / sub if sub else root
        if any((folder / name).is_file() for name in _CONFIG_FILES):
            return folder
    return None


def _image_settings(folder: Path) -> dict[str, Any]:
    """The image-processor settings of a processor folder (transformers 5 or 4 layout)."""
    settings: dict[str, Any] = {}
    for name in reversed(_CONFIG_FILES):  # processor_config.json (newer layout) wins
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{path}: unreadable processor config: {e}") from e
        if not isinstance(data, dict):
            raise ModelFileError(f"{path}: a processor config must be a JSON object")
        if isinstance(data.get("image_processor"), dict):
            data = data["image_processor"]
        settings.update({key: data[key] for key in _IMAGE_KEYS if key in data})
    size = settings.pop("size", None)
    if isinstance(size, dict):  # newer layout keeps the pixel bounds in `size`
        settings.setdefault("min_pixels", size.get("shortest_edge", size.get("min_pixels")))
        settings.setdefault("max_pixels", size.get("longest_edge", size.get("max_pixels")))
    return {key: value for key, value in settings.items() if value is not None}


def load_processor(path: str | Path | None = None) -> QwenImageEditProcessor:
    """The edit processor from a `processor/` folder or model root; without a path, built offline."""
    if path is None or str(path) == "":
        return build_processor(resolve_tokenizer(None))
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ModelFileError(f"{root}: processor folder not found (give a processor/ folder or a model root)")
    folder = _processor_folder(root)
    if folder is None:
        raise ModelFileError(
            f"{root}: no processor_config.json or preprocessor_config.json here or in processor/"
        )
    try:
        image_processor = build_image_processor(**_image_settings(folder))
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{folder}: invalid image-processor settings: {e}") from e
    tokenizer = load_tokenizer_folder(folder)
    return QwenImageEditProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=getattr(tokenizer, "chat_template", None) or CHAT_TEMPLATE,
    )
