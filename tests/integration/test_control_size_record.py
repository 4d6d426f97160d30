"""An edit-mode text cache records the control size the text encoder saw (issue 13, item 3).

``--control_text_encoder_size`` (official or reference) decides the size a control image has when
Qwen2.5-VL encodes an edit caption, so an edit-mode text cache file records the choice in its metadata as
``control_vl_size``. The project's record rules apply (``data/cache_paths``): a record that disagrees with
the configured choice makes the file outdated, with a reason; a file without the record (the reference
trainer or an older version wrote it) is current; a caller that does not know the choice checks nothing.
Text-to-image files have no control image and carry no record.

Driven on the demo edit dataset (six targets with one control each) with the 2509 model, as a user would:
cache with the default, ask ``dataset inspect``, training's readiness check and ``--skip_existing`` with
the other size.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import train_support as ts
from safetensors import safe_open
from safetensors.torch import save_file

from qwen_image_studio.data.cache_paths import CONTROL_FINGERPRINT_KEY, CONTROL_VL_SIZE_KEY
from qwen_image_studio.data.config import load_dataset_config
from qwen_image_studio.data.inspect import inspect_dataset, run_inspect
from qwen_image_studio.data.items import discover_items
from qwen_image_studio.errors import DatasetError
from qwen_image_studio.params.schema import StudioConfig
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.stages.runner import main as run_stage
from qwen_image_studio.training.data import collect_items

VERSION = "edit-2509"


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


def _text_files(toml: Path) -> list[Path]:
    items = discover_items(load_dataset_config(toml).datasets[0], edit=True).items
    assert len(items) == 6
    return [i.text_cache_path for i in items]


def _cache_text(demo: Path, toml: Path, *flags: str) -> None:
    argv = ["--dataset_config", str(toml), "--model_version", VERSION, "--device", "cpu", *flags]
    assert run_stage(Stage.CACHE_TEXT, [*argv, "--text_encoder", str(ts.models(demo)["te"])]) == 0


def _why(recorded: str, now: str) -> str:
    return f"encoded with --control_text_encoder_size {recorded} (now {now})"


@pytest.fixture()
def edit_cached(demo: Path, tmp_path: Path) -> Path:
    """The demo edit dataset with both caches written with the default options."""
    toml = ts.dataset_toml(demo, tmp_path, edit=True, batch_size=2)
    ts.cache(demo, toml, VERSION)
    return toml


def test_edit_text_caches_record_the_size_and_text_to_image_ones_do_not(edit_cached: Path, t2i: Path) -> None:
    for path in _text_files(edit_cached):
        meta = _read(path)[1]
        assert meta[CONTROL_VL_SIZE_KEY] == "official"
        assert CONTROL_FINGERPRINT_KEY in meta
    for path in sorted((edit_cached.parent / "cache").glob("*_qie.safetensors")):  # latent files
        assert CONTROL_VL_SIZE_KEY not in _read(path)[1]
    t2i_text = sorted((t2i.parent / "cache").glob("*_qi_te.safetensors"))
    assert len(t2i_text) == 6
    assert all(CONTROL_VL_SIZE_KEY not in _read(p)[1] for p in t2i_text)
    # text-to-image: the option has nothing to check (no control image)
    config = StudioConfig(dataset_config=str(t2i), control_text_encoder_size="reference")
    assert len(collect_items(config)) == 6


def test_a_size_record_that_disagrees_is_outdated_and_re_encoded(
    demo: Path, edit_cached: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = edit_cached
    files = _text_files(toml)

    # callers that know the size compare it; one that does not (no option given) checks nothing
    assert inspect_dataset(toml, edit=True).problems == []
    assert inspect_dataset(toml, edit=True, control_text_encoder_size="official").problems == []
    report = inspect_dataset(toml, edit=True, control_text_encoder_size="reference")
    (s,) = report.datasets
    assert s.latent_cache.outdated == []
    assert s.text_cache.reasons == {str(p): _why("official", "reference") for p in files}
    (problem,) = report.problems
    assert "6 text-encoder cache file(s)" in problem and _why("official", "reference") in problem

    # the command line says the same (--json), and refuses a size it does not know in one usage line
    capsys.readouterr()
    argv = [str(toml), "--edit", "--json", "--control_text_encoder_size", "reference"]
    assert run_inspect(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["datasets"][0]["text_cache"]["reasons"] == s.text_cache.reasons
    assert run_inspect([str(toml), "--edit", "--control_text_encoder_size", "huge"]) == 2
    assert "--control_text_encoder_size" in capsys.readouterr().err

    # training with the other size refuses the caches and names the command that makes them again
    assert len(collect_items(StudioConfig(dataset_config=str(toml), model_version=VERSION))) == 6
    config = StudioConfig(
        dataset_config=str(toml), model_version=VERSION, control_text_encoder_size="reference"
    )
    with pytest.raises(DatasetError) as refused:
        collect_items(config)
    message = str(refused.value)
    assert "6 of 6 text-encoder caches are missing or outdated" in message
    assert _why("official", "reference") in message
    assert (
        f"run qwen_image_cache_text_encoder_outputs.py --dataset_config {toml} --model_version {VERSION} "
        "--control_text_encoder_size reference --text_encoder ..."
    ) in message
    assert "latent caches" not in message

    # a file without the record (the reference trainer or an older version wrote it) is current
    kept = files[2]
    tensors, meta = _read(kept)
    del meta[CONTROL_VL_SIZE_KEY]
    save_file(tensors, str(kept), metadata=meta)
    (s,) = inspect_dataset(toml, edit=True, control_text_encoder_size="reference").datasets
    assert str(kept) not in s.text_cache.outdated and len(s.text_cache.outdated) == 5

    # --skip_existing re-encodes exactly the five outdated files, at the reference size
    before = {p: (p.read_bytes(), _read(p)[0]) for p in files}
    capsys.readouterr()
    _cache_text(demo, toml, "--skip_existing", "--control_text_encoder_size", "reference")
    log = capsys.readouterr().err
    assert "5 item(s) left to encode (0 missing, 5 outdated)" in log
    assert f"encoding {files[0].name} again: {_why('official', 'reference')}" in log
    assert kept.read_bytes() == before[kept][0], "the file without the record is left as it is"
    changed = [p for p in files if p != kept]
    for path in changed:
        assert path.read_bytes() != before[path][0]
        assert _read(path)[1][CONTROL_VL_SIZE_KEY] == "reference"
    # the control images really reached the text encoder at another size: some embeddings differ
    differs = []
    for path in changed:
        (old,), (new,) = before[path][1].values(), _read(path)[0].values()
        differs.append(old.shape != new.shape or not torch.equal(old, new))
    assert any(differs)

    # now current for reference (the record-less file too), and outdated for the default
    assert inspect_dataset(toml, edit=True, control_text_encoder_size="reference").problems == []
    assert len(collect_items(config)) == 6
    (s,) = inspect_dataset(toml, edit=True, control_text_encoder_size="official").datasets
    assert s.text_cache.reasons == {str(p): _why("reference", "official") for p in changed}
    capsys.readouterr()
    _cache_text(demo, toml, "--skip_existing", "--control_text_encoder_size", "reference")
    assert "0 item(s) left to encode (0 missing, 0 outdated)" in capsys.readouterr().err


def test_the_web_uis_dataset_report_checks_the_forms_size(edit_cached: Path, tmp_path: Path) -> None:
    """The Dataset tab sends the form's values; its report then lists text caches made at the other size."""
    from qwen_image_studio.webui.app import create_app

    client = create_app(tmp_path / "ws").test_client()
    headers = {"Origin": "http://localhost"}

    def text_outdated(params: object) -> list[str]:
        body = {"path": str(edit_cached), "edit": True, "params": params}
        res = client.post("/api/dataset/inspect", json=body, headers=headers)
        assert res.status_code == 200, res.get_json()
        return res.get_json()["report"]["datasets"][0]["text_cache"]["outdated"]

    files = {str(p) for p in _text_files(edit_cached)}
    assert set(text_outdated({"control_text_encoder_size": "reference"})) == files
    assert text_outdated({"control_text_encoder_size": "official"}) == []
    assert text_outdated({}) == [] and text_outdated(None) == []  # the default, or no form values
    assert text_outdated({"control_text_encoder_size": "huge"}) == []  # a bad value counts as the default
