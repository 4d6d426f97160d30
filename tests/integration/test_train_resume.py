"""--save_state / --resume: a resumed run continues the uninterrupted run's loss curve step for step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import train_support as ts

from qwen_image_studio.training.lora import read_lora_file


@pytest.fixture(scope="module")
def t2i(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo dataset, two images per batch where a bucket allows, both caches written."""
    toml = ts.dataset_toml(demo, tmp_path_factory.mktemp("resume"), edit=False, num_repeats=2)
    ts.cache(demo, toml)
    return toml


def test_resumed_run_matches_the_uninterrupted_one(demo: Path, t2i: Path, tmp_path: Path) -> None:
    # 12 batches per epoch, 2 per step: 6 steps per epoch; 9 steps cross into epoch 2. Dropout, a cosine
    # schedule with warm-up and AdamW make every piece of state matter.
    flags = {
        "max_train_steps": 9,
        "gradient_accumulation_steps": 2,
        "network_dropout": 0.2,
        "lr_scheduler": "cosine",
        "lr_warmup_steps": 2,
        "save_every_n_steps": 4,
        "save_state": True,
        "network_args": ["loraplus_lr_ratio=4"],
        "max_data_loader_n_workers": 1,
        "persistent_data_loader_workers": True,
        "no_persistent_data_loader_workers": None,
    }
    full = tmp_path / "full"
    assert ts.train(ts.train_argv(demo, t2i, full, **flags)) == 0, ts.failure(full / "events.jsonl")
    state = full / "lora-step00000004-state"
    info = json.loads((state / "state.json").read_text())
    assert (info["step"], info["epoch"], info["step_in_epoch"]) == (4, 0, 4)
    assert {p.name for p in state.iterdir()} >= {
        "lora.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng_0.pt",
    }

    resumed = tmp_path / "resumed"
    assert ts.train(ts.train_argv(demo, t2i, resumed, resume=state, **flags)) == 0, ts.failure(
        resumed / "events.jsonl"
    )
    expected = ts.events_of(full / "events.jsonl")
    got = ts.events_of(resumed / "events.jsonl")

    def steps(events: list[dict]) -> dict[int, tuple[float, float]]:
        return {e["step"]: (e["loss"], e["lr"]) for e in events if e["type"] == "metric" and "loss" in e}

    want, have = steps(expected), steps(got)
    assert sorted(have) == [5, 6, 7, 8, 9]
    for step in have:
        assert have[step][0] == pytest.approx(want[step][0], rel=1e-6, abs=1e-8), step
        assert have[step][1] == pytest.approx(want[step][1], rel=1e-9), step
    avg = {e["step"]: e["loss_avg"] for e in expected if e["type"] == "metric" and "loss_avg" in e}
    assert [e["loss_avg"] for e in got if e["type"] == "metric" and "loss_avg" in e] == pytest.approx(
        [avg[s] for s in sorted(have)], rel=1e-5
    )
    a, _ = read_lora_file(full / "lora.safetensors")
    b, _ = read_lora_file(resumed / "lora.safetensors")
    for key in a:
        torch.testing.assert_close(b[key].float(), a[key].float(), rtol=1e-5, atol=1e-7)


def test_resume_needs_a_state_folder(demo: Path, t2i: Path, tmp_path: Path) -> None:
    assert ts.train(ts.train_argv(demo, t2i, tmp_path, resume=tmp_path)) == 2
    assert "--resume" in ts.failure(tmp_path / "events.jsonl")
