"""The parameter schema and everything derived from it: parsers, argv, JSON Schema, configuration files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_image_studio.errors import ConfigError
from qwen_image_studio.params.cli import build_parser, parse_args, read_config_file, to_argv
from qwen_image_studio.params.config_files import document, from_document, load_config, save_config
from qwen_image_studio.params.fields import all_fields, fields_for
from qwen_image_studio.params.json_schema import form_schema
from qwen_image_studio.params.schema import StudioConfig
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.params.validate import ConfigProblems, check_for_stage, validate_config

ROOT = Path(__file__).resolve().parents[2]

# Every parameter the seed document names, with the command whose --help must list it.
SEED_TRAIN_FLAGS = [
    "dit",
    "vae",
    "text_encoder",
    "dataset_config",
    "output_dir",
    "output_name",
    "logging_dir",
    "log_with",
    "mixed_precision",
    "timestep_sampling",
    "weighting_scheme",
    "discrete_flow_shift",
    "optimizer_type",
    "learning_rate",
    "network_module",
    "network_dim",
    "network_args",
    "max_train_epochs",
    "save_every_n_epochs",
    "seed",
    "sdpa",
    "gradient_checkpointing",
    "persistent_data_loader_workers",
    "fp8_base",
    "fp8_scaled",
    "fp8_vl",
    "blocks_to_swap",
    "model_version",
]
REFERENCE_TRAINER_FLAGS = [
    "network_alpha",
    "network_dropout",
    "network_weights",
    "lr_scheduler",
    "lr_warmup_steps",
    "gradient_accumulation_steps",
    "max_train_steps",
    "save_every_n_steps",
    "save_state",
    "resume",
    "save_precision",
    "max_grad_norm",
    "optimizer_args",
    "sample_prompts",
    "sample_every_n_epochs",
    "sample_every_n_steps",
    "sample_at_first",
    "min_timestep",
    "max_timestep",
    "sigmoid_scale",
    "logit_mean",
    "logit_std",
]
SEED_CACHE_TEXT_FLAGS = [
    "dataset_config",
    "text_encoder",
    "batch_size",
    "fp8_vl",
    "edit",
    "skip_existing",
    "keep_cache",
    "model_version",
]
SEED_CACHE_LATENT_FLAGS = ["dataset_config", "vae", "batch_size", "skip_existing", "keep_cache", "device"]


def _script(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / name), *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_train_help_lists_every_seed_parameter_with_default_and_range() -> None:
    out = _script("qwen_image_train_network.py", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for flag in SEED_TRAIN_FLAGS + REFERENCE_TRAINER_FLAGS:
        assert f"--{flag}" in text, flag
    assert (
        "--discrete_flow_shift FLOAT" in text
        and "default: 2.2; allowed: above 0; recommended: 1.0 to 5.0" in text
    )
    assert (
        "default: adamw8bit; allowed: adamw, adamw8bit, lion, sgd, adafactor or a module.Class path" in text
    )
    assert "default: 5e-05; allowed: above 0; recommended: 1e-06 to 0.001" in text
    assert "default: 8; allowed: at least 1; recommended: 1 to 100" in text  # max_train_epochs
    assert "default: 42; allowed: 0 to 2147483647" in text
    assert "default: loraplus_lr_ratio=4" in text
    assert "离散流偏移参数" in text  # Chinese help text too


@pytest.mark.parametrize(
    ("script", "flags"),
    [
        ("qwen_image_cache_text_encoder_outputs.py", SEED_CACHE_TEXT_FLAGS),
        ("qwen_image_cache_latents.py", SEED_CACHE_LATENT_FLAGS),
    ],
)
def test_cache_commands_take_their_seed_flags(script: str, flags: list[str]) -> None:
    out = _script(script, "--help")
    assert out.returncode == 0
    for flag in flags:
        assert f"--{flag}" in out.stdout, flag
    assert "--learning_rate" not in out.stdout  # training-only flags stay off the cache commands


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--discrete_flow_shift", "0"], "--discrete_flow_shift: 0 is out of range; allowed above 0"),
        (["--mode_scale", "11"], "--mode_scale: 11 is out of range; allowed 0 to 10.0"),
        (
            ["--optimizer_type", "foo"],
            "--optimizer_type: must be one of adamw, adamw8bit, lion, sgd, adafactor",
        ),
        (["--fp8_scaled"], "--fp8_scaled needs --fp8_base"),
        (
            ["--mixed_precision", "fp32"],
            "--mixed_precision: 'fp32' is not allowed; choose one of no, fp16, bf16",
        ),
        (["--blocks_to_swap", "60"], "--blocks_to_swap: 60 is out of range; allowed 0 to 59"),
        (["--learning_rate", "-1"], "--learning_rate: -1 is out of range; allowed above 0"),
        (["--seed", "abc"], "--seed: abc is not a whole number"),
        (["--network_args", "loraplus_lr_ratio=x"], "--network_args: loraplus_lr_ratio must be a number"),
        (
            ["--save_every_n_epochs", "9", "--max_train_epochs", "3"],
            "--save_every_n_epochs (9) must be at most --max_train_epochs (3)",
        ),
        (["--sample_every_n_steps", "10"], "need --sample_prompts"),
        (["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    ],
)
def test_invalid_values_exit_nonzero_with_one_line(args: list[str], expected: str) -> None:
    out = _script("qwen_image_train_network.py", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


def test_missing_dit_names_flag_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "qwen_image_bf16.safetensors"
    out = _script("qwen_image_train_network.py", "--dit", str(missing))
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()
    assert len(line) == 1 and line[0].startswith(f"error: --dit: not found: {missing}")


def test_stage_check_reports_required_and_paths(tmp_path: Path) -> None:
    cfg = validate_config({"dit": str(tmp_path / "x.safetensors"), "dataset_config": str(tmp_path)})
    with pytest.raises(ConfigProblems) as err:
        check_for_stage(cfg, Stage.TRAIN)
    fields = [p.field for p in err.value.problems]
    assert fields[:2] == ["dit", "dataset_config"]  # bad paths first
    assert "--dataset_config: " in str(err.value) and "is a folder; a file is expected" in str(err.value)
    assert {"vae", "text_encoder", "output_dir", "output_name"} <= set(fields)


def test_defaults_are_the_seed_recommendations() -> None:
    c = StudioConfig()
    assert (c.mixed_precision, c.timestep_sampling, c.weighting_scheme) == ("bf16", "shift", "none")
    assert (c.discrete_flow_shift, c.optimizer_type, c.learning_rate) == (2.2, "adamw8bit", 5e-5)
    assert (c.network_module, c.network_dim, c.network_args) == (
        "networks.lora_qwen_image",
        8,
        ["loraplus_lr_ratio=4"],
    )
    assert (c.max_train_epochs, c.save_every_n_epochs, c.seed) == (8, 1, 42)
    assert c.sdpa and c.gradient_checkpointing and c.persistent_data_loader_workers
    assert (c.logging_dir, c.log_with) == ("./logs", "tensorboard")


def test_legacy_edit_flags_select_model_version() -> None:
    cfg, _ = parse_args(Stage.CACHE_TEXT, ["--edit"])
    assert cfg.model_version == "edit" and cfg.is_edit
    cfg, _ = parse_args(Stage.CACHE_TEXT, ["--edit_plus"])
    assert cfg.model_version == "edit-2509"
    cfg, _ = parse_args(Stage.TRAIN, ["--model_version", "edit-2511"])
    assert cfg.model_version == "edit-2511"


def test_no_flag_turns_a_default_on_option_off() -> None:
    cfg, _ = parse_args(Stage.TRAIN, ["--no_gradient_checkpointing", "--no_sdpa"])
    assert not cfg.gradient_checkpointing and not cfg.sdpa


def test_config_file_toml_then_command_line_wins(tmp_path: Path) -> None:
    toml = tmp_path / "args.toml"
    toml.write_text(
        '[model]\ndit = "a.safetensors"\nnetwork_dim = 16\n[train]\nlearning_rate = 1e-4\n'
        'network_args = ["loraplus_lr_ratio=2"]\nedit = true\n',
        encoding="utf-8",
    )
    cfg, _ = parse_args(Stage.TRAIN, ["--config_file", str(toml), "--network_dim", "32"])
    assert cfg.dit == "a.safetensors" and cfg.network_dim == 32 and cfg.learning_rate == 1e-4
    assert cfg.network_args == ["loraplus_lr_ratio=2"] and cfg.model_version == "edit"
    toml.write_text("bogus_key = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown parameter 'bogus_key'"):
        read_config_file(toml, Stage.TRAIN)


ROUND_TRIP = {
    "dit": "/m/dit.safetensors",
    "vae": "/m/vae",
    "text_encoder": "/m/te.safetensors",
    "dataset_config": "/d/ds.toml",
    "output_dir": "/o",
    "output_name": "my lora",
    "model_version": "edit-2509",
    "learning_rate": 1e-4,
    "network_dim": 16,
    "network_alpha": 8.0,
    "network_dropout": 0.1,
    "network_args": ["loraplus_lr_ratio=4", "exclude_patterns=.*mod.*"],
    "optimizer_args": ["weight_decay=0.01"],
    "optimizer_type": "torch.optim.AdamW",
    "fp8_base": True,
    "fp8_scaled": True,
    "blocks_to_swap": 16,
    "sdpa": False,
    "max_train_steps": 100,
    "lr_warmup_steps": 0.1,
    "sample_prompts": "/p.txt",
    "sample_every_n_steps": 50,
    "cache_batch_size": 4,
    "skip_existing": True,
    "device": "cuda:1",
}


@pytest.mark.parametrize("stage", list(Stage))
def test_argv_round_trip_per_stage(stage: Stage) -> None:
    cfg = validate_config(ROUND_TRIP)
    back, _ = parse_args(stage, to_argv(cfg, stage))
    for spec in fields_for(stage):
        assert getattr(back, spec.name) == getattr(cfg, spec.name), spec.name


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 256),
    shift=st.floats(1.0, 5.0),
    lr=st.floats(1e-6, 1e-3),
    swap=st.integers(0, 59),
    epochs=st.integers(1, 100),
    seed=st.integers(0, 2147483647),
    accum=st.integers(1, 1024),
)
def test_argv_round_trip_property(
    dim: int, shift: float, lr: float, swap: int, epochs: int, seed: int, accum: int
) -> None:
    cfg = validate_config(
        {
            "network_dim": dim,
            "discrete_flow_shift": shift,
            "learning_rate": lr,
            "blocks_to_swap": swap,
            "max_train_epochs": epochs,
            "save_every_n_epochs": 1,
            "seed": seed,
            "gradient_accumulation_steps": accum,
        }
    )
    back, _ = parse_args(Stage.TRAIN, to_argv(cfg, Stage.TRAIN))
    assert back == cfg


def test_saved_configuration_loads_back_identical(tmp_path: Path) -> None:
    cfg = validate_config(ROUND_TRIP)
    path = save_config(cfg, tmp_path / "configs" / "a.json", name="A")
    assert load_config(path) == cfg
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == "qwen-image-studio-config" and doc["version"] == 2 and doc["name"] == "A"
    assert not list(path.parent.glob(".a.json.*"))  # no temp files left behind


def test_version_1_seed_webui_json_is_upgraded(tmp_path: Path) -> None:
    old = {
        "dit_path": "/m/qwen_image_bf16.safetensors",
        "vae_path": "/m/vae.safetensors",
        "text_encoder_path": "/m/te.safetensors",
        "dataset_config": "/d.toml",
        "network_dim": 16,
        "network_args": "loraplus_lr_ratio=4",
        "edit_mode": True,
        "fp8_base": True,
        "output_name": "x",
        "network_dropout": "",
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    cfg = load_config(path)
    assert cfg.dit == old["dit_path"] and cfg.text_encoder == old["text_encoder_path"]
    assert cfg.model_version == "edit" and cfg.network_args == ["loraplus_lr_ratio=4"]
    assert cfg.network_dropout is None


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1, 2], "expected a JSON object"),
        ({"format": "qwen-image-studio-config", "version": 99, "params": {}}, "version 99 is not supported"),
        (
            {"format": "qwen-image-studio-config", "version": 2, "params": {"network_dim": 0}},
            "--network_dim: 0 is out of range; allowed at least 1",
        ),
        ({"mystery": 1}, "unknown parameter(s) in the configuration: mystery"),
    ],
)
def test_bad_configuration_documents(doc: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_document(doc)
    assert message in str(err.value)


def test_bad_json_file_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config(bad)


def test_json_schema_carries_the_ui_metadata() -> None:
    schema = form_schema()
    props = schema["properties"]
    assert set(props) == set(all_fields())
    for name, prop in props.items():
        assert prop["x-group"] in schema["x-groups"], name
        assert prop["x-flag"].startswith("--") and prop["x-help-zh"] and prop["description"], name
    assert props["mode_scale"]["minimum"] == 0.0 and props["mode_scale"]["maximum"] == 10.0
    assert (
        props["discrete_flow_shift"]["exclusiveMinimum"] == 0.0
        and "maximum" not in props["discrete_flow_shift"]
    )
    assert props["discrete_flow_shift"]["x-recommended"] == [1.0, 5.0]  # shown, and warned about outside
    assert props["mixed_precision"]["enum"] == ["no", "fp16", "bf16"]
    assert props["cache_batch_size"]["x-flag"] == "--batch_size"
    assert props["dit"]["x-required-for"] == ["train_network", "generate"]
    json.dumps(schema)  # serialisable as is


def test_every_parser_builds_and_document_is_json() -> None:
    for stage in Stage:
        assert build_parser(stage).format_help()
    json.dumps(document(StudioConfig()))


def test_readme_cli_reference_is_generated_from_the_schema() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from update_readme import render

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render(readme) == readme, "run python scripts/update_readme.py"


def test_edit_model_version_needs_control_images_in_the_dataset(tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 64)).save(images / "one.png")
    (images / "one.txt").write_text("a black square", encoding="utf-8")
    toml = tmp_path / "ds.toml"
    toml.write_text(
        f'[general]\nresolution = [64, 64]\n[[datasets]]\nimage_directory = "{images}"\n'
        f'cache_directory = "{tmp_path / "cache"}"\n',
        encoding="utf-8",
    )
    cfg = validate_config({"dataset_config": str(toml), "vae": str(toml), "model_version": "edit-2509"})
    with pytest.raises(
        ConfigProblems, match=r"--model_version edit-2509 needs control images: datasets\[0\]"
    ):
        check_for_stage(cfg, Stage.CACHE_LATENTS)
    check_for_stage(cfg.model_copy(update={"model_version": "original"}), Stage.CACHE_LATENTS)
