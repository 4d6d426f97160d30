"""`qwen-image-studio generate` on the demo models (t2i and edit-2509), and sample images during training."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from qwen_image_studio.events import EventWriter, read_events
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.stages.runner import main as run_stage


@pytest.fixture(autouse=True)
def _drop_log_handlers() -> object:
    """In-process runs point the root log handler at this test's captured stderr; do not leave it behind."""
    yield
    logging.getLogger().handlers.clear()


def _models(demo: Path, version: str = "original") -> list[str]:
    comfy = demo / "models" / "comfyui"
    dit = "qwen_image_bf16.safetensors" if version == "original" else "qwen_image_edit_2509_bf16.safetensors"
    return ["--dit", str(comfy / dit), "--vae", str(comfy / "qwen_image_vae.safetensors"),
            "--text_encoder", str(comfy / "qwen_2.5_vl_7b.safetensors"), "--model_version", version,
            "--mixed_precision", "no", "--device", "cpu"]  # fmt: skip


def _tiny_lora(demo: Path, path: Path) -> Path:
    from qwen_image_studio.models.loading import load_dit
    from qwen_image_studio.models.lora_apply import linear_paths
    from qwen_image_studio.models.lora_keys import ALPHA, DOWN, UP, lora_name, select_targets

    dit = load_dit(demo / "models" / "comfyui" / "qwen_image_bf16.safetensors", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for module in select_targets(linear_paths(dit)):
        layer = linear_paths(dit)[module]
        sd[lora_name(module) + DOWN] = torch.randn(2, layer.in_features, generator=g)
        sd[lora_name(module) + UP] = torch.randn(layer.out_features, 2, generator=g) * 0.1
        sd[lora_name(module) + ALPHA] = torch.tensor(2.0)
    save_file(sd, str(path))
    return path


def test_t2i_in_process_with_a_lora(demo: Path, tmp_path: Path) -> None:
    lora = _tiny_lora(demo, tmp_path / "lora.safetensors")
    events = tmp_path / "events.jsonl"
    argv = [*_models(demo), "--prompt", "a red square", "--image_size", "64", "48", "--infer_steps", "3",
            "--lora_weight", str(lora), "--lora_multiplier", "0.8", "--save_path", str(tmp_path / "out"),
            "--events_file", str(events)]  # fmt: skip
    assert run_stage(Stage.GENERATE, argv) == 0
    (png,) = sorted((tmp_path / "out").glob("*.png"))
    assert png.name.endswith("_00_42.png") and Image.open(png).size == (48, 64)  # --image_size is H W
    assert Image.open(png).text["prompt"] == "a red square"
    log, _ = read_events(events)
    types = [e["type"] for e in log]
    assert types[0] == "started" and types[-1] == "finished"
    assert [e["path"] for e in log if e["type"] == "artifact"] == [str(png)]
    assert {e["kind"] for e in log if e["type"] == "artifact"} == {"image"}
    steps = [e for e in log if e["type"] == "progress" and e["phase"] == "generate"]
    assert steps[-1]["done"] == steps[-1]["total"] == 3


def test_from_file_with_per_line_options(demo: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two images\na red square --w 32 --h 64 --s 2 --d 7\na blue circle --l 1 --s 2\n")
    argv = [*_models(demo), "--from_file", str(prompts), "--image_size", "48", "48", "--guidance_scale", "3",
            "--negative_prompt", "blurry", "--save_path", str(tmp_path / "out")]  # fmt: skip
    assert run_stage(Stage.GENERATE, argv) == 0
    first, second = sorted((tmp_path / "out").glob("*.png"))
    assert first.name.endswith("_00_7.png") and Image.open(first).size == (32, 64)
    assert second.name.endswith("_01_42.png") and Image.open(second).size == (48, 48)
    assert "CFG scale: 3.0, Seed: 7, Size: 32x64" in Image.open(first).text["parameters"]  # A1111's layout
    assert "CFG scale: 1.0, Seed: 42, Size: 48x48" in Image.open(second).text["parameters"]


def test_edit_2509_in_process(demo: Path, tmp_path: Path) -> None:
    control = demo / "dataset" / "controls" / "demo_00.png"
    argv = [*_models(demo, "edit-2509"), "--prompt", "make it blue", "--control_image_path", str(control),
            "--image_size", "48", "32", "--infer_steps", "2", "--guidance_scale", "1",
            "--save_path", str(tmp_path)]  # fmt: skip
    assert run_stage(Stage.GENERATE, argv) == 0
    (png,) = tmp_path.glob("*.png")
    assert Image.open(png).size == (32, 48)


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}  # fmt: skip


def test_edit_2509_through_the_console_command(demo: Path, tmp_path: Path) -> None:
    controls = [str(demo / "dataset" / "controls" / f"demo_0{i}.png") for i in (1, 2)]
    cmd = [sys.executable, "-m", "qwen_image_studio.cli", "generate", *_models(demo, "edit-2509"),
           "--prompt", "swap the colours", "--control_image_path", *controls, "--image_size", "32", "32",
           "--infer_steps", "2", "--guidance_scale", "1", "--seed", "3", "--save_path", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (png,) = tmp_path.glob("*_00_3.png")
    assert Image.open(png).size == (32, 32)


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert run_stage(Stage.GENERATE, argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


def test_bad_lora_file_is_one_line_naming_flag_and_path(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dit_file = demo / "models" / "comfyui" / "qwen_image_bf16.safetensors"
    base = [*_models(demo), "--prompt", "x", "--save_path", str(tmp_path)]
    line = _one_line_error([*base, "--lora_weight", str(dit_file)], capsys)
    assert line == (
        f"error: --lora_weight: {dit_file}: is not a LoRA file: it is a Qwen-Image DiT (diffusion "
        "model) (tensors like model.diffusion_model.img_in.bias, model.diffusion_model.img_in.weight)"
    )
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    assert _one_line_error([*base, "--lora_weight", str(text)], capsys).startswith(
        f"error: --lora_weight: {text}: is not a readable .safetensors file"
    )
    proc = subprocess.run([sys.executable, "-m", "qwen_image_studio.cli", "generate", *base, "--lora_weight",
                           str(tmp_path / "missing.safetensors")], capture_output=True, text=True, env=_env(),
                          timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --lora_weight: not found: {tmp_path / 'missing.safetensors'}"  # as for every input path
    )
    assert not list(tmp_path.glob("*.png"))


def test_refusals_are_honest(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [*_models(demo), "--save_path", str(tmp_path)]
    assert "--blocks_to_swap 4: this DiT has 2 blocks; swap 1 to 1 of them" in _one_line_error(
        [*base, "--prompt", "x", "--blocks_to_swap", "4"], capsys
    )
    assert "--flash_attn needs flash-attn 2" in _one_line_error(
        [*base, "--prompt", "x", "--flash_attn"], capsys
    )
    assert _one_line_error(base, capsys) == "error: --prompt or --from_file is required"
    edit = [*_models(demo, "edit-2509"), "--prompt", "x", "--save_path", str(tmp_path)]
    assert "--model_version edit-2509 needs a control image" in _one_line_error(edit, capsys)


def test_save_merged_model_writes_the_dit_with_the_lora_merged_in(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--save_merged_model: no images; a ComfyUI single file (same keys as the release file, bf16) whose
    weights are the base plus multiplier x the LoRA update, which loads back as a DiT."""
    from safetensors import safe_open

    from qwen_image_studio.models.loading import load_dit
    from qwen_image_studio.models.lora_apply import merge_loras, read_lora

    lora = _tiny_lora(demo, tmp_path / "lora.safetensors")
    merged = tmp_path / "merged" / "qwen_image_merged.safetensors"
    events = tmp_path / "events.jsonl"
    argv = [*_models(demo), "--lora_weight", str(lora), "--lora_multiplier", "0.8", "--save_path",
            str(tmp_path / "out"), "--save_merged_model", str(merged), "--events_file", str(events)]  # fmt: skip
    assert run_stage(Stage.GENERATE, argv) == 0
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))
    log, _ = read_events(events)
    assert [(e["kind"], e["path"]) for e in log if e["type"] == "artifact"] == [("model", str(merged))]
    release = demo / "models" / "comfyui" / "qwen_image_bf16.safetensors"
    with safe_open(str(merged), "pt") as new, safe_open(str(release), "pt") as old:
        keys = list(new.keys())
        assert set(keys) == set(old.keys())
        assert {new.get_slice(k).get_dtype() for k in keys} == {"BF16"}
        assert str(lora) in new.metadata()["qwen_image_studio.merged_loras"]
    expected = load_dit(release, dtype=torch.bfloat16)
    assert merge_loras(expected, [read_lora(lora)], [0.8]) > 0
    reloaded = load_dit(merged, dtype=torch.bfloat16)
    want = expected.state_dict()
    got = reloaded.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    base = load_dit(release, dtype=torch.bfloat16).state_dict()
    q = "transformer_blocks.0.attn.to_q.weight"
    assert not torch.equal(got[q], base[q])
    # refusals: nothing to merge, not a .safetensors name
    no_lora = [*_models(demo), "--save_path", str(tmp_path), "--save_merged_model", str(tmp_path / "m.st")]
    assert _one_line_error([*no_lora[:-1], str(tmp_path / "m.safetensors")], capsys) == (
        "error: --save_merged_model needs --lora_weight: there is nothing to merge"
    )
    bad_name = [*argv[: argv.index("--save_merged_model")], "--save_merged_model", str(tmp_path / "m.ckpt")]
    assert _one_line_error(bad_name, capsys) == (
        f"error: --save_merged_model: {tmp_path / 'm.ckpt'}: give a file name ending in .safetensors"
    )


def test_sample_images_with_the_live_training_model(demo: Path, tmp_path: Path) -> None:
    from qwen_image_studio.data.prompt_files import parse_sample_prompts
    from qwen_image_studio.models.loading import load_dit, load_vae
    from qwen_image_studio.params.validate import validate_config
    from qwen_image_studio.training.sampling import (
        prepare_sample_embeddings,
        sample_dir,
        sample_images,
    )

    comfy = demo / "models" / "comfyui"
    config = validate_config({"text_encoder": str(comfy / "qwen_2.5_vl_7b.safetensors"), "device": "cpu",
                              "mixed_precision": "no"})  # fmt: skip
    prepared = prepare_sample_embeddings(config, parse_sample_prompts(demo / "sample_prompts_t2i.txt"))
    dit = load_dit(comfy / "qwen_image_bf16.safetensors", dtype=torch.float32)
    vae = load_vae(comfy / "qwen_image_vae.safetensors", dtype=torch.float32)
    dit.enable_gradient_checkpointing()
    dit.train().requires_grad_(True)
    rng = torch.get_rng_state()
    events_path = tmp_path / "events.jsonl"
    events = EventWriter(events_path, "train_network")
    paths = sample_images(dit, vae, prepared, sample_dir(tmp_path), "demo", 12, events, torch.device("cpu"),
                          torch.float32)  # fmt: skip
    events.close()
    assert [p.name for p in paths] == ["demo_000012_00.png", "demo_000012_01.png"]
    assert all(Image.open(p).size == (64, 64) for p in paths) and paths[0].parent == tmp_path / "sample"
    assert dit.training and torch.equal(torch.get_rng_state(), rng)  # train mode and RNG untouched
    artifacts = [e for e in read_events(events_path)[0] if e["type"] == "artifact"]
    assert [(e["kind"], e["path"]) for e in artifacts] == [("sample", str(p)) for p in paths]
    assert oct(paths[0].stat().st_mode & 0o777) != oct(0o600)  # not the temporary file's private mode
    from qwen_image_studio.data.png_params import read_parameters

    recorded = read_parameters(paths[1])  # a training sample says what it shows, and at which step
    assert (recorded["source"], recorded["step"], recorded["prompt"]) == ("sample", 12, prepared.prompts[1].prompt)
    assert "Training step: 12" in Image.open(paths[1]).text["parameters"]
