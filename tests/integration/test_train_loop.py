"""Training on the demo models (CPU, fp32, tiny): the loss falls, every option trains, steps are honoured."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
import train_support as ts

from qwen_image_studio.training import flow_matching as fm
from qwen_image_studio.training.lora import read_lora_file


def test_overfitting_the_demo_lowers_the_loss_clearly(demo: Path, t2i: Path, tmp_path: Path) -> None:
    argv = ts.train_argv(
        demo,
        t2i,
        tmp_path,
        max_train_steps=100,
        network_dim=8,
        network_alpha=8,
        network_args=["loraplus_lr_ratio=4"],
        learning_rate=1e-3,
    )
    assert ts.train(argv) == 0, ts.failure(tmp_path / "events.jsonl")
    losses = ts.losses(tmp_path / "events.jsonl")
    assert len(losses) == 100 and all(math.isfinite(x) for x in losses)
    first, last = statistics.mean(losses[:20]), statistics.mean(losses[-20:])
    before = ts.eval_loss(ts.models(demo)["dit"], t2i, None)
    after = ts.eval_loss(ts.models(demo)["dit"], t2i, tmp_path / "lora.safetensors")
    print(
        f"training loss (mean of 20 steps) {first:.4f} -> {last:.4f}; fixed-noise loss {before:.4f} -> {after:.4f}"
    )
    assert last < 0.85 * first
    assert after < 0.85 * before


@pytest.mark.parametrize("sampling", fm.SAMPLINGS)
def test_every_timestep_sampling_trains(demo: Path, t2i: Path, tmp_path: Path, sampling: str) -> None:
    argv = ts.train_argv(demo, t2i, tmp_path, timestep_sampling=sampling, min_timestep=100, max_timestep=900)
    assert ts.train(argv) == 0, ts.failure(tmp_path / "events.jsonl")
    losses = ts.losses(tmp_path / "events.jsonl")
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


@pytest.mark.parametrize("weighting", fm.WEIGHTINGS)
@pytest.mark.parametrize("sampling", ["sigmoid", "sigma"])
def test_every_weighting_scheme_trains(
    demo: Path, t2i: Path, tmp_path: Path, weighting: str, sampling: str
) -> None:
    argv = ts.train_argv(demo, t2i, tmp_path, weighting_scheme=weighting, timestep_sampling=sampling)
    assert ts.train(argv) == 0, ts.failure(tmp_path / "events.jsonl")
    losses = ts.losses(tmp_path / "events.jsonl")
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    # a density weighting with a sampling it does not shape is said, as the reference trainer ignores it
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    warned = [e["message"] for e in events if e["type"] == "warning" and "--weighting_scheme" in e["message"]]
    assert bool(warned) == (weighting in fm.DENSITY_WEIGHTINGS and sampling != "sigma"), warned


@pytest.mark.parametrize(
    ("optimizer", "args"),
    [
        ("adamw", ["weight_decay=0.01"]),
        ("adamw8bit", []),  # bitsandbytes 0.50.2 steps on the CPU
        ("lion", ["betas=0.9,0.99"]),
        ("sgd", ["momentum=0.9"]),
        ("adafactor", []),
        ("torch.optim.RMSprop", ["alpha=0.9"]),
    ],
)
def test_every_optimizer_trains(
    demo: Path, t2i: Path, tmp_path: Path, optimizer: str, args: list[str]
) -> None:
    argv = ts.train_argv(
        demo,
        t2i,
        tmp_path,
        optimizer_type=optimizer,
        optimizer_args=args or None,
        lr_scheduler="cosine",
        lr_warmup_steps=1,
    )
    assert ts.train(argv) == 0, ts.failure(tmp_path / "events.jsonl")
    assert all(math.isfinite(x) for x in ts.losses(tmp_path / "events.jsonl"))
    tensors, meta = read_lora_file(tmp_path / "lora.safetensors")
    assert meta["ss_optimizer"] == optimizer
    ups = [v for k, v in tensors.items() if k.endswith(".lora_up.weight")]
    assert any(float(u.abs().sum()) > 0 for u in ups), "the optimizer moved the LoRA"


def test_memory_and_precision_options_train(demo: Path, t2i: Path, tmp_path: Path) -> None:
    runs = {
        "bf16": {"mixed_precision": "bf16", "max_train_steps": 1},
        "fp8": {
            "fp8_base": True,
            "gradient_checkpointing": True,
            "no_gradient_checkpointing": None,
            "network_dropout": 0.1,
        },
        "swap": {"blocks_to_swap": 1, "gradient_checkpointing": True, "no_gradient_checkpointing": None},
    }
    for name, flags in runs.items():
        out = tmp_path / name
        assert ts.train(ts.train_argv(demo, t2i, out, **flags)) == 0, ts.failure(out / "events.jsonl")
        assert all(math.isfinite(x) for x in ts.losses(out / "events.jsonl"))
    out = tmp_path / "swap_all"
    assert ts.train(ts.train_argv(demo, t2i, out, blocks_to_swap=4)) == 2
    assert "--blocks_to_swap 4: this DiT has 2 blocks" in ts.failure(out / "events.jsonl")


def test_epochs_accumulation_and_saving_follow_the_flags(demo: Path, t2i: Path, tmp_path: Path) -> None:
    # 6 one-image batches per epoch, 4 per step: 2 steps per epoch (the second takes 2 batches)
    argv = ts.train_argv(
        demo,
        t2i,
        tmp_path,
        max_train_steps=None,
        max_train_epochs=2,
        gradient_accumulation_steps=4,
        save_every_n_epochs=1,
        save_every_n_steps=3,
        output_name="acc",
    )
    assert ts.train(argv) == 0, ts.failure(tmp_path / "events.jsonl")
    events = ts.events_of(tmp_path / "events.jsonl")
    assert [e["step"] for e in events if e["type"] == "metric" and "loss" in e] == [1, 2, 3, 4]
    written = [Path(e["path"]).name for e in events if e["type"] == "artifact"]
    assert written == [
        "acc-000001.safetensors",
        "acc-step00000003.safetensors",
        "acc-000002.safetensors",
        "acc.safetensors",
    ]
    assert read_lora_file(tmp_path / "acc-000001.safetensors")[1]["ss_steps"] == "2"
    progress = [e for e in events if e["type"] == "progress" and e["phase"] == "train"]
    assert progress[-1]["done"] == progress[-1]["total"] == 4 and "loss" in progress[-1]
    saves = [e for e in events if e["type"] == "progress" and e["phase"] == "save"]
    assert {e["step"] for e in saves} == {2, 3, 4} and all(e["sub"] for e in saves)  # a sub-phase of training


def _trainer(demo: Path, toml: Path, max_grad_norm: float) -> tuple:
    """A Trainer over the tiny DiT with plain SGD at lr 1 (so a step moves the LoRA by minus the gradient)."""
    from accelerate import Accelerator

    from qwen_image_studio.models.loading import load_dit
    from qwen_image_studio.params.schema import StudioConfig
    from qwen_image_studio.training.data import collate, collect_items, load_cached
    from qwen_image_studio.training.loop import Trainer
    from qwen_image_studio.training.lora import apply_lora
    from qwen_image_studio.training.optim import create_optimizer, create_scheduler

    torch.manual_seed(0)
    model = load_dit(ts.models(demo)["dit"], dtype=torch.float32)
    network = apply_lora(model, 4, 4)
    for m in network.modules():
        torch.nn.init.normal_(m.lora_up.weight, std=0.1)
    optimizer = create_optimizer("sgd", network.param_groups(1.0), 1.0)
    scheduler = create_scheduler("constant", optimizer, 10)
    items = collect_items(StudioConfig(dataset_config=str(toml)))
    batches = [collate([load_cached(i, False)]) for i in items[:2]]
    trainer = Trainer(
        Accelerator(cpu=True),
        model,
        network,
        optimizer,
        scheduler,
        fm.TimestepConfig(),
        torch.Generator().manual_seed(5),
        torch.float32,
        max_grad_norm,
        torch.device("cpu"),
    )
    return trainer, network, model, batches


def test_gradient_accumulation_averages_the_gradients_of_its_batches(demo: Path, t2i: Path) -> None:
    from qwen_image_studio.training.loop import flow_matching_loss

    trainer, network, model, batches = _trainer(demo, t2i, max_grad_norm=0)
    start = [p.detach().clone() for p in network.parameters()]
    generator = torch.Generator().manual_seed(5)
    grads = []
    for batch in batches:  # the same draws as the trainer makes, one batch at a time
        model.zero_grad()
        loss, _ = flow_matching_loss(
            model, batch, trainer.tcfg, generator, torch.device("cpu"), torch.float32
        )
        loss.backward()
        # the last block's text-stream outputs never reach the loss: their LoRA layers get no gradient
        grads.append(
            [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in network.parameters()]
        )
    model.zero_grad()
    trainer.step(batches)
    for p, p0, g1, g2 in zip(network.parameters(), start, *grads, strict=True):
        torch.testing.assert_close(p0 - p.detach(), (g1 + g2) / 2, rtol=1e-4, atol=1e-6)


def test_max_grad_norm_clips_the_update(demo: Path, t2i: Path) -> None:
    trainer, network, _, batches = _trainer(demo, t2i, max_grad_norm=1e-3)
    start = [p.detach().clone() for p in network.parameters()]
    trainer.step(batches[:1])
    norm = torch.sqrt(
        sum(((p0 - p.detach()) ** 2).sum() for p, p0 in zip(network.parameters(), start, strict=True))
    )
    assert float(norm) == pytest.approx(1e-3, rel=1e-3)


def test_missing_caches_name_the_commands_to_run(demo: Path, tmp_path: Path) -> None:
    toml = ts.dataset_toml(demo, tmp_path / "nocache", edit=False)
    assert ts.train(ts.train_argv(demo, toml, tmp_path)) == 2
    reason = ts.failure(tmp_path / "events.jsonl")
    assert "qwen_image_cache_latents.py" in reason and "qwen_image_cache_text_encoder_outputs.py" in reason


def test_rank_and_module_dropout_train_and_replay_exactly_under_checkpointing(
    demo: Path, t2i: Path, tmp_path: Path
) -> None:
    """network_args rank_dropout / module_dropout (the reference trainer's): random per step, yet gradient
    checkpointing's recompute replays the same draws, so the losses and the LoRA match the plain run's."""
    args = {"network_args": ["rank_dropout=0.3", "module_dropout=0.3"], "max_train_steps": 4}
    runs = {}
    for name, extra in {"plain": {}, "checkpointed": {"gradient_checkpointing": True,
                                                       "no_gradient_checkpointing": None}}.items():  # fmt: skip
        out = tmp_path / name
        assert ts.train(ts.train_argv(demo, t2i, out, **args, **extra)) == 0, ts.failure(out / "events.jsonl")
        runs[name] = (ts.losses(out / "events.jsonl"), read_lora_file(out / "lora.safetensors")[0])
    (losses, lora), (again, lora2) = runs["plain"], runs["checkpointed"]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert np.allclose(again, losses, rtol=1e-5)
    assert all(torch.allclose(lora2[k], lora[k], rtol=1e-4, atol=1e-6) for k in lora)
    meta = read_lora_file(tmp_path / "plain" / "lora.safetensors")[1]
    assert "rank_dropout" in meta["ss_network_args"]


def test_network_weights_continue_from_a_file(demo: Path, t2i: Path, tmp_path: Path) -> None:
    first = tmp_path / "a"
    assert ts.train(ts.train_argv(demo, t2i, first)) == 0
    second = tmp_path / "b"
    weights = first / "lora.safetensors"
    argv = ts.train_argv(demo, t2i, second, network_weights=weights, learning_rate=1e-6, max_train_steps=1)
    assert ts.train(argv) == 0, ts.failure(second / "events.jsonl")
    a, _ = read_lora_file(weights)
    b, _ = read_lora_file(second / "lora.safetensors")
    for key in a:
        torch.testing.assert_close(b[key].float(), a[key].float(), rtol=0.02, atol=1e-4)
    wrong = tmp_path / "c"
    assert ts.train(ts.train_argv(demo, t2i, wrong, network_weights=weights, network_dim=8)) == 2
    assert "--network_weights" in ts.failure(wrong / "events.jsonl")


def test_sample_images_during_training_leave_the_loss_curve_unchanged(
    demo: Path, t2i: Path, tmp_path: Path
) -> None:
    plain, sampled = tmp_path / "plain", tmp_path / "sampled"
    assert ts.train(ts.train_argv(demo, t2i, plain, max_train_steps=4, network_dropout=0.1)) == 0
    argv = ts.train_argv(
        demo,
        t2i,
        sampled,
        max_train_steps=4,
        network_dropout=0.1,
        sample_prompts=demo / "sample_prompts_t2i.txt",
        sample_at_first=True,
        sample_every_n_steps=2,
    )
    assert ts.train(argv) == 0, ts.failure(sampled / "events.jsonl")
    samples = [
        Path(e["path"]).name
        for e in ts.events_of(sampled / "events.jsonl")
        if e["type"] == "artifact" and e["kind"] == "sample"
    ]
    assert samples == [f"lora_{s:06d}_{i:02d}.png" for s in (0, 2, 4) for i in (0, 1)]
    assert ts.losses(sampled / "events.jsonl") == ts.losses(plain / "events.jsonl")


def test_fp8_training_gives_the_plain_loss_within_a_bound(
    demo: Path, t2i: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same seed, same t and noise: fp8 weights (row or block scales, upcast or fp8 tensor-core matmuls)
    change the first loss by under 2 %."""
    first = {}
    for name, flags in {
        "plain": {},
        "fp8": {"fp8_base": True},
        "fp8_scaled": {"fp8_base": True, "fp8_scaled": True},
        "fp8_native": {"fp8_base": True, "fp8_scaled": True, "fp8_matmul": "native"},
    }.items():
        out = tmp_path / name
        capsys.readouterr()
        assert ts.train(ts.train_argv(demo, t2i, out, max_train_steps=2, **flags)) == 0
        first[name] = ts.losses(out / "events.jsonl")[0]
        if name == "fp8_native":
            assert "matmuls on fp8 tensor cores (--fp8_matmul native)" in capsys.readouterr().err
    for name in ("fp8", "fp8_scaled", "fp8_native"):
        assert abs(first[name] - first["plain"]) / first["plain"] < 0.02, first
    # native weights have one scale per row, like "fp8"s: a different loss means the fp8 inputs were used
    assert first["fp8_native"] != first["fp8"]
