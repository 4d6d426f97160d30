"""Validation with messages that name the flag and what is allowed.

Two levels: `validate_config` checks values and cross-field rules (always); `check_for_stage`
adds what a command needs to run (required parameters present, input paths existing).

Every message is structured: a `Message` is a key of the message table plus its variables, rendered
per language. `MESSAGES` below holds the English templates (what the CLI prints); the web UI adds the
Chinese ones to its translation table under the same keys and renders `Problem.i18n` in the page's
language. Variables are plain strings (flags, values, paths, numbers as written), nested messages
(e.g. the allowed-values text) or a `Join` of items.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError
from .fields import FieldSpec, _num, all_fields, fields_for
from .rules import RULES
from .schema import FIELDS_ONLY, StudioConfig
from .spec import Stage

# English templates, one per message key: {name} placeholders only (the page fills them the same way).
MESSAGES: dict[str, str] = {
    # one value
    "v.range": "{flag}: {value} is out of range; allowed {allowed}",
    "v.choice": "{flag}: {value} is not allowed; choose one of {allowed}",
    "v.not_int": "{flag}: {value} is not a whole number",
    "v.not_number": "{flag}: {value} is not a number",
    "v.empty_number": "{flag}: a number is needed",
    "v.not_bool": "{flag}: {value} is not true or false",
    "v.with_allowed": "{problem}; allowed {allowed}",
    "v.pattern": "{flag}: {value} is not a valid value",
    "v.string_type": "{flag}: Input should be a valid string",
    "v.list_type": "{flag}: Input should be a valid list",
    "v.string_too_long": "{flag}: String should have at most {max_length} characters",
    "v.unknown": "unknown parameter {name}",
    "v.detail": "{flag}: {detail}",
    "v.text": "{text}",
    "v.problems": "{problems}",  # several problems, joined
    # what a stage needs
    "v.required": "{flag} is required",
    "v.caption_input": "{flag} is required (the dataset TOML whose images to caption), or --image_dir",
    "v.caption_model": "{flag} is required (the Qwen2.5-VL file), or --text_encoder (the same file)",
    "v.not_found": "{flag}: not found: {path}",
    "v.inside_file": "{flag}: {path} is inside a file, not a folder",
    "v.is_folder": "{flag}: {path} is a folder; a file is expected",
    "v.is_file": "{flag}: {path} is a file; a folder is expected",
    "v.needs_control": "{flag} {version} needs control images: {dataset} of {path} has no control_directory",
    "v.no_usable": "{flag}: {path} has no usable images: {detail}",
    # a value that works but lies outside the parameter's recommended range (a warning, not a problem)
    "v.outside_recommended": "{flag} {value} is outside the recommended range {low} to {high}",
    # allowed values (the same text as FieldSpec.allowed(); a test keeps them equal)
    "allowed.range": "{low} to {high}",
    "allowed.range_gt": "above {low} to {high}",
    "allowed.range_lt": "{low} to below {high}",
    "allowed.range_gt_lt": "above {low} to below {high}",
    "allowed.min": "at least {low}",
    "allowed.min_gt": "above {low}",
    "allowed.max": "at most {high}",
    "allowed.max_lt": "below {high}",
    "allowed.or_class": "{choices} or a module.Class path",
    # separators of joined items
    "sep.list": ", ",
    "sep.semi": "; ",
}

MESSAGES.update(RULES)

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def register_messages(table: Mapping[str, str]) -> None:
    """Add the English templates of another area (the web UI's) so that `Message.render()` knows them."""
    clash = {k for k in table if k in MESSAGES and MESSAGES[k] != table[k]}
    if clash:
        raise ValueError(f"message keys defined twice: {sorted(clash)}")
    MESSAGES.update(table)


@dataclass(frozen=True)
class Join:
    """Items shown one after the other, separated by the message table's `sep` entry."""

    items: tuple[Any, ...]
    sep: str = "sep.list"

    def as_json(self) -> dict[str, Any]:
        """The form the page renders: {"join": [...], "sep": key}."""
        return {"join": [_var_json(i) for i in self.items], "sep": self.sep}


@dataclass(frozen=True)
class Message:
    """A message as a key of the message table plus its variables; `render` fills in a language's template."""

    key: str
    vars: Mapping[str, Any] = dc_field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vars", {k: _var(v) for k, v in self.vars.items()})

    def render(self, *tables: Mapping[str, str]) -> str:
        """The text in the first table that has the key (English when none has it)."""
        template = _lookup(self.key, tables)
        return _PLACEHOLDER.sub(
            lambda m: _text(self.vars[m.group(1)], tables) if m.group(1) in self.vars else m.group(0),
            template,
        )

    def as_json(self) -> dict[str, Any]:
        """The form the page renders: {"key": ..., "vars": {...}} (nested messages in the same form)."""
        return {"key": self.key, "vars": {k: _var_json(v) for k, v in self.vars.items()}}

    @classmethod
    def from_json(cls, data: Any) -> Message | None:
        """The message `as_json` wrote (None when `data` is not one)."""
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            return None
        raw = data.get("vars")
        return cls(
            data["key"], {k: _var_from_json(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        )

    def __str__(self) -> str:
        return self.render()


def _var(value: Any) -> Any:
    return value if isinstance(value, Message | Join) else str(value)


def _var_json(value: Any) -> Any:
    return value.as_json() if isinstance(value, Message | Join) else value


def _var_from_json(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("join"), list):
        return Join(tuple(_var_from_json(v) for v in value["join"]), str(value.get("sep") or "sep.list"))
    if isinstance(value, dict):
        return Message.from_json(value) or str(value)
    return str(value)


def _lookup(key: str, tables: Iterable[Mapping[str, str]]) -> str:
    for table in tables:
        if key in table:
            return table[key]
    return MESSAGES.get(key, key)


def _text(value: Any, tables: tuple[Mapping[str, str], ...]) -> str:
    if isinstance(value, Message):
        return value.render(*tables)
    if isinstance(value, Join):
        return _lookup(value.sep, tables).join(_text(item, tables) for item in value.items)
    return str(value)


@dataclass(frozen=True)
class Problem:
    """One invalid parameter: the field (or '' for a rule over several), a one-line English message and,
    when known, the same message structured (`i18n`) for other languages."""

    field: str
    message: str
    i18n: Message | None = dc_field(default=None, compare=False)

    @classmethod
    def of(cls, field: str, msg: Message) -> Problem:
        """A problem whose English message is `msg` rendered."""
        return cls(field, msg.render(), msg)


class ConfigProblems(ConfigError):
    """Validation failed; `problems` lists each one (the message is the first, or all joined)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))

    @property
    def i18n(self) -> Message:
        """All the problems as one message (joined as the English one is)."""
        return problems_message(self.problems)


def problems_message(problems: list[Problem]) -> Message:
    """Problems as one message: theirs when there is one, else all of them joined with "; "."""
    items = tuple(p.i18n or Message("v.text", {"text": p.message}) for p in problems)
    return items[0] if len(items) == 1 else Message("v.problems", {"problems": Join(items, "sep.semi")})


class MessageError(ConfigError):
    """A ConfigError worded as a Message (the CLI prints it in English, the web UI in the page's language)."""

    def __init__(self, msg: Message) -> None:
        self.i18n = msg
        super().__init__(msg.render())


class _Raw(str):
    """A command-line number shown as typed (no quotes)."""

    def __repr__(self) -> str:
        return str(self)


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def allowed_message(spec: FieldSpec) -> Message | str:
    """The allowed values of a field as a message (the same English text as `spec.allowed()`)."""
    if spec.choices:
        text = ", ".join(spec.choices)
        return Message("allowed.or_class", {"choices": text}) if spec.name == "optimizer_type" else text
    low, high, low_inc, high_inc = spec.bounds()
    if low is None and high is None:
        return ""
    if low is not None and high is not None:
        key = "allowed.range" + ("" if low_inc else "_gt") + ("" if high_inc else "_lt")
    elif low is not None:
        key = "allowed.min" if low_inc else "allowed.min_gt"
    else:
        key = "allowed.max" if high_inc else "allowed.max_lt"
    bounds = {name: _num(v) for name, v in (("low", low), ("high", high)) if v is not None}
    return Message(key, bounds)


# Pydantic errors with a message of their own (used while pydantic words them as MESSAGES does).
_PYDANTIC = frozenset({"string_type", "list_type", "string_too_long"})


def _rule(raw: str, typ: str, ctx: Mapping[str, Any]) -> Message:
    """A rule's message: its own key (every rule raises `rule_error`), else pydantic's text as it is."""
    if typ in RULES:
        return Message(typ, ctx)
    return Message("v.text", {"text": raw})


def _message(err: dict[str, Any]) -> Problem:
    """Turn one pydantic error into a Problem naming the flag and the allowed values."""
    loc = err.get("loc") or ()
    name = str(loc[0]) if loc else ""
    spec = all_fields().get(name)
    raw = err.get("msg", "invalid value")
    if raw.startswith("Value error, "):
        raw = raw[len("Value error, ") :]
    typ = err.get("type", "")
    ctx = err.get("ctx") or {}
    if spec is None:
        if typ == "extra_forbidden":
            return Problem.of(name, Message("v.unknown", {"name": repr(name)}))
        return Problem.of("", _rule(raw, typ, ctx))
    value = err.get("input")
    if spec.kind in ("int", "float") and isinstance(value, str):
        value = _Raw(value)
    allowed = allowed_message(spec)
    said = {"flag": spec.flag, "value": _describe(value)}
    if typ in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"} and allowed:
        msg = Message("v.range", {**said, "allowed": allowed})
    elif typ == "literal_error":
        msg = Message("v.choice", {**said, "allowed": allowed})
    elif typ.startswith(("int_", "float_")) and isinstance(value, _Raw) and not str(value).strip():
        msg = Message("v.empty_number", {"flag": spec.flag})  # the form's wording for an empty box
    elif typ.startswith(("int_", "float_", "bool_")):
        key = {"int": "v.not_int", "float": "v.not_number", "bool": "v.not_bool"}[typ.split("_")[0]]
        msg = Message(key, said)
        if allowed:
            msg = Message("v.with_allowed", {"problem": msg, "allowed": allowed})
    elif typ == "string_pattern_mismatch":
        msg = Message("v.pattern", said)
    elif (
        typ in _PYDANTIC and Message(f"v.{typ}", {"flag": spec.flag, **ctx}).render() == f"{spec.flag}: {raw}"
    ):
        msg = Message(f"v.{typ}", {"flag": spec.flag, **ctx})  # pydantic's own wording, as it reads today
    else:
        rule = _rule(raw, typ, ctx)
        msg = rule if raw.startswith("--") else Message("v.detail", {"flag": spec.flag, "detail": rule})
    return Problem.of(name, msg)


def validate_config(data: dict[str, Any]) -> StudioConfig:
    """Build a StudioConfig from plain values, raising ConfigProblems with flag-named messages."""
    try:
        return StudioConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigProblems([_message(e) for e in exc.errors()]) from None


def lenient_config(data: Mapping[str, Any]) -> StudioConfig:
    """The configuration of the values that pass their own field's rules; any other value (and an unknown
    name) takes the schema default, and cross-field rules are not applied. For estimates made while a form
    is being edited, where one bad value must not hide what the others say."""
    values = dict(data)
    while True:
        try:
            return StudioConfig.model_validate(values, context={FIELDS_ONLY: True})
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e.get("loc")} & values.keys()
            if not bad:
                raise
            values = {k: v for k, v in values.items() if k not in bad}


def problems_of(data: dict[str, Any]) -> list[Problem]:
    """All problems of a set of values (empty when valid); the web form shows them per field."""
    try:
        validate_config(data)
    except ConfigProblems as exc:
        return exc.problems
    return []


def recommendation_warnings(config: StudioConfig, stage: Stage | None = None) -> list[Problem]:
    """The values of `config` (those `stage` reads) outside their parameter's recommended range: they are
    accepted, and the CLI and the form say so."""
    out = []
    for spec in fields_for(stage) if stage else all_fields().values():
        rec = spec.meta.recommended
        value = getattr(config, spec.name)
        if rec and value is not None and not rec[0] <= value <= rec[1]:
            said = {"flag": spec.flag, "value": _num(value), "low": _num(rec[0]), "high": _num(rec[1])}
            out.append(Problem.of(spec.name, Message("v.outside_recommended", said)))
    return out


def _path_problem(flag: str, kind: str, value: str) -> Message | None:
    path = Path(value).expanduser()
    if kind == "out_file" and path.is_dir():
        return Message("v.is_folder", {"flag": flag, "path": path})
    if kind in ("out_dir", "out_file"):
        start = path.parent if kind == "out_file" else path
        parent = next((p for p in [start, *start.parents] if p.exists()), None)
        if parent is not None and not parent.is_dir():
            return Message("v.inside_file", {"flag": flag, "path": value})
        return None
    if not path.exists():
        return Message("v.not_found", {"flag": flag, "path": path})
    if kind == "file" and not path.is_file():
        return Message("v.is_folder", {"flag": flag, "path": path})
    if kind == "dir" and not path.is_dir():
        return Message("v.is_file", {"flag": flag, "path": path})
    return None


def stage_problems(config: StudioConfig, stage: Stage) -> list[Problem]:
    """What stops a stage from running: missing required parameters, input paths that do not exist, and
    what the stage would reject when it reads its inputs (dataset TOML, images, captions, control images,
    prompt files), each naming the file (and line)."""
    missing: list[Problem] = []
    bad_paths: list[Problem] = []
    for spec in fields_for(stage):
        value = getattr(config, spec.name, None)
        if stage in spec.meta.required_for and value in (None, ""):
            missing.append(Problem.of(spec.name, Message("v.required", {"flag": spec.flag})))
        elif spec.meta.path and value:
            for one in value if isinstance(value, list) else [value]:  # e.g. several --lora_weight files
                msg = _path_problem(spec.flag, spec.meta.path, one)
                if msg:
                    bad_paths.append(Problem.of(spec.name, msg))
    if not bad_paths:
        bad_paths += input_problems(config, stage)
    return bad_paths + missing


def input_problems(config: StudioConfig, stage: Stage) -> list[Problem]:
    """What the stage would reject in the files it reads (the paths themselves exist)."""
    found: list[Problem] = []
    if stage not in (Stage.GENERATE, Stage.CAPTION) and config.dataset_config:  # captioning: captions may
        found += _dataset_problems(config)  # be missing; its stage reads the TOML itself
    if stage not in (Stage.GENERATE, Stage.CAPTION) and config.validation_dataset_config:
        found += _dataset_problems(config, "validation_dataset_config")
    prompts = _prompt_problem(config, stage)
    if prompts is not None:
        found.append(prompts)
    if stage == Stage.CAPTION and not (config.caption_model or config.text_encoder):
        flag = all_fields()["caption_model"].flag
        found.append(Problem.of("caption_model", Message("v.caption_model", {"flag": flag})))
    if stage == Stage.CAPTION and not (config.dataset_config or config.image_dir):
        flag = all_fields()["dataset_config"].flag
        found.append(Problem.of("dataset_config", Message("v.caption_input", {"flag": flag})))
    return found


def _dataset_problems(config: StudioConfig, name: str = "dataset_config") -> list[Problem]:
    """The dataset TOML (`name`: the training or the validation one) as the stages load it; edit versions
    need control images; some image must be usable."""
    from ..data.config import load_dataset_config
    from ..data.items import discover_items
    from ..data.validation_config import load_validation_config
    from ..errors import DatasetError

    fields = all_fields()
    flag, path = fields[name].flag, getattr(config, name)
    try:
        if name == "dataset_config":
            datasets = load_dataset_config(path).datasets
        else:  # also: its caches may not lie in a training dataset's cache_directory
            datasets = load_validation_config(config).datasets
    except DatasetError as exc:
        return [Problem.of(name, Message("v.detail", {"flag": flag, "detail": exc}))]
    if config.is_edit:
        no_control = [
            Problem.of(
                name,
                Message(
                    "v.needs_control",
                    {
                        "flag": fields["model_version"].flag,
                        "version": config.model_version,
                        "dataset": ds.label,
                        "path": path,
                    },
                ),
            )
            for ds in datasets
            if ds.image_directory is not None and ds.control_directory is None
        ]
        if no_control:
            return no_control
    try:
        results = [discover_items(ds, edit=config.is_edit) for ds in datasets]
    except (DatasetError, OSError) as exc:
        return [Problem.of(name, Message("v.detail", {"flag": flag, "detail": exc}))]
    if any(r.items for r in results):
        return []  # the stages leave unusable files out with a warning; the dataset tab lists them
    detail = "; ".join(f"{r.dataset.label}: {problem}" for r in results for problem in r.problems)
    values = {"flag": flag, "path": path, "detail": detail or "-"}
    return [Problem.of(name, Message("v.no_usable", values))]


def _prompt_problem(config: StudioConfig, stage: Stage) -> Problem | None:
    """The first line of the prompts a stage renders that it would reject (training's sample prompts,
    generate's prompt file or prompt), naming the file and line."""
    from ..data.prompt_files import PromptDefaults, generation_prompts, resolve_prompt

    if stage == Stage.TRAIN and config.sample_prompts:
        name = "sample_prompts"
    elif stage == Stage.GENERATE and (config.from_file or config.prompt):
        name = "from_file" if config.from_file else "prompt"
    else:
        return None
    flag = all_fields()[name].flag
    try:
        defaults = PromptDefaults.from_config(config)
    except (AttributeError, TypeError, ValueError):
        defaults = PromptDefaults()  # the form's own problems come first; judge the lines alone
    try:
        if name == "sample_prompts":
            prompts = generation_prompts(config.sample_prompts)  # type: ignore[arg-type]
        else:
            prompts = generation_prompts(config.from_file, config.prompt, config.control_image_path)
        for prompt in prompts:
            resolve_prompt(prompt, defaults, config.model_version)
    except ConfigError as exc:
        return Problem.of(name, Message("v.detail", {"flag": flag, "detail": exc}))
    return None


def check_for_stage(config: StudioConfig, stage: Stage) -> StudioConfig:
    """Raise ConfigProblems unless the stage has everything it needs."""
    problems = stage_problems(config, stage)
    if problems:
        raise ConfigProblems(problems)
    return config
