"""Run a root launcher (qwen_webui.py, qwen_image_*.py) under a Python that has Qwen-Image Studio.

Standard library only and plain enough for any Python 3, because it runs before any dependency is
imported: each launcher calls `prepare(__file__)` first. The rule:

1. This Python can import ``qwen_image_studio`` by itself (the repo's .venv, or an activated venv or
   conda env where the project was ``pip install -e .``-ed): the launcher runs here, as always.
2. Else, when the repo's virtual environment exists (``.venv`` beside the launcher, or the folder named
   by ``$QWEN_STUDIO_VENV``), the same command line runs again under its python (`os.execv`: the same
   process id, the same arguments; interpreter options such as ``-I`` are not passed on).
3. Else one line on stderr says to run ./start.sh, and the exit code is 2.

Already running under that venv, or re-executed once already (a marker in the environment, removed
again at once so that the stages and tools the launcher starts do not inherit it), it never re-executes.
In every case the checkout's ``src`` goes first on ``sys.path``, so the launcher runs this checkout's code.
"""

import importlib.util
import os
import sys

VENV_ENV = "QWEN_STUDIO_VENV"  # another virtual environment folder instead of .venv beside the launchers
MARKER_ENV = "QWEN_STUDIO_REEXECUTED"
EXIT_NOT_INSTALLED = 2
PACKAGE = "qwen_image_studio"


def venv_python(venv):
    """The python of a virtual environment folder, or None when there is none."""
    for parts in (("bin", "python"), ("Scripts", "python.exe")):
        path = os.path.join(venv, *parts)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _same_dir(a, b):
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def prepare(launcher):
    """Make the launcher at path `launcher` runnable: return, re-execute it under the venv, or exit 2."""
    root = os.path.dirname(os.path.abspath(launcher))
    reexecuted = os.environ.pop(MARKER_ENV, None) is not None
    if not reexecuted and importlib.util.find_spec(PACKAGE) is None:
        venv = os.environ.get(VENV_ENV) or os.path.join(root, ".venv")
        python = venv_python(venv)
        if python is None:
            start = "./start.sh" if _same_dir(os.getcwd(), root) else os.path.join(root, "start.sh")
            sys.stderr.write(
                f"Qwen-Image Studio is not installed for this Python ({sys.executable}); "
                f"run {start} first (it creates .venv)\n"
            )
            sys.exit(EXIT_NOT_INSTALLED)
        if not _same_dir(sys.prefix, venv):
            os.environ[MARKER_ENV] = "1"
            argv = [python, os.path.abspath(launcher), *sys.argv[1:]]
            sys.stdout.flush()
            sys.stderr.flush()
            if os.name == "nt":  # no real exec on Windows: run it and pass its exit code on
                import subprocess

                sys.exit(subprocess.call(argv))
            os.execv(python, argv)
    sys.path.insert(0, os.path.join(root, "src"))
