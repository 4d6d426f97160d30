"""Edit-mode training: clean control latents after the noisy target, per-image shapes, Edit / 2509 / 2511."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import train_support as ts

from qwen_image_studio.params.schema import StudioConfig
from qwen_image_studio.training import flow_matching as fm
from qwen_image_studio.training.data import collate, collect_items, load_cached
from qwen_image_studio.training.loop import flow_matching_loss
from qwen_image_studio.training.lora import read_lora_file


@pytest.fixture(scope="module")
def edit(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo edit dataset (one control image per target), two per batch, cached for 2509/2511."""
    toml = ts.dataset_toml(demo, tmp_path_factory.mktemp("edit"), edit=True, batch_size=2)
    ts.cache(demo, toml, "edit-2509")
    return toml


@pytest.mark.parametrize(
    ("dit", "version"), [("dit_2509", "edit-2509"), ("dit_2511", "edit-2511"), ("dit_2509", "edit")]
)
def test_edit_models_train(demo: Path, edit: Path, tmp_path: Path, dit: str, version: str) -> None:
    argv = ts.train_argv(
        demo,
        edit,
        tmp_path,
        dit=dit,
        model_version=version,
        max_train_steps=4,
        gradient_checkpointing=True,
        no_gradient_checkpointing=None,
    )
    assert ts.train(argv) == 0, ts.failure(tmp_path / "events.jsonl")
    losses = ts.losses(tmp_path / "events.jsonl")
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    _, meta = read_lora_file(tmp_path / "lora.safetensors")
    assert meta["ss_model_version"] == version


class _Spy(torch.nn.Module):
    """Records the DiT call and answers 0 for target tokens, 1000 for the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []

    def forward(self, **kw: Any) -> tuple[torch.Tensor]:
        self.calls.append(kw)
        out = torch.full_like(kw["hidden_states"], 1000.0)
        n = kw["img_shapes"][0][0][1] * kw["img_shapes"][0][0][2]
        out[:, :n] = 0
        return (out,)


def test_controls_follow_the_noisy_target_clean_and_the_loss_sees_only_the_target(edit: Path) -> None:
    items = collect_items(StudioConfig(dataset_config=str(edit), model_version="edit-2509"))
    batch = collate([load_cached(i, True) for i in items[:1]])
    x0, control = batch["latents"], batch["controls"][0]
    _, _, _, h, w = x0.shape
    _, _, _, ch, cw = control.shape
    spy = _Spy()
    cfg = fm.TimestepConfig(sampling="uniform")
    loss, t = flow_matching_loss(
        spy, batch, cfg, torch.Generator().manual_seed(3), torch.device("cpu"), torch.float32
    )
    (call,) = spy.calls
    n_target, n_control = (h // 2) * (w // 2), (ch // 2) * (cw // 2)
    assert call["hidden_states"].shape == (1, n_target + n_control, 64)
    assert call["img_shapes"] == [[(1, h // 2, w // 2), (1, ch // 2, cw // 2)]]
    torch.testing.assert_close(call["hidden_states"][:, n_target:], fm.pack_latents(control))  # never noised
    assert call["timestep"].shape == (1,) and 0 <= float(call["timestep"][0]) <= 1
    g = torch.Generator().manual_seed(3)
    fm.sample_timesteps(cfg, 1, n_target, g)
    noise = torch.randn(x0.shape, generator=g)
    torch.testing.assert_close(
        call["hidden_states"][:, :n_target], fm.pack_latents(fm.noisy_latents(x0, noise, t))
    )
    # the prediction is cut to the target tokens: a zero prediction leaves only |noise - x0|^2
    torch.testing.assert_close(loss, ((noise - x0) ** 2).mean())


def test_2511_modulates_the_control_tokens_with_t_zero(demo: Path) -> None:
    from qwen_image_studio.models.loading import load_dit

    model = load_dit(ts.models(demo)["dit_2511"], dtype=torch.float32, model_version="edit-2511")
    assert model.config.zero_cond_t
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 32, 64, generator=g)
    text = torch.randn(1, 5, model.config.joint_attention_dim, generator=g)
    seen: list[torch.Tensor] = []
    model.transformer_blocks[0].img_mod.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    with torch.no_grad():
        model(
            hidden_states=hidden,
            encoder_hidden_states=text,
            timestep=torch.tensor([0.7]),
            img_shapes=[[(1, 4, 4), (1, 4, 4)]],
            return_dict=False,
        )
        x = model.img_in(hidden)
        temb_t = model.time_text_embed(torch.tensor([0.7]), x)
        temb_0 = model.time_text_embed(torch.tensor([0.0]), x)
    (temb,) = seen  # one row per timestep: the sample's t (target tokens) and t = 0 (control tokens)
    torch.testing.assert_close(temb, torch.cat([temb_t, temb_0]))
