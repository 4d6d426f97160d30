"""Validation loss (issue 15 item 4) on the demo models (CPU, fp32, tiny).

A run with ``--validation_dataset_config`` writes ``loss/validation`` at the requested steps and at every
save; the value of a LoRA file is the same whenever it is evaluated (during training, afterwards, in another
run); it never changes the training curve; edit mode, block swap and fp8 give it too; bad input is one line.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import train_support as ts

from qwen_image_studio.params.cli import parse_args
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.training.lora import read_lora_file
from qwen_image_studio.training.validation import DEFAULT_TIMESTEPS, evaluate_checkpoint


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run in the test's folder (relative defaults such as ./logs land there); drop in-process log handlers."""
    monkeypatch.chdir(tmp_path)
    yield
    logging.getLogger().handlers.clear()


def _validation_toml(folder: Path, images: Path, controls: Path | None = None) -> Path:
    """A validation TOML over `images` (64x64 buckets) with its cache in `folder`/cache."""
    folder.mkdir(parents=True, exist_ok=True)
    control = f'control_directory = "{controls}"\n' if controls else ""
    toml = folder / "validation.toml"
    toml.write_text(
        "[general]\nresolution = [64, 64]\nenable_bucket = true\n\n[[datasets]]\n"
        f'image_directory = "{images}"\ncache_directory = "{folder / "cache"}"\n{control}',
        encoding="utf-8",
    )
    return toml


def _cache_both(demo: Path, toml: Path, validation: Path, model_version: str = "original") -> None:
    """Both caching stages with --validation_dataset_config, as the pipeline runs them."""
    m = ts.models(demo)
    common = ["--dataset_config", str(toml), "--validation_dataset_config", str(validation)]
    common += ["--model_version", model_version, "--device", "cpu"]
    assert ts.run_stage(Stage.CACHE_LATENTS, [*common, "--vae", str(m["vae"])]) == 0
    assert ts.run_stage(Stage.CACHE_TEXT, [*common, "--text_encoder", str(m["te"])]) == 0


@pytest.fixture(scope="module")
def data(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(training TOML, validation TOML): the demo's six images, its two validation images; both cached."""
    root = tmp_path_factory.mktemp("validation")
    toml = ts.dataset_toml(demo, root / "train", edit=False)
    validation = _validation_toml(root / "val", demo / "dataset" / "validation")
    _cache_both(demo, toml, validation)
    return toml, validation


def _train(demo: Path, toml: Path, out: Path, **flags: Any) -> list[dict[str, Any]]:
    argv = ts.train_argv(demo, toml, out, **flags)
    assert ts.train(argv) == 0, ts.failure(out / "events.jsonl")
    return ts.events_of(out / "events.jsonl")


def _validations(events: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [
        (e["step"], e["validation_loss"]) for e in events if e["type"] == "metric" and "validation_loss" in e
    ]


def _checkpoints(events: list[dict[str, Any]]) -> dict[str, float | None]:
    return {
        Path(e["path"]).name: e.get("validation_loss")
        for e in events
        if e["type"] == "artifact" and e["kind"] == "checkpoint"
    }


def test_the_validation_loss_goes_to_tensorboard_at_the_requested_steps_and_at_each_save(
    demo: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    toml, validation = data
    events = _train(
        demo, toml, tmp_path / "out", validation_dataset_config=validation, validate_every_n_steps=4,
        max_train_steps=None, max_train_epochs=2, save_every_n_epochs=1, log_with="tensorboard",
        logging_dir=tmp_path / "logs",
    )  # fmt: skip
    # 6 images, batch 1: 6 steps an epoch; every 4 steps (4, 8, 12) and at the saves (6, 12; 12 once)
    found = _validations(events)
    assert [step for step, _ in found] == [4, 6, 8, 12]
    assert all(math.isfinite(v) and v > 0 for _, v in found)
    by_step = dict(found)
    assert _checkpoints(events) == {
        "lora-000001.safetensors": by_step[6],
        "lora-000002.safetensors": by_step[12],
        "lora.safetensors": by_step[12],
    }
    metric = next(e for e in events if e.get("validation_loss") is not None and e["type"] == "metric")
    assert metric["validation_timesteps"] == list(DEFAULT_TIMESTEPS) and len(metric["validation_losses"]) == 9
    assert metric["validation_loss"] == pytest.approx(sum(metric["validation_losses"]) / 9, rel=1e-12)
    (run,) = (tmp_path / "logs").iterdir()
    acc = EventAccumulator(str(run))
    acc.Reload()
    scalars = acc.Scalars("loss/validation")
    assert [s.step for s in scalars] == [4, 6, 8, 12]
    assert [s.value for s in scalars] == pytest.approx([v for _, v in found], rel=1e-6)  # stored as float32
    assert "validation/t_0.5" in acc.Tags()["scalars"]
    _, meta = read_lora_file(tmp_path / "out" / "lora-000001.safetensors")
    assert float(meta["qis_validation_loss"]) == by_step[6]


def test_the_same_checkpoint_always_gets_the_same_value(
    demo: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    toml, validation = data
    flags: dict[str, Any] = {
        "validation_dataset_config": validation, "validate_every_n_epochs": 1, "max_train_steps": None,
        "max_train_epochs": 1, "save_every_n_epochs": 1, "save_precision": "float",
    }  # fmt: skip
    first = _train(demo, toml, tmp_path / "a", **flags)
    second = _train(demo, toml, tmp_path / "b", **flags)
    assert _validations(first) == _validations(second) and len(_validations(first)) == 1  # two runs
    reported = _checkpoints(first)["lora.safetensors"]
    config, _ = parse_args(Stage.TRAIN, ts.train_argv(demo, toml, tmp_path / "a", **flags))
    once = evaluate_checkpoint(config, tmp_path / "a" / "lora.safetensors")
    twice = evaluate_checkpoint(config, tmp_path / "a" / "lora.safetensors")
    assert once == twice  # the evaluator, called twice on the same file
    assert once.loss == reported and once.count == 2 * 9  # the file's value is what training reported
    base = evaluate_checkpoint(config, None)
    assert base.loss != once.loss  # the LoRA is what moves the value


def test_validation_does_not_change_the_training(demo: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    toml, validation = data
    _train(demo, toml, tmp_path / "plain", max_train_steps=5, network_dropout=0.1)
    validated = _train(
        demo, toml, tmp_path / "validated", max_train_steps=5, network_dropout=0.1,
        validation_dataset_config=validation, validate_every_n_steps=1,
    )  # fmt: skip
    assert [s for s, _ in _validations(validated)] == [1, 2, 3, 4, 5]
    assert ts.losses(tmp_path / "validated" / "events.jsonl") == ts.losses(
        tmp_path / "plain" / "events.jsonl"
    )
    a, _ = read_lora_file(tmp_path / "plain" / "lora.safetensors")
    b, _ = read_lora_file(tmp_path / "validated" / "lora.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param({}, id="plain"),
        pytest.param({"fp8_base": True, "fp8_scaled": True}, id="fp8_scaled"),
    ],
)
def test_block_swap_gives_the_same_validation_loss(
    demo: Path, data: tuple[Path, Path], tmp_path: Path, flags: dict[str, Any]
) -> None:
    toml, validation = data
    common = {
        **flags, "validation_dataset_config": validation, "validate_every_n_steps": 2,
        "gradient_checkpointing": True, "no_gradient_checkpointing": None,
    }  # fmt: skip
    plain = _validations(_train(demo, toml, tmp_path / "plain", **common))
    swapped = _validations(_train(demo, toml, tmp_path / "swap", blocks_to_swap=1, **common))
    assert [s for s, _ in plain] == [2, 3] and swapped == plain


def test_edit_mode_validates_with_its_control_images(demo: Path, tmp_path: Path) -> None:
    images, controls = tmp_path / "val" / "images", tmp_path / "val" / "controls"
    images.mkdir(parents=True)
    controls.mkdir()
    for stem in ("demo_00", "demo_01"):  # two of the demo's edit pairs, held out as validation data
        for suffix in (".png", ".txt"):
            shutil.copy(demo / "dataset" / "images" / f"{stem}{suffix}", images)
        shutil.copy(demo / "dataset" / "controls" / f"{stem}.png", controls)
    toml = ts.dataset_toml(demo, tmp_path / "train", edit=True)
    validation = _validation_toml(tmp_path / "val", images, controls)
    _cache_both(demo, toml, validation, "edit-2509")
    flags: dict[str, Any] = {
        "dit": "dit_2509", "model_version": "edit-2509", "validation_dataset_config": validation,
        "validate_every_n_steps": 3, "save_precision": "float",
    }  # fmt: skip
    events = _train(demo, toml, tmp_path / "out", **flags)
    found = _validations(events)
    assert [s for s, _ in found] == [3] and math.isfinite(found[0][1])
    assert _checkpoints(events) == {"lora.safetensors": found[0][1]}
    config, _ = parse_args(Stage.TRAIN, ts.train_argv(demo, toml, tmp_path / "out", **flags))
    assert evaluate_checkpoint(config, tmp_path / "out" / "lora.safetensors").loss == found[0][1]
    # the control latents take part: without them (another control image) the value changes
    (controls / "demo_00.png").unlink()
    shutil.copy(demo / "dataset" / "controls" / "demo_02.png", controls / "demo_00.png")
    _cache_both(demo, toml, validation, "edit-2509")
    assert evaluate_checkpoint(config, tmp_path / "out" / "lora.safetensors").loss != found[0][1]


def test_bad_validation_input_is_one_line(demo: Path, data: tuple[Path, Path], tmp_path: Path) -> None:
    toml, _ = data
    empty = tmp_path / "empty"
    empty.mkdir()

    def refused(name: str, validation: Path) -> str:
        out = tmp_path / name
        assert ts.train(ts.train_argv(demo, toml, out, validation_dataset_config=validation)) == 2
        (failed,) = [e for e in ts.events_of(out / "events.jsonl") if e["type"] == "failed"]
        assert "\n" not in failed["reason"]
        return failed["reason"]

    nothing = _validation_toml(tmp_path / "v", empty)
    # said before any model loads, by the stage's check of its inputs
    assert refused("empty", nothing).startswith(
        f"--validation_dataset_config: {nothing} has no usable images"
    )
    # a validation dataset caching into the training data's folder would remove its files as stale
    shared = tmp_path / "shared.toml"
    shared.write_text(toml.read_text(encoding="utf-8"), encoding="utf-8")
    assert refused("shared", shared) == (
        f"--validation_dataset_config: {shared}: datasets[0] shares cache_directory {toml.parent / 'cache'} "
        f"with datasets[0] of --dataset_config {toml}; give the validation data a cache_directory of its own"
    )
    # not cached yet: the message gives the command that caches both
    fresh = _validation_toml(tmp_path / "fresh", demo / "dataset" / "validation")
    reason = refused("fresh", fresh)
    assert "2 of 2 validation latent caches are missing or outdated" in reason
    assert f"--dataset_config {toml} --validation_dataset_config {fresh}" in reason


def test_validation_flags_are_checked_in_one_line(
    demo: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    toml, validation = data
    cases = [
        ({"validate_every_n_steps": 2}, "--validate_every_n_steps needs --validation_dataset_config"),
        ({"validate_every_n_epochs": 1}, "--validate_every_n_epochs needs --validation_dataset_config"),
        (
            {"validation_dataset_config": validation, "validation_timesteps": [0.5, 1.0]},
            "--validation_timesteps: give 1 to 100 timesteps, each above 0 and below 1 (got 0.5 1)",
        ),
    ]
    for i, (flags, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert ts.train(ts.train_argv(demo, toml, out, **flags)) == 2
        assert message in ts.failure(out / "events.jsonl")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_processes_share_the_items_and_report_the_value_once(
    demo: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    toml, validation = data
    out = tmp_path / "out"
    flags: dict[str, Any] = {
        "validation_dataset_config": validation, "validate_every_n_steps": 2, "max_train_steps": 4,
        "save_precision": "float",
    }  # fmt: skip
    argv = ts.train_argv(demo, toml, out, **flags)
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "qwen_image_train_network.py", *argv,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("2 process(es)") == 2
    logged = re.findall(r"training.validation: validation loss (\S+) at step (\d+)", proc.stderr)
    # 6 batches shared by 2 processes: 3 steps an epoch; every 2 steps and at the save of epoch 1 (step 3),
    # each logged once, by the main process
    assert [int(step) for _, step in logged] == [2, 3, 4]
    found = _validations(ts.events_of(out / "events.jsonl"))
    assert [s for s, _ in found] == [2, 3, 4]
    assert [float(v) for v, _ in logged] == pytest.approx([v for _, v in found], abs=1e-6)
    config, _ = parse_args(Stage.TRAIN, argv)
    alone = evaluate_checkpoint(config, out / "lora.safetensors")  # one process, every item itself
    assert alone.count == 2 * 9 and alone.loss == pytest.approx(found[-1][1], rel=1e-12)


def test_the_check_before_a_run_reads_the_validation_toml_and_its_cache_folder(
    demo: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    from qwen_image_studio.params.config_files import load_config
    from qwen_image_studio.params.validate import stage_problems
    from qwen_image_studio.webui.write_check import output_folders

    t2i = load_config(demo / "configs" / "demo-t2i.json")  # the demo validates on its two held-out images
    assert Path(t2i.validation_dataset_config).name == "dataset_validation.toml"
    assert t2i.validate_every_n_epochs == 1
    assert all(stage_problems(t2i, s) == [] for s in (Stage.CACHE_LATENTS, Stage.CACHE_TEXT, Stage.TRAIN))
    folders = output_folders(t2i, (Stage.CACHE_LATENTS,))
    assert ("validation_dataset_config", demo / "dataset" / "cache" / "validation") in [
        (name, folder) for name, folder, _ in folders
    ]
    # edit versions need control images in the validation data too, named on its own field
    toml, validation = data
    edit = t2i.model_copy(
        update={
            "model_version": "edit-2509",
            "dataset_config": str(ts.dataset_toml(demo, tmp_path, edit=True)),
        }
    )
    edit = edit.model_copy(update={"validation_dataset_config": str(validation)})
    [problem] = [p for p in stage_problems(edit, Stage.TRAIN) if p.field == "validation_dataset_config"]
    assert problem.message == (
        f"--model_version edit-2509 needs control images: datasets[0] of {validation} has no control_directory"
    )
