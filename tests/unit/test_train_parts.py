"""Training building blocks without models: optimizer arguments, schedules, epoch plans, collation, step plans."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_image_studio.errors import ConfigError
from qwen_image_studio.training.data import collate, groups_of, plan_epoch, shard
from qwen_image_studio.training.loop import chunked, plan_steps
from qwen_image_studio.training.optim import (
    create_optimizer,
    create_scheduler,
    parse_optimizer_args,
    warmup_steps,
)


def test_optimizer_args_become_python_values() -> None:
    parsed = parse_optimizer_args(
        {
            "weight_decay": "0.01",
            "betas": "0.9,0.99",
            "amsgrad": "True",
            "eps": "1e-8",
            "foreach": "None",
            "mode": "fast",
        }
    )
    assert parsed == {
        "weight_decay": 0.01,
        "betas": (0.9, 0.99),
        "amsgrad": True,
        "eps": 1e-8,
        "foreach": None,
        "mode": "fast",
    }


def _groups() -> list[dict]:
    return [
        {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-3, "name": "lora_down"},
        {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 4e-3, "name": "lora_up"},
    ]


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("adamw", "AdamW"),
        ("adamw8bit", "AdamW8bit"),
        ("lion", "Lion"),
        ("sgd", "SGD"),
        ("adafactor", "Adafactor"),
        ("torch.optim.RMSprop", "RMSprop"),
    ],
)
def test_each_optimizer_is_built_with_its_groups(name: str, cls: str) -> None:
    opt = create_optimizer(name, _groups(), 1e-3, {"weight_decay": "0.01"})
    assert type(opt).__name__ == cls
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 4e-3]
    assert all(g["weight_decay"] == 0.01 for g in opt.param_groups)


def test_unknown_optimizer_and_bad_arguments_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--optimizer_type no.such.Optimizer"):
        create_optimizer("no.such.Optimizer", _groups(), 1e-3)
    with pytest.raises(ConfigError, match="--optimizer_type torch.nn.Linear"):
        create_optimizer("torch.nn.Linear", _groups(), 1e-3)
    with pytest.raises(ConfigError, match="--optimizer_args"):
        create_optimizer("adamw", _groups(), 1e-3, {"no_such_arg": "1"})


def test_warmup_fraction_and_steps() -> None:
    assert warmup_steps(0, 100) == 0
    assert warmup_steps(0.1, 100) == 10
    assert warmup_steps(25, 100) == 25


def _lrs(name: str, total: int = 10, warmup: float = 0, **kw: float) -> list[float]:
    opt = create_optimizer("sgd", [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0}], 1.0)
    sched = create_scheduler(name, opt, total, warmup, **kw)  # type: ignore[arg-type]
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_follow_their_shapes() -> None:
    assert _lrs("constant") == [1.0] * 10
    warm = _lrs("constant_with_warmup", warmup=0.3)
    assert warm[:3] == pytest.approx([0.0, 1 / 3, 2 / 3]) and warm[3:] == [1.0] * 7
    linear = _lrs("linear", warmup=2)
    assert linear[2] == 1.0 and linear[-1] == pytest.approx(1 / 8)
    cosine = _lrs("cosine")
    assert cosine == sorted(cosine, reverse=True) and cosine[5] == pytest.approx(0.5)
    restarts = _lrs("cosine_with_restarts", num_cycles=2)
    assert restarts[5] == pytest.approx(1.0)  # the second cycle starts again at the top
    poly = _lrs("polynomial", power=2.0)
    assert poly[5] == pytest.approx(0.25, abs=1e-3)
    with pytest.raises(ConfigError, match="--lr_warmup_steps"):
        _lrs("cosine", warmup=10)


def _items(groups: dict[str, int], batch: int = 2, repeats: int = 1) -> list:
    from pathlib import Path

    from qwen_image_studio.training.data import CachedItem

    out = []
    for key, count in groups.items():
        for i in range(count):
            out.append(CachedItem(f"{key}{i}", Path("l"), Path("t"), (0, key, 0), batch, repeats))
    return out


def test_epoch_plans_batch_within_buckets_and_depend_only_on_seed_and_epoch() -> None:
    items = _items({"64x64": 3, "80x48": 2, "48x80": 4}, batch=2, repeats=2)
    groups = groups_of(items)
    plan = plan_epoch(groups, seed=42, epoch=0)
    assert plan == plan_epoch(groups, seed=42, epoch=0)
    assert plan != plan_epoch(groups, seed=42, epoch=1) and plan != plan_epoch(groups, seed=7, epoch=0)
    assert sorted(i for b in plan for i in b) == sorted(list(range(9)) * 2)  # every item num_repeats times
    for batch in plan:
        assert len(batch) <= 2 and len({items[i].group for i in batch}) == 1
    assert len(plan) == 3 + 2 + 4  # ceil(6/2) + ceil(4/2) + ceil(8/2)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 30), world=st.integers(1, 4))
def test_shards_are_equal_and_cover_every_batch(n: int, world: int) -> None:
    batches = [[i] for i in range(n)]
    shards = [shard(batches, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    assert {b[0] for s in shards for b in s} == set(range(n))


def test_collate_pads_text_and_marks_real_tokens() -> None:
    samples = [
        {
            "key": k,
            "latents": torch.zeros(16, 1, 8, 8),
            "controls": [torch.ones(16, 1, 8, 8)],
            "text": torch.full((n, 4), float(n)),
        }
        for k, n in (("a", 3), ("b", 5))
    ]
    batch = collate(samples)
    assert batch["latents"].shape == (2, 16, 1, 8, 8) and batch["controls"][0].shape == (2, 16, 1, 8, 8)
    assert batch["text"].shape == (2, 5, 4)
    assert batch["mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert float(batch["text"][0, 3:].abs().sum()) == 0.0


def test_step_plans_and_chunks() -> None:
    plan = plan_steps(batches_per_epoch=6, grad_accum=4, max_train_steps=None, max_train_epochs=3)
    assert (plan.steps_per_epoch, plan.total_steps, plan.epochs) == (2, 6, 3)
    steps_win = plan_steps(6, 1, max_train_steps=10, max_train_epochs=100)
    assert (steps_win.total_steps, steps_win.epochs) == (10, 2)
    assert list(chunked(range(5), 2)) == [[0, 1], [2, 3], [4]]
