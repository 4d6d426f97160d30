"""The library's layering: what lies below the commands never imports them (README, "Design").

`stages/` are the commands (run as processes) and `webui/` the server that launches them; the library
below them (models, data, memory, training, params and the shared helpers) imports neither, and the web
UI does not import the stages (it starts them as processes). Read from the source with `ast`, so that
an import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "qwen_image_studio"
LIBRARY = ("models", "data", "memory", "training", "params", "demo")
TOP_LEVEL_HELPERS = ("atomic", "devices", "errors", "events", "logging_setup", "reasons")


def _imports(source: str, package: tuple[str, ...]) -> set[str]:
    """The package-relative modules a file of subpackage `package` imports ("stages.runner", "webui", ...)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                names = (
                    [".".join([*base, node.module])]
                    if node.module
                    else [".".join([*base, a.name]) for a in node.names]
                )
            elif node.module and node.module.startswith("qwen_image_studio"):
                names = [node.module.removeprefix("qwen_image_studio").lstrip(".")]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [
                a.name.removeprefix("qwen_image_studio").lstrip(".")
                for a in node.names
                if a.name.startswith("qwen_image_studio")
            ]
        else:
            continue
        out.update(n.strip(".") for n in names)
    return out


def _offenders(folders: tuple[str, ...], files: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    paths = [p for f in folders for p in (PACKAGE / f).rglob("*.py")] + [PACKAGE / f"{f}.py" for f in files]
    bad = []
    for path in paths:
        for name in _imports(path.read_text(encoding="utf-8"), path.relative_to(PACKAGE).parent.parts):
            if name.split(".")[0] in forbidden or name == "cli":
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    return bad


def test_the_library_imports_no_command_and_no_web_ui() -> None:
    assert _offenders(LIBRARY, TOP_LEVEL_HELPERS, ("stages", "webui")) == []


def test_the_web_ui_starts_the_stages_as_processes_and_does_not_import_them() -> None:
    assert _offenders(("webui",), (), ("stages",)) == []


def test_the_check_sees_every_form_of_import() -> None:
    """The checker itself: relative imports (inside functions too) and absolute ones are found."""
    source = (
        "import qwen_image_studio.webui.app\n"
        "from qwen_image_studio.stages.runner import main\n"
        "def f():\n    from ..stages import generate\n    from ..stages.common import x\n    from . import loop\n"
    )
    assert _imports(source, ("training",)) == {
        "webui.app", "stages.runner", "stages", "stages.common", "training.loop"
    }  # fmt: skip
