"""`python qwen_webui.py` (and the stage scripts) with a Python that lacks the project: the launcher re-runs
itself under the repo's .venv, or says in one line how to install it (studio_launch.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
LAUNCHERS = (
    "qwen_webui.py",
    "qwen_image_cache_latents.py",
    "qwen_image_cache_text_encoder_outputs.py",
    "qwen_image_train_network.py",
)
NOT_INSTALLED = "Qwen-Image Studio is not installed for this Python"
PROBE = """
import json, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import studio_launch
studio_launch.prepare(__file__)
import qwen_image_studio
print(json.dumps({"prefix": sys.prefix, "pid": os.getpid(), "argv": sys.argv[1:], "path0": sys.path[0],
                  "marker": os.environ.get(studio_launch.MARKER_ENV)}))
"""


def _lacks_the_project(cmd: list[str]) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('qwen_image_studio') is not None)"
    try:
        return subprocess.run([*cmd, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except OSError:
        return False


@pytest.fixture(scope="module")
def bare_python() -> list[str]:
    """A Python 3 without the project: the system one (as a user runs it), else this one with no site."""
    system = Path("/usr/bin/python3")
    if system.exists() and _lacks_the_project([str(system)]):
        return [str(system)]
    fallback = [sys.executable, "-I", "-S"]  # no site-packages: the venv's packages are out of reach
    assert _lacks_the_project(fallback)
    return fallback


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN_STUDIO_")}
    return {**env, **extra}


def _run(cmd: list[str], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd, env=_env(**env))


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_python_without_the_project_runs_the_launcher_in_the_venv(bare_python, launcher: str) -> None:
    assert (VENV / "bin" / "python").exists()
    out = _run([*bare_python, launcher, "--help"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: {launcher}") and "ModuleNotFoundError" not in out.stderr


def test_isolated_mode_without_site_packages_goes_through_the_venv_too() -> None:
    out = _run([sys.executable, "-I", "-S", "qwen_image_train_network.py", "--help"])  # -I: no script folder
    assert out.returncode == 0 and out.stdout.startswith("usage: qwen_image_train_network.py"), out.stderr


def test_the_re_execution_keeps_the_arguments_and_process_and_leaves_no_marker(
    bare_python, tmp_path: Path
) -> None:
    (tmp_path / "probe.py").write_text(PROBE, encoding="utf-8")
    shutil.copy(ROOT / "studio_launch.py", tmp_path)
    (tmp_path / ".venv").symlink_to(VENV, target_is_directory=True)
    proc = subprocess.Popen(
        [*bare_python, str(tmp_path / "probe.py"), "a b", "--flag", "x=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    seen = json.loads(stdout)
    assert Path(seen["prefix"]).resolve() == VENV.resolve()
    assert seen["argv"] == ["a b", "--flag", "x=1"] and seen["pid"] == proc.pid  # os.execv: the same process
    assert seen["path0"] == str(tmp_path / "src")  # the checkout's code first
    assert seen["marker"] is None  # the stages it starts do not inherit it


def test_a_venv_that_lacks_the_project_too_is_run_once_not_in_a_loop(bare_python, tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE, encoding="utf-8")
    shutil.copy(ROOT / "studio_launch.py", tmp_path)
    (tmp_path / "src").symlink_to(ROOT / "src", target_is_directory=True)
    fake = tmp_path / "broken-venv" / "bin"
    fake.mkdir(parents=True)
    (fake / "python").symlink_to(shutil.which("python3", path="/usr/bin:/bin") or sys.executable)
    out = _run([*bare_python, str(tmp_path / "probe.py")], cwd=tmp_path, QWEN_STUDIO_VENV=str(fake.parent))
    assert out.returncode == 0, out.stderr  # ran once under it, with the checkout's src on the path
    assert json.loads(out.stdout)["path0"] == str(tmp_path / "src")


@pytest.mark.parametrize("launcher", ["qwen_webui.py", "qwen_image_train_network.py"])
def test_without_a_venv_one_line_says_to_run_start_sh(bare_python, launcher: str, tmp_path: Path) -> None:
    for name in (launcher, "studio_launch.py"):  # a checkout where ./start.sh has not run yet
        shutil.copy(ROOT / name, tmp_path)
    out = _run([*bare_python, launcher, "--help"], cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.splitlines()  # one line, no traceback
    assert line.startswith(f"{NOT_INSTALLED} (") and line.endswith(
        "); run ./start.sh first (it creates .venv)"
    )
    elsewhere = _run([*bare_python, str(tmp_path / launcher)], cwd=ROOT)
    assert elsewhere.returncode == 2 and f"run {tmp_path / 'start.sh'} first" in elsewhere.stderr
    # the venv's folder can be named instead; one that does not exist is the same as none
    named = _run([*bare_python, launcher, "--help"], QWEN_STUDIO_VENV=str(tmp_path / "nowhere"))
    assert named.returncode == 2 and named.stderr.startswith(NOT_INSTALLED)


def test_a_python_that_has_the_project_runs_in_place(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE, encoding="utf-8")
    shutil.copy(ROOT / "studio_launch.py", tmp_path)  # no .venv beside it, and none named
    out = _run([sys.executable, str(tmp_path / "probe.py"), "x"], QWEN_STUDIO_VENV=str(tmp_path / "none"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["argv"] == ["x"] and json.loads(out.stdout)["prefix"] == sys.prefix
