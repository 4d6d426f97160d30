"""Running the page's plain ES modules (no DOM) under node, for tests of the JS models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest


def node(script: str, stdin: str | None = None) -> object:
    """Run an ES-module snippet with node and parse the JSON it prints (node is required on CI)."""
    exe = shutil.which("node")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed (the page's JS models are tested with it)", pytrace=False)
        pytest.skip("node is not installed")
    out = subprocess.run(
        [exe, "--input-type=module", "-e", script],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)
