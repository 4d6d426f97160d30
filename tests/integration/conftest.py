"""Fixtures the integration tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
import train_support as ts


@pytest.fixture(scope="session")
def t2i(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text-to-image dataset TOML over the demo images with both caches written (read-only for tests)."""
    return ts.cached_dataset(demo, tmp_path_factory.mktemp("t2i"))
