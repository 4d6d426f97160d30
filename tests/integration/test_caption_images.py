"""caption_images_by_qwen_vl.py on the demo's tiny Qwen2.5-VL file.

The tokens the command writes (its ``caption`` artifact events) are checked against an independent path
built here: transformers' own ``Qwen2_5_VLForConditionalGeneration.from_pretrained`` reading the same
``qwen_2.5_vl_7b.safetensors`` (transformers renames the release keys itself) and its ``generate``, greedy,
on the same processor inputs (the chat template written out here; images sized by the --max_size rule,
tested by hand in tests/unit/test_caption_sizing.py). fp32 on the CPU; with --fp8_vl the reference model
gets every decoder-layer linear quantised here per output row (max |row| / 448 to float8_e4m3fn) and
dequantised, i.e. the same fp8 weights in float32.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from qwen_image_studio.captioning.prompts import EDIT_PAIR_PROMPT, TEMPLATES
from qwen_image_studio.captioning.sizing import resize_for_vlm
from qwen_image_studio.captioning.vlm import build_caption_processor
from qwen_image_studio.data.items import read_caption
from qwen_image_studio.events import read_events
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.stages.runner import main

ROOT = Path(__file__).resolve().parents[2]
TOKENS = 10
END_IDS = [151645, 151643]  # <|im_end|>, <|endoftext|>
PAD_ID = 151643


@pytest.fixture(scope="module")
def te_file(demo: Path) -> Path:
    return demo / "models" / "comfyui" / "qwen_2.5_vl_7b.safetensors"


def _reference_model(demo: Path, te_file: Path, folder: Path, fp8: bool = False) -> torch.nn.Module:
    from transformers import Qwen2_5_VLForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(demo / "models" / "diffusers" / "Qwen-Image" / "text_encoder" / "config.json", folder)
    (folder / "model.safetensors").symlink_to(te_file)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    if fp8:
        for layer in model.model.language_model.layers:
            for module in layer.modules():
                if isinstance(module, torch.nn.Linear):
                    w = module.weight.data
                    scale = (w.abs().amax(dim=1, keepdim=True) / 448.0).clamp(min=1e-12)
                    module.weight.data = (w / scale).to(torch.float8_e4m3fn).to(torch.float32) * scale
    return model


@pytest.fixture(scope="module")
def reference(demo: Path, te_file: Path, tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    return _reference_model(demo, te_file, tmp_path_factory.mktemp("hf_te"))


def _expected(model: torch.nn.Module, requests: list[list[Path]], prompt: str, max_size: int = 1280) -> list:
    """Greedy tokens of transformers' generate for these requests (one batch), cut after the end token."""
    processor = build_caption_processor(None, max_size)
    texts, images = [], []
    for paths in requests:
        content = [{"type": "image"} for _ in paths] + [{"type": "text", "text": prompt}]
        texts.append(
            processor.apply_chat_template(
                [{"role": "user", "content": content}],
                tokenize=False,
                add_generation_prompt=True,
                add_vision_id=len(paths) > 1,
            )
        )
        images += [resize_for_vlm(Image.open(p).convert("RGB"), max_size) for p in paths]
    inputs = processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=TOKENS, do_sample=False, eos_token_id=END_IDS, pad_token_id=PAD_ID
        )
    rows = []
    for row in out[:, inputs["input_ids"].shape[1] :].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in END_IDS), len(row))
        rows.append(row[:cut])
    return rows


def _dataset(tmp_path: Path, demo: Path, controls: bool) -> Path:
    """A copy of the demo dataset (images, captions, controls) with its own TOML."""
    data = tmp_path / "dataset"
    shutil.copytree(demo / "dataset" / "images", data / "images")
    shutil.copytree(demo / "dataset" / "controls", data / "controls")
    control = 'control_directory = "controls"\n' if controls else ""
    toml = data / "dataset.toml"
    toml.write_text(
        '[general]\nresolution = [64, 64]\ncaption_extension = ".txt"\n\n[[datasets]]\n'
        f'image_directory = "images"\n{control}cache_directory = "cache"\n',
        encoding="utf-8",
    )
    return toml


def _run(argv: list[str], events: Path) -> list[dict]:
    assert main(Stage.CAPTION, [*argv, "--events_file", str(events)]) == 0
    found, _ = read_events(events)
    return [e for e in found if e["type"] == "artifact" and e["kind"] == "caption"]


def _decode(tokens: list[int]) -> str:
    tok = build_caption_processor().tokenizer
    return tok.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()


def test_dataset_captions_are_transformers_greedy_tokens(
    demo: Path, te_file: Path, reference: torch.nn.Module, tmp_path: Path
) -> None:
    toml = _dataset(tmp_path, demo, controls=False)
    argv = ["--dataset_config", str(toml), "--model_path", str(te_file), "--device", "cpu"]
    argv += ["--max_new_tokens", str(TOKENS), "--overwrite", "--caption_template", "short"]
    written = _run(argv, tmp_path / "events.jsonl")
    images = sorted((toml.parent / "images").glob("*.png"))
    assert [Path(e["image"]) for e in written] == images
    for event, image in zip(written, images, strict=True):
        assert event["tokens"] == _expected(reference, [[image]], TEMPLATES["short"])[0], image.name
        caption = image.with_suffix(".txt").read_text(encoding="utf-8")  # keeps the old file's newline ending
        assert caption.strip() == event["caption"] == _decode(event["tokens"])


def test_edit_pair_instructions_are_transformers_greedy_tokens(
    demo: Path, te_file: Path, reference: torch.nn.Module, tmp_path: Path
) -> None:
    toml = _dataset(tmp_path, demo, controls=True)
    argv = ["--dataset_config", str(toml), "--model_path", str(te_file), "--device", "cpu", "--edit_pairs"]
    argv += ["--max_new_tokens", str(TOKENS), "--overwrite", "--trigger_word", "sks"]
    written = _run(argv, tmp_path / "events.jsonl")
    assert len(written) == 6
    for event in written[:3]:
        image = Path(event["image"])
        control = toml.parent / "controls" / image.name
        # the VLM sees the control image, then the target, then the instruction prompt
        assert event["tokens"] == _expected(reference, [[control, image]], EDIT_PAIR_PROMPT)[0]
        assert read_caption(image.with_suffix(".txt")) == "sks, " + _decode(event["tokens"])


def test_fp8_vl_tokens_are_those_of_the_same_fp8_weights_dequantised(
    demo: Path, te_file: Path, tmp_path: Path
) -> None:
    model = _reference_model(demo, te_file, tmp_path / "hf_fp8", fp8=True)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("demo_00.png", "demo_01.png", "demo_02.png"):
        shutil.copy(demo / "dataset" / "images" / name, folder / name)
    out = tmp_path / "captions.jsonl"
    argv = ["--image_dir", str(folder), "--model_path", str(te_file), "--output_file", str(out), "--fp8_vl"]
    argv += ["--device", "cpu", "--max_new_tokens", str(TOKENS), "--batch_size", "2", "--max_size", "512"]
    written = _run(argv, tmp_path / "events.jsonl")
    images = sorted(folder.glob("*.png"))
    # batches of two, left-padded, as the command runs them
    expected = _expected(model, [[p] for p in images[:2]], TEMPLATES["detailed"], 512)
    expected += _expected(model, [[images[2]]], TEMPLATES["detailed"], 512)
    assert [e["tokens"] for e in written] == expected
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"image_path": str(p), "caption": _decode(t)} for p, t in zip(images, expected, strict=True)]
    # the captioner holds exactly those fp8 weights: float8_e4m3fn bits times the per-row scale
    from qwen_image_studio.captioning.vlm import load_captioner
    from qwen_image_studio.models.fp8_linear import Fp8Linear

    captioner = load_captioner(te_file, device=torch.device("cpu"), dtype=torch.float32, fp8_vl=True)
    ours = {n: m for n, m in captioner.model.named_modules() if isinstance(m, Fp8Linear)}
    theirs = dict(model.model.language_model.layers.named_modules())
    assert len(ours) == 7 * len(model.model.language_model.layers)
    for name, layer in ours.items():
        assert layer.weight_fp8.dtype == torch.float8_e4m3fn
        dequantised = layer.weight_fp8.to(torch.float32) * layer.weight_scale
        assert torch.equal(dequantised, theirs[name.split("layers.", 1)[1]].weight), name


def test_existing_captions_survive_without_overwrite(demo: Path, te_file: Path, tmp_path: Path) -> None:
    toml = _dataset(tmp_path, demo, controls=False)
    images = toml.parent / "images"
    (images / "demo_01.txt").unlink()
    (images / "demo_04.txt").write_text("", encoding="utf-8")  # empty: no caption yet
    before = {p.name: p.read_bytes() for p in images.glob("*.txt") if p.stat().st_size}
    argv = ["--dataset_config", str(toml), "--model_path", str(te_file), "--device", "cpu"]
    argv += ["--max_new_tokens", "4"]
    written = _run(argv, tmp_path / "e1.jsonl")
    assert sorted(Path(e["image"]).name for e in written) == ["demo_01.png", "demo_04.png"]
    assert {name: (images / name).read_bytes() for name in before} == before  # untouched, byte for byte
    assert (images / "demo_01.txt").read_text(encoding="utf-8") == written[0]["caption"]
    again = _run(argv, tmp_path / "e2.jsonl")
    assert again == []  # everything has a caption now
    replaced = _run([*argv, "--overwrite"], tmp_path / "e3.jsonl")
    assert len(replaced) == 6
    for event in replaced:
        assert read_caption(Path(event["image"]).with_suffix(".txt")) == event["caption"]
    assert not list(images.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_reference_command_line_runs_unchanged(demo: Path, te_file: Path, tmp_path: Path) -> None:
    """The reference docs' first example, as written there (one demo image, so the default 1024 tokens fit
    in a test), through the root launcher; its JSONL then reads as a dataset's image_jsonl_file."""
    from qwen_image_studio.data.config import load_dataset_config
    from qwen_image_studio.data.items import discover_items

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(demo / "dataset" / "images" / "demo_02.png", folder / "demo_02.png")
    out = tmp_path / "out" / "captions.jsonl"
    command = [sys.executable, str(ROOT / "caption_images_by_qwen_vl.py")]
    command += ["--image_dir", str(folder), "--model_path", str(te_file), "--output_file", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stderr
    (line,) = out.read_text(encoding="utf-8").splitlines()
    entry = json.loads(line)
    assert entry["image_path"] == str(folder / "demo_02.png") and isinstance(entry["caption"], str)
    toml = tmp_path / "ds.toml"
    toml.write_text(
        f'[[datasets]]\nimage_jsonl_file = "{out}"\nresolution = [64, 64]\ncache_directory = "c"\n',
        encoding="utf-8",
    )
    if entry["caption"]:
        (item,) = discover_items(load_dataset_config(toml).datasets[0]).items
        assert item.caption == entry["caption"]


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--output_file", "x.jsonl"], "error: --dataset_config is required (the dataset TOML whose images"),
        (["--image_dir", "{demo}/dataset/images", "--output_format", "text"], "error: --model_path is required"),
        (["--image_dir", "{demo}/dataset/images"], "error: --output_file is required with --output_format jsonl"),
        (["--image_dir", "{demo}/nowhere", "--output_format", "text"], "error: --image_dir: not found"),
        (["--max_size", "100", "--image_dir", "{demo}/dataset/images"], "error: --max_size: 100 is out of range"),
        (["--image_dir", "{demo}/dataset/images", "--edit_pairs", "--output_format", "text"], "error: --edit_pairs"),
    ],
)
def test_bad_input_is_one_line_naming_the_flag(
    demo: Path, te_file: Path, argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{demo}", str(demo)) for a in argv]
    if "--model_path is required" not in expected:
        argv += ["--model_path", str(te_file)]
    assert main(Stage.CAPTION, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(expected), err


def test_a_file_that_is_not_a_vlm_is_named(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dit = demo / "models" / "comfyui" / "qwen_image_bf16.safetensors"
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(demo / "dataset" / "images" / "demo_00.png", folder / "demo_00.png")
    argv = ["--image_dir", str(folder), "--model_path", str(dit), "--output_format", "text", "--device", "cpu"]
    assert main(Stage.CAPTION, argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --model_path") and "DiT" in line, line
    assert not (folder / "demo_00.txt").exists()


def test_dataset_captions_go_into_the_history_and_undo_restores_them(
    demo: Path, te_file: Path, tmp_path: Path
) -> None:
    """What the web UI's captioning job does: --caption_history records every replaced caption as one
    change, which the gallery's undo puts back byte for byte; the VLM file defaults to --text_encoder."""
    from qwen_image_studio.data.caption_history import CaptionHistory
    from qwen_image_studio.data.captions import undo_batch

    toml = _dataset(tmp_path, demo, controls=False)
    images = toml.parent / "images"
    before = {p.name: p.read_bytes() for p in images.glob("*.txt")}
    (images / "demo_03.txt").unlink()  # one image had no caption: undo removes the new file again
    history_file = tmp_path / "ws" / "caption_history.sqlite3"
    argv = ["--dataset_config", str(toml), "--text_encoder", str(te_file), "--device", "cpu"]
    argv += ["--max_new_tokens", "4", "--overwrite", "--caption_history", str(history_file)]
    written = _run(argv, tmp_path / "events.jsonl")
    assert len(written) == 6
    history = CaptionHistory(history_file)
    (batch,) = history.batches(toml.resolve())
    assert batch.count == 6 and batch.label == "auto-captions (detailed)"
    assert {c.image.name: c.before for c in history.changes(batch.id)}["demo_00.png"] == before["demo_00.txt"]
    undo_batch(history, batch.id)
    del before["demo_03.txt"]
    assert {p.name: p.read_bytes() for p in images.glob("*.txt")} == before


def test_preview_writes_nothing(demo: Path, te_file: Path, tmp_path: Path) -> None:
    toml = _dataset(tmp_path, demo, controls=False)
    images = toml.parent / "images"
    before = {p.name: p.read_bytes() for p in images.glob("*.txt")}
    events = tmp_path / "events.jsonl"
    argv = ["--dataset_config", str(toml), "--model_path", str(te_file), "--device", "cpu", "--overwrite"]
    argv += ["--max_new_tokens", "4", "--preview", "2", "--caption_history", str(tmp_path / "h.sqlite3")]
    assert _run(argv, events) == []
    found, _ = read_events(events)
    shown = [e for e in found if e["type"] == "artifact" and e["kind"] == "caption_preview"]
    assert [Path(e["image"]).name for e in shown] == ["demo_00.png", "demo_01.png"]
    assert all(isinstance(e["caption"], str) for e in shown)
    assert {p.name: p.read_bytes() for p in images.glob("*.txt")} == before
    assert not (tmp_path / "h.sqlite3").exists()


def test_a_caption_edited_during_the_run_is_kept(demo: Path, tmp_path: Path) -> None:
    """The run read the captions when it planned; one the user changed since is not overwritten."""
    from qwen_image_studio.captioning.targets import plan_dataset_config
    from qwen_image_studio.captioning.vlm import Caption
    from qwen_image_studio.events import EventWriter
    from qwen_image_studio.params.schema import StudioConfig
    from qwen_image_studio.stages.caption_images import CaptionStore

    toml = _dataset(tmp_path, demo, controls=False)
    plan = plan_dataset_config(toml, edit_pairs=False)
    first, second = plan.targets[:2]
    first.image.with_suffix(".txt").write_text("typed by the user meanwhile", encoding="utf-8")
    events = tmp_path / "events.jsonl"
    config = StudioConfig(dataset_config=str(toml), caption_history=str(tmp_path / "h.sqlite3"))
    writer = EventWriter(events, Stage.CAPTION.value)
    store = CaptionStore(config, writer)
    assert store.put([(t, Caption((), "new"), "new caption") for t in (first, second)]) == 1
    store.close()
    writer.close()
    assert read_caption(first.image.with_suffix(".txt")) == "typed by the user meanwhile"
    assert read_caption(second.image.with_suffix(".txt")) == "new caption"
    found, _ = read_events(events)
    assert any("changed on disk" in e.get("message", "") for e in found if e["type"] == "warning")
