"""--ema_decay: an exponential moving average of the LoRA weights, saved beside each LoRA file.

Checked on the demo models: decay 0 is the plain weights exactly; decay 0.5 equals the average computed
from the per-step files; a resumed run continues the same average; --ema_for_eval moves the validation
value to the EMA file; flags that need --ema_decay say so in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import train_support as ts
from safetensors import safe_open
from safetensors.torch import load_file

UP = ".lora_up.weight"


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _meta(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def test_decay_zero_is_the_plain_weights(demo: Path, t2i: Path, tmp_path: Path) -> None:
    assert ts.train(ts.train_argv(demo, t2i, tmp_path, ema_decay=0, ema_on_cpu=True)) == 0, ts.failure(
        tmp_path / "events.jsonl"
    )
    plain, ema = _tensors(tmp_path / "lora.safetensors"), _tensors(tmp_path / "lora-ema.safetensors")
    assert plain.keys() == ema.keys()
    assert all(torch.equal(plain[k], ema[k]) for k in plain)
    assert _meta(tmp_path / "lora-ema.safetensors")["qis_ema_decay"] == "0.0"
    events = ts.events_of(tmp_path / "events.jsonl")
    saved = [e for e in events if e["type"] == "artifact" and e["kind"] == "checkpoint"]
    assert [(Path(e["path"]).name, e.get("ema", False)) for e in saved] == [
        ("lora.safetensors", False),
        ("lora-ema.safetensors", True),
    ]


def test_decay_half_is_the_average_of_the_steps(demo: Path, t2i: Path, tmp_path: Path) -> None:
    """The up matrices start at zero, so after 3 steps the average is 0.125 p1 + 0.25 p2 + 0.5 p3."""
    argv = ts.train_argv(demo, t2i, tmp_path, ema_decay=0.5, save_every_n_steps=1, save_precision="float")
    assert ts.train(argv) == 0, ts.failure(tmp_path / "events.jsonl")
    p = [_tensors(tmp_path / f"lora-step{s:08d}.safetensors") for s in (1, 2, 3)]
    ema = _tensors(tmp_path / "lora-ema.safetensors")
    ups = [k for k in ema if k.endswith(UP)]
    assert ups
    for k in ups:
        want = 0.125 * p[0][k] + 0.25 * p[1][k] + 0.5 * p[2][k]
        torch.testing.assert_close(ema[k], want, rtol=1e-5, atol=1e-7)
    assert not torch.equal(ema[ups[0]], p[2][ups[0]])  # not the plain weights
    step1 = _tensors(tmp_path / "lora-step00000001-ema.safetensors")  # every save has its EMA file
    torch.testing.assert_close(step1[ups[0]], 0.5 * p[0][ups[0]], rtol=1e-5, atol=1e-7)


def test_a_resumed_run_continues_the_average(demo: Path, t2i: Path, tmp_path: Path) -> None:
    flags = {"max_train_steps": 4, "ema_decay": 0.7, "save_every_n_steps": 2, "save_state": True,
             "save_precision": "float"}  # fmt: skip
    full = tmp_path / "full"
    assert ts.train(ts.train_argv(demo, t2i, full, **flags)) == 0, ts.failure(full / "events.jsonl")
    state = full / "lora-step00000002-state"
    assert (state / "ema.safetensors").is_file()
    resumed = tmp_path / "resumed"
    assert ts.train(ts.train_argv(demo, t2i, resumed, resume=state, **flags)) == 0, ts.failure(
        resumed / "events.jsonl"
    )
    a, b = _tensors(full / "lora-ema.safetensors"), _tensors(resumed / "lora-ema.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-7)


def test_ema_for_eval_gives_the_validation_value_to_the_ema_file(
    demo: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from test_validation_loss import _cache_both, _validation_toml

    root = tmp_path_factory.mktemp("ema_validation")
    toml = ts.dataset_toml(demo, root / "train", edit=False)
    val = _validation_toml(root / "val", demo / "dataset" / "validation")
    _cache_both(demo, toml, val)
    flags = {"ema_decay": 0.0, "validation_dataset_config": val, "validation_timesteps": ["0.5"]}
    plain_dir, ema_dir = tmp_path / "plain", tmp_path / "ema"
    assert ts.train(ts.train_argv(demo, toml, plain_dir, **flags)) == 0, ts.failure(plain_dir / "events.jsonl")
    assert ts.train(ts.train_argv(demo, toml, ema_dir, ema_for_eval=True, **flags)) == 0, ts.failure(
        ema_dir / "events.jsonl"
    )
    key = "qis_validation_loss"
    value = _meta(plain_dir / "lora.safetensors")[key]
    assert key not in _meta(plain_dir / "lora-ema.safetensors")
    assert key not in _meta(ema_dir / "lora.safetensors")
    assert _meta(ema_dir / "lora-ema.safetensors")[key] == value  # decay 0: the same weights, the same value


@pytest.mark.parametrize("flag", ["ema_on_cpu", "ema_for_eval"])
def test_its_switches_need_a_decay(
    demo: Path, t2i: Path, tmp_path: Path, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ts.train(ts.train_argv(demo, t2i, tmp_path, **{flag: True})) == 2
    assert f"--{flag} needs --ema_decay" in capsys.readouterr().err


def test_the_decay_is_checked(demo: Path, t2i: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ts.train(ts.train_argv(demo, t2i, tmp_path, ema_decay=1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: --ema_decay") and json.dumps(err[-1])
